"""Daemon counters and gauges, rendered in the Prometheus text exposition format."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from memsyncd.engine.report import SyncReport


@dataclass
class Metrics:
    """What the daemon counts since it started."""

    runs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (mode, result) -> n
    pushed: int = 0
    pulled: int = 0
    push_errors: int = 0
    pull_errors: int = 0
    skipped_private: int = 0
    triggers: Counter[str] = field(default_factory=Counter)  # watch | schedule | retry | api
    last_run_duration_ms: int = 0
    last_success_unix: float = 0.0

    def record(self, report: SyncReport, finished_unix: float) -> None:
        """Add one finished run."""
        result = "ok" if report.exit_code == 0 else "partial" if report.exit_code == 1 else "error"
        self.runs[(report.mode, result)] += 1
        if report.push:
            self.pushed += report.push.synced
            self.push_errors += report.push.errors
            self.skipped_private += report.push.skipped_private
        if report.pull:
            self.pulled += report.pull.synced
            self.pull_errors += report.pull.errors
        self.last_run_duration_ms = report.duration_ms
        if result == "ok":
            self.last_success_unix = finished_unix

    def render(self, *, pending: int, conflicts: int, paused: bool, uptime: float, to_pull: int | None = None) -> str:
        """Prometheus text format."""
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP memsyncd_{name} {help_text}")
            out.append(f"# TYPE memsyncd_{name} {kind}")
            for labels, value in samples:
                out.append(f"memsyncd_{name}{labels} {value:g}")

        metric("sync_runs_total", "counter", "Sync runs by mode and result.",
               [(f'{{mode="{m}",result="{r}"}}', n) for (m, r), n in sorted(self.runs.items())] or [("", 0)])
        metric("pushed_total", "counter", "Queue items synced to the cloud.", [("", self.pushed)])
        metric("pulled_total", "counter", "Cloud changes written locally.", [("", self.pulled)])
        metric("push_errors_total", "counter", "Queue items that failed a run.", [("", self.push_errors)])
        metric("pull_errors_total", "counter", "Cloud changes that failed to apply.", [("", self.pull_errors)])
        metric("skipped_private_total", "counter", "Level-0 items kept local.", [("", self.skipped_private)])
        metric("triggers_total", "counter", "What started runs.",
               [(f'{{source="{s}"}}', n) for s, n in sorted(self.triggers.items())] or [("", 0)])
        metric("queue_pending", "gauge", "Coalesced items waiting in the sync queue.", [("", pending)])
        metric("conflicts_open", "gauge", "Unresolved conflicts.", [("", conflicts)])
        if to_pull is not None:
            metric("memories_to_pull", "gauge", "Cloud changes not yet applied locally, as of the last pull.",
                   [("", to_pull)])
        metric("paused", "gauge", "1 while background sync is paused.", [("", int(paused))])
        metric("last_run_duration_ms", "gauge", "Duration of the last run.", [("", self.last_run_duration_ms)])
        metric("last_success_timestamp_seconds", "gauge", "Unix time of the last fully successful run.",
               [("", self.last_success_unix)])
        metric("uptime_seconds", "gauge", "Seconds since the daemon started.", [("", round(uptime, 3))])
        return "\n".join(out) + "\n"
