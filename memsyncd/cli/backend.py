"""Where ``memsyncctl`` sends its commands: the running daemon, or an in-process one-shot engine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from memsyncd.config import Paths, load_api_key, load_trusted_settings
from memsyncd.engine.report import StatusReport, SyncReport
from memsyncd.engine.syncer import ProgressCallback, ScanKind, Syncer, build_syncer, command_error
from memsyncd.errors import SyncUnavailableError
from memsyncd.models import Conflict, SyncMode
from memsyncd.store.locks import pair_run_lock
from memsyncd.wire import Keep

RUN_LOCK_TIMEOUT = 600.0


class Backend(Protocol):
    """The commands ``memsyncctl`` needs, answered by the daemon or in-process."""

    async def sync(self, mode: SyncMode, *, dry_run: bool = False, confirm_deletes: bool = False) -> SyncReport: ...
    async def status(self) -> StatusReport: ...
    async def conflicts(self) -> list[Conflict]: ...
    async def conflict(self, conflict_id: int) -> Conflict: ...
    async def resolve(self, conflict_id: int, keep: Keep, text: str | None) -> dict[str, Any]: ...


class InProcessBackend:
    """Runs the engine in this process (no daemon running)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._syncer: Syncer | None = None

    @property
    def syncer(self) -> Syncer:
        """The engine, built on first use (so config errors surface per command)."""
        if self._syncer is None:
            self._syncer = build_syncer(self.paths)
        return self._syncer

    def _configured(self) -> Syncer:
        """The engine, after checking (before anything is created on disk) that the cloud is configured."""
        if self._syncer is None and not (load_trusted_settings(self.paths).cloud.enabled and load_api_key()):
            raise SyncUnavailableError("Cloud sync is not configured.")
        syncer = self.syncer
        if not syncer.configured:
            raise SyncUnavailableError("Cloud sync is not configured.")
        return syncer

    def _run_lock(self) -> contextlib.AbstractAsyncContextManager[Path]:
        return pair_run_lock(self.syncer.settings.pair_key, wait_seconds=RUN_LOCK_TIMEOUT,
                             busy=lambda lock, waited: f"another sync of these stores has held {lock} for "
                                                       f"{waited:.0f} s; try again later.")

    async def sync(self, mode: SyncMode, *, dry_run: bool = False, confirm_deletes: bool = False,
                   progress: ProgressCallback | None = None) -> SyncReport:
        """A one-shot sync; push and full modes scan OpenMemory fully first (SPEC 4, Local changes).

        ``progress`` hears the run as it goes (see :meth:`Syncer.run`).

        Raises:
            MemsyncError: what ended the run when it is the command's error, not a run-level stop the
                report shows (:func:`~memsyncd.engine.syncer.command_error`).
        """
        syncer = self._configured()
        wanted = syncer.settings.one_shot_scan
        scan = None if mode is SyncMode.PULL or wanted is None else ScanKind(wanted)
        async with self._run_lock():
            report = await syncer.run(mode, dry_run=dry_run, scan=scan, confirm_deletes=confirm_deletes,
                                      progress=progress)
        error = command_error(report)
        if error is not None:
            raise error
        return report

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
        async with self._run_lock():
            return await syncer.resolve(conflict_id, keep, text)

    async def aclose(self) -> None:
        if self._syncer is not None:
            await self._syncer.aclose()


@contextlib.asynccontextmanager
async def open_backend(paths: Paths, *, socket_path: str | None = None,
                       allow_daemon: bool = True) -> AsyncIterator[Backend]:
    """The daemon's client when a daemon answers for this root, else the in-process engine."""
    from memsyncd.cli.control_client import daemon_client

    async with daemon_client(paths, socket_path, allowed=allow_daemon) as client:
        if client is not None:
            yield client
            return
    backend = InProcessBackend(paths)
    try:
        yield backend
    finally:
        await backend.aclose()
