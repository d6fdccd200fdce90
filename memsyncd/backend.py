"""Where ``memsyncctl`` sends its commands: the running daemon, or an in-process one-shot engine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from filelock import FileLock, Timeout

from memsyncd.config import Paths, Settings, load_api_key, load_settings
from memsyncd.engine.decide import Keep
from memsyncd.errors import DaemonError, SyncUnavailableError
from memsyncd.logs import register_secret
from memsyncd.models import Conflict, SyncMode
from memsyncd.report import StatusReport, SyncReport
from memsyncd.runtime import pair_lock_path
from memsyncd.syncer import ProgressCallback, ScanKind, Syncer

RUN_LOCK_TIMEOUT = 600.0


class Backend(Protocol):
    """The commands ``memsyncctl`` needs, answered by the daemon or in-process."""

    async def sync(self, mode: SyncMode, *, dry_run: bool = False, confirm_deletes: bool = False) -> SyncReport: ...
    async def status(self) -> StatusReport: ...
    async def conflicts(self) -> list[Conflict]: ...
    async def conflict(self, conflict_id: int) -> Conflict: ...
    async def resolve(self, conflict_id: int, keep: Keep, text: str | None) -> dict[str, Any]: ...


def run_lock(settings: Settings) -> FileLock:
    """The lock that keeps to one sync at a time per pair of stores (daemon and one-shot alike).

    Every root whose config names the same OpenMemory user and mem0 scope takes the same lock,
    so two roots on one account never create the same memories at the same moment.
    """
    return FileLock(str(pair_lock_path(settings.pair_key)), timeout=RUN_LOCK_TIMEOUT, thread_local=False)


def build_syncer(paths: Paths, settings: Settings | None = None) -> Syncer:
    """A Syncer for ``paths`` with settings and key loaded the documented way."""
    settings = settings or load_settings(paths)
    key = load_api_key()
    register_secret(key.get_secret_value() if key else None)
    return Syncer(settings, paths, key.get_secret_value() if key else None)


class InProcessBackend:
    """Runs the engine in this process (no daemon running)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._syncer: Syncer | None = None
        self.progress: ProgressCallback | None = None  # handed to the engine when it is built

    @property
    def syncer(self) -> Syncer:
        """The engine, built on first use (so config errors surface per command)."""
        if self._syncer is None:
            self._syncer = build_syncer(self.paths)
            self._syncer.progress = self.progress
        return self._syncer

    def _configured(self) -> Syncer:
        """The engine, after checking (before anything is created on disk) that the cloud is configured."""
        if self._syncer is None and not (load_settings(self.paths).cloud.enabled and load_api_key()):
            raise SyncUnavailableError("Cloud sync is not configured.")
        syncer = self.syncer
        if not syncer.configured:
            raise SyncUnavailableError("Cloud sync is not configured.")
        return syncer

    @contextlib.contextmanager
    def _run_lock(self) -> Any:
        lock = run_lock(self.syncer.settings)
        try:
            lock.acquire()
        except Timeout:
            raise DaemonError(f"another sync of these stores has held {lock.lock_file} for {RUN_LOCK_TIMEOUT:.0f} s; "
                              "try again later.") from None
        try:
            yield
        finally:
            lock.release()

    async def sync(self, mode: SyncMode, *, dry_run: bool = False, confirm_deletes: bool = False) -> SyncReport:
        """A one-shot sync; push and full modes scan OpenMemory fully first (SPEC 4, Local changes)."""
        syncer = self._configured()
        wanted = syncer.settings.one_shot_scan
        scan = None if mode is SyncMode.PULL or wanted is None else ScanKind(wanted)
        with self._run_lock():
            return await syncer.run(mode, dry_run=dry_run, scan=scan, confirm_deletes=confirm_deletes)

    async def status(self) -> StatusReport:
        return await self._configured().status()

    async def conflicts(self) -> list[Conflict]:
        if not self.paths.state.exists():  # never synced: nothing to list, and nothing to create
            return []
        return self.syncer.conflicts()

    async def conflict(self, conflict_id: int) -> Conflict:
        return self.syncer.conflict(conflict_id)

    async def resolve(self, conflict_id: int, keep: Keep, text: str | None) -> dict[str, Any]:
        syncer = self._configured()
        with self._run_lock():
            return await syncer.resolve(conflict_id, keep, text)

    async def aclose(self) -> None:
        if self._syncer is not None:
            await self._syncer.aclose()


@contextlib.asynccontextmanager
async def open_backend(paths: Paths, *, socket_path: str | None = None,
                       allow_daemon: bool = True) -> AsyncIterator[Backend]:
    """The daemon's client when a daemon answers for this root, else the in-process engine."""
    from memsyncd.control_client import daemon_client

    async with daemon_client(paths, socket_path, allowed=allow_daemon) as client:
        if client is not None:
            yield client
            return
    backend = InProcessBackend(paths)
    try:
        yield backend
    finally:
        await backend.aclose()
