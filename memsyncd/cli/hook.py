"""The Claude Code PostToolUse hook: OpenMemory tool events → queue entries, never an exit 2, never the network.

Stdlib only. Claude Code treats exit code 2 from a hook as a blocking error fed back to the
model, so anything the hook cannot use (stdin not JSON, another shape, another tool, an
unreadable queue) ends in exit 0 with one line on stderr saying why. A queue lock held by
another process is waited on for about a second only; the entries then go to ``on_busy``
(the daemon, else the per-user spool: :func:`memsyncd.cli.fast.hand_off`), never dropped.

The hook runs on every OpenMemory tool call, so its path loads no ``dataclasses``, ``typing`` or
``pathlib``: entries are built in the queue's JSON form and appended by
:func:`memsyncd.store.queue_file.append_pending` (:func:`run_hook_on_file`);
:func:`run_post_tool_use_hook` does the same through the engine's typed ``QueueStore``.
"""

from __future__ import annotations

import json

from memsyncd.errors import FileAccessError, MemsyncError, QueueBusyError, QueueUnreadableError
from memsyncd.ids import id_problem
from memsyncd.timestamps import now_ts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from memsyncd.models import QueueEntry
    from memsyncd.store.queue import QueueStore

ADD_TOOL = "mcp__openmemory__add_memories"
DELETE_TOOL = "mcp__openmemory__delete_memories"
DELETE_ALL_TOOL = "mcp__openmemory__delete_all_memories"
NOTE_PREFIX = "memsyncctl hook:"
_MAX_IDS_IN_NOTE = 10


class HookResult:
    """What one hook event did: the entries written to the queue, and a line for stderr (or "")."""

    __slots__ = ("note", "queued")

    def __init__(self, queued: list[Any] | None = None, note: str = "") -> None:
        self.queued: list[Any] = queued if queued is not None else []
        self.note = note


def _json_objects(value: Any) -> list[Any]:
    """Every JSON value found in a hook's tool_response (string, MCP content blocks, or object)."""
    if isinstance(value, str):
        try:
            return _json_objects(json.loads(value))
        except (json.JSONDecodeError, RecursionError):
            return []
    if isinstance(value, list):
        found: list[Any] = []
        for block in value:
            if isinstance(block, dict) and block.get("type") == "text":
                found += _json_objects(block.get("text"))
            else:
                found += _json_objects(block)
        return found
    if isinstance(value, dict):
        if "content" in value and "results" not in value:
            return _json_objects(value["content"])
        return [value]
    return []


def raw_entries_from_hook(payload: dict[str, Any], refused: list[str] | None = None) -> list[dict[str, Any]]:
    """Queue entries, in the queue file's JSON form, for one PostToolUse event of the OpenMemory MCP tools.

    Args:
        payload: the hook event.
        refused: when given, each id found that cannot be a memory id (:func:`~memsyncd.ids.id_problem`)
            is appended to it, so the caller can say so.
    """
    tool = payload.get("tool_name")
    now = now_ts()
    entries: list[dict[str, Any]] = []
    bad = refused if refused is not None else []

    def usable(value: Any) -> bool:
        if id_problem(value) is None:
            return True
        if isinstance(value, str) and value.strip():  # an id that is there but unusable: say so
            bad.append(value)
        return False

    if tool == ADD_TOOL:
        for obj in _json_objects(payload.get("tool_response")):
            results = obj.get("results") if isinstance(obj, dict) else None
            for result in results if isinstance(results, list) else []:
                if not isinstance(result, dict) or not usable(result.get("id")):
                    continue
                event = str(result.get("event", "ADD")).upper()
                entries.append({"id": result["id"], "action": "delete" if event == "DELETE" else "push",
                                "timestamp": now})
    elif tool == DELETE_TOOL:
        tool_input = payload.get("tool_input")
        ids = tool_input.get("memory_ids") if isinstance(tool_input, dict) else None
        for memory_id in ids if isinstance(ids, list) else []:
            if usable(memory_id):
                entries.append({"id": memory_id, "action": "delete", "timestamp": now})
    return entries


def entries_from_hook(payload: dict[str, Any], refused: list[str] | None = None) -> list[QueueEntry]:
    """:func:`raw_entries_from_hook` as the engine's ``QueueEntry`` objects."""
    from memsyncd.models import QueueEntry

    return [QueueEntry(raw["id"], raw["action"], raw["timestamp"]) for raw in raw_entries_from_hook(payload, refused)]


def _refused_note(refused: list[str]) -> str:
    """One line naming the ids that were not queued (escaped: they come from a tool's output)."""
    shown = ", ".join(ascii(value[:60]) for value in refused[:3])
    more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
    why = id_problem(refused[0]) or "not a memory id"
    return (f"{NOTE_PREFIX} ignored {len(refused)} id(s) that cannot be memory ids: {shown}{more} "
            f"({why}). They were not queued.")


def parse_event(stdin_text: str) -> dict[str, Any] | str:
    """The hook event object, or a note saying why stdin cannot be used."""
    if not stdin_text.strip():
        return f"{NOTE_PREFIX} no event on stdin; expected Claude Code's PostToolUse JSON. Nothing was queued."
    try:
        payload = json.loads(stdin_text)
    except json.JSONDecodeError as exc:
        return (f"{NOTE_PREFIX} stdin is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                "expected Claude Code's PostToolUse event. Nothing was queued.")
    except RecursionError:
        return f"{NOTE_PREFIX} stdin is JSON nested too deeply to read. Nothing was queued."
    if not isinstance(payload, dict):
        return (f"{NOTE_PREFIX} stdin is a JSON {type(payload).__name__}, not an object; expected Claude Code's "
                "PostToolUse event. Nothing was queued.")
    return payload


def _ids(entries: list[dict[str, Any]]) -> str:
    shown = " ".join(e["id"] for e in entries[:_MAX_IDS_IN_NOTE])
    return shown + (f" (and {len(entries) - _MAX_IDS_IN_NOTE} more)" if len(entries) > _MAX_IDS_IN_NOTE else "")


def _not_queued(entries: list[dict[str, Any]], error: MemsyncError) -> str:
    if isinstance(error, QueueUnreadableError):
        why = f"the sync queue is unreadable ({error.path}: {error.reason})"
        fix = "run 'memsyncctl queue repair', then 'memsyncctl enqueue ID' for each id"
    else:
        why = f"{error.title}: {error.message}" if error.message else error.title
        fix = "run 'memsyncctl enqueue ID' for each id once that is fixed"
    return f"{NOTE_PREFIX} could not queue {_ids(entries)}: {why}. To sync them, {fix}."


def _run(stdin_text: str, write: Callable[[list[dict[str, Any]]], None], where: str,
         on_busy: Callable[[list[dict[str, Any]]], str] | None = None) -> HookResult:
    """Enqueue what one hook event wrote through ``write``; the result lists the entries in JSON form.

    When ``write`` finds the queue lock busy, ``on_busy`` takes the entries (returning the note to
    print; raising ``MemsyncError``/``OSError`` when it could not).
    """
    payload = parse_event(stdin_text)
    if isinstance(payload, str):
        return HookResult(note=payload)
    tool = payload.get("tool_name")
    if tool == DELETE_ALL_TOOL:
        return HookResult(note="memsyncd: delete_all_memories is not mirrored to the cloud automatically; "
                               "delete cloud memories explicitly if that was intended.")
    if tool not in (ADD_TOOL, DELETE_TOOL):
        shown = tool if isinstance(tool, str) else type(tool).__name__
        return HookResult(note=f"{NOTE_PREFIX} ignored tool {shown!r}: only {ADD_TOOL} and {DELETE_TOOL} "
                               "are synced. Nothing was queued.")
    refused: list[str] = []
    entries = raw_entries_from_hook(payload, refused)
    refused_note = _refused_note(refused) if refused else ""
    if not entries:
        return HookResult(note=refused_note or f"{NOTE_PREFIX} found no memory id in the {tool} event "
                                               "(the tool may have failed). Nothing was queued.")
    try:
        write(entries)
    except QueueBusyError as error:
        if on_busy is None:
            return HookResult(note=_not_queued(entries, error))
        try:
            return HookResult(queued=entries, note=on_busy(entries))
        except MemsyncError as fallback_error:
            return HookResult(note=_not_queued(entries, fallback_error))
        except OSError as exc:
            return HookResult(note=_not_queued(entries, FileAccessError.from_os_error(exc, where)))
    except MemsyncError as error:  # unreadable, a symlink, or a file we cannot write
        return HookResult(note=_not_queued(entries, error))
    except OSError as exc:  # pragma: no cover - the writers map these; kept so the hook can never exit 2
        return HookResult(note=_not_queued(entries, FileAccessError.from_os_error(exc, where)))
    return HookResult(queued=entries, note=refused_note)


def _typed(entries: list[dict[str, Any]]) -> list[QueueEntry]:
    from memsyncd.models import QueueEntry

    return [QueueEntry(raw["id"], raw["action"], raw["timestamp"]) for raw in entries]


def run_post_tool_use_hook(stdin_text: str, queue: QueueStore, *,
                           on_busy: Callable[[list[QueueEntry]], str] | None = None) -> HookResult:
    """Enqueue what one hook event wrote; never raises for input or queue problems, never blocks on the network.

    When the queue lock stays busy past ``queue.lock_timeout``, ``on_busy`` takes the entries
    (returning the note to print; raising ``MemsyncError``/``OSError`` when it could not).
    ``result.queued`` holds the engine's ``QueueEntry`` objects.
    """

    def write(entries: list[dict[str, Any]]) -> None:
        typed = _typed(entries)
        queue.update(lambda doc: doc.pending.extend(typed))

    busy = None if on_busy is None else (lambda entries: on_busy(_typed(entries)))
    result = _run(stdin_text, write, str(queue.path), busy)
    result.queued = _typed(result.queued)
    return result


def run_hook_on_file(stdin_text: str, queue_path: str, lock_path: str, lock_timeout: float | None = None, *,
                     on_busy: Callable[[list[QueueEntry]], str] | None = None) -> HookResult:
    """:func:`run_post_tool_use_hook` straight into the queue file (the fast path); ``result.queued`` in JSON form.

    ``on_busy`` receives ``QueueEntry`` objects (the spool's and the daemon hand-off's form): the data
    classes load only when the lock was busy.
    """
    from memsyncd.store import queue_file

    timeout = queue_file.LOCK_TIMEOUT_SECONDS if lock_timeout is None else lock_timeout
    busy = None if on_busy is None else (lambda entries: on_busy(_typed(entries)))
    return _run(stdin_text, lambda entries: queue_file.append_pending(queue_path, lock_path, entries, timeout),
                queue_path, busy)
