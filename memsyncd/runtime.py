"""Process plumbing of the daemon: socket location, the single-instance lock, systemd notify."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import stat
from pathlib import Path

from memsyncd import safe_files
from memsyncd.errors import AlreadyRunningError, DaemonError, FileAccessError, MemsyncError

USER_SOCKET_NAME = "memsyncd.sock"
USER_PID_NAME = "memsyncd.pid"


def root_id(root: Path) -> str:
    """A short stable id for a root directory (names its socket)."""
    return hashlib.sha256(str(root.resolve()).encode("utf-8")).hexdigest()[:16]


def runtime_dir(*, create: bool = True) -> Path:
    """``$XDG_RUNTIME_DIR/memsyncd``, else ``/tmp/memsyncd-<uid>``; created 0700 and checked to be ours.

    A fallback squatted by another user (not a directory, a symlink, not owned by us) is never used.

    Raises:
        DaemonError: the directory is not a real directory owned by the user.
        FileNotFoundError: it does not exist and ``create`` is false.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    directory = Path(base) / "memsyncd" if base and Path(base).is_dir() else Path(f"/tmp/memsyncd-{os.getuid()}")
    if create:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DaemonError(f"{directory} is not a directory owned by you; remove it or set XDG_RUNTIME_DIR.")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return directory


def default_socket_path(root: Path) -> Path:
    """Where a single-root daemon (``memsyncd run --root DIR``) of ``root`` listens."""
    return runtime_dir() / f"{root_id(root)}.sock"


def user_socket_path() -> Path:
    """Where the user's daemon (``memsyncd run``, serving every registered root) listens."""
    return runtime_dir() / USER_SOCKET_NAME


def daemon_socket_candidates(root: Path, explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """The sockets to try for ``root``, in order: ``--socket``; else its single-root daemon, then the user's."""
    if explicit:
        return [Path(explicit)]
    return [default_socket_path(root), user_socket_path()]


def pair_lock_path(pair_key: str) -> Path:
    """The run lock of one pair of stores (shared by every root and process that syncs that pair)."""
    directory = runtime_dir() / "pairs"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / f"{pair_key}.lock"


class PidLock:
    """Exclusive ``flock`` on a pid file: held for the daemon's life; its content names the holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def holder(self) -> int | None:
        """The pid written by the current holder, if readable."""
        try:
            text = (safe_files.read_bytes(self.path) or b"").decode("ascii").strip()
        except (OSError, UnicodeDecodeError, MemsyncError):
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> None:
        """Take the lock or raise ``AlreadyRunningError`` naming the holder.

        Raises:
            AlreadyRunningError: another process holds it.
            SymlinkRefusedError: the pid file (or a directory from ``.claude`` down) is a symlink; nothing
                is truncated.
            FileAccessError: it cannot be created or opened.
        """
        try:
            fd = safe_files.open_file(self.path, os.O_RDWR | os.O_CREAT)  # never through a symlink; 0600
        except OSError as exc:
            raise FileAccessError.from_os_error(exc, self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.holder()
            raise AlreadyRunningError(
                f"another memsyncd (pid {pid if pid else 'unknown'}) already runs here "
                f"(lock {self.path}). Stop it first, or use 'memsyncctl status'."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; its content is stale once unlocked)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def sd_notify(message: str) -> bool:
    """Send a systemd notification (``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``).

    Returns False when not run under systemd (no ``NOTIFY_SOCKET``) or the send failed.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when not asked."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
