"""Claude Code and service-manager integration: slash commands, the hook settings, unit files."""

from __future__ import annotations

import contextlib
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
from memsyncd.errors import MemsyncError, ServiceManagerError, ServiceNotActiveError, UsageError
from memsyncd.store.queue import atomic_write

HOOK_COMMAND = "memsyncctl hook post-tool-use"
SERVICE_NAME = "memsyncd.service"
PLIST_NAME = "io.memsyncd.agent.plist"


def data_file(*parts: str) -> Path:
    """A file shipped in ``memsyncd/data``."""
    return Path(str(resources.files("memsyncd").joinpath("data", *parts)))


def plugin_file(*parts: str) -> Path:
    """A file of the Claude Code plugin (``memsyncd/data/claude``, linked as ``packaging/claude``).

    The plugin is the one source of the slash commands and the hook: ``claude plugin install``
    copies the whole directory, ``memsyncctl integrate claude`` copies its ``commands/`` and
    merges its ``hooks/hooks.json`` into ``settings.json``.
    """
    return data_file("claude", *parts)


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
    wanted = json.loads(plugin_file("hooks", "hooks.json").read_text(encoding="utf-8"))["hooks"]["PostToolUse"][0]
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
    commands = plugin_file("commands")
    for source in sorted(commands.rglob("*.md")):
        _install_file(source, claude / "commands" / source.relative_to(commands), force, result)
    settings_path = claude / "settings.json"
    settings: dict[str, Any] = {}
    if settings_path.exists():
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as exc:
            raise UsageError(f"{settings_path} is not valid JSON (line {exc.lineno}); fix it first, "
                             "nothing was changed.") from None
        except RecursionError:
            raise UsageError(f"{settings_path} is JSON nested too deeply to read; fix it first, "
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


def render_unit(executable: str, key_file: Path | None = None) -> str:
    """The shipped systemd unit with ExecStart (and the key credential) pointing at this installation."""
    text = data_file("memsyncd.service").read_text(encoding="utf-8")
    if key_file is not None:
        text = text.replace("%h/.config/memsyncd/mem0_api_key", str(key_file))
    return text.replace("%h/.local/bin/memsyncd", executable)


def render_plist(executable: str, home: Path, key_file: Path | None = None) -> str:
    """The shipped LaunchAgent with this installation's paths."""
    text = data_file(PLIST_NAME).read_text(encoding="utf-8")
    if key_file is not None:
        text = text.replace("@HOME@/.config/memsyncd", str(key_file.parent))
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


SERVICE_MANAGER_TIMEOUT = 30.0
# What systemctl says when this session has no reachable user manager (containers, su, ssh without
# a login session, WSL without systemd): "Failed to connect to bus: No medium found", etc.
_NO_MANAGER_MARKERS = ("failed to connect to bus", "no medium found", "$dbus_session_bus_address",
                       "system has not been booted with systemd", "failed to connect to user scope bus")
# systemctl status: 3 = unit not active, 4 = no such unit (LSB codes).
_STATUS_INACTIVE, _STATUS_UNKNOWN_UNIT = 3, 4


def run_without_manager_help(home: Path, action: str = "install") -> str:
    """What to do when there is no user service manager to run memsyncd (for ``install`` or ``uninstall``)."""
    if action == "uninstall":
        return (f"No user service manager answered, so nothing was stopped through it; the unit file "
                f"{service_target(home)} is removed. A 'memsyncd run' started by hand keeps running: stop it "
                "where it runs (Ctrl-C, or kill the pid 'memsyncctl status' shows).")
    user = os.environ.get("USER") or "$USER"
    return (f"Without a user service manager, run 'memsyncd run' from your login session "
            f"(a terminal multiplexer or your desktop's autostart), or make systemd start your user manager "
            f"at boot with 'loginctl enable-linger {user}', log in again and rerun 'memsyncctl service install'.")


@dataclass
class ServiceOutcome:
    """What ``memsyncctl service`` did: lines to print, and the error to exit with (None = success)."""

    lines: list[str]
    error: MemsyncError | None = None


def _reason(output: str, returncode: int) -> str:
    """The line of systemctl's output that says what went wrong (not "Created symlink ...")."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith(("Created symlink", "Removed"))]
    failed = [line for line in telling if "fail" in line.lower()]
    return (failed or telling or [f"exit {returncode}"])[0]


def _manager_failure(command: list[str], returncode: int, output: str, action: str, home: Path) -> MemsyncError:
    """The error for a failed service-manager call: unreachable manager (exit 5) or a unit problem (exit 1)."""
    shown = " ".join(command)
    reason = _reason(output, returncode)
    if any(marker in output.lower() for marker in _NO_MANAGER_MARKERS):
        return ServiceManagerError(f"'{shown}' failed: {reason}. {run_without_manager_help(home, action)}")
    if action == "status" and returncode == _STATUS_UNKNOWN_UNIT:
        return ServiceNotActiveError(f"systemd does not know {SERVICE_NAME} yet; run 'systemctl --user "
                                     "daemon-reload && systemctl --user enable --now memsyncd'.")
    if action == "status":
        return ServiceNotActiveError(f"the service is installed but not running ({reason}). Start it with "
                                     "'memsyncctl service install' and read its log with "
                                     "'journalctl --user -u memsyncd -e'.")
    return ServiceNotActiveError(f"'{shown}' failed (exit {returncode}): {reason}. Read the log with "
                                 "'journalctl --user -u memsyncd -e' (macOS: ~/Library/Logs/memsyncd.log).")


def _call_manager(commands: list[list[str]], action: str, home: Path, lines: list[str]) -> MemsyncError | None:
    """Run the service-manager commands in order; stop at, and return, the first failure."""
    for command in commands:
        if shutil.which(command[0]) is None:
            return ServiceManagerError(f"{command[0]} is not installed here, so nothing can "
                                       f"{'stop' if action == 'uninstall' else 'start'} the service. "
                                       + run_without_manager_help(home, action))
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  timeout=SERVICE_MANAGER_TIMEOUT)
        except subprocess.TimeoutExpired:
            return ServiceManagerError(f"'{' '.join(command)}' did not answer within {SERVICE_MANAGER_TIMEOUT:.0f} s. "
                                       + run_without_manager_help(home, action))
        except OSError as exc:
            return ServiceManagerError(f"cannot run {command[0]} ({exc.strerror}). "
                                       + run_without_manager_help(home, action))
        output = done.stdout + done.stderr
        lines.append(f"$ {' '.join(command)} -> exit {done.returncode}")
        lines += [line for line in output.splitlines() if line.strip()]
        if done.returncode != 0:
            return _manager_failure(command, done.returncode, output, action, home)
    return None


# --- the unit's sandbox, where the kernel refuses part of it (status 226/NAMESPACE) ------------------

EXIT_NAMESPACE = 226  # systemd: the sandbox (mount/namespace set-up) of the unit could not be applied
DROPIN_NAME = "no-sandbox.conf"
_RELAXED = {"ProtectSystem": "no", "ProtectHome": "no", "SystemCallFilter": "", "SystemCallArchitectures": "",
            "RestrictAddressFamilies": "", "ReadWritePaths": ""}
_COSTS = {
    "ProtectKernelTunables": "the daemon could change kernel tunables in /proc/sys and /sys where your user may",
    "ProtectKernelLogs": "the daemon could read the kernel log where your user may",
    "ProtectKernelModules": "the daemon could load kernel modules where your user may (normally it may not)",
    "ProtectControlGroups": "the daemon could write the cgroup tree where your user may",
    "ProtectClock": "the daemon could set the clock where your user may (normally it may not)",
    "ProtectHostname": "the daemon could change the hostname where your user may (normally it may not)",
    "ProtectSystem": "the daemon could write system directories where your user may",
    "ProtectHome": "the daemon could write anywhere in your home, not only where it needs to",
    "PrivateTmp": "the daemon shares /tmp and /var/tmp with your other programs",
    "ReadWritePaths": "the daemon cannot write your home: it cannot sync (move your home's roots elsewhere)",
    "PrivateDevices": "the daemon sees the device nodes your user can see",
    "NoNewPrivileges": "a setuid program the daemon ran could gain privileges",
    "RestrictNamespaces": "the daemon could create namespaces",
    "SystemCallFilter": "every system call is allowed",
}


def sandbox_options(unit_text: str, home: Path) -> list[tuple[str, str]]:
    """The hardening options of a unit (key, value): the lines after its "# Hardening" comment, in [Service].

    ``ReadWritePaths=`` comes first, with ``%h`` as ``home``: the daemon cannot work without it, so
    an option that conflicts with it (``PrivateTmp=`` for a home under /var/tmp) is the one to give up.
    """
    options: list[tuple[str, str]] = []
    in_hardening = False
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("# Hardening"):
            in_hardening = True
        elif line.startswith("["):
            in_hardening = False
        elif in_hardening and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            if key == "ReadWritePaths":
                options.insert(0, (key, value.replace("%h", str(home))))
            elif key != "UMask":
                options.append((key, value))
    return options


def refused_sandbox_options(options: list[tuple[str, str]], home: Path) -> list[str]:
    """The options this kernel refuses, found by the user manager itself (``systemd-run`` of ``/bin/true``).

    Options are added one at a time to the set accepted so far; one whose addition fails
    (226/NAMESPACE) is refused, alone or in combination, and left out of the rest of the probe.

    Raises:
        ServiceManagerError: ``systemd-run`` is missing or cannot reach the user manager.
    """
    if shutil.which("systemd-run") is None:
        raise ServiceManagerError("systemd-run is not installed here, so the sandbox cannot be probed. "
                                  + run_without_manager_help(home))
    refused: list[str] = []
    accepted: list[str] = []
    for key, value in options:
        properties = [arg for option in [*accepted, f"{key}={value}"] for arg in ("-p", option)]
        try:
            done = subprocess.run(["systemd-run", "--user", "--wait", "--quiet", "--collect", *properties, "/bin/true"],
                                  capture_output=True, text=True, check=False, timeout=20)
        except (subprocess.TimeoutExpired, OSError) as exc:
            raise ServiceManagerError(f"probing {key}= with systemd-run failed ({exc}). "
                                      + run_without_manager_help(home)) from None
        output = (done.stdout + done.stderr).lower()
        if any(marker in output for marker in _NO_MANAGER_MARKERS) or "failed to connect" in output:
            raise ServiceManagerError(f"systemd-run could not reach your user manager: {_reason(output, 1)}. "
                                      + run_without_manager_help(home))
        if done.returncode != 0:
            refused.append(key)
        else:
            accepted.append(f"{key}={value}")
    return refused


def sandbox_dropin(target: Path) -> Path:
    """Where ``--no-sandbox`` writes its drop-in next to the unit."""
    return target.with_name(target.name + ".d") / DROPIN_NAME


def render_dropin(refused: list[str]) -> str:
    """A drop-in that turns off only the refused options."""
    lines = ["# Written by 'memsyncctl service install --no-sandbox': this kernel refuses these sandbox options",
             "# (the unit failed with status 226/NAMESPACE). Only they are turned off; the rest of the",
             "# hardening stays. Remove this file and run 'systemctl --user daemon-reload' to restore them.",
             "[Service]"]
    lines += [f"{key}={_RELAXED.get(key, 'no')}" for key in refused]
    return "\n".join(lines) + "\n"


def _systemctl(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, check=False,
                              timeout=SERVICE_MANAGER_TIMEOUT)
    except (subprocess.TimeoutExpired, OSError):
        return None


def _reload_refused() -> bool:
    """Reload the running unit; True when its ExecReload failed with 226/NAMESPACE."""
    done = _systemctl("reload", SERVICE_NAME)
    if done is None or done.returncode == 0:
        return False
    shown = _systemctl("show", "-p", "ExecReload", "--value", SERVICE_NAME)
    return shown is not None and ("NAMESPACE" in shown.stdout or f"status={EXIT_NAMESPACE}" in shown.stdout)


def _main_status(home: Path) -> int | None:
    """The exit status of the unit's last main process (``ExecMainStatus``), None when unknown."""
    try:
        done = subprocess.run(["systemctl", "--user", "show", "-p", "ExecMainStatus", "--value", SERVICE_NAME],
                              capture_output=True, text=True, check=False, timeout=SERVICE_MANAGER_TIMEOUT)
    except (subprocess.TimeoutExpired, OSError):
        return None
    value = done.stdout.strip()
    return int(value) if value.isdigit() else None


def _sandbox_refused(target: Path) -> ServiceNotActiveError:
    return ServiceNotActiveError(
        f"{SERVICE_NAME} could not start: the kernel refused part of its sandbox (status=226/NAMESPACE: systemd "
        "could not set up the namespaces that options such as ProtectKernelTunables= need; common in containers "
        "and some VMs). Run 'memsyncctl service install --no-sandbox': it tries each sandbox option, turns off "
        f"only those this kernel refuses in {sandbox_dropin(target)}, and says what that costs.",
        title="memsyncd service cannot start here")


def service(action: str, *, home: Path, start: bool = True, executable: str | None = None,
            no_sandbox: bool = False) -> ServiceOutcome:
    """Install, uninstall or show the user service.

    ``no_sandbox`` (install, systemd only): probe the unit's sandbox options and write a drop-in
    turning off the ones this kernel refuses.

    Returns:
        The lines to print and, when the service manager failed or the service is not running,
        the error to exit with (``ServiceManagerError`` exit 5, ``ServiceNotActiveError`` exit 1).
    """
    target = service_target(home)
    lines: list[str] = []
    if action == "install" and no_sandbox and target.suffix != ".plist":
        error = _write_sandbox_dropin(target, home, executable, lines)
        if error is not None:
            return ServiceOutcome(lines, error)
    if action == "install":
        from memsyncd.config import key_file_path  # pydantic: kept off the hook's import path

        exe = executable or memsyncd_executable()
        key = key_file_path()
        content = render_plist(exe, home, key) if target.suffix == ".plist" else render_unit(exe, key)
        atomic_write(target, content)
        lines.append(f"Wrote {target}")
        if not key.exists():
            lines.append(f"Store your mem0 key in {key} before starting (it is read as a credential): "
                         "run 'memsyncctl init'.")
    elif action == "uninstall" and not target.exists():
        return ServiceOutcome([f"No service file at {target}; nothing to do."])
    elif action == "status" and not target.exists():
        return ServiceOutcome([f"No service file at {target}."], ServiceNotActiveError(
            "the memsyncd service is not installed; install it with 'memsyncctl service install'."))
    error = _call_manager(service_commands(action, target), action, home, lines) if start or action == "status" \
        else None
    if error is None and start and action == "install" and no_sandbox and target.suffix != ".plist":
        error = _check_reload(target, home, lines)
    if isinstance(error, ServiceNotActiveError) and action in ("install", "status") and target.suffix != ".plist" \
            and _main_status(home) == EXIT_NAMESPACE:
        error = _sandbox_refused(target)
    if action == "install" and isinstance(error, ServiceManagerError) and target.exists():
        error = ServiceManagerError(f"{error.message} {_kept_unit_help(target)}", title=error.title)
    if action == "uninstall":
        target.unlink(missing_ok=True)
        lines.append(f"Removed {target}")
        dropin = sandbox_dropin(target)
        if dropin.exists():
            dropin.unlink()
            with contextlib.suppress(OSError):
                dropin.parent.rmdir()
            lines.append(f"Removed {dropin}")
    return ServiceOutcome(lines, error)


def _kept_unit_help(target: Path) -> str:
    """What to do with the service file an install wrote when nothing could start it (it is kept)."""
    if target.suffix == ".plist":
        enable = f"'launchctl bootstrap gui/$(id -u) {target}'"
    else:
        enable = f"'systemctl --user daemon-reload && systemctl --user enable --now {SERVICE_NAME}'"
    return (f"The service file {target} was written and is kept: once a user service manager runs, start it "
            f"with {enable} (or rerun 'memsyncctl service install'); 'memsyncctl service uninstall' removes it.")


def _check_reload(target: Path, home: Path, lines: list[str]) -> MemsyncError | None:
    """``--no-sandbox``, service running: try a reload (SIGHUP) and say whether it works here."""
    if not _reload_refused():
        lines.append("Reload (SIGHUP) works: 'systemctl --user reload memsyncd' re-reads the roots and configs.")
        return None
    lines.append("Warning: 'systemctl --user reload memsyncd' fails here with 226/NAMESPACE (systemd cannot set up "
                 "the sandbox, with its credential mount, for the reload's own process). The daemon runs and "
                 "applies config.json edits by itself; after editing the roots registry by hand, use "
                 "'systemctl --user restart memsyncd' instead of reload.")
    return None


def _write_sandbox_dropin(target: Path, home: Path, executable: str | None, lines: list[str]) -> MemsyncError | None:
    """``--no-sandbox``: find the refused options and write the drop-in; lines say what it costs."""
    unit_text = render_unit(executable or memsyncd_executable())
    try:
        refused = refused_sandbox_options(sandbox_options(unit_text, home), home)
    except ServiceManagerError as exc:
        return exc
    if "ReadWritePaths" in refused:
        return ServiceNotActiveError(f"systemd cannot make {home} writable for the service even without the rest of "
                                     "its sandbox; nothing was written. Run 'memsyncd run' from your login session "
                                     "instead.", title="memsyncd service cannot start here")
    dropin = sandbox_dropin(target)
    atomic_write(dropin, render_dropin(refused))
    if refused:
        lines.append(f"Wrote {dropin}: this kernel refuses {', '.join(k + '=' for k in refused)}; only those are "
                     "turned off, the rest of the sandbox stays. What that costs:")
        lines += [f"  {key}=: {_COSTS.get(key, f'the daemon runs without the {key}= restriction')}" for key in refused]
    else:
        lines.append(f"Wrote {dropin}: this kernel accepts every sandbox option; only the reload signal runs "
                     "outside the sandbox. Nothing else is turned off.")
    return None
