"""Unit tests of the daemon's parts without subprocesses: coordinator, debouncer, control API, runtime, logs."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import structlog

from memsyncd.control import ControlApi
from memsyncd.coordinator import FULL, PULL, PUSH, RunCoordinator
from memsyncd.engine.decide import Keep
from memsyncd.errors import AlreadyRunningError, SyncUnavailableError, UsageError
from memsyncd.http_server import Request
from memsyncd.logs import configure_logging, register_secret
from memsyncd.metrics import Metrics
from memsyncd.models import Conflict, QueueEntry, SyncMode
from memsyncd.report import PushReport, StatusReport, SyncReport
from memsyncd.runtime import PidLock, sd_notify, watchdog_interval
from memsyncd.watcher import Debouncer


def test_coordinator_runs_one_at_a_time_and_coalesces_into_one_follow_up() -> None:
    """Ten triggers during a run lead to exactly one more run, doing the union of what was asked."""
    started: list[frozenset[str]] = []

    async def scenario() -> list[str]:
        gate = asyncio.Event()

        async def runner(kinds: frozenset[str]) -> str:
            started.append(kinds)
            if len(started) == 1:
                await gate.wait()
            return "+".join(sorted(kinds))

        coordinator: RunCoordinator[str] = RunCoordinator(runner)
        first = asyncio.create_task(coordinator.request(frozenset({PUSH})))
        await asyncio.sleep(0)
        followers = [asyncio.create_task(coordinator.request(frozenset({k}))) for k in [PUSH] * 9 + [PULL]]
        await asyncio.sleep(0)
        assert coordinator.busy
        gate.set()
        results = await asyncio.gather(first, *followers)
        assert await coordinator.wait_idle(1)
        return results

    results = asyncio.run(scenario())
    assert started == [frozenset({PUSH}), FULL]
    assert results[0] == "push" and set(results[1:]) == {"pull+push"}


def test_coordinator_exclusive_waits_for_runs() -> None:
    """A conflict resolution runs alone, after the current run."""
    order: list[str] = []

    async def scenario() -> None:
        async def runner(kinds: frozenset[str]) -> None:
            order.append("run-start")
            await asyncio.sleep(0.01)
            order.append("run-end")

        async def resolution() -> str:
            order.append("resolve")
            return "ok"

        coordinator: RunCoordinator[None] = RunCoordinator(runner)
        run = asyncio.create_task(coordinator.request(FULL))
        await asyncio.sleep(0)
        assert await coordinator.exclusive(resolution) == "ok"
        await run

    asyncio.run(scenario())
    assert order == ["run-start", "run-end", "resolve"]


def test_debouncer_fires_once_after_a_burst() -> None:
    """Many triggers within the delay produce one call."""
    calls: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        debouncer = Debouncer(loop, 0.2, lambda: (calls.append(loop.time()), done.set()))
        first = loop.time()
        for _ in range(20):
            debouncer.trigger()
            await asyncio.sleep(0)  # let the loop run between triggers, as watchdog events arrive
        last = loop.time()
        await asyncio.wait_for(done.wait(), 5)
        assert calls[0] - last >= 0.2 - 0.01 and last - first < 0.2  # fired once, delay after the last

    asyncio.run(scenario())
    assert len(calls) == 1


class FakeDaemon:
    """Records what the control API asked for."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def status(self) -> StatusReport:
        return StatusReport("http://localhost:8765", True, 2, 0, 0, None)

    async def sync(self, mode: SyncMode, *, dry_run: bool = False) -> SyncReport:
        self.calls.append(("sync", mode, dry_run))
        return SyncReport(mode=mode.value, queue_path="/q", push=PushReport(attempted=1, created=1))

    async def conflicts(self) -> list[Conflict]:
        return [Conflict(1, "L", "C", "b", "l", "c", "edited on both sides", "t")]

    async def conflict(self, conflict_id: int) -> Conflict:
        if conflict_id != 1:
            raise UsageError(f"no open conflict with id {conflict_id}")
        return (await self.conflicts())[0]

    async def resolve(self, conflict_id: int, keep: Keep, text: str | None) -> dict[str, Any]:
        self.calls.append(("resolve", conflict_id, keep, text))
        return {"resolved": conflict_id}

    def enqueue(self, entry: QueueEntry) -> None:
        self.calls.append(("enqueue", entry.id, entry.action, entry.level))

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    def health(self) -> dict[str, Any]:
        return {"ok": True, "paused": "pause" in self.calls}

    def metrics_text(self) -> str:
        return Metrics().render(pending=0, conflicts=0, paused=False, uptime=1)


def call(api: ControlApi, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = Request(method, path, path, {}, {}, raw, os.getuid())
    response = asyncio.run(api(request))
    ctype = dict(response.headers).get("content-type", "")
    return response.status, json.loads(response.body) if "json" in ctype else response.body.decode()


def test_control_api_routes() -> None:
    """Every route reaches the daemon with validated arguments."""
    daemon = FakeDaemon()
    api = ControlApi(daemon)
    assert call(api, "GET", "/v1/health")[0] == 200
    assert call(api, "POST", "/v1/sync", {"mode": "pull", "dry_run": True})[1]["mode"] == "pull"
    assert call(api, "POST", "/v1/sync")[1]["mode"] == "full"
    assert call(api, "POST", "/v1/queue", {"id": "m1", "action": "delete", "level": 2})[0] == 202
    assert call(api, "POST", "/v1/conflicts/1/resolve", {"keep": "both"})[1] == {"resolved": 1}
    assert call(api, "POST", "/v1/conflicts/1/resolve", {"text": "merged"})[0] == 200
    assert call(api, "GET", "/v1/conflicts/1")[1]["cloud"] == "c"
    assert call(api, "POST", "/v1/pause")[1]["paused"] is True
    assert "memsyncd_uptime_seconds 1" in call(api, "GET", "/v1/metrics")[1]
    assert daemon.calls[:4] == [("sync", SyncMode.PULL, True), ("sync", SyncMode.FULL, False),
                                ("enqueue", "m1", "delete", 2), ("resolve", 1, Keep.BOTH, None)]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/sync", b"{", 400),
        ("POST", "/v1/sync", [1], 400),
        ("POST", "/v1/sync", {"dry_run": "yes"}, 400),
        ("POST", "/v1/queue", {"id": ""}, 400),
        ("POST", "/v1/queue", {"id": "x", "action": "move"}, 400),
        ("POST", "/v1/queue", {"id": "x", "content_hash": 5}, 400),
        ("POST", "/v1/conflicts/1/resolve", {}, 400),
        ("POST", "/v1/conflicts/1/resolve", {"keep": "local", "text": "t"}, 400),
        ("POST", "/v1/conflicts/1/resolve", {"keep": "text"}, 400),
        ("POST", "/v1/conflicts/1/resolve", {"text": 3}, 400),
        ("GET", "/v1/conflicts/7", None, 404),
        ("PUT", "/v1/health", None, 405),
        ("GET", "/v2/health", None, 404),
    ],
)
def test_control_api_rejects_bad_requests(method: str, path: str, body: Any, status: int) -> None:
    """Bad input: a 4xx JSON error naming the problem, never an exception."""
    code, payload = call(ControlApi(FakeDaemon()), method, path, body)
    assert code == status and payload["error"]["message"]


def test_control_api_maps_unavailable_to_503() -> None:
    """Project errors keep their type across the socket."""
    class Unconfigured(FakeDaemon):
        async def status(self) -> StatusReport:
            raise SyncUnavailableError("Cloud sync is not configured.")

    code, payload = call(ControlApi(Unconfigured()), "GET", "/v1/status")
    assert code == 503 and payload["error"]["type"] == "SyncUnavailableError"


def test_sd_notify_sends_datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """READY=1 reaches NOTIFY_SOCKET; without it nothing is sent."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1\nSTATUS=ok")
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"


@pytest.mark.parametrize(("usec", "pid", "expected"), [("", None, None), ("0", None, None),
                                                        ("2000000", None, 1.0), ("2000000", "1", None)])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str, pid: str | None,
                           expected: float | None) -> None:
    """Half of WATCHDOG_USEC, only for our own pid."""
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert watchdog_interval() == expected


def test_pid_lock_names_the_holder(tmp_path: Path) -> None:
    """A second acquire fails with the holder's pid; release frees it."""
    first, second = PidLock(tmp_path / "d.pid"), PidLock(tmp_path / "d.pid")
    first.acquire()
    with pytest.raises(AlreadyRunningError, match=f"pid {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_logs_never_contain_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    """Registered secrets and Authorization values are redacted from every field."""
    configure_logging("debug", json_lines=True)
    register_secret("m0-super-secret-value")
    log = structlog.get_logger("t")
    log.info("request", authorization="Token m0-super-secret-value", url="http://x/?k=m0-super-secret-value",
             nested={"Authorization": "x", "list": ["m0-super-secret-value"]})
    try:
        raise RuntimeError("failed with m0-super-secret-value")
    except RuntimeError:
        log.exception("boom")
    err = capsys.readouterr().err
    assert "m0-super-secret-value" not in err and err.count("<redacted>") >= 4
    line = json.loads(err.splitlines()[0])
    assert line["authorization"] == "<redacted>" and line["nested"]["Authorization"] == "<redacted>"


def test_metrics_render_counts_runs() -> None:
    """Prometheus text with run counters by mode and result."""
    metrics = Metrics()
    metrics.record(SyncReport(mode="push", queue_path="/q", push=PushReport(attempted=2, created=2)), 1.0)
    metrics.record(SyncReport(mode="push", queue_path="/q", push=PushReport(attempted=2, created=1, errors=1)), 2.0)
    text = metrics.render(pending=1, conflicts=0, paused=True, uptime=3)
    assert 'memsyncd_sync_runs_total{mode="push",result="ok"} 1' in text
    assert 'memsyncd_sync_runs_total{mode="push",result="partial"} 1' in text
    assert "memsyncd_pushed_total 3" in text and "memsyncd_paused 1" in text
    assert "memsyncd_last_success_timestamp_seconds 1" in text


def test_report_renders_seed_blocks_exactly() -> None:
    """PUSH/PULL lines and SYNC PARTIAL as the seed spells them."""
    from memsyncd.cli.render import render_sync
    from memsyncd.report import PullReport

    ok = SyncReport(mode="full", queue_path="/r/q.json", push=PushReport(attempted=3, created=3, skipped_private=2),
                    pull=PullReport(new=1, updated=1))
    assert render_sync(ok).splitlines()[:4] == [
        "PUSH: 3 memories synced to cloud", "Errors: 0 (see /r/q.json)",
        "PULL: 2 memories synced from cloud", "New: 1 | Updated: 1 | Conflicts: 0"]
    assert "Skipped: 2 local-only (level 0)" in render_sync(ok)
    partial = SyncReport(mode="full", queue_path="/r/q.json", push=PushReport(attempted=7, created=5, errors=2),
                         pull=PullReport(new=3))
    assert render_sync(partial).splitlines()[:6] == [
        "SYNC PARTIAL", "Pushed: 5 of 7 (2 errors)", "Pulled: 3 of 3", "", "Errors logged to /r/q.json",
        "Run /memory/sync again to retry."]


def test_status_block_layout() -> None:
    """The seed's SYNC STATUS block with real values."""
    from datetime import datetime

    from memsyncd.cli.render import render_status

    text = render_status(StatusReport("http://localhost:8765", True, 3, 1, 2, "2026-01-18T10:00:00Z"),
                         datetime(2026, 1, 18, 12, 0, tzinfo=UTC))
    assert text.splitlines() == [
        "SYNC STATUS", "═══════════════════════════════════════════", "",
        "Local:    OpenMemory (localhost:8765)", "Cloud:    mem0 (configured)", "",
        "Pending:  3 memories to push", "          1 memories to pull", "Conflicts: 2 unresolved", "",
        "Last sync: 2026-01-18T10:00:00Z (2 hours ago)", "═══════════════════════════════════════════"]


def test_console_logging_on_a_tty_like_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Console renderer when asked; still redacted."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("info", json_lines=False)
    register_secret("m0-another-secret")
    structlog.get_logger("t").info("hello", key="m0-another-secret")
    assert "hello" in stream.getvalue() and "m0-another-secret" not in stream.getvalue()
