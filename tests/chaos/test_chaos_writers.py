"""Chaos: four queue writers at once, one per supported path, while the daemon pushes.

Paths: ``memsyncctl enqueue`` through the daemon's socket, ``memsyncctl --no-daemon enqueue`` (the
file directly), ``memsyncctl hook post-tool-use`` fed Claude Code's hook JSON, and a raw writer
following SPEC 3 by hand (flock the ``.lock`` sidecar, read, append, temp file + fsync + rename).
At the end every id is in the cloud exactly once and the queue is empty.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos_checks import (
    FULL,
    TrafficWatch,
    Transcript,
    assert_no_level0_in_traffic,
    assert_no_loss_no_dup,
    cloud_memories,
    local_memories,
    scan_root,
    start_served,
    with_prefix,
)
from harness import API_KEY, Emulators, ctl, queue_path, read_queue, wait_for

from memsyncd.models import format_ts, utc_now

# ids written through each path: one memsyncctl process per id costs ~0.5 s of CPU, so the default run
# keeps the process-per-id paths short; MEMSYNC_CHAOS_FULL=1 writes 50 ids through every path.
IDS = {"daemon": 8, "no-daemon": 8, "hook": 12, "flock": 50} if not FULL else dict.fromkeys(
    ("daemon", "no-daemon", "hook", "flock"), 50)
HOOK_IDS_PER_EVENT = 1 if FULL else 4
STALL_SECONDS = 3.0  # one write of the raw writer stalls this long holding the lock (slow disk, stopped process)

pytestmark = pytest.mark.timeout(600 if FULL else 120)


def flock_writer(root: Path, ids: list[str], rng: random.Random, stall_at: int | None = None,
                 stall_after: threading.Event | None = None) -> None:
    """SPEC 3 by hand: exclusive flock on the sidecar, re-read, append, atomic replace, fsync the dir.

    Every write holds the lock up to 20 ms; write number ``stall_at`` first waits for ``stall_after``
    (so the stall overlaps the other writers), then holds the lock :data:`STALL_SECONDS`.
    """
    path = queue_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    for n, memory_id in enumerate(ids):
        if n == stall_at and stall_after is not None:
            stall_after.wait(60)
        with open(lock, "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                doc = json.loads(path.read_text()) if path.exists() else {"pending": [], "last_sync": None,
                                                                          "sync_errors": []}
                doc["pending"].append({"id": memory_id, "action": "push", "timestamp": format_ts(utc_now())})
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".raw-writer.")
                with os.fdopen(fd, "w") as handle:
                    json.dump(doc, handle, indent=2)
                    handle.flush()
                    os.fsync(handle.fileno())
                time.sleep(STALL_SECONDS if n == stall_at else rng.uniform(0, 0.02))  # a slow disk
                os.replace(tmp, path)
                dir_fd = os.open(path.parent, os.O_RDONLY)
                os.fsync(dir_fd)
                os.close(dir_fd)
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def hook_event(ids: list[str]) -> str:
    """A PostToolUse event of OpenMemory's add_memories as Claude Code sends it."""
    results = [{"id": i, "memory": f"text of {i}", "event": "ADD"} for i in ids]
    return json.dumps({"session_id": "chaos", "hook_event_name": "PostToolUse",
                       "tool_name": "mcp__openmemory__add_memories", "tool_input": {"text": "several facts"},
                       "tool_response": [{"type": "text", "text": json.dumps({"results": results})}]})


def test_four_writers_through_every_path_while_the_daemon_pushes(clean_root: Path, emu: Emulators) -> None:
    """Every id written by any of the four paths is pushed exactly once; the queue drains."""
    root, rng, prefix = clean_root, random.Random(4), "writers"
    ids = [emu.local_add(f"{prefix} {i:04d}", level=1) for i in range(sum(IDS.values()))]
    groups, start = [], 0
    for count in IDS.values():
        groups.append(ids[start:start + count])
        start += count
    watch = TrafficWatch(emu)
    transcript = Transcript()
    emu.fault(latency_ms=10)
    daemon = start_served(root)
    failures: list[str] = []
    results_lock = threading.Lock()

    def record(what: str, result: subprocess.CompletedProcess[str]) -> None:
        with results_lock:
            transcript.add(what, result)
            if result.returncode != 0:
                failures.append(f"{what}: exit {result.returncode}: {result.stdout}{result.stderr}")

    others_busy = threading.Event()

    def via_daemon() -> None:
        for n, memory_id in enumerate(groups[0]):
            if n == 2:
                others_busy.set()
            record(f"enqueue {memory_id} via daemon", daemon.ctl("enqueue", memory_id))
        others_busy.set()

    def without_daemon() -> None:
        for memory_id in groups[1]:
            record(f"enqueue {memory_id} --no-daemon", ctl(root, "--no-daemon", "enqueue", memory_id))

    def via_hook() -> None:
        batch = groups[2]
        for start in range(0, len(batch), HOOK_IDS_PER_EVENT):
            chunk = batch[start:start + HOOK_IDS_PER_EVENT]
            record(f"hook {chunk}", ctl(root, "hook", "post-tool-use", stdin=hook_event(chunk)))

    def raw() -> None:
        flock_writer(root, groups[3], rng, stall_at=len(groups[3]) // 3, stall_after=others_busy)

    errors: list[BaseException] = []

    def run(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run, args=(w,)) for w in (via_daemon, without_daemon, via_hook, raw)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        assert not errors and not failures, (errors, failures[:5])
        assert daemon.health() is not None, "the daemon stopped answering"
        wait_for(lambda: not read_queue(root)["pending"] and not read_queue(root)["sync_errors"],
                 timeout=120 if FULL else 45)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    transcript.add_text("daemon log", daemon.log())
    checked = assert_no_loss_no_dup(with_prefix(local_memories(emu), prefix, "content"),
                                    with_prefix(cloud_memories(emu), prefix, "memory"), queued=ids)
    assert checked.pushed == sum(IDS.values())
    assert_no_level0_in_traffic(watch.collect(), [])
    transcript.check(API_KEY)
    scan_root(root, API_KEY)


def answer_time(socket: Path, path: str = "/v1/health", timeout: float = 1.0) -> float:
    """Seconds the daemon took to answer ``GET path``; fails the test when it takes over ``timeout``."""
    t0 = time.monotonic()
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://memsyncd",
                          timeout=timeout) as client:
            assert client.get(path).status_code == 200
    except httpx.TimeoutException:
        raise AssertionError(f"the control socket did not answer {path} within {timeout} s: "
                             "the event loop is waiting on the queue lock") from None
    return time.monotonic() - t0


def test_control_socket_answers_while_another_process_holds_the_queue_lock(clean_root: Path,
                                                                           emu: Emulators) -> None:
    """A writer stalls holding the lock: the socket keeps answering; enqueues sent meanwhile all land, once."""
    root = clean_root
    ids = [emu.local_add(f"stall {i}", level=1) for i in range(3)]
    transcript = Transcript()
    daemon = start_served(root)
    path = queue_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    answers: dict[str, Any] = {}

    def post_enqueue() -> None:
        answers["api"] = daemon.api("POST", "/v1/queue", json={"id": ids[0]})

    def ctl_enqueue() -> None:
        answers["ctl"] = daemon.ctl("enqueue", ids[1])

    clients = [threading.Thread(target=post_enqueue), threading.Thread(target=ctl_enqueue)]
    try:
        with open(path.with_name(path.name + ".lock"), "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                for client in clients:
                    client.start()
                stall_ends = time.monotonic() + STALL_SECONDS
                while time.monotonic() < stall_ends:  # all the stall long, the socket answers at once
                    answer_time(daemon.socket)
                    answer_time(daemon.socket, "/v1/metrics")
                    time.sleep(0.1)
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        for client in clients:
            client.join(60)
        transcript.add("enqueue during the stall", answers["ctl"])
        api = answers["api"]
        # 202 = queued; 503 QueueBusyError = not queued, say so and let the caller retry (never a silent loss)
        assert api.status_code in (202, 503), api.text
        if api.status_code == 503:
            assert api.json()["error"]["type"] == "QueueBusyError", api.text
            assert daemon.api("POST", "/v1/queue", json={"id": ids[0]}).status_code == 202
        assert answers["ctl"].returncode == 0, answers["ctl"]
        assert transcript.add("enqueue after the stall", daemon.ctl("enqueue", ids[2])).returncode == 0
        wait_for(lambda: sorted(t for t in emu.cloud_texts() if t.startswith("stall ")) ==
                 ["stall 0", "stall 1", "stall 2"], timeout=20)
        wait_for(lambda: not read_queue(root)["pending"])
    finally:
        daemon.stop()
    transcript.check(API_KEY)
