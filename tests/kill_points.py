"""Stopping a job in-process at its n-th file replacement, as a kill would stop it there.

Every file of a run reaches its place through `os.replace` (`runs.atomic_write`, and the final
rename of a staged folder), so the replacements are the moments at which a run's files change:
killing just before each one, then resuming, visits every state a crash can leave behind.
`Killed` is a BaseException, so no `except Exception` on the way out can catch it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest


class Killed(BaseException):
    """Stands in for SIGKILL: nothing on the way out handles it."""


def count_replacements(monkeypatch: pytest.MonkeyPatch, run: Callable[[], object]) -> list[str]:
    """Run `run()` to the end, returning the destination of each file replacement it made."""
    replaced: list[str] = []
    real_replace = os.replace

    def counting(src, dst):
        replaced.append(str(dst))
        return real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", counting)
        run()
    return replaced


def run_killed_at(monkeypatch: pytest.MonkeyPatch, kill_at: int, run: Callable[[], object]) -> None:
    """Run `run()`, stopping it with `Killed` just before its `kill_at`-th replacement (from 0)."""
    real_replace = os.replace
    calls: list[str] = []

    def dies(src, dst):
        calls.append(str(dst))
        if len(calls) - 1 == kill_at:
            raise Killed
        return real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", dies)
        with pytest.raises(Killed):
            run()


def kill_then_finish(
    monkeypatch: pytest.MonkeyPatch,
    main: Callable[[list[str]], int],
    argv: list[str],
    resume: list[str],
    run: Path,
    kill_at: int,
) -> None:
    """Run `argv --out run`, killed before its `kill_at`-th replacement, then finish it as a
    user would: start it again if it was killed before the run existed, else `resume --resume
    run` (`resume` is the job's command words, e.g. ["toy", "train"])."""
    run_killed_at(monkeypatch, kill_at, lambda: main([*argv, "--out", str(run)]))
    if not (run / "manifest.json").exists():
        assert main([*argv, "--out", str(run)]) == 0  # killed before the run existed
    else:
        assert main([*resume, "--resume", str(run)]) == 0, kill_at


def spread(n: int, how_many: int, last: int = 3) -> list[int]:
    """`how_many` kill points out of `n`: evenly spread, always including the first and the
    `last` final replacements (the final writes), plus one at random (a new one each run,
    printed so that a failure can be replayed)."""
    points = {round(i * (n - 1) / max(how_many - 1, 1)) for i in range(how_many)}
    points |= set(range(max(n - last, 0), n)) | {0, random.randrange(n)}
    print(f"kill points {sorted(points)} of {n}")
    return sorted(points)


def no_debris(run_dir: Path) -> list[Path]:
    """Temporary files or checkpoints left in a finished run (there should be none)."""
    left = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    return [*left, *([run_dir / "checkpoints"] if (run_dir / "checkpoints").exists() else [])]
