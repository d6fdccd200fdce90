"""Benchmark: devices on one mem0 account converge (issue 14's multi-device target); prints one JSON object.

Each device is a machine of its own: its own OpenMemory (one emulator each), its own root and state
DB (its own device id), its own ``memsyncd run`` process with short intervals (``--pull-seconds``,
``--scan-seconds``). All of them sync with one mem0 emulator (one account, one user). On every
device a writer adds ``--changes`` memories at random moments of a ``--window-seconds`` window,
alternately the way Claude Code does (written into OpenMemory, then queued for the daemon: the
hook's path) and the way any other client does (written into OpenMemory directly, no queue: the
scans must find it).

Figures, each next to its goal:

* ``convergence``: per memory, from its write until every device's OpenMemory holds it; max and
  p50 (goal: max ≤ 2 pull intervals + 1 scan interval);
* ``write_amplification``: mem0 creates and updates ÷ logical changes, counted until two pull
  intervals after convergence, so a late echo would show (goal 1.00);
* ``conflicts``: open conflicts over all devices (goal 0); and no duplicate anywhere (mem0 holds
  each memory once, every OpenMemory holds each once).

Loopback only; the emulators run in this process (a thread each); every daemon gets a private
HOME / XDG dirs (``memsyncd.emulators.isolation``) and is stopped at the end. Bounded by ``--timeout``.

Usage: python benchmarks/multi_device.py [--devices 10] [--changes 5] [--pull-seconds 2] [--scan-seconds 1]
       [--window-seconds 4] [--timeout 120]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from memsyncd.emulators.isolation import isolate_user_environment, isolated_locations
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.models import QueueEntry, format_ts, utc_now
from memsyncd.store.queue import QueueStore

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

KEY = "bench-key-0123456789"
USER = "bench"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Device:
    """One machine: its OpenMemory, its root and its daemon."""

    name: str
    emulators: RunningEmulators
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "run" / "d.sock"

    def texts(self) -> set[str]:
        """The live memory texts of this device's OpenMemory (read in-process: no request, no delay)."""
        return {str(m.get("content") or m.get("text")) for m in self.emulators.openmemory.memories(user_id=USER)
                if m.get("state", "active") != "deleted"}

    def status(self) -> dict[str, Any] | None:
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://d",
                              timeout=5) as client:
                response = client.get("/v1/status", params={"root": str(self.root)})
                return dict(response.json()) if response.status_code == 200 else None
        except (httpx.TransportError, OSError, ValueError):
            return None


class WriteCounter:
    """Counts the writes the shared mem0 emulator stores (creates and updates), whoever sends them."""

    def __init__(self, emulators: RunningEmulators) -> None:
        self.creates = 0
        self.updates = 0
        self._lock = threading.Lock()
        store = emulators.mem0
        create, update = store._create, store.update

        def counting_create(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.creates += 1
            return create(*args, **kwargs)

        def counting_update(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.updates += 1
            return update(*args, **kwargs)

        store._create = counting_create
        store.update = counting_update

    def total(self) -> int:
        with self._lock:
            return self.creates + self.updates


def _start_daemon(device: Device, cloud_url: str, sync: dict[str, Any]) -> None:
    config = {"local": {"url": device.emulators.openmemory_url, "user_id": USER},
              "cloud": {"enabled": True, "url": cloud_url, "user_id": USER},
              "sync": {"default_level": 1, **sync}}
    path = device.root / ".claude" / "memory" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSYNC_", "MEM0_", "NOTIFY_SOCKET"))}
    env.update(isolated_locations(device.root / "env"))  # each machine its own user environment
    env.update(MEM0_API_KEY=KEY, MEMSYNC_TRUSTED_ROOTS=str(device.root))
    device.socket.parent.mkdir(mode=0o700, exist_ok=True)
    with open(device.root / "daemon.log", "wb") as log:
        device.proc = subprocess.Popen(
            [sys.executable, "-m", "memsyncd", "run", "--root", str(device.root), "--socket", str(device.socket),
             "--log-format", "json", "--log-level", os.environ.get("BENCH_DAEMON_LOG_LEVEL", "warning")],
            env=env, stdout=log, stderr=log, cwd=ROOT)


def _wait(what: str, predicate: Any, timeout: float, devices: list[Device]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    dead = [d.name for d in devices if d.proc is not None and d.proc.poll() is not None]
    logs = "".join(f"\n--- {d.name}\n" + (d.root / "daemon.log").read_text(errors="replace")[-800:]
                   for d in devices if d.name in dead[:2])
    raise SystemExit(f"timed out waiting for {what} (daemons exited: {dead or 'none'}){logs}")


@contextlib.contextmanager
def machines(count: int) -> Iterator[tuple[list[Device], RunningEmulators]]:
    """``count`` devices (each with its OpenMemory emulator) and the shared mem0 (the first emulator pair's)."""
    stack = contextlib.ExitStack()
    with stack, tempfile.TemporaryDirectory(prefix="msmd-") as tmp:
        devices = []
        for n in range(count):
            emulators = stack.enter_context(RunningEmulators(api_key=KEY, user=USER))
            root = Path(tmp) / f"d{n}"
            root.mkdir()
            devices.append(Device(f"device-{n}", emulators, root))
        try:
            yield devices, devices[0].emulators
        finally:
            for device in devices:
                if device.proc is not None and device.proc.poll() is None:
                    device.proc.terminate()
            for device in devices:
                if device.proc is not None:
                    try:
                        device.proc.wait(20)
                    except subprocess.TimeoutExpired:
                        device.proc.kill()
                        device.proc.wait(5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sync = {"pull_interval_seconds": args.pull_seconds, "local_scan_interval_seconds": args.scan_seconds,
            "local_full_scan_interval_seconds": 900, "reconcile_interval_seconds": 3600}
    goal_seconds = 2 * args.pull_seconds + args.scan_seconds
    with machines(args.devices) as (devices, cloud), httpx.Client(timeout=10) as http:
        counter = WriteCounter(cloud)
        for device in devices:
            _start_daemon(device, cloud.mem0_url, sync)
        _wait("every daemon's start-up scan", lambda: all((d.status() or {}).get("last_full_scan") for d in devices),
              args.timeout, devices)
        writes_before = counter.total()
        rng = random.Random(args.seed)
        plan = sorted((rng.uniform(0, args.window_seconds), device, n)
                      for device in devices for n in range(args.changes))
        written: dict[str, float] = {}
        via_queue = 0
        start = time.monotonic()
        for index, (at, device, n) in enumerate(plan):
            time.sleep(max(0.0, start + at - time.monotonic()))
            text = f"{device.name} change {n}: written at {at:.3f}"
            queued = index % 2 == 0  # every other write: Claude Code's path (hook -> queue); the rest: another client
            response = http.post(f"{device.emulators.openmemory_url}/api/v1/memories/", json={
                "user_id": USER, "text": text, "infer": False, "app": "claude" if queued else "cursor",
                "metadata": {}})
            response.raise_for_status()
            written[text] = time.monotonic()
            if queued:
                via_queue += 1
                QueueStore(device.root / ".claude" / "session" / "sync-queue.json").enqueue(
                    QueueEntry(str(response.json()["id"]), "push", format_ts(utc_now())))
        converged: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        while len(converged) < len(written) and time.monotonic() < deadline:
            now = time.monotonic()
            held = [d.texts() for d in devices]
            for text in written:
                if text not in converged and all(text in texts for texts in held):
                    converged[text] = now
            time.sleep(0.05)
        time.sleep(2 * args.pull_seconds)  # a late echo (a pulled memory pushed back) would write now
        writes = counter.total() - writes_before
        statuses = [d.status() or {} for d in devices]
        cloud_texts = [str(m.get("memory")) for m in cloud.mem0.memories()]
        local_counts = [len(d.emulators.openmemory.memories(user_id=USER)) for d in devices]
    if len(converged) < len(written):
        raise SystemExit(f"only {len(converged)} of {len(written)} memories reached every device in {args.timeout} s")
    seconds = sorted(converged[t] - written[t] for t in written)
    changes = len(written)
    conflicts = sum(int(s.get("conflicts") or 0) for s in statuses)
    duplicates = (len(cloud_texts) - len(set(cloud_texts))) + sum(c - changes for c in local_counts)
    return {
        "benchmark": "multi_device", "devices": args.devices, "changes": changes, "via_queue": via_queue,
        "direct_to_openmemory": changes - via_queue, "pull_interval_seconds": args.pull_seconds,
        "scan_interval_seconds": args.scan_seconds, "write_window_seconds": args.window_seconds,
        "convergence_max_seconds": round(seconds[-1], 2),
        "convergence_p50_seconds": round(statistics.median(seconds), 2),
        "mem0_writes": writes, "write_amplification": round(writes / changes, 3), "conflicts": conflicts,
        "duplicates": duplicates, "statuses_answered": sum(1 for s in statuses if s),
        "goal": {"convergence_max_seconds": f"<= {goal_seconds:g} (2 pull + 1 scan interval)",
                 "write_amplification": 1.0, "conflicts": 0, "duplicates": 0},
        "ok": seconds[-1] <= goal_seconds and writes == changes and conflicts == 0 and duplicates == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--changes", type=int, default=5, help="memories written on each device")
    parser.add_argument("--pull-seconds", type=float, default=2.0)
    parser.add_argument("--scan-seconds", type=float, default=1.0)
    parser.add_argument("--window-seconds", type=float, default=4.0, help="the writes are spread over this")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of each wait")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
