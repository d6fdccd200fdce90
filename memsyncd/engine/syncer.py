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
from datetime import datetime
from typing import Any, Generic, TypeVar, cast, overload

from memsyncd.config import Paths, Settings, find_api_key, load_settings
from memsyncd.engine.context import ProgressCallback, RunStop, SyncContext, log, short, verify_state
from memsyncd.engine.decide import coalesce
from memsyncd.engine.pull import run_pull
from memsyncd.engine.push import ItemStatus, run_push
from memsyncd.engine.reconcile import reconcile_due, run_reconcile
from memsyncd.engine.replace import finish_local_replaces
from memsyncd.engine.report import PullReport, PushReport, ReconcileReport, StatusReport, SyncReport
from memsyncd.engine.resolve import get_conflict, list_conflicts, resolve_conflict
from memsyncd.errors import MemsyncError, RemoteError, StateUnreadableError
from memsyncd.logs import register_secret
from memsyncd.models import Conflict, SyncMode, format_ts, utc_now
from memsyncd.remote.cloud import CloudClient
from memsyncd.remote.local import LocalClient
from memsyncd.store.queue import QueueStore
from memsyncd.store.state import StateStore
from memsyncd.store.trust import require_trusted
from memsyncd.wire import Keep

__all__ = ["ItemStatus", "ProgressCallback", "Syncer"]

T = TypeVar("T")


class _InContext(Generic[T]):
    """A façade attribute kept in the root's context, so the façade and the concerns always see the same value."""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, syncer: None, owner: type[Any]) -> _InContext[T]: ...

    @overload
    def __get__(self, syncer: Syncer, owner: type[Any] | None = None) -> T: ...

    def __get__(self, syncer: Syncer | None, owner: type[Any] | None = None) -> T | _InContext[T]:
        if syncer is None:  # looked up on the class (help, inspect, mocks)
            return self
        return cast(T, getattr(syncer._ctx, self.name))

    def __set__(self, syncer: Syncer, value: T) -> None:
        setattr(syncer._ctx, self.name, value)


class Syncer:
    """One root's sync engine with its clients, state and queue.

    ``progress``, when set, is called as ``progress(phase, done, total)`` on the engine's
    event loop: after each finished push item (``"push"``, total = coalesced items) and each
    processed cloud memory of a pull (``"pull"``, total None). Never in a dry run; it must
    be cheap, and one that raises is logged and not called again.
    """

    settings: _InContext[Settings] = _InContext()
    paths: _InContext[Paths] = _InContext()
    clock: _InContext[Callable[[], datetime]] = _InContext()
    queue: _InContext[QueueStore] = _InContext()
    state: _InContext[StateStore] = _InContext()
    local: _InContext[LocalClient] = _InContext()
    cloud: _InContext[CloudClient | None] = _InContext()
    progress: _InContext[ProgressCallback | None] = _InContext()

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

    async def run(self, mode: SyncMode, *, dry_run: bool = False, reconcile: bool | None = None) -> SyncReport:
        """One sync run (SPEC 4): push, then pull, then ``last_sync`` := start time for a full sync.

        A dry run works on a copy of the context (shared clients and state, writes nothing,
        no reconcile), so it never flips a concurrent real run into dry mode.

        Raises:
            SyncUnavailableError: cloud not configured.
            QueueUnreadableError: the queue file is corrupt (left untouched).
        """
        if dry_run:
            return await _run(self._ctx.dry_view(), mode, reconcile=False)
        return await _run(self._ctx, mode, reconcile=reconcile)

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
        """Counts for ``--status``; the pull count is a dry-run pull (``?`` when the cloud is unreachable)."""
        ctx = self._ctx
        doc = ctx.queue.read()
        status = StatusReport(
            local_url=ctx.settings.local.url,
            cloud_configured=self.configured,
            pending_push=len(coalesce(doc.pending)),
            pending_pull=None,
            conflicts=len(ctx.state.conflicts()),
            last_sync=doc.last_sync,
            errors=len(doc.sync_errors),
            queue_path=str(ctx.paths.queue),
        )
        if ctx.cloud is not None:
            try:
                pull = await run_pull(ctx.dry_view(), ctx.cloud)
                status.pending_pull = pull.new + pull.updated + pull.conflicts
            except MemsyncError as exc:
                status.pull_note = f"(cloud not checked: {exc.title})"
                if not isinstance(exc, RemoteError) or exc.stops_run:  # not one entry: the whole sync
                    status.attention.append({**exc.to_dict(), "since": format_ts(ctx.clock().replace(microsecond=0))})
        return status


async def _run(ctx: SyncContext, mode: SyncMode, *, reconcile: bool | None) -> SyncReport:
    """Push and/or pull, reconcile when asked or due, stamp ``last_sync``; a dry context writes nothing."""
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
        if mode in (SyncMode.FULL, SyncMode.PUSH):
            report.push = await run_push(ctx, cloud)
        if mode in (SyncMode.FULL, SyncMode.PULL):
            report.pull = PullReport()
            await _pull_keeping_report(ctx, cloud, report.pull)
        if report.pull is None or not report.pull.failed:
            due = reconcile if reconcile is not None else (mode is SyncMode.FULL and reconcile_due(ctx, started))
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
