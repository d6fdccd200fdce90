"""Serve an emulator over loopback TCP, with the faults a real network has: resets and streamed bodies.

The daemon's HTTP server (:mod:`memsyncd.daemon.http_server`) serves only its Unix control socket.
The emulators need three things more, and only they do, so they live here:

* :meth:`EmulatorHTTPServer.listen_tcp` — a TCP listener (port 0 picks a free port);
* :class:`ResetConnection` — raised by a handler, the connection is aborted with an RST
  (``SO_LINGER`` 0), not closed with a FIN: the ``reset`` and ``timeout`` faults;
* :class:`StreamingResponse` — a body sent chunk by chunk (chunked transfer encoding) as an
  async iterator yields it, so a fault can trickle or flood an answer without holding it in memory
  (the ``trickle`` and ``huge-body`` faults).

Everything else (framing, keep-alive, limits, error answers) is the daemon's server, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Iterable

import h11

from memsyncd.daemon.http_server import Connection, HTTPServer, Request, Response

__all__ = ["EmulatorHTTPServer", "ResetConnection", "StreamingResponse"]


class ResetConnection(Exception):
    """Raise from a handler to abort the TCP connection with RST (SO_LINGER 0)."""


class StreamingResponse(Response):
    """A 200-style response whose body is sent as ``stream`` yields it (chunked); ``body`` stays empty."""

    def __init__(self, status: int, stream: AsyncIterator[bytes], headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status, b"", list(headers))
        self.stream = stream


class _Reset(Response):
    """What a handler's :class:`ResetConnection` becomes: not sent, the connection is aborted instead."""

    def __init__(self) -> None:
        super().__init__(0)


class _FaultConnection(Connection):
    """A connection that can be reset and can stream a body."""

    def _error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, ResetConnection):
            return _Reset()
        return super()._error_response(request, exc)

    async def _respond(self, request: Request, response: Response) -> bool:
        if isinstance(response, _Reset):  # even when the client is gone: its socket still gets the RST
            self._reset()
            return False
        return await super()._respond(request, response)

    def _reset(self) -> None:
        """Abort the connection so the peer sees an RST, not a FIN."""
        if self.sock is not None and self.sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def _framing(self, response: Response, head: bool) -> tuple[str, str]:
        if isinstance(response, StreamingResponse) and not head:
            return ("transfer-encoding", "chunked")
        return super()._framing(response, head)

    async def _send_body(self, response: Response) -> None:
        if not isinstance(response, StreamingResponse):
            await super()._send_body(response)
            return
        async for chunk in response.stream:
            self.writer.write(self.conn.send(h11.Data(data=chunk)))
            await self.writer.drain()


class EmulatorHTTPServer(HTTPServer):
    """The daemon's HTTP server plus a TCP listener, connection resets and streamed bodies."""

    def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Connection:
        return _FaultConnection(self, reader, writer)

    async def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port``; port 0 picks a free port.

        Returns:
            The bound port.
        """
        server = await self._listen(
            lambda on_connection: asyncio.start_server(on_connection, host, port, reuse_address=True))
        return int(server.sockets[0].getsockname()[1])
