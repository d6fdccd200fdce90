"""Claude Code and service-manager integration: slash commands, the hook settings, unit files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

# The hook itself lives in memsyncd.cli.hook (stdlib only, for the thin client); re-exported here.
from memsyncd.cli.hook import ADD_TOOL as ADD_TOOL
from memsyncd.cli.hook import DELETE_ALL_TOOL as DELETE_ALL_TOOL
from memsyncd.cli.hook import DELETE_TOOL as DELETE_TOOL
from memsyncd.cli.hook import entries_from_hook as entries_from_hook
from memsyncd.cli.hook import run_post_tool_use_hook as run_post_tool_use_hook
from memsyncd.errors import UsageError
from memsyncd.queue_store import atomic_write

HOOK_COMMAND = "memsyncctl hook post-tool-use"
SERVICE_NAME = "memsyncd.service"
PLIST_NAME = "io.memsyncd.agent.plist"


def data_file(*parts: str) -> Path:
    """A file shipped in ``memsyncd/data``."""
    return Path(str(resources.files("memsyncd").joinpath("data", *parts)))


# --- Claude Code files ---------------------------------------------------------------------------


@dataclass
class InstallResult:
    """What an install wrote or left alone."""

    written: list[Path]
    unchanged: list[Path]


def _install_file(source: Path, target: Path, force: bool, result: InstallResult) -> None:
    content = source.read_text(encoding="utf-8")
    if target.exists():
        if target.read_text(encoding="utf-8") == content:
            result.unchanged.append(target)
            return
        if not force:
            raise UsageError(f"{target} exists with other content; nothing was overwritten. "
                             "Compare it with the shipped version, or rerun with --force.")
    atomic_write(target, content)
    result.written.append(target)


def merge_hook_settings(settings: dict[str, Any]) -> bool:
    """Add memsyncd's PostToolUse hook to a Claude Code settings object; False when already there."""
    wanted = json.loads(data_file("claude", "hooks.json").read_text(encoding="utf-8"))["hooks"]["PostToolUse"][0]
    hooks = settings.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise UsageError('"hooks" in the Claude settings file is not an object; fix it first.')
    post = hooks.setdefault("PostToolUse", [])
    if not isinstance(post, list):
        raise UsageError('"hooks.PostToolUse" in the Claude settings file is not a list; fix it first.')
    for group in post:
        for hook in (group.get("hooks") or []) if isinstance(group, dict) else []:
            if isinstance(hook, dict) and hook.get("command") == HOOK_COMMAND:
                return False
    post.append(wanted)
    return True


def integrate_claude(project: Path, *, force: bool = False) -> InstallResult:
    """Install the slash commands and the hook into ``project/.claude`` (``~/.claude`` by default)."""
    result = InstallResult([], [])
    claude = project / ".claude"
    for name in ("sync.md", "conflict.md"):
        _install_file(data_file("claude", "commands", "memory", name), claude / "commands" / "memory" / name,
                      force, result)
    settings_path = claude / "settings.json"
    settings: dict[str, Any] = {}
    if settings_path.exists():
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as exc:
            raise UsageError(f"{settings_path} is not valid JSON (line {exc.lineno}); fix it first, "
                             "nothing was changed.") from None
        if not isinstance(settings, dict):
            raise UsageError(f"{settings_path} must hold a JSON object; nothing was changed.")
    if merge_hook_settings(settings):
        atomic_write(settings_path, json.dumps(settings, indent=2) + "\n")
        result.written.append(settings_path)
    else:
        result.unchanged.append(settings_path)
    return result


# --- service files -------------------------------------------------------------------------------


def memsyncd_executable() -> str:
    """Absolute path of the installed ``memsyncd`` script."""
    found = shutil.which("memsyncd")
    if found:
        return str(Path(found).resolve())
    candidate = Path(sys.executable).with_name("memsyncd")
    if candidate.exists():
        return str(candidate)
    raise UsageError("cannot find the memsyncd executable on PATH; install memsyncd with pip/pipx first.")


def render_unit(executable: str) -> str:
    """The shipped systemd unit with ExecStart pointing at this installation."""
    text = data_file("memsyncd.service").read_text(encoding="utf-8")
    return text.replace("%h/.local/bin/memsyncd", executable)


def render_plist(executable: str, home: Path) -> str:
    """The shipped LaunchAgent with this installation's paths."""
    text = data_file(PLIST_NAME).read_text(encoding="utf-8")
    return text.replace("@MEMSYNCD@", executable).replace("@HOME@", str(home))


def service_target(home: Path) -> Path:
    """Where the service file goes on this OS."""
    if platform.system() == "Darwin":
        return home / "Library" / "LaunchAgents" / PLIST_NAME
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return config / "systemd" / "user" / SERVICE_NAME


def service_commands(action: str, target: Path) -> list[list[str]]:
    """The service-manager commands for install/uninstall/status."""
    if platform.system() == "Darwin":
        domain = f"gui/{os.getuid()}"
        return {"install": [["launchctl", "bootstrap", domain, str(target)]],
                "uninstall": [["launchctl", "bootout", f"{domain}/io.memsyncd.agent"]],
                "status": [["launchctl", "print", f"{domain}/io.memsyncd.agent"]]}[action]
    return {"install": [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now",
                                                                    SERVICE_NAME]],
            "uninstall": [["systemctl", "--user", "disable", "--now", SERVICE_NAME],
                          ["systemctl", "--user", "daemon-reload"]],
            "status": [["systemctl", "--user", "--no-pager", "status", SERVICE_NAME]]}[action]


def service(action: str, *, home: Path, start: bool = True, executable: str | None = None) -> list[str]:
    """Install, uninstall or show the user service; returns lines to print."""
    target = service_target(home)
    lines: list[str] = []
    if action == "install":
        exe = executable or memsyncd_executable()
        content = render_plist(exe, home) if target.suffix == ".plist" else render_unit(exe)
        atomic_write(target, content)
        lines.append(f"Wrote {target}")
        key = home / ".config" / "memsyncd" / "mem0_api_key"
        if not key.exists():
            lines.append(f"Put your mem0 key in {key} (chmod 600) before starting; it is read as a credential.")
    elif action == "uninstall" and not target.exists():
        return [f"No service file at {target}; nothing to do."]
    if start or action == "status":
        for command in service_commands(action, target):
            if shutil.which(command[0]) is None:
                lines.append(f"{command[0]} not found; run it yourself: {' '.join(command)}")
                break
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines.append(f"$ {' '.join(command)} -> exit {done.returncode}")
            lines += [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if action == "uninstall":
        target.unlink(missing_ok=True)
        lines.append(f"Removed {target}")
    return lines
