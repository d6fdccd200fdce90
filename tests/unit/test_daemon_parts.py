"""Unit tests of the daemon's parts without subprocesses: coordinator, debouncer, control API, runtime, logs."""

from __future__ import annotations

import asyncio
import heapq
import io
import json
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import structlog

from memsyncd.daemon.control import ControlApi
from memsyncd.daemon.coordinator import FULL, PULL, PUSH, RunCoordinator
from memsyncd.daemon.engine_thread import EngineThread
from memsyncd.daemon.http_server import Request
from memsyncd.daemon.metrics import Metrics
from memsyncd.daemon.runtime import PidLock, sd_notify, watchdog_interval
from memsyncd.daemon.watcher import Debouncer
from memsyncd.engine.report import PushReport, StatusReport, SyncReport
from memsyncd.errors import AlreadyRunningError, DaemonError, RootNotServedError, SyncUnavailableError, UsageError
from memsyncd.logs import configure_logging, register_secret
from memsyncd.models import Conflict, QueueEntry, SyncMode
from memsyncd.wire import Keep


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


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimerLoop:
    """A fake clock with ``call_at``: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, Callable[[], object], FakeHandle]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeHandle:
        handle = FakeHandle()
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, callback, handle))
        return handle

    def advance_to(self, moment: float) -> None:
        while self._timers and self._timers[0][0] <= moment:
            when, _, callback, handle = heapq.heappop(self._timers)
            if not handle.cancelled:
                self.now = max(self.now, when)
                callback()
        self.now = max(self.now, moment)


def fire_times(delay: float, trigger_at: list[float], *, until: float, ceiling: float = 1.0) -> list[float]:
    """When the debouncer's action ran, for triggers at the given (fake) times."""
    loop = FakeTimerLoop()
    fired: list[float] = []
    debouncer = Debouncer(loop, delay, lambda: fired.append(round(loop.time(), 6)), ceiling=ceiling)
    for moment in trigger_at:
        loop.advance_to(moment)
        debouncer.trigger()
    loop.advance_to(until)
    return fired


def test_debouncer_first_trigger_after_quiet_fires_at_once() -> None:
    """Leading edge: no waiting for the debounce when nothing happened for a while."""
    assert fire_times(0.2, [5.0], until=10) == [5.0]
    assert fire_times(0.2, [1.0, 2.0, 3.5], until=10) == [1.0, 2.0, 3.5]  # each after a quiet period


def test_debouncer_burst_coalesces_into_one_follow_up() -> None:
    """A burst: the first trigger fires at once, the rest once, ``delay`` after the burst's last trigger."""
    burst = [round(1.0 + i * 0.01, 6) for i in range(21)]  # 1.00 .. 1.20
    assert fire_times(0.2, burst, until=10) == [1.0, 1.4]


def test_debouncer_ceiling_bounds_a_never_ending_burst() -> None:
    """Writes every 10 ms for 3 s: a fire at once, then at least one per ceiling, never starved."""
    writes = [round(i * 0.01, 6) for i in range(300)]
    fired = fire_times(0.2, writes, until=10, ceiling=1.0)
    assert fired[0] == 0.0
    # every write is followed by a fire within the ceiling: never starved, the tail not left behind
    assert all(any(w <= f <= w + 1.0 + 1e-6 for f in fired) for w in writes), fired
    assert 3 <= len(fired) <= 5, fired  # and the burst still coalesces


def test_debouncer_zero_delay_fires_every_trigger_and_ceiling_is_at_least_the_delay() -> None:
    """debounce_ms = 0 means no debounce; a ceiling below the delay is raised to it."""
    assert fire_times(0.0, [1.0, 1.001, 1.002], until=2) == [1.0, 1.001, 1.002]
    assert Debouncer(FakeTimerLoop(), 5.0, lambda: None, ceiling=1.0).ceiling == 5.0


def test_debouncer_on_a_real_loop_fires_first_trigger_synchronously() -> None:
    """With asyncio's loop: the first trigger calls the action before trigger() returns."""
    calls: list[str] = []

    async def scenario() -> None:
        done = asyncio.Event()
        debouncer = Debouncer(asyncio.get_running_loop(), 0.05, lambda: (calls.append("fire"), done.set()))
        debouncer.trigger()
        assert calls == ["fire"]
        done.clear()
        debouncer.trigger()  # within the delay: deferred
        assert calls == ["fire"]
        await asyncio.wait_for(done.wait(), 5)

    asyncio.run(scenario())
    assert calls == ["fire", "fire"]


def test_engine_thread_runs_work_off_the_callers_loop() -> None:
    """A blocking call on the engine thread leaves the caller's loop free; results and errors come back."""
    engine = EngineThread(name="test-engine")
    engine.start()
    gate = threading.Event()
    order: list[str] = []

    async def blocking() -> int:
        order.append("engine blocked")
        released = gate.wait(5)  # a file lock or fsync stand-in: blocks the engine loop only
        order.append(f"engine released={released}")
        return threading.get_ident()

    async def failing() -> None:
        raise UsageError("bad")

    async def scenario() -> None:
        call = asyncio.create_task(engine.call(blocking()))
        while not order:
            await asyncio.sleep(0.001)
        for _ in range(3):
            await asyncio.sleep(0)
        order.append("caller loop ran")
        gate.set()
        assert await call != threading.get_ident()
        with pytest.raises(UsageError):
            await engine.call(failing())
        assert await engine.run_sync(lambda: 41 + 1) == 42
        closed: list[bool] = []

        async def final() -> None:
            closed.append(True)

        assert await engine.stop(5, final=final)
        assert closed == [True]
        with pytest.raises(DaemonError):
            await engine.call(failing())

    asyncio.run(scenario())
    assert order == ["engine blocked", "caller loop ran", "engine released=True"]


def test_engine_thread_cancel_waits_for_the_engine_side_cleanup() -> None:
    """Cancelling a coordinator run cancels the engine task, and wait_idle returns after its cleanup ran."""
    engine = EngineThread(name="test-engine")
    engine.start()
    cleaned = threading.Event()
    started = threading.Event()

    async def endless() -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # cleanup that itself awaits (e.g. recording an item in flight)
            cleaned.set()
        return "never"

    async def scenario() -> None:
        coordinator: RunCoordinator[str] = RunCoordinator(lambda kinds: engine.call(endless()))
        run = asyncio.create_task(coordinator.request(frozenset({PUSH})))
        await asyncio.to_thread(started.wait, 5)
        assert not await coordinator.wait_idle(0.01)
        coordinator.cancel()
        assert await coordinator.wait_idle(5)
        assert cleaned.is_set()  # the engine side finished before the lane was reported idle
        with pytest.raises(asyncio.CancelledError):
            await run
        await engine.stop(5)

    asyncio.run(scenario())


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

    async def enqueue(self, entry: QueueEntry) -> None:
        self.calls.append(("enqueue", entry.id, entry.action, entry.level))

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    def health(self, root: str | None = None) -> dict[str, Any]:
        return {"ok": True, "paused": "pause" in self.calls}

    async def metrics_text(self, root: str | None = None) -> str:
        return Metrics().render(pending=0, conflicts=0, paused=False, uptime=1)

    # the daemon side of the protocol: one root, served by this same object
    def service_for(self, root: str | None) -> FakeDaemon:
        if root not in (None, "/served"):
            raise RootNotServedError(f"this daemon does not serve {root}")
        return self

    async def register(self, root: str, *, auto: bool = True) -> FakeDaemon:
        self.calls.append(("register", root))
        return self

    def root_problem(self, root: str | None) -> dict[str, Any] | None:
        return None

    async def remove_root(self, root: Path) -> bool:
        self.calls.append(("remove", str(root)))
        return True

    async def roots_summary(self) -> list[dict[str, Any]]:
        return [{"root": "/served"}]


def call(api: ControlApi, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    bare, _, query = path.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
    request = Request(method, path, bare, params, {}, raw, os.getuid())
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


def test_control_api_names_the_root() -> None:
    """?root= picks the service; an unserved root is a 404 (the client works in-process); a queue write
    for an unserved root registers it first; /v1/roots lists, adds and forgets roots."""
    daemon = FakeDaemon()
    api = ControlApi(daemon)
    assert call(api, "GET", "/v1/status?root=/served")[0] == 200
    code, payload = call(api, "GET", "/v1/status?root=/elsewhere")
    assert code == 404 and payload["error"]["type"] == "RootNotServedError"
    assert call(api, "POST", "/v1/queue?root=/elsewhere", {"id": "m1"})[0] == 202
    assert ("register", "/elsewhere") in daemon.calls and ("enqueue", "m1", "push", None) in daemon.calls
    assert call(api, "GET", "/v1/roots")[1] == {"roots": [{"root": "/served"}]}
    assert call(api, "POST", "/v1/roots", {"path": "/p"})[0] == 201
    assert call(api, "POST", "/v1/roots", {"path": "relative"})[0] == 400
    assert call(api, "DELETE", "/v1/roots?root=/p")[1] == {"root": "/p", "removed": True}
    assert call(api, "DELETE", "/v1/roots")[0] == 400
    assert call(api, "PUT", "/v1/roots")[0] == 405


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


@pytest.mark.parametrize("path", ["/v1/sync", "/v1/queue", "/v1/conflicts/1/resolve"])
@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000, b"\xff\xfe{", b"{\"id\": \"x\"} trailing"])
def test_control_api_undecodable_json_is_400(path: str, body: bytes) -> None:
    """Deep nesting (RecursionError inside json.loads) and other decode failures: 400, never 500."""
    code, payload = call(ControlApi(FakeDaemon()), "POST", path, body)
    assert code == 400 and payload["error"]["type"] == "UsageError", payload
    assert "Invalid JSON body" in payload["error"]["message"]


def test_control_api_unexpected_exception_is_500_json_and_logged_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A bug in a route: a short JSON 500 (no traceback, no secret); a structured error event in the log."""
    configure_logging("info", json_lines=True)
    register_secret("m0-route-secret-123")

    class Broken(FakeDaemon):
        async def status(self) -> StatusReport:
            raise RuntimeError("exploded near m0-route-secret-123")

    code, payload = call(ControlApi(Broken()), "GET", "/v1/status")
    assert code == 500 and payload["error"]["type"] == "DaemonError"
    text = json.dumps(payload)
    assert "RuntimeError" in text and "exploded" not in text and "Traceback" not in text
    assert "m0-route-secret-123" not in text
    err = capsys.readouterr().err
    (event,) = [json.loads(line) for line in err.splitlines() if '"control.request_failed"' in line]
    assert event["level"] == "error" and event["path"] == "/v1/status" and event["error_type"] == "RuntimeError"
    assert "Traceback" in event["exception"] and "m0-route-secret-123" not in err


def test_control_api_queue_busy_is_503() -> None:
    """When the daemon cannot take the queue lock in time the client is told to write the queue itself."""
    from memsyncd.errors import QueueBusyError

    class Busy(FakeDaemon):
        async def enqueue(self, entry: QueueEntry) -> None:
            raise QueueBusyError("another process holds the sync queue lock")

    code, payload = call(ControlApi(Busy()), "POST", "/v1/queue", {"id": "m1"})
    assert code == 503 and payload["error"]["type"] == "QueueBusyError"


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
    from memsyncd.engine.report import PullReport

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


def test_watch_filter_wakes_the_loop_only_for_entries_no_run_has_seen(tmp_path: Path) -> None:
    """The daemon's own queue writes (entries in flight, entries that failed) never trigger a push."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from memsyncd.config import Paths, Settings
    from memsyncd.daemon.root_service import RootService
    from memsyncd.engine.syncer import Syncer
    from memsyncd.models import format_ts, utc_now
    from memsyncd.store.queue import QueueStore

    class RecordingLoop:
        def __init__(self) -> None:
            self.calls: list[Callable[[], object]] = []

        def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
            self.calls.append(callback)

    paths = Paths(tmp_path)
    syncer = Syncer(Settings(), paths, None)
    service = RootService(paths, syncer, AsyncIOScheduler())
    loop = RecordingLoop()
    service._loop = loop  # type: ignore[assignment]
    service._debouncer = Debouncer(FakeTimerLoop(), 0.2, lambda: None)
    store = QueueStore(paths.queue)
    first = QueueEntry("m1", "push", format_ts(utc_now()))
    store.enqueue(first)
    service._queue_changed()
    assert len(loop.calls) == 1  # new work
    service._in_flight_keys = frozenset({first.key})
    service._queue_changed()
    assert len(loop.calls) == 1  # a run is processing it: its own write of the queue wakes nobody
    service._in_flight_keys, service._failed_keys = frozenset(), frozenset({first.key})
    service._queue_changed()
    assert len(loop.calls) == 1  # failed: the retry timer owns it
    store.enqueue(QueueEntry("m2", "push", format_ts(utc_now())))
    service._queue_changed()
    assert len(loop.calls) == 2  # a new entry next to a failed one
    assert asyncio.run(service.engine.stop(1))  # never started: closes its loop
    syncer.state.close()


def test_local_probe_is_skipped_right_after_a_successful_request() -> None:
    """A run's probe costs a request only when OpenMemory has not answered in the last few seconds."""
    import httpx

    from memsyncd.remote.local import PROBE_FRESH_SECONDS, LocalClient

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/api/v1/stats/":
            return httpx.Response(200, json={"total_memories": 0, "total_apps": 0})
        return httpx.Response(200, json={"id": "m1", "text": "t", "state": "active", "metadata_": {}})

    async def scenario() -> None:
        client = LocalClient("http://127.0.0.1:1", "u", transport=httpx.MockTransport(handler))
        await client.get("m1")
        await client.probe()  # the user was never checked: probes even right after a request
        await client.probe()  # answered just now and the user is known: skipped
        await client.get("m1")
        assert client._last_ok is not None
        client._last_ok -= PROBE_FRESH_SECONDS + 0.1  # as if OpenMemory had been quiet for a while
        await client.probe()  # probes again
        await client.aclose()

    asyncio.run(scenario())
    assert seen == ["/api/v1/memories/m1", "/api/v1/stats/", "/api/v1/memories/m1", "/api/v1/stats/"]
