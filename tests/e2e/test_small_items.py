"""Issue 15, item 7: the small things a new user trips over."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from harness import (
    API_KEY,
    NO_BUS,
    PROC_TIMEOUT,
    USER,
    Emulators,
    base_env,
    ctl,
    service_env,
    stop_process,
    user_daemon,
    user_root,
    wait_for,
)

from memsyncd.store.roots import RootRegistry


def test_memsyncd_help_says_it_serves_every_registered_root() -> None:
    result = subprocess.run([sys.executable, "-m", "memsyncd", "--help"], capture_output=True, text=True,
                            env=base_env(), timeout=PROC_TIMEOUT)
    assert result.returncode == 0
    assert "for one root" not in result.stdout and "every registered root" in result.stdout


@pytest.mark.skipif(sys.platform == "darwin", reason="systemd user units are Linux only")
def test_uninstall_without_a_manager_does_not_tell_you_to_install(tmp_path: Path) -> None:
    env = service_env(tmp_path, NO_BUS)
    unit = tmp_path / "cfg/systemd/user/memsyncd.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    result = ctl(tmp_path, "service", "uninstall", key=None, **env)
    assert result.returncode == 5 and not unit.exists()
    assert "service install" not in result.stderr, result.stderr
    assert "nothing was stopped" in result.stderr and str(unit) in result.stderr


def test_init_piped_into_head_finishes_its_work(tmp_path: Path, emu: Emulators) -> None:
    """``init ... | head -1``: the config, the key and the registration all happen; exit 0, not 141."""
    (tmp_path / "home").mkdir()
    env = base_env(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    argv = [sys.executable, "-m", "memsyncd.ctl", "--root", str(tmp_path), "init", "--no-input", "--local-url",
            emu.openmemory, "--user-id", USER, "--cloud-url", emu.mem0, "--key-stdin"]
    script = (f"set -o pipefail; printf '%s\\n' {shlex.quote(API_KEY)} | {shlex.join(argv)} | head -1 >/dev/null; "
              "echo \"exit=${PIPESTATUS[1]}\"")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=PROC_TIMEOUT)
    assert "exit=0" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert (tmp_path / ".claude/memory/config.json").exists()
    assert (tmp_path / "cfg/memsyncd/mem0_api_key").read_text().strip() == API_KEY
    assert RootRegistry(tmp_path / "cfg/memsyncd/roots.json").contains(tmp_path)


def test_run_root_warns_when_the_user_daemon_already_serves_it(tmp_path: Path, emu: Emulators,
                                                               runtime: Path) -> None:
    root = user_root(tmp_path / "p", emu)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_RUNTIME_DIR": str(runtime), "MEM0_API_KEY": API_KEY}
    RootRegistry(tmp_path / "cfg" / "memsyncd" / "roots.json").add(root)
    log_path = tmp_path / "single.log"
    with user_daemon(tmp_path / "cfg", runtime, tmp_path, timeout=30, clean_log=False):
        with open(log_path, "wb") as log:
            single = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--root", str(root),
                                       "--socket", str(runtime / "s.sock")], stdout=log, stderr=log,
                                      env=base_env(**env))
        try:
            wait_for(lambda: "already serves" in log_path.read_text() or single.poll() is not None, timeout=30)
            text = log_path.read_text()
            assert "warning: the user daemon" in text and str(root) in text and "roots remove" in text, text
        finally:
            stop_process(single)
