"""One root's sync service: engine thread, run coordinator, queue watcher, schedule and status memory.

Threads and what they may block on:

* the control loop (the caller's event loop: socket, timers, triggers) only awaits; it never
  waits on a file lock, an fsync or SQLite;
* the engine thread (:class:`~memsyncd.daemon.engine_thread.EngineThread`) runs the ``Syncer``: runs,
  conflict resolution, the root's run lock;
* worker threads write the queue for ``POST /v1/queue`` (lock wait bounded, then the entry
  goes to the per-user spool, :mod:`memsyncd.store.spool`, drained into the queue once the lock is
  free; ``QueueBusyError`` only when even the spool cannot be written) and read counts and
  conflicts for ``status``/``conflicts``/``metrics``
  through their own SQLite connection;
* watchdog's observer thread reads the queue on each change and wakes the control loop only
  when it holds an entry no run has seen yet, so the daemon's own queue writes never trigger it.

"Memories to pull" is remembered from the last pull (or the start-up dry run); ``status``
never calls the cloud.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchdog.observers.api import BaseObserver

from memsyncd.config import Paths
from memsyncd.daemon.coordinator import (
    CONFIRM_DELETES,
    FULL,
    FULL_SCAN,
    PREVIEW,
    PULL,
    PUSH,
    RECONCILE,
    SCAN,
    RunCoordinator,
)
from memsyncd.daemon.engine_thread import CANCEL_GRACE_SECONDS, EngineThread
from memsyncd.daemon.metrics import Metrics
from memsyncd.daemon.runtime import sd_notify
from memsyncd.daemon.watcher import Debouncer, FileWatcher
from memsyncd.engine.context import META_LAST_RUN
from memsyncd.engine.decide import coalesce
from memsyncd.engine.report import StatusReport, SyncReport
from memsyncd.engine.syncer import ScanKind, Syncer, command_error, fill_scan_status, latest
from memsyncd.errors import MemsyncError, QueueBusyError, SyncUnavailableError, UsageError
from memsyncd.models import Conflict, QueueEntry, QueueKey, SyncMode, format_ts, utc_now
from memsyncd.store import spool
from memsyncd.store.locks import pair_run_lock
from memsyncd.store.paths import root_id
from memsyncd.store.queue import QueueStore
from memsyncd.store.state import StateStore
from memsyncd.wire import Keep

log = structlog.get_logger("memsyncd.daemon")
T = TypeVar("T")

RETRY_MIN_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0
RUN_LOCK_WAIT_SECONDS = 600.0
QUEUE_LOCK_WAIT_SECONDS = 0.25  # POST /v1/queue: longest wait for another process's queue lock, then the spool
SPOOL_RETRY_MIN_SECONDS = 0.5  # draining the spool while the queue lock stays busy: first pause ...
SPOOL_RETRY_MAX_SECONDS = 30.0  # ... doubling up to this
QUEUE_WRITE_BOUND_SECONDS = QUEUE_LOCK_WAIT_SECONDS + 1.5  # ... plus the write and its fsyncs
LOCAL_WATCH_DEBOUNCE_SECONDS = 0.2  # a burst of OpenMemory DB writes starts one scan
LOCAL_WATCH_QUIET_SECONDS = 1.0  # DB events this soon after one of our runs are its own writes: ignored


def scan_for(kinds: frozenset[str]) -> ScanKind | None:
    """The local scan a run of ``kinds`` does first (a full scan covers the incremental one)."""
    if FULL_SCAN in kinds or CONFIRM_DELETES in kinds:
        return ScanKind.FULL
    if SCAN in kinds:
        return ScanKind.INCREMENTAL
    return None


def mode_for(kinds: frozenset[str]) -> SyncMode | None:
    """The sync mode that does ``kinds`` (None: reconcile and/or preview only)."""
    if kinds >= FULL:
        return SyncMode.FULL
    if PUSH in kinds:
        return SyncMode.PUSH
    if PULL in kinds:
        return SyncMode.PULL
    return None


@dataclass
class _RunOutcome:
    """What one run on the engine thread hands back to the control loop."""

    report: SyncReport
    preview: int | None = None  # memories a dry-run pull would bring (start-up run)
    preview_error: MemsyncError | None = None


class RootService:
    """Serves one root: triggers, schedule, one-run-at-a-time lane and the answers of the control API."""

    def __init__(self, paths: Paths, syncer: Syncer, scheduler: AsyncIOScheduler, *,
                 observer: BaseObserver | None = None) -> None:
        self.paths = paths
        self._observer = observer
        self.syncer = syncer
        self.settings = syncer.settings
        self.scheduler = scheduler
        self.id = root_id(paths.root)
        self.queue = QueueStore(paths.queue, paths.queue_lock)
        self._api_queue = QueueStore(paths.queue, paths.queue_lock, lock_timeout=QUEUE_LOCK_WAIT_SECONDS)
        self.engine = EngineThread(name=f"memsyncd-engine-{self.id[:8]}")
        self.coordinator: RunCoordinator[SyncReport] = RunCoordinator(self._run)
        self.metrics = Metrics()
        self.paused = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # written by the engine thread, read by the watchdog thread (whole-object swaps only)
        self._failed_keys: frozenset[QueueKey] = frozenset()  # still queued after the last push (its report)
        self._in_flight_keys: frozenset[QueueKey] = frozenset()  # the running push's (and what the watcher saw)
        # written by the watchdog thread, read by the engine thread: the pending entries of its last read
        self._seen_keys: frozenset[QueueKey] = frozenset()
        self._retry_delay = RETRY_MIN_SECONDS
        self._background: set[asyncio.Task[Any]] = set()
        self._watcher: FileWatcher | None = None
        self._debouncer: Debouncer | None = None
        self._local_watchers: list[FileWatcher] = []  # local.watch_path and its -wal
        self._local_debouncer: Debouncer | None = None
        self._ignore_local_until = 0.0  # time.monotonic(): local DB events of our own runs are ignored
        self._to_pull: int | None = None
        self._to_pull_as_of: datetime | None = None
        self._pull_error: MemsyncError | None = None
        self._reader: StateStore | None = None
        self._reader_lock = threading.Lock()
        self._queue_writer = ThreadPoolExecutor(max_workers=4, thread_name_prefix="memsyncd-queue-writer")
        # the running sync's progress, set on the engine thread (whole-object swaps), read by health()
        self._progress: dict[str, Any] | None = None
        self._draining = False  # a _drain_spool task runs (control loop only)
        self._drain_again = False  # something was spooled since that task last looked
        # what the last runs left for the user (kind -> problem with "since"), and when a run last synced
        self._attention: dict[str, dict[str, Any]] = {}

    def _job(self, name: str) -> str:
        return f"{self.id}:{name}"

    # --- lifecycle (control loop) -----------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread, the watcher and the jobs; queue the start-up push (+ pull count)."""
        self._loop = asyncio.get_running_loop()
        self.engine.start()
        self._debouncer = Debouncer(self._loop, self.settings.sync.debounce_ms / 1000, self._on_queue_change)
        self._watcher = FileWatcher(self.paths.queue, self._queue_changed, observer=self._observer)
        self._watcher.start()
        self._watch_local_db()
        sync = self.settings.sync
        self.scheduler.add_job(self._scheduled, "interval", seconds=sync.pull_interval_seconds,
                               args=[FULL, "schedule"], id=self._job("pull"), max_instances=1, coalesce=True)
        self.scheduler.add_job(self._scheduled, "interval", seconds=sync.reconcile_interval_seconds,
                               args=[frozenset({RECONCILE}), "schedule"], id=self._job("reconcile"),
                               max_instances=1, coalesce=True)
        # local changes made outside the queue (other OpenMemory clients, while we were down)
        if sync.local_scan_interval_seconds > 0:
            self.scheduler.add_job(self._scheduled, "interval", seconds=sync.local_scan_interval_seconds,
                                   args=[frozenset({PUSH, SCAN}), "scan"], id=self._job("scan"),
                                   max_instances=1, coalesce=True)
        if sync.local_full_scan_interval_seconds > 0:
            self.scheduler.add_job(self._scheduled, "interval", seconds=sync.local_full_scan_interval_seconds,
                                   args=[frozenset({PUSH, FULL_SCAN}), "fullscan"], id=self._job("fullscan"),
                                   max_instances=1, coalesce=True)
        # whatever was queued or written locally while we were down, and a first "memories to pull" figure
        first = {PUSH, PREVIEW}
        if sync.local_full_scan_interval_seconds > 0:
            first.add(FULL_SCAN)
        elif sync.local_scan_interval_seconds > 0:
            first.add(SCAN)
        self._spawn(self._scheduled(frozenset(first), "start"))
        self.start_spool_drain()  # ids spooled while the lock was busy and no daemon ran

    async def stop(self, deadline: float) -> None:
        """Stop by ``deadline`` (``time.monotonic()``): no new work, let the run finish or cancel it."""
        self._stopping = True
        if self._debouncer:
            self._debouncer.cancel()
        for name in ("pull", "reconcile", "retry", "scan", "fullscan"):
            with contextlib.suppress(Exception):  # already gone with a stopped scheduler
                self.scheduler.remove_job(self._job(name))
        self.syncer.request_stop()
        grace = CANCEL_GRACE_SECONDS + 0.5
        if not await self.coordinator.wait_idle(max(0.5, deadline - time.monotonic() - grace - 0.5)):
            log.warning("daemon.abandoning_run")
            self.coordinator.cancel()
            await self.coordinator.wait_idle(grace)
        for task in list(self._background):
            task.cancel()
        if self._watcher:
            await asyncio.to_thread(self._watcher.stop, 1.0)
        for watcher in self._local_watchers:
            await asyncio.to_thread(watcher.stop, 1.0)
        if self._local_debouncer:
            self._local_debouncer.cancel()
        await self.engine.stop(max(0.5, deadline - time.monotonic() - 0.3), final=self.syncer.aclose)
        self._queue_writer.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._close_reader)

    def _close_reader(self) -> None:
        if self._reader_lock.acquire(timeout=1.0):
            try:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
            finally:
                self._reader_lock.release()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- triggers ---------------------------------------------------------------------------

    def _queue_changed(self) -> None:
        """watchdog thread: wake the loop only when the queue has an entry no run has seen yet."""
        loop, debouncer = self._loop, self._debouncer
        if self._stopping or loop is None or debouncer is None:
            return
        try:
            pending = self.queue.read().pending  # the daemon's one read of the queue per trigger
        except MemsyncError as exc:
            log.error("queue.unreadable", error=str(exc))
            sd_notify(f"STATUS=Queue unreadable: {exc.message[:200]}")
            return
        self._seen_keys = seen = frozenset(entry.key for entry in pending)
        if seen - self._failed_keys - self._in_flight_keys:
            with contextlib.suppress(RuntimeError):  # loop closed: shutting down
                loop.call_soon_threadsafe(debouncer.trigger)

    def _watch_local_db(self) -> None:
        """Watch ``local.watch_path`` (and its ``-wal``): another client's write starts a scan at once."""
        path = self.settings.local.watch_path
        if path is None or self._loop is None:
            return
        path = path.expanduser()
        if not path.parent.is_dir():
            log.warning("local_watch.missing", path=str(path))  # never create directories in OpenMemory's volume
            return
        self._local_debouncer = Debouncer(self._loop, LOCAL_WATCH_DEBOUNCE_SECONDS, self._on_local_db_change)
        for watched in (path, path.with_name(path.name + "-wal")):
            watcher = FileWatcher(watched, self._local_db_changed, observer=self._observer)
            watcher.start()
            self._local_watchers.append(watcher)
        log.info("local_watch.started", path=str(path))

    def _local_db_changed(self) -> None:
        """watchdog thread: OpenMemory's database changed; wake the loop unless it was our own run's doing."""
        loop, debouncer = self._loop, self._local_debouncer
        if self._stopping or self.paused or loop is None or debouncer is None:
            return
        if self.coordinator.busy or time.monotonic() < self._ignore_local_until:
            return  # our own writes (and reads that log access): the periodic scans catch anything else
        with contextlib.suppress(RuntimeError):  # loop closed: shutting down
            loop.call_soon_threadsafe(debouncer.trigger)

    def _on_local_db_change(self) -> None:
        if self.paused or self._stopping:
            return
        self._spawn(self._scheduled(frozenset({PUSH, SCAN}), "local-watch"))

    def _on_queue_change(self) -> None:
        """Debounced (leading edge) queue change with new work: push."""
        if self.paused or self._stopping:
            return
        self._spawn(self._scheduled(frozenset({PUSH}), "watch"))

    async def _scheduled(self, kinds: frozenset[str], source: str) -> None:
        if (self.paused and source != "api") or self._stopping:
            return
        self.metrics.triggers[source] += 1
        try:
            await self.coordinator.request(kinds)
        except asyncio.CancelledError:
            raise
        except Exception:  # the daemon never dies on a run's failure
            log.exception("run.crashed", kinds=sorted(kinds))

    def _schedule_retry(self) -> None:
        delay = self._retry_delay * random.uniform(0.8, 1.2)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)
        when = datetime.now().astimezone() + timedelta(seconds=delay)
        self.scheduler.add_job(self._scheduled, "date", run_date=when, args=[frozenset({PUSH}), "retry"],
                               id=self._job("retry"), replace_existing=True)
        log.info("retry.scheduled", in_seconds=round(delay, 1))

    # --- runs (control loop side) -----------------------------------------------------------

    def _on_progress(self, phase: str, done: int, total: int | None) -> None:
        """Engine thread: what the current run has done, for ``memsyncctl sync``'s progress display."""
        self._progress = {"phase": phase, "done": done, "total": total}

    async def _run(self, kinds: frozenset[str]) -> SyncReport:
        try:
            outcome = await self.engine.call(self._engine_run(kinds))
        finally:
            self._progress = None
        self._ignore_local_until = time.monotonic() + LOCAL_WATCH_QUIET_SECONDS
        report = outcome.report
        self.metrics.record(report, time.time())
        self._remember_pull(kinds, outcome)
        self._remember_outcome(report, outcome.preview_error)
        self._after_run(report)
        return report

    def _remember_outcome(self, report: SyncReport, preview_error: MemsyncError | None) -> None:
        """Keep what needs the user from this run (or clear it), and when it last synced."""
        fatal = report.fatal or preview_error
        if fatal is not None and not isinstance(fatal, SyncUnavailableError):
            self._set_attention("run", fatal)
        elif not report.dry_run or report.mode == "pull":  # a run (or a pull count) that reached its servers
            self._attention.pop("run", None)
        if report.reconcile is not None:
            if report.reconcile.refused:
                self._set_attention("reconcile", MemsyncError(
                    report.reconcile.refused + " Look at what was deleted in the cloud; to accept it, raise "
                    "sync.max_delete_fraction in config.json for one sync.", title="cloud deletions refused"))
            else:
                self._attention.pop("reconcile", None)

    def _set_attention(self, kind: str, error: MemsyncError) -> None:
        known = self._attention.get(kind)
        since = known["since"] if known and known.get("message") == error.message else format_ts(utc_now())
        self._attention[kind] = {**error.to_dict(), "since": since}

    def attention(self) -> list[dict[str, Any]]:
        """What needs the user in this root, from the last runs (memory only)."""
        return list(self._attention.values())

    def _remember_pull(self, kinds: frozenset[str], outcome: _RunOutcome) -> None:
        """Keep "memories to pull" from this run: what a real pull left, or the dry-run count."""
        report = outcome.report
        if report.pull is not None and not report.dry_run:  # the pull phase completed
            self._set_to_pull(report.pull.errors + report.pull.conflicts)
        elif outcome.preview is not None:
            self._set_to_pull(outcome.preview)
        elif PULL in kinds or PREVIEW in kinds:
            self._pull_error = outcome.preview_error or report.fatal

    def _set_to_pull(self, count: int) -> None:
        self._to_pull, self._to_pull_as_of, self._pull_error = count, utc_now(), None

    def _after_run(self, report: SyncReport) -> None:
        code = report.exit_code
        if code == 0 and not self._failed_keys:
            self._retry_delay = RETRY_MIN_SECONDS
            status = f"Idle; last {report.mode} sync ok"
        elif isinstance(report.fatal, SyncUnavailableError):
            status = "Cloud sync not configured"
        else:
            status = f"Last {report.mode} sync: {report.fatal.title if report.fatal else 'partial'}; retrying"
            if not self._stopping:
                self._schedule_retry()
        if report.conflicts_open:
            status += f"; {report.conflicts_open} conflict(s) need you"
        sd_notify(f"STATUS={status}")

    # --- runs (engine thread) ---------------------------------------------------------------

    async def _with_run_lock(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Hold the root's pair run lock (shared with one-shot memsyncctl runs) around ``work``."""
        async with pair_run_lock(self.syncer.settings.pair_key, wait_seconds=RUN_LOCK_WAIT_SECONDS,
                                 busy=lambda lock, _waited: f"another sync of this root holds {lock}",
                                 give_up=lambda: self._stopping):
            return await work()

    async def _engine_run(self, kinds: frozenset[str]) -> _RunOutcome:
        return await self._with_run_lock(lambda: self._run_unlocked(kinds))

    async def _run_unlocked(self, kinds: frozenset[str]) -> _RunOutcome:
        mode = mode_for(kinds)
        if mode is None and RECONCILE not in kinds:  # only a count was asked for
            counted = await self.syncer.count_to_pull()
            return _RunOutcome(counted.report, counted.count, counted.error)
        if mode is None:
            return _RunOutcome(await self.syncer.reconcile_run())
        report = await self._sync_run(mode, reconcile=RECONCILE in kinds, scan=scan_for(kinds),
                                      confirm_deletes=CONFIRM_DELETES in kinds)
        outcome = _RunOutcome(report)
        if PREVIEW in kinds and report.pull is None and report.fatal is None and not self._stopping:
            counted = await self.syncer.count_to_pull()
            outcome.preview, outcome.preview_error = counted.count, counted.error
        return outcome

    async def _sync_run(self, mode: SyncMode, *, reconcile: bool, scan: ScanKind | None = None,
                        confirm_deletes: bool = False) -> SyncReport:
        """One run; the queue entries it works on come from its push (no queue read here).

        While it runs, the entries the watcher last saw and then those the push took on are in flight
        (the run's own queue writes wake nobody); afterwards the push report's ``pending_keys`` (failed,
        waiting, not reached) are the failed ones the retry timer owns.
        """
        if mode is SyncMode.PULL:
            report = await self.syncer.run(mode, reconcile=reconcile, progress=self._on_progress)
            self._failed_keys = frozenset()
            return report

        def claimed(keys: frozenset[QueueKey]) -> None:  # engine thread, when the push has read the queue
            self._in_flight_keys = self._in_flight_keys | keys

        self._in_flight_keys = self._seen_keys
        try:
            report = await self.syncer.run(mode, reconcile=reconcile, scan=scan, confirm_deletes=confirm_deletes,
                                           progress=self._on_progress, on_claimed=claimed)
            # no push report (the run stopped before or inside the push): all it took on is still queued
            self._failed_keys = report.push.pending_keys if report.push is not None else self._in_flight_keys
        finally:
            self._in_flight_keys = frozenset()
        return report

    # --- control API ------------------------------------------------------------------------

    def _require_configured(self) -> None:
        if not self.syncer.configured:
            raise SyncUnavailableError("Cloud sync is not configured.")

    async def _read(self, function: Callable[[StateStore], T]) -> T:
        """Run a read on a worker thread with the service's own SQLite connection (WAL: never blocks a run)."""

        def work() -> T:
            with self._reader_lock:
                if self._reader is None:
                    self._reader = StateStore(self.paths.state, verify=False)  # the engine's store verified it
                return function(self._reader)

        return await asyncio.to_thread(work)

    async def status(self) -> StatusReport:
        """Counts from the queue file and the state DB (a thread) and "to pull" from memory: no network."""
        self._require_configured()
        backlog = self.syncer.scan_backlog  # swapped whole by the engine thread: a consistent snapshot
        note = ""
        if self._to_pull is None:
            note = (f"(cloud not checked: {self._pull_error.title})" if self._pull_error is not None
                    else "(not counted yet: the daemon counts at its first pull)")
        as_of = self._to_pull_as_of
        report = StatusReport(
            local_url=self.settings.local.url,
            cloud_configured=True,
            pending_push=0,  # the counts and times are filled from the queue file and the state DB below
            pending_pull=self._to_pull,
            conflicts=0,
            last_sync=None,
            queue_path=str(self.paths.queue),
            pull_note=note,
            attention=self.attention(),
            to_pull_as_of=format_ts(as_of.replace(microsecond=0)) if as_of is not None else None,
            pull_interval_seconds=math.ceil(self.settings.sync.pull_interval_seconds),
        )

        def fill(state: StateStore) -> None:  # one worker-thread hop for every read: a status answers sooner
            doc = self.queue.read()
            report.pending_push = len(coalesce([*doc.pending, *backlog.values()]))
            report.conflicts = len(state.conflicts())
            report.last_sync = latest(doc.last_sync, state.get_meta(META_LAST_RUN))
            report.errors = len(doc.sync_errors)
            fill_scan_status(report, state, backlog)

        await self._read(fill)  # the report is this call's own until returned: filling it there is safe
        return report

    async def sync(self, mode: SyncMode, *, dry_run: bool = False, confirm_deletes: bool = False) -> SyncReport:
        """A run requested over the socket (joins the current run's follow-up when busy).

        Push and full syncs scan OpenMemory fully first, as a one-shot ``memsyncctl sync`` does.
        """
        self._require_configured()
        wanted = self.settings.one_shot_scan
        scan = None if mode is SyncMode.PULL or wanted is None else ScanKind(wanted)
        if dry_run:
            report = await self.engine.call(self.syncer.run(mode, dry_run=True, scan=scan,
                                                            confirm_deletes=confirm_deletes))
            error = command_error(report)
            if error is not None:  # the client shows it as the command's error, as a one-shot sync does
                raise error
            return report
        self.metrics.triggers["api"] += 1
        kinds = {SyncMode.FULL: FULL, SyncMode.PUSH: frozenset({PUSH}), SyncMode.PULL: frozenset({PULL})}[mode]
        if scan is not None:
            kinds = kinds | {FULL_SCAN if scan is ScanKind.FULL else SCAN}
        if confirm_deletes:
            kinds = kinds | {CONFIRM_DELETES}
        return await self.coordinator.request(kinds)

    async def conflicts(self) -> list[Conflict]:
        """Open conflicts (read on a worker thread)."""
        return await self._read(lambda state: state.conflicts())

    async def conflict(self, conflict_id: int) -> Conflict:
        """One open conflict.

        Raises:
            UsageError: no such conflict.
        """
        found = await self._read(lambda state: state.conflict(conflict_id))
        if found is None:
            raise UsageError(f"no open conflict with id {conflict_id}; see 'memsyncctl conflicts list'.")
        return found

    async def resolve(self, conflict_id: int, keep: Keep, text: str | None) -> dict[str, Any]:
        """Resolve in the same one-at-a-time lane as runs, holding the run lock, on the engine thread."""
        self._require_configured()
        return await self.coordinator.exclusive(lambda: self.engine.call(
            self._with_run_lock(lambda: self.syncer.resolve(conflict_id, keep, text))))

    async def enqueue(self, entry: QueueEntry) -> bool:
        """Append to the queue on a worker thread; True when it went to the spool instead (lock busy).

        The watchdog event of the queue write starts the push. When another process holds the
        queue lock past ``QUEUE_LOCK_WAIT_SECONDS`` (another user, a stuck script), the entry is
        spooled (durable) and drained into the queue once the lock is free: the client never waits
        long and the id is never dropped. ``QueueBusyError`` only when even the spool cannot be
        written, or the write did not finish within the bound; a write already waiting when the
        bound passes may still land, and the client's fallback then adds a second entry for the
        same id, which coalesces with it (one push).
        """
        abandoned = threading.Event()

        def write() -> bool:
            if abandoned.is_set():  # still waiting for a worker when we gave up: the client writes it
                return False
            try:
                self._api_queue.enqueue(entry)
            except QueueBusyError:
                try:
                    where = spool.write(self.paths.root, [entry])
                except (MemsyncError, OSError) as exc:
                    log.error("spool.unwritable", error=str(exc))
                    raise QueueBusyError(
                        f"another process holds the sync queue lock ({self.paths.queue_lock}) and the spool "
                        f"cannot be written ({exc}); {entry.id} was not queued. Retry, or write the queue "
                        "directly with 'memsyncctl --no-daemon enqueue'.") from None
                log.warning("queue.busy_spooled", id=entry.id, spool=str(where), lock=str(self.paths.queue_lock))
                return True
            return False

        written = asyncio.get_running_loop().run_in_executor(self._queue_writer, write)
        try:
            spooled = await asyncio.wait_for(asyncio.shield(written), QUEUE_WRITE_BOUND_SECONDS)
        except TimeoutError:  # the lock wait (filelock.Timeout is a TimeoutError) or the bound above
            abandoned.set()
            raise QueueBusyError(
                f"another process holds the sync queue lock ({self.paths.queue_lock}); the daemon did not "
                f"queue {entry.id} within {QUEUE_LOCK_WAIT_SECONDS:g} s. Retry, or write the queue directly "
                "with 'memsyncctl --no-daemon enqueue'.") from None
        if spooled:
            self.start_spool_drain()
        return spooled

    def start_spool_drain(self) -> None:
        """Drain this root's spool into the queue, retrying with backoff while the queue lock stays busy."""
        self._drain_again = True
        if not self._draining and not self._stopping:
            self._draining = True
            self._spawn(self._drain_spool())

    async def _drain_spool(self) -> None:
        delay = SPOOL_RETRY_MIN_SECONDS
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                self._drain_again = False
                try:
                    result = await loop.run_in_executor(self._queue_writer, spool.drain, self.paths.root, self.queue)
                except MemsyncError as exc:  # the lock is still busy, or the queue cannot be written: later
                    log.info("spool.waiting", error=str(exc), retry_in_seconds=delay)
                else:
                    if result.moved or result.files:
                        log.info("spool.drained", entries=len(result.moved), files=result.files)
                    for path in result.rejected:
                        log.error("spool.rejected", path=path, hint="not a spool file of this root; renamed *.rejected")
                    left = await loop.run_in_executor(self._queue_writer, spool.pending_files, self.paths.root)
                    if not left and not self._drain_again:
                        return
                    if not left:
                        continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, SPOOL_RETRY_MAX_SECONDS)
        finally:
            self._draining = False

    def pause(self) -> None:
        """Stop background runs (API-requested runs still work)."""
        self.paused = True
        sd_notify("STATUS=Paused")
        log.info("daemon.paused")

    def resume(self) -> None:
        """Resume background runs; push what was queued meanwhile."""
        was = self.paused
        self.paused = False
        log.info("daemon.resumed")
        if was:
            self._spawn(self._scheduled(frozenset({PUSH}), "resume"))

    def health(self) -> dict[str, Any]:
        """This root's part of ``GET /v1/health`` (memory only)."""
        job = self.scheduler.get_job(self._job("pull")) if self.scheduler.running else None
        next_pull = job.next_run_time.astimezone().isoformat(timespec="seconds") if job and job.next_run_time else None
        return {"root": str(self.paths.root), "paused": self.paused, "busy": self.coordinator.busy,
                "next_pull": next_pull, "runs_started": self.coordinator.runs_started,
                "watch_events": self._debouncer.fired if self._debouncer else 0,
                "progress": self._progress if self.coordinator.busy else None}

    async def metrics_text(self, uptime: float) -> str:
        """Prometheus text; the counts are read on a worker thread."""

        def pending() -> int:
            try:
                return len(coalesce(self.queue.read().pending))
            except MemsyncError:
                return -1

        queued, conflicts = await self._read(lambda state: (pending(), len(state.conflicts())))
        return self.metrics.render(pending=queued, conflicts=conflicts, paused=self.paused, uptime=uptime,
                                   to_pull=self._to_pull)
