"""Status is the source of truth per root, and every error names its real source (issue 15, items 2, 3, 7).

A real user daemon (its own XDG_CONFIG_HOME and a short XDG_RUNTIME_DIR) serves roots whose runs
fail: the key from the key file rejected, OpenMemory down, a config edited into something invalid.
``status``, ``status --json``, ``status --all`` and ``doctor`` must each say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, Emulators, closed_port_url, ctl, running_daemon, user_daemon, user_root, wait_for

from memsyncd.store.roots import RootRegistry


@pytest.fixture()
def user_env(tmp_path: Path, runtime: Path) -> dict[str, str]:
    """The variables of a user whose key is in the key file (MEM0_API_KEY unset) and whose key is wrong."""
    config_home = tmp_path / "cfg"
    key_file = config_home / "memsyncd" / "mem0_api_key"
    key_file.parent.mkdir(parents=True, mode=0o700)
    key_file.write_text("m0-wrong-key-from-the-file")
    key_file.chmod(0o600)
    return {"XDG_CONFIG_HOME": str(config_home), "XDG_RUNTIME_DIR": str(runtime)}


def status_json(root: Path, env: dict[str, str]) -> dict[str, Any]:
    result = ctl(root, "status", "--json", key=None, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def attention_types(root: Path, env: dict[str, str]) -> list[str]:
    return [p["type"] for p in status_json(root, env).get("attention", [])]


def test_daemon_failures_show_in_status_status_all_and_doctor(tmp_path: Path, emu: Emulators,
                                                              user_env: dict[str, str]) -> None:
    keyed = user_root(tmp_path / "keyed", emu)
    down_url = closed_port_url()
    down = user_root(tmp_path / "down", emu, local_url=down_url)
    edited = user_root(tmp_path / "edited", emu)
    registry = RootRegistry(Path(user_env["XDG_CONFIG_HOME"]) / "memsyncd" / "roots.json")
    for root in (keyed, down, edited):
        registry.add(root)
    with user_daemon(Path(user_env["XDG_CONFIG_HOME"]), Path(user_env["XDG_RUNTIME_DIR"]), tmp_path, key=None,
                     timeout=30, clean_log=False):
        # the key from the key file is rejected: the start-up count of memories to pull finds it
        wait_for(lambda: "AuthError" in attention_types(keyed, user_env), timeout=30)
        status = status_json(keyed, user_env)
        problem = next(p for p in status["attention"] if p["type"] == "AuthError")
        key_file = str(Path(user_env["XDG_CONFIG_HOME"]) / "memsyncd" / "mem0_api_key")
        assert key_file in problem["message"] and problem["since"]
        assert "m0-wrong-key-from-the-file" not in json.dumps(status)
        plain = ctl(keyed, "status", key=None, **user_env)
        assert plain.returncode == 0
        assert "Needs attention: mem0 rejected the API key" in plain.stdout and key_file in plain.stdout

        # OpenMemory down: named with its URL, never "Network unreachable"
        wait_for(lambda: "LocalUnreachableError" in attention_types(down, user_env), timeout=30)
        text = ctl(down, "status", key=None, **user_env).stdout
        assert f"Needs attention: OpenMemory at {down_url} is not reachable" in text, text
        assert "local.url" in text and "Network unreachable" not in text

        # a config edited into something invalid: the last good one keeps running, status says so
        (edited / ".claude" / "memory" / "config.json").write_text('{"sync": {"default_level": "high"}}')
        wait_for(lambda: "ConfigError" in attention_types(edited, user_env), timeout=30)
        assert "config.json" in ctl(edited, "status", key=None, **user_env).stdout

        every = ctl(tmp_path, "status", "--all", key=None, **user_env)
        assert every.returncode == 1, every.stdout + every.stderr
        assert every.stdout.count("Needs attention:") >= 3, every.stdout
        for needle in ("mem0 rejected the API key", f"OpenMemory at {down_url} is not reachable",
                       "Invalid configuration"):
            assert needle in every.stdout, every.stdout
        rows = json.loads(ctl(tmp_path, "status", "--all", "--json", key=None, **user_env).stdout)["roots"]
        assert all(row["attention"] for row in rows)

        doctor = ctl(keyed, "doctor", key=None, **user_env)
        assert doctor.returncode == 1
        assert "Needs attention: mem0 rejected the API key" in doctor.stdout, doctor.stdout


def test_a_401_names_the_key_file_it_came_from(tmp_path: Path, emu: Emulators, user_env: dict[str, str]) -> None:
    root = user_root(tmp_path / "p", emu)
    ctl(root, "enqueue", emu.local_add("key file test", level=1), key=None, **user_env)
    result = ctl(root, "--no-daemon", "sync", key=None, **user_env)
    assert result.returncode == 4, result.stdout + result.stderr
    key_file = str(Path(user_env["XDG_CONFIG_HOME"]) / "memsyncd" / "mem0_api_key")
    assert result.stdout.startswith("SYNC ERROR: mem0 API returned 401\n")
    assert "MEM0_API_KEY environment variable" not in result.stdout and key_file in result.stdout
    # the variable, when it is the source, is still named as the seed names it
    assert ctl(root, "--no-daemon", "sync", key="m0-wrong", **user_env).stdout == (
        "SYNC ERROR: mem0 API returned 401\nCheck MEM0_API_KEY environment variable.\n")


def test_last_sync_comes_from_daemon_runs_and_no_daemon_is_said(root: Path, emu: Emulators) -> None:
    memory_id = emu.local_add("pushed by the daemon", level=1)
    assert "Daemon:   not running" in ctl(root, "status").stdout
    with running_daemon(root) as daemon:
        daemon.ctl("enqueue", memory_id)
        wait_for(lambda: "pushed by the daemon" in emu.cloud_texts())
        wait_for(lambda: json.loads(daemon.ctl("status", "--json").stdout)["last_sync"], timeout=15)
        text = daemon.ctl("status").stdout
        assert "Last sync: never" not in text and "Daemon:   pid" in text


def test_doctor_with_a_bad_config_skips_for_the_real_reason(root: Path, emu: Emulators) -> None:
    ctl(root, "enqueue", emu.local_add("doctor state", level=1))
    assert ctl(root, "sync").returncode == 0  # a state DB now exists and is readable
    (root / ".claude" / "memory" / "config.json").write_text('{"sync": {"default_level": "x"}}')
    result = ctl(root, "doctor", key=API_KEY)
    assert result.returncode == 1
    assert "cloud sync is off" not in result.stdout, result.stdout
    assert "[ ok ] state" in result.stdout
    assert "needs a readable state" not in result.stdout, result.stdout
    assert "needs a valid config" in result.stdout
