"""``memsyncctl forget-cloud-copies``: delete the cloud copies of memories that became local-only (level 0).

A memory synced at level ≥ 1 and later marked level 0 is skipped by every push from then on,
but its earlier copy stays in mem0 (the engine never deletes cloud data on its own). This
module finds those pairs — mapped in the state DB, and private by the local memory's
``metadata.level``, a pending queue entry's ``level`` or the level recorded on the mapping —
and, once the user confirmed, deletes only the cloud copies and unmaps them. The local
memories stay.

Order per memory: unmap first, then delete in the cloud. A crash in between leaves an
unmapped cloud copy (found again by the next pull and by ``doctor``), never a mapped pair
whose cloud side is missing — which the reconcile job would mirror as a LOCAL delete.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memsyncd.config import Paths, Settings
from memsyncd.engine.decide import PRIVATE_LEVEL, parse_level
from memsyncd.errors import EXIT_OK, EXIT_PARTIAL, RemoteError, UsageError
from memsyncd.models import LocalMemory, Mapping, QueueEntry
from memsyncd.remote.cloud import CloudClient
from memsyncd.remote.local import LocalClient
from memsyncd.store.locks import pair_run_lock
from memsyncd.store.state import StateStore
from memsyncd.terminal import escape_controls

RUN_LOCK_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class CloudCopy:
    """A local-only memory whose earlier copy is still in the cloud."""

    local_id: str
    cloud_id: str
    text: str  # the local text; shown on this machine only
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"local_id": self.local_id, "cloud_id": self.cloud_id, "text": self.text, "reason": self.reason}


@dataclass
class ForgetResult:
    """What a deletion run did."""

    deleted: list[CloudCopy] = field(default_factory=list)
    already_gone: list[CloudCopy] = field(default_factory=list)
    skipped: list[CloudCopy] = field(default_factory=list)  # the pair changed since it was listed
    failed: list[tuple[CloudCopy, str]] = field(default_factory=list)


def private_reason(memory: LocalMemory, mapping: Mapping, queued_level: int | None) -> str | None:
    """Why a synced memory is local-only now, or None when it is not (a pure decision).

    The configured default level is deliberately not consulted: a memory synced because a
    queue entry said level 1 carries no level of its own, and must not be reported private
    just because the default is 0.
    """
    if parse_level(memory.metadata.get("level")) == PRIVATE_LEVEL:
        return "metadata.level is 0"
    if queued_level == PRIVATE_LEVEL:
        return "queued with level 0"
    if mapping.level == PRIVATE_LEVEL:
        return "marked level 0 at a sync"
    return None


def queued_levels(pending: Sequence[QueueEntry]) -> dict[str, int]:
    """The lowest level each memory id was queued with (ids queued without a level are absent)."""
    levels: dict[str, int] = {}
    for entry in pending:
        level = parse_level(entry.level)
        if level is not None:
            levels[entry.id] = min(level, levels.get(entry.id, level))
    return levels


async def find_cloud_copies(local: LocalClient, state: StateStore, pending: Sequence[QueueEntry]) -> list[CloudCopy]:
    """Every mapped local memory that is private now, with its cloud id; pages through OpenMemory once."""
    mapped = {mapping.local_id: mapping for mapping in state.mappings()}
    if not mapped:
        return []
    levels = queued_levels(pending)
    found: list[CloudCopy] = []
    async for page in local.pages():
        for memory in page:
            mapping = mapped.get(memory.id)
            if mapping is None or not memory.alive:
                continue
            reason = private_reason(memory, mapping, levels.get(memory.id))
            if reason is not None:
                found.append(CloudCopy(memory.id, mapping.cloud_id, memory.text, reason))
    return found


async def delete_cloud_copies(copies: Sequence[CloudCopy], state: StateStore, cloud: CloudClient) -> ForgetResult:
    """Unmap each pair, then delete its cloud copy; a failed delete restores the mapping.

    Raises:
        RemoteError: a run-level failure (key rejected, network down) after restoring the pair it hit.
    """
    result = ForgetResult()
    for copy in copies:
        mapping = state.mapping_for_local(copy.local_id)
        if mapping is None or mapping.cloud_id != copy.cloud_id:
            result.skipped.append(copy)
            continue
        state.delete_mapping(copy.local_id)
        try:
            existed = await cloud.delete(copy.cloud_id)
        except RemoteError as exc:
            state.save_mapping(mapping)
            if exc.stops_run:
                raise
            result.failed.append((copy, str(exc)))
            continue
        (result.deleted if existed else result.already_gone).append(copy)
    return result


def _excerpt(text: str, width: int = 50) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_copies(copies: Sequence[CloudCopy]) -> str:
    """The listing shown before asking."""
    lines = [f"{len(copies)} local-only (level 0) memories still have a copy in the mem0 cloud:"]
    lines += [f"  {c.local_id}  cloud {c.cloud_id}  \"{_excerpt(c.text)}\"  ({c.reason})" for c in copies]
    return "\n".join(lines) + "\n"


def render_result(result: ForgetResult, default_level: int) -> str:
    """What happened, in words."""
    lines = [f"Deleted {len(result.deleted) + len(result.already_gone)} cloud copies"
             + (f" ({len(result.already_gone)} were already gone)" if result.already_gone else "")
             + "; the local memories stay, no longer linked to the cloud."]
    for copy in result.skipped:
        lines.append(f"Skipped {copy.local_id}: its mapping changed since it was listed; run the command again.")
    for copy, message in result.failed:
        lines.append(f"Failed {copy.local_id}: {message} (still mapped; run the command again later).")
    if default_level > PRIVATE_LEVEL and result.deleted:
        lines.append(f"Note: sync.default_level is {default_level}. If you edit one of these memories, queue the "
                     "edit with 'memsyncctl enqueue ID --level 0', or it is pushed again as a new memory.")
    return "\n".join(lines) + "\n"


CONFIRM_TEXT = ("Deleting removes these memories from mem0 and, at their next sync, from other devices that "
                "synced them. The local memories on this machine stay.")


def _confirmed(copies: Sequence[CloudCopy], args: Any, confirm: Callable[[str], bool] | None) -> bool:
    """``--yes``, or the user's answer; without a terminal to ask on, a usage error (nothing deleted)."""
    if not args.json:
        sys.stdout.write(escape_controls(render_copies(copies)))
    if args.yes:
        return True
    if confirm is None:
        if not sys.stdin.isatty():
            raise UsageError(f"{len(copies)} cloud copies would be deleted, but there is no terminal to confirm "
                             "on; nothing was deleted. Rerun with --yes to delete them.")
        confirm = _ask_terminal
    return confirm(f"{CONFIRM_TEXT}\nDelete these {len(copies)} cloud copies? [y/N] ")


def _ask_terminal(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


async def _delete_under_run_lock(settings: Settings, copies: Sequence[CloudCopy], state: StateStore,
                                 cloud: CloudClient) -> ForgetResult:
    """Delete while holding the root's run lock, so no sync (daemon or one-shot) runs meanwhile."""
    async with pair_run_lock(settings.pair_key, wait_seconds=RUN_LOCK_WAIT_SECONDS,
                             busy=lambda lock, _waited: f"a sync of these stores has held {lock} for "
                                                        f"{RUN_LOCK_WAIT_SECONDS:.0f} s; nothing was deleted. "
                                                        "Try again."):
        return await delete_cloud_copies(copies, state, cloud)


async def run_forget(paths: Paths, args: Any, *, confirm: Callable[[str], bool] | None = None) -> int:
    """The command: list, confirm (or ``--yes``; ``--dry-run`` only lists), delete, report.

    Raises:
        SyncUnavailableError: cloud sync is off or no key is set (exit 3).
        RemoteError: OpenMemory or mem0 failed for the whole run.
    """
    from memsyncd.cli.clients import cloud_settings, open_clients
    from memsyncd.store.queue import QueueStore

    if args.json and not (args.yes or args.dry_run):
        raise UsageError("--json needs --yes (delete without asking) or --dry-run (only list); nothing was deleted.")
    settings, key = cloud_settings(paths)
    copies: list[CloudCopy] = []
    result: ForgetResult | None = None
    declined = False
    if paths.state.exists():
        pending = QueueStore(paths.queue, paths.queue_lock).read().pending
        async with open_clients(settings, key, for_checks=False) as (local, cloud):
            state = StateStore(paths.state)
            try:
                copies = await find_cloud_copies(local, state, pending)
                if copies and not args.dry_run:
                    if _confirmed(copies, args, confirm):
                        result = await _delete_under_run_lock(settings, copies, state, cloud)
                    else:
                        declined = True
            finally:
                state.close()
    if args.json:
        done = (result.deleted + result.already_gone) if result else []
        sys.stdout.write(json.dumps({
            "copies": [c.to_json() for c in copies],
            "deleted": [c.local_id for c in done],
            "failed": [{"local_id": c.local_id, "error": m} for c, m in result.failed] if result else [],
            "skipped": [c.local_id for c in result.skipped] if result else [],
        }, indent=2, ensure_ascii=False) + "\n")
    elif not copies:
        sys.stdout.write("No local-only (level 0) memory has a copy left in the mem0 cloud.\n")
    elif result is not None:
        sys.stdout.write(escape_controls(render_result(result, settings.sync.default_level)))
    elif declined:
        sys.stdout.write("Nothing was deleted.\n")
    else:
        sys.stdout.write(escape_controls(render_copies(copies)) + "Dry run: nothing was deleted. Delete them with "
                         "'memsyncctl forget-cloud-copies'.\n")
    return EXIT_PARTIAL if result is not None and (result.failed or result.skipped) else EXIT_OK
