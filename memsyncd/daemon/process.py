"""``memsyncd run``: the daemon process: single-instance lock, signals, the control socket, systemd.

One process serves many roots. ``memsyncd run`` serves every root in the user's registry
(``$XDG_CONFIG_HOME/memsyncd/roots.json``) on one socket (``$XDG_RUNTIME_DIR/memsyncd/memsyncd.sock``)
and takes roots added while it runs (``POST /v1/roots``, or a queue write through ``POST /v1/queue``
for a root it does not serve yet). ``memsyncd run --root DIR`` serves that root alone on its own
socket, as before.

Each root is a :class:`~memsyncd.daemon.root_service.RootService` (engine thread, watcher, schedule), built
off the event loop; a root that cannot start (bad config, unreadable files) is reported for that root
and never stops the others. A root's ``config.json`` is watched: a valid edit restarts that root's
service with the new settings, a bad one is reported and the last good config stays in force.
``SIGHUP`` re-reads the registry and every config.

A root whose config the user has not trusted (:mod:`memsyncd.store.trust`) is never served, from whichever
source it comes; it is reported as that root's problem with the command that trusts it. A trusted
root whose security fields change stops being served at once. The trust store is watched, so
``memsyncctl trust`` / ``untrust`` apply without a restart. ``SIGTERM``/``SIGINT``: ``STOPPING=1``, no new
work, in-flight requests finish or are abandoned within 10 s, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchdog.observers import Observer

from memsyncd import __version__, wire
from memsyncd.config import Paths, Settings, load_settings, resolve_root
from memsyncd.daemon.control import ControlApi
from memsyncd.daemon.http_server import HTTPServer
from memsyncd.daemon.root_service import RootService
from memsyncd.daemon.runtime import PidLock, sd_notify, watchdog_interval
from memsyncd.daemon.watcher import Debouncer, FileWatcher
from memsyncd.engine.syncer import build_syncer
from memsyncd.errors import EXIT_OK, EXIT_USAGE, MemsyncError, RootNotServedError, UntrustedRootError, UsageError
from memsyncd.logs import configure_logging
from memsyncd.models import format_ts, utc_now
from memsyncd.store.paths import USER_PID_NAME, default_socket_path, root_id, runtime_dir, user_socket_path
from memsyncd.store.roots import RootRegistry, is_root
from memsyncd.store.trust import require_trusted, store_path

log = structlog.get_logger("memsyncd.daemon")

SHUTDOWN_BUDGET_SECONDS = 10.0
ROOT_STOP_SECONDS = 8.0  # a root whose config changed: let its run finish this long, then cancel it
CONTROL_MAX_CONNECTIONS = 64  # control-socket connections served at once; more get 503 and are closed
CONTROL_REQUEST_DEADLINE_S = 10.0  # a control request must arrive whole within this (half-sent ones are closed)
CONFIG_SETTLE_SECONDS = 0.2  # editors write a config in several steps: reload once they are done


@dataclass
class _Root:
    """What the daemon holds for one root: its service (None while it cannot run) and its problem."""

    paths: Paths
    service: RootService | None = None
    settings: Settings | None = None
    problem: MemsyncError | None = None
    problem_since: str | None = None
    config_watch: FileWatcher | None = None
    config_debounce: Debouncer | None = None
    reloading: asyncio.Lock = field(default_factory=asyncio.Lock)  # one (re)start of this root at a time


class Daemon:
    """The process: owns the socket, the scheduler, signals and systemd; serves each root's service."""

    def __init__(self, socket_path: Path, *, registry: RootRegistry | None = None,
                 single_root: Paths | None = None) -> None:
        if (registry is None) == (single_root is None):
            raise ValueError("a daemon serves either the registry or one root")
        self.socket_path = socket_path
        self.registry = registry
        self.single_root = single_root
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.observer = Observer()
        self.server = HTTPServer(ControlApi(self), name="control", peer_check=self._peer_allowed,
                                 max_connections=CONTROL_MAX_CONNECTIONS, request_deadline=CONTROL_REQUEST_DEADLINE_S)
        self.started_monotonic = time.monotonic()
        self.roots: dict[Path, _Root] = {}
        self._stop = asyncio.Event()
        self._stopping = False
        self._reload_task: asyncio.Task[None] | None = None
        self._trust_debounce: Debouncer | None = None
        self.ready = False  # every root of the start-up list has been started (or found broken)

    # --- lifecycle --------------------------------------------------------------------------

    @staticmethod
    def _peer_allowed(uid: int | None) -> bool:
        return uid is None or uid == os.getuid()

    async def serve(self) -> int:
        """Run until a stop signal; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.shutdown)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.scheduler.start()
        self.observer.daemon = True
        self.observer.start()
        self._watch_trust_store()
        for root in await self._wanted_roots():  # before the socket listens: a client sees every root or none
            await self.add_root(root, register=False)
        await self.server.listen_unix(str(self.socket_path), mode=0o600)
        interval = watchdog_interval()
        if interval:
            self.scheduler.add_job(lambda: sd_notify("WATCHDOG=1"), "interval", seconds=interval, id="watchdog")
        log.info("daemon.started", pid=os.getpid(), roots=[str(r) for r in self.roots], socket=str(self.socket_path),
                 version=__version__, mode="single-root" if self.single_root else "user")
        self.ready = True
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={self._status_line()}")
        await self._stop.wait()
        await self._shutdown()
        return EXIT_OK

    def shutdown(self) -> None:
        """Ask the daemon to stop (signal handler)."""
        if not self._stop.is_set():
            log.info("daemon.stopping")
            sd_notify("STOPPING=1")
            self._stopping = True
            self._stop.set()

    async def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_BUDGET_SECONDS - 1.0
        self.scheduler.shutdown(wait=False)
        if self._reload_task is not None:
            self._reload_task.cancel()
        if self._trust_debounce is not None:
            self._trust_debounce.cancel()
        for held in self.roots.values():
            if held.config_debounce is not None:
                held.config_debounce.cancel()
        await asyncio.gather(*(held.service.stop(deadline - 0.5) for held in self.roots.values()
                               if held.service is not None))
        self.observer.stop()
        await asyncio.to_thread(self.observer.join, 1.0)
        await self.server.close()
        log.info("daemon.stopped")

    def _status_line(self) -> str:
        broken = sum(1 for held in self.roots.values() if held.problem is not None)
        text = f"Serving {len(self.roots)} root(s)"
        return text + (f"; {broken} need attention" if broken else "")

    # --- roots ------------------------------------------------------------------------------

    async def _wanted_roots(self) -> list[Path]:
        if self.single_root is not None:
            return [self.single_root.root]
        assert self.registry is not None
        registry = self.registry
        try:
            return [entry.path for entry in await asyncio.to_thread(registry.roots)]
        except MemsyncError as exc:  # a corrupt registry: serve what we have, say why
            log.error("roots.registry_unreadable", error=str(exc))
            sd_notify(f"STATUS=Roots registry unreadable: {exc.message[:200]}")
            return list(self.roots)

    async def add_root(self, root: Path, *, register: bool = True, auto: bool = False) -> _Root:
        """Serve ``root`` (registering it first when asked); a root that cannot start is kept with its problem.

        Raises:
            RootNotServedError: ``auto`` (a client wrote its queue) and the root was removed by hand.
        """
        root = Path(root).resolve()
        if register and self.registry is not None:
            registry = self.registry
            await asyncio.to_thread(lambda: registry.add(root, auto=auto))
        held = self.roots.get(root)
        if held is None:
            held = _Root(Paths(root))
            self.roots[root] = held
            self._watch_config(held)
            log.info("root.added", root=str(root))
        if held.service is None:
            await self._reload(held)
        return held

    async def remove_root(self, root: Path) -> bool:
        """Stop serving ``root`` and forget it in the registry; its files are not touched."""
        root = Path(root).resolve()
        if self.registry is not None:
            registry = self.registry
            await asyncio.to_thread(registry.remove, root)
        return await self._stop_serving(root)

    async def _stop_serving(self, root: Path) -> bool:
        """Drop ``root`` from the served roots: its config watch, a pending reload, its service."""
        held = self.roots.pop(root, None)
        if held is None:
            return False
        if held.config_watch is not None:
            held.config_watch.stop()
        if held.config_debounce is not None:
            held.config_debounce.cancel()
        if held.service is not None:
            await held.service.stop(time.monotonic() + ROOT_STOP_SECONDS)
        log.info("root.removed", root=str(root))
        return True

    def _settled_watch(self, path: Path, changed: Callable[[], None]) -> tuple[Debouncer, FileWatcher]:
        """A watch of ``path`` (not started yet): its events, on watchdog's thread, call ``changed`` on this
        loop once they have settled for CONFIG_SETTLE_SECONDS."""
        loop = asyncio.get_running_loop()
        debounce = Debouncer(loop, CONFIG_SETTLE_SECONDS, changed, ceiling=CONFIG_SETTLE_SECONDS)

        def on_event() -> None:  # watchdog's thread
            with contextlib.suppress(RuntimeError):  # loop closed: shutting down
                loop.call_soon_threadsafe(debounce.trigger)

        return debounce, FileWatcher(path, on_event, observer=self.observer)

    def _watch_config(self, held: _Root) -> None:
        def changed() -> None:
            if not self._stopping:
                self._spawn(self._reload(held))

        held.config_debounce, held.config_watch = self._settled_watch(held.paths.config, changed)
        try:
            held.config_watch.start()
        except OSError as exc:  # the root vanished or is not writable: reported by its problem
            log.warning("root.config_unwatchable", root=str(held.paths.root), error=str(exc))

    def _watch_trust_store(self) -> None:
        """``memsyncctl trust`` / ``untrust`` changed the trust store: check every root's trust again, at once."""

        def changed() -> None:
            if not self._stopping:
                for held in list(self.roots.values()):
                    self._spawn(self._reload(held))

        self._trust_debounce, watch = self._settled_watch(store_path(), changed)
        try:
            watch.start()
        except OSError as exc:  # no config home: trust changes then apply on SIGHUP or a config change
            log.warning("trust.store_unwatchable", path=str(store_path()), error=str(exc))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(lambda t: None if t.cancelled() or t.exception() is None
                               else log.error("daemon.task_failed", error=repr(t.exception())))

    async def _reload(self, held: _Root) -> None:
        """(Re)start one root's service from its config; a bad config keeps the running service."""
        async with held.reloading:
            if self._stopping or self.roots.get(held.paths.root) is not held:  # stopping, or removed meanwhile
                return
            try:
                if self.registry is not None and not is_root(held.paths.root):
                    raise UsageError(f"{held.paths.root} has no .claude/ directory any more; restore it, or "
                                     f"'memsyncctl roots remove {held.paths.root}'.")
                await asyncio.to_thread(require_trusted, held.paths.root)
                settings = await asyncio.to_thread(load_settings, held.paths)
            except UntrustedRootError as exc:  # never trusted, changed since, or unsafely owned: stop using it
                self._set_problem(held, exc)
                log.error("root.untrusted", root=str(held.paths.root), error=str(exc),
                          stopped=held.service is not None)
                if held.service is not None:
                    old, held.service, held.settings = held.service, None, None
                    await old.stop(time.monotonic() + ROOT_STOP_SECONDS)
                return
            except MemsyncError as exc:
                self._set_problem(held, exc)
                log.error("root.config_rejected", root=str(held.paths.root), error=str(exc),
                          keeps_running=held.service is not None)
                return
            if held.service is not None and settings == held.settings:
                self._set_problem(held, None)
                return
            if held.service is not None:
                log.info("root.config_changed", root=str(held.paths.root))
                old, held.service = held.service, None
                await old.stop(time.monotonic() + ROOT_STOP_SECONDS)
            try:
                syncer = await asyncio.to_thread(build_syncer, held.paths, settings)
            except MemsyncError as exc:
                self._set_problem(held, exc)
                log.error("root.unavailable", root=str(held.paths.root), error=str(exc))
                return
            service = RootService(held.paths, syncer, self.scheduler, observer=self.observer)
            service.start()
            held.service, held.settings = service, settings
            self._set_problem(held, None)
            log.info("root.serving", root=str(held.paths.root), configured=syncer.configured)
            if not syncer.configured:
                log.warning("cloud.not_configured", root=str(held.paths.root),
                            hint="set MEM0_API_KEY and cloud.enabled=true; the root reports SYNC UNAVAILABLE")
        sd_notify(f"STATUS={self._status_line()}")

    def _set_problem(self, held: _Root, problem: MemsyncError | None) -> None:
        if problem is None:
            held.problem = held.problem_since = None
        elif held.problem is None or str(held.problem) != str(problem):
            held.problem, held.problem_since = problem, format_ts(utc_now())

    def request_reload(self) -> None:
        """``SIGHUP``: re-read the registry and every root's config."""
        if self._stopping:
            return
        log.info("daemon.reloading")
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.get_running_loop().create_task(self.reload_all())

    async def reload_all(self) -> None:
        """Serve exactly the registered roots, each with its current config."""
        wanted = await self._wanted_roots()
        for root in list(self.roots):
            if root not in wanted:
                await self._stop_serving(root)
        for root in wanted:
            known = self.roots.get(root)
            if known is None:
                await self.add_root(root, register=False)
            else:
                await self._reload(known)
        log.info("daemon.reloaded", roots=len(self.roots))

    # --- what the control API asks ----------------------------------------------------------

    def service_for(self, root: str | None) -> RootService:
        """The service of ``root`` (a path; optional when exactly one root is served).

        Raises:
            RootNotServedError: this daemon does not serve that root (the client works in-process).
            UsageError: no root named while several are served.
            MemsyncError: the root's own problem (bad config, ...) while it cannot run.
        """
        held = self._held(root)
        if held.service is None:
            raise held.problem or RootNotServedError(f"{held.paths.root} is starting; retry in a moment.")
        return held.service

    def _held(self, root: str | None) -> _Root:
        if root is None:
            if len(self.roots) == 1:
                return next(iter(self.roots.values()))
            raise UsageError(f"this daemon serves {len(self.roots)} roots; name one with ?root=/path/to/project.")
        held = self.roots.get(Path(root).resolve())
        if held is None:
            raise RootNotServedError(f"this daemon does not serve {root}; add it with 'memsyncctl roots add {root}'.")
        return held

    async def register(self, root: str, *, auto: bool = True) -> RootService:
        """Serve ``root`` from now on: by hand (``roots add``), or ``auto`` when a client wrote its queue.

        Raises:
            RootNotServedError: a single-root daemon, or ``auto`` for a root removed with ``roots remove``.
        """
        path = Path(root).resolve()
        if self.single_root is not None and path != self.single_root.root:
            raise RootNotServedError(f"this daemon serves only {self.single_root.root} (memsyncd run --root).")
        if path not in self.roots:  # never registered from a client's say-so unless the user trusted the config
            await asyncio.to_thread(require_trusted, path)
        held = await self.add_root(path, auto=auto)
        return self.service_for(str(held.paths.root))

    def health(self, root: str | None = None) -> dict[str, Any]:
        """The process's health, and the named (or only) root's part."""
        answer: dict[str, Any] = {"ok": True, "version": __version__, "pid": os.getpid(),
                                  "uptime_seconds": round(time.monotonic() - self.started_monotonic, 3),
                                  "roots": len(self.roots), "mode": "single-root" if self.single_root else "user",
                                  "ready": self.ready}
        try:
            held = self._held(root)
        except MemsyncError:
            return answer
        if held.service is not None:
            answer.update(held.service.health())
        else:
            answer["root"] = str(held.paths.root)
        return answer

    def root_problem(self, root: str | None) -> dict[str, Any] | None:
        """The root's own problem (a rejected config while the last good one runs), with its time; None if none."""
        held = self._held(root)
        if held.problem is None:
            return None
        return {**held.problem.to_dict(), "since": held.problem_since}

    async def roots_summary(self) -> list[dict[str, Any]]:
        """One line of facts per root for ``memsyncctl status --all`` (no network)."""
        summaries = []
        for held in list(self.roots.values()):
            entry: dict[str, Any] = {"root": str(held.paths.root), "id": root_id(held.paths.root),
                                     "problem": held.problem.to_dict() if held.problem else None,
                                     "problem_since": held.problem_since}
            entry["attention"] = [] if held.problem is None else [{**held.problem.to_dict(),
                                                                     "since": held.problem_since}]
            if held.service is not None:
                entry["health"] = held.service.health()
                entry["attention"] += held.service.attention()
                try:
                    entry["status"] = (await held.service.status()).to_json()
                except MemsyncError as exc:
                    entry["status"] = None
                    entry["problem"] = entry["problem"] or exc.to_dict()
            summaries.append(entry)
        return summaries

    async def metrics_text(self, root: str | None = None) -> str:
        return await self.service_for(root).metrics_text(time.monotonic() - self.started_monotonic)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``memsyncd run``."""
    parser = argparse.ArgumentParser(
        prog="memsyncd run",
        description="Run the memsyncd daemon: every root registered with 'memsyncctl roots add' (the default), "
                    "or one root with --root.")
    parser.add_argument("--root", help="serve this root alone (default: every registered root)")
    parser.add_argument("--socket", help="control socket path (default: $XDG_RUNTIME_DIR/memsyncd/memsyncd.sock, "
                                         "or <root-id>.sock with --root)")
    parser.add_argument("--foreground", action="store_true", help="accepted for clarity; the daemon never forks")
    parser.add_argument("--log-level", default=os.environ.get("MEMSYNC_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    return parser


def _warn_if_user_daemon_serves(root: Path) -> None:
    """``memsyncd run --root P`` while the user's daemon already serves P: say so (both would sync P in turns)."""
    from memsyncd.wire_http import DaemonSilent, NoDaemon, call_daemon

    try:
        answer = call_daemon(user_socket_path(), "GET", wire.ROOTS, timeout=2.0).object()
    except (NoDaemon, DaemonSilent, MemsyncError, OSError):
        return
    served = {str(row.get("root")) for row in answer.get("roots", []) if isinstance(row, dict)}
    if str(root) in served:
        sys.stderr.write(
            f"memsyncd: warning: the user daemon ({user_socket_path()}) already serves {root}; two daemons "
            "would sync it in turns and memsyncctl talks to this one. Stop one of them: "
            f"'memsyncctl roots remove {root}' (the user daemon stops serving it), or stop this one.\n")
        log.warning("root.served_twice", root=str(root), user_socket=str(user_socket_path()))


def run_main(argv: Sequence[str]) -> int:
    """Entry point of ``memsyncd run``."""
    args = build_parser().parse_args(list(argv))
    configure_logging(args.log_level, json_lines={"auto": None, "json": True, "console": False}[args.log_format])
    single = args.root is not None or bool(os.environ.get("MEMSYNC_ROOT"))
    try:
        if single:
            paths = Paths(resolve_root(args.root))
            require_trusted(paths.root)  # an untrusted config never gets the key: exit 2 at once
            load_settings(paths)  # a bad config of the one root: exit 2 at once, as always
            _warn_if_user_daemon_serves(paths.root)
            lock = PidLock(paths.state.with_name("memsyncd.pid"))
            socket_path = Path(args.socket) if args.socket else default_socket_path(paths.root)
        else:
            lock = PidLock(runtime_dir() / USER_PID_NAME)
            socket_path = Path(args.socket) if args.socket else user_socket_path()
        lock.acquire()
    except MemsyncError as exc:
        sys.stderr.write(f"memsyncd: {exc}\n")
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    try:
        daemon = Daemon(socket_path, single_root=paths) if single else Daemon(socket_path, registry=RootRegistry())
        return asyncio.run(daemon.serve())
    except MemsyncError as exc:
        sys.stderr.write(f"memsyncd: {exc}\n")
        return exc.exit_code
    finally:
        lock.release()
