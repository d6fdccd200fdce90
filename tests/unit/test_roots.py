"""The roots registry: add/remove/list, validation, corrupt files left untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memsyncd.errors import RegistryUnreadableError, UsageError
from memsyncd.store.roots import RootRegistry, registry_path


def _project(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    (root / ".claude").mkdir(parents=True)
    return root


def test_add_list_remove_round_trip(tmp_path: Path) -> None:
    """Roots come back in the order they were added; adding twice is a no-op; remove forgets one."""
    registry = RootRegistry(tmp_path / "cfg" / "roots.json")
    a, b = _project(tmp_path, "a"), _project(tmp_path, "b")
    assert registry.add(a) is True
    assert registry.add(b) is True
    assert registry.add(a) is False
    assert [e.path for e in registry.roots()] == [a, b]
    assert registry.contains(b)
    assert registry.remove(a) is True
    assert registry.remove(a) is False
    assert [e.path for e in registry.roots()] == [b]
    assert (b / ".claude").is_dir(), "removing a root never touches its files"


def test_missing_file_is_empty(tmp_path: Path) -> None:
    """No registry yet means no roots, and nothing is created by reading."""
    registry = RootRegistry(tmp_path / "roots.json")
    assert registry.roots() == []
    assert not registry.path.exists()


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_add_refuses_non_roots(tmp_path: Path, make: object) -> None:
    """A directory must exist and hold .claude/; the message says what to do."""
    registry = RootRegistry(tmp_path / "cfg" / "roots.json")
    target = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(UsageError) as info:
        registry.add(target)
    assert str(target) in info.value.message
    assert registry.roots() == []


@pytest.mark.parametrize("text", ["{not json", '{"roots": 3}', '{"roots": [{"path": "relative"}]}', "[" * 100000])
def test_corrupt_registry_is_never_overwritten(tmp_path: Path, text: str) -> None:
    """A corrupt registry raises an exit-6 error naming the file and stays byte-for-byte the same."""
    path = tmp_path / "roots.json"
    path.write_text(text)
    registry = RootRegistry(path)
    with pytest.raises(RegistryUnreadableError) as info:
        registry.add(_project(tmp_path, "p"))
    assert info.value.exit_code == 6
    assert str(path) in info.value.message
    assert path.read_text() == text
    assert registry.contains(tmp_path / "p") is False


def test_default_location_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$XDG_CONFIG_HOME/memsyncd/roots.json, else ~/.config; a relative XDG value is ignored."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert registry_path() == tmp_path / "xdg" / "memsyncd" / "roots.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry_path() == tmp_path / "home" / ".config" / "memsyncd" / "roots.json"


def test_file_format(tmp_path: Path) -> None:
    """The file is versioned JSON with absolute paths and the time each root was added."""
    registry = RootRegistry(tmp_path / "roots.json")
    root = _project(tmp_path, "p")
    registry.add(root)
    data = json.loads(registry.path.read_text())
    assert data["version"] == 1
    assert data["roots"][0]["path"] == str(root)
    assert data["roots"][0]["added"].endswith("Z")
