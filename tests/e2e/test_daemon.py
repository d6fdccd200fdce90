"""Integration: ``memsyncd run`` as a subprocess against the emulators (triggers, control API, signals, faults)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import (
    API_KEY,
    DaemonProc,
    Emulators,
    ctl,
    make_root,
    queue_path,
    read_queue,
    running_daemon,
    start_daemon,
    wait_for,
)

from memsyncd.models import QueueEntry, format_ts, parse_ts, utc_now
from memsyncd.store.queue import QueueStore, atomic_write, dump_queue


def cloud_count(emu: Emulators, prefix: str) -> int:
    return sum(1 for text in emu.cloud_texts() if text.startswith(prefix))


def write_queue_directly(root: Path, ids: list[str]) -> None:
    """What a non-locking writer does: build the whole file and rename it into place."""
    store = QueueStore(queue_path(root))
    doc = store.read()
    doc.pending += [QueueEntry(i, "push", format_ts(utc_now())) for i in ids]
    atomic_write(queue_path(root), dump_queue(doc))


def test_queue_writes_reach_the_cloud_without_a_sync_command(root: Path, emu: Emulators) -> None:
    """memsyncctl enqueue (via the socket) and a plain atomic rename by another process both get pushed."""
    with running_daemon(root) as daemon:
        first = emu.local_add("watch: via memsyncctl", level=1)
        assert daemon.ctl("enqueue", first).returncode == 0
        wait_for(lambda: "watch: via memsyncctl" in emu.cloud_texts())
        second = emu.local_add("watch: via atomic rename", level=1)
        write_queue_directly(root, [second])
        wait_for(lambda: "watch: via atomic rename" in emu.cloud_texts())
        wait_for(lambda: read_queue(root)["pending"] == [])
        assert cloud_count(emu, "watch:") == 2
    events = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    summaries = [e for e in events if e["event"] == "sync.finished" and e["pushed"]]
    assert summaries and all("duration_ms" in e and e["mode"] == "push" for e in summaries)
    assert API_KEY not in daemon.log() and "Token " not in daemon.log()


def test_periodic_pull_brings_cloud_memories_down(root: Path, emu: Emulators) -> None:
    """With a short pull interval, a cloud-side memory appears locally by itself."""
    make_root(root, emu, pull_interval_seconds=0.5)
    with running_daemon(root):
        emu.cloud_add("periodic: from another device")
        wait_for(lambda: "periodic: from another device" in emu.local_texts())
    assert emu.local_texts().count("periodic: from another device") == 1


def test_status_over_the_socket_matches_one_shot(root: Path, emu: Emulators) -> None:
    """Same status block either way; the daemon adds its own line; curl-style HTTP works."""
    with running_daemon(root) as daemon:
        daemon.api("POST", "/v1/pause")
        wait_for(lambda: not daemon.health()["busy"])  # type: ignore[index]
        ctl(root, "enqueue", emu.local_add("status: pending", level=1))  # paused: stays pending
        via_daemon = json.loads(daemon.ctl("status", "--json").stdout)
        one_shot = json.loads(ctl(root, "--no-daemon", "status", "--json").stdout)
        text = daemon.ctl("status").stdout
        raw = daemon.api("GET", "/v1/status")
    assert raw.status_code == 200 and raw.json()["daemon"]["pid"] == daemon.proc.pid
    assert via_daemon.pop("daemon")["paused"] is True and one_shot.pop("daemon") is None
    # the daemon's "to pull" figure is from its start-up count, with its age and the pull interval
    assert via_daemon.pop("pull_interval_seconds") == 300
    assert parse_ts(via_daemon.pop("to_pull_as_of")) <= utc_now()
    for key in ("pull_interval_seconds", "to_pull_as_of"):
        one_shot.pop(key, None)
    assert via_daemon == one_shot and one_shot["pending_push"] == 1
    assert text.startswith("SYNC STATUS\n") and "Daemon:   pid" in text and "paused" in text


def test_bad_requests_get_4xx_and_the_daemon_keeps_serving(root: Path) -> None:
    """Garbage bytes, bad JSON, wrong types, unknown routes: 4xx JSON, never a crash."""
    with running_daemon(root) as daemon:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(10)
            raw.connect(str(daemon.socket))
            raw.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
            assert raw.recv(4096).startswith(b"HTTP/1.1 400")
        cases = [
            ("POST", "/v1/sync", {"content": b"{nope"}, 400),
            ("POST", "/v1/sync", {"json": {"mode": "sideways"}}, 400),
            ("POST", "/v1/queue", {"json": {"id": 5}}, 400),
            ("POST", "/v1/queue", {"json": {"id": "x", "level": -1}}, 400),
            ("POST", "/v1/conflicts/99/resolve", {"json": {"keep": "mine"}}, 400),
            ("GET", "/v1/conflicts/99", {}, 404),
            ("GET", "/v1/nothing-here", {}, 404),
            ("DELETE", "/v1/status", {}, 405),
        ]
        for method, path, kwargs, status in cases:
            response = daemon.api(method, path, **kwargs)
            assert response.status_code == status, (method, path, response.text)
            assert set(response.json()["error"]) >= {"type", "title", "message"}
        assert daemon.health() is not None and daemon.proc.poll() is None


def test_peer_uid_check_refuses_other_users(root: Path) -> None:
    """Only the daemon's own uid may talk to it (SO_PEERCRED), even if the socket were world-writable."""
    from memsyncd.daemon.process import Daemon

    assert Daemon._peer_allowed(os.getuid()) and not Daemon._peer_allowed(os.getuid() + 1)
    if os.getuid() != 0:
        pytest.skip("needs root to act as another uid; the unit check above covers the rule")
    public = Path(tempfile.mkdtemp(prefix="memsyncd-peer-"))  # reachable by uid 65534, unlike tmp_path
    os.chmod(public, 0o755)
    with running_daemon(root, socket_path=public / "d.sock") as daemon:
        assert (daemon.socket.stat().st_mode & 0o777) == 0o600
        os.chmod(daemon.socket, 0o666)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: become nobody and ask for the status
            try:
                os.close(read_fd)
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.settimeout(10)
                    conn.connect(str(daemon.socket))
                    conn.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
                    os.write(write_fd, conn.recv(4096)[:12])
            except BaseException as exc:  # noqa: BLE001 - report to the parent
                os.write(write_fd, repr(exc).encode()[:60])
            finally:
                os._exit(0)
        os.close(write_fd)
        answer = os.read(read_fd, 64)
        os.waitpid(pid, 0)
        assert answer == b"HTTP/1.1 403"
        assert daemon.health() is not None
    shutil.rmtree(public, ignore_errors=True)


def test_systemd_notify_ready_watchdog_stopping(root: Path, tmp_path: Path) -> None:
    """A fake NOTIFY_SOCKET receives READY=1, WATCHDOG=1 pings and STOPPING=1."""
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(10)
        daemon = start_daemon(root, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="200000")
        messages: list[str] = []

        def received(prefix: str) -> bool:
            while not any(m.startswith(prefix) for m in messages):
                messages.extend(notify.recv(4096).decode().split("\n"))
            return True

        try:
            assert received("READY=1")
            assert received("WATCHDOG=1")
        finally:
            daemon.stop()
        assert received("STOPPING=1")
        assert daemon.proc.returncode == 0
        assert any(m.startswith("STATUS=") for m in messages)


def test_sigterm_during_a_500_entry_push(root: Path, emu: Emulators) -> None:
    """SIGTERM mid-push: exit 0 within 10 s, queue and state consistent, the rest pushed on next start."""
    ids = [emu.local_add(f"bulk {i:03d}", level=1) for i in range(500)]
    emu.fault(latency_ms=15)
    daemon = start_daemon(root)
    try:
        write_queue_directly(root, ids)
        wait_for(lambda: cloud_count(emu, "bulk ") >= 40, timeout=30)
        t0 = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(15)
        elapsed = time.monotonic() - t0
    finally:
        daemon.stop(signal.SIGKILL)
    assert code == 0 and elapsed < 10, (code, elapsed, daemon.log()[-2000:])
    pushed = cloud_count(emu, "bulk ")
    pending = {e["id"] for e in read_queue(root)["pending"]}
    assert 0 < pushed < 500 and 0 < len(pending) <= 500 - pushed + 8  # only what was in flight may be both
    assert read_queue(root)["sync_errors"] == []  # a shutdown is not a failure of the entries
    emu.fault(latency_ms=0)
    with running_daemon(root):
        wait_for(lambda: read_queue(root)["pending"] == [], timeout=60)
    texts = [t for t in emu.cloud_texts() if t.startswith("bulk ")]
    assert len(texts) == 500 and len(set(texts)) == 500


def test_kill_9_mid_push_neither_loses_nor_duplicates(root: Path, emu: Emulators) -> None:
    """kill -9 at an arbitrary instant: after a restart every memory is in the cloud exactly once."""
    ids = [emu.local_add(f"crash {i:03d}", level=1) for i in range(120)]
    emu.fault(latency_ms=10)
    daemon = start_daemon(root)
    write_queue_directly(root, ids)
    wait_for(lambda: cloud_count(emu, "crash ") >= 30, timeout=30)
    daemon.stop(signal.SIGKILL)
    emu.fault(latency_ms=0)
    with running_daemon(root):
        wait_for(lambda: read_queue(root)["pending"] == [], timeout=60)
    texts = [t for t in emu.cloud_texts() if t.startswith("crash ")]
    assert len(texts) == 120 and len(set(texts)) == 120


def test_idle_daemon_makes_no_requests_and_uses_little_cpu(root: Path, emu: Emulators) -> None:
    """5 s idle: zero requests to either server, and CPU ticks far below one core-second."""
    with running_daemon(root) as daemon:
        def start_up_run_finished() -> bool:
            health = daemon.health()
            return bool(health and health["runs_started"] >= 1 and not health["busy"])

        wait_for(start_up_run_finished)  # the start-up push (empty queue) probes OpenMemory once
        emu.clear_requests()
        emu.clear_requests("openmemory")

        def ticks() -> int:
            fields = Path(f"/proc/{daemon.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime

        before = ticks()
        time.sleep(5)
        used = ticks() - before
        assert emu.requests() == [] and emu.requests("openmemory") == []
        assert used < 25, f"{used} clock ticks of CPU while idle"


def test_second_instance_is_refused_naming_the_holder(root: Path) -> None:
    """One daemon per root: the second exits 2 and names the first's pid."""
    with running_daemon(root) as first:
        second = start_daemon(root, wait=False)
        code = second.proc.wait(20)
        assert code == 2 and f"pid {first.proc.pid}" in second.log()


def test_corrupt_queue_and_remote_errors_never_kill_the_daemon(root: Path, emu: Emulators) -> None:
    """A corrupt queue, then a 401 storm: the daemon stays up and catches up once things are fixed."""
    with running_daemon(root) as daemon:
        queue_path(root).parent.mkdir(parents=True, exist_ok=True)
        queue_path(root).write_text("{broken")
        wait_for(lambda: "queue.unreadable" in daemon.log())
        status = daemon.ctl("sync", "--push")
        assert status.returncode == 6 and "sync queue is unreadable" in status.stdout
        assert queue_path(root).read_text() == "{broken"
        emu.fault(fault="401")
        memory = emu.local_add("survivor", level=1)
        queue_path(root).unlink()
        assert daemon.ctl("enqueue", memory).returncode == 0
        result = daemon.ctl("sync", "--push")
        assert result.returncode == 4 and "SYNC ERROR: mem0 API returned 401" in result.stdout
        assert daemon.proc.poll() is None
        emu.fault(fault=None)
        assert daemon.ctl("sync", "--push").returncode == 0
        assert "survivor" in emu.cloud_texts()


def test_pause_resume_and_metrics(root: Path, emu: Emulators) -> None:
    """Paused: queue changes wait; resume pushes them; metrics are Prometheus text."""
    with running_daemon(root) as daemon:
        assert "paused" in daemon.ctl("pause").stdout
        memory = emu.local_add("paused: waits", level=1)
        daemon.ctl("enqueue", memory)
        wait_for(lambda: daemon.health()["watch_events"] >= 1)  # type: ignore[index]
        assert "paused: waits" not in emu.cloud_texts()
        assert "running" in daemon.ctl("resume").stdout
        wait_for(lambda: "paused: waits" in emu.cloud_texts())
        metrics = daemon.ctl("metrics").stdout
        assert "# TYPE memsyncd_sync_runs_total counter" in metrics
        assert "memsyncd_paused 0" in metrics and "memsyncd_pushed_total 1" in metrics


def test_failed_entries_are_retried_by_the_backoff_timer(root: Path, emu: Emulators) -> None:
    """A push that fails every attempt of a run is retried by the daemon's timer, without any trigger."""
    memory = emu.local_add("retry-timer: flaky", level=1)
    emu.fault(fault="500", match="retry-timer", count=3)  # exactly the 3 attempts of the first run
    with running_daemon(root) as daemon:
        daemon.ctl("enqueue", memory)
        wait_for(lambda: read_queue(root)["sync_errors"], timeout=20)
        wait_for(lambda: "retry.scheduled" in daemon.log())  # logged right after the queue write
        wait_for(lambda: "retry-timer: flaky" in emu.cloud_texts(), timeout=20)
        wait_for(lambda: read_queue(root)["sync_errors"] == [] and read_queue(root)["pending"] == [])
    assert cloud_count(emu, "retry-timer") == 1


def test_claude_hook_to_cloud_end_to_end(root: Path, emu: Emulators) -> None:
    """PostToolUse of add_memories → `memsyncctl hook post-tool-use` → the daemon pushes it, no sync command."""
    memory = emu.local_add("hook: remember the staging password rotation", level=2)
    event = {"hook_event_name": "PostToolUse", "tool_name": "mcp__openmemory__add_memories",
             "tool_input": {"text": "remember the staging password rotation"},
             "tool_response": [{"type": "text", "text": json.dumps(
                 {"results": [{"id": memory, "memory": "remember the staging password rotation", "event": "ADD"}]})}]}
    with running_daemon(root) as daemon:
        hook = daemon.ctl("hook", "post-tool-use", stdin=json.dumps(event))
        assert hook.returncode == 0, hook.stderr
        wait_for(lambda: "hook: remember the staging password rotation" in emu.cloud_texts())


def test_reconcile_job_mirrors_cloud_deletions(root: Path, emu: Emulators) -> None:
    """With a short reconcile interval, a memory deleted in the cloud disappears locally by itself."""
    make_root(root, emu, reconcile_interval_seconds=0.5, max_delete_fraction=1.0)
    keep, gone = emu.local_add("reconcile: keep", level=1), emu.local_add("reconcile: gone", level=1)
    for memory in (keep, gone):
        ctl(root, "enqueue", memory)
    assert ctl(root, "sync").returncode == 0
    (cloud,) = [m for m in emu.cloud_memories() if m["memory"] == "reconcile: gone"]
    emu.cloud_delete(cloud["id"])
    with running_daemon(root):
        wait_for(lambda: emu.local_get(gone)["state"] == "deleted")
    assert emu.local_get(keep)["state"] == "active"


def start_up_run_finished(daemon: DaemonProc) -> bool:
    health = daemon.health()
    return bool(health and health["runs_started"] >= 1 and not health["busy"])


@contextlib.contextmanager
def holding_queue_lock(root: Path) -> Iterator[None]:
    """Hold the queue's lock from this (another) process: flock as SPEC 3 says, and a POSIX lock too."""
    lock = queue_path(root).with_name("sync-queue.json.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.lockf(fd, fcntl.LOCK_EX)  # in case a writer uses fcntl record locks instead of flock
        yield
    finally:
        os.close(fd)  # releases both


def test_control_socket_answers_while_another_process_holds_the_queue_lock(root: Path, emu: Emulators) -> None:
    """Health and status answer at once, enqueue is spooled at once, while the engine waits on the lock."""
    hold = float(os.environ.get("MEMSYNC_LOCK_HOLD_SECONDS", "4"))
    memory = emu.local_add("lock-hold: pushed, then waits for the queue lock", level=1)
    second = emu.local_add("lock-hold: spooled by the daemon, pushed once the lock is free", level=1)
    runtime = root / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    with running_daemon(root, XDG_RUNTIME_DIR=str(runtime)) as daemon:
        wait_for(lambda: start_up_run_finished(daemon))
        with holding_queue_lock(root), httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)),
                                                    base_url="http://memsyncd", timeout=5) as client:
            write_queue_directly(root, [memory])  # an unlocked writer: the daemon pushes it at once...
            wait_for(lambda: "lock-hold: pushed, then waits for the queue lock" in emu.cloud_texts())
            answered: dict[str, object] = {}

            def enqueue() -> None:  # ...and its queue update now waits for our lock, on the engine thread
                t0 = time.perf_counter()
                response = client.post("/v1/queue", json={"id": second})
                answered.update(status=response.status_code, body=response.json(), seconds=time.perf_counter() - t0)

            poster = threading.Thread(target=enqueue)
            poster.start()
            latencies: list[float] = []
            deadline = time.monotonic() + hold
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                health = client.get("/v1/health", timeout=2).json()
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.02)  # pacing of the probe, not a wait for a condition
            t0 = time.perf_counter()
            status = client.get("/v1/status", timeout=2)
            status_seconds = time.perf_counter() - t0
            poster.join(10)
            assert health["busy"] is True  # the run was stuck on the lock the whole time
        print(f"\nhealth under a held queue lock: {len(latencies)} answers, max {max(latencies) * 1000:.1f} ms, "
              f"median {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms; status {status_seconds * 1000:.1f} ms")
        assert max(latencies) < 0.5, latencies
        assert status.status_code == 200 and status_seconds < 0.5
        assert answered["status"] == 202, answered
        assert answered["body"]["spooled"] is True  # type: ignore[index]
        assert float(answered["seconds"]) < 2.0  # type: ignore[arg-type]
        # lock free: the run finished its update, and the spooled id reached the queue and the cloud
        wait_for(lambda: cloud_count(emu, "lock-hold: spooled") == 1, timeout=30)
        wait_for(lambda: read_queue(root)["pending"] == [])
    assert cloud_count(emu, "lock-hold:") == 2


def test_status_through_the_daemon_is_answered_from_memory(root: Path, emu: Emulators) -> None:
    """20 status calls make 0 requests to mem0; a pull refreshes the figure and its time."""
    with running_daemon(root) as daemon:
        wait_for(lambda: start_up_run_finished(daemon))  # the start-up run counted what a pull would bring
        first = daemon.api("GET", "/v1/status").json()
        assert isinstance(first["pending_pull"], int) and first["pull_interval_seconds"] == 300
        counted_at = parse_ts(first["to_pull_as_of"])
        emu.cloud_add("status-memory: written in the cloud after the count")
        emu.clear_requests()
        figures = [daemon.api("GET", "/v1/status").json()["pending_pull"] for _ in range(19)]
        text = daemon.ctl("status")
        assert emu.requests() == []  # 20 status calls, not one request to the cloud
        assert figures == [first["pending_pull"]] * 19 and text.returncode == 0
        assert f"{first['pending_pull']} memories to pull" in text.stdout
        assert daemon.ctl("sync", "--pull").returncode == 0
        after = daemon.api("GET", "/v1/status").json()
    assert after["pending_pull"] == 0 and parse_ts(after["to_pull_as_of"]) >= counted_at
    assert "status-memory: written in the cloud after the count" in emu.local_texts()


def test_first_write_pushes_at_once_and_continuous_writes_are_not_starved(root: Path, emu: Emulators) -> None:
    """Leading edge (a 60 s debounce does not delay the first push); writes every 10 ms for 3 s are
    pushed while they go on, in a few coalesced runs, each exactly once."""
    make_root(root, emu, debounce_ms=60_000)
    first = emu.local_add("leading-edge: first write after idle", level=1)
    with running_daemon(root) as daemon:
        wait_for(lambda: start_up_run_finished(daemon))
        QueueStore(queue_path(root)).enqueue(QueueEntry(first, "push", format_ts(utc_now())))
        wait_for(lambda: "leading-edge: first write after idle" in emu.cloud_texts(), timeout=20)  # << 60 s
    make_root(root, emu)  # default debounce (200 ms) and burst ceiling (1 s)
    ids = [emu.local_add(f"stream {i:03d}", level=1) for i in range(300)]
    store = QueueStore(queue_path(root))
    with running_daemon(root) as daemon:
        wait_for(lambda: start_up_run_finished(daemon))
        runs_before = daemon.health()["runs_started"]  # type: ignore[index]
        start = time.monotonic()
        for i, memory in enumerate(ids):  # one locked write every 10 ms for 3 s
            store.enqueue(QueueEntry(memory, "push", format_ts(utc_now())))
            time.sleep(max(0.0, start + (i + 1) * 0.01 - time.monotonic()))  # pacing of the writer
        pushed_while_writing = cloud_count(emu, "stream ")
        wait_for(lambda: cloud_count(emu, "stream ") == 300 and read_queue(root)["pending"] == [], timeout=60)
        runs = daemon.health()["runs_started"] - runs_before  # type: ignore[index]
    assert pushed_while_writing > 0, "the push was starved until the writes stopped"
    assert runs <= 12, f"{runs} runs for 300 writes: bursts did not coalesce"
    texts = [t for t in emu.cloud_texts() if t.startswith("stream ")]
    assert len(texts) == 300 and len(set(texts)) == 300
