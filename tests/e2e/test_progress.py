"""Sync progress on a terminal: nothing for short phases, done/total and rate once a phase runs long."""

from __future__ import annotations

import argparse
import io
import os
import pty
import select
import subprocess
import sys
import threading
from pathlib import Path

from harness import API_KEY, Emulators, base_env, fill_queue, make_root, running_daemon, wait_for

from memsyncd.cli.progress import SyncProgress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_display_for_json_or_pipes() -> None:
    """--json and a stderr that is not a terminal get no progress display at all."""
    assert SyncProgress.for_command(argparse.Namespace(json=True)) is None
    assert SyncProgress.for_command(argparse.Namespace(json=False)) is None  # pytest's stderr is not a TTY


def test_short_phases_print_nothing() -> None:
    """A phase that ends before the delay leaves the terminal untouched."""
    out = FakeTerminal()
    progress = SyncProgress(out, delay=60)
    for done in range(5):
        progress.update("push", done + 1, 5)
    progress.close()
    assert out.getvalue() == ""


def test_long_phases_show_counts_per_phase() -> None:
    """Without a delay each phase gets its bar with done/total; an unknown total still counts up."""
    out = FakeTerminal()
    progress = SyncProgress(out, delay=0, min_interval=0)
    progress.update("push", 3, 10)
    progress.update("push", 10, 10)
    progress.update("pull", 7, None)
    progress.close()
    text = out.getvalue()
    assert "push" in text and "10/10" in text
    assert "pull" in text and "7" in text


def _queue_many(root: Path, emu: Emulators, count: int) -> None:
    fill_queue(root, [emu.local_add(f"progress: memory {i}", level=1) for i in range(count)])


def test_a_long_one_shot_sync_shows_progress_on_a_terminal(root: Path, emu: Emulators) -> None:
    """stderr on a terminal: the push's bar with done/total appears; stdout keeps the seed's block alone."""
    make_root(root, emu, concurrency=1)
    _queue_many(root, emu, 12)
    emu.fault("mem0", fault=None, latency_ms=150)  # about 2 s of pushing: past the 1 s display delay
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "memsyncd.ctl", "--root", str(root), "--no-daemon", "sync",
                               "--push"], stdout=subprocess.PIPE, stderr=terminal, text=True, timeout=60,
                              env=base_env(MEM0_API_KEY=API_KEY))
        os.close(terminal)
        shown = b""
        while select.select([controller], [], [], 0.2)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        emu.fault("mem0", fault=None, latency_ms=0)
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("PUSH: 12 memories synced to cloud")
    text = shown.decode(errors="replace")
    assert "push" in text and "/12" in text, text


def test_the_daemon_reports_its_runs_progress_in_health(root: Path, emu: Emulators) -> None:
    """While a sync requested over the socket runs, /v1/health carries its phase, done and total."""
    make_root(root, emu, concurrency=1)
    with running_daemon(root) as daemon:
        daemon.api("POST", "/v1/pause")
        wait_for(lambda: not daemon.health()["busy"])  # type: ignore[index]
        _queue_many(root, emu, 10)
        emu.fault("mem0", fault=None, latency_ms=100)
        seen: list[dict[str, object]] = []
        try:
            runner = threading.Thread(target=lambda: daemon.api("POST", "/v1/sync", json={"mode": "push"}))
            runner.start()

            def progressing() -> bool:
                shown = (daemon.health() or {}).get("progress")
                if shown:
                    seen.append(shown)
                return bool(shown) and shown["done"] >= 2  # type: ignore[index, operator]

            wait_for(progressing, timeout=30)
            runner.join(60)
        finally:
            emu.fault("mem0", fault=None, latency_ms=0)
        assert seen[-1]["phase"] == "push" and seen[-1]["total"] == 10
        assert (daemon.health() or {}).get("progress") is None, "no progress once the run is over"
