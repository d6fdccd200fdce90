"""``memsyncctl roots add|remove|list`` and ``status --all``: the roots one user's daemon serves (stdlib only).

The registry file is the source of truth; the running user daemon is told about each change so it
starts or stops serving a root without a restart. ``status --all`` asks that daemon for one line per
root; without a daemon it reads each root's queue and state files here (no network).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from memsyncd import wire
from memsyncd.cli.output import print_json
from memsyncd.cli.render import attention_text
from memsyncd.errors import EXIT_OK, EXIT_PARTIAL, ConfigError, MemsyncError, UntrustedRootError
from memsyncd.store.paths import CONFIG_RELPATH, Paths, resolve_root, user_socket_path
from memsyncd.store.roots import RootRegistry
from memsyncd.terminal import escape_controls
from memsyncd.wire_http import DaemonSilent, NoDaemon, call_daemon

DAEMON_TIMEOUT_SECONDS = 10.0


def _daemon(method: str, route: str, body: Any = None) -> Any | None:
    """The user daemon's answer (raising its error), or None when no user daemon runs."""
    try:
        answer = call_daemon(user_socket_path(), method, route, body=body, timeout=DAEMON_TIMEOUT_SECONDS)
    except NoDaemon:
        return None
    except DaemonSilent as exc:
        sys.stderr.write(f"memsyncctl: the daemon did not answer ({exc}); the registry file was still updated.\n")
        return None
    return answer.object()


def roots_command(args: argparse.Namespace) -> int:
    """``roots add [DIR]``, ``roots remove DIR``, ``roots list``."""
    registry = RootRegistry()
    if args.roots_command == "list":
        return _list(registry, args)
    target = Path(args.dir).expanduser().resolve() if args.dir else resolve_root(args.root)
    if args.roots_command == "add":
        sys.stdout.write(register_root(target, registry) + "\n")
        return EXIT_OK
    removed = registry.remove(target)
    _daemon("DELETE", wire.roots_route(str(target)))
    sys.stdout.write(f"{target}: {'removed' if removed else 'was not registered'}; its files are untouched. "
                     "Hooks and 'enqueue' there will not register it again; 'memsyncctl roots add "
                     f"{target}' does.\n")
    return EXIT_OK


def register_root(root: Path, registry: RootRegistry | None = None, *, trust: bool = True) -> str:
    """Register ``root`` and have a running user daemon serve it now; returns the lines to print.

    With ``trust`` (``roots add``, ``init``: the user named this root) its config is trusted first
    and the output says so; without, an untrusted root is not registered and the output says how
    to trust it.

    Raises:
        UntrustedRootError: with ``trust``, the root is refused outright (another owner, group/other-writable,
            a symlink); without, that is said in the returned line instead.
    """
    from memsyncd.store.trust import describe, evaluate, record_trust, trust_command

    root = Path(root).resolve()
    lines = []
    if trust:
        try:
            lines.append(describe(record_trust(root) if (root / CONFIG_RELPATH).is_file() else evaluate(root)))
        except UntrustedRootError:  # refused outright: not registered
            raise
        except ConfigError as exc:  # unreadable: registered, reported by the daemon, trusted once fixed
            lines.append(f"{exc.message} Not trusted: fix it, then run '{trust_command(root)}'.")
    else:
        try:
            current = evaluate(root)
        except ConfigError as exc:  # refused outright, or unreadable: say so, register nothing
            return f"Root {root}: not registered: {exc.message}"
        if not current.trusted:
            return (f"Root {root}: not registered: {current.config} is not trusted. Review it, then run "
                    f"'{trust_command(root)}' and 'memsyncctl roots add {root}'.")
    added = (registry or RootRegistry()).add(root)
    served = _daemon("POST", wire.ROOTS, {"path": str(root)}) is not None
    state = "registered" if added else "already registered"
    tail = ("the daemon serves it now" if served else
            "the daemon serves it once it runs ('memsyncctl service install' or 'memsyncd run')")
    lines.append(f"Root {root}: {state}; {tail}.")
    return "\n".join(lines)


def _list(registry: RootRegistry, args: argparse.Namespace) -> int:
    entries = registry.roots()
    if args.json:
        print_json({"registry": str(registry.path),
                    "roots": [{"path": str(e.path), "added": e.added} for e in entries]})
        return EXIT_OK
    if not entries:
        sys.stdout.write(f"No roots registered ({registry.path}). Add one with 'memsyncctl roots add DIR'.\n")
        return EXIT_OK
    sys.stdout.write(f"{len(entries)} root(s) in {registry.path}:\n")
    for entry in entries:
        sys.stdout.write(f"  {entry.path}  (added {entry.added})\n")
    return EXIT_OK


def status_all_command(args: argparse.Namespace) -> int:
    """One line per root: health, pending counts, conflicts, last sync; exit 1 when a root needs attention."""
    answer = None if args.no_daemon else _daemon("GET", wire.ROOTS)
    rows = answer["roots"] if answer is not None else [_local_summary(e.path) for e in RootRegistry().roots()]
    if args.json:
        print_json({"daemon": answer is not None, "roots": rows})
    else:
        sys.stdout.write(escape_controls(render_roots(rows, daemon=answer is not None)))
    return EXIT_PARTIAL if any(_problems(row) for row in rows) else EXIT_OK


def _problems(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything that needs the user in one row: its problem, and what the daemon's last runs left (once each)."""
    candidates = [row.get("problem")] + (row["attention"] if isinstance(row.get("attention"), list) else [])
    found: list[dict[str, Any]] = []
    for problem in candidates:
        if isinstance(problem, dict) and all((p.get("title"), p.get("message")) != (problem.get("title"),
                                                                                   problem.get("message"))
                                             for p in found):
            found.append(problem)
    return found


def _local_summary(root: Path) -> dict[str, Any]:
    """What a root's own files say (no daemon, no network)."""
    paths = Paths(root)
    row: dict[str, Any] = {"root": str(root), "problem": None, "status": None}
    try:
        from memsyncd.store.queue import QueueStore

        doc = QueueStore(paths.queue, paths.queue_lock).read()
        conflicts, held = _open_conflicts(paths.state)
    except MemsyncError as exc:
        row["problem"] = exc.to_dict()
        return row
    from memsyncd.engine.decide import coalesce

    pending = len(coalesce(doc.pending))  # counted as status counts them
    row["status"] = {"pending_push": pending, "pending_pull": None, "conflicts": conflicts,
                     "last_sync": doc.last_sync, "errors": len(doc.sync_errors), **held}
    if not paths.config.is_file():
        row["problem"] = {"type": "ConfigError", "title": "not configured",
                          "message": f"no {paths.config}; run 'memsyncctl init --root {root}'."}
        return row
    from memsyncd.store.trust import evaluate, untrusted_error

    try:
        trust = evaluate(root)
    except MemsyncError as exc:
        row["problem"] = exc.to_dict()
        return row
    if not trust.trusted:
        row["problem"] = untrusted_error(trust).to_dict()
    return row


def _open_conflicts(state: Path) -> tuple[int, dict[str, Any]]:
    """(open conflicts, the deletions the max-delete guard holds as status fields) from the state DB."""
    if not state.exists():
        return 0, {}
    from memsyncd.store.state import StateStore

    store = StateStore(state, verify=False)  # raises StateUnreadableError naming the file and 'state rebuild'
    try:
        raw = store.get_meta("scan_deletes_held")  # engine.scan.META_DELETES_HELD (this module stays light)
        held: dict[str, Any] = {}
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            value = None
        if isinstance(value, dict):
            held = {"deletes_held": value.get("count", 0),
                    "deletes_held_reason": f"{value.get('reason', '')}. Confirm with: {value.get('command', '')}"}
        return len(store.conflicts()), held
    finally:
        store.close()


def render_roots(rows: list[dict[str, Any]], *, daemon: bool) -> str:
    """The ``status --all`` table."""
    if not rows:
        return "No roots registered. Add one with 'memsyncctl roots add DIR'.\n"
    lines = [f"{len(rows)} root(s); daemon {'running' if daemon else 'not running (figures from the files)'}"]
    for row in rows:
        status = row.get("status")
        if status:
            pull = status.get("pending_pull")
            figures = (f"push {status.get('pending_push', 0)}, pull {'?' if pull is None else pull}, "
                       f"conflicts {status.get('conflicts', 0)}, errors {status.get('errors', 0)}, "
                       f"last sync {status.get('last_sync') or 'never'}")
        else:
            figures = "no figures"
        problems = _problems(row)
        health = "\n      ".join(f"Needs attention: {attention_text(p)}" for p in problems) if problems else "ok"
        lines.append(f"  {row['root']}\n      {health}\n      {figures}")
        if status and status.get("deletes_held"):
            lines.append(f"      deletions held: {status.get('deletes_held_reason') or status['deletes_held']}")
    return "\n".join(lines) + "\n"
