"""Hold the OpenMemory emulator's data: users, apps, memories and their states.

Mirrors the OpenMemory server's SQL models (``users``, ``apps``,
``memories``, ``memory_status_history``) in memory. It is the object tests
reach through ``RunningEmulators.openmemory``; every method takes the store's
lock, and helpers return JSON-ready dicts (copies), never live records.

Like the real server, one user exists from the start (the server's ``$USER``,
else ``default_user``) together with its ``openmemory`` app; REST calls never
create users (:meth:`OpenMemoryStore.create_user` is for tests).

The store also models OpenMemory's second store, the mem0 vector store (Qdrant), whose
points' payload ``data`` is what MCP clients read (``search_memory`` and
``list_memories`` in ``app/mcp_server.py``). As on the real server, a REST create adds a
point (id = memory id), REST ``DELETE`` removes it, and REST ``PUT`` (``update_memory``)
changes only the SQL ``content``: the point keeps the old text.
:meth:`OpenMemoryStore.agent_memories` answers what an MCP client would read.
"""

from __future__ import annotations

import copy
import hashlib
import os
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from memsyncd.emulators.clock import Clock, MonotonicClock, iso_naive, parse_iso
from memsyncd.emulators.versioned import VersionedStore

__all__ = ["STATES", "OMApp", "OMMemory", "OMUser", "OMVectorPoint", "OpenMemoryStore", "default_user_name"]

State = Literal["active", "paused", "archived", "deleted"]
STATES: tuple[str, ...] = ("active", "paused", "archived", "deleted")
DEFAULT_APP = "openmemory"


def default_user_name() -> str:
    """The user the real server creates at start: ``$USER``, else ``default_user``."""
    return os.environ.get("USER") or "default_user"


@dataclass
class OMUser:
    """A row of ``users``: ``id`` is internal, ``user_id`` the name REST calls use."""

    id: str
    user_id: str
    name: str | None
    created_at: datetime


@dataclass
class OMApp:
    """A row of ``apps`` (one per owner and name)."""

    id: str
    owner_id: str
    name: str
    created_at: datetime
    updated_at: datetime
    is_active: bool = True
    description: str | None = None
    metadata_: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The ORM row as FastAPI serializes it."""
        return {
            "id": self.id,
            "owner_id": self.owner_id,
            "name": self.name,
            "description": self.description,
            "metadata_": copy.deepcopy(self.metadata_),
            "is_active": self.is_active,
            "created_at": iso_naive(self.created_at),
            "updated_at": iso_naive(self.updated_at),
        }


@dataclass
class OMMemory:
    """A row of ``memories``."""

    id: str
    user_id: str
    app_id: str
    content: str
    metadata_: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    state: str = "active"
    archived_at: datetime | None = None
    deleted_at: datetime | None = None
    categories: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The ORM row as the create/update routes return it (naive UTC times)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "app_id": self.app_id,
            "content": self.content,
            "vector": None,
            "metadata_": copy.deepcopy(self.metadata_),
            "state": self.state,
            "created_at": iso_naive(self.created_at),
            "updated_at": iso_naive(self.updated_at),
            "archived_at": iso_naive(self.archived_at) if self.archived_at else None,
            "deleted_at": iso_naive(self.deleted_at) if self.deleted_at else None,
        }

    def epoch(self) -> int:
        """``created_at`` as integer epoch seconds (list items and ``GET /{id}``)."""
        return int(self.created_at.timestamp())


def _dump_dt(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _load_dt(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None


@dataclass
class OMVectorPoint:
    """A point of the mem0 vector store: the payload MCP clients read (``data`` is the text)."""

    id: str
    data: str
    user_id: str  # the user's name (``users.user_id``), as ``memory_client.add(user_id=...)`` stores it
    created_at: datetime
    mcp_client: str = DEFAULT_APP

    def payload(self) -> dict[str, Any]:
        """The point's payload as mem0's ``Memory.add(infer=False)`` writes it."""
        return {
            "data": self.data,
            "hash": hashlib.md5(self.data.encode("utf-8")).hexdigest(),
            "user_id": self.user_id,
            "created_at": self.created_at.isoformat(),
            "source_app": "openmemory",
            "mcp_client": self.mcp_client,
        }


class OpenMemoryStore(VersionedStore):
    """Thread-safe in-memory state of the OpenMemory emulator."""

    def __init__(self, user: str | None = None, *, clock: Clock | None = None) -> None:
        self.default_user = user or default_user_name()
        self.memory_client_available = True
        self._clock = clock or MonotonicClock()
        super().__init__()
        self._users: dict[str, OMUser] = {}
        self._apps: dict[str, OMApp] = {}
        self._memories: dict[str, OMMemory] = {}
        self._history: list[dict[str, Any]] = []
        self._vectors: dict[str, OMVectorPoint] = {}  # memory id -> vector point (what MCP clients read)
        # (user name, data) -> how many points hold it: an inferring create's "already stored?" check
        # without building the set of every point's text per request (quadratic over a bulk import)
        self._vector_index: Counter[tuple[str, str]] = Counter()
        self._bootstrap()

    def _bootstrap(self) -> None:
        user = self._new_user(self.default_user, name="Default User")
        self._app_for(user, DEFAULT_APP)

    # -- users and apps --------------------------------------------------------------

    def _new_user(self, user_id: str, *, name: str | None = None) -> OMUser:
        user = OMUser(id=str(uuid.uuid4()), user_id=user_id, name=name, created_at=self._clock())
        self._users[user_id] = user
        self._touch()
        return user

    def create_user(self, user_id: str) -> dict[str, Any]:
        """Create a user as the MCP server would (test helper; REST never does)."""
        with self._lock:
            user = self._users.get(user_id) or self._new_user(user_id)
            return {"id": user.id, "user_id": user.user_id, "name": user.name}

    def user(self, user_id: str) -> OMUser | None:
        """The user named ``user_id``, or ``None``."""
        with self._lock:
            return self._users.get(user_id)

    def users(self) -> list[OMUser]:
        """All users, oldest first."""
        with self._lock:
            return list(self._users.values())

    def _app_for(self, user: OMUser, name: str) -> OMApp:
        for app in self._apps.values():
            if app.owner_id == user.id and app.name == name:
                return app
        now = self._clock()
        app = OMApp(id=str(uuid.uuid4()), owner_id=user.id, name=name, created_at=now, updated_at=now)
        self._apps[app.id] = app
        self._touch()
        return app

    def app_for(self, user: OMUser, name: str) -> OMApp:
        """The user's app called ``name``, created on first use."""
        with self._lock:
            return self._app_for(user, name)

    def app(self, app_id: str) -> OMApp | None:
        """The app with this id, or ``None``."""
        with self._lock:
            return self._apps.get(app_id)

    def apps(self, owner: OMUser | None = None) -> list[OMApp]:
        """All apps (of ``owner``), by name."""
        with self._lock:
            return sorted(
                (a for a in self._apps.values() if owner is None or a.owner_id == owner.id), key=lambda a: a.name
            )

    def set_app_active(self, app_id: str, is_active: bool) -> bool:
        """Pause or resume an app; ``False`` when it does not exist."""
        with self._lock:
            app = self._apps.get(app_id)
            if app is None:
                return False
            app.is_active = is_active
            app.updated_at = self._clock()
            self._touch()
            return True

    def pause_app(self, name: str = DEFAULT_APP, paused: bool = True, *, user_id: str | None = None) -> None:
        """Pause (or resume) a user's app by name (test helper; creates the app if needed)."""
        with self._lock:
            user = self._require_user(user_id)
            self.set_app_active(self._app_for(user, name).id, not paused)

    def app_name(self, memory: OMMemory) -> str | None:
        with self._lock:
            app = self._apps.get(memory.app_id)
            return app.name if app else None

    def memory_count(self, app_id: str) -> int:
        with self._lock:
            return sum(1 for m in self._memories.values() if m.app_id == app_id)

    def _require_user(self, user_id: str | None) -> OMUser:
        name = user_id or self.default_user
        user = self._users.get(name)
        if user is None:
            raise KeyError(f"User not found: {name}")
        return user

    # -- memories --------------------------------------------------------------------

    def create(self, user: OMUser, app: OMApp, text: str, metadata: dict[str, Any]) -> OMMemory:
        """Insert an active memory."""
        with self._lock:
            now = self._clock()
            memory = OMMemory(
                id=str(uuid.uuid4()),
                user_id=user.id,
                app_id=app.id,
                content=text,
                metadata_=copy.deepcopy(metadata),
                created_at=now,
                updated_at=now,
            )
            self._memories[memory.id] = memory
            self._vectors[memory.id] = OMVectorPoint(memory.id, text, user.user_id, now, app.name)
            self._vector_index[(user.user_id, text)] += 1
            self._record_state(memory.id, user.id, "deleted", "active", now)
            self._touch()
            return memory

    def add(
        self,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
        app: str = DEFAULT_APP,
    ) -> dict[str, Any]:
        """Store a memory directly (test helper; no request log, no faults).

        Raises:
            KeyError: unknown user.
        """
        with self._lock:
            user = self._require_user(user_id)
            return self.create(user, self._app_for(user, app), text, metadata or {}).row()

    def find(self, memory_id: str) -> OMMemory | None:
        """The memory with this id in any state, or ``None``."""
        with self._lock:
            return self._memories.get(memory_id)

    def get(self, memory_id: str) -> dict[str, Any] | None:
        """Row of a memory in any state (test helper)."""
        with self._lock:
            memory = self._memories.get(memory_id)
            return memory.row() if memory else None

    def user_memories(self, user: OMUser) -> list[OMMemory]:
        """A user's memories in insertion order (all states)."""
        with self._lock:
            return [m for m in self._memories.values() if m.user_id == user.id]

    def memories(self, *, include_deleted: bool = False, user_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of all memories (of ``user_id``), oldest first, with ``app_name``."""
        with self._lock:
            owner = self._users.get(user_id) if user_id else None
            return [
                {**m.row(), "app_name": self.app_name(m), "categories": list(m.categories)}
                for m in self._memories.values()
                if (include_deleted or m.state != "deleted") and (owner is None or m.user_id == owner.id)
            ]

    def update_content(self, memory_id: str, text: str) -> dict[str, Any] | None:
        """Replace a memory's SQL text (any state, as the real route does); the vector point is NOT updated."""
        with self._lock:
            memory = self._memories.get(memory_id)
            if memory is None:
                return None
            memory.content = text
            memory.updated_at = self._clock()
            self._touch()
            return memory.row()

    def set_state(self, memory_id: str, state: str, changed_by: str | None = None) -> dict[str, Any] | None:
        """Move a memory to ``state``, recording history; ``None`` when unknown.

        Raises:
            ValueError: ``state`` is not a memory state.
        """
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        with self._lock:
            memory = self._memories.get(memory_id)
            if memory is None:
                return None
            now = self._clock()
            old = memory.state
            memory.state = state
            memory.updated_at = now
            if state == "archived":
                memory.archived_at = now
            elif state == "deleted":
                memory.deleted_at = now
            self._record_state(memory_id, changed_by or memory.user_id, old, state, now)
            self._touch()
            return memory.row()

    def delete(self, memory_id: str) -> bool:
        """Soft-delete a memory as REST ``DELETE`` does (vector point removed too); ``False`` when unknown."""
        with self._lock:
            self.delete_vector(memory_id)
            return self.set_state(memory_id, "deleted") is not None

    def delete_vector(self, memory_id: str) -> None:
        """Remove a memory's vector point (``memory_client.delete``); nothing when there is none."""
        with self._lock:
            point = self._vectors.pop(memory_id, None)
            if point is not None:
                key = (point.user_id, point.data)
                self._vector_index[key] -= 1
                if self._vector_index[key] <= 0:
                    del self._vector_index[key]
                self._touch()

    def vector_texts(self, user_id: str) -> set[str]:
        """The ``data`` of a user's vector points (what mem0's extractor compares a new fact with)."""
        with self._lock:
            return {p.data for p in self._vectors.values() if p.user_id == user_id}

    def has_vector_text(self, user_id: str, text: str) -> bool:
        """Whether a vector point of ``user_id`` holds exactly ``text`` (an index look-up, not a scan)."""
        with self._lock:
            return self._vector_index.get((user_id, text), 0) > 0

    def agent_memories(self, user_id: str | None = None, query: str | None = None) -> list[dict[str, Any]]:
        """What an MCP client of ``user_id`` reads: ``list_memories`` (or ``search_memory`` with ``query``).

        Vector points of the user whose SQL memory is active (``check_memory_access_permissions``),
        each ``{"id", "memory", "hash", "created_at"}`` with ``memory`` = the payload's ``data``.
        The search is a case-insensitive substring match standing in for the embedding search
        (at most 10 hits, as the real tool's ``limit=10``).
        """
        with self._lock:
            name = user_id or self.default_user
            needle = (query or "").lower()
            rows = []
            for point in self._vectors.values():
                memory = self._memories.get(point.id)
                if point.user_id != name or memory is None or memory.state != "active":
                    continue
                if needle and needle not in point.data.lower():
                    continue
                payload = point.payload()
                rows.append({"id": point.id, "memory": payload["data"], "hash": payload["hash"],
                             "created_at": payload["created_at"]})
            return rows[:10] if query is not None else rows

    def _record_state(self, memory_id: str, changed_by: str, old: str, new: str, when: datetime) -> None:
        self._history.append(
            {
                "id": str(uuid.uuid4()),
                "memory_id": memory_id,
                "changed_by": changed_by,
                "old_state": old,
                "new_state": new,
                "changed_at": iso_naive(when),
            }
        )

    # -- whole-state operations ------------------------------------------------------

    def reset(self) -> None:
        """Back to a fresh server: only the default user and its app, no memories."""
        with self._lock:
            self._users.clear()
            self._apps.clear()
            self._memories.clear()
            self._history.clear()
            self._vectors.clear()
            self._vector_index.clear()
            self.memory_client_available = True
            self._bootstrap()
            self._touch()

    def dump(self) -> dict[str, Any]:
        """Everything, JSON-ready (``--state`` files and ``GET /_admin/state``)."""
        with self._lock:
            return {
                "default_user": self.default_user,
                "memory_client_available": self.memory_client_available,
                "users": [{**asdict(u), "created_at": _dump_dt(u.created_at)} for u in self._users.values()],
                "apps": [
                    {**asdict(a), "created_at": _dump_dt(a.created_at), "updated_at": _dump_dt(a.updated_at)}
                    for a in self._apps.values()
                ],
                "memories": [
                    {
                        **asdict(m),
                        "app_name": self.app_name(m),
                        **{
                            k: _dump_dt(getattr(m, k))
                            for k in ("created_at", "updated_at", "archived_at", "deleted_at")
                        },
                    }
                    for m in self._memories.values()
                ],
                "status_history": copy.deepcopy(self._history),
                "vectors": [
                    {**asdict(p), "created_at": _dump_dt(p.created_at)} for p in self._vectors.values()
                ],
            }

    def load(self, data: dict[str, Any]) -> None:
        """Replace the state with a :meth:`dump` (the default user is re-created if missing).

        Raises:
            KeyError, ValueError, TypeError: ``data`` is not a valid dump.
        """
        with self._lock:
            users = {
                u["user_id"]: OMUser(
                    id=u["id"], user_id=u["user_id"], name=u.get("name"), created_at=parse_iso(u["created_at"])
                )
                for u in data.get("users", [])
            }
            apps = {
                a["id"]: OMApp(
                    id=a["id"],
                    owner_id=a["owner_id"],
                    name=a["name"],
                    created_at=parse_iso(a["created_at"]),
                    updated_at=parse_iso(a["updated_at"]),
                    is_active=bool(a.get("is_active", True)),
                    description=a.get("description"),
                    metadata_=dict(a.get("metadata_") or {}),
                )
                for a in data.get("apps", [])
            }
            memories: dict[str, OMMemory] = {}
            for m in data.get("memories", []):
                if m.get("state", "active") not in STATES:
                    raise ValueError(f"invalid memory state {m.get('state')!r}")
                memories[m["id"]] = OMMemory(
                    id=m["id"],
                    user_id=m["user_id"],
                    app_id=m["app_id"],
                    content=m["content"],
                    metadata_=dict(m.get("metadata_") or {}),
                    created_at=parse_iso(m["created_at"]),
                    updated_at=parse_iso(m["updated_at"]),
                    state=m.get("state", "active"),
                    archived_at=_load_dt(m.get("archived_at")),
                    deleted_at=_load_dt(m.get("deleted_at")),
                    categories=list(m.get("categories") or []),
                )
            if "vectors" in data:
                vectors = {
                    p["id"]: OMVectorPoint(id=p["id"], data=p["data"], user_id=p["user_id"],
                                           created_at=parse_iso(p["created_at"]),
                                           mcp_client=p.get("mcp_client", DEFAULT_APP))
                    for p in data["vectors"]
                }
            else:  # a dump from before the vector store was modelled: points hold the SQL text
                names = {u.id: u.user_id for u in users.values()}
                vectors = {
                    m.id: OMVectorPoint(m.id, m.content, names.get(m.user_id, ""), m.created_at)
                    for m in memories.values()
                    if m.state != "deleted"
                }
            self._users, self._apps, self._memories = users, apps, memories
            self._vectors = vectors
            self._vector_index = Counter((p.user_id, p.data) for p in vectors.values())
            self._history = list(data.get("status_history", []))
            self.memory_client_available = bool(data.get("memory_client_available", True))
            if self.default_user not in self._users:
                self._bootstrap()
            self._touch()
