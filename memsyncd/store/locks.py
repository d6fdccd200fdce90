"""The pair run lock: one sync at a time per pair of stores, for the daemon, memsyncctl and rebuild alike.

Every root whose config names the same OpenMemory user and mem0 scope (``Settings.pair_key``)
takes the same lock file in ``$XDG_RUNTIME_DIR/memsyncd/pairs/``, so two roots or two processes
on one account never create the same memories at the same moment. The lock is an ``flock``
(filelock) taken without ever blocking the event loop: a contended lock is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog
from filelock import FileLock, Timeout

from memsyncd.errors import DaemonError
from memsyncd.store.paths import pair_lock_path

log = structlog.get_logger("memsyncd.store.locks")

LOCK_POLL_SECONDS = 0.25


@contextlib.asynccontextmanager
async def pair_run_lock(pair_key: str, *, wait_seconds: float, busy: Callable[[Path, float], str],
                        give_up: Callable[[], bool] | None = None) -> AsyncIterator[Path]:
    """Hold the run lock of ``pair_key`` for the body; wait for it at most ``wait_seconds``.

    Args:
        pair_key: ``Settings.pair_key`` of the root.
        wait_seconds: how long a contended lock is waited for before giving up.
        busy: the message of the ``DaemonError`` raised when the lock stays held
            (called with the lock file and the seconds waited).
        give_up: polled while waiting; True stops the wait at once (a daemon shutting down).

    Raises:
        DaemonError: the lock stayed held for ``wait_seconds`` (or ``give_up`` said so).
    """
    lock = FileLock(str(pair_lock_path(pair_key)), mode=0o600, thread_local=False)
    lock_file = Path(lock.lock_file)
    waited = 0.0
    while True:
        try:
            lock.acquire(timeout=0)
            break
        except Timeout:
            if waited >= wait_seconds or (give_up is not None and give_up()):
                raise DaemonError(busy(lock_file, waited)) from None
            if waited == 0:
                log.info("run.waiting_for_lock", lock=str(lock_file))
            await asyncio.sleep(LOCK_POLL_SECONDS)
            waited += LOCK_POLL_SECONDS
    try:
        yield lock_file
    finally:
        lock.release()
