"""engine/push.py in-process: ``run_push`` over a SyncContext whose clients talk to the emulators through httpx.

What is checked is what reached the wire (``EmulatorTransport.sent``), the queue file and the state DB,
and the report: creates carry our metadata after a durable intent, level 0 never leaves the machine,
retries look before re-adding, a 401 or a dead network stops the run and leaves the queue as it was,
failed items stay queued with one ``sync_errors`` row, and a dry run writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import INPROC_KEY, EngineRig, run_with_rig

from memsyncd.engine.context import RunStop
from memsyncd.engine.push import run_push
from memsyncd.engine.report import PushReport
from memsyncd.errors import AuthError, NetworkUnreachableError
from memsyncd.models import Mapping
from memsyncd.store.state import StateStore

pytestmark = pytest.mark.timeout(20)


def adds(rig: EngineRig) -> list[dict[str, Any]]:
    """The bodies of the add requests mem0 received, in order."""
    return [json.loads(r.content) for r in rig.mem0_http.requests("POST", "/v3/memories/add/")]


def writes(rig: EngineRig) -> list[httpx.Request]:
    """Every request that could change the cloud (add, update, delete)."""
    return [r for r in rig.mem0_http.sent if r.method in ("PUT", "DELETE") or r.url.path == "/v3/memories/add/"]


def queue_json(rig: EngineRig) -> dict[str, Any]:
    return dict(json.loads(rig.ctx.paths.queue.read_text()))


async def push(rig: EngineRig) -> PushReport:
    rig.cloud.begin_run()
    return await run_push(rig.ctx, rig.cloud)


def test_new_memories_are_created_with_our_metadata_mapped_and_leave_the_queue(tmp_path: Path) -> None:
    """Two queued memories: two adds with infer false and memsync metadata; mappings; the queue is empty."""

    async def body(rig: EngineRig) -> None:
        first, second = rig.local_add("likes tea"), rig.local_add("works remotely", level=2)
        rig.enqueue(first, second)
        report = await push(rig)
        assert (report.created, report.attempted, report.errors) == (2, 2, 0)
        sent = {body["messages"][0]["content"]: body for body in adds(rig)}
        assert set(sent) == {"likes tea", "works remotely"}
        meta = sent["works remotely"]["metadata"]
        assert meta["memsync_local_id"] == second and meta["level"] == 2
        assert meta["memsync_device"] == rig.ctx.state.device_id
        assert sent["likes tea"]["infer"] is False and sent["likes tea"]["metadata"]["level"] == 1
        for local_id, text in ((first, "likes tea"), (second, "works remotely")):
            mapping = rig.ctx.state.mapping_for_local(local_id)
            assert mapping is not None and mapping.base_text == text
            stored = rig.mem0.get(mapping.cloud_id)
            assert stored is not None and stored["memory"] == text
        assert rig.ctx.state.intents() == []
        doc = queue_json(rig)
        assert doc["pending"] == [] and doc["sync_errors"] == []

    run_with_rig(tmp_path, body)


def test_the_intent_is_on_disk_before_every_add_is_sent(tmp_path: Path) -> None:
    """At the moment each add reaches mem0, a second connection to the state DB already sees its intent."""

    async def body(rig: EngineRig) -> None:
        ids = [rig.local_add(f"intent first {i}") for i in range(5)]
        rig.enqueue(*ids)
        other = StateStore(rig.ctx.paths.state)
        seen: dict[str, bool] = {}

        def check(request: httpx.Request) -> None:
            if request.url.path == "/v3/memories/add/":
                local_id = json.loads(request.content)["metadata"]["memsync_local_id"]
                seen[local_id] = other.intent_for(local_id) is not None

        rig.mem0_http.before = check
        try:
            assert (await push(rig)).created == 5
        finally:
            other.close()
        assert seen == dict.fromkeys(ids, True)

    run_with_rig(tmp_path, body, concurrency=2)


@pytest.mark.parametrize("how", ["metadata", "queued"])
def test_level_0_is_never_sent_and_leaves_the_queue(tmp_path: Path, how: str) -> None:
    """Level 0 in the memory's metadata or on the queue entry: no cloud write, counted as skipped, dequeued."""

    async def body(rig: EngineRig) -> None:
        if how == "metadata":
            private = rig.local_add("my bank pin hint", level=0)
            rig.enqueue(private)
        else:
            private = rig.local_add("my bank pin hint")
            rig.enqueue(private, level=0)
        public = rig.local_add("prefers dark mode")
        rig.enqueue(public)
        report = await push(rig)
        assert (report.skipped_private, report.created, report.attempted) == (1, 1, 1)
        assert [b["messages"][0]["content"] for b in adds(rig)] == ["prefers dark mode"]
        assert "my bank pin hint" not in "".join(r.content.decode() for r in rig.mem0_http.sent)
        assert rig.ctx.state.mapping_for_local(private) is None and rig.ctx.state.intent_for(private) is None
        if how == "queued":  # the lowest level wins: the local memory is not even read
            assert not rig.local_http.requests("GET", f"/api/v1/memories/{private}")
        assert queue_json(rig)["pending"] == []

    run_with_rig(tmp_path, body)


def test_default_level_0_keeps_unlabelled_memories_local(tmp_path: Path) -> None:
    """``sync.default_level`` 0: a memory without a level is never sent."""

    async def body(rig: EngineRig) -> None:
        rig.enqueue(rig.local_add("no level given"))
        report = await push(rig)
        assert report.skipped_private == 1 and writes(rig) == []

    run_with_rig(tmp_path, body, default_level=0)


def test_a_synced_memory_queued_at_level_0_keeps_its_cloud_copy_and_records_the_level(tmp_path: Path) -> None:
    """Private now, synced before: nothing is sent or deleted; the mapping's level becomes 0 (for forget/doctor)."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("was shared")
        rig.enqueue(local_id)
        await push(rig)
        before = len(rig.mem0_http.sent)
        rig.enqueue(local_id, level=0)
        report = await push(rig)
        assert report.skipped_private == 1 and len(rig.mem0_http.sent) == before
        mapping = rig.ctx.state.mapping_for_local(local_id)
        assert mapping is not None and mapping.level == 0
        assert rig.cloud_texts() == ["was shared"]

    run_with_rig(tmp_path, body)


def test_a_500_is_retried_after_looking_for_the_first_add(tmp_path: Path) -> None:
    """add → 500, then a lookup by memsync_local_id (nothing landed), then a second add that succeeds."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("flaky once")
        rig.enqueue(local_id)
        failed: list[str] = []

        def once_500(request: httpx.Request) -> httpx.Response | None:
            if request.url.path == "/v3/memories/add/" and not failed:
                failed.append(request.url.path)
                return httpx.Response(500, text="boom")
            return None

        rig.mem0_http.before = once_500
        report = await push(rig)
        assert (report.created, report.errors) == (1, 0)
        trail = [(r.method, r.url.path) for r in rig.mem0_http.sent]
        assert trail == [("POST", "/v3/memories/add/"), ("POST", "/v3/memories/"), ("POST", "/v3/memories/add/")]
        lookup = json.loads(rig.mem0_http.sent[1].content)["filters"]["AND"]
        assert {"metadata": {"memsync_local_id": local_id}} in lookup
        assert rig.cloud_texts() == ["flaky once"]

    run_with_rig(tmp_path, body)


def test_an_add_that_landed_but_answered_500_is_found_not_repeated(tmp_path: Path) -> None:
    """The add reached mem0 but its answer was lost (500): the lookup finds it; no second add; mapped to it."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("landed anyway")
        rig.enqueue(local_id)
        landed: list[str] = []

        def land_then_fail(request: httpx.Request) -> httpx.Response | None:
            if request.url.path == "/v3/memories/add/":
                sent = json.loads(request.content)
                landed.append(rig.cloud_add(sent["messages"][0]["content"], **sent["metadata"]))
                return httpx.Response(502, text="bad gateway")
            return None

        rig.mem0_http.before = land_then_fail
        report = await push(rig)
        assert report.created == 1 and len(landed) == 1 and len(adds(rig)) == 1
        assert rig.cloud_texts() == ["landed anyway"]
        mapping = rig.ctx.state.mapping_for_local(local_id)
        assert mapping is not None and mapping.cloud_id == landed[0]

    run_with_rig(tmp_path, body)


def test_a_pending_intent_is_resolved_before_any_new_create(tmp_path: Path) -> None:
    """A crash after the add (intent recorded, no mapping): the next push looks first, finds it, sends no add."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("crashed after the add")
        rig.ctx.state.record_intent(local_id, "whatever")
        cloud_id = rig.cloud_add("crashed after the add", memsync_local_id=local_id,
                                 memsync_device=rig.ctx.state.device_id)
        rig.enqueue(local_id)
        report = await push(rig)
        assert adds(rig) == [] and report.errors == 0
        mapping = rig.ctx.state.mapping_for_local(local_id)
        assert mapping is not None
        assert mapping == Mapping(local_id, cloud_id, mapping.base_hash, "crashed after the add", 1)
        assert rig.ctx.state.intent_for(local_id) is None and rig.cloud_texts() == ["crashed after the add"]

    run_with_rig(tmp_path, body)


def test_a_queued_add_is_followed_through_its_event(tmp_path: Path) -> None:
    """mem0 queues the add: the push polls the event and maps the memory it produced."""

    async def body(rig: EngineRig) -> None:
        rig.mem0.set_add_mode("queued", delay_ms=30)
        local_id = rig.local_add("queued add")
        rig.enqueue(local_id)
        report = await push(rig)
        assert report.created == 1 and report.waiting == 0
        assert rig.mem0_http.requests("GET", "/v1/event/")
        mapping = rig.ctx.state.mapping_for_local(local_id)
        assert mapping is not None and rig.mem0.get(mapping.cloud_id) is not None
        assert queue_json(rig)["pending"] == []

    run_with_rig(tmp_path, body, event_wait_seconds=5)


def test_a_queued_add_still_processing_waits_in_the_queue_without_an_error_row(tmp_path: Path) -> None:
    """Still PENDING after event_wait_seconds: WAITING; the entry stays, no sync_errors row, the intent keeps
    the event id; once mem0 is done the next push maps it through the event, without a second add."""

    async def body(rig: EngineRig) -> None:
        rig.mem0.set_add_mode("queued", delay_ms=60_000)
        local_id = rig.local_add("slow queued add")
        (entry,) = rig.enqueue(local_id)
        report = await push(rig)
        assert (report.waiting, report.created, report.errors, report.attempted) == (1, 0, 0, 0)
        doc = queue_json(rig)
        assert [e["id"] for e in doc["pending"]] == [entry.id] and doc["sync_errors"] == []
        intent = rig.ctx.state.intent_for(local_id)
        assert intent is not None and intent.event_id
        rig.mem0.process_event(intent.event_id)
        report = await push(rig)
        assert report.synced == 1 and report.waiting == 0 and len(adds(rig)) == 1  # found, not added again
        assert rig.ctx.state.mapping_for_local(local_id) is not None and queue_json(rig)["pending"] == []

    run_with_rig(tmp_path, body, event_wait_seconds=0)


def test_a_rejected_key_stops_the_run_at_once_and_leaves_the_queue_byte_for_byte(tmp_path: Path) -> None:
    """20 items, 8 slots, mem0 answers 401: one request is sent, RunStop(AuthError), the file is untouched."""

    async def body(rig: EngineRig) -> None:
        rig.enqueue(*(rig.local_add(f"rejected {i}") for i in range(20)))
        before = rig.ctx.paths.queue.read_bytes()
        rig.mem0_http.before = lambda request: httpx.Response(401, json={"detail": "Invalid API key"})
        with pytest.raises(RunStop) as stopped:
            await push(rig)
        assert isinstance(stopped.value.cause, AuthError)
        assert len(rig.mem0_http.sent) == 1
        assert rig.ctx.paths.queue.read_bytes() == before
        assert rig.ctx.state.count_mappings() == 0

    run_with_rig(tmp_path, body, concurrency=8)


def test_a_dead_network_stops_the_run_and_writes_nothing_to_the_queue(tmp_path: Path) -> None:
    """mem0 unreachable (connect error): RunStop(NetworkUnreachableError), no sync_errors rows, queue as it was."""

    async def body(rig: EngineRig) -> None:
        rig.enqueue(*(rig.local_add(f"offline {i}") for i in range(3)))
        before = rig.ctx.paths.queue.read_bytes()

        def down(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

        rig.mem0_http.before = down
        with pytest.raises(RunStop) as stopped:
            await push(rig)
        assert isinstance(stopped.value.cause, NetworkUnreachableError)
        assert rig.ctx.paths.queue.read_bytes() == before

    run_with_rig(tmp_path, body)


def test_an_item_that_keeps_failing_stays_queued_with_one_error_row(tmp_path: Path) -> None:
    """One memory's add always 500s (after its attempts): it stays with a sync_errors row; the other is done."""

    async def body(rig: EngineRig) -> None:
        bad, good = rig.local_add("always fails"), rig.local_add("goes through")
        rig.enqueue(bad, good)

        def fail_one(request: httpx.Request) -> httpx.Response | None:
            if request.url.path == "/v3/memories/add/" and b"always fails" in request.content:
                return httpx.Response(500, text="nope")
            return None

        rig.mem0_http.before = fail_one
        report = await push(rig)
        assert (report.created, report.errors) == (1, 1)
        assert report.error_messages and report.error_messages[0].startswith(f"{bad}: ")
        assert sum(b"always fails" in r.content for r in adds_requests(rig)) == 3  # attempts_per_run
        doc = queue_json(rig)
        assert [e["id"] for e in doc["pending"]] == [bad]
        assert [(row["id"], row["retries"]) for row in doc["sync_errors"]] == [(bad, 1)]
        assert rig.ctx.state.intent_for(bad) is not None  # kept: the next run looks before adding again
        rig.mem0_http.before = None
        report = await push(rig)
        doc = queue_json(rig)
        assert report.created == 1 and doc["pending"] == [] and doc["sync_errors"] == []

    run_with_rig(tmp_path, body, attempts=3)


def adds_requests(rig: EngineRig) -> list[httpx.Request]:
    return rig.mem0_http.requests("POST", "/v3/memories/add/")


def test_a_local_edit_of_a_synced_memory_updates_the_cloud_and_the_base(tmp_path: Path) -> None:
    """Mapped, edited here only: one PUT with the new text and our metadata; the base follows."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("version one")
        rig.enqueue(local_id)
        await push(rig)
        rig.openmemory.update_content(local_id, "version two")
        rig.enqueue(local_id)
        report = await push(rig)
        assert report.updated == 1
        (put,) = rig.mem0_http.requests("PUT")
        sent = json.loads(put.content)
        assert sent["text"] == "version two" and sent["metadata"]["memsync_local_id"] == local_id
        mapping = rig.ctx.state.mapping_for_local(local_id)
        assert mapping is not None and mapping.base_text == "version two"
        assert rig.cloud_texts() == ["version two"]

    run_with_rig(tmp_path, body)


def test_edits_on_both_sides_become_a_conflict_and_nothing_is_overwritten(tmp_path: Path) -> None:
    """Mapped, edited here and in the cloud: a conflict is recorded once, no PUT; a second push adds none."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("base text")
        rig.enqueue(local_id)
        await push(rig)
        mapping = rig.ctx.state.mapping_for_local(local_id)
        assert mapping is not None
        rig.mem0.update(mapping.cloud_id, text="cloud edit")
        rig.openmemory.update_content(local_id, "local edit")
        rig.enqueue(local_id)
        report = await push(rig)
        assert report.conflicts == 1 and rig.mem0_http.requests("PUT") == []
        (conflict,) = rig.ctx.state.conflicts()
        assert (conflict.local_text, conflict.cloud_text, conflict.base_text) == ("local edit", "cloud edit",
                                                                                 "base text")
        assert rig.cloud_texts() == ["cloud edit"] and rig.local_texts() == ["local edit"]
        rig.enqueue(local_id)
        again = await push(rig)
        assert again.conflicts == 0 and again.unchanged == 1 and len(rig.ctx.state.conflicts()) == 1

    run_with_rig(tmp_path, body)


def test_a_local_delete_deletes_the_cloud_copy_unless_it_was_edited_there(tmp_path: Path) -> None:
    """Synced then deleted here: DELETE in the cloud and unmapped; over a cloud edit: a conflict, no DELETE."""

    async def body(rig: EngineRig) -> None:
        plain, edited = rig.local_add("delete me"), rig.local_add("edited in the cloud")
        rig.enqueue(plain, edited)
        await push(rig)
        edited_map = rig.ctx.state.mapping_for_local(edited)
        assert edited_map is not None
        rig.mem0.update(edited_map.cloud_id, text="edited in the cloud, v2")
        rig.openmemory.delete(plain)
        rig.openmemory.delete(edited)
        rig.enqueue(plain, edited, action="delete")
        report = await push(rig)
        assert (report.deleted, report.conflicts) == (1, 1)
        (delete,) = rig.mem0_http.requests("DELETE")
        assert rig.ctx.state.mapping_for_local(plain) is None
        assert delete.url.path != f"/v1/memories/{edited_map.cloud_id}/"
        assert rig.cloud_texts() == ["edited in the cloud, v2"]
        (conflict,) = rig.ctx.state.conflicts()
        assert conflict.local_id == edited and conflict.local_text is None

    run_with_rig(tmp_path, body)


def test_push_then_delete_of_a_never_synced_memory_is_dropped_without_a_request(tmp_path: Path) -> None:
    """Coalesced: the latest entry (delete) wins; never mapped, no intent: nothing is sent, both entries go."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("short lived")
        rig.enqueue(local_id)
        rig.enqueue(local_id, action="delete")
        rig.openmemory.delete(local_id)
        report = await push(rig)
        assert (report.dropped, report.attempted) == (1, 0)
        assert rig.mem0_http.sent == []
        assert queue_json(rig)["pending"] == []

    run_with_rig(tmp_path, body)


def test_a_push_of_a_memory_gone_locally_is_reported_not_found(tmp_path: Path) -> None:
    """Queued, then deleted locally before the run: counted in not_found (never silently dropped), no cloud request,
    and the entry leaves the queue without an error row."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("gone before the run")
        rig.enqueue(local_id)
        rig.openmemory.delete(local_id)
        report = await push(rig)
        assert (report.not_found, report.dropped, report.attempted, report.errors) == (1, 0, 0, 0)
        assert rig.mem0_http.sent == []
        doc = queue_json(rig)
        assert doc["pending"] == [] and doc["sync_errors"] == []

    run_with_rig(tmp_path, body)


def test_a_dry_run_decides_and_counts_but_writes_nothing(tmp_path: Path) -> None:
    """On dry_view(): counts as a real run would, but no cloud write, no mapping, no intent, the queue unchanged."""

    async def body(rig: EngineRig) -> None:
        synced = rig.local_add("synced, then edited")
        rig.enqueue(synced)
        await push(rig)
        rig.openmemory.update_content(synced, "edited here")
        new = rig.local_add("brand new")
        rig.enqueue(synced, new)
        before = rig.ctx.paths.queue.read_bytes()
        sent_before = len(writes(rig))
        rig.cloud.begin_run()
        report = await run_push(rig.ctx.dry_view(), rig.cloud)
        assert (report.created, report.updated) == (1, 1)
        assert len(writes(rig)) == sent_before
        assert rig.ctx.paths.queue.read_bytes() == before
        assert rig.ctx.state.mapping_for_local(new) is None and rig.ctx.state.intents() == []
        mapping = rig.ctx.state.mapping_for_local(synced)
        assert mapping is not None and mapping.base_text == "synced, then edited"
        assert rig.ctx.dry is False

    run_with_rig(tmp_path, body)


def test_progress_hears_every_finished_item_with_the_total(tmp_path: Path) -> None:
    """The callback gets ("push", n, total) once per coalesced item, ending at (total, total)."""

    async def body(rig: EngineRig) -> None:
        ids = [rig.local_add(f"progress {i}") for i in range(4)]
        rig.enqueue(*ids)
        rig.enqueue(ids[0])  # coalesced with the first entry: still 4 items
        heard: list[tuple[str, int, int | None]] = []
        rig.ctx.progress = lambda phase, done, total: heard.append((phase, done, total))
        await push(rig)
        assert sorted(heard) == [("push", n, 4) for n in range(1, 5)]

    run_with_rig(tmp_path, body)


def test_a_stopping_context_starts_no_item(tmp_path: Path) -> None:
    """Graceful shutdown before the run: nothing is sent, the queue file is unchanged."""

    async def body(rig: EngineRig) -> None:
        rig.enqueue(rig.local_add("not now"))
        before = rig.ctx.paths.queue.read_bytes()
        rig.ctx.stopping = True
        report = await push(rig)
        assert report.attempted == 0 and rig.mem0_http.sent == []
        assert rig.ctx.paths.queue.read_bytes() == before

    run_with_rig(tmp_path, body)


def test_entries_added_during_the_run_are_never_lost(tmp_path: Path) -> None:
    """A hook appends while the push is on the wire: the run removes only what it processed."""

    async def body(rig: EngineRig) -> None:
        first = rig.local_add("in the run")
        rig.enqueue(first)
        late = rig.local_add("written during the run")
        added: list[bool] = []

        def append_once(request: httpx.Request) -> None:
            if request.url.path == "/v3/memories/add/" and not added:
                added.append(True)
                rig.enqueue(late)

        rig.mem0_http.before = append_once
        report = await push(rig)
        assert report.created == 1
        assert [e["id"] for e in queue_json(rig)["pending"]] == [late]

    run_with_rig(tmp_path, body)


def test_a_stop_after_other_results_writes_nothing_more_to_the_queue(tmp_path: Path) -> None:
    """One item fails (500s), 20 others are created, then the last meets a 401: RunStop, and the queue file is
    byte-for-byte as before (no sync_errors row, no removal); the next run finds the created ones mapped and
    sends no second add."""

    async def body(rig: EngineRig) -> None:
        failing = rig.local_add("fails first")
        fillers = [rig.local_add(f"created {i:02}") for i in range(20)]
        rejected = rig.local_add("meets the 401")
        rig.enqueue(failing, *fillers, rejected)
        before = rig.ctx.paths.queue.read_bytes()

        def answer(request: httpx.Request) -> httpx.Response | None:
            if b"fails first" in request.content:
                return httpx.Response(500, text="nope")
            if b"meets the 401" in request.content:
                return httpx.Response(401, json={"detail": "Invalid API key"})
            return None

        rig.mem0_http.before = answer
        with pytest.raises(RunStop):
            await push(rig)
        assert sum(b"fails first" in r.content for r in adds_requests(rig)) == 3  # it did fail for good first
        assert rig.ctx.paths.queue.read_bytes() == before
        created = [i for i in fillers if rig.ctx.state.mapping_for_local(i) is not None]
        assert created
        rig.mem0_http.before = None
        rig.mem0_http.sent.clear()
        report = await push(rig)
        assert report.errors == 0 and queue_json(rig)["pending"] == []
        assert len(adds(rig)) == 22 - len(created)  # the mapped ones were not added again
        assert len(rig.cloud_texts()) == 22 == len(set(rig.cloud_texts()))

    run_with_rig(tmp_path, body, concurrency=1)


def test_finished_entries_leave_the_queue_in_batches_while_the_run_goes_on(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With a batch of 5, finished entries are removed while the run goes on; a 401 at the 21st item then
    stops it: what was flushed stays removed, every entry that did not reach the cloud stays queued."""
    from memsyncd.engine import push as push_module

    monkeypatch.setattr(push_module._QueueFlusher, "FLUSH_EVERY", 5)

    async def body(rig: EngineRig) -> None:
        ids = [rig.local_add(f"batched {i:02}") for i in range(30)]
        rig.enqueue(*ids)
        pending_at_write: list[int] = []
        real_apply = rig.ctx.queue.apply

        def apply(outcomes: Any, **kwargs: Any) -> Any:
            result = real_apply(outcomes, **kwargs)
            pending_at_write.append(len(rig.ctx.queue.read().pending))
            return result

        monkeypatch.setattr(rig.ctx.queue, "apply", apply)
        stop_at = b"batched 20"
        rig.mem0_http.before = lambda request: httpx.Response(401, json={"detail": "Invalid API key"}) \
            if stop_at in request.content else None
        with pytest.raises(RunStop):
            await push(rig)
        assert pending_at_write and pending_at_write[0] <= 25  # written during the run, before the stop
        left = {e["id"] for e in queue_json(rig)["pending"]}
        unmapped = {i for i in ids if rig.ctx.state.mapping_for_local(i) is None}
        assert unmapped <= left  # nothing that did not reach the cloud left the queue
        assert len(left) < 30 and queue_json(rig)["sync_errors"] == []

    run_with_rig(tmp_path, body, concurrency=1)


def test_a_key_echoed_in_an_error_body_never_reaches_the_queue_file(tmp_path: Path) -> None:
    """A proxy's 502 repeats the Authorization header: the sync_errors row and the report are redacted."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("echoed")
        rig.enqueue(local_id)
        rig.mem0_http.before = lambda request: httpx.Response(
            502, text=f"bad gateway (Authorization: {request.headers['authorization']})")
        report = await push(rig)
        assert report.errors == 1
        text = rig.ctx.paths.queue.read_text()
        assert INPROC_KEY not in text and "<redacted>" in text
        assert INPROC_KEY not in "".join(report.error_messages)

    run_with_rig(tmp_path, body)


def test_a_rate_limited_update_is_retried(tmp_path: Path) -> None:
    """A PUT answered 429 (Retry-After 0) then 200: one update counted, two PUTs sent, no error row."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("v1")
        rig.enqueue(local_id)
        await push(rig)
        rig.openmemory.update_content(local_id, "v2")
        rig.enqueue(local_id)
        limited: list[bool] = []

        def once_429(request: httpx.Request) -> httpx.Response | None:
            if request.method == "PUT" and not limited:
                limited.append(True)
                return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "throttled"})
            return None

        rig.mem0_http.before = once_429
        report = await push(rig)
        assert (report.updated, report.errors) == (1, 0)
        assert len(rig.mem0_http.requests("PUT")) == 2 and rig.cloud_texts() == ["v2"]

    run_with_rig(tmp_path, body)


def test_a_delete_after_a_crashed_create_deletes_the_copy_that_landed(tmp_path: Path) -> None:
    """Never mapped but an intent says a create may have landed: the delete finds that copy and deletes it."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("created, crashed, then deleted")
        rig.ctx.state.record_intent(local_id, "h")
        landed = rig.cloud_add("created, crashed, then deleted", memsync_local_id=local_id,
                               memsync_device=rig.ctx.state.device_id)
        rig.openmemory.delete(local_id)
        rig.enqueue(local_id, action="delete")
        report = await push(rig)
        assert report.deleted == 1 and rig.cloud_texts() == []
        assert [r.url.path for r in rig.mem0_http.requests("DELETE")] == [f"/v1/memories/{landed}/"]
        assert rig.ctx.state.intent_for(local_id) is None and rig.ctx.state.mapping_for_local(local_id) is None

    run_with_rig(tmp_path, body)


def test_a_local_edit_of_a_memory_deleted_in_the_cloud_is_a_conflict_not_a_new_copy(tmp_path: Path) -> None:
    """Mapped, deleted in the cloud, edited here: a conflict (cloud text None); no add, no update."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("original")
        rig.enqueue(local_id)
        await push(rig)
        mapping = rig.ctx.state.mapping_for_local(local_id)
        assert mapping is not None
        rig.mem0.delete(mapping.cloud_id)
        rig.openmemory.update_content(local_id, "edited after the cloud delete")
        rig.enqueue(local_id)
        report = await push(rig)
        assert report.conflicts == 1 and len(adds(rig)) == 1 and rig.mem0_http.requests("PUT") == []
        (conflict,) = rig.ctx.state.conflicts()
        assert (conflict.local_text, conflict.cloud_text) == ("edited after the cloud delete", None)
        assert conflict.reason == "edited locally, deleted in the cloud"

    run_with_rig(tmp_path, body)
