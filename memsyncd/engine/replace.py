"""Write a new text to a local memory so that agents see it: create the new copy, delete the old one, move the mapping.

OpenMemory keeps each memory twice: a SQL row (what its REST API and UI read) and a
vector-store point (what MCP clients such as Claude Code read through ``search_memory`` and
``list_memories``). Its ``PUT /api/v1/memories/{id}`` changes only the SQL row, while a
create adds a point and ``DELETE`` removes it (docs/api-facts.md). So memsyncd never
rewrites a local memory in place: it creates the new version, deletes the old one, and
moves the pair's mapping, merge base and open conflict to the new local id.

Exactly once and crash-safe, like push intents (:mod:`memsyncd.engine.exactly_once`): a durable
*replace intent* (state DB, fsynced) is recorded before the create; the new copy's metadata
carries the intent's token (``memsync_replace_token``) and ``memsync_cloud_id``. After a
crash, :func:`finish_local_replaces` (run at the start of every sync and resolution) finds
the new copy by its recorded id or token, deletes the old one and moves the mapping, or,
when nothing landed, forgets the intent (the next pull decides again). A kill between
the steps thus leaves, after the next run, exactly one live version.

The cloud copy's ``memsync_local_id`` keeps naming the old local id until memsyncd next
writes that cloud memory: recovery tolerates it (the new copy carries ``memsync_cloud_id``,
which pull adoption and ``state rebuild`` match first), so no cloud write is spent on it.
"""

from __future__ import annotations

import uuid
from typing import Any

from memsyncd.engine.context import REPLACE_TOKEN, SyncContext, log, short
from memsyncd.errors import RemoteError, ServerError
from memsyncd.models import LocalMemory, LocalReplace
from memsyncd.remote.local import SERVICE


async def replace_local(ctx: SyncContext, old_local_id: str, cloud_id: str, text: str, level: int, *,
                        base_text: str | None, current: LocalMemory | None = None) -> str:
    """Make the local side of a pair hold ``text`` in both of OpenMemory's stores; returns the new local id.

    Args:
        ctx: the root's context (not dry).
        old_local_id: the local memory to replace.
        cloud_id: the pair's cloud id (written as ``memsync_cloud_id`` on the new copy).
        text: the new text.
        level: the pair's level.
        base_text: the merge base the pair gets (None: keep the mapping's base).
        current: the old local memory when the caller already read it.

    Raises:
        RemoteError: a local request failed; the intent stays and the next run finishes or forgets it.
        StateUnreadableError: the state DB failed.
    """
    earlier = ctx.state.local_replace(old_local_id)
    if earlier is not None:  # an unfinished rewrite of this memory: settle it first, never start a second one
        await _resume(ctx, earlier)
        if ctx.state.local_replace(old_local_id) is not None:
            raise ServerError("an earlier rewrite of this local memory could not be finished; the next sync "
                              "tries again", service=SERVICE)
        moved = ctx.state.mapping_for_cloud(cloud_id)
        if moved is not None and moved.local_id != old_local_id:  # it finished: go on from the new copy
            old_local_id, current = moved.local_id, None
    if current is None:
        current = await ctx.local.get(old_local_id)
    if current is not None and current.alive and current.text == text:  # already holds it (a resumed rewrite)
        if base_text is not None:
            ctx.state.finish_local_replace(old_local_id, old_local_id, base_text)
        return old_local_id
    alive = current is not None and current.alive
    token = uuid.uuid4().hex
    metadata: dict[str, Any] = dict(current.metadata) if current is not None else {}
    metadata.update({"memsync_cloud_id": cloud_id, "level": level, REPLACE_TOKEN: token})
    ctx.state.record_local_replace(old_local_id, cloud_id, token, current.hash if alive and current else None,
                                   level, base_text)
    created = await ctx.local.create(text, metadata)
    ctx.state.set_local_replace_new_id(old_local_id, created.id)
    if alive:
        await ctx.local.delete(old_local_id)
    ctx.state.finish_local_replace(old_local_id, created.id, base_text)
    log.info("local.replaced", old_local_id=old_local_id, local_id=created.id, cloud_id=cloud_id)
    return created.id


async def finish_local_replaces(ctx: SyncContext) -> int:
    """Complete or forget the rewrites a crash (or a failed step) left; returns how many were pending.

    A rewrite whose requests fail now stays for the next run (logged); only a run-level error
    (the server unreachable) or a state DB failure stops the caller.

    Raises:
        RemoteError: run-level (OpenMemory unreachable).
        StateUnreadableError: the state DB failed.
    """
    pending = ctx.state.local_replaces()
    if not pending or ctx.dry:
        return len(pending)
    for intent in pending:
        try:
            await _resume(ctx, intent)
        except RemoteError as exc:
            if exc.stops_run:
                raise
            # the intent stays: the next run tries again; this run goes on (the pair keeps its old mapping)
            log.warning("local.replace_unfinished", old_local_id=intent.old_local_id, error=short(exc))
    return len(pending)


async def _resume(ctx: SyncContext, intent: LocalReplace) -> None:
    """Finish (or forget) one unfinished rewrite: find its new copy by id, else by token.

    Raises:
        RemoteError: a local request failed (the intent stays).
    """
    new = await ctx.local.get(intent.new_local_id) if intent.new_local_id else None
    if new is None or not new.alive:
        new = await _copy_with_token(ctx, intent.token)
    await _finish_one(ctx, intent, new)


async def _finish_one(ctx: SyncContext, intent: LocalReplace, new: LocalMemory | None) -> None:
    old = await ctx.local.get(intent.old_local_id)
    old_alive = old is not None and old.alive
    if new is None:  # the create never landed: as if the rewrite had not started
        ctx.state.drop_local_replace(intent.old_local_id)
        log.info("local.replace_forgotten", old_local_id=intent.old_local_id)
        return
    if old_alive and old is not None and intent.old_hash is not None and old.hash != intent.old_hash:
        # the old copy was edited since: keep the user's edit, withdraw ours (the next sync compares again)
        await ctx.local.delete(new.id)
        ctx.state.drop_local_replace(intent.old_local_id)
        log.info("local.replace_withdrawn", old_local_id=intent.old_local_id, local_id=new.id)
        return
    if old_alive:
        await ctx.local.delete(intent.old_local_id)
    ctx.state.finish_local_replace(intent.old_local_id, new.id, intent.base_text)
    log.info("local.replace_finished", old_local_id=intent.old_local_id, local_id=new.id)


async def _copy_with_token(ctx: SyncContext, token: str) -> LocalMemory | None:
    """The live local memory a rewrite created (its metadata carries the rewrite's token), if any."""
    async for page in ctx.local.pages():
        for memory in page:
            if memory.alive and memory.metadata.get(REPLACE_TOKEN) == token:
                return memory
    return None
