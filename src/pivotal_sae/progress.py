"""Progress of a long stage: a tqdm bar on a terminal, one line at its start and end otherwise.

Totals of token-counted stages are estimates (short documents leave padding), so a finished
stage sets its bar's total to what it counted: bars end at 100 %, not 99 %. Under torchrun only
rank 0 speaks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from pivotal_sae import distributed


def say(message: str) -> None:
    """One line on stderr, from rank 0 only."""
    if distributed.is_main():
        print(f"pivotal-sae: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress(total: int, unit: str, desc: str, initial: int = 0) -> Iterator[Any]:
    """A tqdm bar counting `unit`s of the stage `desc` (rate in `unit`/s). Without a terminal
    the bar is silent and the stage says one line when it starts and one when it ends."""
    from tqdm.auto import tqdm

    on_terminal = sys.stderr.isatty()
    main = distributed.is_main()
    if not on_terminal:
        say(f"{desc}: {total - initial:,} {unit} to do")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # Off a terminal the bar still counts (for the closing line), into the void.
        stream = sys.stderr if on_terminal else stack.enter_context(open(os.devnull, "w"))
        bar = stack.enter_context(
            tqdm(
                total=total,
                initial=initial,
                unit=unit,
                unit_scale=True,
                desc=desc,
                dynamic_ncols=True,
                file=stream,
                disable=not main,
            )
        )
        yield bar
        bar.total = bar.n
        bar.refresh()
    if not on_terminal and main:
        seconds = time.perf_counter() - started
        done = bar.n - initial
        say(f"{desc}: done, {done:,} {unit} in {seconds:.1f} s ({done / max(seconds, 1e-9):,.0f} "
            f"{unit}/s)")  # fmt: skip
