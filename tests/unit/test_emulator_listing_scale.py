"""Per-request costs of the emulators that must not grow with the store: a paged mem0 listing filters the
store once per listing (not once per page), and is still exact after any change; an inferring OpenMemory
create finds an already-stored text without scanning every vector point."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from memsyncd.daemon.http_server import Request
from memsyncd.emulators.mem0 import Mem0Emulator
from memsyncd.emulators.mem0_store import Mem0Store, MemoryRecord

KEY = "k"


def list_page(emu: Mem0Emulator, page: int, filters: dict[str, Any], size: int = 10) -> dict[str, Any]:
    query = {"page": str(page), "page_size": str(size)}
    request = Request("POST", f"/v3/memories/?page={page}&page_size={size}", "/v3/memories/", query,
                      {"authorization": f"Token {KEY}"}, json.dumps({"filters": filters}).encode(), None)
    response = asyncio.run(emu(request))
    assert response.status == 200, response.body
    body: dict[str, Any] = json.loads(response.body)
    return body


def test_a_paged_listing_filters_the_store_once(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Mem0Store(api_key=KEY)
    for i in range(100):
        store.add(f"memory {i}", user_id="u")
    store.add("someone else's", user_id="v")
    emu = Mem0Emulator(store)
    calls = 0
    view = MemoryRecord.view

    def counting_view(self: MemoryRecord) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return view(self)

    monkeypatch.setattr(MemoryRecord, "view", counting_view)
    filters = {"AND": [{"user_id": "u"}]}
    seen = [r["memory"] for page in range(1, 11) for r in list_page(emu, page, filters)["results"]]
    assert seen == [f"memory {i}" for i in range(100)]
    # 101 records filtered once, plus the page's own rows turned into JSON (public() builds on view())
    assert calls <= 101 + 100, calls


def test_the_cached_listing_follows_every_change() -> None:
    store = Mem0Store(api_key=KEY)
    ids = [store.add(f"memory {i}", user_id="u")["id"] for i in range(5)]
    emu = Mem0Emulator(store)
    by_user = {"AND": [{"user_id": "u"}]}
    assert list_page(emu, 1, by_user)["count"] == 5
    added = store.add("memory 5", user_id="u")["id"]
    assert [r["id"] for r in list_page(emu, 1, by_user)["results"]] == [*ids, added]
    store.delete(ids[0])
    assert [r["id"] for r in list_page(emu, 1, by_user)["results"]] == [*ids[1:], added]
    store.update(ids[1], metadata={"level": 2})
    by_level = {"AND": [{"user_id": "u"}, {"metadata": {"level": 2}}]}
    assert [r["id"] for r in list_page(emu, 1, by_level)["results"]] == [ids[1]]
    assert list_page(emu, 1, by_user)["results"][0]["metadata"] == {"level": 2}
    store.reset()
    store.add("fresh", user_id="u")
    assert [r["memory"] for r in list_page(emu, 1, by_user)["results"]] == ["fresh"]
