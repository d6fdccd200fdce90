"""``memsyncd run``: the daemon's lifecycle, wiring watchdog + APScheduler + the control socket to the engine.

Start: config → single-instance lock → state → control socket listening → ``READY=1``.
Triggers: a queue-file change (debounced) → push; the scheduler → full sync every
``pull_interval_seconds``, reconcile every ``reconcile_interval_seconds``, a retry
timer with backoff after failures. Stop (SIGTERM/SIGINT/SIGHUP): ``STOPPING=1``,
no new work, in-flight requests finish or are abandoned within 10 s, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from filelock import Timeout

from memsyncd import __version__
from memsyncd.backend import build_syncer, run_lock
from memsyncd.config import Paths, load_settings, resolve_root
from memsyncd.control import ControlApi
from memsyncd.coordinator import FULL, PULL, PUSH, RECONCILE, RunCoordinator
from memsyncd.engine.decide import Keep, coalesce
from memsyncd.errors import EXIT_OK, EXIT_USAGE, DaemonError, MemsyncError, SyncUnavailableError
from memsyncd.http_server import HTTPServer
from memsyncd.logs import configure_logging
from memsyncd.metrics import Metrics
from memsyncd.models import Conflict, QueueEntry, SyncMode, format_ts, utc_now
from memsyncd.queue_store import QueueStore
from memsyncd.report import ReconcileReport, StatusReport, SyncReport
from memsyncd.runtime import PidLock, default_socket_path, sd_notify, watchdog_interval
from memsyncd.syncer import Syncer
from memsyncd.watcher import Debouncer, QueueWatcher

log = structlog.get_logger("memsyncd.daemon")
T = TypeVar("T")

SHUTDOWN_BUDGET_SECONDS = 10.0
RETRY_MIN_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0
RUN_LOCK_WAIT_SECONDS = 600.0
LOCK_POLL_SECONDS = 0.25


def _mode_for(kinds: frozenset[str]) -> SyncMode | None:
    if kinds >= FULL:
        return SyncMode.FULL
    if PUSH in kinds:
        return SyncMode.PUSH
    if PULL in kinds:
        return SyncMode.PULL
    return None


class Daemon:
    """One root's daemon: owns the engine, the triggers and the control API."""

    def __init__(self, paths: Paths, socket_path: Path, syncer: Syncer) -> None:
        self.paths = paths
        self.socket_path = socket_path
        self.syncer = syncer
        self.settings = syncer.settings
        self.queue = QueueStore(paths.queue, paths.queue_lock)
        self.metrics = Metrics()
        self.coordinator: RunCoordinator[SyncReport] = RunCoordinator(self._run)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.server = HTTPServer(ControlApi(self), name="control", peer_check=self._peer_allowed)
        self.paused = False
        self.started_monotonic = time.monotonic()
        self._stop = asyncio.Event()
        self._failed_keys: set[tuple[str, str, str, str | None]] = set()
        self._retry_delay = RETRY_MIN_SECONDS
        self._background: set[asyncio.Task[Any]] = set()
        self._watcher: QueueWatcher | None = None
        self._debouncer: Debouncer | None = None
        self._run_lock = run_lock(paths)

    # --- lifecycle --------------------------------------------------------------------------

    @staticmethod
    def _peer_allowed(uid: int | None) -> bool:
        return uid is None or uid == os.getuid()

    async def serve(self) -> int:
        """Run until a stop signal; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.shutdown)
        await self.server.listen_unix(str(self.socket_path), mode=0o600)
        self._debouncer = Debouncer(loop, self.settings.sync.debounce_ms / 1000, self._on_queue_change)
        self._watcher = QueueWatcher(self.paths.queue, self._debouncer.trigger_threadsafe)
        self._watcher.start()
        sync = self.settings.sync
        self.scheduler.add_job(self._scheduled, "interval", seconds=sync.pull_interval_seconds, args=[FULL, "schedule"],
                               id="pull", max_instances=1, coalesce=True)
        self.scheduler.add_job(self._scheduled, "interval", seconds=sync.reconcile_interval_seconds,
                               args=[frozenset({RECONCILE}), "schedule"], id="reconcile", max_instances=1,
                               coalesce=True)
        self.scheduler.start()
        interval = watchdog_interval()
        if interval:
            self.scheduler.add_job(lambda: sd_notify("WATCHDOG=1"), "interval", seconds=interval, id="watchdog")
        log.info("daemon.started", pid=os.getpid(), root=str(self.paths.root), socket=str(self.socket_path),
                 version=__version__)
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=Watching {self.paths.queue}")
        self._spawn(self._scheduled(frozenset({PUSH}), "start"))  # whatever was queued while we were down
        await self._stop.wait()
        await self._shutdown()
        return EXIT_OK

    def shutdown(self) -> None:
        """Ask the daemon to stop (signal handler)."""
        if not self._stop.is_set():
            log.info("daemon.stopping")
            sd_notify("STOPPING=1")
            self._stop.set()

    async def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_BUDGET_SECONDS - 1.0
        if self._debouncer:
            self._debouncer.cancel()
        self.scheduler.shutdown(wait=False)
        self.syncer.request_stop()
        if not await self.coordinator.wait_idle(max(0.5, deadline - time.monotonic() - 1.0)):
            log.warning("daemon.abandoning_run")
            self.coordinator.cancel()
            await self.coordinator.wait_idle(1.0)
        for task in list(self._background):
            task.cancel()
        if self._watcher:
            await asyncio.to_thread(self._watcher.stop, 1.0)
        await self.server.close()
        await self.syncer.aclose()
        log.info("daemon.stopped")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- triggers ---------------------------------------------------------------------------

    def _on_queue_change(self) -> None:
        """Debounced queue-file change: push if there is work no run has tried yet."""
        if self.paused or self._stop.is_set():
            return
        try:
            pending = self.queue.read().pending
        except MemsyncError as exc:
            log.error("queue.unreadable", error=str(exc))
            sd_notify(f"STATUS=Queue unreadable: {exc.message[:200]}")
            return
        if any(entry.key not in self._failed_keys for entry in pending):
            self._spawn(self._scheduled(frozenset({PUSH}), "watch"))

    async def _scheduled(self, kinds: frozenset[str], source: str) -> None:
        if (self.paused and source != "api") or self._stop.is_set():
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
                               id="retry", replace_existing=True)
        log.info("retry.scheduled", in_seconds=round(delay, 1))

    # --- runs -------------------------------------------------------------------------------

    async def _exclusive(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Hold the root's run lock (shared with one-shot memsyncctl runs) around ``work``."""
        waited = 0.0
        while True:  # contended only while a one-shot memsyncctl run holds it: poll, never block the loop
            try:
                self._run_lock.acquire(timeout=0)
                break
            except Timeout:
                if self._stop.is_set() or waited > RUN_LOCK_WAIT_SECONDS:
                    raise DaemonError(f"another sync of this root holds {self._run_lock.lock_file}") from None
                if waited == 0:
                    log.info("run.waiting_for_lock", lock=self._run_lock.lock_file)
                await asyncio.sleep(LOCK_POLL_SECONDS)
                waited += LOCK_POLL_SECONDS
        try:
            return await work()
        finally:
            self._run_lock.release()

    async def _run(self, kinds: frozenset[str]) -> SyncReport:
        return await self._exclusive(lambda: self._run_unlocked(kinds))

    async def _run_unlocked(self, kinds: frozenset[str]) -> SyncReport:
        mode = _mode_for(kinds)
        if mode is None:
            report = SyncReport(mode="reconcile", queue_path=str(self.paths.queue),
                                started_at=format_ts(utc_now()))
            try:
                report.reconcile = await self.syncer.reconcile()
            except MemsyncError as exc:
                report.fatal = exc
                report.reconcile = ReconcileReport()
        else:
            try:
                before = {e.key for e in self.queue.read().pending} if mode is not SyncMode.PULL else set()
                report = await self.syncer.run(mode, reconcile=RECONCILE in kinds)
                after = {e.key for e in self.queue.read().pending} if mode is not SyncMode.PULL else set()
                self._failed_keys = before & after
            except MemsyncError as exc:
                report = SyncReport(mode=mode.value, queue_path=str(self.paths.queue), fatal=exc,
                                    started_at=format_ts(utc_now()))
        self.metrics.record(report, time.time())
        self._after_run(report)
        return report

    def _after_run(self, report: SyncReport) -> None:
        code = report.exit_code
        if code == 0 and not self._failed_keys:
            self._retry_delay = RETRY_MIN_SECONDS
            status = f"Idle; last {report.mode} sync ok"
        elif isinstance(report.fatal, SyncUnavailableError):
            status = "Cloud sync not configured"
        else:
            status = f"Last {report.mode} sync: {report.fatal.title if report.fatal else 'partial'}; retrying"
            if not self._stop.is_set():
                self._schedule_retry()
        if report.conflicts_open:
            status += f"; {report.conflicts_open} conflict(s) need you"
        sd_notify(f"STATUS={status}")

    # --- DaemonApi (control socket) ---------------------------------------------------------

    def _require_configured(self) -> None:
        if not self.syncer.configured:
            raise SyncUnavailableError("Cloud sync is not configured.")

    async def status(self) -> StatusReport:
        self._require_configured()
        status = await self.syncer.status()
        status.daemon = self.health()
        return status

    async def sync(self, mode: SyncMode, *, dry_run: bool = False) -> SyncReport:
        self._require_configured()
        if dry_run:
            return await self.syncer.run(mode, dry_run=True)
        self.metrics.triggers["api"] += 1
        kinds = {SyncMode.FULL: FULL, SyncMode.PUSH: frozenset({PUSH}), SyncMode.PULL: frozenset({PULL})}[mode]
        return await self.coordinator.request(kinds)

    async def conflicts(self) -> list[Conflict]:
        return self.syncer.conflicts()

    async def conflict(self, conflict_id: int) -> Conflict:
        return self.syncer.conflict(conflict_id)

    async def resolve(self, conflict_id: int, keep: Keep, text: str | None) -> dict[str, Any]:
        self._require_configured()
        # resolution takes the same one-at-a-time lane as syncs
        return await self.coordinator.exclusive(
            lambda: self._exclusive(lambda: self.syncer.resolve(conflict_id, keep, text)))

    def enqueue(self, entry: QueueEntry) -> None:
        self.queue.enqueue(entry)

    def pause(self) -> None:
        self.paused = True
        sd_notify("STATUS=Paused")
        log.info("daemon.paused")

    def resume(self) -> None:
        was = self.paused
        self.paused = False
        log.info("daemon.resumed")
        if was:
            self._spawn(self._scheduled(frozenset({PUSH}), "resume"))

    def health(self) -> dict[str, Any]:
        job = self.scheduler.get_job("pull") if self.scheduler.running else None
        next_pull = job.next_run_time.astimezone().isoformat(timespec="seconds") if job and job.next_run_time else None
        return {"ok": True, "version": __version__, "pid": os.getpid(), "root": str(self.paths.root),
                "paused": self.paused, "busy": self.coordinator.busy,
                "uptime_seconds": round(time.monotonic() - self.started_monotonic, 3), "next_pull": next_pull,
                "runs_started": self.coordinator.runs_started, "watch_events": self._debouncer.fired
                if self._debouncer else 0}

    def metrics_text(self) -> str:
        try:
            pending = len(coalesce(self.queue.read().pending))
        except MemsyncError:
            pending = -1
        return self.metrics.render(pending=pending, conflicts=len(self.syncer.conflicts()), paused=self.paused,
                                   uptime=time.monotonic() - self.started_monotonic)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``memsyncd run``."""
    parser = argparse.ArgumentParser(prog="memsyncd run", description="Run the memsyncd daemon for one root.")
    parser.add_argument("--root", help="root directory (default: $MEMSYNC_ROOT, nearest .claude/memory/config.json, ~)")
    parser.add_argument("--socket", help="control socket path (default: $XDG_RUNTIME_DIR/memsyncd/<root-id>.sock)")
    parser.add_argument("--foreground", action="store_true", help="accepted for clarity; the daemon never forks")
    parser.add_argument("--log-level", default=os.environ.get("MEMSYNC_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    return parser


def run_main(argv: Sequence[str]) -> int:
    """Entry point of ``memsyncd run``."""
    args = build_parser().parse_args(list(argv))
    configure_logging(args.log_level, json_lines={"auto": None, "json": True, "console": False}[args.log_format])
    paths = Paths(resolve_root(args.root))
    try:
        settings = load_settings(paths)
        lock = PidLock(paths.state.with_name("memsyncd.pid"))
        lock.acquire()
    except MemsyncError as exc:
        sys.stderr.write(f"memsyncd: {exc}\n")
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    try:
        syncer = build_syncer(paths, settings)
        if not syncer.configured:
            log.warning("cloud.not_configured", hint="set MEM0_API_KEY and cloud.enabled=true; "
                        "the daemon waits and reports SYNC UNAVAILABLE")
        socket_path = Path(args.socket) if args.socket else default_socket_path(paths.root)
        daemon = Daemon(paths, socket_path, syncer)
        return asyncio.run(daemon.serve())
    except MemsyncError as exc:
        sys.stderr.write(f"memsyncd: {exc}\n")
        return exc.exit_code
    finally:
        lock.release()
