"""``memsyncctl``: parse arguments, call a backend, format the answer, map errors to exit codes.

The backend is the running daemon when one answers on the control socket, else an
in-process one-shot engine; output and exit codes are the same either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memsyncd import __version__
from memsyncd.backend import Backend, open_backend
from memsyncd.config import Paths, resolve_root
from memsyncd.control import conflict_to_json
from memsyncd.control_client import daemon_client
from memsyncd.engine.decide import Keep
from memsyncd.errors import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    DaemonNotRunningError,
    MemsyncError,
    QueueUnreadableError,
    SyncUnavailableError,
    UsageError,
)
from memsyncd.integration import integrate_claude, run_post_tool_use_hook, service
from memsyncd.logs import configure_logging
from memsyncd.models import Conflict, QueueEntry, SyncMode, format_ts, utc_now
from memsyncd.queue_store import QueueStore
from memsyncd.report import SyncReport, render_fatal, render_status, render_sync, render_unavailable


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"memsyncctl: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = _Parser(prog="memsyncctl", description="Control and one-shot client of memsyncd.")
    parser.add_argument("--version", action="version", version=f"memsyncctl {__version__}")
    parser.add_argument("--root", help="root directory (default: $MEMSYNC_ROOT, nearest .claude/memory/config.json, ~)")
    parser.add_argument("--socket", help="control socket path of the daemon")
    parser.add_argument("--no-daemon", action="store_true", help="never talk to a daemon; run in-process")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sync = sub.add_parser("sync", help="sync now (full by default)")
    mode = sync.add_mutually_exclusive_group()
    mode.add_argument("--push", action="store_true", help="only push local changes")
    mode.add_argument("--pull", action="store_true", help="only pull cloud changes")
    mode.add_argument("--status", action="store_true", help="show status, do not sync")
    sync.add_argument("--dry-run", action="store_true", help="show what would happen; write nothing")
    sync.add_argument("--json", action="store_true", help="print one JSON object")

    status = sub.add_parser("status", help="same as 'sync --status'")
    status.add_argument("--json", action="store_true")

    enqueue = sub.add_parser("enqueue", help="add a local memory id to the sync queue")
    enqueue.add_argument("id", help="OpenMemory memory id")
    enqueue.add_argument("--delete", action="store_true", help="queue a delete instead of a push")
    enqueue.add_argument("--level", type=int, help="privacy level (0 = local-only, never synced)")
    enqueue.add_argument("--content-hash", help="sha256 of the text, if known")
    enqueue.add_argument("--json", action="store_true")

    queue = sub.add_parser("queue", help="inspect or repair the sync queue")
    queue_sub = queue.add_subparsers(dest="queue_command", required=True, parser_class=_Parser)
    show = queue_sub.add_parser("show", help="print the queue")
    show.add_argument("--json", action="store_true")
    queue_sub.add_parser("repair", help="move an unreadable queue aside and salvage valid entries")

    state = sub.add_parser("state", help="repair the sync state database")
    state_sub = state.add_subparsers(dest="state_command", required=True, parser_class=_Parser)
    rebuild = state_sub.add_parser("rebuild", help="move a damaged state DB aside and rebuild the id map from "
                                   "the memsync metadata of both stores")
    rebuild.add_argument("--force", action="store_true", help="rebuild even when the database looks healthy")
    rebuild.add_argument("--json", action="store_true")

    for name, text in (("pause", "pause background sync in the daemon"),
                       ("resume", "resume background sync in the daemon"),
                       ("metrics", "print the daemon's Prometheus metrics")):
        daemon_cmd = sub.add_parser(name, help=text)
        daemon_cmd.add_argument("--json", action="store_true")

    hook = sub.add_parser("hook", help="Claude Code hook entry points")
    hook.add_argument("event", choices=["post-tool-use"], help="reads the hook event JSON on stdin")

    integrate = sub.add_parser("integrate", help="install Claude Code slash commands and the sync hook")
    integrate.add_argument("target", choices=["claude"])
    integrate.add_argument("--project", help="project directory (default: your home, i.e. ~/.claude)")
    integrate.add_argument("--force", action="store_true", help="overwrite command files that differ")

    svc = sub.add_parser("service", help="install/uninstall/status of the systemd user unit or launchd agent")
    svc.add_argument("action", choices=["install", "uninstall", "status"])
    svc.add_argument("--no-start", action="store_true", help="only write/remove the file; do not call systemctl")

    conflicts = sub.add_parser("conflicts", help="list, show and resolve conflicts")
    conflicts_sub = conflicts.add_subparsers(dest="conflicts_command", required=True, parser_class=_Parser)
    listing = conflicts_sub.add_parser("list")
    listing.add_argument("--json", action="store_true")
    one = conflicts_sub.add_parser("show")
    one.add_argument("conflict_id", type=int)
    one.add_argument("--json", action="store_true")
    resolve = conflicts_sub.add_parser("resolve")
    resolve.add_argument("conflict_id", type=int)
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument("--keep", choices=["local", "cloud", "both"])
    how.add_argument("--text", help="merged text to write to both sides")
    resolve.add_argument("--json", action="store_true")
    return parser


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


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
        if args.json:
            _print_json(status.to_json())
        else:
            sys.stdout.write(render_status(status, utc_now()))
        return EXIT_OK
    mode = SyncMode.PUSH if args.push else SyncMode.PULL if args.pull else SyncMode.FULL
    report: SyncReport = await backend.sync(mode, dry_run=args.dry_run)
    if args.json:
        _print_json(report.to_json())
    else:
        sys.stdout.write(render_sync(report))
    return report.exit_code


async def _conflicts(backend: Backend, args: argparse.Namespace) -> int:
    if args.conflicts_command == "list":
        conflicts = await backend.conflicts()
        if args.json:
            _print_json([conflict_to_json(c) for c in conflicts])
        elif not conflicts:
            sys.stdout.write("No unresolved conflicts.\n")
        else:
            sys.stdout.write(f"{len(conflicts)} unresolved conflict(s):\n")
            for c in conflicts:
                sys.stdout.write(f"  [{c.id}] {c.reason}: local \"{_excerpt(c.local_text)}\" "
                                 f"vs cloud \"{_excerpt(c.cloud_text)}\"\n")
        return EXIT_OK
    if args.conflicts_command == "show":
        conflict = await backend.conflict(args.conflict_id)
        if args.json:
            _print_json(conflict_to_json(conflict))
        else:
            sys.stdout.write(_render_conflict(conflict))
        return EXIT_OK
    keep = Keep(args.keep) if args.keep else Keep.TEXT
    result = await backend.resolve(args.conflict_id, keep, args.text)
    if args.json:
        _print_json(result)
    else:
        sys.stdout.write(f"Resolved conflict {args.conflict_id}: kept {keep.value}; both sides now agree.\n")
    return EXIT_OK


async def _enqueue(paths: Paths, args: argparse.Namespace) -> int:
    if not args.id.strip():
        raise UsageError("the memory id is empty; give the OpenMemory id of the memory to sync.")
    if args.level is not None and args.level < 0:
        raise UsageError("--level must be 0 or more (0 = local-only).")
    entry = QueueEntry(id=args.id, action="delete" if args.delete else "push",
                       timestamp=format_ts(utc_now()), content_hash=args.content_hash, level=args.level)
    async with daemon_client(paths, args.socket, allowed=not args.no_daemon) as client:
        if client is not None:
            await client.enqueue(entry)
        else:
            QueueStore(paths.queue, paths.queue_lock).enqueue(entry)
    if args.json:
        _print_json({"queued": args.id, "action": entry.action, "queue_path": str(paths.queue)})
    else:
        sys.stdout.write(f"Queued {entry.action} of {args.id} in {paths.queue}\n")
    return EXIT_OK


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
            sys.stdout.write(f"  {e.timestamp} {e.action:6} {e.id}{level}\n")
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
        _print_json(health)
    else:
        sys.stdout.write(f"memsyncd (pid {health['pid']}) is {'paused' if health['paused'] else 'running'}.\n")
    return EXIT_OK


async def _dispatch(args: argparse.Namespace) -> int:
    paths = Paths(resolve_root(args.root))
    if args.command == "enqueue":
        return await _enqueue(paths, args)
    if args.command == "hook":
        count, note = run_post_tool_use_hook(sys.stdin.read(), QueueStore(paths.queue, paths.queue_lock))
        if note:
            sys.stderr.write(note + "\n")
        if args.verbose:
            sys.stderr.write(f"memsyncctl: queued {count} entries in {paths.queue}\n")
        return EXIT_OK
    if args.command == "integrate":
        result = integrate_claude(Path(args.project).expanduser().resolve() if args.project else Path.home(),
                                  force=args.force)
        for path in result.written:
            sys.stdout.write(f"Wrote {path}\n")
        for path in result.unchanged:
            sys.stdout.write(f"Up to date: {path}\n")
        return EXIT_OK
    if args.command == "service":
        for line in service(args.action, home=Path.home(), start=not args.no_start):
            sys.stdout.write(line + "\n")
        return EXIT_OK
    if args.command in ("pause", "resume", "metrics"):
        return await _daemon_only(paths, args)
    if args.command == "queue":
        return _queue(paths, args)
    if args.command == "state":
        from memsyncd.rebuild import rebuild_state

        rebuilt = await rebuild_state(paths, socket_path=args.socket, allow_daemon=not args.no_daemon,
                                      force=args.force)
        if args.json:
            _print_json(rebuilt.to_json())
        else:
            sys.stdout.write(rebuilt.render())
        return EXIT_OK
    async with open_backend(paths, socket_path=args.socket, allow_daemon=not args.no_daemon) as backend:
        if args.command in ("sync", "status"):
            return await _sync(backend, args)
        if args.command == "conflicts":
            return await _conflicts(backend, args)
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def report_error(error: MemsyncError, *, as_json: bool = False) -> int:
    """Print an error the way the seed does (or as one JSON object) and return its exit code."""
    if as_json:
        _print_json({"exit_code": error.exit_code, "error": error.to_dict()})
        return error.exit_code
    if isinstance(error, SyncUnavailableError):
        sys.stdout.write(render_unavailable())
        return EXIT_UNAVAILABLE
    if isinstance(error, QueueUnreadableError):
        sys.stdout.write(render_fatal(error))
        return error.exit_code
    sys.stderr.write(f"memsyncctl: {error.title}: {error.message}\n" if error.message else f"memsyncctl: {error.title}\n")
    return error.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``memsyncctl``."""
    args = build_parser().parse_args(argv)
    configure_logging("debug" if args.verbose else "warning")
    try:
        return asyncio.run(_dispatch(args))
    except MemsyncError as error:
        return report_error(error, as_json=getattr(args, "json", False))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
