"""Exactly-once creation of cloud memories: a durable intent first, a look before every retry.

A create is the one cloud write that is not idempotent. The protocol (SPEC 4, Exactly
once): record a push intent (fsynced) before sending the add; before any retry, and
after a crash, resolve the intent — through the queued add's event if there is one,
else by listing cloud memories whose metadata carries the ``memsync_local_id`` —
before creating again. Queued adds are followed to their cloud id for a bounded time.

Intents are committed in a worker thread with group commit (:class:`IntentLog`): each
create still waits until its own intent is on disk, the event loop does not wait on the
fsync, and the creates that become ready during one commit share the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping as MappingABC
from datetime import timedelta
from typing import Any

import structlog

from memsyncd.errors import CloudProcessingError, RemoteRejectedError, ServerError
from memsyncd.models import CloudMemory, LocalMemory, Mapping, PushIntent, parse_ts
from memsyncd.remote.cloud import CloudClient
from memsyncd.remote.http_edge import retry_context
from memsyncd.store.state import StateStore

log = structlog.get_logger("memsyncd.sync")

INTENT_SKEW = timedelta(minutes=5)


def cloud_metadata(local: LocalMemory, level: int, device_id: str,
                   current: MappingABC[str, Any] | None = None) -> dict[str, Any]:
    """The metadata memsyncd stores with every cloud memory it writes.

    ``current``: the cloud memory's metadata now. An update sends the whole metadata object
    (mem0's PUT replaces it), so the keys other tools set are kept and only ours change.
    """
    return {**(current or {}), "memsync_local_id": local.id, "memsync_device": device_id, "level": level,
            "content_hash": local.hash}


class IntentLog:
    """Durable push intents with group commit: creates that start together share one fsync."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self._waiting: list[tuple[str, str, asyncio.Future[PushIntent]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def record(self, local_id: str, digest: str) -> PushIntent:
        """Return once the intent to create ``local_id`` is committed with a full fsync.

        Raises:
            StateUnreadableError: the state DB failed (nothing may be sent then).
        """
        future: asyncio.Future[PushIntent] = asyncio.get_running_loop().create_future()
        self._waiting.append((local_id, digest, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit())
        return await future

    async def _commit(self) -> None:
        while True:
            await asyncio.sleep(0)  # one loop turn: creates that are ready too join this transaction
            if not self._waiting:
                return
            batch, self._waiting = self._waiting, []
            try:  # in a thread: the fsync does not stop the loop; creates arriving meanwhile form the next batch
                intents = await asyncio.to_thread(self.state.record_intents,
                                                  [(local_id, digest) for local_id, digest, _ in batch])
            except Exception as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), intent in zip(batch, intents, strict=True):
                if not future.done():
                    future.set_result(intent)


class ExactlyOnce:
    """Creates cloud memories for local ones without ever creating the same one twice."""

    def __init__(self, cloud: CloudClient, state: StateStore, event_wait_seconds: float,
                 intents: IntentLog | None = None) -> None:
        self.cloud = cloud
        self.state = state
        self.event_wait_seconds = event_wait_seconds
        self.intents = intents or IntentLog(state)

    async def create(self, local: LocalMemory, level: int) -> str:
        """Create ``local`` in the cloud (or find the copy an earlier attempt made); map it; return the cloud id.

        Raises:
            CloudProcessingError: mem0 accepted the add but is still processing it.
            RemoteError: the add failed for good.
        """
        intent = await self.intents.record(local.id, local.hash)  # durable before the add is sent
        metadata = cloud_metadata(local, level, self.state.device_id)
        async for attempt in retry_context(self.cloud.policy):
            with attempt:
                if attempt.num > 1:  # the last add may have landed even though it failed for us
                    found = await self.find_landed(intent)
                    if found is not None:
                        return self._map(local, found.id, level)
                result = await self.cloud.add(local.text, metadata, retry=False)
        if result.cloud_id is not None:
            return self._link(local, result.cloud_id, level)
        if result.deduplicated:
            return await self._link_existing(local, level)
        assert result.event_id is not None
        self.state.record_intent(local.id, local.hash, result.event_id)
        finished, cloud_id = await self._follow_event(result.event_id)
        if not finished:
            raise CloudProcessingError("mem0 accepted the add and is still processing it; the next sync "
                                       "picks up its id")
        if cloud_id is None:  # SUCCEEDED with no results: deduplicated
            return await self._link_existing(local, level)
        return self._link(local, cloud_id, level)

    async def find_landed(self, intent: PushIntent | None) -> CloudMemory | None:
        """The cloud memory an unfinished create made, if it landed.

        Raises:
            CloudProcessingError: its queued add is still being processed.
        """
        if intent is None:
            return None
        if intent.event_id:
            event = await self.cloud.event(intent.event_id)
            if event.status == "SUCCEEDED" and event.cloud_id:
                return await self.cloud.get(event.cloud_id)
            if not event.finished:  # PENDING, RUNNING, ...: a second add now would make a duplicate
                raise CloudProcessingError("mem0 is still processing an earlier add of this memory")
        since = parse_ts(intent.started_at) - INTENT_SKEW
        return await self.cloud.find_by_local_id(intent.local_id, since)

    async def _link_existing(self, local: LocalMemory, level: int) -> str:
        """mem0 deduplicated the add: link ``local`` to the memory that already holds its text.

        Raises:
            RemoteRejectedError: no memory of the scope holds the text (the add really stored nothing).
        """
        existing = await self.cloud.find_by_text(local.text, local.hash)
        if existing is None:
            raise RemoteRejectedError("mem0 stored nothing for the add and holds no memory with this text; "
                                      "it is sent again on the next sync", service="mem0")
        log.info("push.deduplicated", local_id=local.id, cloud_id=existing.id)
        return self._link(local, existing.id, level)

    def _link(self, local: LocalMemory, cloud_id: str, level: int) -> str:
        """Map ``local`` to ``cloud_id``, or, when another local memory holds that cloud memory already
        (two identical local memories; mem0 keeps one copy), record ``local`` as its local duplicate."""
        owner = self.state.mapping_for_cloud(cloud_id)
        if owner is not None and owner.local_id != local.id:
            self.state.record_local_duplicate(local.id, owner.local_id, cloud_id, local.hash)
            log.warning("push.local_duplicate", local_id=local.id, duplicate_of=owner.local_id, cloud_id=cloud_id)
            return cloud_id
        return self._map(local, cloud_id, level)

    def _map(self, local: LocalMemory, cloud_id: str, level: int) -> str:
        self.state.save_mapping(Mapping(local.id, cloud_id, local.hash, local.text, level))
        log.info("push.created", local_id=local.id, cloud_id=cloud_id)
        return cloud_id

    async def _follow_event(self, event_id: str) -> tuple[bool, str | None]:
        """Poll a queued add for up to ``event_wait_seconds``: ``(finished, cloud id)``.

        ``(False, None)``: still pending or running then; ``(True, None)``: SUCCEEDED with no
        result (a deduplicated add).
        """
        deadline = time.monotonic() + self.event_wait_seconds
        delay = 0.05
        while True:
            event = await self.cloud.event(event_id)
            if event.status == "SUCCEEDED":
                return True, event.cloud_id
            if event.status == "FAILED":
                raise ServerError("mem0 failed to process the add (event FAILED); it will be pushed again")
            if time.monotonic() + delay > deadline:
                return False, None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
