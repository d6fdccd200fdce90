"""Benchmark: push of N queued memories vs the network ideal and vs the official mem0ai client; prints JSON.

The emulators run in a child process; ``--latency-ms`` is added to every mem0 request
(the cloud is the far side; ``--local-latency-ms`` for OpenMemory, default 0). The ideal
is the time the requests the engine sent would take with ``concurrency`` always in flight.
The comparison adds the same texts with ``mem0ai``'s ``MemoryClient.add`` in a plain loop
(the way a script would), in the same run against the same emulator. ``bare_httpx_*`` is the
same number of adds sent by a bare httpx client with the same concurrency: the floor any
httpx-based client reaches on this machine at this moment (a loaded machine adds scheduler
delay to every request; the engine's own overhead is ``engine_ratio_to_bare_httpx``).

Usage: python benchmarks/push_throughput.py [--count 2000] [--latency-ms 50] [--concurrency 8]
       [--mem0ai-count N]  (N < count times the client on N memories and scales per memory)
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

from emulated import KEY, USER, ChildEmulators, counting_syncer, peak_rss_mb, transport_floor

from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.logs import configure_logging
from memsyncd.models import QueueEntry, SyncMode, format_ts, utc_now

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

GOAL_RATIO = 1.2
GOAL_SPEEDUP = 6.0


async def push(emu: ChildEmulators, root: Path, concurrency: int) -> dict[str, Any]:
    syncer, local_t, cloud_t = counting_syncer(emu, root, concurrency)
    stamp = format_ts(utc_now())
    syncer.queue.update(lambda doc: doc.pending.extend(QueueEntry(i, "push", stamp) for i in emu.local_ids))
    t0 = time.perf_counter()
    report = await syncer.run(SyncMode.PUSH)
    seconds = time.perf_counter() - t0
    await syncer.aclose()
    assert report.push is not None and report.exit_code == 0, report.to_json()
    return {"seconds": round(seconds, 2), "created": report.push.created, "local_requests": local_t.count,
            "cloud_requests": cloud_t.count}


def mem0ai_loop(emu: ChildEmulators, count: int) -> float:
    """Seconds for ``count`` sequential ``MemoryClient.add`` calls (construction, i.e. its ping, excluded)."""
    from mem0 import MemoryClient

    client = MemoryClient(api_key=KEY, host=emu.mem0_url)
    t0 = time.perf_counter()
    for i in range(count):
        client.add(f"bench mem0ai memory {i}", user_id=USER, infer=False, metadata={"level": 1})
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--latency-ms", type=int, default=50, help="added to every mem0 request")
    parser.add_argument("--local-latency-ms", type=int, default=0, help="added to every OpenMemory request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mem0ai-count", type=int, default=None, help="memories added by mem0ai (default: --count)")
    args = parser.parse_args()
    configure_logging("warning")
    os.environ["MEM0_TELEMETRY"] = "false"
    client_count = args.mem0ai_count or args.count
    with ChildEmulators(local_count=args.count, mem0_latency_ms=args.latency_ms,
                        openmemory_latency_ms=args.local_latency_ms) as emu, tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(push(emu, Path(tmp), args.concurrency))
        rss = peak_rss_mb()  # before mem0ai is imported
        floor = transport_floor(emu.mem0_url, "/v3/memories/add/", lambda n: {
            "messages": [{"role": "user", "content": f"bench floor memory {n}"}], "user_id": USER, "infer": False,
            "metadata": {"level": 1}}, args.count, args.concurrency, {"Authorization": f"Token {KEY}"})
        client_seconds = mem0ai_loop(emu, client_count) * args.count / client_count
    ideal = (result["cloud_requests"] * args.latency_ms
             + result["local_requests"] * args.local_latency_ms) / 1000 / args.concurrency
    ratio = result["seconds"] / ideal
    speedup = client_seconds / result["seconds"]
    print(json.dumps({
        "benchmark": "push_throughput",
        "count": args.count, "latency_ms": args.latency_ms, "local_latency_ms": args.local_latency_ms,
        "concurrency": args.concurrency, **result, "ideal_seconds": round(ideal, 2),
        "bare_httpx_seconds": round(floor, 2), "bare_httpx_ratio_to_ideal": round(floor / ideal, 3),
        "engine_ratio_to_bare_httpx": round(result["seconds"] / floor, 3),
        "mem0ai_loop_seconds": round(client_seconds, 2), "mem0ai_measured_count": client_count,
        "memories_per_second": round(result["created"] / result["seconds"], 1),
        "peak_rss_mb": round(rss, 1),
        "figure": {"ratio_to_ideal": round(ratio, 3), "speedup_vs_mem0ai_loop": round(speedup, 2)},
        "goal": {"ratio_to_ideal": f"<= {GOAL_RATIO}", "speedup_vs_mem0ai_loop": f">= {GOAL_SPEEDUP}"},
        "ok": ratio <= GOAL_RATIO and speedup >= GOAL_SPEEDUP,
    }, indent=2))


if __name__ == "__main__":
    main()
