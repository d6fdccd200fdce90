"""The control API (HTTP/1.1 + JSON on the daemon's Unix socket): routes, validation, error bodies.

Routes (v1): ``GET /v1/health``, ``GET /v1/status``, ``POST /v1/sync``,
``GET /v1/conflicts``, ``GET /v1/conflicts/{id}``, ``POST /v1/conflicts/{id}/resolve``,
``POST /v1/queue``, ``POST /v1/pause``, ``POST /v1/resume``, ``GET /v1/metrics``, and
``GET|POST|DELETE /v1/roots``. Every route that concerns a root names it with ``?root=/abs/path``
(optional while the daemon serves one root); ``POST /v1/queue`` for a root the daemon does not
serve yet registers it and serves it from then on, unless it was removed with ``roots remove``
(404 ``RootNotServedError``: the client writes the queue file itself). ``POST /v1/roots`` takes
``{"path", "auto"?}``: ``auto`` true (the hook) respects that ignore list, false (``roots add``) clears it.
``POST /v1/sync`` takes ``{"mode": "full"|"push"|"pull", "dry_run": bool, "confirm_deletes": bool}``
(push and full runs scan OpenMemory fully first; ``confirm_deletes`` lets held local deletions reach the cloud).
Errors are ``{"error": {"type", "title", "message"}}`` with a 4xx/5xx status; the
client rebuilds them from the fixed registry in :mod:`memsyncd.errors`. A body that is not
JSON (including nesting too deep to decode) is a 400; an unexpected exception in a route is a
500 with a short JSON error, its traceback only in the daemon's log (secrets redacted there).
``POST /v1/queue`` spools the entry (``"spooled": true``, :mod:`memsyncd.store.spool`) when another process
holds the queue lock for more than a moment, and answers 503 ``QueueBusyError`` only when even that
fails (the client then falls back itself).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Protocol

import structlog

from memsyncd import wire
from memsyncd.daemon.http_server import BadRequest, Request, Response
from memsyncd.engine.report import StatusReport, SyncReport
from memsyncd.errors import (
    EXIT_AUTH,
    EXIT_NETWORK,
    EXIT_UNAVAILABLE,
    EXIT_UNREADABLE,
    ConflictError,
    DaemonError,
    MemsyncError,
    QueueBusyError,
    RootNotServedError,
    UntrustedRootError,
    UsageError,
)
from memsyncd.ids import id_problem
from memsyncd.models import Conflict, QueueEntry, SyncMode, format_ts, utc_now

log = structlog.get_logger("memsyncd.daemon.control")

API_VERSION = "v1"
_CONFLICT = re.compile(r"^/v1/conflicts/(\d+)$")
_RESOLVE = re.compile(r"^/v1/conflicts/(\d+)/resolve$")


class RootApi(Protocol):
    """What the control API needs from one root's service."""

    async def status(self) -> StatusReport: ...
    async def sync(self, mode: SyncMode, *, dry_run: bool = False, confirm_deletes: bool = False) -> SyncReport: ...
    async def conflicts(self) -> list[Conflict]: ...
    async def conflict(self, conflict_id: int) -> Conflict: ...
    async def resolve(self, conflict_id: int, keep: wire.Keep, text: str | None) -> dict[str, Any]: ...
    async def enqueue(self, entry: QueueEntry) -> bool | None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


class DaemonApi(Protocol):
    """What the control API needs from the daemon: its roots, and the process's own answers."""

    def service_for(self, root: str | None) -> RootApi: ...
    async def register(self, root: str, *, auto: bool = True) -> RootApi: ...
    async def remove_root(self, root: Path) -> bool: ...
    async def roots_summary(self) -> list[dict[str, Any]]: ...
    def root_problem(self, root: str | None) -> dict[str, Any] | None: ...
    def health(self, root: str | None = None) -> dict[str, Any]: ...
    async def metrics_text(self, root: str | None = None) -> str: ...


def _status_for(error: MemsyncError) -> int:
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, QueueBusyError):
        return 503
    if isinstance(error, RootNotServedError):
        return 404
    if isinstance(error, UntrustedRootError):
        return 403
    if isinstance(error, UsageError):
        return 404 if "no open conflict" in error.message else 400
    return {EXIT_UNAVAILABLE: 503, EXIT_AUTH: 502, EXIT_NETWORK: 502, EXIT_UNREADABLE: 500}.get(error.exit_code, 500)


def error_response(error: MemsyncError, status: int | None = None) -> Response:
    """JSON error body for a project error."""
    return Response.json(wire.error_body(error), status=status or _status_for(error))


def _bad(message: str, status: int = 400) -> Response:
    return error_response(UsageError(message), status)


def _object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    if optional and not request.body.strip():
        return {}
    body = request.json()
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object body")
    return body


class ControlApi:
    """Routes requests to the daemon."""

    def __init__(self, daemon: DaemonApi) -> None:
        self.daemon = daemon

    async def __call__(self, request: Request) -> Response:
        log.debug("control.request", method=request.method, path=request.path, root=request.query.get("root"))
        try:
            return await self._route(request)
        except BadRequest as exc:
            return _bad(exc.detail, exc.status)
        except MemsyncError as exc:
            return error_response(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: a short answer here, the traceback in the log only
            log.exception("control.request_failed", method=request.method, path=request.path,
                          error_type=type(exc).__name__)
            return error_response(DaemonError(
                f"the daemon failed on {request.method} {request.path} ({type(exc).__name__}); details are in "
                "its log. Retry, and report it if it happens again.", title="memsyncd internal error"), 500)

    async def _route(self, request: Request) -> Response:
        method, path = request.method, request.path.rstrip("/") or "/"
        root = request.query.get("root") or None
        if method == "GET" and path == wire.HEALTH:
            return Response.json(self.daemon.health(root))
        if method == "GET" and path == wire.METRICS:
            return Response.text(await self.daemon.metrics_text(root),
                                 content_type="text/plain; version=0.0.4; charset=utf-8")
        if path == wire.ROOTS:
            return await self._roots(method, request, root)
        if method == "GET" and path == wire.STATUS:
            status = await self.daemon.service_for(root).status()
            problem = self.daemon.root_problem(root)
            if problem is not None:  # e.g. a rejected config.json while the last good one runs
                status.attention.insert(0, problem)
            status.daemon = self.daemon.health(root)
            return Response.json(status.to_json())
        if method == "GET" and path == wire.CONFLICTS:
            conflicts = await self.daemon.service_for(root).conflicts()
            return Response.json({"conflicts": [wire.conflict_to_json(c) for c in conflicts]})
        if method == "POST" and path == wire.SYNC:
            return await self._sync(request, root)
        if method == "POST" and path == wire.QUEUE:
            return await self._enqueue(request, root)
        if method == "POST" and path in (wire.PAUSE, wire.RESUME):
            service = self.daemon.service_for(root)
            (service.pause if path == wire.PAUSE else service.resume)()
            return Response.json(self.daemon.health(root))
        match = _CONFLICT.match(path)
        if match and method == "GET":
            conflict = await self.daemon.service_for(root).conflict(int(match.group(1)))
            return Response.json(wire.conflict_to_json(conflict))
        match = _RESOLVE.match(path)
        if match and method == "POST":
            return await self._resolve(int(match.group(1)), request, root)
        if path in wire.ROOT_ROUTES or _CONFLICT.match(path) or _RESOLVE.match(path):
            return _bad(f"method {method} is not allowed on {path}", 405)
        return _bad(f"no route {path}; see the control API in the README", 404)

    async def _roots(self, method: str, request: Request, root: str | None) -> Response:
        """``GET`` lists every root; ``POST {"path"}`` serves one from now on; ``DELETE ?root=`` forgets one."""
        if method == "GET":
            return Response.json({"roots": await self.daemon.roots_summary()})
        if method == "POST":
            body = _object(request)
            target, auto = body.get("path"), body.get("auto", False)
            if not isinstance(target, str) or not target.startswith("/"):
                return _bad('"path" must be the absolute path of a project directory (the one holding .claude/)')
            if not isinstance(auto, bool):
                return _bad('"auto" must be true (a client wrote its queue) or false (roots add)')
            await self.daemon.register(target, auto=auto)
            return Response.json({"root": target, "served": True}, status=201)
        if method == "DELETE":
            if root is None:
                return _bad("name the root to forget with ?root=/path/to/project")
            return Response.json({"root": root, "removed": await self.daemon.remove_root(Path(root))})
        return _bad(f"method {method} is not allowed on /v1/roots", 405)

    async def _sync(self, request: Request, root: str | None) -> Response:
        body = _object(request, optional=True)
        try:
            mode = SyncMode(body.get("mode", "full"))
        except ValueError:
            return _bad('"mode" must be "full", "push" or "pull"')
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            return _bad('"dry_run" must be true or false')
        confirm_deletes = body.get("confirm_deletes", False)
        if not isinstance(confirm_deletes, bool):
            return _bad('"confirm_deletes" must be true or false')
        extra = {"confirm_deletes": True} if confirm_deletes else {}
        report = await self.daemon.service_for(root).sync(mode, dry_run=dry_run, **extra)
        return Response.json(report.to_json())

    async def _enqueue(self, request: Request, root: str | None) -> Response:
        body = _object(request)
        memory_id, action = body.get("id"), body.get("action", "push")
        level, digest = body.get("level"), body.get("content_hash")
        problem = id_problem(memory_id)
        if problem is not None or not isinstance(memory_id, str):
            return _bad(f'"id": {problem}')
        if action not in ("push", "delete"):
            return _bad('"action" must be "push" or "delete"')
        if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
            return _bad('"level" must be a non-negative integer')
        if digest is not None and not isinstance(digest, str):
            return _bad('"content_hash" must be a string')
        entry = QueueEntry(memory_id, action, format_ts(utc_now()), digest, level)
        try:
            service = self.daemon.service_for(root)
        except RootNotServedError:
            if root is None:
                raise
            service = await self.daemon.register(root, auto=True)  # a client wrote its queue: serve it from now on
        spooled = bool(await service.enqueue(entry))
        return Response.json({"queued": memory_id, "action": action, "spooled": spooled}, status=202)

    async def _resolve(self, conflict_id: int, request: Request, root: str | None) -> Response:
        body = _object(request)
        keep_raw, text = body.get("keep"), body.get("text")
        if (keep_raw is None) == (text is None):
            return _bad('give exactly one of "keep" ("local"|"cloud"|"both") or "text"')
        if text is not None and not isinstance(text, str):
            return _bad('"text" must be a string')
        try:
            keep = wire.Keep(keep_raw) if keep_raw is not None else wire.Keep.TEXT
        except ValueError:
            return _bad('"keep" must be "local", "cloud" or "both"')
        if keep is wire.Keep.TEXT and keep_raw is not None:
            return _bad('"keep" must be "local", "cloud" or "both"')
        return Response.json(await self.daemon.service_for(root).resolve(conflict_id, keep, text))
