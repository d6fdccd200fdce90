"""Conflicts: list and show the open ones, and resolve one by writing the chosen text to both sides (SPEC 4).

Conflicts are never resolved automatically. :func:`resolve_conflict` re-reads both sides
first and refuses (``ConflictError``) when either changed since the conflict was
recorded; then it settles each side to the text :func:`~memsyncd.engine.decide.plan_resolution`
chose and stores the new merge base.

The memory's level is read again when resolving (its local ``metadata.level``, pending queue
entries, the level on its mapping; :func:`~memsyncd.engine.decide.current_level`). A memory
that is local-only (level 0) now is resolved on the local side only: nothing is sent to the
cloud, whatever the choice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from memsyncd.engine.context import SyncContext, log, unmapped_local_index, verify_state
from memsyncd.engine.decide import (
    PRIVATE_LEVEL,
    Resolution,
    changed_since_recorded,
    cloud_level,
    current_level,
    plan_resolution,
    queued_level,
)
from memsyncd.engine.exactly_once import cloud_metadata
from memsyncd.engine.replace import finish_local_replaces, replace_local
from memsyncd.errors import ConflictError, UsageError
from memsyncd.models import CloudMemory, Conflict, LocalMemory, Mapping, content_hash
from memsyncd.wire import Keep


def list_conflicts(ctx: SyncContext) -> list[Conflict]:
    """Open conflicts."""
    return ctx.state.conflicts()


def get_conflict(ctx: SyncContext, conflict_id: int) -> Conflict:
    """One open conflict.

    Raises:
        UsageError: no such conflict.
    """
    found = ctx.state.conflict(conflict_id)
    if found is None:
        raise UsageError(f"no open conflict with id {conflict_id}; see 'memsyncctl conflicts list'.")
    return found


async def resolve_conflict(ctx: SyncContext, conflict_id: int, keep: Keep, text: str | None = None) -> dict[str, Any]:
    """Write the chosen text to both sides and update the base (SPEC 4, Conflicts).

    Raises:
        SyncUnavailableError: cloud not configured.
        UsageError: no such conflict.
        ValueError: ``keep=text`` without the merged text.
        ConflictError: a side changed since the conflict was recorded (nothing written).
        RemoteError: a request failed.
    """
    cloud = ctx.require_cloud()
    cloud.begin_run()
    await verify_state(ctx)
    await finish_local_replaces(ctx)  # a crash may have left this conflict's local side mid-rewrite
    conflict = get_conflict(ctx, conflict_id)
    if keep is Keep.TEXT and text is None:
        raise ValueError("keep=text needs the merged text")
    mapping = ctx.state.mapping_for_local(conflict.local_id)
    local_now = await ctx.local.get(conflict.local_id)
    pending = (await asyncio.to_thread(ctx.queue.read)).pending
    level = current_level(queued_level(pending, conflict.local_id), local_now.metadata if local_now else None,
                          mapping.level if mapping else None, ctx.settings.sync.default_level)
    plan = plan_resolution(conflict, keep, text, level=level)
    cloud_now = await cloud.get(conflict.cloud_id)
    local_text = local_now.text if local_now is not None and local_now.alive else None
    cloud_text = cloud_now.text if cloud_now is not None else None
    if changed_since_recorded(conflict, plan, local_text, cloud_text):
        ctx.state.record_conflict(conflict.local_id, conflict.cloud_id, conflict.base_text, local_text,
                                  cloud_text, conflict.reason)
        raise ConflictError(
            f"conflict {conflict.id} changed since it was listed (a side was edited again); nothing was "
            f"written. Review it with 'memsyncctl conflicts show {conflict.id}' and resolve again.")
    if plan.local_only:
        return await _resolve_local_only(ctx, conflict, keep, plan, cloud_now)
    local_id = await _settle_local(ctx, conflict.local_id, conflict.cloud_id, plan.local_text, level)
    cloud_id = await _settle_cloud(ctx, conflict.cloud_id, local_id or conflict.local_id, plan.cloud_text, level)
    if local_id and cloud_id and plan.local_text is not None:
        ctx.state.save_mapping(Mapping(local_id, cloud_id, content_hash(plan.local_text), plan.local_text, level))
    else:
        ctx.state.delete_mapping(local_id or conflict.local_id)
    extra: dict[str, str] | None = None
    if plan.extra_text is not None:
        # an interrupted earlier attempt may have created the local copy already: reuse it
        created = (await unmapped_local_index(ctx)).by_hash.get(content_hash(plan.extra_text)) or \
            await ctx.local.create(plan.extra_text, {"level": level})
        new_cloud = await ctx.once(cloud).create(created, level)
        extra = {"local_id": created.id, "cloud_id": new_cloud}
    ctx.state.delete_conflict(conflict.id)
    ctx.record("conflict", conflict.local_id, plan.local_text if level else None, f"resolved: kept {keep.value}")
    log.info("conflict.resolved", conflict_id=conflict.id, keep=keep.value)
    return {"resolved": conflict.id, "keep": keep.value, "local_id": local_id, "cloud_id": cloud_id,
            "extra": extra, "local_only": False, "cloud_written": True}


async def _settle_local(ctx: SyncContext, local_id: str, cloud_id: str, text: str | None, level: int) -> str | None:
    """Make the local side hold ``text`` (None: deleted); returns the local id holding it."""
    current = await ctx.local.get(local_id)
    alive = current is not None and current.alive
    if text is None:
        if alive:
            await ctx.local.delete(local_id)
        return None
    if alive:
        assert current is not None
        if current.text != text:  # a new copy, not a PUT: agents read OpenMemory's vector store
            return await replace_local(ctx, local_id, cloud_id, text, level, base_text=None, current=current)
        return local_id
    created = await ctx.local.create(text, {"memsync_cloud_id": cloud_id, "level": level})
    return created.id


async def _settle_cloud(ctx: SyncContext, cloud_id: str, local_id: str, text: str | None, level: int) -> str | None:
    """Make the cloud side hold ``text`` (None: deleted); returns the cloud id holding it."""
    cloud = ctx.require_cloud()
    current = await cloud.get(cloud_id)
    if text is None:
        if current is not None:
            await cloud.delete(cloud_id)
        return None
    local = LocalMemory(id=local_id, text=text)
    if current is not None:
        if current.text != text:
            await cloud.update(cloud_id, text, cloud_metadata(local, level, ctx.state.device_id, current.metadata))
        return cloud_id
    return await ctx.once(cloud).create(local, level)


async def _resolve_local_only(ctx: SyncContext, conflict: Conflict, keep: Keep, plan: Resolution,
                              cloud_now: CloudMemory | None) -> dict[str, Any]:
    """Resolve a level-0 memory's conflict on the local side only; not one request writes to the cloud.

    The pair stays linked (level 0, merge base = the cloud's current text), so the same cloud
    version does not raise the conflict again, a later cloud edit does, and
    ``forget-cloud-copies`` can still remove the cloud copy. ``both`` gives the cloud version a
    local memory of its own, paired with the existing cloud memory; the private one is unpaired.
    """
    extra: dict[str, str] | None = None
    if plan.split_cloud and cloud_now is not None:
        level = cloud_level(cloud_now.metadata)
        # an interrupted earlier attempt may have created the local copy already: reuse it
        found = (await unmapped_local_index(ctx)).by_cloud_id.get(conflict.cloud_id)
        if found is None or found.id == conflict.local_id or found.text != cloud_now.text:
            found = await ctx.local.create(cloud_now.text, {"memsync_cloud_id": conflict.cloud_id, "level": level})
        created = found
        # one transaction: the cloud memory's pair moves to the new copy; the private memory is unpaired
        ctx.state.save_mapping(Mapping(created.id, conflict.cloud_id, cloud_now.hash, cloud_now.text, level))
        local_id: str | None = conflict.local_id
        extra = {"local_id": created.id, "cloud_id": conflict.cloud_id}
    else:
        local_id = await _settle_local(ctx, conflict.local_id, conflict.cloud_id, plan.local_text, PRIVATE_LEVEL)
        if cloud_now is None:
            ctx.state.delete_mapping(conflict.local_id)
        else:
            if local_id is not None and local_id != conflict.local_id:
                ctx.state.delete_mapping(conflict.local_id)
            ctx.state.save_mapping(Mapping(local_id or conflict.local_id, conflict.cloud_id, cloud_now.hash,
                                           cloud_now.text, PRIVATE_LEVEL))
    ctx.state.delete_conflict(conflict.id)
    log.info("conflict.resolved", conflict_id=conflict.id, keep=keep.value, local_only=True)
    return {"resolved": conflict.id, "keep": keep.value, "local_id": local_id,
            "cloud_id": conflict.cloud_id if cloud_now is not None else None, "extra": extra,
            "local_only": True, "cloud_written": False}
