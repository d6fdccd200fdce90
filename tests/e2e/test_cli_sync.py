"""Integration: ``memsyncctl`` as a subprocess against ``memsyncd emulate`` on loopback (one-shot mode)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from harness import API_KEY, Emulators, ctl, make_root, queue_path, read_queue


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def enqueue_all(root: Path, ids: list[str], **levels: int) -> None:
    for memory_id in ids:
        assert ctl(root, "--no-daemon", "enqueue", memory_id).returncode == 0


def test_not_configured_is_unavailable_and_sends_nothing(tmp_path: Path, emu: Emulators) -> None:
    """No key, or cloud.enabled false: the seed's SYNC UNAVAILABLE block, exit 3, no request."""
    emu.clear_requests()
    emu.clear_requests("openmemory")
    no_key = make_root(tmp_path / "a", emu)
    disabled = make_root(tmp_path / "b", emu, enabled=False)
    for root, key in ((no_key, None), (disabled, API_KEY)):
        for args in (("sync",), ("sync", "--push"), ("status",)):
            result = ctl(root, *args, key=key)
            assert result.returncode == 3, result.stderr
            assert result.stdout.startswith("SYNC UNAVAILABLE\nCloud sync is not configured.\n")
            assert "1. Set MEM0_API_KEY environment variable" in result.stdout
    assert emu.requests() == [] and emu.requests("openmemory") == []
    assert not (no_key / ".claude/memory/memsync.db").exists()  # nothing written either
    as_json = ctl(no_key, "sync", "--json", key=None)
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["error"]["type"] == "SyncUnavailableError"


def test_push_levels_never_leak_level_0(root: Path, emu: Emulators) -> None:
    """7 entries of levels 0/1/2: level 0 never reaches mem0 in any form; the rest are created verbatim."""
    texts = [f"push-levels memory {i} ✓" for i in range(7)]
    ids = [emu.local_add(t, level=i % 3) for i, t in enumerate(texts)]
    for memory_id in ids:
        assert ctl(root, "enqueue", memory_id).returncode == 0
    emu.clear_requests()
    result = ctl(root, "sync", "--push")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PUSH: 4 memories synced to cloud" in result.stdout
    assert "Skipped: 3 local-only (level 0)" in result.stdout

    log = emu.requests()
    blob = json.dumps(log, ensure_ascii=False)
    for i in (0, 3, 6):  # level 0
        assert texts[i] not in blob and sha(texts[i]) not in blob and ids[i] not in blob
    adds = [json.loads(r["body"]) for r in log if r["path"] == "/v3/memories/add/"]
    assert sorted(a["messages"][0]["content"] for a in adds) == sorted(texts[i] for i in (1, 2, 4, 5))
    for add in adds:
        assert add["infer"] is False and add["user_id"] == "alice"
        meta = add["metadata"]
        assert set(meta) == {"memsync_local_id", "memsync_device", "level", "content_hash"}
        assert meta["content_hash"] == sha(add["messages"][0]["content"]) and meta["level"] in (1, 2)
    assert read_queue(root)["pending"] == []

    emu.clear_requests()
    again = ctl(root, "sync", "--push")
    assert again.returncode == 0 and "PUSH: 0 memories synced to cloud" in again.stdout
    assert not [r for r in emu.requests() if r["method"] != "GET" or "/v3/" in r["path"]]


def test_pull_creates_locally_once_and_never_pulls_own_pushes(root: Path, emu: Emulators) -> None:
    """New cloud memories appear locally; a second pull is a no-op; our pushes are not pulled back."""
    mine = emu.local_add("pull-test: written locally", level=1)
    ctl(root, "enqueue", mine)
    assert ctl(root, "sync", "--push").returncode == 0
    emu.cloud_add("pull-test: written in the cloud A")
    emu.cloud_add("pull-test: written in the cloud B")
    before = emu.local_texts()
    first = ctl(root, "sync", "--pull")
    assert first.returncode == 0, first.stderr
    assert "PULL: 2 memories synced from cloud" in first.stdout and "New: 2 | Updated: 0 | Conflicts: 0" in first.stdout
    after = emu.local_texts()
    assert sorted(set(after) - set(before)) == ["pull-test: written in the cloud A",
                                                "pull-test: written in the cloud B"]
    assert after.count("pull-test: written locally") == 1
    second = ctl(root, "sync", "--pull")
    assert "PULL: 0 memories synced from cloud" in second.stdout and emu.local_texts() == after
    full = ctl(root, "sync")
    assert full.returncode == 0 and emu.local_texts() == after
    assert read_queue(root)["last_sync"] is not None


def _synced_pair(root: Path, emu: Emulators, text: str) -> tuple[str, str]:
    local_id = emu.local_add(text, level=1)
    ctl(root, "enqueue", local_id)
    assert ctl(root, "sync").returncode == 0
    (cloud,) = [m for m in emu.cloud_memories() if m["memory"] == text]
    return local_id, cloud["id"]


def test_one_sided_edits_fast_forward(root: Path, emu: Emulators) -> None:
    """An edit on one side only is copied to the other side."""
    local_id, cloud_id = _synced_pair(root, emu, "ff: original")
    emu.local_edit(local_id, "ff: edited locally")
    ctl(root, "enqueue", local_id)
    assert ctl(root, "sync").returncode == 0
    assert "ff: edited locally" in emu.cloud_texts() and "ff: original" not in emu.cloud_texts()
    emu.cloud_edit(cloud_id, "ff: edited in the cloud")
    result = ctl(root, "sync")
    assert "Updated: 1" in result.stdout
    # written as a new local copy (OpenMemory's PUT would leave what agents read stale): the old one is deleted
    texts = emu.local_texts()
    assert texts.count("ff: edited in the cloud") == 1 and "ff: edited locally" not in texts
    assert emu.local_get(local_id)["state"] == "deleted"


@pytest.mark.parametrize("keep", ["local", "cloud", "both", "text"])
def test_conflict_is_listed_never_overwritten_and_resolvable(root: Path, emu: Emulators, keep: str) -> None:
    """Both sides edited: a conflict, nothing overwritten; each resolution behaves as SPEC 4 says."""
    tag = f"conflict-{keep}"
    local_id, cloud_id = _synced_pair(root, emu, f"{tag}: base")
    emu.local_edit(local_id, f"{tag}: local version")
    emu.cloud_edit(cloud_id, f"{tag}: cloud version")
    ctl(root, "enqueue", local_id)
    result = ctl(root, "sync")
    assert result.returncode == 0
    assert "Conflicts pending: 1" in result.stdout
    assert emu.local_get(local_id)["text"] == f"{tag}: local version"
    assert f"{tag}: cloud version" in emu.cloud_texts() and f"{tag}: local version" not in emu.cloud_texts()

    listing = json.loads(ctl(root, "conflicts", "list", "--json").stdout)
    (conflict,) = [c for c in listing if c["local_id"] == local_id]
    assert (conflict["base"], conflict["local"], conflict["cloud"]) == (
        f"{tag}: base", f"{tag}: local version", f"{tag}: cloud version")
    shown = ctl(root, "conflicts", "show", str(conflict["id"]))
    assert f"{tag}: cloud version" in shown.stdout

    args = ["--text", f"{tag}: merged"] if keep == "text" else ["--keep", keep]
    resolved = ctl(root, "conflicts", "resolve", str(conflict["id"]), *args)
    assert resolved.returncode == 0, resolved.stderr
    local_texts, cloud_texts = emu.local_texts(), emu.cloud_texts()
    mine = [t for t in local_texts if t.startswith(tag)]
    theirs = [t for t in cloud_texts if t.startswith(tag)]
    expected = {"local": [f"{tag}: local version"], "cloud": [f"{tag}: cloud version"],
                "both": [f"{tag}: cloud version", f"{tag}: local version"], "text": [f"{tag}: merged"]}[keep]
    assert sorted(mine) == expected and sorted(theirs) == expected
    assert not [c for c in json.loads(ctl(root, "conflicts", "list", "--json").stdout) if c["local_id"] == local_id]
    # the pair(s) are in sync again: nothing more to do on either side
    again = ctl(root, "sync")
    assert "PULL: 0 memories synced from cloud" in again.stdout and "Conflicts pending" not in again.stdout


def test_401_stops_with_seed_text_and_keeps_queue(root: Path, emu: Emulators) -> None:
    """A rejected key: the seed's 401 block, exit 4, queue byte-for-byte unchanged, no hammering."""
    ids = [emu.local_add(f"auth-test {i}", level=i % 2) for i in range(4)]  # level 0 ones too
    for memory_id in ids:
        ctl(root, "enqueue", memory_id)
    before = queue_path(root).read_bytes()
    emu.clear_requests()
    result = ctl(root, "sync", key="m0-wrong-key")
    assert result.returncode == 4
    assert result.stdout == "SYNC ERROR: mem0 API returned 401\nCheck MEM0_API_KEY environment variable.\n"
    assert queue_path(root).read_bytes() == before
    assert len(emu.requests()) <= 3  # at most one request per worker in flight, never retried
    assert "m0-wrong-key" not in result.stdout + result.stderr


def test_network_down_keeps_queue(tmp_path: Path, emu: Emulators) -> None:
    """The cloud unreachable: Network unreachable block, exit 5, queue unchanged."""
    root = make_root(tmp_path, emu)
    config = json.loads((root / ".claude/memory/config.json").read_text())
    config["cloud"]["url"] = "http://127.0.0.1:9"  # discard port: nothing listens
    (root / ".claude/memory/config.json").write_text(json.dumps(config))
    ctl(root, "enqueue", emu.local_add("net-test", level=1))
    before = queue_path(root).read_bytes()
    result = ctl(root, "sync")
    assert result.returncode == 5
    assert result.stdout.startswith("SYNC ERROR: Network unreachable\nPending changes preserved in queue.\n"
                                    "Will retry on next sync.\n")
    assert queue_path(root).read_bytes() == before


def test_local_server_down_is_exit_5(tmp_path: Path, emu: Emulators) -> None:
    """OpenMemory unreachable: the block names it and its URL (not "Network unreachable"), exit 5, queue unchanged."""
    root = make_root(tmp_path, emu)
    config = json.loads((root / ".claude/memory/config.json").read_text())
    config["local"]["url"] = "http://127.0.0.1:9"
    (root / ".claude/memory/config.json").write_text(json.dumps(config))
    ctl(root, "enqueue", "4b7f0c1e-0000-4000-8000-000000000000")
    before = queue_path(root).read_bytes()
    result = ctl(root, "sync")
    assert result.returncode == 5, result.stdout + result.stderr
    assert result.stdout.startswith("SYNC ERROR: OpenMemory at http://127.0.0.1:9 is not reachable\n"
                                    "Pending changes preserved in queue.\nWill retry on next sync.\n"), result.stdout
    assert "local.url" in result.stdout and "Network unreachable" not in result.stdout
    assert queue_path(root).read_bytes() == before


def test_partial_push_reports_and_retries(root: Path, emu: Emulators) -> None:
    """2 of 7 creates fail with 500: SYNC PARTIAL, exit 1, sync_errors with retries; next sync retries them."""
    ids = [emu.local_add(f"partial {i}{' fail-me' if i in (2, 5) else ''}", level=1) for i in range(7)]
    for memory_id in ids:
        ctl(root, "enqueue", memory_id)
    emu.fault(fault="500", match="fail-me")
    result = ctl(root, "sync", "--push")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("SYNC PARTIAL\nPushed: 5 of 7 (2 errors)\n")
    assert f"Errors logged to {queue_path(root)}" in result.stdout
    queue = read_queue(root)
    assert sorted(e["id"] for e in queue["pending"]) == sorted([ids[2], ids[5]])
    assert sorted((e["id"], e["retries"]) for e in queue["sync_errors"]) == sorted([(ids[2], 1), (ids[5], 1)])
    again = ctl(root, "sync", "--push")
    assert again.returncode == 1 and "Pushed: 0 of 2 (2 errors)" in again.stdout
    assert {e["retries"] for e in read_queue(root)["sync_errors"]} == {2}
    emu.fault(fault=None)
    healed = ctl(root, "sync", "--push")
    assert healed.returncode == 0 and "PUSH: 2 memories synced to cloud" in healed.stdout
    queue = read_queue(root)
    assert queue["pending"] == [] and queue["sync_errors"] == []
    assert sum(1 for t in emu.cloud_texts() if t.startswith("partial ")) == 7  # no duplicates


@pytest.mark.parametrize("content", ['{"pending": [', '{"pending": "soon"}', "\x00\x01garbage"])
def test_corrupt_queue_is_reported_and_left_untouched(root: Path, emu: Emulators, content: str) -> None:
    """Exit 6 with the seed-style line; the file stays byte-for-byte; repair salvages."""
    path = queue_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    before = path.read_bytes()
    for args in (("sync",), ("sync", "--push"), ("enqueue", "x")):
        result = ctl(root, *args)
        assert result.returncode == 6, (args, result.stdout, result.stderr)
        assert result.stdout.startswith(f"SYNC ERROR: sync queue is unreadable ({path}: ")
        assert path.read_bytes() == before
    repaired = ctl(root, "queue", "repair")
    assert repaired.returncode == 0 and "Moved the unreadable queue to" in repaired.stdout
    assert ctl(root, "sync", "--push").returncode == 0


def test_invalid_config_is_exit_2_and_writes_nothing(root: Path) -> None:
    """A wrong type in config.json: one message naming file and key, exit 2, no queue or DB created."""
    (root / ".claude/memory/config.json").write_text(json.dumps({"cloud": {"enabled": True},
                                                                 "sync": {"concurrency": "many"}}))
    result = ctl(root, "sync")
    assert result.returncode == 2
    assert "sync.concurrency" in result.stderr and "config.json" in result.stderr
    assert not queue_path(root).exists() and not (root / ".claude/memory/memsync.db").exists()


def test_dry_run_and_json_output(root: Path, emu: Emulators) -> None:
    """--dry-run reports without writing; --json prints one object with the exit code."""
    ctl(root, "enqueue", emu.local_add("dry-run memory", level=1))
    before = queue_path(root).read_bytes()
    result = ctl(root, "sync", "--push", "--dry-run", "--json")
    data = json.loads(result.stdout)
    assert data["dry_run"] is True and data["push"]["created"] == 1 and data["exit_code"] == 0
    assert queue_path(root).read_bytes() == before and "dry-run memory" not in emu.cloud_texts()


def test_queued_add_mode_pushes_exactly_once(root: Path, emu: Emulators) -> None:
    """The platform's background add (PENDING + event) still maps to one cloud memory."""
    emu.add_mode("queued", delay_ms=100)
    ids = [emu.local_add(f"queued-mode {i}", level=1) for i in range(3)]
    for memory_id in ids:
        ctl(root, "enqueue", memory_id)
    result = ctl(root, "sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PUSH: 3 memories synced to cloud" in result.stdout
    assert sorted(t for t in emu.cloud_texts() if t.startswith("queued-mode")) == [f"queued-mode {i}" for i in range(3)]
    again = ctl(root, "sync")
    assert "PULL: 0 memories synced from cloud" in again.stdout


def test_key_never_appears_in_output_or_files(root: Path, emu: Emulators) -> None:
    """The mem0 key is in no output, log line or file under the root."""
    ctl(root, "enqueue", emu.local_add("secret-check", level=1))
    result = ctl(root, "-v", "sync")
    assert API_KEY not in result.stdout + result.stderr
    for path in root.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("fault", "extra"),
    [
        ({"fault": "429", "count": 2, "retry_after": 1}, {}),
        ({"fault": "timeout", "count": 1}, {"request_timeout_seconds": 1}),
        ({"fault": "reset", "count": 1}, {}),
        ({"fault": "500", "count": 2}, {}),
    ],
    ids=["429-retry-after", "timeout", "connection-reset", "transient-500"],
)
def test_transient_faults_are_retried_without_duplicates(root: Path, emu: Emulators, fault: dict[str, object],
                                                         extra: dict[str, object]) -> None:
    """429 (honouring Retry-After), timeouts, resets and transient 5xx: retried in the run, one memory each."""
    make_root(root, emu, **extra)
    tag = f"transient-{fault['fault']}"
    ids = [emu.local_add(f"{tag} {i}", level=1) for i in range(3)]
    for memory_id in ids:
        ctl(root, "enqueue", memory_id)
    emu.clear_requests()
    emu.fault(match=tag, **fault)
    result = ctl(root, "sync", "--push")
    emu.fault(fault=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PUSH: 3 memories synced to cloud" in result.stdout
    assert sorted(t for t in emu.cloud_texts() if t.startswith(tag)) == [f"{tag} {i}" for i in range(3)]
    assert any(r.get("fault") for r in emu.requests())  # the fault really happened
    assert read_queue(root)["pending"] == [] and read_queue(root)["sync_errors"] == []


@pytest.mark.parametrize(("args", "needle"), [(("enqueue", ""), "memory id is empty"),
                                              (("enqueue", "m1", "--level", "-1"), "--level"),
                                              (("conflicts", "resolve", "999", "--keep", "local"), "no open conflict"),
                                              (("sync", "--push", "--pull"), "not allowed with"),
                                              (("conflicts", "resolve", "1"), "required")])
def test_bad_arguments_exit_2_and_write_nothing(root: Path, args: tuple[str, ...], needle: str) -> None:
    """Usage errors name the problem, exit 2, and leave the queue alone."""
    result = ctl(root, *args)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert not queue_path(root).exists()


def test_slow_queued_add_waits_without_error_and_finishes_once(root: Path, emu: Emulators) -> None:
    """mem0 still processing after event_wait_seconds: exit 0, entry kept (no error row), finished next sync."""
    from harness import wait_for

    make_root(root, emu, event_wait_seconds=0.2)
    emu.add_mode("queued", delay_ms=1500)
    memory = emu.local_add("slow-queue: processed later", level=1)
    ctl(root, "enqueue", memory)
    first = ctl(root, "sync", "--push")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Waiting: 1 accepted by mem0" in first.stdout
    queue = read_queue(root)
    assert [e["id"] for e in queue["pending"]] == [memory] and queue["sync_errors"] == []
    wait_for(lambda: "slow-queue: processed later" in emu.cloud_texts())
    second = ctl(root, "sync")
    assert second.returncode == 0 and "Waiting" not in second.stdout
    assert read_queue(root)["pending"] == []
    assert emu.cloud_texts().count("slow-queue: processed later") == 1
    assert "PULL: 0 memories synced from cloud" in second.stdout  # adopted via the intent, not pulled back
