"""The only code that talks to the mem0 platform API: a thin httpx adapter returning models.

Routes (API-NOTES): ``GET /v1/ping/``, ``POST /v3/memories/add/``, ``POST
/v3/memories/`` (filtered, paginated list), ``GET|PUT|DELETE /v1/memories/{id}/``,
``GET /v1/event/{id}/``. Auth header ``Authorization: Token <key>``; the key never
leaves this module except in that header (and is registered with the secret filter, so
a server that echoes it never gets it into a message).

At most ``max_in_flight`` requests are in flight at once (``sync.concurrency``), however
many callers are waiting. A rejected key must not be sent over and over: the first request of a run
(:meth:`CloudClient.begin_run`) goes alone, the others wait until one answer shows the key
is accepted; after a 401/403 (or the network being unreachable) every request of the run
fails at once without being sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from memsyncd.errors import (
    AuthError,
    NetworkUnreachableError,
    NotFoundError,
    RemoteError,
    RemoteRejectedError,
    ResponseTooLargeError,
)
from memsyncd.ids import id_problem, path_segment
from memsyncd.logs import register_secret
from memsyncd.models import CloudMemory, parse_ts
from memsyncd.remote.http_edge import DEFAULT_MAX_BODY, RetryPolicy, json_body, new_client, request
from memsyncd.remote.paging import PageGuard

SERVICE = "mem0"
PAGE_SIZE = 100


@dataclass
class ListingTrace:
    """What a paged listing said about itself while it was read (filled in by :meth:`CloudClient.pages`).

    ``counts``: the total each page's answer announced (None when it carried none);
    ``cut_short``: the listing ended at a page number the (shrunken) listing no longer had.
    :func:`memsyncd.engine.decide.listing_complete` tells from these whether a memory may have been skipped.
    """

    counts: list[int | None] = field(default_factory=list)
    cut_short: bool = False


@dataclass(frozen=True)
class Scope:
    """Which cloud memories are ours: the identity fields sent on every add and list."""

    user_id: str
    agent_id: str | None = None
    app_id: str | None = None
    org_id: str | None = None
    project_id: str | None = None

    def identity(self) -> dict[str, str]:
        """Top-level identity fields for an add."""
        fields = {"user_id": self.user_id, "agent_id": self.agent_id, "app_id": self.app_id,
                  "org_id": self.org_id, "project_id": self.project_id}
        return {k: v for k, v in fields.items() if v}

    def filters(self) -> list[dict[str, Any]]:
        """AND-clauses that select this scope in a v3 list.

        The user's memories, and with an agent id also the agent's: ``OR``, not ``AND``. A
        memory from a normal (inferring) ``client.add`` carries ``user_id`` or ``agent_id``,
        never both (v2 filter docs), so ``AND`` would select only memsyncd's own
        (``infer: false``) writes and never pull what other mem0 clients of the user wrote.
        """
        clauses: list[dict[str, Any]] = [{"user_id": self.user_id}]
        if self.agent_id:
            clauses = [{"OR": [{"user_id": self.user_id}, {"agent_id": self.agent_id}]}]
        if self.app_id:
            clauses.append({"app_id": self.app_id})
        return clauses


@dataclass(frozen=True)
class AddResult:
    """What an add returned: the cloud id when done, or the event id when queued; neither when deduplicated.

    mem0 deduplicates an ``infer: false`` add whose exact text is already stored in the same
    scope (direct-import docs); such an add answers ``SUCCEEDED`` with empty ``results``.
    """

    cloud_id: str | None
    event_id: str | None

    @property
    def deduplicated(self) -> bool:
        """mem0 stored nothing new: the text is already there (look the existing memory up)."""
        return self.cloud_id is None and self.event_id is None


@dataclass(frozen=True)
class PingInfo:
    """What a key check answered: the account the key belongs to and the server's clock."""

    org_id: str | None
    project_id: str | None
    server_date: datetime | None  # from the HTTP Date header (second precision), None when absent


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class EventResult:
    """State of a queued add."""

    status: str  # PENDING | RUNNING | PROCESSING | SUCCEEDED | FAILED
    cloud_id: str | None

    @property
    def finished(self) -> bool:
        """SUCCEEDED or FAILED; any other status (PENDING, RUNNING, ...) is still being processed."""
        return self.status in ("SUCCEEDED", "FAILED")


def _ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_ts(value)
    except ValueError:
        return None


def _valid_id(value: str, answer: str) -> str:
    """An id from a mem0 answer, refused when no memory (or event) id can look like it."""
    problem = id_problem(value)
    if problem is not None:
        raise RemoteRejectedError(f"mem0's {answer} answer holds an unusable id: {problem}", service=SERVICE)
    return value


def memory_from_json(raw: dict[str, Any]) -> CloudMemory:
    """Build a ``CloudMemory`` from a platform memory object."""
    text = raw.get("memory")
    if text is None and isinstance(raw.get("data"), dict):
        text = raw["data"].get("memory")
    if not isinstance(raw.get("id"), str) or not isinstance(text, str):
        raise RemoteRejectedError("mem0 sent a memory without id or text", service=SERVICE)
    problem = id_problem(raw["id"])
    if problem is not None:
        raise RemoteRejectedError(f"mem0 sent a memory with an unusable id: {problem}", service=SERVICE)
    metadata: dict[str, Any] = raw["metadata"] if isinstance(raw.get("metadata"), dict) else {}
    return CloudMemory(
        id=raw["id"], text=text, metadata=metadata,
        created_at=_ts(raw.get("created_at")), updated_at=_ts(raw.get("updated_at")),
    )


class CloudClient:
    """mem0 platform client (async). ``transport`` lets tests inject ``httpx.MockTransport``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        scope: Scope,
        *,
        policy: RetryPolicy | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_in_flight: int = 8,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.scope = scope
        self._timeout = timeout
        self._max_body = max_body
        self.max_in_flight = max(1, max_in_flight)
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self.policy = policy or RetryPolicy()
        register_secret(api_key)
        self.key_source = ""  # where the key came from, named by a 401/403 (set by whoever loaded the key)
        self._accepted = False  # an answer of this run showed that the key is accepted
        self._stopped: RemoteError | None = None  # a run-level error (401/403, unreachable) of this run
        self._first = asyncio.Lock()
        self._http = new_client(base_url, timeout=timeout, transport=transport,
                                headers={"Authorization": f"Token {api_key}", "Mem0-User-ID": scope.user_id,
                                         "User-Agent": "memsyncd"})

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()

    def begin_run(self) -> None:
        """Start a run: its first request goes alone, the rest wait until the key is known to be accepted."""
        self._accepted = False
        self._stopped = None
        self._first = asyncio.Lock()
        self._slots = asyncio.Semaphore(self.max_in_flight)

    async def _call(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> Any:
        if self._stopped is not None:
            raise self._stopped_again()
        if not self._accepted:
            async with self._first:  # one request at a time until one was answered with the key accepted
                if self._stopped is not None:
                    raise self._stopped_again()
                if not self._accepted:
                    return await self._send(method, url, retry=retry, **kwargs)
        return await self._send(method, url, retry=retry, **kwargs)

    async def _send(self, method: str, url: str, *, retry: bool, **kwargs: Any) -> Any:
        try:
            async with self._slots:
                response = await request(self._http, method, url, service=SERVICE, policy=self.policy, retry=retry,
                                         deadline=self._timeout, max_body=self._max_body, **kwargs)
        except RemoteError as exc:
            if isinstance(exc, AuthError) and self.key_source:
                exc.key_source = self.key_source
                exc.message = (f"{exc.message.rstrip('.')}. The key came from {self.key_source}; store a valid one "
                               "with 'memsyncctl init --key-stdin < FILE'")
            if isinstance(exc, NetworkUnreachableError):  # the cause alone left the user without a next step
                exc.message = (f"{exc.message.rstrip('.')}. Check this machine's network connection; if mem0 listens "
                               "elsewhere, fix cloud.url in .claude/memory/config.json (or MEMSYNC_CLOUD__URL)")
            if exc.stops_run:
                self._stopped = exc
            elif isinstance(exc, (NotFoundError, RemoteRejectedError)) and not isinstance(exc, ResponseTooLargeError):
                self._accepted = True  # the server judged the request itself: the key got through
            raise
        self._accepted = True
        return json_body(response, SERVICE) if response.content else None

    def _stopped_again(self) -> RemoteError:
        """A fresh copy of the error that stopped this run (raised without sending anything)."""
        first = self._stopped
        assert first is not None
        again = type(first)(first.message, status=first.status, service=first.service)
        again.title = first.title
        if isinstance(first, AuthError) and isinstance(again, AuthError):
            again.key_source = first.key_source
        return again

    async def ping(self) -> dict[str, Any]:
        """Validate the key; returns the platform's ping body."""
        body = await self._call("GET", "/v1/ping/")
        return body if isinstance(body, dict) else {}

    async def ping_info(self) -> PingInfo:
        """Validate the key; the ping body's account fields and the server's clock (``Date`` header)."""
        response = await request(self._http, "GET", "/v1/ping/", service=SERVICE, policy=self.policy,
                                 deadline=self._timeout, max_body=self._max_body)
        body = json_body(response, SERVICE) if response.content else None
        fields = body if isinstance(body, dict) else {}
        server_date: datetime | None = None
        with contextlib.suppress(TypeError, ValueError, IndexError):
            server_date = email.utils.parsedate_to_datetime(response.headers.get("date", ""))
        return PingInfo(org_id=_text(fields.get("org_id")), project_id=_text(fields.get("project_id")),
                        server_date=server_date)

    async def add(self, text: str, metadata: dict[str, Any], *, retry: bool = True) -> AddResult:
        """Create one memory verbatim (``infer: false``)."""
        payload: dict[str, Any] = {
            "messages": [{"role": "user", "content": text}],
            **self.scope.identity(),
            "metadata": metadata,
            "infer": False,
        }
        body = await self._call("POST", "/v3/memories/add/", json=payload, retry=retry)
        status = str(body.get("status") or "").upper() if isinstance(body, dict) else ""
        if isinstance(body, dict) and isinstance(body.get("event_id"), str) and not body.get("results") \
                and status not in ("SUCCEEDED", "FAILED"):
            return AddResult(cloud_id=None, event_id=body["event_id"])  # v3: {"event_id", "status": "PENDING"}
        results = body.get("results") if isinstance(body, dict) else body
        if isinstance(results, list) and not results and status in ("", "SUCCEEDED"):
            return AddResult(cloud_id=None, event_id=None)  # deduplicated: the text is already stored
        if not isinstance(results, list) or not results or not isinstance(results[0], dict):
            raise RemoteRejectedError("mem0 stored nothing for the add", service=SERVICE)
        first = results[0]
        if isinstance(first.get("id"), str) and first.get("status") != "PENDING":
            return AddResult(cloud_id=_valid_id(first["id"], "add"), event_id=None)
        if isinstance(first.get("event_id"), str):
            return AddResult(cloud_id=None, event_id=_valid_id(first["event_id"], "add"))
        raise RemoteRejectedError("mem0 add answer has neither an id nor an event_id", service=SERVICE)

    async def event(self, event_id: str) -> EventResult:
        """Status of a queued add."""
        body = await self._call("GET", f"/v1/event/{path_segment(event_id)}/")
        if not isinstance(body, dict):
            raise RemoteRejectedError("mem0 event answer is not an object", service=SERVICE)
        cloud_id = None
        for item in body.get("results") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                cloud_id = _valid_id(item["id"], "event")
                break
        return EventResult(status=str(body.get("status", "PENDING")).upper(), cloud_id=cloud_id)

    async def get(self, cloud_id: str) -> CloudMemory | None:
        """One memory, or None when it does not exist."""
        try:
            body = await self._call("GET", f"/v1/memories/{path_segment(cloud_id)}/")
        except NotFoundError:
            return None
        return memory_from_json(body)

    async def update(self, cloud_id: str, text: str, metadata: dict[str, Any] | None = None) -> None:
        """Replace a memory's text (and metadata)."""
        payload: dict[str, Any] = {"text": text}
        if metadata is not None:
            payload["metadata"] = metadata
        await self._call("PUT", f"/v1/memories/{path_segment(cloud_id)}/", json=payload)

    async def delete(self, cloud_id: str) -> bool:
        """Delete a memory; False when it was already gone (404 counts as done)."""
        try:
            await self._call("DELETE", f"/v1/memories/{path_segment(cloud_id)}/")
        except NotFoundError:
            return False
        return True

    async def pages(
        self, extra: list[dict[str, Any]] | None = None, *, page_size: int = PAGE_SIZE,
        trace: ListingTrace | None = None,
    ) -> AsyncIterator[list[CloudMemory]]:
        """Stream the scope's memories page by page (never all in memory).

        Pages are read by number: when memories are deleted or added while it pages, later ones
        move across page boundaries and one may be skipped. ``trace`` (optional) records each
        page's announced total and an early end, so a caller can tell (the pull cursor).
        """
        filters = {"AND": self.scope.filters() + list(extra or [])}
        guard = PageGuard(SERVICE)
        page = 1
        while True:
            try:
                body = await self._call("POST", "/v3/memories/", params={"page": page, "page_size": page_size},
                                        json={"filters": filters})
            except NotFoundError:
                if page == 1:
                    raise
                if trace is not None:
                    trace.cut_short = True
                return  # "Invalid page.": the listing shrank while we paged; the next run sees the rest
            # A 200 without a "results" list is not an empty page: reading it as one would make the
            # exactly-once lookup answer "not found" (a duplicate create) and a pull see an empty cloud.
            results = body.get("results") if isinstance(body, dict) else body
            if not isinstance(results, list):
                raise RemoteRejectedError("mem0 answered a memory listing without a results list (a proxy or "
                                          "captive portal?); nothing was read. Retry when mem0 answers normally.",
                                          service=SERVICE)
            if trace is not None:
                count = body.get("count") if isinstance(body, dict) else len(results)
                trace.counts.append(count if isinstance(count, int) and not isinstance(count, bool) else None)
            memories = [memory_from_json(item) for item in results if isinstance(item, dict)]
            guard.check((m.id for m in memories), body.get("count") if isinstance(body, dict) else None)
            yield memories
            if not (isinstance(body, dict) and body.get("next")) or not results:
                return
            page += 1

    def changed_since(self, cursor: datetime | None, overlap: timedelta, *,
                      trace: ListingTrace | None = None) -> AsyncIterator[list[CloudMemory]]:
        """Pages of memories updated at or after ``cursor - overlap`` (all when no cursor); see :meth:`pages`."""
        extra = [] if cursor is None else [{"updated_at": {"gte": (cursor - overlap).isoformat()}}]
        return self.pages(extra, trace=trace)

    async def find_by_text(self, text: str, digest: str) -> CloudMemory | None:
        """The scope's memory holding exactly ``text`` (what a deduplicated add kept), if any.

        First by the ``content_hash`` metadata memsyncd writes, then by reading the scope.
        """
        for extra in ([{"metadata": {"content_hash": digest}}], []):
            async for page in self.pages(extra):
                for memory in page:
                    if memory.text == text:
                        return memory
        return None

    async def find_by_local_id(self, local_id: str, since: datetime | None) -> CloudMemory | None:
        """Find the cloud memory an earlier create made for ``local_id`` (exactly-once recovery)."""
        extra: list[dict[str, Any]] = [{"metadata": {"memsync_local_id": local_id}}]
        if since is not None:
            extra.append({"created_at": {"gte": since.isoformat()}})
        async for page in self.pages(extra):
            for memory in page:
                if memory.metadata.get("memsync_local_id") == local_id:
                    return memory
        return None
