"""Bounded concurrency for the applier: a fixed pool of workers fed in FIFO order, and page prefetch.

``WorkerPool(n)`` runs submitted jobs ``n`` at a time however many are queued (one
task per worker, not per job), so a run's memory does not grow with its length and
jobs of the next page start the moment a slot frees. ``prefetch`` fetches the next
page of a paginated listing while the caller works on the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, cast

T = TypeVar("T")

_Job = tuple[Callable[[], Awaitable[Any]], "asyncio.Future[Any]"]


class WorkerPool:
    """``size`` workers taking jobs in submission order; ``submit`` returns the job's future.

    Use as ``async with WorkerPool(8) as pool:``; leaving the block cancels the workers
    and every job not finished yet. A job that raises ``CancelledError`` itself (the pool
    not closing) gets a cancelled future; its worker keeps serving the queue.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> WorkerPool:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.size)]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def submit(self, job: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Queue ``job`` (a coroutine function without arguments); its result or exception lands in the future."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((job, future))
        return future

    async def _work(self) -> None:
        while True:
            job, future = await self._jobs.get()
            if future.done():  # cancelled while it waited
                continue
            try:
                result = await job()
            except asyncio.CancelledError:
                future.cancel()
                worker = asyncio.current_task()
                if worker is not None and worker.cancelling():  # the pool is closing: this worker stops
                    raise
                # the job cancelled itself (e.g. it awaited something that was cancelled): its future is
                # settled as cancelled and this worker goes on serving, or the queued jobs would never run
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def aclose(self) -> None:
        """Stop the workers; jobs still queued or running are cancelled."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        while not self._jobs.empty():
            _, future = self._jobs.get_nowait()
            future.cancel()


async def prefetch(pages: AsyncIterator[T]) -> AsyncIterator[T]:
    """Yield the items of ``pages`` in order while the next one is already being fetched.

    An error fetching a page is raised where that page would have been yielded.
    """

    async def next_page() -> tuple[bool, T | None]:
        try:
            return True, await pages.__anext__()
        except StopAsyncIteration:
            return False, None

    upcoming = asyncio.ensure_future(next_page())
    try:
        while True:
            more, page = await upcoming
            if not more:
                return
            upcoming = asyncio.ensure_future(next_page())
            yield cast(T, page)  # more is True: page is a T
    finally:
        if not upcoming.done():
            upcoming.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await upcoming
        aclose = getattr(pages, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
