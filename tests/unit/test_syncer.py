"""The engine end to end in-process against the emulators: adoption, exactly-once recovery, reconcile, deletes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import INPROC_KEY, aio, emulator_settings, enqueue_each

from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.syncer import Syncer
from memsyncd.models import SyncMode


def make_syncer(tmp_path: Path, servers: RunningEmulators, **sync: Any) -> Syncer:
    settings = emulator_settings(servers, default_level=1, **sync)
    return Syncer(settings, Paths(tmp_path), INPROC_KEY)


pytestmark = pytest.mark.usefixtures("one_loop_per_test")  # aio(): every step of a test on one event loop


def run(syncer: Syncer, mode: SyncMode = SyncMode.FULL, **kwargs: Any):  # type: ignore[no-untyped-def]
    return aio(syncer.run(mode, **kwargs))


def test_identical_content_is_adopted_not_duplicated(tmp_path: Path, servers: RunningEmulators,
                                                     admin: EmulatorAdmin) -> None:
    """The same text on both sides before any sync: one mapping, no copies anywhere."""
    admin.local_add("shared fact")
    admin.cloud_add("shared fact")
    syncer = make_syncer(tmp_path, servers)
    report = run(syncer)
    assert report.pull.adopted == 1 and report.pull.new == 0
    assert admin.local_texts() == ["shared fact"] and admin.cloud_texts() == ["shared fact"]
    assert syncer.state.count_mappings() == 1


def test_lost_state_after_a_push_is_rebuilt_by_metadata(tmp_path: Path, servers: RunningEmulators,
                                                        admin: EmulatorAdmin) -> None:
    """A crash between the cloud create and the mapping: the intent finds the memory, no second create."""
    local_id = admin.local_add("pushed right before a crash")
    syncer = make_syncer(tmp_path, servers)
    intent = syncer.state.record_intent(local_id, "h")
    admin.cloud_add("pushed right before a crash", memsync_local_id=local_id, memsync_device=syncer.state.device_id)
    assert intent.local_id == local_id
    enqueue_each(syncer.queue, local_id)
    report = run(syncer, SyncMode.PUSH)
    assert report.exit_code == 0
    assert admin.cloud_texts() == ["pushed right before a crash"]
    assert syncer.state.mapping_for_local(local_id) is not None and syncer.state.intent_for(local_id) is None


def test_delete_propagates_and_unmaps(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin) -> None:
    """A queued delete of a synced memory deletes it in the cloud (404 counts as done)."""
    syncer = make_syncer(tmp_path, servers)
    local_id = admin.local_add("to be deleted")
    enqueue_each(syncer.queue, local_id)
    run(syncer)
    admin.local_delete(local_id)
    enqueue_each(syncer.queue, local_id, action="delete")
    report = run(syncer)
    assert report.push.deleted == 1 and admin.cloud_texts() == []
    assert syncer.state.mapping_for_local(local_id) is None
    assert run(syncer).pull.new == 0  # not pulled back


def test_reconcile_deletes_locally_and_conflicts_on_local_edits(tmp_path: Path, servers: RunningEmulators,
                                                                admin: EmulatorAdmin) -> None:
    """Cloud deletions: unchanged local copies go, edited ones become conflicts."""
    syncer = make_syncer(tmp_path, servers, max_delete_fraction=1.0)
    ids = [admin.local_add(f"rec {i}") for i in range(3)]
    enqueue_each(syncer.queue, *ids)
    run(syncer)
    for memory in admin.cloud_memories():
        if memory["memory"] in ("rec 0", "rec 1"):
            admin.cloud_delete(memory["id"])
    admin.local_edit(ids[1], "rec 1 edited")
    report = aio(syncer.reconcile())
    assert (report.deleted_local, report.conflicts) == (1, 1)
    assert admin.local_texts() == ["rec 1 edited", "rec 2"]
    (conflict,) = syncer.conflicts()
    assert conflict.cloud_text is None and conflict.local_text == "rec 1 edited"


def test_reconcile_refuses_mass_deletion(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin) -> None:
    """More than max_delete_fraction missing: nothing deleted locally, a reason reported."""
    syncer = make_syncer(tmp_path, servers, max_delete_fraction=0.1)
    ids = [admin.local_add(f"mass {i}") for i in range(5)]
    enqueue_each(syncer.queue, *ids)
    run(syncer)
    for memory in admin.cloud_memories():
        admin.cloud_delete(memory["id"])
    report = aio(syncer.reconcile())
    assert report.refused and report.deleted_local == 0
    assert len(admin.local_texts()) == 5


def test_cloud_edit_of_a_locally_deleted_memory_is_a_conflict(tmp_path: Path, servers: RunningEmulators,
                                                              admin: EmulatorAdmin) -> None:
    """Deleted here, edited there: never resolved silently; keep cloud brings it back."""
    from memsyncd.wire import Keep

    syncer = make_syncer(tmp_path, servers)
    local_id = admin.local_add("fragile")
    enqueue_each(syncer.queue, local_id)
    run(syncer)
    admin.local_delete(local_id)
    admin.cloud_edit(admin.cloud_memories()[0]["id"], "fragile, edited in the cloud")
    report = run(syncer, SyncMode.PULL)
    assert report.pull.conflicts == 1
    (conflict,) = syncer.conflicts()
    aio(syncer.resolve(conflict.id, Keep.CLOUD))
    assert admin.local_texts() == ["fragile, edited in the cloud"]
    assert run(syncer).pull.new == 0


def test_dry_run_writes_nothing(tmp_path: Path, servers: RunningEmulators, admin: EmulatorAdmin) -> None:
    """A dry run plans pushes and pulls without touching servers, queue or state."""
    syncer = make_syncer(tmp_path, servers)
    enqueue_each(syncer.queue, admin.local_add("dry"))
    admin.cloud_add("dry cloud")
    queue_before = syncer.paths.queue.read_bytes()
    report = run(syncer, dry_run=True)
    assert report.push.created == 1 and report.pull.new == 1
    assert admin.cloud_texts() == ["dry cloud"] and admin.local_texts() == ["dry"]
    assert syncer.paths.queue.read_bytes() == queue_before and syncer.state.count_mappings() == 0


def test_resolution_refuses_when_a_side_changed_after_listing(tmp_path: Path, servers: RunningEmulators,
                                                              admin: EmulatorAdmin) -> None:
    """Re-check before writing: a newer local edit is never overwritten by a stale choice."""
    from memsyncd.errors import ConflictError
    from memsyncd.wire import Keep

    syncer = make_syncer(tmp_path, servers)
    local_id = admin.local_add("v1")
    enqueue_each(syncer.queue, local_id)
    run(syncer)
    admin.local_edit(local_id, "v2 local")
    admin.cloud_edit(admin.cloud_memories()[0]["id"], "v2 cloud")
    run(syncer, SyncMode.PULL)
    (conflict,) = syncer.conflicts()
    admin.local_edit(local_id, "v3 local, written after the conflict was listed")
    with pytest.raises(ConflictError, match="changed since it was listed"):
        aio(syncer.resolve(conflict.id, Keep.CLOUD))
    assert admin.local_get(local_id)["text"] == "v3 local, written after the conflict was listed"
    (refreshed,) = syncer.conflicts()
    assert refreshed.local_text == "v3 local, written after the conflict was listed"
    aio(syncer.resolve(refreshed.id, Keep.LOCAL))
    assert admin.cloud_texts() == ["v3 local, written after the conflict was listed"]


def test_local_delete_of_a_cloud_edited_memory_is_a_conflict(tmp_path: Path, servers: RunningEmulators,
                                                             admin: EmulatorAdmin) -> None:
    """Deleted here while edited there: the cloud edit is kept and the user is asked."""
    syncer = make_syncer(tmp_path, servers)
    local_id = admin.local_add("draft")
    enqueue_each(syncer.queue, local_id)
    run(syncer)
    admin.cloud_edit(admin.cloud_memories()[0]["id"], "draft, improved in the cloud")
    admin.local_delete(local_id)
    enqueue_each(syncer.queue, local_id, action="delete")
    report = run(syncer, SyncMode.PUSH)
    assert report.push.conflicts == 1 and report.push.deleted == 0
    assert admin.cloud_texts() == ["draft, improved in the cloud"]
    (conflict,) = syncer.conflicts()
    assert (conflict.local_text, conflict.cloud_text) == (None, "draft, improved in the cloud")


def test_last_sync_counts_push_runs_and_outlives_a_restart(tmp_path: Path, servers: RunningEmulators,
                                                           admin: EmulatorAdmin) -> None:
    """A push-only run stamps no queue ``last_sync``, yet status (a new process: a new Syncer) shows it."""
    local_id = admin.local_add("pushed by a push-only run")
    syncer = make_syncer(tmp_path, servers)
    before = aio(syncer.status())
    assert before.last_sync is None
    enqueue_each(syncer.queue, local_id)
    assert run(syncer, SyncMode.PUSH).push.created == 1
    aio(syncer.aclose())
    assert make_syncer(tmp_path, servers).queue.read().last_sync is None  # the queue says "never" ...
    restarted = make_syncer(tmp_path, servers)
    assert aio(restarted.status()).last_sync is not None  # ... status does not
    aio(restarted.aclose())
    dry = make_syncer(tmp_path, servers)
    stamp = aio(dry.status()).last_sync
    run(dry, SyncMode.PUSH, dry_run=True)  # a dry run changes nothing
    assert aio(dry.status()).last_sync == stamp
    aio(dry.aclose())
