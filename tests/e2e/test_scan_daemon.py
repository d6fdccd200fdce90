"""Local change detection through the real daemon and CLI against the emulators, with ~1 s scan intervals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import DaemonProc, Emulators, ctl, make_root, running_daemon, running_emulators, wait_for

from memsyncd.models import content_hash

FAST = {"local_scan_interval_seconds": 1, "local_full_scan_interval_seconds": 1}


@pytest.fixture()
def clean(emu: Emulators) -> Iterator[Emulators]:
    """The module's emulators with no memories on either side and no faults."""
    for url in (emu.openmemory, emu.mem0):
        emu.http.post(f"{url}/_admin/reset").raise_for_status()
    yield emu
    emu.fault("openmemory", fault=None)


def status_json(daemon: DaemonProc) -> dict[str, Any]:
    result = daemon.ctl("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def full_scans_after(daemon: DaemonProc, count: int) -> None:
    """Wait until ``count`` more full scans completed (their times differ by at least a second)."""
    seen: set[str] = set()

    def more() -> bool:
        last = status_json(daemon).get("last_full_scan")
        if last:
            seen.add(last)
        return len(seen) > count

    wait_for(more, timeout=30)


def test_adds_edits_and_deletes_made_in_openmemory_reach_mem0(root: Path, clean: Emulators) -> None:
    emu = clean
    make_root(root, emu, default_level=1, max_delete_fraction=1.0, **FAST)
    with running_daemon(root) as daemon:
        first = emu.local_add("scan-daemon: written by Cursor")
        wait_for(lambda: emu.cloud_texts() == ["scan-daemon: written by Cursor"])
        emu.local_edit(first, "scan-daemon: edited in the OpenMemory UI")
        wait_for(lambda: emu.cloud_texts() == ["scan-daemon: edited in the OpenMemory UI"])
        emu.local_delete(first)
        wait_for(lambda: emu.cloud_texts() == [])
        emu.clear_requests()
        full_scans_after(daemon, 2)  # idle scans (incremental and full): nothing for mem0
        assert emu.requests("mem0") == []
        status = status_json(daemon)
        assert status["last_incremental_scan"] and status["last_full_scan"]
        assert status["pending_push"] == 0 and status["pending_scan"] == 0


def test_level_zero_under_default_zero_sends_no_byte(root: Path, clean: Emulators) -> None:
    """An unmarked memory under default 0 stays on the machine: neither its text nor its hash in any request."""
    emu = clean
    secret = "scan-daemon: unmarked, so private"
    emu.local_add(secret)
    emu.local_add("scan-daemon: marked level 1", level=1)
    emu.clear_requests()
    make_root(root, emu, **FAST)
    with running_daemon(root) as daemon:
        wait_for(lambda: emu.cloud_texts() == ["scan-daemon: marked level 1"])
        full_scans_after(daemon, 2)
    traffic = json.dumps(emu.requests("mem0"))
    assert secret not in traffic and content_hash(secret) not in traffic
    assert emu.cloud_texts() == ["scan-daemon: marked level 1"]


def test_first_sync_adopts_and_never_duplicates(root: Path, tmp_path: Path, clean: Emulators) -> None:
    """Existing memories: dry run counts, the first sync pushes them, an identical cloud copy is adopted."""
    emu = clean
    emu.cloud_add("scan-daemon: on both sides already")
    emu.local_add("scan-daemon: on both sides already", level=1)
    emu.local_add("scan-daemon: only local", level=1)
    make_root(root, emu, local_full_scan_interval_seconds=900)
    dry = ctl(root, "sync", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Found in OpenMemory (full scan of 2): 2 new" in dry.stdout
    assert emu.cloud_texts() == ["scan-daemon: on both sides already"]
    result = ctl(root, "sync")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = sorted(["scan-daemon: only local", "scan-daemon: on both sides already"])
    assert emu.cloud_texts() == expected and emu.local_texts() == expected
    assert ctl(root, "sync").returncode == 0
    reinstalled = make_root(tmp_path / "reinstalled", emu, local_full_scan_interval_seconds=900)
    assert ctl(reinstalled, "sync").returncode == 0  # a new state DB: everything is adopted by hash
    assert emu.cloud_texts() == expected and emu.local_texts() == expected


def test_no_echo_between_two_devices(root: Path, tmp_path: Path, clean: Emulators) -> None:
    """Two devices, each written by "another client": one cloud write per change, no copy bounces back."""
    emu = clean
    with running_emulators() as other:
        device_b = tmp_path / "device-b"
        make_root(root, emu, default_level=1, pull_interval_seconds=1, **FAST)
        make_root(device_b, emu, default_level=1, pull_interval_seconds=1, **FAST)
        config = device_b / ".claude" / "memory" / "config.json"
        data = json.loads(config.read_text())
        data["local"]["url"] = other.openmemory
        config.write_text(json.dumps(data))
        emu.clear_requests()
        with running_daemon(root) as a, running_daemon(device_b, socket_path=device_b / "b.sock") as b:
            emu.local_add("scan-daemon: from A")
            other.local_add("scan-daemon: from B")
            both = ["scan-daemon: from A", "scan-daemon: from B"]
            wait_for(lambda: emu.local_texts() == both and other.local_texts() == both, timeout=30)
            full_scans_after(a, 2)
            full_scans_after(b, 2)
        adds = [r for r in emu.requests("mem0") if r["method"] == "POST" and "/memories/add" in r["path"]]
        assert len(adds) == 2
        assert emu.cloud_texts() == both
        assert emu.local_texts() == both and other.local_texts() == both


def test_guard_refusal_is_reported_and_confirmed(root: Path, clean: Emulators) -> None:
    emu = clean
    ids = [emu.local_add(f"scan-daemon: kept {n}", level=1) for n in range(6)]
    make_root(root, emu, max_delete_fraction=0.1, **FAST)
    assert ctl(root, "sync").returncode == 0
    assert len(emu.cloud_texts()) == 6
    for local_id in ids[:3]:
        emu.local_delete(local_id)
    with running_daemon(root) as daemon:
        wait_for(lambda: status_json(daemon).get("deletes_held") == 3)
        assert len(emu.cloud_texts()) == 6
        text = daemon.ctl("status").stdout
        assert "Deletions held" in text and "memsyncctl sync --confirm-deletes" in text
        doctor = json.loads(daemon.ctl("doctor", "--json").stdout)
        scans = next(c for c in doctor["checks"] if c["name"] == "local scans")
        assert scans["status"] == "warn" and "--confirm-deletes" in scans["fix"]
        confirmed = daemon.ctl("sync", "--confirm-deletes")
        assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
        assert emu.cloud_texts() == [f"scan-daemon: kept {n}" for n in range(3, 6)]
        wait_for(lambda: status_json(daemon).get("deletes_held") == 0)


def test_transient_listing_error_deletes_nothing(root: Path, clean: Emulators) -> None:
    """Full listings that fail (500 after retries) never count a memory as deleted."""
    emu = clean
    for n in range(3):
        emu.local_add(f"scan-daemon: survives {n}", level=1)
    make_root(root, emu, max_delete_fraction=1.0, attempts_per_run=1, **FAST)
    assert ctl(root, "sync").returncode == 0
    emu.fault("openmemory", fault="500", match='"show_archived":true', count=1000)
    with running_daemon(root) as daemon:
        wait_for(lambda: daemon.log().count("scan.failed") >= 2, timeout=30)
        assert len(emu.cloud_texts()) == 3
        emu.fault("openmemory", fault=None)
        full_scans_after(daemon, 1)
    assert len(emu.cloud_texts()) == 3


def test_pending_counts_what_scans_found(root: Path, clean: Emulators) -> None:
    """mem0 refuses adds: what the scans found stays pending, is counted in status, and goes once mem0 is back."""
    emu = clean
    make_root(root, emu, default_level=1, attempts_per_run=1, **FAST)
    emu.fault("mem0", fault="500", match="/memories/add", count=100000)
    try:
        with running_daemon(root) as daemon:
            emu.local_add("scan-daemon: waits for mem0 one")
            emu.local_add("scan-daemon: waits for mem0 two")
            wait_for(lambda: status_json(daemon).get("pending_scan") == 2)
            status = status_json(daemon)
            assert status["pending_push"] == 2
            assert "Found by local scans: 2" in daemon.ctl("status").stdout
            emu.fault("mem0", fault=None)
            wait_for(lambda: len(emu.cloud_texts()) == 2, timeout=30)
            wait_for(lambda: status_json(daemon).get("pending_scan") == 0)
    finally:
        emu.fault("mem0", fault=None)


def test_local_watch_path_starts_a_scan(root: Path, tmp_path: Path, clean: Emulators) -> None:
    """With periodic scans off, a write to the watched OpenMemory database file makes a new memory sync."""
    emu = clean
    database = tmp_path / "openmemory-volume" / "openmemory.db"
    database.parent.mkdir()
    database.write_bytes(b"")
    make_root(root, emu, default_level=1)  # both scan intervals 0 (harness default)
    config = root / ".claude" / "memory" / "config.json"
    data = json.loads(config.read_text())
    data["local"]["watch_path"] = str(database)
    config.write_text(json.dumps(data))
    with running_daemon(root) as daemon:
        wait_for(lambda: "local_watch.started" in daemon.log())
        wait_for(lambda: (h := daemon.health()) is not None and h.get("runs_started", 0) >= 1 and not h["busy"])
        emu.local_add("scan-daemon: seen through the database file")
        health = daemon.health()
        assert health is not None and not health["busy"]
        assert emu.cloud_texts() == []  # nothing scans by itself

        def written_and_synced() -> bool:
            database.write_bytes(b"written by OpenMemory")  # again until outside our own run's quiet window
            return emu.cloud_texts() == ["scan-daemon: seen through the database file"]

        wait_for(written_and_synced)
