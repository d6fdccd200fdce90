"""Run the request pipeline every emulator shares: admin routes, log, faults, routing.

An emulator subclasses :class:`EmulatorService`, registers its API routes on
``self.router`` and fills in a few hooks (authentication, error bodies in the
emulated service's own style, admin snapshot and reset). The instance is an
``http_server.Handler``, served by :class:`~memsyncd.emulators.http.EmulatorHTTPServer`.

Pipeline of an API request: record it in the :class:`RequestLog` → injected
latency and fault (:mod:`.faults`) → route lookup (404) → authentication →
405 / handler. Requests under ``/_admin/`` skip the log, faults and
authentication.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from memsyncd.daemon.http_server import BadRequest, Request, Response
from memsyncd.emulators.faults import LISTING_FAULTS, FaultInjector, FaultSpec, FaultSpecError
from memsyncd.emulators.http import ResetConnection, StreamingResponse
from memsyncd.emulators.routing import Found, MethodNotAllowed, Router

__all__ = ["EmulatorService", "Reply", "RequestLog", "RouteHandler", "json_object", "shared_fault_response"]

RouteHandler = Callable[[Request, dict[str, str]], Awaitable[Response]]

REDACTED = "<redacted>"
_SECRET_HEADERS = frozenset({"authorization", "cookie", "x-api-key"})
_PROXY_PAGES = {
    502: "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
         "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    503: "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>"
         "503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
}


class Reply(Exception):
    """Raised by a route handler to answer at once with a prepared (error) response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class RequestLog:
    """A bounded, thread-safe log of the API requests an emulator received.

    Every entry carries ``seq``, numbered from 1 and never reused (not even after
    :meth:`clear`), so a reader can page through the log with ``since`` and tell
    from a gap in the numbers that the bound evicted entries it had not read yet.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._seq = 0

    def record(self, request: Request) -> dict[str, Any]:
        """Append an entry for ``request`` (status filled in later) and return it."""
        entry: dict[str, Any] = {
            "seq": 0,
            "method": request.method,
            "path": request.path,
            "target": request.target,  # as sent, before percent-decoding
            "query": dict(request.query),
            "headers": {k: (REDACTED if k in _SECRET_HEADERS else v) for k, v in request.headers.items()},
            "body": request.body.decode("utf-8", errors="replace"),
            "status": None,
            "fault": None,
        }
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)
        return entry

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        """A copy of the entries whose ``seq`` is above ``since`` (all by default), oldest first."""
        with self._lock:
            return [dict(e) for e in self._entries if e["seq"] > since]

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()


class EmulatorService(ABC):
    """Base class of the mem0 and OpenMemory emulators."""

    name: str = "emulator"

    def __init__(self, *, faults: FaultInjector | None = None) -> None:
        self.faults = faults or FaultInjector()
        self.log = RequestLog()
        self.router: Router[RouteHandler] = Router()
        self.admin: Router[RouteHandler] = Router()
        self.admin.add("GET", "/_admin/requests", self._admin_requests)
        self.admin.add("DELETE", "/_admin/requests", self._admin_clear_requests)
        self.admin.add("GET", "/_admin/fault", self._admin_get_fault)
        self.admin.add("POST", "/_admin/fault", self._admin_set_fault)
        self.admin.add("GET", "/_admin/state", self._admin_state)
        self.admin.add("POST", "/_admin/reset", self._admin_reset)

    # -- hooks ------------------------------------------------------------------

    @abstractmethod
    def authenticate(self, request: Request) -> Response | None:
        """Return an error response for an unauthenticated request, else ``None``."""

    @abstractmethod
    def not_found(self, request: Request) -> Response:
        """Response for a path no route knows."""

    @abstractmethod
    def method_not_allowed(self, request: Request, allowed: tuple[str, ...]) -> Response:
        """Response for a known path with the wrong method."""

    @abstractmethod
    def fault_response(self, fault: str, retry_after: int) -> Response:
        """Response for an injected HTTP-status fault (any of ``FAULT_KINDS`` but timeout/reset)."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """Everything stored, including deleted rows, for ``GET /_admin/state``."""

    @abstractmethod
    def reset_data(self) -> None:
        """Wipe the stored data (``POST /_admin/reset``)."""

    def is_listing(self, request: Request) -> bool:
        """True for the paginated listing route the listing faults rewrite; default: none."""
        return False

    async def misbehaving_listing(self, request: Request, fault: str) -> Response:
        """Answer a listing the ``repeat-page`` / ``endless-next`` way; default: normally."""
        return await self.route(request)

    def shutdown(self) -> None:  # noqa: B027 - an optional hook, not an abstract one
        """Release event-loop resources (timers) before the loop stops; default: nothing."""

    # -- pipeline -----------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        """Handle one request (the ``http_server.Handler`` interface)."""
        if request.path == "/_admin" or request.path.startswith("/_admin/"):
            return await self._dispatch_admin(request)
        entry = self.log.record(request)
        try:
            response = await self._dispatch_api(request, entry)
        except ResetConnection:
            raise
        except BadRequest:
            entry["status"] = 400
            raise
        except Exception:
            entry["status"] = 500
            raise
        entry["status"] = response.status
        return response

    async def _dispatch_api(self, request: Request, entry: dict[str, Any]) -> Response:
        decision = self.faults.decide(target=request.target, body=request.body.decode("utf-8", errors="replace"))
        if decision.latency_s > 0:
            await asyncio.sleep(decision.latency_s)
        if decision.fault is not None:
            entry["fault"] = decision.fault
            if decision.fault == "reset":
                raise ResetConnection()
            if decision.fault == "timeout":
                await request.wait_disconnected()
                raise ResetConnection()
            if decision.fault == "400-echo":  # a leaky gateway: the key comes back in the error body
                headers = ", ".join(f"{k}: {v}" for k, v in request.headers.items())
                return Response.json({"detail": f"Bad request {request.method} {request.target} ({headers})"}, 400)
            if decision.fault == "echo":
                return echo_response(request)
            if decision.fault in MISBEHAVING:
                return MISBEHAVING[decision.fault](request)
            if decision.fault not in LISTING_FAULTS:
                return self.fault_response(decision.fault, decision.retry_after)
        if decision.fault in LISTING_FAULTS and self.is_listing(request):
            return await self.misbehaving_listing(request, decision.fault)
        return await self.route(request)

    async def route(self, request: Request) -> Response:
        """Answer an API request the normal way: route lookup, authentication, handler."""
        match = self.router.match(request.method, request.path)
        if not isinstance(match, (Found, MethodNotAllowed)):
            return self.not_found(request)
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        if isinstance(match, MethodNotAllowed):
            return self.method_not_allowed(request, match.allowed)
        try:
            return await match.handler(request, match.params)
        except Reply as reply:
            return reply.response

    async def _dispatch_admin(self, request: Request) -> Response:
        match = self.admin.match(request.method, request.path)
        if isinstance(match, Found):
            try:
                return await match.handler(request, match.params)
            except Reply as reply:
                return reply.response
            except (BadRequest, FaultSpecError, ValueError) as exc:
                return Response.json({"detail": str(exc)}, status=400)
        if isinstance(match, MethodNotAllowed):
            return Response.json({"detail": "Method Not Allowed"}, status=405)
        return Response.json({"detail": "Not Found"}, status=404)

    # -- shared admin routes ------------------------------------------------------

    async def _admin_requests(self, request: Request, params: dict[str, str]) -> Response:
        since = request.query.get("since", "0")
        if not since.isdigit():
            raise BadRequest("since must be a non-negative integer (a request seq)")
        return Response.json(self.log.entries(int(since)))

    async def _admin_clear_requests(self, request: Request, params: dict[str, str]) -> Response:
        self.log.clear()
        return Response.json({"cleared": True})

    async def _admin_get_fault(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.faults.spec.to_json())

    async def _admin_set_fault(self, request: Request, params: dict[str, str]) -> Response:
        spec, seed = FaultSpec.parse(request.json())
        return Response.json(self.faults.set(spec, seed=seed).to_json())

    async def _admin_state(self, request: Request, params: dict[str, str]) -> Response:
        return Response.json(self.snapshot())

    async def _admin_reset(self, request: Request, params: dict[str, str]) -> Response:
        self.reset_data()
        return Response.json({"reset": True})


def shared_fault_response(fault: str) -> Response | None:
    """The injected faults both emulators answer alike: a proxy's 502/503 page and the two broken 200s.

    ``"malformed-200"`` is a 200 whose JSON body is cut off; ``"unexpected-shape-200"`` is
    well-formed JSON that is not what the route returns (a gateway or captive portal's answer).
    """
    if fault in ("502", "503"):
        return Response.text(_PROXY_PAGES[int(fault)], int(fault), content_type="text/html")
    if fault == "malformed-200":
        return Response(200, b'{"results": [{"id": "', [("content-type", "application/json")])
    if fault == "unexpected-shape-200":
        return Response.json({"message": "OK"})
    return None


HUGE_BODY_BYTES = 2**30
TRICKLE_INTERVAL_S = 0.2
TRICKLE_MAX_S = 120.0


def redirect_response(request: Request) -> Response:
    """The ``redirect`` fault: a 307 to the same path on a closed loopback port."""
    return Response(307, b"", [("location", f"http://127.0.0.1:9{request.target}")])


async def _huge_chunks() -> AsyncIterator[bytes]:
    chunk = b" " * 2**20
    for _ in range(HUGE_BODY_BYTES // len(chunk)):
        yield chunk


def huge_body_response(request: Request) -> Response:
    """The ``huge-body`` fault: a 200 whose (whitespace) body streams 1 GB."""
    return StreamingResponse(200, _huge_chunks(), [("content-type", "application/json")])


async def _trickle() -> AsyncIterator[bytes]:
    yield b"{"
    for _ in range(int(TRICKLE_MAX_S / TRICKLE_INTERVAL_S)):
        await asyncio.sleep(TRICKLE_INTERVAL_S)
        yield b" "
    yield b"}"


def trickle_response(request: Request) -> Response:
    """The ``trickle`` fault: a 200 whose body comes one byte every 0.2 s (for up to 2 minutes)."""
    return StreamingResponse(200, _trickle(), [("content-type", "application/json")])


MISBEHAVING: dict[str, Callable[[Request], Response]] = {
    "redirect": redirect_response, "huge-body": huge_body_response, "trickle": trickle_response,
}


def echo_response(request: Request) -> Response:
    """The ``echo`` fault: a proxy's 502 that repeats the request's credentials in its text body."""
    credentials = request.headers.get("authorization", "(none)")
    return Response.text(f"502 Bad Gateway: upstream refused the request (Authorization: {credentials}); "
                         f"{request.method} {request.path}", 502)


def json_object(request: Request) -> dict[str, Any]:
    """Decode an admin request body that must be a JSON object.

    Raises:
        BadRequest: not JSON or not an object.
    """
    body = request.json() if request.body.strip() else {}
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object")
    return body
