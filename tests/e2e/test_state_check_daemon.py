"""Issue 15 item 5: a state DB damaged while the daemon has it open stops the next run before anything reaches mem0.

The daemon keeps its state DB open for days; its connection answers from the page cache, so the
damage is only seen by reading the file as it is now (``StateStore.verify`` at the start of
every run). The repro: truncate ``memsync.db`` while the daemon serves the root, then
``enqueue ID --level 1``: the create used to reach mem0 before the run failed.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from harness import Emulators, running_daemon, wait_for

from memsyncd.errors import StateUnreadableError
from memsyncd.models import Mapping
from memsyncd.store.state import StateStore


def state_path(root: Path) -> Path:
    return root / ".claude" / "memory" / "memsync.db"


def test_truncated_state_db_under_the_daemon_sends_nothing_to_mem0(root: Path, emu: Emulators) -> None:
    first = emu.local_add("pushed while the state was healthy", level=1)
    with running_daemon(root) as daemon:
        assert daemon.ctl("enqueue", first, "--level", "1").returncode == 0
        wait_for(lambda: "pushed while the state was healthy" in emu.cloud_texts())
        os.truncate(state_path(root), 0)
        emu.clear_requests("mem0")
        second = emu.local_add("queued after the state was damaged", level=1)

        queued = daemon.ctl("enqueue", second, "--level", "1")
        assert queued.returncode == 0, queued.stdout + queued.stderr
        pushed = daemon.ctl("sync", "--push")  # after (or with) the run the enqueue triggered

        assert [(r["method"], r["path"]) for r in emu.requests("mem0")] == []  # no create, not even a listing
        assert "queued after the state was damaged" not in emu.cloud_texts()
        assert pushed.returncode == 6, pushed.stdout + pushed.stderr
        assert "SYNC ERROR: sync state is unreadable" in pushed.stdout and "state rebuild" in pushed.stdout
        wait_for(lambda: "sync state is unreadable" in daemon.log())  # the daemon's own run says so too


@pytest.mark.parametrize("damage", ["truncate", "truncate-half", "overwrite-header", "replace"])
def test_verify_sees_damage_the_open_connection_does_not(tmp_path: Path, damage: str) -> None:
    """verify() reads the file as it is now and refuses it, whatever the open connection still caches."""
    path = tmp_path / "memsync.db"
    store = StateStore(path)
    store.save_mappings([Mapping(f"L{i}", f"C{i}", "h" * 64, "t" * 500) for i in range(200)])
    with sqlite3.connect(path) as other:  # move the WAL into the main file, as a checkpoint does over time
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.verify()  # healthy
    size = path.stat().st_size
    if damage == "truncate":
        os.truncate(path, 0)
    elif damage == "truncate-half":
        os.truncate(path, size // 2)
    elif damage == "overwrite-header":
        with open(path, "r+b") as handle:
            handle.write(b"\0" * 100)
    else:
        fresh = tmp_path / "other.db"
        StateStore(fresh).close()
        os.replace(fresh, path)
    with pytest.raises(StateUnreadableError) as caught:
        store.verify()
    assert str(path) in caught.value.message and "state rebuild" in caught.value.message
    if damage != "truncate-half":  # a cheap look (no page read) before each batch of intents
        with pytest.raises(StateUnreadableError):  # no push intent recorded: the create would follow it
            store.record_intents([("L1", "h")])
    store.close()
