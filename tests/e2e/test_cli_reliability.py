"""``memsyncctl`` subprocesses under failure: damaged state + rebuild, kill -9 mid-push, echoed key, failed pull."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from harness import API_KEY, Emulators, base_env, ctl, fill_queue, queue_path, read_queue, wait_for


def state_path(root: Path) -> Path:
    return root / ".claude" / "memory" / "memsync.db"


def damage(path: Path) -> None:
    """Overwrite every page after the first: SQLite still opens the file, every table read fails."""
    data = bytearray(path.read_bytes())
    assert len(data) > 2 * 4096
    data[4096:] = (b"\xde\xad\xbe\xef" * (len(data) // 4 + 1))[: len(data) - 4096]
    path.write_bytes(bytes(data))


def test_damaged_state_db_exit_6_then_rebuild_loses_and_duplicates_nothing(root: Path, emu: Emulators) -> None:
    """Exit 6 naming the file and the way out, queue byte-identical; 'state rebuild'; the next sync is exact."""
    tag = "rebuild-test"
    for url in (emu.mem0, emu.openmemory):  # exact counts below: start from empty stores
        emu.http.post(f"{url}/_admin/reset").raise_for_status()
    pushed = [emu.local_add(f"{tag} pushed {i} " + "x" * 300, level=1) for i in range(30)]
    edited = pushed[0]
    fill_queue(root, pushed)
    for i in range(5):
        emu.cloud_add(f"{tag} from the cloud {i}")
    first = ctl(root, "sync")
    assert first.returncode == 0, first.stdout + first.stderr
    emu.local_edit(edited, f"{tag} pushed 0, edited here while the state was lost")
    pending = emu.local_add(f"{tag} queued while the state was damaged", level=1)
    fill_queue(root, [pending])
    damage(state_path(root))
    before = queue_path(root).read_bytes()

    broken = ctl(root, "sync")
    assert broken.returncode == 6, broken.stdout + broken.stderr
    assert "SYNC ERROR: sync state is unreadable" in broken.stdout and str(state_path(root)) in broken.stdout
    assert "memsyncctl state rebuild" in broken.stdout and "Traceback" not in broken.stderr
    assert queue_path(root).read_bytes() == before

    rebuilt = ctl(root, "state", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "Moved the old database to" in rebuilt.stdout and "Mapped: 35 memories (1 conflicts" in rebuilt.stdout
    assert list(state_path(root).parent.glob("memsync.db.corrupt-*"))
    healthy = ctl(root, "state", "rebuild")
    assert healthy.returncode == 0 and "healthy; nothing to rebuild" in healthy.stdout

    after = ctl(root, "sync")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "PULL: 0 memories synced from cloud" in after.stdout and "Conflicts pending: 1" in after.stdout
    local = Counter(t for t in emu.local_texts() if t.startswith(tag))
    cloud = Counter(t for t in emu.cloud_texts() if t.startswith(tag))
    assert max(local.values()) == 1 and max(cloud.values()) == 1  # no duplicates on either side
    assert len(local) == 30 + 5 + 1 and f"{tag} queued while the state was damaged" in cloud  # nothing lost
    assert f"{tag} pushed 0, edited here while the state was lost" in local  # the edit was not overwritten...
    assert f"{tag} pushed 0, edited here while the state was lost" not in cloud  # ...nor pushed over the cloud
    (conflict,) = json.loads(ctl(root, "conflicts", "list", "--json").stdout)
    assert conflict["local_id"] == edited
    assert read_queue(root)["pending"] == []


def test_queue_shrinks_during_a_push_and_kill_9_leaves_no_duplicate(root: Path, emu: Emulators) -> None:
    """200 entries at 40 ms: the file shrinks mid-run; after kill -9 and another sync each memory is there once."""
    tag = "kill9-test"
    ids = [emu.local_add(f"{tag} {i}", level=1) for i in range(200)]
    fill_queue(root, ids)
    emu.fault("mem0", latency_ms=40)
    proc = subprocess.Popen([sys.executable, "-m", "memsyncd.ctl", "--root", str(root), "sync", "--push"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=base_env(MEM0_API_KEY=API_KEY))
    try:
        seen = wait_for(lambda: 0 < len(read_queue(root)["pending"]) < 200 and len(read_queue(root)["pending"]),
                        timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        emu.fault("mem0", latency_ms=0)
    left = {e["id"] for e in read_queue(root)["pending"]}
    assert len(left) <= seen < 200 and left <= set(ids)
    in_cloud = Counter(t for t in emu.cloud_texts() if t.startswith(tag))
    # only the results of the last moments (one batch, plus what was in flight) can be queued and pushed
    assert len({f"{tag} {i}" for i, memory_id in enumerate(ids) if memory_id in left} & set(in_cloud)) <= 100
    again = ctl(root, "sync", "--push")
    assert again.returncode == 0, again.stdout + again.stderr
    in_cloud = Counter(t for t in emu.cloud_texts() if t.startswith(tag))
    assert len(in_cloud) == 200 and max(in_cloud.values()) == 1
    assert read_queue(root)["pending"] == []


def test_echoed_key_stays_out_of_output_and_files(root: Path, emu: Emulators) -> None:
    """A proxy echoing the Authorization header: no key in stdout, stderr (verbose logs) or any file."""
    memory_id = emu.local_add("echo-cli-test", level=1)
    fill_queue(root, [memory_id])
    emu.fault("mem0", fault="echo")
    try:
        result = ctl(root, "-v", "sync", "--push")
        as_json = ctl(root, "sync", "--push", "--json")
    finally:
        emu.fault("mem0", fault=None)
    assert result.returncode == 1 and "502 Bad Gateway" in result.stdout
    assert API_KEY not in result.stdout + result.stderr + as_json.stdout + as_json.stderr
    for path in root.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def test_failed_pull_still_prints_the_push_block(root: Path, emu: Emulators) -> None:
    """A pull whose listing fails after retries: PUSH block, SYNC PARTIAL naming the error, exit 1."""
    fill_queue(root, [emu.local_add("pull-fails-cli-test", level=1)])
    emu.fault("mem0", fault="500", match="page_size")
    try:
        result = ctl(root, "sync")
    finally:
        emu.fault("mem0", fault=None)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith(f"PUSH: 1 memories synced to cloud\nErrors: 0 (see {queue_path(root)})\n"
                                    "SYNC PARTIAL\n")
    assert "Pull stopped early: mem0 returned 500" in result.stdout
