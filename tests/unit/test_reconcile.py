"""engine/reconcile.py in-process: ``reconcile_due`` and ``run_reconcile`` over the emulators through httpx.

Memories deleted in the cloud are deleted locally when unchanged here, become conflicts when edited
here (never silently lost), and are forgotten when gone on both sides; a suspiciously large share
of deletions is refused; the start time is stored for ``reconcile_due``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from harness import EngineRig, run_with_rig

from memsyncd.engine.context import META_RECONCILE
from memsyncd.engine.reconcile import reconcile_due, run_reconcile
from memsyncd.errors import ServerError, SyncUnavailableError
from memsyncd.models import Mapping, content_hash, parse_ts, utc_now

pytestmark = pytest.mark.timeout(20)


def pair(rig: EngineRig, text: str) -> Mapping:
    """A synced pair: the same text on both sides, mapped with that text as the base."""
    mapping = Mapping(rig.local_add(text), rig.cloud_add(text), content_hash(text), text, 1)
    rig.ctx.state.save_mapping(mapping)
    return mapping


def test_cloud_deletions_delete_unchanged_copies_and_conflict_on_edited_ones(tmp_path: Path) -> None:
    """Three pairs deleted in the cloud: unchanged → local delete; edited → conflict; gone here too → forgotten."""

    async def body(rig: EngineRig) -> None:
        keep, unchanged, edited, both = (pair(rig, t) for t in ("stays", "goes", "edited here", "gone twice"))
        for mapping in (unchanged, edited, both):
            rig.mem0.delete(mapping.cloud_id)
        rig.openmemory.update_content(edited.local_id, "edited here, v2")
        rig.openmemory.delete(both.local_id)
        report = await run_reconcile(rig.ctx)
        assert (report.deleted_local, report.conflicts, report.forgotten, report.refused) == (1, 1, 1, "")
        assert rig.local_texts() == ["edited here, v2", "stays"]
        state = rig.ctx.state
        assert state.mapping_for_local(unchanged.local_id) is None and state.mapping_for_local(both.local_id) is None
        assert state.mapping_for_local(keep.local_id) == keep
        (conflict,) = state.conflicts()
        assert (conflict.local_id, conflict.local_text, conflict.cloud_text, conflict.base_text) == (
            edited.local_id, "edited here, v2", None, "edited here")
        assert state.mapping_for_local(edited.local_id) is not None  # kept until the user resolves it

    run_with_rig(tmp_path, body, max_delete_fraction=1.0)


def test_a_mass_deletion_is_refused_and_nothing_is_deleted_locally(tmp_path: Path) -> None:
    """More than max_delete_fraction of the pairs missing: refused with a reason; no local DELETE; mappings kept."""

    async def body(rig: EngineRig) -> None:
        pairs = [pair(rig, f"mass {i}") for i in range(5)]
        for mapping in pairs[:3]:
            rig.mem0.delete(mapping.cloud_id)
        report = await run_reconcile(rig.ctx)
        assert report.refused and "3 of 5" in report.refused and report.deleted_local == 0
        assert rig.local_http.requests("DELETE") == []
        assert rig.ctx.state.count_mappings() == 5 and len(rig.local_texts()) == 5

    run_with_rig(tmp_path, body, max_delete_fraction=0.5)


def test_nothing_missing_means_no_writes(tmp_path: Path) -> None:
    """Every mapped cloud memory still there: no local write, no conflict, an empty report."""

    async def body(rig: EngineRig) -> None:
        pair(rig, "alive")
        rig.cloud_add("unmapped cloud memory")  # not ours to reconcile: the pull handles it
        report = await run_reconcile(rig.ctx)
        assert (report.deleted_local, report.conflicts, report.forgotten, report.refused) == (0, 0, 0, "")
        assert [r.method for r in rig.local_http.sent if r.method in ("PUT", "DELETE")] == []

    run_with_rig(tmp_path, body)


def test_the_start_time_makes_the_next_reconcile_due_only_after_the_interval(tmp_path: Path) -> None:
    """No reconcile yet: due once something is mapped; after one: due again only after the interval."""

    async def body(rig: EngineRig) -> None:
        now = utc_now()
        assert reconcile_due(rig.ctx, now) is False  # nothing mapped: nothing to reconcile
        pair(rig, "mapped")
        assert reconcile_due(rig.ctx, now) is True
        await run_reconcile(rig.ctx)
        stamp = rig.ctx.state.get_meta(META_RECONCILE)
        assert stamp is not None
        last = parse_ts(stamp)
        assert reconcile_due(rig.ctx, last + timedelta(seconds=599)) is False
        assert reconcile_due(rig.ctx, last + timedelta(seconds=600)) is True

    run_with_rig(tmp_path, body, reconcile_interval_seconds=600)


def test_a_failed_listing_changes_nothing(tmp_path: Path) -> None:
    """The cloud listing fails (500 on every attempt): ServerError; no local delete; no stamp (it runs again)."""

    async def body(rig: EngineRig) -> None:
        gone = pair(rig, "would be deleted")
        rig.mem0.delete(gone.cloud_id)
        rig.mem0_http.before = lambda request: httpx.Response(500, text="down")
        rig.cloud.begin_run()
        with pytest.raises(ServerError):
            await run_reconcile(rig.ctx)
        assert rig.local_http.requests("DELETE") == [] and rig.ctx.state.mapping_for_local(gone.local_id) == gone
        assert rig.ctx.state.get_meta(META_RECONCILE) is None

    run_with_rig(tmp_path, body, max_delete_fraction=1.0)


def test_reconcile_needs_the_cloud(tmp_path: Path) -> None:
    """No cloud client (disabled or no key): SyncUnavailableError before any request."""

    async def body(rig: EngineRig) -> None:
        rig.ctx.cloud = None
        with pytest.raises(SyncUnavailableError):
            await run_reconcile(rig.ctx)
        assert rig.local_http.sent == []

    run_with_rig(tmp_path, body)


def test_a_dry_context_writes_nothing(tmp_path: Path) -> None:
    """On dry_view() (SyncContext.dry: 'decide and count, but write nothing anywhere'): no local delete."""

    async def body(rig: EngineRig) -> None:
        gone = pair(rig, "dry run must keep me")
        edited = pair(rig, "edited here")
        rig.mem0.delete(gone.cloud_id)
        rig.mem0.delete(edited.cloud_id)
        rig.openmemory.update_content(edited.local_id, "edited here, v2")
        report = await run_reconcile(rig.ctx.dry_view())
        assert (report.deleted_local, report.conflicts) == (1, 1)  # counted as a real run would
        assert rig.local_texts() == ["dry run must keep me", "edited here, v2"]
        assert rig.ctx.state.mapping_for_local(gone.local_id) == gone
        assert rig.ctx.state.conflicts() == [] and rig.ctx.state.get_meta(META_RECONCILE) is None
        assert [r for r in rig.local_http.sent if r.method in ("PUT", "DELETE", "POST")
                and r.url.path != "/api/v1/memories/filter"] == []

    run_with_rig(tmp_path, body, max_delete_fraction=1.0)


def test_cloud_deletions_during_the_listing_never_delete_live_memories_locally(tmp_path: Path) -> None:
    """300 pairs (3 pages); another device deletes 5 memories of page 1 after it was read: only those 5 may go."""

    async def body(rig: EngineRig) -> None:
        pairs = [pair(rig, f"listed {i:03}") for i in range(300)]
        gone = pairs[:5]
        deleted: list[bool] = []

        def delete_during_listing(request: httpx.Request) -> None:
            if request.url.path == "/v3/memories/" and request.url.params.get("page") == "2" and not deleted:
                deleted.append(True)
                for mapping in gone:
                    rig.mem0.delete(mapping.cloud_id)

        rig.mem0_http.before = delete_during_listing
        report = await run_reconcile(rig.ctx)
        assert deleted
        live = {m.local_id for m in pairs[5:]}
        still_here = {m["id"] for m in rig.openmemory.memories(user_id="bob")}
        assert live <= still_here
        assert all(rig.ctx.state.mapping_for_local(m.local_id) == m for m in pairs[5:])
        # the 5 shifted memories were missing from the listing: one GET each found them (no more requests)
        assert report.deleted_local == 0 and len(rig.mem0_http.requests("GET", "/v1/memories/")) == 5
        # the 5 really deleted were listed before they went: the next reconcile deletes exactly them
        rig.mem0_http.sent.clear()
        report = await run_reconcile(rig.ctx)
        assert report.deleted_local == 5 and report.refused == ""
        still_here = {m["id"] for m in rig.openmemory.memories(user_id="bob")}
        assert still_here == live
        confirmed = {r.url.path.split("/")[-2] for r in rig.mem0_http.requests("GET", "/v1/memories/")}
        assert confirmed == {m.cloud_id for m in gone}

    run_with_rig(tmp_path, body)
