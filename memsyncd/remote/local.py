"""The only code that talks to the local OpenMemory REST API: a thin httpx adapter returning models.

OpenMemory quirks handled here (API-NOTES): collection routes end in ``/``; a failed
create is still HTTP 200 with ``{"error": ...}`` or ``null``; lists carry
``content`` while a single get carries ``text``; deletes are soft (state ``deleted``).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from memsyncd.errors import ConfigError, LocalUnreachableError, NotFoundError, RemoteRejectedError
from memsyncd.ids import id_problem, path_segment
from memsyncd.logs import redact_text
from memsyncd.models import LocalMemory
from memsyncd.remote.http_edge import DEFAULT_MAX_BODY, RetryPolicy, json_body, new_client, request
from memsyncd.remote.lean_http import local_transport
from memsyncd.remote.paging import PageGuard

SERVICE = "OpenMemory"
PAGE_SIZE = 100
PROBE_FRESH_SECONDS = 5.0  # a probe is skipped when a request succeeded this recently


def _memory(raw: Any, text_key: str) -> LocalMemory:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise RemoteRejectedError("OpenMemory sent a memory without an id", service=SERVICE)
    problem = id_problem(raw["id"])
    if problem is not None:
        raise RemoteRejectedError(f"OpenMemory sent a memory with an unusable id: {problem}", service=SERVICE)
    text = raw.get(text_key)
    if not isinstance(text, str):
        text = raw.get("content") if isinstance(raw.get("content"), str) else raw.get("text")
    if not isinstance(text, str):
        raise RemoteRejectedError(f"OpenMemory memory {raw['id']} has no text", service=SERVICE)
    metadata: dict[str, Any] = raw["metadata_"] if isinstance(raw.get("metadata_"), dict) else {}
    created = raw.get("created_at")
    app = raw.get("app_name")
    categories = raw.get("categories")
    return LocalMemory(
        id=raw["id"], text=text, state=str(raw.get("state") or "active"), metadata=metadata,
        created_at=created if isinstance(created, int) and not isinstance(created, bool) else None,
        app=app if isinstance(app, str) else None,
        categories=tuple(c for c in categories if isinstance(c, str)) if isinstance(categories, list) else (),
    )


def _server_time(value: str | None) -> float | None:
    """An HTTP ``Date`` header as epoch seconds (None when absent or unreadable)."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class LocalClient:
    """OpenMemory client (async). ``transport`` lets tests inject ``httpx.MockTransport``.

    By default a plain-HTTP server is spoken to through :class:`~memsyncd.remote.lean_http.LeanTransport`
    (every pulled memory is one create: the per-request cost of httpx's pool was the pull's cost).
    """

    def __init__(
        self,
        base_url: str,
        user_id: str,
        app: str = "memsyncd",
        *,
        policy: RetryPolicy | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.user_id = user_id
        self._timeout = timeout
        self._max_body = max_body
        self.app = app
        self.policy = policy or RetryPolicy()
        self._http = new_client(base_url, timeout=timeout, headers={"User-Agent": "memsyncd"},
                                transport=transport if transport is not None else local_transport(base_url))
        self._user_checked = False  # a probe found our user once
        self._last_ok: float | None = None  # time.monotonic() of the last successful answer
        self._last_stats: dict[str, Any] = {}
        self.server_time: float | None = None  # the server's clock (epoch s) by the last answer's Date header

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await request(self._http, method, url, service=SERVICE, unreachable=LocalUnreachableError,
                                     policy=self.policy, auth_statuses=(), deadline=self._timeout,
                                     max_body=self._max_body, **kwargs)
        except LocalUnreachableError as exc:  # name the server and the setting that points at it
            where = str(self._http.base_url).rstrip("/")
            error = LocalUnreachableError(
                f"{exc.message}. Start OpenMemory, or fix local.url in .claude/memory/config.json "
                "(or MEMSYNC_LOCAL__URL) if it listens elsewhere.", status=exc.status, service=exc.service)
            error.title = f"OpenMemory at {where} is not reachable"
            raise error from exc
        body = json_body(response, SERVICE)
        self._last_ok = time.monotonic()
        self.server_time = _server_time(response.headers.get("date"))
        return body

    async def probe(self, *, fresh: bool = False) -> dict[str, Any]:
        """Check that the server answers and knows our user; returns its stats (``total_memories``, ...).

        Skipped (returning the last stats) right after a successful request, unless ``fresh``.
        """
        if not fresh and self._user_checked and self._last_ok is not None \
                and time.monotonic() - self._last_ok < PROBE_FRESH_SECONDS:
            return dict(self._last_stats)
        try:
            body = await self._call("GET", "/api/v1/stats/", params={"user_id": self.user_id})
            self._user_checked = True
        except NotFoundError:
            raise ConfigError(
                f"OpenMemory at {self._http.base_url} has no user '{self.user_id}'. Set local.user_id in "
                "config.json (or MEMSYNC_LOCAL__USER_ID) to the user the server was started for (its $USER)."
            ) from None
        self._last_stats = body if isinstance(body, dict) else {}
        return dict(self._last_stats)

    async def get(self, memory_id: str) -> LocalMemory | None:
        """One memory, or None when OpenMemory does not know it (soft-deleted ones come back with state)."""
        try:
            body = await self._call("GET", f"/api/v1/memories/{path_segment(memory_id)}")
        except NotFoundError:
            return None
        except RemoteRejectedError as exc:
            if exc.status == 422:  # not a UUID: cannot exist there
                return None
            raise
        return _memory(body, "text")

    async def create(self, text: str, metadata: dict[str, Any]) -> LocalMemory:
        """Store ``text`` verbatim (``infer: false``)."""
        body = await self._call("POST", "/api/v1/memories/", json={
            "user_id": self.user_id, "text": text, "metadata": metadata, "infer": False, "app": self.app,
        })
        if body is None:
            raise RemoteRejectedError("OpenMemory added nothing for the create", service=SERVICE)
        if isinstance(body, dict) and "error" in body and "id" not in body:
            reason = redact_text(str(body["error"]))[:300]
            raise RemoteRejectedError(f"OpenMemory refused the create: {reason}", service=SERVICE)
        return _memory(body, "content")

    async def update(self, memory_id: str, text: str) -> None:
        """Replace a memory's text."""
        await self._call("PUT", f"/api/v1/memories/{path_segment(memory_id)}",
                         json={"memory_content": text, "user_id": self.user_id})

    async def delete(self, memory_id: str) -> bool:
        """Soft-delete one memory; False when it was already unknown."""
        try:
            await self._call("DELETE", "/api/v1/memories/", json={"memory_ids": [memory_id], "user_id": self.user_id})
        except NotFoundError:
            return False
        return True

    async def pages(self, *, page_size: int = PAGE_SIZE, from_date: int | None = None,
                    show_archived: bool = False) -> AsyncIterator[list[LocalMemory]]:
        """Stream all live memories page by page, oldest first.

        Args:
            page_size: items per request (OpenMemory allows at most 100).
            from_date: only memories created at or after this epoch second (``/filter``'s ``from_date``).
            show_archived: include archived memories (``/filter`` hides them by default; deleted ones never show).
        """
        guard = PageGuard(SERVICE)
        page = 1
        while True:
            query: dict[str, Any] = {
                "user_id": self.user_id, "page": page, "size": page_size,
                "sort_column": "created_at", "sort_direction": "asc",
            }
            if from_date:
                query["from_date"] = from_date
            if show_archived:
                query["show_archived"] = True
            body = await self._call("POST", "/api/v1/memories/filter", json=query)
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RemoteRejectedError("OpenMemory list answer has no items", service=SERVICE)
            memories = [_memory(item, "content") for item in items]
            guard.check((m.id for m in memories), body.get("total"))
            yield memories
            pages = body.get("pages")
            if not items or not isinstance(pages, int) or page >= pages:
                return
            page += 1
