"""Files under .claude/: no symlink is ever followed, and everything is created private (issue 17, item 2).

Each test plants what the security review planted (a repository shipping a symlink under
``.claude/``) and checks that the victim file keeps its bytes and mode, and that the command
says which link it refused.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import API_KEY, PROC_TIMEOUT, base_env, ctl, queue_path, start_daemon, wait_for

from memsyncd.daemon.runtime import PidLock
from memsyncd.errors import EXIT_UNREADABLE, EXIT_USAGE, SymlinkRefusedError
from memsyncd.store import safe_files
from memsyncd.store.queue import QueueStore
from memsyncd.store.state import StateStore

VICTIM_BYTES = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIVictimKey victim@host\n"
ADD_EVENT = {"hook_event_name": "PostToolUse", "tool_name": "mcp__openmemory__add_memories",
             "tool_response": [{"type": "text", "text": json.dumps(
                 {"results": [{"id": "m-hook-1", "memory": "x", "event": "ADD"}]})}]}


@pytest.fixture()
def umask_022() -> Iterator[None]:
    """The common desktop umask (files 0644 by default): what memsyncd creates must still be private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def victim_file(tmp_path: Path, name: str = "authorized_keys") -> Path:
    victim = tmp_path / "victim-home" / ".ssh" / name
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(VICTIM_BYTES)
    victim.chmod(0o644)
    return victim


def assert_untouched(victim: Path) -> None:
    assert victim.read_bytes() == VICTIM_BYTES
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def runtime(tmp_path: Path) -> str:
    """A private XDG_RUNTIME_DIR: no test reaches the user's daemon or spool."""
    directory = tmp_path / "xdg-runtime"
    directory.mkdir(mode=0o700, exist_ok=True)
    return str(directory)


# --- the review's attacks, end to end -----------------------------------------------------------

def test_sync_never_writes_through_a_symlinked_state_db(root: Path, tmp_path: Path) -> None:
    """.claude/memory/memsync.db -> ~/.ssh/authorized_keys: sync refuses, names the link, the key file is intact."""
    victim = victim_file(tmp_path)
    link = root / ".claude" / "memory" / "memsync.db"
    link.symlink_to(victim)
    result = ctl(root, "sync", XDG_RUNTIME_DIR=runtime(tmp_path))
    assert result.returncode == EXIT_UNREADABLE, result.stderr
    assert str(link) in result.stderr and "symbolic link" in result.stderr
    assert "Traceback" not in result.stderr
    assert_untouched(victim)
    assert link.is_symlink()
    for suffix in ("-wal", "-shm", "-journal"):
        assert not victim.with_name(victim.name + suffix).exists()


def test_sync_never_creates_the_target_of_a_dangling_state_db_link(root: Path, tmp_path: Path) -> None:
    """The review's case: ~/.ssh/authorized_keys did not exist and sync created it as a SQLite file."""
    target = tmp_path / "victim-home" / ".ssh" / "authorized_keys"
    target.parent.mkdir(parents=True)
    (root / ".claude" / "memory" / "memsync.db").symlink_to(target)
    result = ctl(root, "sync", XDG_RUNTIME_DIR=runtime(tmp_path))
    assert result.returncode == EXIT_UNREADABLE, result.stderr
    assert "memsync.db" in result.stderr
    assert not target.exists() and list(target.parent.iterdir()) == []


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_state_db_refuses_symlinked_sidecars(tmp_path: Path, suffix: str) -> None:
    victim = victim_file(tmp_path)
    db = tmp_path / "root" / ".claude" / "memory" / "memsync.db"
    db.parent.mkdir(parents=True)
    db.with_name(db.name + suffix).symlink_to(victim)
    with pytest.raises(SymlinkRefusedError, match=suffix):
        StateStore(db)
    assert_untouched(victim)


def test_daemon_never_truncates_the_target_of_a_symlinked_pid_file(root: Path, tmp_path: Path) -> None:
    """.claude/memory/memsyncd.pid -> ~/important.txt: `memsyncd run --root` exits 6 and the file keeps its bytes."""
    victim = victim_file(tmp_path, "important.txt")
    link = root / ".claude" / "memory" / "memsyncd.pid"
    link.symlink_to(victim)
    daemon = start_daemon(root, wait=False, XDG_RUNTIME_DIR=runtime(tmp_path))
    try:
        wait_for(lambda: daemon.proc.poll() is not None, timeout=30)
    finally:
        daemon.stop(signal.SIGKILL)
    assert daemon.proc.returncode == EXIT_UNREADABLE, daemon.log()
    assert str(link) in daemon.log() and "symbolic link" in daemon.log()
    assert_untouched(victim)


def test_enqueue_refuses_a_symlinked_queue_file(root: Path, tmp_path: Path) -> None:
    victim = victim_file(tmp_path, "notes.json")
    link = queue_path(root)
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    result = ctl(root, "--no-daemon", "enqueue", "m-1", XDG_RUNTIME_DIR=runtime(tmp_path))
    assert result.returncode == EXIT_UNREADABLE, result.stderr
    assert str(link) in result.stderr and "symbolic link" in result.stderr
    assert_untouched(victim)
    assert link.is_symlink()


def test_enqueue_never_creates_the_target_of_a_symlinked_lock_file(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "victim-home" / "created-by-lock"
    target.parent.mkdir(parents=True)
    lock = queue_path(root).with_name("sync-queue.json.lock")
    lock.parent.mkdir(parents=True)
    lock.symlink_to(target)
    result = ctl(root, "--no-daemon", "enqueue", "m-1", XDG_RUNTIME_DIR=runtime(tmp_path))
    assert result.returncode == EXIT_UNREADABLE, result.stderr
    assert str(lock) in result.stderr
    assert not target.exists()


def test_enqueue_refuses_a_symlinked_session_dir(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "victim-home" / "dir"
    elsewhere.mkdir(parents=True)
    (root / ".claude" / "session").symlink_to(elsewhere, target_is_directory=True)
    result = ctl(root, "--no-daemon", "enqueue", "m-1", XDG_RUNTIME_DIR=runtime(tmp_path))
    assert result.returncode == EXIT_UNREADABLE, result.stderr
    assert str(root / ".claude" / "session") in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_hook_with_a_symlinked_queue_exits_0_and_names_the_link(root: Path, tmp_path: Path) -> None:
    victim = victim_file(tmp_path, "notes.json")
    link = queue_path(root)
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    result = ctl(root, "--no-daemon", "hook", "post-tool-use", stdin=json.dumps(ADD_EVENT),
                 XDG_RUNTIME_DIR=runtime(tmp_path))
    assert result.returncode == 0
    assert str(link) in result.stderr and "symbolic link" in result.stderr
    assert_untouched(victim)


def test_config_behind_a_symlink_is_refused(root: Path, tmp_path: Path) -> None:
    config = root / ".claude" / "memory" / "config.json"
    real = tmp_path / "elsewhere.json"
    real.write_bytes(config.read_bytes())
    config.unlink()
    config.symlink_to(real)
    result = ctl(root, "sync", XDG_RUNTIME_DIR=runtime(tmp_path))
    # the trust check meets it first: a config behind a link is refused outright, as a configuration error
    assert result.returncode == EXIT_USAGE, result.stderr
    assert str(config) in result.stderr and "symbolic link" in result.stderr


def test_symlinked_claude_dir_is_refused_for_the_state_db(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "memory").mkdir(parents=True)
    root = tmp_path / "root"
    root.mkdir()
    (root / ".claude").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SymlinkRefusedError, match=r"\.claude is a symbolic link"):
        StateStore(root / ".claude" / "memory" / "memsync.db")
    assert list((elsewhere / "memory").iterdir()) == []


def test_pid_lock_refuses_a_symlink_in_process(tmp_path: Path) -> None:
    victim = victim_file(tmp_path, "important.txt")
    link = tmp_path / "root" / ".claude" / "memory" / "memsyncd.pid"
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    with pytest.raises(SymlinkRefusedError):
        PidLock(link).acquire()
    assert_untouched(victim)


def test_queue_repair_moves_aside_inside_the_real_directory(tmp_path: Path) -> None:
    queue = tmp_path / "root" / ".claude" / "session" / "sync-queue.json"
    queue.parent.mkdir(parents=True)
    queue.write_text('{"pending": [{"id": "a", "action": "push", "timestamp": "2026-01-01T00:00:00Z"}, oops')
    aside, kept, _ = QueueStore(queue).repair()
    assert aside is not None and aside.parent == queue.parent and not aside.is_symlink()
    assert kept == 1 and mode(queue) == 0o600


# --- modes, whatever the umask -----------------------------------------------------------------

def test_files_and_dirs_are_private_under_umask_022(root: Path, tmp_path: Path, umask_022: None) -> None:
    xdg = runtime(tmp_path)
    (root / ".claude" / "memory").chmod(0o755)  # as an older version or a checkout left it
    assert ctl(root, "--no-daemon", "enqueue", "m-1", XDG_RUNTIME_DIR=xdg).returncode == 0
    result = ctl(root, "sync", XDG_RUNTIME_DIR=xdg)
    assert result.returncode in (0, 1), result.stderr
    db = root / ".claude" / "memory" / "memsync.db"
    assert db.exists()
    assert mode(db) == 0o600
    for suffix in ("-wal", "-shm"):
        sidecar = db.with_name(db.name + suffix)
        if sidecar.exists():
            assert mode(sidecar) == 0o600, sidecar
    queue = queue_path(root)
    assert mode(queue) == 0o600
    assert mode(queue.with_name(queue.name + ".lock")) == 0o600
    assert mode(root / ".claude" / "session") == 0o700
    assert mode(root / ".claude" / "memory") == 0o700


def test_state_db_sidecars_are_0600_while_open_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    db = tmp_path / "root" / ".claude" / "memory" / "memsync.db"
    store = StateStore(db)
    try:
        store.record_intents([("local-1", "hash")])
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert path.exists() and mode(path) == 0o600, path
        assert mode(db.parent) == 0o700 and mode(db.parent.parent) == 0o700
    finally:
        store.close()


def test_existing_world_readable_state_files_are_tightened(tmp_path: Path, umask_022: None) -> None:
    db = tmp_path / "root" / ".claude" / "memory" / "memsync.db"
    StateStore(db).close()
    db.chmod(0o644)
    lock = tmp_path / "root" / ".claude" / "session" / "sync-queue.json.lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    lock.chmod(0o644)
    StateStore(db).close()
    QueueStore(lock.with_name("sync-queue.json")).update(lambda doc: None)
    assert mode(db) == 0o600
    assert mode(lock) == 0o600


def test_safe_files_refuse_non_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "root" / ".claude" / "session" / "sync-queue.json"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "memsyncd.ctl", "--root", str(tmp_path / "root"), "--no-daemon",
                             "enqueue", "m-1"], capture_output=True, text=True, timeout=PROC_TIMEOUT,
                            env=base_env(MEM0_API_KEY=API_KEY, XDG_RUNTIME_DIR=runtime(tmp_path)))
    assert result.returncode == EXIT_UNREADABLE, result.stderr
    assert "not a regular file" in result.stderr


def test_files_outside_claude_still_refuse_a_final_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(VICTIM_BYTES)
    link = tmp_path / "plain" / "file"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(SymlinkRefusedError):
        safe_files.read_bytes(link)
