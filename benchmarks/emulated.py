"""Benchmark helper: the emulators in child processes (one each, like two real servers), seeded in memory.

Each emulator gets its own process (its own GIL and event loop), so the mem0 emulator's
listing cost (it filters and sorts the whole store for every page) never stalls the
OpenMemory emulator's answers, as it would not with two real servers.

Also a counting httpx transport, so a benchmark knows how many requests the engine sent to each
side (the emulators' request logs are bounded) and can compute the network ideal from them, and
``transport_floor``: the same requests sent by a bare httpx client with the same concurrency,
i.e. what any httpx-based client achieves on this machine at this moment (CPU, scheduler).

``MEMSYNC_BENCH_EMULATOR_PROFILE=DIR`` writes a cProfile of each emulator process (seeding included)
to ``DIR/emulator-<name>-<pid>.prof`` when it stops.
"""

from __future__ import annotations

import asyncio
import cProfile
import multiprocessing
import multiprocessing.connection
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from memsyncd.config import Paths, Settings
from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.engine.syncer import Syncer
from memsyncd.remote.cloud import CloudClient, Scope
from memsyncd.remote.lean_http import local_transport
from memsyncd.remote.local import LocalClient

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

KEY = "bench-key-0123456789"
USER = "bench"


def _serve(conn: multiprocessing.connection.Connection, cloud_count: int, local_count: int,
           mem0_latency_ms: int, openmemory_latency_ms: int) -> None:
    from memsyncd.emulators.runner import EmulatorConfig, EmulatorServers

    async def main() -> None:
        servers = EmulatorServers(EmulatorConfig(api_key=KEY, user=USER))
        for i in range(cloud_count):
            servers.mem0_store.add(f"bench cloud memory {i}", user_id=USER, metadata={"level": 1})
        for i in range(local_count):
            servers.openmemory_store.add(f"bench local memory {i}", {"level": 1}, user_id=USER)
        await servers.start()
        servers.mem0.faults.set(latency_ms=mem0_latency_ms)
        servers.openmemory.faults.set(latency_ms=openmemory_latency_ms)
        conn.send({"openmemory": servers.openmemory_url, "mem0": servers.mem0_url,
                   "local_ids": [m["id"] for m in servers.openmemory_store.memories(user_id=USER)]})
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "stop":
                break
            if command == "counts":
                conn.send({"cloud_memories": len(servers.mem0_store.memories()),
                           "local_memories": len(servers.openmemory_store.memories(user_id=USER))})
        await servers.close(save=False)

    profile_dir = os.environ.get("MEMSYNC_BENCH_EMULATOR_PROFILE")
    if not profile_dir:
        asyncio.run(main())
        return
    # a cProfile of this emulator process, from its seeding to its stop (python -m pstats FILE)
    profiler = cProfile.Profile()
    profiler.runcall(asyncio.run, main())
    name = "mem0" if cloud_count or mem0_latency_ms else "openmemory"
    profiler.dump_stats(os.path.join(profile_dir, f"emulator-{name}-{os.getpid()}.prof"))


@dataclass
class ChildEmulators:
    """``with ChildEmulators(cloud_count=..., mem0_latency_ms=...) as emu: emu.mem0_url``."""

    cloud_count: int = 0
    local_count: int = 0
    mem0_latency_ms: int = 0
    openmemory_latency_ms: int = 0

    def __enter__(self) -> ChildEmulators:
        ctx = multiprocessing.get_context("spawn")
        self._children: list[tuple[multiprocessing.connection.Connection, Any]] = []
        for args in ((self.cloud_count, 0, self.mem0_latency_ms, 0), (0, self.local_count, 0,
                                                                      self.openmemory_latency_ms)):
            conn, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, *args), daemon=True)
            proc.start()
            self._children.append((conn, proc))
        infos: list[dict[str, Any]] = []
        for conn, proc in self._children:
            if not conn.poll(120):
                proc.kill()
                raise RuntimeError("emulators did not start")
            infos.append(conn.recv())
        self.mem0_url: str = infos[0]["mem0"]
        self.openmemory_url: str = infos[1]["openmemory"]
        self.local_ids: list[str] = infos[1]["local_ids"]
        return self

    def counts(self) -> dict[str, int]:
        """How many live memories each emulator holds."""
        (mem0_conn, _), (local_conn, _) = self._children
        mem0_conn.send("counts")
        local_conn.send("counts")
        return {"cloud_memories": mem0_conn.recv()["cloud_memories"],
                "local_memories": local_conn.recv()["local_memories"]}

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for conn, _ in self._children:
            conn.send("stop")
        for _, proc in self._children:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


class CountingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that counts the requests it sends (through ``inner``, default httpx's own)."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def bench_settings(emu: ChildEmulators, concurrency: int) -> Settings:
    """Settings pointing an engine at the child emulators (default level 1: everything syncs)."""
    return Settings.model_validate({"local": {"url": emu.openmemory_url, "user_id": USER},
                                    "cloud": {"enabled": True, "url": emu.mem0_url, "user_id": USER},
                                    "sync": {"default_level": 1, "concurrency": concurrency}})


def counting_syncer(emu: ChildEmulators, root: Path, concurrency: int) -> tuple[Syncer, CountingTransport,
                                                                                   CountingTransport]:
    """An engine for ``root`` whose two clients count their requests: (syncer, local counter, cloud counter)."""
    local_t, cloud_t = CountingTransport(local_transport(emu.openmemory_url)), CountingTransport()
    syncer = Syncer(bench_settings(emu, concurrency), Paths(root), KEY,
                    local=LocalClient(emu.openmemory_url, USER, transport=local_t),
                    cloud=CloudClient(emu.mem0_url, KEY, Scope(USER), transport=cloud_t))
    return syncer, local_t, cloud_t


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident set size of this process, in MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def transport_floor(base_url: str, path: str, body: Callable[[int], dict[str, Any]], count: int, concurrency: int,
                    headers: dict[str, str] | None = None, *, lean: bool = False) -> float:
    """Seconds a bare ``httpx.AsyncClient`` takes to POST ``count`` bodies to ``path``, ``concurrency`` at a time
    (``lean``: through the local client's lean transport instead of httpx's own)."""

    async def run() -> None:
        transport = local_transport(base_url) if lean else None
        async with httpx.AsyncClient(base_url=base_url, headers=headers or {}, transport=transport) as client:
            todo = iter(range(count))

            async def worker() -> None:
                for n in todo:
                    (await client.post(path, json=body(n))).raise_for_status()

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started
