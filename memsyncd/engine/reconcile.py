"""Reconcile: memories deleted in the cloud are deleted locally, or become conflicts when edited here (SPEC 4).

A pull only sees memories that still exist in the cloud; this step lists every cloud id
in scope and compares it with the mappings (:func:`~memsyncd.engine.decide.plan_reconcile`,
which also refuses a suspiciously large share of deletions). The listing is paged by number,
so a memory deleted meanwhile on a page already read moves later ones onto it: a mapped memory
missing from the listing is only a candidate, and is acted on once a GET of its cloud id
answers not found (:func:`~memsyncd.engine.decide.confirmed_reconcile`). A dry context
decides and counts the same way but writes nothing.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime

from memsyncd.engine.context import META_RECONCILE, SyncContext, log
from memsyncd.engine.decide import confirmed_reconcile, plan_reconcile, reconcile_candidates
from memsyncd.engine.pipeline import WorkerPool
from memsyncd.engine.report import ReconcileReport
from memsyncd.models import Mapping, format_ts, parse_ts
from memsyncd.remote.cloud import CloudClient


def reconcile_due(ctx: SyncContext, now: datetime) -> bool:
    """True when ``sync.reconcile_interval_seconds`` passed since the last reconcile (or none ran yet over mappings)."""
    last = ctx.state.get_meta(META_RECONCILE)
    if last is None:
        return ctx.state.count_mappings() > 0
    return (now - parse_ts(last)).total_seconds() >= ctx.settings.sync.reconcile_interval_seconds


async def run_reconcile(ctx: SyncContext) -> ReconcileReport:
    """Handle memories deleted in the cloud (SPEC 4, Cloud deletions).

    Raises:
        SyncUnavailableError: cloud not configured.
        RemoteError: a listing or a local delete failed.
        StateUnreadableError: the state DB failed.
    """
    cloud = ctx.require_cloud()
    started = ctx.clock()
    cloud_ids: set[str] = set()
    async for cloud_page in cloud.pages():
        cloud_ids.update(memory.id for memory in cloud_page)
    local_hashes: dict[str, str | None] = {}
    local_texts: dict[str, str] = {}
    async for page in ctx.local.pages():
        for memory in page:
            if memory.alive:
                local_hashes[memory.id] = memory.hash
                local_texts[memory.id] = memory.text
    listed = plan_reconcile(ctx.state.mappings(), cloud_ids, local_hashes, ctx.settings.sync.max_delete_fraction)
    candidates = reconcile_candidates(listed)
    gone = await _confirm_gone(ctx, cloud, candidates)
    plan = confirmed_reconcile(listed, gone)
    if len(gone) < len(candidates):
        log.info("reconcile.still_there", missing_from_listing=len(candidates), confirmed_gone=len(gone))
    report = ReconcileReport(refused=plan.reason if plan.refused else "")
    if plan.refused:
        log.warning("reconcile.refused", reason=plan.reason)
    for mapping in plan.delete_local:
        if not ctx.dry:
            await ctx.local.delete(mapping.local_id)
            ctx.state.delete_mapping(mapping.local_id)
            ctx.record("delete", mapping.local_id, mapping.base_text if mapping.level else None,
                       "deleted in the cloud")
        report.deleted_local += 1
    for mapping in plan.conflicts:
        if not ctx.dry:
            ctx.state.record_conflict(mapping.local_id, mapping.cloud_id, mapping.base_text,
                                      local_texts.get(mapping.local_id), None, "deleted in the cloud, edited locally")
        report.conflicts += 1
    for mapping in plan.forget:
        if not ctx.dry:
            ctx.state.delete_mapping(mapping.local_id)
        report.forgotten += 1
    if not ctx.dry:
        ctx.state.set_meta(META_RECONCILE, format_ts(started))
    log.info("reconcile.finished", deleted_local=report.deleted_local, conflicts=report.conflicts,
             forgotten=report.forgotten, refused=bool(report.refused), dry=ctx.dry)
    return report


async def _confirm_gone(ctx: SyncContext, cloud: CloudClient, candidates: tuple[Mapping, ...]) -> set[str]:
    """The candidates' cloud ids that a GET answers not found (the others still exist).

    Raises:
        RemoteError: a GET failed (nothing has been written yet; the next sync reconciles again).
    """
    if not candidates:
        return set()
    async with WorkerPool(ctx.settings.sync.concurrency) as pool:
        futures = [pool.submit(functools.partial(cloud.get, m.cloud_id)) for m in candidates]
        found = await asyncio.gather(*futures, return_exceptions=True)
    for result in found:
        if isinstance(result, BaseException):
            raise result
    return {m.cloud_id for m, memory in zip(candidates, found, strict=True) if memory is None}
