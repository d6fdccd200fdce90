"""Chaos: kill -9 at random moments while the daemon pushes, and while a one-shot client or the daemon pulls.

Default run: 5 kills over 200 memories each way. ``MEMSYNC_CHAOS_FULL=1``: 30 push kills over 1,000
memories and 10 pull kills over 1,000. Kill instants come from a seeded RNG (``MEMSYNC_CHAOS_SEED``,
default 8): a progress threshold drawn at random, then a random instant within one request's latency,
so kills land before, inside and after the add that a durable push intent guards.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chaos_checks import (
    FULL,
    TrafficWatch,
    Transcript,
    assert_no_level0_in_traffic,
    assert_no_loss_no_dup,
    cloud_memories,
    count_cloud,
    count_local,
    local_memories,
    scan_root,
    seed_local,
    start_served,
    with_prefix,
)
from harness import API_KEY, Emulators, base_env, ctl, fill_queue, read_queue, start_daemon, wait_for

SEED = int(os.environ.get("MEMSYNC_CHAOS_SEED", "8"))
PUSH_MEMORIES, PUSH_KILLS = (1000, 30) if FULL else (200, 5)
PULL_MEMORIES, PULL_KILLS = (1000, 10) if FULL else (200, 5)
LATENCY_MS = 25

pytestmark = pytest.mark.timeout(900 if FULL else 120)


def _drained(root: Path) -> bool:
    doc = read_queue(root)
    return not doc["pending"] and not doc["sync_errors"]


def test_kill_9_during_push_loses_and_duplicates_nothing(clean_root: Path, emu: Emulators) -> None:
    """SIGKILL the pushing daemon at random moments, restart it each time; at the end every level ≥ 1
    memory is in the cloud exactly once, no level-0 byte was sent, no traceback, no key anywhere."""
    root, rng, prefix = clean_root, random.Random(SEED), "killpush"
    seeded = seed_local(emu, prefix, PUSH_MEMORIES)
    watch = TrafficWatch(emu)
    fill_queue(root, seeded.queued)
    emu.fault(latency_ms=LATENCY_MS)
    thresholds = sorted(rng.sample(range(1, PUSH_MEMORIES * 9 // 10), PUSH_KILLS))
    progress: list[int] = []
    for threshold in thresholds:
        daemon = start_daemon(root)
        try:
            wait_for(lambda t=threshold: count_cloud(emu, prefix) >= t, timeout=120)
            time.sleep(rng.uniform(0, LATENCY_MS / 1000))  # the kill instant: anywhere inside a request
        finally:
            daemon.stop(signal.SIGKILL)
        assert daemon.proc.returncode == -signal.SIGKILL
        progress.append(count_cloud(emu, prefix))
        watch.collect()
    # every kill but perhaps the last (a loaded machine may notice its threshold late) hit a running push
    assert len(progress) == PUSH_KILLS and sum(p < PUSH_MEMORIES for p in progress) >= PUSH_KILLS - 1, progress
    emu.fault(latency_ms=0)
    daemon = start_daemon(root)
    try:
        wait_for(lambda: _drained(root), timeout=300 if FULL else 60)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    checked = assert_no_loss_no_dup(with_prefix(local_memories(emu), prefix, "content"),
                                    with_prefix(cloud_memories(emu), prefix, "memory"), queued=seeded.queued)
    assert checked.pushed == PUSH_MEMORIES and checked.private == len(seeded.private)
    requests = assert_no_level0_in_traffic(watch.collect(), seeded.private)
    files = scan_root(root, API_KEY)
    assert files >= PUSH_KILLS + 3  # every daemon log, the queue, the DB
    print(f"push chaos: {PUSH_KILLS} kills survived at cloud counts {progress}; {checked.pushed} pushed exactly "
          f"once, {checked.private} level-0 kept local; {requests} mem0 requests and {files} files checked")


def _pull_one_shot(root: Path, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as sink:
        return subprocess.Popen([sys.executable, "-m", "memsyncd.ctl", "--root", str(root), "--no-daemon", "sync",
                                 "--pull"], stdout=sink, stderr=sink, env=base_env(MEM0_API_KEY=API_KEY))


def _pull_via_daemon(root: Path, socket: Path, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as sink:
        return subprocess.Popen([sys.executable, "-m", "memsyncd.ctl", "--root", str(root), "--socket", str(socket),
                                 "sync", "--pull"], stdout=sink, stderr=sink, env=base_env(MEM0_API_KEY=API_KEY))


def test_kill_9_during_pull_loses_and_duplicates_nothing(clean_root: Path, emu: Emulators) -> None:
    """SIGKILL a pull at random moments — the one-shot ``memsyncctl sync --pull`` and the daemon serving it,
    in turns; at the end every cloud memory is local exactly once and a full sync echoes nothing back."""
    root, rng, prefix = clean_root, random.Random(SEED + 1), "killpull"
    cloud_ids = [emu.cloud_add(f"{prefix} {i:05d}", level=1 + i % 2) for i in range(PULL_MEMORIES)]
    watch = TrafficWatch(emu)
    transcript = Transcript()
    emu.fault("openmemory", latency_ms=LATENCY_MS)
    thresholds = sorted(rng.sample(range(1, PULL_MEMORIES * 9 // 10), PULL_KILLS))
    progress: list[int] = []
    late_kills = 0
    for n, threshold in enumerate(thresholds):
        out = root / f"pull-{n}.out"
        daemon = start_served(root) if n % 2 else None
        client = _pull_via_daemon(root, daemon.socket, out) if daemon else _pull_one_shot(root, out)
        victim = daemon.proc if daemon else client
        try:
            wait_for(lambda t=threshold, v=victim: count_local(emu, prefix) >= t or v.poll() is not None,
                     timeout=120)
            time.sleep(rng.uniform(0, LATENCY_MS / 1000))
            assert victim.poll() is None, f"the pull ended before kill {n}: {out.read_text()[-2000:]}"
            victim.send_signal(signal.SIGKILL)
            victim.wait(15)
            client.wait(30)  # a client whose daemon died must end too, with a message (checked below)
        finally:
            for proc in (client, daemon.proc if daemon else None):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        if daemon and client.returncode == 0:
            late_kills += 1  # the daemon answered the pull just before the kill landed: no kill mid-pull this time
        elif daemon:
            assert client.returncode is not None, out.read_text()
            assert out.read_text().strip(), "the client of a killed daemon printed nothing"
        progress.append(count_local(emu, prefix))
        watch.collect()
    assert late_kills <= PULL_KILLS // 2, f"{late_kills} of {PULL_KILLS} kills came after the pull ended"
    assert progress[0] < PULL_MEMORIES, progress
    emu.fault("openmemory", latency_ms=0)
    final = transcript.add("sync --pull", ctl(root, "sync", "--pull", timeout=300))
    assert final.returncode == 0, final.stdout + final.stderr
    full = transcript.add("sync", ctl(root, "sync", timeout=300))
    assert full.returncode == 0 and "PUSH: 0 memories synced to cloud" in full.stdout, full.stdout + full.stderr
    checked = assert_no_loss_no_dup(with_prefix(local_memories(emu), prefix, "content"),
                                    with_prefix(cloud_memories(emu), prefix, "memory"), queued=(), pulled=cloud_ids)
    assert checked.pulled == PULL_MEMORIES
    assert [r for r in watch.collect() if r["method"] != "GET" and "/v3/memories/add/" in r["path"]] == []
    outputs = transcript.check(API_KEY)
    files = scan_root(root, API_KEY)
    print(f"pull chaos: {PULL_KILLS} kills survived at local counts {progress}; {checked.pulled} pulled exactly "
          f"once; {outputs} outputs and {files} files checked")


def test_queue_shrinks_while_a_long_push_runs(clean_root: Path, emu: Emulators) -> None:
    """Progress is durable as it happens: pushed entries leave the queue before the run ends."""
    root, prefix, count = clean_root, "shrink", 120
    seeded = seed_local(emu, prefix, count, private_every=0)
    fill_queue(root, seeded.queued)
    emu.fault(latency_ms=LATENCY_MS)
    daemon = start_served(root)
    try:
        shrank_early = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and count_cloud(emu, prefix) < count:
            if len(read_queue(root)["pending"]) < count and count_cloud(emu, prefix) < count:
                shrank_early = True
                break
            time.sleep(0.05)
        assert shrank_early, "the queue still held every entry when the last memory reached the cloud"
        wait_for(lambda: _drained(root), timeout=60)
    finally:
        daemon.stop()
