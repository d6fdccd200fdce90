"""The shared sync-queue file: locked read-modify-write, atomic replace, never lose an entry.

Protocol (SPEC 3): every read-modify-write holds an exclusive ``flock(2)`` on the
``.lock`` sidecar (the same lock ``flock(1)`` and the ``filelock`` library take; tried
non-blocking with a bounded wait), re-reads the file under the lock and replaces it atomically
(temp file in the same directory, fsync, rename, fsync of the directory). The lock
is never held across network I/O: callers read the work, release, do the work, and
call :meth:`QueueStore.apply` with the results, which removes only the exact entries
that were processed. A corrupt file is never overwritten.

Stdlib only. The lock, the writer and the strict checks live in :mod:`memsyncd.store.queue_file`,
which the hook and ``enqueue`` use directly (no data classes); this module is the engine's typed view.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memsyncd.errors import QueueBusyError, QueueUnreadableError
from memsyncd.models import QueueDoc, QueueEntry, QueueErrorRow, format_ts, utc_now
from memsyncd.store import safe_files
from memsyncd.store.queue_file import (
    DOC_KEYS,
    ENTRY_KEYS,
    ERROR_KEYS,
    LOCK_TIMEOUT_SECONDS,
    UNLOCKED_WRITER_RETRIES,
    ChangedUnderUs,
    FileIdentity,
    Invalid,
    atomic_write,
    check_entry,
    check_error_row,
    file_identity,
    flock_exclusive,
    load_document,
)

__all__ = ["LOCK_TIMEOUT_SECONDS", "ApplyResult", "FileIdentity", "Outcome", "QueueStore", "atomic_write",
           "dump_queue", "entry_to_json", "file_identity", "flock_exclusive", "parse_queue", "salvage"]

_ENTRY_KEYS = ENTRY_KEYS
_ERROR_KEYS = ERROR_KEYS
_DOC_KEYS = DOC_KEYS
_Invalid = Invalid
_ChangedUnderUs = ChangedUnderUs


def _entry_from_json(raw: Any, index: int) -> QueueEntry:
    check_entry(raw, index)
    extra = {k: v for k, v in raw.items() if k not in _ENTRY_KEYS}
    return QueueEntry(raw["id"], raw["action"], raw["timestamp"], raw.get("content_hash"), raw.get("level"), extra)


def _error_from_json(raw: Any, index: int) -> QueueErrorRow:
    check_error_row(raw, index)
    extra = {k: v for k, v in raw.items() if k not in _ERROR_KEYS}
    return QueueErrorRow(raw["id"], str(raw.get("error", "")), str(raw.get("timestamp", "")), raw.get("retries", 0),
                         extra)


def parse_queue(text: str) -> QueueDoc:
    """Parse the queue file's text strictly.

    Raises:
        ValueError: naming what is wrong.
    """
    data: dict[str, Any] = load_document(text)
    pending = data.get("pending", [])
    errors = data.get("sync_errors", [])
    last_sync = data.get("last_sync")
    return QueueDoc(
        pending=[_entry_from_json(raw, i) for i, raw in enumerate(pending)],
        last_sync=last_sync,
        sync_errors=[_error_from_json(raw, i) for i, raw in enumerate(errors)],
        extra={k: v for k, v in data.items() if k not in _DOC_KEYS},
    )


def entry_to_json(entry: QueueEntry) -> dict[str, Any]:
    """Serialise an entry in the seed's format, unknown keys kept."""
    out: dict[str, Any] = {"id": entry.id, "action": entry.action}
    if entry.content_hash is not None:
        out["content_hash"] = entry.content_hash
    out["timestamp"] = entry.timestamp
    if entry.level is not None:
        out["level"] = entry.level
    out.update(entry.extra)
    return out


def dump_queue(doc: QueueDoc) -> str:
    """Serialise the whole document (stable, indented, trailing newline)."""
    data: dict[str, Any] = {
        "pending": [entry_to_json(e) for e in doc.pending],
        "last_sync": doc.last_sync,
        "sync_errors": [
            {"id": r.id, "error": r.error, "timestamp": r.timestamp, "retries": r.retries, **r.extra}
            for r in doc.sync_errors
        ],
    }
    data.update(doc.extra)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@dataclass
class Outcome:
    """What happened to one processed work item, for :meth:`QueueStore.apply`."""

    entries: Sequence[QueueEntry]
    done: bool
    error: str | None = None


@dataclass
class ApplyResult:
    """What :meth:`QueueStore.apply` changed."""

    removed: int = 0
    failed_ids: list[str] = field(default_factory=list)


class QueueStore:
    """The queue file of one root."""

    def __init__(self, path: Path, lock_path: Path | None = None, *,
                 lock_timeout: float | None = None) -> None:
        self.path = path
        self.lock_path = lock_path or path.with_name(path.name + ".lock")
        self.lock_timeout = lock_timeout  # None: LOCK_TIMEOUT_SECONDS; then QueueBusyError (the daemon's API: ~2 s)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return flock_exclusive(self.lock_path, LOCK_TIMEOUT_SECONDS if self.lock_timeout is None else self.lock_timeout)

    def read(self) -> QueueDoc:
        """Read the queue (missing file = empty queue).

        Raises:
            QueueUnreadableError: the file is corrupt or wrongly typed.
        """
        try:
            text = safe_files.read_text(self.path)
        except (OSError, UnicodeDecodeError) as exc:
            raise QueueUnreadableError(str(self.path), str(exc)) from None
        if text is None:
            return QueueDoc()
        try:
            return parse_queue(text)
        except ValueError as exc:
            raise QueueUnreadableError(str(self.path), str(exc)) from None

    def update(self, change: Callable[[QueueDoc], None]) -> QueueDoc:
        """Locked read-modify-write: re-read under the lock, apply ``change``, replace atomically.

        Writers that do not take the lock but rename a new file into place are detected (the
        file's identity changed between our read and our rename): the change is then applied
        again to their version, so their entries are never overwritten.
        """
        with self._locked():
            for _ in range(UNLOCKED_WRITER_RETRIES):
                seen = file_identity(self.path)
                doc = self.read()
                change(doc)
                try:
                    atomic_write(self.path, dump_queue(doc), expect=seen)
                except _ChangedUnderUs:
                    continue
                return doc
        raise QueueBusyError(f"{self.path} kept changing under an unlocked writer; nothing was written. "
                             "Writers should take the .lock sidecar (flock) or use 'memsyncctl enqueue'.")

    def enqueue(self, entry: QueueEntry) -> None:
        """Append one entry (the supported writer for hooks and scripts)."""
        self.update(lambda doc: doc.pending.append(entry))

    def apply(self, outcomes: Sequence[Outcome], *, last_sync: str | None = None) -> ApplyResult:
        """Record processed work: remove exactly the processed entries, upsert/clear ``sync_errors``.

        Entries added or rewritten by other writers meanwhile stay untouched, because
        only entries whose (id, action, timestamp, content_hash) are unchanged go.
        """
        result = ApplyResult()
        now = format_ts(utc_now().replace(microsecond=0))

        def change(doc: QueueDoc) -> None:
            remove = {e.key for o in outcomes if o.done for e in o.entries}
            before = len(doc.pending)
            doc.pending = [e for e in doc.pending if e.key not in remove]
            result.removed = before - len(doc.pending)
            rows = {row.id: row for row in doc.sync_errors}
            for outcome in outcomes:
                memory_id = outcome.entries[-1].id
                if outcome.done:
                    rows.pop(memory_id, None)
                elif outcome.error is not None:
                    row = rows.get(memory_id)
                    if row is None:
                        rows[memory_id] = QueueErrorRow(memory_id, outcome.error, now, 1)
                    else:
                        row.error, row.timestamp, row.retries = outcome.error, now, row.retries + 1
                    result.failed_ids.append(memory_id)
            doc.sync_errors = list(rows.values())
            if last_sync is not None:
                doc.last_sync = last_sync

        if outcomes or last_sync is not None:
            self.update(change)
        return result

    def repair(self) -> tuple[Path | None, int, int]:
        """Move an unreadable file aside and salvage its valid entries.

        Returns:
            (where the old file went or None if it was fine, entries salvaged, entries dropped).
        """
        with self._locked():
            try:
                self.read()
                return None, 0, 0
            except QueueUnreadableError:
                pass
            raw = safe_files.read_bytes(self.path) or b""
            doc, kept, dropped = salvage(raw.decode("utf-8", errors="replace"))
            stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
            with safe_files.opened_dir(self.path.parent) as dir_fd:
                aside = f"{self.path.name}.corrupt-{stamp}"
                n = 1
                while safe_files.lstat_in(dir_fd, aside) is not None:
                    n += 1
                    aside = f"{self.path.name}.corrupt-{stamp}-{n}"
                os.replace(self.path.name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            atomic_write(self.path, dump_queue(doc))
            return self.path.with_name(aside), kept, dropped


def salvage(text: str) -> tuple[QueueDoc, int, int]:
    """Keep every valid entry of a damaged queue document; count the rest."""
    doc = QueueDoc()
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        data = {"pending": _scan_objects(text)}
    if not isinstance(data, dict):
        data = {"pending": data if isinstance(data, list) else []}
    pending: list[Any] = data["pending"] if isinstance(data.get("pending"), list) else []
    errors: list[Any] = data["sync_errors"] if isinstance(data.get("sync_errors"), list) else []
    dropped = 0
    for i, raw in enumerate(pending):
        try:
            doc.pending.append(_entry_from_json(raw, i))
        except _Invalid:
            dropped += 1
    for i, raw in enumerate(errors):
        with contextlib.suppress(_Invalid):
            doc.sync_errors.append(_error_from_json(raw, i))
    if isinstance(data.get("last_sync"), str):
        doc.last_sync = data["last_sync"]
    doc.extra = {k: v for k, v in data.items() if k not in _DOC_KEYS}
    return doc, len(doc.pending), dropped


def _scan_objects(text: str) -> list[Any]:
    """Find entry-like JSON objects in text that is not JSON as a whole (e.g. a truncated file)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos = text.find("{", 1)
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict) and "action" in obj and "id" in obj:
            found.append(obj)
            pos = text.find("{", end)
        else:
            pos = text.find("{", pos + 1)
    return found
