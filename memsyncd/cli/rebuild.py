"""Rebuild a root's state DB from the two stores after it was damaged (``memsyncctl state rebuild``).

The id map is recovered from what both sides carry: every cloud memory memsyncd pushed
has ``metadata.memsync_local_id`` (matched against the local memories by id), and every
local memory memsyncd pulled has ``metadata.memsync_cloud_id``. A pair whose two texts
are equal gets that text as its merge base; a pair whose texts differ gets no usable base
and an open conflict, so the next sync asks instead of overwriting either side. A pair
deleted locally but still in the cloud becomes a conflict too. Cloud memories that name no
local memory here stay unmapped: the next pull adopts or creates them as for any new one.

The new DB is built next to the old one and swapped in only when complete; the damaged
file (and its ``-wal``/``-shm``) is moved aside to ``memsync.db.corrupt-<ts>``, never deleted.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from memsyncd.config import Paths, Settings, load_api_key, load_trusted_settings
from memsyncd.engine.decide import PRIVATE_LEVEL, cloud_level, current_level
from memsyncd.engine.syncer import Syncer
from memsyncd.errors import DaemonError, MemsyncError, StateUnreadableError, SyncUnavailableError
from memsyncd.ids import id_problem
from memsyncd.logs import register_secret
from memsyncd.models import CloudMemory, Mapping, utc_now
from memsyncd.store.locks import pair_run_lock
from memsyncd.store.state import StateStore, connect

REBUILD_LOCK_WAIT_SECONDS = 10.0  # a running sync: say so soon rather than wait for it

log = structlog.get_logger("memsyncd.cli.rebuild")

UNKNOWN_BASE = ""  # no text hashes to "": every three-way check against it is a conflict
_SIDECARS = ("-wal", "-shm", "-journal")


@dataclass
class RebuildReport:
    """What ``state rebuild`` found and did."""

    state_path: str
    healthy: bool = False  # the DB was fine and --force was not given: nothing done
    moved_to: str | None = None
    mapped: int = 0
    conflicts: int = 0
    unmatched_cloud: int = 0  # cloud memories naming no local memory here (the next pull adopts or creates them)
    duplicates: int = 0  # further cloud copies of an already-mapped local memory (left as they are)
    device_id_source: str = ""  # "old database" | "cloud metadata" | "new"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (``--json``)."""
        return asdict(self)

    def render(self) -> str:
        """The text ``memsyncctl state rebuild`` prints."""
        if self.healthy:
            return (f"The state database is healthy; nothing to rebuild ({self.state_path}).\n"
                    "Use --force to rebuild it anyway.\n")
        lines = [f"Rebuilt {self.state_path}"]
        if self.moved_to:
            lines.append(f"Moved the old database to {self.moved_to}")
        lines.append(f"Mapped: {self.mapped} memories ({self.conflicts} conflicts to resolve)")
        if self.unmatched_cloud:
            lines.append(f"Not from this root: {self.unmatched_cloud} cloud memories (the next sync adopts or "
                         "pulls them)")
        if self.duplicates:
            lines.append(f"Duplicates: {self.duplicates} extra cloud copies of a memory were left untouched")
        if self.conflicts:
            lines.append("Review conflicts with 'memsyncctl conflicts list' after the next sync.")
        lines.append("Run 'memsyncctl sync' to finish.")
        return "\n".join(lines) + "\n"


async def rebuild_state(paths: Paths, *, socket_path: str | None = None, allow_daemon: bool = True,
                        force: bool = False) -> RebuildReport:
    """Move a damaged state DB aside and rebuild it from both stores.

    Raises:
        DaemonError: a daemon serves this root (it holds the DB open), or a sync holds the run lock.
        SyncUnavailableError: cloud sync is not configured (the map comes from the cloud).
        RemoteError: a server failed; the old DB is left where it was.
    """
    from memsyncd.cli.control_client import daemon_client

    async with daemon_client(paths, socket_path, allowed=allow_daemon) as client:
        if client is not None:
            raise DaemonError(f"memsyncd is running for {paths.root} and holds the state database open; stop it "
                              "('systemctl --user stop memsyncd' or Ctrl-C), run 'memsyncctl state rebuild', start it.")
    settings = load_trusted_settings(paths)
    key = load_api_key()
    if key is None or not settings.cloud.enabled:
        raise SyncUnavailableError("Cloud sync is not configured; the id map is rebuilt from the cloud.")
    register_secret(key.get_secret_value())
    report = RebuildReport(state_path=str(paths.state))
    async with pair_run_lock(settings.pair_key, wait_seconds=REBUILD_LOCK_WAIT_SECONDS,
                             busy=lambda lock, _waited: f"a sync of {paths.root} holds {lock}; wait for it to "
                                                        "finish and try again."):
        return await _rebuild_locked(paths, settings, key.get_secret_value(), report, force)


async def _rebuild_locked(paths: Paths, settings: Settings, key: str, report: RebuildReport,
                          force: bool) -> RebuildReport:
    """The rebuild itself, under the pair run lock."""
    if not force and _healthy(paths.state):
        report.healthy = True
        return report
    temp = paths.state.with_name(paths.state.name + ".rebuild")
    _remove_with_sidecars(temp)
    state = StateStore(temp)
    syncer = Syncer(settings, paths, key, state=state)
    try:
        await _fill(syncer, state, _salvage_device_id(paths.state), report)
    except BaseException:
        await syncer.aclose()
        _remove_with_sidecars(temp)
        raise
    await syncer.aclose()  # closes the DB: its WAL is checkpointed into the file
    report.moved_to = _move_aside(paths.state)
    os.replace(temp, paths.state)
    _remove_with_sidecars(temp)
    log.info("state.rebuilt", **{k: v for k, v in report.to_json().items() if k != "state_path"})
    return report


def _healthy(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        store = StateStore(path)
    except StateUnreadableError:
        return False
    try:
        return store.check() is None
    except StateUnreadableError:
        return False
    finally:
        store.close()


def _salvage_device_id(path: Path) -> str | None:
    """This root's device id from the old DB, if that one row can still be read."""
    if not path.exists():
        return None
    try:
        db = connect(path, read_only=True, timeout=5)
    except (sqlite3.Error, MemsyncError):
        return None
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'device_id'").fetchone()
        return str(row[0]) if row and row[0] else None
    except sqlite3.Error:
        return None
    finally:
        db.close()


async def _fill(syncer: Syncer, state: StateStore, old_device: str | None, report: RebuildReport) -> None:
    """Scan both stores and write the recovered map into ``state``."""
    cloud = syncer.cloud
    assert cloud is not None  # built from a key and cloud.enabled, checked by the caller
    cloud.begin_run()
    await syncer.local.probe()
    live: dict[str, str] = {}  # live local id -> content hash
    private: set[str] = set()  # live local ids that are local-only (level 0) now
    pulled_from: dict[str, str] = {}  # cloud id -> live local id created from it by a pull
    default_level = syncer.settings.sync.default_level
    async for page in syncer.local.pages():
        for mine in page:
            if mine.alive:
                live[mine.id] = mine.hash
                if current_level(None, mine.metadata, None, default_level) == PRIVATE_LEVEL:
                    private.add(mine.id)
                origin = mine.metadata.get("memsync_cloud_id")
                if isinstance(origin, str) and id_problem(origin) is None:
                    pulled_from.setdefault(origin, mine.id)

    def level_of(local_id: str, memory: CloudMemory) -> int:
        # the cloud's level never makes a local-only memory shared: such a pair is recorded at level 0,
        # so no resolution or push sends its text (the cloud's memsync_* metadata is a hint, not authority)
        return PRIVATE_LEVEL if local_id in private else cloud_level(memory.metadata)

    devices: Counter[str] = Counter()
    maybe_deleted: list[tuple[CloudMemory, str]] = []  # names a local id that is not live here
    mapped: set[str] = set()
    batch: list[Mapping] = []
    async for cloud_page in cloud.pages():
        for memory in cloud_page:
            local_id = memory.metadata.get("memsync_local_id")
            if isinstance(local_id, str) and id_problem(local_id) is not None:
                local_id = None
            device = memory.metadata.get("memsync_device")
            if isinstance(local_id, str) and local_id in live:
                if isinstance(device, str):
                    devices[device] += 1
            elif isinstance(local_id, str) and memory.id not in pulled_from:
                maybe_deleted.append((memory, local_id))
                continue
            else:
                local_id = pulled_from.get(memory.id)
            if local_id is None:
                report.unmatched_cloud += 1
                continue
            if local_id in mapped:
                report.duplicates += 1
                continue
            mapped.add(local_id)
            if live[local_id] == memory.hash:
                batch.append(Mapping(local_id, memory.id, memory.hash, memory.text, level_of(local_id, memory)))
            else:
                local = await syncer.local.get(local_id)
                _record_unknown_base(state, memory, local_id, local.text if local and local.alive else None, report,
                                     level_of(local_id, memory))
        state.save_mappings(batch)
        report.mapped += len(batch)
        batch = []
    device_id = old_device or (devices.most_common(1)[0][0] if devices else None)
    report.device_id_source = "old database" if old_device else "cloud metadata" if device_id else "new"
    if device_id:
        state.set_meta("device_id", device_id)
    for memory, local_id in maybe_deleted:
        if memory.metadata.get("memsync_device") != device_id or local_id in mapped:
            report.unmatched_cloud += 1
            continue
        local = await syncer.local.get(local_id)
        if local is None:  # never existed here: another store's memory
            report.unmatched_cloud += 1
            continue
        mapped.add(local_id)
        level = PRIVATE_LEVEL if current_level(None, local.metadata, None, default_level) == PRIVATE_LEVEL \
            else cloud_level(memory.metadata)
        if local.alive and local.hash == memory.hash:  # archived or paused: alive, just not listed
            state.save_mapping(Mapping(local_id, memory.id, memory.hash, memory.text, level))
            report.mapped += 1
        else:
            _record_unknown_base(state, memory, local_id, local.text if local.alive else None, report, level)


def _record_unknown_base(state: StateStore, memory: CloudMemory, local_id: str, local_text: str | None,
                         report: RebuildReport, level: int) -> None:
    """Map a pair whose sides differ with no usable base, and open its conflict (nothing is overwritten)."""
    state.save_mapping(Mapping(local_id, memory.id, UNKNOWN_BASE, "", level))
    reason = ("state rebuilt: the two sides differ and their last synced text is unknown" if local_text is not None
              else "state rebuilt: deleted locally, still in the cloud")
    state.record_conflict(local_id, memory.id, None, local_text, memory.text, reason)
    report.mapped += 1
    report.conflicts += 1


def _move_aside(path: Path) -> str | None:
    """Rename the old DB and its sidecars to ``<name>.corrupt-<ts>``; None when there was none."""
    if not path.exists():
        return None
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, aside)
    for suffix in _SIDECARS:
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists():
            os.replace(sidecar, aside.with_name(aside.name + suffix))
    return str(aside)


def _remove_with_sidecars(path: Path) -> None:
    for candidate in (path, *(path.with_name(path.name + s) for s in _SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
