"""The daemon's control API from the thin client: one HTTP/1.1 + JSON exchange over its Unix socket (stdlib).

Three outcomes a caller must tell apart:

* :class:`NoDaemon`: nothing listens (socket absent, connection refused, stale file): fall back
  to in-process work.
* :class:`DaemonSilent`: something accepted the connection but gave no usable answer in time
  (timeout, reset, not HTTP, not JSON): the caller decides (enqueue writes the file itself).
* :class:`DaemonAnswer`: an HTTP answer; error bodies ``{"error": {"type", "title", "message"}}``
  become the same :mod:`memsyncd.errors` error via :func:`~memsyncd.errors.error_from_dict`.

Design note: this speaks the few lines of HTTP/1.1 the exchange needs (one request with
``Connection: close``; an answer framed by ``Content-Length``, chunks, or the end of the
stream) instead of using ``http.client``. Importing ``http.client`` pulls in ``ssl`` and the
``email`` parser: about 18 ms on the development machine, most of an interpreter's own start-up,
paid by every ``memsyncctl status`` and ``enqueue``. The peer is always memsyncd's own h11
server; ``curl --unix-socket`` remains the general-purpose client.

For the same reason the socket is ``_socket.socket``, the C type that ``socket.socket`` subclasses:
``connect``, ``settimeout``, ``sendall``, ``recv`` and ``close`` are the same calls with the same
errors (``OSError``, ``TimeoutError``), while importing ``socket`` also loads ``selectors`` and
``array`` and builds its enums: about 1.4 ms of every ``memsyncctl status``, a fifth of what the
command costs above the interpreter's own start-up.
"""

from __future__ import annotations

import _socket  # the C module under ``socket``: see the design note above
import json
import os
import time

from memsyncd.errors import DaemonError, MemsyncError, error_from_dict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Path = str | os.PathLike[str]

CONNECT_TIMEOUT_SECONDS = 1.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 65536


class NoDaemon(Exception):
    """Raised when nothing accepts a connection on the socket."""


class DaemonSilent(Exception):
    """Raised when the daemon accepted the connection but gave no usable answer in time."""


class _Malformed(ValueError):
    """Internal: the bytes received are not an HTTP/1.x answer."""


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/")


def quote_query(value: str) -> str:
    """``value`` percent-encoded as ``urllib.parse.quote`` does (``/`` kept), without loading ``urllib``."""
    if all(ch in _UNRESERVED for ch in value):
        return value
    return "".join(ch if ch in _UNRESERVED else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in value)


class DaemonAnswer:
    """One HTTP answer: status and decoded body (JSON value, or text for ``text/plain``)."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DaemonAnswer) and (self.status, self.body) == (other.status, other.body)

    def __repr__(self) -> str:
        return f"DaemonAnswer(status={self.status!r}, body={self.body!r})"

    def error(self) -> MemsyncError:
        """The project error an error answer carries (a generic one when the body has none)."""
        detail = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(detail, dict):
            return error_from_dict(detail)
        return DaemonError(f"the daemon answered HTTP {self.status}: {str(self.body)[:200]}")

    def error_type(self) -> str | None:
        """The ``type`` of an error answer's error (``RootNotServedError``, ...), None otherwise."""
        detail = self.body.get("error") if isinstance(self.body, dict) and self.status >= 400 else None
        return str(detail.get("type")) if isinstance(detail, dict) else None

    def object(self) -> dict[str, Any]:
        """The body of a successful answer as a JSON object.

        Raises:
            MemsyncError: the answer was an error (rebuilt from its body), or not an object.
        """
        if self.status >= 400:
            raise self.error()
        if not isinstance(self.body, dict):
            raise DaemonError(f"the daemon answered with a JSON {type(self.body).__name__}, expected an object; "
                              "is the daemon the same version as memsyncctl?")
        return self.body


def call_daemon(socket_path: Path, method: str, path: str, *, body: Any = None, timeout: float,
                connect_timeout: float = CONNECT_TIMEOUT_SECONDS) -> DaemonAnswer:
    """Send one request and read the whole answer.

    Args:
        socket_path: the daemon's control socket.
        method: HTTP method.
        path: route, e.g. ``/v1/status``.
        body: a JSON-able request body, or None.
        timeout: seconds for the whole exchange once connected.
        connect_timeout: seconds to wait for the connection itself.

    Raises:
        NoDaemon: nothing accepted the connection.
        DaemonSilent: no complete, decodable answer within ``timeout``.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.settimeout(connect_timeout)
            sock.connect(str(socket_path))
        except OSError as exc:  # absent, refused, not a socket, path too long, connect timeout
            raise NoDaemon(f"{socket_path}: {exc.strerror or type(exc).__name__}") from None
        deadline = time.monotonic() + timeout
        try:
            sock.settimeout(timeout)
            sock.sendall(_request(method, path, body))
            status, headers, raw = _read_answer(_Stream(sock, deadline))
        except (OSError, _Malformed) as exc:  # TimeoutError is an OSError
            raise _silent(socket_path, timeout, exc) from None
    finally:
        sock.close()
    return _decode(socket_path, status, headers, raw)


async def acall_daemon(socket_path: Path, method: str, path: str, *, body: Any = None,
                       timeout: float | None, connect_timeout: float = CONNECT_TIMEOUT_SECONDS) -> DaemonAnswer:
    """:func:`call_daemon` for asyncio code (the slow commands): same request, parser and outcomes.

    ``timeout`` None waits as long as the daemon works (a whole sync); cancelling the task
    (Ctrl-C) closes the connection at once.
    """
    import asyncio  # here, not at the top: the fast paths never load asyncio

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket_path)), connect_timeout)
    except (OSError, TimeoutError) as exc:
        raise NoDaemon(f"{socket_path}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    try:
        writer.write(_request(method, path, body))
        raw = await asyncio.wait_for(_read_to_end(reader), timeout)
        status, headers, payload = _read_answer(_Stream.complete(raw))
    except (OSError, _Malformed) as exc:
        raise _silent(socket_path, timeout, exc) from None
    finally:
        writer.close()
    return _decode(socket_path, status, headers, payload)


def _silent(socket_path: Path, timeout: float | None, exc: Exception) -> DaemonSilent:
    """The one way both clients report a connection that gave no usable answer."""
    if isinstance(exc, TimeoutError):
        within = f" within {timeout:g} s" if timeout is not None else ""
        return DaemonSilent(f"no answer from {socket_path}{within}")
    if isinstance(exc, _Malformed):
        return DaemonSilent(f"{socket_path} did not answer in HTTP ({exc})")
    return DaemonSilent(f"{socket_path}: {type(exc).__name__}: {exc}")


async def _read_to_end(reader: Any) -> bytes:
    """Everything until the daemon closes the connection (it answers ``Connection: close``), capped."""
    data = b""
    while chunk := await reader.read(_READ_CHUNK):
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            raise _Malformed(f"answer larger than {MAX_ANSWER_BYTES} bytes")
    return data


def _decode(socket_path: Path, status: int, headers: dict[str, str], raw: bytes) -> DaemonAnswer:
    if headers.get("content-type", "").startswith("text/plain"):
        return DaemonAnswer(status, raw.decode("utf-8", errors="replace"))
    try:
        return DaemonAnswer(status, json.loads(raw) if raw.strip() else None)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise DaemonSilent(f"{socket_path} answered HTTP {status} with a body that is not JSON") from None


def _request(method: str, path: str, body: Any) -> bytes:
    payload = json.dumps(body).encode("utf-8") if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: memsyncd\r\nAccept: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(payload)}\r\n")
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return head.encode("ascii") + b"\r\n" + payload


class _Stream:
    """Buffered reads from the socket, each bounded by the exchange's deadline."""

    def __init__(self, sock: _socket.socket | None, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.eof = False

    @classmethod
    def complete(cls, data: bytes) -> _Stream:
        """A stream over an answer already read to its end (the asyncio client)."""
        stream = cls(None, 0.0)
        stream.buffer, stream.eof = data, True
        return stream

    def fill(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        assert self.sock is not None  # a complete stream is at its end and never fills
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(_READ_CHUNK)
        if not chunk:
            self.eof = True
        self.buffer += chunk
        if len(self.buffer) > MAX_ANSWER_BYTES:
            raise _Malformed(f"answer larger than {MAX_ANSWER_BYTES} bytes")

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if self.eof:
                raise _Malformed("the connection closed mid-answer")
            self.fill()
        line, self.buffer = self.buffer.split(marker, 1)
        return line

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if self.eof:
                raise _Malformed("the connection closed mid-answer")
            self.fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def rest(self) -> bytes:
        while not self.eof:
            self.fill()
        data, self.buffer = self.buffer, b""
        return data


def _read_answer(stream: _Stream) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one HTTP/1.x answer."""
    lines = stream.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise _Malformed(f"status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _Malformed(f"header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = stream.until(b"\r\n").split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _Malformed(f"chunk size {size_line[:20]!r}") from None
            if size == 0:
                break
            body += stream.exactly(size)
            stream.exactly(2)
        return int(parts[1]), headers, body
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise _Malformed(f"content-length {length[:20]!r}")
        return int(parts[1]), headers, stream.exactly(int(length))
    return int(parts[1]), headers, stream.rest()
