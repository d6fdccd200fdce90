"""Speak the mem0 platform's HTTP API (the routes ``mem0ai``'s ``MemoryClient`` uses).

Routes (all need ``Authorization: Token <key>``):

========  =====================================  ==========================================
GET       ``/v1/ping/``                          key check, org/project
POST      ``/v3/memories/add/``                  add (immediate or queued, see AddMode)
POST      ``/v3/memories/?page=&page_size=``     list with filters (paginated)
POST      ``/v3/memories/search/``               substring/token search with filters
GET|PUT|DELETE ``/v1/memories/{id}/``            one memory
GET       ``/v1/memories/{id}/history/``         its history
DELETE    ``/v1/memories/?user_id=…``            delete all of an entity
PUT|DELETE ``/v1/batch/``                        batch update / delete (≤ 1000)
GET       ``/v1/entities/``                      users/agents/apps/runs
DELETE    ``/v2/entities/{type}/{name}/``        delete an entity's memories
GET       ``/v1/event/{id}/``, ``/v1/events/``   add events
========  =====================================  ==========================================

Error bodies follow the platform (a Django REST framework service):
``{"detail": ...}`` for authentication, throttling, parse errors and bad
pages; ``{"error": ...}`` for validation and missing memories; an HTML page
for unknown URLs and server errors. Admin: ``POST /_admin/add_mode``
``{"mode": "immediate"|"queued", "delay_ms"?, "shape"?, "fail_match"?, "dedup"?}``
(``dedup``: ``"empty"`` (default) | ``"existing"`` | ``"off"``, how an ``infer: false``
repeat of text already stored in the same scope is answered; see ``AddMode``); ``POST /_admin/limits``
``{"max_text_chars": N}`` (a longer memory text is refused with 400, default 100,000).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import math
import re
import uuid
from typing import Any
from urllib.parse import urlencode

from memsyncd.daemon.http_server import Request, Response
from memsyncd.emulators.faults import FaultInjector
from memsyncd.emulators.mem0_filters import ENTITY_FIELDS, FilterError, compile_filters, has_entity_scope
from memsyncd.emulators.mem0_store import QUEUED_MESSAGE, Mem0Store, MemoryRecord
from memsyncd.emulators.service import EmulatorService, Reply, json_object, shared_fault_response

__all__ = ["Mem0Emulator"]

INVALID_KEY = "Invalid API key. You can find your API key on https://app.mem0.ai/dashboard/api-keys."
NO_CREDENTIALS = "Authentication credentials were not provided."
ENTITY_REQUIRED = "At least one of the filters: agent_id, user_id, app_id, run_id is required!"
FILTERS_REQUIRED = (
    "Filters are required and cannot be empty. Please refer to https://docs.mem0.ai/api-reference/memory/{page}"
)
INVALID_ADD = (
    "Invalid input data. Please refer to the memory creation documentation at "
    "https://docs.mem0.ai/platform/quickstart#4-1-create-memories for correct formatting and required fields."
)
MEMORY_NOT_FOUND = "Memory not found!"
BAD_MEMORY_ID = "memory_id should be a valid UUID"
EVENT_NOT_FOUND = "Event not found or you don't have permission to access it."
BATCH_LIMIT = 1000
# The platform documents no size limit for a memory's text; the emulator assumes one (100,000
# characters by default, switchable with POST /_admin/limits) and refuses longer texts with a 400
# validation error, as the platform's serializers do for an over-long field.
DEFAULT_MAX_TEXT_CHARS = 100_000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 200
_HTML_404 = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n'
    "  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n"
)
_HTML_500 = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Server Error (500)</title>\n</head>\n<body>\n'
    "  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n"
)
_WORD = re.compile(r"\w+", re.UNICODE)


def _error(message: str, status: int = 400) -> Response:
    return Response.json({"error": message}, status=status)


def _detail(message: str, status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response.json({"detail": message}, status=status, headers=headers or [])


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _score(query: str, text: str) -> float:
    """Relevance in [0, 1]: 1 for a substring hit, else the share of query words found."""
    q, t = query.lower().strip(), text.lower()
    if q and q in t:
        return 1.0
    words = _WORD.findall(q)
    if not words:
        return 0.0
    have = set(_WORD.findall(t))
    return round(0.9 * sum(w in have for w in words) / len(words), 4)


class Mem0Emulator(EmulatorService):
    """HTTP front of a :class:`Mem0Store`."""

    name = "mem0"

    def __init__(self, store: Mem0Store | None = None, *, faults: FaultInjector | None = None) -> None:
        super().__init__(faults=faults)
        self.store = store or Mem0Store()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        r = self.router
        r.add("GET", "/v1/ping/", self._ping)
        r.add("POST", "/v3/memories/add/", self._add)
        r.add("POST", "/v3/memories/search/", self._search)
        r.add("POST", "/v3/memories/", self._list)
        r.add("DELETE", "/v1/memories/", self._delete_all)
        r.add("GET", "/v1/memories/{memory_id}/history/", self._history)
        r.add("GET", "/v1/memories/{memory_id}/", self._get)
        r.add("PUT", "/v1/memories/{memory_id}/", self._update)
        r.add("DELETE", "/v1/memories/{memory_id}/", self._delete)
        r.add("PUT", "/v1/batch/", self._batch_update)
        r.add("DELETE", "/v1/batch/", self._batch_delete)
        r.add("GET", "/v1/entities/", self._entities)
        r.add("DELETE", "/v2/entities/{entity_type}/{entity_id}/", self._delete_entity)
        r.add("GET", "/v1/event/{event_id}/", self._event)
        r.add("GET", "/v1/events/", self._events)
        self.max_text_chars = DEFAULT_MAX_TEXT_CHARS
        self.admin.add("POST", "/_admin/limits", self._admin_limits)
        self.admin.add("GET", "/_admin/add_mode", self._admin_get_add_mode)
        self.admin.add("POST", "/_admin/add_mode", self._admin_add_mode)

    # -- service hooks ---------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization")
        if not header:
            return _detail(NO_CREDENTIALS, 401, [("www-authenticate", "Token")])
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "token" or key.strip() != self.store.api_key:
            return _detail(INVALID_KEY, 401, [("www-authenticate", "Token")])
        return None

    def not_found(self, request: Request) -> Response:
        return Response.text(_HTML_404, 404, content_type="text/html; charset=utf-8")

    def method_not_allowed(self, request: Request, allowed: tuple[str, ...]) -> Response:
        return _detail(f'Method "{request.method}" not allowed.', 405, [("allow", ", ".join(allowed))])

    def fault_response(self, fault: str, retry_after: int) -> Response:
        shared = shared_fault_response(fault)
        if shared is not None:
            return shared
        if fault == "401":
            return _detail(INVALID_KEY, 401, [("www-authenticate", "Token")])
        if fault == "403":
            return _detail("You do not have permission to perform this action.", 403)
        if fault == "404":
            return _error(MEMORY_NOT_FOUND, 404)
        if fault == "422":
            return _error("Unprocessable request: the memory could not be processed.", 422)
        if fault == "429":
            unit = "second" if retry_after == 1 else "seconds"
            return _detail(
                f"Request was throttled. Expected available in {retry_after} {unit}.",
                429,
                [
                    ("retry-after", str(retry_after)),
                    ("x-ratelimit-limit", "60"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", str(retry_after)),
                ],
            )
        return Response.text(_HTML_500, 500, content_type="text/html; charset=utf-8")

    def snapshot(self) -> dict[str, Any]:
        return {**self.store.dump(), "faults": self.faults.spec.to_json()}

    def reset_data(self) -> None:
        self.store.reset()

    def is_listing(self, request: Request) -> bool:
        return request.method == "POST" and request.path == "/v3/memories/"

    async def misbehaving_listing(self, request: Request, fault: str) -> Response:
        """``repeat-page``: every page is page 1; ``endless-next``: pages cycle. ``next`` is always set."""
        asked = int(request.query["page"]) if request.query.get("page", "").isdigit() else 1
        first = await self.route(dataclasses.replace(request, query={**request.query, "page": "1"}))
        if first.status != 200:
            return first
        body = json.loads(first.body)
        if fault == "endless-next" and asked > 1:
            size = max(len(body.get("results") or []), 1)
            pages = max(1, math.ceil(int(body.get("count") or 0) / size))
            again = await self.route(dataclasses.replace(
                request, query={**request.query, "page": str((asked - 1) % pages + 1)}))
            if again.status != 200:
                return again
            body = json.loads(again.body)
        host = request.headers.get("host", "127.0.0.1")
        query = urlencode({**request.query, "page": str(asked + 1)})
        body["next"] = f"http://{host}{request.path}?{query}"
        return Response.json(body)

    def shutdown(self) -> None:
        """Cancel queued-add timers (the loop is going away)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        """DRF-style body: empty → {}, bad JSON → 400 detail, non-object → 400 error."""
        if not request.body.strip():
            return {}
        try:
            body = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Reply(_detail(f"JSON parse error - {exc}", 400)) from exc
        if not isinstance(body, dict):
            raise Reply(_error("Invalid request body: expected a JSON object."))
        return body

    @staticmethod
    def _reject_top_level_entities(body: dict[str, Any]) -> None:
        present = [k for k in ENTITY_FIELDS if k in body]
        if present:
            raise Reply(
                _error(
                    f"Top-level entity parameters {present} are not supported. "
                    "Pass them inside 'filters' instead, e.g. {'filters': {'user_id': '...'}}."
                )
            )

    @staticmethod
    def _filters(body: dict[str, Any], doc_page: str) -> Any:
        filters = body.get("filters")
        if not filters:
            raise Reply(_error(FILTERS_REQUIRED.format(page=doc_page)))
        try:
            predicate = compile_filters(filters)
        except FilterError as exc:
            raise Reply(_error(str(exc))) from exc
        if not has_entity_scope(filters):
            raise Reply(_error(ENTITY_REQUIRED))
        return predicate

    def _page(self, request: Request, body: dict[str, Any], items: list[Any], default_size: int) -> dict[str, Any]:
        """DRF PageNumberPagination: ``{"count", "next", "previous", "results"}``."""
        raw_page = request.query.get("page", body.get("page", 1))
        raw_size = request.query.get("page_size", body.get("page_size", default_size))
        try:
            size = min(max(int(raw_size), 1), MAX_PAGE_SIZE)
        except (TypeError, ValueError):
            size = default_size
        try:
            page = int(raw_page)
        except (TypeError, ValueError):
            page = 0
        pages = max(1, math.ceil(len(items) / size))
        if not 1 <= page <= pages:
            raise Reply(_detail("Invalid page.", 404))
        host = request.headers.get("host", "127.0.0.1")
        base = f"http://{host}{request.path}"

        def link(number: int) -> str:
            query = {k: v for k, v in request.query.items() if k != "page"}
            if number > 1:
                query["page"] = str(number)
            return f"{base}?{urlencode(query)}" if query else base

        return {
            "count": len(items),
            "next": link(page + 1) if page < pages else None,
            "previous": link(page - 1) if page > 1 else None,
            "results": items[(page - 1) * size : page * size],
        }

    def _memory_id(self, params: dict[str, str]) -> str:
        memory_id = params["memory_id"]
        if not _is_uuid(memory_id):
            raise Reply(_error(BAD_MEMORY_ID))
        return memory_id

    # -- routes ------------------------------------------------------------------------

    async def _ping(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(
            {
                "status": "ok",
                "org_id": self.store.org_id,
                "project_id": self.store.project_id,
                "user_email": self.store.user_email,
            },
            headers=[("date", email.utils.formatdate(usegmt=True))],  # the platform's clock, as every real reply
        )

    @staticmethod
    def _validate_add(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
        messages = body.get("messages")
        invalid = Reply(Response.json({"error": "400 Bad Request", "details": {"message": INVALID_ADD}}, status=400))
        if not isinstance(messages, list) or not messages:
            raise invalid
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
                raise invalid
            if not isinstance(message.get("content"), str):
                raise invalid
        if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
            raise invalid
        if "infer" in body and not isinstance(body["infer"], bool):
            raise invalid
        entities = {k: body.get(k) for k in ENTITY_FIELDS}
        if any(v is not None and not isinstance(v, str) for v in entities.values()):
            raise invalid
        if not any(entities.values()):
            raise Reply(_error(ENTITY_REQUIRED))
        return messages, entities

    def _check_text_size(self, text: str) -> None:
        if len(text) > self.max_text_chars:
            raise Reply(_error(f"Memory text is too long: {len(text)} characters; the limit is "
                               f"{self.max_text_chars} characters."))

    async def _add(self, request: Request, params: dict[str, str]) -> Response:
        body = self._body(request)
        messages, entities = self._validate_add(body)
        for message in messages:
            self._check_text_size(message["content"])
        mode = self.store.add_mode
        if mode.mode == "queued":
            event = self.store.new_event(body)
            loop = asyncio.get_running_loop()
            self._timers[event["id"]] = loop.call_later(mode.delay_ms / 1000.0, self._run_event, event["id"])
            if mode.shape == "v3":
                return Response.json({"event_id": event["id"], "status": "PENDING"})
            return Response.json(
                {"results": [{"message": QUEUED_MESSAGE, "status": "PENDING", "event_id": event["id"]}]}
            )
        event = self.store.new_event(body, status="RUNNING")
        records = self.store.add_messages(messages, entities, body.get("metadata"), body.get("infer", True))
        self.store.finish_event(event["id"], records)
        if not records:  # e.g. an infer=false repeat the platform deduplicated: the reported answer
            return Response.json({"message": "Memories stored successfully", "status": "SUCCEEDED",
                                  "event_id": event["id"], "results": []})
        return Response.json(
            {
                "results": [
                    {"id": r.id, "memory": r.memory, "data": {"memory": r.memory}, "event": "ADD"} for r in records
                ]
            }
        )

    def _run_event(self, event_id: str) -> None:
        self._timers.pop(event_id, None)
        self.store.process_event(event_id)

    async def _list(self, request: Request, params: dict[str, str]) -> Response:
        body = self._body(request)
        self._reject_top_level_entities(body)
        predicate = self._filters(body, "get-memories")
        # keyed by the filters, so the pages of one listing filter the store once (not once per page)
        hits = self.store.query(predicate, key=json.dumps(body["filters"], sort_keys=True))
        page = self._page(request, body, hits, DEFAULT_PAGE_SIZE)
        page["results"] = [r.public(session_alias=True) for r in page["results"]]  # only the page's rows
        return Response.json(page)

    async def _search(self, request: Request, params: dict[str, str]) -> Response:
        body = self._body(request)
        self._reject_top_level_entities(body)
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise Reply(_error("query is required and must be a non-empty string."))
        predicate = self._filters(body, "search-memories")
        top_k = body.get("top_k", 10)
        threshold = body.get("threshold", 0.1)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
            raise Reply(_error("top_k must be an integer between 1 and 1000."))
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise Reply(_error("threshold must be a number between 0 and 1."))
        scored: list[tuple[float, MemoryRecord]] = [(_score(query, r.memory), r) for r in self.store.query(predicate)]
        hits = [(s, r) for s, r in scored if s >= threshold]
        hits.sort(key=lambda sr: (-sr[0], sr[1].created_at, sr[1].id))
        return Response.json({"results": [{**r.public(), "score": s} for s, r in hits[:top_k]]})

    async def _get(self, request: Request, params: dict[str, str]) -> Response:
        memory = self.store.get(self._memory_id(params), session_alias=True)
        return Response.json(memory) if memory else _error(MEMORY_NOT_FOUND, 404)

    async def _update(self, request: Request, params: dict[str, str]) -> Response:
        memory_id = self._memory_id(params)
        body = self._body(request)
        text, metadata = body.get("text"), body.get("metadata")
        if text is None and metadata is None and "expiration_date" not in body and "timestamp" not in body:
            return _error("At least one of text, metadata, timestamp, or expiration_date must be provided.")
        if text is not None and not isinstance(text, str):
            return _error("text must be a string.")
        if text is not None:
            self._check_text_size(text)
        if metadata is not None and not isinstance(metadata, dict):
            return _error("metadata must be an object.")
        memory = self.store.update(memory_id, text=text, metadata=metadata)
        return Response.json(memory) if memory else _error(MEMORY_NOT_FOUND, 404)

    async def _delete(self, request: Request, params: dict[str, str]) -> Response:
        if self.store.delete(self._memory_id(params)):
            return Response.json({"message": "Memory deleted successfully!"})
        return _error(MEMORY_NOT_FOUND, 404)

    async def _history(self, request: Request, params: dict[str, str]) -> Response:
        entries = self.store.history(self._memory_id(params))
        return Response.json(entries) if entries is not None else _error(MEMORY_NOT_FOUND, 404)

    async def _delete_all(self, request: Request, params: dict[str, str]) -> Response:
        wanted = {k: request.query[k] for k in ENTITY_FIELDS if request.query.get(k)}
        if not wanted:
            return _error(ENTITY_REQUIRED)
        self.store.delete_where(lambda r: all(getattr(r, k) == v for k, v in wanted.items()))
        return Response.json({"message": "Memories deleted successfully!"})

    def _batch_items(self, request: Request, verb: str) -> list[dict[str, Any]]:
        items = self._body(request).get("memories")
        if not isinstance(items, list) or not items:
            raise Reply(_error("memories must be a non-empty list."))
        if len(items) > BATCH_LIMIT:
            raise Reply(_error(f"Maximum of {BATCH_LIMIT} memories can be {verb} in a single request"))
        for item in items:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("memory_id"), str)
                or not _is_uuid(item["memory_id"])
            ):
                raise Reply(_error(BAD_MEMORY_ID))
            if self.store.get(item["memory_id"]) is None:
                raise Reply(_error(MEMORY_NOT_FOUND, 404))
        return items

    async def _batch_update(self, request: Request, params: dict[str, str]) -> Response:
        items = self._batch_items(request, "updated")
        for item in items:
            text, metadata = item.get("text"), item.get("metadata")
            if (text is not None and not isinstance(text, str)) or (
                metadata is not None and not isinstance(metadata, dict)
            ):
                return _error("text must be a string and metadata an object.")
        for item in items:
            self.store.update(item["memory_id"], text=item.get("text"), metadata=item.get("metadata"))
        return Response.json({"message": f"Successfully updated {len(items)} memories"})

    async def _batch_delete(self, request: Request, params: dict[str, str]) -> Response:
        items = self._batch_items(request, "deleted")
        for item in items:
            self.store.delete(item["memory_id"])
        return Response.json({"message": f"Successfully deleted {len(items)} memories"})

    async def _entities(self, request: Request, params: dict[str, str]) -> Response:
        entities = self.store.entities()
        totals = {
            f"total_{kind}s": sum(e["type"] == kind for e in entities) for kind in ("user", "agent", "app", "run")
        }
        return Response.json({"count": len(entities), "next": None, "previous": None, "results": entities, **totals})

    async def _delete_entity(self, request: Request, params: dict[str, str]) -> Response:
        attr = {"user": "user_id", "agent": "agent_id", "app": "app_id", "run": "run_id"}.get(params["entity_type"])
        if attr is None:
            return _error("Invalid entity type. Must be one of: user, agent, app, run.")
        name = params["entity_id"]
        if not self.store.delete_where(lambda r: getattr(r, attr) == name):
            return _error("Entity not found.", 404)
        return Response.json({"message": "Entity deleted successfully!"})

    async def _event(self, request: Request, params: dict[str, str]) -> Response:
        event = self.store.event(params["event_id"])
        return Response.json(event) if event else _error(EVENT_NOT_FOUND, 404)

    async def _events(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self._page(request, {}, self.store.events(), 50))

    # -- admin -----------------------------------------------------------------------------

    async def _admin_limits(self, request: Request, params: dict[str, str]) -> Response:
        body = json_object(request)
        unknown = set(body) - {"max_text_chars"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        limit = body.get("max_text_chars", DEFAULT_MAX_TEXT_CHARS)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("max_text_chars must be an integer >= 1")
        self.max_text_chars = limit
        return Response.json({"max_text_chars": limit})

    async def _admin_get_add_mode(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.store.add_mode.to_json())

    async def _admin_add_mode(self, request: Request, params: dict[str, str]) -> Response:
        body = json_object(request)
        unknown = set(body) - {"mode", "delay_ms", "shape", "fail_match", "dedup"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        mode = self.store.set_add_mode(
            body.get("mode", "immediate"),
            delay_ms=body.get("delay_ms"),
            shape=body.get("shape"),
            fail_match=body.get("fail_match"),
            dedup=body.get("dedup"),
        )
        return Response.json(mode.to_json())
