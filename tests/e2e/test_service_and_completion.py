"""``memsyncctl service`` exit codes with a failing service manager, and ``memsyncctl completion``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import NO_BUS, ctl, service_env


@pytest.mark.skipif(sys.platform == "darwin", reason="systemd user units are Linux only")
def test_install_and_status_fail_with_exit_5_when_there_is_no_user_manager(tmp_path: Path) -> None:
    """'Failed to connect to bus: No medium found' → exit 5, the reason, and what to do instead."""
    env = service_env(tmp_path, NO_BUS)
    install = ctl(tmp_path, "service", "install", key=None, **env)
    assert install.returncode == 5, install.stdout + install.stderr
    unit = tmp_path / "cfg/systemd/user/memsyncd.service"
    assert f"Wrote {unit}" in install.stdout and unit.exists()
    assert "No medium found" in install.stderr and "service manager unreachable" in install.stderr
    assert "run 'memsyncd run' from your login session" in install.stderr
    assert "loginctl enable-linger" in install.stderr
    assert f"LoadCredential=mem0_api_key:{tmp_path / 'cfg/memsyncd/mem0_api_key'}" in unit.read_text()

    status = ctl(tmp_path, "service", "status", key=None, **env)
    assert status.returncode == 5 and "loginctl enable-linger" in status.stderr

    uninstall = ctl(tmp_path, "service", "uninstall", key=None, **env)
    assert uninstall.returncode == 5 and not unit.exists()


@pytest.mark.skipif(sys.platform == "darwin", reason="systemd user units are Linux only")
def test_status_and_install_exit_codes_follow_the_manager(tmp_path: Path) -> None:
    """Not installed: 1. Installed and inactive (systemctl exit 3): 1. Active: 0. No systemctl at all: 5."""
    not_installed = ctl(tmp_path, "service", "status", key=None, **service_env(tmp_path, "exit 0"))
    assert not_installed.returncode == 1 and "memsyncctl service install" in not_installed.stderr
    ok = ctl(tmp_path, "service", "install", key=None, **service_env(tmp_path, "exit 0"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "systemctl.calls").read_text().splitlines() == [
        "--user daemon-reload", "--user enable --now memsyncd.service"]
    inactive = ctl(tmp_path, "service", "status", key=None,
                   **service_env(tmp_path, 'echo "   Active: inactive (dead)"; exit 3'))
    assert inactive.returncode == 1 and "not running" in inactive.stderr and "journalctl" in inactive.stderr
    assert ctl(tmp_path, "service", "status", key=None, **service_env(tmp_path, "exit 0")).returncode == 0

    (tmp_path / "fakebin" / "systemctl").unlink()
    missing = ctl(tmp_path, "service", "install", key=None, **service_env(tmp_path, None))
    assert missing.returncode == 5 and "systemctl is not installed" in missing.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_name_every_subcommand(tmp_path: Path, shell: str) -> None:
    """`memsyncctl completion SHELL` prints a script that knows the subcommands; bash -n accepts bash's."""
    result = ctl(tmp_path, "completion", shell, key=None)
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert "memsyncctl" in script
    for command in ("sync", "status", "enqueue", "conflicts", "init", "doctor", "forget-cloud-copies", "service",
                    "integrate", "completion"):
        assert command in script, command
    assert "key-stdin" in script and "default-level" in script  # fish writes options as "-l key-stdin"
    if shell == "bash" and shutil.which("bash"):
        checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
    if shell == "bash":
        assert "_shtab_compgen_dirs" in script  # --root completes directories


def test_completion_rejects_an_unknown_shell(tmp_path: Path) -> None:
    """Usage error, exit 2."""
    result = ctl(tmp_path, "completion", "powershell", key=None)
    assert result.returncode == 2 and "invalid choice" in result.stderr
