"""``roots remove`` sticks: auto-registration (hook, enqueue, POST /v1/queue) respects it until ``roots add``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from harness import Emulators, ctl, hook_payload, read_queue, user_daemon, user_root, wait_for

from memsyncd.errors import RootNotServedError
from memsyncd.store.roots import RootRegistry


def test_registry_remembers_removed_roots_until_added_by_hand(tmp_path: Path) -> None:
    registry = RootRegistry(tmp_path / "cfg" / "roots.json")
    root = tmp_path / "p"
    (root / ".claude").mkdir(parents=True)
    registry.add(root)
    assert registry.remove(root) is True
    assert registry.is_ignored(root) and not registry.contains(root)
    with pytest.raises(RootNotServedError, match="roots add"):
        registry.add(root, auto=True)
    assert not registry.contains(root)
    data = json.loads(registry.path.read_text())
    assert [e["path"] for e in data["ignored"]] == [str(root)] and data["roots"] == []
    assert registry.add(root) is True  # by hand: registered, and no longer ignored
    assert registry.contains(root) and not registry.is_ignored(root)
    assert "ignored" not in json.loads(registry.path.read_text())


def test_remove_sticks_against_enqueue_and_the_hook(tmp_path: Path, emu: Emulators, runtime: Path) -> None:
    root = user_root(tmp_path / "p", emu)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_RUNTIME_DIR": str(runtime), "MEM0_API_KEY": emu.api_key}
    registry = RootRegistry(tmp_path / "cfg" / "memsyncd" / "roots.json")
    registry.add(root)
    socket_path = runtime / "memsyncd" / "memsyncd.sock"

    def served() -> set[str]:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://d") as client:
            return {row["root"] for row in client.get("/v1/roots").json()["roots"]}

    with user_daemon(tmp_path / "cfg", runtime, tmp_path, key=emu.api_key, timeout=30, clean_log=False):
        assert str(root) in served()
        removed = ctl(root, "roots", "remove", str(root), key=None, **env)
        assert removed.returncode == 0 and "will not register it again" in removed.stdout, removed.stdout
        assert str(root) not in served()
        status = ctl(root, "status", key=None, **env)
        assert "Daemon:   running, but not serving this root" in status.stdout, status.stdout + status.stderr

        memory_id = emu.local_add("after remove", level=1)
        queued = ctl(root, "enqueue", memory_id, key=None, **env)
        assert queued.returncode == 0, queued.stderr
        assert "roots remove" in queued.stderr and "roots add" in queued.stderr, queued.stderr
        assert memory_id in {e["id"] for e in read_queue(root)["pending"]}  # never lost
        assert ctl(root, "hook", "post-tool-use", stdin=hook_payload(memory_id), key=None, **env).returncode == 0
        assert str(root) not in served() and not registry.contains(root)

        added = ctl(root, "roots", "add", str(root), key=None, **env)
        assert added.returncode == 0, added.stderr
        wait_for(lambda: str(root) in served())
        assert not registry.is_ignored(root)
