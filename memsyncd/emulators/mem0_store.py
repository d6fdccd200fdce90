"""Hold the mem0 emulator's data: memories, their history, add events, add mode.

This is the in-memory "database" of the mem0 platform emulator and the object
tests reach through ``RunningEmulators.mem0``. Every method takes the store's
lock, so the emulator's loop thread and a test thread can use it together.
Methods return plain JSON-ready dicts (copies), never live records.

Memory ``hash`` is the MD5 hex digest of the memory text, as mem0 computes it.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from memsyncd.emulators.clock import Clock, MonotonicClock, iso_aware, parse_iso
from memsyncd.emulators.mem0_filters import ENTITY_FIELDS, Predicate
from memsyncd.emulators.versioned import VersionedStore

__all__ = ["AddMode", "Mem0Store", "MemoryRecord"]

J = TypeVar("J")

QUEUED_MESSAGE = "Memory processing has been queued for background execution"
_ENTITY_TYPES = {"user_id": "user", "agent_id": "agent", "app_id": "app", "run_id": "run"}


def md5_hex(text: str) -> str:
    """The platform's memory hash."""
    return hashlib.md5(text.encode("utf-8")).hexdigest()


@dataclass
class AddMode:
    """How ``POST /v3/memories/add/`` behaves.

    Attributes:
        mode: ``"immediate"`` stores at once; ``"queued"`` answers PENDING and
            stores after ``delay_ms`` (done by the event loop).
        delay_ms: queued-mode processing delay.
        shape: queued response shape: ``"results"`` →
            ``{"results": [{"message", "status": "PENDING", "event_id"}]}``,
            ``"v3"`` → ``{"event_id", "status": "PENDING"}``.
        fail_match: queued events whose payload contains this text end FAILED.
        dedup: what an ``infer: false`` add of text already stored in the same scope (same
            user/agent/app/run ids, same MD5 of the text) answers, as the direct-import docs
            say such repeats are deduplicated: ``"empty"`` → ``SUCCEEDED`` with no results
            (the reported answer), ``"existing"`` → the existing memory's id in ``results``,
            ``"off"`` → a second copy (the emulator's behaviour before it modelled this).
    """

    mode: Literal["immediate", "queued"] = "immediate"
    delay_ms: int = 50
    shape: Literal["results", "v3"] = "results"
    fail_match: str | None = None
    dedup: Literal["empty", "existing", "off"] = "empty"

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "delay_ms": self.delay_ms, "shape": self.shape, "fail_match": self.fail_match,
                "dedup": self.dedup}


@dataclass
class MemoryRecord:
    """One stored memory (deleted ones are kept with ``deleted_at``)."""

    id: str
    memory: str
    user_id: str | None
    agent_id: str | None
    app_id: str | None
    run_id: str | None
    metadata: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    categories: list[str] = field(default_factory=list)
    deleted_at: datetime | None = None
    expiration_date: str | None = None

    def view(self) -> dict[str, Any]:
        """Fields as the filter language sees them (datetimes, not text)."""
        return {
            "id": self.id,
            "memory": self.memory,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "app_id": self.app_id,
            "run_id": self.run_id,
            "metadata": self.metadata,
            "categories": self.categories,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expiration_date": None,
        }

    def public(self, *, session_alias: bool = False) -> dict[str, Any]:
        """The platform's JSON form of this memory.

        Args:
            session_alias: also report ``run_id`` as ``session_id`` (the list,
                get and update endpoints do; search does not).
        """
        out = self.view()
        out.update(
            metadata=_copy(self.metadata),
            categories=list(self.categories),
            created_at=iso_aware(self.created_at),
            updated_at=iso_aware(self.updated_at),
            expiration_date=self.expiration_date,
            hash=md5_hex(self.memory),
        )
        if session_alias:
            out["session_id"] = self.run_id
        return out

    def dump(self) -> dict[str, Any]:
        out = self.public()
        out.pop("hash")
        out["deleted_at"] = iso_aware(self.deleted_at) if self.deleted_at else None
        out["deleted"] = self.deleted_at is not None
        return out

    @classmethod
    def load(cls, data: dict[str, Any]) -> MemoryRecord:
        return cls(
            id=data["id"],
            memory=data["memory"],
            user_id=data.get("user_id"),
            agent_id=data.get("agent_id"),
            app_id=data.get("app_id"),
            run_id=data.get("run_id"),
            metadata=data.get("metadata"),
            created_at=parse_iso(data["created_at"]),
            updated_at=parse_iso(data["updated_at"]),
            categories=list(data.get("categories") or []),
            deleted_at=parse_iso(data["deleted_at"]) if data.get("deleted_at") else None,
            expiration_date=data.get("expiration_date"),
        )


def _copy(value: J) -> J:
    """Deep-copy JSON data (dicts and lists)."""
    return copy.deepcopy(value)


class Mem0Store(VersionedStore):
    """Thread-safe in-memory state of the mem0 platform emulator."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        org_id: str = "org_emulator",
        project_id: str = "proj_emulator",
        user_email: str = "emulator@memsyncd.invalid",
        clock: Clock | None = None,
    ) -> None:
        self.api_key = api_key
        self.org_id = org_id
        self.project_id = project_id
        self.user_email = user_email
        self.add_mode = AddMode()
        self._clock = clock or MonotonicClock()
        super().__init__()
        self._memories: dict[str, MemoryRecord] = {}
        # dedup index: MD5 of a text -> ids that held it (candidates, checked on use), and each id's
        # insertion rank, so an add's dedup check is not a scan of the whole store (quadratic over a bulk import)
        self._by_digest: dict[str, list[str]] = {}
        self._rank: dict[str, int] = {}
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._events: dict[str, dict[str, Any]] = {}

    # -- bookkeeping -------------------------------------------------------------

    def now(self) -> datetime:
        """The store's clock."""
        return self._clock()

    def set_add_mode(
        self,
        mode: Literal["immediate", "queued"],
        *,
        delay_ms: int | None = None,
        shape: Literal["results", "v3"] | None = None,
        fail_match: str | None = None,
        dedup: Literal["empty", "existing", "off"] | None = None,
    ) -> AddMode:
        """Switch between immediate and queued adds (see :class:`AddMode`).

        Raises:
            ValueError: unknown mode/shape/dedup or a negative delay.
        """
        if mode not in ("immediate", "queued"):
            raise ValueError("mode must be 'immediate' or 'queued'")
        if dedup is not None and dedup not in ("empty", "existing", "off"):
            raise ValueError("dedup must be 'empty', 'existing' or 'off'")
        if shape is not None and shape not in ("results", "v3"):
            raise ValueError("shape must be 'results' or 'v3'")
        if delay_ms is not None and (isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or delay_ms < 0):
            raise ValueError("delay_ms must be an integer >= 0")
        with self._lock:
            self.add_mode = AddMode(
                mode=mode,
                delay_ms=self.add_mode.delay_ms if delay_ms is None else delay_ms,
                shape=self.add_mode.shape if shape is None else shape,
                fail_match=fail_match,
                dedup=self.add_mode.dedup if dedup is None else dedup,
            )
            return self.add_mode

    # -- memories ----------------------------------------------------------------

    def add(
        self,
        text: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Store one memory directly (test helper; no event, no request log).

        Returns:
            The memory's JSON form.
        """
        entities = {"user_id": user_id, "agent_id": agent_id, "app_id": app_id, "run_id": run_id}
        with self._lock:
            record = self._create(text, entities, metadata, [{"role": "user", "content": text}], created_at)
            return record.public()

    def _create(
        self,
        text: str,
        entities: dict[str, str | None],
        metadata: dict[str, Any] | None,
        messages: list[dict[str, Any]],
        created_at: datetime | None = None,
    ) -> MemoryRecord:
        now = self._clock()
        created = created_at or now
        record = MemoryRecord(
            id=str(uuid.uuid4()),
            memory=text,
            user_id=entities.get("user_id"),
            agent_id=entities.get("agent_id"),
            app_id=entities.get("app_id"),
            run_id=entities.get("run_id"),
            metadata=_copy(metadata),
            created_at=created,
            updated_at=created,
        )
        self._memories[record.id] = record
        self._index(record)
        self._history[record.id] = [self._history_entry(record, "ADD", None, text, messages, now)]
        self._touch()
        return record

    def _history_entry(
        self,
        record: MemoryRecord,
        event: str,
        old: str | None,
        new: str | None,
        messages: list[dict[str, Any]],
        when: datetime,
    ) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "memory_id": record.id,
            "input": _copy(messages),
            "old_memory": old,
            "new_memory": new,
            "user_id": record.user_id,
            "agent_id": record.agent_id,
            "app_id": record.app_id,
            "session_id": record.run_id,
            "categories": list(record.categories),
            "event": event,
            "metadata": _copy(record.metadata),
            "created_at": iso_aware(when),
            "updated_at": iso_aware(when),
        }

    def add_messages(
        self,
        messages: list[dict[str, Any]],
        entities: dict[str, str | None],
        metadata: dict[str, Any] | None,
        infer: bool,
    ) -> list[MemoryRecord]:
        """Store memories for an add request (no LLM: message text is kept verbatim).

        With ``infer`` false every non-system message becomes a memory (the
        platform's "direct import") carrying every entity id passed; with
        ``infer`` true the emulator stands in for extraction by keeping each
        user message verbatim, and attributes each fact to its speaker as the
        platform does (v2 filter docs: such a memory carries ``user_id`` or
        ``agent_id``, never both): a user message's fact drops ``agent_id``
        when a ``user_id`` was given, an assistant message's fact is kept only
        when an ``agent_id`` was given, without ``user_id``.
        """
        roles = ("user",) if infer else ("user", "assistant")
        if infer and entities.get("agent_id"):
            roles = ("user", "assistant")
        with self._lock:
            records: list[MemoryRecord] = []
            for m in messages:
                text = str(m.get("content", ""))
                if m.get("role") not in roles or not text.strip():
                    continue
                scope = dict(entities)
                if infer and m.get("role") == "assistant":
                    scope["user_id"] = None
                elif infer and scope.get("user_id"):
                    scope["agent_id"] = None
                existing = None if infer else self._same_in_scope(text, scope)
                if existing is None:
                    records.append(self._create(text, scope, metadata, messages))
                elif self.add_mode.dedup == "existing":
                    records.append(existing)
                # "empty": a deduplicated repeat adds nothing to the results
            return records

    def _same_in_scope(self, text: str, entities: dict[str, str | None]) -> MemoryRecord | None:
        """A live memory with this exact text (MD5) in exactly this scope, when dedup is on."""
        if self.add_mode.dedup == "off":
            return None
        digest = md5_hex(text)
        scope = {k: entities.get(k) or None for k in ("user_id", "agent_id", "app_id", "run_id")}
        found: MemoryRecord | None = None
        for memory_id in self._by_digest.get(digest, ()):
            record = self._memories.get(memory_id)
            if record is not None and record.deleted_at is None and md5_hex(record.memory) == digest \
                    and all(getattr(record, k) == v for k, v in scope.items()) \
                    and (found is None or self._rank[record.id] < self._rank[found.id]):
                found = record  # the oldest, as a scan of the store in insertion order finds
        return found

    def _index(self, record: MemoryRecord) -> None:
        """Note ``record``'s current text in the dedup index (stale entries are skipped on use)."""
        self._rank.setdefault(record.id, len(self._rank))
        ids = self._by_digest.setdefault(md5_hex(record.memory), [])
        if record.id not in ids:
            ids.append(record.id)

    def _live(self, memory_id: str) -> MemoryRecord | None:
        record = self._memories.get(memory_id)
        return record if record is not None and record.deleted_at is None else None

    def get(self, memory_id: str, *, session_alias: bool = False) -> dict[str, Any] | None:
        """The live memory with this id, or ``None``."""
        with self._lock:
            record = self._live(memory_id)
            return record.public(session_alias=session_alias) if record else None

    def memories(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """All memories, ordered by (created_at, id); deleted ones carry ``deleted_at``."""
        with self._lock:
            records = sorted(self._memories.values(), key=lambda r: (r.created_at, r.id))
            return [r.dump() for r in records if include_deleted or r.deleted_at is None]

    def query(self, predicate: Predicate, *, key: Hashable | None = None) -> list[MemoryRecord]:
        """Live memories matching ``predicate``, ordered by (created_at, id).

        ``key`` names the predicate (e.g. its filters as canonical JSON): asked again with the same key
        while nothing changed (same store version), the last keyed query's hits are reused. A paged
        listing asks once per page, and filtering the whole store for each page made a full listing
        quadratic (20,000 memories: 48 ms a page, 200 pages).
        """
        with self._lock:
            if key is None:
                return self._query(predicate)
            return list(self.memo(("query", key), lambda: self._query(predicate)))

    def _query(self, predicate: Predicate) -> list[MemoryRecord]:
        hits = [r for r in self._memories.values() if r.deleted_at is None and predicate(r.view())]
        hits.sort(key=lambda r: (r.created_at, r.id))
        return hits

    def update(
        self,
        memory_id: str,
        *,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Replace a live memory's text and/or metadata; ``None`` when it does not exist."""
        with self._lock:
            record = self._live(memory_id)
            if record is None:
                return None
            old = record.memory
            if text is not None:
                record.memory = text
                self._index(record)
            if metadata is not None:
                record.metadata = _copy(metadata)
            record.updated_at = self._clock()
            self._history[memory_id].append(
                self._history_entry(record, "UPDATE", old, record.memory, [], record.updated_at)
            )
            self._touch()
            return record.public(session_alias=True)

    def delete(self, memory_id: str) -> bool:
        """Delete a live memory; ``False`` when it does not exist."""
        with self._lock:
            record = self._live(memory_id)
            if record is None:
                return False
            record.deleted_at = self._clock()
            self._history[memory_id].append(
                self._history_entry(record, "DELETE", record.memory, None, [], record.deleted_at)
            )
            self._touch()
            return True

    def delete_where(self, predicate: Callable[[MemoryRecord], bool]) -> int:
        """Delete every live memory matching ``predicate``; returns how many."""
        with self._lock:
            ids = [r.id for r in self._memories.values() if r.deleted_at is None and predicate(r)]
            for memory_id in ids:
                self.delete(memory_id)
            return len(ids)

    def history(self, memory_id: str) -> list[dict[str, Any]] | None:
        """History entries of a memory (deleted ones too); ``None`` for an unknown id."""
        with self._lock:
            entries = self._history.get(memory_id)
            return _copy(entries) if entries is not None else None

    def entities(self) -> list[dict[str, Any]]:
        """Users, agents, apps and runs that have live memories."""
        with self._lock:
            seen: dict[tuple[str, str], list[MemoryRecord]] = {}
            for record in self._memories.values():
                if record.deleted_at is not None:
                    continue
                for attr, kind in _ENTITY_TYPES.items():
                    name = getattr(record, attr)
                    if name:
                        seen.setdefault((kind, name), []).append(record)
            return [
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mem0-emulator:{kind}:{name}")),
                    "name": name,
                    "type": kind,
                    "owner": self.user_email,
                    "metadata": None,
                    "total_memories": len(records),
                    "created_at": iso_aware(min(r.created_at for r in records)),
                    "updated_at": iso_aware(max(r.updated_at for r in records)),
                }
                for (kind, name), records in sorted(seen.items())
            ]

    # -- events --------------------------------------------------------------------

    def new_event(self, payload: dict[str, Any], *, status: str = "PENDING") -> dict[str, Any]:
        """Record an ADD event for ``payload``."""
        with self._lock:
            now = self._clock()
            event_id = str(uuid.uuid4())
            event: dict[str, Any] = {
                "id": event_id,
                "event_type": "ADD",
                "status": status,
                "payload": _copy(payload),
                "metadata": None,
                "results": [],
                "created_at": iso_aware(now),
                "updated_at": iso_aware(now),
                "started_at": None,
                "completed_at": None,
                "latency": None,
                "error": None,
            }
            self._events[event_id] = event
            self._touch()
            return _copy(event)

    def finish_event(self, event_id: str, records: Iterable[MemoryRecord] = (), *, error: str | None = None) -> None:
        """Mark an event SUCCEEDED with ``records`` as results, or FAILED with ``error``."""
        with self._lock:
            event = self._events.get(event_id)
            if event is None:
                return
            now = self._clock()
            started = parse_iso(event["created_at"])
            event.update(
                status="FAILED" if error else "SUCCEEDED",
                error=error,
                results=[
                    {"id": r.id, "data": {"memory": r.memory}, "event": "ADD", "user_id": r.user_id} for r in records
                ],
                started_at=event["created_at"],
                completed_at=iso_aware(now),
                updated_at=iso_aware(now),
                latency=round((now - started).total_seconds() * 1000, 3),
            )
            self._touch()

    def process_event(self, event_id: str) -> None:
        """Run a queued add: store its memories (or fail it per ``fail_match``)."""
        with self._lock:
            event = self._events.get(event_id)
            if event is None or event["status"] != "PENDING":
                return
            payload = event["payload"]
            fail_match = self.add_mode.fail_match
            if fail_match and fail_match in str(payload):
                self.finish_event(event_id, error="Memory processing failed (injected by the emulator)")
                return
            entities = {k: payload.get(k) for k in ENTITY_FIELDS}
            records = self.add_messages(
                payload["messages"], entities, payload.get("metadata"), bool(payload.get("infer", True))
            )
            self.finish_event(event_id, records)

    def event(self, event_id: str) -> dict[str, Any] | None:
        """One event, or ``None``."""
        with self._lock:
            event = self._events.get(event_id)
            return _copy(event) if event else None

    def events(self) -> list[dict[str, Any]]:
        """All events, newest first."""
        with self._lock:
            return [_copy(e) for e in sorted(self._events.values(), key=lambda e: e["created_at"], reverse=True)]

    # -- whole-state operations ----------------------------------------------------

    def reset(self) -> None:
        """Forget all memories, history and events (the add mode stays)."""
        with self._lock:
            self._memories.clear()
            self._by_digest.clear()
            self._rank.clear()
            self._history.clear()
            self._events.clear()
            self._touch()

    def dump(self) -> dict[str, Any]:
        """Everything, JSON-ready (for ``--state`` files and ``GET /_admin/state``)."""
        with self._lock:
            return {
                "memories": self.memories(include_deleted=True),
                "history": _copy(self._history),
                "events": self.events(),
                "add_mode": self.add_mode.to_json(),
            }

    def load(self, data: dict[str, Any]) -> None:
        """Replace the state with a :meth:`dump`.

        Raises:
            KeyError, ValueError, TypeError: ``data`` is not a valid dump.
        """
        with self._lock:
            memories = {m["id"]: MemoryRecord.load(m) for m in data.get("memories", [])}
            self._memories = memories
            self._by_digest, self._rank = {}, {}
            for record in memories.values():
                self._index(record)
            self._history = {k: list(v) for k, v in dict(data.get("history", {})).items()}
            self._events = {e["id"]: dict(e) for e in data.get("events", [])}
            mode = data.get("add_mode") or {}
            self.add_mode = AddMode(
                mode=mode.get("mode", "immediate"),
                delay_ms=int(mode.get("delay_ms", 50)),
                shape=mode.get("shape", "results"),
                fail_match=mode.get("fail_match"),
                dedup=mode.get("dedup", "empty"),
            )
            self._touch()
