"""Pure decisions of the local scans: which listed memory is new or edited, the level rules, the delete guard.

No sockets, files, SQLite or clocks: the scan (:mod:`memsyncd.engine.scan`) lists OpenMemory,
looks up mappings and hands plain dataclasses here. What each OpenMemory state means:

* ``active``: synced (new → created in the cloud, edited → the cloud copy is updated);
* ``paused`` / ``archived``: no change in the cloud (the cloud copy stays as it was; a new
  paused or archived memory is not pushed until it is active again);
* ``deleted`` (or gone): a synced memory's cloud copy is deleted, under the max-delete guard.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Protocol

from memsyncd.engine.decide import PRIVATE_LEVEL, effective_level
from memsyncd.models import LocalMemory, Mapping, QueueEntry

ACTIVE = "active"
SCAN_SOURCE = "scan"  # QueueEntry.extra["source"] of the synthetic entries a scan makes


def is_scan_entry(entry: QueueEntry) -> bool:
    """True for a synthetic entry made by a scan (it is not in the queue file)."""
    return entry.extra.get("source") == SCAN_SOURCE


class Rule(Protocol):
    """A selective-sync rule (``config.SyncRule``): a cap on the level of matching memories."""

    @property
    def app(self) -> str | None: ...
    @property
    def category(self) -> str | None: ...
    @property
    def level(self) -> int: ...


def rule_level(memory: LocalMemory, rules: Sequence[Rule]) -> int | None:
    """The lowest level of the rules that match ``memory`` (by the app that wrote it and its categories).

    A rule names an ``app`` and/or a ``category``; both must match when both are given.
    App names compare case-insensitively (OpenMemory clients name themselves "Cursor", "cursor").
    Returns None when no rule matches.
    """
    found: int | None = None
    app = (memory.app or "").casefold()
    categories = {c.casefold() for c in memory.categories}
    for rule in rules:
        if rule.app is not None and rule.app.casefold() != app:
            continue
        if rule.category is not None and rule.category.casefold() not in categories:
            continue
        found = rule.level if found is None else min(found, rule.level)
    return found


def capped_level(level: int | None, memory: LocalMemory, rules: Sequence[Rule]) -> int | None:
    """``level`` lowered to what the matching rules allow (None stays None when no rule matches)."""
    cap = rule_level(memory, rules)
    if cap is None:
        return level
    return cap if level is None else min(level, cap)


def scan_level(memory: LocalMemory, default_level: int, rules: Sequence[Rule]) -> int:
    """The effective level of a memory found by a scan (no queue entry): ``metadata.level`` else the default,
    capped by the rules."""
    level = effective_level(None, memory.metadata, default_level)
    capped = capped_level(level, memory, rules)
    return level if capped is None else capped


class Found(enum.Enum):
    """What a scan makes of one listed local memory."""

    NOTHING = "nothing"
    NEW = "new"  # never synced: push (create, or adopt an identical cloud copy)
    EDITED = "edited"  # synced, text changed since the merge base: push (three-way check)


def classify(memory: LocalMemory, mapping: Mapping | None, *, default_level: int, rules: Sequence[Rule],
             local_only: bool = False, in_conflict: bool = False) -> Found:
    """Decide whether a listed memory is a local change the push must see.

    Args:
        memory: the memory as the listing shows it.
        mapping: its cloud mapping, if any.
        default_level: ``sync.default_level``.
        rules: ``sync.rules``.
        local_only: it was queued as level 0 before (the queue's level wins over the default).
        in_conflict: it has an open conflict (the user decides; pushing again changes nothing).
    """
    if memory.state != ACTIVE:
        return Found.NOTHING  # paused / archived: no change in the cloud; deleted: see missing_mapped
    if mapping is None:
        if isinstance(memory.metadata.get("memsync_cloud_id"), str):
            return Found.NOTHING  # written by our pull (its mapping may be one page behind): never an echo
        if local_only or scan_level(memory, default_level, rules) == PRIVATE_LEVEL:
            return Found.NOTHING  # local-only: not even its id goes anywhere
        return Found.NEW
    if mapping.level == PRIVATE_LEVEL or in_conflict or memory.hash == mapping.base_hash:
        return Found.NOTHING
    return Found.EDITED


def missing_mapped(mapped_ids: Iterable[str], listed_ids: set[str]) -> list[str]:
    """Mapped local ids a complete listing did not return (deletion candidates, still to be confirmed)."""
    return [local_id for local_id in mapped_ids if local_id not in listed_ids]


def delete_guard(deleting: int, mapped: int, max_fraction: float) -> str:
    """The refusal text when ``deleting`` of ``mapped`` synced memories is more than ``max_fraction``; else ""."""
    if deleting and mapped and deleting > max_fraction * mapped:
        return (f"{deleting} of {mapped} synced memories were deleted locally; more than "
                f"sync.max_delete_fraction={max_fraction:g}: their cloud copies were not deleted")
    return ""
