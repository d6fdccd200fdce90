"""The pull: cloud changes since the cursor to the local server, pipelined page by page, adopting instead of copying.

Each changed cloud memory is observed (its mapped local memory, or a local memory it may
be), decided by :func:`~memsyncd.engine.decide.plan_pull` in listing order, and applied
through one worker pool; a page's mappings are stored in one transaction once its writes
are done. A local copy left without a mapping by a crash carries ``memsync_cloud_id`` and
is adopted by the next pull (:class:`~memsyncd.engine.context.LocalIndex`).

The cursor moves only after a pull without errors whose listing was complete: the cloud's
listing is paged by number, so when its total changed while the pages were read (memories
deleted or added meanwhile), a memory may have moved onto a page already read; the cursor
then stays and the next pull lists from it again (:func:`~memsyncd.engine.decide.next_pull_cursor`).

The listing overlaps the cursor by :data:`PULL_OVERLAP`, so a cloud memory the pull skips (it
matches a local-only memory, or is another scope's copy of one synced here) is listed again by the
next pulls: it is reported once per version (state meta :data:`META_PULL_SKIPS`), not on every sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta

from memsyncd.engine.context import (
    META_CURSOR,
    META_PULL_SKIPS,
    LocalIndex,
    SyncContext,
    log,
    short,
    unmapped_local_index,
)
from memsyncd.engine.decide import (
    PullStep,
    cloud_level,
    current_level,
    listing_complete,
    next_pull_cursor,
    plan_pull,
    queued_level,
)
from memsyncd.engine.pipeline import WorkerPool, prefetch
from memsyncd.engine.replace import replace_local
from memsyncd.engine.report import PullReport
from memsyncd.errors import MemsyncError, RemoteError, StateUnreadableError
from memsyncd.ids import id_problem
from memsyncd.models import CloudMemory, LocalMemory, Mapping, QueueEntry, parse_ts
from memsyncd.remote.cloud import CloudClient, ListingTrace

PULL_OVERLAP = timedelta(seconds=60)


@dataclass
class _PullPlan:
    """What a pull knows about one changed cloud memory, and what it decided."""

    memory: CloudMemory
    mapping: Mapping | None
    local: LocalMemory | None = None
    adoptable: LocalMemory | None = None
    copy_of_synced: bool = False  # see plan_pull
    step: PullStep = PullStep.ECHO


@dataclass
class _PullRun:
    """What one pull shares across its pages."""

    ctx: SyncContext
    report: PullReport
    device: str
    index: LocalIndex | None = None
    claimed: set[str] = field(default_factory=set)  # local ids adopted in this pull
    in_flight: set[str] = field(default_factory=set)  # cloud ids whose writes are not recorded yet
    fatal: MemsyncError | None = None
    processed: int = 0  # listed cloud memories the pull is done with (applied, unchanged or failed)
    pending: list[QueueEntry] | None = None  # the queue's entries, read once when an adoption is first weighed
    skips_reported: dict[str, str] = field(default_factory=dict)  # skipped cloud memories earlier pulls reported
    skips_seen: dict[str, str] = field(default_factory=dict)  # skipped cloud memories this pull listed

    async def local_level(self, memory: LocalMemory) -> int | None:
        """A local memory's current level (queue entries, metadata, default); None when the queue is unreadable."""
        if self.pending is None:
            try:
                self.pending = (await asyncio.to_thread(self.ctx.queue.read)).pending
            except MemsyncError as exc:  # unknown level: treated as private (never adopted)
                log.warning("pull.queue_unreadable", error=short(exc))
                return None
        return current_level(queued_level(self.pending, memory.id), memory.metadata, None,
                             self.ctx.settings.sync.default_level)

    def count_processed(self, n: int = 1) -> None:
        if n:
            self.processed += n
            self.ctx.report_progress("pull", self.processed, None)


@dataclass
class _PageWork:
    """One page's decided plans and the futures of their writes."""

    plans: list[_PullPlan]
    futures: list[asyncio.Future[Mapping | None]]


async def run_pull(ctx: SyncContext, cloud: CloudClient, report: PullReport | None = None) -> PullReport:
    """Pull what changed in the cloud: pipelined, page by page: observe, decide (in listing order), apply.

    One pool of ``sync.concurrency`` workers serves every page: the next page is fetched
    while the current one is applied, and its reads start as soon as slots free up. At
    most two pages have work in flight (bounded memory). Decisions are taken in listing
    order (adoption claims depend on it); a page's mappings are written in one
    transaction once all of its writes are done. The progress callback hears
    ``("pull", processed memories, None)`` as listed memories are done with (the total is
    not known while the listing goes on).

    Args:
        ctx: the root's context.
        cloud: the cloud client.
        report: filled in place (so a caller keeps what was done when the pull fails).

    Raises:
        RemoteError: a page could not be listed, or a run-level error (401, network down).
        StateUnreadableError: the state DB failed.
    """
    report = report if report is not None else PullReport()
    cursor_text = ctx.state.get_meta(META_CURSOR)
    cursor = parse_ts(cursor_text) if cursor_text else None
    newest = cursor
    run = _PullRun(ctx=ctx, report=report, device=ctx.state.device_id, skips_reported=_load_skips(ctx))
    window: deque[_PageWork] = deque()
    listing = ListingTrace()
    async with WorkerPool(ctx.settings.sync.concurrency) as pool:
        try:
            async for page in prefetch(cloud.changed_since(cursor, PULL_OVERLAP, trace=listing)):
                report.seen += len(page)
                stamps = [m.updated_at for m in page if m.updated_at is not None]
                if stamps and (newest is None or max(stamps) > newest):
                    newest = max(stamps)
                while len(window) >= 2:
                    await _finish_page(window.popleft(), run)
                window.append(await _start_page(pool, page, run))
            while window:
                await _finish_page(window.popleft(), run)
        except Exception as exc:  # (a cancelled run stops at once: the next pull adopts what landed)
            run.fatal = run.fatal or (exc if isinstance(exc, MemsyncError) else RemoteError("pull stopped"))
            while window:  # record what did land before the error, then re-raise it
                with contextlib.suppress(Exception):
                    await _finish_page(window.popleft(), run)
            raise
    complete = listing_complete(listing.counts, listing.cut_short)
    if not complete:  # memories moved across pages while we listed: one may not have been seen
        log.info("pull.listing_moved", counts=sorted({c for c in listing.counts if c is not None}),
                 cut_short=listing.cut_short, note="cursor kept; the next pull lists from it again")
    advanced = next_pull_cursor(cursor, newest, errors=report.errors, complete=complete)
    if not ctx.dry and advanced is not None:
        ctx.state.set_meta(META_CURSOR, advanced.isoformat())
    if not ctx.dry:  # a complete pull listed every skip that can come back: the others are forgotten
        kept = run.skips_seen if complete and not report.errors else {**run.skips_reported, **run.skips_seen}
        ctx.state.set_meta(META_PULL_SKIPS, json.dumps(kept, sort_keys=True))
    return report


def _load_skips(ctx: SyncContext) -> dict[str, str]:
    """The skipped cloud memories earlier pulls reported: {cloud id: version}; empty when unreadable."""
    text = ctx.state.get_meta(META_PULL_SKIPS)
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _skip_version(memory: CloudMemory, step: PullStep) -> str:
    """What identifies one skip of one version of a cloud memory: an edit (or another reason) is reported again."""
    stamp = memory.updated_at.isoformat() if memory.updated_at is not None else ""
    return f"{step.value}|{stamp}|{memory.hash}"


def _skip_already_reported(run: _PullRun, memory: CloudMemory, step: PullStep) -> bool:
    """Note a skipped cloud memory; whether this version of it was already reported (then it is not again)."""
    if step not in (PullStep.SKIP_PRIVATE, PullStep.ALREADY_HERE):
        return False
    version = _skip_version(memory, step)
    known = version in (run.skips_reported.get(memory.id), run.skips_seen.get(memory.id))
    run.skips_seen[memory.id] = version
    return known


async def _start_page(pool: WorkerPool, page: list[CloudMemory], run: _PullRun) -> _PageWork:
    """Observe a page's changes through the pool, decide in order, and queue the writes."""
    ctx = run.ctx
    mapped = ctx.state.mappings_for_cloud([m.id for m in page])
    # our own echo, or nothing new: the cloud still has the merge base. Ids whose earlier copy in
    # this pull is still being written (a listing that shifted while we paged) are left alone.
    changed = [(m, mapped.get(m.id)) for m in page
               if m.id not in run.in_flight and (m.id not in mapped or m.hash != mapped[m.id].base_hash)]
    run.count_processed(len(page) - len(changed))
    observed = await asyncio.gather(
        *(pool.submit(functools.partial(_observe_pull, ctx, m, mp, run.device)) for m, mp in changed),
        return_exceptions=True)
    plans: list[_PullPlan] = []
    for (memory, _), seen in zip(changed, observed, strict=True):
        if isinstance(seen, BaseException):
            _pull_failed(run.report, memory, seen)
            run.count_processed()
            continue
        if seen.mapping is None and (seen.adoptable is None or seen.adoptable.id in run.claimed):
            if run.index is None:
                run.index = await unmapped_local_index(ctx)
            seen.adoptable = run.index.take(memory, run.claimed)
        if seen.adoptable is not None:
            run.claimed.add(seen.adoptable.id)
            if run.index is not None:
                run.index.discard(seen.adoptable)
        level = await run.local_level(seen.adoptable) if seen.adoptable is not None else None
        seen.step = plan_pull(memory, seen.mapping, seen.local, seen.adoptable, level, seen.copy_of_synced)
        log.debug("pull.plan", cloud_id=memory.id, step=seen.step.value)
        if _skip_already_reported(run, memory, seen.step):  # listed again by the overlap, unchanged
            log.debug("pull.skipped_again", cloud_id=memory.id, step=seen.step.value)
            run.count_processed()
            continue
        plans.append(seen)
    run.in_flight.update(plan.memory.id for plan in plans)
    futures = [pool.submit(functools.partial(_apply_guarded, plan, run)) for plan in plans]
    return _PageWork(plans, futures)


async def _apply_guarded(plan: _PullPlan, run: _PullRun) -> Mapping | None:
    if run.fatal is not None:  # the pull is stopping: start no new write
        raise run.fatal
    try:
        return await _apply_pull(run.ctx, plan, run.report)
    except RemoteError as exc:
        if exc.stops_run:
            run.fatal = run.fatal or exc
        raise
    except StateUnreadableError as exc:
        run.fatal = run.fatal or exc
        raise
    finally:  # applied or failed (then _finish_page reports it): done with either way
        run.count_processed()


async def _finish_page(work: _PageWork, run: _PullRun) -> None:
    """Wait for a page's writes, store its mappings in one transaction, then report its failures."""
    results = await asyncio.gather(*work.futures, return_exceptions=True)
    batch = [r for r in results if isinstance(r, Mapping)]
    if batch and not run.ctx.dry:
        run.ctx.state.save_mappings(batch)
    run.in_flight.difference_update(plan.memory.id for plan in work.plans)
    for plan, result in zip(work.plans, results, strict=True):
        if isinstance(result, BaseException):
            _pull_failed(run.report, plan.memory, result)


async def _observe_pull(ctx: SyncContext, memory: CloudMemory, mapping: Mapping | None, device: str) -> _PullPlan:
    if mapping is not None:
        return _PullPlan(memory, mapping, local=await ctx.local.get(mapping.local_id))
    return _PullPlan(memory, None, adoptable=await _adoptable(ctx, memory, device),
                     copy_of_synced=_copy_of_synced(ctx, memory))


def _copy_of_synced(ctx: SyncContext, memory: CloudMemory) -> bool:
    """Whether this unmapped cloud memory names a local memory synced here, with the same text, as its source."""
    local_id = memory.metadata.get("memsync_local_id")
    if not isinstance(local_id, str) or id_problem(local_id) is not None:
        return False
    mapping = ctx.state.mapping_for_local(local_id)
    return mapping is not None and mapping.cloud_id != memory.id and mapping.base_hash == memory.hash


def _pull_failed(report: PullReport, memory: CloudMemory, exc: BaseException) -> None:
    if isinstance(exc, StateUnreadableError) or (isinstance(exc, RemoteError) and exc.stops_run):
        raise exc
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is None or task.cancelling():  # the pull itself is being cancelled
            raise exc
        # only this memory's job was cancelled (by something it awaited): one failed memory, the pull goes on
    if not isinstance(exc, MemsyncError):
        log.error("pull.item_crashed", cloud_id=memory.id, error=repr(exc))
    report.errors += 1
    report.error_messages.append(f"{memory.id}: {short(exc)}")
    log.warning("pull.item_failed", cloud_id=memory.id, error=short(exc))


async def _adoptable(ctx: SyncContext, memory: CloudMemory, device: str) -> LocalMemory | None:
    """The local memory this unmapped cloud memory was pushed from, if it is ours."""
    local_id = memory.metadata.get("memsync_local_id")
    if not isinstance(local_id, str) or id_problem(local_id) is not None \
            or memory.metadata.get("memsync_device") != device:
        return None
    if ctx.state.mapping_for_local(local_id) is not None:
        return None
    candidate = await ctx.local.get(local_id)
    return candidate if candidate is not None and candidate.alive else None


async def _apply_pull(ctx: SyncContext, plan: _PullPlan, report: PullReport) -> Mapping | None:
    """Carry out one pull decision; returns the mapping to store (written per page, in one transaction)."""
    step, memory, mapping, local, adoptable = plan.step, plan.memory, plan.mapping, plan.local, plan.adoptable
    if step is PullStep.ECHO:
        return None
    if step is PullStep.SKIP_PRIVATE:
        assert adoptable is not None
        report.skipped_private += 1
        log.info("pull.skipped", cloud_id=memory.id, local_id=adoptable.id,
                 reason="matches a local-only (level 0) memory: not adopted, not copied")
        return None
    if step is PullStep.ALREADY_HERE:
        report.already_here += 1
        log.info("pull.skipped", cloud_id=memory.id, local_id=memory.metadata.get("memsync_local_id"),
                 reason="a copy of a memory already synced here (another mem0 scope): not copied")
        return None
    if step is PullStep.UPDATE_LOCAL:
        assert mapping is not None
        if ctx.dry:
            report.updated += 1
            return None
        # not a PUT: OpenMemory's PUT leaves the vector store (what agents read) on the old text
        local_id = await replace_local(ctx, mapping.local_id, memory.id, memory.text, mapping.level,
                                       base_text=memory.text, current=local)
        report.updated += 1  # counted once written: a failed write is an error, never also synced
        ctx.record("pull", local_id, memory.text, "edited in the cloud: local copy updated", memory.id)
        return Mapping(local_id, memory.id, memory.hash, memory.text, mapping.level)
    if step is PullStep.REFRESH_BASE:
        assert mapping is not None
        return Mapping(mapping.local_id, memory.id, memory.hash, memory.text, mapping.level)
    if step in (PullStep.CONFLICT, PullStep.CONFLICT_LOCAL_DELETED):
        assert mapping is not None
        reason = "edited on both sides" if step is PullStep.CONFLICT else "deleted locally, edited in the cloud"
        if not ctx.record_conflict(mapping, local.text if local and local.alive else None, memory.text, reason):
            report.conflicts += 1
        return None
    if step is PullStep.ADOPT:
        assert adoptable is not None
        level = cloud_level(memory.metadata)
        intent = ctx.state.intent_for(adoptable.id)
        explained = adoptable.hash == memory.hash or (intent is not None and intent.content_hash == memory.hash)
        report.adopted += 1
        ctx.record("adopt", adoptable.id, memory.text, "already here (same memory): linked, not copied", memory.id)
        adopted = Mapping(adoptable.id, memory.id, memory.hash, memory.text, level)
        if explained:
            return adopted
        if not ctx.dry:  # the mapping first (it clears conflicts), then the conflict: not batched
            ctx.state.save_mapping(adopted)
            ctx.state.record_conflict(adoptable.id, memory.id, None, adoptable.text, memory.text,
                                      "same memory, different text, no common base")
        report.conflicts += 1
        return None
    # CREATE_LOCAL
    if ctx.dry:
        report.new += 1
        return None
    level = cloud_level(memory.metadata)
    created = await ctx.local.create(memory.text, {"memsync_cloud_id": memory.id, "level": level})
    report.new += 1  # counted once written: a failed write is an error, never also synced
    ctx.record("pull", created.id, memory.text, "new in the cloud: created locally", memory.id)
    return Mapping(created.id, memory.id, memory.hash, memory.text, level)
