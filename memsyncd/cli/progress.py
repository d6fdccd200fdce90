"""Live progress of a sync on a terminal: done/total, rate and ETA on stderr, one bar per phase (push, pull).

Shown only when stderr is a terminal and the output is not ``--json``, and only once a phase has run
for :data:`SHOW_AFTER_SECONDS` (short syncs print nothing extra). tqdm draws the bars; it is imported
when the first bar is needed, so the thin-client paths never load it. The engine (in-process) or the
daemon's health answers (``progress`` of the root's running sync) feed :meth:`SyncProgress.update`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any

SHOW_AFTER_SECONDS = 1.0
DEFAULT_SIZE = (80, 24)  # columns, lines
PHASE_UNITS = {"push": "memories pushed", "pull": "memories pulled"}


class SyncProgress:
    """One tqdm bar per phase, created on the phase's first update, closed when the next phase starts."""

    def __init__(self, stream: IO[str], *, delay: float = SHOW_AFTER_SECONDS, min_interval: float = 0.1) -> None:
        self._stream = stream
        self._delay = delay
        self._min_interval = min_interval
        self._phase: str | None = None
        self._bar: Any = None

    @classmethod
    def for_command(cls, args: argparse.Namespace) -> SyncProgress | None:
        """A display for this command, or None (not a terminal, ``--json``, or a dry run)."""
        stream = sys.stderr
        if getattr(args, "json", False) or not hasattr(stream, "isatty") or not stream.isatty():
            return None
        return cls(stream)

    def update(self, phase: str, done: int, total: int | None) -> None:
        """The engine finished ``done`` items of ``total`` (None while unknown, e.g. a pull still listing)."""
        if phase != self._phase:
            self.close()
            from tqdm import tqdm

            self._phase = phase
            size = _fixed_size(self._stream)  # None: follow the terminal as it is resized
            self._bar = tqdm(total=total, desc=phase, unit=" " + PHASE_UNITS.get(phase, "items"), file=self._stream,
                             delay=self._delay, mininterval=self._min_interval, dynamic_ncols=size is None,
                             ncols=size[0] if size else None, nrows=size[1] if size else None, leave=False)
        bar = self._bar
        if total is not None and bar.total != total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        """Finish the current bar (it disappears; the report that follows says what happened)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._phase = None


def _fixed_size(stream: IO[str]) -> tuple[int, int] | None:
    """None when the terminal reports its size (tqdm follows it), else a fixed 80 x 24.

    A terminal that reports 0 x 0 (a fresh pseudo-terminal, some CI runners) would get no bar at all.
    """
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return DEFAULT_SIZE
    return None if size.columns > 0 and size.lines > 0 else DEFAULT_SIZE
