"""Benchmark: a first pull of many cloud memories (creates locally), against the network ideal; prints JSON.

The emulators run in a child process with the same latency on every request of both sides.
The ideal is the time the requests the engine actually sent would take at that latency with
``concurrency`` of them always in flight: ``requests * latency / concurrency``. ``bare_httpx_*``
is the same number of local creates sent by a bare httpx client (httpx's own transport) with the
same concurrency, ``bare_lean_*`` the same through the local client's lean transport
(:mod:`memsyncd.remote.lean_http`): the floors a client reaches on this machine at this moment.
``--profile FILE`` writes a cProfile of the engine's run alone (``python -m pstats FILE``).

Usage: python benchmarks/pull_pipeline.py [--count 20000] [--latency-ms 10] [--concurrency 8] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
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


async def measure(emu: ChildEmulators, root: Path, latency_ms: int, concurrency: int,
                  profile: str | None = None) -> dict[str, Any]:
    syncer, local_t, cloud_t = counting_syncer(emu, root, concurrency)
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report = await syncer.run(SyncMode.PULL)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
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
    parser.add_argument("--profile", help="write a cProfile of the engine's run to this file")
    args = parser.parse_args()
    configure_logging("warning")
    os.environ.setdefault("MEM0_TELEMETRY", "false")
    with ChildEmulators(cloud_count=args.count, mem0_latency_ms=args.latency_ms,
                        openmemory_latency_ms=args.latency_ms) as emu, tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(emu, Path(tmp), args.latency_ms, args.concurrency, args.profile))
        counts = emu.counts()
        floors = {lean: transport_floor(emu.openmemory_url, "/api/v1/memories/", lambda n: {
            "user_id": USER, "text": f"bench floor {n}", "metadata": {"level": 1}, "infer": False, "app": "bench"},
            result["local_requests"], args.concurrency, lean=lean) for lean in (False, True)}
    floor, lean_floor = floors[False], floors[True]
    ratio = result["seconds"] / result["ideal_seconds"]
    rss = peak_rss_mb()
    print(json.dumps({
        "benchmark": "pull_pipeline",
        "count": args.count, "latency_ms": args.latency_ms, "concurrency": args.concurrency,
        **result,
        "local_memories_after": counts["local_memories"],
        "bare_httpx_seconds": round(floor, 2), "bare_httpx_ratio_to_ideal": round(floor / result["ideal_seconds"], 3),
        "engine_ratio_to_bare_httpx": round(result["seconds"] / floor, 3),
        "bare_lean_seconds": round(lean_floor, 2),
        "bare_lean_ratio_to_ideal": round(lean_floor / result["ideal_seconds"], 3),
        "cores": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "figure": {"ratio_to_ideal": round(ratio, 3), "peak_rss_mb": round(rss, 1)},
        "goal": {"ratio_to_ideal": f"<= {GOAL_RATIO}", "peak_rss_mb": f"<= {GOAL_RSS_MB}"},
        "ok": ratio <= GOAL_RATIO and rss <= GOAL_RSS_MB,
    }, indent=2))


if __name__ == "__main__":
    main()
