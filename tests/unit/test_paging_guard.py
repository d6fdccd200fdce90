"""PageGuard (issue 15 item 9): listings that repeat pages or never end are stopped with a clear error."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from memsyncd.errors import MisbehavingServerError
from memsyncd.remote.cloud import CloudClient, Scope
from memsyncd.remote.http_edge import RetryPolicy
from memsyncd.remote.local import LocalClient
from memsyncd.remote.paging import PageGuard


def test_a_repeated_page_is_refused() -> None:
    guard = PageGuard("mem0")
    guard.check(["a", "b"], 4)
    with pytest.raises(MisbehavingServerError, match="repeats pages"):
        guard.check(["a", "b"], 4)


def test_overlap_from_a_shifting_listing_is_fine() -> None:
    """Offset paging over a listing that lost an item repeats one id: not a misbehaving server."""
    guard = PageGuard("mem0")
    guard.check(["a", "b", "c"], 6)
    guard.check(["c", "d", "e"], 5)
    guard.check(["f"], 5)


def test_pages_past_the_reported_total_are_refused() -> None:
    """Fresh ids forever with a total of 4: stopped a couple of pages past what 4 can fill."""
    guard = PageGuard("mem0")
    with pytest.raises(MisbehavingServerError, match="kept announcing a next page"):
        for n in range(100):
            guard.check([f"id-{n}-a", f"id-{n}-b"], 4)
    assert guard.pages <= 5


def test_a_smaller_page_size_than_asked_is_not_misbehaviour() -> None:
    """A server sending 10 per page for a total of 95 needs 10 pages: allowed."""
    guard = PageGuard("OpenMemory")
    for n in range(10):
        guard.check([f"{n}-{k}" for k in range(10 if n < 9 else 5)], 95)


def test_cloud_listing_with_endless_fresh_pages_ends() -> None:
    """A mem0 listing that says count 3 but sends new memories and a next link forever is stopped."""
    requests: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        requests.append(page)
        results = [{"id": str(uuid.uuid4()), "memory": f"m{page}-{k}", "metadata": {}} for k in range(3)]
        return httpx.Response(200, json={"count": 3, "next": f"https://mem0.test/v3/memories/?page={page + 1}",
                                         "results": results})

    async def go() -> None:
        cloud = CloudClient("https://mem0.test", "m0-key-xxxxxxxx", Scope("u"), policy=RetryPolicy(attempts=1),
                            transport=httpx.MockTransport(handler))
        with pytest.raises(MisbehavingServerError):
            async for _ in cloud.pages():
                pass
        await cloud.aclose()

    asyncio.run(go())
    assert len(requests) <= 4


def test_local_listing_that_repeats_itself_ends() -> None:
    """OpenMemory answering page 1 for every page, with a growing page count: stopped at the repeat."""
    def handler(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content)
        items = [{"id": f"00000000-0000-0000-0000-00000000000{k}", "content": f"t{k}", "state": "active"}
                 for k in range(2)]
        return httpx.Response(200, json={"items": items, "total": 2, "page": body["page"], "size": 2,
                                         "pages": body["page"] + 1})

    async def go() -> None:
        local = LocalClient("http://127.0.0.1:1", "u", policy=RetryPolicy(attempts=1),
                            transport=httpx.MockTransport(handler))
        with pytest.raises(MisbehavingServerError, match="repeats pages"):
            async for _ in local.pages():
                pass
        await local.aclose()

    asyncio.run(go())
