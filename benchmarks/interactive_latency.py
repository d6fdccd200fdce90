"""Benchmark: wall time of the interactive memsyncctl commands (thin client), as JSON.

Starts the loopback emulators (in this process) and ``memsyncd run`` on a temporary root, then
times, in interleaved rounds, each of: ``python -c pass`` (the floor), ``memsyncctl --version``,
``memsyncctl status`` (daemon up), ``memsyncctl hook post-tool-use`` (a realistic add_memories
event on stdin) and ``memsyncctl enqueue`` (daemon up). ``status`` and ``enqueue`` are also timed
against a canned daemon (a thread here answering at once), which isolates the client's share
from the daemon's. Prints medians of wall time and of CPU time (user + system; steadier when other processes load
the machine), their ratios to ``python -c pass`` measured in the same run, the
goals (hook <= 3x, status <= 2.5x, on wall time), and the requests mem0 received per ``status`` (goal 0: the
daemon answers from memory).

memsyncctl runs the way the console script does (``from memsyncd.ctl import main``) with the
``memsyncd`` found on ``PYTHONPATH`` (children run in the temp directory, never in a checkout),
so the same script measures any checkout. By default the
children may write bytecode caches to a private ``PYTHONPYCACHEPREFIX`` (as an installed package
has ``.pyc`` files) even when ``PYTHONDONTWRITEBYTECODE`` is set; ``--no-bytecode`` measures
without them.

Usage: python benchmarks/interactive_latency.py [--runs N] [--no-bytecode]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import memsyncd
from memsyncd.emulators.admin import EmulatorAdmin, wait_until
from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.emulators.runner import RunningEmulators

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

KEY = "bench-key-0123456789"
USER = "bench"
CTL = "import sys; from memsyncd.ctl import main; sys.exit(main())"  # what the memsyncctl script runs
GOALS = {"hook": 3.0, "status": 2.5, "status, client only": 2.5}
CANNED_STATUS: dict[str, Any] = {
    "local_url": "http://localhost:8765", "cloud_configured": True, "pending_push": 0, "pending_pull": 2,
    "conflicts": 0, "last_sync": "2026-01-18T10:00:00Z", "errors": 0, "queue_path": "", "pull_note": "",
    "daemon": {"ok": True, "pid": 1, "paused": False, "busy": False, "uptime_seconds": 5.0}}


class CannedDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers the control API's health, status and queue routes at once, with fixed bodies."""

    daemon_threads = True


class _CannedHandler(socketserver.StreamRequestHandler):
    """One connection: answers requests until the client closes it or asks to (keep-alive as h11 does)."""

    def handle(self) -> None:
        while request_line := self.rfile.readline():
            length, close = 0, False
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                close = close or (name.strip().lower() == b"connection" and b"close" in value.lower())
            self.rfile.read(length)
            body: dict[str, Any]
            if request_line.startswith(b"POST /v1/queue"):
                status, body = "202 Accepted", {"queued": "x", "action": "push"}
            elif request_line.startswith(b"GET /v1/status"):
                status, body = "200 OK", CANNED_STATUS
            else:
                status, body = "200 OK", CANNED_STATUS["daemon"]
            payload = json.dumps(body).encode()
            self.wfile.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
            self.wfile.flush()
            if close:
                return


def hook_event(memory_id: str) -> str:
    """A PostToolUse event as Claude Code sends it after ``add_memories`` (MCP content blocks)."""
    result = {"results": [{"id": memory_id, "memory": "prefers small focused commits", "event": "ADD"}]}
    return json.dumps({
        "session_id": "0b8c5f3e-bench", "transcript_path": "/tmp/bench/transcript.jsonl", "cwd": "/tmp/bench",
        "hook_event_name": "PostToolUse", "tool_name": "mcp__openmemory__add_memories",
        "tool_input": {"text": "The user prefers small, focused commits."},
        "tool_response": [{"type": "text", "text": json.dumps(result)}],
    })


def child_env(cache_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSYNC_", "MEM0_", "NOTIFY_SOCKET"))}
    env["MEM0_API_KEY"] = KEY
    env["MEM0_TELEMETRY"] = "false"
    if cache_dir is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


def health(socket_path: Path) -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://memsyncd",
                          timeout=2) as client:
            return client.get("/v1/health").status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def run_once(argv: list[str], env: dict[str, str], stdin: str | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+system) of one run of ``argv``."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False)
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[3:]} exited {done.returncode}: {done.stdout[-500:]} {done.stderr[-500:]}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu


def measure(root: Path, socket_path: Path, canned: Path, admin: EmulatorAdmin, runs: int,
            env: dict[str, str]) -> dict[str, Any]:
    ctl = [sys.executable, "-c", CTL]
    counter = iter(range(10**9))
    commands: dict[str, Callable[[], tuple[list[str], str | None]]] = {
        "python -c pass": lambda: ([sys.executable, "-c", "pass"], None),
        "--version": lambda: ([*ctl, "--version"], None),
        "status": lambda: ([*ctl, "--root", str(root), "--socket", str(socket_path), "status"], None),
        "hook": lambda: ([*ctl, "--root", str(root), "hook", "post-tool-use"], hook_event(f"hook-{next(counter)}")),
        "enqueue": lambda: ([*ctl, "--root", str(root), "--socket", str(socket_path), "enqueue",
                             f"enq-{next(counter)}", "--level", "0"], None),
        "status, client only": lambda: ([*ctl, "--root", str(root), "--socket", str(canned), "status"], None),
        "enqueue, client only": lambda: ([*ctl, "--root", str(root), "--socket", str(canned), "enqueue", "x"], None),
    }
    for make in commands.values():  # warm-up: bytecode caches, page cache
        argv, stdin = make()
        run_once(argv, env, stdin)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu_times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):  # interleaved, so load from other processes hits every command alike
        for name, make in commands.items():
            argv, stdin = make()
            wall, cpu = run_once(argv, env, stdin)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    # mem0 requests caused by status alone: once the daemon has drained the queue, nothing else runs
    queue = root / ".claude/session/sync-queue.json"
    wait_until(lambda: not json.loads(queue.read_text())["pending"], timeout=60, what="queue drained")
    admin.clear_requests()
    status_runs = min(runs, 10)
    for _ in range(status_runs):
        run_once(commands["status"]()[0], env, None)
    status_requests = len(admin.requests())
    floor = statistics.median(times["python -c pass"])
    cpu_floor = statistics.median(cpu_times["python -c pass"])
    results: dict[str, Any] = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        cpu = statistics.median(cpu_times[name])
        entry: dict[str, Any] = {"median_ms": round(median * 1000, 1), "ratio": round(median / floor, 2),
                                 "cpu_median_ms": round(cpu * 1000, 1), "cpu_ratio": round(cpu / cpu_floor, 2)}
        if name in GOALS:
            entry["goal_ratio"] = GOALS[name]
            entry["meets_goal"] = median / floor <= GOALS[name]
        results[name] = entry
    return {"times": results, "mem0_requests_per_status": round(status_requests / status_runs, 2),
            "mem0_requests_per_status_goal": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command (default 30)")
    parser.add_argument("--no-bytecode", action="store_true", help="do not let the children cache bytecode")
    args = parser.parse_args()
    with RunningEmulators(api_key=KEY, user=USER) as emu, tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # children run here, never in a checkout: "python -c" puts the cwd first on sys.path
        root = Path(tmp) / "root"
        config = {"local": {"url": emu.openmemory_url, "user_id": USER},
                  "cloud": {"enabled": True, "url": emu.mem0_url, "user_id": USER},
                  "sync": {"default_level": 0, "pull_interval_seconds": 3600, "reconcile_interval_seconds": 36000}}
        (root / ".claude/memory").mkdir(parents=True)
        (root / ".claude/memory/config.json").write_text(json.dumps(config))
        env = child_env(None if args.no_bytecode else Path(tmp) / "pycache")
        socket_path = Path(tmp) / "d.sock"
        admin = EmulatorAdmin(emu.openmemory_url, emu.mem0_url, KEY, USER)
        for i in range(20):
            admin.cloud_add(f"bench cloud memory {i}")
        with open(Path(tmp) / "daemon.log", "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--root", str(root), "--socket",
                                       str(socket_path), "--log-level", "warning"], stdout=log, stderr=log, env=env)
        try:
            wait_until(lambda: health(socket_path) or daemon.poll() is not None, timeout=30, what="daemon health")
            if daemon.poll() is not None:
                raise RuntimeError((Path(tmp) / "daemon.log").read_text()[-2000:])
            first = subprocess.run([sys.executable, "-c", CTL, "--root", str(root), "--socket", str(socket_path),
                                    "sync"], capture_output=True, text=True, env=env, timeout=120, check=False)
            if first.returncode != 0:
                raise RuntimeError(f"first sync failed: {first.stdout} {first.stderr}")
            canned = CannedDaemon(str(Path(tmp) / "canned.sock"), _CannedHandler)
            threading.Thread(target=canned.serve_forever, daemon=True).start()
            try:
                report = measure(root, socket_path, Path(tmp) / "canned.sock", admin, args.runs, env)
            finally:
                canned.shutdown()
                canned.server_close()
        finally:
            daemon.terminate()
            daemon.wait(15)
            admin.close()
    report.update({"runs": args.runs, "bytecode_cache": not args.no_bytecode, "python": sys.version.split()[0],
                   "memsyncd": str(Path(memsyncd.__file__ or "?").parent)})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
