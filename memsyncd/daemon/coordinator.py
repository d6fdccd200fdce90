"""One sync at a time per root: requests during a run join a single queued follow-up run.

Kinds of work are ``push``, ``pull``, ``reconcile``, ``preview`` (count what a pull would
bring, writing nothing) and the local scans that go with a push (``scan``, ``full-scan``,
``confirm-deletes``); a follow-up run does the union of everything requested while the
current run was busy, so any number of triggers during a run lead to exactly one more run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

R = TypeVar("R")
T = TypeVar("T")

PUSH = "push"
PULL = "pull"
RECONCILE = "reconcile"
PREVIEW = "preview"
SCAN = "scan"  # incremental scan of OpenMemory for new memories (with a push)
FULL_SCAN = "full-scan"  # full scan: edits, deletions and missed new memories (with a push)
CONFIRM_DELETES = "confirm-deletes"  # the full scan's deletions pass the max-delete guard
FULL = frozenset({PUSH, PULL})


class RunCoordinator(Generic[R]):
    """Serialises runs of ``runner(kinds)``; concurrent requests coalesce into one follow-up."""

    def __init__(self, runner: Callable[[frozenset[str]], Coroutine[Any, Any, R]]) -> None:
        self._runner = runner
        self._current: asyncio.Task[Any] | None = None
        self._next_kinds: set[str] = set()
        self._next: asyncio.Future[R] | None = None
        self.runs_started = 0

    @property
    def busy(self) -> bool:
        """True while a run is in progress."""
        return self._current is not None and not self._current.done()

    async def request(self, kinds: frozenset[str]) -> R:
        """Run ``kinds`` now, or in the one follow-up run if a run is in progress; return its result."""
        if not self.busy:
            return await asyncio.shield(self._start(frozenset(kinds)))
        self._next_kinds |= kinds
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._next)

    def _start(self, kinds: frozenset[str]) -> asyncio.Task[R]:
        self.runs_started += 1
        task: asyncio.Task[R] = asyncio.get_running_loop().create_task(self._runner(kinds))
        self._current = task
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if self._current is not task:  # a newer run already took over the lane
            return
        if self._next is None:
            self._current = None
            return
        waiter, kinds = self._next, frozenset(self._next_kinds)
        self._next, self._next_kinds = None, set()
        follow = self._start(kinds)

        def relay(done: asyncio.Task[R]) -> None:
            if waiter.done():
                return
            if done.cancelled():
                waiter.cancel()
            elif done.exception() is not None:
                waiter.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                waiter.set_result(done.result())

        follow.add_done_callback(relay)

    async def exclusive(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``work`` alone in this lane (after the current and queued runs), e.g. a conflict resolution."""
        while self.busy or self._next is not None:
            await self.wait_idle(3600.0)
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(work())
        self._current = task
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no run is active or queued; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.busy or self._next is not None:
            task = self._current
            remaining = deadline - loop.time()
            if task is None or remaining <= 0:
                return not (self.busy or self._next is not None)
            await asyncio.wait({task}, timeout=remaining)
        return True

    def cancel(self) -> None:
        """Cancel the current run and drop the queued one."""
        if self._next is not None and not self._next.done():
            self._next.cancel()
        self._next, self._next_kinds = None, set()
        if self._current is not None:
            self._current.cancel()
