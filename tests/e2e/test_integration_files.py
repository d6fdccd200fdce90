"""Tests of the Claude Code hook and files, and of the shipped service files."""

from __future__ import annotations

import json
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ctl, read_queue

from memsyncd.cli.integration import (
    HOOK_COMMAND,
    data_file,
    entries_from_hook,
    integrate_claude,
    render_plist,
    render_unit,
    service,
)
from memsyncd.errors import UsageError

ADD_RESPONSE = {"results": [{"id": "a1", "memory": "likes tea", "event": "ADD"},
                            {"id": "a2", "memory": "old", "event": "DELETE"}]}


@pytest.mark.parametrize(
    "response",
    [
        json.dumps(ADD_RESPONSE),  # plain JSON text
        ADD_RESPONSE,  # already an object
        [{"type": "text", "text": json.dumps(ADD_RESPONSE)}],  # MCP content blocks
        {"content": [{"type": "text", "text": json.dumps(ADD_RESPONSE)}]},
    ],
)
def test_hook_reads_add_memories_results_in_every_shape(response: object) -> None:
    """The ids the MCP tool returned become push (or delete) entries."""
    entries = entries_from_hook({"tool_name": "mcp__openmemory__add_memories", "tool_response": response})
    assert [(e.id, e.action) for e in entries] == [("a1", "push"), ("a2", "delete")]


def test_hook_delete_memories_enqueues_deletes() -> None:
    """delete_memories(memory_ids) → delete entries; other tools → nothing."""
    entries = entries_from_hook({"tool_name": "mcp__openmemory__delete_memories",
                                 "tool_input": {"memory_ids": ["d1", "d2", 3]}})
    assert [(e.id, e.action) for e in entries] == [("d1", "delete"), ("d2", "delete")]
    assert entries_from_hook({"tool_name": "Bash", "tool_response": ADD_RESPONSE}) == []


def test_hook_command_enqueues_and_never_touches_the_network(tmp_path: Path) -> None:
    """`memsyncctl hook post-tool-use` with no config and no servers: entries land in the queue, exit 0."""
    event = {"session_id": "s", "hook_event_name": "PostToolUse", "tool_name": "mcp__openmemory__add_memories",
             "tool_input": {"text": "likes tea"}, "tool_response": json.dumps(ADD_RESPONSE)}
    result = ctl(tmp_path, "hook", "post-tool-use", stdin=json.dumps(event), key=None)
    assert result.returncode == 0, result.stderr
    assert [(e["id"], e["action"]) for e in read_queue(tmp_path)["pending"]] == [("a1", "push"), ("a2", "delete")]
    bad = ctl(tmp_path, "hook", "post-tool-use", stdin="not json", key=None)
    assert bad.returncode == 0 and "not JSON" in bad.stderr  # a hook never exits 2 (blocking in Claude Code)


def test_integrate_claude_installs_commands_and_merges_hook(tmp_path: Path) -> None:
    """Commands are written, the hook merged into existing settings once, other settings kept."""
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"model": "opus", "hooks": {"Stop": [{"hooks": []}]}}))
    first = integrate_claude(tmp_path)
    assert (tmp_path / ".claude/commands/memory/sync.md").read_text().count("memsyncctl sync") >= 1
    merged = json.loads(settings.read_text())
    assert merged["model"] == "opus" and "Stop" in merged["hooks"]
    assert merged["hooks"]["PostToolUse"][0]["hooks"][0]["command"] == HOOK_COMMAND
    second = integrate_claude(tmp_path)
    assert len(first.written) == 3 and second.written == []
    assert len(json.loads(settings.read_text())["hooks"]["PostToolUse"]) == 1


def test_integrate_claude_never_overwrites_a_changed_command(tmp_path: Path) -> None:
    """A user-edited command file stays unless --force."""
    target = tmp_path / ".claude/commands/memory/sync.md"
    target.parent.mkdir(parents=True)
    target.write_text("my own version")
    with pytest.raises(UsageError, match="nothing was overwritten"):
        integrate_claude(tmp_path)
    assert target.read_text() == "my own version"
    integrate_claude(tmp_path, force=True)
    assert "memsyncctl sync" in target.read_text()


def test_unit_file_has_the_required_settings() -> None:
    """Type=notify, watchdog, restart, credential, hardening."""
    unit = data_file("memsyncd.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "LoadCredential=mem0_api_key:",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only",
                 "ReadWritePaths=%h\n", "PrivateTmp=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in unit
    assert "--root" not in unit.split("ExecStart=")[1].splitlines()[0], "the unit serves every registered root"
    assert (Path(__file__).parent.parent.parent / "systemd/memsyncd.service").resolve().read_text() == unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (with ExecStart pointing at a real executable)."""
    exe = tmp_path / "memsyncd"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "memsyncd.service"
    unit.write_text(render_unit(str(exe), tmp_path / "config" / "memsyncd" / "mem0_api_key"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "memsyncd.service" not in result.stderr, result.stderr


def test_launchd_plist_is_valid_and_filled_in(tmp_path: Path) -> None:
    """The LaunchAgent parses as a plist, with KeepAlive and our paths."""
    plist = plistlib.loads(render_plist("/opt/bin/memsyncd", tmp_path).encode())
    assert plist["ProgramArguments"][:2] == ["/opt/bin/memsyncd", "run"]
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["EnvironmentVariables"]["CREDENTIALS_DIRECTORY"] == f"{tmp_path}/.config/memsyncd"


def test_service_install_and_uninstall_without_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-start writes the unit with our executable; uninstall removes it."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setattr("platform.system", lambda: "Linux")
    outcome = service("install", home=tmp_path, start=False, executable=sys.executable)
    unit = tmp_path / "cfg/systemd/user/memsyncd.service"
    assert unit.exists() and f"ExecStart={sys.executable} run" in unit.read_text()
    assert outcome.error is None and any("mem0_api_key" in line for line in outcome.lines)
    service("uninstall", home=tmp_path, start=False)
    assert not unit.exists()
