"""memsyncctl's fast paths, stdlib only: status and enqueue through the daemon's socket, the hook and
enqueue straight into the queue file.

:func:`run_fast` answers ``status`` / ``sync --status`` (when a daemon answers), ``enqueue`` and
``hook post-tool-use`` without importing the engine, pydantic, httpx, structlog or asyncio; it
returns None when the command needs the engine (:mod:`memsyncd.cli.commands`). When it already
found that no daemon answers, it sets ``args.no_daemon`` so the engine does not probe again.

Each command imports what only it needs inside its function: the hook never loads the socket
client or the renderer, and status or enqueue answered by the daemon never load ``dataclasses``
and the queue's data model. The hook runs on every OpenMemory tool call in Claude Code and
status on every ``/memory/sync --status``, so each millisecond of import is paid each time.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Literal

from memsyncd.cli.render import escape_controls
from memsyncd.errors import EXIT_OK, UsageError
from memsyncd.paths import Paths, resolve_root

if TYPE_CHECKING:
    from memsyncd.cli.daemon_http import DaemonAnswer

PROG = "memsyncctl"

STATUS_TIMEOUT_SECONDS = 30.0  # the daemon answers from memory; a cloud-checking daemon may take longer
ENQUEUE_TIMEOUT_SECONDS = 2.0  # then the id goes straight into the queue file: never lost
REGISTER_TIMEOUT_SECONDS = 1.0  # the hook tells the user's daemon about a new root; Claude waits for the hook


def run_fast(args: argparse.Namespace) -> int | None:
    """The exit code when a fast path handled the command, None when the engine is needed."""
    if args.command == "hook":
        return hook_command(args)
    if args.command == "enqueue":
        return enqueue_command(args)
    if args.command == "status" or (args.command == "sync" and args.status):
        return status_command(args)
    return None


def _paths(args: argparse.Namespace) -> Paths:
    return Paths(resolve_root(args.root))


def _ask_daemon(args: argparse.Namespace, paths: Paths, method: str, route: str, *, timeout: float,
                body: Any = None) -> DaemonAnswer:
    """One exchange with the daemon for this root: ``--socket``, else the root's own daemon, then the user's.

    Raises:
        NoDaemon: no daemon listens on any of them.
        DaemonSilent: one accepted the connection but gave no usable answer.
    """
    from urllib.parse import quote

    from memsyncd.cli.daemon_http import NoDaemon, call_daemon
    from memsyncd.runtime import daemon_socket_candidates

    target = f"{route}?root={quote(str(paths.root))}"
    for socket_path in daemon_socket_candidates(paths.root, args.socket):
        try:
            return call_daemon(socket_path, method, target, body=body, timeout=timeout)
        except NoDaemon:
            continue
    raise NoDaemon("no daemon listens for this root")


def _note(text: str) -> None:
    sys.stderr.write(escape_controls(text) + "\n")


def status_command(args: argparse.Namespace) -> int | None:
    """Status from the daemon; None (in-process status) when no daemon answers."""
    if args.no_daemon:
        return None
    from memsyncd.cli.daemon_http import DaemonSilent, NoDaemon
    from memsyncd.cli.output import print_json
    from memsyncd.cli.render import render_status
    from memsyncd.timestamps import utc_now

    paths = _paths(args)
    try:
        answer = _ask_daemon(args, paths, "GET", "/v1/status", timeout=STATUS_TIMEOUT_SECONDS)
    except NoDaemon:
        args.no_daemon = True
        return None
    except DaemonSilent as exc:
        _note(f"{PROG}: the daemon gave no usable answer ({exc}); computing the status here instead.")
        args.no_daemon = True
        return None
    if answer.status == 404 and answer.error_type() == "RootNotServedError":  # the user's daemon, not this root
        args.no_daemon = True
        return None
    status = answer.object()  # the wire form, printed or rendered as received (no data classes loaded)
    if args.json:
        print_json(status)
    else:
        sys.stdout.write(escape_controls(render_status(status, utc_now())))
    return EXIT_OK


def enqueue_command(args: argparse.Namespace) -> int:
    """Queue one id: through the daemon when it answers within 2 s, else straight into the queue file.

    A daemon that times out or fails (5xx, reset) may or may not have written the entry; it is
    then written again here. A duplicate entry is harmless (entries of one id are coalesced
    before a push); a lost one is not. The queue's data classes load only when the file is
    written here.
    """
    from memsyncd.ids import id_problem

    problem = id_problem(args.id)
    if problem is not None:
        raise UsageError(problem + "; nothing was queued.")
    if args.level is not None and args.level < 0:
        raise UsageError("--level must be 0 or more (0 = local-only).")
    from memsyncd.cli.output import print_json
    from memsyncd.timestamps import format_ts, utc_now

    paths = _paths(args)
    action: Literal["push", "delete"] = "delete" if args.delete else "push"
    timestamp = format_ts(utc_now())
    payload = {"id": args.id, "action": action, "level": args.level, "content_hash": args.content_hash}
    if args.no_daemon or not _enqueue_via_daemon(args, paths, payload):
        from memsyncd.models import QueueEntry
        from memsyncd.queue_store import QueueStore

        entry = QueueEntry(args.id, action, timestamp, args.content_hash, args.level)
        QueueStore(paths.queue, paths.queue_lock).enqueue(entry)
    if args.json:
        print_json({"queued": args.id, "action": action, "queue_path": str(paths.queue)})
    else:
        sys.stdout.write(escape_controls(f"Queued {action} of {args.id} in {paths.queue}\n"))
    return EXIT_OK


def _enqueue_via_daemon(args: argparse.Namespace, paths: Paths, payload: dict[str, Any]) -> bool:
    """True when the daemon queued the entry; False when it did not answer or failed (write it here)."""
    from memsyncd.cli.daemon_http import DaemonSilent, NoDaemon

    try:
        answer = _ask_daemon(args, paths, "POST", "/v1/queue", body=payload, timeout=ENQUEUE_TIMEOUT_SECONDS)
    except NoDaemon:
        return False
    except DaemonSilent as exc:
        if args.verbose:
            _note(f"{PROG}: {exc}; writing {paths.queue} directly.")
        return False
    if answer.status >= 500:
        if args.verbose:
            _note(f"{PROG}: the daemon could not queue it ({answer.error()}); writing {paths.queue} directly.")
        return False
    answer.object()  # a 4xx raises the daemon's error (e.g. a bad argument)
    return True


def hook_command(args: argparse.Namespace) -> int:
    """``hook post-tool-use``: exit 0 whatever stdin holds; a note on stderr when nothing could be queued."""
    from memsyncd.cli.hook import run_post_tool_use_hook
    from memsyncd.queue_store import QueueStore

    try:
        stdin_text = _read_stdin()
    except UnicodeDecodeError as exc:
        _note(f"memsyncctl hook: stdin is not UTF-8 ({exc.reason} at byte {exc.start}); expected Claude Code's "
             "PostToolUse JSON. Nothing was queued.")
        return EXIT_OK
    except (OSError, ValueError) as exc:  # closed or unreadable stdin
        _note(f"memsyncctl hook: cannot read stdin ({type(exc).__name__}: {exc}). Nothing was queued.")
        return EXIT_OK
    try:
        paths = _paths(args)
    except UsageError as exc:  # cwd deleted, no home directory
        _note(f"memsyncctl hook: cannot find the root to queue into: {exc.message} Nothing was queued.")
        return EXIT_OK
    result = run_post_tool_use_hook(stdin_text, QueueStore(paths.queue, paths.queue_lock))
    if result.note:
        _note(result.note)
    if result.queued and not args.no_daemon:
        _register_with_user_daemon(paths)
    if args.verbose:
        _note(f"{PROG}: queued {len(result.queued)} entries in {paths.queue}")
    return EXIT_OK


def _read_stdin() -> str:
    """All of stdin as UTF-8 text ("" when there is no stdin)."""
    stream = sys.stdin
    if stream is None:
        return ""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text stream without bytes underneath (embedding, tests)
        return str(stream.read())
    return bytes(buffer.read()).decode("utf-8")


def _register_with_user_daemon(paths: Paths) -> None:
    """The hook wrote this root's queue itself: have the user's daemon serve the root (once; best effort).

    Nothing to do when the root has its own daemon (``memsyncd run --root``), when no user daemon
    runs, or when the root is already registered (the daemon watches it). A daemon that does not
    answer quickly is left alone: the entries are safe in the file either way.
    """
    from memsyncd.errors import MemsyncError
    from memsyncd.runtime import default_socket_path, user_socket_path

    problem: Exception | None = None
    try:
        user_socket = user_socket_path()
        if not user_socket.exists() or default_socket_path(paths.root).exists():
            return  # no user daemon, or the root has a daemon of its own: nothing to tell
        from memsyncd.cli.daemon_http import DaemonSilent, NoDaemon, call_daemon
        from memsyncd.roots import RootRegistry

        if RootRegistry().contains(paths.root):
            return
        try:
            call_daemon(user_socket, "POST", "/v1/roots", body={"path": str(paths.root)},
                        timeout=REGISTER_TIMEOUT_SECONDS)
        except (NoDaemon, DaemonSilent) as exc:
            problem = exc
    except (MemsyncError, OSError) as exc:
        problem = exc
    if problem is not None:
        _note(f"memsyncctl hook: could not ask the daemon to serve {paths.root} ({problem}); "
              f"run 'memsyncctl roots add {paths.root}'.")
