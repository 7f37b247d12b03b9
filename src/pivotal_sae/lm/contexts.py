"""Documents → fixed-length contexts → batches, in one deterministic global order.

Each document is tokenized without special tokens and cut into consecutive windows of
`max_tokens_in_prompt - 1` tokens, each prefixed with the tokenizer's BOS (or CLS) token. A
document's last window may be short; it is right-padded, and padding never counts
(`count_mask_BS` is 0 there, and at BOS unless `keep_bos`). Context `i` is the i-th window of
that order, so runs can be sharded by rank (`i % world_size == rank`) and resumed from any
context index without storing the contexts themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pivotal_sae.errors import UserError
from pivotal_sae.lm.corpus import Corpus

_DOCS_PER_TOKENIZER_CALL = 16


@dataclass
class ContextBatch:
    """B contexts of S tokens with their global indices."""

    context_index_B: torch.Tensor
    input_ids_BS: torch.Tensor
    attention_mask_BS: torch.Tensor
    """1 on real tokens, 0 on padding (what the model sees)."""
    count_mask_BS: torch.Tensor
    """True where a position counts in statistics: not padding, not BOS unless kept."""

    def to(self, device: torch.device | str) -> ContextBatch:
        return ContextBatch(
            *(
                t.to(device, non_blocking=True)
                for t in (
                    self.context_index_B,
                    self.input_ids_BS,
                    self.attention_mask_BS,
                    self.count_mask_BS,
                )
            )
        )

    def __len__(self) -> int:
        return int(self.input_ids_BS.shape[0])


def start_token_id(tokenizer: Any) -> int | None:
    """BOS if the tokenizer has one, else CLS (BERT), else None (contexts then start with text)."""
    for name in ("bos_token_id", "cls_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


def pad_token_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


class Contexts:
    """The contexts of a corpus for one tokenizer: `max_tokens_in_prompt` tokens each."""

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: Any,
        max_tokens_in_prompt: int,
        n_prompts: int | None = None,
        *,
        keep_bos: bool = False,
    ) -> None:
        self.bos_id = start_token_id(tokenizer)
        minimum = 2 if self.bos_id is not None else 1
        if max_tokens_in_prompt < minimum:
            raise UserError(
                f"--max-tokens-in-prompt must be at least {minimum} (got {max_tokens_in_prompt})"
            )
        if n_prompts is not None and n_prompts < 1:
            raise UserError(f"--n-prompts must be at least 1 (got {n_prompts})")
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.seq_len = max_tokens_in_prompt
        self.n_prompts = n_prompts
        self.keep_bos = keep_bos
        self.pad_id = pad_token_id(tokenizer)

    def describe(self) -> dict[str, Any]:
        """For results metadata: enough to rebuild exactly these contexts."""
        return {
            "corpus": self.corpus.name,
            "max_tokens_in_prompt": self.seq_len,
            "n_prompts": self.n_prompts,
            "keep_bos": self.keep_bos,
            "tokenizer": getattr(self.tokenizer, "name_or_path", type(self.tokenizer).__name__),
        }

    def token_lists(self) -> Iterator[list[int]]:
        """Every context's token ids (BOS first, no padding) in global order."""
        prefix = [self.bos_id] if self.bos_id is not None else []
        width = self.seq_len - len(prefix)
        windows = (
            prefix + ids[start : start + width]
            for ids in self._tokenized_documents()
            for start in range(0, len(ids), width)
        )
        return itertools.islice(windows, self.n_prompts)

    def _tokenized_documents(self) -> Iterator[list[int]]:
        documents = (d for d in self.corpus.documents() if d.strip())
        while group := list(itertools.islice(documents, _DOCS_PER_TOKENIZER_CALL)):
            # verbose=False: documents are longer than the model's window on purpose.
            encoded = self.tokenizer(group, add_special_tokens=False, verbose=False)
            yield from encoded["input_ids"]

    def batches(
        self,
        batch_size: int,
        *,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[ContextBatch]:
        """Batches of this rank's share of contexts `start, start+1, ...` (on the CPU).

        Rank r of `world_size` takes the contexts i >= start with (i - start) % world_size == r,
        so a run resumed at `start` may use a different number of ranks.
        """
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {batch_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        mine = (
            (index, ids)
            for index, ids in enumerate(self.token_lists())
            if index >= start and (index - start) % world_size == rank
        )
        while chunk := list(itertools.islice(mine, batch_size)):
            yield self._collate(chunk)

    def _collate(self, chunk: list[tuple[int, list[int]]]) -> ContextBatch:
        n, s = len(chunk), self.seq_len
        input_ids = torch.full((n, s), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, s), dtype=torch.long)
        for row, (_, ids) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        count_mask = attention_mask.bool()
        if self.bos_id is not None and not self.keep_bos:
            count_mask[:, 0] = False
        index = torch.tensor([i for i, _ in chunk], dtype=torch.long)
        return ContextBatch(index, input_ids, attention_mask, count_mask)
