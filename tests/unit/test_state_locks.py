"""The state store's own checks of the file never drop the SQLite locks its connections hold.

POSIX record locks belong to the process and inode: closing *any* descriptor of the database
file releases every lock the process holds on it. A check that opened and closed the file
(``verify()`` before every run, ``record_intents`` before every batch of creates) therefore
left a daemon's open connections unlocked, and the next process to close its own connection
(``memsyncctl log``, ``doctor``, a one-shot run) took itself for the last one: it checkpointed
and deleted the ``-wal`` and ``-shm`` files under the daemon, whose next run failed with
``disk I/O error`` ("sync state is unreadable") until it was restarted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from memsyncd.models import Mapping
from memsyncd.store.state import StateStore

_OTHER_PROCESS = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("SELECT count(*) FROM mappings").fetchone()
db.close()
"""


def _read_in_another_process(path: Path) -> None:
    """What 'memsyncctl log' or 'doctor' does while the daemon runs: open, read, close."""
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(path)], check=True, timeout=60)


def test_checks_keep_the_locks_of_the_open_connection(tmp_path: Path) -> None:
    path = tmp_path / "memsync.db"
    store = StateStore(path)
    try:
        store.save_mappings([Mapping("L1", "C1", "h" * 64, "first")])
        store.verify()  # the check before every run
        store.record_intents([("L2", "h" * 64)])  # the check before every batch of creates
        _read_in_another_process(path)
        assert path.with_name("memsync.db-shm").exists(), "another process deleted the WAL index under the store"
        store.save_mappings([Mapping("L3", "C3", "h" * 64, "third")])
        store.verify()
        assert {m.local_id for m in store.mappings()} >= {"L1", "L3"}
    finally:
        store.close()


def test_closing_one_store_keeps_the_locks_of_another_on_the_same_file(tmp_path: Path) -> None:
    """The daemon keeps a reader store next to the engine's: closing one must not unlock the other."""
    path = tmp_path / "memsync.db"
    engine = StateStore(path)
    try:
        engine.save_mappings([Mapping("L1", "C1", "h" * 64, "first")])
        reader = StateStore(path, verify=False)
        reader.verify()
        reader.close()
        engine.verify()
        _read_in_another_process(path)
        assert path.with_name("memsync.db-shm").exists()
        engine.save_mappings([Mapping("L2", "C2", "h" * 64, "second")])
        engine.verify()
    finally:
        engine.close()
