"""The report files: contents, escaping, self-containment."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from pivotal_sae.absorption.cooccurrence import DenseCooccurrence
from pivotal_sae.absorption.examples import TopExamples
from pivotal_sae.absorption.explanations import Explanations
from pivotal_sae.absorption.pair_records import LatentRecord, PairRecord, PairsDocument
from pivotal_sae.absorption.pairs import find_decoder_pairs, find_effect_pairs
from pivotal_sae.absorption.report import write_report
from pivotal_sae.errors import UserError
from pivotal_sae.render import stylesheet

from .conftest import sparse_acts

XSS = "<script>alert(1)</script>"


def make_report(tmp_path, generator, **kwargs):
    acts_TE = sparse_acts(240, 20, 0.08, generator)
    counter = DenseCooccurrence(20)
    counter.update(acts_TE, contexts=12)
    examples = TopExamples(20, 3, 2, 2)
    examples.update(
        acts_TE.view(12, 20, 20),
        torch.randint(0, 5, (12, 20), generator=generator),
        torch.ones(12, 20, dtype=torch.bool),
        torch.arange(12),
    )
    effects_eE = torch.randn(20, 8, generator=generator)
    how_often_e = torch.ones(20, dtype=torch.int64)
    pairs = find_effect_pairs(
        effects_eE, how_often_e, counter, cooccurrence_threshold=100, cosine_sim_threshold=-1
    )
    decoder = find_decoder_pairs(torch.randn(20, 6, generator=generator), counter, top_n=5)
    explained = Explanations({i: [f"{XSS} latent {i}"] for i in range(20)}, "test")
    tokens = ["a", XSS, "\n", "&amp;", " b"]
    paths = write_report(
        tmp_path,
        pairs,
        decoder_pairs=decoder,
        examples=examples,
        explanations=explained,
        neuronpedia_id="m/s",
        token_text=lambda ids: [tokens[i] for i in ids],
        summary={"model": XSS, "tokens_counted": 240},
        **kwargs,
    )
    return paths, pairs, decoder


def test_report_files(tmp_path, generator):
    paths, pairs, decoder = make_report(tmp_path, generator)
    document = json.loads(paths["pairs.json"].read_text())
    assert document["meta"]["count"] == len(pairs.pairs) == document["meta"]["n_matching"] == 190
    first = document["pairs"][0]
    assert first["ablator1"]["id"] == pairs.pairs[0].latent_a
    assert first["ablator1"]["url"] == f"https://www.neuronpedia.org/m/s/{pairs.pairs[0].latent_a}"
    assert first["cosine_similarity"] == pairs.pairs[0].cosine
    assert set(first) >= {"cooccurrence_count", "expected_cooccurrence", "p_at_most_observed"}
    assert len(document["decoder_pairs"]) == len(decoder.pairs) == 5
    rows = list(csv.DictReader(paths["pairs.csv"].open()))
    assert len(rows) == 190 and int(rows[0]["latent_a"]) == pairs.pairs[0].latent_a
    assert paths["histogram.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_escapes_and_is_self_contained(tmp_path, generator):
    paths, *_ = make_report(tmp_path, generator, html_pairs=10)
    page = paths["report.html"].read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp;amp;" in page  # a token that is itself an entity shows literally
    # No external assets: every src is inline, stylesheets are inline.
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert "<link" not in page and "@import" not in page
    assert page.count('<article class="card pair"') == 10


def test_the_report_says_how_each_list_was_graded(tmp_path, generator):
    """Every list on the page carries its grade against ground truth; the partial method's
    candidates come first, each with its evidence, escaped."""
    from pivotal_sae.absorption.finder import find_partial_pairs
    from pivotal_sae.render.grades import GRADE_NOTES

    paths, _, _ = make_report(tmp_path / "original", generator, html_pairs=3)
    page = paths["report.html"].read_text()
    assert "Graded, and found wanting." in page and "candidate-1" not in page
    acts_TE = sparse_acts(240, 20, 0.2, generator)
    counter = DenseCooccurrence(20)
    counter.update(acts_TE, contexts=12)
    W_dec_EM = torch.randn(20, 6, generator=generator).abs()  # alike: many candidates
    candidates = find_partial_pairs(W_dec_EM, counter, min_firing=1, max_pairs=30)
    grade = {"category_pairs": 4, "original": {"found_in_list": 0},
             "partial": {"found_in_list": 1, "recall_at_100": 0.25},
             "partial_confirmed_ranks": [7]}  # fmt: skip
    paths, _, _ = make_report(
        tmp_path / "partial", generator, html_pairs=3, candidates=candidates, run_grade=grade,
        candidate_cards=12,
    )  # fmt: skip
    page = paths["report.html"].read_text()
    import markupsafe

    assert str(markupsafe.escape(GRADE_NOTES["partial"])) in page
    assert page.index('id="candidates"') < page.index('id="pair-1"')
    assert page.count('id="candidate-') == 12
    first = candidates.pairs[0]
    assert f"{first.parent} → {first.absorber}" in page
    assert (
        f"score {first.score:.3f}" in page and f"decoder cosine {first.decoder_cosine:.3f}" in page
    )
    assert "at rank 7;" in page and "recall at 100 0.25" in page
    # nearest-neighbour pairs lead the list, and each card shown says whether it is one
    flags = [c.nearest_neighbours for c in candidates.pairs]
    assert any(flags) and not all(flags) and flags == sorted(flags, reverse=True)
    near = sum(flags[:12])
    assert "are listed first" in page and page.count(">nearest neighbours</span>") == near
    plain = find_partial_pairs(W_dec_EM, counter, min_firing=1, max_pairs=30,
                               neighbours_first=False)  # fmt: skip
    paths, _, _ = make_report(tmp_path / "plain", generator, html_pairs=3, candidates=plain,
                              candidate_cards=12)  # fmt: skip
    plain_page = paths["report.html"].read_text()
    assert "are listed first" not in plain_page
    assert plain_page.count(">nearest neighbours</span>") == sum(
        c.nearest_neighbours for c in plain.pairs[:12]
    )
    assert f"{XSS} latent {first.parent}" not in page  # explanations escaped
    assert "<script" not in page.lower()


def test_html_uses_the_explorers_stylesheet_and_cards(tmp_path, generator):
    """One renderer: the page inlines the stylesheet the explorer serves, its cards are the
    shared pair cards, and it shows what the report always showed."""
    paths, pairs, decoder = make_report(tmp_path, generator, html_pairs=3)
    page = paths["report.html"].read_text()
    assert stylesheet() in page
    first = pairs.pairs[0]
    assert 'id="pair-1"' in page and f"{first.latent_a} ↔ {first.latent_b}" in page
    assert f"cosine {first.cosine:.3f}" in page
    assert f"co-occur {first.cooccurrence:,}" in page and "P(≤ observed) = " in page
    assert f"fires on {first.firing_a:,} tokens ({100 * first.firing_a / 240:.3g}%)" in page
    assert f'href="https://www.neuronpedia.org/m/s/{first.latent_a}"' in page
    assert 'class="maxact"' in page and 'class="tok ' in page and "tok a" in page
    assert "Decoder-similarity pairs" in page and page.count("<tr>") == 1 + min(
        3, len(decoder.pairs)
    )
    assert "tokens counted" in page and "240" in page


def test_pairs_json_reads_back_as_records(tmp_path, generator):
    paths, pairs, _ = make_report(tmp_path, generator)
    document = PairsDocument.read(paths["pairs.json"])
    assert [(p.a.id, p.b.id) for p in document.pairs] == [
        (p.latent_a, p.latent_b) for p in pairs.pairs
    ]
    record = document.pairs[0]
    assert isinstance(record, PairRecord)
    assert record.cosine_similarity == pairs.pairs[0].cosine
    assert record.a.firing_count == pairs.pairs[0].firing_a
    assert record.a.explanation == f"{XSS} latent {record.a.id}"
    assert document.decoder_pairs is not None and len(document.decoder_pairs) == 5
    assert PairsDocument.from_json(json.loads(paths["pairs.json"].read_text())) == document
    assert document.to_json() == json.loads(paths["pairs.json"].read_text())


def test_pairs_json_of_earlier_runs_reads(tmp_path):
    """Files written before the records (same keys; the original scripts' lacked the
    co-occurrence statistics) read back; a pair without ids is one line."""
    legacy = {
        "pairs": [
            {
                "ablator1": {"id": 3, "explanation": "dogs", "url": None},
                "ablator2": {"id": 7, "explanation": None},
                "cosine_similarity": 0.9,
            }
        ],
        "decoder_pairs": [{"latent1": {"id": 1}, "latent2": {"id": 2}, "cosine_similarity": 1}],
    }
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(legacy))
    document = PairsDocument.read(path)
    assert document.pairs == [
        PairRecord(a=LatentRecord(3, explanation="dogs"), b=LatentRecord(7), cosine_similarity=0.9)
    ]
    assert document.decoder_pairs == [PairRecord(LatentRecord(1), LatentRecord(2), 1.0)]
    path.write_text(json.dumps({"pairs": [{"ablator1": {"id": 3}}]}))
    with pytest.raises(UserError, match="lack ablator1/ablator2 ids"):
        PairsDocument.read(path)


def test_no_pairs_and_linear_scale(tmp_path, generator):
    paths, *_ = make_report(tmp_path, generator, no_log_scale=True, html_pairs=0)
    assert paths["report.html"].is_file() and paths["histogram.png"].stat().st_size > 1000
