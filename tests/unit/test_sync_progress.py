"""The engine's progress callback: monotone counts per phase ending at the totals, silent in dry runs, never fatal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from harness import INPROC_KEY, INPROC_USER, append_entries, emulator_settings

from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.syncer import Syncer
from memsyncd.models import SyncMode

T = TypeVar("T")
Call = tuple[str, int, "int | None"]


def make_syncer(root: Path, servers: RunningEmulators, **sync: Any) -> Syncer:
    return Syncer(emulator_settings(servers, default_level=1, **sync), Paths(root), INPROC_KEY)


def with_syncer(syncer: Syncer, steps: Callable[[], Awaitable[T]]) -> T:
    """Run ``steps`` on one event loop (the Syncer's clients belong to it), then close the Syncer."""
    async def go() -> T:
        try:
            return await steps()
        finally:
            await syncer.aclose()

    return asyncio.run(go())


def test_push_and_pull_report_monotone_progress_ending_at_their_totals(tmp_path: Path, servers: RunningEmulators,
                                                                      admin: EmulatorAdmin) -> None:
    """A pull of 230 cloud memories (3 pages) and a push of 40 entries count 1..M and 1..N; dry runs say nothing."""
    pulled, pushed = 230, 40
    for i in range(pulled):
        servers.mem0.add(f"cloud progress {i:03d}", user_id=INPROC_USER, metadata={"level": 1})
    local_ids = [admin.local_add(f"local progress {i:02d}") for i in range(pushed)]
    syncer = make_syncer(tmp_path, servers, concurrency=3)
    append_entries(syncer.queue, local_ids)
    calls: list[Call] = []

    def progress(phase: str, done: int, total: int | None) -> None:
        calls.append((phase, done, total))

    async def steps() -> tuple[Any, Any, Any, Any]:
        dry = await syncer.run(SyncMode.FULL, dry_run=True, progress=progress)
        await syncer.status()  # its "to pull" figure is a dry-run pull
        assert calls == [], "a dry run or a status never reports progress"
        pull = await syncer.run(SyncMode.PULL, progress=progress)
        push = await syncer.run(SyncMode.PUSH, progress=progress)
        echoes = await syncer.run(SyncMode.PULL, progress=progress)  # our own pushes (and the overlap)
        await syncer.run(SyncMode.PULL)  # the callback was for those runs only
        return dry, pull, push, echoes

    dry, pull, push, echoes = with_syncer(syncer, steps)
    assert dry.push.created == pushed and dry.pull.new == pulled  # the dry run did see the work
    assert pull.exit_code == 0 and pull.pull.new == pulled and pull.pull.seen == pulled
    assert push.exit_code == 0 and push.push.created == pushed
    echo_calls = calls[pulled + pushed:]
    calls = calls[:pulled + pushed]
    pull_calls = [c for c in calls if c[0] == "pull"]
    push_calls = [c for c in calls if c[0] == "push"]
    assert calls == pull_calls + push_calls  # one phase after the other, nothing else
    assert [done for _, done, _ in pull_calls] == list(range(1, pulled + 1))
    assert {total for _, _, total in pull_calls} == {None}  # the listing's length is not known ahead
    assert [done for _, done, _ in push_calls] == list(range(1, pushed + 1))
    assert {total for _, _, total in push_calls} == {pushed}
    # unchanged memories count as processed too (page by page): the count still ends at what was listed
    assert echoes.pull.seen >= pushed and echoes.pull.synced == 0
    assert {phase for phase, _, _ in echo_calls} == {"pull"}
    echo_done = [done for _, done, _ in echo_calls]
    assert echo_done == sorted(echo_done) and echo_done[-1] == echoes.pull.seen


def test_a_raising_progress_callback_never_stops_the_sync(tmp_path: Path, servers: RunningEmulators,
                                                         admin: EmulatorAdmin) -> None:
    """A display that raises is called once, then left alone; every entry is still pushed and leaves the queue."""
    local_ids = [admin.local_add(f"pushed past a broken display {i}") for i in range(6)]
    syncer = make_syncer(tmp_path, servers, concurrency=2)
    append_entries(syncer.queue, local_ids)
    calls: list[Call] = []

    def broken(phase: str, done: int, total: int | None) -> None:
        calls.append((phase, done, total))
        raise RuntimeError("terminal gone")

    report = with_syncer(syncer, lambda: syncer.run(SyncMode.FULL, progress=broken))
    assert report.exit_code == 0 and report.push is not None and report.push.created == 6 and report.push.errors == 0
    assert len(calls) == 1
    assert syncer.queue.read().pending == [] and sorted(admin.cloud_texts()) == sorted(
        f"pushed past a broken display {i}" for i in range(6))
