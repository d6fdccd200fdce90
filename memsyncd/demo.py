"""``memsyncd demo``: a self-contained walk-through on loopback emulators, a throw-away root and a real daemon.

No accounts and no network: the emulators listen on free 127.0.0.1 ports, the key
is a throw-away demo key, and everything is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from memsyncd.ctl import main as ctl_main
from memsyncd.emulators.admin import EmulatorAdmin, wait_until
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.errors import EXIT_OK
from memsyncd.store.trust import TRUSTED_ROOTS_ENV

DEMO_KEY = "demo-key-not-a-secret"
DEMO_USER = "demo"
STEP_TIMEOUT = 8.0


class DemoFailed(Exception):
    """Raised when a demo step does not reach the expected state."""


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.rstrip("\n").splitlines())


def _wait(what: str, predicate: Callable[[], Any], timeout: float = STEP_TIMEOUT) -> Any:
    try:
        return wait_until(predicate, timeout=timeout, what=what)
    except TimeoutError as exc:
        raise DemoFailed(str(exc)) from None


class Demo:
    """The demo's state: emulators, root, daemon process."""

    def __init__(self, root: Path, emu: RunningEmulators, admin: EmulatorAdmin) -> None:
        self.root = root
        self.emu = emu
        self.admin = admin
        self.socket = root / "memsyncd.sock"
        self.daemon: subprocess.Popen[bytes] | None = None

    def ctl(self, *args: str, show: bool = True) -> tuple[int, str]:
        """Run a memsyncctl command in-process (it talks to the daemon) and show its output."""
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = ctl_main(["--root", str(self.root), "--socket", str(self.socket), *args])
        if show:
            _say(f"  $ memsyncctl {' '.join(args)}   (exit {code})")
            sys.stdout.write(_indent(buffer.getvalue()))
        return code, buffer.getvalue()

    def write_config(self) -> None:
        config = {
            "local": {"url": self.emu.openmemory_url, "user_id": DEMO_USER},
            "cloud": {"enabled": True, "url": self.emu.mem0_url, "user_id": DEMO_USER},
            "sync": {"default_level": 0, "debounce_ms": 100, "pull_interval_seconds": 3600},
        }
        path = self.root / ".claude" / "memory" / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def start_daemon(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSYNC_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env["MEM0_API_KEY"] = DEMO_KEY
        env[TRUSTED_ROOTS_ENV] = str(self.root)  # the demo wrote this root's config itself
        log = open(self.root / "memsyncd.log", "wb")  # noqa: SIM115 - closed with the process
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "memsyncd", "run", "--root", str(self.root), "--socket", str(self.socket),
             "--log-format", "json"], stdout=log, stderr=log, env=env)
        log.close()
        _wait("the daemon's control socket", lambda: self.socket.exists() and self.ctl("metrics", show=False)[0] == 0)

    def stop_daemon(self) -> int | None:
        if self.daemon is None or self.daemon.poll() is not None:
            return self.daemon.returncode if self.daemon else None
        self.daemon.terminate()
        try:
            return self.daemon.wait(12)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            return self.daemon.wait(5)


@contextlib.contextmanager
def _demo_env(root: Path) -> Iterator[None]:
    """The demo's key, and trust of its own throw-away root (through the environment: nothing is recorded)."""
    saved = {k: os.environ.get(k) for k in ("MEM0_API_KEY", "MEMSYNC_ROOT", TRUSTED_ROOTS_ENV)}
    os.environ["MEM0_API_KEY"] = DEMO_KEY
    os.environ[TRUSTED_ROOTS_ENV] = str(root)
    os.environ.pop("MEMSYNC_ROOT", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_demo(keep: bool = False) -> int:
    """The walk-through; returns the exit code."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="memsyncd-demo-"))
    _say("memsyncd demo: local OpenMemory <-> mem0 cloud, on loopback emulators (no accounts, no network)\n")
    with _demo_env(root), RunningEmulators(api_key=DEMO_KEY, user=DEMO_USER) as emu:
        admin = EmulatorAdmin(emu.openmemory_url, emu.mem0_url, DEMO_KEY, DEMO_USER)
        demo = Demo(root, emu, admin)
        try:
            _say(f"1. Emulators: OpenMemory {emu.openmemory_url}, mem0 {emu.mem0_url}")
            demo.write_config()
            _say(f"2. Throw-away root {root}: config written (sync.default_level 0: unlabelled memories stay local)")
            demo.start_daemon()
            assert demo.daemon is not None
            _say(f"3. Daemon running (pid {demo.daemon.pid}), control socket {demo.socket}\n")

            _say("4. Three memories are written locally and queued, as the Claude Code hook does:")
            memories = [("prefers tabs over spaces (private, level 0)", 0), ("project uses Python 3.11", 1),
                        ("deploys go through the staging cluster", 2)]
            ids = []
            for text, level in memories:
                ids.append(admin.local_add(text, level=level))
                demo.ctl("enqueue", ids[-1], show=False)
                _say(f"   + level {level}: {text!r}")
            t0 = time.monotonic()
            _wait("the daemon's push", lambda: len(admin.cloud_memories()) == 2)
            leaked = [r for r in admin.requests() if "prefers tabs" in json.dumps(r) or ids[0] in json.dumps(r)]
            _say(f"   -> the daemon pushed on its own in {time.monotonic() - t0:.2f} s; the cloud has "
                 f"{admin.cloud_texts()}")
            _say(f"   -> requests to mem0 mentioning the level-0 memory: {len(leaked)}\n")
            if leaked:
                raise DemoFailed("a level-0 memory reached the cloud")

            _say("5. Another device adds a memory in the cloud; pull it:")
            admin.cloud_add("on-call rotation changes on Mondays")
            demo.ctl("sync", "--pull")
            _say()

            _say("6. The same memory is edited on both sides before the next sync:")
            cloud_id = next(m["id"] for m in admin.cloud_memories() if m["memory"] == "project uses Python 3.11")
            admin.local_edit(ids[1], "project uses Python 3.12")
            admin.cloud_edit(cloud_id, "project uses Python 3.13")
            demo.ctl("pause", show=False)  # keep the daemon from racing the demo's own sync
            demo.ctl("enqueue", ids[1], show=False)
            demo.ctl("sync")
            code, listing = demo.ctl("conflicts", "list", "--json", show=False)
            conflict_id = str(json.loads(listing)[0]["id"])
            demo.ctl("conflicts", "show", conflict_id)
            _say("   Nothing was overwritten. Keep both versions, as two memories on both sides:")
            demo.ctl("conflicts", "resolve", conflict_id, "--keep", "both")
            demo.ctl("resume", show=False)
            _say(f"   local: {admin.local_texts()}")
            _say(f"   cloud: {admin.cloud_texts()}\n")

            _say("7. Status:")
            demo.ctl("status")
            stopped = demo.stop_daemon()
            _say(f"8. Daemon stopped (exit {stopped}); emulators stopped. Done in {time.monotonic() - started:.1f} s.")
            if keep:  # --keep is for looking at the files: say where they are
                _say(f"   Kept the throw-away root for inspection: {root} (remove it with 'rm -r {root}')")
            return EXIT_OK if stopped == 0 else 1
        except DemoFailed as exc:
            _say(f"DEMO FAILED: {exc}")
            log = root / "memsyncd.log"
            if log.exists():
                sys.stderr.write(log.read_text(errors="replace")[-4000:])
            return 1
        finally:
            demo.stop_daemon()
            admin.close()
            if not keep:
                shutil.rmtree(root, ignore_errors=True)


def demo_main(argv: Sequence[str]) -> int:
    """Entry point of ``memsyncd demo``."""
    parser = argparse.ArgumentParser(prog="memsyncd demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the throw-away root for inspection")
    args = parser.parse_args(list(argv))
    return run_demo(keep=args.keep)
