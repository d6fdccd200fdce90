"""The per-user spool: queue entries that could not wait for a busy queue lock, drained into the queue later.

When another process holds a root's queue lock (another user who could open an old 0644 lock
file, a stuck script), the hook must not block Claude Code and no id may be dropped. The entries
then go to ``<runtime dir>/spool/<root id>/<unique>.json``: the runtime dir is
``$XDG_RUNTIME_DIR/memsyncd`` (else ``/tmp/memsyncd-<uid>``, only when it is a real 0700 directory
of the user: :func:`memsyncd.store.paths.runtime_dir`), directories 0700, files 0600, written
atomically (temp file, fsync, rename, fsync of the directory), never through a symlink.

:func:`drain` moves a root's spooled entries into its queue under the queue lock, in one
locked write, skipping entries already pending (a drain interrupted after the queue write and
before the deletes adds nothing twice), and deletes each spool file only after that write is
durable. The daemon drains at start, after spooling itself and before each push; a one-shot
``memsyncctl sync`` drains before it pushes.

Stdlib only: the hook and ``memsyncctl enqueue`` write here.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memsyncd.errors import MemsyncError
from memsyncd.models import QueueDoc, QueueEntry
from memsyncd.store import safe_files
from memsyncd.store.paths import root_id, runtime_dir
from memsyncd.store.queue import QueueStore, _entry_from_json, _Invalid, entry_to_json

SPOOL_DIRNAME = "spool"
SUFFIX = ".json"
REJECTED_SUFFIX = ".rejected"
DRAIN_LOCK_WAIT_SECONDS = 2.0  # a drain never stalls a sync long on a lock someone else holds


def spool_dir(root: Path, *, create: bool = True) -> Path | None:
    """Where ``root``'s spooled entries go; None when there is no safe runtime dir (a squatted fallback)."""
    try:
        return runtime_dir(create=create) / SPOOL_DIRNAME / root_id(root)
    except (MemsyncError, OSError):
        return None


def write(root: Path, entries: Sequence[QueueEntry]) -> Path:
    """Spool ``entries`` of ``root`` durably in one new file; returns its path.

    Raises:
        MemsyncError: no safe runtime dir (``DaemonError``) or a symlink in the spool (``SymlinkRefusedError``).
        OSError: the file could not be written (nothing was left behind).
    """
    directory = spool_dir(root)
    if directory is None:
        runtime_dir()  # raises the DaemonError that says why
        raise OSError("no runtime directory")  # pragma: no cover - runtime_dir() raised
    name = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}{SUFFIX}"
    document = {"root": str(root), "entries": [entry_to_json(e) for e in entries]}
    path = directory / name
    with safe_files.opened_dir(directory.parent) as parent_fd:  # spool/ (made 0700, never a symlink)
        _make_private_dir(parent_fd, directory.name)
    safe_files.atomic_write(path, (json.dumps(document, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def _make_private_dir(parent_fd: int, name: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, safe_files.DIR_MODE, dir_fd=parent_fd)
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, safe_files.DIR_MODE)
    finally:
        os.close(fd)


@dataclass
class DrainResult:
    """What one :func:`drain` did."""

    moved: list[QueueEntry] = field(default_factory=list)  # now in the queue (duplicates of pending ones skipped)
    files: int = 0  # spool files consumed
    rejected: list[str] = field(default_factory=list)  # unreadable files, renamed *.rejected and left for a human


def pending_files(root: Path) -> list[Path]:
    """The spool files waiting for ``root``, oldest first (none when there is no safe spool)."""
    directory = spool_dir(root, create=False)
    if directory is None:
        return []
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX) and not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / name for name in names]


def _read(path: Path, root: Path) -> list[QueueEntry]:
    data = json.loads((safe_files.read_bytes(path) or b"").decode("utf-8"))
    if (not isinstance(data, dict) or not isinstance(data.get("root"), str)
            or root_id(Path(data["root"])) != root_id(root) or not isinstance(data.get("entries"), list)):
        raise _Invalid(f"{path} is not a spool file of {root}")
    return [_entry_from_json(raw, i) for i, raw in enumerate(data["entries"])]


def drain(root: Path, queue: QueueStore, *, lock_wait: float = DRAIN_LOCK_WAIT_SECONDS) -> DrainResult:
    """Move ``root``'s spooled entries into ``queue`` (one locked write), then delete their spool files.

    Raises:
        QueueBusyError: the queue lock stayed busy for ``lock_wait`` s (the spool is left as it was).
        QueueUnreadableError, FileAccessError: the queue cannot be written (the spool is left as it was).
    """
    result = DrainResult()
    files = pending_files(root)
    if not files:
        return result
    taken: list[tuple[Path, list[QueueEntry]]] = []
    for path in files:
        try:
            taken.append((path, _read(path, root)))
        except FileNotFoundError:
            continue  # drained meanwhile by another process
        except (OSError, ValueError, UnicodeDecodeError, MemsyncError):
            with contextlib.suppress(OSError):
                os.replace(path, path.with_name(path.name + REJECTED_SUFFIX))
            result.rejected.append(str(path))
    if not taken:
        return result

    def change(doc: QueueDoc) -> None:
        result.moved.clear()
        pending = {entry.key for entry in doc.pending}
        for _, entries in taken:
            for entry in entries:
                if entry.key not in pending:
                    pending.add(entry.key)
                    doc.pending.append(entry)
                    result.moved.append(entry)

    QueueStore(queue.path, queue.lock_path, lock_timeout=lock_wait).update(change)  # durable when it returns
    for path, _ in taken:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        result.files += 1
    with contextlib.suppress(OSError):
        fd = os.open(taken[0][0].parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return result
