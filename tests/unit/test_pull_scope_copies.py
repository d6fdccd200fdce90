"""A root on a wider mem0 scope lists the copies a narrower root pushed: those are not copied locally."""

from __future__ import annotations

from memsyncd.engine.decide import PullStep, plan_pull
from memsyncd.models import CloudMemory, LocalMemory


def test_a_copy_of_a_synced_memory_is_not_created_locally() -> None:
    cloud = CloudMemory("C2", "same text", metadata={"memsync_local_id": "L1"})
    assert plan_pull(cloud, None, None) is PullStep.CREATE_LOCAL
    assert plan_pull(cloud, None, None, copy_of_synced=True) is PullStep.ALREADY_HERE


def test_an_unmapped_local_twin_is_still_adopted_first() -> None:
    cloud = CloudMemory("C2", "same text", metadata={"memsync_local_id": "L1"})
    twin = LocalMemory("L9", "same text", metadata={"level": 1})
    assert plan_pull(cloud, None, None, twin, 1, copy_of_synced=True) is PullStep.ADOPT
    assert plan_pull(cloud, None, None, twin, 0, copy_of_synced=True) is PullStep.SKIP_PRIVATE
