"""The ``memsyncctl`` command-line grammar (argparse): every command, its options and help text.

Stdlib only. :mod:`memsyncd.ctl` parses with it; ``memsyncctl completion`` renders it.
"""

from __future__ import annotations

import argparse
import sys

from memsyncd import __version__
from memsyncd.errors import EXIT_USAGE

__all__ = ["build_parser"]


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

    trust = sub.add_parser("trust", help="trust a root's config.json: show where your key and memories would go, "
                                         "and record it (needed before sync, status or the daemon use it)")
    trust.add_argument("dir", nargs="?", help="project directory holding .claude/ (default: the current root)")
    trust.add_argument("--list", action="store_true", help="list the trusted configs instead")
    trust.add_argument("--json", action="store_true", help="print one JSON object")
    untrust = sub.add_parser("untrust", help="forget the trust of a root's config (the daemon stops serving it)")
    untrust.add_argument("dir", nargs="?", help="project directory holding .claude/ (default: the current root)")

    enqueue = sub.add_parser("enqueue", help="add a local memory id to the sync queue")
    enqueue.add_argument("id", help="OpenMemory memory id")
    enqueue.add_argument("--delete", action="store_true", help="queue a delete instead of a push")
    enqueue.add_argument("--level", type=int, help="privacy level (0 = local-only, never synced)")
    enqueue.add_argument("--content-hash", help="sha256 of the text, if known")
    enqueue.add_argument("--json", action="store_true")

    log = sub.add_parser("log", help="the root's recent changes: time, push/pull/delete/adopt/conflict/skip, id, "
                                     "text (first 60 characters), why")
    log.add_argument("--since", help="only changes since this time (RFC 3339) or age (30m, 2h, 7d)")
    log.add_argument("--limit", type=int, default=10_000, help="at most this many of the newest (default 10000)")
    log.add_argument("--json", action="store_true")

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
    svc.add_argument("--no-sandbox", action="store_true",
                     help="install: where the unit fails with 226/NAMESPACE, turn off only the sandbox options this "
                          "kernel refuses (a drop-in; it says what that costs)")

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
