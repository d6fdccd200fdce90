"""``memsyncctl service`` under a real systemd user manager (issue 15, item 8).

The recipe: inside ``unshare --mount --propagation private``, a tmpfs on /run with /run/systemd/system,
then ``/lib/systemd/systemd --user`` with HOME and XDG_RUNTIME_DIR in a throw-away directory outside
/tmp. The home is under /var/tmp, which the unit's ``PrivateTmp=`` hides from the service: its
``ReadWritePaths=%h`` cannot be set up and the unit fails with status 226/NAMESPACE on every kernel,
as it does where the kernel refuses part of the sandbox. ``service install`` must name that cause,
and ``service install --no-sandbox`` must turn off only what is refused, say what it costs, and
leave a service that runs, restarts after kill -9 and uninstalls cleanly.

Skipped (with the reason) where unshare, systemd or the privileges to use them are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness import base_env

SYSTEMD = Path("/lib/systemd/systemd")
SCRIPT_TIMEOUT = 240


def _unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "systemd user units are Linux only"
    for tool in ("unshare", "systemctl", "systemd-run"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is missing"
    if os.geteuid() != 0:
        return "unshare --mount and a tmpfs on /run need root (CI runs as root)"
    try:
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                               timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    return None if probe.returncode == 0 else f"unshare refused: {probe.stderr.decode(errors='replace').strip()}"


SCRIPT = r"""
set -u
mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system || { echo "setup=failed"; exit 0; }
/lib/systemd/systemd --user > "$BASE/manager.log" 2>&1 &
MANAGER=$!
trap 'kill $MANAGER 2>/dev/null; wait $MANAGER 2>/dev/null' EXIT
for i in $(seq 150); do
  state=$(systemctl --user is-system-running 2>/dev/null); case $state in running|degraded) break;; esac; sleep 0.1
done
echo "manager=$state"
ctl() { "$PYTHON" -m memsyncd.ctl --root "$HOME" "$@"; }
ctl service install > "$BASE/install.out" 2>&1; echo "install=$?"
ctl service install --no-sandbox > "$BASE/nosandbox.out" 2>&1; echo "nosandbox=$?"
ctl service status > /dev/null 2>&1; echo "status=$?"
pid=$(systemctl --user show -p MainPID --value memsyncd.service)
kill -9 "$pid"
for i in $(seq 150); do
  new=$(systemctl --user show -p MainPID --value memsyncd.service)
  [ "$(systemctl --user is-active memsyncd.service)" = active ] && [ "$new" != "$pid" ] && [ "$new" != 0 ] && break
  sleep 0.1
done
echo "restarted=$(systemctl --user is-active memsyncd.service)"
ctl service uninstall > "$BASE/uninstall.out" 2>&1; echo "uninstall=$?"
echo "unit_left=$(ls "$XDG_CONFIG_HOME/systemd/user" 2>/dev/null | tr '\n' ' ')"
"""


@pytest.mark.skipif(_unavailable() is not None, reason=str(_unavailable()))
def test_service_install_names_226_and_no_sandbox_runs_under_a_real_user_manager() -> None:
    base = Path(tempfile.mkdtemp(prefix="memsyncd-svc-", dir="/var/tmp"))
    home, runtime = base / "home", base / "run"
    for directory in (home, runtime):
        directory.mkdir(mode=0o700)
    key = home / ".config" / "memsyncd" / "mem0_api_key"
    key.parent.mkdir(parents=True, mode=0o700)
    key.write_text("m0-service-test-key\n")
    key.chmod(0o600)
    env = base_env(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(home / ".config"),
                   BASE=str(base), PYTHON=sys.executable,
                   PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c", SCRIPT], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the service script did not finish in {SCRIPT_TIMEOUT} s:\n{output}")
    try:
        facts = dict(line.split("=", 1) for line in output.splitlines()
                     if "=" in line and " " not in line.split("=")[0])
        assert facts.get("manager") in ("running", "degraded"), output + (base / "manager.log").read_text()
        install = (base / "install.out").read_text()
        assert facts["install"] == "1", install
        message = install.splitlines()[-1]
        assert "226/NAMESPACE" in message and "--no-sandbox" in message, install
        assert "Created symlink" not in message
        no_sandbox = (base / "nosandbox.out").read_text()
        assert facts["nosandbox"] == "0", no_sandbox
        assert "PrivateTmp=" in no_sandbox and "What that costs" in no_sandbox, no_sandbox
        assert facts["status"] == "0" and facts["restarted"] == "active", output
        assert facts["uninstall"] == "0", (base / "uninstall.out").read_text()
        assert facts["unit_left"].strip() == "", output
    finally:
        shutil.rmtree(base, ignore_errors=True)
