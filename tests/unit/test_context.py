"""engine/context.py: SyncContext (creation, dry views, conflicts, progress), ``short`` and the unmapped local index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness import INPROC_KEY, INPROC_USER, EngineRig, run_with_rig

from memsyncd.config import CloudSettings, LocalSettings, Paths, Settings, SyncSettings
from memsyncd.engine.context import LocalIndex, SyncContext, short, unmapped_local_index
from memsyncd.errors import ServerError, SyncUnavailableError
from memsyncd.logs import register_secret
from memsyncd.models import LocalMemory, Mapping, content_hash, utc_now

pytestmark = pytest.mark.timeout(20)


def settings(enabled: bool = True) -> Settings:
    return Settings(local=LocalSettings(url="http://127.0.0.1:9", user_id=INPROC_USER),
                    cloud=CloudSettings(enabled=enabled, url="http://127.0.0.1:9"), sync=SyncSettings(concurrency=3))


@pytest.mark.parametrize(("key", "enabled", "has_cloud"), [(INPROC_KEY, True, True), (None, True, False),
                                                           (INPROC_KEY, False, False)])
def test_create_builds_a_cloud_client_only_with_a_key_and_cloud_enabled(tmp_path: Path, key: str | None,
                                                                         enabled: bool, has_cloud: bool) -> None:
    ctx = SyncContext.create(settings(enabled), Paths(tmp_path), key, local=None, cloud=None, state=None,
                             clock=utc_now)
    try:
        assert (ctx.cloud is not None) is has_cloud
        assert ctx.queue.path == Paths(tmp_path).queue and ctx.state.path == Paths(tmp_path).state
        if ctx.cloud is not None:
            assert ctx.cloud.max_in_flight == 3 and ctx.cloud.scope.user_id == INPROC_USER
            assert ctx.require_cloud() is ctx.cloud
        else:
            with pytest.raises(SyncUnavailableError):
                ctx.require_cloud()
    finally:
        ctx.state.close()
        asyncio.run(ctx.local.aclose())
        if ctx.cloud is not None:
            asyncio.run(ctx.cloud.aclose())


def test_a_dry_view_shares_clients_and_state_but_never_flips_the_original(tmp_path: Path) -> None:
    async def body(rig: EngineRig) -> None:
        dry = rig.ctx.dry_view()
        assert dry.dry and not rig.ctx.dry
        assert (dry.state, dry.local, dry.cloud, dry.queue) == (rig.ctx.state, rig.ctx.local, rig.ctx.cloud,
                                                                rig.ctx.queue)
        dry.stopping = True
        assert rig.ctx.stopping is False

    run_with_rig(tmp_path, body)


def test_record_conflict_counts_a_conflict_once_and_a_dry_context_writes_none(tmp_path: Path) -> None:
    async def body(rig: EngineRig) -> None:
        mapping = Mapping("local-1", "cloud-1", content_hash("base"), "base")
        dry = rig.ctx.dry_view()
        assert dry.record_conflict(mapping, "mine", "theirs", "edited on both sides") is False
        assert rig.ctx.state.conflicts() == []  # dry: decided, not written
        assert rig.ctx.record_conflict(mapping, "mine", "theirs", "edited on both sides") is False
        assert rig.ctx.record_conflict(mapping, "mine", "theirs", "edited on both sides") is True  # already open
        assert rig.ctx.record_conflict(mapping, "mine", "theirs, again", "edited on both sides") is False
        (conflict,) = rig.ctx.state.conflicts()
        assert (conflict.base_text, conflict.local_text, conflict.cloud_text) == ("base", "mine", "theirs, again")

    run_with_rig(tmp_path, body)


def test_a_progress_callback_that_raises_is_dropped_until_replaced(tmp_path: Path) -> None:
    async def body(rig: EngineRig) -> None:
        calls: list[tuple[str, int, int | None]] = []

        def broken(phase: str, done: int, total: int | None) -> None:
            calls.append((phase, done, total))
            raise RuntimeError("display gone")

        rig.ctx.progress = broken
        rig.ctx.report_progress("push", 1, 3)
        rig.ctx.report_progress("push", 2, 3)
        assert calls == [("push", 1, 3)]
        rig.ctx.progress = lambda phase, done, total: calls.append((phase, done, total))
        rig.ctx.report_progress("pull", 5, None)
        rig.ctx.dry_view().report_progress("pull", 6, None)  # never in a dry run
        assert calls == [("push", 1, 3), ("pull", 5, None)]

    run_with_rig(tmp_path, body)


def test_short_redacts_secrets_and_bounds_the_text() -> None:
    secret = "m0-context-secret-123456"
    register_secret(secret)
    text = short(ServerError(f"proxy said Authorization: Token {secret} " + "x" * 400))
    assert secret not in text and "<redacted>" in text and len(text) == 300
    assert short(ValueError()) == "ValueError"


def test_the_unmapped_index_holds_live_unmapped_memories_by_hash_and_origin(tmp_path: Path) -> None:
    async def body(rig: EngineRig) -> None:
        mapped = rig.local_add("mapped already")
        rig.ctx.state.save_mapping(Mapping(mapped, "c-mapped", content_hash("mapped already"), "mapped already"))
        deleted = rig.local_add("deleted here")
        rig.openmemory.delete(deleted)
        plain = rig.local_add("plain")
        pulled = rig.local_add("pulled once", memsync_cloud_id="c-pulled")
        index = await unmapped_local_index(rig.ctx)
        assert {m.id for m in index.by_hash.values()} == {plain, pulled}
        assert index.by_cloud_id["c-pulled"].id == pulled

    run_with_rig(tmp_path, body)


def test_local_index_take_prefers_the_origin_and_skips_claimed_memories() -> None:
    from memsyncd.models import CloudMemory

    twin = LocalMemory("twin", "same text")
    origin = LocalMemory("origin", "other text", metadata={"memsync_cloud_id": "c1"})
    index = LocalIndex()
    index.add(twin)
    index.add(origin)
    cloud = CloudMemory("c1", "same text")
    assert index.take(cloud, set()) is origin
    assert index.take(cloud, {"origin"}) is twin
    assert index.take(cloud, {"origin", "twin"}) is None
    index.discard(origin)
    assert index.take(cloud, set()) is twin and "c1" not in index.by_cloud_id
