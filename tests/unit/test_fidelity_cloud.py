"""mem0 behaviours the emulator used to hide (issue 18, items 2 and 3).

* An ``infer: false`` add of text already stored in the same scope is deduplicated (direct-import
  docs); the answer is ``SUCCEEDED`` with empty ``results``, or the existing id. Two identical
  local memories must end with one cloud copy and no failing queue entry.
* The v3 add API queues with a top-level ``{"event_id", "status": "PENDING"}``, and an event
  may be ``RUNNING``: still running, never a reason for a second add.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import INPROC_KEY, INPROC_USER, emulator_settings, enqueue_each

from memsyncd.cli.render import render_sync
from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.syncer import Syncer
from memsyncd.models import SyncMode
from memsyncd.remote.cloud import CloudClient, Scope


@pytest.fixture()
def admin(admin: EmulatorAdmin, servers: RunningEmulators) -> Iterator[EmulatorAdmin]:
    yield admin
    servers.mem0.set_add_mode("immediate", shape="results", dedup="empty")  # the module shares the servers


def make_syncer(tmp_path: Path, servers: RunningEmulators, **sync: Any) -> Syncer:
    return Syncer(emulator_settings(servers, default_level=1, **sync), Paths(tmp_path), INPROC_KEY)


def adds(admin: EmulatorAdmin) -> int:
    return sum(1 for r in admin.requests("mem0") if r["method"] == "POST" and r["path"].startswith("/v3/memories/add"))


def raw_add(admin: EmulatorAdmin, text: str, **scope: str) -> dict[str, Any]:
    r = admin.http.post(f"{admin.mem0}/v3/memories/add/", headers=admin.auth,
                        json={"messages": [{"role": "user", "content": text}], "infer": False, **scope})
    r.raise_for_status()
    return dict(r.json())


# --- item 2: the emulator deduplicates as the platform does ----------------------------------------

def test_emulator_deduplicates_infer_false_repeats_in_the_same_scope(servers: RunningEmulators,
                                                                     admin: EmulatorAdmin) -> None:
    first = raw_add(admin, "likes tea", user_id=INPROC_USER)["results"][0]["id"]
    repeat = raw_add(admin, "likes tea", user_id=INPROC_USER)
    assert repeat["status"] == "SUCCEEDED" and repeat["results"] == []
    servers.mem0.set_add_mode("immediate", dedup="existing")
    assert raw_add(admin, "likes tea", user_id=INPROC_USER)["results"][0]["id"] == first
    other_scope = raw_add(admin, "likes tea", user_id=INPROC_USER, agent_id="helper")["results"][0]["id"]
    assert other_scope != first
    assert admin.cloud_texts() == ["likes tea", "likes tea"]


@pytest.mark.parametrize(("mode", "dedup"), [("immediate", "empty"), ("immediate", "existing"),
                                             ("queued", "empty"), ("queued", "existing")])
def test_identical_local_memories_end_with_one_cloud_copy(tmp_path: Path, servers: RunningEmulators,
                                                          admin: EmulatorAdmin, loop: asyncio.Runner,
                                                          mode: str, dedup: str) -> None:
    """Two clients saved the same fact: one cloud copy, the second local copy linked and reported, no error."""
    servers.mem0.set_add_mode(mode, delay_ms=10, dedup=dedup)  # type: ignore[arg-type]
    first, second = admin.local_add("prefers dark mode"), admin.local_add("prefers dark mode")
    syncer = make_syncer(tmp_path, servers)
    enqueue_each(syncer.queue, first)
    assert loop.run(syncer.run(SyncMode.PUSH)).push.created == 1
    enqueue_each(syncer.queue, second)
    report = loop.run(syncer.run(SyncMode.PUSH))
    assert report.exit_code == 0 and report.push.errors == 0, report.push.error_messages
    assert report.push.duplicates == 1
    assert "Duplicates: 1 with the same text as another local memory" in render_sync(report)
    assert admin.cloud_texts() == ["prefers dark mode"]
    assert syncer.queue.read().sync_errors == [] and syncer.queue.read().pending == []
    (cloud,) = admin.cloud_memories()
    mapping = syncer.state.mapping_for_local(first)
    assert mapping is not None and mapping.cloud_id == cloud["id"]
    duplicate = syncer.state.local_duplicate(second)
    assert duplicate is not None and (duplicate.of_local_id, duplicate.cloud_id) == (first, cloud["id"])
    before = len(admin.requests("mem0"))
    enqueue_each(syncer.queue, second)  # pushed again (local change detection pushes everything): no add, no error
    again = loop.run(syncer.run(SyncMode.PUSH))
    assert again.push.duplicates == 1 and again.push.errors == 0
    assert not any(r["path"].startswith("/v3/memories/add") for r in admin.requests("mem0", since=before))
    full = loop.run(syncer.run(SyncMode.FULL))  # the pull leaves both local copies alone
    assert full.exit_code == 0 and full.pull.new == 0 and admin.local_texts() == ["prefers dark mode"] * 2
    loop.run(syncer.aclose())


def test_edited_duplicate_becomes_its_own_cloud_memory(tmp_path: Path, servers: RunningEmulators,
                                                       admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    first, second = admin.local_add("uses vim"), admin.local_add("uses vim")
    syncer = make_syncer(tmp_path, servers)
    enqueue_each(syncer.queue, first, second)
    assert loop.run(syncer.run(SyncMode.PUSH)).push.errors == 0
    admin.local_edit(second, "uses vim and tmux")
    enqueue_each(syncer.queue, second)
    report = loop.run(syncer.run(SyncMode.PUSH))
    assert report.push.created == 1 and report.push.duplicates == 0
    assert admin.cloud_texts() == ["uses vim", "uses vim and tmux"]
    assert syncer.state.local_duplicate(second) is None and syncer.state.mapping_for_local(second) is not None
    loop.run(syncer.aclose())


def test_text_already_in_the_cloud_from_another_client_is_adopted(tmp_path: Path, servers: RunningEmulators,
                                                                  admin: EmulatorAdmin,
                                                                  loop: asyncio.Runner) -> None:
    admin.cloud_add("speaks French")  # written by another mem0 client, no memsync metadata
    local_id = admin.local_add("speaks French")
    syncer = make_syncer(tmp_path, servers)
    enqueue_each(syncer.queue, local_id)
    report = loop.run(syncer.run(SyncMode.PUSH))
    assert report.push.errors == 0 and admin.cloud_texts() == ["speaks French"]
    (cloud,) = admin.cloud_memories()
    mapping = syncer.state.mapping_for_local(local_id)
    assert mapping is not None and mapping.cloud_id == cloud["id"]
    loop.run(syncer.aclose())


# --- item 3: the v3 queued answer and RUNNING events -------------------------------------------------

def cloud_client(servers: RunningEmulators) -> CloudClient:
    return CloudClient(servers.mem0_url, INPROC_KEY, Scope(INPROC_USER))


def test_client_reads_the_v3_queued_answer(servers: RunningEmulators, admin: EmulatorAdmin,
                                           loop: asyncio.Runner) -> None:
    servers.mem0.set_add_mode("queued", delay_ms=10, shape="v3")
    client = cloud_client(servers)
    result = loop.run(client.add("queued in v3 shape", {}))
    assert result.cloud_id is None and result.event_id is not None and not result.deduplicated
    loop.run(asyncio.sleep(0.1))
    event = loop.run(client.event(result.event_id))
    assert event.status == "SUCCEEDED" and event.cloud_id is not None and event.finished
    loop.run(client.aclose())


def test_push_through_v3_queued_adds(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin,
                                     loop: asyncio.Runner) -> None:
    servers.mem0.set_add_mode("queued", delay_ms=10, shape="v3")
    local_id = admin.local_add("queued fact")
    syncer = make_syncer(tmp_path, servers)
    enqueue_each(syncer.queue, local_id)
    report = loop.run(syncer.run(SyncMode.PUSH))
    assert report.push.created == 1 and report.push.errors == 0
    assert admin.cloud_texts() == ["queued fact"] and syncer.state.mapping_for_local(local_id) is not None
    loop.run(syncer.aclose())


def test_running_event_is_still_running_not_a_reason_to_add_again(tmp_path: Path, servers: RunningEmulators,
                                                                  admin: EmulatorAdmin,
                                                                  loop: asyncio.Runner) -> None:
    """An unfinished create whose event is RUNNING waits; a second add would make a duplicate."""
    local_id = admin.local_add("being processed")
    syncer = make_syncer(tmp_path, servers)
    event = servers.mem0.new_event({"messages": [{"role": "user", "content": "being processed"}]}, status="RUNNING")
    syncer.state.record_intent(local_id, "digest", event["id"])
    enqueue_each(syncer.queue, local_id)
    admin.clear_requests("mem0")
    report = loop.run(syncer.run(SyncMode.PUSH))
    assert report.push.waiting == 1 and report.push.created == 0 and report.push.errors == 0
    assert adds(admin) == 0 and admin.cloud_texts() == []
    assert syncer.queue.read().pending  # stays queued for the next sync
    loop.run(syncer.aclose())


def test_add_answers_that_are_not_a_result_still_fail(loop: asyncio.Runner) -> None:
    """Neither a queued answer nor a deduplicated one: the add fails, it is never taken as done."""
    from memsyncd.errors import RemoteRejectedError

    answers = iter([{"status": "FAILED", "results": []}, {"detail": "proxy says hi"}])
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=next(answers)))
    client = CloudClient("http://127.0.0.1:9", INPROC_KEY, Scope(INPROC_USER), transport=transport)
    for _ in range(2):
        with pytest.raises(RemoteRejectedError):
            loop.run(client.add("x", {}))
    loop.run(client.aclose())


# --- item 4: agent_id scoping --------------------------------------------------------------------

def test_emulator_attributes_inferred_facts_to_their_speaker(servers: RunningEmulators,
                                                             admin: EmulatorAdmin) -> None:
    """A normal (inferring) add never stores user_id and agent_id together; a direct import does."""
    r = admin.http.post(f"{admin.mem0}/v3/memories/add/", headers=admin.auth, json={
        "messages": [{"role": "user", "content": "I run marathons"},
                     {"role": "assistant", "content": "I suggested a training plan"}],
        "user_id": INPROC_USER, "agent_id": "coach"})
    r.raise_for_status()
    raw_add(admin, "direct import", user_id=INPROC_USER, agent_id="coach")
    scopes = {m["memory"]: (m["user_id"], m["agent_id"]) for m in admin.cloud_memories()}
    assert scopes == {"I run marathons": (INPROC_USER, None), "I suggested a training plan": (None, "coach"),
                      "direct import": (INPROC_USER, "coach")}


def test_agent_scope_pulls_what_other_clients_wrote(tmp_path: Path, servers: RunningEmulators,
                                                    admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    """With cloud.agent_id set, memories other mem0 clients wrote for the user (or the agent) are pulled."""
    from memsyncd.config import Settings

    admin.http.post(f"{admin.mem0}/v3/memories/add/", headers=admin.auth, json={
        "messages": [{"role": "user", "content": "I run marathons"},
                     {"role": "assistant", "content": "coach noted a knee injury"}],
        "user_id": INPROC_USER, "agent_id": "coach"}).raise_for_status()
    raw_add(admin, "someone else's memory", user_id="somebody-else")
    settings = Settings(local={"url": servers.openmemory_url, "user_id": INPROC_USER},
                        cloud={"enabled": True, "url": servers.mem0_url, "user_id": INPROC_USER, "agent_id": "coach"},
                        sync={"default_level": 1})
    syncer = Syncer(settings, Paths(tmp_path), INPROC_KEY)
    local_id = admin.local_add("pushed by memsyncd")
    enqueue_each(syncer.queue, local_id)
    report = loop.run(syncer.run(SyncMode.FULL))
    assert report.exit_code == 0 and report.pull.new == 2
    assert admin.local_texts() == ["I run marathons", "coach noted a knee injury", "pushed by memsyncd"]
    ours = [m for m in admin.cloud_memories() if m["memory"] == "pushed by memsyncd"]
    assert [(m["user_id"], m["agent_id"]) for m in ours] == [(INPROC_USER, "coach")]
    assert loop.run(syncer.run(SyncMode.FULL)).pull.new == 0
    loop.run(syncer.aclose())
