"""Another process (another user) holding the queue lock never blocks the hook or drops an id (issue 17).

The review found the ``.lock`` sidecar 0644, so another user could open it and hold
``flock(LOCK_EX)``: the hook then blocked Claude Code for 30 s and dropped the id, and ``enqueue``
exited 1 after 32 s. Now the lock file is 0600 in 0700 directories, the hook and ``enqueue`` wait
about a second, then hand the id to the daemon or to the per-user spool under
``$XDG_RUNTIME_DIR``, which the daemon and ``memsyncctl sync`` drain into the queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Emulators, ctl, make_root, queue_path, read_queue, running_daemon, wait_for

from memsyncd.errors import QueueBusyError
from memsyncd.models import QueueEntry, format_ts, utc_now
from memsyncd.store import spool
from memsyncd.store.paths import root_id
from memsyncd.store.queue import QueueStore

HOLDER = ("import fcntl, os, sys\n"
          "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
          "fcntl.flock(fd, fcntl.LOCK_EX)\n"
          "print('locked', flush=True)\n"
          "sys.stdin.read()\n")
HOOK_BUDGET_SECONDS = 1.5  # over the time the same hook takes with a free lock


def add_event(memory_id: str, text: str) -> str:
    return json.dumps({"hook_event_name": "PostToolUse", "tool_name": "mcp__openmemory__add_memories",
                       "tool_response": [{"type": "text", "text": json.dumps(
                           {"results": [{"id": memory_id, "memory": text, "event": "ADD"}]})}]})


@pytest.fixture()
def xdg(tmp_path: Path) -> Path:
    """A private XDG_RUNTIME_DIR: the spool and any socket stay inside the test."""
    directory = tmp_path / "xdg-runtime"
    directory.mkdir(mode=0o700)
    return directory


@contextlib.contextmanager
def lock_held_by_another_process(root: Path) -> Iterator[None]:
    """A separate process holds flock(LOCK_EX) on the queue's .lock sidecar until the block ends."""
    lock = queue_path(root).with_name("sync-queue.json.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
        if holder.stdout:
            holder.stdout.close()


def timed(root: Path, *args: str, stdin: str | None = None,
          xdg: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    result = ctl(root, *args, stdin=stdin, XDG_RUNTIME_DIR=str(xdg))
    return result, time.monotonic() - t0


def spool_files(xdg: Path, root: Path) -> list[Path]:
    directory = xdg / "memsyncd" / "spool" / root_id(root)
    return sorted(directory.glob("*.json")) if directory.exists() else []


def pending_ids(root: Path) -> list[str]:
    return [entry["id"] for entry in read_queue(root)["pending"]]


def free_lock_baseline(tmp_path: Path, emu: Emulators, xdg: Path) -> float:
    """How long the same hook takes on a root whose lock is free (interpreter start-up under this load)."""
    other = make_root(tmp_path / "baseline-root", emu)
    _, seconds = timed(other, "--no-daemon", "hook", "post-tool-use", stdin=add_event("baseline", "b"),
                       xdg=xdg)
    return seconds


def test_hook_returns_fast_and_the_spooled_id_is_synced_once(root: Path, emu: Emulators, tmp_path: Path,
                                                              xdg: Path) -> None:
    baseline = free_lock_baseline(tmp_path, emu, xdg)
    text = "lock-fallback: spooled by the hook, pushed by sync"
    memory_id = emu.local_add(text, level=1)
    with lock_held_by_another_process(root):
        result, seconds = timed(root, "--no-daemon", "hook", "post-tool-use", stdin=add_event(memory_id, text),
                                xdg=xdg)
        assert result.returncode == 0, result.stderr
        assert seconds - baseline < HOOK_BUDGET_SECONDS, (seconds, baseline)
        assert "holds the sync queue lock" in result.stderr and "spooled" in result.stderr
        assert memory_id in result.stderr
        files = spool_files(xdg, root)
        assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
        assert memory_id not in pending_ids(root)
    synced = ctl(root, "sync", XDG_RUNTIME_DIR=str(xdg))
    assert synced.returncode == 0, synced.stderr
    assert emu.cloud_texts().count(text) == 1
    assert spool_files(xdg, root) == []
    assert memory_id not in pending_ids(root)


def test_enqueue_falls_back_to_the_spool_instead_of_failing(root: Path, emu: Emulators, tmp_path: Path,
                                                             xdg: Path) -> None:
    baseline = free_lock_baseline(tmp_path, emu, xdg)
    text = "lock-fallback: spooled by enqueue"
    memory_id = emu.local_add(text, level=1)
    with lock_held_by_another_process(root):
        result, seconds = timed(root, "--no-daemon", "enqueue", memory_id, xdg=xdg)
        assert result.returncode == 0, result.stderr
        assert seconds - baseline < HOOK_BUDGET_SECONDS + 0.5, (seconds, baseline)
        assert "spooled" in result.stderr and str(xdg) in result.stdout
    assert ctl(root, "sync", XDG_RUNTIME_DIR=str(xdg)).returncode == 0
    assert emu.cloud_texts().count(text) == 1
    assert spool_files(xdg, root) == []


def test_hook_hands_the_id_to_the_daemon_which_queues_it_once_the_lock_is_free(
        root: Path, emu: Emulators, tmp_path: Path, xdg: Path) -> None:
    baseline = free_lock_baseline(tmp_path, emu, xdg)
    text = "lock-fallback: handed to the daemon"
    memory_id = emu.local_add(text, level=1)
    with running_daemon(root, XDG_RUNTIME_DIR=str(xdg)) as daemon:
        wait_for(lambda: (h := daemon.health()) is not None and h["runs_started"] >= 1 and not h["busy"])
        with lock_held_by_another_process(root):
            result, seconds = timed(root, "--socket", str(daemon.socket), "hook", "post-tool-use",
                                    stdin=add_event(memory_id, text), xdg=xdg)
            assert result.returncode == 0, result.stderr
            assert seconds - baseline < HOOK_BUDGET_SECONDS, (seconds, baseline)
            assert "the daemon took" in result.stderr, result.stderr
            assert len(spool_files(xdg, root)) == 1  # the daemon spooled it: durable while the lock is held
        wait_for(lambda: emu.cloud_texts().count(text) == 1, timeout=30)
        wait_for(lambda: spool_files(xdg, root) == [] and memory_id not in pending_ids(root), timeout=30)
        assert emu.cloud_texts().count(text) == 1
        assert "spool.drained" in daemon.log()


def test_daemon_start_drains_what_the_hook_spooled(root: Path, emu: Emulators, xdg: Path) -> None:
    text = "lock-fallback: spooled with no daemon, drained at its start"
    memory_id = emu.local_add(text, level=1)
    with lock_held_by_another_process(root):
        assert ctl(root, "--no-daemon", "hook", "post-tool-use", stdin=add_event(memory_id, text),
                   XDG_RUNTIME_DIR=str(xdg)).returncode == 0
    assert len(spool_files(xdg, root)) == 1
    with running_daemon(root, XDG_RUNTIME_DIR=str(xdg)):
        wait_for(lambda: emu.cloud_texts().count(text) == 1, timeout=30)
        wait_for(lambda: spool_files(xdg, root) == [])
    assert emu.cloud_texts().count(text) == 1


# --- the spool itself ---------------------------------------------------------------------------

@pytest.fixture()
def spool_env(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    return xdg


def entry(memory_id: str) -> QueueEntry:
    return QueueEntry(memory_id, "push", format_ts(utc_now()))


def test_drain_moves_entries_once_and_deletes_files_after_the_write(tmp_path: Path, spool_env: Path) -> None:
    root = tmp_path / "root"
    store = QueueStore(queue_path(root))
    first = spool.write(root, [entry("a"), entry("b")])
    second = spool.write(root, [entry("c")])
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    result = spool.drain(root, store)
    assert [e.id for e in result.moved] == ["a", "b", "c"] and result.files == 2
    assert not first.exists() and not second.exists()
    assert [e.id for e in store.read().pending] == ["a", "b", "c"]
    assert spool.drain(root, store).moved == []


def test_drain_after_an_interrupted_drain_adds_nothing_twice(tmp_path: Path, spool_env: Path) -> None:
    """A crash between the queue write and the deletes: the next drain finds the entries already pending."""
    root = tmp_path / "root"
    store = QueueStore(queue_path(root))
    spooled = entry("a")
    path = spool.write(root, [spooled])
    kept = path.read_bytes()
    spool.drain(root, store)
    path.write_bytes(kept)  # as if the unlink had not happened
    assert spool.drain(root, store).moved == []
    assert [e.id for e in store.read().pending] == ["a"] and not path.exists()


def test_drain_with_the_lock_still_busy_keeps_the_spool(tmp_path: Path, spool_env: Path) -> None:
    root = tmp_path / "root"
    store = QueueStore(queue_path(root))
    path = spool.write(root, [entry("a")])
    with lock_held_by_another_process(root), pytest.raises(QueueBusyError):
        spool.drain(root, store, lock_wait=0.2)
    assert path.exists() and not queue_path(root).exists()


def test_a_file_of_another_root_is_rejected_not_merged(tmp_path: Path, spool_env: Path) -> None:
    root = tmp_path / "root"
    path = spool.write(root, [entry("a")])
    path.write_text(json.dumps({"root": "/elsewhere", "entries": []}))
    result = spool.drain(root, QueueStore(queue_path(root)))
    assert result.rejected == [str(path)] and result.moved == []
    assert path.with_name(path.name + ".rejected").exists()


# --- a squatted fallback runtime dir --------------------------------------------------------------

@pytest.fixture()
def squatted(tmp_path: Path) -> tuple[Path, Path]:
    """An XDG_RUNTIME_DIR whose memsyncd dir is a symlink someone else planted; and the dir it points at."""
    xdg = tmp_path / "squat-xdg"
    xdg.mkdir(mode=0o700)
    planted = tmp_path / "attacker-dir"
    planted.mkdir()
    (xdg / "memsyncd").symlink_to(planted, target_is_directory=True)
    return xdg, planted


def test_enqueue_with_a_squatted_runtime_dir_writes_the_queue_and_warns(root: Path,
                                                                        squatted: tuple[Path, Path]) -> None:
    """XDG's memsyncd dir (as /tmp/memsyncd-<uid>) is a symlink planted by someone else: not used, not fatal."""
    xdg, planted = squatted
    result = ctl(root, "enqueue", "m-squat", XDG_RUNTIME_DIR=str(xdg))
    assert result.returncode == 0, result.stderr
    assert pending_ids(root) == ["m-squat"]
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "not a directory owned by you" in warnings[0], result.stderr
    assert list(planted.iterdir()) == []


def test_status_with_a_squatted_runtime_dir_is_computed_here(root: Path, squatted: tuple[Path, Path]) -> None:
    xdg, planted = squatted
    result = ctl(root, "status", XDG_RUNTIME_DIR=str(xdg))
    assert result.returncode == 0, result.stderr
    assert "SYNC STATUS" in result.stdout
    assert "not a directory owned by you" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(planted.iterdir()) == []


def test_hook_with_a_busy_lock_and_no_safe_spool_names_the_ids(root: Path, squatted: tuple[Path, Path]) -> None:
    """Nowhere safe to put them: exit 0 within the budget, one line naming the ids and how to queue them again."""
    xdg, planted = squatted
    with lock_held_by_another_process(root):
        result, seconds = timed(root, "--no-daemon", "hook", "post-tool-use", stdin=add_event("m-nospool", "t"),
                                xdg=xdg)
    assert result.returncode == 0
    assert "could not queue m-nospool" in result.stderr and "memsyncctl enqueue ID" in result.stderr, result.stderr
    assert "not a directory owned by you" in result.stderr
    assert list(planted.iterdir()) == []
    assert seconds < 10


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the runtime dir to another owner")
def test_enqueue_with_a_runtime_dir_owned_by_another_user(root: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "squat-xdg"
    xdg.mkdir(mode=0o755)
    (xdg / "memsyncd").mkdir(mode=0o777)
    os.chown(xdg / "memsyncd", 65534, 65534)
    result = ctl(root, "enqueue", "m-squat2", XDG_RUNTIME_DIR=str(xdg))
    assert result.returncode == 0, result.stderr
    assert pending_ids(root) == ["m-squat2"]
    assert list((xdg / "memsyncd").iterdir()) == []


# --- a second OS user ------------------------------------------------------------------------------

@pytest.fixture()
def other_user() -> Iterator[pwd.struct_passwd]:
    """A throw-away OS user (needs root and useradd; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user with useradd")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel not installed")
    name = f"msattk{os.getpid() % 100000}"
    created = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                             capture_output=True, text=True, timeout=30)
    if created.returncode != 0:
        pytest.skip(f"useradd failed: {created.stderr.strip()}")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def system_python() -> str:
    """An interpreter another user may run (the test's venv may live in root's home)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK) and os.stat(candidate).st_mode & stat.S_IXOTH:
            return candidate
    pytest.skip("no python3 that another user can execute")


def as_user(user: pwd.struct_passwd, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setgroups([])
        os.setuid(user.pw_uid)

    return subprocess.run([system_python(), "-c", code, *args], capture_output=True, text=True, timeout=30,
                          preexec_fn=drop, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


TRY_LOCK = ("import fcntl, os, sys\n"
            "try:\n"
            "    fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "except PermissionError:\n"
            "    print('denied'); sys.exit(0)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "print('locked')\n")
TRY_READ = ("import sys\n"
            "try:\n"
            "    open(sys.argv[1], 'rb').read(16)\n"
            "except PermissionError:\n"
            "    print('denied'); sys.exit(0)\n"
            "print('read')\n")


def test_another_user_cannot_take_the_lock_or_read_the_state(emu: Emulators, other_user: pwd.struct_passwd) -> None:
    """In a world-traversable project dir, an old 0644 lock file is tightened and the state DB is 0600."""
    base = Path(tempfile.mkdtemp(prefix="memsync-two-users-"))
    try:
        base.chmod(0o755)
        root = make_root(base / "project", emu)
        for directory in (root, root / ".claude", root / ".claude" / "memory"):
            directory.chmod(0o755)
        lock = queue_path(root).with_name("sync-queue.json.lock")
        lock.parent.mkdir(mode=0o755)
        lock.parent.chmod(0o755)
        lock.touch(mode=0o644)
        lock.chmod(0o644)  # what an older memsyncd left
        old = os.umask(0o022)
        try:
            trusted = {"MEMSYNC_TRUSTED_ROOTS": str(base)}  # outside pytest's tmp dir, which the suite trusts
            assert ctl(root, "--no-daemon", "enqueue", "m-1", **trusted).returncode == 0
            synced = ctl(root, "sync", **trusted)
        finally:
            os.umask(old)
        assert synced.returncode in (0, 1), synced.stderr
        assert as_user(other_user, TRY_LOCK, str(lock)).stdout.strip() == "denied"
        db = root / ".claude" / "memory" / "memsync.db"
        for path in (db, db.with_name("memsync.db-wal"), db.with_name("memsync.db-shm")):
            if path.exists():
                assert as_user(other_user, TRY_READ, str(path)).stdout.strip() == "denied", path
    finally:
        shutil.rmtree(base, ignore_errors=True)
