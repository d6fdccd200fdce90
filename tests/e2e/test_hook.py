"""The Claude Code PostToolUse hook never blocks Claude: exit 0 and one note for anything it cannot use."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import PROC_TIMEOUT, base_env, queue_path, read_queue

from memsyncd.cli.hook import ADD_TOOL, DELETE_ALL_TOOL, DELETE_TOOL, run_post_tool_use_hook
from memsyncd.store import queue as queue_store
from memsyncd.store.queue import QueueStore

ADD_EVENT = {"hook_event_name": "PostToolUse", "tool_name": ADD_TOOL, "tool_input": {"text": "likes tea"},
             "tool_response": json.dumps({"results": [{"id": "a1", "memory": "likes tea", "event": "ADD"}]})}


@pytest.fixture()
def store(tmp_path: Path) -> QueueStore:
    return QueueStore(queue_path(tmp_path))


@pytest.mark.parametrize(("stdin", "needle"), [
    ("", "no event on stdin"),
    ("   \n", "no event on stdin"),
    ("not json", "stdin is not JSON (Expecting value at line 1 column 1)"),
    ('{"tool_name": ', "stdin is not JSON"),
    ("[1, 2]", "stdin is a JSON list, not an object"),
    ('"text"', "stdin is a JSON str, not an object"),
    (json.dumps({"tool_name": "Bash", "tool_response": "ok"}), "ignored tool 'Bash'"),
    (json.dumps({"tool_name": 7}), "ignored tool 'int'"),
    (json.dumps({"hook_event_name": "PostToolUse"}), "ignored tool 'NoneType'"),
    (json.dumps({"tool_name": ADD_TOOL, "tool_response": "Error: OpenMemory is down"}), "found no memory id"),
    (json.dumps({"tool_name": ADD_TOOL, "tool_response": {"results": "none"}}), "found no memory id"),
    (json.dumps({"tool_name": ADD_TOOL, "tool_response": {"results": [{"id": ""}, {"id": 5}, "x"]}}),
     "found no memory id"),
    (json.dumps({"tool_name": DELETE_TOOL, "tool_input": ["d1"]}), "found no memory id"),
    (json.dumps({"tool_name": DELETE_TOOL, "tool_input": {"memory_ids": "d1"}}), "found no memory id"),
    (json.dumps({"tool_name": DELETE_ALL_TOOL}), "delete_all_memories is not mirrored"),
])
def test_unusable_input_queues_nothing_and_says_why(store: QueueStore, stdin: str, needle: str) -> None:
    """Every shape the hook cannot use: no entry, no file written, one line naming the problem."""
    result = run_post_tool_use_hook(stdin, store)
    assert result.queued == [] and needle in result.note and "\n" not in result.note
    assert not store.path.exists()


def test_add_and_delete_events_are_queued_without_a_note(store: QueueStore) -> None:
    """The normal case: entries in the file, nothing on stderr."""
    first = run_post_tool_use_hook(json.dumps(ADD_EVENT), store)
    second = run_post_tool_use_hook(json.dumps({"tool_name": DELETE_TOOL, "tool_input": {"memory_ids": ["d1"]}}),
                                    store)
    assert first.note == second.note == ""
    assert [(e.id, e.action) for e in store.read().pending] == [("a1", "push"), ("d1", "delete")]


def test_busy_queue_is_a_note_naming_the_ids(store: QueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the queue lock past the timeout: nothing written, the ids and the fix named."""
    monkeypatch.setattr(queue_store, "LOCK_TIMEOUT_SECONDS", 0.2)
    store.path.parent.mkdir(parents=True)
    with open(store.lock_path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_post_tool_use_hook(json.dumps(ADD_EVENT), store)
    assert result.queued == [] and not store.path.exists()
    assert result.note.startswith("memsyncctl hook: could not queue a1: sync queue is busy: another process has held")
    assert "memsyncctl enqueue ID" in result.note


def test_unreadable_queue_is_a_note_and_stays_untouched(store: QueueStore) -> None:
    """A corrupt queue is never overwritten; the note says how to repair and re-queue."""
    store.path.parent.mkdir(parents=True)
    store.path.write_text('{"pending": [')
    result = run_post_tool_use_hook(json.dumps(ADD_EVENT), store)
    assert result.queued == [] and store.path.read_text() == '{"pending": ['
    assert "could not queue a1: the sync queue is unreadable" in result.note
    assert "memsyncctl queue repair" in result.note


def run_hook(root: Path, stdin: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "memsyncd.ctl", "--root", str(root), *extra, "hook", "post-tool-use"],
                          input=stdin, capture_output=True, timeout=PROC_TIMEOUT, env=base_env())


@pytest.mark.parametrize(("stdin", "needle"), [
    (b"not json", b"stdin is not JSON"),
    (b"\xff\xfe\x00garbage", b"stdin is not UTF-8"),
    (b"[]", b"not an object"),
    (json.dumps({"tool_name": "Read"}).encode(), b"ignored tool 'Read'"),
    (b"", b"no event on stdin"),
])
def test_hook_command_exits_0_with_one_line_for_bad_stdin(tmp_path: Path, stdin: bytes, needle: bytes) -> None:
    """The real command: exit 0 (never 2, Claude Code's blocking error), one line on stderr, no traceback."""
    done = run_hook(tmp_path, stdin)
    assert done.returncode == 0 and done.stdout == b""
    assert needle in done.stderr and done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr
    assert not queue_path(tmp_path).exists()


def test_hook_command_exits_0_when_the_queue_is_corrupt(tmp_path: Path) -> None:
    """Queue unreadable: exit 0, the note, the file left byte for byte."""
    path = queue_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\x01 not a queue")
    done = run_hook(tmp_path, json.dumps(ADD_EVENT).encode())
    assert done.returncode == 0 and b"could not queue a1" in done.stderr and b"Traceback" not in done.stderr
    assert path.read_bytes() == b"\x00\x01 not a queue"


def test_hook_command_queues_and_says_so_with_verbose(tmp_path: Path) -> None:
    """-v adds one line with the count; the entries are in the file."""
    done = run_hook(tmp_path, json.dumps(ADD_EVENT).encode(), "-v")
    assert done.returncode == 0
    assert done.stderr.decode() == f"memsyncctl: queued 1 entries in {queue_path(tmp_path)}\n"
    assert [e["id"] for e in read_queue(tmp_path)["pending"]] == ["a1"]


def test_hook_argument_errors_are_still_usage_errors(tmp_path: Path) -> None:
    """Only a wrong argv exits 2 (an unknown hook event name), never the input."""
    done = subprocess.run([sys.executable, "-m", "memsyncd.ctl", "--root", str(tmp_path), "hook", "pre-tool-use"],
                          input=b"{}", capture_output=True, timeout=PROC_TIMEOUT, env=base_env())
    assert done.returncode == 2 and b"invalid choice" in done.stderr


def test_deleted_working_directory_is_a_note_for_the_hook_and_a_usage_error_elsewhere(tmp_path: Path) -> None:
    """No root can be found (cwd deleted, no --root): the hook still exits 0; other commands exit 2. One line each."""
    def in_deleted_cwd(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        gone = tmp_path / f"gone-{args[0]}"
        gone.mkdir()
        script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m memsyncd.ctl "$@"'
        return subprocess.run(["sh", "-c", script, "sh", *args], input=stdin, capture_output=True,
                              timeout=PROC_TIMEOUT, env=base_env())

    hook = in_deleted_cwd("hook", "post-tool-use", stdin=json.dumps(ADD_EVENT).encode())
    status = in_deleted_cwd("status")
    assert hook.returncode == 0 and b"the current directory no longer exists" in hook.stderr
    assert status.returncode == 2 and status.stderr.startswith(b"memsyncctl: Invalid usage: the current directory")
    assert hook.stderr.count(b"\n") == status.stderr.count(b"\n") == 1
