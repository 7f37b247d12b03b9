"""SAE architectures.

Toy lab (trainable): `topk.TopKSae`, `hierarchical.HierarchicalSae`, `matryoshka.MatryoshkaSae`,
built by name and saved as SAELens-style directories through `toy_io`.
"""
