"""Unit tests of the pure sync core (memsyncd.engine.decide): no I/O, no clock."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from memsyncd.engine.decide import (
    CloudStep,
    Keep,
    PullStep,
    PushStep,
    Resolution,
    cloud_level,
    coalesce,
    effective_level,
    merge3,
    needs_local_read,
    parse_level,
    plan_mapped_push,
    plan_pull,
    plan_push,
    plan_reconcile,
    plan_resolution,
)
from memsyncd.models import (
    CloudMemory,
    Conflict,
    LocalMemory,
    Mapping,
    MergeOutcome,
    PushIntent,
    QueueEntry,
    WorkItem,
    content_hash,
)

H = content_hash


def entry(memory_id: str, action: str = "push", second: int = 0, level: int | None = None) -> QueueEntry:
    return QueueEntry(memory_id, action, f"2026-01-18T10:30:{second:02d}Z", None, level)  # type: ignore[arg-type]


def item(action: str = "push", level: int | None = 1) -> WorkItem:
    return WorkItem("L1", action, level, (entry("L1", action, level=level),))  # type: ignore[arg-type]


def mapping(base: str = "base") -> Mapping:
    return Mapping("L1", "C1", H(base), base, 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, 0), (2, 2), ("3", 3), (" 1 ", 1), (-1, 0), (True, 0), ("high", 0), (1.5, 0), ([], 0)],
)
def test_parse_level_never_widens(value: object, expected: int | None) -> None:
    """Unset stays None; anything unreadable is private (0)."""
    assert parse_level(value) == expected


@pytest.mark.parametrize(
    ("entry_level", "meta", "default", "expected"),
    [
        (None, {}, 0, 0),
        (None, {}, 1, 1),
        (2, {}, 0, 2),
        (None, {"level": 2}, 0, 2),
        (2, {"level": 1}, 0, 1),
        (1, {"level": 0}, 2, 0),
        (0, {"level": 2}, 2, 0),
        (2, {"level": "bogus"}, 2, 0),
        (3, None, 0, 3),
    ],
)
def test_effective_level_is_the_lowest(entry_level: int | None, meta: dict | None, default: int,
                                       expected: int) -> None:
    """The lowest of entry and metadata level; the default only when neither is set."""
    assert effective_level(entry_level, meta, default) == expected


def test_coalesce_latest_wins_and_delete_after_push_means_delete() -> None:
    """Entries for one id merge; the newest action wins; items come in time order."""
    items = coalesce([entry("a", "push", 1), entry("b", "push", 2), entry("a", "delete", 3), entry("c", "push", 0)])
    assert [(i.id, i.action) for i in items] == [("c", "push"), ("b", "push"), ("a", "delete")]
    assert len(items[2].entries) == 2


def test_coalesce_push_after_delete_is_push_and_keeps_lowest_level() -> None:
    """A later push wins over a delete; the group's level is the lowest any entry had."""
    (only,) = coalesce([entry("a", "delete", 1, level=2), entry("a", "push", 5, level=1), entry("a", "push", 4)])
    assert only.action == "push" and only.level == 1
    assert [e.timestamp[-3:-1] for e in only.entries] == ["01", "04", "05"]


@pytest.mark.parametrize(("base", "local", "cloud"), list(itertools.product("abc", repeat=3)))
def test_merge3_every_combination(base: str, local: str, cloud: str) -> None:
    """Exhaustive over three symbols: identical, one side changed, or a conflict."""
    outcome = merge3(base, local, cloud)
    if local == cloud:
        assert outcome is MergeOutcome.IDENTICAL
    elif cloud == base:
        assert outcome is MergeOutcome.LOCAL_NEWER
    elif local == base:
        assert outcome is MergeOutcome.REMOTE_NEWER
    else:
        assert outcome is MergeOutcome.CONFLICT


def test_merge3_without_base_and_different_sides_is_conflict() -> None:
    """No base and two different texts: never silently pick one."""
    assert merge3(None, H("x"), H("y")) is MergeOutcome.CONFLICT


LOCAL = LocalMemory("L1", "text", metadata={"level": 1})


@pytest.mark.parametrize(
    ("work", "local", "mapped", "intent", "step"),
    [
        (item("delete"), None, False, None, PushStep.DROP_UNMAPPED),
        (item("delete"), None, True, None, PushStep.DELETE_CLOUD),
        (item("push"), None, False, None, PushStep.DROP_GONE),
        (item("push"), LocalMemory("L1", "t", state="deleted"), True, None, PushStep.DROP_GONE),
        (item("push", level=0), LOCAL, False, None, PushStep.SKIP_PRIVATE),
        (item("push", level=0), LOCAL, True, None, PushStep.SKIP_PRIVATE),
        (item("push", level=None), LocalMemory("L1", "t"), False, None, PushStep.SKIP_PRIVATE),
        (item("push", level=2), LocalMemory("L1", "t", metadata={"level": 0}), False, None, PushStep.SKIP_PRIVATE),
        (item("push"), LOCAL, True, None, PushStep.CHECK_CLOUD),
        (item("push"), LOCAL, False, PushIntent("L1", "h", "2026-01-01T00:00:00Z"), PushStep.RESOLVE_INTENT),
        (item("push"), LOCAL, False, None, PushStep.CREATE_CLOUD),
    ],
)
def test_plan_push(work: WorkItem, local: LocalMemory | None, mapped: bool, intent: PushIntent | None,
                   step: PushStep) -> None:
    """Every first push step, including level 0 winning over any mapping or entry level."""
    assert plan_push(work, local, mapping() if mapped else None, intent, default_level=0).step is step


def test_entry_queued_as_level_0_needs_no_local_read() -> None:
    """Lowest level wins: a push queued with level 0 is skipped before (and without) reading the memory."""
    assert not needs_local_read(item("push", level=0))
    assert needs_local_read(item("delete"))  # a delete is checked against the local memory first
    assert needs_local_read(item("push", level=None)) and needs_local_read(item("push", level=2))
    plan = plan_push(item("push", level=0), None, mapping(), None, default_level=1)
    assert plan.step is PushStep.SKIP_PRIVATE and plan.level == 0


def test_plan_push_default_level_applies_when_nothing_set() -> None:
    """With default_level 1 an unlabelled memory is pushed."""
    plan = plan_push(item("push", level=None), LocalMemory("L1", "t"), None, None, default_level=1)
    assert plan.step is PushStep.CREATE_CLOUD and plan.level == 1


@pytest.mark.parametrize(
    ("local_text", "cloud_text", "step"),
    [
        ("base", "base", CloudStep.REFRESH_BASE),
        ("new", "base", CloudStep.UPDATE_CLOUD),
        ("base", "cloud edit", CloudStep.NOTHING),
        ("same", "same", CloudStep.REFRESH_BASE),
        ("mine", "theirs", CloudStep.CONFLICT),
        ("base", None, CloudStep.CLOUD_DELETED),
        ("edited", None, CloudStep.CONFLICT_CLOUD_DELETED),
    ],
)
def test_plan_mapped_push(local_text: str, cloud_text: str | None, step: CloudStep) -> None:
    """Three-way check of a mapped memory before pushing it."""
    cloud = CloudMemory("C1", cloud_text) if cloud_text is not None else None
    assert plan_mapped_push(LocalMemory("L1", local_text), mapping(), cloud) is step


@pytest.mark.parametrize(
    ("mapped", "local_text", "cloud_text", "adoptable", "step"),
    [
        (True, "anything", "base", False, PullStep.ECHO),
        (True, "base", "cloud edit", False, PullStep.UPDATE_LOCAL),
        (True, "same", "same", False, PullStep.REFRESH_BASE),
        (True, "mine", "theirs", False, PullStep.CONFLICT),
        (True, None, "theirs", False, PullStep.CONFLICT_LOCAL_DELETED),
        (False, None, "new", True, PullStep.ADOPT),
        (False, None, "new", False, PullStep.CREATE_LOCAL),
    ],
)
def test_plan_pull(mapped: bool, local_text: str | None, cloud_text: str, adoptable: bool, step: PullStep) -> None:
    """Echo, fast-forward, refresh, conflict, adopt, create."""
    local = LocalMemory("L1", local_text) if local_text is not None else None
    adopt = LocalMemory("L9", cloud_text) if adoptable else None
    level = 1 if adoptable else None  # a shared local memory (level 0 ones are never adopted: test_level0_core)
    assert plan_pull(CloudMemory("C1", cloud_text), mapping() if mapped else None, local, adopt, level) is step


def test_plan_pull_locally_soft_deleted_is_conflict() -> None:
    """A soft-deleted local copy and a cloud edit: the user decides."""
    local = LocalMemory("L1", "base", state="deleted")
    assert plan_pull(CloudMemory("C1", "edit"), mapping(), local) is PullStep.CONFLICT_LOCAL_DELETED


@pytest.mark.parametrize(("meta", "level"), [({}, 1), ({"level": 0}, 1), ({"level": 2}, 2), ({"level": "x"}, 1)])
def test_cloud_level_is_never_private(meta: dict, level: int) -> None:
    """Memories that came from the cloud are shared already."""
    assert cloud_level(meta) == level


def _maps(n: int) -> list[Mapping]:
    return [Mapping(f"L{i}", f"C{i}", H(f"t{i}"), f"t{i}") for i in range(n)]


def test_plan_reconcile_deletes_unchanged_and_conflicts_edited() -> None:
    """Missing in the cloud: unchanged local -> delete; edited local -> conflict; gone -> forget."""
    maps = _maps(20)
    hashes = {m.local_id: m.base_hash for m in maps}
    hashes["L1"] = H("edited")
    hashes["L2"] = None
    present = {m.cloud_id for m in maps} - {"C0", "C1", "C2"}
    plan = plan_reconcile(maps, present, hashes, max_delete_fraction=0.1)
    assert not plan.refused
    assert [m.local_id for m in plan.delete_local] == ["L0"]
    assert [m.local_id for m in plan.conflicts] == ["L1"]
    assert [m.local_id for m in plan.forget] == ["L2"]


def test_plan_reconcile_refuses_mass_deletion() -> None:
    """More than max_delete_fraction would go: delete nothing and say why."""
    maps = _maps(10)
    hashes = {m.local_id: m.base_hash for m in maps}
    plan = plan_reconcile(maps, {"C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"}, hashes, max_delete_fraction=0.1)
    assert plan.refused and not plan.delete_local and "2 of 10" in plan.reason


CONFLICT = Conflict(1, "L1", "C1", "base", "mine", "theirs", "edited on both sides", "2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("keep", "text", "local", "cloud", "extra"),
    [
        (Keep.LOCAL, None, "mine", "mine", None),
        (Keep.CLOUD, None, "theirs", "theirs", None),
        (Keep.BOTH, None, "mine", "mine", "theirs"),
        (Keep.TEXT, "merged", "merged", "merged", None),
    ],
)
def test_plan_resolution(keep: Keep, text: str | None, local: str, cloud: str, extra: str | None) -> None:
    """Each choice writes one text to both sides; both keeps the second version as a new pair."""
    assert plan_resolution(CONFLICT, keep, text) == Resolution(local, cloud, extra)


def test_plan_resolution_of_a_deletion() -> None:
    """Deleted in the cloud: keep cloud deletes locally; keep both keeps the surviving text."""
    gone = Conflict(2, "L1", "C1", "base", "mine", None, "edited locally, deleted in the cloud", "t")
    assert plan_resolution(gone, Keep.CLOUD).local_text is None
    both = plan_resolution(gone, Keep.BOTH)
    assert (both.local_text, both.cloud_text, both.extra_text) == ("mine", "mine", None)


def test_plan_resolution_text_requires_text() -> None:
    """keep=text without a text is a programming error."""
    with pytest.raises(ValueError, match="merged text"):
        plan_resolution(CONFLICT, Keep.TEXT)


@pytest.mark.parametrize(
    ("local_now", "cloud_now", "changed"),
    [
        ("mine", "theirs", False),  # as recorded
        ("mine", "mine", False),  # keep=local half-applied earlier: finish it
        ("mine again", "theirs", True),  # edited locally after it was listed
        ("mine", "theirs 2", True),  # edited in the cloud after it was listed
        (None, "theirs", True),  # deleted locally after it was listed
    ],
)
def test_changed_since_recorded(local_now: str | None, cloud_now: str | None, changed: bool) -> None:
    """A resolution only writes when both sides are as recorded, or already hold the chosen text."""
    from memsyncd.engine.decide import changed_since_recorded

    assert changed_since_recorded(CONFLICT, plan_resolution(CONFLICT, Keep.LOCAL), local_now, cloud_now) is changed


@pytest.mark.parametrize(("cloud_text", "step"), [("base", "delete_cloud"), (None, "already_gone"),
                                                  ("edited", "conflict")])
def test_plan_mapped_delete_never_discards_a_cloud_edit(cloud_text: str | None, step: str) -> None:
    """A local delete of a memory edited in the cloud since the base is a conflict."""
    from memsyncd.engine.decide import plan_mapped_delete

    cloud = CloudMemory("C1", cloud_text) if cloud_text is not None else None
    assert plan_mapped_delete(mapping(), cloud).value == step


def test_reconcile_candidates_are_every_pair_the_plan_acts_on_and_only_confirmed_ones_stay() -> None:
    """Missing from a listing is a suspicion: the plan keeps only the pairs whose cloud memory is confirmed gone."""
    from memsyncd.engine.decide import confirmed_reconcile, reconcile_candidates

    maps = _maps(20)
    hashes: dict[str, str | None] = {m.local_id: m.base_hash for m in maps}
    hashes["L1"], hashes["L2"] = H("edited"), None
    listed = plan_reconcile(maps, {m.cloud_id for m in maps[3:]}, hashes, max_delete_fraction=0.1)
    assert {m.cloud_id for m in reconcile_candidates(listed)} == {"C0", "C1", "C2"}
    assert confirmed_reconcile(listed, {"C0", "C1", "C2"}) == listed
    none = confirmed_reconcile(listed, set())  # all three were only shifted in the listing: nothing happens
    assert (none.delete_local, none.conflicts, none.forget, none.refused) == ((), (), (), False)
    some = confirmed_reconcile(listed, {"C1"})
    assert (some.delete_local, [m.local_id for m in some.conflicts], some.forget) == ((), ["L1"], ())


def test_a_refused_reconcile_confirms_no_deletion_and_stays_refused() -> None:
    """A mass deletion is refused from the listing alone: no deletion is a candidate (no GET spent on it)."""
    from memsyncd.engine.decide import confirmed_reconcile, reconcile_candidates

    maps = _maps(10)
    hashes: dict[str, str | None] = {m.local_id: m.base_hash for m in maps}
    hashes["L9"] = None
    listed = plan_reconcile(maps, {"C0", "C1", "C2", "C3", "C4", "C5"}, hashes, max_delete_fraction=0.1)
    assert listed.refused and [m.local_id for m in reconcile_candidates(listed)] == ["L9"]
    confirmed = confirmed_reconcile(listed, {"C9"})
    assert confirmed.refused and confirmed.reason == listed.reason and [m.local_id for m in confirmed.forget] == ["L9"]


@pytest.mark.parametrize(
    ("counts", "cut_short", "complete"),
    [
        ([], False, True),  # nothing listed
        ([250], False, True),
        ([250, 250, 250], False, True),
        ([300, 295, 295], False, False),  # deleted while paging
        ([300, 301], False, False),  # added while paging
        ([300, 300], True, False),  # the last page went missing: the listing shrank
        ([None, None], False, True),  # no counts: nothing to hold against it
        ([300, None, 300], False, True),
        ([300, None, 299], False, False),
    ],
)
def test_listing_complete(counts: list[int | None], cut_short: bool, complete: bool) -> None:
    from memsyncd.engine.decide import listing_complete

    assert listing_complete(counts, cut_short) is complete


@pytest.mark.parametrize(
    ("cursor", "newest", "errors", "complete", "stored"),
    [
        (None, None, 0, True, None),  # nothing seen
        (None, "2026-01-02", 0, True, "2026-01-02"),
        ("2026-01-01", "2026-01-02", 0, True, "2026-01-02"),
        ("2026-01-02", "2026-01-02", 0, True, None),  # unchanged: no write
        ("2026-01-01", "2026-01-02", 1, True, None),  # a change not applied: list it again
        ("2026-01-01", "2026-01-02", 0, False, None),  # the listing moved: a memory may be unseen
        (None, "2026-01-02", 0, False, None),
    ],
)
def test_next_pull_cursor(cursor: str | None, newest: str | None, errors: int, complete: bool,
                          stored: str | None) -> None:
    from memsyncd.engine.decide import next_pull_cursor
    from memsyncd.models import parse_ts

    def ts(value: str | None) -> datetime | None:
        return parse_ts(value + "T00:00:00Z") if value else None

    assert next_pull_cursor(ts(cursor), ts(newest), errors=errors, complete=complete) == ts(stored)
