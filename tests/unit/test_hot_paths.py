"""The fast paths' stdlib helpers give the same answers as the full code they stand in for.

Root discovery and socket lookup (``store/locate``), the trust quick check (``store/trust_check``),
the raw queue append (``store/queue_file``) and the timestamp helpers (``timestamps``).
"""

from __future__ import annotations

import json
import os
import random
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from memsyncd.errors import QueueUnreadableError, UntrustedRootError
from memsyncd.store import locate, trust_check
from memsyncd.store.paths import default_socket_path, resolve_root
from memsyncd.store.queue import QueueStore, parse_queue
from memsyncd.store.queue_file import append_pending
from memsyncd.store.trust import evaluate, record_trust
from memsyncd.timestamps import epoch_seconds, now_ts, parse_ts

CONFIG = {"local": {"url": "http://127.0.0.1:8765", "user_id": "u"}, "cloud": {"enabled": True}}


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR; no trusted roots from the suite."""
    for name in ("home", "home/.config", "run"):
        (tmp_path / name).mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home/.config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("MEMSYNC_TRUSTED_ROOTS", raising=False)
    monkeypatch.delenv("MEMSYNC_ROOT", raising=False)
    return tmp_path / "home"


def make_root(parent: Path, config: dict[str, object] | None = CONFIG) -> Path:
    root = parent / "proj"
    (root / ".claude/memory").mkdir(parents=True)
    for directory in (root / ".claude", root / ".claude/memory"):
        directory.chmod(0o755)
    if config is not None:
        (root / ".claude/memory/config.json").write_text(json.dumps(config))
        (root / ".claude/memory/config.json").chmod(0o644)
    return root


# --- timestamps ----------------------------------------------------------------------------------

def test_epoch_seconds_agrees_with_parse_ts() -> None:
    rng = random.Random(16)
    start = datetime(1, 1, 1, tzinfo=UTC)
    for i in range(20_000):
        moment = start + timedelta(seconds=rng.randrange(315_537_897_599), microseconds=rng.randrange(10**6) * (i % 2))
        text = moment.isoformat().replace("+00:00", rng.choice(["Z", "+00:00"]))
        assert epoch_seconds(text) == pytest.approx(parse_ts(text).timestamp(), abs=1e-5), text
    for other in ("2026-01-01T00:00:00+02:00", "2026-01-01", "2026-01-01T00:00:00.Z", "2026-01-01 10:00:00Z",
                  "2026-01-01t10:00:00Z"):
        assert epoch_seconds(other) == pytest.approx(parse_ts(other).timestamp()), other


@pytest.mark.parametrize("text", ["2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z",
                                  "2026-01-01T00:60:00Z", "0000-01-01T00:00:00Z", "2026-01-0xT00:00:00Z", "x", "",
                                  "2026-01-01T00:00:00z"])
def test_epoch_seconds_refuses_what_parse_ts_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ts(text)
    with pytest.raises(ValueError):
        epoch_seconds(text)


def test_now_ts_is_the_canonical_utc_form() -> None:
    text = now_ts()
    assert text.endswith("Z") and abs(parse_ts(text).timestamp() - datetime.now(UTC).timestamp()) < 5
    assert epoch_seconds(text) == pytest.approx(parse_ts(text).timestamp(), abs=1e-5)


# --- root discovery and sockets ------------------------------------------------------------------

def test_find_root_matches_resolve_root(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path / "work")
    deep = root / "src/a/b"
    deep.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(deep)
    for cwd in (deep, link, root, tmp_path):
        assert locate.find_root(cwd=str(cwd)) == str(resolve_root(cwd=cwd))
    assert locate.find_root(cwd=str(deep)) == str(root)
    assert locate.find_root(cwd=str(tmp_path)) == str(home.resolve())  # no config above: home
    assert locate.find_root("~/x") == str(resolve_root("~/x")) == str(home / "x")
    monkeypatch.setenv("MEMSYNC_ROOT", str(link))
    assert locate.find_root() == str(resolve_root()) == str(deep)


def test_find_root_in_a_deleted_directory_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    monkeypatch.delenv("MEMSYNC_ROOT", raising=False)
    with pytest.raises(locate.RootNotFound, match="no longer exists"):
        locate.find_root()


def test_socket_lookup_creates_nothing_and_lists_only_sockets(home: Path, tmp_path: Path) -> None:
    root = str(make_root(tmp_path))
    runtime = tmp_path / "run/memsyncd"
    assert locate.socket_candidates(root) == [] and not runtime.exists()  # no runtime dir: none made
    assert locate.socket_candidates(root, "/x.sock") == ["/x.sock"]
    runtime.mkdir(mode=0o700)
    own = default_socket_path(Path(root))
    assert str(own) == os.path.join(runtime, f"{locate.root_id(root)}.sock")
    (runtime / "memsyncd.sock").write_text("not a socket")
    assert locate.socket_candidates(root) == []
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(own))
        assert locate.socket_candidates(root) == [str(own)]
    finally:
        listener.close()
    runtime.chmod(0o755)  # not 0700: the full check repairs or refuses it
    assert locate.socket_candidates(root) is None


def test_in_registry_reads_served_and_removed_roots(home: Path, tmp_path: Path) -> None:
    from memsyncd.store.roots import RootRegistry

    root = make_root(tmp_path)
    assert not locate.in_registry(str(root))
    RootRegistry().add(root)
    assert locate.in_registry(str(root)) and RootRegistry().contains(root)
    RootRegistry().remove(root)  # removed by hand: listed as ignored, still nothing to tell the daemon
    assert locate.in_registry(str(root)) and RootRegistry().is_ignored(root) and not RootRegistry().contains(root)


# --- trust -------------------------------------------------------------------------------------

def test_quick_trust_says_trusted_only_when_evaluate_does(home: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path)
    config = root / ".claude/memory/config.json"

    def both() -> tuple[bool, bool]:
        try:
            full = evaluate(root).trusted
        except UntrustedRootError:
            full = False
        return trust_check.quick_trusted(str(root)), full

    assert both() == (False, False)  # never trusted
    record_trust(root)
    assert both() == (True, True)
    config.write_text(json.dumps({**CONFIG, "cloud": {"enabled": True, "url": "https://elsewhere.example"}}))
    assert both() == (False, False)  # changed
    monkeypatch.setenv("MEMSYNC_TRUSTED_ROOTS", f"relative:{tmp_path}")
    assert both() == (True, True)
    (root / ".claude").chmod(0o775)  # group-writable: refused outright, even when trusted
    assert both() == (False, False)
    (root / ".claude").chmod(0o755)
    config.write_text("{not json")
    assert trust_check.quick_trusted(str(root)) is False
    config.unlink()
    assert both() == (True, True)  # no config: defaults and the environment only


# --- the raw queue append ------------------------------------------------------------------------

def test_append_pending_writes_what_the_engine_reads(tmp_path: Path) -> None:
    queue, lock = tmp_path / "s/q.json", tmp_path / "s/q.json.lock"
    append_pending(queue, lock, [{"id": "a", "action": "push", "timestamp": now_ts()}])
    store = QueueStore(queue, lock)
    store.update(lambda doc: setattr(doc, "last_sync", "2026-01-01T00:00:00Z"))
    text = queue.read_text()
    data = json.loads(text)
    data["custom"] = {"kept": True}
    queue.write_text(json.dumps(data))
    append_pending(queue, lock, [{"id": "b", "action": "delete", "timestamp": now_ts(), "level": 0}])
    doc = store.read()
    assert [(e.id, e.action, e.level) for e in doc.pending] == [("a", "push", None), ("b", "delete", 0)]
    assert doc.last_sync == "2026-01-01T00:00:00Z" and doc.extra == {"custom": {"kept": True}}
    assert [p.name for p in queue.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("text", ['{"pending": [', "[]", '{"pending": {}}', '{"pending": [{"id": "a"}]}',
                                  '{"pending": [{"id": "a", "action": "push", "timestamp": "yesterday"}]}',
                                  '{"sync_errors": [{"id": 1}]}', '{"last_sync": 5}'])
def test_append_pending_refuses_what_parse_queue_refuses_and_leaves_it(tmp_path: Path, text: str) -> None:
    queue = tmp_path / "q.json"
    queue.write_text(text)
    with pytest.raises(ValueError) as parsed:
        parse_queue(text)
    with pytest.raises(QueueUnreadableError) as appended:
        append_pending(queue, tmp_path / "q.json.lock", [{"id": "x", "action": "push", "timestamp": now_ts()}])
    assert appended.value.reason == str(parsed.value) and queue.read_text() == text
