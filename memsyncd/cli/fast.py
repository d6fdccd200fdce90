"""memsyncctl's fast paths, stdlib only: status and enqueue through the daemon's socket, the hook and
enqueue straight into the queue file.

:func:`run_fast` answers ``status`` / ``sync --status`` (when a daemon answers), ``enqueue`` and
``hook post-tool-use`` without importing the engine, pydantic, httpx, structlog or asyncio; it
returns None when the command needs the engine (:mod:`memsyncd.cli.commands`). When it already
found that no daemon answers, it sets ``args.no_daemon`` so the engine does not probe again.

Each command imports what only it needs inside its function: the hook never loads the socket
client or the renderer. The hook runs on every OpenMemory tool call in Claude Code and status on
every ``/memory/sync --status``, so each millisecond is paid each time: these paths load no
``argparse``, ``pathlib``, ``typing``, ``dataclasses``, ``urllib``, ``datetime`` or ``contextlib``
(``tests/e2e/test_thin_client.py``). Roots and files are plain strings here; the root is found and
the daemon's socket looked up with a few ``os.stat`` calls (:mod:`memsyncd.store.locate`), trust
is checked by :mod:`memsyncd.store.trust_check`, and anything unusual (an untrusted root, a
runtime dir to repair, a busy queue lock) takes the full path with its messages.
"""

from __future__ import annotations

import os
import sys

from memsyncd.errors import EXIT_OK, MemsyncError, UsageError
from memsyncd.store.locate import QUEUE_RELPATH, RootNotFound, find_root
from memsyncd.terminal import escape_controls

TYPE_CHECKING = False  # typing is not loaded on the fast paths; mypy reads the block
if TYPE_CHECKING:
    import argparse
    from pathlib import Path
    from typing import Any

    from memsyncd.wire_http import DaemonAnswer

PROG = "memsyncctl"

STATUS_TIMEOUT_SECONDS = 30.0  # the daemon answers from memory; a cloud-checking daemon may take longer
ENQUEUE_TIMEOUT_SECONDS = 2.0  # then the id goes straight into the queue file: never lost
REGISTER_TIMEOUT_SECONDS = 1.0  # the hook tells the user's daemon about a new root; Claude waits for the hook
HOOK_LOCK_WAIT_SECONDS = 1.0  # Claude Code waits for the hook: then the daemon or the spool takes the ids
ENQUEUE_LOCK_WAIT_SECONDS = 1.0  # the same for enqueue writing the file itself
HANDOFF_TIMEOUT_SECONDS = 0.4  # a daemon answers at once (it spools the id itself when the lock stays busy)


def run_fast(args: argparse.Namespace) -> int | None:
    """The exit code when a fast path handled the command, None when the engine is needed."""
    if args.command == "hook":
        return hook_command(args)
    if args.command == "enqueue":
        return enqueue_command(args)
    if args.command == "status" or (args.command == "sync" and args.status):
        return status_command(args)
    return None


class _Root:
    """The root a command is for, and its queue files (strings: no ``pathlib`` on the fast paths)."""

    __slots__ = ("queue", "queue_lock", "root")

    def __init__(self, root: str) -> None:
        self.root = root
        self.queue = os.path.join(root, QUEUE_RELPATH)
        self.queue_lock = self.queue + ".lock"


def _paths(args: argparse.Namespace) -> _Root:
    try:
        return _Root(find_root(args.root))
    except RootNotFound as exc:
        raise UsageError(str(exc)) from None


def _ask_daemon(args: argparse.Namespace, paths: _Root, method: str, route: str, *, timeout: float,
                body: Any = None) -> DaemonAnswer:
    """One exchange with the daemon for this root: ``--socket``, else the root's own daemon, then the user's.

    Raises:
        NoDaemon: no daemon listens on any of them.
        DaemonSilent: one accepted the connection but gave no usable answer.
        DaemonError: the runtime dir is not a safe directory of the user's (e.g. a squatted /tmp one).
    """
    from memsyncd.store.locate import socket_candidates
    from memsyncd.wire_http import NoDaemon, call_daemon, quote_query

    target = f"{route}?root={quote_query(paths.root)}"
    candidates: list[Any] | None = socket_candidates(paths.root, args.socket)
    if candidates is None:  # a runtime dir to repair or refuse: the full lookup says how
        from pathlib import Path

        from memsyncd.store.paths import daemon_socket_candidates

        candidates = daemon_socket_candidates(Path(paths.root), args.socket)
    for socket_path in candidates:
        try:
            return call_daemon(socket_path, method, target, body=body, timeout=timeout)
        except NoDaemon:
            continue
    raise NoDaemon("no daemon listens for this root")


def _require_trusted(paths: _Root) -> None:
    """Refuse (exit 2) before any request when the root's config is not trusted (see :mod:`memsyncd.store.trust`).

    Raises:
        UntrustedRootError: never trusted, changed since, or refused outright (ownership).
        ConfigError: the config cannot be read.
    """
    from memsyncd.store.trust_check import quick_trusted

    if quick_trusted(paths.root):
        return
    from pathlib import Path

    from memsyncd.store.trust import require_trusted

    require_trusted(Path(paths.root))


def _untrusted_note(paths: _Root) -> str | None:
    """None when the root is trusted; else one line: why the daemon is not told, and the command that trusts it.

    An unreadable config counts as untrusted here: the id still goes into the queue file (never lost).

    Raises:
        UntrustedRootError: refused outright (not owned by you, group/other-writable, a symlink).
    """
    from memsyncd.store.trust_check import quick_trusted

    if quick_trusted(paths.root):
        return None
    from pathlib import Path

    from memsyncd.errors import ConfigError, UntrustedRootError
    from memsyncd.store.trust import evaluate, trust_command

    root = Path(paths.root)
    try:
        trust = evaluate(root)
    except UntrustedRootError:
        raise
    except ConfigError as exc:
        return f"{exc.message.rstrip('.')}; the daemon was not told. Fix it, then run '{trust_command(root)}'."
    if trust.trusted:
        return None
    why = "its security settings changed since you trusted it" if trust.reason == "changed" else "it is not trusted"
    return (f"{trust.config} decides where your mem0 key and memories go and {why}, so the daemon was not "
            f"told and nothing is sent; review it, then run '{trust_command(root)}'.")


def _note(text: str) -> None:
    sys.stderr.write(escape_controls(text) + "\n")


def status_command(args: argparse.Namespace) -> int | None:
    """Status from the daemon; None (in-process status) when no daemon answers."""
    if args.no_daemon:
        return None
    from memsyncd import wire
    from memsyncd.errors import DaemonError
    from memsyncd.wire_http import DaemonSilent, NoDaemon

    paths = _paths(args)
    _require_trusted(paths)
    try:
        answer = _ask_daemon(args, paths, "GET", wire.STATUS, timeout=STATUS_TIMEOUT_SECONDS)
    except NoDaemon:
        args.no_daemon = args.daemon_absent = True  # the status block then says no daemon runs
        return None
    except DaemonSilent as exc:
        _note(f"{PROG}: the daemon gave no usable answer ({exc}); computing the status here instead.")
        args.no_daemon = True
        return None
    except DaemonError as exc:  # no safe runtime dir (a squatted /tmp/memsyncd-<uid>): no daemon to ask there
        _note(f"{PROG}: warning: not looking for a daemon: {exc.message} Computing the status here instead.")
        args.no_daemon = True
        return None
    if answer.status == 404 and answer.error_type() == "RootNotServedError":  # the user's daemon, not this root
        args.no_daemon, args.daemon_absent = True, "not-serving"
        return None
    if answer.status == 503 and answer.error_type() is None:  # its connection cap: busy, not broken
        _note(f"{PROG}: the daemon is busy (too many connections); computing the status here instead.")
        args.no_daemon = True
        return None
    status = answer.object()  # the wire form, printed or rendered as received (no data classes loaded)
    if args.json:
        from memsyncd.cli.output import print_json

        print_json(status)
    else:
        import time

        from memsyncd.cli.render import render_status

        sys.stdout.write(escape_controls(render_status(status, time.time())))
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
    from memsyncd.timestamps import now_ts

    paths = _paths(args)
    action = "delete" if args.delete else "push"
    timestamp = now_ts()
    payload = {"id": args.id, "action": action, "level": args.level, "content_hash": args.content_hash}
    untrusted = _untrusted_note(paths)  # refused roots raise here: nothing is written under another's .claude
    if untrusted is not None:
        _note(f"{PROG}: {untrusted}")
    spooled: str | None = None
    if args.no_daemon or untrusted is not None or not _enqueue_via_daemon(args, paths, payload):
        from memsyncd.errors import QueueBusyError
        from memsyncd.store.queue_file import append_pending

        raw: dict[str, Any] = {"id": args.id, "action": action}  # the seed's form (queue.entry_to_json)
        if args.content_hash is not None:
            raw["content_hash"] = args.content_hash
        raw["timestamp"] = timestamp
        if args.level is not None:
            raw["level"] = args.level
        try:
            append_pending(paths.queue, paths.queue_lock, [raw], ENQUEUE_LOCK_WAIT_SECONDS)
        except QueueBusyError:
            from memsyncd.models import QueueEntry

            entry = QueueEntry(args.id, action, timestamp, args.content_hash, args.level)  # type: ignore[arg-type]
            spooled = _spool_or_wait(args, paths, entry)
    where = spooled or str(paths.queue)
    if args.json:
        from memsyncd.cli.output import print_json

        out = {"queued": args.id, "action": action, "queue_path": str(paths.queue)}
        if spooled:
            out["spooled"] = spooled  # the queue lock was busy: the spool file the daemon or a sync drains
        print_json(out)
    else:
        sys.stdout.write(escape_controls(f"Queued {action} of {args.id} in {where}\n"))
    return EXIT_OK


def _spool_or_wait(args: argparse.Namespace, paths: _Root, entry: Any) -> str | None:
    """enqueue met a busy lock: the spool (the path, noted on stderr); without a usable spool, the full lock wait."""
    from pathlib import Path

    from memsyncd.errors import MemsyncError
    from memsyncd.store.queue import QueueStore

    try:
        note, where = hand_off(args, paths, [entry], ask_daemon=False)
    except (MemsyncError, OSError) as exc:
        _note(f"{PROG}: the queue lock {paths.queue_lock} is busy and the spool cannot be written ({exc}); "
              "waiting for the lock.")
        QueueStore(Path(paths.queue), Path(paths.queue_lock)).enqueue(entry)  # QueueBusyError (exit 1) after the wait
        return None
    _note(note)
    return str(where) if where else None


def _queue_payload(entry: Any) -> dict[str, Any]:
    return {"id": entry.id, "action": entry.action, "level": entry.level, "content_hash": entry.content_hash}


def hand_off(args: argparse.Namespace, paths: _Root, entries: list[Any], *,
             ask_daemon: bool = True) -> tuple[str, Path | None]:
    """The queue lock stayed busy: the daemon takes the entries (it spools them itself), else the per-user spool.

    Returns the one line to print and the spool file (None when the daemon took everything).
    Nothing is dropped: an entry goes to the spool unless a daemon answered that it took it.

    Raises:
        MemsyncError, OSError: no daemon took them and the spool cannot be written (no safe runtime dir).
    """
    from pathlib import Path

    from memsyncd.errors import MemsyncError
    from memsyncd.store import spool

    remaining = list(entries)
    if ask_daemon and not args.no_daemon:
        from memsyncd import wire
        from memsyncd.wire_http import DaemonSilent, NoDaemon

        try:
            while remaining:
                answer = _ask_daemon(args, paths, "POST", wire.QUEUE, body=_queue_payload(remaining[0]),
                                     timeout=HANDOFF_TIMEOUT_SECONDS)
                if not 200 <= answer.status < 300:
                    break
                remaining.pop(0)
        except (NoDaemon, DaemonSilent, MemsyncError, OSError):
            pass  # the spool takes what the daemon did not
    lock = paths.queue_lock
    said = f"another process holds the sync queue lock {lock} (find it with 'fuser {lock}')"
    taken = len(entries) - len(remaining)
    if not remaining:
        return f"{PROG}: {said}; the daemon took {_ids_text(entries)} and queues them when it is free.", None
    where = spool.write(Path(paths.root), remaining)
    daemon_part = f"the daemon took {taken}, " if taken else ""
    return (f"{PROG}: {said}; {daemon_part}{_ids_text(remaining)} spooled in {where.parent}; the daemon or the next "
            "'memsyncctl sync' moves them into the queue.", where)


def _ids_text(entries: list[Any]) -> str:
    shown = " ".join(e.id for e in entries[:10])
    return shown + (f" (and {len(entries) - 10} more)" if len(entries) > 10 else "")


def _enqueue_via_daemon(args: argparse.Namespace, paths: _Root, payload: dict[str, Any]) -> bool:
    """True when the daemon queued the entry; False when it did not answer or failed (write it here)."""
    from memsyncd import wire
    from memsyncd.errors import DaemonError
    from memsyncd.wire_http import DaemonSilent, NoDaemon

    try:
        answer = _ask_daemon(args, paths, "POST", wire.QUEUE, body=payload, timeout=ENQUEUE_TIMEOUT_SECONDS)
    except NoDaemon:
        return False
    except DaemonError as exc:  # no safe runtime dir (a squatted /tmp/memsyncd-<uid>): no daemon to ask there
        _note(f"{PROG}: warning: not looking for a daemon: {exc.message} Writing {paths.queue} directly.")
        return False
    except DaemonSilent as exc:
        if args.verbose:
            _note(f"{PROG}: {exc}; writing {paths.queue} directly.")
        return False
    if answer.status >= 500 or answer.error_type() == "UntrustedRootError":  # the file keeps it; never lost
        if args.verbose:
            _note(f"{PROG}: the daemon could not queue it ({answer.error()}); writing {paths.queue} directly.")
        return False
    if answer.status == 404 and answer.error_type() == "RootNotServedError":  # e.g. removed with 'roots remove'
        _note(f"{PROG}: the daemon does not serve {paths.root}: {answer.error()} The id goes into the queue file; "
              f"'memsyncctl sync' there pushes it.")
        return False
    answer.object()  # a 4xx raises the daemon's error (e.g. a bad argument)
    return True


def hook_command(args: argparse.Namespace) -> int:
    """``hook post-tool-use``: exit 0 whatever stdin holds; a note on stderr when nothing could be queued."""
    from memsyncd.cli.hook import run_hook_on_file

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
        untrusted = _untrusted_note(paths)
    except UsageError as exc:  # cwd deleted, no home directory
        _note(f"memsyncctl hook: cannot find the root to queue into: {exc.message} Nothing was queued.")
        return EXIT_OK
    except MemsyncError as exc:  # refused outright (another user's .claude) or an unreadable config
        _note(f"memsyncctl hook: {exc} Nothing was queued.")
        return EXIT_OK
    ask_daemon = untrusted is None  # an untrusted root: the file or the spool, never the daemon
    result = run_hook_on_file(
        stdin_text, paths.queue, paths.queue_lock, HOOK_LOCK_WAIT_SECONDS,
        on_busy=lambda entries: hand_off(args, paths, entries, ask_daemon=ask_daemon)[0].replace(
            PROG, f"{PROG} hook", 1))
    if result.note:
        _note(result.note)
    if result.queued and untrusted is not None:  # queued in the file only: the daemon is never told
        _note(f"memsyncctl hook: queued in {paths.queue} only; {untrusted}")
    elif result.queued and not args.no_daemon:
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


def _register_with_user_daemon(paths: _Root) -> None:
    """The hook wrote this root's queue itself: have the user's daemon serve the root (once; best effort).

    Nothing to do when the root has its own daemon (``memsyncd run --root``), when no user daemon
    runs, or when the root is already registered (the daemon watches it) or was removed by hand.
    A daemon that does not answer quickly is left alone: the entries are safe in the file either
    way. Nothing is created here (no runtime dir): a stat of each socket and a read of the registry.
    """
    from memsyncd.errors import MemsyncError
    from memsyncd.store.locate import USER_SOCKET_NAME, checked_runtime_dir, in_registry, root_id

    problem: Exception | None = None
    try:
        directory = checked_runtime_dir()
        if directory == "":
            return  # no runtime dir: no user daemon
        if directory is None:  # not a 0700 directory of ours: the full check repairs it or says why
            from memsyncd.store.paths import runtime_dir

            directory = str(runtime_dir(create=False))
        user_socket = os.path.join(directory, USER_SOCKET_NAME)
        if not os.path.exists(user_socket) or os.path.exists(os.path.join(directory, f"{root_id(paths.root)}.sock")):
            return  # no user daemon, or the root has a daemon of its own: nothing to tell
        if in_registry(paths.root):  # served, or removed by hand (the registry names it as we do)
            return
        from pathlib import Path

        from memsyncd import wire
        from memsyncd.store.roots import RootRegistry
        from memsyncd.wire_http import DaemonSilent, NoDaemon, call_daemon

        registry = RootRegistry()
        root = Path(paths.root)
        if registry.contains(root) or registry.is_ignored(root):  # the same, spelled otherwise
            return
        try:
            call_daemon(user_socket, "POST", wire.ROOTS, body={"path": paths.root, "auto": True},
                        timeout=REGISTER_TIMEOUT_SECONDS)
        except (NoDaemon, DaemonSilent) as exc:
            problem = exc
    except (MemsyncError, OSError) as exc:
        problem = exc
    if problem is not None:
        _note(f"memsyncctl hook: could not ask the daemon to serve {paths.root} ({problem}); "
              f"run 'memsyncctl roots add {paths.root}'.")
