"""SQLite state of one root: id map with merge bases, conflicts, push intents, cursors.

WAL mode, one short transaction per change (or per batch, :meth:`StateStore.save_mappings`),
schema versioned with ``PRAGMA user_version`` and an ordered list of migrations. Every
``sqlite3.DatabaseError`` (a damaged file, a full disk, a lock held too long) leaves this
module as :class:`StateUnreadableError` naming the file and the way out: it is a run-level
stop, never the failure of one item. Each public method holds the store's lock, so a call
may come from a worker thread; :meth:`StateStore.record_intents` (the fsync of push intents,
see ``exactly_once``) has a connection and lock of its own, so the event loop's reads never
wait on that fsync.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from memsyncd.errors import FileAccessError, StateUnreadableError, SymlinkRefusedError
from memsyncd.models import (
    Conflict,
    LocalDuplicate,
    LocalReplace,
    Mapping,
    PushIntent,
    content_hash,
    format_ts,
    utc_now,
)
from memsyncd.store import safe_files

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE mappings (
        local_id TEXT PRIMARY KEY,
        cloud_id TEXT NOT NULL UNIQUE,
        base_hash TEXT NOT NULL,
        base_text TEXT NOT NULL,
        level INTEGER NOT NULL DEFAULT 1,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE conflicts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        local_id TEXT NOT NULL UNIQUE,
        cloud_id TEXT NOT NULL,
        base_text TEXT,
        local_text TEXT,
        cloud_text TEXT,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE push_intents (
        local_id TEXT PRIMARY KEY,
        content_hash TEXT NOT NULL,
        started_at TEXT NOT NULL,
        event_id TEXT
    );
    """,
    # 2: local rewrites in progress (create the new copy, delete the old one, move the mapping), and
    #    local memories whose text another local memory already holds in the cloud (mem0 kept one copy)
    """
    CREATE TABLE local_replaces (
        old_local_id TEXT PRIMARY KEY,
        cloud_id TEXT NOT NULL,
        token TEXT NOT NULL,
        old_hash TEXT,
        level INTEGER NOT NULL DEFAULT 1,
        base_text TEXT,
        new_local_id TEXT,
        started_at TEXT NOT NULL
    );
    CREATE TABLE local_duplicates (
        local_id TEXT PRIMARY KEY,
        of_local_id TEXT NOT NULL,
        cloud_id TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
    """,
    # 3: recent changes for 'memsyncctl log' (bounded to EVENTS_KEPT rows; never a level-0 text)
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        direction TEXT NOT NULL,
        local_id TEXT,
        cloud_id TEXT,
        preview TEXT,
        why TEXT NOT NULL
    );
    CREATE INDEX events_at ON events (at);
    """,
    # 4: local ids queued as level 0 and never synced (a scan must not push them under a higher default)
    """
    CREATE TABLE local_only (local_id TEXT PRIMARY KEY, recorded_at TEXT NOT NULL);
    """,
)
EVENTS_KEPT = 10_000  # 'memsyncctl log' keeps this many of the most recent changes
EVENT_PREVIEW_CHARS = 60
EVENT_BATCH = 200
SCHEMA_VERSION = len(MIGRATIONS)
_IN_CHUNK = 500  # ids per "IN (...)" query, well under SQLite's variable limit
_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file

SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
_SQLITE_CANTOPEN_SYMLINK = 1550  # SQLITE_CANTOPEN | (6 << 8): nofollow=1 met a symlink

P = ParamSpec("P")
R = TypeVar("R")


def _now() -> str:
    return format_ts(utc_now())


def unreadable(path: Path, exc: sqlite3.Error) -> StateUnreadableError:
    """The error a user sees for a SQLite failure on ``path``: what happened and what to do."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        how = "Another process kept it locked; stop other memsyncd/memsyncctl runs of this root and try again."
    elif "full" in lowered or "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        how = "Free disk space or fix the file's permissions, then sync again."
    else:
        how = ("The file is damaged. Run 'memsyncctl state rebuild': it moves the file aside and rebuilds the "
               "id map from the cloud, so the next sync neither duplicates nor loses a memory.")
    return StateUnreadableError(f"{path}: {text}. {how}")


def prepare_db_file(path: Path) -> None:
    """Make ``path`` safe for SQLite to open: no symlink on the way or as a sidecar, the DB file 0600.

    The directories are walked without following symlinks (made 0700 when missing); the DB file
    and its ``-wal``/``-shm``/``-journal`` sidecars must each be absent or a regular file. The DB
    file is created empty and 0600 here when missing: SQLite creates its sidecars with the DB
    file's mode, so they are 0600 too whatever the umask. Files of ours found group- or
    other-readable (made by older versions outside systemd) are tightened to 0600.

    Raises:
        SymlinkRefusedError: a symlink on the way (exit 6), named.
        FileAccessError: a non-regular file, or the directory cannot be made.
    """
    try:
        for suffix in ("", *SIDECAR_SUFFIXES):
            safe_files.check_regular_or_absent(path.with_name(path.name + suffix))
        safe_files.create_private(path)
    except OSError as exc:
        raise FileAccessError.from_os_error(exc, path) from None


def connect(path: Path, *, read_only: bool = False, timeout: float = 30) -> sqlite3.Connection:
    """A connection to the DB at ``path`` that never follows a symlink (SQLite URI ``nofollow=1``).

    Raises:
        SymlinkRefusedError: SQLite found a symlink in the path.
        sqlite3.Error: any other failure to open.
    """
    uri = Path(os.path.abspath(path)).as_uri() + "?nofollow=1" + ("&mode=ro" if read_only else "")
    try:
        return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_CANTOPEN_SYMLINK:
            raise SymlinkRefusedError(f"{path}: a component of this path is a symbolic link; memsyncd never "
                                      "opens its state database through one. Nothing was read or written. "
                                      "Replace the link with a real directory or file and retry.") from None
        raise


def _guarded(method: Callable[Concatenate[StateStore, P], R]) -> Callable[Concatenate[StateStore, P], R]:
    """Turn any ``sqlite3.DatabaseError`` of a StateStore method into ``StateUnreadableError``."""

    def wrapper(self: StateStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with self._lock:
                return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None

    functools.update_wrapper(wrapper, method)
    return wrapper


class _HeaderFds:
    """One read-only descriptor per database file and process, shared by every store open on it.

    POSIX record locks belong to the process and the inode: closing *any* descriptor of the
    file drops every lock the process holds on it, SQLite's included. Reading the header with
    ``open()``/``close()`` therefore unlocked the store's own connections, and the next other
    process closing its connection took itself for the last one and deleted the ``-wal`` and
    ``-shm`` files under them (the daemon's next run: ``disk I/O error``). The descriptor is
    opened once and closed only when the last store of this process on that file closes,
    when no connection of ours holds a lock on it any more.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[int, int], list[int]] = {}  # identity -> [fd, stores using it]

    def hold(self, path: Path, identity: tuple[int, int]) -> None:
        """Count one more store on ``identity``; open the descriptor on first use (nothing on failure)."""
        with self._lock:
            entry = self._held.get(identity)
            if entry is not None:
                entry[1] += 1
                return
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                return
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != identity:  # replaced in between: never cache another file's fd
                os.close(fd)  # no lock of ours is on that other inode
                return
            self._held[identity] = [fd, 1]

    def release(self, identity: tuple[int, int]) -> None:
        """One store fewer on ``identity``; the last one closes the descriptor."""
        with self._lock:
            entry = self._held.get(identity)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._held[identity]
                os.close(entry[0])

    def read(self, identity: tuple[int, int], size: int) -> bytes | None:
        """The first ``size`` bytes of the file through the shared descriptor; None when none is held."""
        with self._lock:
            entry = self._held.get(identity)
            return None if entry is None else os.pread(entry[0], size, 0)


_HEADER_FDS = _HeaderFds()


def _select_in(db: sqlite3.Connection, sql: str, ids: Sequence[str]) -> Iterator[Any]:
    """The rows of ``sql``, whose ``{marks}`` is the ``IN (...)`` list, for ``ids``.

    One query per :data:`_IN_CHUNK` ids: SQLite limits the variables of one statement.
    """
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[start:start + _IN_CHUNK])
        yield from db.execute(sql.format(marks=",".join("?" * len(chunk))), chunk)


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file, None when it is missing."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


class StateStore:
    """Typed access to the state database."""

    def __init__(self, path: Path, *, verify: bool = True) -> None:
        """Open (and migrate) the state DB.

        With ``verify``, every page is read once (``PRAGMA quick_check``, milliseconds for a DB of thousands
        of memories): a file damaged where no query of this run would look is still refused at once,
        before a sync could act on a partial id map.

        Raises:
            StateUnreadableError: the file cannot be opened, migrated or verified (the file is not changed).
        """
        self.path = path
        self._lock = threading.RLock()  # one connection, one statement or transaction at a time
        self._intent_lock = threading.Lock()
        self._intent_db: sqlite3.Connection | None = None  # record_intents' own connection
        self._events: list[tuple[str, str, str | None, str | None, str | None, str]] = []  # not yet written
        try:
            prepare_db_file(path)
            self._db = connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash (kill -9); only push intents, which
            # guard against duplicates, are committed with a full fsync (see record_intent).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            problem = self._quick_check() if verify else None
            self._identity = _file_identity(path)
            if self._identity is not None:
                _HEADER_FDS.hold(path, self._identity)
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self._db.close()
            raise unreadable(path, exc) from None
        if problem is not None:
            self._db.close()
            if self._identity is not None:
                _HEADER_FDS.release(self._identity)
            raise unreadable(path, sqlite3.DatabaseError(f"database disk image is malformed ({problem})"))

    def close(self) -> None:
        """Write the buffered events, then close the connection."""
        with contextlib.suppress(StateUnreadableError, sqlite3.Error):
            self.flush_events()
        with self._lock, contextlib.suppress(sqlite3.DatabaseError):  # closing must never fail a shutdown
            self._db.close()
        with self._intent_lock, contextlib.suppress(sqlite3.DatabaseError):
            if self._intent_db is not None:
                self._intent_db.close()
                self._intent_db = None
        identity, self._identity = self._identity, None
        if identity is not None:  # after the connections: the last store's close drops no lock in use
            _HEADER_FDS.release(identity)

    @_guarded
    def check(self) -> str | None:
        """``PRAGMA quick_check`` (reads every page): None when healthy, else SQLite's first complaint."""
        return self._quick_check()

    def verify(self) -> None:
        """Check that the file on disk is still the healthy database this store opened (before a run's cloud writes).

        The open connection answers from its page cache and WAL, so its own ``quick_check``
        misses a file truncated, overwritten or replaced under it (a daemon keeps its store
        open for days). This reads the file as it is now, through a second read-only
        connection: the same inode, the schema version this store migrated to, and every page
        (``PRAGMA quick_check``, milliseconds for thousands of memories).

        Raises:
            StateUnreadableError: the file is gone, replaced, truncated or damaged (nothing is written).
        """
        # no store lock: this uses a connection of its own, so the store's callers never wait on it
        problem = self._disk_problem()
        if problem is None:
            try:
                db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            except sqlite3.Error as exc:
                raise unreadable(self.path, exc) from None
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version != SCHEMA_VERSION:
                    problem = (f"schema version {version} on disk, {SCHEMA_VERSION} expected: truncated, replaced "
                               "or migrated by another memsyncd")
                else:
                    rows = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
                    problem = None if rows == ["ok"] else "; ".join(rows[:3])
            except sqlite3.DatabaseError as exc:
                raise unreadable(self.path, exc) from None
            finally:
                db.close()
        if problem is not None:
            raise unreadable(self.path, sqlite3.DatabaseError(f"database disk image is malformed ({problem})"))

    def _disk_problem(self) -> str | None:
        """A cheap look at the file (no SQLite): still the same inode, and still a database at its start.

        Nothing finer (e.g. the header's page count against the file's size): a checkpoint of
        another connection writes page 1 before the pages that extend the file, so such a check
        would see damage that is not there. :meth:`verify`'s read-only connection sees a
        consistent snapshot instead.
        """
        identity = _file_identity(self.path)
        if identity is None:
            return "the file is gone"
        if identity != self._identity:
            return "the file was replaced while memsyncd had it open"
        try:  # never open()/close() the file here: that would drop our connections' locks (see _HeaderFds)
            head = _HEADER_FDS.read(identity, len(_SQLITE_MAGIC))
        except OSError as exc:
            return f"cannot read it ({exc.strerror or exc})"
        if head is None:
            return "it could not be opened for reading"
        if head != _SQLITE_MAGIC:
            return "truncated" if len(head) < len(_SQLITE_MAGIC) else "its header is overwritten"
        return None

    def _quick_check(self) -> str | None:
        rows = [str(row[0]) for row in self._db.execute("PRAGMA quick_check")]
        return None if rows == ["ok"] else "; ".join(rows[:3])

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateUnreadableError(
                f"{self.path}: schema version {version} is newer than this memsyncd understands "
                f"({SCHEMA_VERSION}). Upgrade memsyncd."
            )
        for number in range(version, SCHEMA_VERSION):
            with self._tx():
                for statement in filter(str.strip, MIGRATIONS[number].split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")

    # --- meta -------------------------------------------------------------------------------

    @_guarded
    def get_meta(self, key: str) -> str | None:
        """Read one meta value."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @_guarded
    def set_meta(self, key: str, value: str) -> None:
        """Write one meta value."""
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value))

    @property
    @_guarded
    def device_id(self) -> str:
        """This root's stable device id (created on first use)."""
        value = self.get_meta("device_id")
        if value is None:
            value = uuid.uuid4().hex
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('device_id', ?)", (value,))
            value = self.get_meta("device_id") or value
        return value

    # --- mappings ---------------------------------------------------------------------------

    _MAPPING_COLS = "local_id, cloud_id, base_hash, base_text, level"  # the order _mapping reads

    @staticmethod
    def _mapping(row: tuple[str, str, str, str, int]) -> Mapping:
        return Mapping(local_id=row[0], cloud_id=row[1], base_hash=row[2], base_text=row[3], level=row[4])

    @_guarded
    def mapping_for_local(self, local_id: str) -> Mapping | None:
        """The mapping of a local id."""
        row = self._db.execute(
            f"SELECT {self._MAPPING_COLS} FROM mappings WHERE local_id = ?", (local_id,)
        ).fetchone()
        return self._mapping(row) if row else None

    @_guarded
    def mapping_for_cloud(self, cloud_id: str) -> Mapping | None:
        """The mapping of a cloud id."""
        row = self._db.execute(
            f"SELECT {self._MAPPING_COLS} FROM mappings WHERE cloud_id = ?", (cloud_id,)
        ).fetchone()
        return self._mapping(row) if row else None

    def mappings(self) -> Iterator[Mapping]:
        """Every mapping (read lazily; a damaged page raises ``StateUnreadableError`` while iterating)."""
        try:
            with self._lock:
                rows = self._db.execute(f"SELECT {self._MAPPING_COLS} FROM mappings")
                for row in rows:
                    yield self._mapping(row)
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None

    @_guarded
    def mappings_for_cloud(self, cloud_ids: Sequence[str]) -> dict[str, Mapping]:
        """The mappings of many cloud ids at once (cloud id -> mapping; unmapped ids are absent)."""
        return {row[1]: self._mapping(row) for row in _select_in(
            self._db,
            f"SELECT {self._MAPPING_COLS} FROM mappings WHERE cloud_id IN ({{marks}})",
            cloud_ids)}

    @_guarded
    def mapped_local_ids(self, local_ids: Sequence[str]) -> set[str]:
        """Which of ``local_ids`` have a mapping (one query per chunk)."""
        return {row[0] for row in _select_in(self._db, "SELECT local_id FROM mappings WHERE local_id IN ({marks})",
                                             local_ids)}

    @_guarded
    def mappings_for_locals(self, local_ids: Sequence[str]) -> dict[str, Mapping]:
        """The mappings of many local ids at once (local id -> mapping; unmapped ids are absent)."""
        return {row[0]: self._mapping(row) for row in _select_in(
            self._db,
            f"SELECT {self._MAPPING_COLS} FROM mappings WHERE local_id IN ({{marks}})",
            local_ids)}

    def mapped_ids(self) -> Iterator[str]:
        """Every mapped local id (read lazily)."""
        try:
            with self._lock:
                for row in self._db.execute("SELECT local_id FROM mappings"):
                    yield str(row[0])
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None

    # --- local-only ids ---------------------------------------------------------------------

    @_guarded
    def mark_local_only(self, local_id: str) -> None:
        """Remember that ``local_id`` was queued as level 0 (scans then never push it)."""
        self._db.execute("INSERT OR IGNORE INTO local_only(local_id, recorded_at) VALUES(?, ?)", (local_id, _now()))

    @_guarded
    def clear_local_only(self, local_id: str) -> None:
        """Forget a level-0 mark (the memory was pushed with a higher level since)."""
        self._db.execute("DELETE FROM local_only WHERE local_id = ?", (local_id,))

    @_guarded
    def local_only_among(self, local_ids: Sequence[str]) -> set[str]:
        """Which of ``local_ids`` are marked local-only."""
        return {row[0] for row in _select_in(self._db, "SELECT local_id FROM local_only WHERE local_id IN ({marks})",
                                             local_ids)}

    @_guarded
    def count_mappings(self) -> int:
        """How many pairs are synced."""
        return int(self._db.execute("SELECT COUNT(*) FROM mappings").fetchone()[0])

    @_guarded
    def save_mapping(self, mapping: Mapping) -> None:
        """Store a pair and its new merge base; clears the pair's push intent and open conflict.

        A new base is only ever written when both sides hold it, so a conflict recorded
        for the pair before is settled by definition.
        """
        with self._tx():
            self._write_mappings((mapping,), _now())

    @_guarded
    def set_mapping_level(self, local_id: str, level: int) -> None:
        """Record a synced memory's new level only (no new base; its intent and conflict are left alone)."""
        with self._tx():
            self._db.execute("UPDATE mappings SET level = ? WHERE local_id = ?", (level, local_id))

    @_guarded
    def save_mappings(self, mappings: Sequence[Mapping]) -> None:
        """:meth:`save_mapping` for many pairs in one transaction (a pull page's results)."""
        if not mappings:
            return
        now = _now()
        with self._tx():
            if len({m.local_id for m in mappings}) == len({m.cloud_id for m in mappings}) == len(mappings):
                self._write_mappings(mappings, now)  # 5 statements per page, not 5 per pair
            else:  # an id twice in one batch: pair by pair, so the later pair wins as it always did
                for mapping in mappings:
                    self._write_mappings((mapping,), now)

    def _write_mappings(self, mappings: Sequence[Mapping], now: str) -> None:
        """Store pairs whose local ids and cloud ids are all distinct (each statement once for the batch)."""
        local_ids = [(m.local_id,) for m in mappings]
        self._db.executemany("DELETE FROM conflicts WHERE local_id = ?", local_ids)
        self._db.executemany("DELETE FROM mappings WHERE cloud_id = ? AND local_id != ?",
                             [(m.cloud_id, m.local_id) for m in mappings])
        self._db.executemany(
            "INSERT INTO mappings(local_id, cloud_id, base_hash, base_text, level, updated_at) "
            "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(local_id) DO UPDATE SET cloud_id=excluded.cloud_id, "
            "base_hash=excluded.base_hash, base_text=excluded.base_text, level=excluded.level, "
            "updated_at=excluded.updated_at",
            [(m.local_id, m.cloud_id, m.base_hash, m.base_text, m.level, now) for m in mappings],
        )
        self._db.executemany("DELETE FROM push_intents WHERE local_id = ?", local_ids)
        self._db.executemany("DELETE FROM local_duplicates WHERE local_id = ?", local_ids)

    @_guarded
    def delete_mapping(self, local_id: str) -> None:
        """Forget a pair (gone on both sides), and with it any conflict it had."""
        with self._tx():
            self._db.execute("DELETE FROM conflicts WHERE local_id = ?", (local_id,))
            self._db.execute("DELETE FROM mappings WHERE local_id = ?", (local_id,))

    # --- push intents -----------------------------------------------------------------------

    @_guarded
    def intent_for(self, local_id: str) -> PushIntent | None:
        """The unfinished create of a local id, if any."""
        row = self._db.execute(
            "SELECT local_id, content_hash, started_at, event_id FROM push_intents WHERE local_id = ?", (local_id,)
        ).fetchone()
        return PushIntent(*row) if row else None

    @_guarded
    def record_intent(self, local_id: str, digest: str, event_id: str | None = None) -> PushIntent:
        """Record, durably and before the request, that a create is about to be sent."""
        existing = self.intent_for(local_id)
        started = existing.started_at if existing else _now()
        self._db.execute("PRAGMA synchronous=FULL")  # durable even across power loss
        try:
            self._db.execute(
                "INSERT INTO push_intents(local_id, content_hash, started_at, event_id) VALUES(?, ?, ?, ?) "
                "ON CONFLICT(local_id) DO UPDATE SET content_hash=excluded.content_hash, "
                "event_id=COALESCE(excluded.event_id, push_intents.event_id)",
                (local_id, digest, started, event_id),
            )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        return PushIntent(local_id, digest, started, event_id)

    def record_intents(self, items: Sequence[tuple[str, str]]) -> list[PushIntent]:
        """:meth:`record_intent` for several creates in one transaction: one fsync makes them all durable.

        Runs on a connection of its own (``synchronous=FULL``) under its own lock, so a call from
        a worker thread never holds the store's lock through its fsync: the event loop's reads
        (WAL readers never wait) go on meanwhile.

        Raises:
            StateUnreadableError: the database failed.
        """
        ids = [local_id for local_id, _ in items]
        problem = self._disk_problem()  # the intent connection, like the main one, would not notice
        if problem is not None:
            raise unreadable(self.path, sqlite3.DatabaseError(f"database disk image is malformed ({problem})"))
        try:
            with self._intent_lock:
                if self._intent_db is None:
                    prepare_db_file(self.path)
                    self._intent_db = connect(self.path)
                    self._intent_db.execute("PRAGMA synchronous=FULL")  # durable even across power loss
                db = self._intent_db
                now = _now()
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(
                        "INSERT INTO push_intents(local_id, content_hash, started_at, event_id) VALUES(?, ?, ?, NULL) "
                        "ON CONFLICT(local_id) DO UPDATE SET content_hash=excluded.content_hash",
                        [(local_id, digest, now) for local_id, digest in items])
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.DatabaseError):
                            db.execute("ROLLBACK")
                    raise
                found = {row[0]: PushIntent(*row) for row in _select_in(
                    db, "SELECT local_id, content_hash, started_at, event_id FROM push_intents "
                    "WHERE local_id IN ({marks})", ids)}
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None
        return [found.get(local_id) or PushIntent(local_id, digest, now) for local_id, digest in items]

    @_guarded
    def clear_intent(self, local_id: str) -> None:
        """Forget an unfinished create (it failed for sure)."""
        self._db.execute("DELETE FROM push_intents WHERE local_id = ?", (local_id,))

    @_guarded
    def intents(self) -> list[PushIntent]:
        """All unfinished creates."""
        return [PushIntent(*row) for row in
                self._db.execute("SELECT local_id, content_hash, started_at, event_id FROM push_intents")]

    # --- local rewrites (engine/replace.py) ---------------------------------------------------

    _REPLACE_COLS = "old_local_id, cloud_id, token, old_hash, level, base_text, new_local_id, started_at"

    @_guarded
    def record_local_replace(self, old_local_id: str, cloud_id: str, token: str, old_hash: str | None,
                             level: int, base_text: str | None) -> LocalReplace:
        """Record, durably and before the local create is sent, that ``old_local_id`` is being rewritten."""
        self._db.execute("PRAGMA synchronous=FULL")  # durable even across power loss
        try:
            self._db.execute(
                f"INSERT OR REPLACE INTO local_replaces({self._REPLACE_COLS}) VALUES(?, ?, ?, ?, ?, ?, NULL, ?)",
                (old_local_id, cloud_id, token, old_hash, level, base_text, _now()))
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        found = self.local_replace(old_local_id)
        assert found is not None
        return found

    @_guarded
    def set_local_replace_new_id(self, old_local_id: str, new_local_id: str) -> None:
        """Note the id of the new copy once its create answered (recovery then needs no search)."""
        self._db.execute("UPDATE local_replaces SET new_local_id = ? WHERE old_local_id = ?",
                         (new_local_id, old_local_id))

    @_guarded
    def local_replace(self, old_local_id: str) -> LocalReplace | None:
        """The rewrite in progress of a local id, if any."""
        row = self._db.execute(f"SELECT {self._REPLACE_COLS} FROM local_replaces WHERE old_local_id = ?",
                               (old_local_id,)).fetchone()
        return LocalReplace(*row) if row else None

    @_guarded
    def local_replaces(self) -> list[LocalReplace]:
        """All rewrites in progress (left by a crash or a failed step), oldest first."""
        return [LocalReplace(*row) for row in self._db.execute(
            f"SELECT {self._REPLACE_COLS} FROM local_replaces ORDER BY started_at")]

    @_guarded
    def drop_local_replace(self, old_local_id: str) -> None:
        """Forget a rewrite that did not happen (or was withdrawn)."""
        self._db.execute("DELETE FROM local_replaces WHERE old_local_id = ?", (old_local_id,))

    @_guarded
    def finish_local_replace(self, old_local_id: str, new_local_id: str, base_text: str | None) -> Mapping | None:
        """Move the pair, its open conflict and merge base to the new local id, in one transaction.

        ``base_text`` None keeps the pair's merge base. Returns the mapping now held by
        ``new_local_id`` (None when the old id had no mapping).
        """
        with self._tx():
            row = self._db.execute(
                f"SELECT {self._MAPPING_COLS} FROM mappings WHERE local_id = ?",
                (old_local_id,)).fetchone()
            moved: Mapping | None = None
            if row is not None:
                old = self._mapping(row)
                moved = Mapping(new_local_id, old.cloud_id,
                                content_hash(base_text) if base_text is not None else old.base_hash,
                                base_text if base_text is not None else old.base_text, old.level)
                self._db.execute("DELETE FROM mappings WHERE local_id = ?", (old_local_id,))
                self._db.execute(
                    "INSERT OR REPLACE INTO mappings(local_id, cloud_id, base_hash, base_text, level, updated_at) "
                    "VALUES(?, ?, ?, ?, ?, ?)",
                    (moved.local_id, moved.cloud_id, moved.base_hash, moved.base_text, moved.level, _now()))
            self._db.execute("DELETE FROM conflicts WHERE local_id = ?", (new_local_id,))
            if base_text is not None:  # a new base held by both sides settles the pair's conflict
                self._db.execute("DELETE FROM conflicts WHERE local_id = ?", (old_local_id,))
            else:
                self._db.execute("UPDATE conflicts SET local_id = ? WHERE local_id = ?",
                                 (new_local_id, old_local_id))
            self._db.execute("DELETE FROM push_intents WHERE local_id = ?", (old_local_id,))
            self._db.execute("DELETE FROM local_replaces WHERE old_local_id = ?", (old_local_id,))
        return moved

    # --- local duplicates (exactly_once: mem0 deduplicated the add) ---------------------------

    @_guarded
    def record_local_duplicate(self, local_id: str, of_local_id: str, cloud_id: str, digest: str) -> None:
        """Note that ``local_id`` holds the same text as ``of_local_id``, whose cloud copy ``cloud_id`` is shared.

        Its push intent is done with: mem0 keeps one copy of an exact repeat.
        """
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO local_duplicates(local_id, of_local_id, cloud_id, content_hash, recorded_at) "
                "VALUES(?, ?, ?, ?, ?)", (local_id, of_local_id, cloud_id, digest, _now()))
            self._db.execute("DELETE FROM push_intents WHERE local_id = ?", (local_id,))

    @_guarded
    def local_duplicate(self, local_id: str) -> LocalDuplicate | None:
        """The duplicate record of a local id, if any."""
        row = self._db.execute("SELECT local_id, of_local_id, cloud_id, content_hash FROM local_duplicates "
                               "WHERE local_id = ?", (local_id,)).fetchone()
        return LocalDuplicate(*row) if row else None

    @_guarded
    def local_duplicates(self) -> list[LocalDuplicate]:
        """All local duplicates, oldest first."""
        return [LocalDuplicate(*row) for row in self._db.execute(
            "SELECT local_id, of_local_id, cloud_id, content_hash FROM local_duplicates ORDER BY recorded_at")]

    # --- conflicts --------------------------------------------------------------------------

    _CONFLICT_COLS = "id, local_id, cloud_id, base_text, local_text, cloud_text, reason, created_at"

    @_guarded
    def record_conflict(self, local_id: str, cloud_id: str, base_text: str | None, local_text: str | None,
                        cloud_text: str | None, reason: str) -> Conflict:
        """Store (or refresh) the open conflict of a memory."""
        self._db.execute(
            "INSERT INTO conflicts(local_id, cloud_id, base_text, local_text, cloud_text, reason, created_at) "
            "VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(local_id) DO UPDATE SET cloud_id=excluded.cloud_id, "
            "base_text=excluded.base_text, local_text=excluded.local_text, cloud_text=excluded.cloud_text, "
            "reason=excluded.reason",
            (local_id, cloud_id, base_text, local_text, cloud_text, reason, _now()),
        )
        # for 'memsyncctl log': the cloud's text only (it is never a level-0 text), never the local one
        self.record_event("conflict", local_id, cloud_text, reason, cloud_id)
        conflict = self.conflict_for_local(local_id)
        assert conflict is not None
        return conflict

    @_guarded
    def conflict_for_local(self, local_id: str) -> Conflict | None:
        """The open conflict of a local id."""
        row = self._db.execute(f"SELECT {self._CONFLICT_COLS} FROM conflicts WHERE local_id = ?",
                               (local_id,)).fetchone()
        return Conflict(*row) if row else None

    @_guarded
    def conflict(self, conflict_id: int) -> Conflict | None:
        """One open conflict by id."""
        row = self._db.execute(f"SELECT {self._CONFLICT_COLS} FROM conflicts WHERE id = ?", (conflict_id,)).fetchone()
        return Conflict(*row) if row else None

    @_guarded
    def conflicts(self) -> list[Conflict]:
        """All open conflicts, oldest first."""
        return [Conflict(*row) for row in self._db.execute(f"SELECT {self._CONFLICT_COLS} FROM conflicts ORDER BY id")]

    @_guarded
    def delete_conflict(self, conflict_id: int) -> None:
        """Close a conflict."""
        self._db.execute("DELETE FROM conflicts WHERE id = ?", (conflict_id,))

    # --- transactions -----------------------------------------------------------------------

    # --- recent changes (memsyncctl log) -----------------------------------------------------

    def record_event(self, direction: str, local_id: str | None, text: str | None, why: str,
                     cloud_id: str | None = None) -> None:
        """Remember one change for ``memsyncctl log``; ``text`` is cut to its first 60 characters.

        Callers pass ``text=None`` for a level-0 memory: its text never reaches this table. Events
        are buffered and written in one transaction per ``EVENT_BATCH`` (and by :meth:`flush_events`,
        which a run calls at its end), so a pull of thousands of memories costs no commit per memory.
        """
        preview = None if text is None else " ".join(text.split())[:EVENT_PREVIEW_CHARS]
        at = format_ts(utc_now().replace(microsecond=0))
        with self._lock:
            self._events.append((at, direction, local_id, cloud_id, preview, why[:300]))
            full = len(self._events) >= EVENT_BATCH
        if full:
            self.flush_events()

    @_guarded
    def flush_events(self) -> None:
        """Write the buffered events and keep only the newest ``EVENTS_KEPT``."""
        if not self._events:
            return
        events, self._events = self._events, []
        with self._tx():
            self._db.executemany(
                "INSERT INTO events (at, direction, local_id, cloud_id, preview, why) VALUES (?, ?, ?, ?, ?, ?)",
                events)
            self._db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (EVENTS_KEPT,))

    @_guarded
    def events(self, since: str | None = None, limit: int = EVENTS_KEPT) -> list[dict[str, str | None]]:
        """The most recent changes at or after ``since`` (RFC 3339 "Z", seconds), at most ``limit``, oldest first."""
        rows = self._db.execute(
            "SELECT at, direction, local_id, cloud_id, preview, why FROM events WHERE at >= ? "
            "ORDER BY id DESC LIMIT ?", (since or "", max(0, min(limit, EVENTS_KEPT)))).fetchall()
        keys = ("at", "direction", "local_id", "cloud_id", "text", "why")
        return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``with`` block around BEGIN IMMEDIATE / COMMIT / ROLLBACK."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:  # a failed statement on a damaged file may have ended it already
            with contextlib.suppress(sqlite3.DatabaseError):  # keep the original error
                self._db.execute("ROLLBACK")
