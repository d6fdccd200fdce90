"""Benchmark: a first pull of many cloud memories (creates locally), against the network ideal; prints JSON.

The emulators run in a child process with the same latency on every request of both sides.
The ideal is the time the requests the engine actually sent would take at that latency with
``concurrency`` of them always in flight: ``requests * latency / concurrency``. ``bare_httpx_*``
is the same number of local creates sent by a bare httpx client with the same concurrency: the
floor any httpx-based client reaches on this machine at this moment.

Usage: python benchmarks/pull_pipeline.py [--count 20000] [--latency-ms 10] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from emulated import USER, ChildEmulators, counting_syncer, peak_rss_mb, transport_floor

from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.logs import configure_logging
from memsyncd.models import SyncMode

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

GOAL_RATIO = 1.3
GOAL_RSS_MB = 80.0


async def measure(emu: ChildEmulators, root: Path, latency_ms: int, concurrency: int) -> dict[str, Any]:
    syncer, local_t, cloud_t = counting_syncer(emu, root, concurrency)
    t0 = time.perf_counter()
    report = await syncer.run(SyncMode.PULL)
    seconds = time.perf_counter() - t0
    await syncer.aclose()
    assert report.pull is not None and report.exit_code == 0, report.to_json()
    requests = local_t.count + cloud_t.count
    ideal = requests * latency_ms / 1000 / concurrency
    return {"seconds": round(seconds, 2), "new": report.pull.new, "local_requests": local_t.count,
            "cloud_requests": cloud_t.count, "ideal_seconds": round(ideal, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, default=10, help="added to every request of both emulators")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    configure_logging("warning")
    os.environ.setdefault("MEM0_TELEMETRY", "false")
    with ChildEmulators(cloud_count=args.count, mem0_latency_ms=args.latency_ms,
                        openmemory_latency_ms=args.latency_ms) as emu, tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(emu, Path(tmp), args.latency_ms, args.concurrency))
        counts = emu.counts()
        floor = transport_floor(emu.openmemory_url, "/api/v1/memories/", lambda n: {
            "user_id": USER, "text": f"bench floor {n}", "metadata": {"level": 1}, "infer": False, "app": "bench"},
            result["local_requests"], args.concurrency)
    ratio = result["seconds"] / result["ideal_seconds"]
    rss = peak_rss_mb()
    print(json.dumps({
        "benchmark": "pull_pipeline",
        "count": args.count, "latency_ms": args.latency_ms, "concurrency": args.concurrency,
        **result,
        "local_memories_after": counts["local_memories"],
        "bare_httpx_seconds": round(floor, 2), "bare_httpx_ratio_to_ideal": round(floor / result["ideal_seconds"], 3),
        "engine_ratio_to_bare_httpx": round(result["seconds"] / floor, 3),
        "figure": {"ratio_to_ideal": round(ratio, 3), "peak_rss_mb": round(rss, 1)},
        "goal": {"ratio_to_ideal": f"<= {GOAL_RATIO}", "peak_rss_mb": f"<= {GOAL_RSS_MB}"},
        "ok": ratio <= GOAL_RATIO and rss <= GOAL_RSS_MB,
    }, indent=2))


if __name__ == "__main__":
    main()
