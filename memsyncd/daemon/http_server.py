"""Serve one async request handler over HTTP/1.1 on a Unix socket: the daemon's control socket.

The protocol work (parsing, framing, keep-alive, chunked bodies) is done by
``h11``; this module only moves bytes between asyncio streams and an
``h11.Connection`` and turns events into :class:`Request` / :class:`Response`.

What only the emulators need (a loopback TCP listener, connection resets,
streamed bodies for their faults) lives in :mod:`memsyncd.emulators.http`,
which extends :class:`HTTPServer` and :class:`Connection` through the few
``_``-methods marked *extension point* below. The daemon never imports it.

Behaviour worth knowing:

* Keep-alive is the default; ``Connection: close`` from either side ends it.
* Malformed HTTP gets ``400 {"detail": ...}`` (or h11's status hint, e.g. 431),
  then the connection is closed; the server keeps serving others.
* Bodies larger than ``max_body`` get ``413`` (checked on ``Content-Length``
  before reading, and while reading chunked bodies).
* A handler exception becomes ``500 {"detail": "Internal Server Error"}``;
  :class:`BadRequest` becomes its own status with ``{"detail": ...}``.
* ``peer_check`` (if given) is called with the peer uid (``SO_PEERCRED`` on
  Unix sockets, ``None`` on other sockets); ``False`` → ``403`` and close.
* ``max_connections`` (if given) caps the connections served at once; one more is
  answered ``503`` and closed at once, so idle or half-sent clients cannot use up the
  process's file descriptors.
* ``request_deadline`` (if given) is a total deadline for receiving one request, from
  the moment the server waits for it (idle keep-alive time included) to its last body
  byte; a client still sending at the deadline gets ``408`` and is closed.
* Errors accepting a connection (``EMFILE`` and friends, which asyncio reports once per
  retry) are logged once per burst, without a traceback, with the count of the
  previous burst (:func:`quiet_accept_errors`).
* A client that disconnects while its handler runs does not cancel the
  handler (a sync started over the control socket must not be torn down by a
  Ctrl-C in the CLI); the handler can await :meth:`Request.wait_disconnected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import h11

__all__ = [
    "BadRequest",
    "Connection",
    "HTTPServer",
    "Handler",
    "Request",
    "Response",
]

log = logging.getLogger(__name__)

READ_CHUNK = 65536
MAX_HEADER_BYTES = 64 * 1024
KEEPALIVE_TIMEOUT_S = 75.0
CLOSE_GRACE_S = 2.0
ACCEPT_BURST_S = 60.0  # accept errors closer together than this are one burst: logged once
_BUSY_BODY = b'{"detail": "Too many connections; retry in a moment"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
         b"content-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


class _AcceptErrorFilter:
    """A loop exception handler that turns asyncio's accept-error reports into one log line per burst."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.burst_started: float | None = None
        self.last: float = 0.0
        self.count = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith("socket.accept() out of system resource"):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = loop.time()
        exc = context.get("exception")
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        if self.burst_started is None or now - self.last > ACCEPT_BURST_S:
            if self.count > 1:
                log.warning("accept errors: %d in the previous burst", self.count)
            log.error("cannot accept connections: %s (the process is out of file descriptors or memory); "
                      "retrying every second, further errors of this burst are not logged", reason)
            self.burst_started, self.count = now, 0
        self.count += 1
        self.last = now


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Install (once per loop) the handler that logs accept errors once per burst, never as a storm."""
    current = loop.get_exception_handler()
    if not isinstance(current, _AcceptErrorFilter):
        loop.set_exception_handler(_AcceptErrorFilter(current))


class BadRequest(Exception):
    """Raised when a request cannot be understood (invalid JSON, bad parameters)."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Request:
    """One parsed HTTP request, body fully read."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer_uid: int | None
    _disconnected: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    def json(self) -> Any:
        """Decode the body as JSON.

        Returns:
            The decoded value.

        Raises:
            BadRequest: the body is empty, not UTF-8, not valid JSON or nested too deeply to decode.
        """
        if not self.body.strip():
            raise BadRequest("Request body is empty; expected JSON")
        try:
            return json.loads(self.body)
        except RecursionError:
            raise BadRequest("Invalid JSON body: nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise BadRequest(f"Invalid JSON body: {exc}") from None

    @property
    def disconnected(self) -> bool:
        """True once the client closed its side of the connection."""
        return self._disconnected.is_set()

    async def wait_disconnected(self) -> None:
        """Wait until the client closes the connection (or the server shuts down)."""
        await self._disconnected.wait()


@dataclass
class Response:
    """An HTTP response; the server adds ``content-length`` itself."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
        """Build a JSON response (UTF-8, ``application/json``)."""
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return cls(status, body, [("content-type", "application/json"), *headers])

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Response:
        """Build a text response."""
        return cls(status, text.encode("utf-8"), [("content-type", content_type)])


Handler = Callable[[Request], Awaitable[Response]]
ConnectionCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _ClientGone(Exception):
    """Raised internally when the peer closed the connection."""


class _Abort(Exception):
    """Raised internally to end a connection after an error response was sent."""


def peer_uid_of(sock: Any) -> int | None:
    """Return the uid of the process at the other end of a Unix socket.

    Args:
        sock: a connected ``AF_UNIX`` socket (or asyncio's socket wrapper).

    Returns:
        The peer uid, or ``None`` when the platform offers no way to learn it.
    """
    try:
        if hasattr(socket, "SO_PEERCRED"):  # Linux
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            return int(uid)
        if sys.platform == "darwin" or "bsd" in sys.platform:
            sol_local, local_peercred = 0, 0x001  # <sys/un.h>
            xucred = sock.getsockopt(sol_local, local_peercred, 76)
            _version, uid = struct.unpack_from("=2I", xucred)
            return int(uid)
    except OSError:
        return None
    return None


class HTTPServer:
    """Serve ``handler`` over HTTP/1.1 (h11) on any number of Unix-socket listeners."""

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "http",
        max_body: int = 10 * 2**20,
        peer_check: Callable[[int | None], bool] | None = None,
        max_connections: int | None = None,
        request_deadline: float | None = None,
    ) -> None:
        self._handler = handler
        self._max_connections = max_connections
        self._request_deadline = request_deadline
        self._name = name
        self._max_body = max_body
        self._peer_check = peer_check
        self._servers: list[asyncio.Server] = []
        self._unix_paths: list[str] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False

    async def listen_unix(self, path: str, mode: int = 0o600) -> None:
        """Listen on a Unix socket at ``path`` (a stale socket file is removed first).

        Raises:
            FileExistsError: ``path`` exists and is not a socket.
        """
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise FileExistsError(f"{path} exists and is not a socket")
            os.unlink(path)
        # bind, then narrow the mode before listen(): nobody can connect in between
        # (no process-wide umask change, which would race with other threads)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, mode)
            await self._listen(lambda on_connection: asyncio.start_unix_server(on_connection, sock=sock))
        except BaseException:
            sock.close()
            raise
        self._unix_paths.append(path)

    async def _listen(self, start: Callable[[ConnectionCallback], Awaitable[asyncio.Server]]) -> asyncio.Server:
        """Extension point: start one listener with ``start(on_connection)``; :meth:`close` stops it.

        Returns:
            The asyncio server (its ``sockets`` tell the bound address).
        """
        quiet_accept_errors(asyncio.get_running_loop())
        server = await start(self._on_connection)
        self._servers.append(server)
        return server

    async def close(self) -> None:
        """Stop listening, close every connection (bounded wait), remove socket files."""
        self._closing = True
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=CLOSE_GRACE_S)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), CLOSE_GRACE_S)
        self._servers.clear()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._unix_paths.clear()

    # -- connection handling -------------------------------------------------

    def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Connection:
        """Extension point: the object that serves one accepted connection."""
        return Connection(self, reader, writer)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        if self._max_connections is not None and len(self._connections) >= self._max_connections:
            with contextlib.suppress(Exception):
                writer.write(_BUSY)
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            return
        self._connections.add(task)
        try:
            await self._connection(reader, writer).serve()
        except asyncio.CancelledError:
            pass
        except Exception:  # never let one connection take the server down
            log.exception("%s: connection failed", self._name)
        finally:
            self._connections.discard(task)
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


class Connection:
    """One client connection: a loop of request → handler → response.

    The ``_``-methods marked *extension point* are what a subclass (the emulators') overrides.
    """

    def __init__(self, server: HTTPServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        sock = writer.get_extra_info("socket")
        self.sock = sock
        self.is_unix = sock is not None and sock.family == socket.AF_UNIX
        self.peer_uid = peer_uid_of(sock) if self.is_unix else None

    async def serve(self) -> None:
        while True:
            try:
                request = await self._read_request_in_time()
            except _ClientGone:
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint or 400
                await self._send_error(status, f"Malformed HTTP request: {exc}")
                return
            except _Abort:
                return
            if self.server._peer_check is not None and not self.server._peer_check(request.peer_uid):
                await self._send_error(403, "Forbidden: peer not allowed")
                return
            response = await self._run_handler(request)
            if not await self._respond(request, response):
                return
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _receive(self, timeout: float | None) -> None:
        try:
            data = await asyncio.wait_for(self.reader.read(READ_CHUNK), timeout)
        except (TimeoutError, ConnectionError) as exc:
            raise _ClientGone from exc
        self.conn.receive_data(data)

    async def _next_event(self, timeout: float | None = None) -> Any:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                await self._receive(timeout)
                continue
            if event is h11.PAUSED:
                raise _ClientGone  # cannot happen in our cycle discipline
            return event

    async def _read_request_in_time(self) -> Request:
        deadline = self.server._request_deadline
        if deadline is None:
            return await self._read_request()
        try:
            async with asyncio.timeout(deadline):
                return await self._read_request()
        except TimeoutError:
            await self._send_error(408, f"Request not received within {deadline:g} s")
            raise _ClientGone from None

    async def _read_request(self) -> Request:
        event = await self._next_event(KEEPALIVE_TIMEOUT_S)
        if isinstance(event, h11.ConnectionClosed):
            raise _ClientGone
        assert isinstance(event, h11.Request), event
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.server._max_body:
            await self._send_error(413, f"Request body too large (limit {self.server._max_body} bytes)")
            raise _Abort
        if self.conn.they_are_waiting_for_100_continue:
            self.writer.write(self.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = bytearray()
        while True:
            part = await self._next_event(KEEPALIVE_TIMEOUT_S)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.server._max_body:
                    await self._send_error(413, f"Request body too large (limit {self.server._max_body} bytes)")
                    raise _Abort
            elif isinstance(part, h11.EndOfMessage):
                break
            else:  # ConnectionClosed mid-body
                raise _ClientGone
        target = event.target.decode("latin-1")
        raw_path, _, raw_query = target.partition("?")
        return Request(
            method=event.method.decode("ascii"),
            target=target,
            path=unquote(raw_path),
            query=dict(parse_qsl(raw_query, keep_blank_values=True)),
            headers=headers,
            body=bytes(body),
            peer_uid=self.peer_uid,
        )

    async def _run_handler(self, request: Request) -> Response:
        """Run the handler while watching for the client going away."""
        handler_task: asyncio.Future[Response] = asyncio.ensure_future(self._call_handler(request))
        watch_task: asyncio.Future[bytes] | None = asyncio.ensure_future(self.reader.read(READ_CHUNK))
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {handler_task}
                if watch_task is not None:
                    waiting.add(watch_task)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if watch_task is not None and watch_task in done:
                    try:
                        data = watch_task.result()
                    except ConnectionError:
                        data = b""
                    watch_task = None
                    if data:
                        self.conn.receive_data(data)  # pipelined: h11 buffers it
                    else:
                        request._disconnected.set()
                if handler_task in done:
                    break
        finally:
            if watch_task is not None:
                watch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await watch_task
            if not handler_task.done():
                handler_task.cancel()
        return handler_task.result()

    async def _call_handler(self, request: Request) -> Response:
        try:
            return await self.server._handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._error_response(request, exc)

    def _error_response(self, request: Request, exc: Exception) -> Response:
        """Extension point: the answer to a handler's exception (``BadRequest`` → its status, else 500)."""
        if isinstance(exc, BadRequest):
            return Response.json({"detail": exc.detail}, status=exc.status)
        log.error("%s: handler failed for %s %s", self.server._name, request.method, request.path, exc_info=exc)
        return Response.json({"detail": "Internal Server Error"}, status=500)

    async def _respond(self, request: Request, response: Response) -> bool:
        """Extension point: send ``response`` unless the client is gone.

        Returns:
            False when the connection must end.
        """
        if request.disconnected:
            return False
        return await self._send(response, head=request.method == "HEAD")

    def _framing(self, response: Response, head: bool) -> tuple[str, str]:
        """Extension point: the header that frames the body (``content-length``)."""
        return ("content-length", str(len(response.body)))

    async def _send_body(self, response: Response) -> None:
        """Extension point: write the body (not called for HEAD)."""
        if response.body:
            self.writer.write(self.conn.send(h11.Data(data=response.body)))

    async def _send(self, response: Response, *, head: bool = False, close: bool = False) -> bool:
        headers = [(k, v) for k, v in response.headers if k.lower() not in ("content-length", "transfer-encoding")]
        headers.append(self._framing(response, head))
        if close:
            headers.append(("connection", "close"))
        try:
            reason = http.HTTPStatus(response.status).phrase.encode("ascii")
        except ValueError:
            reason = b""
        try:
            self.writer.write(self.conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason)))
            if not head:
                await self._send_body(response)
            self.writer.write(self.conn.send(h11.EndOfMessage()))
            await self.writer.drain()
        except (ConnectionError, h11.LocalProtocolError):
            return False
        return True

    async def _send_error(self, status: int, detail: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        await self._send(Response.json({"detail": detail}, status=status), close=True)
