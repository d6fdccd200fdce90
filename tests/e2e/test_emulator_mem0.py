"""Tests of the mem0 platform emulator over plain HTTP: routes, error bodies, faults, admin."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from memsyncd.emulators.runner import RunningEmulators

pytestmark = pytest.mark.timeout(30)

KEY = "k-test"
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulators]:
    with RunningEmulators(api_key=KEY, user="alice") as running:
        yield running


@pytest.fixture(scope="module")
def _client(emu: RunningEmulators) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.mem0_url, headers={"Authorization": f"Token {KEY}"}, timeout=5) as client:
        yield client


@pytest.fixture
def api(emu: RunningEmulators, _client: httpx.Client) -> httpx.Client:
    """An authenticated client against a freshly reset emulator."""
    emu.reset()
    emu.mem0.set_add_mode("immediate")
    return _client


@pytest.fixture(scope="module")
def admin(emu: RunningEmulators) -> Iterator[httpx.Client]:
    """A client without credentials for /_admin/ routes."""
    with httpx.Client(base_url=emu.mem0_url, timeout=5) as client:
        yield client


def add(api: httpx.Client, text: str, **extra: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": text}], "user_id": "u1", "infer": False, **extra}
    r = api.post("/v3/memories/add/", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def list_memories(api: httpx.Client, filters: Any, **params: Any) -> httpx.Response:
    return api.post("/v3/memories/", params=params, json={"filters": filters})


# -- auth --------------------------------------------------------------------------------


def test_missing_authorization_is_401(emu: RunningEmulators, api: httpx.Client) -> None:
    """No header → 401 with DRF's wording."""
    r = httpx.get(f"{emu.mem0_url}/v1/ping/")
    assert r.status_code == 401
    assert r.json() == {"detail": "Authentication credentials were not provided."}


@pytest.mark.parametrize("header", ["Token wrong", f"Bearer {KEY}", "Token"])
def test_wrong_key_or_scheme_is_401_invalid_api_key(emu: RunningEmulators, api: httpx.Client, header: str) -> None:
    """A wrong key (or Bearer instead of Token) → 401 "Invalid API key..."."""
    r = httpx.get(f"{emu.mem0_url}/v1/ping/", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["detail"].startswith("Invalid API key")


def test_ping_returns_org_and_project(api: httpx.Client) -> None:
    """Ping answers the fields the official client reads on construction."""
    assert api.get("/v1/ping/").json() == {
        "status": "ok",
        "org_id": "org_emulator",
        "project_id": "proj_emulator",
        "user_email": "emulator@memsyncd.invalid",
    }


# -- add ---------------------------------------------------------------------------------


def test_immediate_add_returns_results_and_stores_verbatim(emu: RunningEmulators, api: httpx.Client) -> None:
    """infer:false stores the text as is; the memory object has the platform's fields."""
    out = add(api, "  I like green tea  ", metadata={"memsync_local_id": "L1"}, agent_id="a1")
    [result] = out["results"]
    assert result["event"] == "ADD"
    assert result["memory"] == result["data"]["memory"] == "  I like green tea  "
    assert uuid.UUID(result["id"]).version == 4
    memory = api.get(f"/v1/memories/{result['id']}/").json()
    assert memory["memory"] == "  I like green tea  "
    assert (memory["user_id"], memory["agent_id"], memory["app_id"], memory["run_id"]) == ("u1", "a1", None, None)
    assert memory["metadata"] == {"memsync_local_id": "L1"}
    assert memory["hash"] == hashlib.md5(b"  I like green tea  ").hexdigest()
    assert ISO_WITH_OFFSET.match(memory["created_at"]) and memory["created_at"] == memory["updated_at"]
    assert emu.mem0.get(result["id"])["memory"] == "  I like green tea  "


def test_add_without_infer_keeps_user_and_assistant_messages(api: httpx.Client) -> None:
    """Direct import stores every non-system message; infer:true keeps user messages only."""
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "u-text"},
        {"role": "assistant", "content": "a-text"},
    ]
    direct = api.post("/v3/memories/add/", json={"messages": messages, "user_id": "u1", "infer": False}).json()
    assert [r["memory"] for r in direct["results"]] == ["u-text", "a-text"]
    inferred = api.post("/v3/memories/add/", json={"messages": messages, "user_id": "u1"}).json()
    assert [r["memory"] for r in inferred["results"]] == ["u-text"]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "error"),
        ({"messages": "x", "user_id": "u"}, "details"),
        ({"messages": [{"role": "user"}], "user_id": "u"}, "details"),
        ({"messages": [{"role": "user", "content": "x"}], "user_id": "u", "metadata": [1]}, "details"),
    ],
)
def test_add_validation_errors_are_400(api: httpx.Client, body: dict[str, Any], key: str) -> None:
    """No entity → 400 {"error"}; malformed messages/metadata → 400 {"error", "details"}."""
    r = api.post("/v3/memories/add/", json=body)
    assert r.status_code == 400
    assert key in r.json()


def test_invalid_json_is_400_parse_error(api: httpx.Client) -> None:
    """A body that is not JSON gets DRF's parse error."""
    r = api.post("/v3/memories/add/", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("JSON parse error")


def wait_event(api: httpx.Client, event_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        event = api.get(f"/v1/event/{event_id}/").json()
        if event["status"] == status or time.monotonic() > deadline:
            return event
        time.sleep(0.01)


def test_queued_add_goes_pending_then_succeeded(emu: RunningEmulators, api: httpx.Client) -> None:
    """Queued mode answers PENDING at once; the loop stores the memory a little later."""
    emu.mem0.set_add_mode("queued", delay_ms=30)
    out = add(api, "later")
    [item] = out["results"]
    assert item["status"] == "PENDING" and "id" not in item
    assert emu.mem0.memories() == []
    assert api.get(f"/v1/event/{item['event_id']}/").json()["status"] == "PENDING"
    event = wait_event(api, item["event_id"], "SUCCEEDED")
    assert event["status"] == "SUCCEEDED"
    [result] = event["results"]
    assert result["data"]["memory"] == "later" and result["event"] == "ADD"
    assert api.get(f"/v1/memories/{result['id']}/").json()["memory"] == "later"
    assert event["payload"]["messages"][0]["content"] == "later"
    listed = api.get("/v1/events/").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == item["event_id"]


def test_queued_add_v3_shape_and_failed_events(emu: RunningEmulators, api: httpx.Client) -> None:
    """The v3 shape puts event_id at the top; fail_match makes the event FAILED with no memory."""
    emu.mem0.set_add_mode("queued", delay_ms=10, shape="v3", fail_match="poison")
    out = add(api, "poison pill")
    assert set(out) == {"event_id", "status"} and out["status"] == "PENDING"
    event = wait_event(api, out["event_id"], "FAILED")
    assert event["status"] == "FAILED" and event["error"]
    assert emu.mem0.memories() == []


def test_unknown_event_is_404(api: httpx.Client) -> None:
    """An unknown event id → 404 {"error"}."""
    r = api.get(f"/v1/event/{uuid.uuid4()}/")
    assert r.status_code == 404 and "error" in r.json()


# -- list / filters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "Filters are required"),
        ({"filters": {}}, "Filters are required"),
        ({"filters": {"user_id": "u1", "bogus_key": "z"}}, "Top-level key must be"),
        ({"filters": {"AND": [{"created_at": {"gte": "2024-01-01"}}]}}, "At least one of the filters"),
        ({"filters": {"NOT": {"user_id": "u1"}}}, "At least one of the filters"),
        ({"filters": {"user_id": "u1"}, "user_id": "u1"}, "Top-level entity parameters"),
        ({"filters": {"AND": [{"user_id": "u1"}, {"created_at": {"eq": "2024-01-01"}}]}}, "Explicit 'eq'"),
        ({"filters": {"AND": [{"user_id": "u1"}, {"created_at": {"gte": "yesterday"}}]}}, "Invalid date"),
        ({"filters": {"AND": [{"user_id": "u1"}, {"created_at": {">=": "2024-01-01"}}]}}, "Invalid operator"),
    ],
)
def test_list_rejects_bad_filters_with_400(api: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    """Missing, unknown or entity-less filters get the platform's 400 {"error"}."""
    r = api.post("/v3/memories/", json=body)
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_list_paginates_with_absolute_links_in_created_order(emu: RunningEmulators, api: httpx.Client) -> None:
    """count/next/previous follow DRF; results are ordered by created_at then id."""
    ids = [add(api, f"m{n}")["results"][0]["id"] for n in range(5)]
    add(api, "other user", user_id="u2")
    first = list_memories(api, {"AND": [{"user_id": "u1"}]}, page=1, page_size=2).json()
    assert first["count"] == 5 and first["previous"] is None
    assert first["next"].startswith(emu.mem0_url + "/v3/memories/?") and "page=2" in first["next"]
    second = api.post(first["next"], json={"filters": {"AND": [{"user_id": "u1"}]}}).json()
    assert "page=" not in second["previous"] and "page_size=2" in second["previous"]
    third = list_memories(api, {"user_id": "u1"}, page=3, page_size=2).json()
    assert third["next"] is None
    assert [m["id"] for m in first["results"] + second["results"] + third["results"]] == ids
    assert "session_id" in first["results"][0]


def test_list_page_out_of_range_is_404_invalid_page(api: httpx.Client) -> None:
    """Asking past the last page → 404 {"detail": "Invalid page."}; page 1 of nothing is fine."""
    assert list_memories(api, {"user_id": "nobody"}).json() == {
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
    }
    add(api, "one")
    r = list_memories(api, {"user_id": "u1"}, page=2, page_size=1)
    assert r.status_code == 404 and r.json() == {"detail": "Invalid page."}


def test_list_time_filters(emu: RunningEmulators, api: httpx.Client) -> None:
    """created_at/updated_at accept gte/lte/gt/lt with ISO datetimes or dates."""
    old = emu.mem0.add("old", user_id="u1", created_at=datetime(2024, 7, 1, 12, 0, tzinfo=UTC))
    new = add(api, "new")["results"][0]
    since = (datetime.now().astimezone() - timedelta(minutes=1)).isoformat()

    def ids(filters: Any) -> list[str]:
        return [m["id"] for m in list_memories(api, filters).json()["results"]]

    assert ids({"AND": [{"user_id": "u1"}, {"created_at": {"gte": since}}]}) == [new["id"]]
    assert ids({"AND": [{"user_id": "u1"}, {"created_at": {"lt": since}}]}) == [old["id"]]
    assert ids({"AND": [{"user_id": "u1"}, {"created_at": {"gte": "2024-07-01", "lte": "2024-07-01"}}]}) == [old["id"]]
    assert ids({"AND": [{"user_id": "u1"}, {"created_at": {"gt": "2024-07-01"}}]}) == [new["id"]]
    mark = datetime.now().astimezone().isoformat()
    api.put(f"/v1/memories/{old['id']}/", json={"text": "old, edited"})
    assert ids({"AND": [{"user_id": "u1"}, {"updated_at": {"gte": mark}}]}) == [old["id"]]


def test_list_entity_metadata_and_logic_filters(api: httpx.Client) -> None:
    """Wildcards, ne (null included), in, metadata subset, OR and NOT."""
    a = add(api, "alpha", metadata={"memsync_local_id": "L1", "level": 1})["results"][0]["id"]
    b = add(api, "beta", agent_id="bot", metadata={"memsync_local_id": "L2", "level": 2})["results"][0]["id"]
    c = add(api, "gamma", user_id="u2", run_id="r1")["results"][0]["id"]

    def ids(filters: Any) -> set[str]:
        return {m["id"] for m in list_memories(api, filters).json()["results"]}

    assert ids({"user_id": "*"}) == {a, b, c}
    assert ids({"AND": [{"user_id": "u1"}, {"agent_id": "*"}]}) == {b}
    assert ids({"AND": [{"user_id": "*"}, {"agent_id": {"ne": "bot"}}]}) == {a, c}
    assert ids({"user_id": {"in": ["u2", "zz"]}}) == {c}
    assert ids({"AND": [{"user_id": "u1"}, {"metadata": {"memsync_local_id": "L2"}}]}) == {b}
    assert ids({"AND": [{"user_id": "u1"}, {"metadata": {"level": 1, "memsync_local_id": "L1"}}]}) == {a}
    assert ids({"OR": [{"agent_id": "bot"}, {"run_id": "r1"}]}) == {b, c}
    assert ids({"AND": [{"user_id": "*"}, {"NOT": {"user_id": "u1"}}]}) == {c}
    assert ids({"AND": [{"user_id": "u1"}, {"keywords": {"icontains": "ALP"}}]}) == {a}
    assert ids({"AND": [{"user_id": "*"}, {"memory_ids": [a, c]}]}) == {a, c}


def test_search_matches_substrings_and_tokens(api: httpx.Client) -> None:
    """Search scores substring hits above partial token hits and honours filters/top_k."""
    add(api, "I drink green tea every morning")
    add(api, "tea is nice")
    add(api, "green tea", user_id="u2")
    r = api.post("/v3/memories/search/", json={"query": "Green Tea", "filters": {"user_id": "u1"}})
    results = r.json()["results"]
    assert [m["memory"] for m in results] == ["I drink green tea every morning", "tea is nice"]
    assert results[0]["score"] == 1.0 and 0 < results[1]["score"] < 1
    top1 = api.post("/v3/memories/search/", json={"query": "tea", "filters": {"user_id": "u1"}, "top_k": 1})
    assert len(top1.json()["results"]) == 1
    assert api.post("/v3/memories/search/", json={"query": "tea", "filters": {}}).status_code == 400
    assert api.post("/v3/memories/search/", json={"query": " ", "filters": {"user_id": "u1"}}).status_code == 400


# -- single memory routes ------------------------------------------------------------------


def test_update_changes_text_hash_and_updated_at(emu: RunningEmulators, api: httpx.Client) -> None:
    """PUT {"text"} updates memory, hash and updated_at; PUT {"metadata"} replaces metadata."""
    mid = add(api, "before", metadata={"a": 1})["results"][0]["id"]
    before = api.get(f"/v1/memories/{mid}/").json()
    after = api.put(f"/v1/memories/{mid}/", json={"text": "after"}).json()
    assert after["memory"] == "after"
    assert after["hash"] == hashlib.md5(b"after").hexdigest()
    assert after["updated_at"] > before["updated_at"] and after["created_at"] == before["created_at"]
    assert api.put(f"/v1/memories/{mid}/", json={"metadata": {"b": 2}}).json()["metadata"] == {"b": 2}
    assert api.put(f"/v1/memories/{mid}/", json={}).status_code == 400


def test_delete_and_history(api: httpx.Client) -> None:
    """DELETE removes the memory; history keeps ADD, UPDATE and DELETE."""
    mid = add(api, "v1")["results"][0]["id"]
    api.put(f"/v1/memories/{mid}/", json={"text": "v2"})
    assert api.delete(f"/v1/memories/{mid}/").json() == {"message": "Memory deleted successfully!"}
    assert api.get(f"/v1/memories/{mid}/").status_code == 404
    assert api.delete(f"/v1/memories/{mid}/").status_code == 404
    history = api.get(f"/v1/memories/{mid}/history/").json()
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
        ("ADD", None, "v1"),
        ("UPDATE", "v1", "v2"),
        ("DELETE", "v2", None),
    ]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_memory_routes_error_bodies(api: httpx.Client, method: str) -> None:
    """Unknown id → 404 {"error": "Memory not found!"}; malformed id → 400."""
    body = {"text": "x"} if method == "PUT" else None
    r = api.request(method, f"/v1/memories/{uuid.uuid4()}/", json=body)
    assert (r.status_code, r.json()) == (404, {"error": "Memory not found!"})
    r = api.request(method, "/v1/memories/not-a-uuid/", json=body)
    assert (r.status_code, r.json()) == (400, {"error": "memory_id should be a valid UUID"})


def test_delete_all_by_entity(api: httpx.Client) -> None:
    """DELETE /v1/memories/?user_id= removes that user's memories only; no entity → 400."""
    add(api, "mine")
    keep = add(api, "theirs", user_id="u2")["results"][0]["id"]
    assert api.delete("/v1/memories/").status_code == 400
    assert api.delete("/v1/memories/", params={"user_id": "u1"}).status_code == 200
    assert [m["id"] for m in list_memories(api, {"user_id": "*"}).json()["results"]] == [keep]


def test_batch_update_and_delete(api: httpx.Client) -> None:
    """Batch routes update/delete all listed memories or none (unknown id → 404)."""
    ids = [add(api, f"b{n}")["results"][0]["id"] for n in range(3)]
    r = api.put(
        "/v1/batch/", json={"memories": [{"memory_id": ids[0], "text": "B0"}, {"memory_id": ids[1], "text": "B1"}]}
    )
    assert r.json() == {"message": "Successfully updated 2 memories"}
    assert api.get(f"/v1/memories/{ids[1]}/").json()["memory"] == "B1"
    r = api.request(
        "DELETE", "/v1/batch/", json={"memories": [{"memory_id": ids[2]}, {"memory_id": str(uuid.uuid4())}]}
    )
    assert r.status_code == 404
    assert api.get(f"/v1/memories/{ids[2]}/").status_code == 200
    r = api.request("DELETE", "/v1/batch/", json={"memories": [{"memory_id": i} for i in ids]})
    assert r.json() == {"message": "Successfully deleted 3 memories"}
    too_many = [{"memory_id": ids[0]}] * 1001
    assert api.put("/v1/batch/", json={"memories": too_many}).json()["error"].startswith("Maximum of 1000")


def test_entities_and_entity_delete(api: httpx.Client) -> None:
    """/v1/entities/ lists users and agents; DELETE /v2/entities/user/NAME/ removes their memories."""
    add(api, "x", agent_id="bot")
    add(api, "y", user_id="u2")
    body = api.get("/v1/entities/").json()
    assert {(e["type"], e["name"]) for e in body["results"]} == {("user", "u1"), ("user", "u2"), ("agent", "bot")}
    assert body["total_users"] == 2 and body["total_agents"] == 1
    assert api.delete("/v2/entities/user/u2/").status_code == 200
    assert api.delete("/v2/entities/user/u2/").status_code == 404
    assert api.delete("/v2/entities/planet/x/").status_code == 400


def test_unknown_route_is_html_404_and_wrong_method_405(api: httpx.Client) -> None:
    """Unknown URLs get Django's HTML 404 (not JSON); a wrong method gets DRF's 405."""
    r = api.get("/v1/nope/")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    r = api.patch("/v1/ping/")
    assert r.status_code == 405 and r.json() == {"detail": 'Method "PATCH" not allowed.'}


# -- faults --------------------------------------------------------------------------------


def test_fault_match_fails_exactly_the_matching_adds(
    emu: RunningEmulators, api: httpx.Client, admin: httpx.Client
) -> None:
    """{"fault": "500", "match": "fail-me"} fails 2 of 7 adds, every time."""
    r = admin.post("/_admin/fault", json={"fault": "500", "match": "fail-me"})
    assert r.status_code == 200 and r.json()["match"] == "fail-me"
    texts = ["a", "fail-me 1", "b", "c", "fail-me 2", "d", "e"]
    for _ in range(2):
        statuses = [
            api.post(
                "/v3/memories/add/", json={"messages": [{"role": "user", "content": t}], "user_id": "u1"}
            ).status_code
            for t in texts
        ]
        assert statuses == [200, 500, 200, 200, 500, 200, 200]
    assert r.json()["fault"] == "500"
    assert api.get("/v1/ping/").status_code == 200


def test_fault_count_hits_only_the_next_n_requests(emu: RunningEmulators, api: httpx.Client) -> None:
    """count=2 → exactly two faulted requests, then the fault is gone."""
    emu.set_fault("mem0", "500", count=2)
    assert [api.get("/v1/ping/").status_code for _ in range(4)] == [500, 500, 200, 200]
    assert emu.mem0_app.faults.spec.fault is None


def test_fault_500_is_an_html_server_error(emu: RunningEmulators, api: httpx.Client) -> None:
    """The injected 500 looks like Django's: HTML, not JSON."""
    emu.set_fault("mem0", "500")
    r = api.get("/v1/ping/")
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")


def test_fault_429_has_retry_after_and_rate_limit_headers(emu: RunningEmulators, api: httpx.Client) -> None:
    """429 carries Retry-After (configurable) and X-RateLimit-* headers."""
    emu.set_fault("mem0", "429", retry_after=3)
    r = api.get("/v1/ping/")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.headers)
    assert "throttled" in r.json()["detail"]


def test_fault_401_rejects_even_the_right_key(emu: RunningEmulators, api: httpx.Client) -> None:
    """The 401 fault answers every API request with the invalid-key body."""
    emu.set_fault("mem0", "401")
    r = api.get("/v1/ping/")
    assert r.status_code == 401 and r.json()["detail"].startswith("Invalid API key")


def test_fault_reset_aborts_the_connection(emu: RunningEmulators, api: httpx.Client) -> None:
    """reset → the client sees the connection torn down, not a response."""
    emu.set_fault("mem0", "reset", count=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.get("/v1/ping/")
    assert api.get("/v1/ping/").status_code == 200
    assert emu.requests("mem0")[0]["fault"] == "reset"


def test_fault_timeout_holds_the_request_until_the_client_gives_up(emu: RunningEmulators, api: httpx.Client) -> None:
    """timeout → no answer; a short client timeout fires; the server keeps serving."""
    emu.set_fault("mem0", "timeout", count=1)
    with pytest.raises(httpx.ReadTimeout):
        api.get("/v1/ping/", timeout=0.3)
    assert api.get("/v1/ping/").status_code == 200


@pytest.mark.parametrize(
    ("fault", "status", "looks_like"),
    [
        ("403", 403, '"detail": "You do not have permission'),
        ("404", 404, '"error": "Memory not found!"'),
        ("422", 422, '"error": "Unprocessable request'),
        ("502", 502, "<title>502 Bad Gateway</title>"),
        ("503", 503, "<title>503 Service Temporarily Unavailable</title>"),
        ("malformed-200", 200, '{"results": [{"id": "'),
        ("unexpected-shape-200", 200, '{"message": "OK"}'),
        ("400-echo", 400, f"authorization: Token {KEY}"),
    ],
)
def test_status_and_broken_body_faults(emu: RunningEmulators, api: httpx.Client, fault: str, status: int,
                                       looks_like: str) -> None:
    """Each HTTP fault answers with its status and a body in the style of whoever would send it."""
    emu.set_fault("mem0", fault, count=1)
    r = api.post("/v3/memories/add/", json={"messages": [{"role": "user", "content": "x"}], "user_id": "u1"})
    assert (r.status_code, r.text.startswith(looks_like) or looks_like in r.text) == (status, True), r.text
    if fault == "malformed-200":
        with pytest.raises(ValueError):
            r.json()
    assert api.get("/v1/ping/").status_code == 200  # count=1: used up
    assert emu.mem0.memories() == []  # answered before the route: nothing was stored


def test_request_log_pages_by_seq(emu: RunningEmulators, api: httpx.Client, admin: httpx.Client) -> None:
    """Entries are numbered; ``since`` returns only newer ones; numbers go on after a clear."""
    for _ in range(3):
        api.get("/v1/ping/")
    log = admin.get("/_admin/requests").json()
    seqs = [e["seq"] for e in log]
    assert len(seqs) >= 3 and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [e["seq"] for e in admin.get("/_admin/requests", params={"since": seqs[-2]}).json()] == [seqs[-1]]
    admin.delete("/_admin/requests")
    api.get("/v1/ping/")
    assert [e["seq"] for e in admin.get("/_admin/requests").json()] == [seqs[-1] + 1]
    assert admin.get("/_admin/requests", params={"since": "-1"}).status_code == 400


def test_latency_is_added(emu: RunningEmulators, api: httpx.Client, admin: httpx.Client) -> None:
    """latency_ms delays API requests (admin routes are never delayed)."""
    emu.set_fault("mem0", latency_ms=150)
    t0 = time.monotonic()
    assert api.get("/v1/ping/").status_code == 200
    assert time.monotonic() - t0 >= 0.14
    t0 = time.monotonic()
    admin.get("/_admin/requests")
    assert time.monotonic() - t0 < 0.14


def test_fail_rate_is_reproducible_with_a_seed(emu: RunningEmulators, api: httpx.Client, admin: httpx.Client) -> None:
    """The same seed gives the same pattern of injected 500s."""
    patterns = []
    for _ in range(2):
        admin.post("/_admin/fault", json={"fail_rate": 0.5, "seed": 42})
        patterns.append([api.get("/v1/ping/").status_code for _ in range(20)])
    assert patterns[0] == patterns[1]
    assert 500 in patterns[0] and 200 in patterns[0]


@pytest.mark.parametrize(
    "body",
    [{"fault": "418"}, {"fault": "500", "count": 0}, {"fail_rate": 2}, {"latency_ms": -1}, {"bogus": 1}, [1]],
)
def test_admin_fault_validation(emu: RunningEmulators, api: httpx.Client, admin: httpx.Client, body: Any) -> None:
    """Malformed fault specs are refused with 400 and leave the current spec alone."""
    r = admin.post("/_admin/fault", json=body)
    assert r.status_code == 400 and "detail" in r.json()
    assert admin.get("/_admin/fault").json()["fault"] is None


# -- admin ---------------------------------------------------------------------------------


def test_admin_request_log_redacts_and_includes_faulted(
    emu: RunningEmulators, api: httpx.Client, admin: httpx.Client
) -> None:
    """Every API request is logged with its status, Authorization redacted; admin calls are not."""
    emu.set_fault("mem0", "500", match="boom")
    add(api, "fine")
    api.post("/v3/memories/add/", json={"messages": [{"role": "user", "content": "boom"}], "user_id": "u1"})
    log = admin.get("/_admin/requests").json()
    assert [(e["method"], e["path"], e["status"], e["fault"]) for e in log] == [
        ("POST", "/v3/memories/add/", 200, None),
        ("POST", "/v3/memories/add/", 500, "500"),
    ]
    assert log[0]["headers"]["authorization"] == "<redacted>"
    assert KEY not in str(log)
    assert '"fine"' in log[0]["body"]
    assert admin.delete("/_admin/requests").status_code == 200
    assert admin.get("/_admin/requests").json() == []


def test_admin_state_add_mode_and_reset(emu: RunningEmulators, api: httpx.Client, admin: httpx.Client) -> None:
    """State shows deleted memories too; add_mode switches modes; reset wipes data."""
    mid = add(api, "gone")["results"][0]["id"]
    api.delete(f"/v1/memories/{mid}/")
    state = admin.get("/_admin/state").json()
    assert state["memories"][0]["id"] == mid and state["memories"][0]["deleted_at"]
    assert len(state["events"]) == 1
    r = admin.post("/_admin/add_mode", json={"mode": "queued", "delay_ms": 5})
    assert r.json()["mode"] == "queued" and emu.mem0.add_mode.delay_ms == 5
    assert admin.post("/_admin/add_mode", json={"mode": "later"}).status_code == 400
    assert admin.post("/_admin/reset").status_code == 200
    assert emu.mem0.memories(include_deleted=True) == []


def test_admin_routes_need_no_key_and_are_never_faulted(
    emu: RunningEmulators, api: httpx.Client, admin: httpx.Client
) -> None:
    """With a catch-all fault active, /_admin/ still answers without credentials."""
    emu.set_fault("mem0", "reset")
    assert admin.get("/_admin/state").status_code == 200
    assert admin.post("/_admin/fault", json={"fault": None}).json()["fault"] is None
    assert admin.get("/_admin/nope").status_code == 404


def test_in_process_helpers_share_state_with_http(emu: RunningEmulators, api: httpx.Client) -> None:
    """emu.mem0 helpers see HTTP writes and HTTP sees helper writes; wait_for polls queued adds."""
    helper = emu.mem0.add("from a test", user_id="u1", metadata={"memsync_local_id": "L9"})
    assert api.get(f"/v1/memories/{helper['id']}/").json()["metadata"] == {"memsync_local_id": "L9"}
    emu.mem0.set_add_mode("queued", delay_ms=10)
    add(api, "over http")
    assert emu.wait_for(lambda: len(emu.mem0.memories()) == 2, timeout=5)
    assert emu.mem0.events()[0]["status"] == "SUCCEEDED"
    assert emu.mem0.update(helper["id"], text="edited")["memory"] == "edited"
    assert emu.mem0.delete(helper["id"]) and not emu.mem0.delete(helper["id"])
    assert [m["memory"] for m in emu.mem0.memories()] == ["over http"]


def test_faults_can_be_set_at_start() -> None:
    """RunningEmulators(fault=..., latency_ms=...) applies them to both emulators from the first request."""
    with RunningEmulators(api_key=KEY, fault="429", latency_ms=20) as running:
        r = httpx.get(f"{running.mem0_url}/v1/ping/", headers={"Authorization": f"Token {KEY}"})
        assert (r.status_code, r.headers["retry-after"]) == (429, "1")
        assert httpx.get(f"{running.openmemory_url}/api/v1/stats/").status_code == 429
        assert running.mem0_app.faults.spec.latency_ms == 20
