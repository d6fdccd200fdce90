"""Sync and status results: the data, their JSON (the control socket's wire format) and exit codes.

Stdlib only. The text blocks are rendered by :mod:`memsyncd.cli.render`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from memsyncd.errors import EXIT_OK, EXIT_PARTIAL, MemsyncError
from memsyncd.models import QueueKey

_NOT_ON_THE_WIRE = {"wire": False}  # field metadata: kept in the process, never in a report's JSON


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
    dropped: int = 0  # deletes of memories that were never synced: nothing to do
    waiting: int = 0  # accepted by mem0, still processing (queued add): finishes on the next sync
    duplicates: int = 0  # same text as another local memory: mem0 keeps one cloud copy for both
    error_messages: list[str] = field(default_factory=list)
    not_found: int = 0  # queued pushes of ids OpenMemory does not have: dropped from the queue, reported
    invalid_ids: int = 0  # queued ids no memory can have: dropped from the queue, reported
    deletes_kept: int = 0  # queued deletes of memories still there locally: the cloud copy was kept
    # the queue entries this push read (took on), and those of them still queued after it (failed,
    # waiting, not reached): the daemon's "failed" set, so it never reads the queue again to find them
    claimed_keys: frozenset[QueueKey] = field(default_factory=frozenset, compare=False, repr=False,
                                              metadata=_NOT_ON_THE_WIRE)
    pending_keys: frozenset[QueueKey] = field(default_factory=frozenset, compare=False, repr=False,
                                              metadata=_NOT_ON_THE_WIRE)

    @property
    def synced(self) -> int:
        """Items that reached the cloud, or needed nothing there."""
        return self.created + self.updated + self.deleted + self.unchanged + self.duplicates

    def to_json(self) -> dict[str, Any]:
        """The counts (the queue keys stay in the process)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata.get("wire", True)}


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
    skipped_private: int = 0  # cloud memories matching a local-only memory: neither adopted nor copied
    already_here: int = 0  # copies (another mem0 scope's) of memories synced here with the same text: not copied

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
class ScanReport:
    """What one local scan found (SPEC 4, Local changes): changes made outside the sync queue."""

    kind: str  # "incremental" or "full"
    listed: int = 0
    new: int = 0
    edited: int = 0
    deleted: int = 0
    deletes_held: int = 0  # deletions the max-delete guard refused (nothing was deleted in the cloud)
    held_reason: str = ""  # what happened and the command that confirms them
    unconfirmed: int = 0  # missing from the listing but not confirmed deleted: left alone
    failed: str = ""  # the listing failed: nothing it found was used

    @property
    def found(self) -> int:
        """Changes handed to the push."""
        return self.new + self.edited + self.deleted


@dataclass
class SyncReport:
    """Everything a sync run did, rendered by :func:`memsyncd.cli.render.render_sync`."""

    mode: str
    queue_path: str
    dry_run: bool = False
    push: PushReport | None = None
    pull: PullReport | None = None
    reconcile: ReconcileReport | None = None
    scan: ScanReport | None = None
    conflicts_open: int = 0
    fatal: MemsyncError | None = None
    started_at: str = ""
    duration_ms: int = 0

    @property
    def exit_code(self) -> int:
        """SPEC 5 exit code."""
        if self.fatal is not None:
            return self.fatal.exit_code
        if (self.push and self.push.errors) or (self.pull and (self.pull.errors or self.pull.failed)) \
                or (self.scan and self.scan.failed):
            return EXIT_PARTIAL
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (``--json``)."""
        data: dict[str, Any] = {
            "mode": self.mode, "dry_run": self.dry_run, "exit_code": self.exit_code,
            "queue_path": self.queue_path, "conflicts_open": self.conflicts_open,
            "started_at": self.started_at, "duration_ms": self.duration_ms,
            "push": self.push.to_json() if self.push else None,
            "pull": asdict(self.pull) if self.pull else None,
            "reconcile": asdict(self.reconcile) if self.reconcile else None,
            "scan": asdict(self.scan) if self.scan else None,
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
            report.push = PushReport(**_known(PushReport, data["push"]))
        if data.get("pull"):
            report.pull = PullReport(**_known(PullReport, data["pull"]))
        if data.get("reconcile"):
            report.reconcile = ReconcileReport(**_known(ReconcileReport, data["reconcile"]))
        if data.get("scan"):
            report.scan = ScanReport(**_known(ScanReport, data["scan"]))
        if data.get("error"):
            report.fatal = error_from_dict(data["error"])
        return report


def _known(cls: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that ``cls`` has on the wire (a daemon of another version may send more)."""
    names = {f.name for f in fields(cls) if f.metadata.get("wire", True)}
    return {k: v for k, v in data.items() if k in names}


def _plain(value: Any) -> Any:
    """A field's value as ``asdict`` gives it (lists copied)."""
    return list(value) if isinstance(value, list) else value


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
    to_pull_as_of: str | None = None  # RFC 3339 "Z" time the pull figure was computed; None = live, just now
    pull_interval_seconds: int | None = None
    # what needs the user: the last run's failure, a rejected config, a refused deletion batch
    # ({"type", "title", "message", "since"}, each message saying what to do); [] when all is well
    attention: list[dict[str, Any]] = field(default_factory=list)
    pending_scan: int = 0  # local changes found by scans, not yet pushed (counted in pending_push too)
    last_incremental_scan: str | None = None  # RFC 3339 "Z"; None = never
    last_full_scan: str | None = None
    deletes_held: int = 0  # local deletions the max-delete guard holds back
    deletes_held_reason: str = ""  # ... and the command that confirms them

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusReport:
        """Rebuild a status sent over the control socket; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
