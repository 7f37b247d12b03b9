"""Checkpoints of a job's running state, so a killed run resumes to the same final result.

The shared scheme of `pivotal_sae.checkpoints`: a checkpoint is a folder
`RUN/checkpoints/<stage>-<contexts done>/` of results files, then `latest.json` naming it (and
the stage and count) is written atomically, then everything older is removed. A kill at any
moment leaves `latest.json` pointing at a complete set. Jobs save only at batch boundaries, so
a resumed run sees the same batches, in the same order, as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pivotal_sae import distributed
from pivotal_sae.checkpoints import LATEST, CheckpointFolder
from pivotal_sae.errors import UserError


@dataclass
class Checkpoint:
    stage: str
    contexts_done: int
    """Contexts 0 .. contexts_done − 1 are in the saved state."""
    files: dict[str, Path]


class Checkpoints:
    def __init__(self, run_dir: Path) -> None:
        self.folder = CheckpointFolder(run_dir)
        self.dir = self.folder.dir

    def latest(self, stage: str) -> Checkpoint | None:
        """The last complete checkpoint of `stage`, if any (a damaged record is a UserError)."""
        record = self.folder.pointer()
        if record is None or record.get("stage") != stage:
            return None
        files, done = record.get("files"), record.get("contexts_done")
        if not isinstance(files, dict) or not isinstance(done, int) or done < 0:
            raise UserError(f"{self.dir / LATEST} is damaged; the run cannot resume")
        directory = self.folder.folder(record["dir"])
        paths = {str(name): directory / str(file) for name, file in files.items()}
        missing = [p for p in paths.values() if not p.is_file()]
        if missing:
            raise UserError(f"checkpoint file {missing[0]} is missing; the run cannot resume")
        return Checkpoint(stage, done, paths)

    def save(
        self, stage: str, contexts_done: int, writers: Mapping[str, Callable[[Path], None]]
    ) -> None:
        """Write each file with its writer into the checkpoint's folder, then point
        `latest.json` at them and remove older checkpoints."""
        name = f"{stage}-{contexts_done:010d}"
        directory = self.folder.folder(name)
        directory.mkdir(parents=True, exist_ok=True)
        files = {key: f"{key}.safetensors" for key in writers}
        for key, write in writers.items():
            write(directory / files[key])
        self.folder.commit(name, {"stage": stage, "contexts_done": contexts_done, "files": files})

    def clear(self, stage: str) -> None:
        """Remove the checkpoints once `stage` is finished (those of a later stage stay)."""
        try:
            record = self.folder.pointer()
        except UserError:
            return  # damaged: left for `latest` to report when the next stage resumes
        if record is None or record.get("stage") == stage:
            self.folder.clear()


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
