"""The JSON API through FastAPI's TestClient: answers, validation, limits, escaping."""

from __future__ import annotations

import json

import torch

from .conftest import XSS

ABLATOR = "blocks.0.hook_resid_post"
READER = "blocks.1.hook_resid_post"


def direct_acts(browser, sae_name: str, prompt: str) -> torch.Tensor:
    """acts_SE computed without the explorer: tokenizer, model, SAE by hand."""
    explorer = browser.explorer
    loaded = explorer.saes[sae_name]
    tokenizer = explorer.lm.tokenizer
    ids = [tokenizer.cls_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    ids_1S = torch.tensor([ids])
    hidden = explorer.lm.activations(ids_1S, torch.ones_like(ids_1S), [loaded.hook])[loaded.hook]
    return loaded.sae.encode(hidden)[0]


def test_healthz_info_and_saes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/api/info").json()
    assert [s["name"] for s in info["saes"]] == [ABLATOR, READER]
    assert [s["role"] for s in info["saes"]] == ["ablator", "reader"]
    assert info["run"]["sae"] == ABLATOR and info["run"]["d_sae"] == 96
    assert client.get("/api/saes").json() == info["saes"]


def test_highlight_matches_a_direct_computation(client, browser):
    prompt = "The President spoke.\n  Congress listened, unhappily!"
    reply = client.post("/api/highlight", json={"prompt": prompt, "feature_idx": 7, "sae": READER})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["sae"] == READER and body["d_sae"] == 48 and body["feature_idx"] == 7
    tokens = body["tokens"]
    assert tokens[0]["special"] and tokens[0]["token"] == "[CLS]"
    acts_S = direct_acts(browser, READER, prompt)[:, 7]
    assert [t["activation"] for t in tokens] == acts_S.tolist()
    assert body["max_activation"] == max(t["activation"] for t in tokens[1:])
    # Offsets cover the prompt: what lies between tokens is only whitespace.
    cursor = 0
    for token in tokens[1:]:
        assert prompt[cursor : token["start"]].strip() == ""
        assert prompt[token["start"] : token["end"]] == token["text"]
        cursor = token["end"]
    assert cursor == len(prompt.rstrip())
    # Deterministic, and the SAE defaults to the first loaded.
    again = client.post("/api/highlight", json={"prompt": prompt, "feature_idx": 7, "sae": READER})
    assert again.json() == body
    default = client.post("/api/highlight", json={"prompt": prompt, "feature_idx": 1}).json()
    assert default["sae"] == ABLATOR
    assert default["explanation"] == "capitalised words"
    assert default["neuronpedia_url"] == "https://www.neuronpedia.org/tiny-bert/0-test-res/1"


def test_top_latents(client, browser):
    prompt = "A more perfect union."
    body = client.post("/api/top-latents", json={"prompt": prompt, "k": 3}).json()
    acts_SE = direct_acts(browser, ABLATOR, prompt)
    assert len(body["tokens"]) == acts_SE.shape[0]
    for token, acts_E in zip(body["tokens"], acts_SE, strict=True):
        values, latents = acts_E.topk(3)
        expected = [(int(i), float(v)) for v, i in zip(values, latents, strict=True) if v > 0]
        assert [(v["latent"], v["activation"]) for v in token["top"]] == expected


def _detail(reply) -> str:
    assert reply.headers["content-type"].startswith("application/json")
    return reply.json()["detail"]


def test_bad_requests_are_422_with_a_clear_message(client):
    def post(body, path="/api/highlight"):
        return client.post(path, json=body)

    cases = [
        ({"prompt": "hi", "feature_idx": 96}, "feature_idx 96 is out of range for SAE"),
        ({"prompt": "hi", "feature_idx": 0, "sae": "nope"}, "unknown SAE 'nope'; this server"),
        ({"prompt": "hi", "feature_idx": 0, "sae": "../../etc/passwd"}, "unknown SAE"),
        ({"prompt": "hi", "feature_idx": -1}, "body.feature_idx: Input should be greater"),
        ({"prompt": "hi", "feature_idx": "x"}, "body.feature_idx"),
        ({"prompt": "", "feature_idx": 0}, "body.prompt: String should have at least 1"),
        ({"feature_idx": 0}, "body.prompt: Field required"),
        ({"prompt": "x" * 2001, "feature_idx": 0}, "2,001 characters; this server takes at most"),
        ({"prompt": "a " * 600, "feature_idx": 0}, "601 tokens long; this server takes at most"),
        ({"prompt": "   ", "feature_idx": 0}, "the prompt has no tokens"),
    ]
    for body, needle in cases:
        reply = post(body)
        assert reply.status_code == 422, (body, reply.text)
        assert needle in _detail(reply), (needle, reply.json())
    reply = post({"prompt": "hi", "k": 0}, "/api/top-latents")
    assert reply.status_code == 422 and "body.k" in _detail(reply)
    reply = client.post(
        "/api/highlight", content=b"not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422 and "JSON decode error" in _detail(reply)


def test_request_size_limit_is_413(client):
    big = json.dumps({"prompt": "x" * 20000, "feature_idx": 0}).encode()
    reply = client.post("/api/highlight", content=big, headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert "at most 16,384 bytes" in _detail(reply)

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"x" * 1000

    reply = client.post(
        "/api/highlight", content=chunks(), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413


def test_latent_and_pairs_api(client, world):
    counter, search = world["counter"], world["search"]
    latent = client.get(f"/api/latents/{ABLATOR}/0").json()
    assert latent["firing_count"] == int(counter.firing_counts_e[0])
    assert latent["tokens_counted"] == counter.tokens_counted
    assert latent["explanation"].startswith(XSS)
    examples = world["examples"].examples_for(0)
    assert [e["context_id"] for e in latent["examples"]] == [e.context_id for e in examples]
    first = latent["examples"][0]
    assert len(first["tokens"]) == len(first["activations"])
    assert first["activations"][first["center"]] == first["max_activation"]
    busy = max(
        range(96), key=lambda i: len(client.get(f"/api/latents/{ABLATOR}/{i}").json()["pairs"])
    )
    refs = client.get(f"/api/latents/{ABLATOR}/{busy}").json()["pairs"]
    for ref in refs:
        pair = search.pairs[ref["rank"] - 1]
        assert {pair.latent_a, pair.latent_b} == {busy, ref["partner"]}
    reader = client.get(f"/api/latents/{READER}/3").json()
    assert reader["firing_count"] is None and reader["examples"] == []
    assert client.get(f"/api/latents/{READER}/48").status_code == 422

    page = client.get("/api/pairs", params={"offset": 2, "limit": 5}).json()
    assert page["total"] == len(search.pairs) and page["sae"] == ABLATOR
    for pair, expected in zip(page["pairs"], search.pairs[2:7], strict=True):
        assert (pair["a"]["id"], pair["b"]["id"]) == (expected.latent_a, expected.latent_b)
        assert pair["cosine_similarity"] == expected.cosine
        assert pair["expected_cooccurrence"] == expected.expected_cooccurrence
        assert pair["rank"] == page["offset"] + page["pairs"].index(pair) + 1
    decoder = client.get("/api/pairs", params={"kind": "decoder"}).json()
    assert decoder["kind"] == "decoder" and decoder["total"] == 30
    assert client.get("/api/pairs", params={"kind": "other"}).status_code == 422


def test_openapi_schema(client):
    schema = client.get("/api/openapi.json").json()
    assert {"/api/highlight", "/api/top-latents", "/api/saes", "/api/pairs"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["HighlightRequest"]
    assert set(request["properties"]) == {"prompt", "feature_idx", "sae"}
    assert request["required"] == ["prompt", "feature_idx"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_api_docs_page_works_offline(client):
    """Swagger UI came from a CDN (a blank page offline); the reference is served whole."""
    response = client.get("/api/docs")
    assert response.status_code == 200
    page = response.text
    assert "cdn." not in page and "<script>" not in page.replace(
        '<script src="/static/app.js" defer></script>', ""
    )
    for path in ("/api/highlight", "/api/top-latents", "/api/saes", "/api/pairs"):
        assert f"<code>{path}" in page
    assert 'id="schema-HighlightRequest"' in page and "feature_idx" in page
    assert 'href="/api/openapi.json"' in page


def test_latent_page_of_a_latent_that_never_fired_says_so(client, world):
    never = int((world["counter"].firing_counts_e == 0).nonzero()[0])
    sae = client.get("/api/info").json()["saes"][0]["name"]
    page = client.get(f"/latent/{sae}/{never}").text
    assert f"Latent {never} never fired on the" in page


class _NoOffsets:
    """A tokenizer that, like Python-only tokenizers, cannot give character offsets."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, text, **kwargs):
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available")
        return self.inner(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_tokenizers_without_offsets(browser):
    from pivotal_sae.explorer.client import pieces, render_standalone
    from pivotal_sae.explorer.engine import Explorer
    from pivotal_sae.lm.model import LanguageModel
    from pivotal_sae.render import stylesheet

    fast = browser.explorer.lm
    lm = LanguageModel(fast.model, _NoOffsets(fast.tokenizer), "no-offsets")
    explorer = Explorer(lm, list(browser.explorer.saes.values()))
    prompt = "The union, <b>strong</b>."
    result = explorer.highlight(prompt, 3)
    expected = browser.explorer.highlight(prompt, 3)
    assert [t.activation for t in result.tokens] == [t.activation for t in expected.tokens]
    assert all(t.start == -1 for t in result.tokens[1:])
    assert "".join(p.text for p in pieces(result)[1:]) == "the union, < b > strong < / b >."
    page = render_standalone(result)
    assert "<b>" not in page and page.count(">&lt;</span>") == 2
    assert stylesheet() in page  # the explorer's one stylesheet, inlined


def test_the_pairs_page_opens_on_the_graded_candidates(client, world):
    """partial_pairs.json's pairs come first, as cards with their evidence and grade; the
    original's lists stay one tab away, with theirs."""
    import markupsafe

    from pivotal_sae.render.grades import GRADE_NOTES

    candidates = world["candidates"].pairs
    assert candidates
    page = client.get("/pairs").text
    assert str(markupsafe.escape(GRADE_NOTES["partial"])) in page
    first = candidates[0]
    assert 'id="candidate-1"' in page and f"score {first.score:.3f}" in page
    assert f'href="/latent/{ABLATOR}/{first.parent}"' in page
    assert page.count('id="candidate-') == min(len(candidates), 20)
    # nearest-neighbour pairs come first, and the page says so and marks them
    assert "(marked) come first" in page and candidates[0].nearest_neighbours
    marked = sum(c.nearest_neighbours for c in candidates[:20])
    assert page.count(">nearest neighbours</span>") == marked
    assert "<script>alert" not in page  # an explanation holding a script tag is escaped
    original = client.get("/pairs?kind=effect").text
    assert str(markupsafe.escape(GRADE_NOTES["original"])) in original
    assert 'id="candidate-' not in original
    assert client.get("/pairs?kind=candidates&page=99").status_code == 404


def test_a_damaged_partial_pairs_file_is_one_line(world, tmp_path):
    import shutil

    import pytest

    from pivotal_sae.errors import UserError
    from pivotal_sae.explorer.run_data import load_run

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    for damage in ('{"pairs": [{"parent": 1}]}', '{"pairs": 3}', "[]"):
        (run / "partial_pairs.json").write_text(damage)
        with pytest.raises(UserError, match=r"partial_pairs\.json is damaged"):
            load_run(run)


def test_partial_pairs_written_before_the_neighbour_flag_still_load(world, tmp_path):
    """A run whose partial_pairs.json predates neighbours first loads, every flag False and
    the list not described as neighbours first."""
    import json
    import shutil

    from pivotal_sae.explorer.run_data import load_run

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    document = json.loads((run / "partial_pairs.json").read_text())
    assert document["pairs"] and "nearest_neighbours" in document["pairs"][0]
    for pair in document["pairs"]:
        del pair["nearest_neighbours"]
    del document["settings"]["neighbours_first"]
    (run / "partial_pairs.json").write_text(json.dumps(document))
    loaded = load_run(run)
    assert [c.parent for c in loaded.candidates] == [p["parent"] for p in document["pairs"]]
    assert not any(c.nearest_neighbours for c in loaded.candidates)
    assert loaded.describe()["neighbours_first"] is False
