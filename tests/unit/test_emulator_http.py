"""Tests of memsyncd.emulators.http: what the emulators add to the daemon's HTTP server (TCP, resets, streams)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from harness import Served, echo, raw_exchange, running

from memsyncd.daemon.http_server import BadRequest, Request, Response
from memsyncd.emulators.http import EmulatorHTTPServer, ResetConnection, StreamingResponse

pytestmark = pytest.mark.timeout(30)


@contextmanager
def serve_tcp(handler: Callable[[Request], Any], **kwargs: Any) -> Iterator[Served]:
    """Serve ``handler`` with the emulators' server on 127.0.0.1, a free port."""
    server = EmulatorHTTPServer(handler, **kwargs)

    async def listen(served: Served) -> None:
        served.port = await server.listen_tcp("127.0.0.1", 0)

    with running(server, listen) as served:
        yield served


def test_tcp_listener_serves_with_no_peer_uid() -> None:
    """Port 0 binds a free loopback port; a TCP request is parsed as on the Unix socket, without a peer uid."""
    with serve_tcp(echo) as s, s.client() as client:
        assert s.port and s.port > 0
        r = client.post("/a%20b?x=1", content=b"hi", headers={"X-Thing": "v"})
    data = r.json()
    assert (data["path"], data["query"], data["body"], data["headers"]["x-thing"]) == ("/a b", {"x": "1"}, "hi", "v")
    assert data["peer_uid"] is None


def test_reset_connection_aborts_with_rst() -> None:
    """ResetConnection from a handler resets the TCP connection."""

    async def handler(request: Request) -> Response:
        raise ResetConnection()

    with serve_tcp(handler) as s:
        with s.client() as client, pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.get("/")
        with s.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(ConnectionResetError):
                sock.recv(1024)
                sock.recv(1024)


def test_reset_reaches_a_client_that_stopped_sending() -> None:
    """A client that half-closed while the handler ran (the ``timeout`` fault's case) still gets the RST."""
    release = threading.Event()

    async def handler(request: Request) -> Response:
        await request.wait_disconnected()
        release.set()
        raise ResetConnection()

    with serve_tcp(handler) as s, s.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert release.wait(5)
        with pytest.raises(ConnectionResetError):
            while sock.recv(1024):
                pass


def test_handler_errors_are_still_answered_as_by_the_daemon_server() -> None:
    """Besides ResetConnection, a handler's BadRequest keeps its status and any other exception is a 500."""

    async def handler(request: Request) -> Response:
        if request.path == "/bad":
            raise BadRequest("nope", status=409)
        raise RuntimeError("boom")

    with serve_tcp(handler) as s, s.client() as client:
        r = client.get("/bad")
        assert (r.status_code, r.json()) == (409, {"detail": "nope"})
        r = client.get("/boom")
        assert (r.status_code, r.json()) == (500, {"detail": "Internal Server Error"})


def test_streaming_response_is_sent_chunked_as_it_is_produced() -> None:
    """A StreamingResponse goes out with chunked encoding, each chunk as it comes; HEAD gets no body."""
    second = asyncio.Event()
    first_seen = threading.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": '
        await second.wait()  # the client has read the first chunk before the second exists
        yield b"1}"

    async def handler(request: Request) -> Response:
        second.clear()
        return StreamingResponse(200, chunks(), [("content-type", "application/json")])

    with serve_tcp(handler) as s:
        with s.client() as client, client.stream("GET", "/") as r:
            assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
            parts = r.iter_raw()
            assert next(parts) == b'{"a": '
            first_seen.set()
            s.loop.call_soon_threadsafe(second.set)
            assert b"".join(parts) == b"1}"
        assert first_seen.is_set()
        answer = raw_exchange(s, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 0" in head.lower() and body == b""


def test_plain_responses_keep_their_content_length() -> None:
    """An ordinary Response from the emulators' server is framed by content-length, as by the daemon's."""
    with serve_tcp(echo) as s:
        answer = raw_exchange(s, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"content-length: {len(body)}".encode() in head.lower()
    assert b"transfer-encoding" not in head.lower()
