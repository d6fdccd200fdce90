"""Watch files (the queue, a root's config) with watchdog (inotify/FSEvents) and shape events into triggers.

:class:`FileWatcher` calls back on watchdog's observer thread for every event that touches its
file. :class:`Debouncer` turns triggers into calls of an action on the event loop: the
first trigger after a quiet period fires at once (leading edge); triggers that follow within
``delay`` of each other form a burst that fires once, ``delay`` after its last trigger, but
never later than ``ceiling`` after the burst began, so a writer that never pauses cannot
starve the push.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from memsyncd.store import safe_files

log = structlog.get_logger("memsyncd.daemon.watcher")

BURST_CEILING_SECONDS = 1.0


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class TimerLoop(Protocol):
    """The two things the debouncer needs from an event loop (a fake clock in unit tests)."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[[], object]) -> _Cancellable: ...


class _FileEvents(FileSystemEventHandler):
    """Forwards events that touch one file (written in place or renamed into place)."""

    def __init__(self, name: str, notify: Callable[[], None]) -> None:
        self._name = name
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(Path(str(p)).name == self._name for p in paths if p):
            try:
                self._notify()
            except Exception:  # one root's failure must not stop the observer thread every root shares
                log.exception("watch.callback_failed", file=self._name)


class Debouncer:
    """Leading-edge debounce with a ceiling: at once after quiet, then once per burst, bounded."""

    def __init__(self, loop: TimerLoop, delay: float, action: Callable[[], None], *,
                 ceiling: float = BURST_CEILING_SECONDS) -> None:
        self._loop = loop
        self._delay = max(0.0, delay)
        self._ceiling = max(ceiling, self._delay)
        self._action = action
        self._timer: _Cancellable | None = None
        self._last_trigger: float | None = None
        self._burst_start: float | None = None
        self.fired = 0

    @property
    def ceiling(self) -> float:
        """The longest a burst can defer the action (never less than the delay)."""
        return self._ceiling

    def trigger(self) -> None:
        """Fire now after a quiet period, else (re)arm the burst's timer; must run on the loop thread."""
        now = self._loop.time()
        quiet = self._last_trigger is None or now - self._last_trigger >= self._delay
        self._last_trigger = now
        if quiet:
            self.cancel()
            self._fire()
            return
        if self._burst_start is None:
            self._burst_start = now
        due = min(now + self._delay, self._burst_start + self._ceiling)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(due, self._fire_burst)

    def _fire_burst(self) -> None:
        self._timer = None
        self._burst_start = None
        self._fire()

    def _fire(self) -> None:
        self.fired += 1
        self._action()

    def cancel(self) -> None:
        """Drop a pending burst call."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._burst_start = None


class FileWatcher:
    """Watches one file through its directory (writers rename into place); no polling, the OS wakes it.

    With a shared ``observer`` (the daemon's, one thread for every root) it only adds and removes
    its watch; without one it runs an observer of its own.
    """

    def __init__(self, path: Path, on_change: Callable[[], None], *, observer: BaseObserver | None = None) -> None:
        self.path = path
        self._own = observer is None
        self._observer: BaseObserver = observer if observer is not None else Observer()
        self._handler = _FileEvents(path.name, on_change)
        self._watch: ObservedWatch | None = None

    def start(self) -> None:
        """Begin watching (creates the directory 0700 if needed, never through a symlink: SymlinkRefusedError)."""
        os.close(safe_files.open_dir_fd(self.path.parent))
        self._watch = self._observer.schedule(self._handler, str(self.path.parent), recursive=False)
        if self._own:
            self._observer.daemon = True
            self._observer.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop watching (and the observer thread, when it is our own)."""
        if self._own:
            self._observer.stop()
            self._observer.join(timeout)
        elif self._watch is not None:
            with contextlib.suppress(KeyError, ValueError):  # already gone with the observer
                self._observer.remove_handler_for_watch(self._handler, self._watch)
        self._watch = None

