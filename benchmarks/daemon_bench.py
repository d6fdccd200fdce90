"""Shared set-up of the daemon benchmarks: in-process emulators, a throw-away root, ``memsyncd run``.

Not a benchmark itself; imported by ``trigger_latency.py`` and ``health_under_lock.py``. The
emulators run in this process (a thread) so the moment a memory lands in the mem0 store is
observed exactly, without polling; the daemon is a real subprocess on a Unix socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from memsyncd.emulators.admin import EmulatorAdmin, wait_until
from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.emulators.runner import RunningEmulators

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

KEY = "bench-key-0123456789"
USER = "bench"


def figure(name: str, value: float, goal: float, unit: str = "ms", **extra: Any) -> None:
    """Print one measured figure as a JSON line: value, goal and value/goal."""
    print(json.dumps({"figure": name, "value": round(value, 2), "unit": unit, "goal": goal,
                      "ratio": round(value / goal, 3) if goal else None, **extra}), flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class CloudArrivals:
    """Records when each memory text is stored by the in-process mem0 emulator (perf_counter)."""

    seen: dict[str, float] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def attach(self, emulators: RunningEmulators) -> None:
        store = emulators.mem0
        create = store._create  # the one place every add goes through

        def recording_create(text: str, *args: Any, **kwargs: Any) -> Any:
            record = create(text, *args, **kwargs)
            with self.changed:
                self.seen.setdefault(text, time.perf_counter())
                self.changed.notify_all()
            return record

        store._create = recording_create

    def wait(self, texts: list[str], timeout: float) -> bool:
        """Wait until every text arrived."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(t in self.seen for t in texts):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
        return True


@dataclass
class BenchDaemon:
    """A ``memsyncd run`` subprocess and its root."""

    root: Path
    socket: Path
    proc: subprocess.Popen[bytes]
    client: httpx.Client

    @property
    def queue(self) -> Path:
        return self.root / ".claude" / "session" / "sync-queue.json"

    def health(self) -> dict[str, Any] | None:
        try:
            response = self.client.get("/v1/health", timeout=2)
        except (httpx.TransportError, OSError):
            return None
        return dict(response.json()) if response.status_code == 200 else None

    def idle(self) -> bool:
        health = self.health()
        return bool(health and health["runs_started"] >= 1 and not health["busy"])


@contextlib.contextmanager
def bench_setup(**sync: Any) -> Iterator[tuple[RunningEmulators, EmulatorAdmin, BenchDaemon, CloudArrivals]]:
    """Emulators + a root with default settings (plus ``sync`` overrides) + the daemon, torn down after."""
    with RunningEmulators(api_key=KEY, user=USER) as emulators, tempfile.TemporaryDirectory() as tmp:
        arrivals = CloudArrivals()
        arrivals.attach(emulators)
        admin = EmulatorAdmin(emulators.openmemory_url, emulators.mem0_url, KEY, USER)
        root = Path(tmp)
        config = root / ".claude" / "memory" / "config.json"
        config.parent.mkdir(parents=True)
        config.write_text(json.dumps({"local": {"url": emulators.openmemory_url, "user_id": USER},
                                      "cloud": {"enabled": True, "url": emulators.mem0_url, "user_id": USER},
                                      "sync": sync}))
        socket_path = root / "d.sock"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSYNC_", "MEM0_", "NOTIFY_SOCKET"))}
        env["MEM0_API_KEY"] = KEY
        env["MEMSYNC_TRUSTED_ROOTS"] = str(root)  # the benchmark wrote this root's config: trust it (issue 17)
        with open(root / "daemon.log", "wb") as log:
            level = os.environ.get("BENCH_DAEMON_LOG_LEVEL", "warning")
            proc = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--root", str(root), "--socket",
                                     str(socket_path), "--log-format", "json", "--log-level", level],
                                    stdout=log, stderr=log, env=env)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://memsyncd",
                              timeout=30)
        daemon = BenchDaemon(root, socket_path, proc, client)
        try:
            wait_until(daemon.idle, timeout=30, interval=0.05, what="the daemon's start-up run")
            yield emulators, admin, daemon, arrivals
        finally:
            client.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            admin.close()
