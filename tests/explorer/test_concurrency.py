"""50 highlight requests at once against a real server: each answer equals a sequential run,
and model calls never overlap (they share hooks on the model's modules)."""

from __future__ import annotations

import asyncio
import threading

import httpx

PROMPTS = [
    "The state of the union is strong.",
    "We will rebuild our roads, bridges and railways.",
    "Congress must act <now> & without delay!",
    "In 1862 the war went on; the nation waited.",
    "Taxes, tariffs and trade: the old questions return.",
]


def _requests() -> list[dict]:
    return [
        {
            "prompt": PROMPTS[i % len(PROMPTS)] + " " * (i % 3) + f"Item {i}.",
            "feature_idx": (7 * i) % 48 if i % 2 else (5 * i) % 96,
            "sae": "blocks.1.hook_resid_post" if i % 2 else "blocks.0.hook_resid_post",
        }
        for i in range(50)
    ]


def test_fifty_concurrent_highlights_equal_sequential(live_server, browser, monkeypatch):
    bodies = _requests()
    with httpx.Client(base_url=live_server, timeout=60) as client:
        sequential = [client.post("/api/highlight", json=b).json() for b in bodies]

    guard = threading.Lock()
    inside = {"model": 0, "request": 0}
    most = {"model": 0, "request": 0}

    def counting(kind, original):
        def wrapper(*args, **kwargs):
            with guard:
                inside[kind] += 1
                most[kind] = max(most[kind], inside[kind])
            try:
                return original(*args, **kwargs)
            finally:
                with guard:
                    inside[kind] -= 1

        return wrapper

    explorer = browser.explorer
    monkeypatch.setattr(explorer.lm, "activations", counting("model", explorer.lm.activations))
    monkeypatch.setattr(explorer, "highlight", counting("request", explorer.highlight))

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server, timeout=120) as client:
            return await asyncio.gather(*(client.post("/api/highlight", json=b) for b in bodies))

    replies = asyncio.run(fire())
    assert [r.status_code for r in replies] == [200] * 50
    for body, reply, expected in zip(bodies, replies, sequential, strict=True):
        answer = reply.json()
        assert answer == expected
        assert (answer["prompt"], answer["feature_idx"], answer["sae"]) == (
            body["prompt"], body["feature_idx"], body["sae"],
        )  # fmt: skip
    assert most["request"] > 1, "the requests did not overlap, so the test proves nothing"
    assert most["model"] == 1, f"{most['model']} model calls ran at once"
