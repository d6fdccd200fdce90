"""The suite never reaches the user's daemon or registry (issue 15, item 1).

A decoy "user daemon" (a real ``memsyncd run``) serves a decoy user environment: its own HOME,
XDG_CONFIG_HOME (registry) and XDG_RUNTIME_DIR (socket). A sample of the suite then runs in a
pytest subprocess started from that environment, as a developer would run ``pytest`` in the
shell where their daemon runs. Afterwards the decoy's registry is byte-for-byte what it was and
its log shows no control request at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import stop_process, wait_for

from memsyncd.emulators.isolation import MARKER, isolated_locations

TESTS = Path(__file__).parent.parent  # tests/
SAMPLE = ["e2e/test_hook.py", "unit/test_roots.py"]  # the hook's queue writes, the user's roots registry


@pytest.fixture()
def decoy() -> Iterator[Path]:
    """A short directory standing for the user's own HOME / XDG dirs (socket paths are limited to ~107 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="msdecoy-", dir="/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_isolated_environment_is_private() -> None:
    """This process already runs in a private user environment whose socket path fits a sockaddr_un."""
    base = Path(os.environ[MARKER])
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
        assert Path(os.environ[name]).is_relative_to(base), name
    assert len(str(Path(os.environ["XDG_RUNTIME_DIR"]) / "memsyncd" / "memsyncd.sock")) < 100


def test_suite_sample_never_reaches_the_users_daemon(decoy: Path) -> None:
    user_env = {k: v for k, v in os.environ.items() if k != MARKER and not k.startswith("PYTEST_")}
    user_env.update(isolated_locations(decoy))  # the "user's" own locations, as in their shell
    user_env["PYTHONUNBUFFERED"] = "1"
    user_root = decoy / "home" / "project"
    (user_root / ".claude").mkdir(parents=True)
    registry = Path(user_env["XDG_CONFIG_HOME"]) / "memsyncd" / "roots.json"
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"version": 1, "roots": [{"path": str(user_root), "added": ""}]}) + "\n")
    before = registry.read_bytes()
    log_path = decoy / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--log-level", "debug",
                                   "--log-format", "json"], stdout=log, stderr=log, env=user_env)
    try:
        socket_path = Path(user_env["XDG_RUNTIME_DIR"]) / "memsyncd" / "memsyncd.sock"
        wait_for(lambda: (socket_path.exists() and "daemon.started" in log_path.read_text())
                 or daemon.poll() is not None, timeout=30)
        assert daemon.poll() is None, log_path.read_text()[-2000:]
        started = log_path.read_text()
        sample = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *(str(TESTS / f) for f in SAMPLE)],
            cwd=TESTS.parent, env=user_env, capture_output=True, text=True, timeout=300)
        assert sample.returncode == 0, sample.stdout[-3000:] + sample.stderr[-2000:]
        assert registry.read_bytes() == before
        requests = [line for line in log_path.read_text()[len(started):].splitlines() if "control.request" in line]
        assert requests == [], f"the suite reached the user's daemon: {requests[:5]}"
    finally:
        stop_process(daemon)
