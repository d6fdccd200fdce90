"""A worker thread with its own asyncio event loop, where one root's sync engine runs.

The daemon's control loop (socket, timers, watch events) must never wait on a file lock, an
fsync or SQLite; the engine (``Syncer`` runs, conflict resolution) does all three, so it runs
on this thread and the control loop awaits it with :meth:`EngineThread.call`. Cancelling the
awaiting task cancels the engine-side task and waits (bounded) until it has really finished,
so ``RunCoordinator.wait_idle`` / ``cancel`` mean the same as when the engine shared the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from memsyncd.errors import DaemonError

T = TypeVar("T")
log = structlog.get_logger("memsyncd.daemon.engine_thread")

CANCEL_GRACE_SECONDS = 2.0


@dataclass
class _Job:
    """Engine-side bookkeeping of one call (touched only on the engine loop)."""

    task: asyncio.Task[Any] | None = None
    cancelled: bool = False


class EngineThread:
    """Runs coroutines on a dedicated thread's event loop; the caller's loop only awaits."""

    def __init__(self, name: str = "memsyncd-engine", *, cancel_grace: float = CANCEL_GRACE_SECONDS) -> None:
        self.name = name
        self.cancel_grace = cancel_grace
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The engine's event loop (for tests and diagnostics)."""
        return self._loop

    def start(self) -> None:
        """Start the thread; calls made before its loop spins are queued, not lost."""
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the engine loop and return its result here.

        Raises:
            DaemonError: the engine thread was already stopped.
        """
        job = _Job()

        async def guarded() -> T:
            if job.cancelled:  # cancelled before it ever started
                coro.close()
                raise asyncio.CancelledError
            job.task = asyncio.current_task()
            return await coro

        def cancel_job() -> None:
            job.cancelled = True
            if job.task is not None:
                job.task.cancel()

        if self._closed:
            coro.close()
            raise DaemonError("the sync engine has stopped (the daemon is shutting down).")
        try:
            done = asyncio.run_coroutine_threadsafe(guarded(), self._loop)
        except RuntimeError:  # the loop closed under us
            coro.close()
            raise DaemonError("the sync engine has stopped (the daemon is shutting down).") from None
        waiter = asyncio.wrap_future(done)
        try:
            return await asyncio.shield(waiter)
        except asyncio.CancelledError:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(cancel_job)
            if not self._closed:  # wait until the engine side has really stopped (its finally blocks ran)
                await asyncio.wait({waiter}, timeout=self.cancel_grace)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: an error while cancelling is not "never retrieved"
            raise

    async def run_sync(self, function: Callable[[], T]) -> T:
        """Run a plain function on the engine thread (e.g. a SQLite read that must not race a run)."""

        async def job() -> T:
            return function()

        return await self.call(job())

    async def stop(self, timeout: float, final: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Cancel what still runs on the engine, run ``final`` there (e.g. close clients), stop the thread.

        Returns False when the engine did not finish within ``timeout`` (its thread is a daemon
        thread and dies with the process; SQLite's WAL keeps the state consistent).
        """
        if self._closed or not self._thread.is_alive():
            if not self._closed and self._thread.ident is None:  # never started: nothing runs on the loop
                self._loop.close()
            self._closed = True
            return True

        async def drain() -> None:
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.1, timeout / 2))
            if final is not None:
                await final()

        clean = True
        try:
            drained = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drain(), self._loop))
        except RuntimeError:  # the loop is already closed
            drained = None
        if drained is not None:
            finished, _ = await asyncio.wait({drained}, timeout=timeout)
            if not finished:
                clean = False
                log.warning("engine.stop_timeout", thread=self.name, timeout_s=timeout)
            elif not drained.cancelled() and drained.exception() is not None:
                log.error("engine.stop_failed", thread=self.name, error=repr(drained.exception()))
        self._closed = True
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 1.0 if clean else 0.1)
        return clean and not self._thread.is_alive()
