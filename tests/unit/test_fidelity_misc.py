"""Smaller real-service facts (issue 18, item 5): metadata merge on update, Retry-After as an HTTP date,
and the OpenMemory states as MCP clients see them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from harness import INPROC_KEY, emulator_settings

from memsyncd.config import Paths
from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.engine.syncer import Syncer
from memsyncd.errors import RateLimitedError
from memsyncd.models import QueueEntry, SyncMode, format_ts, utc_now
from memsyncd.remote.http_edge import check_status


def test_update_keeps_metadata_other_tools_set(tmp_path: Path, servers: RunningEmulators,
                                               admin: EmulatorAdmin) -> None:
    """mem0's PUT replaces the metadata object: memsyncd sends the current keys back with its own."""
    syncer = Syncer(emulator_settings(servers, default_level=1), Paths(tmp_path), INPROC_KEY)
    local_id = admin.local_add("likes jazz")
    with asyncio.Runner() as loop:
        syncer.queue.enqueue(QueueEntry(local_id, "push", format_ts(utc_now())))
        loop.run(syncer.run(SyncMode.PUSH))
        (cloud,) = admin.cloud_memories()
        tagged = {**cloud["metadata"], "topic": "music", "source": "another-tool"}
        admin.http.put(f"{admin.mem0}/v1/memories/{cloud['id']}/", headers=admin.auth,
                       json={"metadata": tagged}).raise_for_status()
        admin.local_edit(local_id, "likes jazz and blues")
        syncer.queue.enqueue(QueueEntry(local_id, "push", format_ts(utc_now())))
        assert loop.run(syncer.run(SyncMode.PUSH)).push.updated == 1
        loop.run(syncer.aclose())
    (after,) = admin.cloud_memories()
    assert after["memory"] == "likes jazz and blues"
    assert after["metadata"]["topic"] == "music" and after["metadata"]["source"] == "another-tool"
    assert after["metadata"]["memsync_local_id"] == local_id


@pytest.mark.parametrize(("date_header", "expected"), [(True, 7.0), (False, None)])
def test_retry_after_http_date_is_honoured(date_header: bool, expected: float | None) -> None:
    """RFC 9110: Retry-After may be an HTTP date; measured from the answer's Date header when present."""
    server_now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = {"Retry-After": format_datetime(server_now + timedelta(seconds=7), usegmt=True)}
    if date_header:
        headers["Date"] = format_datetime(server_now, usegmt=True)
    else:  # measured from our clock: a date well in the future
        headers["Retry-After"] = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    with pytest.raises(RateLimitedError) as caught:
        check_status(httpx.Response(429, headers=headers, json={"detail": "slow down"}), "mem0")
    if expected is not None:
        assert caught.value.retry_after == expected
    else:
        assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 30


def test_retry_after_in_the_past_or_garbage() -> None:
    past = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    for value, expected in ((past, 0.0), ("soon", None), ("12", 12.0)):
        with pytest.raises(RateLimitedError) as caught:
            check_status(httpx.Response(429, headers={"Retry-After": value}), "mem0")
        assert caught.value.retry_after == expected


def test_agent_view_follows_states(servers: RunningEmulators, admin: EmulatorAdmin) -> None:
    """MCP list_memories shows active memories only; REST /filter shows paused, and archived on request."""
    ids = {name: admin.local_add(name) for name in ("active", "paused", "archived")}
    servers.openmemory.set_state(ids["paused"], "paused")
    servers.openmemory.set_state(ids["archived"], "archived")
    assert admin.local_agent_texts() == ["active"]
    assert admin.local_texts() == ["active", "paused"]
