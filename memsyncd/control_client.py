"""The daemon's client: the control API over its Unix socket, typed errors rebuilt from a fixed registry."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from memsyncd.config import Paths
from memsyncd.control import conflict_from_json
from memsyncd.engine.decide import Keep
from memsyncd.errors import DaemonNotRunningError, MemsyncError, error_from_dict
from memsyncd.models import Conflict, QueueEntry, SyncMode
from memsyncd.report import StatusReport, SyncReport
from memsyncd.runtime import daemon_socket_candidates

PROBE_TIMEOUT = 2.0
CALL_TIMEOUT = 30.0


class DaemonClient:
    """Talks to a running daemon; same methods as the in-process backend."""

    def __init__(self, socket_path: Path, root: Path | None = None) -> None:
        self.socket_path = socket_path
        self.root = root
        self._http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket_path)),
                                       base_url="http://memsyncd", timeout=CALL_TIMEOUT,
                                       params={"root": str(root)} if root is not None else None)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, json: Any = None, timeout: float | None = CALL_TIMEOUT) -> Any:
        """One request; a JSON object (or the text of a text/plain answer); errors rebuilt and raised."""
        try:
            response = await self._http.request(method, path, json=json, timeout=timeout)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, FileNotFoundError) as exc:
            raise DaemonNotRunningError(f"no answer on {self.socket_path} ({type(exc).__name__})") from None
        if response.headers.get("content-type", "").startswith("text/plain"):
            return response.text
        body = response.json()
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                raise error_from_dict(error)
            raise MemsyncError(f"daemon answered {response.status_code}: {body}")
        return body

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self._call(method, path, **kwargs)
        if not isinstance(body, dict):
            raise MemsyncError(f"daemon answered {path} with {type(body).__name__}, expected an object")
        return body

    async def health(self) -> dict[str, Any]:
        return await self._object("GET", "/v1/health", timeout=PROBE_TIMEOUT)

    async def sync(self, mode: SyncMode, *, dry_run: bool = False, confirm_deletes: bool = False) -> SyncReport:
        payload = {"mode": mode.value, "dry_run": dry_run}
        if confirm_deletes:
            payload["confirm_deletes"] = True
        body = await self._call("POST", "/v1/sync", json=payload, timeout=None)
        return SyncReport.from_json(body)

    async def status(self) -> StatusReport:
        return StatusReport.from_json(await self._object("GET", "/v1/status", timeout=None))

    async def conflicts(self) -> list[Conflict]:
        body = await self._call("GET", "/v1/conflicts")
        return [conflict_from_json(c) for c in body["conflicts"]]

    async def conflict(self, conflict_id: int) -> Conflict:
        return conflict_from_json(await self._call("GET", f"/v1/conflicts/{conflict_id}"))

    async def resolve(self, conflict_id: int, keep: Keep, text: str | None) -> dict[str, Any]:
        payload = {"text": text} if keep is Keep.TEXT else {"keep": keep.value}
        return await self._object("POST", f"/v1/conflicts/{conflict_id}/resolve", json=payload, timeout=None)

    async def enqueue(self, entry: QueueEntry) -> dict[str, Any]:
        payload = {"id": entry.id, "action": entry.action, "level": entry.level, "content_hash": entry.content_hash}
        return await self._object("POST", "/v1/queue", json=payload)

    async def pause(self) -> dict[str, Any]:
        return await self._object("POST", "/v1/pause")

    async def resume(self) -> dict[str, Any]:
        return await self._object("POST", "/v1/resume")

    async def metrics(self) -> str:
        return str(await self._call("GET", "/v1/metrics"))


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
