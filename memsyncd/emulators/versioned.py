"""Base of the emulators' in-memory stores: one re-entrant lock and a change counter for the state saver."""

from __future__ import annotations

import threading


class VersionedStore:
    """Shared bookkeeping of ``Mem0Store`` and ``OpenMemoryStore``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._version = 0

    @property
    def version(self) -> int:
        """Increases on every change; lets a saver know when to write."""
        with self._lock:
            return self._version

    def _touch(self) -> None:
        self._version += 1
