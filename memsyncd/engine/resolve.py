"""Conflicts: list and show the open ones, and resolve one by writing the chosen text to both sides (SPEC 4).

Conflicts are never resolved automatically. :func:`resolve_conflict` re-reads both sides
first and refuses (``ConflictError``) when either changed since the conflict was
recorded; then it settles each side to the text :func:`~memsyncd.engine.decide.plan_resolution`
chose and stores the new merge base.
"""

from __future__ import annotations

from typing import Any

from memsyncd.engine.context import SyncContext, log, unmapped_local_index
from memsyncd.engine.decide import Keep, changed_since_recorded, plan_resolution
from memsyncd.errors import ConflictError, UsageError
from memsyncd.exactly_once import cloud_metadata
from memsyncd.models import Conflict, LocalMemory, Mapping, content_hash


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
    conflict = get_conflict(ctx, conflict_id)
    plan = plan_resolution(conflict, keep, text)
    mapping = ctx.state.mapping_for_local(conflict.local_id)
    level = mapping.level if mapping else 1
    local_now, cloud_now = await ctx.local.get(conflict.local_id), await cloud.get(conflict.cloud_id)
    local_text = local_now.text if local_now is not None and local_now.alive else None
    cloud_text = cloud_now.text if cloud_now is not None else None
    if changed_since_recorded(conflict, plan, local_text, cloud_text):
        ctx.state.record_conflict(conflict.local_id, conflict.cloud_id, conflict.base_text, local_text,
                                  cloud_text, conflict.reason)
        raise ConflictError(
            f"conflict {conflict.id} changed since it was listed (a side was edited again); nothing was "
            f"written. Review it with 'memsyncctl conflicts show {conflict.id}' and resolve again.")
    local_id = await _settle_local(ctx, conflict.local_id, conflict.cloud_id, plan.local_text, level)
    cloud_id = await _settle_cloud(ctx, conflict.cloud_id, local_id or conflict.local_id, plan.cloud_text, level)
    if local_id and cloud_id and plan.local_text is not None:
        ctx.state.save_mapping(Mapping(local_id, cloud_id, content_hash(plan.local_text), plan.local_text, level))
    else:
        ctx.state.delete_mapping(conflict.local_id)
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
            "extra": extra}


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
        if current.text != text:
            await ctx.local.update(local_id, text)
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
            await cloud.update(cloud_id, text, cloud_metadata(local, level, ctx.state.device_id))
        return cloud_id
    return await ctx.once(cloud).create(local, level)
