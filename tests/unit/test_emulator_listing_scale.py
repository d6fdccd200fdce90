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
from memsyncd.emulators.openmemory import OpenMemoryEmulator
from memsyncd.emulators.openmemory_store import OpenMemoryStore

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


class ScanCountingDict(dict[str, Any]):
    """A dict that counts walks over its values (a scan of the whole vector store)."""

    scans = 0

    def values(self) -> Any:
        ScanCountingDict.scans += 1
        return super().values()


def om_create(emu: OpenMemoryEmulator, text: str, user: str = "alice", infer: bool = True) -> Any:
    body = {"user_id": user, "text": text, "metadata": {}, "infer": infer, "app": "openmemory"}
    request = Request("POST", "/api/v1/memories/", "/api/v1/memories/", {}, {}, json.dumps(body).encode(), None)
    response = asyncio.run(emu(request))
    assert response.status == 200, response.body
    return json.loads(response.body)


def test_an_inferring_create_finds_a_stored_text_without_a_scan() -> None:
    store = OpenMemoryStore("alice")
    store.create_user("bob")
    emu = OpenMemoryEmulator(store)
    first = om_create(emu, "likes tea")
    store._vectors = ScanCountingDict(store._vectors)
    ScanCountingDict.scans = 0
    assert om_create(emu, "likes tea") is None  # the extractor finds nothing new
    assert ScanCountingDict.scans == 0
    assert om_create(emu, "likes tea", infer=False)["content"] == "likes tea"  # verbatim: stored again
    assert om_create(emu, "likes tea", user="bob")["content"] == "likes tea"  # another user's store
    store.delete_vector(first["id"])
    assert om_create(emu, "likes tea") is None  # the verbatim copy's point is still there
    second = om_create(emu, "likes coffee")
    store.update_content(second["id"], "likes cocoa")  # PUT: the point keeps the old text
    assert om_create(emu, "likes coffee") is None
    assert om_create(emu, "likes cocoa")["content"] == "likes cocoa"
    reloaded = OpenMemoryStore("alice")
    reloaded.load(store.dump())
    assert OpenMemoryEmulator(reloaded) and om_create(OpenMemoryEmulator(reloaded), "likes coffee") is None
    reloaded.reset()
    reloaded.create_user("alice")
    assert om_create(OpenMemoryEmulator(reloaded), "likes coffee")["content"] == "likes coffee"


def om_filter(emu: OpenMemoryEmulator, page: int, **extra: Any) -> dict[str, Any]:
    body = {"user_id": "alice", "page": page, "size": 10, **extra}
    request = Request("POST", "/api/v1/memories/filter", "/api/v1/memories/filter", {}, {},
                      json.dumps(body).encode(), None)
    response = asyncio.run(emu(request))
    assert response.status == 200, response.body
    result: dict[str, Any] = json.loads(response.body)
    return result


def test_a_paged_openmemory_filter_reads_the_store_once_and_follows_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    store = OpenMemoryStore("alice")
    ids = [store.add(f"memory {i}")["id"] for i in range(30)]
    emu = OpenMemoryEmulator(store)
    reads = 0
    user_memories = OpenMemoryStore.user_memories

    def counting(self: OpenMemoryStore, user: Any) -> Any:
        nonlocal reads
        reads += 1
        return user_memories(self, user)

    monkeypatch.setattr(OpenMemoryStore, "user_memories", counting)
    newest_first = [r["id"] for page in (1, 2, 3) for r in om_filter(emu, page)["items"]]
    assert sorted(newest_first) == sorted(ids) and reads == 1
    assert [r["content"] for r in om_filter(emu, 1, sort_column="memory", sort_direction="asc")["items"]][:2] \
        == ["memory 0", "memory 1"]
    store.set_state(ids[0], "archived")
    assert om_filter(emu, 1)["total"] == 29 and om_filter(emu, 1, show_archived=True)["total"] == 30
    store.update_content(ids[1], "renamed")
    assert [r["id"] for r in om_filter(emu, 1, search_query="renamed")["items"]] == [ids[1]]
    added = store.add("memory new")["id"]
    assert om_filter(emu, 1)["total"] == 30 and added in {r["id"] for r in om_filter(emu, 3)["items"]} | {
        r["id"] for page in (1, 2) for r in om_filter(emu, page)["items"]}
    store.delete(added)
    assert om_filter(emu, 1)["total"] == 29
