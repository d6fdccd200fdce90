"""engine/exactly_once.py in-process: ``ExactlyOnce`` and ``IntentLog`` over a real state DB and the mem0 emulator.

The create is the one cloud write that is not idempotent. Checked here: the intent is durable before
the add leaves, every retry is preceded by a lookup by ``memsync_local_id``, a queued add is followed
through its event (and its event id kept with the intent), ``find_landed`` prefers the event to the
metadata lookup, and intents recorded together share one commit.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import EngineRig, run_with_rig

from memsyncd.engine.exactly_once import INTENT_SKEW, ExactlyOnce, IntentLog
from memsyncd.errors import CloudProcessingError, ServerError, StateUnreadableError
from memsyncd.models import LocalMemory, PushIntent, format_ts, parse_ts, utc_now
from memsyncd.store.state import StateStore

pytestmark = pytest.mark.timeout(20)


def once(rig: EngineRig, event_wait: float = 2.0) -> ExactlyOnce:
    rig.cloud.begin_run()
    return ExactlyOnce(rig.cloud, rig.ctx.state, event_wait, rig.ctx.intents)


def local(rig: EngineRig, text: str) -> LocalMemory:
    return LocalMemory(id=rig.local_add(text), text=text)


def trail(rig: EngineRig) -> list[str]:
    """mem0 requests as "add" / "list" / "event" / "get"."""
    names = []
    for r in rig.mem0_http.sent:
        path = r.url.path
        names.append("add" if path == "/v3/memories/add/" else "list" if path == "/v3/memories/" else
                     "event" if path.startswith("/v1/event/") else f"{r.method.lower()}")
    return names


def test_create_records_the_intent_first_then_maps_and_clears_it(tmp_path: Path) -> None:
    """The intent is visible to another connection when the add arrives; afterwards mapping yes, intent no."""

    async def body(rig: EngineRig) -> None:
        memory = local(rig, "exactly once")
        other = StateStore(rig.ctx.paths.state)
        at_add: list[PushIntent | None] = []
        rig.mem0_http.before = lambda r: at_add.append(other.intent_for(memory.id)) if "add" in r.url.path else None
        try:
            cloud_id = await once(rig).create(memory, 2)
        finally:
            other.close()
        assert at_add and at_add[0] is not None and at_add[0].content_hash == memory.hash
        assert trail(rig) == ["add"]
        mapping = rig.ctx.state.mapping_for_local(memory.id)
        assert mapping is not None and (mapping.cloud_id, mapping.level, mapping.base_text) == (cloud_id, 2,
                                                                                               "exactly once")
        assert rig.ctx.state.intent_for(memory.id) is None
        stored = rig.mem0.get(cloud_id)
        assert stored is not None and stored["metadata"] == {
            "memsync_local_id": memory.id, "memsync_device": rig.ctx.state.device_id, "level": 2,
            "content_hash": memory.hash}

    run_with_rig(tmp_path, body)


def test_every_retry_is_preceded_by_a_lookup(tmp_path: Path) -> None:
    """Three attempts, all 500: add, list, add, list, add; then ServerError; the intent stays for the next run."""

    async def body(rig: EngineRig) -> None:
        memory = local(rig, "never lands")
        rig.mem0_http.before = lambda r: httpx.Response(500, text="x") if r.url.path.endswith("/add/") else None
        with pytest.raises(ServerError):
            await once(rig).create(memory, 1)
        assert trail(rig) == ["add", "list", "add", "list", "add"]
        for lookup in rig.mem0_http.requests("POST", "/v3/memories/"):
            if lookup.url.path == "/v3/memories/":
                clauses = json.loads(lookup.content)["filters"]["AND"]
                assert {"metadata": {"memsync_local_id": memory.id}} in clauses
        assert rig.ctx.state.intent_for(memory.id) is not None and rig.ctx.state.count_mappings() == 0
        assert rig.cloud_texts() == []

    run_with_rig(tmp_path, body, attempts=3)


def test_a_lost_answer_is_found_by_the_lookup_and_not_added_twice(tmp_path: Path) -> None:
    """The first add lands but answers 503: the lookup before the retry finds it; one memory, mapped to it."""

    async def body(rig: EngineRig) -> None:
        memory = local(rig, "answer lost")
        landed: list[str] = []

        def land_then_503(request: httpx.Request) -> httpx.Response | None:
            if request.url.path.endswith("/add/"):
                sent = json.loads(request.content)
                landed.append(rig.cloud_add(sent["messages"][0]["content"], **sent["metadata"]))
                return httpx.Response(503, text="unavailable")
            return None

        rig.mem0_http.before = land_then_503
        cloud_id = await once(rig).create(memory, 1)
        assert cloud_id == landed[0] and trail(rig) == ["add", "list"]
        assert rig.cloud_texts() == ["answer lost"]

    run_with_rig(tmp_path, body)


def test_a_queued_add_is_followed_and_its_event_id_kept_with_the_intent(tmp_path: Path) -> None:
    """Queued: the event id is written to the intent before polling; the event's memory is mapped."""

    async def body(rig: EngineRig) -> None:
        rig.mem0.set_add_mode("queued", delay_ms=20)
        memory = local(rig, "queued")
        intents_seen: list[PushIntent | None] = []
        rig.mem0_http.before = lambda r: intents_seen.append(rig.ctx.state.intent_for(memory.id)) \
            if r.url.path.startswith("/v1/event/") else None
        cloud_id = await once(rig).create(memory, 1)
        assert intents_seen and intents_seen[0] is not None and intents_seen[0].event_id
        assert trail(rig)[0] == "add" and set(trail(rig)[1:]) == {"event"}
        assert rig.mem0.get(cloud_id) is not None
        assert rig.ctx.state.intent_for(memory.id) is None

    run_with_rig(tmp_path, body)


def test_a_queued_add_still_pending_raises_processing_and_keeps_the_intent(tmp_path: Path) -> None:
    """Past event_wait_seconds: CloudProcessingError (not an error row), no mapping, intent with its event id."""

    async def body(rig: EngineRig) -> None:
        rig.mem0.set_add_mode("queued", delay_ms=60_000)
        memory = local(rig, "slow")
        with pytest.raises(CloudProcessingError):
            await once(rig, event_wait=0).create(memory, 1)
        intent = rig.ctx.state.intent_for(memory.id)
        assert intent is not None and intent.event_id and rig.ctx.state.count_mappings() == 0

    run_with_rig(tmp_path, body)


def test_a_failed_event_is_a_server_error(tmp_path: Path) -> None:
    """mem0 reports the queued add FAILED: ServerError (the entry is pushed again later), nothing mapped."""

    async def body(rig: EngineRig) -> None:
        rig.mem0.set_add_mode("queued", delay_ms=0, fail_match="doomed")
        memory = local(rig, "doomed add")
        with pytest.raises(ServerError, match="FAILED"):
            await once(rig).create(memory, 1)
        assert rig.ctx.state.count_mappings() == 0

    run_with_rig(tmp_path, body)


def test_find_landed_asks_the_event_first(tmp_path: Path) -> None:
    """An intent with an event id: SUCCEEDED → that memory (no metadata lookup); PENDING → CloudProcessingError."""

    async def body(rig: EngineRig) -> None:
        rig.mem0.set_add_mode("queued", delay_ms=60_000)
        memory = local(rig, "look at the event")
        with pytest.raises(CloudProcessingError):
            await once(rig, event_wait=0).create(memory, 1)
        intent = rig.ctx.state.intent_for(memory.id)
        assert intent is not None and intent.event_id
        rig.mem0_http.sent.clear()
        with pytest.raises(CloudProcessingError):
            await once(rig).find_landed(intent)
        rig.mem0.process_event(intent.event_id)
        found = await once(rig).find_landed(intent)
        assert found is not None and found.text == "look at the event"
        assert "list" not in trail(rig)

    run_with_rig(tmp_path, body)


def test_find_landed_without_an_event_looks_up_by_local_id_since_the_intent(tmp_path: Path) -> None:
    """No event id: one listing filtered by memsync_local_id and created_at >= started_at - INTENT_SKEW."""

    async def body(rig: EngineRig) -> None:
        assert await once(rig).find_landed(None) is None and rig.mem0_http.sent == []
        started = utc_now()
        intent = PushIntent("local-1", "h", format_ts(started))
        assert await once(rig).find_landed(intent) is None
        (lookup,) = rig.mem0_http.sent
        clauses: list[dict[str, Any]] = json.loads(lookup.content)["filters"]["AND"]
        assert {"metadata": {"memsync_local_id": "local-1"}} in clauses
        (since,) = [c["created_at"]["gte"] for c in clauses if "created_at" in c]
        assert parse_ts(since) == parse_ts(intent.started_at) - INTENT_SKEW
        cloud_id = rig.cloud_add("mine", memsync_local_id="local-1")
        rig.cloud_add("someone else's", memsync_local_id="local-2")
        found = await once(rig).find_landed(intent)
        assert found is not None and found.id == cloud_id

    run_with_rig(tmp_path, body)


def test_intents_recorded_together_share_one_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 creates ready at once: far fewer than 20 record_intents transactions, every intent durable."""

    async def body(rig: EngineRig) -> None:
        state = rig.ctx.state
        calls: list[int] = []
        real = state.record_intents

        def counting(items: Any) -> Any:
            calls.append(len(items))
            return real(items)

        monkeypatch.setattr(state, "record_intents", counting)
        log = IntentLog(state)
        intents = await asyncio.gather(*(log.record(f"id-{i}", f"h{i}") for i in range(20)))
        assert [i.local_id for i in intents] == [f"id-{i}" for i in range(20)]
        assert sum(calls) == 20 and len(calls) <= 2
        other = StateStore(rig.ctx.paths.state)
        try:
            assert {i.local_id for i in other.intents()} == {f"id-{i}" for i in range(20)}
        finally:
            other.close()

    run_with_rig(tmp_path, body)


def test_a_failed_intent_commit_fails_every_waiter_and_sends_nothing(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The state DB fails while committing: each waiting create gets the error; no add goes out."""

    async def body(rig: EngineRig) -> None:
        def broken(items: Any) -> Any:
            raise StateUnreadableError("disk I/O error")

        monkeypatch.setattr(rig.ctx.state, "record_intents", broken)
        memories = [local(rig, f"no intent {i}") for i in range(3)]
        results = await asyncio.gather(*(once(rig).create(m, 1) for m in memories), return_exceptions=True)
        assert all(isinstance(r, StateUnreadableError) for r in results)
        assert rig.mem0_http.sent == []

    run_with_rig(tmp_path, body)


def test_a_rate_limited_add_is_retried_after_a_lookup(tmp_path: Path) -> None:
    """429 on the add: like any retry, the next add is preceded by a lookup; one memory in the end."""

    async def body(rig: EngineRig) -> None:
        memory = local(rig, "throttled")
        limited: list[bool] = []

        def once_429(request: httpx.Request) -> httpx.Response | None:
            if request.url.path.endswith("/add/") and not limited:
                limited.append(True)
                return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "throttled"})
            return None

        rig.mem0_http.before = once_429
        await once(rig).create(memory, 1)
        assert trail(rig) == ["add", "list", "add"] and rig.cloud_texts() == ["throttled"]

    run_with_rig(tmp_path, body)
