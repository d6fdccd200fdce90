"""``memsyncctl init``: config.json and the key file from flags or questions, checked against the emulators."""

from __future__ import annotations

import argparse
import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, USER, Emulators, closed_port_url, ctl

from memsyncd.cli.init import run_init
from memsyncd.config import Paths, find_api_key, key_file_path, load_api_key, load_settings
from memsyncd.ctl import build_parser


def setup_env(tmp: Path) -> dict[str, str]:
    (tmp / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "cfg")}


def init_args(emu: Emulators, *extra: str) -> tuple[str, ...]:
    return ("init", "--no-input", "--local-url", emu.openmemory, "--user-id", USER, "--cloud-url", emu.mem0, *extra)


def config_of(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / ".claude/memory/config.json").read_text()))


def test_init_writes_config_and_key_file_then_sync_uses_them(tmp_path: Path, emu: Emulators) -> None:
    """Flags + --key-stdin: config as given, key file 0600 in a 0700 dir; a later command finds the key there."""
    env = setup_env(tmp_path)
    result = ctl(tmp_path, *init_args(emu, "--key-stdin", "--default-level", "1", "--app-id", "notes"),
                 key=None, stdin=API_KEY + "\n", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert config_of(tmp_path) == {
        "local": {"url": emu.openmemory, "user_id": USER},
        "cloud": {"enabled": True, "url": emu.mem0, "user_id": USER, "app_id": "notes"},
        "sync": {"default_level": 1},
    }
    key_file = tmp_path / "cfg" / "memsyncd" / "mem0_api_key"
    assert key_file.read_text() == API_KEY + "\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert f"OpenMemory: {emu.openmemory} answered: user '{USER}' known" in result.stdout
    assert f"mem0: {emu.mem0} answered: key accepted" in result.stdout
    assert "memsyncctl service install" in result.stdout and "doctor" in result.stdout
    assert API_KEY not in result.stdout + result.stderr
    assert API_KEY not in (tmp_path / ".claude/memory/config.json").read_text()

    # The key file is the last key source: no MEM0_API_KEY, yet the cloud is configured.
    status = ctl(tmp_path, "--no-daemon", "status", key=None, **env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "SYNC STATUS" in status.stdout


def test_key_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MEM0_API_KEY, then $CREDENTIALS_DIRECTORY/mem0_api_key, then the XDG key file."""
    monkeypatch.delenv("MEM0_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert load_api_key() is None
    key_file_path().parent.mkdir(parents=True)
    key_file_path().write_text("file-key\n")
    assert find_api_key()[0].get_secret_value() == "file-key"  # type: ignore[union-attr]
    assert find_api_key()[1] == str(tmp_path / "cfg" / "memsyncd" / "mem0_api_key")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mem0_api_key").write_text("cred-key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert load_api_key().get_secret_value() == "cred-key"  # type: ignore[union-attr]
    monkeypatch.setenv("MEM0_API_KEY", "env-key")
    assert load_api_key().get_secret_value() == "env-key"  # type: ignore[union-attr]


def test_init_never_overwrites_a_config_without_force(tmp_path: Path, emu: Emulators) -> None:
    """Flags against an existing config: exit 2 and the file untouched; --force replaces it."""
    env = setup_env(tmp_path)
    path = tmp_path / ".claude/memory/config.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"cloud": {"enabled": false}, "local": {"url": "http://127.0.0.1:9"}}')
    before = path.read_text()
    refused = ctl(tmp_path, *init_args(emu), key=None, **env)
    assert refused.returncode == 2 and "nothing was overwritten" in refused.stderr
    assert path.read_text() == before
    forced = ctl(tmp_path, *init_args(emu, "--force"), key=API_KEY, **env)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert config_of(tmp_path)["local"]["url"] == emu.openmemory and "Replaced" in forced.stdout


def test_init_keeps_an_existing_config_and_still_stores_the_key(tmp_path: Path, emu: Emulators) -> None:
    """No config flags: the existing file stays as it is; the key is stored and checked."""
    env = setup_env(tmp_path)
    assert ctl(tmp_path, *init_args(emu), key=None, **env).returncode == 0
    before = (tmp_path / ".claude/memory/config.json").read_bytes()
    result = ctl(tmp_path, "init", "--key-stdin", key=None, stdin=API_KEY, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Keeping the existing" in result.stdout and "key accepted" in result.stdout
    assert (tmp_path / ".claude/memory/config.json").read_bytes() == before
    assert (tmp_path / "cfg/memsyncd/mem0_api_key").read_text().strip() == API_KEY


def test_rejected_key_is_exit_4_and_never_stored(tmp_path: Path, emu: Emulators) -> None:
    """mem0 says 401: exit 4, the key file is not written, the (valid) config is."""
    env = setup_env(tmp_path)
    wrong = "m0-wrong-key-0000000000000000"
    result = ctl(tmp_path, *init_args(emu, "--key-stdin"), key=None, stdin=wrong, **env)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "rejected the key" in result.stdout and "not stored" in result.stdout
    assert not (tmp_path / "cfg/memsyncd/mem0_api_key").exists()
    assert config_of(tmp_path)["cloud"]["url"] == emu.mem0
    assert wrong not in result.stdout + result.stderr


def test_servers_down_warn_but_save_unless_strict(tmp_path: Path, emu: Emulators) -> None:
    """Nothing answers: the setup is saved with a warning (exit 0); --strict saves nothing (exit 5)."""
    down = closed_port_url()
    strict_root, lenient_root = tmp_path / "strict", tmp_path / "lenient"
    for root in (strict_root, lenient_root):
        root.mkdir()
    args = ("init", "--no-input", "--local-url", down, "--cloud-url", down, "--key-stdin")
    strict = ctl(strict_root, *args, "--strict", key=None, stdin=API_KEY, **setup_env(strict_root))
    assert strict.returncode == 5, strict.stdout + strict.stderr
    assert "nothing was written" in strict.stdout
    assert not (strict_root / ".claude").exists() and not (strict_root / "cfg").exists()
    lenient = ctl(lenient_root, *args, key=None, stdin=API_KEY, **setup_env(lenient_root))
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "could not be reached" in lenient.stdout and "did not answer" in lenient.stdout
    assert config_of(lenient_root)["local"]["url"] == down
    assert (lenient_root / "cfg/memsyncd/mem0_api_key").exists()


def test_unknown_openmemory_user_is_exit_2(tmp_path: Path, emu: Emulators) -> None:
    """OpenMemory answers 404 for the user: the answer is shown, exit 2."""
    env = setup_env(tmp_path)
    result = ctl(tmp_path, "init", "--no-input", "--local-url", emu.openmemory, "--user-id", "nobody-here",
                 "--no-cloud", key=None, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "has no user 'nobody-here'" in result.stdout


@pytest.mark.parametrize(("flags", "needle"), [
    (("--local-url", "http://192.0.2.1:8765"), "plain http is allowed only to localhost"),
    (("--default-level", "-1"), "--default-level"),
])
def test_invalid_values_are_exit_2_and_write_nothing(tmp_path: Path, flags: tuple[str, ...], needle: str) -> None:
    """Validated before any write and before any request."""
    result = ctl(tmp_path, "init", "--no-input", "--no-cloud", *flags, key=None, **setup_env(tmp_path))
    assert result.returncode == 2 and needle in result.stderr, result.stdout + result.stderr
    assert not (tmp_path / ".claude").exists()


class ScriptedPrompter:
    """Answers questions from a list, in order; records what was asked."""

    def __init__(self, answers: list[str], secret: str) -> None:
        self.answers, self.secret_answer = list(answers), secret
        self.asked: list[str] = []
        self.said: list[str] = []

    def ask(self, question: str, default: str) -> str:
        self.asked.append(question)
        answer = self.answers.pop(0)
        return answer or default

    def secret(self, question: str) -> str:
        self.asked.append(question)
        return self.secret_answer

    def say(self, text: str) -> None:
        self.said.append(text)


def test_questions_with_defaults_and_a_hidden_key(tmp_path: Path, emu: Emulators,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal: each value is asked with its default, a bad URL is asked again, the level is explained."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("MEM0_API_KEY", raising=False)
    args = build_parser().parse_args(["init"])
    prompter = ScriptedPrompter(
        ["ftp://nope", emu.openmemory, USER, "y", emu.mem0, "", "", "agent-7", "1"], secret=API_KEY)
    code = asyncio.run(run_init(Paths(tmp_path), args, prompter))
    assert code == 0, prompter.said
    assert config_of(tmp_path) == {
        "local": {"url": emu.openmemory, "user_id": USER},
        "cloud": {"enabled": True, "url": emu.mem0, "user_id": USER, "agent_id": "agent-7"},
        "sync": {"default_level": 1},
    }
    assert any("expected an http:// or https:// URL" in line for line in prompter.said)
    assert any("0 = local-only" in line for line in prompter.said)
    assert any("input hidden" in question for question in prompter.asked)
    assert key_file_path().read_text().strip() == API_KEY
    assert load_settings(Paths(tmp_path)).sync.default_level == 1


def test_init_flags_exist_for_every_config_value() -> None:
    """The grammar has the documented flags and never a flag carrying the key."""
    parser = build_parser()
    args = parser.parse_args(["init", "--local-url", "http://127.0.0.1:1", "--user-id", "u", "--cloud-user-id", "c",
                              "--cloud-url", "https://x.invalid", "--default-level", "1", "--app-id", "a",
                              "--agent-id", "g", "--no-cloud", "--key-stdin", "--force", "--strict", "--no-input"])
    assert isinstance(args, argparse.Namespace) and args.cloud_user_id == "c"
    init_parser = next(a for a in parser._subparsers._group_actions if a.choices and "init" in a.choices)  # type: ignore[union-attr]
    flags = {opt for action in init_parser.choices["init"]._actions for opt in action.option_strings}
    assert not any("key" in flag and flag != "--key-stdin" for flag in flags)
