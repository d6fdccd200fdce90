"""Tests of the shared sync-queue file: locking, atomic replace, exact removal, corrupt files."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from memsyncd.errors import FileAccessError, QueueBusyError, QueueUnreadableError
from memsyncd.models import QueueEntry
from memsyncd.store.queue import Outcome, QueueStore, atomic_write, dump_queue, parse_queue


def e(memory_id: str, second: int = 0, action: str = "push", level: int | None = 1) -> QueueEntry:
    return QueueEntry(memory_id, action, f"2026-01-18T10:30:{second:02d}Z", None, level)  # type: ignore[arg-type]


@pytest.fixture()
def store(tmp_path: Path) -> QueueStore:
    return QueueStore(tmp_path / ".claude/session/sync-queue.json")


def test_missing_file_is_an_empty_queue(store: QueueStore) -> None:
    """No file yet: nothing pending, never synced."""
    doc = store.read()
    assert doc.pending == [] and doc.last_sync is None and doc.sync_errors == []


def test_seed_example_round_trips_with_unknown_keys(store: QueueStore) -> None:
    """The seed's example parses; unknown keys at every level survive a rewrite."""
    seed = {
        "pending": [
            {"id": "local-mem-123", "action": "push", "content_hash": "abc123", "timestamp": "2026-01-18T10:30:00Z",
             "level": 1, "source": "hook"},
            {"id": "local-mem-456", "action": "delete", "timestamp": "2026-01-18T10:35:00Z"},
        ],
        "last_sync": "2026-01-18T10:00:00Z",
        "sync_errors": [{"id": "local-mem-789", "error": "API rate limit exceeded",
                         "timestamp": "2026-01-18T10:30:05Z", "retries": 2, "note": "x"}],
        "schema": "seed-v1",
    }
    store.path.parent.mkdir(parents=True)
    store.path.write_text(json.dumps(seed))
    store.update(lambda doc: None)
    assert json.loads(store.path.read_text()) == seed


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[]", "top level is list"),
        ('{"pending": {}}', '"pending" must be a list'),
        ('{"pending": [{"id": "a", "action": "upload", "timestamp": "2026-01-01T00:00:00Z"}]}', "action"),
        ('{"pending": [{"id": "a", "action": "push", "timestamp": "yesterday"}]}', "timestamp"),
        ('{"pending": [{"id": "a", "action": "push", "timestamp": "2026-01-01T00:00:00Z", "level": "1"}]}', "level"),
        ('{"pending": [], "sync_errors": "none"}', "sync_errors"),
        ('{"pending": [], "last_sync": 5}', "last_sync"),
    ],
)
def test_corrupt_file_is_reported_and_never_overwritten(store: QueueStore, content: str, reason: str) -> None:
    """Reads and writes both refuse; the bytes stay exactly as they were."""
    store.path.parent.mkdir(parents=True)
    store.path.write_text(content)
    with pytest.raises(QueueUnreadableError, match=reason) as info:
        store.read()
    assert str(store.path) in str(info.value)
    with pytest.raises(QueueUnreadableError):
        store.enqueue(e("x"))
    with pytest.raises(QueueUnreadableError):
        store.apply([Outcome([e("x")], done=True)])
    assert store.path.read_text() == content


def test_apply_removes_only_exact_processed_entries(store: QueueStore) -> None:
    """An entry rewritten or added by another writer while we worked stays pending."""
    store.enqueue(e("a", 1))
    store.enqueue(e("b", 2))
    work = store.read().pending
    # another writer, without the lock, atomically replaces the file with a newer entry for "a"
    doc = store.read()
    doc.pending.append(e("a", 9))
    doc.pending.append(e("c", 3))
    atomic_write(store.path, dump_queue(doc))
    store.apply([Outcome([work[0]], done=True), Outcome([work[1]], done=True)])
    assert [(x.id, x.timestamp[-3:-1]) for x in store.read().pending] == [("a", "09"), ("c", "03")]


def test_failures_upsert_sync_errors_and_success_clears_them(store: QueueStore) -> None:
    """Failed entries stay pending with retries counting up; success clears the row."""
    store.enqueue(e("a"))
    entries = store.read().pending
    store.apply([Outcome(entries, done=False, error="mem0 returned 500")])
    store.apply([Outcome(entries, done=False, error="mem0 returned 503")])
    doc = store.read()
    assert [x.id for x in doc.pending] == ["a"]
    assert [(r.id, r.error, r.retries) for r in doc.sync_errors] == [("a", "mem0 returned 503", 2)]
    store.apply([Outcome(entries, done=True)], last_sync="2026-01-18T11:00:00Z")
    doc = store.read()
    assert doc.pending == [] and doc.sync_errors == [] and doc.last_sync == "2026-01-18T11:00:00Z"


def test_repair_moves_file_aside_and_salvages_valid_entries(store: QueueStore) -> None:
    """Valid entries survive repair; the damaged original is kept beside it."""
    store.path.parent.mkdir(parents=True)
    original = json.dumps({"pending": [
        {"id": "good", "action": "push", "timestamp": "2026-01-18T10:30:00Z", "level": 1},
        {"id": "bad", "action": "teleport", "timestamp": "2026-01-18T10:30:00Z"},
    ]})
    store.path.write_text(original)
    aside, kept, dropped = store.repair()
    assert aside is not None and aside.read_text() == original and (kept, dropped) == (1, 1)
    assert [x.id for x in store.read().pending] == ["good"]


def test_repair_salvages_entries_from_truncated_json(store: QueueStore) -> None:
    """A file cut off mid-write still gives back its complete entries."""
    store.path.parent.mkdir(parents=True)
    full = dump_queue(parse_queue(json.dumps({"pending": [
        {"id": f"m{i}", "action": "push", "timestamp": "2026-01-18T10:30:00Z"} for i in range(3)]})))
    store.path.write_text(full[: full.rindex('"m2"')])
    aside, kept, _ = store.repair()
    assert aside is not None and kept == 2


def test_repair_of_a_readable_queue_changes_nothing(store: QueueStore) -> None:
    """Nothing to repair: no file moved."""
    store.enqueue(e("a"))
    before = store.path.read_bytes()
    assert store.repair() == (None, 0, 0)
    assert store.path.read_bytes() == before


def _enqueue_many(path: str, worker: int, count: int) -> None:
    store = QueueStore(Path(path))
    for i in range(count):
        store.enqueue(QueueEntry(f"w{worker}-{i}", "push", "2026-01-18T10:30:00Z"))


def test_concurrent_writers_lose_nothing(store: QueueStore) -> None:
    """Four processes enqueue 50 entries each at the same time: all 200 are there."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_enqueue_many, args=(str(store.path), w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = {x.id for x in store.read().pending}
    assert len(ids) == 200


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    """The temp file is renamed into place, nothing left behind."""
    target = tmp_path / "q.json"
    atomic_write(target, "{}\n")
    atomic_write(target, '{"pending": []}\n')
    assert os.listdir(tmp_path) == ["q.json"]


def test_unlocked_rename_between_read_and_write_is_not_overwritten(store: QueueStore,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that renames a new file in while we hold the lock: our change is re-applied to its version."""
    import memsyncd.store.queue as qs

    store.enqueue(e("a", 1))
    real_read = QueueStore.read
    calls = {"n": 0}

    def read_then_race(self: QueueStore) -> object:
        doc = real_read(self)
        calls["n"] += 1
        if calls["n"] == 1:  # the other writer lands right after our read
            theirs = real_read(self)
            theirs.pending.append(e("theirs", 5))
            qs.atomic_write(self.path, qs.dump_queue(theirs))
        return doc

    monkeypatch.setattr(QueueStore, "read", read_then_race)
    work = real_read(store).pending
    store.apply([Outcome(work, done=True)])
    assert [x.id for x in real_read(store).pending] == ["theirs"] and calls["n"] == 2


def test_lock_excludes_and_is_excluded_by_filelock_and_flock_1(store: QueueStore, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """Our flock on the .lock sidecar is the same lock filelock and flock(1) take: each waits for the other."""
    import shutil
    import subprocess

    from filelock import FileLock, Timeout

    import memsyncd.store.queue as qs

    monkeypatch.setattr(qs, "LOCK_TIMEOUT_SECONDS", 0.2)
    store.enqueue(e("before"))
    with FileLock(str(store.lock_path)), pytest.raises(QueueBusyError, match="has held"):
        store.enqueue(e("blocked"))
    with qs.flock_exclusive(store.lock_path), pytest.raises(Timeout):
        FileLock(str(store.lock_path)).acquire(timeout=0)
    if shutil.which("flock"):
        done = subprocess.run(["flock", "--nonblock", str(store.lock_path), "true"], check=False)
        assert done.returncode == 0  # free again once released
        with qs.flock_exclusive(store.lock_path):
            held = subprocess.run(["flock", "--nonblock", str(store.lock_path), "true"], check=False)
        assert held.returncode == 1
    assert [x.id for x in store.read().pending] == ["before"]


def test_lock_file_problems_are_file_access_errors(tmp_path: Path) -> None:
    """The lock's directory cannot exist (a file is in the way): FileAccessError naming the path, nothing written."""
    (tmp_path / "session").write_text("not a directory")
    store = QueueStore(tmp_path / "session" / "sync-queue.json")
    with pytest.raises(FileAccessError, match="session"):
        store.enqueue(e("x"))
    assert (tmp_path / "session").read_text() == "not a directory"
