"""Pure sync decisions: levels, queue coalescing, three-way merge, push/pull/reconcile/resolve plans.

No sockets, files, SQLite or clocks in here: every function takes plain dataclasses
and returns a decision, so each branch of SPEC 4 is testable in isolation.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memsyncd.ids import id_problem
from memsyncd.models import (
    CloudMemory,
    Conflict,
    LocalMemory,
    Mapping,
    MergeOutcome,
    PushIntent,
    QueueEntry,
    WorkItem,
)
from memsyncd.wire import Keep

PRIVATE_LEVEL = 0


def parse_level(value: Any) -> int | None:
    """Read a level from metadata or a queue entry.

    Returns None when unset; a value that is set but not a non-negative integer is
    taken as 0 (private): an unreadable level must never widen who sees a memory.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return PRIVATE_LEVEL
    if isinstance(value, int):
        return value if value >= 0 else PRIVATE_LEVEL
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return PRIVATE_LEVEL


def effective_level(entry_level: int | None, metadata: MappingABC[str, Any] | None, default_level: int) -> int:
    """The lowest of the queue entry's level and the memory's ``metadata.level``; else the default."""
    levels = [lvl for lvl in (parse_level(entry_level), parse_level((metadata or {}).get("level"))) if lvl is not None]
    return min(levels) if levels else default_level


def queued_level(pending: Iterable[QueueEntry], memory_id: str) -> int | None:
    """The lowest level any pending queue entry of ``memory_id`` carries (None when none sets one)."""
    levels = [lvl for lvl in (parse_level(e.level) for e in pending if e.id == memory_id) if lvl is not None]
    return min(levels) if levels else None


def current_level(queued: int | None, metadata: MappingABC[str, Any] | None, mapping_level: int | None,
                  default_level: int) -> int:
    """The level that decides whether local text may be sent now, outside a push (resolution, adoption).

    The lowest of the pending queue entries' level, the local memory's current ``metadata.level``
    and the level the last sync recorded on the mapping (0 once a push found the memory private;
    only a later push, which reads the queue and the metadata, raises it again). With none of
    them set: ``default_level``. Nothing the cloud says (its ``level``, ``memsync_device`` or
    ``memsync_local_id``) takes part: the cloud can never make a local memory less private.
    """
    levels = [lvl for lvl in (parse_level(queued), parse_level((metadata or {}).get("level")),
                              parse_level(mapping_level)) if lvl is not None]
    return min(levels) if levels else default_level


def coalesce(pending: Iterable[QueueEntry]) -> list[WorkItem]:
    """Group queue entries by id; the latest entry's action wins (SPEC 3).

    A ``delete`` after a ``push`` means delete; a ``push`` after a ``delete`` means
    push (a push of a memory gone locally is dropped later). The level is the lowest
    level any of the entries carried. Items come out in timestamp order of their
    newest entry, so work happens in the order it was written.
    """
    groups: dict[str, list[QueueEntry]] = {}
    for entry in pending:
        groups.setdefault(entry.id, []).append(entry)
    items: list[WorkItem] = []
    for memory_id, entries in groups.items():
        ordered = tuple(sorted(entries, key=lambda e: e.moment))
        levels = [lvl for lvl in (parse_level(e.level) for e in ordered) if lvl is not None]
        items.append(
            WorkItem(id=memory_id, action=ordered[-1].action, level=min(levels) if levels else None, entries=ordered)
        )
    items.sort(key=lambda item: item.entries[-1].moment)
    return items


def merge3(base: str | None, local: str | None, cloud: str | None) -> MergeOutcome:
    """Three-way comparison of content hashes against the merge base.

    Args:
        base: hash both sides had at the last sync.
        local: current local hash.
        cloud: current cloud hash.
    """
    if local == cloud:
        return MergeOutcome.IDENTICAL
    if cloud == base:
        return MergeOutcome.LOCAL_NEWER
    if local == base:
        return MergeOutcome.REMOTE_NEWER
    return MergeOutcome.CONFLICT


class PushStep(enum.Enum):
    """What to do with one coalesced queue item, decided from the local side."""

    SKIP_PRIVATE = "skip_private"  # level 0: never leaves the machine
    DROP_INVALID = "drop_invalid"  # an id no memory can have (a hand-edited or hostile queue file)
    DROP_GONE = "drop_gone"  # push of a memory that no longer exists locally
    KEEP_CLOUD_COPY = "keep_cloud_copy"  # a queued delete of a memory that is still there locally
    DROP_UNMAPPED = "drop_unmapped"  # delete of a memory that never reached the cloud
    DELETE_CLOUD = "delete_cloud"
    RESOLVE_INTENT = "resolve_intent"  # an earlier create may have landed: look before creating
    CREATE_CLOUD = "create_cloud"
    CHECK_CLOUD = "check_cloud"  # mapped: compare with the cloud copy first


@dataclass(frozen=True)
class PushPlan:
    """The first push decision for one work item."""

    step: PushStep
    level: int
    reason: str


def needs_local_read(item: WorkItem) -> bool:
    """False when the local memory need not be read: an invalid id, or a push queued as level 0.

    The lowest level wins, so an entry queued with level 0 is local-only whatever the
    memory's own metadata says; reading it would only cost a request. A delete is read:
    the cloud copy goes only when the local memory is really gone (a tool's answer saying
    "DELETE" is a claim, not proof).
    """
    if id_problem(item.id) is not None:
        return False
    return item.action == "delete" or item.level != PRIVATE_LEVEL


def plan_push(
    item: WorkItem,
    local: LocalMemory | None,
    mapping: Mapping | None,
    intent: PushIntent | None,
    default_level: int,
) -> PushPlan:
    """Decide the first step for a coalesced queue item (SPEC 4, Push).

    Args:
        item: the coalesced queue work.
        local: the memory as OpenMemory has it now, None when unknown there.
        mapping: its cloud mapping, if any.
        intent: an unfinished create recorded before, if any.
        default_level: ``sync.default_level`` for memories that carry no level.
    """
    problem = id_problem(item.id)
    if problem is not None:
        return PushPlan(PushStep.DROP_INVALID, PRIVATE_LEVEL, problem)
    level = effective_level(item.level, local.metadata if local else None, default_level)
    if item.action == "delete":
        if local is not None and local.alive and (mapping is not None or intent is not None):
            return PushPlan(PushStep.KEEP_CLOUD_COPY, level, "still exists locally: the cloud copy is kept")
        if mapping is None:
            return PushPlan(PushStep.DROP_UNMAPPED, level, "never synced: nothing to delete in the cloud")
        return PushPlan(PushStep.DELETE_CLOUD, level, "deleted locally")
    if not needs_local_read(item):
        return PushPlan(PushStep.SKIP_PRIVATE, PRIVATE_LEVEL, "queued as level 0 (local-only)")
    if local is None or not local.alive:
        return PushPlan(PushStep.DROP_GONE, level, "not found locally")
    if level == PRIVATE_LEVEL:
        return PushPlan(PushStep.SKIP_PRIVATE, level, "level 0 (local-only)")
    if mapping is not None:
        return PushPlan(PushStep.CHECK_CLOUD, level, "already synced: compare with the cloud copy")
    if intent is not None:
        return PushPlan(PushStep.RESOLVE_INTENT, level, "an earlier create may have landed")
    return PushPlan(PushStep.CREATE_CLOUD, level, "new memory")


class CloudStep(enum.Enum):
    """What to do for a mapped memory once the cloud copy is known."""

    UPDATE_CLOUD = "update_cloud"
    REFRESH_BASE = "refresh_base"  # both sides already equal
    NOTHING = "nothing"  # only the cloud changed: the pull brings it down
    CONFLICT = "conflict"
    CONFLICT_CLOUD_DELETED = "conflict_cloud_deleted"  # edited here, deleted in the cloud
    CLOUD_DELETED = "cloud_deleted"  # deleted in the cloud, unchanged here: reconcile deletes locally


def plan_mapped_push(local: LocalMemory, mapping: Mapping, cloud: CloudMemory | None) -> CloudStep:
    """Three-way check for a mapped memory with a pending push."""
    if cloud is None:
        return CloudStep.CLOUD_DELETED if local.hash == mapping.base_hash else CloudStep.CONFLICT_CLOUD_DELETED
    outcome = merge3(mapping.base_hash, local.hash, cloud.hash)
    return {
        MergeOutcome.IDENTICAL: CloudStep.REFRESH_BASE,
        MergeOutcome.LOCAL_NEWER: CloudStep.UPDATE_CLOUD,
        MergeOutcome.REMOTE_NEWER: CloudStep.NOTHING,
        MergeOutcome.CONFLICT: CloudStep.CONFLICT,
    }[outcome]


class DeleteStep(enum.Enum):
    """What a queued local delete does to a mapped cloud memory."""

    DELETE_CLOUD = "delete_cloud"  # cloud unchanged since the base
    ALREADY_GONE = "already_gone"  # deleted on both sides
    CONFLICT = "conflict"  # deleted here, edited in the cloud: the user decides


def plan_mapped_delete(mapping: Mapping, cloud: CloudMemory | None) -> DeleteStep:
    """A local delete never silently discards a cloud edit made since the last sync."""
    if cloud is None:
        return DeleteStep.ALREADY_GONE
    return DeleteStep.DELETE_CLOUD if cloud.hash == mapping.base_hash else DeleteStep.CONFLICT


class PullStep(enum.Enum):
    """What to do with one cloud memory seen by a pull."""

    ECHO = "echo"  # our own write coming back, or nothing new
    UPDATE_LOCAL = "update_local"
    REFRESH_BASE = "refresh_base"
    CONFLICT = "conflict"
    CONFLICT_LOCAL_DELETED = "conflict_local_deleted"  # deleted here, edited in the cloud
    ADOPT = "adopt"  # the same memory exists locally: just record the mapping
    SKIP_PRIVATE = "skip_private"  # it matches a local-only memory: neither adopted nor copied
    ALREADY_HERE = "already_here"  # another scope's copy of a memory synced here with the same text: not copied
    CREATE_LOCAL = "create_local"


def plan_pull(
    cloud: CloudMemory,
    mapping: Mapping | None,
    local: LocalMemory | None,
    adoptable: LocalMemory | None = None,
    adoptable_level: int | None = None,
    copy_of_synced: bool = False,
) -> PullStep:
    """Decide what a pulled cloud memory means locally (SPEC 4, Pull).

    A cloud memory is never adopted onto a local-only (level 0) memory: a mapping is what lets a
    resolution or a push send local text to that cloud memory, and the claim that it is "the same
    memory" (``memsync_local_id``, ``memsync_device``, an equal hash) comes from the cloud. It is
    not copied either (its text is already here, or it names a memory that is kept private).

    Args:
        cloud: the cloud memory.
        mapping: its mapping, if any.
        local: the mapped local memory (None when mapped but gone locally).
        adoptable: for an unmapped memory, the local memory that is the same one
            (pushed from this device, or with an identical content hash).
        adoptable_level: that local memory's current level (:func:`current_level`); None: unknown,
            taken as private.
        copy_of_synced: for an unmapped memory, its ``memsync_local_id`` names a local memory this
            root already syncs with another cloud memory, whose merge base has this text (a root on
            a wider mem0 scope lists the copies a narrower root pushed): copying it would be a
            second local memory with the same text.
    """
    if mapping is None:
        if adoptable is None:
            return PullStep.ALREADY_HERE if copy_of_synced else PullStep.CREATE_LOCAL
        if adoptable_level is None or adoptable_level == PRIVATE_LEVEL:
            return PullStep.SKIP_PRIVATE
        return PullStep.ADOPT
    if cloud.hash == mapping.base_hash:
        return PullStep.ECHO
    if local is None or not local.alive:
        return PullStep.CONFLICT_LOCAL_DELETED
    outcome = merge3(mapping.base_hash, local.hash, cloud.hash)
    return {
        MergeOutcome.IDENTICAL: PullStep.REFRESH_BASE,
        MergeOutcome.REMOTE_NEWER: PullStep.UPDATE_LOCAL,
        MergeOutcome.LOCAL_NEWER: PullStep.ECHO,  # cannot happen: cloud != base here
        MergeOutcome.CONFLICT: PullStep.CONFLICT,
    }[outcome]


def cloud_level(metadata: MappingABC[str, Any]) -> int:
    """Level for a memory that came from the cloud: never private (it is already shared)."""
    level = parse_level(metadata.get("level"))
    return level if level is not None and level > PRIVATE_LEVEL else 1


@dataclass(frozen=True)
class ReconcilePlan:
    """Local deletions (and conflicts) for memories deleted in the cloud."""

    delete_local: tuple[Mapping, ...]
    conflicts: tuple[Mapping, ...]
    forget: tuple[Mapping, ...]  # gone on both sides: just drop the mapping
    refused: bool
    reason: str


def plan_reconcile(
    mappings: Iterable[Mapping],
    cloud_ids: set[str],
    local_hashes: MappingABC[str, str | None],
    max_delete_fraction: float,
) -> ReconcilePlan:
    """Decide what to do with mapped memories missing from the cloud (SPEC 4, Cloud deletions).

    Args:
        mappings: every mapped pair.
        cloud_ids: ids the cloud listing returned.
        local_hashes: local id -> current hash, None when gone locally.
        max_delete_fraction: refuse when more than this share of mapped memories would go.
    """
    all_maps = list(mappings)
    missing = [m for m in all_maps if m.cloud_id not in cloud_ids]
    delete: list[Mapping] = []
    conflicts: list[Mapping] = []
    forget: list[Mapping] = []
    for mapping in missing:
        current = local_hashes.get(mapping.local_id)
        if current is None:
            forget.append(mapping)
        elif current == mapping.base_hash:
            delete.append(mapping)
        else:
            conflicts.append(mapping)
    if all_maps and len(delete) > max_delete_fraction * len(all_maps):
        return ReconcilePlan(
            (), (), tuple(forget), True,
            f"{len(delete)} of {len(all_maps)} synced memories are missing in the cloud; more than "
            f"sync.max_delete_fraction={max_delete_fraction:g}: refusing to delete them locally",
        )
    return ReconcilePlan(tuple(delete), tuple(conflicts), tuple(forget), False, "")


def reconcile_candidates(plan: ReconcilePlan) -> tuple[Mapping, ...]:
    """The pairs a reconcile plan would act on; each one's cloud memory must be confirmed gone first.

    A memory missing from a paged listing may only have shifted onto a page already read (memories
    deleted meanwhile move the later ones up), so missing from a listing is a suspicion, never proof.
    A refused plan acts on no deletion, so those are not confirmed (a mass deletion costs no request).
    """
    return plan.delete_local + plan.conflicts + plan.forget


def confirmed_reconcile(plan: ReconcilePlan, gone: set[str]) -> ReconcilePlan:
    """The plan kept to the pairs whose cloud memory is confirmed gone (a GET by id answered not found).

    Args:
        plan: what :func:`plan_reconcile` decided from the listing.
        gone: cloud ids confirmed not to exist; a candidate not in it still exists and is left alone.
    """

    def kept(mappings: tuple[Mapping, ...]) -> tuple[Mapping, ...]:
        return tuple(m for m in mappings if m.cloud_id in gone)

    return ReconcilePlan(kept(plan.delete_local), kept(plan.conflicts), kept(plan.forget), plan.refused, plan.reason)


def listing_complete(page_counts: Iterable[int | None], cut_short: bool) -> bool:
    """True when a paged cloud listing cannot have skipped a memory.

    Pages are read by number, so a memory deleted (or added) on a page already read moves the
    later ones across page boundaries; one may never be listed. Every page states the listing's
    total count: when they all agree and no page went missing (``cut_short``: a page number the
    shrunken listing no longer has), nothing moved between the requests. A page without a count
    proves nothing either way and is not held against the listing.

    Args:
        page_counts: the total each page of the listing announced (None: no count in that answer).
        cut_short: the listing ended on a page that no longer existed.
    """
    return not cut_short and len({c for c in page_counts if c is not None}) <= 1


def next_pull_cursor(cursor: datetime | None, newest: datetime | None, *, errors: int,
                     complete: bool) -> datetime | None:
    """The pull cursor to store after a pull, or None to keep the stored one.

    The cursor moves to the newest update seen only when every change was applied (``errors``
    is 0) and the listing was complete (:func:`listing_complete`); otherwise the next pull lists
    from the old cursor again (memories it already has are echoes and cost no local write).
    """
    if errors or not complete or newest is None or newest == cursor:
        return None
    return newest


@dataclass(frozen=True)
class Resolution:
    """The writes that resolve one conflict.

    ``local_text``/``cloud_text``: the text each side of the existing pair must end
    with (None: delete that side). ``extra_text``: for ``both``, the second version,
    to be created as a new memory on both sides.

    ``local_only``: the memory is local-only (level 0) now, so the cloud side is left exactly
    as it is (``cloud_text`` is what it holds) and nothing at all is sent to the cloud.
    ``split_cloud`` (``both``, local-only): the cloud's version becomes a new local memory,
    paired with the existing cloud memory; the private memory keeps its text and its pair ends.
    """

    local_text: str | None
    cloud_text: str | None
    extra_text: str | None = None
    local_only: bool = False
    split_cloud: bool = False

    @property
    def writes_cloud(self) -> bool:
        """True when resolving may send anything to the cloud (never for a local-only memory)."""
        return not self.local_only


def plan_resolution(conflict: Conflict, keep: Keep, text: str | None = None, *, level: int = 1) -> Resolution:
    """Turn the user's choice into the text each side must end with (SPEC 4, Conflicts).

    Args:
        conflict: the open conflict.
        keep: the user's choice.
        text: the merged text for ``keep=text``.
        level: the memory's level now (:func:`current_level`, read when resolving). At level 0
            only the local side is written: ``local`` keeps the local text, ``cloud`` and ``text``
            write the local side, ``both`` turns the cloud version into a second local memory.
    """
    if keep is Keep.TEXT and text is None:
        raise ValueError("keep=text needs the merged text")
    if level == PRIVATE_LEVEL:
        return _plan_local_only(conflict, keep, text)
    if keep is Keep.TEXT:
        return Resolution(text, text)
    if keep is Keep.LOCAL:
        return Resolution(conflict.local_text, conflict.local_text)
    if keep is Keep.CLOUD:
        return Resolution(conflict.cloud_text, conflict.cloud_text)
    # both: the existing pair keeps the local version; the cloud version becomes a new pair.
    if conflict.local_text is None or conflict.cloud_text is None:
        survivor = conflict.local_text if conflict.local_text is not None else conflict.cloud_text
        return Resolution(survivor, survivor)
    return Resolution(conflict.local_text, conflict.local_text, extra_text=conflict.cloud_text)


def _plan_local_only(conflict: Conflict, keep: Keep, text: str | None) -> Resolution:
    """A level-0 memory's resolution: only the local side changes; the cloud copy is left as it is."""
    cloud = conflict.cloud_text
    if keep is Keep.TEXT:
        return Resolution(text, cloud, local_only=True)
    if keep is Keep.CLOUD:
        return Resolution(cloud, cloud, local_only=True)
    if keep is Keep.BOTH and conflict.local_text is not None and cloud is not None:
        return Resolution(conflict.local_text, cloud, local_only=True, split_cloud=True)
    if keep is Keep.BOTH and conflict.local_text is None:
        return Resolution(cloud, cloud, local_only=True)
    return Resolution(conflict.local_text, cloud, local_only=True)


def changed_since_recorded(conflict: Conflict, resolution: Resolution, local_now: str | None,
                           cloud_now: str | None) -> bool:
    """True when a side changed after the conflict was recorded (and not to the chosen text).

    A side that already holds the chosen text counts as unchanged, so re-running an
    interrupted resolution finishes it instead of refusing.
    """
    local_ok = local_now in (conflict.local_text, resolution.local_text)
    cloud_ok = cloud_now in (conflict.cloud_text, resolution.cloud_text)
    return not (local_ok and cloud_ok)
