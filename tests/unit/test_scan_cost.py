"""What a scan-driven push costs: no second read of what the scan listed, no reconcile on a first sync,
no queue-file write for findings that were never in the queue (issue 14's first-sync and latency targets)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness import INPROC_KEY, emulator_settings

from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.report import SyncReport
from memsyncd.engine.syncer import ScanKind, Syncer
from memsyncd.models import QueueEntry, SyncMode, format_ts, utc_now


def make_syncer(path: Path, servers: RunningEmulators, **sync: Any) -> Syncer:
    path.mkdir(parents=True, exist_ok=True)
    return Syncer(emulator_settings(servers, **sync), Paths(path), INPROC_KEY)


def run(loop: asyncio.Runner, syncer: Syncer, scan: ScanKind | None = ScanKind.FULL,
        mode: SyncMode = SyncMode.FULL) -> SyncReport:
    report: SyncReport = loop.run(syncer.run(mode, scan=scan))
    assert report.fatal is None, report.to_json()
    return report


def count(requests: list[dict[str, Any]], method: str, prefix: str) -> int:
    return sum(1 for r in requests if r["method"] == method and r["path"].startswith(prefix))


def test_first_sync_reads_each_memory_once_and_does_not_reconcile(tmp_path: Path, servers: RunningEmulators,
                                                                  admin: EmulatorAdmin,
                                                                  loop: asyncio.Runner) -> None:
    """The listing is the only local read; the cloud sees the adds and one pull listing, no reconcile listing."""
    for n in range(5):
        admin.local_add(f"written before install {n}", level=1)
    admin.clear_requests("mem0")
    admin.clear_requests("openmemory")
    syncer = make_syncer(tmp_path, servers)
    report = run(loop, syncer)
    assert report.push is not None and report.push.created == 5
    assert report.reconcile is None  # nothing was mapped when the run began: nothing could have been deleted
    local, cloud = admin.requests("openmemory"), admin.requests("mem0")
    assert count(local, "GET", "/api/v1/memories/") == 0  # no GET per memory the scan just listed
    assert count(cloud, "POST", "/v3/memories/add") == 5
    assert count(cloud, "POST", "/v3/memories/") - count(cloud, "POST", "/v3/memories/add") == 1  # the pull only
    # the next full sync reconciles (mappings exist now), and creates nothing
    again = run(loop, syncer)
    assert again.reconcile is not None and again.push is not None and again.push.created == 0
    # a scan tick that pushes a new memory leaves the queue file alone (it was never queued)
    queue = syncer.paths.queue
    before = queue.stat()
    admin.local_add("written by Cursor", level=1)
    tick = run(loop, syncer, ScanKind.INCREMENTAL, SyncMode.PUSH)
    assert tick.push is not None and tick.push.created == 1
    after = queue.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    loop.run(syncer.aclose())


def test_a_queued_entry_still_reads_the_memory(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin,
                                               loop: asyncio.Runner) -> None:
    """An id that is also queued (the hook) is read again: its queue entry may follow a newer write."""
    memory = admin.local_add("listed and queued", level=1)
    syncer = make_syncer(tmp_path, servers)
    syncer.queue.enqueue(QueueEntry(memory, "push", format_ts(utc_now())))
    admin.clear_requests("openmemory")
    report = run(loop, syncer)
    assert report.push is not None and report.push.created == 1
    assert count(admin.requests("openmemory"), "GET", f"/api/v1/memories/{memory}") == 1
    loop.run(syncer.aclose())


def test_a_failed_finding_clears_its_error_row_when_it_succeeds(tmp_path: Path, servers: RunningEmulators,
                                                                 admin: EmulatorAdmin,
                                                                 loop: asyncio.Runner) -> None:
    """A scan finding that failed has a sync_errors row; once pushed, the row goes (the file is written then)."""
    admin.local_add("fails once", level=1)
    syncer = make_syncer(tmp_path, servers)
    admin.fault("mem0", fault="422", match="/v3/memories/add", count=100)
    try:
        failed = run(loop, syncer, ScanKind.INCREMENTAL, SyncMode.PUSH)
    finally:
        admin.fault("mem0", fault=None)
    assert failed.push is not None and failed.push.errors == 1
    assert [row.id for row in syncer.queue.read().sync_errors] != []
    done = run(loop, syncer, ScanKind.INCREMENTAL, SyncMode.PUSH)
    assert done.push is not None and done.push.created == 1
    assert syncer.queue.read().sync_errors == []
    assert admin.cloud_texts() == ["fails once"]
    loop.run(syncer.aclose())
