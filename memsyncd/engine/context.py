"""What every step of a sync shares: one root's clients, stores, settings and run flags, and the common helpers.

The concern modules (:mod:`~memsyncd.engine.push`, :mod:`~memsyncd.engine.pull`,
:mod:`~memsyncd.engine.reconcile`, :mod:`~memsyncd.engine.resolve`) each take a
:class:`SyncContext` and import only this module of the engine's I/O side (plus the
pure :mod:`~memsyncd.engine.decide`); the façade :mod:`memsyncd.engine.syncer` imports them.
Helpers used by more than one concern live here, below all of them, so the import graph
has no cycle.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from memsyncd.config import Paths, Settings
from memsyncd.engine.exactly_once import ExactlyOnce, IntentLog
from memsyncd.errors import MemsyncError, SyncUnavailableError
from memsyncd.ids import id_problem
from memsyncd.logs import redact_text
from memsyncd.models import CloudMemory, LocalMemory, Mapping, QueueEntry
from memsyncd.remote.cloud import CloudClient, Scope
from memsyncd.remote.http_edge import RetryPolicy
from memsyncd.remote.local import LocalClient
from memsyncd.store.queue import QueueStore
from memsyncd.store.state import StateStore

log = structlog.get_logger("memsyncd.sync")

REPLACE_TOKEN = "memsync_replace_token"  # local metadata key: the local rewrite that created this copy
META_CURSOR = "pull_cursor"  # state meta key: the newest cloud ``updated_at`` a complete pull saw
META_RECONCILE = "last_reconcile"  # state meta key: when the last reconcile started
# state meta key: JSON {cloud id: version} of the cloud memories a pull skipped and already reported
META_PULL_SKIPS = "pull_skips_reported"
META_LAST_RUN = "last_run"  # state meta key: when a run last pushed or pulled without failing (status' "Last sync")

ProgressCallback = Callable[[str, int, int | None], None]
"""``(phase, done, total)``: phase ``"push"`` or ``"pull"``, items finished so far, total or None when unknown."""


class RunStop(Exception):
    """Raised when a run-level error (401, network down, damaged state DB) ended the push; carries the cause."""

    def __init__(self, cause: MemsyncError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def short(exc: BaseException) -> str:
    """An error's text for reports, logs and ``sync_errors`` rows: its message, secrets redacted, at most 300 chars."""
    text = exc.message if isinstance(exc, MemsyncError) and exc.message else str(exc) or type(exc).__name__
    return redact_text(text)[:300]


@dataclass
class SyncContext:
    """One root's engine state shared by every step of a run.

    A dry run works on :meth:`dry_view`, a copy sharing the clients and stores, so a
    daemon's shared context is never flipped into dry mode under a concurrent run.
    """

    settings: Settings
    paths: Paths
    clock: Callable[[], datetime]
    queue: QueueStore
    state: StateStore
    local: LocalClient
    cloud: CloudClient | None
    intents: IntentLog
    dry: bool = False  # decide and count, but write nothing anywhere
    stopping: bool = False  # graceful shutdown: start no new queue item
    progress: ProgressCallback | None = None  # called on the engine's event loop; see report_progress
    broken_progress: ProgressCallback | None = None  # a callback that raised once: not called again
    # local changes a scan found that no push finished yet (id -> synthetic entry); swapped whole, never
    # mutated, so another thread may read it; a dry view shares it and never changes it
    scan_backlog: dict[str, QueueEntry] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings, paths: Paths, api_key: str | None, *, local: LocalClient | None,
               cloud: CloudClient | None, state: StateStore | None,
               clock: Callable[[], datetime]) -> SyncContext:
        """One root's context: the given clients and store, or ones built from ``settings`` (no cloud without a key)."""
        queue = QueueStore(paths.queue, paths.queue_lock)
        state = state or StateStore(paths.state)
        policy = RetryPolicy(attempts=settings.sync.attempts_per_run,
                             max_retry_after=settings.sync.max_retry_after_seconds)
        timeout = settings.sync.request_timeout_seconds
        max_body = settings.sync.max_response_bytes
        local = local or LocalClient(settings.local.url, settings.local.user_id, settings.local.app,
                                     policy=policy, timeout=timeout, max_body=max_body)
        if cloud is None and api_key and settings.cloud.enabled:
            scope = Scope(settings.cloud_user_id, settings.cloud.agent_id, settings.cloud.app_id,
                          settings.cloud.org_id, settings.cloud.project_id)
            cloud = CloudClient(settings.cloud.url, api_key, scope, policy=policy, timeout=timeout,
                                max_in_flight=settings.sync.concurrency, max_body=max_body)
        return cls(settings=settings, paths=paths, clock=clock, queue=queue, state=state, local=local, cloud=cloud,
                   intents=IntentLog(state))

    def dry_view(self) -> SyncContext:
        """A copy that shares clients and state but writes nothing (and reports no progress)."""
        return dataclasses.replace(self, dry=True)

    def require_cloud(self) -> CloudClient:
        """The cloud client.

        Raises:
            SyncUnavailableError: cloud sync is not configured (disabled, or no key).
        """
        if self.cloud is None:
            raise SyncUnavailableError("Cloud sync is not configured.")
        return self.cloud

    def once(self, cloud: CloudClient) -> ExactlyOnce:
        """The exactly-once create protocol over this root's state and intent log."""
        return ExactlyOnce(cloud, self.state, self.settings.sync.event_wait_seconds, self.intents)

    def record_conflict(self, mapping: Mapping, local_text: str | None, cloud_text: str | None,
                        reason: str) -> bool:
        """Store a conflict; True when the very same conflict was already open (not counted again)."""
        open_one = self.state.conflict_for_local(mapping.local_id)
        if open_one is not None and (open_one.local_text, open_one.cloud_text) == (local_text, cloud_text):
            return True
        if not self.dry:
            self.state.record_conflict(mapping.local_id, mapping.cloud_id, mapping.base_text, local_text,
                                       cloud_text, reason)
            log.info("conflict.recorded", local_id=mapping.local_id, cloud_id=mapping.cloud_id, reason=reason)
        return False

    def record(self, direction: str, local_id: str | None, text: str | None, why: str,
               cloud_id: str | None = None) -> None:
        """Remember a change for ``memsyncctl log`` (not in a dry run). Pass ``text=None`` for a level-0 memory."""
        if not self.dry:
            self.state.record_event(direction, local_id, text, why, cloud_id)

    def report_progress(self, phase: str, done: int, total: int | None) -> None:
        """Tell the progress callback, if any (never in a dry run).

        A callback that raises is logged once and not called again (a broken display must
        neither stop the sync nor cost a log line per item); setting a new one revives it.
        """
        callback = self.progress
        if callback is None or self.dry or callback is self.broken_progress:
            return
        try:
            callback(phase, done, total)
        except Exception:
            self.broken_progress = callback
            log.warning("progress.callback_failed", phase=phase, exc_info=True)


@dataclass
class LocalIndex:
    """Unmapped live local memories a pulled cloud memory may be (adoption instead of a second copy)."""

    by_hash: dict[str, LocalMemory] = field(default_factory=dict)
    by_cloud_id: dict[str, LocalMemory] = field(default_factory=dict)

    def add(self, memory: LocalMemory) -> None:
        self.by_hash.setdefault(memory.hash, memory)
        cloud_id = memory.metadata.get("memsync_cloud_id")
        if isinstance(cloud_id, str) and id_problem(cloud_id) is None:
            self.by_cloud_id.setdefault(cloud_id, memory)

    def take(self, cloud: CloudMemory, claimed: set[str]) -> LocalMemory | None:
        """The local copy pulled from ``cloud`` earlier (a crash before its mapping), else one with its text."""
        for found in (self.by_cloud_id.get(cloud.id), self.by_hash.get(cloud.hash)):
            if found is not None and found.id not in claimed:
                return found
        return None

    def discard(self, memory: LocalMemory) -> None:
        if self.by_hash.get(memory.hash) is memory:
            del self.by_hash[memory.hash]
        cloud_id = memory.metadata.get("memsync_cloud_id")
        if isinstance(cloud_id, str) and self.by_cloud_id.get(cloud_id) is memory:
            del self.by_cloud_id[cloud_id]


async def verify_state(ctx: SyncContext) -> None:
    """Check the state DB on disk before a run sends anything to the cloud (a thread: it reads every page).

    Raises:
        StateUnreadableError: the file was truncated, replaced or damaged since it was opened.
    """
    await asyncio.to_thread(ctx.state.verify)


async def unmapped_local_index(ctx: SyncContext) -> LocalIndex:
    """Unmapped live local memories by content hash and by the ``memsync_cloud_id`` they were pulled from."""
    index = LocalIndex()
    # a new copy whose local rewrite (engine/replace.py) is still in flight is not free for adoption
    rewriting = {r.token for r in ctx.state.local_replaces()}
    async for page in ctx.local.pages():
        mapped = ctx.state.mapped_local_ids([m.id for m in page])
        for memory in page:
            token = memory.metadata.get(REPLACE_TOKEN)
            if memory.alive and memory.id not in mapped and not (isinstance(token, str) and token in rewriting):
                index.add(memory)
    return index
