"""``memsyncd run``: the daemon process: single-instance lock, signals, the control socket, systemd.

Start: config → single-instance lock → state → control socket listening → the root's
:class:`~memsyncd.root_service.RootService` (engine thread, watcher, schedule) → ``READY=1``.
The event loop here serves the socket and the triggers only; everything that waits on a file
lock, an fsync or SQLite runs on the service's engine or worker threads. Stop
(SIGTERM/SIGINT/SIGHUP): ``STOPPING=1``, no new work, in-flight requests finish or are
abandoned within 10 s, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from memsyncd import __version__
from memsyncd.backend import build_syncer
from memsyncd.config import Paths, load_settings, resolve_root
from memsyncd.control import ControlApi
from memsyncd.engine.decide import Keep
from memsyncd.errors import EXIT_OK, EXIT_USAGE, MemsyncError
from memsyncd.http_server import HTTPServer
from memsyncd.logs import configure_logging
from memsyncd.models import Conflict, QueueEntry, SyncMode
from memsyncd.report import StatusReport, SyncReport
from memsyncd.root_service import RootService
from memsyncd.runtime import PidLock, default_socket_path, sd_notify, watchdog_interval
from memsyncd.syncer import Syncer

log = structlog.get_logger("memsyncd.daemon")

SHUTDOWN_BUDGET_SECONDS = 10.0


class Daemon:
    """The process: owns the socket, the scheduler, signals and systemd; serves one root's service."""

    def __init__(self, paths: Paths, socket_path: Path, syncer: Syncer) -> None:
        self.paths = paths
        self.socket_path = socket_path
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.service = RootService(paths, syncer, self.scheduler)
        self.server = HTTPServer(ControlApi(self), name="control", peer_check=self._peer_allowed)
        self.started_monotonic = time.monotonic()
        self._stop = asyncio.Event()

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
        self.scheduler.start()
        self.service.start()
        interval = watchdog_interval()
        if interval:
            self.scheduler.add_job(lambda: sd_notify("WATCHDOG=1"), "interval", seconds=interval, id="watchdog")
        log.info("daemon.started", pid=os.getpid(), root=str(self.paths.root), socket=str(self.socket_path),
                 version=__version__)
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=Watching {self.paths.queue}")
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
        self.scheduler.shutdown(wait=False)
        await self.service.stop(deadline - 0.5)
        await self.server.close()
        log.info("daemon.stopped")

    # --- DaemonApi (control socket) ---------------------------------------------------------

    async def status(self) -> StatusReport:
        status = await self.service.status()
        status.daemon = self.health()
        return status

    async def sync(self, mode: SyncMode, *, dry_run: bool = False) -> SyncReport:
        return await self.service.sync(mode, dry_run=dry_run)

    async def conflicts(self) -> list[Conflict]:
        return await self.service.conflicts()

    async def conflict(self, conflict_id: int) -> Conflict:
        return await self.service.conflict(conflict_id)

    async def resolve(self, conflict_id: int, keep: Keep, text: str | None) -> dict[str, Any]:
        return await self.service.resolve(conflict_id, keep, text)

    async def enqueue(self, entry: QueueEntry) -> None:
        await self.service.enqueue(entry)

    def pause(self) -> None:
        self.service.pause()

    def resume(self) -> None:
        self.service.resume()

    def health(self) -> dict[str, Any]:
        return {"ok": True, "version": __version__, "pid": os.getpid(),
                "uptime_seconds": round(time.monotonic() - self.started_monotonic, 3), **self.service.health()}

    async def metrics_text(self) -> str:
        return await self.service.metrics_text(time.monotonic() - self.started_monotonic)


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
