"""The ``memsyncd`` entry point: usage, version, and clear exit-2 errors before anything starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import base_env

from memsyncd.main import main


def test_usage_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    """No command: usage on stdout and exit 2; --version: exit 0; unknown command: exit 2."""
    assert main([]) == 2 and "memsyncd {run,emulate,demo}" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["--version"]) == 0 and "memsyncd 0.1.0" in capsys.readouterr().out
    assert main(["teleport"]) == 2 and "unknown command 'teleport'" in capsys.readouterr().err


def test_run_with_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    """The daemon refuses a bad config before taking locks or sockets."""
    config = tmp_path / ".claude/memory/config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"sync": {"pull_interval_seconds": -5}}))
    result = subprocess.run([sys.executable, "-m", "memsyncd", "run", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, env=base_env())
    assert result.returncode == 2
    assert "sync.pull_interval_seconds" in result.stderr and str(config) in result.stderr
    assert not (tmp_path / ".claude/memory/memsyncd.pid").exists()


def test_emulate_refuses_non_loopback_hosts() -> None:
    """The emulators never listen beyond loopback."""
    result = subprocess.run([sys.executable, "-m", "memsyncd", "emulate", "--host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=60, env=base_env())
    assert result.returncode == 2 and "loopback" in result.stderr
