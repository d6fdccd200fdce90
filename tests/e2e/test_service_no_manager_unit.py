"""``service install`` without a user service manager keeps the unit it wrote, and says so and what to do with it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from harness import NO_BUS, ctl, service_env


@pytest.mark.skipif(sys.platform == "darwin", reason="systemd user units are Linux only")
def test_exit_5_says_the_unit_file_is_kept_and_how_to_use_or_remove_it(tmp_path: Path) -> None:
    env = service_env(tmp_path, NO_BUS)
    install = ctl(tmp_path, "service", "install", key=None, **env)
    unit = tmp_path / "cfg/systemd/user/memsyncd.service"
    assert install.returncode == 5, install.stdout + install.stderr
    assert unit.exists()  # the state the message describes
    assert f"{unit} was written and is kept" in install.stderr
    assert "systemctl --user enable --now memsyncd" in install.stderr
    assert "memsyncctl service uninstall" in install.stderr
