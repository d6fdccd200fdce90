"""Model-based test: random histories of edits on both sides, checked against the sync invariants.

Each seed plays a random sequence of local and cloud adds, edits and deletes, syncs,
reconciles and conflict resolutions, in-process against the emulators. After every
sync: no level-0 text is in the cloud, no local memory has two cloud copies. At the end,
once every conflict is resolved, both sides hold the same shared memories.
Set MEMSYNC_HISTORY_SEEDS to play more seeds (the suite plays 8).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import INPROC_KEY, emulator_settings, fresh_admin

from memsyncd.config import Paths
from memsyncd.emulators.admin import wait_until
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.syncer import Syncer
from memsyncd.errors import ConflictError, RemoteError
from memsyncd.models import QueueEntry, SyncMode, format_ts, utc_now
from memsyncd.wire import Keep


class History:
    """One random history against fresh emulator state and a fresh root."""

    def __init__(self, root: Path, servers: RunningEmulators, seed: int) -> None:
        self.rng = random.Random(seed)
        self.admin = fresh_admin(servers)
        settings = emulator_settings(servers, default_level=0, max_delete_fraction=1.0, concurrency=4)
        self.syncer = Syncer(settings, Paths(root), INPROC_KEY)
        self.counter = 0
        self.private: set[str] = set()
        self.local_ids: list[str] = []

    def text(self, what: str) -> str:
        self.counter += 1
        return f"{what} #{self.counter}"

    def enqueue(self, memory_id: str, action: str = "push") -> None:
        self.syncer.queue.enqueue(QueueEntry(memory_id, action, format_ts(utc_now())))  # type: ignore[arg-type]

    def live_local(self) -> list[dict[str, Any]]:
        return [m for m in (self.admin.local_get(i) for i in self.local_ids) if m["state"] != "deleted"]

    # --- random operations ---------------------------------------------------------------

    def local_add(self) -> None:
        level = self.rng.choice([0, 1, 1, 2])
        text = self.text(f"local L{level}")
        memory_id = self.admin.local_add(text, level=level)
        self.local_ids.append(memory_id)
        if level == 0:
            self.private.add(text)
        self.enqueue(memory_id)

    def cloud_add(self) -> None:
        self.admin.cloud_add(self.text("cloud"))

    def local_edit(self) -> None:
        shared = [m for m in self.live_local() if m["text"] not in self.private]
        if shared:
            memory = self.rng.choice(shared)
            self.admin.local_edit(memory["id"], self.text("local edit"))
            self.enqueue(memory["id"])

    def cloud_edit(self) -> None:
        memories = self.admin.cloud_memories()
        if memories:
            self.admin.cloud_edit(self.rng.choice(memories)["id"], self.text("cloud edit"))

    def local_delete(self) -> None:
        live = self.live_local()
        if live:
            memory = self.rng.choice(live)
            self.admin.local_delete(memory["id"])
            self.enqueue(memory["id"], "delete")

    def cloud_delete(self) -> None:
        memories = self.admin.cloud_memories()
        if memories:
            self.admin.cloud_delete(self.rng.choice(memories)["id"])

    def weather(self) -> None:
        """Turn flaky mem0 (random 500s) and queued adds on or off."""
        flaky = self.rng.random() < 0.5
        # only memsyncd's own writes and exactly-once look-ups carry memsync_local_id
        self.admin.fault(fault=None, fail_rate=0.25 if flaky else 0.0, seed=self.rng.randrange(1000),
                         match="memsync_local_id")
        self.admin.add_mode(self.rng.choice(["immediate", "queued"]), delay_ms=self.rng.choice([0, 30]))

    async def sync(self) -> None:
        report = await self.syncer.run(SyncMode.FULL, reconcile=self.rng.random() < 0.3)
        assert report.exit_code in (0, 1), report.to_json()  # 1: some entries failed and stay queued
        self.track_pulled()
        self.check_invariants()

    async def resolve_one(self) -> None:
        conflicts = self.syncer.conflicts()
        if conflicts and self.rng.random() < 0.7:
            keep = self.rng.choice([Keep.LOCAL, Keep.CLOUD, Keep.BOTH, Keep.TEXT])
            try:
                await self.syncer.resolve(self.rng.choice(conflicts).id, keep,
                                          self.text("merged") if keep is Keep.TEXT else None)
            except ConflictError:
                pass  # a side changed since the last sync: refreshed, resolved later (asserted in converge)
            except RemoteError:
                pass  # flaky weather: the conflict stays open and is resolved later
            self.track_pulled()

    def track_pulled(self) -> None:
        for mapping in self.syncer.state.mappings():
            if mapping.local_id not in self.local_ids:
                self.local_ids.append(mapping.local_id)

    # --- invariants ----------------------------------------------------------------------

    def check_invariants(self) -> None:
        cloud = self.admin.cloud_memories()
        leaked = self.private & {m["memory"] for m in cloud}
        assert not leaked, f"level-0 memories reached the cloud: {leaked}"
        origins = Counter((m.get("metadata") or {}).get("memsync_local_id") for m in cloud)
        origins.pop(None, None)
        duplicated = {local_id: n for local_id, n in origins.items() if n > 1}
        assert not duplicated, f"local memories with several cloud copies: {duplicated}"

    async def converge(self) -> None:
        self.admin.fault(fault=None)
        wait_until(self.admin.cloud_events_settled, timeout=10, what="queued cloud adds to finish")
        for _ in range(5):
            for conflict in self.syncer.conflicts():
                await self.syncer.resolve(conflict.id, Keep.LOCAL)
            await self.syncer.run(SyncMode.FULL, reconcile=True)
            self.track_pulled()
            if not self.syncer.conflicts():
                break
        assert not self.syncer.conflicts()
        assert self.syncer.queue.read().pending == []
        shared_local = Counter(m["text"] for m in self.live_local() if m["text"] not in self.private)
        shared_cloud = Counter(m["memory"] for m in self.admin.cloud_memories())
        assert shared_local == shared_cloud
        self.check_invariants()


OPERATIONS = ["local_add", "local_add", "cloud_add", "local_edit", "cloud_edit", "local_delete", "cloud_delete",
              "sync", "sync", "resolve_one", "weather"]


@pytest.mark.parametrize("seed", range(int(os.environ.get("MEMSYNC_HISTORY_SEEDS", "8"))))
def test_random_history_keeps_the_invariants(tmp_path: Path, servers: RunningEmulators, seed: int) -> None:
    """No leak and no duplicate after any sync; both sides agree once conflicts are resolved."""
    history = History(tmp_path, servers, seed)

    async def play() -> None:
        try:
            for _ in range(40):
                operation = getattr(history, history.rng.choice(OPERATIONS))
                result = operation()
                if asyncio.iscoroutine(result):
                    await result
            await history.sync()
            await history.converge()
        finally:
            await history.syncer.aclose()
            history.admin.close()

    asyncio.run(play())
