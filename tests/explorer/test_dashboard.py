"""The dashboard, associations and clusters through the API and pages, against the run's own
tensors and a direct activation pass."""

from __future__ import annotations

import re

import pytest
import torch

from pivotal_sae.absorption.association import association_of_pair, cooccurrence_clusters

ABLATOR = "blocks.0.hook_resid_post"
READER = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def firing_latent(browser):
    """The ablator latent that fires most often in the dashboards' sample."""
    sample = browser.sample(browser.explorer.saes[ABLATOR])
    return int((sample.offsets_E1[1:] - sample.offsets_E1[:-1]).argmax())


def test_the_dashboard_panels_agree_with_the_sample_and_the_run(client, browser, world,
                                                                firing_latent):  # fmt: skip
    i = firing_latent
    reply = client.get(f"/api/dashboard/{ABLATOR}/{i}")
    assert reply.status_code == 200, reply.text
    d = reply.json()
    sample = browser.sample(browser.explorer.saes[ABLATOR])
    flat, values = sample.entries(i)
    # Histogram: every firing of the sample once; the silent tokens are the rest.
    assert sum(d["histogram"]["counts"]) == len(values) > 0
    assert d["histogram"]["silent"] == sample.tokens_counted - len(values)
    assert d["histogram"]["edges"][-1] == pytest.approx(float(values.max()))
    # Top tokens: counts of the token ids at the firings, spelled by the tokenizer.
    ids = sample.token_ids_NS.reshape(-1)[flat]
    top = d["top_tokens"][0]
    assert top["count"] == int((ids == top["token_id"]).sum()) == int(ids.bincount().max())
    tokenizer = browser.explorer.lm.tokenizer
    assert top["token"] == tokenizer.convert_ids_to_tokens([top["token_id"]])[0]
    # Quantile bands, strongest first, and the first example is the strongest firing.
    bands = d["quantiles"]
    assert bands[0]["high"] == pytest.approx(float(values.max()))
    assert [b["high"] for b in bands] == sorted((b["high"] for b in bands), reverse=True)
    assert bands[0]["examples"][0]["max_activation"] == pytest.approx(float(values.max()))
    # Reader effects: the run's effects row divided by its ablation count.
    effects_eE, how_often_e = browser.run.effects()
    if int(how_often_e[i]):
        mean_E = effects_eE[i] / int(how_often_e[i])
        lowered = d["reader_effects"]["lowered"]
        assert lowered[0]["latent"] == int(mean_E.argmax())
        assert lowered[0]["mean_effect"] == pytest.approx(float(mean_E.max()))
        assert d["reader_effects"]["reader_sae"] == READER
    else:
        assert d["reader_effects"] is None and "never ablated" in d["notes"]["reader_effects"]
    # Correlated latents: the counter's own counts.
    counter = world["counter"]
    for p in d["correlated"]:
        c = int(counter.lookup(torch.tensor([i]), torch.tensor([p["latent"]])))
        assert p["cooccurrences"] == c > 0
    assert d["sample_corpus"] == "sotu"  # the run counted the embedded corpus
    # MiniLM-like BERT: no logit panel, and the page says why.
    assert d["logit_effects"] is None
    assert "not a causal LM" in d["notes"]["logit_effects"]


def test_the_latent_page_shows_the_dashboard_panels(client, firing_latent):
    page = client.get(f"/latent/{ABLATOR}/{firing_latent}").text
    for title in (
        "Activation histogram",
        "Top tokens",
        "Ablating it moves these reader latents",
        "Fires together with",
        "Logit effects",
        "Examples by activation quantile",
    ):
        assert title in page, title
    svg = re.search(r'<svg class="hbars".*?</svg>', page, re.S)
    assert svg is not None and svg.group(0).count("<rect") == 24
    assert "not a causal LM" in page
    assert "<script>" not in page.split("</head>", 1)[1]  # nothing inline, nothing unescaped


def test_associations_match_the_scalar_reference(client, world, firing_latent):
    i = firing_latent
    body = client.get(f"/api/associations/{ABLATOR}/{i}?k=5").json()
    counter, tokens = world["counter"], world["counter"].tokens_counted
    f = counter.firing_counts_e
    assert body["tokens_counted"] == tokens and body["firing_count"] == int(f[i])
    assert 0 < len(body["partners"]) <= 5
    jaccards = [p["jaccard"] for p in body["partners"]]
    assert jaccards == sorted(jaccards, reverse=True)
    for p in body["partners"]:
        j = p["latent"]
        c = int(counter.lookup(torch.tensor([i]), torch.tensor([j])))
        ref = association_of_pair(c, int(f[i]), int(f[j]), tokens)
        assert (p["jaccard"], p["lift"], p["lift_low"], p["lift_high"]) == pytest.approx(
            (ref["jaccard"], ref["lift"], ref["low"], ref["high"])
        )
    assert client.get(f"/api/associations/{READER}/0").status_code == 404  # no counts for it
    assert client.get(f"/api/associations/{ABLATOR}/96").status_code == 422


def test_clusters_in_the_api_and_on_their_page(client, world):
    body = client.get("/api/clusters?threshold=0.2&min_size=2").json()
    expected = cooccurrence_clusters(world["counter"].to_dense(), 0.2, 2)
    assert [c["latents"] for c in body["clusters"]] == expected and expected
    firing = world["counter"].firing_counts_e
    assert body["clusters"][0]["firing_counts"] == [int(firing[i]) for i in expected[0]]
    page = client.get("/clusters?threshold=0.2").text
    assert f"{len(expected)} cluster" in page
    assert f'href="/latent/{ABLATOR}/{expected[0][0]}"' in page
    assert client.get("/api/clusters?threshold=0").status_code == 422


def test_logit_effects_of_a_causal_lm_read_the_tied_unembedding():
    """A tiny GPT-2 (tied embeddings): promoted tokens are the top of W_E @ d."""
    from tiny_models import tiny_model
    from transformers import AutoTokenizer

    from pivotal_sae.explorer.browse import Browser
    from pivotal_sae.explorer.engine import Explorer, LoadedSae
    from pivotal_sae.lm.defaults import default_model_path
    from pivotal_sae.lm.model import LanguageModel
    from pivotal_sae.saes.sae import Sae

    model = tiny_model("gpt2", n_layers=1)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    lm = LanguageModel(model, tokenizer, "tiny-gpt2")
    sae = Sae.random(64, 16, architecture="topk", k=4, hook_name="blocks.0.hook_resid_post")
    browser = Browser(Explorer(lm, [LoadedSae("s", sae, sae.hook_name)]), sample_contexts=4,
                      sample_tokens=16)  # fmt: skip
    d = browser.dashboard("s", 3)
    logits_V = model.wte.weight.detach() @ sae.W_dec[3].detach()
    assert [e.token_id for e in d.logit_effects.promoted] == logits_V.topk(10).indices.tolist()
    assert [e.token_id for e in d.logit_effects.suppressed] == (-logits_V).topk(10).indices.tolist()
    assert d.logit_effects.promoted[0].value == pytest.approx(float(logits_V.max()), rel=1e-5)
    assert "logit_effects" not in d.notes
    assert "--run" in d.notes["correlated"]
    browser.sample_contexts = 0  # `serve --dashboard-contexts 0`: no model pass for the panels
    none = browser.dashboard("s", 3)
    assert none.histogram is None and none.top_tokens == [] and none.logit_effects is not None
    assert "--dashboard-contexts 0" in none.notes["sample"]
    browser.sample_contexts = 4
    # A latent that can never fire (its encoder row zero, its bias negative) says so.
    with torch.no_grad():
        sae.W_enc[:, 5] = 0.0
        sae.b_enc[5] = -1.0
    browser._samples.clear()
    silent = browser.dashboard("s", 5)
    assert silent.histogram.counts == [] and silent.top_tokens == [] and not silent.quantiles
    assert silent.histogram.silent == browser.sample(browser.explorer.saes["s"]).tokens_counted
    assert "does not fire" in silent.notes["sample"]


def test_report_html_carries_a_dashboard_for_each_latent_of_its_pairs(world):
    page = (world["run"] / "report.html").read_text()
    pair = world["search"].pairs[0]
    for latent in (pair.latent_a, pair.latent_b):
        assert f"Dashboard of latent {latent}</summary>" in page
    assert page.count('<svg class="hbars"') >= 2  # histograms from the run's sample
    assert "Logit effects need the model&#39;s unembedding" in page
    # The first latent's correlated table: its top partner by Jaccard, with the counter's count.
    counter = world["counter"]
    e = counter.d_sae
    row = counter.lookup(torch.full((e,), pair.latent_a), torch.arange(e))
    from pivotal_sae.absorption.dashboard import correlated_latents

    best = correlated_latents(row, counter.firing_counts_e, pair.latent_a,
                              counter.tokens_counted, k=1)[0]  # fmt: skip
    card = page.split('id="pair-1"', 1)[1].split("</article>", 1)[0]
    assert f'<td>{best.latent}</td><td class="num">{best.cooccurrences:,}</td>' in card
    assert "<script" not in page  # the report stays script-free


def test_report_dashboards_stop_after_the_first_pairs(tmp_path, world):
    from pivotal_sae.absorption.report import write_report

    search = world["search"]
    assert len(search.pairs) >= 3
    write_report(tmp_path, search, counter=world["counter"], dashboard_pairs=2, html_pairs=3)
    page = (tmp_path / "report.html").read_text()
    cards = page.split('<article class="card pair"')[1:]
    assert ["Dashboard of latent" in card for card in cards] == [True, True, False]


def test_wordpiece_pieces_join_into_words_in_examples_and_reports(browser):
    """Defect 12: 'tranq uility'. Pieces of one word render with nothing between them, in the
    explorer's examples and in report.html, even when a window starts inside a word."""
    from pivotal_sae.absorption.jobs.pairs import tokenizer_text
    from pivotal_sae.render import make_environment

    tokenizer = browser.explorer.lm.tokenizer  # MiniLM's WordPiece tokenizer
    ids = tokenizer("the domestic tranquility of the nation", add_special_tokens=False)["input_ids"]
    assert any(p.startswith("##") for p in tokenizer.convert_ids_to_tokens(ids))
    macro = make_environment().from_string('{% import "_macros.html" as m %}{{ m.tokens(ex) }}')

    def shown(tokens: list[str]) -> str:
        ex = {"tokens": tokens, "activations": [1.0] * len(tokens), "center": 0,
              "max_activation": 1.0}  # fmt: skip
        return re.sub(r"<[^>]+>", "", macro.render(ex=ex)).strip()

    example = browser._example(0, 1.0, ids, [1.0] * len(ids), 0, set())
    assert shown(example.tokens) == "the domestic tranquility of the nation"
    assert shown(tokenizer_text(tokenizer)(ids)).strip() == "the domestic tranquility of the nation"
    inside = ids[ids.index(tokenizer.convert_tokens_to_ids("##quil")) :]  # starts mid-word
    assert shown(browser._example(0, 1.0, inside, [1.0] * len(inside), 0, set()).tokens) == (
        "quility of the nation"
    )


def test_the_sample_reads_the_runs_own_local_corpus(browser, tmp_path):
    loaded = browser.explorer.saes[ABLATOR]
    corpus = tmp_path / "speeches.txt"
    corpus.write_text("Fourscore and seven years ago our fathers brought forth a new nation.\n")
    meta = browser.run.metadata.setdefault("cooccurrences", {})
    saved = meta.get("corpus")
    try:
        meta["corpus"] = {"corpus": str(corpus), "max_tokens_in_prompt": 24}
        assert browser._run_corpus(loaded).name == str(corpus)
        meta["corpus"] = {"corpus": "hf:some/dataset:train"}  # never streamed from here
        assert browser._run_corpus(loaded) is None
        meta["corpus"] = {"corpus": str(tmp_path / "gone.txt")}
        assert browser._run_corpus(loaded) is None
        assert browser._run_corpus(browser.explorer.saes[READER]) is None  # not the run's SAE
    finally:
        meta["corpus"] = saved
