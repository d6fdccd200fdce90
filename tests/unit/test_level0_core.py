"""The pure decisions behind "level 0 holds through every path" and "no silent drop" (engine/decide.py, ids.py)."""

from __future__ import annotations

from typing import Any

import pytest

from memsyncd.engine.decide import (
    Keep,
    PullStep,
    PushStep,
    Resolution,
    current_level,
    plan_pull,
    plan_push,
    plan_resolution,
    queued_level,
)
from memsyncd.ids import path_segment
from memsyncd.models import CloudMemory, Conflict, LocalMemory, Mapping, QueueEntry, WorkItem

CONFLICT = Conflict(1, "L1", "C1", "base", "private local", "cloud edit", "edited on both sides", "t")
STAMP = "2026-01-18T10:30:00Z"


def entry(memory_id: str, level: int | None) -> QueueEntry:
    return QueueEntry(memory_id, "push", STAMP, level=level)


@pytest.mark.parametrize(("queued", "metadata", "mapping_level", "default", "expected"), [
    (None, {}, None, 0, 0),  # nothing known: the default
    (None, {}, None, 1, 1),
    (None, {"level": 0}, 1, 1, 0),  # re-marked private: the metadata wins over the mapping's old level
    (None, {"level": 2}, 0, 1, 0),  # a push found it private: only a push raises it again
    (0, {"level": 3}, 3, 1, 0),  # a pending 'enqueue --level 0'
    (None, {}, 1, 0, 1),  # synced at level 1 through a queue entry, no metadata: stays shared
    (None, {"level": "garbage"}, 2, 1, 0),  # unreadable level: private
    (2, {"level": 1}, None, 0, 1),  # the lowest wins
])
def test_current_level(queued: int | None, metadata: dict[str, Any], mapping_level: int | None, default: int,
                       expected: int) -> None:
    assert current_level(queued, metadata, mapping_level, default) == expected


def test_queued_level_is_the_lowest_of_the_ids_entries() -> None:
    pending = [entry("A", 2), entry("B", 0), entry("A", 1), entry("A", None)]
    assert queued_level(pending, "A") == 1 and queued_level(pending, "B") == 0 and queued_level(pending, "C") is None


@pytest.mark.parametrize(("keep", "text", "expected"), [
    (Keep.LOCAL, None, Resolution("private local", "cloud edit", local_only=True)),
    (Keep.TEXT, "merged", Resolution("merged", "cloud edit", local_only=True)),
    (Keep.CLOUD, None, Resolution("cloud edit", "cloud edit", local_only=True)),
    (Keep.BOTH, None, Resolution("private local", "cloud edit", local_only=True, split_cloud=True)),
])
def test_a_level0_resolution_never_changes_the_cloud_side(keep: Keep, text: str | None,
                                                           expected: Resolution) -> None:
    """At level 0 the cloud side ends with what it holds now (its text is never replaced by local text)."""
    plan = plan_resolution(CONFLICT, keep, text, level=0)
    assert plan == expected
    assert plan.cloud_text == CONFLICT.cloud_text and not plan.writes_cloud and plan.extra_text is None


@pytest.mark.parametrize("keep", list(Keep))
@pytest.mark.parametrize(("local", "cloud"), [("private local", None), (None, "cloud edit"),
                                              ("private local", "cloud edit")])
def test_no_level0_resolution_puts_local_text_in_the_cloud(keep: Keep, local: str | None,
                                                           cloud: str | None) -> None:
    """Every choice, every shape of conflict (deleted on either side): the cloud text stays the cloud's own."""
    conflict = Conflict(1, "L1", "C1", "base", local, cloud, "r", "t")
    plan = plan_resolution(conflict, keep, "merged" if keep is Keep.TEXT else None, level=0)
    assert plan.local_only and plan.cloud_text == cloud and plan.extra_text is None


@pytest.mark.parametrize("level", [1, 2])
def test_a_shared_resolution_writes_both_sides(level: int) -> None:
    """Control: at level >= 1, keep local writes the local text to both sides, as before."""
    assert plan_resolution(CONFLICT, Keep.LOCAL, level=level) == Resolution("private local", "private local")


@pytest.mark.parametrize(("level", "step"), [(None, PullStep.SKIP_PRIVATE), (0, PullStep.SKIP_PRIVATE),
                                             (1, PullStep.ADOPT), (3, PullStep.ADOPT)])
def test_adoption_only_onto_a_shared_local_memory(level: int | None, step: PullStep) -> None:
    """A cloud memory is never paired with a local-only memory (unknown level counts as private)."""
    assert plan_pull(CloudMemory("C1", "t"), None, None, LocalMemory("L1", "t"), level) is step


def test_no_adoptable_memory_is_created_locally() -> None:
    assert plan_pull(CloudMemory("C1", "t"), None, None, None, None) is PullStep.CREATE_LOCAL


def work(memory_id: str, action: str = "push", level: int | None = 1) -> WorkItem:
    raw = QueueEntry(memory_id, action, STAMP, level=level)  # type: ignore[arg-type]
    return WorkItem(memory_id, action, level, (raw,))  # type: ignore[arg-type]


MAPPED = Mapping("L1", "C1", "h", "t", 1)


@pytest.mark.parametrize(("item", "local", "mapping", "step"), [
    (work("../../etc/passwd"), None, None, PushStep.DROP_INVALID),
    (work("M1?x=1", "delete"), None, MAPPED, PushStep.DROP_INVALID),
    (work("L1"), None, None, PushStep.DROP_GONE),  # reported as "not found locally"
    (work("L1", "delete"), LocalMemory("L1", "still here"), MAPPED, PushStep.KEEP_CLOUD_COPY),
    (work("L1", "delete"), LocalMemory("L1", "gone", state="deleted"), MAPPED, PushStep.DELETE_CLOUD),
    (work("L1", "delete"), None, MAPPED, PushStep.DELETE_CLOUD),
    (work("L1", "delete"), LocalMemory("L1", "still here"), None, PushStep.DROP_UNMAPPED),  # nothing in the cloud
])
def test_push_steps_for_bad_ids_missing_memories_and_unproven_deletes(
        item: WorkItem, local: LocalMemory | None, mapping: Mapping | None, step: PushStep) -> None:
    plan = plan_push(item, local, mapping, None, default_level=1)
    assert plan.step is step and plan.reason


@pytest.mark.parametrize(("value", "escaped"), [
    ("0b5e1c2a-4a57-4b8e-9d0e-3f1f2c3d4e5f", "0b5e1c2a-4a57-4b8e-9d0e-3f1f2c3d4e5f"),
    ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd"),
    ("M1?x=1", "M1%3Fx%3D1"),
    ("M1#frag", "M1%23frag"),
    ("../stats/?user_id=x&", "..%2Fstats%2F%3Fuser_id%3Dx%26"),
    ("..", "%2E%2E"),
    (".", "%2E"),
    ("a b/é", "a%20b%2F%C3%A9"),
])
def test_path_segment_escapes_everything_that_could_leave_the_segment(value: str, escaped: str) -> None:
    assert path_segment(value) == escaped


def test_every_skipped_kind_has_its_line_in_the_push_block() -> None:
    """'Skipped: 1 not found locally' and its siblings follow the seed's PUSH lines (issue 15 item 4)."""
    from memsyncd.cli.render import render_sync
    from memsyncd.engine.report import PullReport, PushReport, SyncReport

    report = SyncReport(mode="full", queue_path="/q.json",
                        push=PushReport(not_found=1, invalid_ids=2, deletes_kept=3, skipped_private=4),
                        pull=PullReport(skipped_private=5))
    text = render_sync(report)
    assert text.startswith("PUSH: 0 memories synced to cloud\nErrors: 0 (see /q.json)\nPULL:")
    for line in ("Skipped: 1 not found locally", "Skipped: 2 not a memory id", "Skipped: 3 deletes of memories "
                 "that still exist locally", "Skipped: 4 local-only (level 0)",
                 "Not pulled: 5 matching a local-only (level 0) memory"):
        assert line in text
    wire = report.to_json()
    assert wire["push"]["not_found"] == 1 and wire["pull"]["skipped_private"] == 5
    wire["push"]["a_later_field"] = 7  # a daemon of a newer version
    assert SyncReport.from_json(wire).push == report.push


@pytest.mark.parametrize("keep", list(Keep))
def test_a_local_only_resolution_says_nothing_was_sent(keep: Keep) -> None:
    from memsyncd.cli.commands import _render_local_only

    text = _render_local_only(4, keep, {"local_only": True, "cloud_id": "C9"})
    assert "on this machine only" in text and "nothing was sent to mem0" in text and "C9" in text
