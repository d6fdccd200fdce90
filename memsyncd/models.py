"""Plain dataclasses for memories, queue entries, mappings and conflicts: what the engine sees.

Nothing here does I/O; the clients translate vendor JSON into these types and the
engine never sees raw JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# Re-exported: the timestamp helpers live in timestamps.py, so the thin client renders times
# without loading these classes.
from memsyncd.timestamps import format_ts as format_ts
from memsyncd.timestamps import parse_ts as parse_ts
from memsyncd.timestamps import utc_now as utc_now

Action = Literal["push", "delete"]
QueueKey = tuple[str, str, str, str | None]
"""A queue entry's identity (:attr:`QueueEntry.key`): id, action, timestamp, content hash."""


def content_hash(text: str) -> str:
    """Return the sha256 hex digest of ``text`` encoded as UTF-8 (SPEC 4)."""
    import hashlib  # here, not at the top: the hook and enqueue import this module but never hash (~5 ms)

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class QueueEntry:
    """One pending entry of the sync queue, exactly as the seed defines it."""

    id: str
    action: Action
    timestamp: str
    content_hash: str | None = None
    level: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> QueueKey:
        """Identity used to remove exactly this entry after it was processed."""
        return (self.id, self.action, self.timestamp, self.content_hash)

    @property
    def moment(self) -> datetime:
        """The entry's timestamp as a datetime (validated when the queue is read)."""
        return parse_ts(self.timestamp)


@dataclass
class QueueErrorRow:
    """One ``sync_errors`` row: the last failure of an id and how often it failed."""

    id: str
    error: str
    timestamp: str
    retries: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class QueueDoc:
    """The whole sync-queue file; unknown keys are kept in ``extra`` and written back."""

    pending: list[QueueEntry] = field(default_factory=list)
    last_sync: str | None = None
    sync_errors: list[QueueErrorRow] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkItem:
    """The coalesced work for one local id: the winning action and all raw entries it stands for."""

    id: str
    action: Action
    level: int | None
    entries: tuple[QueueEntry, ...]

    @property
    def timestamp(self) -> str:
        """Timestamp of the newest raw entry."""
        return self.entries[-1].timestamp


@dataclass(frozen=True)
class LocalMemory:
    """A memory as read from OpenMemory."""

    id: str
    text: str
    state: str = "active"
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: int | None = None
    app: str | None = None  # the OpenMemory app (client) that wrote it: "claude", "cursor", ...
    categories: tuple[str, ...] = ()

    @property
    def hash(self) -> str:
        """Content hash of the text."""
        return content_hash(self.text)

    @property
    def alive(self) -> bool:
        """False when OpenMemory soft-deleted it."""
        return self.state != "deleted"


@dataclass(frozen=True)
class CloudMemory:
    """A memory as read from mem0."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def hash(self) -> str:
        """Content hash of the text (computed by us; the platform's own hash is not sha256)."""
        return content_hash(self.text)


@dataclass(frozen=True)
class Mapping:
    """A synced pair and its merge base (the text both sides had at the last sync)."""

    local_id: str
    cloud_id: str
    base_hash: str
    base_text: str
    level: int = 1


@dataclass(frozen=True)
class Conflict:
    """An unresolved conflict: both sides changed differently since the base."""

    id: int
    local_id: str
    cloud_id: str
    base_text: str | None
    local_text: str | None
    cloud_text: str | None
    reason: str
    created_at: str


@dataclass(frozen=True)
class PushIntent:
    """A cloud create that was started but whose cloud id is not yet known."""

    local_id: str
    content_hash: str
    started_at: str
    event_id: str | None = None


@dataclass(frozen=True)
class LocalDuplicate:
    """A local memory with the same text as ``of_local_id``, whose cloud copy ``cloud_id`` stands for both.

    mem0 deduplicates an exact repeat in the same scope, and a cloud memory maps to one local
    memory only; so the second local copy is linked here and reported, not pushed again.
    """

    local_id: str
    of_local_id: str
    cloud_id: str
    content_hash: str


@dataclass(frozen=True)
class LocalReplace:
    """A local rewrite in progress: ``old_local_id`` is being replaced by a new copy holding the new text.

    OpenMemory's vector store (what agents read) only follows a create and a delete, so a
    local text change is written as: create the new copy (its metadata carries ``token``),
    delete the old one, move the mapping. ``base_text`` is the merge base the pair gets
    (None: keep the mapping's base); ``old_hash`` is the old copy's hash when the rewrite
    started (a copy edited since is kept, and the new one withdrawn).
    """

    old_local_id: str
    cloud_id: str
    token: str
    old_hash: str | None
    level: int
    base_text: str | None
    new_local_id: str | None
    started_at: str


class MergeOutcome(enum.Enum):
    """Result of comparing both sides with the merge base."""

    IDENTICAL = "identical"  # both sides have the same text
    LOCAL_NEWER = "local_newer"  # only local changed since the base
    REMOTE_NEWER = "remote_newer"  # only the cloud changed since the base
    CONFLICT = "conflict"  # both changed, differently


class SyncMode(enum.Enum):
    """What a sync run does."""

    FULL = "full"
    PUSH = "push"
    PULL = "pull"
