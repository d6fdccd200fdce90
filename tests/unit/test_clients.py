"""Tests of the mem0 and OpenMemory adapters through httpx.MockTransport (no sockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from memsyncd.errors import (
    AuthError,
    ConfigError,
    LocalUnreachableError,
    NetworkUnreachableError,
    RateLimitedError,
    RemoteRejectedError,
    ServerError,
)
from memsyncd.remote.cloud import CloudClient, ListingTrace, Scope
from memsyncd.remote.http_edge import RetryPolicy
from memsyncd.remote.local import LocalClient

Handler = Callable[[httpx.Request], httpx.Response]
KEY = "m0-secret-key-for-tests"


def cloud_client(handler: Handler, attempts: int = 3) -> CloudClient:
    return CloudClient("http://127.0.0.1:1", KEY, Scope("alice", agent_id="claude"),
                       policy=RetryPolicy(attempts=attempts), transport=httpx.MockTransport(handler))


def local_client(handler: Handler) -> LocalClient:
    return LocalClient("http://127.0.0.1:2", "alice", policy=RetryPolicy(attempts=2),
                       transport=httpx.MockTransport(handler))


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_add_sends_token_auth_infer_false_and_identity() -> None:
    """The add body is what the platform expects, with the key only in the Token header."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"results": [{"id": "c1", "memory": "hello", "event": "ADD"}]})

    result = run(cloud_client(handler).add("hello", {"level": 1}))
    assert result.cloud_id == "c1"
    request = seen[0]
    assert request.url.path == "/v3/memories/add/"
    assert request.headers["Authorization"] == f"Token {KEY}"
    body = json.loads(request.content)
    assert body == {"messages": [{"role": "user", "content": "hello"}], "user_id": "alice", "agent_id": "claude",
                    "metadata": {"level": 1}, "infer": False}


@pytest.mark.parametrize("body", [{"results": [{"status": "PENDING", "event_id": "ev1"}]},
                                  [{"status": "PENDING", "event_id": "ev1"}]])
def test_add_queued_returns_event_id(body: object) -> None:
    """Both the v3 envelope and the older bare list are understood."""
    result = run(cloud_client(lambda r: httpx.Response(200, json=body)).add("x", {}))
    assert result.cloud_id is None and result.event_id == "ev1"


def test_429_waits_retry_after_then_succeeds() -> None:
    """A rate-limited request is retried after Retry-After."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "slow down"})
        return httpx.Response(200, json={"id": "c1", "memory": "m", "metadata": None})

    memory = run(cloud_client(handler).get("c1"))
    assert memory is not None and memory.text == "m" and len(calls) == 2


def test_5xx_is_retried_at_most_attempts_times() -> None:
    """A persistent 500 gives up after attempts_per_run tries with a ServerError."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500, json={"error": "boom"})

    with pytest.raises(ServerError, match="500: boom"):
        run(cloud_client(handler, attempts=3).get("c1"))
    assert len(calls) == 3


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_not_retried_and_never_shows_the_key(status: int) -> None:
    """401/403 stop at once; the error text has no key."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"detail": "Invalid API key"})

    with pytest.raises(AuthError) as info:
        run(cloud_client(handler).ping())
    assert len(calls) == 1 and KEY not in str(info.value) and info.value.exit_code == 4


def test_connection_refused_is_network_unreachable() -> None:
    """No server: a run-stopping NetworkUnreachableError."""
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(NetworkUnreachableError) as info:
        run(cloud_client(handler).get("c1"))
    assert info.value.stops_run


def test_rate_limit_gives_up_with_rate_limited_error() -> None:
    """Persistent 429 ends as RateLimitedError carrying Retry-After."""
    handler = lambda r: httpx.Response(429, headers={"Retry-After": "0"})  # noqa: E731
    with pytest.raises(RateLimitedError) as info:
        run(cloud_client(handler, attempts=2).get("c1"))
    assert info.value.retry_after == 0


def test_get_404_is_none_and_delete_404_is_done() -> None:
    """Missing memories are not errors for get/delete."""
    client = cloud_client(lambda r: httpx.Response(404, json={"detail": "Memory not found"}))
    assert run(client.get("c1")) is None
    assert run(client.delete("c1")) is False


def test_list_pages_follow_next_and_send_scope_filters() -> None:
    """Pagination stops when next is null; filters carry user and agent."""
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append((dict(request.url.params), json.loads(request.content)))
        page = int(request.url.params["page"])
        items = [{"id": f"c{page}", "memory": f"m{page}", "updated_at": "2026-01-01T00:00:00+00:00"}]
        return httpx.Response(200, json={"count": 2, "next": "http://x/?page=2" if page == 1 else None,
                                         "previous": None, "results": items})

    async def collect() -> list[str]:
        return [m.id async for page in cloud_client(handler).pages() for m in page]

    assert run(collect()) == ["c1", "c2"]
    assert bodies[0][1] == {"filters": {"AND": [{"OR": [{"user_id": "alice"}, {"agent_id": "claude"}]}]}}
    assert bodies[1][0]["page"] == "2"


def test_list_pages_trace_records_each_pages_count_and_an_early_end() -> None:
    """The listing's announced total per page, and a page that no longer exists (the listing shrank)."""
    totals = {1: 250, 2: 245}

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        if page == 3:
            return httpx.Response(404, json={"detail": "Invalid page."})
        items = [{"id": f"c{page}", "memory": f"m{page}", "updated_at": "2026-01-01T00:00:00+00:00"}]
        return httpx.Response(200, json={"count": totals[page], "next": f"http://x/?page={page + 1}",
                                         "previous": None, "results": items})

    async def collect(trace: ListingTrace) -> list[str]:
        return [m.id async for page in cloud_client(handler).pages(trace=trace) for m in page]

    trace = ListingTrace()
    assert run(collect(trace)) == ["c1", "c2"]
    assert trace.counts == [250, 245] and trace.cut_short is True
    plain = ListingTrace()
    one_page = cloud_client(lambda r: httpx.Response(200, json=[{"id": "c1", "memory": "m"}]))

    async def collect_list() -> list[str]:
        return [m.id async for page in one_page.pages(trace=plain) for m in page]

    assert run(collect_list()) == ["c1"] and plain.counts == [1] and plain.cut_short is False


def test_local_create_with_error_body_is_a_failure() -> None:
    """OpenMemory reports failures with HTTP 200 and {"error": ...} or null."""
    for body in ({"error": "vector store down"}, None):
        client = local_client(lambda r, b=body: httpx.Response(200, json=b))
        with pytest.raises(RemoteRejectedError):
            run(client.create("x", {}))


def test_local_create_sends_infer_false_and_app() -> None:
    """Verbatim create for our app."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "l1", "content": "x", "metadata_": {"a": 1}, "state": "active"})

    memory = run(local_client(handler).create("x", {"a": 1}))
    assert memory.id == "l1" and memory.metadata == {"a": 1}
    assert seen[0] == {"user_id": "alice", "text": "x", "metadata": {"a": 1}, "infer": False, "app": "memsyncd"}


def test_local_get_reads_text_and_state() -> None:
    """Single get uses "text" and returns soft-deleted memories with their state."""
    client = local_client(lambda r: httpx.Response(200, json={"id": "l1", "text": "hi", "state": "deleted",
                                                               "metadata_": None}))
    memory = run(client.get("l1"))
    assert memory is not None and memory.text == "hi" and not memory.alive


def test_local_unknown_user_is_a_config_error() -> None:
    """The probe explains how to set local.user_id."""
    client = local_client(lambda r: httpx.Response(404, json={"detail": "User not found"}))
    with pytest.raises(ConfigError, match="local.user_id"):
        run(client.probe())


def test_local_down_is_local_unreachable() -> None:
    """Connection refused on OpenMemory stops the run with exit 5."""
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(LocalUnreachableError) as info:
        run(local_client(handler).get("l1"))
    assert info.value.exit_code == 5
