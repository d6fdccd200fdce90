"""memsyncctl's commands that need the engine or the daemon client (loaded only when one runs).

:func:`run_command` configures logging, runs the command through a backend (the daemon when it
answers, else in-process) and maps library exceptions that reach it (SQLite, httpx, JSON) to
project errors with a message and an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx

from memsyncd.cli.backend import Backend, InProcessBackend, open_backend
from memsyncd.cli.control_client import DaemonClient, daemon_client
from memsyncd.cli.integration import integrate_claude, service
from memsyncd.cli.output import print_json
from memsyncd.cli.progress import SyncProgress
from memsyncd.cli.render import render_status, render_sync
from memsyncd.config import Paths, resolve_root
from memsyncd.engine.report import SyncReport
from memsyncd.errors import (
    EXIT_OK,
    DaemonError,
    DaemonNotRunningError,
    MemsyncError,
    StateUnreadableError,
)
from memsyncd.logs import configure_cli_logging
from memsyncd.models import Conflict, SyncMode, utc_now
from memsyncd.store.paths import default_socket_path
from memsyncd.store.queue import QueueStore
from memsyncd.store.trust import require_trusted
from memsyncd.terminal import escape_controls
from memsyncd.wire import Keep, conflict_to_json

PROGRESS_POLL_SECONDS = 0.3  # how often a sync through the daemon asks for its progress (display only)


def run_command(args: argparse.Namespace) -> int:
    """Run one parsed command that the fast paths did not handle; returns the exit code.

    Raises:
        MemsyncError: every failure a user can act on, including mapped library errors.
    """
    configure_cli_logging(verbose=args.verbose)
    paths = Paths(resolve_root(args.root))
    try:
        return asyncio.run(dispatch(paths, args))
    except MemsyncError:
        raise
    except sqlite3.DatabaseError as exc:
        raise StateUnreadableError(
            f"{paths.state} cannot be read ({exc}). The queue and your memories are untouched; "
            "run 'memsyncctl state rebuild' to move it aside and rebuild it from both servers.") from None
    except httpx.TimeoutException:
        raise DaemonError(f"the daemon on {_socket_name(paths, args)} did not answer in time; check it with "
                          "'memsyncctl -v status' or restart it (systemctl --user restart memsyncd).") from None
    except httpx.TransportError as exc:
        raise DaemonNotRunningError(f"the connection to the daemon on {_socket_name(paths, args)} failed "
                                    f"({type(exc).__name__}); is it still running? Retry, or use --no-daemon."
                                    ) from None
    except json.JSONDecodeError as exc:
        raise DaemonError(f"an answer was not valid JSON ({exc.msg}); is the daemon the same version as "
                          "memsyncctl? Restart it after upgrading.") from None


def _socket_name(paths: Paths, args: argparse.Namespace) -> str:
    try:
        return args.socket or str(default_socket_path(paths.root))
    except MemsyncError:
        return "its socket"


def _excerpt(text: str | None, width: int = 60) -> str:
    if text is None:
        return "(deleted)"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _render_conflict(conflict: Conflict) -> str:
    return (
        f"CONFLICT {conflict.id}  ({conflict.reason}, since {conflict.created_at})\n"
        f"Local id: {conflict.local_id}\nCloud id: {conflict.cloud_id}\n\n"
        f"--- base\n{conflict.base_text if conflict.base_text is not None else '(none)'}\n"
        f"--- local\n{conflict.local_text if conflict.local_text is not None else '(deleted)'}\n"
        f"--- cloud\n{conflict.cloud_text if conflict.cloud_text is not None else '(deleted)'}\n\n"
        f"Resolve: memsyncctl conflicts resolve {conflict.id} --keep local|cloud|both  (or --text \"merged\")\n"
    )


async def _sync(backend: Backend, args: argparse.Namespace) -> int:
    if getattr(args, "status", False) or args.command == "status":
        status = await backend.status()
        absent = getattr(args, "daemon_absent", False)
        if status.daemon is None and absent:  # no daemon answered for this root
            status.daemon = {"running": False} if absent is True else {"running": True, "serves_root": False}
        if args.json:
            print_json(status.to_json())
        else:
            sys.stdout.write(escape_controls(render_status(status, utc_now())))
        return EXIT_OK
    mode = SyncMode.PUSH if args.push else SyncMode.PULL if args.pull else SyncMode.FULL
    progress = None if args.dry_run else SyncProgress.for_command(args)
    try:
        report: SyncReport = await _sync_showing(backend, mode, args.dry_run, progress,
                                                 confirm_deletes=getattr(args, "confirm_deletes", False))
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        print_json(report.to_json())
    else:
        sys.stdout.write(escape_controls(render_sync(report)))
    return report.exit_code


async def _sync_showing(backend: Backend, mode: SyncMode, dry_run: bool, progress: SyncProgress | None, *,
                        confirm_deletes: bool = False) -> SyncReport:
    """Run the sync; with a display, feed it from the engine (in-process) or the daemon's health answers."""
    if isinstance(backend, InProcessBackend):  # the engine calls the display as it goes
        return await backend.sync(mode, dry_run=dry_run, confirm_deletes=confirm_deletes,
                                  progress=progress.update if progress is not None else None)
    if progress is None or not isinstance(backend, DaemonClient):
        return await backend.sync(mode, dry_run=dry_run, confirm_deletes=confirm_deletes)
    daemon = backend

    async def follow() -> None:  # the daemon reports its run's progress in /v1/health
        while True:
            await asyncio.sleep(PROGRESS_POLL_SECONDS)
            shown = (await daemon.health()).get("progress")
            if isinstance(shown, dict) and isinstance(shown.get("done"), int):
                progress.update(str(shown.get("phase")), shown["done"], shown.get("total"))

    follower = asyncio.create_task(follow())
    try:
        return await daemon.sync(mode, dry_run=dry_run, confirm_deletes=confirm_deletes)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, MemsyncError):
            await follower


async def _conflicts(backend: Backend, args: argparse.Namespace) -> int:
    if args.conflicts_command == "list":
        conflicts = await backend.conflicts()
        if args.json:
            print_json([conflict_to_json(c) for c in conflicts])
        elif not conflicts:
            sys.stdout.write("No unresolved conflicts.\n")
        else:
            sys.stdout.write(f"{len(conflicts)} unresolved conflict(s):\n")
            for c in conflicts:
                sys.stdout.write(escape_controls(f"  [{c.id}] {c.reason}: local \"{_excerpt(c.local_text)}\" "
                                                 f"vs cloud \"{_excerpt(c.cloud_text)}\"\n"))
        return EXIT_OK
    if args.conflicts_command == "show":
        conflict = await backend.conflict(args.conflict_id)
        if args.json:
            print_json(conflict_to_json(conflict))
        else:
            sys.stdout.write(escape_controls(_render_conflict(conflict)))
        return EXIT_OK
    keep = Keep(args.keep) if args.keep else Keep.TEXT
    result = await backend.resolve(args.conflict_id, keep, args.text)
    if args.json:
        print_json(result)
    elif result.get("local_only"):
        sys.stdout.write(_render_local_only(args.conflict_id, keep, result))
    else:
        done = "your text is now on both sides" if keep is Keep.TEXT else \
            f"kept {keep.value}; both sides now agree"  # never "kept text"
        sys.stdout.write(f"Resolved conflict {args.conflict_id}: {done}.\n")
    return EXIT_OK


def _render_local_only(conflict_id: int, keep: Keep, result: dict[str, Any]) -> str:
    """What a level-0 resolution did: the local side only; the cloud copy is untouched."""
    done = {
        Keep.LOCAL: "the local text stays as it is",
        Keep.CLOUD: "the cloud's text was written to the local memory",
        Keep.TEXT: "your text was written to the local memory",
        Keep.BOTH: "the local memory stays as it is; the cloud's version is now a separate local memory",
    }[keep]
    cloud_id = result.get("cloud_id")
    lines = [f"Resolved conflict {conflict_id} on this machine only: {done}.",
             "This memory is local-only (level 0), so nothing was sent to mem0"
             + (f"; its cloud copy {cloud_id} was left as it is." if cloud_id else ".")]
    if cloud_id and keep is not Keep.BOTH:
        lines.append("To remove that cloud copy: memsyncctl forget-cloud-copies. To share this memory again, "
                     "set its level to 1 or more and run: memsyncctl enqueue ID --level 1")
    return "\n".join(lines) + "\n"


def _queue(paths: Paths, args: argparse.Namespace) -> int:
    store = QueueStore(paths.queue, paths.queue_lock)
    if args.queue_command == "repair":
        aside, kept, dropped = store.repair()
        if aside is None:
            sys.stdout.write(f"The queue is readable; nothing to repair ({paths.queue}).\n")
        else:
            sys.stdout.write(f"Moved the unreadable queue to {aside}\nSalvaged {kept} entries "
                             f"({dropped} invalid entries left in the moved file) into {paths.queue}\n")
        return EXIT_OK
    doc = store.read()
    if args.json:
        sys.stdout.write(paths.queue.read_text(encoding="utf-8") if paths.queue.exists() else '{"pending": []}\n')
    else:
        sys.stdout.write(f"{len(doc.pending)} pending, {len(doc.sync_errors)} failing, last sync "
                         f"{doc.last_sync or 'never'} ({paths.queue})\n")
        for e in doc.pending:
            level = "" if e.level is None else f" level={e.level}"
            sys.stdout.write(escape_controls(f"  {e.timestamp} {e.action:6} {e.id}{level}\n"))
    return EXIT_OK


async def _daemon_only(paths: Paths, args: argparse.Namespace) -> int:
    async with daemon_client(paths, args.socket, allowed=not args.no_daemon) as client:
        if client is None:
            raise DaemonNotRunningError(f"'{args.command}' needs the daemon of {paths.root}; start it with "
                                        "'memsyncd run' or 'systemctl --user start memsyncd'.")
        if args.command == "metrics":
            sys.stdout.write(await client.metrics())
            return EXIT_OK
        health = await (client.pause() if args.command == "pause" else client.resume())
    if args.json:
        print_json(health)
    else:
        sys.stdout.write(f"memsyncd (pid {health['pid']}) is {'paused' if health['paused'] else 'running'}.\n")
    return EXIT_OK


async def dispatch(paths: Paths, args: argparse.Namespace) -> int:
    """Run one command (``enqueue`` and ``hook`` are always answered by :mod:`memsyncd.cli.fast`)."""
    if args.command == "integrate":
        result = integrate_claude(Path(args.project).expanduser().resolve() if args.project else Path.home(),
                                  force=args.force)
        for path in result.written:
            sys.stdout.write(f"Wrote {path}\n")
        for path in result.unchanged:
            sys.stdout.write(f"Up to date: {path}\n")
        return EXIT_OK
    if args.command == "service":
        outcome = service(args.action, home=Path.home(), start=not args.no_start, no_sandbox=args.no_sandbox)
        for line in outcome.lines:
            sys.stdout.write(line + "\n")
        if outcome.error is not None:
            raise outcome.error
        if args.action == "install" and paths.config.exists():
            from memsyncd.cli.roots import register_root

            sys.stdout.write(register_root(paths.root, trust=False) + "\n")
        return EXIT_OK
    if args.command == "state":
        from memsyncd.cli.rebuild import rebuild_state

        rebuilt = await rebuild_state(paths, socket_path=args.socket, allow_daemon=not args.no_daemon,
                                      force=args.force)
        if args.json:
            print_json(rebuilt.to_json())
        else:
            sys.stdout.write(escape_controls(rebuilt.render()))
        return EXIT_OK
    if args.command == "completion":
        from memsyncd.cli.completion import completion_script
        from memsyncd.cli.parser import build_parser

        sys.stdout.write(completion_script(build_parser(), args.shell))
        return EXIT_OK
    if args.command == "init":
        from memsyncd.cli.init import run_init

        return await run_init(paths, args)
    if args.command == "doctor":
        from memsyncd.cli.doctor import run_doctor

        return await run_doctor(paths, args)
    if args.command == "forget-cloud-copies":
        from memsyncd.cli.forget import run_forget

        return await run_forget(paths, args)
    if args.command in ("pause", "resume", "metrics"):
        return await _daemon_only(paths, args)
    if args.command == "queue":
        return _queue(paths, args)
    if args.command in ("trust", "untrust"):
        from memsyncd.cli.trust import trust_command

        return trust_command(paths, args)
    if args.command in ("sync", "status"):
        require_trusted(paths.root)  # before any request: an untrusted config never gets the key (exit 2)
    async with open_backend(paths, socket_path=args.socket, allow_daemon=not args.no_daemon) as backend:
        if args.command in ("sync", "status"):
            return await _sync(backend, args)
        if args.command == "conflicts":
            return await _conflicts(backend, args)
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover
