"""One user daemon serving many roots: registry, auto-registration, isolation, live config, SIGHUP, pair locks.

Every test runs a real ``memsyncd run`` (user mode: no ``--root``) with its own ``XDG_CONFIG_HOME``
(the registry) and ``XDG_RUNTIME_DIR`` (socket, pid and pair locks), against the shared emulators.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    API_KEY,
    USER,
    Emulators,
    base_env,
    ctl,
    hook_payload,
    read_queue,
    stop_process,
    user_daemon,
    wait_for,
    write_config,
)

from memsyncd.config import load_settings
from memsyncd.store.paths import Paths, root_id
from memsyncd.store.roots import RootRegistry


@pytest.fixture()
def dirs(tmp_path: Path, runtime: Path) -> tuple[Path, Path]:
    """A config home and a runtime dir (short path: Unix socket paths are limited to ~100 bytes)."""
    return tmp_path / "config-home", runtime


def make_project(path: Path, emu: Emulators, *, app_id: str | None = None, **sync: Any) -> Path:
    """A root whose config points at the emulators (default level 1: everything queued syncs).

    Local scans are off unless asked for: these roots share one OpenMemory user, and a scan would push
    every memory in it (earlier tests' too) into each root's own cloud scope.
    """
    config = {"local": {"url": emu.openmemory, "user_id": USER},
              "cloud": {"enabled": True, "url": emu.mem0, "user_id": USER, "app_id": app_id},
              "sync": {"default_level": 1, "debounce_ms": 50, "local_scan_interval_seconds": 0,
                       "local_full_scan_interval_seconds": 0, **sync}}
    write_config(path, config)
    return path


def in_cloud(emu: Emulators, text: str) -> bool:
    return emu.cloud_texts().count(text) == 1


def test_two_roots_a_new_root_a_broken_root_and_a_live_config_edit(emu: Emulators, tmp_path: Path,
                                                                   dirs: tuple[Path, Path]) -> None:
    """Registered roots are served; a root whose queue a client writes is registered and served without a
    restart; a broken config is reported for its root only; a config edit applies live, a bad one is refused."""
    config_home, runtime = dirs
    a, b = make_project(tmp_path / "a", emu, app_id="app-a"), make_project(tmp_path / "b", emu, app_id="app-b")
    broken = tmp_path / "broken"
    write_config(broken, "{not json")
    env = {"XDG_CONFIG_HOME": str(config_home), "XDG_RUNTIME_DIR": str(runtime)}
    for root in (a, b, broken):
        added = ctl(root, "roots", "add", str(root), **env)
        assert added.returncode == 0 and "registered" in added.stdout, added.stderr
    with user_daemon(config_home, runtime, tmp_path) as daemon:
        served = daemon.roots()
        assert set(served) == {str(a), str(b), str(broken)}
        assert served[str(broken)]["problem"]["type"] == "ConfigError"

        # each root's writes are pushed automatically
        for root, name in ((a, "a"), (b, "b")):
            memory = emu.local_add(f"many-roots: written in {name}")
            assert daemon.ctl(root, "enqueue", memory).returncode == 0
        wait_for(lambda: in_cloud(emu, "many-roots: written in a") and in_cloud(emu, "many-roots: written in b"))

        # the broken root is reported for itself; the others carry on
        status = daemon.ctl(broken, "status")
        assert status.returncode == 2 and "config" in status.stderr.lower() and "Traceback" not in status.stderr
        everything = daemon.ctl(a, "status", "--all")
        assert everything.returncode == 1, everything.stdout
        assert str(broken) in everything.stdout and "Needs attention:" in everything.stdout
        assert everything.stdout.count(" ok\n") == 2

        # a root nobody registered: the hook writes its queue and tells the daemon, which serves it
        c = make_project(tmp_path / "c", emu, app_id="app-c")
        memory = emu.local_add("many-roots: written in c, a new root")
        hook = daemon.ctl(c, "hook", "post-tool-use", stdin=hook_payload(memory))
        assert hook.returncode == 0, hook.stderr
        wait_for(lambda: in_cloud(emu, "many-roots: written in c, a new root"))
        assert RootRegistry(config_home / "memsyncd" / "roots.json").contains(c)

        # a live edit of a's config: default level 1 -> 0, so an unmarked memory now stays local
        reloads = len(daemon.log_events("root.serving"))
        write_config(a, {"local": {"url": emu.openmemory, "user_id": USER},
                         "cloud": {"enabled": True, "url": emu.mem0, "user_id": USER, "app_id": "app-a"},
                         "sync": {"default_level": 0, "debounce_ms": 50}})
        wait_for(lambda: len(daemon.log_events("root.serving")) > reloads)
        private = emu.local_add("many-roots: unmarked after the edit, stays local")
        assert daemon.ctl(a, "enqueue", private).returncode == 0
        wait_for(lambda: not read_queue(a)["pending"])
        assert "many-roots: unmarked after the edit, stays local" not in emu.cloud_texts()

        # a bad edit is refused: the last good config stays in force and the root keeps syncing
        write_config(a, '{"sync": {"default_level": "many"}}')
        wait_for(lambda: daemon.roots()[str(a)]["problem"] is not None)
        marked = emu.local_add("many-roots: marked level 1 after a bad edit")
        assert daemon.ctl(a, "enqueue", marked, "--level", "1").returncode == 0
        wait_for(lambda: in_cloud(emu, "many-roots: marked level 1 after a bad edit"))
        assert emu.cloud_texts().count("many-roots: written in a") == 1


def test_sighup_rereads_the_registry(emu: Emulators, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """A root written into roots.json by hand is served after SIGHUP; one removed is no longer served."""
    config_home, runtime = dirs
    registry = RootRegistry(config_home / "memsyncd" / "roots.json")
    first = make_project(tmp_path / "first", emu, app_id="hup-1")
    registry.add(first)
    with user_daemon(config_home, runtime, tmp_path) as daemon:
        later = make_project(tmp_path / "later", emu, app_id="hup-2")
        registry.add(later)
        registry.remove(first)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: set(daemon.roots()) == {str(later)})
        memory = emu.local_add("many-roots: after SIGHUP")
        assert daemon.ctl(later, "enqueue", memory).returncode == 0
        wait_for(lambda: in_cloud(emu, "many-roots: after SIGHUP"))
        assert daemon.proc.poll() is None, "SIGHUP reloads; it does not stop the daemon"


def test_twenty_roots_one_daemon(emu: Emulators, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """Twenty roots, each written through the hook: every memory reaches the cloud exactly once."""
    config_home, runtime = dirs
    registry = RootRegistry(config_home / "memsyncd" / "roots.json")
    roots = [make_project(tmp_path / f"p{i:02d}", emu, app_id=f"twenty-{i}") for i in range(20)]
    for root in roots:
        registry.add(root)
    with user_daemon(config_home, runtime, tmp_path) as daemon:
        assert len(daemon.roots()) == 20
        texts = []
        for i, root in enumerate(roots):
            texts.append(f"many-roots: twenty, root {i}")
            memory = emu.local_add(texts[-1])
            assert daemon.ctl(root, "hook", "post-tool-use", stdin=hook_payload(memory)).returncode == 0
        wait_for(lambda: all(in_cloud(emu, text) for text in texts), timeout=60)
        assert all(not read_queue(root)["pending"] for root in roots)


def test_two_roots_on_one_pair_of_stores(emu: Emulators, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """Same OpenMemory user and mem0 scope: each memory once on each side, a conflict reported once per root
    and resolved once, and no two runs on the pair at the same moment (one lock per pair)."""
    config_home, runtime = dirs
    registry = RootRegistry(config_home / "memsyncd" / "roots.json")
    a, b = make_project(tmp_path / "a", emu, app_id="pair"), make_project(tmp_path / "b", emu, app_id="pair")
    other = make_project(tmp_path / "other", emu, app_id="other-pair")
    for root in (a, b, other):
        registry.add(root)
    key_a, key_b = (load_settings(Paths(r)).pair_key for r in (a, b))
    assert key_a == key_b != load_settings(Paths(other)).pair_key
    with user_daemon(config_home, runtime, tmp_path) as daemon:
        memory = emu.local_add("many-roots: shared pair, first version")
        assert daemon.ctl(a, "enqueue", memory).returncode == 0
        wait_for(lambda: in_cloud(emu, "many-roots: shared pair, first version"))
        pulled = daemon.ctl(b, "sync")
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        assert emu.local_texts().count("many-roots: shared pair, first version") == 1, "adopted, not copied"

        # edited on both sides: each root reports the conflict once
        (cloud,) = [m for m in emu.cloud_memories() if m["memory"] == "many-roots: shared pair, first version"]
        emu.local_edit(memory, "many-roots: shared pair, edited locally")
        emu.cloud_edit(cloud["id"], "many-roots: shared pair, edited in the cloud")
        for root in (a, b):
            assert daemon.ctl(root, "enqueue", memory).returncode == 0
            result = daemon.ctl(root, "sync")
            assert result.returncode == 0, result.stdout + result.stderr
            listed = json.loads(daemon.ctl(root, "conflicts", "list", "--json").stdout)
            assert len(listed) == 1, listed
        conflict_id = str(json.loads(daemon.ctl(a, "conflicts", "list", "--json").stdout)[0]["id"])
        resolved = daemon.ctl(a, "conflicts", "resolve", conflict_id, "--keep", "local")
        assert resolved.returncode == 0, resolved.stdout + resolved.stderr
        # b sees both sides agree at its next sync: its conflict settles without a second resolution
        settled = daemon.ctl(b, "sync")
        assert settled.returncode == 0, settled.stdout
        assert json.loads(daemon.ctl(b, "conflicts", "list", "--json").stdout) == []
        assert emu.cloud_texts().count("many-roots: shared pair, edited locally") == 1
        assert emu.local_texts().count("many-roots: shared pair, edited locally") == 1

        # one run at a time per pair: while the pair's lock is held, a and b wait; another pair goes on
        lock_path = runtime / "memsyncd" / "pairs" / f"{key_a}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            waiting = len(daemon.log_events("run.waiting_for_lock"))
            held_a, held_b, free = (emu.local_add(f"many-roots: lock test {n}") for n in ("a", "b", "other"))
            assert daemon.ctl(a, "enqueue", held_a).returncode == 0
            assert daemon.ctl(b, "enqueue", held_b).returncode == 0
            assert daemon.ctl(other, "enqueue", free).returncode == 0
            wait_for(lambda: in_cloud(emu, "many-roots: lock test other"))
            wait_for(lambda: len(daemon.log_events("run.waiting_for_lock")) >= waiting + 2)
            assert "many-roots: lock test a" not in emu.cloud_texts()
            assert "many-roots: lock test b" not in emu.cloud_texts()
        finally:
            os.close(fd)  # releases the lock
        wait_for(lambda: in_cloud(emu, "many-roots: lock test a") and in_cloud(emu, "many-roots: lock test b"))


def test_single_root_daemon_and_user_daemon_side_by_side(emu: Emulators, tmp_path: Path,
                                                         dirs: tuple[Path, Path]) -> None:
    """memsyncctl prefers a root's own daemon (memsyncd run --root), and uses the user's for the others."""
    config_home, runtime = dirs
    own = make_project(tmp_path / "own", emu, app_id="own")
    shared = make_project(tmp_path / "shared", emu, app_id="shared")
    RootRegistry(config_home / "memsyncd" / "roots.json").add(shared)
    env = base_env(MEM0_API_KEY=API_KEY, XDG_CONFIG_HOME=str(config_home), XDG_RUNTIME_DIR=str(runtime))
    log_path = tmp_path / "own-daemon.log"
    with user_daemon(config_home, runtime, tmp_path) as daemon, open(log_path, "wb") as log:
        single = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--root", str(own), "--log-format",
                                   "json"], stdout=log, stderr=log, env=env)
        try:
            own_socket = runtime / "memsyncd" / f"{root_id(own)}.sock"

            def own_ready() -> bool:
                try:
                    with httpx.Client(transport=httpx.HTTPTransport(uds=str(own_socket)), timeout=5) as client:
                        return bool(client.get("http://memsyncd/v1/health").json().get("ready"))
                except (httpx.TransportError, OSError):
                    return False

            wait_for(own_ready)
            own_status = json.loads(daemon.ctl(own, "status", "--json").stdout)
            shared_status = json.loads(daemon.ctl(shared, "status", "--json").stdout)
            assert own_status["daemon"]["pid"] == single.pid and own_status["daemon"]["mode"] == "single-root"
            assert shared_status["daemon"]["pid"] == daemon.proc.pid and shared_status["daemon"]["mode"] == "user"
            memory = emu.local_add("many-roots: root with its own daemon")
            assert daemon.ctl(own, "hook", "post-tool-use", stdin=hook_payload(memory)).returncode == 0
            wait_for(lambda: in_cloud(emu, "many-roots: root with its own daemon"))
            assert str(own) not in daemon.roots(), "a root with its own daemon is not registered with the user's"
        finally:
            assert stop_process(single) == 0
