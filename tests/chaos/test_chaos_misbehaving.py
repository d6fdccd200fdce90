"""Chaos: servers that misbehave rather than fail (issue 15 item 9).

A listing that repeats its pages or whose ``next`` never ends, an answer far larger than any sane
one, an answer trickling in slower than its deadline, a redirect, and a memory text larger than the
cloud accepts. Each must end in a clear error (never a hang, never a traceback), and once the server
behaves again a sync must leave both stores consistent: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from chaos_checks import assert_no_traceback, cloud_memories, human_text, local_memories, one_shot, with_prefix
from harness import API_KEY, Emulators, base_env, make_root, read_queue

from memsyncd.models import QueueEntry, format_ts, utc_now
from memsyncd.store.paths import Paths
from memsyncd.store.queue import QueueStore

pytestmark = pytest.mark.timeout(180)

LISTING = "/v3/memories/?"  # matches the mem0 list route only (add and search have longer paths)


def _enqueue(root: Path, memory_id: str) -> None:
    paths = Paths(root)
    QueueStore(paths.queue, paths.queue_lock).enqueue(QueueEntry(memory_id, "push", format_ts(utc_now())))


def _assert_pulled_once(emu: Emulators, prefix: str, expected: int) -> None:
    local = [m["content"] for m in with_prefix(local_memories(emu), prefix, "content")]
    cloud = [m["memory"] for m in with_prefix(cloud_memories(emu), prefix, "memory")]
    assert len(cloud) == expected
    assert sorted(local) == sorted(cloud), (local, cloud)  # every cloud memory local exactly once


@pytest.mark.parametrize(("fault", "words"), [
    ("repeat-page", "repeats pages"),
    ("endless-next", "repeats pages"),
    ("huge-body", "larger than 16 MB"),
    ("redirect", "never follows redirects"),
    ("trickle", "did not send its whole answer within"),
])
def test_misbehaving_listing_ends_in_a_clear_error_and_recovers(clean_root: Path, emu: Emulators, fault: str,
                                                                 words: str) -> None:
    """sync --pull against a misbehaving mem0 listing: a bounded run, a readable error, then a clean recovery."""
    make_root(clean_root, emu, attempts_per_run=2, request_timeout_seconds=1.5)
    prefix = f"misbehave-{fault}:"
    for n in range(5):
        emu.cloud_add(f"{prefix} {n}")
    emu.fault("mem0", fault=fault, match=LISTING)
    t0 = time.monotonic()
    try:
        result = one_shot(clean_root, "sync", "--pull")
    finally:
        emu.fault("mem0", fault=None)
    elapsed = time.monotonic() - t0
    text = human_text(result)
    assert_no_traceback(result.stdout + result.stderr, f"sync --pull under {fault}")
    assert result.returncode in (1, 2), text
    assert words in text, text
    assert elapsed < 30, elapsed
    again = one_shot(clean_root, "sync")
    assert again.returncode == 0, human_text(again)
    _assert_pulled_once(emu, prefix, 5)


def test_endless_next_is_stopped_with_more_than_one_page(clean_root: Path, emu: Emulators) -> None:
    """A real multi-page listing whose `next` never ends: stopped when pages start again, all pulled once after."""
    make_root(clean_root, emu, attempts_per_run=1)
    prefix = "endless-multi:"
    for n in range(230):  # three pages of 100
        emu.cloud_add(f"{prefix} {n:03d}")
    emu.fault("mem0", fault="endless-next", match=LISTING)
    try:
        result = one_shot(clean_root, "sync", "--pull")
    finally:
        emu.fault("mem0", fault=None)
    assert_no_traceback(result.stdout + result.stderr)
    assert result.returncode == 1 and "repeats pages" in human_text(result), human_text(result)
    assert one_shot(clean_root, "sync").returncode == 0
    _assert_pulled_once(emu, prefix, 230)


def test_a_text_larger_than_the_cloud_accepts_fails_only_its_entry(clean_root: Path, emu: Emulators) -> None:
    """mem0 refuses an over-long text with a 400: that entry fails with a clear message, the others are pushed."""
    make_root(clean_root, emu, attempts_per_run=1)
    emu.http.post(f"{emu.mem0}/_admin/limits", json={"max_text_chars": 2000}).raise_for_status()
    try:
        small = [emu.local_add(f"size-ok: {n}", level=1) for n in range(3)]
        big = emu.local_add("size-big: " + "x" * 5000, level=1)
        for memory_id in [*small, big]:
            _enqueue(clean_root, memory_id)
        result = one_shot(clean_root, "sync", "--push")
    finally:
        emu.http.post(f"{emu.mem0}/_admin/limits", json={}).raise_for_status()
    text = human_text(result)
    assert_no_traceback(result.stdout + result.stderr)
    assert result.returncode == 1, text
    assert sorted(m["memory"] for m in with_prefix(cloud_memories(emu), "size-ok:", "memory")) == \
        [f"size-ok: {n}" for n in range(3)]
    assert not with_prefix(cloud_memories(emu), "size-big:", "memory")
    queue: dict[str, Any] = read_queue(clean_root)
    errors = [e for e in queue["sync_errors"] if e.get("id") == big]
    assert errors and "too long" in json.dumps(errors), queue
    assert "too long" in text


def test_a_huge_answer_does_not_blow_up_memory(clean_root: Path, emu: Emulators) -> None:
    """A real `memsyncctl sync --pull` against a 1 GB answer stays far below it in memory (the cap is 16 MB)."""
    make_root(clean_root, emu, attempts_per_run=1)
    emu.cloud_add("huge-rss: one")
    wrapper = ("import resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)\n"
               "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    emu.fault("mem0", fault="huge-body", match=LISTING)
    try:
        measured = subprocess.run(
            [sys.executable, "-c", wrapper, sys.executable, "-m", "memsyncd.ctl", "--root", str(clean_root),
             "--no-daemon", "sync", "--pull"],
            capture_output=True, text=True, timeout=180, env=base_env(MEM0_API_KEY=API_KEY,
                                                                      XDG_RUNTIME_DIR=str(clean_root)))
    finally:
        emu.fault("mem0", fault=None)
    code, max_rss_kb = (int(part) for part in measured.stdout.split())
    assert code == 1, measured.stdout + measured.stderr
    assert max_rss_kb < 250 * 1024, f"memsyncctl peaked at {max_rss_kb // 1024} MB"
