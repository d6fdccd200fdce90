"""The applier: runs push, pull, reconcile and conflict resolution through the two clients.

Decisions come from :mod:`memsyncd.engine.decide`; this module only reads the
inputs those functions need, executes what they decide, and records results in the
state DB and the queue file. The queue lock is never held across network I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import functools
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from memsyncd.cloud import CloudClient, Scope
from memsyncd.config import Paths, Settings
from memsyncd.engine.decide import (
    CloudStep,
    DeleteStep,
    Keep,
    PullStep,
    PushStep,
    changed_since_recorded,
    cloud_level,
    coalesce,
    needs_local_read,
    plan_mapped_delete,
    plan_mapped_push,
    plan_pull,
    plan_push,
    plan_reconcile,
    plan_resolution,
)
from memsyncd.errors import (
    CloudProcessingError,
    ConflictError,
    MemsyncError,
    RemoteError,
    StateUnreadableError,
    SyncUnavailableError,
    UsageError,
)
from memsyncd.exactly_once import ExactlyOnce, IntentLog, cloud_metadata
from memsyncd.http_edge import RetryPolicy
from memsyncd.local import LocalClient
from memsyncd.logs import redact_text
from memsyncd.models import (
    CloudMemory,
    Conflict,
    LocalMemory,
    Mapping,
    SyncMode,
    WorkItem,
    content_hash,
    format_ts,
    parse_ts,
    utc_now,
)
from memsyncd.pipeline import WorkerPool, prefetch
from memsyncd.queue_store import Outcome, QueueStore
from memsyncd.report import PullReport, PushReport, ReconcileReport, StatusReport, SyncReport
from memsyncd.state import StateStore

log = structlog.get_logger("memsyncd.sync")

PULL_OVERLAP = timedelta(seconds=60)
PUSH_WORKERS_PER_SLOT = 2  # push workers per cloud request slot (see Syncer._push)
META_CURSOR = "pull_cursor"
META_RECONCILE = "last_reconcile"


class _Stop(Exception):
    """Internal: a run-level error (401, network down) ended the push; carries the cause."""

    def __init__(self, cause: MemsyncError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ItemStatus(enum.Enum):
    """How one coalesced queue item ended in a push run."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"  # nothing to send (already equal, or only the cloud changed)
    CONFLICT = "conflict"  # a new conflict was recorded; the entry leaves the queue
    SKIPPED = "skipped"  # level 0: never leaves the machine
    DROPPED = "dropped"  # nothing to do any more (gone locally, never synced)
    FAILED = "failed"  # stays queued with a sync_errors row
    WAITING = "waiting"  # mem0 is still processing a queued add: stays queued, not an error
    CANCELLED = "cancelled"  # not attempted: the run stopped (401, network down, shutdown)



@dataclass
class _ItemResult:
    outcome: Outcome
    status: ItemStatus
    message: str = ""


@dataclass
class _PullPlan:
    """What a pull knows about one changed cloud memory, and what it decided."""

    memory: CloudMemory
    mapping: Mapping | None
    local: LocalMemory | None = None
    adoptable: LocalMemory | None = None
    step: PullStep = PullStep.ECHO


@dataclass
class _LocalIndex:
    """Unmapped live local memories a pulled cloud memory may be (adoption instead of a second copy)."""

    by_hash: dict[str, LocalMemory] = field(default_factory=dict)
    by_cloud_id: dict[str, LocalMemory] = field(default_factory=dict)

    def add(self, memory: LocalMemory) -> None:
        self.by_hash.setdefault(memory.hash, memory)
        cloud_id = memory.metadata.get("memsync_cloud_id")
        if isinstance(cloud_id, str):
            self.by_cloud_id.setdefault(cloud_id, memory)

    def take(self, cloud: CloudMemory, claimed: set[str]) -> LocalMemory | None:
        """The local copy pulled from ``cloud`` earlier (a crash before its mapping), else one with its text."""
        for found in (self.by_cloud_id.get(cloud.id), self.by_hash.get(cloud.hash)):
            if found is not None and found.id not in claimed:
                return found
        return None

    def discard(self, memory: LocalMemory) -> None:
        if self.by_hash.get(memory.hash) is memory:
            del self.by_hash[memory.hash]
        cloud_id = memory.metadata.get("memsync_cloud_id")
        if isinstance(cloud_id, str) and self.by_cloud_id.get(cloud_id) is memory:
            del self.by_cloud_id[cloud_id]


@dataclass
class _PullRun:
    """What one pull shares across its pages."""

    report: PullReport
    device: str
    index: _LocalIndex | None = None
    claimed: set[str] = field(default_factory=set)  # local ids adopted in this pull
    in_flight: set[str] = field(default_factory=set)  # cloud ids whose writes are not recorded yet
    fatal: MemsyncError | None = None


@dataclass
class _PageWork:
    """One page's decided plans and the futures of their writes."""

    plans: list[_PullPlan]
    futures: list[asyncio.Future[Mapping | None]]


@dataclass
class _RunState:
    fatal: MemsyncError | None = None


@dataclass
class _PushTally:
    """Counts of a push run's results (no per-item list: memory stays flat in the queue's length)."""

    counts: Counter[ItemStatus] = field(default_factory=Counter)
    error_messages: list[str] = field(default_factory=list)

    def add(self, result: _ItemResult) -> None:
        self.counts[result.status] += 1
        if result.status is ItemStatus.FAILED:
            self.error_messages.append(f"{result.outcome.entries[-1].id}: {result.message}")

    def report(self) -> PushReport:
        counts = self.counts
        report = PushReport(
            created=counts[ItemStatus.CREATED], updated=counts[ItemStatus.UPDATED],
            deleted=counts[ItemStatus.DELETED], unchanged=counts[ItemStatus.UNCHANGED],
            conflicts=counts[ItemStatus.CONFLICT], skipped_private=counts[ItemStatus.SKIPPED],
            dropped=counts[ItemStatus.DROPPED], errors=counts[ItemStatus.FAILED],
            waiting=counts[ItemStatus.WAITING], error_messages=self.error_messages,
        )
        report.attempted = (counts.total() - report.skipped_private - report.dropped - report.conflicts
                            - report.waiting)
        return report


class _QueueFlusher:
    """Applies finished push results to the queue file in batches while the run goes on.

    A batch goes when ``FLUSH_EVERY`` results are waiting or ``FLUSH_SECONDS`` passed, but
    never sooner than ``1 / FLUSH_SHARE`` times the last write took, so a huge queue file
    (whose rewrite costs more) is written less often and the run stays linear in its length.
    Each write runs in a thread (``QueueStore.apply``: lock, re-read, atomic replace, fsync):
    the event loop never waits on the lock or the disk.
    """

    FLUSH_EVERY = 50
    FLUSH_SECONDS = 1.0
    FLUSH_SHARE = 0.1

    def __init__(self, queue: QueueStore, *, write: bool) -> None:
        self.queue = queue
        self.write = write
        self._waiting: list[Outcome] = []
        self._task: asyncio.Task[None] | None = None
        self._last = time.monotonic()
        self._last_cost = 0.0

    def add(self, outcome: Outcome) -> None:
        """Queue one result for the file (entries that are neither done nor failed need no write)."""
        if not self.write or not (outcome.done or outcome.error):
            return
        self._waiting.append(outcome)
        if self._task is not None and self._task.done() and self._task.exception() is not None:
            return  # the write failed: close() raises it
        if self._task is not None and not self._task.done():
            return
        since = time.monotonic() - self._last
        if since < self._last_cost / self.FLUSH_SHARE:
            return
        if len(self._waiting) >= self.FLUSH_EVERY or since >= self.FLUSH_SECONDS:
            batch, self._waiting = self._waiting, []
            self._task = asyncio.create_task(self._apply(batch))

    async def _apply(self, batch: list[Outcome]) -> None:
        started = time.monotonic()
        await asyncio.to_thread(self.queue.apply, _redacted(batch))
        self._last = time.monotonic()
        self._last_cost = self._last - started

    async def close(self, *, write: bool = True) -> None:
        """Wait for the batch in flight, then write what is left (``write=False``: drop it).

        Raises:
            QueueUnreadableError, QueueBusyError: a write failed (nothing of that batch was written).
        """
        if self._task is not None:
            await self._task
        rest, self._waiting = self._waiting, []
        if rest and write and self.write:
            await self._apply(rest)


def _redacted(outcomes: list[Outcome]) -> list[Outcome]:
    """Last guard before ``sync_errors`` rows are written: no secret ever reaches the queue file."""
    return [Outcome(o.entries, o.done, redact_text(o.error)) if o.error else o for o in outcomes]


class Syncer:
    """One root's sync engine with its clients, state and queue."""

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
        self.settings = settings
        self.paths = paths
        self.clock = clock
        self.queue = QueueStore(paths.queue, paths.queue_lock)
        self.state = state or StateStore(paths.state)
        policy = RetryPolicy(attempts=settings.sync.attempts_per_run,
                             max_retry_after=settings.sync.max_retry_after_seconds)
        timeout = settings.sync.request_timeout_seconds
        self.local = local or LocalClient(settings.local.url, settings.local.user_id, settings.local.app,
                                          policy=policy, timeout=timeout)
        self.cloud: CloudClient | None = cloud
        if self.cloud is None and api_key and settings.cloud.enabled:
            scope = Scope(settings.cloud_user_id, settings.cloud.agent_id, settings.cloud.app_id,
                          settings.cloud.org_id, settings.cloud.project_id)
            self.cloud = CloudClient(settings.cloud.url, api_key, scope, policy=policy, timeout=timeout,
                                     max_in_flight=settings.sync.concurrency)
        self._intents = IntentLog(self.state)
        self._dry = False
        self._stopping = False

    def _dry_view(self) -> Syncer:
        """A shallow copy that shares clients and state but writes nothing."""
        view = copy.copy(self)
        view._dry = True
        return view

    def request_stop(self) -> None:
        """Start no new queue items; items in flight finish and are recorded (graceful shutdown)."""
        self._stopping = True

    @property
    def configured(self) -> bool:
        """True when cloud sync is enabled and a key is present."""
        return self.cloud is not None

    async def aclose(self) -> None:
        """Close clients and the DB."""
        await self.local.aclose()
        if self.cloud is not None:
            await self.cloud.aclose()
        self.state.close()

    def _once(self, cloud: CloudClient) -> ExactlyOnce:
        return ExactlyOnce(cloud, self.state, self.settings.sync.event_wait_seconds, self._intents)

    def _require_cloud(self) -> CloudClient:
        if self.cloud is None:
            raise SyncUnavailableError("Cloud sync is not configured.")
        return self.cloud

    # --- runs -------------------------------------------------------------------------------

    async def run(self, mode: SyncMode, *, dry_run: bool = False, reconcile: bool | None = None) -> SyncReport:
        """One sync run (SPEC 4): push, then pull, then ``last_sync`` := start time for a full sync.

        Raises:
            SyncUnavailableError: cloud not configured.
            QueueUnreadableError: the queue file is corrupt (left untouched).
        """
        if dry_run and not self._dry:
            return await self._dry_view().run(mode, dry_run=True, reconcile=False)
        cloud = self._require_cloud()
        started = self.clock()
        t0 = time.monotonic()
        report = SyncReport(mode=mode.value, queue_path=str(self.paths.queue), dry_run=dry_run,
                            started_at=format_ts(started))
        cloud.begin_run()
        try:
            await self.local.probe()
            if mode in (SyncMode.FULL, SyncMode.PUSH):
                report.push = await self._push(cloud)
            if mode in (SyncMode.FULL, SyncMode.PULL):
                report.pull = PullReport()
                await self._pull_keeping_report(cloud, report.pull)
            if report.pull is None or not report.pull.failed:
                due = reconcile if reconcile is not None else (mode is SyncMode.FULL and self._reconcile_due(started))
                if due and not dry_run:
                    report.reconcile = await self._reconcile_keeping_report()
                if mode is SyncMode.FULL and not dry_run:
                    stamp = format_ts(started.replace(microsecond=0))
                    await asyncio.to_thread(self.queue.apply, [], last_sync=stamp)
        except _Stop as stop:
            report.fatal = stop.cause
        except RemoteError as exc:
            if not exc.stops_run:
                raise
            report.fatal = exc
        except StateUnreadableError as exc:
            report.fatal = exc
        if not isinstance(report.fatal, StateUnreadableError):
            report.conflicts_open = len(self.state.conflicts())
        report.duration_ms = int((time.monotonic() - t0) * 1000)
        self._log_summary(report)
        return report

    async def _pull_keeping_report(self, cloud: CloudClient, report: PullReport) -> None:
        """Pull; a failure that ends the pull early is recorded in ``report`` (the push's report stays).

        Raises:
            RemoteError: run-level (401, network down), after recording it in ``report.failed``.
            StateUnreadableError: the state DB failed.
        """
        try:
            await self._pull(cloud, report)
        except RemoteError as exc:
            log.warning("pull.failed", error=_short(exc))
            report.failed = _short(exc)
            if exc.stops_run:
                raise
        except StateUnreadableError:
            raise
        except Exception as exc:  # a bug ends the pull, never hides what the push did
            log.exception("pull.crashed")
            report.failed = f"internal error: {_short(exc)}"

    async def _reconcile_keeping_report(self) -> ReconcileReport:
        """Reconcile; a server error is reported as a warning (the next sync retries it)."""
        try:
            return await self.reconcile()
        except RemoteError as exc:
            if exc.stops_run:
                raise
            log.warning("reconcile.failed", error=_short(exc))
            return ReconcileReport(refused=f"reconcile did not finish ({_short(exc)}); it runs again on the next sync")

    def _log_summary(self, report: SyncReport) -> None:
        push, pull = report.push or PushReport(), report.pull or PullReport()
        log.info("sync.finished", mode=report.mode, dry_run=report.dry_run, exit_code=report.exit_code,
                 pushed=push.synced, push_errors=push.errors, skipped_private=push.skipped_private,
                 pulled=pull.synced, pull_errors=pull.errors, conflicts_open=report.conflicts_open,
                 fatal=report.fatal.title if report.fatal else None, duration_ms=report.duration_ms)

    # --- push -------------------------------------------------------------------------------

    async def _push(self, cloud: CloudClient) -> PushReport:
        """Workers take the coalesced items in order; results reach the queue file in batches.

        ``sync.concurrency`` bounds the cloud requests in flight (``CloudClient.max_in_flight``);
        there are twice as many workers, so that while some wait on the cloud the others read
        their local memory and make their intent durable, and a cloud slot never idles.
        Memory stays flat in the queue's length: one task per worker, counters instead of a
        result per item, and finished entries leave the queue while the run goes on (so
        ``status`` sees progress and a crash leaves only unfinished work).
        """
        doc = await asyncio.to_thread(self.queue.read)  # no lock held while we talk to the servers
        items = coalesce(doc.pending)
        del doc
        run = _RunState()
        tally = _PushTally()
        flusher = _QueueFlusher(self.queue, write=not self._dry)
        todo = iter(items)

        def not_done(item: WorkItem, status: ItemStatus, message: str | None = None) -> _ItemResult:
            return _ItemResult(Outcome(item.entries, done=False, error=message), status, message or "")

        async def push_one(item: WorkItem) -> _ItemResult:
            try:
                return await self._push_item(cloud, item)
            except CloudProcessingError as exc:
                log.info("push.item_waiting", id=item.id, reason=_short(exc))
                return not_done(item, ItemStatus.WAITING)
            except RemoteError as exc:
                log.warning("push.item_failed", id=item.id, error=_short(exc))
                if exc.stops_run:
                    run.fatal = run.fatal or exc
                    return not_done(item, ItemStatus.CANCELLED)
                return not_done(item, ItemStatus.FAILED, _short(exc))
            except StateUnreadableError as exc:  # a run-level stop, never the failure of one item
                run.fatal = run.fatal or exc
                return not_done(item, ItemStatus.CANCELLED)
            except Exception as exc:  # a bug must fail one entry, never the run or the daemon
                log.exception("push.item_crashed", id=item.id)
                return not_done(item, ItemStatus.FAILED, f"internal error: {_short(exc)}")

        async def worker() -> None:
            for item in todo:  # one shared iterator: every item is taken by exactly one worker
                if run.fatal is not None or self._stopping:
                    return
                result = await push_one(item)
                tally.add(result)
                if result.status is not ItemStatus.CANCELLED:
                    flusher.add(result.outcome)

        workers = min(PUSH_WORKERS_PER_SLOT * self.settings.sync.concurrency, len(items)) or 1
        await asyncio.gather(*(worker() for _ in range(workers)))
        if run.fatal is not None:
            # A run-level stop (401, network down, damaged state DB) writes nothing more to the queue:
            # no sync_errors rows, and a stop before the first batch leaves the file byte-for-byte as
            # it was. What did reach the cloud is recorded in the state DB (or, after a state error,
            # in the cloud metadata 'state rebuild' reads), so the next run neither loses nor repeats it.
            await flusher.close(write=False)
            raise _Stop(run.fatal)
        await flusher.close()
        return tally.report()

    async def _push_item(self, cloud: CloudClient, item: WorkItem) -> _ItemResult:
        done = Outcome(item.entries, done=True)
        mapping = self.state.mapping_for_local(item.id)
        intent = self.state.intent_for(item.id)
        local = await self.local.get(item.id) if needs_local_read(item) else None
        plan = plan_push(item, local, mapping, intent, self.settings.sync.default_level)
        log.debug("push.plan", id=item.id, step=plan.step.value, reason=plan.reason)
        step = plan.step
        if step is PushStep.SKIP_PRIVATE:
            return _ItemResult(done, ItemStatus.SKIPPED)
        if step is PushStep.DROP_GONE:
            return _ItemResult(done, ItemStatus.DROPPED)
        if step is PushStep.DROP_UNMAPPED:
            found = await self._once(cloud).find_landed(intent) if intent else None
            if found is None:
                if intent and not self._dry:
                    self.state.clear_intent(item.id)
                return _ItemResult(done, ItemStatus.DROPPED)
            mapping = Mapping(item.id, found.id, found.hash, found.text)
        if step in (PushStep.DELETE_CLOUD, PushStep.DROP_UNMAPPED):
            assert mapping is not None
            return await self._push_delete(cloud, item, mapping)
        assert local is not None
        cloud_copy: CloudMemory | None = None
        if step is PushStep.RESOLVE_INTENT:
            assert intent is not None
            cloud_copy = await self._once(cloud).find_landed(intent)
            if cloud_copy is None:
                step = PushStep.CREATE_CLOUD
            else:
                mapping = Mapping(local.id, cloud_copy.id, cloud_copy.hash, cloud_copy.text, plan.level)
                if not self._dry:
                    self.state.save_mapping(mapping)
        if step is PushStep.CREATE_CLOUD:
            if self._dry:
                return _ItemResult(done, ItemStatus.CREATED)
            await self._once(cloud).create(local, plan.level)
            return _ItemResult(done, ItemStatus.CREATED)
        assert mapping is not None
        if cloud_copy is None:
            cloud_copy = await cloud.get(mapping.cloud_id)
        cloud_step = plan_mapped_push(local, mapping, cloud_copy)
        log.debug("push.mapped", id=item.id, step=cloud_step.value)
        if cloud_step is CloudStep.UPDATE_CLOUD:
            if not self._dry:
                metadata = cloud_metadata(local, plan.level, self.state.device_id)
                await cloud.update(mapping.cloud_id, local.text, metadata)
                self.state.save_mapping(Mapping(local.id, mapping.cloud_id, local.hash, local.text, plan.level))
            return _ItemResult(done, ItemStatus.UPDATED)
        if cloud_step is CloudStep.REFRESH_BASE:
            if not self._dry:
                self.state.save_mapping(Mapping(local.id, mapping.cloud_id, local.hash, local.text, plan.level))
            return _ItemResult(done, ItemStatus.UNCHANGED)
        if cloud_step in (CloudStep.NOTHING, CloudStep.CLOUD_DELETED):
            return _ItemResult(done, ItemStatus.UNCHANGED)
        reason = "edited locally, deleted in the cloud" if cloud_copy is None else "edited on both sides"
        known = self._record_conflict(mapping, local.text, cloud_copy.text if cloud_copy else None, reason)
        return _ItemResult(done, ItemStatus.UNCHANGED if known else ItemStatus.CONFLICT)

    async def _push_delete(self, cloud: CloudClient, item: WorkItem, mapping: Mapping) -> _ItemResult:
        done = Outcome(item.entries, done=True)
        current = await cloud.get(mapping.cloud_id)
        step = plan_mapped_delete(mapping, current)
        log.debug("push.delete", id=item.id, step=step.value)
        if step is DeleteStep.CONFLICT:
            assert current is not None
            known = self._record_conflict(mapping, None, current.text, "deleted locally, edited in the cloud")
            return _ItemResult(done, ItemStatus.UNCHANGED if known else ItemStatus.CONFLICT)
        if not self._dry:
            if step is DeleteStep.DELETE_CLOUD:
                await cloud.delete(mapping.cloud_id)
            self.state.delete_mapping(item.id)
            self.state.clear_intent(item.id)
        return _ItemResult(done, ItemStatus.DELETED)

    def _record_conflict(self, mapping: Mapping, local_text: str | None, cloud_text: str | None,
                         reason: str) -> bool:
        """Store a conflict; True when the very same conflict was already open (not counted again)."""
        open_one = self.state.conflict_for_local(mapping.local_id)
        if open_one is not None and (open_one.local_text, open_one.cloud_text) == (local_text, cloud_text):
            return True
        if not self._dry:
            self.state.record_conflict(mapping.local_id, mapping.cloud_id, mapping.base_text, local_text,
                                       cloud_text, reason)
            log.info("conflict.recorded", local_id=mapping.local_id, cloud_id=mapping.cloud_id, reason=reason)
        return False

    # --- pull -------------------------------------------------------------------------------

    async def _pull(self, cloud: CloudClient, report: PullReport | None = None) -> PullReport:
        """Pipelined, page by page: observe what each change needs, decide (in listing order), apply.

        One pool of ``sync.concurrency`` workers serves every page: the next page is fetched
        while the current one is applied, and its reads start as soon as slots free up. At
        most two pages have work in flight (bounded memory). Decisions are taken in listing
        order (adoption claims depend on it); a page's mappings are written in one
        transaction once all of its writes are done.

        Args:
            cloud: the cloud client.
            report: filled in place (so a caller keeps what was done when the pull fails).

        Raises:
            RemoteError: a page could not be listed, or a run-level error (401, network down).
            StateUnreadableError: the state DB failed.
        """
        report = report if report is not None else PullReport()
        cursor_text = self.state.get_meta(META_CURSOR)
        cursor = parse_ts(cursor_text) if cursor_text else None
        newest = cursor
        run = _PullRun(report=report, device=self.state.device_id)
        window: deque[_PageWork] = deque()
        async with WorkerPool(self.settings.sync.concurrency) as pool:
            try:
                async for page in prefetch(cloud.changed_since(cursor, PULL_OVERLAP)):
                    report.seen += len(page)
                    stamps = [m.updated_at for m in page if m.updated_at is not None]
                    if stamps and (newest is None or max(stamps) > newest):
                        newest = max(stamps)
                    while len(window) >= 2:
                        await self._finish_page(window.popleft(), run)
                    window.append(await self._start_page(pool, page, run))
                while window:
                    await self._finish_page(window.popleft(), run)
            except Exception as exc:  # (a cancelled run stops at once: the next pull adopts what landed)
                run.fatal = run.fatal or (exc if isinstance(exc, MemsyncError) else RemoteError("pull stopped"))
                while window:  # record what did land before the error, then re-raise it
                    with contextlib.suppress(Exception):
                        await self._finish_page(window.popleft(), run)
                raise
        if not self._dry and report.errors == 0 and newest is not None and newest != cursor:
            self.state.set_meta(META_CURSOR, newest.isoformat())
        return report

    async def _start_page(self, pool: WorkerPool, page: list[CloudMemory], run: _PullRun) -> _PageWork:
        """Observe a page's changes through the pool, decide in order, and queue the writes."""
        mapped = self.state.mappings_for_cloud([m.id for m in page])
        # our own echo, or nothing new: the cloud still has the merge base. Ids whose earlier copy in
        # this pull is still being written (a listing that shifted while we paged) are left alone.
        changed = [(m, mapped.get(m.id)) for m in page
                   if m.id not in run.in_flight and (m.id not in mapped or m.hash != mapped[m.id].base_hash)]
        observed = await asyncio.gather(
            *(pool.submit(functools.partial(self._observe_pull, m, mp, run.device)) for m, mp in changed),
            return_exceptions=True)
        plans: list[_PullPlan] = []
        for (memory, _), seen in zip(changed, observed, strict=True):
            if isinstance(seen, BaseException):
                self._pull_failed(run.report, memory, seen)
                continue
            if seen.mapping is None and (seen.adoptable is None or seen.adoptable.id in run.claimed):
                if run.index is None:
                    run.index = await self._unmapped_local_index()
                seen.adoptable = run.index.take(memory, run.claimed)
            if seen.adoptable is not None:
                run.claimed.add(seen.adoptable.id)
                if run.index is not None:
                    run.index.discard(seen.adoptable)
            seen.step = plan_pull(memory, seen.mapping, seen.local, seen.adoptable)
            log.debug("pull.plan", cloud_id=memory.id, step=seen.step.value)
            plans.append(seen)
        run.in_flight.update(plan.memory.id for plan in plans)
        futures = [pool.submit(functools.partial(self._apply_guarded, plan, run)) for plan in plans]
        return _PageWork(plans, futures)

    async def _apply_guarded(self, plan: _PullPlan, run: _PullRun) -> Mapping | None:
        if run.fatal is not None:  # the pull is stopping: start no new write
            raise run.fatal
        try:
            return await self._apply_pull(plan, run.report)
        except RemoteError as exc:
            if exc.stops_run:
                run.fatal = run.fatal or exc
            raise
        except StateUnreadableError as exc:
            run.fatal = run.fatal or exc
            raise

    async def _finish_page(self, work: _PageWork, run: _PullRun) -> None:
        """Wait for a page's writes, store its mappings in one transaction, then report its failures."""
        results = await asyncio.gather(*work.futures, return_exceptions=True)
        batch = [r for r in results if isinstance(r, Mapping)]
        if batch and not self._dry:
            self.state.save_mappings(batch)
        run.in_flight.difference_update(plan.memory.id for plan in work.plans)
        for plan, result in zip(work.plans, results, strict=True):
            if isinstance(result, BaseException):
                self._pull_failed(run.report, plan.memory, result)

    async def _observe_pull(self, memory: CloudMemory, mapping: Mapping | None, device: str) -> _PullPlan:
        if mapping is not None:
            return _PullPlan(memory, mapping, local=await self.local.get(mapping.local_id))
        return _PullPlan(memory, None, adoptable=await self._adoptable(memory, device))

    def _pull_failed(self, report: PullReport, memory: CloudMemory, exc: BaseException) -> None:
        if isinstance(exc, (asyncio.CancelledError, StateUnreadableError)) or (
                isinstance(exc, RemoteError) and exc.stops_run):
            raise exc
        if not isinstance(exc, MemsyncError):
            log.error("pull.item_crashed", cloud_id=memory.id, error=repr(exc))
        report.errors += 1
        report.error_messages.append(f"{memory.id}: {_short(exc)}")
        log.warning("pull.item_failed", cloud_id=memory.id, error=_short(exc))

    async def _adoptable(self, memory: CloudMemory, device: str) -> LocalMemory | None:
        """The local memory this unmapped cloud memory was pushed from, if it is ours."""
        local_id = memory.metadata.get("memsync_local_id")
        if not isinstance(local_id, str) or memory.metadata.get("memsync_device") != device:
            return None
        if self.state.mapping_for_local(local_id) is not None:
            return None
        candidate = await self.local.get(local_id)
        return candidate if candidate is not None and candidate.alive else None

    async def _unmapped_local_index(self) -> _LocalIndex:
        """Unmapped live local memories by content hash and by the ``memsync_cloud_id`` they were pulled from."""
        index = _LocalIndex()
        async for page in self.local.pages():
            mapped = self.state.mapped_local_ids([m.id for m in page])
            for memory in page:
                if memory.alive and memory.id not in mapped:
                    index.add(memory)
        return index

    async def _apply_pull(self, plan: _PullPlan, report: PullReport) -> Mapping | None:
        """Carry out one pull decision; returns the mapping to store (written per page, in one transaction)."""
        step, memory, mapping, local, adoptable = plan.step, plan.memory, plan.mapping, plan.local, plan.adoptable
        if step is PullStep.ECHO:
            return None
        if step is PullStep.UPDATE_LOCAL:
            assert mapping is not None
            report.updated += 1
            if self._dry:
                return None
            await self.local.update(mapping.local_id, memory.text)
            return Mapping(mapping.local_id, memory.id, memory.hash, memory.text, mapping.level)
        if step is PullStep.REFRESH_BASE:
            assert mapping is not None
            return Mapping(mapping.local_id, memory.id, memory.hash, memory.text, mapping.level)
        if step in (PullStep.CONFLICT, PullStep.CONFLICT_LOCAL_DELETED):
            assert mapping is not None
            reason = "edited on both sides" if step is PullStep.CONFLICT else "deleted locally, edited in the cloud"
            if not self._record_conflict(mapping, local.text if local and local.alive else None, memory.text,
                                         reason):
                report.conflicts += 1
            return None
        if step is PullStep.ADOPT:
            assert adoptable is not None
            level = cloud_level(memory.metadata)
            intent = self.state.intent_for(adoptable.id)
            explained = adoptable.hash == memory.hash or (intent is not None and intent.content_hash == memory.hash)
            report.adopted += 1
            adopted = Mapping(adoptable.id, memory.id, memory.hash, memory.text, level)
            if explained:
                return adopted
            if not self._dry:  # the mapping first (it clears conflicts), then the conflict: not batched
                self.state.save_mapping(adopted)
                self.state.record_conflict(adoptable.id, memory.id, None, adoptable.text, memory.text,
                                           "same memory, different text, no common base")
            report.conflicts += 1
            return None
        # CREATE_LOCAL
        report.new += 1
        if self._dry:
            return None
        level = cloud_level(memory.metadata)
        created = await self.local.create(memory.text, {"memsync_cloud_id": memory.id, "level": level})
        return Mapping(created.id, memory.id, memory.hash, memory.text, level)

    # --- reconcile --------------------------------------------------------------------------

    def _reconcile_due(self, now: datetime) -> bool:
        last = self.state.get_meta(META_RECONCILE)
        if last is None:
            return self.state.count_mappings() > 0
        return (now - parse_ts(last)).total_seconds() >= self.settings.sync.reconcile_interval_seconds

    async def reconcile(self) -> ReconcileReport:
        """Handle memories deleted in the cloud (SPEC 4, Cloud deletions)."""
        cloud = self._require_cloud()
        started = self.clock()
        cloud_ids: set[str] = set()
        async for cloud_page in cloud.pages():
            cloud_ids.update(memory.id for memory in cloud_page)
        local_hashes: dict[str, str | None] = {}
        local_texts: dict[str, str] = {}
        async for page in self.local.pages():
            for memory in page:
                if memory.alive:
                    local_hashes[memory.id] = memory.hash
                    local_texts[memory.id] = memory.text
        plan = plan_reconcile(self.state.mappings(), cloud_ids, local_hashes,
                              self.settings.sync.max_delete_fraction)
        report = ReconcileReport(refused=plan.reason if plan.refused else "")
        if plan.refused:
            log.warning("reconcile.refused", reason=plan.reason)
        for mapping in plan.delete_local:
            await self.local.delete(mapping.local_id)
            self.state.delete_mapping(mapping.local_id)
            report.deleted_local += 1
        for mapping in plan.conflicts:
            self.state.record_conflict(mapping.local_id, mapping.cloud_id, mapping.base_text,
                                       local_texts.get(mapping.local_id), None,
                                       "deleted in the cloud, edited locally")
            report.conflicts += 1
        for mapping in plan.forget:
            self.state.delete_mapping(mapping.local_id)
            report.forgotten += 1
        self.state.set_meta(META_RECONCILE, format_ts(started))
        log.info("reconcile.finished", deleted_local=report.deleted_local, conflicts=report.conflicts,
                 forgotten=report.forgotten, refused=bool(report.refused))
        return report

    # --- conflicts --------------------------------------------------------------------------

    def conflicts(self) -> list[Conflict]:
        """Open conflicts."""
        return self.state.conflicts()

    def conflict(self, conflict_id: int) -> Conflict:
        """One open conflict.

        Raises:
            UsageError: no such conflict.
        """
        found = self.state.conflict(conflict_id)
        if found is None:
            raise UsageError(f"no open conflict with id {conflict_id}; see 'memsyncctl conflicts list'.")
        return found

    async def resolve(self, conflict_id: int, keep: Keep, text: str | None = None) -> dict[str, Any]:
        """Write the chosen text to both sides and update the base (SPEC 4, Conflicts)."""
        cloud = self._require_cloud()
        cloud.begin_run()
        conflict = self.conflict(conflict_id)
        plan = plan_resolution(conflict, keep, text)
        mapping = self.state.mapping_for_local(conflict.local_id)
        level = mapping.level if mapping else 1
        local_now, cloud_now = await self.local.get(conflict.local_id), await cloud.get(conflict.cloud_id)
        local_text = local_now.text if local_now is not None and local_now.alive else None
        cloud_text = cloud_now.text if cloud_now is not None else None
        if changed_since_recorded(conflict, plan, local_text, cloud_text):
            self.state.record_conflict(conflict.local_id, conflict.cloud_id, conflict.base_text, local_text,
                                       cloud_text, conflict.reason)
            raise ConflictError(
                f"conflict {conflict.id} changed since it was listed (a side was edited again); nothing was "
                f"written. Review it with 'memsyncctl conflicts show {conflict.id}' and resolve again.")
        local_id = await self._settle_local(conflict.local_id, conflict.cloud_id, plan.local_text, level)
        cloud_id = await self._settle_cloud(conflict.cloud_id, local_id or conflict.local_id,
                                            plan.cloud_text, level)
        if local_id and cloud_id and plan.local_text is not None:
            self.state.save_mapping(Mapping(local_id, cloud_id, content_hash(plan.local_text), plan.local_text, level))
        else:
            self.state.delete_mapping(conflict.local_id)
        extra: dict[str, str] | None = None
        if plan.extra_text is not None:
            # an interrupted earlier attempt may have created the local copy already: reuse it
            created = (await self._unmapped_local_index()).by_hash.get(content_hash(plan.extra_text)) or \
                await self.local.create(plan.extra_text, {"level": level})
            new_cloud = await self._once(cloud).create(created, level)
            extra = {"local_id": created.id, "cloud_id": new_cloud}
        self.state.delete_conflict(conflict.id)
        log.info("conflict.resolved", conflict_id=conflict.id, keep=keep.value)
        return {"resolved": conflict.id, "keep": keep.value, "local_id": local_id, "cloud_id": cloud_id,
                "extra": extra}

    async def _settle_local(self, local_id: str, cloud_id: str, text: str | None, level: int) -> str | None:
        current = await self.local.get(local_id)
        alive = current is not None and current.alive
        if text is None:
            if alive:
                await self.local.delete(local_id)
            return None
        if alive:
            assert current is not None
            if current.text != text:
                await self.local.update(local_id, text)
            return local_id
        created = await self.local.create(text, {"memsync_cloud_id": cloud_id, "level": level})
        return created.id

    async def _settle_cloud(self, cloud_id: str, local_id: str, text: str | None, level: int) -> str | None:
        cloud = self._require_cloud()
        current = await cloud.get(cloud_id)
        if text is None:
            if current is not None:
                await cloud.delete(cloud_id)
            return None
        local = LocalMemory(id=local_id, text=text)
        if current is not None:
            if current.text != text:
                await cloud.update(cloud_id, text, cloud_metadata(local, level, self.state.device_id))
            return cloud_id
        return await self._once(cloud).create(local, level)

    # --- status -----------------------------------------------------------------------------

    async def status(self) -> StatusReport:
        """Counts for ``--status``; the pull count is a dry-run pull (``?`` when the cloud is unreachable)."""
        doc = self.queue.read()
        status = StatusReport(
            local_url=self.settings.local.url,
            cloud_configured=self.configured,
            pending_push=len(coalesce(doc.pending)),
            pending_pull=None,
            conflicts=len(self.state.conflicts()),
            last_sync=doc.last_sync,
            errors=len(doc.sync_errors),
            queue_path=str(self.paths.queue),
        )
        if self.cloud is not None:
            try:
                pull = await self._dry_view()._pull(self.cloud)
                status.pending_pull = pull.new + pull.updated + pull.conflicts
            except MemsyncError as exc:
                status.pull_note = f"(cloud not checked: {exc.title})"
        return status


def _short(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, MemsyncError) and exc.message else str(exc) or type(exc).__name__
    return redact_text(text)[:300]

