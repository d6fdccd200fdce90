"""Process plumbing of the daemon: the single-instance lock and systemd notify."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from memsyncd.errors import AlreadyRunningError, FileAccessError, MemsyncError
from memsyncd.store import safe_files


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
