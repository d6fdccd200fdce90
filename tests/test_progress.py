"""Sync progress on a terminal: nothing for short phases, done/total and rate once a phase runs long."""

from __future__ import annotations

import argparse
import io

from memsyncd.cli.progress import SyncProgress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_display_for_json_or_pipes() -> None:
    """--json and a stderr that is not a terminal get no progress display at all."""
    assert SyncProgress.for_command(argparse.Namespace(json=True)) is None
    assert SyncProgress.for_command(argparse.Namespace(json=False)) is None  # pytest's stderr is not a TTY


def test_short_phases_print_nothing() -> None:
    """A phase that ends before the delay leaves the terminal untouched."""
    out = FakeTerminal()
    progress = SyncProgress(out, delay=60)
    for done in range(5):
        progress.update("push", done + 1, 5)
    progress.close()
    assert out.getvalue() == ""


def test_long_phases_show_counts_per_phase() -> None:
    """Without a delay each phase gets its bar with done/total; an unknown total still counts up."""
    out = FakeTerminal()
    progress = SyncProgress(out, delay=0, min_interval=0)
    progress.update("push", 3, 10)
    progress.update("push", 10, 10)
    progress.update("pull", 7, None)
    progress.close()
    text = out.getvalue()
    assert "push" in text and "10/10" in text
    assert "pull" in text and "7" in text
