"""SQLite state of one root: id map with merge bases, conflicts, push intents, cursors.

WAL mode, one short transaction per change, schema versioned with ``PRAGMA
user_version`` and an ordered list of migrations.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

from memsyncd.errors import StateUnreadableError
from memsyncd.models import Conflict, Mapping, PushIntent, format_ts, utc_now

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
)
SCHEMA_VERSION = len(MIGRATIONS)


def _now() -> str:
    return format_ts(utc_now())


class StateStore:
    """Typed access to the state database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash (kill -9); only push intents, which
            # guard against duplicates, are committed with a full fsync (see record_intent).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateUnreadableError(
                f"{path}: {exc}. Move the file aside to start over (mappings will be rebuilt by content hash)."
            ) from None

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

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

    def get_meta(self, key: str) -> str | None:
        """Read one meta value."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Write one meta value."""
        self._db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                         (key, value))

    @property
    def device_id(self) -> str:
        """This root's stable device id (created on first use)."""
        value = self.get_meta("device_id")
        if value is None:
            value = uuid.uuid4().hex
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('device_id', ?)", (value,))
            value = self.get_meta("device_id") or value
        return value

    # --- mappings ---------------------------------------------------------------------------

    @staticmethod
    def _mapping(row: tuple[str, str, str, str, int]) -> Mapping:
        return Mapping(local_id=row[0], cloud_id=row[1], base_hash=row[2], base_text=row[3], level=row[4])

    def mapping_for_local(self, local_id: str) -> Mapping | None:
        """The mapping of a local id."""
        row = self._db.execute(
            "SELECT local_id, cloud_id, base_hash, base_text, level FROM mappings WHERE local_id = ?", (local_id,)
        ).fetchone()
        return self._mapping(row) if row else None

    def mapping_for_cloud(self, cloud_id: str) -> Mapping | None:
        """The mapping of a cloud id."""
        row = self._db.execute(
            "SELECT local_id, cloud_id, base_hash, base_text, level FROM mappings WHERE cloud_id = ?", (cloud_id,)
        ).fetchone()
        return self._mapping(row) if row else None

    def mappings(self) -> Iterator[Mapping]:
        """Every mapping."""
        for row in self._db.execute("SELECT local_id, cloud_id, base_hash, base_text, level FROM mappings"):
            yield self._mapping(row)

    def count_mappings(self) -> int:
        """How many pairs are synced."""
        return int(self._db.execute("SELECT COUNT(*) FROM mappings").fetchone()[0])

    def save_mapping(self, mapping: Mapping) -> None:
        """Store a pair and its new merge base; clears the pair's push intent and open conflict.

        A new base is only ever written when both sides hold it, so a conflict recorded
        for the pair before is settled by definition.
        """
        with self._tx():
            self._db.execute("DELETE FROM conflicts WHERE local_id = ?", (mapping.local_id,))
            self._db.execute("DELETE FROM mappings WHERE cloud_id = ? AND local_id != ?",
                             (mapping.cloud_id, mapping.local_id))
            self._db.execute(
                "INSERT INTO mappings(local_id, cloud_id, base_hash, base_text, level, updated_at) "
                "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(local_id) DO UPDATE SET cloud_id=excluded.cloud_id, "
                "base_hash=excluded.base_hash, base_text=excluded.base_text, level=excluded.level, "
                "updated_at=excluded.updated_at",
                (mapping.local_id, mapping.cloud_id, mapping.base_hash, mapping.base_text, mapping.level, _now()),
            )
            self._db.execute("DELETE FROM push_intents WHERE local_id = ?", (mapping.local_id,))

    def delete_mapping(self, local_id: str) -> None:
        """Forget a pair (gone on both sides), and with it any conflict it had."""
        with self._tx():
            self._db.execute("DELETE FROM conflicts WHERE local_id = ?", (local_id,))
            self._db.execute("DELETE FROM mappings WHERE local_id = ?", (local_id,))

    # --- push intents -----------------------------------------------------------------------

    def intent_for(self, local_id: str) -> PushIntent | None:
        """The unfinished create of a local id, if any."""
        row = self._db.execute(
            "SELECT local_id, content_hash, started_at, event_id FROM push_intents WHERE local_id = ?", (local_id,)
        ).fetchone()
        return PushIntent(*row) if row else None

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

    def clear_intent(self, local_id: str) -> None:
        """Forget an unfinished create (it failed for sure)."""
        self._db.execute("DELETE FROM push_intents WHERE local_id = ?", (local_id,))

    def intents(self) -> list[PushIntent]:
        """All unfinished creates."""
        return [PushIntent(*row) for row in
                self._db.execute("SELECT local_id, content_hash, started_at, event_id FROM push_intents")]

    # --- conflicts --------------------------------------------------------------------------

    _CONFLICT_COLS = "id, local_id, cloud_id, base_text, local_text, cloud_text, reason, created_at"

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
        conflict = self.conflict_for_local(local_id)
        assert conflict is not None
        return conflict

    def conflict_for_local(self, local_id: str) -> Conflict | None:
        """The open conflict of a local id."""
        row = self._db.execute(f"SELECT {self._CONFLICT_COLS} FROM conflicts WHERE local_id = ?", (local_id,)).fetchone()
        return Conflict(*row) if row else None

    def conflict(self, conflict_id: int) -> Conflict | None:
        """One open conflict by id."""
        row = self._db.execute(f"SELECT {self._CONFLICT_COLS} FROM conflicts WHERE id = ?", (conflict_id,)).fetchone()
        return Conflict(*row) if row else None

    def conflicts(self) -> list[Conflict]:
        """All open conflicts, oldest first."""
        return [Conflict(*row) for row in self._db.execute(f"SELECT {self._CONFLICT_COLS} FROM conflicts ORDER BY id")]

    def delete_conflict(self, conflict_id: int) -> None:
        """Close a conflict."""
        self._db.execute("DELETE FROM conflicts WHERE id = ?", (conflict_id,))

    # --- transactions -----------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``with`` block around BEGIN IMMEDIATE / COMMIT / ROLLBACK."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
