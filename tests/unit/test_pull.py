"""engine/pull.py in-process: ``run_pull`` over a SyncContext whose clients talk to the emulators through httpx.

Checked: new cloud memories are created locally with their origin and level and mapped; our own
echo and unchanged memories cause no local write; the same memory on both sides is adopted, not
copied (by text, or after a crash by ``memsync_cloud_id``); cloud edits update the local copy and
the base; edits on both sides become conflicts; the cursor advances only after a pull without
errors and narrows the next listing; a dry run writes nothing; a 401 ends the pull.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from harness import EngineRig, run_with_rig

from memsyncd.engine.context import META_CURSOR
from memsyncd.engine.pull import PULL_OVERLAP, run_pull
from memsyncd.engine.push import run_push
from memsyncd.engine.report import PullReport
from memsyncd.errors import AuthError, LocalUnreachableError
from memsyncd.models import parse_ts, utc_now

pytestmark = pytest.mark.timeout(20)


async def pull(rig: EngineRig) -> PullReport:
    rig.cloud.begin_run()
    return await run_pull(rig.ctx, rig.cloud)


def local_writes(rig: EngineRig) -> list[httpx.Request]:
    """Requests that change OpenMemory (create, update, delete)."""
    return [r for r in rig.local_http.sent
            if r.method in ("PUT", "DELETE") or (r.method == "POST" and r.url.path == "/api/v1/memories/")]


def test_new_cloud_memories_are_created_locally_with_origin_and_level_and_mapped(tmp_path: Path) -> None:
    """Two cloud memories: two local creates carrying memsync_cloud_id and the level; mapped; cursor set."""

    async def body(rig: EngineRig) -> None:
        first = rig.cloud_add("from the cloud", level=3)
        second = rig.cloud_add("private there?", level=0)  # a cloud memory is never private here
        report = await pull(rig)
        assert (report.seen, report.new, report.errors) == (2, 2, 0)
        by_text = {m["content"]: m for m in rig.openmemory.memories(user_id="bob")}
        assert by_text["from the cloud"]["metadata_"] == {"memsync_cloud_id": first, "level": 3}
        assert by_text["private there?"]["metadata_"] == {"memsync_cloud_id": second, "level": 1}
        mapping = rig.ctx.state.mapping_for_cloud(first)
        assert mapping is not None and mapping.local_id == by_text["from the cloud"]["id"] and mapping.level == 3
        cursor = rig.ctx.state.get_meta(META_CURSOR)
        assert cursor is not None and parse_ts(cursor) == max(
            parse_ts(m["updated_at"]) for m in rig.mem0.memories())

    run_with_rig(tmp_path, body)


def test_our_own_push_coming_back_is_an_echo(tmp_path: Path) -> None:
    """Pushed memories seen by the next pull: no local write, nothing new, nothing adopted."""

    async def body(rig: EngineRig) -> None:
        rig.enqueue(rig.local_add("pushed from here"), rig.local_add("me too"))
        rig.cloud.begin_run()
        await run_push(rig.ctx, rig.cloud)
        rig.local_http.sent.clear()
        report = await pull(rig)
        assert (report.seen, report.new, report.updated, report.adopted) == (2, 0, 0, 0)
        assert local_writes(rig) == []
        assert rig.local_texts() == ["me too", "pushed from here"]

    run_with_rig(tmp_path, body)


def test_the_same_text_on_both_sides_is_adopted_not_copied(tmp_path: Path) -> None:
    """Before any sync, identical text here and there: one mapping, no local create, no conflict."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("shared fact")
        cloud_id = rig.cloud_add("shared fact")
        report = await pull(rig)
        assert (report.adopted, report.new, report.conflicts) == (1, 0, 0)
        assert local_writes(rig) == []
        mapping = rig.ctx.state.mapping_for_local(local_id)
        assert mapping is not None and mapping.cloud_id == cloud_id
        assert rig.local_texts() == ["shared fact"]

    run_with_rig(tmp_path, body)


def test_a_local_copy_left_unmapped_by_a_crash_is_adopted_by_its_cloud_id(tmp_path: Path) -> None:
    """A pull created the local copy, then crashed before its mapping: the next pull adopts it, no second copy."""

    async def body(rig: EngineRig) -> None:
        cloud_id = rig.cloud_add("pulled before a crash")
        rig.local_add("pulled before a crash", memsync_cloud_id=cloud_id, level=1)
        rig.local_add("pulled before a crash")  # a same-text twin: the one naming the cloud id wins
        report = await pull(rig)
        assert (report.adopted, report.new) == (1, 0) and local_writes(rig) == []
        mapping = rig.ctx.state.mapping_for_cloud(cloud_id)
        assert mapping is not None
        adopted = rig.openmemory.get(mapping.local_id)
        assert adopted is not None and adopted["metadata_"].get("memsync_cloud_id") == cloud_id

    run_with_rig(tmp_path, body)


def test_own_memory_with_a_different_text_is_adopted_as_a_conflict(tmp_path: Path) -> None:
    """A cloud memory pushed from this device for a local memory whose text differs and no base: a conflict."""

    async def body(rig: EngineRig) -> None:
        local_id = rig.local_add("text here")
        cloud_id = rig.cloud_add("text there", memsync_local_id=local_id, memsync_device=rig.ctx.state.device_id)
        report = await pull(rig)
        assert (report.adopted, report.conflicts, report.new) == (1, 1, 0)
        (conflict,) = rig.ctx.state.conflicts()
        assert (conflict.local_id, conflict.cloud_id, conflict.base_text) == (local_id, cloud_id, None)
        assert (conflict.local_text, conflict.cloud_text) == ("text here", "text there")
        assert local_writes(rig) == [] and rig.local_texts() == ["text here"]

    run_with_rig(tmp_path, body)


def test_a_cloud_edit_replaces_the_local_copy_and_moves_the_mapping_and_the_base(tmp_path: Path) -> None:
    """Mapped, edited in the cloud only: a local replace (never OpenMemory's PUT, which leaves the agents' view
    stale): one POST creating the new text with the pair's metadata, then one DELETE of the old id; the mapping
    moves to the new id and the base follows."""

    async def body(rig: EngineRig) -> None:
        cloud_id = rig.cloud_add("old text")
        await pull(rig)
        before = rig.ctx.state.mapping_for_cloud(cloud_id)
        assert before is not None
        old_local_id = before.local_id
        rig.mem0.update(cloud_id, text="new text")
        rig.local_http.sent.clear()
        report = await pull(rig)
        assert report.updated == 1 and report.new == 0
        assert [(r.method, r.url.path) for r in local_writes(rig)] == [
            ("POST", "/api/v1/memories/"), ("DELETE", "/api/v1/memories/")]
        create, delete = local_writes(rig)
        created = json.loads(create.content)
        assert created["text"] == "new text"
        assert created["metadata"]["memsync_cloud_id"] == cloud_id and created["metadata"]["level"] == 1
        assert json.loads(delete.content)["memory_ids"] == [old_local_id]
        mapping = rig.ctx.state.mapping_for_cloud(cloud_id)
        assert mapping is not None and mapping.base_text == "new text"
        assert mapping.local_id != old_local_id and rig.ctx.state.mapping_for_local(old_local_id) is None
        new_row, old_row = rig.openmemory.get(mapping.local_id), rig.openmemory.get(old_local_id)
        assert new_row is not None and new_row["content"] == "new text" and new_row["state"] == "active"
        assert old_row is not None and old_row["state"] == "deleted"
        assert rig.ctx.state.local_replaces() == []
        assert rig.local_texts() == ["new text"]

    run_with_rig(tmp_path, body)


def test_edits_on_both_sides_become_a_conflict_and_neither_side_is_written(tmp_path: Path) -> None:
    """Mapped, edited here and there: a conflict with both texts; the local text stays; the base stays."""

    async def body(rig: EngineRig) -> None:
        cloud_id = rig.cloud_add("agreed")
        await pull(rig)
        mapping = rig.ctx.state.mapping_for_cloud(cloud_id)
        assert mapping is not None
        rig.mem0.update(cloud_id, text="cloud says")
        rig.openmemory.update_content(mapping.local_id, "local says")
        rig.local_http.sent.clear()
        report = await pull(rig)
        assert report.conflicts == 1 and local_writes(rig) == []
        (conflict,) = rig.ctx.state.conflicts()
        assert (conflict.base_text, conflict.local_text, conflict.cloud_text) == ("agreed", "local says",
                                                                                 "cloud says")
        assert rig.ctx.state.mapping_for_cloud(cloud_id) == mapping
        again = await pull(rig)
        assert again.conflicts == 0 and len(rig.ctx.state.conflicts()) == 1  # the same conflict is not counted twice

    run_with_rig(tmp_path, body)


def test_a_cloud_edit_of_a_locally_deleted_memory_is_a_conflict(tmp_path: Path) -> None:
    """Deleted here, edited there: a conflict (local text None); nothing is recreated locally."""

    async def body(rig: EngineRig) -> None:
        cloud_id = rig.cloud_add("fragile")
        await pull(rig)
        mapping = rig.ctx.state.mapping_for_cloud(cloud_id)
        assert mapping is not None
        rig.openmemory.delete(mapping.local_id)
        rig.mem0.update(cloud_id, text="fragile, edited")
        report = await pull(rig)
        assert report.conflicts == 1 and report.new == 0
        (conflict,) = rig.ctx.state.conflicts()
        assert conflict.local_text is None and conflict.cloud_text == "fragile, edited"
        assert rig.local_texts() == []

    run_with_rig(tmp_path, body)


def test_the_cursor_narrows_the_next_listing(tmp_path: Path) -> None:
    """After a complete pull the listing asks for updated_at >= cursor - PULL_OVERLAP."""

    async def body(rig: EngineRig) -> None:
        rig.cloud_add("first")
        await pull(rig)
        cursor = rig.ctx.state.get_meta(META_CURSOR)
        assert cursor is not None
        rig.mem0_http.sent.clear()
        await pull(rig)
        (listing,) = rig.mem0_http.requests("POST", "/v3/memories/")
        clauses = json.loads(listing.content)["filters"]["AND"]
        (since,) = [c["updated_at"]["gte"] for c in clauses if "updated_at" in c]
        assert parse_ts(since) == parse_ts(cursor) - PULL_OVERLAP

    run_with_rig(tmp_path, body)


def test_a_failed_local_write_keeps_the_cursor_and_the_rest_is_mapped(tmp_path: Path) -> None:
    """One local create fails (500 every attempt): errors 1 naming the cloud id; others mapped; cursor unset."""

    async def body(rig: EngineRig) -> None:
        bad = rig.cloud_add("refused locally")
        good = rig.cloud_add("accepted locally")

        def refuse(request: httpx.Request) -> httpx.Response | None:
            if request.method == "POST" and b"refused locally" in request.content:
                return httpx.Response(500, json={"detail": "db locked"})
            return None

        rig.local_http.before = refuse
        report = await pull(rig)
        assert report.errors == 1 and report.error_messages[0].startswith(f"{bad}: ")
        assert rig.ctx.state.mapping_for_cloud(good) is not None and rig.ctx.state.mapping_for_cloud(bad) is None
        assert rig.ctx.state.get_meta(META_CURSOR) is None  # the next pull sees it again
        rig.local_http.before = None
        assert (await pull(rig)).new == 1 and rig.ctx.state.mapping_for_cloud(bad) is not None

    run_with_rig(tmp_path, body)


def test_a_rejected_key_ends_the_pull(tmp_path: Path) -> None:
    """401 on the listing: AuthError is raised; nothing is written locally; no cursor."""

    async def body(rig: EngineRig) -> None:
        rig.cloud_add("unreachable for now")
        rig.mem0_http.before = lambda request: httpx.Response(401, json={"detail": "Invalid API key"})
        with pytest.raises(AuthError):
            await pull(rig)
        assert len(rig.mem0_http.sent) == 1
        assert local_writes(rig) == [] and rig.ctx.state.get_meta(META_CURSOR) is None

    run_with_rig(tmp_path, body)


def test_a_dry_pull_counts_but_writes_nothing(tmp_path: Path) -> None:
    """On dry_view(): new, updated, adopted and conflicts are counted; no local write, no mapping, no cursor,
    no conflict row."""

    async def body(rig: EngineRig) -> None:
        edited = rig.cloud_add("to be edited")
        await pull(rig)
        before_cursor = rig.ctx.state.get_meta(META_CURSOR)
        rig.mem0.update(edited, text="edited in the cloud")
        rig.cloud_add("brand new")
        rig.local_add("on both sides")
        rig.cloud_add("on both sides")
        mine = rig.local_add("mine here")
        rig.cloud_add("mine there", memsync_local_id=mine, memsync_device=rig.ctx.state.device_id)
        rig.local_http.sent.clear()
        rig.cloud.begin_run()
        report = await run_pull(rig.ctx.dry_view(), rig.cloud)
        assert (report.new, report.updated, report.adopted, report.conflicts) == (1, 1, 2, 1)
        assert local_writes(rig) == []
        assert rig.ctx.state.count_mappings() == 1 and rig.ctx.state.conflicts() == []
        mapping = rig.ctx.state.mapping_for_cloud(edited)
        assert mapping is not None and mapping.base_text == "to be edited"
        assert rig.ctx.state.get_meta(META_CURSOR) == before_cursor
        assert rig.local_texts() == ["mine here", "on both sides", "to be edited"]

    run_with_rig(tmp_path, body)


def test_many_pages_are_all_applied_once(tmp_path: Path) -> None:
    """250 cloud memories (3 pages of 100): each created locally once, each mapped, progress counts them all."""

    async def body(rig: EngineRig) -> None:
        for i in range(250):
            rig.cloud_add(f"bulk {i}")
        heard: list[int] = []
        rig.ctx.progress = lambda phase, done, total: heard.append(done)
        report = await pull(rig)
        assert (report.seen, report.new, report.errors) == (250, 250, 0)
        assert len(rig.mem0_http.requests("POST", "/v3/memories/")) == 3
        assert len(rig.local_texts()) == 250 == len(set(rig.local_texts()))
        assert rig.ctx.state.count_mappings() == 250
        assert max(heard) == 250

    run_with_rig(tmp_path, body, concurrency=4)


def test_a_failed_local_write_is_not_counted_as_synced(tmp_path: Path) -> None:
    """One of two local creates fails: the report says 1 synced of 2 to apply."""

    async def body(rig: EngineRig) -> None:
        rig.cloud_add("refused locally")
        rig.cloud_add("accepted locally")
        rig.local_http.before = lambda request: httpx.Response(500, json={"detail": "db locked"}) \
            if request.method == "POST" and b"refused locally" in request.content else None
        report = await pull(rig)
        assert report.errors == 1
        assert (report.new, report.synced, report.to_apply) == (1, 1, 2)
        assert rig.local_texts() == ["accepted locally"]
        rig.local_http.before = None
        again = await pull(rig)  # the cursor did not move: the failed one is pulled next time, counted once
        assert (again.new, again.errors, again.synced, again.to_apply) == (1, 0, 1, 1)

    run_with_rig(tmp_path, body)


def test_a_failed_local_replace_is_not_counted_as_updated(tmp_path: Path) -> None:
    """Two cloud edits of mapped memories; the local create of one rewrite fails: 1 updated, 1 error; the
    failed pair keeps its old local id, text and base."""

    async def body(rig: EngineRig) -> None:
        refused, accepted = rig.cloud_add("refused v1"), rig.cloud_add("accepted v1")
        await pull(rig)
        before = rig.ctx.state.mapping_for_cloud(refused)
        rig.mem0.update(refused, text="refused v2")
        rig.mem0.update(accepted, text="accepted v2")
        rig.local_http.before = lambda request: httpx.Response(500, json={"detail": "db locked"}) \
            if request.method == "POST" and b"refused v2" in request.content else None
        report = await pull(rig)
        assert (report.updated, report.errors, report.synced, report.to_apply) == (1, 1, 1, 2)
        assert rig.ctx.state.mapping_for_cloud(refused) == before
        assert rig.local_texts() == ["accepted v2", "refused v1"]

    run_with_rig(tmp_path, body)


def test_a_local_write_cancelled_by_itself_fails_that_memory_only(tmp_path: Path) -> None:
    """One local create raises CancelledError without the pull being cancelled: that memory is one error (the
    cursor stays), the others are pulled, the pull ends normally; the next pull brings the missing one."""

    async def body(rig: EngineRig) -> None:
        for text in ("first", "cancelled inside", "third"):
            rig.cloud_add(text)

        def cancel_one(request: httpx.Request) -> None:
            if request.method == "POST" and b"cancelled inside" in request.content:
                raise asyncio.CancelledError

        rig.local_http.before = cancel_one
        report = await pull(rig)
        assert (report.new, report.errors) == (2, 1) and rig.ctx.state.get_meta(META_CURSOR) is None
        assert rig.local_texts() == ["first", "third"]
        rig.local_http.before = None
        again = await pull(rig)
        assert (again.new, again.errors) == (1, 0) and rig.local_texts() == ["cancelled inside", "first", "third"]

    run_with_rig(tmp_path, body, concurrency=1)


def test_the_local_server_going_away_stops_the_pull_and_keeps_what_landed(tmp_path: Path) -> None:
    """OpenMemory refuses connections after the first create: LocalUnreachableError ends the pull; the copy
    that was created is mapped (no duplicate next time); the cursor does not move."""

    async def body(rig: EngineRig) -> None:
        for i in range(5):
            rig.cloud_add(f"pulled {i}")
        creates: list[bool] = []

        def down_after_one(request: httpx.Request) -> httpx.Response | None:
            if request.method == "POST" and request.url.path == "/api/v1/memories/":
                if creates:
                    raise httpx.ConnectError("connection refused", request=request)
                creates.append(True)
            return None

        rig.local_http.before = down_after_one
        with pytest.raises(LocalUnreachableError):
            await pull(rig)
        assert rig.ctx.state.count_mappings() == len(rig.local_texts()) == 1
        assert rig.ctx.state.get_meta(META_CURSOR) is None
        rig.local_http.before = None
        report = await pull(rig)
        assert report.new == 4 and len(rig.local_texts()) == 5 == len(set(rig.local_texts()))

    run_with_rig(tmp_path, body, concurrency=1)


def test_cloud_deletions_during_the_listing_never_lose_a_memory_for_good(tmp_path: Path) -> None:
    """300 cloud memories one minute apart; another device deletes 5 of page 1 while page 2 is requested.
    After that pull and the next one, every memory still in the cloud exists locally."""
    async def body(rig: EngineRig) -> None:
        start = utc_now() - timedelta(days=1)
        ids = [str(rig.mem0.add(f"minute {i:03}", user_id="bob", created_at=start + timedelta(minutes=i))["id"])
               for i in range(300)]
        deleted: list[bool] = []

        def delete_during_listing(request: httpx.Request) -> None:
            if request.url.path == "/v3/memories/" and request.url.params.get("page") == "2" and not deleted:
                deleted.append(True)
                for cloud_id in ids[:5]:
                    rig.mem0.delete(cloud_id)

        rig.mem0_http.before = delete_during_listing
        first = await pull(rig)
        assert deleted and first.errors == 0
        assert rig.ctx.state.get_meta(META_CURSOR) is None  # the listing moved under the pull: cursor kept
        rig.mem0_http.before = None
        await pull(rig)
        assert set(rig.local_texts()) >= {f"minute {i:03}" for i in range(5, 300)}
        assert len(rig.local_texts()) == len(set(rig.local_texts()))  # the second listing copied nothing twice
        cursor = rig.ctx.state.get_meta(META_CURSOR)  # a complete listing: the cursor moves
        assert cursor is not None and parse_ts(cursor) == max(parse_ts(m["updated_at"]) for m in rig.mem0.memories())

    run_with_rig(tmp_path, body)


def test_the_same_edit_on_both_sides_only_moves_the_base(tmp_path: Path) -> None:
    """Mapped, both sides edited to the same text: no local write, no conflict, the base is the new text."""

    async def body(rig: EngineRig) -> None:
        cloud_id = rig.cloud_add("before")
        await pull(rig)
        mapping = rig.ctx.state.mapping_for_cloud(cloud_id)
        assert mapping is not None
        rig.mem0.update(cloud_id, text="after")
        rig.openmemory.update_content(mapping.local_id, "after")
        rig.local_http.sent.clear()
        report = await pull(rig)
        assert (report.updated, report.conflicts, report.errors) == (0, 0, 0) and local_writes(rig) == []
        moved = rig.ctx.state.mapping_for_cloud(cloud_id)
        assert moved is not None and moved.base_text == "after"

    run_with_rig(tmp_path, body)
