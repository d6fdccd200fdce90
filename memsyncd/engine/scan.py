"""Local change detection: scans of OpenMemory that find what no queue entry told us about.

OpenMemory is shared by many clients (Claude Code, Claude Desktop, Cursor, the UI), and only
some of them write the sync queue. Two scans find the rest, and hand what they find to the
push as synthetic queue entries (never a second push implementation):

* the **incremental** scan lists memories created since a cursor (OpenMemory's newest
  ``created_at`` seen, minus :data:`SCAN_OVERLAP_SECONDS`): new memories;
* the **full** scan lists every memory (archived ones too) and compares it with the state DB's
  mappings and merge bases: edits, deletions and any new memory the incremental scan missed.

A mapped memory missing from a complete listing is a deletion candidate; it counts only after
``GET /memories/{id}`` confirms it is deleted (a listing that shifted while it paged never
deletes), and the batch passes the max-delete guard or the user confirmed it
(``memsyncctl sync --confirm-deletes``). A listing that failed counts for nothing.
Decisions are in :mod:`memsyncd.engine.scanplan`; this module only lists and records.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from memsyncd.engine.context import SyncContext, log, short
from memsyncd.engine.report import ScanReport
from memsyncd.engine.scanplan import SCAN_SOURCE, Found, classify, delete_guard, is_scan_entry, missing_mapped
from memsyncd.errors import RemoteError
from memsyncd.models import LocalMemory, QueueEntry, format_ts

META_SCAN_CURSOR = "local_scan_cursor"  # newest OpenMemory created_at (epoch s) a complete scan listed
META_SCAN_SERVER_TIME = "local_scan_server_time"  # OpenMemory's clock (epoch s) when the last complete scan listed
META_LAST_INCREMENTAL = "last_incremental_scan"  # RFC 3339 time of the last complete incremental scan
META_LAST_FULL = "last_full_scan"  # RFC 3339 time of the last complete full scan
META_DELETES_HELD = "scan_deletes_held"  # JSON of deletions the guard refused ("" when none)
SCAN_OVERLAP_SECONDS = 60  # re-list this much before the cursor: rows committed out of order, clock steps
CONFIRM_DELETES_COMMAND = "memsyncctl sync --confirm-deletes"

__all__ = ["CONFIRM_DELETES_COMMAND", "ScanKind", "ScanResult", "is_scan_entry", "run_scan"]


class ScanKind(enum.Enum):
    """Which scan a run does."""

    INCREMENTAL = "incremental"
    FULL = "full"


@dataclass
class ScanResult:
    """A scan's report, the synthetic queue entries for the push, and the memories they were found as.

    ``memories`` (id -> the memory as the listing showed it) spares this run's push a ``GET`` per
    finding: the listing carries everything the GET would (text, state, metadata, app, categories).
    """

    report: ScanReport
    entries: list[QueueEntry] = field(default_factory=list)
    memories: dict[str, LocalMemory] = field(default_factory=dict)


def held_deletes(ctx: SyncContext) -> dict[str, Any] | None:
    """The deletions the guard holds back (``count``, ``mapped``, ``reason``, ``found_at``, ``command``), or None."""
    raw = ctx.state.get_meta(META_DELETES_HELD)
    return parse_held(raw)


def parse_held(raw: str | None) -> dict[str, Any] | None:
    """Decode the ``scan_deletes_held`` meta value (None when empty or unreadable)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def scan_times(ctx: SyncContext) -> tuple[str | None, str | None]:
    """(last complete incremental scan, last complete full scan) as RFC 3339 texts."""
    return ctx.state.get_meta(META_LAST_INCREMENTAL), ctx.state.get_meta(META_LAST_FULL)


async def run_scan(ctx: SyncContext, kind: ScanKind, *, confirm_deletes: bool = False) -> ScanResult:
    """List OpenMemory and turn what changed outside the queue into synthetic push entries.

    Local requests only: a scan that finds nothing sends nothing to mem0 (the push of an
    empty list makes no request). A dry context records nothing (no cursor, no times).

    Raises:
        RemoteError: the listing failed (nothing found by it is used: no deletion, no cursor move).
        StateUnreadableError: the state DB failed.
    """
    if kind is ScanKind.INCREMENTAL:
        return await _incremental(ctx)
    return await _full(ctx, confirm_deletes=confirm_deletes)


def _int_meta(ctx: SyncContext, key: str) -> int:
    text = ctx.state.get_meta(key)
    return int(text) if text and text.isdigit() else 0


def _record_server_time(ctx: SyncContext, server_time: float | None) -> None:
    """Remember OpenMemory's clock at a complete listing (a second early: the Date header is rounded)."""
    if server_time and int(server_time) - 1 > _int_meta(ctx, META_SCAN_SERVER_TIME):
        ctx.state.set_meta(META_SCAN_SERVER_TIME, str(int(server_time) - 1))


def _entry(memory_id: str, action: str, now: str, level: int | None = None) -> QueueEntry:
    return QueueEntry(memory_id, action, now, None, level, extra={"source": SCAN_SOURCE})  # type: ignore[arg-type]


def _page_findings(ctx: SyncContext, page: list[LocalMemory], conflicted: set[str], now: str,
                   result: ScanResult, *, edits: bool) -> None:
    """Classify one listed page against the mappings (one query per 500 ids), without any request;
    the findings go to ``result`` (entries, and the memories as listed)."""
    sync = ctx.settings.sync
    report = result.report
    ids = [m.id for m in page]
    mapped = ctx.state.mappings_for_locals(ids)
    private = ctx.state.local_only_among([i for i in ids if i not in mapped])
    for memory in page:
        mapping = mapped.get(memory.id)
        if mapping is not None and not edits:
            continue
        what = classify(memory, mapping, default_level=sync.default_level, rules=sync.rules,
                        local_only=memory.id in private, in_conflict=memory.id in conflicted)
        if what is Found.NEW:
            report.new += 1
            result.entries.append(_entry(memory.id, "push", now))
        elif what is Found.EDITED:
            assert mapping is not None
            report.edited += 1
            # the level it was synced at stands in for the queue entry's (min with metadata.level)
            result.entries.append(_entry(memory.id, "push", now, mapping.level))
        else:
            continue
        result.memories[memory.id] = memory


async def _incremental(ctx: SyncContext) -> ScanResult:
    started = ctx.clock()
    now = format_ts(started)
    report = ScanReport(kind=ScanKind.INCREMENTAL.value)
    result = ScanResult(report)
    cursor = _int_meta(ctx, META_SCAN_CURSOR)
    newest = cursor
    # every memory created more than the overlap before the last listing's server time was in it (and
    # every one up to the newest it returned): list only what came after, with the overlap for late commits
    since = max(cursor, _int_meta(ctx, META_SCAN_SERVER_TIME))
    from_date = max(since - SCAN_OVERLAP_SECONDS, 1) if since else None
    server_time: float | None = None
    async for page in ctx.local.pages(from_date=from_date):
        if server_time is None:
            server_time = ctx.local.server_time or 0.0
        report.listed += len(page)
        newest = max([newest, *(m.created_at for m in page if m.created_at is not None)])
        _page_findings(ctx, page, set(), now, result, edits=False)
    if not ctx.dry:
        if newest != cursor:
            ctx.state.set_meta(META_SCAN_CURSOR, str(newest))
        _record_server_time(ctx, server_time)
        ctx.state.set_meta(META_LAST_INCREMENTAL, format_ts(started.replace(microsecond=0)))
    log.debug("scan.incremental", listed=report.listed, new=report.new, since=from_date)
    return result


async def _full(ctx: SyncContext, *, confirm_deletes: bool) -> ScanResult:
    started = ctx.clock()
    now = format_ts(started)
    report = ScanReport(kind=ScanKind.FULL.value)
    result = ScanResult(report)
    conflicted = {c.local_id for c in ctx.state.conflicts()}
    listed: set[str] = set()
    newest = 0
    server_time: float | None = None
    # archived memories are listed too: archiving is not a deletion (deleted ones never show)
    async for page in ctx.local.pages(show_archived=True):
        if server_time is None:
            server_time = ctx.local.server_time or 0.0
        report.listed += len(page)
        listed.update(m.id for m in page)
        newest = max([newest, *(m.created_at for m in page if m.created_at is not None)])
        _page_findings(ctx, page, conflicted, now, result, edits=True)
    # the listing is complete: only now may a missing memory count as deleted
    missing = missing_mapped(ctx.state.mapped_ids(), listed)
    del listed
    mapped_total = ctx.state.count_mappings()
    fraction = ctx.settings.sync.max_delete_fraction
    held = "" if confirm_deletes else delete_guard(len(missing), mapped_total, fraction)
    deleted: list[str] = []
    if not held:
        for local_id in missing:  # confirm each one: a listing that shifted while it paged deletes nothing
            try:
                memory = await ctx.local.get(local_id)
            except RemoteError as exc:
                log.info("scan.delete_unconfirmed", local_id=local_id, error=short(exc))
                report.unconfirmed += 1
                continue
            if memory is None or not memory.alive:
                deleted.append(local_id)
            else:
                report.unconfirmed += 1
        held = "" if confirm_deletes else delete_guard(len(deleted), mapped_total, fraction)
    if held:
        report.deletes_held = len(deleted) or len(missing)
        report.held_reason = f"{held}. To delete them in the cloud too, run: {CONFIRM_DELETES_COMMAND}"
        log.warning("scan.deletes_held", count=report.deletes_held, mapped=mapped_total)
    else:
        report.deleted = len(deleted)
        result.entries += [_entry(local_id, "delete", now) for local_id in deleted]
    if not ctx.dry:
        record: str = ""
        if held:
            record = json.dumps({"count": report.deletes_held, "mapped": mapped_total, "found_at": now,
                                 "reason": held, "command": CONFIRM_DELETES_COMMAND})
        if record or ctx.state.get_meta(META_DELETES_HELD):
            ctx.state.set_meta(META_DELETES_HELD, record)
        if newest > _int_meta(ctx, META_SCAN_CURSOR):
            ctx.state.set_meta(META_SCAN_CURSOR, str(newest))
        _record_server_time(ctx, server_time)
        stamp = format_ts(started.replace(microsecond=0))
        ctx.state.set_meta(META_LAST_FULL, stamp)
        ctx.state.set_meta(META_LAST_INCREMENTAL, stamp)  # a full listing covers the incremental one
    log.info("scan.full", listed=report.listed, new=report.new, edited=report.edited, deleted=report.deleted,
             held=report.deletes_held)
    return result
