"""Benchmark: queue write -> memory stored in the mem0 emulator, daemon up, default settings; prints JSON.

Two scenarios against in-process loopback emulators (0 ms emulated latency) and a real
``memsyncd run`` subprocess:

1. latency: one locked queue write (what ``memsyncctl enqueue`` and the hook do) after a
   quiet period, timed from just before the write until the mem0 emulator stored the memory;
   p50/p99 over ``--samples`` writes. Goals: p50 <= 50 ms, p99 <= 150 ms. The writer's own
   share (lock + fsyncs, which grows with disk load) is printed next to it.
2. starvation: one write every ``--stream-interval-ms`` for ``--stream-seconds``; the time from
   the first write to the first memory in the cloud (goal <= the burst ceiling, 1 s), the
   longest any write waited (goal <= 2 x ceiling: one ceiling until its burst fires, then the
   run that pushes the burst), and how many runs the stream took (bursts coalesce).

Usage: python benchmarks/trigger_latency.py [--samples 40] [--stream-seconds 10]
Run with ``PYTHONPATH`` pointing at another checkout to measure that version's daemon.
"""

from __future__ import annotations

import argparse
import json
import time

from daemon_bench import bench_setup, figure, percentile

from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.models import QueueEntry, format_ts, utc_now
from memsyncd.store.queue import QueueStore

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

QUIET_SECONDS = 0.4  # longer than the default debounce (200 ms): each sample starts "after idle"
CEILING_MS = 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--stream-seconds", type=float, default=10.0)
    parser.add_argument("--stream-interval-ms", type=float, default=10.0)
    args = parser.parse_args()
    with bench_setup() as (_emulators, admin, daemon, arrivals):
        store = QueueStore(daemon.queue)
        latencies: list[float] = []
        writes: list[float] = []
        for i in range(args.samples):
            text = f"latency sample {i}"
            memory = admin.local_add(text, level=1)
            time.sleep(QUIET_SECONDS)
            t0 = time.perf_counter()
            store.enqueue(QueueEntry(memory, "push", format_ts(utc_now())))
            writes.append((time.perf_counter() - t0) * 1000)
            if not arrivals.wait([text], timeout=10):
                raise SystemExit(f"sample {i} never reached the cloud")
            latencies.append((arrivals.seen[text] - t0) * 1000)
        figure("trigger_latency_p50", percentile(latencies, 50), 50, samples=len(latencies))
        figure("trigger_latency_p99", percentile(latencies, 99), 150, samples=len(latencies))
        daemon_side = [total - write for total, write in zip(latencies, writes, strict=True)]
        print(json.dumps({"figure": "of_which_the_writers_locked_write_ms", "p50": round(percentile(writes, 50), 2),
                          "p99": round(percentile(writes, 99), 2),
                          "rest_p50": round(percentile(daemon_side, 50), 2),
                          "rest_p99": round(percentile(daemon_side, 99), 2),
                          "note": "lock + 2 fsyncs of the writer itself; rest = after its write returned"}),
              flush=True)

        count = int(args.stream_seconds * 1000 / args.stream_interval_ms)
        texts = [f"stream write {i:05d}" for i in range(count)]
        ids = [admin.local_add(text, level=1) for text in texts]
        time.sleep(QUIET_SECONDS)
        health = daemon.health()
        runs_before = health["runs_started"] if health else 0
        written: list[float] = []
        start = time.perf_counter()
        for i, memory in enumerate(ids):
            written.append(time.perf_counter())
            store.enqueue(QueueEntry(memory, "push", format_ts(utc_now())))
            time.sleep(max(0.0, start + (i + 1) * args.stream_interval_ms / 1000 - time.perf_counter()))
        if not arrivals.wait(texts, timeout=300):
            raise SystemExit("the stream never fully reached the cloud")
        health = daemon.health()
        runs = (health["runs_started"] if health else 0) - runs_before
        first_arrival = min(arrivals.seen[t] for t in texts)
        waits = [(arrivals.seen[t] - w) * 1000 for t, w in zip(texts, written, strict=True)]
        figure("stream_first_push_ms", (first_arrival - written[0]) * 1000, CEILING_MS,
               writes=count, interval_ms=args.stream_interval_ms)
        figure("stream_longest_wait_ms", max(waits), 2 * CEILING_MS, p50_wait_ms=round(percentile(waits, 50), 1))
        figure("stream_runs", runs, args.stream_seconds * 1000 / CEILING_MS + 2, unit="runs", writes=count,
               note="goal: about one run per ceiling, not one per write")


if __name__ == "__main__":
    main()
