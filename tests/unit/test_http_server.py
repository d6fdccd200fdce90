"""Tests of memsyncd.daemon.http_server: framing, keep-alive, errors, limits, Unix sockets (the control socket).

What only the emulators add (TCP, resets, streamed bodies) is tested in test_emulator_http.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path

import h11
import httpx
import pytest
from harness import echo, raw_exchange, serve

from memsyncd.daemon.http_server import BadRequest, Request, Response

pytestmark = pytest.mark.timeout(30)


def read_response(sock: socket.socket, conn: h11.Connection) -> tuple[int, dict[str, str], bytes]:
    """Read one response from ``sock`` with an h11 client connection."""
    status, headers, body = 0, {}, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, headers, bytes(body)


def test_request_fields_are_parsed() -> None:
    """Path is percent-decoded, the last query value wins, header names are lower-cased."""
    with serve(echo) as s, s.client() as client:
        r = client.post("/a%20b/c?x=1&x=2&y=", content=b"hi", headers={"X-Thing": "v"})
    data = r.json()
    assert data["path"] == "/a b/c"
    assert data["target"] == "/a%20b/c?x=1&x=2&y="
    assert data["query"] == {"x": "2", "y": ""}
    assert data["headers"]["x-thing"] == "v"
    assert data["body"] == "hi"


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    """Two requests on the same socket both get answers and the socket stays open."""
    with serve(echo) as s, s.connect() as sock:
        conn = h11.Connection(h11.CLIENT)
        for n in range(2):
            sock.sendall(conn.send(h11.Request(method="GET", target=f"/n{n}", headers=[("host", "x")])))
            sock.sendall(conn.send(h11.EndOfMessage()))
            status, headers, body = read_response(sock, conn)
            assert status == 200
            assert json.loads(body)["path"] == f"/n{n}"
            assert headers["content-length"] == str(len(body))
            conn.start_next_cycle()


def test_chunked_request_body_is_reassembled() -> None:
    """A chunked upload arrives as one body."""
    payload = (
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    with serve(echo) as s:
        answer = raw_exchange(s, payload)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b'"body": "hello world"' in answer


def test_malformed_request_gets_400_and_server_keeps_serving() -> None:
    """Garbage on one connection → 400 JSON and close; the next client is served."""
    with serve(echo) as s:
        answer = raw_exchange(s, b"THIS IS NOT HTTP\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400")
        assert b"connection: close" in head.lower()
        assert "detail" in json.loads(body)
        with s.client() as client:
            assert client.get("/still-alive").status_code == 200


def test_handler_exception_is_500_json_and_not_fatal() -> None:
    """A crashing handler yields 500 JSON; later requests work."""

    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("boom")
        return Response.text("ok")

    with serve(handler) as s, s.client() as client:
        r = client.get("/boom")
        assert r.status_code == 500
        assert r.json() == {"detail": "Internal Server Error"}
        assert client.get("/fine").text == "ok"


def test_bad_request_from_json_is_400_detail() -> None:
    """Request.json() on invalid JSON raises BadRequest, answered as 400 {"detail"}."""

    async def handler(request: Request) -> Response:
        return Response.json(request.json())

    with serve(handler) as s, s.client() as client:
        r = client.post("/", content=b"{nope")
        assert r.status_code == 400
        assert "Invalid JSON" in r.json()["detail"]
        r = client.post("/", content=b"")
        assert r.status_code == 400
        r = client.post("/", content=b"[" * 200_000)  # json.loads raises RecursionError on this
        assert r.status_code == 400 and "nested too deeply" in r.json()["detail"]
        r = client.post("/", content=b"\xff\xfe\x00")
        assert r.status_code == 400 and "Invalid JSON" in r.json()["detail"]


def test_bad_request_status_is_kept() -> None:
    """A handler's BadRequest(status=...) is answered with that status."""

    async def handler(request: Request) -> Response:
        raise BadRequest("nope", status=409)

    with serve(handler) as s, s.client() as client:
        r = client.get("/")
    assert (r.status_code, r.json()) == (409, {"detail": "nope"})


def test_body_over_limit_by_content_length_is_413() -> None:
    """A declared Content-Length over max_body is refused before reading."""
    with serve(echo, max_body=100) as s:
        answer = raw_exchange(s, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 413")


def test_chunked_body_over_limit_is_413() -> None:
    """A chunked body growing past max_body is refused."""
    chunk = b"x" * 80
    payload = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"50\r\n" + chunk + b"\r\n") * 2
        + b"0\r\n\r\n"
    )
    with serve(echo, max_body=100) as s:
        answer = raw_exchange(s, payload)
    assert answer.startswith(b"HTTP/1.1 413")


def test_expect_100_continue_is_honoured() -> None:
    """A client waiting for 100-continue gets it, then the final response."""
    with serve(echo) as s, s.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        first = sock.recv(1024)
        assert first.startswith(b"HTTP/1.1 100")
        sock.sendall(b"ok")
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "2")]))
        conn.send(h11.Data(data=b"ok"))
        conn.send(h11.EndOfMessage())
        status, _, body = read_response(sock, conn)
    assert status == 200 and json.loads(body)["body"] == "ok"


def test_client_disconnect_wakes_wait_disconnected() -> None:
    """A handler waiting on wait_disconnected() finishes when the client gives up."""
    finished = threading.Event()

    async def handler(request: Request) -> Response:
        await request.wait_disconnected()
        finished.set()
        return Response.text("too late")

    with serve(handler) as s, s.client(timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/")
        assert finished.wait(5)


def test_close_is_bounded_with_a_stuck_handler() -> None:
    """close() returns promptly even while a handler never answers."""
    started = threading.Event()

    async def handler(request: Request) -> Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with serve(handler) as s, s.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert started.wait(5)
        t0 = time.monotonic()
        s.run(s.server.close())
        assert time.monotonic() - t0 < 3
        assert sock.recv(1024) == b""


def test_unix_socket_reports_peer_uid_and_mode(tmp_path: Path) -> None:
    """On a Unix socket the request carries the peer uid; the socket file is 0600."""
    path = str(tmp_path / "ctl.sock")
    with serve(echo, unix_path=path) as s:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, base_url="http://memsyncd") as client:
            data = client.get("/v1/health").json()
        assert data["path"] == "/v1/health"
        if hasattr(socket, "SO_PEERCRED"):
            assert data["peer_uid"] == os.getuid()
        del s
    assert not os.path.exists(path)


def test_unix_socket_replaces_stale_socket_file(tmp_path: Path) -> None:
    """A leftover socket file from a dead server does not block listening."""
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    with serve(echo, unix_path=path), httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
        assert client.get("http://x/").status_code == 200


def test_peer_check_false_is_403_and_close(tmp_path: Path) -> None:
    """A refused peer gets 403 JSON and the connection is closed."""
    path = str(tmp_path / "ctl.sock")
    seen: list[int | None] = []

    def check(uid: int | None) -> bool:
        seen.append(uid)
        return False

    with serve(echo, unix_path=path, peer_check=check), httpx.Client(transport=httpx.HTTPTransport(uds=path)) as client:
        r = client.get("http://x/v1/status")
    assert r.status_code == 403
    assert r.headers["connection"] == "close"
    assert "detail" in r.json()
    assert seen and (seen[0] == os.getuid() or not hasattr(socket, "SO_PEERCRED"))


def test_listen_unix_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    """A regular file at the socket path is never deleted."""
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    with pytest.raises(FileExistsError), serve(echo, unix_path=str(path)):
        pass
    assert path.read_text() == "keep me"
