"""What a new user meets walking through the README end to end (the QA pass after a day of merges)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Emulators, base_env, ctl, make_root, queue_path, running_daemon, wait_for


def test_a_rejected_key_with_nothing_queued_is_the_seed_block_alone(root: Path, emu: Emulators) -> None:
    """The usual 'memsyncctl sync' after a key was revoked: nothing to push, so the pull meets the 401.

    Before, that printed a PUSH block, 'SYNC PARTIAL / Pushed: 0 of 0 / Pulled: 0 of 0 / Pull
    stopped early ...' and only then the seed's 401 block: a partial sync that never happened.
    """
    emu.local_add("synced before the key was revoked", level=1)
    first = ctl(root, "--no-daemon", "sync")
    assert first.returncode == 0, first.stdout + first.stderr
    before = queue_path(root).read_bytes()
    result = ctl(root, "--no-daemon", "sync", key="m0-revoked-key")
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stdout == "SYNC ERROR: mem0 API returned 401\nCheck MEM0_API_KEY environment variable.\n"
    assert queue_path(root).read_bytes() == before


def test_mem0_unreachable_says_what_to_do(root: Path, emu: Emulators) -> None:
    """OpenMemory down names local.url and what to do; mem0 down said only 'cannot connect ... ConnectError'."""
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = ctl(root, "--no-daemon", "sync", MEMSYNC_CLOUD__URL=closed)
    assert result.returncode == 5, result.stdout + result.stderr
    assert result.stdout.startswith("SYNC ERROR: Network unreachable\nPending changes preserved in queue.\n")
    assert f"cannot connect to mem0 at {closed}" in result.stdout and "cloud.url" in result.stdout, result.stdout
    status = ctl(root, "--no-daemon", "status", MEMSYNC_CLOUD__URL=closed)
    assert "Needs attention:" in status.stdout and "cloud.url" in status.stdout, status.stdout


def test_doctor_does_not_ask_to_register_a_root_that_is_registered(root: Path, emu: Emulators,
                                                                   tmp_path: Path) -> None:
    """Right after 'init' (which registers the root) doctor's daemon fix said 'memsyncctl roots add ROOT && ...'."""
    runtime = Path(tempfile.mkdtemp(prefix="mqa-", dir="/tmp"))  # short: a socket path must fit
    runtime.chmod(0o700)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_RUNTIME_DIR": str(runtime)}
    try:
        before = ctl(root, "doctor", **env)
        assert f"memsyncctl roots add {root} && memsyncctl service install" in before.stdout, before.stdout
        assert ctl(root, "roots", "add", **env).returncode == 0
        after = ctl(root, "doctor", **env)
        daemon = [line for line in after.stdout.splitlines() if "no memsyncd answers" in line]
        assert daemon, after.stdout
        fix = after.stdout.split(daemon[0], 1)[1].splitlines()[1]
        assert "fix: memsyncctl service install (or run 'memsyncd run'" in fix and "roots add" not in fix, fix
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_a_rejected_key_reads_as_one_sentence_per_part(root: Path, emu: Emulators) -> None:
    """mem0's own text ends with a period: 'api-keys.. The key came from' read as a typo."""
    status = ctl(root, "--no-daemon", "status", key="m0-revoked-key")
    attention = [line for line in status.stdout.splitlines() if line.startswith("Needs attention:")]
    assert attention and "The key came from the MEM0_API_KEY environment variable" in attention[0], status.stdout
    assert ".." not in attention[0], attention[0]


def test_reading_the_state_while_the_daemon_runs_does_not_break_its_next_run(root: Path, emu: Emulators) -> None:
    """'memsyncctl log' (or doctor) while the daemon serves the root, then a sync through the daemon.

    The daemon's own header checks had dropped its SQLite locks, so the reader's close deleted
    the -wal/-shm under it: 'SYNC ERROR: sync state is unreadable ... disk I/O error', exit 6,
    until the daemon was restarted.
    """
    with running_daemon(root) as daemon:
        first = emu.local_add("pushed by the daemon before a reader looks", level=1)
        assert daemon.ctl("enqueue", first).returncode == 0
        wait_for(lambda: "pushed by the daemon before a reader looks" in emu.cloud_texts())
        logged = ctl(root, "--no-daemon", "log")
        assert logged.returncode == 0 and first in logged.stdout, logged.stdout + logged.stderr
        second = emu.local_add("pushed after the reader closed", level=1)
        assert daemon.ctl("enqueue", second).returncode == 0
        result = daemon.ctl("sync", "--push")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "pushed after the reader closed" in emu.cloud_texts()


def test_a_root_whose_scope_holds_another_roots_copies_does_not_duplicate_them_locally(
        tmp_path: Path, emu: Emulators) -> None:
    """Home (user scope) and a project (app_id): the user scope also lists the project's cloud copies.

    Those copies name the local memory they came from (``memsync_local_id``), which home already
    syncs under its own cloud copy: home's pull wrote each of them into OpenMemory a second time
    (agents then saw every memory twice).
    """
    home, project = make_root(tmp_path / "home", emu), make_root(tmp_path / "project", emu)
    config = project / ".claude" / "memory" / "config.json"
    data = json.loads(config.read_text())
    data["cloud"]["app_id"] = "qa-project"
    config.write_text(json.dumps(data))
    text = f"shared by two roots {tmp_path.name}"
    memory_id = emu.local_add(text, level=1)
    for root in (home, project):
        assert ctl(root, "--no-daemon", "enqueue", memory_id).returncode == 0
    for root in (home, project):
        synced = ctl(root, "--no-daemon", "sync")
        assert synced.returncode == 0, synced.stdout + synced.stderr
    assert emu.cloud_texts().count(text) == 2  # one copy per scope, as the README says
    again = ctl(home, "--no-daemon", "sync")
    assert again.returncode == 0, again.stdout + again.stderr
    assert emu.local_texts().count(text) == 1, again.stdout
    assert "New: 0" in again.stdout, again.stdout


def test_init_with_an_unknown_openmemory_user_says_it_saved_and_how_to_fix_it(tmp_path: Path,
                                                                              emu: Emulators) -> None:
    """Exit 2 after 'Wrote config.json' and the usual next steps, with no word about what to do."""
    (tmp_path / "home").mkdir()
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    result = ctl(tmp_path, "init", "--no-input", "--local-url", emu.openmemory, "--user-id", "nobody-here",
                 "--no-cloud", key=None, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "saved with OpenMemory user 'nobody-here'" in result.stdout, result.stdout
    assert f"memsyncctl --root {tmp_path} init --force --user-id NAME" in result.stdout, result.stdout


def test_resolving_with_merged_text_says_so(root: Path, emu: Emulators) -> None:
    """'--text' answered 'Resolved conflict N: kept text; ...', which reads like a typo."""
    tag = f"merged-{root.name}"
    local_id = emu.local_add(f"{tag}: base", level=1)
    assert ctl(root, "enqueue", local_id).returncode == 0 and ctl(root, "sync").returncode == 0
    (cloud,) = [m for m in emu.cloud_memories() if m["memory"] == f"{tag}: base"]
    emu.local_edit(local_id, f"{tag}: local")
    emu.cloud_edit(cloud["id"], f"{tag}: cloud")
    assert ctl(root, "enqueue", local_id).returncode == 0 and ctl(root, "sync").returncode == 0
    (conflict,) = [c for c in json.loads(ctl(root, "conflicts", "list", "--json").stdout) if c["local_id"] == local_id]
    resolved = ctl(root, "conflicts", "resolve", str(conflict["id"]), "--text", f"{tag}: merged")
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert resolved.stdout == f"Resolved conflict {conflict['id']}: your text is now on both sides.\n"


def test_the_readme_demo_runs_and_keep_says_where_the_root_is() -> None:
    """'pip install . && memsyncd demo' is the README's first command; '--keep' kept a root it never named."""
    result = subprocess.run([sys.executable, "-m", "memsyncd", "demo", "--keep"], capture_output=True, text=True,
                            timeout=120, env=base_env())
    kept = re.search(r"Kept the throw-away root for inspection: (\S+) ", result.stdout)
    made = re.search(r"Throw-away root (\S+): config written", result.stdout)  # step 2 names it too
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        for needle in ("requests to mem0 mentioning the level-0 memory: 0", "PULL: 1 memories synced from cloud",
                       "Conflicts: 1", "kept both; both sides now agree", "SYNC STATUS"):
            assert needle in result.stdout, result.stdout
        assert "Traceback" not in result.stdout + result.stderr
        assert kept is not None, result.stdout
        assert (Path(kept.group(1)) / ".claude" / "memory" / "config.json").is_file()
    finally:
        for found in (kept, made):
            if found is not None:
                shutil.rmtree(found.group(1), ignore_errors=True)
