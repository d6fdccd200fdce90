"""The queue file's primitives: the ``flock`` sidecar, atomic replace, strict checks, and a raw append.

Stdlib only and free of ``pathlib``, ``dataclasses``, ``typing`` and ``tempfile``: the hook and
``enqueue`` append to the queue on every call through :func:`append_pending`, which works on the
JSON as read. :mod:`memsyncd.store.queue` (the engine's typed view: ``QueueStore``, ``QueueDoc``)
uses the same lock, checks and writer, so both follow one protocol (SPEC 3): an exclusive
``flock(2)`` on the ``.lock`` sidecar, tried non-blocking with a bounded wait; a re-read under the
lock; a 0600 temp file in the same directory, fsync, rename, fsync of the directory; nothing opened
through a symlink (:mod:`memsyncd.store.safe_files`); a corrupt file is never overwritten; an
unlocked writer that renamed a file into place meanwhile is detected.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time

from memsyncd.errors import FileAccessError, QueueBusyError, QueueUnreadableError
from memsyncd.store import safe_files
from memsyncd.timestamps import epoch_seconds

LOCK_TIMEOUT_SECONDS = 30.0
LOCK_POLL_MAX_SECONDS = 0.05
UNLOCKED_WRITER_RETRIES = 20
ENTRY_KEYS = frozenset({"id", "action", "timestamp", "content_hash", "level"})
ERROR_KEYS = frozenset({"id", "error", "timestamp", "retries"})
DOC_KEYS = frozenset({"pending", "last_sync", "sync_errors"})

FileIdentity = safe_files.FileIdentity
StrPath = str | os.PathLike[str]

TYPE_CHECKING = False  # typing is not loaded on the fast paths; mypy reads the block
if TYPE_CHECKING:
    from collections.abc import Callable


class Invalid(ValueError):
    """One part of the queue document has the wrong shape (the message says which)."""


ChangedUnderUs = safe_files.ChangedUnderUs  # another writer replaced the file between our read and our rename


# --- strict checks (the engine's parser and the raw append share them) --------------------------

def check_entry(raw: object, index: int) -> dict[str, object]:
    """``raw`` as a valid pending entry (the same object), or :class:`Invalid` naming what is wrong."""
    if not isinstance(raw, dict):
        raise Invalid(f"pending[{index}] is {type(raw).__name__}, expected an object")
    memory_id, action, timestamp = raw.get("id"), raw.get("action"), raw.get("timestamp")
    if not isinstance(memory_id, str) or not memory_id:
        raise Invalid(f"pending[{index}].id must be a non-empty string")
    if action not in ("push", "delete"):
        raise Invalid(f"pending[{index}].action must be \"push\" or \"delete\", got {action!r}")
    if not isinstance(timestamp, str):
        raise Invalid(f"pending[{index}].timestamp must be an RFC 3339 string")
    try:
        epoch_seconds(timestamp)  # parse_ts's verdict, without datetime for the form memsyncd writes
    except ValueError:
        raise Invalid(f"pending[{index}].timestamp {timestamp!r} is not an RFC 3339 timestamp") from None
    digest = raw.get("content_hash")
    if digest is not None and not isinstance(digest, str):
        raise Invalid(f"pending[{index}].content_hash must be a string")
    level = raw.get("level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
        raise Invalid(f"pending[{index}].level must be a non-negative integer")
    return raw


def check_error_row(raw: object, index: int) -> dict[str, object]:
    """``raw`` as a valid ``sync_errors`` row, or :class:`Invalid`."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise Invalid(f"sync_errors[{index}] must be an object with a string id")
    retries = raw.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise Invalid(f"sync_errors[{index}].retries must be an integer")
    return raw


def load_document(text: str) -> dict[str, object]:
    """The queue document's JSON object, its top-level shape checked (entries are checked by the caller).

    Raises:
        Invalid: naming what is wrong.
    """
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise Invalid(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise Invalid("JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise Invalid(f"top level is {type(data).__name__}, expected an object")
    if not isinstance(data.get("pending", []), list):
        raise Invalid("\"pending\" must be a list")
    if not isinstance(data.get("sync_errors", []), list):
        raise Invalid("\"sync_errors\" must be a list")
    last_sync = data.get("last_sync")
    if last_sync is not None and not isinstance(last_sync, str):
        raise Invalid("\"last_sync\" must be a timestamp string or null")
    return data


# --- the lock and the writer ----------------------------------------------------------------------

def file_identity(path: StrPath) -> FileIdentity:
    """(inode, mtime ns, size) of a file (a symlink's own), None when absent: changes whenever a writer replaces it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


class flock_exclusive:  # noqa: N801 - used as a function: ``with flock_exclusive(path, timeout):``
    """Hold an exclusive ``flock`` on ``lock_path`` (created 0600 if missing) for the ``with`` block.

    Tried with ``LOCK_NB`` every few milliseconds (backing off to ``LOCK_POLL_MAX_SECONDS``)
    until ``timeout``; the file is never deleted, so every process locks the same inode. It is
    opened without following symlinks (:mod:`memsyncd.store.safe_files`); a lock file of ours found
    readable by others is made 0600, so no other user can open it to take the lock. (A class
    rather than ``contextlib.contextmanager``: the hook does not load ``contextlib``.)

    Raises:
        QueueBusyError: another process held the lock for ``timeout`` seconds.
        SymlinkRefusedError: the lock file or a directory from ``.claude`` down is a symlink.
        FileAccessError: the lock file cannot be created or opened (permissions, read-only disk).
    """

    def __init__(self, lock_path: StrPath, timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
        self.lock_path = lock_path
        self.timeout = timeout
        self._fd = -1

    def __enter__(self) -> None:
        lock_path, timeout = self.lock_path, self.timeout
        try:
            fd = safe_files.open_file(lock_path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise FileAccessError.from_os_error(exc, lock_path) from None
        try:
            deadline = time.monotonic() + timeout
            pause = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise FileAccessError.from_os_error(exc, lock_path) from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueBusyError(f"another process has held {lock_path} for {timeout:g} s; nothing was "
                                         "written. Try again; if it stays busy, find the holder with "
                                         f"'fuser {lock_path}'.")
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, LOCK_POLL_MAX_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def __exit__(self, *exc_info: object) -> None:
        fd, self._fd = self._fd, -1
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def atomic_write(path: StrPath, text: str, *, expect: FileIdentity | bool = False) -> None:
    """Replace ``path`` atomically: 0600 temp file in the same dir, fsync, rename, fsync the dir.

    Never through a symlink (:func:`memsyncd.store.safe_files.atomic_write`). With ``expect`` (a
    :func:`file_identity`), the rename only happens if the file is still the one that was read;
    otherwise :class:`ChangedUnderUs` is raised and nothing is replaced.

    Raises:
        SymlinkRefusedError: ``path`` or a directory from ``.claude`` down is a symlink.
        FileAccessError: the directory or file cannot be written (permissions, disk full); the
            old file is then unchanged.
    """
    try:
        safe_files.atomic_write(path, text.encode("utf-8"), expect=expect)
    except OSError as exc:
        raise FileAccessError.from_os_error(exc, path) from None


def locked_update(path: StrPath, lock_path: StrPath, change: Callable[[str | None], str],
                  timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
    """Under the lock: read the file's text (None when absent), write ``change(text)`` atomically.

    A writer that does not take the lock but renames a new file into place between our read and
    our rename is detected; ``change`` then runs again on its version, so nothing is overwritten.

    Raises:
        QueueBusyError, FileAccessError: see :func:`flock_exclusive` and :func:`atomic_write`.
        QueueUnreadableError: the file cannot be read; ``change`` may raise it too.
    """
    with flock_exclusive(lock_path, timeout):
        for _ in range(UNLOCKED_WRITER_RETRIES):
            seen = file_identity(path)
            try:
                text = safe_files.read_text(path)
            except (OSError, UnicodeDecodeError) as exc:
                raise QueueUnreadableError(os.fspath(path), str(exc)) from None
            try:
                atomic_write(path, change(text), expect=seen)
            except ChangedUnderUs:
                continue
            return
    raise QueueBusyError(f"{os.fspath(path)} kept changing under an unlocked writer; nothing was written. "
                         "Writers should take the .lock sidecar (flock) or use 'memsyncctl enqueue'.")


def dump_document(data: dict[str, object]) -> str:
    """The queue document as written (stable, indented, trailing newline)."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def append_pending(path: StrPath, lock_path: StrPath, entries: list[dict[str, object]],
                   timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
    """Append pending entries (in the seed's JSON form) to the queue, under the lock, atomically.

    The document is checked as strictly as :func:`memsyncd.store.queue.parse_queue` does; a file
    that fails is left untouched. Everything else in it is kept as it was.

    Raises:
        QueueUnreadableError: the file is corrupt or wrongly typed.
        QueueBusyError, FileAccessError: the lock or the write failed.
    """
    where = os.fspath(path)

    def change(text: str | None) -> str:
        if text is None:
            return dump_document({"pending": list(entries), "last_sync": None, "sync_errors": []})
        try:
            data = load_document(text)
            pending = data.setdefault("pending", [])
            assert isinstance(pending, list)  # load_document checked it
            for index, raw in enumerate(pending):
                check_entry(raw, index)
            errors = data.get("sync_errors", [])
            for index, raw in enumerate(errors if isinstance(errors, list) else []):
                check_error_row(raw, index)
        except Invalid as exc:
            raise QueueUnreadableError(where, str(exc)) from None
        pending.extend(entries)
        data.setdefault("last_sync", None)
        data.setdefault("sync_errors", [])
        return dump_document(data)

    locked_update(path, lock_path, change, timeout)
