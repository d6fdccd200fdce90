"""Tests of the OpenMemory REST emulator over plain HTTP: routes, FastAPI behaviour, faults, admin."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from memsyncd.emulators.runner import RunningEmulators

pytestmark = pytest.mark.timeout(30)

USER = "alice"
NAIVE_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?$")
ITEM_KEYS = {"id", "content", "created_at", "state", "app_id", "app_name", "categories", "metadata_"}


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulators]:
    with RunningEmulators(user=USER) as running:
        yield running


@pytest.fixture(scope="module")
def _client(emu: RunningEmulators) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.openmemory_url, timeout=5) as client:
        yield client


@pytest.fixture
def api(emu: RunningEmulators, _client: httpx.Client) -> httpx.Client:
    """A client against a freshly reset emulator."""
    emu.reset()
    return _client


def create(api: httpx.Client, text: str, **extra: Any) -> dict[str, Any]:
    r = api.post("/api/v1/memories/", json={"user_id": USER, "text": text, "infer": False, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def filter_items(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/memories/filter", json={"user_id": USER, **body})
    assert r.status_code == 200, r.text
    return r.json()


# -- users and stats -----------------------------------------------------------------------


def test_default_user_exists_and_stats_probe_works(api: httpx.Client) -> None:
    """The start-up user answers the stats probe; it owns the default 'openmemory' app."""
    stats = api.get("/api/v1/stats/", params={"user_id": USER}).json()
    assert stats["total_memories"] == 0
    assert [a["name"] for a in stats["apps"]] == ["openmemory"]


def test_default_user_name_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a user argument the store uses $USER, else default_user."""
    from memsyncd.emulators.openmemory_store import OpenMemoryStore

    monkeypatch.setenv("USER", "carol")
    assert OpenMemoryStore().default_user == "carol"
    monkeypatch.delenv("USER")
    assert OpenMemoryStore().default_user == "default_user"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/v1/stats/", {"params": {"user_id": "bob"}}),
        ("GET", "/api/v1/memories/", {"params": {"user_id": "bob"}}),
        ("POST", "/api/v1/memories/", {"json": {"user_id": "bob", "text": "x"}}),
        ("POST", "/api/v1/memories/filter", {"json": {"user_id": "bob"}}),
        ("DELETE", "/api/v1/memories/", {"json": {"user_id": "bob", "memory_ids": []}}),
    ],
)
def test_unknown_user_is_404_and_never_created(
    emu: RunningEmulators, api: httpx.Client, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    """REST calls never create users: unknown → 404 {"detail": "User not found"}."""
    r = api.request(method, path, **kwargs)
    assert (r.status_code, r.json()) == (404, {"detail": "User not found"})
    assert emu.openmemory.user("bob") is None


# -- create ----------------------------------------------------------------------------------


def test_create_returns_the_stored_row(emu: RunningEmulators, api: httpx.Client) -> None:
    """200 with the ORM row: internal user uuid, app id, metadata_, naive UTC timestamps."""
    row = create(api, "likes tea", metadata={"level": 1})
    user = emu.openmemory.user(USER)
    assert user is not None
    assert row["user_id"] == user.id and row["user_id"] != USER
    assert row["content"] == "likes tea" and row["metadata_"] == {"level": 1}
    assert row["state"] == "active" and row["deleted_at"] is None and row["archived_at"] is None
    assert NAIVE_ISO.match(row["created_at"]) and NAIVE_ISO.match(row["updated_at"])
    created = datetime.fromisoformat(row["created_at"]).replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
    assert uuid.UUID(row["id"]) and uuid.UUID(row["app_id"])


def test_create_auto_creates_apps_per_name(api: httpx.Client) -> None:
    """A new app name creates the app; the same name reuses it."""
    a = create(api, "one", app="memsyncd")
    b = create(api, "two", app="memsyncd")
    c = create(api, "three")
    assert a["app_id"] == b["app_id"] != c["app_id"]
    names = {x["name"] for x in api.get("/api/v1/stats/", params={"user_id": USER}).json()["apps"]}
    assert names == {"openmemory", "memsyncd"}


def test_create_with_infer_keeps_text_but_skips_known_facts(api: httpx.Client) -> None:
    """infer:true stores new text verbatim; text the user already has yields null (nothing added)."""
    first = api.post("/api/v1/memories/", json={"user_id": USER, "text": "owns a cat"})
    assert first.json()["content"] == "owns a cat"
    again = api.post("/api/v1/memories/", json={"user_id": USER, "text": "owns a cat"})
    assert again.status_code == 200 and again.json() is None
    assert create(api, "owns a cat")["content"] == "owns a cat"  # infer:false always stores


def test_create_in_paused_app_is_403(emu: RunningEmulators, api: httpx.Client) -> None:
    """A paused app refuses new memories with 403."""
    emu.openmemory.pause_app("memsyncd")
    r = api.post("/api/v1/memories/", json={"user_id": USER, "text": "x", "app": "memsyncd"})
    assert r.status_code == 403
    assert r.json() == {"detail": "App memsyncd is currently paused on OpenMemory. Cannot create new memories."}


def test_create_failure_is_still_200_with_error(api: httpx.Client) -> None:
    """When the memory client is down the server answers 200 {"error": ...}."""
    assert api.post("/_admin/memory_client", json={"available": False}).status_code == 200
    r = api.post("/api/v1/memories/", json={"user_id": USER, "text": "x"})
    assert r.status_code == 200 and "error" in r.json()
    r = api.request("DELETE", "/api/v1/memories/", json={"user_id": USER, "memory_ids": []})
    assert r.status_code == 503


# -- FastAPI behaviour -------------------------------------------------------------------------


def test_collection_without_trailing_slash_redirects_307(emu: RunningEmulators, api: httpx.Client) -> None:
    """Starlette redirects to the slashed path, absolute location, query kept."""
    r = api.post("/api/v1/memories", json={"user_id": USER, "text": "x"})
    assert r.status_code == 307
    assert r.headers["location"] == f"{emu.openmemory_url}/api/v1/memories/"
    r = api.get("/api/v1/stats", params={"user_id": USER})
    assert r.headers["location"] == f"{emu.openmemory_url}/api/v1/stats/?user_id={USER}"
    assert api.get("/api/v1/stats", params={"user_id": USER}, follow_redirects=True).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "loc", "kind"),
    [
        ("POST", "/api/v1/memories/", {"json": {"user_id": USER}}, ["body", "text"], "missing"),
        ("POST", "/api/v1/memories/", {"json": {"user_id": USER, "text": 5}}, ["body", "text"], "string_type"),
        ("POST", "/api/v1/memories/", {}, ["body"], "missing"),
        ("POST", "/api/v1/memories/", {"content": b"{bad"}, ["body", 1], "json_invalid"),
        ("GET", "/api/v1/memories/not-a-uuid", {}, ["path", "memory_id"], "uuid_parsing"),
        ("GET", "/api/v1/memories/", {}, ["query", "user_id"], "missing"),
        ("GET", "/api/v1/memories/", {"params": {"user_id": USER, "size": 500}}, ["query", "size"], "less_than_equal"),
        (
            "DELETE",
            "/api/v1/memories/",
            {"json": {"user_id": USER, "memory_ids": ["x"]}},
            ["body", "memory_ids", 0],
            "uuid_parsing",
        ),
        ("PUT", f"/api/v1/memories/{uuid.uuid4()}", {"json": {"user_id": USER}}, ["body", "memory_content"], "missing"),
    ],
)
def test_validation_errors_are_fastapi_422(
    api: httpx.Client, method: str, path: str, kwargs: dict[str, Any], loc: list[Any], kind: str
) -> None:
    """Bad UUIDs, missing fields and bad JSON get FastAPI's 422 body."""
    r = api.request(method, path, **kwargs)
    assert r.status_code == 422
    [error] = [e for e in r.json()["detail"] if e["loc"] == loc]
    assert error["type"] == kind and error["msg"] and "input" in error


def test_unknown_path_404_and_wrong_method_405(api: httpx.Client) -> None:
    """Starlette's 404/405 bodies."""
    assert api.get("/api/v1/nothing/").json() == {"detail": "Not Found"}
    r = api.patch("/api/v1/memories/")
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}


# -- filter and list ---------------------------------------------------------------------------


def test_filter_defaults_to_newest_first_with_pages(api: httpx.Client) -> None:
    """Default order is created_at desc; items have epoch ints and no updated_at."""
    ids = [create(api, f"m{n}")["id"] for n in range(5)]
    page1 = filter_items(api, size=2)
    assert (page1["total"], page1["page"], page1["size"], page1["pages"]) == (5, 1, 2, 3)
    assert [i["id"] for i in page1["items"]] == ids[::-1][:2]
    item = page1["items"][0]
    assert set(item) == ITEM_KEYS and isinstance(item["created_at"], int) and item["app_name"] == "openmemory"
    page3 = filter_items(api, size=2, page=3)
    assert [i["id"] for i in page3["items"]] == [ids[0]]
    assert filter_items(api, page=9)["items"] == []


def test_filter_search_sort_and_app_filters(api: httpx.Client) -> None:
    """search_query is case-insensitive; sort_column/sort_direction; app_ids."""
    create(api, "Banana bread")
    other = create(api, "apple pie", app="memsyncd")
    create(api, "cherry BREAD")
    assert {i["content"] for i in filter_items(api, search_query="bread")["items"]} == {"Banana bread", "cherry BREAD"}
    asc = filter_items(api, sort_column="memory", sort_direction="asc")["items"]
    assert [i["content"] for i in asc] == ["Banana bread", "apple pie", "cherry BREAD"]
    assert [i["id"] for i in filter_items(api, app_ids=[other["app_id"]])["items"]] == [other["id"]]
    bad = api.post("/api/v1/memories/filter", json={"user_id": USER, "sort_column": "x", "sort_direction": "asc"})
    assert (bad.status_code, bad.json()) == (400, {"detail": "Invalid sort column"})
    bad = api.post("/api/v1/memories/filter", json={"user_id": USER, "sort_column": "memory", "sort_direction": "up"})
    assert bad.json() == {"detail": "Invalid sort direction"}


def test_filter_states_and_dates(emu: RunningEmulators, api: httpx.Client) -> None:
    """Deleted never shows; archived only with show_archived; paused does; from/to_date are epochs."""
    active, paused, archived, deleted = (create(api, t)["id"] for t in ("a", "p", "r", "d"))
    emu.openmemory.set_state(paused, "paused")
    emu.openmemory.set_state(archived, "archived")
    emu.openmemory.delete(deleted)
    assert {i["id"] for i in filter_items(api)["items"]} == {active, paused}
    assert {i["id"] for i in filter_items(api, show_archived=True)["items"]} == {active, paused, archived}
    now = int(time.time())
    assert filter_items(api, from_date=now + 3600)["items"] == []
    assert len(filter_items(api, to_date=now + 3600)["items"]) == 2


def test_filter_size_over_100_is_a_server_error(api: httpx.Client) -> None:
    """The real handler builds Params(size>100) itself and crashes: 500."""
    r = api.post("/api/v1/memories/filter", json={"user_id": USER, "size": 101})
    assert r.status_code == 500


def test_get_list_drops_paused_after_paging(emu: RunningEmulators, api: httpx.Client) -> None:
    """GET / counts paused memories in total but leaves them out of items."""
    keep = create(api, "kept")["id"]
    hidden = create(api, "paused")["id"]
    emu.openmemory.set_state(hidden, "paused")
    body = api.get("/api/v1/memories/", params={"user_id": USER}).json()
    assert body["total"] == 2 and [i["id"] for i in body["items"]] == [keep]
    assert body["size"] == 50


# -- single memory routes ------------------------------------------------------------------------


def test_get_returns_text_and_soft_deleted(api: httpx.Client) -> None:
    """GET /{id} uses "text", not "content", and still answers after a soft delete."""
    row = create(api, "remember me", metadata={"k": "v"})
    got = api.get(f"/api/v1/memories/{row['id']}").json()
    assert got["text"] == "remember me" and "content" not in got and "updated_at" not in got
    assert got["metadata_"] == {"k": "v"} and got["state"] == "active" and isinstance(got["created_at"], int)
    api.request("DELETE", "/api/v1/memories/", json={"user_id": USER, "memory_ids": [row["id"]]})
    assert api.get(f"/api/v1/memories/{row['id']}").json()["state"] == "deleted"
    r = api.get(f"/api/v1/memories/{uuid.uuid4()}")
    assert (r.status_code, r.json()) == (404, {"detail": "Memory not found"})


def test_update_replaces_content_only(api: httpx.Client) -> None:
    """PUT /{id} {"memory_content", "user_id"} returns the row with new content, same metadata."""
    row = create(api, "old", metadata={"level": 2})
    r = api.put(f"/api/v1/memories/{row['id']}", json={"memory_content": "new", "user_id": USER})
    updated = r.json()
    assert updated["content"] == "new" and updated["metadata_"] == {"level": 2}
    assert updated["updated_at"] >= row["updated_at"]
    r = api.put(f"/api/v1/memories/{uuid.uuid4()}", json={"memory_content": "x", "user_id": USER})
    assert r.status_code == 404
    r = api.put(f"/api/v1/memories/{row['id']}", json={"memory_content": "x", "user_id": "bob"})
    assert r.json() == {"detail": "User not found"}


def test_delete_is_soft_and_stops_at_unknown_ids(emu: RunningEmulators, api: httpx.Client) -> None:
    """Deleted ids are marked deleted; an unknown id → 404 after the earlier ones were deleted."""
    a, b = create(api, "a")["id"], create(api, "b")["id"]
    r = api.request("DELETE", "/api/v1/memories/", json={"user_id": USER, "memory_ids": [a]})
    assert r.json() == {"message": "Successfully deleted 1 memories"}
    assert emu.openmemory.get(a)["state"] == "deleted"
    r = api.request("DELETE", "/api/v1/memories/", json={"user_id": USER, "memory_ids": [b, str(uuid.uuid4())]})
    assert r.status_code == 404
    assert emu.openmemory.get(b)["state"] == "deleted"


def test_archive_and_pause_actions(emu: RunningEmulators, api: httpx.Client) -> None:
    """actions/archive and actions/pause change states (pause can also resume)."""
    a, b = create(api, "a")["id"], create(api, "b")["id"]
    user = emu.openmemory.user(USER)
    assert user is not None
    r = api.post("/api/v1/memories/actions/archive", params={"user_id": user.id}, json=[a])
    assert r.json() == {"message": "Successfully archived 1 memories"}
    r = api.post("/api/v1/memories/actions/pause", json={"user_id": USER, "memory_ids": [b]})
    assert r.json() == {"message": "Successfully paused 1 memories"}
    assert (emu.openmemory.get(a)["state"], emu.openmemory.get(b)["state"]) == ("archived", "paused")
    api.post("/api/v1/memories/actions/pause", json={"user_id": USER, "memory_ids": [b], "state": "active"})
    assert emu.openmemory.get(b)["state"] == "active"
    assert api.post("/api/v1/memories/actions/pause", json={"user_id": USER}).status_code == 400


def test_apps_routes_pause_an_app(api: httpx.Client) -> None:
    """PUT /api/v1/apps/{id}?is_active=false pauses the app; creating in it is then 403."""
    row = create(api, "x", app="memsyncd")
    apps = api.get("/api/v1/apps/").json()["apps"]
    assert {a["name"]: a["total_memories_created"] for a in apps} == {"memsyncd": 1, "openmemory": 0}
    r = api.put(f"/api/v1/apps/{row['app_id']}", params={"is_active": "false"})
    assert r.json()["status"] == "success"
    assert api.get(f"/api/v1/apps/{row['app_id']}").json()["is_active"] is False
    r = api.post("/api/v1/memories/", json={"user_id": USER, "text": "y", "app": "memsyncd"})
    assert r.status_code == 403
    assert api.get(f"/api/v1/apps/{uuid.uuid4()}").status_code == 404


# -- faults and admin -----------------------------------------------------------------------------


def test_faults_apply_to_openmemory_too(emu: RunningEmulators, api: httpx.Client) -> None:
    """A matched 500 fault hits only matching requests and looks like Starlette's."""
    emu.set_fault("openmemory", "500", match="fail-me")
    bad = api.post("/api/v1/memories/", json={"user_id": USER, "text": "fail-me", "infer": False})
    assert bad.status_code == 500 and bad.text == "Internal Server Error"
    assert create(api, "fine")["content"] == "fine"
    emu.set_fault("openmemory", "reset", count=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.get("/api/v1/stats/", params={"user_id": USER})
    statuses = [e["status"] for e in emu.requests("openmemory")]
    assert statuses == [500, 200, None]


@pytest.mark.parametrize(("fault", "status"), [("403", 403), ("404", 404), ("422", 422), ("502", 502), ("503", 503),
                                               ("malformed-200", 200), ("unexpected-shape-200", 200)])
def test_status_and_broken_body_faults_on_openmemory(emu: RunningEmulators, api: httpx.Client, fault: str,
                                                     status: int) -> None:
    """The new fault kinds answer OpenMemory requests too, in FastAPI's or a proxy's style."""
    emu.set_fault("openmemory", fault, count=1)
    r = api.get("/api/v1/stats/", params={"user_id": USER})
    assert r.status_code == status
    if fault == "422":
        assert r.json()["detail"][0]["msg"] == "Field required"
    if fault == "unexpected-shape-200":
        assert r.json() == {"message": "OK"}
    assert api.get("/api/v1/stats/", params={"user_id": USER}).json() != {"message": "OK"}


def test_admin_state_users_and_reset(emu: RunningEmulators, api: httpx.Client) -> None:
    """Admin can add users (as MCP would), show all state, and reset to a fresh server."""
    assert api.post("/_admin/users", json={"user_id": "bob"}).status_code == 200
    r = api.post("/api/v1/memories/", json={"user_id": "bob", "text": "hi", "infer": False})
    assert r.status_code == 200
    deleted = create(api, "gone")["id"]
    emu.openmemory.delete(deleted)
    state = api.get("/_admin/state").json()
    assert {u["user_id"] for u in state["users"]} == {USER, "bob"}
    assert {m["id"]: m["state"] for m in state["memories"]}[deleted] == "deleted"
    assert api.post("/_admin/reset").status_code == 200
    assert emu.openmemory.user("bob") is None and emu.openmemory.memories(include_deleted=True) == []
    assert api.get("/api/v1/stats/", params={"user_id": USER}).status_code == 200


def test_in_process_helpers_share_state_with_http(emu: RunningEmulators, api: httpx.Client) -> None:
    """emu.openmemory.add(...) is visible over HTTP and vice versa."""
    row = emu.openmemory.add("from a test", {"level": 0})
    assert api.get(f"/api/v1/memories/{row['id']}").json()["text"] == "from a test"
    created = create(api, "over http")
    assert [m["content"] for m in emu.openmemory.memories()] == ["from a test", "over http"]
    assert emu.openmemory.update_content(created["id"], "edited")["content"] == "edited"
