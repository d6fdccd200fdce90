"""Watch the queue file with watchdog (inotify/FSEvents) and call back, debounced, on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _QueueEvents(FileSystemEventHandler):
    """Forwards events that touch the queue file (written in place or renamed into place)."""

    def __init__(self, name: str, notify: Callable[[], None]) -> None:
        self._name = name
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(Path(str(p)).name == self._name for p in paths if p):
            self._notify()


class Debouncer:
    """Calls ``action`` once, ``delay`` seconds after the last of a burst of ``trigger()`` calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, action: Callable[[], None]) -> None:
        self._loop = loop
        self._delay = delay
        self._action = action
        self._handle: asyncio.TimerHandle | None = None
        self.fired = 0

    def trigger(self) -> None:
        """(Re)start the timer; must run on the loop thread."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_later(self._delay, self._fire)

    def trigger_threadsafe(self) -> None:
        """``trigger`` from any thread (the watchdog observer's)."""
        self._loop.call_soon_threadsafe(self.trigger)

    def _fire(self) -> None:
        self._handle = None
        self.fired += 1
        self._action()

    def cancel(self) -> None:
        """Drop a pending call."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class QueueWatcher:
    """An observer on the queue's directory; no polling, the OS wakes it."""

    def __init__(self, queue_path: Path, on_change: Callable[[], None]) -> None:
        self.queue_path = queue_path
        self._observer = Observer()
        self._handler = _QueueEvents(queue_path.name, on_change)

    def start(self) -> None:
        """Begin watching (creates the directory if needed)."""
        self.queue_path.parent.mkdir(parents=True, exist_ok=True)
        self._observer.schedule(self._handler, str(self.queue_path.parent), recursive=False)
        self._observer.daemon = True
        self._observer.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the observer thread."""
        self._observer.stop()
        self._observer.join(timeout)
