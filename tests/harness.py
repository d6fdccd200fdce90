"""Test harness: the emulators, memsyncctl and the daemon as real subprocesses on loopback / Unix sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

API_KEY = "m0-test-key-0123456789abcdefghij"
USER = "alice"
PROC_TIMEOUT = 60.0


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment for subprocesses: no inherited key, no real root, telemetry off."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMSYNC_", "MEM0_", "NOTIFY_SOCKET", "WATCHDOG_", "CREDENTIALS_DIRECTORY"))}
    env["MEM0_TELEMETRY"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Emulators:
    """A running ``memsyncd emulate`` process and admin helpers for both services."""

    proc: subprocess.Popen[str]
    openmemory: str
    mem0: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    # --- OpenMemory side (no auth) ---
    def local_add(self, text: str, level: int | None = None, **meta: Any) -> str:
        metadata = dict(meta)
        if level is not None:
            metadata["level"] = level
        r = self.http.post(f"{self.openmemory}/api/v1/memories/",
                           json={"user_id": USER, "text": text, "metadata": metadata, "infer": False,
                                 "app": "claude"})
        r.raise_for_status()
        return str(r.json()["id"])

    def local_get(self, memory_id: str) -> dict[str, Any]:
        r = self.http.get(f"{self.openmemory}/api/v1/memories/{memory_id}")
        r.raise_for_status()
        return dict(r.json())

    def local_edit(self, memory_id: str, text: str) -> None:
        self.http.put(f"{self.openmemory}/api/v1/memories/{memory_id}",
                      json={"memory_content": text, "user_id": USER}).raise_for_status()

    def local_delete(self, memory_id: str) -> None:
        self.http.request("DELETE", f"{self.openmemory}/api/v1/memories/",
                          json={"memory_ids": [memory_id], "user_id": USER}).raise_for_status()

    def local_texts(self) -> list[str]:
        r = self.http.post(f"{self.openmemory}/api/v1/memories/filter",
                           json={"user_id": USER, "page": 1, "size": 100})
        r.raise_for_status()
        return sorted(item["content"] for item in r.json()["items"])

    # --- mem0 side (with the key) ---
    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {API_KEY}"}

    def cloud_add(self, text: str, **metadata: Any) -> str:
        r = self.http.post(f"{self.mem0}/v3/memories/add/", headers=self.auth,
                           json={"messages": [{"role": "user", "content": text}], "user_id": USER,
                                 "infer": False, "metadata": metadata})
        r.raise_for_status()
        return str(r.json()["results"][0]["id"])

    def cloud_edit(self, memory_id: str, text: str) -> None:
        self.http.put(f"{self.mem0}/v1/memories/{memory_id}/", headers=self.auth,
                      json={"text": text}).raise_for_status()

    def cloud_delete(self, memory_id: str) -> None:
        self.http.delete(f"{self.mem0}/v1/memories/{memory_id}/", headers=self.auth).raise_for_status()

    def cloud_memories(self) -> list[dict[str, Any]]:
        r = self.http.get(f"{self.mem0}/_admin/state")
        r.raise_for_status()
        body = r.json()
        return [m for m in body["memories"] if not m.get("deleted")]

    def cloud_texts(self) -> list[str]:
        return sorted(m["memory"] for m in self.cloud_memories())

    # --- admin ---
    def requests(self, service: str = "mem0") -> list[dict[str, Any]]:
        r = self.http.get(f"{getattr(self, service)}/_admin/requests")
        r.raise_for_status()
        body = r.json()
        return list(body["requests"] if isinstance(body, dict) else body)

    def clear_requests(self, service: str = "mem0") -> None:
        self.http.delete(f"{getattr(self, service)}/_admin/requests").raise_for_status()

    def fault(self, service: str = "mem0", **spec: Any) -> None:
        self.http.post(f"{getattr(self, service)}/_admin/fault", json=spec).raise_for_status()

    def add_mode(self, mode: str, delay_ms: int = 50) -> None:
        self.http.post(f"{self.mem0}/_admin/add_mode", json={"mode": mode, "delay_ms": delay_ms}).raise_for_status()

    def stop(self) -> None:
        self.http.close()
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Stop a child process, escalating to SIGKILL; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@contextlib.contextmanager
def running_emulators(*extra: str) -> Iterator[Emulators]:
    """Start ``memsyncd emulate`` on free loopback ports and wait for its READY line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memsyncd", "emulate", "--openmemory-port", "0", "--mem0-port", "0",
         "--api-key", API_KEY, "--user", USER, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("EMULATORS READY "):
            raise RuntimeError(f"emulators did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        urls = json.loads(line[len("EMULATORS READY "):])
        emu = Emulators(proc, urls["openmemory"], urls["mem0"])
        yield emu
    finally:
        stop_process(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def make_root(root: Path, emu: Emulators, *, enabled: bool = True, **sync: Any) -> Path:
    """Write a config.json for ``root`` pointing at the emulators."""
    config = {
        "local": {"url": emu.openmemory, "user_id": USER},
        "cloud": {"enabled": enabled, "url": emu.mem0, "user_id": USER},
        "sync": {"default_level": 0, "debounce_ms": 50, **sync},
    }
    path = root / ".claude" / "memory" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return root


def ctl(root: Path, *args: str, key: str | None = API_KEY, stdin: str | None = None,
        timeout: float = PROC_TIMEOUT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run memsyncctl as a subprocess for ``root``."""
    extra = dict(env)
    if key is not None:
        extra["MEM0_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "memsyncd.ctl", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, env=base_env(**extra), input=stdin)


def queue_path(root: Path) -> Path:
    return root / ".claude" / "session" / "sync-queue.json"


def read_queue(root: Path) -> dict[str, Any]:
    path = queue_path(root)
    return json.loads(path.read_text()) if path.exists() else {"pending": [], "sync_errors": [], "last_sync": None}


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
