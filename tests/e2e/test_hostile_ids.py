"""Hostile ids: refused where they enter (hook, enqueue, queue file, cloud metadata), escaped in every request
path, and no id dropped without a word (issue 15 item 4, issue 17 "Ids" and the tool-response DELETE).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from harness import INPROC_KEY, INPROC_USER, Emulators, ctl, queue_path, read_queue

from memsyncd.emulators.runner import RunningEmulators
from memsyncd.errors import NotFoundError, RemoteRejectedError
from memsyncd.ids import path_segment
from memsyncd.models import QueueEntry, format_ts, utc_now
from memsyncd.remote.cloud import CloudClient, Scope
from memsyncd.remote.local import LocalClient
from memsyncd.store.queue import QueueStore

HOSTILE = ["../../etc/passwd", "M1?x=1", "M1#frag", "../stats/?user_id=x&", "..", "%2e%2e", "a\\b"]
ADD_TOOL = "mcp__openmemory__add_memories"


# --- every id is escaped in every request path --------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE)
def test_the_clients_escape_ids_in_every_path(servers: RunningEmulators, hostile: str) -> None:
    """GET/PUT on OpenMemory, event/GET/PUT/DELETE on mem0: the emulator sees the escaped id as one
    path segment of the memories (or event) route, and no other route answers."""
    servers.clear_requests()

    async def calls() -> None:
        local = LocalClient(servers.openmemory_url, INPROC_USER)
        cloud = CloudClient(servers.mem0_url, INPROC_KEY, Scope(INPROC_USER))
        try:
            assert await local.get(hostile) is None
            for call in (local.update(hostile, "t"), cloud.update(hostile, "t"), cloud.event(hostile),
                         cloud.get(hostile), cloud.delete(hostile)):
                with contextlib.suppress(NotFoundError, RemoteRejectedError):  # the memories route refused it
                    assert not await call  # None / False: no such memory
        finally:
            await local.aclose()
            await cloud.aclose()

    asyncio.run(calls())
    segment = path_segment(hostile)
    expected = {
        ("openmemory", "GET"): f"/api/v1/memories/{segment}", ("openmemory", "PUT"): f"/api/v1/memories/{segment}",
        ("mem0", "PUT"): f"/v1/memories/{segment}/", ("mem0", "GET"): f"/v1/memories/{segment}/",
        ("mem0", "DELETE"): f"/v1/memories/{segment}/",
    }
    seen: list[tuple[str, str, str, int]] = []
    for service in ("openmemory", "mem0"):
        for request in servers.requests(service):  # type: ignore[arg-type]
            seen.append((service, request["method"], request["target"], request["status"]))
    event_targets = [t for s, m, t, _ in seen if s == "mem0" and m == "GET" and t.startswith("/v1/event/")]
    assert event_targets == [f"/v1/event/{segment}/"]
    for service, method, target, status in seen:
        assert "?" not in target and "#" not in target, target  # no query, no fragment smuggled in
        if target.startswith("/v1/event/"):
            continue
        assert target == expected[(service, method)], (service, method, target)
        assert status in (400, 404, 422), (service, method, target, status)  # the memory route said "no such id"


# --- refused where they enter ---------------------------------------------------------------------------


def hook_event(*ids: str, event: str = "ADD") -> str:
    return json.dumps({"tool_name": ADD_TOOL, "tool_response": {
        "results": [{"id": memory_id, "memory": "m", "event": event} for memory_id in ids]}})


def test_hook_refuses_hostile_ids_with_one_line_and_exit_0(root: Path, emu: Emulators) -> None:
    """The hook never exits 2 (Claude would feed that to the model): exit 0, one stderr line naming them."""
    good = emu.local_add("a memory", level=1)
    result = ctl(root, "--no-daemon", "hook", "post-tool-use",
                 stdin=hook_event(good, "../../etc/passwd", f"{good}?x=1", f"{good}#frag"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "3 id(s) that cannot be memory ids" in lines[0] and "etc/passwd" in lines[0]
    assert [e["id"] for e in read_queue(root)["pending"]] == [good]


def test_m1_with_a_query_or_fragment_never_makes_a_second_cloud_copy(root: Path, emu: Emulators) -> None:
    """Issue 17: hook ids 'M1?x=1' and 'M1#frag' made three cloud copies of one memory."""
    tag = "one copy only"
    good = emu.local_add(tag, level=1)
    for suffix in ("", "?x=1", "#frag"):
        assert ctl(root, "--no-daemon", "hook", "post-tool-use", stdin=hook_event(good + suffix)).returncode == 0
    synced = ctl(root, "--no-daemon", "sync", "--push")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert emu.cloud_texts().count(tag) == 1


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "M1?x=1", ".."])
def test_enqueue_refuses_a_hostile_id_with_exit_2(root: Path, hostile: str) -> None:
    result = ctl(root, "--no-daemon", "enqueue", hostile)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nothing was queued" in result.stderr and "Traceback" not in result.stderr
    assert read_queue(root)["pending"] == []


def write_queue(root: Path, *entries: tuple[str, str]) -> None:
    store = QueueStore(queue_path(root))
    stamp = format_ts(utc_now())
    store.update(lambda doc: doc.pending.extend(QueueEntry(i, a, stamp, level=1) for i, a in entries))  # type: ignore[arg-type]


def sync_json(root: Path, *args: str) -> dict[str, Any]:
    result = ctl(root, "--no-daemon", "sync", *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def test_an_id_not_found_locally_is_reported_not_silently_dropped(root: Path, emu: Emulators) -> None:
    """Issue 15: 'enqueue <an id that does not exist locally>' then 'sync --push' said 'PUSH: 0 … Errors: 0'."""
    missing = "0b5e1c2a-4a57-4b8e-9d0e-3f1f2c3d4e5f"
    assert ctl(root, "--no-daemon", "enqueue", missing).returncode == 0
    text = ctl(root, "--no-daemon", "-v", "sync", "--push")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "Skipped: 1 not found locally" in text.stdout
    assert "push.skipped" in text.stderr and missing in text.stderr  # and in the log
    assert read_queue(root)["pending"] == []
    assert ctl(root, "--no-daemon", "enqueue", missing).returncode == 0
    assert sync_json(root, "--push")["push"]["not_found"] == 1


def test_an_invalid_id_in_the_queue_file_is_reported_and_removed(root: Path, emu: Emulators) -> None:
    """A hand-edited queue file: the bad entry does not make the file unreadable; it is reported, then removed."""
    good = emu.local_add("valid entry", level=1)
    write_queue(root, ("../../etc/passwd", "push"), (good, "push"))
    emu.clear_requests("openmemory")
    text = ctl(root, "--no-daemon", "sync", "--push")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "PUSH: 1 memories synced to cloud" in text.stdout
    assert "Skipped: 1 not a memory id" in text.stdout
    assert read_queue(root)["pending"] == []
    assert not [r for r in emu.requests("openmemory") if "passwd" in r["path"]]  # never sent anywhere


def test_a_tool_response_delete_of_a_memory_still_there_keeps_the_cloud_copy(root: Path, emu: Emulators) -> None:
    """Issue 17: {"id": M2, "event": "DELETE"} deleted the cloud copy of a memory still active locally."""
    for url in (emu.mem0, emu.openmemory):  # exact contents below: start from empty stores
        emu.http.post(f"{url}/_admin/reset").raise_for_status()
    kept = emu.local_add("still here locally", level=1)
    assert ctl(root, "--no-daemon", "enqueue", kept).returncode == 0
    assert ctl(root, "--no-daemon", "sync", "--push").returncode == 0
    assert emu.cloud_texts() == ["still here locally"]
    assert ctl(root, "--no-daemon", "hook", "post-tool-use", stdin=hook_event(kept, event="DELETE")).returncode == 0
    assert read_queue(root)["pending"][0]["action"] == "delete"

    text = ctl(root, "--no-daemon", "sync", "--push")
    assert text.returncode == 0, text.stdout + text.stderr
    assert emu.cloud_texts() == ["still here locally"]
    assert "Skipped: 1 deletes of memories that still exist locally" in text.stdout
    assert read_queue(root)["pending"] == []

    emu.local_delete(kept)  # really gone now: the delete goes through
    assert ctl(root, "--no-daemon", "enqueue", kept, "--delete").returncode == 0
    assert sync_json(root, "--push")["push"]["deleted"] == 1
    assert emu.cloud_texts() == []
