"""Benchmark: push cost per queue entry at 1,000 vs 10,000 entries, and the push run's peak RSS; prints JSON.

Each size runs in its own process (so its peak RSS is its own) against fresh emulators in a
child process, with ``--latency-ms`` added to every mem0 request. The queue file is written
entry by entry, so the peak RSS is the push run's (``rss_before_push_mb``: the process before it).

Usage: python benchmarks/queue_scaling.py [--small 1000] [--large 10000] [--latency-ms 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from emulated import KEY, ChildEmulators, bench_settings, current_rss_mb, peak_rss_mb

from memsyncd.config import Paths
from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.engine.syncer import Syncer
from memsyncd.logs import configure_logging
from memsyncd.models import SyncMode, format_ts, utc_now

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

GOAL_PER_ENTRY_RATIO = 1.5
GOAL_RSS_MB = 80.0


async def push(emu: ChildEmulators, root: Path, concurrency: int) -> dict[str, Any]:
    syncer = Syncer(bench_settings(emu, concurrency), Paths(root), KEY)
    write_queue(syncer.paths.queue, emu.local_ids)
    rss_before = current_rss_mb()
    t0 = time.perf_counter()
    report = await syncer.run(SyncMode.PUSH)
    seconds = time.perf_counter() - t0
    await syncer.aclose()
    assert report.push is not None and report.exit_code == 0 and report.push.created == len(emu.local_ids)
    left = len(syncer.queue.read().pending)
    return {"entries": len(emu.local_ids), "seconds": round(seconds, 3),
            "ms_per_entry": round(seconds * 1000 / len(emu.local_ids), 3), "left_in_queue": left,
            "rss_before_push_mb": round(rss_before, 1)}


def write_queue(path: Path, ids: list[str]) -> None:
    """The seed's queue file with one push entry per id, written entry by entry (no 10k-entry objects here)."""
    stamp = format_ts(utc_now())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"pending": [')
        for n, memory_id in enumerate(ids):
            handle.write(("," if n else "") + json.dumps({"id": memory_id, "action": "push", "timestamp": stamp}))
        handle.write('], "last_sync": null, "sync_errors": []}\n')


def one(count: int, latency_ms: int, concurrency: int) -> None:
    configure_logging("warning")
    with ChildEmulators(local_count=count, mem0_latency_ms=latency_ms) as emu, \
            tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(push(emu, Path(tmp), concurrency))
    print(json.dumps({**result, "peak_rss_mb": round(peak_rss_mb(), 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=5, help="added to every mem0 request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        one(args.one, args.latency_ms, args.concurrency)
        return
    runs: dict[str, Any] = {}
    for name, count in (("small", args.small), ("large", args.large)):
        out = subprocess.run([sys.executable, __file__, "--one", str(count), "--latency-ms", str(args.latency_ms),
                              "--concurrency", str(args.concurrency)],
                             capture_output=True, text=True, check=True, env={**os.environ})
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = runs["large"]["ms_per_entry"] / runs["small"]["ms_per_entry"]
    rss = runs["large"]["peak_rss_mb"]
    print(json.dumps({
        "benchmark": "queue_scaling", "latency_ms": args.latency_ms, "concurrency": args.concurrency, **runs,
        "figure": {"per_entry_ratio_large_to_small": round(ratio, 3), "large_peak_rss_mb": rss},
        "goal": {"per_entry_ratio_large_to_small": f"<= {GOAL_PER_ENTRY_RATIO}",
                 "large_peak_rss_mb": f"<= {GOAL_RSS_MB}"},
        "ok": ratio <= GOAL_PER_ENTRY_RATIO and rss <= GOAL_RSS_MB,
    }, indent=2))


if __name__ == "__main__":
    main()
