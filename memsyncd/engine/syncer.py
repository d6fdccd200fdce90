"""The sync engine's façade: one root's :class:`Syncer`, whose ``run(mode)`` is push, pull, then reconcile when due.

The work itself lives in one module per concern under :mod:`memsyncd.engine`, each taking
the root's :class:`~memsyncd.engine.context.SyncContext`: ``push`` (queue to cloud), ``pull``
(cloud to local), ``reconcile`` (cloud deletions), ``resolve`` (conflicts). This module
wires them into a run and its report, and computes ``status``. Decisions come from
:mod:`memsyncd.engine.decide`; the queue lock is never held across network I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memsyncd.config import Paths, Settings, find_api_key, load_settings
from memsyncd.engine.context import META_LAST_RUN, ProgressCallback, RunStop, SyncContext, log, short, verify_state
from memsyncd.engine.decide import coalesce
from memsyncd.engine.pull import run_pull
from memsyncd.engine.push import ClaimCallback, ItemStatus, run_push
from memsyncd.engine.reconcile import reconcile_due, run_reconcile
from memsyncd.engine.replace import finish_local_replaces
from memsyncd.engine.report import PullReport, PushReport, ReconcileReport, ScanReport, StatusReport, SyncReport
from memsyncd.engine.resolve import get_conflict, list_conflicts, resolve_conflict
from memsyncd.engine.scan import (
    META_DELETES_HELD,
    META_LAST_FULL,
    META_LAST_INCREMENTAL,
    ScanKind,
    parse_held,
    run_scan,
)
from memsyncd.errors import MemsyncError, RemoteError, StateUnreadableError
from memsyncd.logs import register_secret
from memsyncd.models import Conflict, LocalMemory, QueueEntry, SyncMode, format_ts, utc_now
from memsyncd.remote.cloud import CloudClient
from memsyncd.remote.local import LocalClient
from memsyncd.store.queue import QueueStore
from memsyncd.store.state import StateStore
from memsyncd.store.trust import require_trusted
from memsyncd.wire import Keep

__all__ = ["ClaimCallback", "ItemStatus", "ProgressCallback", "PullCount", "ScanKind", "Syncer", "command_error"]


@dataclass
class PullCount:
    """A preview: how many cloud memories a pull would bring now, or the error that kept it from counting."""

    report: SyncReport  # the dry-run pull that counted (its ``fatal`` is ``error``)
    count: int | None  # new + updated + conflicting; None when not counted
    error: MemsyncError | None = None


def command_error(report: SyncReport) -> MemsyncError | None:
    """The failure a one-shot command shows as its own error (message, exit code) instead of the report's block.

    A run-level stop (401, network or OpenMemory down, a damaged state DB) is the run's outcome: the
    report's SYNC ERROR block says it. Anything else that ended a run (the queue file unreadable or
    locked, cloud sync not configured, OpenMemory answering with an error before the run began) is the
    command's failure, shown the way every command shows one.
    """
    error = report.fatal
    if error is None or isinstance(error, StateUnreadableError) or (isinstance(error, RemoteError)
                                                                    and error.stops_run):
        return None
    return error


class Syncer:
    """One root's sync engine with its clients, state and queue.

    Whole runs (:meth:`run`, :meth:`reconcile_run`, :meth:`count_to_pull`) never raise a
    :class:`~memsyncd.errors.MemsyncError`: a failure is the report's ``fatal``.
    """

    def __init__(
        self,
        settings: Settings,
        paths: Paths,
        api_key: str | None,
        *,
        local: LocalClient | None = None,
        cloud: CloudClient | None = None,
        state: StateStore | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._ctx = SyncContext.create(settings, paths, api_key, local=local, cloud=cloud, state=state, clock=clock)

    @property
    def settings(self) -> Settings:
        """The root's settings."""
        return self._ctx.settings

    @property
    def paths(self) -> Paths:
        """The root's files."""
        return self._ctx.paths

    @property
    def clock(self) -> Callable[[], datetime]:
        """The engine's clock (UTC)."""
        return self._ctx.clock

    @property
    def queue(self) -> QueueStore:
        """The root's sync queue."""
        return self._ctx.queue

    @property
    def state(self) -> StateStore:
        """The root's state DB."""
        return self._ctx.state

    @property
    def local(self) -> LocalClient:
        """The OpenMemory client."""
        return self._ctx.local

    @property
    def cloud(self) -> CloudClient | None:
        """The mem0 client (None when cloud sync is not configured)."""
        return self._ctx.cloud

    def request_stop(self) -> None:
        """Start no new queue items; items in flight finish and are recorded (graceful shutdown)."""
        self._ctx.stopping = True

    @property
    def configured(self) -> bool:
        """True when cloud sync is enabled and a key is present."""
        return self._ctx.cloud is not None

    async def aclose(self) -> None:
        """Close clients and the DB."""
        await self._ctx.local.aclose()
        if self._ctx.cloud is not None:
            await self._ctx.cloud.aclose()
        self._ctx.state.close()

    async def run(self, mode: SyncMode, *, dry_run: bool = False, reconcile: bool | None = None,
                  scan: ScanKind | None = None, confirm_deletes: bool = False,
                  progress: ProgressCallback | None = None, on_claimed: ClaimCallback | None = None) -> SyncReport:
        """One sync run (SPEC 4): scan, push, then pull, then ``last_sync`` := start time for a full sync.

        A dry run works on a copy of the context (shared clients and state, writes nothing,
        no reconcile), so it never flips a concurrent real run into dry mode. Never raises a
        ``MemsyncError``: whatever ended the run is ``fatal`` in the report (:func:`command_error`
        tells a one-shot command which of those it shows as its own error).

        Args:
            mode: full, push or pull.
            dry_run: decide and count, write nothing.
            reconcile: reconcile cloud deletions (None: when due, in a full sync).
            scan: scan OpenMemory for changes made outside the queue first (push and full modes).
            confirm_deletes: local deletions found by a full scan pass the max-delete guard.
            progress: called as ``progress(phase, done, total)`` on the engine's event loop during this
                run: after each finished push item (``"push"``, total = coalesced items) and each
                processed cloud memory of a pull (``"pull"``, total None). Never in a dry run; it must
                be cheap, and one that raises is logged and not called again.
            on_claimed: called with the keys of the queue entries the push read, before it works on them
                (the push report's ``claimed_keys``; its ``pending_keys`` are those still queued after it).
        """
        ctx = self._ctx.dry_view() if dry_run else self._ctx
        if not dry_run:  # one real run at a time (the pair run lock); a dry run never reports progress
            ctx.progress = progress
        try:
            return await _run(ctx, mode, reconcile=False if dry_run else reconcile, scan=scan,
                              confirm_deletes=confirm_deletes, on_claimed=on_claimed)
        except MemsyncError as exc:  # ended before or outside the phases that report their own failures
            return SyncReport(mode=mode.value, queue_path=str(ctx.paths.queue), dry_run=dry_run, fatal=exc,
                              started_at=format_ts(ctx.clock()))
        finally:
            if not dry_run:
                ctx.progress = None

    async def reconcile_run(self) -> SyncReport:
        """A run that only reconciles cloud deletions (the daemon's reconcile schedule); failures are ``fatal``."""
        report = SyncReport(mode="reconcile", queue_path=str(self._ctx.paths.queue),
                            started_at=format_ts(self._ctx.clock()))
        try:
            self._ctx.require_cloud().begin_run()  # a run of its own: an earlier run's 401 stop does not carry over
            report.reconcile = await self.reconcile()
        except MemsyncError as exc:
            report.fatal = exc
            report.reconcile = ReconcileReport()
        return report

    async def count_to_pull(self) -> PullCount:
        """The memories a pull would bring now (new, updated, conflicting), by a dry-run pull; writes nothing."""
        report = await self.run(SyncMode.PULL, dry_run=True)
        if report.fatal is not None or report.pull is None:
            return PullCount(report, None, report.fatal)
        return PullCount(report, report.pull.new + report.pull.updated + report.pull.conflicts)

    @property
    def scan_backlog(self) -> dict[str, QueueEntry]:
        """Local changes found by scans and not pushed yet (id -> synthetic entry; a snapshot)."""
        return self._ctx.scan_backlog

    async def reconcile(self) -> ReconcileReport:
        """Handle memories deleted in the cloud (SPEC 4, Cloud deletions)."""
        return await run_reconcile(self._ctx)

    def conflicts(self) -> list[Conflict]:
        """Open conflicts."""
        return list_conflicts(self._ctx)

    def conflict(self, conflict_id: int) -> Conflict:
        """One open conflict.

        Raises:
            UsageError: no such conflict.
        """
        return get_conflict(self._ctx, conflict_id)

    async def resolve(self, conflict_id: int, keep: Keep, text: str | None = None) -> dict[str, Any]:
        """Write the chosen text to both sides and update the base (SPEC 4, Conflicts)."""
        try:
            return await resolve_conflict(self._ctx, conflict_id, keep, text)
        finally:
            with contextlib.suppress(StateUnreadableError):
                self._ctx.state.flush_events()

    async def status(self) -> StatusReport:
        """Counts for ``--status``; the pull count is a dry-run pull (``?`` when the cloud is unreachable).

        Without a daemon nobody scanned OpenMemory lately: a dry full scan (local requests only, writes
        nothing) counts the changes made outside the queue, so "Pending" is what the next sync pushes.
        """
        ctx = self._ctx
        doc = ctx.queue.read()
        backlog = ctx.scan_backlog
        wanted = ctx.settings.one_shot_scan
        if wanted is not None and not backlog:
            try:
                found = await run_scan(ctx.dry_view(), ScanKind(wanted))
                backlog = {entry.id: entry for entry in found.entries}
            except RemoteError as exc:
                if exc.stops_run:
                    raise
                log.warning("status.scan_failed", error=short(exc))
        status = StatusReport(
            local_url=ctx.settings.local.url,
            cloud_configured=self.configured,
            pending_push=len(coalesce([*doc.pending, *backlog.values()])),
            pending_pull=None,
            conflicts=len(ctx.state.conflicts()),
            last_sync=latest(doc.last_sync, ctx.state.get_meta(META_LAST_RUN)),
            errors=len(doc.sync_errors),
            queue_path=str(ctx.paths.queue),
        )
        fill_scan_status(status, ctx.state, backlog)
        if ctx.cloud is not None:
            try:
                pull = await run_pull(ctx.dry_view(), ctx.cloud)
                status.pending_pull = pull.new + pull.updated + pull.conflicts
            except MemsyncError as exc:
                status.pull_note = f"(cloud not checked: {exc.title})"
                if not isinstance(exc, RemoteError) or exc.stops_run:  # not one entry: the whole sync
                    status.attention.append({**exc.to_dict(), "since": format_ts(ctx.clock().replace(microsecond=0))})
        return status


def fill_scan_status(status: StatusReport, state: StateStore, backlog: dict[str, QueueEntry]) -> None:
    """The scan part of a status: changes found and not pushed, last scan times, deletions held by the guard."""
    status.pending_scan = len(backlog)
    status.last_incremental_scan = state.get_meta(META_LAST_INCREMENTAL)
    status.last_full_scan = state.get_meta(META_LAST_FULL)
    held = parse_held(state.get_meta(META_DELETES_HELD))
    if held is not None:
        count = held.get("count")
        status.deletes_held = count if isinstance(count, int) else 0
        status.deletes_held_reason = f"{held.get('reason', '')}. Confirm with: {held.get('command', '')}"


async def _scan_and_push(ctx: SyncContext, cloud: CloudClient, report: SyncReport,
                         scan: ScanKind | None, confirm_deletes: bool, on_claimed: ClaimCallback | None) -> bool:
    """Scan (when asked), then push the queue with the scan's findings; True when the pull already ran.

    Scan findings not finished by this push stay in ``ctx.scan_backlog`` for the next push
    (a retry, the next scan). When a scan found new memories, the pull runs first (one listing
    request when little changed), so a memory the cloud already holds (a reinstall, ``state
    rebuild``, another device, another root on the same OpenMemory) is adopted by content hash
    instead of created a second time; a scan that found nothing sends nothing to mem0.
    """
    found: list[QueueEntry] = []
    listed: dict[str, LocalMemory] = {}  # this scan's findings as listed: the push reads them no second time
    if scan is not None:
        try:
            result = await run_scan(ctx, scan, confirm_deletes=confirm_deletes)
            report.scan, found, listed = result.report, result.entries, result.memories
        except RemoteError as exc:
            if exc.stops_run:
                raise
            log.warning("scan.failed", kind=scan.value, error=short(exc))
            report.scan = ScanReport(kind=scan.value, failed=short(exc))
    if scan is ScanKind.FULL and report.scan is not None and not report.scan.failed:
        backlog = {entry.id: entry for entry in found}  # a complete listing says all: older findings are stale
    else:
        backlog = {**ctx.scan_backlog, **{entry.id: entry for entry in found}}
    if not ctx.dry:
        ctx.scan_backlog = backlog  # counted as pending from now on, while the pull and the push work
    held: dict[str, QueueEntry] = {}
    pulled = False
    creates = {e.id: e for e in backlog.values() if e.action == "push" and e.level is None}
    if creates:
        report.pull = PullReport()
        try:
            await _pull_keeping_report(ctx, cloud, report.pull)
        except RemoteError as exc:
            if exc.stops_run:  # 401, network down: the run stops with the seed's error block, as a push would
                report.pull = None
            raise
        pulled = True
        if report.pull.failed:  # unknown what the cloud holds: create nothing yet
            held = creates
        else:  # adopted by the pull (same content hash): nothing left to create
            adopted = ctx.state.mapped_local_ids(list(creates))
            backlog = {i: e for i, e in backlog.items() if i not in adopted}
    extra = [e for i, e in backlog.items() if i not in held]
    finished: set[str] = set()
    if not ctx.dry:
        ctx.scan_backlog = backlog  # counted as pending while the push works through it
    try:
        report.push = await run_push(ctx, cloud, extra, finished, on_claimed, listed)
    finally:
        if not ctx.dry:
            ctx.scan_backlog = {i: e for i, e in backlog.items() if i not in finished}
    return pulled


async def _run(ctx: SyncContext, mode: SyncMode, *, reconcile: bool | None, scan: ScanKind | None = None,
               confirm_deletes: bool = False, on_claimed: ClaimCallback | None = None) -> SyncReport:
    """Scan, push and/or pull, reconcile when asked or due, stamp ``last_sync``; a dry context writes nothing."""
    dry_run = ctx.dry
    cloud = ctx.require_cloud()
    started = ctx.clock()
    t0 = time.monotonic()
    report = SyncReport(mode=mode.value, queue_path=str(ctx.paths.queue), dry_run=dry_run,
                        started_at=format_ts(started))
    cloud.begin_run()
    try:
        await verify_state(ctx)  # a daemon's store may have been damaged since it was opened: look first
        await ctx.local.probe()
        await finish_local_replaces(ctx)  # local rewrites a crash interrupted: one live version each
        # due or not is decided before this run maps anything: a first sync's own creates were just made
        # against live cloud copies, so listing both sides again to look for their deletion is wasted
        due = reconcile if reconcile is not None else (mode is SyncMode.FULL and reconcile_due(ctx, started))
        pulled = False
        if mode in (SyncMode.FULL, SyncMode.PUSH):
            pulled = await _scan_and_push(ctx, cloud, report, scan, confirm_deletes, on_claimed)
        if mode in (SyncMode.FULL, SyncMode.PULL) and not pulled:
            report.pull = PullReport()
            await _pull_keeping_report(ctx, cloud, report.pull)
        if report.pull is None or not report.pull.failed:
            if due and not dry_run:
                report.reconcile = await _reconcile_keeping_report(ctx)
            if mode is SyncMode.FULL and not dry_run:
                stamp = format_ts(started.replace(microsecond=0))
                await asyncio.to_thread(ctx.queue.apply, [], last_sync=stamp)
    except RunStop as stop:
        report.fatal = stop.cause
    except RemoteError as exc:
        if not exc.stops_run:
            raise
        report.fatal = exc
    except StateUnreadableError as exc:
        report.fatal = exc
    synced = report.pull is not None or (report.push is not None and report.push.attempted > 0)
    if not dry_run and report.fatal is None and synced:  # what "Last sync" shows, across restarts too
        ctx.state.set_meta(META_LAST_RUN, format_ts(ctx.clock().replace(microsecond=0)))
    if not isinstance(report.fatal, StateUnreadableError):
        report.conflicts_open = len(ctx.state.conflicts())
    if not dry_run and not isinstance(report.fatal, StateUnreadableError):
        with contextlib.suppress(StateUnreadableError):  # the run's outcome stands; the next run writes them
            ctx.state.flush_events()
    report.duration_ms = int((time.monotonic() - t0) * 1000)
    _log_summary(report)
    return report


async def _pull_keeping_report(ctx: SyncContext, cloud: CloudClient, report: PullReport) -> None:
    """Pull; a failure that ends the pull early is recorded in ``report`` (the push's report stays).

    Raises:
        RemoteError: run-level (401, network down), after recording it in ``report.failed``.
        StateUnreadableError: the state DB failed.
    """
    try:
        await run_pull(ctx, cloud, report)
    except RemoteError as exc:
        log.warning("pull.failed", error=short(exc))
        report.failed = short(exc)
        if exc.stops_run:
            raise
    except StateUnreadableError:
        raise
    except Exception as exc:  # a bug ends the pull, never hides what the push did
        log.exception("pull.crashed")
        report.failed = f"internal error: {short(exc)}"


async def _reconcile_keeping_report(ctx: SyncContext) -> ReconcileReport:
    """Reconcile; a server error is reported as a warning (the next sync retries it)."""
    try:
        return await run_reconcile(ctx)
    except RemoteError as exc:
        if exc.stops_run:
            raise
        log.warning("reconcile.failed", error=short(exc))
        return ReconcileReport(refused=f"reconcile did not finish ({short(exc)}); it runs again on the next sync")


def _log_summary(report: SyncReport) -> None:
    push, pull = report.push or PushReport(), report.pull or PullReport()
    log.info("sync.finished", mode=report.mode, dry_run=report.dry_run, exit_code=report.exit_code,
             pushed=push.synced, push_errors=push.errors, skipped_private=push.skipped_private,
             pulled=pull.synced, pull_errors=pull.errors, conflicts_open=report.conflicts_open,
             fatal=report.fatal.title if report.fatal else None, duration_ms=report.duration_ms)


def build_syncer(paths: Paths, settings: Settings | None = None) -> Syncer:
    """A Syncer for ``paths`` with settings and key loaded the documented way.

    Raises:
        UntrustedRootError: the root's config is not trusted (the key goes where it says).
    """
    require_trusted(paths.root)  # the daemon and the CLI check too; the engine never builds for an untrusted root
    settings = settings or load_settings(paths)
    key, source = find_api_key()
    register_secret(key.get_secret_value() if key else None)
    syncer = Syncer(settings, paths, key.get_secret_value() if key else None)
    if syncer.cloud is not None:
        syncer.cloud.key_source = source  # a 401 names the variable or file the key came from
    return syncer


def latest(*stamps: str | None) -> str | None:
    """The newest of RFC 3339 "Z" timestamps (they sort as text), None when there is none."""
    return max((stamp for stamp in stamps if stamp), default=None)
