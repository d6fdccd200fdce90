"""A lean HTTP/1.1 keep-alive transport for httpx: the local OpenMemory client's default for ``http://`` URLs.

Why it exists: profiling a 20k-memory first pull (``benchmarks/pull_pipeline.py``, cProfile of the
engine process, emulators in their own processes) showed the engine's own work was a small share;
the time went to httpcore's connection pool and anyio under it, per request: the pool's
reassignment of every queued request to every connection, a ``select.poll`` readability check of
the socket before each reuse, anyio's cancel scopes and socket attributes, and two socket writes
per request (head, then body). A bare ``httpx.AsyncClient`` making the same requests was already
1.4-2.9x the network ideal on 2 shared cores. Every pulled memory is one local create, so this
per-request cost is the pull's cost.

What it does: one asyncio stream connection per in-flight request, kept alive and reused (an idle
list per host, no pool bookkeeping); each request is one ``write``; answers are framed by
``Content-Length``, ``chunked`` or the end of the connection (RFC 9112 6.3), interim 1xx answers are
skipped. A body of up to 256 KiB with a ``Content-Length`` is read at once; larger, chunked or
close-delimited bodies are streamed as the caller reads them, so the caller's size cap
(:func:`memsyncd.remote.http_edge.send_once`) stops a huge answer early. A connection is reused
only when the answer was fully read, neither side said ``Connection: close`` and the server has
not closed it since (``at_eof``, no system call). httpx
above it still builds requests and responses (headers, JSON, content decoding, timeouts from the
client), and failures surface as the same httpx exceptions, so :mod:`memsyncd.remote.http_edge`
maps and retries them exactly as before. ``https://`` URLs keep httpx's own transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

MAX_IDLE_PER_HOST = 32
STREAM_LIMIT = 1 << 20  # longest head line or chunk-size line read at once
EAGER_BODY_BYTES = 256 * 1024  # a body with a Content-Length up to this is read at once; larger ones stream
_READ_CHUNK = 65536
_CHUNKED = -1
_UNTIL_CLOSE = -2
_NO_BODY_STATUSES = (204, 304)


class _Connection:
    """One open HTTP/1.1 connection."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        """Still open on both ends and with nothing unread (an idle server closing it shows as EOF)."""
        return not (self.reader.at_eof() or self.writer.is_closing() or self.reader._buffer)  # type: ignore[attr-defined]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def local_transport(base_url: str) -> httpx.AsyncBaseTransport | None:
    """The lean transport for a plain-HTTP server, None (httpx's default) for anything else."""
    return LeanTransport() if str(base_url).lower().startswith("http://") else None


class LeanTransport(httpx.AsyncBaseTransport):
    """httpx transport: HTTP/1.1 over reused asyncio stream connections (plain HTTP only)."""

    def __init__(self, *, max_idle_per_host: int = MAX_IDLE_PER_HOST) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_host

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"the lean transport speaks plain http only, not {url.scheme!r}",
                                            request=request)
        key = (url.host, url.port or 80)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        payload = _encode_request(request, await request.aread())
        conn = await self._connection(key, request, timeouts.get("connect"))
        try:
            try:
                conn.writer.write(payload)
                async with asyncio.timeout(timeouts.get("write")):  # (no task per call, unlike wait_for)
                    await conn.writer.drain()
            except TimeoutError:
                raise httpx.WriteTimeout("timed out sending the request", request=request) from None
            except OSError as exc:
                raise httpx.WriteError(f"{type(exc).__name__}: {exc}", request=request) from None
            try:
                async with asyncio.timeout(timeouts.get("read")):
                    status, reason, headers, framing = await _read_head(conn.reader, request.method)
                    body = await conn.reader.readexactly(framing) if 0 <= framing <= EAGER_BODY_BYTES else None
            except TimeoutError:
                raise httpx.ReadTimeout("timed out reading the answer", request=request) from None
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                raise httpx.RemoteProtocolError(f"malformed or cut answer ({type(exc).__name__})",
                                                request=request) from None
            except OSError as exc:
                raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from None
        except BaseException:  # errors and cancellation: the connection's state is unknown
            conn.close()
            raise
        reusable = not (_says_close(request.headers.get("connection")) or _says_close(_header(headers, b"connection")))
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": reason}
        if body is None:  # large, chunked or ended by the close: streamed, so the caller's size cap holds
            stream = _BodyStream(self, key, conn, framing, reusable and framing != _UNTIL_CLOSE, request,
                                 timeouts.get("read"))
            return httpx.Response(status, headers=headers, stream=stream, request=request, extensions=extensions)
        if reusable:
            self._release(key, conn)
        else:
            conn.close()
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body), request=request,
                              extensions=extensions)

    async def _connection(self, key: tuple[str, int], request: httpx.Request,
                          timeout: float | None) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.close()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(key[0], key[1], limit=STREAM_LIMIT)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None
        return _Connection(reader, writer)

    def _release(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        conns = [conn for group in idle.values() for conn in group]
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()


def _says_close(value: str | None) -> bool:
    return value is not None and "close" in value.lower()


def _encode_request(request: httpx.Request, body: bytes) -> bytes:
    """The request's head and body as one buffer (chunked when httpx asked for it)."""
    url = request.url
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
    chunked = False
    for name, value in request.headers.raw:
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    if chunked:
        lines.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")
    else:
        lines.append(body)
    return b"".join(lines)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _read_head(reader: asyncio.StreamReader,
                     method: str) -> tuple[int, bytes, list[tuple[bytes, bytes]], int]:
    """(status, reason, raw headers, framing) of one answer's head.

    ``framing`` is the body's length (0 when there is none), :data:`_CHUNKED`, or
    :data:`_UNTIL_CLOSE` (the body ends with the connection).

    Raises:
        ValueError: the answer is not HTTP/1.x.
        asyncio.IncompleteReadError: the connection closed mid-answer.
    """
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"status line {lines[0][:80]!r}")
        status = int(parts[1])
        if not 100 <= status < 200 or status == 101:
            break  # 1xx (100 Continue, 103 Early Hints) precede the real answer
    if status == 101:
        raise ValueError("the server switched protocols")
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError(f"header line {line[:80]!r}")
        name, value = name.strip(), value.strip()
        headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ValueError(f"content-length {value[:20]!r}")
            length = int(value)
        elif lower == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
    if parts[0] == b"HTTP/1.0":
        headers.append((b"connection", b"close"))  # HTTP/1.0: no keep-alive unless negotiated (we never do)
    reason = parts[2] if len(parts) > 2 else b""
    if method == "HEAD" or status in _NO_BODY_STATUSES:
        return status, reason, headers, 0
    if chunked:
        return status, reason, headers, _CHUNKED
    if length is not None:
        return status, reason, headers, length
    return status, reason, headers, _UNTIL_CLOSE


class _BodyStream(httpx.AsyncByteStream):
    """A body read from the connection as the caller iterates; the connection is reused only if read to its end."""

    def __init__(self, transport: LeanTransport, key: tuple[str, int], conn: _Connection, framing: int,
                 reusable: bool, request: httpx.Request, timeout: float | None) -> None:
        self._transport, self._key, self._conn = transport, key, conn
        self._framing, self._reusable, self._request, self._timeout = framing, reusable, request, timeout
        self._done = self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        try:
            if self._framing == _CHUNKED:
                chunks = _iter_chunked(reader)
            elif self._framing == _UNTIL_CLOSE:
                chunks = _iter_until_close(reader)
            else:
                chunks = _iter_length(reader, self._framing)
            while True:
                async with asyncio.timeout(self._timeout):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
                yield chunk
            self._done = True
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the answer", request=self._request) from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise httpx.RemoteProtocolError(f"malformed or cut answer ({type(exc).__name__})",
                                            request=self._request) from None
        except OSError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=self._request) from None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._done and self._reusable:
            self._transport._release(self._key, self._conn)
        else:
            self._conn.close()


async def _iter_length(reader: asyncio.StreamReader, length: int) -> AsyncIterator[bytes]:
    while length > 0:
        chunk = await reader.read(min(length, _READ_CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)
        yield chunk


async def _iter_until_close(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(_READ_CHUNK):
        yield chunk


async def _iter_chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip()
        size = int(size_line, 16)  # ValueError: not a chunk size
        if size == 0:
            break
        async for chunk in _iter_length(reader, size):
            yield chunk
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, then the empty line
        pass
