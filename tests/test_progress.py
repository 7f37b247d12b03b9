"""Progress bars end at 100 %; without a terminal each stage says one line as it starts and ends."""

from __future__ import annotations

import io
import sys

from pivotal_sae.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_whose_total_was_an_estimate_ends_at_100_percent(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress(1000, "tok", "co-occurrence") as bar:
        for _ in range(8):
            bar.update(99)  # padding: fewer tokens than the estimate
    assert bar.total == bar.n == 792
    last = terminal.getvalue().split("\r")[-1]
    assert "co-occurrence: 100%" in last and "792/792" in last


def test_without_a_terminal_a_stage_says_one_line_at_start_and_end(capsys):
    with progress(48, "ctx", "ablation", initial=8) as bar:
        bar.update(40)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == "pivotal-sae: ablation: 40 ctx to do"
    assert lines[1].startswith("pivotal-sae: ablation: done, 40 ctx in ")
