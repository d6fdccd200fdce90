"""``memsyncctl``: parse arguments, answer from a fast path or run a command, map errors to exit codes.

Importing this module loads only the stdlib and memsyncd's stdlib-only modules: ``--version``,
``--help``, ``status`` (daemon up), ``enqueue`` and ``hook post-tool-use`` never load the
engine, pydantic, httpx, structlog or asyncio (:mod:`memsyncd.cli.fast`). Other commands, and
status with no daemon, load :mod:`memsyncd.cli.commands` lazily. Output and exit codes are the
same either way. The grammar stays here (:func:`build_parser`); handlers live in ``memsyncd.cli``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from memsyncd import __version__
from memsyncd.errors import EXIT_USAGE, MemsyncError

__all__ = ["build_parser", "main"]

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE


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
    sync.add_argument("--confirm-deletes", action="store_true",
                      help="delete in the cloud the memories deleted locally that the max-delete guard held back")
    sync.add_argument("--json", action="store_true", help="print one JSON object")

    status = sub.add_parser("status", help="same as 'sync --status'; --all: every root the daemon serves")
    status.add_argument("--json", action="store_true")
    status.add_argument("--all", action="store_true", help="one line per registered root (health, counts, last sync)")

    state = sub.add_parser("state", help="repair the sync state database")
    state_sub = state.add_subparsers(dest="state_command", required=True, parser_class=_Parser)
    rebuild = state_sub.add_parser("rebuild", help="move a damaged state DB aside and rebuild the id map from "
                                   "the memsync metadata of both stores")
    rebuild.add_argument("--force", action="store_true", help="rebuild even when the database looks healthy")
    rebuild.add_argument("--json", action="store_true")

    roots = sub.add_parser("roots", help="the projects (roots) the user's daemon serves")
    roots_sub = roots.add_subparsers(dest="roots_command", required=True, parser_class=_Parser)
    roots_add = roots_sub.add_parser("add", help="register a root and have the running daemon serve it")
    roots_add.add_argument("dir", nargs="?", help="project directory holding .claude/ (default: the current root)")
    roots_remove = roots_sub.add_parser("remove", help="stop serving a root (its files are untouched)")
    roots_remove.add_argument("dir", nargs="?", help="project directory (default: the current root)")
    roots_list = roots_sub.add_parser("list", help="the registered roots")
    roots_list.add_argument("--json", action="store_true")

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

    svc = sub.add_parser("service", help="install/uninstall/status of the systemd user unit or launchd agent",
                         description="Exit 0 when done (status: installed and running), 1 when the service is "
                                     "not installed or not running, 5 when no service manager can be reached "
                                     "(then run 'memsyncd run' from your login session, or "
                                     "'loginctl enable-linger $USER').")
    svc.add_argument("action", choices=["install", "uninstall", "status"])
    svc.add_argument("--no-start", action="store_true", help="only write/remove the file; do not call systemctl")

    init = sub.add_parser("init", help="write config.json and the mem0 key file, then check both servers")
    init.add_argument("--local-url", help="OpenMemory URL (default http://localhost:8765)")
    init.add_argument("--user-id", help="OpenMemory user id (default: $USER)")
    init.add_argument("--cloud-url", help="mem0 API URL (default https://api.mem0.ai)")
    init.add_argument("--cloud-user-id", help="mem0 user id (default: the OpenMemory user id)")
    init.add_argument("--app-id", help="mem0 app id to sync (optional)")
    init.add_argument("--agent-id", help="mem0 agent id to sync (optional)")
    init.add_argument("--default-level", type=int,
                      help="level of memories that carry none: 0 = local-only until marked (default), 1 = sync")
    init.add_argument("--no-cloud", action="store_true", help="local only: do not enable cloud sync")
    init.add_argument("--key-stdin", action="store_true",
                      help="read the mem0 key from stdin (it is never taken as an argument)")
    init.add_argument("--force", action="store_true", help="replace an existing config.json")
    init.add_argument("--strict", action="store_true",
                      help="write nothing unless both servers answer and accept (exit 2, 4 or 5 otherwise)")
    init.add_argument("--no-input", action="store_true", help="never ask; use the flags and the defaults")

    doctor = sub.add_parser("doctor", help="check the whole setup; each failure with the command that fixes it")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")

    forget = sub.add_parser("forget-cloud-copies",
                            help="delete the cloud copies of memories now marked level 0 (lists them, asks first)")
    forget.add_argument("--yes", action="store_true", help="delete without asking")
    forget.add_argument("--dry-run", action="store_true", help="only list them")
    forget.add_argument("--json", action="store_true", help="print one JSON object (needs --yes or --dry-run)")

    completion = sub.add_parser("completion", help="print the shell completion script for bash, zsh or fish")
    completion.add_argument("shell", choices=["bash", "zsh", "fish"])

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``memsyncctl``: never lets a traceback reach the user."""
    try:
        args = build_parser().parse_args(argv)  # --help, --version and usage errors exit here
    except KeyboardInterrupt:
        sys.stderr.write("memsyncctl: interrupted\n")
        return EXIT_INTERRUPTED
    as_json = bool(getattr(args, "json", False))
    try:
        return _run(args)
    except MemsyncError as error:
        from memsyncd.cli.output import report_error

        return report_error(error, as_json=as_json)
    except KeyboardInterrupt:
        sys.stderr.write("memsyncctl: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (e.g. '| head'): nothing more to say
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # noqa: BLE001 - the last resort: one clear line instead of a traceback
        from memsyncd.cli.output import project_error_for, report_error, report_internal_error

        mapped = project_error_for(exc)
        if mapped is not None:
            return report_error(mapped, as_json=as_json)
        _log_internal_error(args)
        return report_internal_error(exc)


def _run(args: argparse.Namespace) -> int:
    if args.command == "roots":
        from memsyncd.cli.roots import roots_command

        return roots_command(args)
    if args.command == "status" and args.all:
        from memsyncd.cli.roots import status_all_command

        return status_all_command(args)
    from memsyncd.cli.fast import run_fast

    code = run_fast(args)
    if code is not None:
        return code
    from memsyncd.cli.commands import run_command

    return run_command(args)


def _log_internal_error(args: argparse.Namespace) -> None:
    """With -v, the traceback goes into the structured log (the report's attachment)."""
    if not args.verbose:
        return
    try:
        import structlog

        from memsyncd.logs import configure_cli_logging

        configure_cli_logging(verbose=True)
        structlog.get_logger("memsyncctl").exception("internal_error")
    except Exception:  # noqa: BLE001 - logging must never replace the one line below
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
