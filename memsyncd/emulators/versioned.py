"""Base of the emulators' in-memory stores: one re-entrant lock and a change counter for the state saver."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class VersionedStore:
    """Shared bookkeeping of ``Mem0Store`` and ``OpenMemoryStore``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._version = 0
        self._memo: tuple[int, Hashable, Any] | None = None

    @property
    def version(self) -> int:
        """Increases on every change; lets a saver know when to write."""
        with self._lock:
            return self._version

    def _touch(self) -> None:
        self._version += 1

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, reused while nothing changed and the last call had the same ``key``.

        For the pages of one listing: each page asks the same question of an unchanged store, and
        answering it from scratch per page makes a full listing quadratic in the store's size.
        The value is shared between callers: they must not change it.
        """
        with self._lock:
            memo = self._memo
            if memo is not None and memo[0] == self._version and memo[1] == key:
                value: T = memo[2]
                return value
            version = self._version
            value = compute()
            self._memo = (version, key, value)
            return value
