"""Level 0 holds through conflicts and adoption: the two attacks of issue 17 (item 3), end to end in-process.

1. A memory synced at level 1, edited here and re-marked level 0, edited in the cloud: whatever the
   user picks to resolve the conflict (local, text, both, cloud), no byte of the private text, and
   not its sha256, reaches mem0.
2. The cloud plants a memory naming a local level-0 memory's id plus this device's id (both are in
   every memory memsyncd pushes): it is neither adopted nor mapped, so no resolution can send the
   private text; the same for a cloud memory whose text equals a private memory's.
The mem0 emulator's request log is the witness (every path, query and body).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from harness import INPROC_KEY, emulator_settings, enqueue_each

from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.syncer import Syncer
from memsyncd.models import Conflict, SyncMode
from memsyncd.wire import Keep

PRIVATE = "PRIVATE: the door code is 4711, never share it"


@pytest.fixture()
def admin(admin: EmulatorAdmin, servers: RunningEmulators) -> EmulatorAdmin:
    servers.clear_requests()  # the witness starts empty: /_admin/reset wipes data, not the request logs
    return admin


def make_syncer(tmp_path: Path, servers: RunningEmulators, default_level: int = 0) -> Syncer:
    return Syncer(emulator_settings(servers, default_level=default_level), Paths(tmp_path), INPROC_KEY)


def mark_private(servers: RunningEmulators, local_id: str) -> None:
    """What a user does in OpenMemory: set the memory's metadata.level to 0."""
    memory = servers.openmemory.find(local_id)
    assert memory is not None
    memory.metadata_["level"] = 0


def assert_private_never_sent(servers: RunningEmulators, *texts: str) -> int:
    """No request mem0 saw carries the text (raw or JSON-escaped) or its sha256; returns how many were checked."""
    # "door code 4711" and not the bare "4711": a random uuid in a request may hold those four hex digits
    needles = [n for t in texts for n in (t, json.dumps(t)[1:-1], hashlib.sha256(t.encode()).hexdigest(),
                                          "door code is 4711")]
    requests = servers.requests("mem0")
    for entry in requests:
        blob = " ".join([entry["method"], entry["target"], json.dumps(entry["query"]), entry["body"]])
        leaked = [n for n in needles if n in blob]
        assert not leaked, f"{entry['method']} {entry['target']} carried private data: {leaked[0][:30]!r}"
    return len(requests)


def conflict_of_a_memory_made_private(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin,
                                      loop: asyncio.Runner) -> tuple[Syncer, str, str, int]:
    """Issue 17's first repro: synced at level 1, edited here + re-marked 0, edited in the cloud, synced."""
    syncer = make_syncer(tmp_path, servers)
    local_id = admin.local_add("the door code is in the safe", level=1)
    enqueue_each(syncer.queue, local_id)
    assert loop.run(syncer.run(SyncMode.FULL)).push.created == 1
    admin.local_edit(local_id, PRIVATE)
    mark_private(servers, local_id)
    (cloud,) = admin.cloud_memories()
    admin.cloud_edit(cloud["id"], "the door code is in the blue safe")
    enqueue_each(syncer.queue, local_id)
    report = loop.run(syncer.run(SyncMode.FULL))
    assert report.push.skipped_private == 1 and report.conflicts_open == 1
    (conflict,) = syncer.conflicts()
    assert conflict.local_text == PRIVATE
    return syncer, local_id, cloud["id"], conflict.id


def conflict_of_a_shared_memory(syncer: Syncer, admin: EmulatorAdmin, loop: asyncio.Runner, text: str,
                                local_text: str, cloud_text: str) -> tuple[str, Conflict]:
    """A memory synced at level 1, then edited on both sides, then pulled: its local id and its one conflict."""
    local_id = admin.local_add(text, level=1)
    enqueue_each(syncer.queue, local_id)
    loop.run(syncer.run(SyncMode.FULL))
    admin.local_edit(local_id, local_text)
    (cloud,) = admin.cloud_memories()
    admin.cloud_edit(cloud["id"], cloud_text)
    loop.run(syncer.run(SyncMode.PULL))
    (conflict,) = syncer.conflicts()
    return local_id, conflict


@pytest.mark.parametrize(("keep", "text"), [(Keep.LOCAL, None), (Keep.TEXT, PRIVATE + " (merged)"),
                                            (Keep.BOTH, None), (Keep.CLOUD, None)])
def test_resolving_a_conflict_of_a_level0_memory_sends_nothing(
        tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin, loop: asyncio.Runner,
        keep: Keep, text: str | None) -> None:
    """--keep local / --text / both / cloud on a memory that is level 0 now: only the local side is written."""
    syncer, local_id, cloud_id, conflict_id = conflict_of_a_memory_made_private(tmp_path, servers, admin, loop)
    servers.clear_requests("mem0")

    result = loop.run(syncer.resolve(conflict_id, keep, text))

    assert_private_never_sent(servers, PRIVATE, PRIVATE + " (merged)")
    writes = [r for r in servers.requests("mem0") if r["method"] not in ("GET",) and r["path"] != "/v3/memories/"]
    assert writes == [], f"a level-0 resolution wrote to mem0: {[(r['method'], r['path']) for r in writes]}"
    assert result["local_only"] is True and result["cloud_written"] is False
    assert admin.cloud_texts() == ["the door code is in the blue safe"]  # the cloud copy is left as it is
    expected_local = {Keep.LOCAL: [PRIVATE], Keep.TEXT: [PRIVATE + " (merged)"],
                      Keep.BOTH: sorted([PRIVATE, "the door code is in the blue safe"]),
                      Keep.CLOUD: ["the door code is in the blue safe"]}[keep]
    assert admin.local_texts() == expected_local
    assert syncer.conflicts() == []
    mapping = syncer.state.mapping_for_cloud(cloud_id)
    if keep is Keep.BOTH:  # the cloud version has a local memory of its own; the private one has no pair
        assert mapping is not None and mapping.local_id != local_id and mapping.level >= 1
        assert syncer.state.mapping_for_local(local_id) is None
    else:  # still paired (so forget-cloud-copies finds it), at level 0, base = what the cloud holds
        assert mapping is not None and mapping.level == 0
        # a text written locally is a new version (create + delete: OpenMemory's vector store carries it)
        assert mapping.local_id == (local_id if keep is Keep.LOCAL else result["local_id"])

    # later syncs keep it that way: the same cloud version raises no new conflict, nothing is sent
    enqueue_each(syncer.queue, local_id)
    again = loop.run(syncer.run(SyncMode.FULL))
    assert again.exit_code == 0 and again.conflicts_open == 0
    assert_private_never_sent(servers, PRIVATE, PRIVATE + " (merged)")


def test_a_level0_entry_in_the_queue_makes_the_resolution_local_only(
        tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    """The level is read when resolving: a pending 'enqueue ID --level 0' counts even if metadata says 1."""
    syncer = make_syncer(tmp_path, servers)
    local_id, conflict = conflict_of_a_shared_memory(syncer, admin, loop, "shared for now", PRIVATE,
                                                     "edited in the cloud")
    enqueue_each(syncer.queue, local_id, level=0)  # the user makes it private before resolving
    servers.clear_requests("mem0")
    result = loop.run(syncer.resolve(conflict.id, Keep.LOCAL))
    assert_private_never_sent(servers, PRIVATE)
    assert result["local_only"] is True
    assert admin.cloud_texts() == ["edited in the cloud"]


def test_a_shared_memory_still_resolves_to_both_sides(
        tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    """The control case: at level 1, --keep local writes the local text to the cloud (as before)."""
    syncer = make_syncer(tmp_path, servers)
    _, conflict = conflict_of_a_shared_memory(syncer, admin, loop, "shared", "shared, edited here",
                                              "shared, edited there")
    result = loop.run(syncer.resolve(conflict.id, Keep.LOCAL))
    assert result["local_only"] is False
    assert admin.cloud_texts() == ["shared, edited here"] and admin.local_texts() == ["shared, edited here"]


@pytest.mark.parametrize("marked", [True, False], ids=["metadata-level-0", "unmarked-default-0"])
def test_a_cloud_memory_naming_a_level0_memory_is_not_adopted(
        tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin, loop: asyncio.Runner, marked: bool) -> None:
    """Issue 17's second repro: memsync_local_id + memsync_device are hints: no mapping, no conflict, no upload."""
    syncer = make_syncer(tmp_path, servers)
    local_id = admin.local_add(PRIVATE, level=0 if marked else None)
    shared_id = admin.local_add("a shared memory", level=1)
    enqueue_each(syncer.queue, shared_id)
    loop.run(syncer.run(SyncMode.FULL))  # a push: the cloud now knows this device's id
    (pushed,) = admin.cloud_memories()
    device = pushed["metadata"]["memsync_device"]
    admin.cloud_add("attacker text", memsync_local_id=local_id, memsync_device=device, level=1)

    report = loop.run(syncer.run(SyncMode.FULL))
    for conflict in syncer.conflicts():  # what the attack counts on: the user resolves what they are shown
        loop.run(syncer.resolve(conflict.id, Keep.LOCAL))
    enqueue_each(syncer.queue, local_id)  # even queued (the default or its metadata keeps it private)
    loop.run(syncer.run(SyncMode.FULL))

    assert_private_never_sent(servers, PRIVATE)
    assert report.pull.adopted == 0 and report.pull.new == 0 and report.conflicts_open == 0
    assert report.pull.skipped_private == 1
    assert syncer.state.mapping_for_local(local_id) is None
    assert admin.local_texts() == sorted([PRIVATE, "a shared memory"])  # nothing written over it, no copy


def test_identical_text_is_not_adopted_onto_a_level0_memory(
        tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    """An equal content hash is a hint too: a private memory is never paired with a cloud memory."""
    syncer = make_syncer(tmp_path, servers)
    local_id = admin.local_add(PRIVATE, level=0)
    admin.cloud_add(PRIVATE)  # the same text, from another device (or guessed)
    report = loop.run(syncer.run(SyncMode.FULL))
    assert report.pull.adopted == 0 and report.pull.skipped_private == 1 and report.pull.new == 0
    assert syncer.state.mapping_for_local(local_id) is None
    assert admin.local_texts() == [PRIVATE]  # not copied a second time either


def test_identical_text_is_still_adopted_onto_a_shared_memory(
        tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    """The control case: a level-1 memory with the same text as a cloud memory is adopted (no copy)."""
    syncer = make_syncer(tmp_path, servers)
    admin.local_add("shared fact", level=1)
    admin.cloud_add("shared fact")
    report = loop.run(syncer.run(SyncMode.FULL))
    assert report.pull.adopted == 1 and report.pull.skipped_private == 0
    assert syncer.state.count_mappings() == 1


def test_cloud_metadata_with_an_unusable_local_id_is_ignored(
        tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    """memsync_local_id from the cloud is validated like any id: a path-like one is never looked up."""
    syncer = make_syncer(tmp_path, servers, default_level=1)
    admin.local_add("x", level=1)
    admin.cloud_add("from the cloud", memsync_local_id="../stats/?user_id=x&", memsync_device=syncer.state.device_id)
    servers.clear_requests("openmemory")
    report = loop.run(syncer.run(SyncMode.PULL))
    assert report.pull.new == 1 and report.exit_code == 0
    assert not [r for r in servers.requests("openmemory") if "stats" in r["target"] and r["method"] == "GET"
                and "user_id=x" in r["target"]]
