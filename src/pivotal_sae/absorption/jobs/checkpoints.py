"""Checkpoints of a job's running state, so a killed run resumes to the same final result.

A checkpoint is a set of results files written into `RUN/checkpoints/` under names that carry
the stage and the number of contexts done, then `latest.json` naming them is written atomically
(temporary file + rename), then older files are removed. A kill at any moment leaves
`latest.json` pointing at a complete set. Jobs save only at batch boundaries, so a resumed run
sees the same batches, in the same order, as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pivotal_sae import distributed
from pivotal_sae.runs import atomic_write_json

LATEST = "latest.json"


@dataclass
class Checkpoint:
    stage: str
    contexts_done: int
    """Contexts 0 .. contexts_done − 1 are in the saved state."""
    files: dict[str, Path]


class Checkpoints:
    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / "checkpoints"

    def latest(self, stage: str) -> Checkpoint | None:
        """The last complete checkpoint of `stage`, if any."""
        path = self.dir / LATEST
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        if record.get("stage") != stage:
            return None
        files = {name: self.dir / file for name, file in record["files"].items()}
        return Checkpoint(stage, int(record["contexts_done"]), files)

    def save(
        self, stage: str, contexts_done: int, writers: Mapping[str, Callable[[Path], None]]
    ) -> None:
        """Write each file with its writer, then point `latest.json` at them."""
        self.dir.mkdir(parents=True, exist_ok=True)
        names = {name: f"{stage}-{name}-{contexts_done:010d}.safetensors" for name in writers}
        for name, write in writers.items():
            write(self.dir / names[name])
        record = {"stage": stage, "contexts_done": contexts_done, "files": names}
        atomic_write_json(self.dir / LATEST, record)
        for old in self.dir.iterdir():
            if old.name != LATEST and old.name not in names.values():
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class SaveSchedule:
    """When to checkpoint: every `every` contexts, at the first batch boundary at or past each
    multiple; or, with `every=None`, at least `every_at_least` contexts apart and only once the
    time since the last checkpoint is `1 / max_share` times what writing it took, so writing
    stays under ~`max_share` of the run. (A 65,536-latent co-occurrence checkpoint is 8.6 GB and
    takes seconds to write; a MiniLM one is 34 MB.) Where checkpoints fall does not change the
    results: each holds exactly the contexts before it. `expected_cost` (seconds) spaces the
    first checkpoint before any has been timed."""

    def __init__(
        self,
        every: int | None,
        start: int,
        every_at_least: int = 1000,
        max_share: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        expected_cost: float = 0.0,
    ) -> None:
        self.every, self.every_at_least, self.max_share = every, every_at_least, max_share
        self.clock = clock
        step = every if every is not None else every_at_least
        self.next = (start // step + 1) * step
        self.last_end = clock()
        self.last_cost = expected_cost
        """Seconds the last checkpoint took; before the first, what the caller expects."""

    def due(self, contexts_done: int) -> bool:
        if contexts_done < self.next:
            return False
        if self.every is None:
            # Only rank 0 can judge the cost (it writes), and all ranks must save together:
            # its verdict is shared, at this point only (all ranks agree on `contexts_done`).
            worth_it = self.clock() - self.last_end >= self.last_cost / self.max_share
            if not distributed.as_main_decides(worth_it):
                return False
            self.next = contexts_done + self.every_at_least
            return True
        self.next = (contexts_done // self.every + 1) * self.every
        return True

    def save(self, contexts_done: int, save: Callable[[int], None]) -> None:
        """Call `save(contexts_done)` and remember what it cost."""
        began = self.clock()
        save(contexts_done)
        self.last_end = self.clock()
        self.last_cost = self.last_end - began
