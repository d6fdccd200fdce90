"""The seed's exact text blocks (SYNC STATUS, PUSH/PULL, SYNC PARTIAL, SYNC ERROR, SYNC UNAVAILABLE).

Stdlib only: the thin client renders a daemon's answer without loading the engine.
"""

from __future__ import annotations

from collections.abc import Mapping

from memsyncd.errors import (
    EXIT_AUTH,
    EXIT_NETWORK,
    EXIT_PARTIAL,
    EXIT_UNREADABLE,
    AuthError,
    LocalUnreachableError,
    MemsyncError,
    NetworkUnreachableError,
    QueueUnreadableError,
)
from memsyncd.timestamps import epoch_seconds

TYPE_CHECKING = False  # typing is not loaded on the fast paths; mypy reads the block
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

    from memsyncd.engine.report import StatusReport, SyncReport

RULE = "═══════════════════════════════════════════"



def render_fatal(error: MemsyncError) -> str:
    """The seed's error blocks for run-level failures."""
    if isinstance(error, AuthError):
        return f"SYNC ERROR: mem0 API returned {error.status or 401}\n{_check_key(error.key_source)}\n"
    if isinstance(error, LocalUnreachableError):  # not the network: the local server (the title names its URL)
        return (
            f"SYNC ERROR: {error.title}\n"
            "Pending changes preserved in queue.\n"
            "Will retry on next sync.\n"
            f"({error.message})\n"
        )
    if isinstance(error, NetworkUnreachableError):
        return (
            "SYNC ERROR: Network unreachable\n"
            "Pending changes preserved in queue.\n"
            "Will retry on next sync.\n"
            f"({error.message})\n"
        )
    if isinstance(error, QueueUnreadableError):
        return (f"SYNC ERROR: sync queue is unreadable ({error.path}: {error.reason})\n"
                "The file was left untouched. Fix it, or run 'memsyncctl queue repair' to move it "
                "aside and salvage its valid entries.\n")
    return f"SYNC ERROR: {error.title}\n{error.message}\n"


def _check_key(source: str) -> str:
    """What to check after a 401/403: the variable or the file the key really came from."""
    if not source or "MEM0_API_KEY" in source:
        return "Check MEM0_API_KEY environment variable."
    if source.startswith("$CREDENTIALS_DIRECTORY"):
        source = "the key file the service loads (LoadCredential=, from ~/.config/memsyncd/mem0_api_key)"
    return (f"Check the mem0 key in {source} (MEM0_API_KEY is not set); store a valid one with "
            "'memsyncctl init --key-stdin < FILE'.")


def render_unavailable() -> str:
    """The seed's SYNC UNAVAILABLE block."""
    return (
        "SYNC UNAVAILABLE\n"
        "Cloud sync is not configured.\n"
        "\n"
        "To enable:\n"
        "1. Set MEM0_API_KEY environment variable\n"
        "2. Update .claude/memory/config.json:\n"
        '   "cloud": { "enabled": true, ... }\n'
    )


def render_sync(report: SyncReport) -> str:
    """The seed's PUSH / PULL / SYNC PARTIAL blocks (plus extra lines after them)."""
    pull_failed = bool(report.pull and report.pull.failed)
    push_did = bool(report.push and (report.push.attempted or report.push.synced or report.push.errors))
    pull_did = bool(report.pull and (report.pull.synced or report.pull.conflicts))
    if report.fatal is not None and report.exit_code in (EXIT_AUTH, EXIT_NETWORK, EXIT_UNREADABLE) \
            and not (pull_failed and (push_did or pull_did)):  # a pull stopped before anything was done: no partial
        return render_fatal(report.fatal)
    lines: list[str] = []
    push, pull = report.push, report.pull
    prefix = "DRY RUN (nothing written)\n" if report.dry_run else ""
    if report.scan is not None and not report.scan.failed and (report.scan.found or report.dry_run):
        scan = report.scan  # what the local scan found outside the queue, first: it is what the push counts
        prefix += (f"Found in OpenMemory ({scan.kind} scan of {scan.listed}): {scan.new} new, {scan.edited} edited, "
                   f"{scan.deleted} deleted\n")
    if report.exit_code == EXIT_PARTIAL or pull_failed:
        if push and pull_failed:  # what the push did stands: show it before the pull's failure
            lines.append(f"PUSH: {push.synced} memories synced to cloud")
            lines.append(f"Errors: {push.errors} (see {report.queue_path})")
        lines.append("SYNC PARTIAL")
        if push:
            lines.append(f"Pushed: {push.synced} of {push.attempted} ({push.errors} errors)")
        if pull:
            lines.append(f"Pulled: {pull.synced} of {pull.to_apply}")
        if pull and pull.failed:
            lines.append(f"Pull stopped early: {pull.failed}")
        lines += ["", f"Errors logged to {report.queue_path}", "Run /memory/sync again to retry."]
        for message in (push.error_messages if push else [])[:5] + (pull.error_messages if pull else [])[:5]:
            lines.append(f"  - {message}")
    else:
        if push:
            lines.append(f"PUSH: {push.synced} memories synced to cloud")
            lines.append(f"Errors: {push.errors} (see {report.queue_path})")
        if pull:
            lines.append(f"PULL: {pull.synced} memories synced from cloud")
            found = pull.conflicts + (push.conflicts if push else 0)  # new conflicts found by this run
            lines.append(f"New: {pull.new} | Updated: {pull.updated} | Conflicts: {found}")
    if push and push.waiting:
        lines.append(f"Waiting: {push.waiting} accepted by mem0, still processing (finished on the next sync)")
    if push and push.duplicates:
        lines.append(f"Duplicates: {push.duplicates} with the same text as another local memory "
                     "(one cloud copy stands for both)")
    if push and push.skipped_private:
        lines.append(f"Skipped: {push.skipped_private} local-only (level 0)")
    if push and push.not_found:
        lines.append(f"Skipped: {push.not_found} not found locally (removed from the queue)")
    if push and push.invalid_ids:
        lines.append(f"Skipped: {push.invalid_ids} not a memory id (removed from the queue; see the log)")
    if push and push.deletes_kept:
        lines.append(f"Skipped: {push.deletes_kept} deletes of memories that still exist locally (cloud copy kept)")
    if pull and pull.skipped_private:
        lines.append(f"Not pulled: {pull.skipped_private} matching a local-only (level 0) memory")
    if pull and pull.already_here:
        lines.append(f"Not pulled: {pull.already_here} copies of memories already synced here "
                     "(the same memory in another mem0 scope)")
    if push and push.conflicts and not pull:
        lines.append(f"Conflicts: {push.conflicts}")
    if report.reconcile and (report.reconcile.deleted_local or report.reconcile.conflicts):
        lines.append(f"Deleted locally (deleted in cloud): {report.reconcile.deleted_local}")
    if report.reconcile and report.reconcile.refused:
        lines.append(f"WARNING: {report.reconcile.refused}")
    if report.scan is not None and report.scan.failed:
        lines.append(f"Local scan stopped early: {report.scan.failed} (nothing it listed was taken as deleted)")
    if report.scan is not None and report.scan.held_reason:
        lines.append(f"WARNING: {report.scan.held_reason}")
    if report.conflicts_open:
        lines.append(f"Conflicts pending: {report.conflicts_open} (resolve with /memory/conflict or "
                     "'memsyncctl conflicts list')")
    if report.fatal is not None:
        lines.append(render_fatal(report.fatal).rstrip("\n"))
    return prefix + "\n".join(lines) + "\n"


def relative_time(moment: datetime, now: datetime) -> str:
    """'just now', '5 minutes ago', '3 hours ago', '2 days ago'."""
    return _ago(int((now - moment).total_seconds()))


def _ago(seconds: int) -> str:
    if seconds < 0:
        return "in the future"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def _pull_age(status: Mapping[str, Any], now: float) -> str:
    """' (as of 12 minutes ago)' when the pull figure is older than one pull interval, else ''."""
    as_of, interval = status.get("to_pull_as_of"), status.get("pull_interval_seconds")
    if not isinstance(as_of, str) or status.get("pending_pull") is None:
        return ""
    try:
        age = now - epoch_seconds(as_of)
    except ValueError:
        return ""
    if age <= (interval if isinstance(interval, int | float) else 0):
        return ""
    return f" (as of {_ago(int(age))})"


def render_status(status: StatusReport | Mapping[str, Any], now: datetime | float) -> str:
    """The seed's SYNC STATUS block, with a daemon line when one runs.

    Args:
        status: the report, or its wire form (the JSON object of ``GET /v1/status``), which the thin
            client renders as received, without loading the data classes.
        now: the time to measure "5 minutes ago" from (an aware datetime, or seconds since 1970 as
            ``time.time()`` gives: the thin client does not load ``datetime`` for it).
    """
    data = status if isinstance(status, Mapping) else status.to_json()
    now = now if isinstance(now, int | float) else now.timestamp()
    local_url = str(data.get("local_url") or "")
    local = host_and_port(local_url)
    pending_pull = data.get("pending_pull")
    pull = str(pending_pull) if pending_pull is not None else "?"
    last_sync = data.get("last_sync")
    if last_sync:
        try:
            last = f"{last_sync} ({_ago(int(now - epoch_seconds(str(last_sync))))})"
        except ValueError:
            last = str(last_sync)
    else:
        last = "never"
    lines = [
        "SYNC STATUS",
        RULE,
        "",
        f"Local:    OpenMemory ({local})",
        f"Cloud:    mem0 ({'configured' if data.get('cloud_configured') else 'not configured'})",
        "",
        f"Pending:  {data.get('pending_push', 0)} memories to push",
        f"          {pull} memories to pull{_pull_age(data, now)}",
        f"Conflicts: {data.get('conflicts', 0)} unresolved",
        "",
        f"Last sync: {last}",
        RULE,
    ]
    if data.get("errors"):
        lines.append(f"Errors: {data['errors']} entries failing (see {data.get('queue_path', '')})")
    if data.get("pending_scan"):
        lines.append(f"Found by local scans: {data['pending_scan']} changes not pushed yet (counted in Pending)")
    if data.get("deletes_held"):
        lines.append(f"Deletions held: {data.get('deletes_held_reason') or data['deletes_held']}")
    if data.get("pull_note"):
        lines.append(str(data["pull_note"]))
    lines += render_attention(data.get("attention"))
    daemon = data.get("daemon")
    if isinstance(daemon, dict) and daemon:
        lines.append(render_daemon_line(daemon))
    return "\n".join(lines) + "\n"


def host_and_port(url: str) -> str:
    """``host:port`` of a URL (``host`` without a port; the URL itself without a host), as ``urlsplit`` reads
    it (user info dropped, host lower-cased, IPv6 brackets removed), without loading ``urllib``."""
    start = url.find("//")
    if start < 0:
        return url
    netloc = url[start + 2:]
    for sep in "/?#":
        netloc = netloc.split(sep, 1)[0]
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = netloc.partition(":")
    host = host.lower()
    if port.isdigit() and int(port) <= 65535:
        return f"{host}:{int(port)}"
    return host or url


def attention_text(problem: Mapping[str, Any]) -> str:
    """One problem as 'title: message (since T)'."""
    text = f"{problem.get('title') or 'problem'}: {problem.get('message') or ''}".rstrip(": ")
    since = problem.get("since")
    return text + (f" (since {since})" if since else "")


def render_attention(attention: Any) -> list[str]:
    """The "Needs attention" lines of a status (none when the list is empty or not a list)."""
    if not isinstance(attention, list):
        return []
    return [f"Needs attention: {attention_text(p)}" for p in attention if isinstance(p, Mapping)]


def render_daemon_line(daemon: dict[str, Any]) -> str:
    """One line about the daemon: running (pid, uptime, next pull) or not running."""
    if daemon.get("running") is False:
        return ("Daemon:   not running (nothing syncs in the background; start it with 'memsyncctl service install' "
                "or 'memsyncd run')")
    if daemon.get("serves_root") is False:
        return "Daemon:   running, but not serving this root (serve it with 'memsyncctl roots add')"
    state = "paused" if daemon.get("paused") else "running"
    uptime = int(daemon.get("uptime_seconds", 0))
    up = f"{uptime // 3600}h{uptime % 3600 // 60:02d}m{uptime % 60:02d}s"
    text = f"Daemon:   pid {daemon.get('pid')}, {state}, up {up}"
    if daemon.get("next_pull"):
        text += f", next pull {daemon['next_pull']}"
    return text
