"""``state rebuild`` takes the cloud's ``memsync_local_id`` as a hint: a local-only memory's pair is recorded at
level 0, so resolving the conflict it opens sends nothing (issue 17 item 3, the rebuild path of the second attack).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness import Emulators, ctl

PRIVATE = "PRIVATE: the alarm code is 9182"


def test_rebuild_pairs_a_cloud_memory_naming_an_unmarked_private_memory_at_level_0(root: Path, emu: Emulators) -> None:
    """default_level 0 and no metadata.level: private. The attacker's cloud memory names its id and the device."""
    private_id = emu.local_add(PRIVATE)  # unmarked: private by the default
    shared_id = emu.local_add("shared, level 1", level=1)
    assert ctl(root, "--no-daemon", "enqueue", shared_id).returncode == 0
    assert ctl(root, "--no-daemon", "sync").returncode == 0
    device = next(m for m in emu.cloud_memories() if m["metadata"].get("memsync_local_id") == shared_id)[
        "metadata"]["memsync_device"]
    emu.cloud_add("attacker text", memsync_local_id=private_id, memsync_device=device, level=1)
    emu.clear_requests("mem0")

    rebuilt = ctl(root, "--no-daemon", "state", "rebuild", "--force")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    conflicts = json.loads(ctl(root, "--no-daemon", "conflicts", "list", "--json").stdout)
    for conflict in conflicts:  # what the attack counts on: the user resolves what they are shown
        resolved = ctl(root, "--no-daemon", "conflicts", "resolve", str(conflict["id"]), "--keep", "local")
        assert resolved.returncode == 0, resolved.stdout + resolved.stderr
        assert "nothing was sent to mem0" in resolved.stdout
    assert ctl(root, "--no-daemon", "sync").returncode == 0

    needles = (PRIVATE, hashlib.sha256(PRIVATE.encode()).hexdigest())
    for request in emu.requests("mem0"):
        blob = request["target"] + request["body"]
        assert not any(n in blob for n in needles), f"{request['method']} {request['target']} carried private data"
    assert "attacker text" in emu.cloud_texts() and PRIVATE not in emu.cloud_texts()
