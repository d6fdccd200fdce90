"""The slow commands' client of the daemon: the control API's routes as async methods.

It speaks through :func:`memsyncd.wire_http.acall_daemon`, the same stdlib HTTP exchange
and parser as the fast paths, so there is one client implementation; wire values come from
:mod:`memsyncd.wire`. Error answers become the same typed errors (``error_from_dict``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from memsyncd import wire
from memsyncd.config import Paths
from memsyncd.engine.report import StatusReport, SyncReport
from memsyncd.errors import DaemonError, DaemonNotRunningError, MemsyncError
from memsyncd.models import Conflict, QueueEntry, SyncMode
from memsyncd.store.paths import daemon_socket_candidates
from memsyncd.wire_http import DaemonSilent, NoDaemon, acall_daemon

PROBE_TIMEOUT = 2.0
CALL_TIMEOUT = 30.0


class DaemonClient:
    """Talks to a running daemon; same methods as the in-process backend."""

    def __init__(self, socket_path: Path, root: Path | None = None) -> None:
        self.socket_path = socket_path
        self.root = root
        self._query = f"?root={quote(str(root))}" if root is not None else ""

    async def aclose(self) -> None:
        """Nothing to close: every call is one connection (the daemon answers ``Connection: close``)."""

    async def _call(self, method: str, path: str, *, json: Any = None, timeout: float | None = CALL_TIMEOUT) -> Any:
        """One request; a JSON value (or the text of a text/plain answer); error answers raised as typed errors."""
        try:
            answer = await acall_daemon(self.socket_path, method, path + self._query, body=json, timeout=timeout)
        except NoDaemon as exc:
            raise DaemonNotRunningError(f"no answer on {self.socket_path} ({exc})") from None
        except DaemonSilent as exc:
            raise DaemonError(f"the daemon on {self.socket_path} did not answer in time ({exc}); check it with "
                              "'memsyncctl -v status' or restart it (systemctl --user restart memsyncd).") from None
        if answer.status >= 400:
            raise answer.error()
        return answer.body

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self._call(method, path, **kwargs)
        if not isinstance(body, dict):
            raise MemsyncError(f"daemon answered {path} with {type(body).__name__}, expected an object")
        return body

    async def health(self) -> dict[str, Any]:
        return await self._object("GET", wire.HEALTH, timeout=PROBE_TIMEOUT)

    async def sync(self, mode: SyncMode, *, dry_run: bool = False, confirm_deletes: bool = False) -> SyncReport:
        payload = {"mode": mode.value, "dry_run": dry_run}
        if confirm_deletes:
            payload["confirm_deletes"] = True
        body = await self._call("POST", wire.SYNC, json=payload, timeout=None)
        return SyncReport.from_json(body)

    async def status(self) -> StatusReport:
        return StatusReport.from_json(await self._object("GET", wire.STATUS, timeout=None))

    async def conflicts(self) -> list[Conflict]:
        body = await self._call("GET", wire.CONFLICTS)
        return [wire.conflict_from_json(c) for c in body["conflicts"]]

    async def conflict(self, conflict_id: int) -> Conflict:
        return wire.conflict_from_json(await self._call("GET", wire.conflict_route(conflict_id)))

    async def resolve(self, conflict_id: int, keep: wire.Keep, text: str | None) -> dict[str, Any]:
        payload = {"text": text} if keep is wire.Keep.TEXT else {"keep": keep.value}
        return await self._object("POST", wire.resolve_route(conflict_id), json=payload, timeout=None)

    async def enqueue(self, entry: QueueEntry) -> dict[str, Any]:
        payload = {"id": entry.id, "action": entry.action, "level": entry.level, "content_hash": entry.content_hash}
        return await self._object("POST", wire.QUEUE, json=payload)

    async def pause(self) -> dict[str, Any]:
        return await self._object("POST", wire.PAUSE)

    async def resume(self) -> dict[str, Any]:
        return await self._object("POST", wire.RESUME)

    async def metrics(self) -> str:
        return str(await self._call("GET", wire.METRICS))


@contextlib.asynccontextmanager
async def daemon_client(paths: Paths, socket_path: str | None = None, *,
                        allowed: bool = True) -> AsyncIterator[DaemonClient | None]:
    """The daemon's client while one answers for ``paths.root`` (closed on exit), else None."""
    client = await connect_daemon(paths, socket_path) if allowed else None
    try:
        yield client
    finally:
        if client is not None:
            await client.aclose()


async def connect_daemon(paths: Paths, socket_path: str | None = None) -> DaemonClient | None:
    """A client for the daemon that serves ``paths.root`` if one answers, else None.

    Tries ``--socket``, else the root's own daemon (``memsyncd run --root``), then the user's daemon;
    stale sockets and daemons that do not serve this root are skipped.
    """
    for path in daemon_socket_candidates(paths.root, socket_path):
        if not path.exists():
            continue
        client = DaemonClient(path, paths.root)
        try:
            health = await client.health()
        except DaemonNotRunningError:
            await client.aclose()
            continue
        except BaseException:
            with contextlib.suppress(Exception):
                await client.aclose()
            raise
        if health.get("root") == str(paths.root):
            return client
        await client.aclose()
    return None
