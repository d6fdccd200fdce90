"""``memsyncctl init`` without a terminal and without ``--no-input`` asks for them: it never takes defaults silently."""

from __future__ import annotations

from pathlib import Path

from harness import API_KEY, Emulators, ctl


def _env(tmp: Path) -> dict[str, str]:
    (tmp / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "cfg")}


def test_no_terminal_and_no_no_input_is_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    result = ctl(tmp_path, "init", key=None, stdin="", **_env(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--no-input" in result.stderr and "terminal" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".claude").exists() and not (tmp_path / "cfg").exists()


def test_key_stdin_without_no_input_writes_no_new_config(tmp_path: Path, emu: Emulators) -> None:
    """stdin carries the key, so nothing can be asked: a new config needs --no-input (the key is not stored)."""
    result = ctl(tmp_path, "init", "--local-url", emu.openmemory, "--key-stdin", key=None, stdin=API_KEY,
                 **_env(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--no-input" in result.stderr
    assert not (tmp_path / ".claude").exists() and not (tmp_path / "cfg").exists()
