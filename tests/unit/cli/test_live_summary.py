"""The demo's live summary: one view updated in place on a terminal, appended in a log."""

from __future__ import annotations

import io

from services.cli.summaries import format_progress, redraw


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_view_redrawn_over_the_previous_one() -> None:
    terminal = _Terminal()
    drawn = redraw(terminal, "a\nb", 0)
    assert drawn == 2 and terminal.getvalue() == "a\nb\n"
    redraw(terminal, "c\nd", drawn)
    assert terminal.getvalue() == "a\nb\n\x1b[2F\x1b[Jc\nd\n"


def test_a_log_gets_each_view_appended() -> None:
    log = io.StringIO()
    redraw(log, "a", redraw(log, "a", 0))
    assert log.getvalue() == "a\na\n"


def test_progress_bar_counts_frames() -> None:
    assert format_progress(50, 200, 12.0, width=10) == "[##--------]    50/200 frames  25%    12 s"
    assert format_progress(300, 200, 1.0, width=4).startswith("[####]")
