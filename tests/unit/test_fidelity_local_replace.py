"""Local writes reach what agents read: OpenMemory's PUT leaves the vector store stale (issue 18, item 1).

A pulled cloud edit and a conflict resolution must show in the MCP view (``search_memory`` /
``list_memories`` read the vector store), so memsyncd writes a new local copy and deletes the
old one instead of a PUT; a crash between those steps leaves exactly one live version after
the next run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness import INPROC_KEY, emulator_settings

from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.syncer import Syncer
from memsyncd.models import QueueEntry, SyncMode, format_ts, utc_now
from memsyncd.remote.local import LocalClient
from memsyncd.wire import Keep


class Crash(Exception):
    """Stands in for a kill -9 at a chosen step: nothing after it runs."""


def make_syncer(tmp_path: Path, servers: RunningEmulators) -> Syncer:
    return Syncer(emulator_settings(servers, default_level=1), Paths(tmp_path), INPROC_KEY)


def synced_pair(loop: asyncio.Runner, syncer: Syncer, admin: EmulatorAdmin, text: str) -> tuple[str, str]:
    local_id = admin.local_add(text)
    syncer.queue.enqueue(QueueEntry(local_id, "push", format_ts(utc_now())))
    assert loop.run(syncer.run(SyncMode.FULL)).exit_code == 0
    mapping = syncer.state.mapping_for_local(local_id)
    assert mapping is not None
    return local_id, mapping.cloud_id


def live_local(admin: EmulatorAdmin) -> list[dict[str, Any]]:
    return [m for m in admin.http.get(f"{admin.openmemory}/_admin/state").json()["memories"]
            if m["state"] == "active"]


def test_emulator_put_leaves_the_agent_view_stale(admin: EmulatorAdmin) -> None:
    """The emulator models the split: REST PUT changes SQL only, create and DELETE reach the vector store."""
    kept = admin.local_add("old text")
    gone = admin.local_add("deleted text")
    admin.local_edit(kept, "new text")
    admin.local_delete(gone)
    assert admin.local_get(kept)["text"] == "new text"
    assert admin.local_agent_texts() == ["old text"]
    assert admin.local_agent_texts(query="OLD") == ["old text"]

    def infer_add(text: str) -> Any:
        r = admin.http.post(f"{admin.openmemory}/api/v1/memories/",
                            json={"user_id": admin.user, "text": text, "infer": True, "app": "claude"})
        r.raise_for_status()
        return r.json()

    assert infer_add("old text") is None  # the extractor sees the vector store, which still says "old text"
    assert infer_add("new text")["content"] == "new text"


def test_pulled_cloud_edit_reaches_the_agent_view(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin,
                                                  loop: asyncio.Runner) -> None:
    syncer = make_syncer(tmp_path, servers)
    local_id, cloud_id = synced_pair(loop, syncer, admin, "likes tea")
    admin.cloud_edit(cloud_id, "likes green tea")
    report = loop.run(syncer.run(SyncMode.PULL))
    assert report.pull.updated == 1 and report.exit_code == 0
    assert admin.local_texts() == ["likes green tea"]
    assert admin.local_agent_texts() == ["likes green tea"]  # what Claude Code reads
    mapping = syncer.state.mapping_for_cloud(cloud_id)
    assert mapping is not None and mapping.local_id != local_id and mapping.base_text == "likes green tea"
    (live,) = live_local(admin)
    assert live["id"] == mapping.local_id and live["metadata_"]["memsync_cloud_id"] == cloud_id
    assert syncer.state.local_replaces() == []
    again = loop.run(syncer.run(SyncMode.FULL))  # an echo, nothing to do
    assert (again.pull.updated, again.pull.new, again.push.created) == (0, 0, 0)
    assert admin.cloud_texts() == ["likes green tea"]
    loop.run(syncer.aclose())


def test_resolution_reaches_the_agent_view(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin,
                                           loop: asyncio.Runner) -> None:
    syncer = make_syncer(tmp_path, servers)
    local_id, cloud_id = synced_pair(loop, syncer, admin, "v1")
    admin.local_edit(local_id, "v2 local")
    admin.cloud_edit(cloud_id, "v2 cloud")
    loop.run(syncer.run(SyncMode.PULL))
    (conflict,) = syncer.conflicts()
    result = loop.run(syncer.resolve(conflict.id, Keep.CLOUD))
    assert admin.local_texts() == ["v2 cloud"] and admin.local_agent_texts() == ["v2 cloud"]
    assert result["local_id"] != local_id and syncer.conflicts() == []
    mapping = syncer.state.mapping_for_cloud(cloud_id)
    assert mapping is not None and mapping.local_id == result["local_id"] and mapping.base_text == "v2 cloud"
    loop.run(syncer.aclose())


@pytest.mark.parametrize("step", ["after_create", "after_create_answered", "after_delete"])
def test_crash_between_steps_leaves_one_live_version(tmp_path: Path, servers: RunningEmulators,
                                                     admin: EmulatorAdmin, loop: asyncio.Runner,
                                                     monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Killed between the steps of a local rewrite: the next run ends with exactly one live, mapped version."""
    syncer = make_syncer(tmp_path, servers)
    local_id, cloud_id = synced_pair(loop, syncer, admin, "walks daily")
    admin.cloud_edit(cloud_id, "walks daily, 5 km")
    real_create, real_delete = LocalClient.create, LocalClient.delete

    async def create_then_crash(self: LocalClient, text: str, metadata: dict[str, Any]) -> Any:
        await real_create(self, text, metadata)
        raise Crash(step)

    async def delete_then_crash(self: LocalClient, memory_id: str) -> bool:
        await real_delete(self, memory_id)
        raise Crash(step)

    if step == "after_create":  # the create landed, its answer was lost
        monkeypatch.setattr(LocalClient, "create", create_then_crash)
    elif step == "after_create_answered":  # the new id is recorded, the old copy not yet deleted
        monkeypatch.setattr(LocalClient, "delete", lambda self, memory_id: _raise(Crash(step)))
    else:  # both copies settled, the mapping not yet moved
        monkeypatch.setattr(LocalClient, "delete", delete_then_crash)
    first = loop.run(syncer.run(SyncMode.PULL))
    assert first.pull.errors == 1
    assert len(syncer.state.local_replaces()) == 1
    monkeypatch.undo()

    again = loop.run(syncer.run(SyncMode.FULL))
    assert again.exit_code == 0, again
    (live,) = live_local(admin)
    assert live["content"] == "walks daily, 5 km"
    assert admin.local_agent_texts() == ["walks daily, 5 km"]
    mapping = syncer.state.mapping_for_cloud(cloud_id)
    assert mapping is not None and mapping.local_id == live["id"] and mapping.base_text == "walks daily, 5 km"
    assert syncer.state.mapping_for_local(local_id) is None and syncer.state.local_replaces() == []
    assert admin.cloud_texts() == ["walks daily, 5 km"] and syncer.conflicts() == []
    loop.run(syncer.aclose())


def test_crash_before_the_create_landed_is_forgotten(tmp_path: Path, servers: RunningEmulators,
                                                     admin: EmulatorAdmin, loop: asyncio.Runner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing landed: the intent is dropped and the next pull writes the edit once."""
    syncer = make_syncer(tmp_path, servers)
    _, cloud_id = synced_pair(loop, syncer, admin, "reads at night")
    admin.cloud_edit(cloud_id, "reads at night, mostly novels")
    monkeypatch.setattr(LocalClient, "create", lambda self, text, metadata: _raise(Crash("before create")))
    loop.run(syncer.run(SyncMode.PULL))
    monkeypatch.undo()
    again = loop.run(syncer.run(SyncMode.FULL))
    assert again.exit_code == 0 and again.pull.updated == 1
    assert [m["content"] for m in live_local(admin)] == ["reads at night, mostly novels"]
    assert admin.local_agent_texts() == ["reads at night, mostly novels"]
    assert syncer.state.local_replaces() == []
    loop.run(syncer.aclose())


def test_old_copy_edited_after_a_crash_is_kept(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin,
                                               loop: asyncio.Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user edited the old copy before recovery: their edit stays, our copy is withdrawn, a conflict follows."""
    syncer = make_syncer(tmp_path, servers)
    local_id, cloud_id = synced_pair(loop, syncer, admin, "plays chess")
    admin.cloud_edit(cloud_id, "plays chess online")
    monkeypatch.setattr(LocalClient, "delete", lambda self, memory_id: _raise(Crash("after create")))
    loop.run(syncer.run(SyncMode.PULL))
    monkeypatch.undo()
    admin.local_edit(local_id, "plays chess at the club")
    loop.run(syncer.run(SyncMode.PULL))
    assert [m["content"] for m in live_local(admin)] == ["plays chess at the club"]
    (conflict,) = syncer.conflicts()
    assert (conflict.local_id, conflict.cloud_text) == (local_id, "plays chess online")
    loop.run(syncer.aclose())


async def _raise(exc: Exception) -> Any:
    raise exc


def test_recovery_that_fails_again_neither_stops_the_run_nor_starts_a_second_rewrite(
        tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin, loop: asyncio.Runner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenMemory keeps failing the delete: each run reports the item, no third copy appears, then it heals."""
    from memsyncd.errors import ServerError

    syncer = make_syncer(tmp_path, servers)
    _, cloud_id = synced_pair(loop, syncer, admin, "drinks coffee")
    admin.cloud_edit(cloud_id, "drinks decaf")
    monkeypatch.setattr(LocalClient, "delete",
                        lambda self, memory_id: _raise(ServerError("OpenMemory answered 503", service="OpenMemory")))
    for _ in range(2):
        report = loop.run(syncer.run(SyncMode.PULL))
        assert report.fatal is None and report.pull.errors == 1
        assert sorted(m["content"] for m in live_local(admin)) == ["drinks coffee", "drinks decaf"]
        assert len(syncer.state.local_replaces()) == 1
    monkeypatch.undo()
    healed = loop.run(syncer.run(SyncMode.FULL))
    assert healed.exit_code == 0
    assert [m["content"] for m in live_local(admin)] == ["drinks decaf"]
    assert admin.local_agent_texts() == ["drinks decaf"] and syncer.state.local_replaces() == []
    loop.run(syncer.aclose())


def test_lost_state_after_a_rewrite_adopts_the_new_copy(tmp_path: Path, servers: RunningEmulators,
                                                        admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    """The cloud copy still names the old local id; the new copy's memsync_cloud_id is what recovery matches."""
    syncer = make_syncer(tmp_path / "a", servers)
    old_id, cloud_id = synced_pair(loop, syncer, admin, "lives in Lyon")
    admin.cloud_edit(cloud_id, "lives in Lyon, near the river")
    loop.run(syncer.run(SyncMode.PULL))
    loop.run(syncer.aclose())
    (cloud,) = admin.cloud_memories()
    assert cloud["metadata"]["memsync_local_id"] == old_id  # not rewritten: recovery tolerates it
    fresh = make_syncer(tmp_path / "b", servers)  # the state DB is gone
    report = loop.run(fresh.run(SyncMode.FULL))
    assert report.exit_code == 0 and report.pull.adopted == 1 and report.pull.new == 0
    (live,) = live_local(admin)
    mapping = fresh.state.mapping_for_cloud(cloud_id)
    assert mapping is not None and mapping.local_id == live["id"] != old_id
    assert admin.cloud_texts() == ["lives in Lyon, near the river"]
    loop.run(fresh.aclose())
