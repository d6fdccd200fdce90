"""Local change detection in-process against the emulators: scans find what no queue entry announced (SPEC 4)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import INPROC_KEY, aio, emulator_settings

from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.report import SyncReport
from memsyncd.engine.scanplan import Found, classify, delete_guard, rule_level
from memsyncd.engine.syncer import ScanKind, Syncer
from memsyncd.models import LocalMemory, Mapping, QueueEntry, SyncMode, content_hash, format_ts, utc_now

pytestmark = pytest.mark.usefixtures("one_loop_per_test")  # aio(): every step of a test on one event loop


def make_syncer(path: Path, servers: RunningEmulators, **sync: Any) -> Syncer:
    path.mkdir(parents=True, exist_ok=True)
    return Syncer(emulator_settings(servers, **sync), Paths(path), INPROC_KEY)


def sync(syncer: Syncer, scan: ScanKind | None = ScanKind.FULL, mode: SyncMode = SyncMode.FULL,
         **kwargs: Any) -> SyncReport:
    report: SyncReport = aio(syncer.run(mode, scan=scan, **kwargs))
    return report


def mem0_traffic(admin: EmulatorAdmin) -> str:
    return json.dumps(admin.requests("mem0"))


# --- pure decisions -------------------------------------------------------------------------


class _Rule:
    def __init__(self, app: str | None = None, category: str | None = None, level: int = 0) -> None:
        self.app, self.category, self.level = app, category, level


def test_classify_states_levels_and_echo() -> None:
    """Only active memories count; a pulled copy is never new; level 0 (metadata, default, rule) stays local."""
    memory = LocalMemory("a", "text", metadata={"level": 1}, app="cursor")
    assert classify(memory, None, default_level=0, rules=[]) is Found.NEW
    for state in ("paused", "archived", "deleted"):
        assert classify(LocalMemory("a", "t", state=state, metadata={"level": 1}), None, default_level=1,
                        rules=[]) is Found.NOTHING
    pulled = LocalMemory("a", "t", metadata={"memsync_cloud_id": "c1", "level": 1})
    assert classify(pulled, None, default_level=1, rules=[]) is Found.NOTHING
    assert classify(LocalMemory("a", "t"), None, default_level=0, rules=[]) is Found.NOTHING
    assert classify(memory, None, default_level=1, rules=[_Rule(app="Cursor")]) is Found.NOTHING
    assert classify(memory, None, default_level=1, rules=[], local_only=True) is Found.NOTHING
    mapping = Mapping("a", "c", content_hash("old"), "old", 1)
    assert classify(memory, mapping, default_level=0, rules=[]) is Found.EDITED
    assert classify(memory, mapping, default_level=0, rules=[], in_conflict=True) is Found.NOTHING
    same = Mapping("a", "c", content_hash("text"), "text", 1)
    assert classify(memory, same, default_level=0, rules=[]) is Found.NOTHING


def test_rules_match_app_and_category() -> None:
    memory = LocalMemory("a", "t", app="cursor", categories=("work", "code"))
    assert rule_level(memory, [_Rule(app="claude")]) is None
    assert rule_level(memory, [_Rule(category="WORK", level=2), _Rule(app="cursor", level=1)]) == 1
    assert rule_level(memory, [_Rule(app="cursor", category="personal")]) is None


def test_delete_guard() -> None:
    assert delete_guard(1, 10, 0.1) == ""
    assert "2 of 10" in delete_guard(2, 10, 0.1)
    assert delete_guard(0, 0, 0.1) == ""


# --- end to end in-process ------------------------------------------------------------------


def test_first_sync_pushes_marked_memories_only(tmp_path: Path, servers: RunningEmulators,
                                                admin: EmulatorAdmin) -> None:
    """Two memories written before install: the level-1 one reaches mem0; nothing of the unmarked one does."""
    admin.local_add("shared with the cloud", level=1)
    secret = "unmarked and private"
    admin.local_add(secret)
    admin.clear_requests("mem0")
    syncer = make_syncer(tmp_path, servers)  # default_level 0
    report = sync(syncer)
    assert report.exit_code == 0, report.to_json()
    assert report.scan is not None and report.scan.new == 1
    assert report.push is not None and report.push.created == 1
    assert admin.cloud_texts() == ["shared with the cloud"]
    traffic = mem0_traffic(admin)
    assert secret not in traffic and content_hash(secret) not in traffic
    again = sync(syncer)
    assert again.scan is not None and again.scan.found == 0 and again.push is not None and again.push.created == 0
    aio(syncer.aclose())


def test_first_sync_adopts_identical_cloud_copy(tmp_path: Path, servers: RunningEmulators,
                                               admin: EmulatorAdmin) -> None:
    """The cloud already holds the same text (another device, a reinstall): adopted, never copied twice."""
    admin.local_add("already in the cloud", level=1)
    admin.local_add("only here", level=1)
    admin.cloud_add("already in the cloud")
    syncer = make_syncer(tmp_path, servers)
    report = sync(syncer)
    assert report.exit_code == 0, report.to_json()
    assert report.pull is not None and report.pull.adopted == 1
    assert report.push is not None and report.push.created == 1
    assert admin.cloud_texts() == ["already in the cloud", "only here"]
    assert admin.local_texts() == ["already in the cloud", "only here"]
    sync(syncer)
    assert admin.cloud_texts() == ["already in the cloud", "only here"]
    aio(syncer.aclose())


def test_edits_and_deletes_outside_the_queue(tmp_path: Path, servers: RunningEmulators,
                                            admin: EmulatorAdmin) -> None:
    """An edit and a delete made directly in OpenMemory reach mem0 through a full scan; archiving changes nothing."""
    ids = [admin.local_add(f"memory {n}", level=1) for n in range(4)]
    syncer = make_syncer(tmp_path, servers, max_delete_fraction=0.5)
    sync(syncer)
    assert len(admin.cloud_texts()) == 4
    admin.local_edit(ids[0], "memory 0, edited in Cursor")
    admin.local_delete(ids[1])
    admin.http.post(f"{admin.openmemory}/api/v1/memories/actions/archive",
                    params={"user_id": str(uuid.uuid4())}, json=[ids[2]]).raise_for_status()
    assert admin.local_get(ids[2])["state"] == "archived"
    report = sync(syncer)
    assert report.exit_code == 0, report.to_json()
    assert report.scan is not None and (report.scan.edited, report.scan.deleted) == (1, 1)
    assert admin.cloud_texts() == ["memory 0, edited in Cursor", "memory 2", "memory 3"]
    aio(syncer.aclose())


def test_incremental_scan_and_idle_cost(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin) -> None:
    """A memory another client wrote is pushed by an incremental scan; an idle scan costs no mem0 request."""
    admin.local_add("before", level=1)
    syncer = make_syncer(tmp_path, servers)
    sync(syncer)
    admin.local_add("from Claude Desktop", level=1)
    report = sync(syncer, ScanKind.INCREMENTAL, SyncMode.PUSH)
    assert report.scan is not None and report.scan.new == 1
    assert admin.cloud_texts() == ["before", "from Claude Desktop"]
    admin.clear_requests("mem0")
    admin.clear_requests("openmemory")
    idle = sync(syncer, ScanKind.INCREMENTAL, SyncMode.PUSH)
    assert idle.scan is not None and idle.scan.found == 0
    assert admin.requests("mem0") == []
    assert len(admin.requests("openmemory")) <= 2
    status = aio(syncer.status())
    assert status.last_incremental_scan and status.last_full_scan
    aio(syncer.aclose())


def test_queued_level_zero_is_never_pushed_by_a_scan(tmp_path: Path, servers: RunningEmulators,
                                                     admin: EmulatorAdmin) -> None:
    """Queued as level 0 under default 1: the queue's level wins, now and in every later scan."""
    text = "queued as private"
    local_id = admin.local_add(text)
    syncer = make_syncer(tmp_path, servers, default_level=1)
    syncer.queue.enqueue(QueueEntry(local_id, "push", format_ts(utc_now()), None, 0))
    admin.clear_requests("mem0")
    sync(syncer)
    sync(syncer)
    assert admin.cloud_texts() == []
    traffic = mem0_traffic(admin)
    assert text not in traffic and content_hash(text) not in traffic
    aio(syncer.aclose())


def test_selective_sync_rule_keeps_an_app_local(tmp_path: Path, servers: RunningEmulators,
                                                admin: EmulatorAdmin) -> None:
    """A rule by app makes its memories local-only exactly like level 0: nothing of them in any request."""
    text = "written by claude, ruled local-only"
    admin.local_add(text, level=2)
    admin.clear_requests("mem0")
    syncer = make_syncer(tmp_path, servers, default_level=1, rules=[{"app": "claude", "level": 0}])
    report = sync(syncer)
    assert report.exit_code == 0
    assert admin.cloud_texts() == []
    traffic = mem0_traffic(admin)
    assert text not in traffic and content_hash(text) not in traffic
    aio(syncer.aclose())


def test_pulled_memory_is_no_echo(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin) -> None:
    """A memory the pull wrote locally is never new to a scan, even when its mapping was lost in a crash."""
    admin.cloud_add("from another device", level=1)
    syncer = make_syncer(tmp_path, servers, default_level=1)
    sync(syncer)
    assert admin.local_texts() == ["from another device"]
    for mapping in list(syncer.state.mappings()):
        syncer.state.delete_mapping(mapping.local_id)  # as if the crash came before the page's mappings
    admin.clear_requests("mem0")
    report = sync(syncer, ScanKind.FULL, SyncMode.PUSH)
    assert report.scan is not None and report.scan.new == 0
    assert [r for r in admin.requests("mem0") if r["method"] == "POST"] == []
    assert admin.cloud_texts() == ["from another device"]
    aio(syncer.aclose())


def test_guard_holds_mass_deletion_until_confirmed(tmp_path: Path, servers: RunningEmulators,
                                                  admin: EmulatorAdmin) -> None:
    """Half the synced memories deleted locally: nothing deleted in the cloud, reported, until confirmed."""
    ids = [admin.local_add(f"kept {n}", level=1) for n in range(6)]
    syncer = make_syncer(tmp_path, servers, max_delete_fraction=0.1)
    sync(syncer)
    for local_id in ids[:3]:
        admin.local_delete(local_id)
    report = sync(syncer)
    assert report.scan is not None and report.scan.deletes_held == 3 and report.scan.deleted == 0
    assert "memsyncctl sync --confirm-deletes" in report.scan.held_reason
    assert len(admin.cloud_texts()) == 6
    status = aio(syncer.status())
    assert status.deletes_held == 3 and "--confirm-deletes" in status.deletes_held_reason
    confirmed = sync(syncer, confirm_deletes=True)
    assert confirmed.scan is not None and confirmed.scan.deleted == 3
    assert admin.cloud_texts() == ["kept 3", "kept 4", "kept 5"]
    assert aio(syncer.status()).deletes_held == 0
    aio(syncer.aclose())


def test_failed_listing_deletes_nothing(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin) -> None:
    """The listing's second page fails: memories on it are not taken as deleted, nothing leaves the cloud."""
    for n in range(105):
        admin.local_add(f"memory {n:03}", level=1)
    syncer = make_syncer(tmp_path, servers, max_delete_fraction=1.0, attempts_per_run=2)
    sync(syncer)
    assert len(admin.cloud_texts()) == 105
    admin.fault("openmemory", fault="500", match='"page":2', count=10)
    try:
        report = sync(syncer, ScanKind.FULL, SyncMode.PUSH)
    finally:
        admin.fault("openmemory", fault=None)
    assert report.scan is not None and report.scan.failed and report.scan.deleted == 0
    assert report.exit_code != 0
    assert len(admin.cloud_texts()) == 105
    assert syncer.state.count_mappings() == 105
    aio(syncer.aclose())


def test_dry_run_counts_and_writes_nothing(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin) -> None:
    admin.local_add("one", level=1)
    admin.local_add("two", level=1)
    syncer = make_syncer(tmp_path, servers)
    report = sync(syncer, dry_run=True)
    assert report.scan is not None and report.scan.new == 2
    assert report.push is not None and report.push.created == 2
    assert admin.cloud_texts() == []
    assert aio(syncer.status()).last_full_scan is None
    aio(syncer.aclose())


def test_two_roots_on_one_openmemory_never_duplicate(tmp_path: Path, servers: RunningEmulators,
                                                     admin: EmulatorAdmin) -> None:
    """Two roots on the same stores (own state each): what one pushed, the other's scan adopts, never copies."""
    admin.local_add("before both", level=1)
    first = make_syncer(tmp_path / "a", servers)
    second = make_syncer(tmp_path / "b", servers)
    sync(first)
    sync(second)  # its pull has run: it has a cursor now
    admin.local_add("written after both synced", level=1)
    sync(first, ScanKind.INCREMENTAL, SyncMode.PUSH)
    report = sync(second, ScanKind.INCREMENTAL, SyncMode.PUSH)
    assert report.pull is not None and report.pull.adopted == 1
    assert admin.cloud_texts() == ["before both", "written after both synced"]
    assert admin.local_texts() == ["before both", "written after both synced"]
    aio(first.aclose())
    aio(second.aclose())


def test_status_without_daemon_counts_unqueued_changes(tmp_path: Path, servers: RunningEmulators,
                                                       admin: EmulatorAdmin) -> None:
    """A new user with memories already in OpenMemory: status says what the first sync will push."""
    admin.local_add("existing one", level=1)
    admin.local_add("existing two", level=1)
    admin.local_add("private, unmarked")
    syncer = make_syncer(tmp_path, servers)
    status = aio(syncer.status())
    assert (status.pending_push, status.pending_scan) == (2, 2)
    assert admin.cloud_texts() == [] and status.last_full_scan is None  # counted, nothing written
    sync(syncer)
    status = aio(syncer.status())
    assert (status.pending_push, status.pending_scan) == (0, 0)
    aio(syncer.aclose())


def test_status_all_reports_held_deletions(tmp_path: Path) -> None:
    """``status --all`` (from the files, no daemon) names the held deletions and the command that confirms them."""
    from memsyncd.cli.roots import _local_summary, render_roots
    from memsyncd.config import Paths as RootPaths
    from memsyncd.engine.scan import CONFIRM_DELETES_COMMAND, META_DELETES_HELD
    from memsyncd.store.state import StateStore

    paths = RootPaths(tmp_path)
    paths.config.parent.mkdir(parents=True)
    paths.config.write_text("{}")
    store = StateStore(paths.state)
    store.set_meta(META_DELETES_HELD, json.dumps({"count": 4, "mapped": 10, "reason": "4 of 10 deleted locally",
                                                  "command": CONFIRM_DELETES_COMMAND}))
    store.close()
    row = _local_summary(tmp_path)
    assert row["status"]["deletes_held"] == 4
    text = render_roots([row], daemon=False)
    assert "deletions held: 4 of 10 deleted locally" in text and CONFIRM_DELETES_COMMAND in text


def test_rules_config_and_doctor_line(tmp_path: Path) -> None:
    """Rules are validated with a clear message, and doctor lists them."""
    from memsyncd.cli.doctor import DoctorContext, Status, check_rules
    from memsyncd.config import settings_from_dict
    from memsyncd.errors import ConfigError

    settings = settings_from_dict({"sync": {"rules": [{"app": "cursor", "level": 0},
                                                      {"category": "work", "level": 1}]}}, tmp_path / "c.json")
    ctx = DoctorContext(paths=Paths(tmp_path), home=tmp_path, settings=settings)
    check = check_rules(ctx)
    assert check.status is Status.OK
    assert "app=cursor -> level 0 (local-only)" in check.detail and "category=work -> level 1" in check.detail
    with pytest.raises(ConfigError, match="sync.rules.0"):
        settings_from_dict({"sync": {"rules": [{"level": 0}]}}, tmp_path / "c.json")
