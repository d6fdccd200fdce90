"""The Claude Code plugin: one source for the plugin and ``integrate claude``, versions, and the real CLI.

The tests that run Claude Code's own ``claude plugin validate / marketplace add / install``
skip (with the reason) when ``claude`` is not on PATH (``npm install -g
@anthropic-ai/claude-code``; ``.ci/run`` does it when npm exists). They run it offline:
a throw-away HOME and CLAUDE_CONFIG_DIR, non-essential traffic off, and every HTTP(S)
proxy pointed at a closed loopback port, so an unexpected request fails instead of
leaving the machine. Each call is bounded by a timeout.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from harness import closed_port_url

from memsyncd import __version__
from memsyncd.cli.doctor import DoctorContext, Status, check_claude
from memsyncd.cli.integration import HOOK_COMMAND, integrate_claude, plugin_file
from memsyncd.config import Paths

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "packaging" / "claude"
PACKAGE_DATA = REPO / "memsyncd" / "data"
CLI_TIMEOUT = 60.0
needs_claude = pytest.mark.skipif(shutil.which("claude") is None,
                                  reason="Claude Code CLI not installed (npm install -g @anthropic-ai/claude-code)")


def _plugin_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_versions_agree() -> None:
    """plugin.json's version == memsyncd.__version__ == pyproject's version (the plugin updates by version)."""
    manifest = json.loads((PLUGIN / ".claude-plugin" / "plugin.json").read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert manifest["version"] == __version__ == pyproject["project"]["version"]
    assert manifest["name"] == "memsyncd" and manifest["description"]


def test_plugin_and_integrate_share_one_source(tmp_path: Path) -> None:
    """packaging/claude is the package data; integrate installs its very command files and hook."""
    assert PLUGIN.resolve() == (PACKAGE_DATA / "claude").resolve() == plugin_file().resolve()
    marketplace = json.loads((REPO / ".claude-plugin" / "marketplace.json").read_text())
    entry = next(p for p in marketplace["plugins"] if p["name"] == "memsyncd")
    assert (REPO / entry["source"]).resolve() == PLUGIN.resolve()

    integrate_claude(tmp_path)
    commands = PLUGIN / "commands"
    shipped = {str(p.relative_to(commands)): p.read_bytes() for p in commands.rglob("*.md")}
    assert set(shipped) == {"memory/sync.md", "memory/conflict.md"}
    installed = tmp_path / ".claude" / "commands"
    assert {name: (installed / name).read_bytes() for name in shipped} == shipped
    hook_group = json.loads((PLUGIN / "hooks" / "hooks.json").read_text())["hooks"]["PostToolUse"][0]
    settings = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    assert settings["hooks"]["PostToolUse"] == [hook_group]
    assert hook_group["hooks"][0]["command"] == HOOK_COMMAND
    assert set(hook_group["matcher"].split("|")) == {
        "mcp__openmemory__add_memories", "mcp__openmemory__delete_memories", "mcp__openmemory__delete_all_memories"}


def test_package_data_ships_every_plugin_file() -> None:
    """pyproject's package-data globs (which skip dot-directories) cover every file under memsyncd/data."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["memsyncd"]
    covered = {path for pattern in patterns
               for path in glob.glob(pattern, root_dir=REPO / "memsyncd", recursive=True)}
    wanted = {str(Path(dirpath, name).relative_to(REPO / "memsyncd"))
              for dirpath, _, names in os.walk(PACKAGE_DATA) for name in names}
    assert ".claude-plugin" in "".join(wanted)
    assert wanted <= covered, wanted - covered


# --- the real Claude Code CLI --------------------------------------------------------------------


def claude_env(home: Path) -> dict[str, str]:
    """An environment in which ``claude`` touches only ``home`` and cannot reach the network."""
    proxy = closed_port_url()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "CLAUDE_CONFIG_DIR": str(home / ".claude"), "XDG_CONFIG_HOME": str(home / ".config"),
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
           "DISABLE_ERROR_REPORTING": "1", "CI": "1", "TERM": "dumb"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[name] = proxy
    return env


def claude(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["claude", *args], capture_output=True, text=True, timeout=CLI_TIMEOUT,
                          env=claude_env(home), cwd=home, stdin=subprocess.DEVNULL)


@needs_claude
def test_claude_validates_the_plugin_and_the_marketplace(tmp_path: Path) -> None:
    """`claude plugin validate --strict` passes on packaging/claude and on the repository's marketplace."""
    for target in (PLUGIN, REPO):
        result = claude(tmp_path, "plugin", "validate", "--strict", str(target))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Validation passed" in result.stdout


@needs_claude
def test_claude_validate_catches_a_broken_command(tmp_path: Path) -> None:
    """The validator really reads our command files: unquoted YAML in argument-hint fails it."""
    copy = tmp_path / "plugin"
    shutil.copytree(PLUGIN, copy)
    sync = copy / "commands" / "memory" / "sync.md"
    sync.write_text(sync.read_text().replace('argument-hint: "[--push] [--pull] [--status]"',
                                             "argument-hint: [--push] [--pull] [--status]"))
    result = claude(tmp_path, "plugin", "validate", str(copy))
    assert result.returncode != 0 and "frontmatter" in result.stdout, result.stdout


@needs_claude
def test_claude_installs_the_plugin_from_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """marketplace add <checkout> + install memsyncd@memsyncd: the shipped files land enabled, and doctor sees it."""
    home = tmp_path / "home"
    home.mkdir()
    added = claude(home, "plugin", "marketplace", "add", str(REPO))
    assert added.returncode == 0, added.stdout + added.stderr
    installed = claude(home, "plugin", "install", "memsyncd@memsyncd")
    assert installed.returncode == 0, installed.stdout + installed.stderr

    config_dir = home / ".claude"
    record = json.loads((config_dir / "plugins" / "installed_plugins.json").read_text())["plugins"]["memsyncd@memsyncd"]
    assert record[0]["version"] == __version__
    assert _plugin_files(Path(record[0]["installPath"])) == _plugin_files(PLUGIN)
    assert json.loads((config_dir / "settings.json").read_text())["enabledPlugins"]["memsyncd@memsyncd"] is True
    listing = claude(home, "plugin", "list")
    assert "memsyncd@memsyncd" in listing.stdout and __version__ in listing.stdout

    bin_dir = tmp_path / "bin"  # the hook runs `memsyncctl`: doctor also checks it is on PATH
    bin_dir.mkdir()
    (bin_dir / "memsyncctl").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "memsyncctl").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    check = check_claude(DoctorContext(paths=Paths(tmp_path / "root"), home=home, claude_dir=config_dir))
    assert check.status is Status.OK and "memsyncd@memsyncd" in check.detail, check
