"""Benchmark: the control socket's answers while another process holds the queue lock; prints JSON.

A push is started and left waiting on the queue lock (held here with flock, and a POSIX lock,
for ``--hold-seconds``, default 10 s) on the daemon's engine thread. Meanwhile ``GET /v1/health``
is polled every 20 ms (goal: every answer <= 50 ms), ``GET /v1/status`` is timed (goal 50 ms)
and one ``POST /v1/queue`` must answer within its bound (3.5 s): since issue 17 the daemon spools
the entry after 0.25 s (202, ``"spooled": true``) instead of a 503 after 2 s.

Usage: python benchmarks/health_under_lock.py [--hold-seconds 10]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import threading
import time

from daemon_bench import bench_setup, figure, percentile

from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.models import QueueEntry, format_ts, utc_now
from memsyncd.store.queue import atomic_write, dump_queue, parse_queue

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with bench_setup() as (_emulators, admin, daemon, arrivals):
        text = "held lock: pushed, then waits for the queue lock"
        memory = admin.local_add(text, level=1)
        lock_path = daemon.queue.with_name(daemon.queue.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.lockf(fd, fcntl.LOCK_EX)
            held_at = time.monotonic()
            doc = parse_queue(daemon.queue.read_text()) if daemon.queue.exists() else parse_queue("")
            doc.pending.append(QueueEntry(memory, "push", format_ts(utc_now())))
            atomic_write(daemon.queue, dump_queue(doc))  # an unlocked writer: the push starts at once
            if not arrivals.wait([text], timeout=10):
                raise SystemExit("the push never started")
            enqueue: dict[str, float] = {}

            def post() -> None:
                t0 = time.perf_counter()
                response = daemon.client.post("/v1/queue", json={"id": "held-lock-second"}, timeout=30)
                enqueue.update(status=response.status_code, ms=(time.perf_counter() - t0) * 1000)

            poster = threading.Thread(target=post)
            poster.start()
            health: list[float] = []
            busy = True
            while time.monotonic() - held_at < args.hold_seconds:
                t0 = time.perf_counter()
                answer = daemon.client.get("/v1/health", timeout=5).json()
                health.append((time.perf_counter() - t0) * 1000)
                busy = busy and bool(answer["busy"])
                time.sleep(0.02)
            t0 = time.perf_counter()
            daemon.client.get("/v1/status", timeout=5).raise_for_status()
            status_ms = (time.perf_counter() - t0) * 1000
            poster.join(30)
        finally:
            os.close(fd)
        figure("health_under_lock_max", max(health), 50, answers=len(health), hold_s=args.hold_seconds,
               p50_ms=round(percentile(health, 50), 2), run_stuck_on_lock=busy)
        figure("status_under_lock", status_ms, 50)
        figure("enqueue_under_lock", enqueue.get("ms", float("nan")), 3500, status=enqueue.get("status"))


if __name__ == "__main__":
    main()
