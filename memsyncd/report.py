"""Sync results and their rendering: the seed's exact text blocks, JSON, and exit codes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from memsyncd.errors import (
    EXIT_AUTH,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNREADABLE,
    AuthError,
    MemsyncError,
    NetworkUnreachableError,
    QueueUnreadableError,
)
from memsyncd.models import parse_ts

RULE = "═══════════════════════════════════════════"


@dataclass
class PushReport:
    """Counts of one push phase."""

    attempted: int = 0  # work items that needed the cloud (not skipped/dropped)
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    conflicts: int = 0
    errors: int = 0
    skipped_private: int = 0
    dropped: int = 0
    waiting: int = 0  # accepted by mem0, still processing (queued add): finishes on the next sync
    error_messages: list[str] = field(default_factory=list)

    @property
    def synced(self) -> int:
        """Items that reached the cloud, or needed nothing there."""
        return self.created + self.updated + self.deleted + self.unchanged


@dataclass
class PullReport:
    """Counts of one pull phase."""

    seen: int = 0
    new: int = 0
    updated: int = 0
    adopted: int = 0
    conflicts: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    failed: str = ""  # the error that ended the pull early (a page could not be listed, ...); "" when it finished

    @property
    def to_apply(self) -> int:
        """Cloud changes that needed a local write."""
        return self.new + self.updated + self.errors

    @property
    def synced(self) -> int:
        """Cloud changes written locally."""
        return self.new + self.updated


@dataclass
class ReconcileReport:
    """Counts of one cloud-deletion reconcile."""

    deleted_local: int = 0
    conflicts: int = 0
    forgotten: int = 0
    refused: str = ""


@dataclass
class SyncReport:
    """Everything a sync run did, rendered by :func:`render_sync`."""

    mode: str
    queue_path: str
    dry_run: bool = False
    push: PushReport | None = None
    pull: PullReport | None = None
    reconcile: ReconcileReport | None = None
    conflicts_open: int = 0
    fatal: MemsyncError | None = None
    started_at: str = ""
    duration_ms: int = 0

    @property
    def exit_code(self) -> int:
        """SPEC 5 exit code."""
        if self.fatal is not None:
            return self.fatal.exit_code
        if (self.push and self.push.errors) or (self.pull and (self.pull.errors or self.pull.failed)):
            return EXIT_PARTIAL
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (``--json``)."""
        data: dict[str, Any] = {
            "mode": self.mode, "dry_run": self.dry_run, "exit_code": self.exit_code,
            "queue_path": self.queue_path, "conflicts_open": self.conflicts_open,
            "started_at": self.started_at, "duration_ms": self.duration_ms,
            "push": asdict(self.push) if self.push else None,
            "pull": asdict(self.pull) if self.pull else None,
            "reconcile": asdict(self.reconcile) if self.reconcile else None,
            "error": self.fatal.to_dict() if self.fatal else None,
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncReport:
        """Rebuild a report sent over the control socket."""
        from memsyncd.errors import error_from_dict

        report = cls(mode=data["mode"], queue_path=data["queue_path"], dry_run=data.get("dry_run", False),
                     conflicts_open=data.get("conflicts_open", 0), started_at=data.get("started_at", ""),
                     duration_ms=data.get("duration_ms", 0))
        if data.get("push"):
            report.push = PushReport(**data["push"])
        if data.get("pull"):
            report.pull = PullReport(**data["pull"])
        if data.get("reconcile"):
            report.reconcile = ReconcileReport(**data["reconcile"])
        if data.get("error"):
            report.fatal = error_from_dict(data["error"])
        return report


def render_fatal(error: MemsyncError) -> str:
    """The seed's error blocks for run-level failures."""
    if isinstance(error, AuthError):
        return f"SYNC ERROR: mem0 API returned {error.status or 401}\nCheck MEM0_API_KEY environment variable.\n"
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
    if report.fatal is not None and report.exit_code in (EXIT_AUTH, EXIT_NETWORK, EXIT_UNREADABLE) \
            and not pull_failed:
        return render_fatal(report.fatal)
    lines: list[str] = []
    push, pull = report.push, report.pull
    prefix = "DRY RUN (nothing written)\n" if report.dry_run else ""
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
    if push and push.skipped_private:
        lines.append(f"Skipped: {push.skipped_private} local-only (level 0)")
    if push and push.conflicts and not pull:
        lines.append(f"Conflicts: {push.conflicts}")
    if report.reconcile and (report.reconcile.deleted_local or report.reconcile.conflicts):
        lines.append(f"Deleted locally (deleted in cloud): {report.reconcile.deleted_local}")
    if report.reconcile and report.reconcile.refused:
        lines.append(f"WARNING: {report.reconcile.refused}")
    if report.conflicts_open:
        lines.append(f"Conflicts pending: {report.conflicts_open} (resolve with /memory/conflict or "
                     "'memsyncctl conflicts list')")
    if report.fatal is not None:
        lines.append(render_fatal(report.fatal).rstrip("\n"))
    return prefix + "\n".join(lines) + "\n"


@dataclass
class StatusReport:
    """What ``--status`` shows."""

    local_url: str
    cloud_configured: bool
    pending_push: int
    pending_pull: int | None
    conflicts: int
    last_sync: str | None
    errors: int = 0
    queue_path: str = ""
    pull_note: str = ""
    daemon: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def relative_time(moment: datetime, now: datetime) -> str:
    """'just now', '5 minutes ago', '3 hours ago', '2 days ago'."""
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def render_status(status: StatusReport, now: datetime) -> str:
    """The seed's SYNC STATUS block, with a daemon line when one runs."""
    parts = urlsplit(status.local_url)
    local = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or status.local_url)
    pull = str(status.pending_pull) if status.pending_pull is not None else "?"
    if status.last_sync:
        try:
            last = f"{status.last_sync} ({relative_time(parse_ts(status.last_sync), now)})"
        except ValueError:
            last = status.last_sync
    else:
        last = "never"
    lines = [
        "SYNC STATUS",
        RULE,
        "",
        f"Local:    OpenMemory ({local})",
        f"Cloud:    mem0 ({'configured' if status.cloud_configured else 'not configured'})",
        "",
        f"Pending:  {status.pending_push} memories to push",
        f"          {pull} memories to pull",
        f"Conflicts: {status.conflicts} unresolved",
        "",
        f"Last sync: {last}",
        RULE,
    ]
    if status.errors:
        lines.append(f"Errors: {status.errors} entries failing (see {status.queue_path})")
    if status.pull_note:
        lines.append(status.pull_note)
    if status.daemon:
        lines.append(render_daemon_line(status.daemon))
    return "\n".join(lines) + "\n"


def render_daemon_line(daemon: dict[str, Any]) -> str:
    """One line about the running daemon."""
    state = "paused" if daemon.get("paused") else "running"
    uptime = int(daemon.get("uptime_seconds", 0))
    text = f"Daemon:   pid {daemon.get('pid')}, {state}, up {uptime // 3600}h{uptime % 3600 // 60:02d}m{uptime % 60:02d}s"
    if daemon.get("next_pull"):
        text += f", next pull {daemon['next_pull']}"
    return text
