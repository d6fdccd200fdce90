"""The push: queued local changes to the cloud through a worker pool, results back to the queue file in batches.

Each coalesced queue item is decided by :func:`~memsyncd.engine.decide.plan_push` (and
``plan_mapped_push`` / ``plan_mapped_delete`` once the cloud copy is known) and carried
out here. The queue lock is never held across network I/O: the file is read once, and
finished entries are removed by :class:`_QueueFlusher` while the run goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field

from memsyncd.engine.context import RunStop, SyncContext, log, short
from memsyncd.engine.decide import (
    PRIVATE_LEVEL,
    CloudStep,
    DeleteStep,
    PushStep,
    coalesce,
    needs_local_read,
    plan_mapped_delete,
    plan_mapped_push,
    plan_push,
)
from memsyncd.engine.exactly_once import cloud_metadata
from memsyncd.engine.report import PushReport
from memsyncd.engine.scanplan import capped_level, is_scan_entry
from memsyncd.errors import CloudProcessingError, MemsyncError, RemoteError, StateUnreadableError
from memsyncd.logs import redact_text
from memsyncd.models import CloudMemory, LocalMemory, Mapping, QueueEntry, QueueKey, WorkItem
from memsyncd.remote.cloud import CloudClient
from memsyncd.store import spool
from memsyncd.store.queue import Outcome, QueueStore

PUSH_WORKERS_PER_SLOT = 2  # push workers per cloud request slot (see run_push)

ClaimCallback = Callable[[frozenset[QueueKey]], None]
"""Told the keys of the queue entries a push read, before it works on any of them."""


class ItemStatus(enum.Enum):
    """How one coalesced queue item ended in a push run."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"  # nothing to send (already equal, or only the cloud changed)
    CONFLICT = "conflict"  # a new conflict was recorded; the entry leaves the queue
    SKIPPED = "skipped"  # level 0: never leaves the machine
    NOT_FOUND = "not_found"  # a push of an id OpenMemory does not have (any more)
    INVALID_ID = "invalid_id"  # an id no memory can have
    KEPT = "kept"  # a queued delete of a memory that still exists locally: the cloud copy stays
    DROPPED = "dropped"  # nothing to do any more (deleted before it was ever synced)
    FAILED = "failed"  # stays queued with a sync_errors row
    WAITING = "waiting"  # mem0 is still processing a queued add: stays queued, not an error
    DUPLICATE = "duplicate"  # same text as another synced local memory: mem0 keeps one copy (linked, reported)
    CANCELLED = "cancelled"  # not attempted: the run stopped (401, network down, shutdown)


@dataclass
class ItemResult:
    """One item's end: what to do with its queue entries, and how it counts in the report."""

    outcome: Outcome
    status: ItemStatus
    message: str = ""


@dataclass
class _RunState:
    fatal: MemsyncError | None = None


@dataclass
class _PushTally:
    """Counts of a push run's results (no per-item list: memory stays flat in the queue's length)."""

    counts: Counter[ItemStatus] = field(default_factory=Counter)
    error_messages: list[str] = field(default_factory=list)

    def add(self, result: ItemResult) -> None:
        self.counts[result.status] += 1
        if result.status is ItemStatus.FAILED:
            self.error_messages.append(f"{result.outcome.entries[-1].id}: {result.message}")

    def report(self) -> PushReport:
        counts = self.counts
        report = PushReport(
            created=counts[ItemStatus.CREATED], updated=counts[ItemStatus.UPDATED],
            deleted=counts[ItemStatus.DELETED], unchanged=counts[ItemStatus.UNCHANGED],
            conflicts=counts[ItemStatus.CONFLICT], skipped_private=counts[ItemStatus.SKIPPED],
            dropped=counts[ItemStatus.DROPPED], errors=counts[ItemStatus.FAILED],
            waiting=counts[ItemStatus.WAITING], duplicates=counts[ItemStatus.DUPLICATE],
            not_found=counts[ItemStatus.NOT_FOUND], invalid_ids=counts[ItemStatus.INVALID_ID],
            deletes_kept=counts[ItemStatus.KEPT], error_messages=self.error_messages,
        )
        report.attempted = (counts.total() - report.skipped_private - report.dropped - report.conflicts
                            - report.waiting - report.not_found - report.invalid_ids - report.deletes_kept)
        return report


class _QueueFlusher:
    """Applies finished push results to the queue file in batches while the run goes on.

    A batch goes when ``FLUSH_EVERY`` results are waiting or ``FLUSH_SECONDS`` passed, but
    never sooner than ``1 / FLUSH_SHARE`` times the last write took, so a huge queue file
    (whose rewrite costs more) is written less often and the run stays linear in its length.
    Each write runs in a thread (``QueueStore.apply``: lock, re-read, atomic replace, fsync):
    the event loop never waits on the lock or the disk.
    """

    FLUSH_EVERY = 50
    FLUSH_SECONDS = 1.0
    FLUSH_SHARE = 0.1

    def __init__(self, queue: QueueStore, *, write: bool, error_ids: frozenset[str] = frozenset()) -> None:
        self.queue = queue
        self.write = write
        self.error_ids = error_ids  # ids with a sync_errors row when the push read the queue
        self._waiting: list[Outcome] = []
        self._task: asyncio.Task[None] | None = None
        self._last = time.monotonic()
        self._last_cost = 0.0

    def add(self, outcome: Outcome) -> None:
        """Queue one result for the file (entries that are neither done nor failed need no write).

        A finished item made only of scan findings (not in the file) with no ``sync_errors`` row to
        clear changes nothing there: no write (a daemon's scan tick that pushes one memory would
        otherwise rewrite and fsync the queue file, and wake its own watcher).
        """
        if not self.write or not (outcome.done or outcome.error):
            return
        if outcome.done and outcome.entries[-1].id not in self.error_ids \
                and all(is_scan_entry(e) for e in outcome.entries):
            return
        self._waiting.append(outcome)
        if self._task is not None and self._task.done() and self._task.exception() is not None:
            return  # the write failed: close() raises it
        if self._task is not None and not self._task.done():
            return
        since = time.monotonic() - self._last
        if since < self._last_cost / self.FLUSH_SHARE:
            return
        if len(self._waiting) >= self.FLUSH_EVERY or since >= self.FLUSH_SECONDS:
            batch, self._waiting = self._waiting, []
            self._task = asyncio.create_task(self._apply(batch))

    async def _apply(self, batch: list[Outcome]) -> None:
        started = time.monotonic()
        await asyncio.to_thread(self.queue.apply, _redacted(batch))
        self._last = time.monotonic()
        self._last_cost = self._last - started

    async def close(self, *, write: bool = True) -> None:
        """Wait for the batch in flight, then write what is left (``write=False``: drop it).

        Raises:
            QueueUnreadableError, QueueBusyError: a write failed (nothing of that batch was written).
        """
        if self._task is not None:
            await self._task
        rest, self._waiting = self._waiting, []
        if rest and write and self.write:
            await self._apply(rest)


def _redacted(outcomes: list[Outcome]) -> list[Outcome]:
    """Last guard before ``sync_errors`` rows are written: no secret ever reaches the queue file."""
    return [Outcome(o.entries, o.done, redact_text(o.error)) if o.error else o for o in outcomes]


async def run_push(ctx: SyncContext, cloud: CloudClient, extra: Sequence[QueueEntry] = (),
                   finished_ids: set[str] | None = None, on_claimed: ClaimCallback | None = None,
                   listed: MappingABC[str, LocalMemory] | None = None) -> PushReport:
    """Push the queue: workers take the coalesced items in order; results reach the queue file in batches.

    ``sync.concurrency`` bounds the cloud requests in flight (``CloudClient.max_in_flight``);
    there are twice as many workers, so that while some wait on the cloud the others read
    their local memory and make their intent durable, and a cloud slot never idles.
    Memory stays flat in the queue's length: one task per worker, counters instead of a
    result per item, and finished entries leave the queue while the run goes on (so
    ``status`` sees progress and a crash leaves only unfinished work). The progress
    callback hears ``("push", finished items, coalesced items)`` after each item.

    Raises:
        RunStop: a run-level error (401, network down, damaged state DB) stopped the push;
            nothing more was written to the queue.
        QueueUnreadableError, QueueBusyError: the queue file could not be read or written.

    Args:
        ctx: the root's context.
        cloud: the cloud client.
        extra: synthetic entries found by a local scan (:mod:`memsyncd.engine.scan`), coalesced with
            the queue's: they take the same path (levels, intents, exactly once, conflicts, report).
            They are not in the queue file, so finishing one removes nothing there.
        finished_ids: when given, receives the ids of items that finished (done; not failed or left over).
        on_claimed: when given, called once with the keys of the queue entries this push read, before any
            work (the daemon's watcher then knows the push's own queue writes are no new work). The report
            carries them too (``claimed_keys``), and those still queued after the push (``pending_keys``).
        listed: local memories as this run's scan listed them (id -> memory): an item made only of scan
            entries uses its listed copy instead of reading the memory again (one local request less per
            finding; a first sync of thousands of memories would otherwise read each one twice).
    """
    if not ctx.dry:
        await asyncio.to_thread(drain_spool, ctx)
    doc = await asyncio.to_thread(ctx.queue.read)  # no lock held while we talk to the servers
    claimed = frozenset(entry.key for entry in doc.pending)
    error_ids = frozenset(row.id for row in doc.sync_errors)
    if on_claimed is not None:
        on_claimed(claimed)
    items = coalesce([*doc.pending, *extra])
    del doc
    done_keys: set[QueueKey] = set()
    run = _RunState()
    tally = _PushTally()
    flusher = _QueueFlusher(ctx.queue, write=not ctx.dry, error_ids=error_ids)
    todo = iter(items)
    finished = 0

    def not_done(item: WorkItem, status: ItemStatus, message: str | None = None) -> ItemResult:
        return ItemResult(Outcome(item.entries, done=False, error=message), status, message or "")

    async def push_one(item: WorkItem) -> ItemResult:
        try:
            return await push_item(ctx, cloud, item, listed.get(item.id) if listed else None)
        except CloudProcessingError as exc:
            log.info("push.item_waiting", id=item.id, reason=short(exc))
            return not_done(item, ItemStatus.WAITING)
        except RemoteError as exc:
            log.warning("push.item_failed", id=item.id, error=short(exc))
            if exc.stops_run:
                run.fatal = run.fatal or exc
                return not_done(item, ItemStatus.CANCELLED)
            return not_done(item, ItemStatus.FAILED, short(exc))
        except StateUnreadableError as exc:  # a run-level stop, never the failure of one item
            run.fatal = run.fatal or exc
            return not_done(item, ItemStatus.CANCELLED)
        except Exception as exc:  # a bug must fail one entry, never the run or the daemon
            log.exception("push.item_crashed", id=item.id)
            return not_done(item, ItemStatus.FAILED, f"internal error: {short(exc)}")

    async def worker() -> None:
        nonlocal finished
        for item in todo:  # one shared iterator: every item is taken by exactly one worker
            if run.fatal is not None or ctx.stopping:
                return
            result = await push_one(item)
            tally.add(result)
            if result.outcome.done:
                done_keys.update(entry.key for entry in result.outcome.entries)
                if finished_ids is not None:
                    finished_ids.add(item.id)
            if result.status is not ItemStatus.CANCELLED:
                flusher.add(result.outcome)
                finished += 1
                ctx.report_progress("push", finished, len(items))

    workers = min(PUSH_WORKERS_PER_SLOT * ctx.settings.sync.concurrency, len(items)) or 1
    await asyncio.gather(*(worker() for _ in range(workers)))
    if run.fatal is not None:
        # A run-level stop (401, network down, damaged state DB) writes nothing more to the queue:
        # no sync_errors rows, and a stop before the first batch leaves the file byte-for-byte as
        # it was. What did reach the cloud is recorded in the state DB (or, after a state error,
        # in the cloud metadata 'state rebuild' reads), so the next run neither loses nor repeats it.
        await flusher.close(write=False)
        raise RunStop(run.fatal)
    await flusher.close()
    report = tally.report()
    report.claimed_keys = claimed
    report.pending_keys = claimed - done_keys
    return report


def drain_spool(ctx: SyncContext) -> None:
    """Move entries spooled while the queue lock was busy (``store/spool.py``) into the queue; never fails the run.

    A lock still busy, or a queue that cannot be written, leaves them spooled for the next run.
    """
    try:
        result = spool.drain(ctx.paths.root, ctx.queue)
    except MemsyncError as exc:
        log.warning("spool.not_drained", error=str(exc))
        return
    if result.moved or result.files:
        log.info("spool.drained", entries=len(result.moved), files=result.files)
    for path in result.rejected:
        log.error("spool.rejected", path=path, hint="not a spool file of this root; left renamed *.rejected")


async def push_item(ctx: SyncContext, cloud: CloudClient, item: WorkItem,
                    listed: LocalMemory | None = None) -> ItemResult:
    """Decide and carry out one coalesced queue item (create, update, delete, skip or conflict).

    ``listed``: the memory as this run's scan listed it; used instead of a ``GET`` when every entry of
    the item is a scan finding (a queued entry may follow a newer write than the listing saw).

    Raises:
        CloudProcessingError: mem0 is still processing a queued add (the item waits).
        RemoteError: a request failed after its retries.
        StateUnreadableError: the state DB failed.
    """
    done = Outcome(item.entries, done=True)
    mapping = ctx.state.mapping_for_local(item.id)
    intent = ctx.state.intent_for(item.id)
    queued_private = item.level == PRIVATE_LEVEL
    local: LocalMemory | None = None
    if needs_local_read(item):
        fresh_enough = listed is not None and listed.id == item.id and all(is_scan_entry(e) for e in item.entries)
        local = listed if fresh_enough else await ctx.local.get(item.id)
    if local is not None and ctx.settings.sync.rules:  # selective sync: a rule caps the level like a queue entry
        capped = capped_level(item.level, local, ctx.settings.sync.rules)
        if capped != item.level:
            item = dataclasses.replace(item, level=capped)
    plan = plan_push(item, local, mapping, intent, ctx.settings.sync.default_level)
    log.debug("push.plan", id=item.id, step=plan.step.value, reason=plan.reason)
    step = plan.step
    if step is PushStep.SKIP_PRIVATE:
        if mapping is None and queued_private and not ctx.dry:
            ctx.state.mark_local_only(item.id)  # a scan must not push it later under a higher default level
        if mapping is not None and mapping.level != 0 and not ctx.dry:
            # synced before, private now: remember it, so 'doctor' and 'forget-cloud-copies' can offer to
            # remove the earlier cloud copy (never removed without the user saying so)
            ctx.state.set_mapping_level(mapping.local_id, 0)
        ctx.record("skip", item.id, None, "level 0 (local-only): not sent")
        return ItemResult(done, ItemStatus.SKIPPED)
    if step is PushStep.DROP_INVALID:
        log.warning("push.skipped", id=ascii(item.id[:80]), reason=plan.reason)
        return ItemResult(done, ItemStatus.INVALID_ID, plan.reason)
    if step is PushStep.DROP_GONE:
        ctx.record("skip", item.id, None, plan.reason or "gone locally and never synced: nothing to send")
        log.info("push.skipped", id=item.id, reason=plan.reason)
        return ItemResult(done, ItemStatus.NOT_FOUND, plan.reason)
    if step is PushStep.KEEP_CLOUD_COPY:
        ctx.record("skip", item.id, None, plan.reason or "still exists locally: cloud copy kept")
        log.info("push.skipped", id=item.id, action="delete", reason=plan.reason)
        return ItemResult(done, ItemStatus.KEPT, plan.reason)
    if step is PushStep.DROP_UNMAPPED:
        found = await ctx.once(cloud).find_landed(intent) if intent else None
        if found is None:
            if intent and not ctx.dry:
                ctx.state.clear_intent(item.id)
            return ItemResult(done, ItemStatus.DROPPED)
        mapping = Mapping(item.id, found.id, found.hash, found.text)
    if step in (PushStep.DELETE_CLOUD, PushStep.DROP_UNMAPPED):
        assert mapping is not None
        return await _push_delete(ctx, cloud, item, mapping)
    assert local is not None
    cloud_copy: CloudMemory | None = None
    if step is PushStep.RESOLVE_INTENT:
        assert intent is not None
        cloud_copy = await ctx.once(cloud).find_landed(intent)
        if cloud_copy is None:
            step = PushStep.CREATE_CLOUD
        else:
            mapping = Mapping(local.id, cloud_copy.id, cloud_copy.hash, cloud_copy.text, plan.level)
            if not ctx.dry:
                ctx.state.save_mapping(mapping)
    if step is PushStep.CREATE_CLOUD:
        if _known_duplicate(ctx, local.id, local.hash):
            return ItemResult(done, ItemStatus.DUPLICATE)
        if ctx.dry:
            return ItemResult(done, ItemStatus.CREATED)
        if not all(is_scan_entry(e) for e in item.entries):
            ctx.state.clear_local_only(item.id)  # queued again with a level above 0
        await ctx.once(cloud).create(local, plan.level)
        if ctx.state.local_duplicate(local.id) is not None and ctx.state.mapping_for_local(local.id) is None:
            return ItemResult(done, ItemStatus.DUPLICATE)
        ctx.record("push", item.id, local.text, f"new locally: created in the cloud (level {plan.level})")
        return ItemResult(done, ItemStatus.CREATED)
    assert mapping is not None
    if mapping.level != plan.level and not ctx.dry:
        # the level read now (queue entry, metadata) is what a resolution of this pair honours next
        ctx.state.set_mapping_level(mapping.local_id, plan.level)
    if cloud_copy is None:
        cloud_copy = await cloud.get(mapping.cloud_id)
    cloud_step = plan_mapped_push(local, mapping, cloud_copy)
    log.debug("push.mapped", id=item.id, step=cloud_step.value)
    if cloud_step is CloudStep.UPDATE_CLOUD:
        if not ctx.dry:
            metadata = cloud_metadata(local, plan.level, ctx.state.device_id,
                                      cloud_copy.metadata if cloud_copy is not None else None)
            await cloud.update(mapping.cloud_id, local.text, metadata)
            ctx.state.save_mapping(Mapping(local.id, mapping.cloud_id, local.hash, local.text, plan.level))
        ctx.record("push", item.id, local.text, "edited locally: cloud copy updated", mapping.cloud_id)
        return ItemResult(done, ItemStatus.UPDATED)
    if cloud_step is CloudStep.REFRESH_BASE:
        if not ctx.dry:
            ctx.state.save_mapping(Mapping(local.id, mapping.cloud_id, local.hash, local.text, plan.level))
        return ItemResult(done, ItemStatus.UNCHANGED)
    if cloud_step in (CloudStep.NOTHING, CloudStep.CLOUD_DELETED):
        return ItemResult(done, ItemStatus.UNCHANGED)
    reason = "edited locally, deleted in the cloud" if cloud_copy is None else "edited on both sides"
    known = ctx.record_conflict(mapping, local.text, cloud_copy.text if cloud_copy else None, reason)
    return ItemResult(done, ItemStatus.UNCHANGED if known else ItemStatus.CONFLICT)


def _known_duplicate(ctx: SyncContext, local_id: str, digest: str) -> bool:
    """True when ``local_id`` is a recorded local duplicate that still stands (same text, its twin still synced)."""
    duplicate = ctx.state.local_duplicate(local_id)
    if duplicate is None or duplicate.content_hash != digest:
        return False
    twin = ctx.state.mapping_for_local(duplicate.of_local_id)
    return twin is not None and twin.cloud_id == duplicate.cloud_id


async def _push_delete(ctx: SyncContext, cloud: CloudClient, item: WorkItem, mapping: Mapping) -> ItemResult:
    """A local delete of a synced memory: delete the cloud copy, unless it was edited since the base (conflict)."""
    done = Outcome(item.entries, done=True)
    current = await cloud.get(mapping.cloud_id)
    step = plan_mapped_delete(mapping, current)
    log.debug("push.delete", id=item.id, step=step.value)
    if step is DeleteStep.CONFLICT:
        assert current is not None
        known = ctx.record_conflict(mapping, None, current.text, "deleted locally, edited in the cloud")
        return ItemResult(done, ItemStatus.UNCHANGED if known else ItemStatus.CONFLICT)
    if not ctx.dry:
        if step is DeleteStep.DELETE_CLOUD:
            await cloud.delete(mapping.cloud_id)
        ctx.state.delete_mapping(item.id)
        ctx.state.clear_intent(item.id)
    ctx.record("delete", item.id, mapping.base_text if mapping.level else None, "deleted locally", mapping.cloud_id)
    return ItemResult(done, ItemStatus.DELETED)
