"""Whole runs belong to the Syncer: failures become reports, previews count, and a queue trigger reads the queue
once in the daemon (the watcher) and once in the push, whose report names the entries still queued."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from harness import INPROC_KEY, EngineRig, run_with_rig

from memsyncd.daemon.coordinator import PREVIEW, PUSH, RECONCILE
from memsyncd.daemon.root_service import RootService
from memsyncd.daemon.watcher import Debouncer
from memsyncd.engine.report import SyncReport
from memsyncd.engine.syncer import Syncer, command_error
from memsyncd.errors import AuthError, QueueUnreadableError, ServerError
from memsyncd.models import QueueKey, SyncMode
from memsyncd.store.queue import QueueStore


class RecordingLoop:
    """Stands in for the control loop: records the wake-ups the watcher asks for."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        self.calls.append(callback)


def syncer_over(rig: EngineRig) -> Syncer:
    """A Syncer sharing the rig's in-process clients and state DB."""
    return Syncer(rig.ctx.settings, rig.ctx.paths, INPROC_KEY, local=rig.ctx.local, cloud=rig.cloud,
                  state=rig.ctx.state)


async def close_service(service: RootService) -> None:
    service._queue_writer.shutdown(wait=False)
    await service.engine.stop(1)  # never started: closes its loop


@pytest.fixture()
def queue_reads(monkeypatch: pytest.MonkeyPatch) -> list[QueueStore]:
    """The QueueStore of each read of the queue file (the re-read inside a locked update, a write, is not counted)."""
    readers: list[QueueStore] = []
    real_read = QueueStore.read

    def counting_read(self: QueueStore) -> object:
        if sys._getframe(1).f_code.co_name not in ("update", "repair"):
            readers.append(self)
        return real_read(self)

    monkeypatch.setattr(QueueStore, "read", counting_read)
    return readers


def who(readers: list[QueueStore], service: RootService) -> list[str]:
    """Each read as "daemon" (the service's own store) or "engine" (the Syncer's, i.e. the push)."""
    names = {id(service.queue): "daemon", id(service.syncer.queue): "engine"}
    return sorted(names.get(id(reader), "other") for reader in readers)


def test_a_queue_trigger_reads_the_queue_once_in_the_daemon_and_once_in_the_push(
        tmp_path: Path, queue_reads: list[QueueStore]) -> None:
    """Watcher read + the push's read, nothing else; the failed entry comes from the push report."""

    async def body(rig: EngineRig) -> None:
        in_flight_during_push: list[frozenset[QueueKey]] = []

        def doomed_fails(request: httpx.Request) -> httpx.Response | None:
            in_flight_during_push.append(service._in_flight_keys)
            if request.method == "POST" and b"doomed" in request.content:
                return httpx.Response(500, json={"detail": "boom"})
            return None

        rig.mem0_http.before = doomed_fails
        service = RootService(rig.ctx.paths, syncer_over(rig), AsyncIOScheduler())
        loop = RecordingLoop()
        service._loop = loop  # type: ignore[assignment]
        service._debouncer = Debouncer(asyncio.get_running_loop(), 0.2, lambda: None)  # never fired here
        try:
            ok, doomed = rig.enqueue(rig.local_add("pushed fine"), rig.local_add("doomed to fail"))
            queue_reads.clear()
            service._queue_changed()  # the watcher sees new work
            assert len(loop.calls) == 1
            outcome = await service._run_unlocked(frozenset({PUSH}))
            push = outcome.report.push
            assert push is not None and (push.created, push.errors) == (1, 1)
            assert who(queue_reads, service) == ["daemon", "engine"]  # the watcher's, the push's
            assert push.claimed_keys == {ok.key, doomed.key} and push.pending_keys == {doomed.key}
            assert service._failed_keys == {doomed.key} and service._in_flight_keys == frozenset()
            assert all(keys >= {ok.key, doomed.key} for keys in in_flight_during_push)

            queue_reads.clear()
            service._queue_changed()  # the run's own write (the error row): no new work
            assert len(loop.calls) == 1

            # the retry timer fires before the watcher saw a new entry: the push tells what it took on
            (later,) = rig.enqueue(rig.local_add("queued later"))
            in_flight_during_push.clear()
            queue_reads.clear()
            outcome = await service._run_unlocked(frozenset({PUSH}))
            assert who(queue_reads, service) == ["engine"]
            assert all(later.key in keys for keys in in_flight_during_push) and in_flight_during_push
            assert service._failed_keys == {doomed.key}
            service._queue_changed()
            assert len(loop.calls) == 1  # only the failed entry is left: the retry timer owns it
        finally:
            await close_service(service)

    run_with_rig(tmp_path, body, attempts=1)


def test_failures_become_reports_and_command_errors_are_told_apart(tmp_path: Path) -> None:
    """run() never raises a MemsyncError; command_error() says which failures a one-shot command shows itself."""

    async def body(rig: EngineRig) -> None:
        syncer = syncer_over(rig)
        rig.ctx.paths.queue.parent.mkdir(parents=True, exist_ok=True)
        rig.ctx.paths.queue.write_text("{ not json")
        report = await syncer.run(SyncMode.PUSH)
        assert isinstance(report.fatal, QueueUnreadableError) and report.push is None
        assert (report.mode, report.dry_run, report.queue_path) == ("push", False, str(rig.ctx.paths.queue))
        assert command_error(report) is report.fatal
        rig.ctx.paths.queue.unlink()

        rig.mem0_http.before = lambda request: httpx.Response(500, json={"detail": "down"})
        reconciled = await syncer.reconcile_run()
        assert reconciled.mode == "reconcile" and isinstance(reconciled.fatal, ServerError)
        assert reconciled.reconcile is not None

        rig.mem0_http.before = lambda request: httpx.Response(401, json={"detail": "bad key"})
        report = await syncer.run(SyncMode.PULL)
        assert isinstance(report.fatal, AuthError) and command_error(report) is None  # the SYNC ERROR block

        counted = await syncer.count_to_pull()
        assert counted.count is None and isinstance(counted.error, AuthError)
        assert counted.report.dry_run and counted.report.mode == "pull"

        rig.mem0_http.before = None
        rig.cloud_add("waiting in the cloud")
        counted = await syncer.count_to_pull()
        assert (counted.count, counted.error) == (1, None)
        assert rig.local_texts() == []  # a preview writes nothing

        rig.mem0_http.before = lambda request: httpx.Response(401, json={"detail": "bad key"})
        assert isinstance((await syncer.run(SyncMode.PULL)).fatal, AuthError)  # a run stopped by the key
        rig.mem0_http.before = None  # the key is good again: a reconcile-only run starts afresh
        reconciled = await syncer.reconcile_run()
        assert reconciled.fatal is None and reconciled.reconcile is not None

    run_with_rig(tmp_path, body, attempts=1)


def test_the_daemon_builds_no_reports_of_its_own(tmp_path: Path) -> None:
    """Preview-only and reconcile-only runs hand back the Syncer's reports unchanged."""

    async def body(rig: EngineRig) -> None:
        syncer = syncer_over(rig)
        made: list[SyncReport] = []
        for name in ("count_to_pull", "reconcile_run"):
            real = getattr(syncer, name)

            async def spy(real: Callable[[], Any] = real) -> object:
                result = await real()
                made.append(result if isinstance(result, SyncReport) else result.report)
                return result

            setattr(syncer, name, spy)
        service = RootService(rig.ctx.paths, syncer, AsyncIOScheduler())
        try:
            rig.cloud_add("one to pull")
            preview = await service._run_unlocked(frozenset({PREVIEW}))
            assert preview.report is made[0] and preview.preview == 1 and preview.preview_error is None
            reconciled = await service._run_unlocked(frozenset({RECONCILE}))
            assert reconciled.report is made[1] and reconciled.report.mode == "reconcile"
        finally:
            await close_service(service)

    run_with_rig(tmp_path, body, attempts=1)
