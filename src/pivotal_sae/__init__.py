"""Pivotal SAE."""
