"""One checkpoint scheme for every long job (toy train, cooccur, ablate, absorb).

Layout under the run directory:

    checkpoints/<name>/...        the files of one checkpoint, each written atomically
    checkpoints/latest.json       {"dir": <name>, ...the job's record}: the newest complete one

A save writes the checkpoint's files into its own folder, then `latest.json` atomically, then
prunes: other folders the job does not keep, stray files, and whatever interrupted writes left
behind (`runs.remove_partial_writes`). A kill at any moment therefore leaves `latest.json`
naming a complete set, and a later save or resume never trips over debris of an earlier one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pivotal_sae.errors import UserError
from pivotal_sae.runs import atomic_write_json, remove_partial_writes

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"


class CheckpointFolder:
    """`RUN/checkpoints`: where checkpoints live, which one is newest, and tidying up."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / CHECKPOINTS

    def folder(self, name: str) -> Path:
        return self.dir / name

    def pointer(self) -> dict[str, Any] | None:
        """The record of the newest complete checkpoint; None if none was ever completed, a
        `UserError` naming the file if it is damaged."""
        path = self.dir / LATEST
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("dir"), str):
            raise UserError(f"{path} is damaged (not a checkpoint record); the run cannot resume")
        if (
            "/" in record["dir"]
            or record["dir"] in ("", ".", "..")
            or not (self.dir / record["dir"]).is_dir()
        ):
            raise UserError(f"{path} names a checkpoint folder that is not there")
        return record

    def commit(
        self, name: str, record: dict[str, Any], keep: Callable[[Path], bool] = lambda _: False
    ) -> None:
        """Make folder `name` (already written) the newest checkpoint, then prune everything
        else except what `keep` spares."""
        atomic_write_json(self.dir / LATEST, {**record, "dir": name})
        self.prune(name, keep)

    def prune(self, current: str, keep: Callable[[Path], bool] = lambda _: False) -> None:
        remove_partial_writes(self.dir)
        for entry in self.dir.iterdir():
            if entry.name in (LATEST, current) or keep(entry):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
