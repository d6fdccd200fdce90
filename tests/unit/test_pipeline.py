"""engine/pipeline.py: ``WorkerPool`` (bounded, FIFO, errors in futures, cancel on exit) and ``prefetch``.

Pure asyncio, no I/O: each scenario runs in its own event loop under a deadline.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from memsyncd.engine.pipeline import WorkerPool, prefetch

pytestmark = pytest.mark.timeout(10)


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run one scenario in a fresh loop, failing it after 2 s instead of hanging."""
    return asyncio.run(asyncio.wait_for(scenario(), 2.0))


def test_a_pool_of_one_runs_jobs_one_at_a_time_in_submission_order() -> None:
    async def scenario() -> None:
        log: list[str] = []

        async def job(n: int) -> int:
            log.append(f"start {n}")
            await asyncio.sleep(0)
            log.append(f"end {n}")
            return n

        async with WorkerPool(1) as pool:
            futures = [pool.submit(functools.partial(job, n)) for n in range(3)]
            assert await asyncio.gather(*futures) == [0, 1, 2]
        assert log == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]

    run(scenario)


def test_a_size_below_one_still_has_one_worker() -> None:
    async def scenario() -> None:
        async with WorkerPool(0) as pool:
            assert pool.size == 1
            assert await pool.submit(lambda: asyncio.sleep(0, result="done")) == "done"

    run(scenario)


def test_a_failing_job_fails_only_its_own_future() -> None:
    async def scenario() -> None:
        async def job(n: int) -> int:
            if n == 1:
                raise KeyError("one")
            return n

        async with WorkerPool(1) as pool:
            results = await asyncio.gather(*(pool.submit(functools.partial(job, n)) for n in range(4)),
                                           return_exceptions=True)
        assert results[0] == 0 and isinstance(results[1], KeyError) and results[2:] == [2, 3]

    run(scenario)


def test_leaving_the_pool_cancels_running_and_queued_jobs() -> None:
    """aclose: the running job is cancelled (its cleanup runs), queued ones never start; all futures cancelled."""

    async def scenario() -> None:
        started: list[int] = []
        cleaned: list[int] = []
        blocker = asyncio.Event()

        async def job(n: int) -> None:
            started.append(n)
            try:
                await blocker.wait()
            finally:
                cleaned.append(n)

        async with WorkerPool(2) as pool:
            futures = [pool.submit(functools.partial(job, n)) for n in range(5)]
            while len(started) < 2:
                await asyncio.sleep(0)
        assert started == [0, 1] and sorted(cleaned) == [0, 1]
        assert all(f.cancelled() for f in futures)

    run(scenario)


def test_a_job_cancelled_before_it_starts_is_skipped() -> None:
    async def scenario() -> None:
        ran: list[int] = []

        async def job(n: int) -> int:
            ran.append(n)
            return n

        async with WorkerPool(1) as pool:
            first = pool.submit(functools.partial(job, 0))
            skipped = pool.submit(functools.partial(job, 1))
            last = pool.submit(functools.partial(job, 2))
            skipped.cancel()
            assert await first == 0 and await last == 2
        assert ran == [0, 2]

    run(scenario)


def test_a_job_raising_cancelled_error_does_not_stop_the_pool() -> None:
    async def scenario() -> None:
        async def cancelled_inside() -> None:
            inner = asyncio.ensure_future(asyncio.sleep(10))
            inner.cancel()
            await inner  # raises CancelledError in the job, the worker was not cancelled

        async with WorkerPool(1) as pool:
            first = pool.submit(cancelled_inside)
            after = pool.submit(lambda: asyncio.sleep(0, result="still served"))
            done, _ = await asyncio.wait([after], timeout=0.2)
            assert after in done and after.result() == "still served"
            assert first.cancelled()  # the job's own outcome: settled, never left pending

    run(scenario)


async def numbered_pages(count: int, log: list[str], *, fail_at: int | None = None) -> AsyncIterator[list[int]]:
    try:
        for n in range(count):
            log.append(f"fetch {n}")
            await asyncio.sleep(0)
            if n == fail_at:
                raise RuntimeError(f"page {n} failed")
            yield [n]
    finally:
        log.append("closed")


def test_prefetch_yields_in_order_and_fetches_the_next_page_meanwhile() -> None:
    """While the caller works on page n, page n+1 is already being fetched."""

    async def scenario() -> None:
        log: list[str] = []
        async for page in prefetch(numbered_pages(3, log)):
            await asyncio.sleep(0.01)  # the caller's work on this page
            log.append(f"used {page[0]}")
        assert log.index("fetch 1") < log.index("used 0") and log.index("fetch 2") < log.index("used 1")
        assert [e for e in log if e.startswith("used")] == ["used 0", "used 1", "used 2"]
        assert log.count("closed") == 1

    run(scenario)


def test_prefetch_raises_a_page_error_where_that_page_would_be() -> None:
    async def scenario() -> None:
        log: list[str] = []
        seen: list[int] = []
        with pytest.raises(RuntimeError, match="page 2 failed"):
            async for page in prefetch(numbered_pages(5, log, fail_at=2)):
                seen.extend(page)
        assert seen == [0, 1]

    run(scenario)


def test_leaving_prefetch_early_cancels_the_fetch_ahead_and_closes_the_source() -> None:
    async def scenario() -> None:
        log: list[str] = []
        stream = prefetch(numbered_pages(10, log))
        async for page in stream:
            if page == [1]:
                break
        await stream.aclose()  # type: ignore[attr-defined,unused-ignore]
        assert log[-1] == "closed"
        assert "fetch 4" not in log

    run(scenario)


def test_prefetch_of_nothing_yields_nothing() -> None:
    async def scenario() -> None:
        log: list[str] = []
        assert [p async for p in prefetch(numbered_pages(0, log))] == []
        assert log == ["closed"]

    run(scenario)
