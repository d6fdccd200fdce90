"""Tests of the SQLite state store and of configuration loading / root resolution."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from memsyncd.config import Paths, load_api_key, load_settings, resolve_root
from memsyncd.errors import ConfigError, StateUnreadableError
from memsyncd.loopback import is_loopback_host
from memsyncd.models import Mapping
from memsyncd.store.state import SCHEMA_VERSION, StateStore


def test_state_schema_is_versioned(tmp_path: Path) -> None:
    """A new DB gets the current user_version and WAL."""
    store = StateStore(tmp_path / "s.db")
    store.close()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_state_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    """A DB written by a newer memsyncd is not touched."""
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateUnreadableError, match="newer"):
        StateStore(tmp_path / "s.db")


def test_state_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    """Not a database: exit-6 error naming the file."""
    (tmp_path / "s.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateUnreadableError, match="s.db"):
        StateStore(tmp_path / "s.db")


def test_mapping_intent_and_conflict_lifecycle(tmp_path: Path) -> None:
    """Saving a mapping clears the intent; conflicts are one per memory and refreshable."""
    store = StateStore(tmp_path / "s.db")
    store.record_intent("L1", "h1")
    assert store.intent_for("L1") is not None
    store.save_mapping(Mapping("L1", "C1", "h1", "text"))
    assert store.intent_for("L1") is None
    assert store.mapping_for_cloud("C1") == Mapping("L1", "C1", "h1", "text", 1)
    first = store.record_conflict("L1", "C1", "text", "mine", "theirs", "edited on both sides")
    again = store.record_conflict("L1", "C1", "text", "mine2", "theirs", "edited on both sides")
    assert first.id == again.id and store.conflict(first.id).local_text == "mine2"  # type: ignore[union-attr]
    store.delete_conflict(first.id)
    assert store.conflicts() == []
    device = store.device_id
    assert device == store.device_id and len(device) == 32


def write_config(root: Path, data: object) -> Paths:
    paths = Paths(root)
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(json.dumps(data))
    return paths


def test_settings_defaults_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """File values load; MEMSYNC_ with __ nesting overrides them."""
    paths = write_config(tmp_path, {"cloud": {"enabled": True, "url": "http://127.0.0.1:9"},
                                    "local": {"user_id": "alice"}, "other_tool": {"x": 1}})
    monkeypatch.setenv("MEMSYNC_SYNC__DEBOUNCE_MS", "50")
    monkeypatch.setenv("MEMSYNC_CLOUD__URL", "https://mem0.example")
    settings = load_settings(paths)
    assert settings.cloud.enabled and settings.cloud.url == "https://mem0.example"
    assert settings.sync.debounce_ms == 50 and settings.cloud_user_id == "alice"
    assert settings.sync.default_level == 0


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"sync": {"debounce_ms": "soon"}}, "sync.debounce_ms"),
        ({"sync": {"concurrency": 0}}, "sync.concurrency"),
        ({"sync": {"debounce": 5}}, "sync.debounce"),
        ({"cloud": {"url": "http://api.mem0.ai"}}, "cloud.url"),
        ({"local": {"url": "ftp://x"}}, "local.url"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_config_names_file_and_key(tmp_path: Path, data: object, needle: str) -> None:
    """One clear message naming the file, the key and what was expected."""
    paths = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_settings(paths)
    assert needle in str(info.value) and str(paths.config) in str(info.value)


def test_invalid_env_override_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad environment value is blamed on the variable, not the file."""
    paths = write_config(tmp_path, {})
    monkeypatch.setenv("MEMSYNC_SYNC__CONCURRENCY", "-3")
    with pytest.raises(ConfigError, match="MEMSYNC_SYNC__CONCURRENCY"):
        load_settings(paths)


def test_config_that_is_not_json(tmp_path: Path) -> None:
    """Syntax errors give line and column."""
    paths = Paths(tmp_path)
    paths.config.parent.mkdir(parents=True)
    paths.config.write_text('{"cloud": {"enabled": tru}}')
    with pytest.raises(ConfigError, match="line 1 column"):
        load_settings(paths)


@pytest.mark.parametrize(("host", "loopback"), [("localhost", True), ("127.0.0.5", True), ("::1", True),
                                                 ("[::1]", True), ("10.0.0.1", False), ("api.mem0.ai", False)])
def test_loopback_detection(host: str, loopback: bool) -> None:
    """Plain http is only allowed to these."""
    assert is_loopback_host(host) is loopback


def test_root_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--root, then MEMSYNC_ROOT, then the nearest ancestor with a config, then home."""
    project = tmp_path / "proj"
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    write_config(project, {})
    monkeypatch.delenv("MEMSYNC_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_root(None, cwd=deep) == project.resolve()
    assert resolve_root(None, cwd=tmp_path) == (tmp_path / "home").resolve()
    monkeypatch.setenv("MEMSYNC_ROOT", str(tmp_path / "env"))
    assert resolve_root(None, cwd=deep) == (tmp_path / "env").resolve()
    assert resolve_root(tmp_path / "flag", cwd=deep) == (tmp_path / "flag").resolve()


def test_key_from_env_or_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MEM0_API_KEY wins; else $CREDENTIALS_DIRECTORY/mem0_api_key; the value is a SecretStr."""
    monkeypatch.delenv("MEM0_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert load_api_key() is None
    (tmp_path / "mem0_api_key").write_text("cred-key\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    key = load_api_key()
    assert key is not None and key.get_secret_value() == "cred-key" and "cred-key" not in repr(key)
    monkeypatch.setenv("MEM0_API_KEY", "env-key")
    assert load_api_key().get_secret_value() == "env-key"  # type: ignore[union-attr]
