"""Speak the OpenMemory REST API (``openmemory/api`` FastAPI routers of mem0ai/mem0).

Routes, in the real routers' registration order (which decides matches):

* memories: ``GET /api/v1/memories/``, ``GET …/categories``, ``POST /``,
  ``GET /{id}``, ``DELETE /``, ``POST /actions/archive``, ``POST
  /actions/pause``, ``GET /{id}/access-log``, ``PUT /{id}``, ``POST /filter``,
  ``GET /{id}/related``;
* apps: ``GET /api/v1/apps/``, ``GET|PUT /api/v1/apps/{app_id}``;
* stats: ``GET /api/v1/stats/``.

Framework behaviour is FastAPI's (:mod:`.fastapi_compat`): 422 validation
bodies, 307 trailing-slash redirects, ``{"detail": "Not Found"}``. Route
behaviour copies the real handlers, quirks included: create answers 200 with
``{"error": ...}`` when the memory client is down, ``GET /`` pages before it
drops non-active items, ``POST /filter`` with ``size`` > 100 is a 500, and
lists carry no ``updated_at``. No LLM runs: ``infer`` true stores the text
verbatim too, except that re-adding text the user's vector store already
holds yields ``null`` (the real extractor finds nothing new).

The vector store MCP clients read is modelled too (see :mod:`.openmemory_store`): create
adds a point, ``DELETE`` removes it, ``PUT`` leaves it holding the old text.

Admin extras: ``POST /_admin/memory_client {"available": bool}``,
``POST /_admin/users {"user_id"}``, ``POST /_admin/apps {"name", "user_id"?, "is_active"}``,
``GET /_admin/mcp/memories?user_id=&query=`` (what MCP ``list_memories``, or
``search_memory`` with ``query``, would return).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, TypeAdapter

from memsyncd.daemon.http_server import Request, Response
from memsyncd.emulators.fastapi_compat import json_body, redirect_slashes, validate_model, validate_value
from memsyncd.emulators.faults import FaultInjector
from memsyncd.emulators.openmemory_store import OMMemory, OMUser, OpenMemoryStore
from memsyncd.emulators.service import EmulatorService, Reply, json_object, shared_fault_response

__all__ = ["OpenMemoryEmulator"]

_UUID = TypeAdapter(UUID)
_UUID_LIST = TypeAdapter(list[UUID])
_MEMORY_COLUMNS = (
    "id",
    "user_id",
    "app_id",
    "content",
    "vector",
    "metadata_",
    "state",
    "created_at",
    "updated_at",
    "archived_at",
    "deleted_at",
)


class CreateMemoryRequest(BaseModel):
    user_id: str
    text: str
    metadata: dict[str, Any] = {}
    infer: bool = True
    app: str = "openmemory"


class UpdateMemoryRequest(BaseModel):
    memory_content: str
    user_id: str


class DeleteMemoriesRequest(BaseModel):
    memory_ids: list[UUID]
    user_id: str


class FilterMemoriesRequest(BaseModel):
    user_id: str
    page: int = 1
    size: int = 10
    search_query: str | None = None
    app_ids: list[UUID] | None = None
    category_ids: list[UUID] | None = None
    sort_column: str | None = None
    sort_direction: str | None = None
    from_date: int | None = None
    to_date: int | None = None
    show_archived: bool | None = False


class PauseMemoriesRequest(BaseModel):
    memory_ids: list[UUID] | None = None
    category_ids: list[UUID] | None = None
    app_id: UUID | None = None
    all_for_app: bool = False
    global_pause: bool = False
    state: Literal["active", "paused", "archived", "deleted"] | None = None
    user_id: str


class ListQuery(BaseModel):
    user_id: str
    app_id: UUID | None = None
    from_date: int | None = None
    to_date: int | None = None
    categories: str | None = None
    page: int = Field(1, ge=1)
    size: int = Field(50, ge=1, le=100)
    search_query: str | None = None
    sort_column: str | None = None
    sort_direction: str | None = None


class UserQuery(BaseModel):
    user_id: str


class PageQuery(BaseModel):
    page: int = Field(1, ge=1)
    size: int = Field(50, ge=1, le=100)


class AccessLogQuery(BaseModel):
    page: int = Field(1, ge=1)
    page_size: int = Field(10, ge=1, le=100)


class AppsQuery(BaseModel):
    name: str | None = None
    is_active: bool | None = None
    sort_by: str = "name"
    sort_direction: str = "asc"
    page: int = Field(1, ge=1)
    page_size: int = Field(10, ge=1, le=100)


class AppUpdateQuery(BaseModel):
    is_active: bool


def _detail(message: str, status: int) -> Response:
    return Response.json({"detail": message}, status=status)


def _page(items: list[dict[str, Any]], total: int, page: int, size: int) -> dict[str, Any]:
    """fastapi-pagination's ``Page`` body."""
    return {
        "items": items,
        "total": total,
        "page": page,
        "size": size,
        "pages": math.ceil(total / size) if total else 0,
    }


class OpenMemoryEmulator(EmulatorService):
    """HTTP front of an :class:`OpenMemoryStore`."""

    name = "openmemory"

    def __init__(self, store: OpenMemoryStore | None = None, *, faults: FaultInjector | None = None) -> None:
        super().__init__(faults=faults)
        self.store = store or OpenMemoryStore()
        m = "/api/v1/memories"
        r = self.router
        r.add("GET", f"{m}/", self._list)
        r.add("GET", f"{m}/categories", self._categories)
        r.add("POST", f"{m}/", self._create)
        r.add("GET", f"{m}/{{memory_id}}", self._get)
        r.add("DELETE", f"{m}/", self._delete)
        r.add("POST", f"{m}/actions/archive", self._archive)
        r.add("POST", f"{m}/actions/pause", self._pause)
        r.add("GET", f"{m}/{{memory_id}}/access-log", self._access_log)
        r.add("PUT", f"{m}/{{memory_id}}", self._update)
        r.add("POST", f"{m}/filter", self._filter)
        r.add("GET", f"{m}/{{memory_id}}/related", self._related)
        r.add("GET", "/api/v1/apps/", self._apps)
        r.add("GET", "/api/v1/apps/{app_id}", self._app_details)
        r.add("PUT", "/api/v1/apps/{app_id}", self._app_update)
        r.add("GET", "/api/v1/stats/", self._stats)
        self.admin.add("POST", "/_admin/memory_client", self._admin_memory_client)
        self.admin.add("POST", "/_admin/users", self._admin_users)
        self.admin.add("POST", "/_admin/apps", self._admin_apps)
        self.admin.add("GET", "/_admin/mcp/memories", self._admin_mcp_memories)

    # -- service hooks -------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        return None  # OpenMemory has no authentication

    def not_found(self, request: Request) -> Response:
        return redirect_slashes(request, self.router) or _detail("Not Found", 404)

    def method_not_allowed(self, request: Request, allowed: tuple[str, ...]) -> Response:
        return Response.json({"detail": "Method Not Allowed"}, status=405, headers=[("allow", ", ".join(allowed))])

    def fault_response(self, fault: str, retry_after: int) -> Response:
        shared = shared_fault_response(fault)
        if shared is not None:
            return shared
        if fault == "403":
            return Response.json({"detail": "Forbidden"}, status=403)
        if fault == "404":
            return Response.json({"detail": "Memory not found"}, status=404)
        if fault == "422":
            return Response.json({"detail": [{"type": "missing", "loc": ["body", "user_id"], "msg": "Field required",
                                              "input": None}]}, status=422)
        if fault == "401":
            return Response.json({"detail": "Not authenticated"}, status=401, headers=[("www-authenticate", "Bearer")])
        if fault == "429":
            return Response.json(
                {"detail": "Too Many Requests"}, status=429, headers=[("retry-after", str(retry_after))]
            )
        return Response.text("Internal Server Error", 500)

    def snapshot(self) -> dict[str, Any]:
        return {**self.store.dump(), "faults": self.faults.spec.to_json()}

    def reset_data(self) -> None:
        self.store.reset()

    # -- helpers -------------------------------------------------------------------

    def _user(self, user_id: str) -> OMUser:
        user = self.store.user(user_id)
        if user is None:
            raise Reply(_detail("User not found", 404))
        return user

    def _memory(self, memory_id: UUID) -> OMMemory:
        memory = self.store.find(str(memory_id))
        if memory is None:
            raise Reply(_detail("Memory not found", 404))
        return memory

    def _set_state(self, memory_id: UUID, state: str, changed_by: str) -> None:
        if self.store.set_state(str(memory_id), state, changed_by) is None:
            raise Reply(_detail("Memory not found", 404))

    def _item(self, memory: OMMemory) -> dict[str, Any]:
        """``MemoryResponse``: list item without ``updated_at``."""
        return {
            "id": memory.id,
            "content": memory.content,
            "created_at": memory.epoch(),
            "state": memory.state,
            "app_id": memory.app_id,
            "app_name": self.store.app_name(memory),
            "categories": list(memory.categories),
            "metadata_": dict(memory.metadata_),
        }

    @staticmethod
    def _path_uuid(params: dict[str, str], name: str) -> UUID:
        return validate_value(_UUID, params[name], ("path", name))

    @staticmethod
    def _in_dates(memory: OMMemory, from_date: int | None, to_date: int | None) -> bool:
        ts = memory.created_at.timestamp()
        return (not from_date or ts >= from_date) and (not to_date or ts <= to_date)

    # -- memories ----------------------------------------------------------------------

    async def _list(self, request: Request, params: dict[str, str]) -> Response:
        q = validate_model(ListQuery, request.query, "query")
        user = self._user(q.user_id)
        needle = (q.search_query or "").lower()
        rows = [
            m
            for m in self.store.user_memories(user)
            if m.state not in ("deleted", "archived")
            and (not needle or needle in m.content.lower())
            and (q.app_id is None or m.app_id == str(q.app_id))
            and self._in_dates(m, q.from_date, q.to_date)
        ]
        if q.categories:
            wanted = {c.strip() for c in q.categories.split(",")}
            rows = [m for m in rows if wanted.intersection(m.categories)]
        if q.sort_column in _MEMORY_COLUMNS:
            column = q.sort_column
            rows.sort(key=lambda m: _sort_key(getattr(m, column)), reverse=q.sort_direction == "desc")
        window = rows[(q.page - 1) * q.size : q.page * q.size]
        app = self.store.app(str(q.app_id)) if q.app_id else None
        visible = [
            m for m in window if m.state == "active" and (q.app_id is None or (app is not None and app.is_active))
        ]
        return Response.json(_page([self._item(m) for m in visible], len(rows), q.page, q.size))

    async def _categories(self, request: Request, params: dict[str, str]) -> Response:
        q = validate_model(UserQuery, request.query, "query")
        user = self._user(q.user_id)
        names = sorted(
            {c for m in self.store.user_memories(user) if m.state not in ("deleted", "archived") for c in m.categories}
        )
        return Response.json({"categories": [{"name": n} for n in names], "total": len(names)})

    async def _create(self, request: Request, params: dict[str, str]) -> Response:
        body = validate_model(CreateMemoryRequest, json_body(request), "body")
        user = self._user(body.user_id)
        app = self.store.app_for(user, body.app)
        if not app.is_active:
            return _detail(f"App {body.app} is currently paused on OpenMemory. Cannot create new memories.", 403)
        if not self.store.memory_client_available:
            return Response.json({"error": "Memory client is not available"})
        text = body.text.strip()
        # the extractor compares with the vector store (a PUT edit is not there), not with SQL
        duplicate = body.infer and self.store.has_vector_text(user.user_id, text)
        if not text or duplicate:
            return Response.json(None)
        return Response.json(self.store.create(user, app, text, body.metadata).row())

    async def _get(self, request: Request, params: dict[str, str]) -> Response:
        memory = self._memory(self._path_uuid(params, "memory_id"))
        item = self._item(memory)
        item["text"] = item.pop("content")
        return Response.json(
            {k: item[k] for k in ("id", "text", "created_at", "state", "app_id", "app_name", "categories", "metadata_")}
        )

    async def _delete(self, request: Request, params: dict[str, str]) -> Response:
        body = validate_model(DeleteMemoriesRequest, json_body(request), "body")
        user = self._user(body.user_id)
        if not self.store.memory_client_available:
            return _detail("Memory client is not available", 503)
        for memory_id in body.memory_ids:
            self.store.delete_vector(str(memory_id))  # memory_client.delete(): the vector point goes first
            self._set_state(memory_id, "deleted", user.id)
        return Response.json({"message": f"Successfully deleted {len(body.memory_ids)} memories"})

    async def _archive(self, request: Request, params: dict[str, str]) -> Response:
        user_id = validate_value(_UUID, request.query.get("user_id"), ("query", "user_id"))
        memory_ids = validate_value(_UUID_LIST, json_body(request), ("body",))
        for memory_id in memory_ids:
            self._set_state(memory_id, "archived", str(user_id))
        return Response.json({"message": f"Successfully archived {len(memory_ids)} memories"})

    async def _pause(self, request: Request, params: dict[str, str]) -> Response:
        body = validate_model(PauseMemoriesRequest, json_body(request), "body")
        state = body.state or "paused"
        user = self._user(body.user_id)
        open_states = ("deleted", "archived")

        def apply(memories: Iterable[OMMemory]) -> None:
            for memory in list(memories):
                self._set_state(UUID(memory.id), state, user.id)

        if body.global_pause:
            everyone = [m for u in self.store.users() for m in self.store.user_memories(u)]
            apply(m for m in everyone if m.state not in open_states)
            return Response.json({"message": "Successfully paused all memories"})
        if body.app_id:
            apply(
                m for m in self.store.user_memories(user) if m.app_id == str(body.app_id) and m.state not in open_states
            )
            return Response.json({"message": f"Successfully paused all memories for app {body.app_id}"})
        if body.all_for_app and body.memory_ids:
            wanted = {str(i) for i in body.memory_ids}
            apply(m for m in self.store.user_memories(user) if m.id in wanted and m.state != "deleted")
            return Response.json({"message": "Successfully paused all memories"})
        if body.memory_ids:
            for memory_id in body.memory_ids:
                self._set_state(memory_id, state, user.id)
            return Response.json({"message": f"Successfully paused {len(body.memory_ids)} memories"})
        if body.category_ids:
            return Response.json({"message": f"Successfully paused memories in {len(body.category_ids)} categories"})
        return _detail("Invalid pause request parameters", 400)

    async def _access_log(self, request: Request, params: dict[str, str]) -> Response:
        self._path_uuid(params, "memory_id")
        q = validate_model(AccessLogQuery, request.query, "query")
        return Response.json({"total": 0, "page": q.page, "page_size": q.page_size, "logs": []})

    async def _update(self, request: Request, params: dict[str, str]) -> Response:
        memory_id = self._path_uuid(params, "memory_id")
        body = validate_model(UpdateMemoryRequest, json_body(request), "body")
        self._user(body.user_id)
        self._memory(memory_id)
        return Response.json(self.store.update_content(str(memory_id), body.memory_content))

    async def _filter(self, request: Request, params: dict[str, str]) -> Response:
        body = validate_model(FilterMemoriesRequest, json_body(request), "body")
        user = self._user(body.user_id)
        hidden = ("deleted",) if body.show_archived else ("deleted", "archived")
        needle = (body.search_query or "").lower()
        app_ids = {str(a) for a in body.app_ids} if body.app_ids else None
        key: Callable[[OMMemory], Any]
        if body.sort_column and body.sort_direction:
            direction = body.sort_direction.lower()
            if direction not in ("asc", "desc"):
                return _detail("Invalid sort direction", 400)
            sort_keys: dict[str, Callable[[OMMemory], Any]] = {
                "memory": lambda m: m.content,
                "app_name": lambda m: self.store.app_name(m) or "",
                "created_at": lambda m: m.created_at,
            }
            if body.sort_column not in sort_keys:
                return _detail("Invalid sort column", 400)
            key, reverse = sort_keys[body.sort_column], direction == "desc"
        else:
            key, reverse = (lambda m: m.created_at), True

        def matching() -> list[OMMemory]:
            if body.category_ids:
                return []  # categories are ids of rows the (absent) LLM categorizer would create
            rows = [
                m
                for m in self.store.user_memories(user)
                if m.state not in hidden
                and (not needle or needle in m.content.lower())
                and (app_ids is None or m.app_id in app_ids)
                and self._in_dates(m, body.from_date, body.to_date)
            ]
            rows.sort(key=key, reverse=reverse)
            return rows

        # the pages of one listing share the filtered, sorted rows while the store is unchanged
        question = ("filter", user.id, hidden, needle, frozenset(app_ids) if app_ids is not None else None,
                    body.from_date, body.to_date, bool(body.category_ids), body.sort_column if body.sort_direction
                    else None, (body.sort_direction or "").lower() if body.sort_column else None)
        rows = self.store.memo(question, matching)
        if body.page < 1 or not 1 <= body.size <= 100:
            # the real handler builds Params(page, size) itself; pydantic rejects it → unhandled → 500
            return Response.text("Internal Server Error", 500)
        window = rows[(body.page - 1) * body.size : body.page * body.size]
        # uvicorn dates every reply (its clock: what an incremental scan's window is measured against)
        return Response.json(_page([self._item(m) for m in window], len(rows), body.page, body.size),
                             headers=[("date", email.utils.formatdate(usegmt=True))])

    async def _related(self, request: Request, params: dict[str, str]) -> Response:
        memory_id = self._path_uuid(params, "memory_id")
        q = validate_model(UserQuery, request.query, "query")
        page = validate_model(PageQuery, {k: v for k, v in request.query.items() if k in ("page", "size")}, "query")
        self._user(q.user_id)
        self._memory(memory_id)
        return Response.json(_page([], 0, page.page, page.size))  # no categories → no related memories

    # -- apps and stats ----------------------------------------------------------------

    async def _apps(self, request: Request, params: dict[str, str]) -> Response:
        q = validate_model(AppsQuery, request.query, "query")
        apps = [
            a
            for a in self.store.apps()
            if (not q.name or q.name.lower() in a.name.lower()) and (q.is_active is None or a.is_active == q.is_active)
        ]
        counts = {a.id: self.store.memory_count(a.id) for a in apps}
        key: Callable[[Any], Any] = (lambda a: counts[a.id]) if q.sort_by == "memories" else (lambda a: a.name)
        if q.sort_by == "memories_accessed":
            key = lambda a: 0  # noqa: E731 - no access log is kept
        apps.sort(key=key, reverse=q.sort_direction == "desc")
        window = apps[(q.page - 1) * q.page_size : q.page * q.page_size]
        return Response.json(
            {
                "total": len(apps),
                "page": q.page,
                "page_size": q.page_size,
                "apps": [
                    {
                        "id": a.id,
                        "name": a.name,
                        "is_active": a.is_active,
                        "total_memories_created": counts[a.id],
                        "total_memories_accessed": 0,
                    }
                    for a in window
                ],
            }
        )

    async def _app_details(self, request: Request, params: dict[str, str]) -> Response:
        app = self.store.app(str(self._path_uuid(params, "app_id")))
        if app is None:
            return _detail("App not found", 404)
        return Response.json(
            {
                "is_active": app.is_active,
                "total_memories_created": self.store.memory_count(app.id),
                "total_memories_accessed": 0,
                "first_accessed": None,
                "last_accessed": None,
            }
        )

    async def _app_update(self, request: Request, params: dict[str, str]) -> Response:
        app_id = self._path_uuid(params, "app_id")
        q = validate_model(AppUpdateQuery, request.query, "query")
        if not self.store.set_app_active(str(app_id), q.is_active):
            return _detail("App not found", 404)
        return Response.json({"status": "success", "message": "Updated app details successfully"})

    async def _stats(self, request: Request, params: dict[str, str]) -> Response:
        q = validate_model(UserQuery, request.query, "query")
        user = self._user(q.user_id)
        apps = self.store.apps(user)
        total = sum(1 for m in self.store.user_memories(user) if m.state != "deleted")
        return Response.json({"total_memories": total, "total_apps": len(apps), "apps": [a.row() for a in apps]})

    # -- admin -------------------------------------------------------------------------

    async def _admin_memory_client(self, request: Request, params: dict[str, str]) -> Response:
        available = json_object(request).get("available")
        if not isinstance(available, bool):
            raise ValueError("available must be true or false")
        self.store.memory_client_available = available
        return Response.json({"available": available})

    async def _admin_users(self, request: Request, params: dict[str, str]) -> Response:
        user_id = json_object(request).get("user_id")
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        return Response.json(self.store.create_user(user_id))

    async def _admin_mcp_memories(self, request: Request, params: dict[str, str]) -> Response:
        user_id = request.query.get("user_id") or None
        return Response.json({"results": self.store.agent_memories(user_id, request.query.get("query"))})

    async def _admin_apps(self, request: Request, params: dict[str, str]) -> Response:
        body = json_object(request)
        name, is_active = body.get("name"), body.get("is_active")
        if not isinstance(name, str) or not name or not isinstance(is_active, bool):
            raise ValueError("expected {'name': str, 'is_active': bool, 'user_id'?: str}")
        try:
            self.store.pause_app(name, not is_active, user_id=body.get("user_id"))
        except KeyError as exc:
            raise ValueError(str(exc)) from exc
        return Response.json({"name": name, "is_active": is_active})


def _sort_key(value: Any) -> Any:
    """Order values of one column the way SQL would, ``NULL`` first."""
    if value is None:
        return (0, "")
    if isinstance(value, dict):
        return (1, str(sorted(value.items())))
    return (1, value)
