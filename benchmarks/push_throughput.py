"""Benchmark: push and pull throughput of the engine against the loopback emulators; prints numbers.

Usage: python benchmarks/push_throughput.py [--count N] [--latency-ms MS] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from memsyncd.config import Paths, Settings
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.logs import configure_logging
from memsyncd.models import QueueEntry, SyncMode, format_ts, utc_now
from memsyncd.syncer import Syncer

KEY = "bench-key"
USER = "bench"


async def measure(emu: RunningEmulators, admin: EmulatorAdmin, root: Path, count: int, concurrency: int) -> None:
    settings = Settings(local={"url": emu.openmemory_url, "user_id": USER},
                        cloud={"enabled": True, "url": emu.mem0_url, "user_id": USER},
                        sync={"default_level": 1, "concurrency": concurrency})
    syncer = Syncer(settings, Paths(root), KEY)
    ids = [admin.local_add(f"bench local {i}") for i in range(count)]
    syncer.queue.update(lambda doc: doc.pending.extend(QueueEntry(i, "push", format_ts(utc_now())) for i in ids))
    t0 = time.perf_counter()
    report = await syncer.run(SyncMode.PUSH)
    push_s = time.perf_counter() - t0
    print(f"push:  {report.push.created} created in {push_s:.2f} s  -> {report.push.created / push_s:.0f} memories/s")
    for i in range(count):
        admin.cloud_add(f"bench cloud {i}")
    t0 = time.perf_counter()
    report = await syncer.run(SyncMode.PULL)
    pull_s = time.perf_counter() - t0
    print(f"pull:  {report.pull.new} new in {pull_s:.2f} s  -> {report.pull.new / pull_s:.0f} memories/s "
          f"({report.pull.seen} seen)")
    t0 = time.perf_counter()
    report = await syncer.run(SyncMode.FULL)
    idle_s = time.perf_counter() - t0
    print(f"no-op full sync over {2 * count} synced memories: {idle_s * 1000:.0f} ms")
    await syncer.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--latency-ms", type=int, default=0, help="added by the emulators to every request")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    configure_logging("warning")
    with RunningEmulators(api_key=KEY, user=USER, latency_ms=args.latency_ms) as emu, \
            tempfile.TemporaryDirectory() as tmp:
        admin = EmulatorAdmin(emu.openmemory_url, emu.mem0_url, KEY, USER)
        print(f"memsyncd benchmark: {args.count} memories, latency {args.latency_ms} ms, "
              f"concurrency {args.concurrency}")
        asyncio.run(measure(emu, admin, Path(tmp), args.count, args.concurrency))
        admin.close()


if __name__ == "__main__":
    main()
