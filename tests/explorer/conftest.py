"""A tiny world for the explorer, built once per session (a few seconds on 2 cores).

A random 2-block BERT (width 64) with the MiniLM tokenizer saved as a model directory, two
small TopK SAEs on it (ablator and reader), and an absorb-style run directory written with the
absorption APIs themselves: co-occurrence counts and top examples from real passes over the
embedded corpus, random ablation effects, pairs, the report, summary and manifest.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

XSS = "<script>alert(1)</script>"
NP_ID = "tiny-bert/0-test-res"
TOKEN = "correct-horse-battery"


def _identity(sae, path: Path) -> dict:
    return {
        "path": str(path),
        "hook_name": sae.hook_name,
        "d_sae": sae.d_sae,
        "neuronpedia_id": sae.info.neuronpedia_id,
    }


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Paths of the tiny model, SAEs, an explanations export and a run directory."""
    import transformers as T

    from pivotal_sae.absorption.cooccurrence import DenseCooccurrence
    from pivotal_sae.absorption.dashboard import collect_sample
    from pivotal_sae.absorption.examples import TopExamples
    from pivotal_sae.absorption.explanations import read_explanations
    from pivotal_sae.absorption.jobs.pairs import tokenizer_text
    from pivotal_sae.absorption.pairs import find_decoder_pairs, find_effect_pairs
    from pivotal_sae.absorption.report import write_report
    from pivotal_sae.absorption.results import save_cooccurrences, save_effects, save_top_examples
    from pivotal_sae.lm.contexts import Contexts
    from pivotal_sae.lm.corpus import open_corpus
    from pivotal_sae.lm.defaults import default_model_path
    from pivotal_sae.lm.model import LanguageModel
    from pivotal_sae.runs import atomic_write_json, write_manifest
    from pivotal_sae.saes.loading import save_sae
    from pivotal_sae.saes.sae import Sae

    root = tmp_path_factory.mktemp("explorer-world")
    torch.manual_seed(0)
    config = T.BertConfig(
        vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, attn_implementation="eager",
    )  # fmt: skip
    model_dir = root / "tiny-bert"
    T.BertModel(config).eval().save_pretrained(model_dir)
    T.AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(model_dir)
    lm = LanguageModel.load(str(model_dir), device="cpu")

    ablator = Sae.random(64, 96, architecture="topk", k=6, hook_name="blocks.0.hook_resid_post")
    ablator.info.neuronpedia_id = NP_ID
    reader = Sae.random(64, 48, architecture="topk", k=4, hook_name="blocks.1.hook_resid_post")
    ablator_dir = save_sae(ablator, root / "ablator")
    reader_dir = save_sae(reader, root / "reader")

    explanations_file = root / "explanations.jsonl"
    records = [
        {"modelId": "tiny-bert", "layer": "0-test-res", "index": str(i), "description": text}
        for i, text in [(0, f"{XSS} and ampersands &amp;"), (1, "capitalised words"),
                        (2, "the word 'the'")]
    ]  # fmt: skip
    explanations_file.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    explanations = read_explanations(explanations_file, NP_ID)

    counter = DenseCooccurrence(96)
    examples = TopExamples(96, n_examples=4, window_before=6, window_after=3)
    contexts = Contexts(open_corpus(), lm.tokenizer, max_tokens_in_prompt=24, n_prompts=24)
    hook = ablator.hook_name
    with torch.no_grad():
        for batch in contexts.batches(8):
            hidden = lm.activations(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
            acts_BSE = ablator.encode(hidden)
            counter.update(acts_BSE[batch.count_mask_BS], contexts=len(batch))
            examples.update(
                acts_BSE, batch.input_ids_BS, batch.count_mask_BS, batch.context_index_B,
                batch.attention_mask_BS,
            )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    effects_eE = torch.randn(96, 48, generator=generator)
    how_often_e = torch.randint(0, 4, (96,), generator=generator)
    search = find_effect_pairs(
        effects_eE, how_often_e, counter, cooccurrence_threshold=2, cosine_sim_threshold=0.1
    )
    decoder = find_decoder_pairs(ablator.W_dec, counter, top_n=30)

    run = root / "run"
    ids = {"sae": _identity(ablator, ablator_dir)}
    meta = {"model": str(model_dir), "corpus": "sotu"}
    write_manifest(run, "absorb", {"model": str(model_dir)})
    save_cooccurrences(run / "cooccurrences.safetensors", counter, {**meta, **ids})
    save_effects(
        run / "effects.safetensors", effects_eE, how_often_e,
        {**meta, "ablator_sae": ids["sae"], "reader_sae": _identity(reader, reader_dir)},
    )  # fmt: skip
    save_top_examples(run / "top_examples.safetensors", examples, {**meta, **ids})
    write_report(
        run, search, decoder_pairs=decoder, examples=examples, explanations=explanations,
        neuronpedia_id=NP_ID, summary={"model": str(model_dir), "reader_sae": "reader"},
        token_text=tokenizer_text(lm.tokenizer), counter=counter,
        effects=(effects_eE, how_often_e), sample=collect_sample(lm, ablator, contexts),
    )  # fmt: skip
    from pivotal_sae.absorption.finder import find_partial_pairs
    from pivotal_sae.absorption.jobs.pairs import write_partial_pairs

    candidates = find_partial_pairs(ablator.W_dec.detach(), counter, max_pairs=40)
    write_partial_pairs(run, candidates)
    atomic_write_json(run / "summary.json", {"model": str(model_dir), "pairs": len(search.pairs)})
    return {
        "root": root, "model_dir": model_dir, "ablator_dir": ablator_dir,
        "reader_dir": reader_dir, "explanations": explanations_file, "run": run,
        "counter": counter, "examples": examples, "search": search, "candidates": candidates,
    }  # fmt: skip


@pytest.fixture(scope="session")
def browser(world):
    """The explorer over the run (model and SAEs found through the run's metadata)."""
    from pivotal_sae.explorer.app import build_browser
    from pivotal_sae.explorer.config import ServeConfig

    return build_browser(ServeConfig(run=world["run"], device="cpu", max_prompt_chars=2000))


@pytest.fixture(scope="session")
def client(browser):
    from fastapi.testclient import TestClient

    from pivotal_sae.explorer.app import create_app

    return TestClient(create_app(browser, max_request_bytes=16384))


@pytest.fixture(scope="session")
def token_client(browser):
    from fastapi.testclient import TestClient

    from pivotal_sae.explorer.app import create_app

    return TestClient(create_app(browser, token=TOKEN), follow_redirects=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(browser):
    """The explorer on a real uvicorn server in a thread: its base URL."""
    import uvicorn

    from pivotal_sae.explorer.app import create_app

    port = free_port()
    app = create_app(browser, allowed_hosts=["127.0.0.1", "localhost"])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
