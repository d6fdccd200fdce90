"""engine/resolve.py in-process: ``list_conflicts``, ``get_conflict`` and ``resolve_conflict`` over the emulators.

Conflicts are never resolved automatically; a resolution re-reads both sides and refuses (writing
nothing) when one changed since the conflict was recorded; otherwise each side is settled to the
chosen text with as few writes as needed, the base follows, and ``both`` adds the cloud version as
a new pair (through the exactly-once create).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import EngineRig, run_with_rig

from memsyncd.engine.pull import run_pull
from memsyncd.engine.push import run_push
from memsyncd.engine.resolve import get_conflict, list_conflicts, resolve_conflict
from memsyncd.errors import ConflictError, MemsyncError, UsageError
from memsyncd.models import Conflict, Mapping, content_hash
from memsyncd.wire import Keep

pytestmark = pytest.mark.timeout(20)


def conflicted(rig: EngineRig, base: str = "base", local_text: str | None = "local edit",
               cloud_text: str | None = "cloud edit") -> tuple[Mapping, Conflict]:
    """A synced pair edited (or deleted: None) on both sides, with its conflict recorded as a sync would."""
    mapping = Mapping(rig.local_add(base), rig.cloud_add(base), content_hash(base), base, 2)
    rig.ctx.state.save_mapping(mapping)
    if local_text is None:
        rig.openmemory.delete(mapping.local_id)
    else:
        rig.openmemory.update_content(mapping.local_id, local_text)
    if cloud_text is None:
        rig.mem0.delete(mapping.cloud_id)
    else:
        rig.mem0.update(mapping.cloud_id, text=cloud_text)
    conflict = rig.ctx.state.record_conflict(mapping.local_id, mapping.cloud_id, base, local_text, cloud_text,
                                             "edited on both sides")
    return mapping, conflict


def writes(rig: EngineRig) -> list[tuple[str, str, str]]:
    """(service, method, path) of every request that changes a side."""
    out = []
    for service, transport in (("cloud", rig.mem0_http), ("local", rig.local_http)):
        for r in transport.sent:
            if r.method in ("PUT", "DELETE") or r.url.path in ("/v3/memories/add/", "/api/v1/memories/"):
                out.append((service, r.method, r.url.path))
    return out


def sent_json(rig: EngineRig, method: str) -> list[dict[str, Any]]:
    return [json.loads(r.content) for t in (rig.mem0_http, rig.local_http) for r in t.requests(method)]


def test_conflicts_are_listed_and_an_unknown_id_is_a_usage_error(tmp_path: Path) -> None:
    async def body(rig: EngineRig) -> None:
        _, conflict = conflicted(rig)
        assert list_conflicts(rig.ctx) == [conflict]
        assert get_conflict(rig.ctx, conflict.id) == conflict
        with pytest.raises(UsageError, match="no open conflict with id 999"):
            get_conflict(rig.ctx, 999)
        with pytest.raises(UsageError):
            await resolve_conflict(rig.ctx, 999, Keep.LOCAL)
        assert writes(rig) == []

    run_with_rig(tmp_path, body)


def test_keep_local_writes_only_the_cloud_and_moves_the_base(tmp_path: Path) -> None:
    """The local side already holds the chosen text: one cloud PUT; the base is the local text; conflict closed."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig)
        result = await resolve_conflict(rig.ctx, conflict.id, Keep.LOCAL)
        assert result == {"resolved": conflict.id, "keep": "local", "local_id": mapping.local_id,
                          "cloud_id": mapping.cloud_id, "extra": None, "local_only": False, "cloud_written": True}
        assert writes(rig) == [("cloud", "PUT", f"/v1/memories/{mapping.cloud_id}/")]
        (put,) = sent_json(rig, "PUT")
        assert put["text"] == "local edit" and put["metadata"]["level"] == 2
        assert rig.cloud_texts() == ["local edit"] and rig.local_texts() == ["local edit"]
        assert rig.ctx.state.mapping_for_local(mapping.local_id) == Mapping(
            mapping.local_id, mapping.cloud_id, content_hash("local edit"), "local edit", 2)
        assert list_conflicts(rig.ctx) == []

    run_with_rig(tmp_path, body)


def assert_replaced_locally(rig: EngineRig, old_local_id: str, new_local_id: str, cloud_id: str, text: str) -> None:
    """The local side was rewritten as a local replace: the new id holds ``text`` (paired with ``cloud_id``),
    the old id is deleted, the mapping moved to the new id, and no rewrite is left pending."""
    assert new_local_id != old_local_id
    create = next(r for r in rig.local_http.requests("POST", "/api/v1/memories/"))
    assert json.loads(create.content)["text"] == text
    assert json.loads(create.content)["metadata"]["memsync_cloud_id"] == cloud_id
    (delete,) = rig.local_http.requests("DELETE")
    assert json.loads(delete.content)["memory_ids"] == [old_local_id]
    old_row, new_row = rig.openmemory.get(old_local_id), rig.openmemory.get(new_local_id)
    assert old_row is not None and old_row["state"] == "deleted"
    assert new_row is not None and new_row["content"] == text and new_row["state"] == "active"
    assert rig.ctx.state.mapping_for_local(old_local_id) is None
    moved = rig.ctx.state.mapping_for_cloud(cloud_id)
    assert moved is not None and moved.local_id == new_local_id
    assert rig.ctx.state.local_replaces() == []


def test_keep_cloud_writes_only_the_local_side(tmp_path: Path) -> None:
    """The cloud already holds the chosen text: the local side is replaced (create new, delete old), no cloud
    write; the mapping moves to the new local id with the cloud text as base."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig)
        result = await resolve_conflict(rig.ctx, conflict.id, Keep.CLOUD)
        assert writes(rig) == [("local", "POST", "/api/v1/memories/"), ("local", "DELETE", "/api/v1/memories/")]
        assert (result["cloud_id"], result["local_only"], result["cloud_written"]) == (mapping.cloud_id, False, True)
        assert_replaced_locally(rig, mapping.local_id, result["local_id"], mapping.cloud_id, "cloud edit")
        assert rig.local_texts() == ["cloud edit"] == rig.cloud_texts()
        assert rig.ctx.state.mapping_for_local(result["local_id"]) == Mapping(
            result["local_id"], mapping.cloud_id, content_hash("cloud edit"), "cloud edit", 2)
        assert list_conflicts(rig.ctx) == []

    run_with_rig(tmp_path, body)


def test_keep_text_writes_the_merged_text_to_both_sides(tmp_path: Path) -> None:
    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig)
        with pytest.raises(ValueError):
            await resolve_conflict(rig.ctx, conflict.id, Keep.TEXT)
        assert writes(rig) == [] and list_conflicts(rig.ctx) == [conflict]
        result = await resolve_conflict(rig.ctx, conflict.id, Keep.TEXT, "merged")
        assert sorted(writes(rig)) == [("cloud", "PUT", f"/v1/memories/{mapping.cloud_id}/"),
                                       ("local", "DELETE", "/api/v1/memories/"), ("local", "POST", "/api/v1/memories/")]
        (put,) = [json.loads(r.content) for r in rig.mem0_http.requests("PUT")]
        assert put["text"] == "merged"
        assert_replaced_locally(rig, mapping.local_id, result["local_id"], mapping.cloud_id, "merged")
        assert rig.local_texts() == ["merged"] == rig.cloud_texts()
        assert rig.ctx.state.mapping_for_local(result["local_id"]) == Mapping(
            result["local_id"], mapping.cloud_id, content_hash("merged"), "merged", 2)
        assert list_conflicts(rig.ctx) == []

    run_with_rig(tmp_path, body)


def test_keep_both_adds_the_cloud_version_as_a_new_pair_with_an_intent_first(tmp_path: Path) -> None:
    """The pair keeps the local text; the cloud text becomes a new memory on both sides, mapped, once."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig)
        intent_at_add: list[bool] = []

        def check(request: httpx.Request) -> None:
            if request.url.path == "/v3/memories/add/":
                local_id = json.loads(request.content)["metadata"]["memsync_local_id"]
                intent_at_add.append(rig.ctx.state.intent_for(local_id) is not None)

        rig.mem0_http.before = check
        result = await resolve_conflict(rig.ctx, conflict.id, Keep.BOTH)
        extra = result["extra"]
        assert extra is not None and intent_at_add == [True]
        assert rig.local_texts() == ["cloud edit", "local edit"] == rig.cloud_texts()
        assert rig.ctx.state.mapping_for_local(extra["local_id"]) == Mapping(
            extra["local_id"], extra["cloud_id"], content_hash("cloud edit"), "cloud edit", 2)
        kept = rig.ctx.state.mapping_for_local(mapping.local_id)
        assert kept is not None and kept.base_text == "local edit" and list_conflicts(rig.ctx) == []

    run_with_rig(tmp_path, body)


def test_a_side_changed_since_the_conflict_was_recorded_refuses_and_writes_nothing(tmp_path: Path) -> None:
    """Edited again in the cloud after listing: ConflictError; no write anywhere; the conflict shows the new text."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig)
        rig.mem0.update(mapping.cloud_id, text="cloud edit, again")
        with pytest.raises(ConflictError, match=f"conflict {conflict.id} changed"):
            await resolve_conflict(rig.ctx, conflict.id, Keep.LOCAL)
        assert writes(rig) == []
        (now,) = list_conflicts(rig.ctx)
        assert (now.id, now.local_text, now.cloud_text) == (conflict.id, "local edit", "cloud edit, again")
        assert rig.cloud_texts() == ["cloud edit, again"]
        await resolve_conflict(rig.ctx, conflict.id, Keep.LOCAL)  # resolving the refreshed one works
        assert rig.cloud_texts() == ["local edit"]

    run_with_rig(tmp_path, body)


def test_an_interrupted_resolution_finishes_when_run_again(tmp_path: Path) -> None:
    """A side already holding the chosen text counts as unchanged: resolving again completes, writing the rest."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig)
        rig.mem0.update(mapping.cloud_id, text="merged")  # the first attempt wrote the cloud, then stopped
        result = await resolve_conflict(rig.ctx, conflict.id, Keep.TEXT, "merged")
        assert writes(rig) == [("local", "POST", "/api/v1/memories/"), ("local", "DELETE", "/api/v1/memories/")]
        assert_replaced_locally(rig, mapping.local_id, result["local_id"], mapping.cloud_id, "merged")
        assert rig.local_texts() == ["merged"] == rig.cloud_texts() and list_conflicts(rig.ctx) == []

    run_with_rig(tmp_path, body)


def test_keep_cloud_over_a_local_delete_recreates_the_local_copy(tmp_path: Path) -> None:
    """Deleted here, edited there, keep cloud: a new local memory pointing at the cloud id; mapped to it."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig, local_text=None)
        result = await resolve_conflict(rig.ctx, conflict.id, Keep.CLOUD)
        assert result["local_id"] != mapping.local_id and result["cloud_id"] == mapping.cloud_id
        created = rig.openmemory.get(result["local_id"])
        assert created is not None and created["metadata_"] == {"memsync_cloud_id": mapping.cloud_id, "level": 2}
        assert rig.local_texts() == ["cloud edit"]
        assert rig.ctx.state.mapping_for_local(result["local_id"]) is not None

    run_with_rig(tmp_path, body)


def test_keep_local_over_a_local_delete_deletes_the_cloud_copy_and_unmaps(tmp_path: Path) -> None:
    """Deleted here, edited there, keep local (= deleted): DELETE in the cloud, no mapping left."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig, local_text=None)
        result = await resolve_conflict(rig.ctx, conflict.id, Keep.LOCAL)
        assert (result["local_id"], result["cloud_id"]) == (None, None)
        assert writes(rig) == [("cloud", "DELETE", f"/v1/memories/{mapping.cloud_id}/")]
        assert rig.cloud_texts() == [] and rig.ctx.state.mapping_for_local(mapping.local_id) is None
        assert list_conflicts(rig.ctx) == []

    run_with_rig(tmp_path, body)


def test_a_conflict_is_never_resolved_by_a_push_or_a_pull(tmp_path: Path) -> None:
    """An open conflict survives a push and a pull of the same memory: both texts stay where they are."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig)
        rig.enqueue(mapping.local_id)
        rig.cloud.begin_run()
        await run_push(rig.ctx, rig.cloud)
        await run_pull(rig.ctx, rig.cloud)
        assert list_conflicts(rig.ctx) == [conflict]
        assert writes(rig) == []
        assert rig.local_texts() == ["local edit"] and rig.cloud_texts() == ["cloud edit"]

    run_with_rig(tmp_path, body)


def test_keep_local_over_a_cloud_delete_creates_the_cloud_copy_once(tmp_path: Path) -> None:
    """Deleted in the cloud, edited here, keep local: one add (after its intent), mapped to the new cloud id."""

    async def body(rig: EngineRig) -> None:
        mapping, conflict = conflicted(rig, cloud_text=None)
        intent_at_add: list[bool] = []
        rig.mem0_http.before = lambda r: intent_at_add.append(
            rig.ctx.state.intent_for(mapping.local_id) is not None) if r.url.path == "/v3/memories/add/" else None
        result = await resolve_conflict(rig.ctx, conflict.id, Keep.LOCAL)
        assert intent_at_add == [True] and result["cloud_id"] != mapping.cloud_id
        assert rig.cloud_texts() == ["local edit"]
        assert rig.ctx.state.mapping_for_local(mapping.local_id) == Mapping(
            mapping.local_id, result["cloud_id"], content_hash("local edit"), "local edit", 2)

    run_with_rig(tmp_path, body)


def test_resolving_a_conflict_of_a_private_memory_sends_nothing_private(tmp_path: Path) -> None:
    """Synced, then made level 0 and edited here while the cloud edited too (a pull records the conflict):
    keeping the local text must not upload it."""

    async def body(rig: EngineRig) -> None:
        mapping, _ = conflicted(rig, local_text="private edit")
        rig.ctx.state.delete_conflict(list_conflicts(rig.ctx)[0].id)
        rig.ctx.state.set_mapping_level(mapping.local_id, 0)
        rig.cloud.begin_run()
        await run_pull(rig.ctx, rig.cloud)  # the pull sees both edits: a conflict, as it records today
        (conflict,) = list_conflicts(rig.ctx)
        with contextlib.suppress(MemsyncError):  # refusing is fine too; sending is not
            await resolve_conflict(rig.ctx, conflict.id, Keep.LOCAL)
        assert "private edit" not in "".join(r.content.decode() for r in rig.mem0_http.sent)
        assert [w for w in writes(rig) if w[0] == "cloud"] == []
        assert rig.cloud_texts() == ["cloud edit"] and rig.local_texts() == ["private edit"]

    run_with_rig(tmp_path, body)
