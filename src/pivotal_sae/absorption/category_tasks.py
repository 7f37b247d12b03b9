"""From categories to tensors: members, labels, the train/test split and the activations.

A *task* is a set of items (single-token words in their prompts) with one column of labels per
category, scored together: the semantic task (built-in and user categories plus background
words as negatives) and the first-letter task (vocabulary words, 26 classes).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pivotal_sae.absorption.categories import (
    BUILTIN_CATEGORIES,
    FIRST_LETTERS,
    Category,
    Member,
    PromptBuilder,
    default_template,
    first_letter_categories,
    icl_examples,
    vocabulary_words,
)
from pivotal_sae.errors import UserError


@dataclass
class Task:
    name: str
    template: str
    categories: list[str]
    members: list[Member]
    labels_NC: torch.Tensor
    train_N: torch.Tensor
    dropped: dict[str, str] = field(default_factory=dict)
    """Categories left out before probing, with the reason."""

    @property
    def words(self) -> list[str]:
        return [m.word for m in self.members]


def category_members(builder: PromptBuilder, category: Category) -> list[Member]:
    """The category's single-token words, one per token id."""
    members: dict[int, Member] = {}
    for word in category.words:
        member = builder.member(word)
        if member is not None:
            members.setdefault(member.token_id, member)
    return list(members.values())


def _split(n_items: int, groups: Sequence[Sequence[int]], test_fraction: float, seed: int):
    """Train mask: each group (a category's items, then the rest) split at `test_fraction`;
    an item in several groups is split with the first."""
    rng = random.Random(seed)
    train = torch.ones(n_items, dtype=torch.bool)
    assigned: set[int] = set()
    for group in [*groups, list(range(n_items))]:
        items = [i for i in group if i not in assigned]
        rng.shuffle(items)
        n_test = max(1, round(len(items) * test_fraction)) if len(items) >= 2 else 0
        for i in items[:n_test]:
            train[i] = False
        assigned.update(items)
    return train


def _build(name: str, template: str, members_by_category: dict[str, list[Member]],
           background: list[Member], dropped: dict[str, str], test_fraction: float,
           seed: int) -> Task:  # fmt: skip
    index: dict[int, int] = {}
    members: list[Member] = []
    for group in [*members_by_category.values(), background]:
        for m in group:
            if m.token_id not in index:
                index[m.token_id] = len(members)
                members.append(m)
    names = list(members_by_category)
    labels = torch.zeros(len(members), len(names), dtype=torch.bool)
    groups = []
    for c, cat in enumerate(names):
        ids = [index[m.token_id] for m in members_by_category[cat]]
        labels[ids, c] = True
        groups.append(ids)
    train = _split(len(members), groups, test_fraction, seed)
    return Task(name, template, names, members, labels, train, dropped)


def semantic_task(config: Any, tokenizer: Any, causal: bool,
                  user_categories: list[Category]) -> Task | None:  # fmt: skip
    chosen = config.categories or [*BUILTIN_CATEGORIES, FIRST_LETTERS]
    categories = [Category(n, BUILTIN_CATEGORIES[n]) for n in chosen if n != FIRST_LETTERS]
    categories += user_categories
    if not categories:
        return None
    template = (
        default_template(causal, False)
        if config.prompt_template == "auto"
        else config.prompt_template
    )
    builder = PromptBuilder(tokenizer, template)
    by_category: dict[str, list[Member]] = {}
    dropped: dict[str, str] = {}
    user_names = {c.name for c in user_categories}
    for category in categories:
        members = category_members(builder, category)
        if not members and category.name in user_names:
            raise UserError(
                f"category {category.name!r} has no single-token words for this tokenizer in "
                f"the prompt {template!r}; give words the tokenizer writes as one token"
            )
        if len(members) < config.min_words:
            dropped[category.name] = f"{len(members)} single-token words (< --min-words)"
            continue
        by_category[category.name] = members
    taken = {m.token_id for ms in by_category.values() for m in ms}
    taken_words = {w.lower() for c in categories for w in c.words}
    rng = random.Random(config.seed)
    pool = [w for w in vocabulary_words(tokenizer) if w not in taken_words]
    rng.shuffle(pool)
    background: list[Member] = []
    for word in pool:
        if len(background) >= config.n_background_words:
            break
        member = builder.member(word)
        if member is not None and member.token_id not in taken:
            taken.add(member.token_id)
            background.append(member)
    return _build("semantic", template, by_category, background, dropped,
                  config.test_fraction, config.seed)  # fmt: skip


def first_letter_task(config: Any, tokenizer: Any, causal: bool) -> Task | None:
    if config.categories and FIRST_LETTERS not in config.categories:
        return None
    if config.categories is None and config.category_file is not None:
        return None  # a user file alone asks for the user's categories only
    words = vocabulary_words(tokenizer)
    rng = random.Random(config.seed)
    prefix = icl_examples(words, config.icl_examples, config.seed + 1) if causal else ""
    template = (
        default_template(causal, causal) if config.prompt_template == "auto"
        else config.prompt_template
    )  # fmt: skip
    builder = PromptBuilder(tokenizer, template, icl_prefix=prefix)
    rng.shuffle(words)
    members: list[Member] = []
    seen: set[int] = set()
    for word in words:
        if config.max_first_letter_words and len(members) >= config.max_first_letter_words:
            break
        member = builder.member(word)
        if member is not None and member.token_id not in seen:
            seen.add(member.token_id)
            members.append(member)
    by_letter: dict[str, list[Member]] = {}
    dropped: dict[str, str] = {}
    for category in first_letter_categories(m.word for m in members):
        chosen = [m for m in members if m.word[:1] == category.name]
        if len(chosen) < config.min_words:
            dropped[category.name] = f"{len(chosen)} single-token words (< --min-words)"
        else:
            by_letter[category.name] = chosen
    return _build(FIRST_LETTERS, template, by_letter, [], dropped, config.test_fraction,
                  config.seed)  # fmt: skip


@torch.no_grad()
def member_activations(
    lm: Any, members: Sequence[Member], hooks: Sequence[str], batch_size: int
) -> dict[str, torch.Tensor]:
    """`{hook: acts_NM}` at each member's word token (float32, CPU)."""
    pad = lm.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for start in range(0, len(members), batch_size):
        batch = members[start : start + batch_size]
        width = max(len(m.input_ids) for m in batch)
        ids_BS = torch.full((len(batch), width), pad, dtype=torch.long)
        mask_BS = torch.zeros(len(batch), width, dtype=torch.long)
        for row, m in enumerate(batch):
            ids_BS[row, : len(m.input_ids)] = torch.tensor(m.input_ids)
            mask_BS[row, : len(m.input_ids)] = 1
        acts = lm.activations(ids_BS, mask_BS, list(hooks))
        rows = torch.arange(len(batch))
        positions = torch.tensor([m.position for m in batch])
        for hook in hooks:
            out[hook].append(acts[hook][rows, positions].float().cpu())
    return {h: torch.cat(v) if v else torch.zeros(0, lm.d_model) for h, v in out.items()}
