"""``memsyncctl log``: a root's recent changes from the state DB, bounded, never a level-0 text."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from harness import Emulators, ctl

from memsyncd.store.state import EVENTS_KEPT, StateStore


def test_log_lists_pushes_pulls_skips_and_deletes_without_level_0_text(root: Path, emu: Emulators) -> None:
    pushed_text = "log: a long memory that goes to the cloud " + "x" * 80
    pushed = emu.local_add(pushed_text, level=1)
    secret = "log: PRIVATE level zero secret text"
    private = emu.local_add(secret, level=0)
    emu.cloud_add("log: written on another device", level=1)
    for memory_id in (pushed, private):
        ctl(root, "enqueue", memory_id)
    assert ctl(root, "sync").returncode == 0
    emu.local_delete(pushed)
    ctl(root, "enqueue", pushed, "--delete")
    assert ctl(root, "sync").returncode == 0

    result = ctl(root, "log", "--json")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    by_direction = {(e["direction"], e["local_id"]): e for e in events}
    push = by_direction[("push", pushed)]
    assert push["text"] == pushed_text[:60] and push["why"] and push["at"].endswith("Z")
    assert ("skip", private) in by_direction and by_direction[("skip", private)]["text"] is None
    assert ("delete", pushed) in by_direction
    assert any(e["direction"] == "pull" and e["text"] == "log: written on another device" for e in events)
    plain = ctl(root, "log")
    assert plain.returncode == 0 and "push" in plain.stdout and "pull" in plain.stdout
    for output in (result.stdout, plain.stdout):
        assert "PRIVATE" not in output and "secret" not in output
    assert "PRIVATE" not in root.joinpath(".claude/memory/memsync.db").read_bytes().decode("latin-1")

    future = ctl(root, "log", "--since", "2999-01-01T00:00:00Z")
    assert future.returncode == 0 and "No changes recorded since" in future.stdout
    assert len(json.loads(ctl(root, "log", "--since", "1h", "--json").stdout)["events"]) == len(events)
    bad = ctl(root, "log", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_events_are_bounded_and_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "memsync.db"
    store = StateStore(path)
    store.close()
    with sqlite3.connect(path) as db:  # what an older memsyncd left: schema version 1, no events table
        for table in ("events", "local_replaces", "local_duplicates", "local_only"):  # migrations 2 to 4
            db.execute(f"DROP TABLE {table}")
        db.execute("PRAGMA user_version = 1")
    store = StateStore(path)
    try:
        for i in range(EVENTS_KEPT + 450):
            store.record_event("push", f"id-{i}", f"text {i}", "test")
        store.flush_events()
        events = store.events()
        assert len(events) == EVENTS_KEPT
        assert events[-1]["local_id"] == f"id-{EVENTS_KEPT + 449}" and events[0]["local_id"] == "id-450"
        assert store.events(limit=3)[-1]["local_id"] == f"id-{EVENTS_KEPT + 449}"
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] <= EVENTS_KEPT
