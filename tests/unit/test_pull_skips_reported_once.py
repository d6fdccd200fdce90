"""A cloud memory the pull skips (level 0 match, copy of a memory synced here) is reported once.

The pull lists again what changed in the minute before its cursor, so an unchanged skipped memory
comes back on every sync for a while: it must not be counted (and printed) as new each time. An
edit of it in the cloud is reported again, and level 0 still holds (never adopted, never copied).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness import INPROC_KEY, emulator_settings, enqueue_each

from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.syncer import Syncer
from memsyncd.models import SyncMode

PRIVATE = "a private note kept on this machine"


@pytest.fixture()
def syncer(tmp_path: Path, servers: RunningEmulators) -> Syncer:
    return Syncer(emulator_settings(servers, default_level=1), Paths(tmp_path), INPROC_KEY)


def test_a_level0_match_is_reported_once_and_again_after_a_cloud_edit(
        syncer: Syncer, admin: EmulatorAdmin, loop: asyncio.Runner) -> None:
    local_id = admin.local_add(PRIVATE, level=0)
    shared_id = admin.local_add("a shared memory", level=1)
    enqueue_each(syncer.queue, shared_id)
    loop.run(syncer.run(SyncMode.FULL))  # a push: the cloud now knows this device's id
    (pushed,) = admin.cloud_memories()
    device = pushed["metadata"]["memsync_device"]
    planted = admin.cloud_add("cloud text", memsync_local_id=local_id, memsync_device=device, level=1)

    first = loop.run(syncer.run(SyncMode.FULL))
    again = loop.run(syncer.run(SyncMode.FULL))  # still in the pull's overlap window, unchanged
    admin.cloud_edit(planted, "cloud text, edited")
    edited = loop.run(syncer.run(SyncMode.FULL))

    assert first.pull.skipped_private == 1
    assert again.pull.skipped_private == 0
    assert edited.pull.skipped_private == 1
    assert syncer.state.mapping_for_local(local_id) is None  # never adopted
    assert admin.local_texts() == sorted([PRIVATE, "a shared memory"])  # never copied

