"""Token categories for the absorption score: built-in word lists, first letters, user files,
and the prompts that put each word in front of a model.

A category is a name and a set of words. Only words the tokenizer writes as exactly one token
inside the prompt template count as members (SAEBench's rule for first letters, applied to
every category): a member is then one token id, read at one position.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivotal_sae.errors import UserError

FIRST_LETTERS = "first-letters"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: Semantic categories that a sentence encoder like MiniLM encodes (no spelling needed).
BUILTIN_CATEGORIES: dict[str, tuple[str, ...]] = {
    "months": _words(
        "january february march april may june july august september october november "
        "december jan feb mar apr jun jul aug sep sept oct nov dec"
    ),
    "weekdays": _words(
        "monday tuesday wednesday thursday friday saturday sunday mon tue wed thu fri "
        "weekday weekend"
    ),
    "number-words": _words(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty "
        "sixty seventy eighty ninety hundred thousand million billion trillion dozen"
    ),
    "digits": tuple(
        [str(i) for i in range(100)] + [str(y) for y in range(1900, 2031, 5)] + ["1000"]
    ),
    "us-states": _words(
        "alabama alaska arizona arkansas california colorado connecticut delaware florida "
        "georgia hawaii idaho illinois indiana iowa kansas kentucky louisiana maine maryland "
        "massachusetts michigan minnesota mississippi missouri montana nebraska nevada ohio "
        "oklahoma oregon pennsylvania tennessee texas utah vermont virginia washington "
        "wisconsin wyoming"
    ),
    "countries": _words(
        "afghanistan albania algeria argentina armenia australia austria bangladesh belgium "
        "bolivia brazil bulgaria cambodia cameroon canada chile china colombia croatia cuba "
        "cyprus denmark ecuador egypt estonia ethiopia finland france germany ghana greece "
        "guatemala haiti honduras hungary iceland india indonesia iran iraq ireland israel "
        "italy jamaica japan jordan kenya korea kuwait latvia lebanon libya lithuania "
        "malaysia mexico mongolia morocco nepal netherlands nicaragua nigeria norway "
        "pakistan panama paraguay peru philippines poland portugal qatar romania russia "
        "rwanda serbia singapore slovakia slovenia somalia spain sudan sweden switzerland "
        "syria taiwan thailand tunisia turkey uganda ukraine uruguay venezuela vietnam "
        "yemen zambia zimbabwe"
    ),
    "colours": _words(
        "red orange yellow green blue purple violet pink brown black white gray grey "
        "crimson scarlet maroon turquoise cyan magenta beige tan olive navy indigo amber "
        "ivory teal lavender gold silver"
    ),
    "body-parts": _words(
        "head face eye eyes ear ears nose mouth lip lips tooth teeth tongue neck shoulder "
        "arm arms elbow wrist hand hands finger fingers thumb chest breast belly stomach "
        "back hip leg legs knee ankle foot feet toe toes skin hair heart lung lungs liver "
        "kidney brain spine skull bone bones muscle throat chin cheek forehead"
    ),
    "family": _words(
        "mother father mom dad parent parents son daughter brother sister sibling uncle "
        "aunt nephew niece cousin grandmother grandfather grandson granddaughter wife "
        "husband spouse child children baby grandparents family stepfather stepmother "
        "twin"
    ),
    "units": _words(
        "meter meters metre kilometer kilometers mile miles inch inches yard "
        "yards centimeter millimeter gram grams kilogram kilograms pound pounds ounce "
        "ounces ton tons liter liters litre gallon gallons second seconds minute minutes "
        "hour hours acre acres hectare degree degrees percent watt watts volt volts"
    ),
    "animals": _words(
        "dog cat horse cow pig sheep goat chicken duck goose rabbit mouse rat lion tiger "
        "bear wolf fox deer elephant monkey ape snake frog fish whale shark dolphin eagle "
        "hawk owl crow bee ant spider camel zebra giraffe bird"
    ),
    "professions": _words(
        "teacher doctor nurse lawyer farmer soldier engineer pilot driver judge priest "
        "scientist professor artist writer poet singer actor dancer chef cook baker "
        "carpenter plumber banker clerk sailor officer senator governor president "
        "surgeon dentist journalist"
    ),
}


@dataclass
class Category:
    """A category's name and its candidate words (members are decided by the tokenizer)."""

    name: str
    words: tuple[str, ...]


@dataclass
class Member:
    """One single-token member: the word, its token id and the prompt's token ids."""

    word: str
    token_id: int
    input_ids: list[int]
    position: int
    """Index of the word's token in `input_ids`, where activations are read."""


def read_category_file(path: Path) -> list[Category]:
    """One category a line: its name, then its words (spaces or commas); `#` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--category-file {path}: no such file")
    categories: list[Category] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if not fields:
            continue
        if len(fields) < 2:
            raise UserError(
                f"--category-file {path}, line {number}: a category needs a name and words"
            )
        categories.append(Category(fields[0], tuple(dict.fromkeys(fields[1:]))))
    if not categories:
        raise UserError(f"--category-file {path} holds no category (one a line: name words...)")
    return categories


def is_causal(lm_config: Any) -> bool:
    """Decoder-only models read a word with only its left context; encoders see both sides."""
    return not bool(getattr(lm_config, "is_encoder_decoder", False)) and getattr(
        lm_config, "model_type", ""
    ) not in ("bert", "roberta", "distilbert", "xlm-roberta", "deberta", "deberta-v2", "mpnet")


@dataclass
class PromptBuilder:
    """Builds each word's prompt and finds the word's single token in it.

    The template holds `{word}` once; activations are read at the word's own token (SAEBench
    reads first-letter prompts there too: position -6 of `{word} has the first letter:`).
    """

    tokenizer: Any
    template: str
    icl_prefix: str = ""
    """Text placed before the template (SAEBench's in-context examples for causal LMs)."""

    def __post_init__(self) -> None:
        if self.template.count("{word}") != 1:
            raise UserError(
                f"--prompt-template must contain {{word}} exactly once (got {self.template!r})"
            )
        before, after = self.template.split("{word}")
        self.prefix_text = self.icl_prefix + before
        self.prefix_ids = self._encode(self.prefix_text)
        self.suffix_ids = self._encode(after) if after else []
        # Special tokens the tokenizer puts around a text (CLS ... SEP, BOS ...), found by
        # encoding a sample text with and without them.
        self.lead_ids, self.trail_ids = self._special_tokens()

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        plain = self._encode("a")
        wrapped = list(self.tokenizer.encode("a", add_special_tokens=True))
        for start in range(len(wrapped) - len(plain) + 1):
            if wrapped[start : start + len(plain)] == plain:
                return wrapped[:start], wrapped[start + len(plain) :]
        return [], []

    def member(self, word: str) -> Member | None:
        """The word as a member, or None when it is not one token here."""
        ids = self._encode(self.prefix_text + word)
        n = len(self.prefix_ids)
        if len(ids) != n + 1 or ids[:n] != self.prefix_ids:
            return None
        token_id = ids[-1]
        if token_id == getattr(self.tokenizer, "unk_token_id", None):
            return None
        input_ids = [*self.lead_ids, *self.prefix_ids, token_id, *self.suffix_ids, *self.trail_ids]
        return Member(word, token_id, input_ids, len(self.lead_ids) + n)


def default_template(causal: bool, first_letters: bool) -> str:
    """Encoders read the bare word (CLS word SEP); causal LMs read it after a short lead-in,
    and first letters use SAEBench's template."""
    if first_letters:
        return "{word} has the first letter:"
    return "{word}" if not causal else "Word: {word}"


def icl_examples(words: Sequence[str], n: int, seed: int) -> str:
    """SAEBench's in-context prompt for causal LMs: `n` examples `word has the first letter: W`."""
    rng = random.Random(seed)
    chosen = rng.sample(list(words), min(n, len(words)))
    return "".join(f"{w} has the first letter: {w[0].upper()}\n" for w in chosen)


def vocabulary_words(tokenizer: Any, min_length: int = 2) -> list[str]:
    """Alphabetic whole-word tokens of the vocabulary, markers stripped (Ġ, ▁), subword
    pieces (##) left out, lower-cased and de-duplicated, in token-id order."""
    vocab = tokenizer.get_vocab()
    words: dict[str, None] = {}
    for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        if token.startswith("##"):
            continue
        word = token.lstrip("Ġ▁ ")
        if len(word) >= min_length and word.isascii() and word.isalpha():
            words.setdefault(word.lower(), None)
    return list(words)


def first_letter_categories(words: Iterable[str]) -> list[Category]:
    by_letter: dict[str, list[str]] = {letter: [] for letter in string.ascii_lowercase}
    for word in words:
        if word[:1] in by_letter:
            by_letter[word[0]].append(word)
    return [Category(letter, tuple(ws)) for letter, ws in by_letter.items()]
