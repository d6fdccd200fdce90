"""The local client's lean HTTP/1.1 transport: framing, keep-alive reuse, and failures as httpx's own exceptions."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec

import httpx
import pytest

from memsyncd.errors import LocalUnreachableError, ServerError
from memsyncd.remote.http_edge import RetryPolicy
from memsyncd.remote.lean_http import LeanTransport, local_transport
from memsyncd.remote.local import LocalClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
P = ParamSpec("P")


def run_async(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """A synchronous test running ``test`` in a fresh event loop (bounded by pytest-timeout)."""

    @functools.wraps(test)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server running ``handler`` per connection; yields its URL and the connection count."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(request line, body) of one request, None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")), 0)
    return lines[0], await reader.readexactly(length)


def answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body), b"".join(h + b"\r\n" for h in extra), body)


async def echo_keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (request := await read_request(reader)) is not None:
        line, body = request
        writer.write(answer(json.dumps({"line": line.decode(), "body": body.decode()}).encode()))
        await writer.drain()


@run_async
async def test_requests_reuse_one_connection_and_carry_body_and_query() -> None:
    async with serve(echo_keep_alive) as (url, connections), \
            httpx.AsyncClient(base_url=url, transport=LeanTransport()) as client:
        for n in range(5):
            response = await client.post("/api/v1/memories/", params={"n": str(n)}, json={"text": f"t{n}"})
            assert response.status_code == 200
            seen = response.json()
            assert seen["line"] == f"POST /api/v1/memories/?n={n} HTTP/1.1"
            assert json.loads(seen["body"]) == {"text": f"t{n}"}
        assert len(connections) == 1


@run_async
async def test_chunked_and_close_delimited_answers_and_interim_1xx() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            if b"chunked" in request[0]:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                             b"3\r\n{\"a\r\n5;x=y\r\n\": 1}\r\n0\r\ntrailer: t\r\n\r\n")
            elif b"eof" in request[0]:
                writer.write(b"HTTP/1.1 200 OK\r\n\r\n{\"b\": 2}")
                await writer.drain()
                return
            else:
                writer.write(answer(b"{}"))
            await writer.drain()

    async with serve(handler) as (url, connections), \
            httpx.AsyncClient(base_url=url, transport=LeanTransport()) as client:
        assert (await client.get("/chunked")).json() == {"a": 1}
        assert (await client.get("/eof")).json() == {"b": 2}  # same connection; the answer ends with it
        assert (await client.get("/again")).status_code == 200  # a new connection
        assert len(connections) == 2


@run_async
async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()  # then close: keep-alive ended by the server without saying so

    async with serve(one_answer) as (url, connections), \
            httpx.AsyncClient(base_url=url, transport=LeanTransport()) as client:
        assert (await client.get("/1")).status_code == 200
        await asyncio.sleep(0.05)  # the close reaches the client
        assert (await client.get("/2")).status_code == 200
        assert len(connections) == 2


@pytest.mark.parametrize("reply", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
                                   b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"])
@run_async
async def test_malformed_or_cut_answers_are_server_errors_through_the_client(reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(reply)
            await writer.drain()
            writer.close()
            return

    async with serve(handler) as (url, _):
        client = LocalClient(url, "u", policy=RetryPolicy(attempts=1))
        with pytest.raises(ServerError, match="dropped the connection"):
            await client.get("00000000-0000-0000-0000-000000000000")
        await client.aclose()


@run_async
async def test_a_silent_server_times_out_and_nothing_listening_is_unreachable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with serve(silent) as (url, _):
        client = LocalClient(url, "u", policy=RetryPolicy(attempts=1), timeout=0.2)
        with pytest.raises(ServerError, match="within 0.2 s|did not answer in time"):
            await client.get("00000000-0000-0000-0000-000000000000")
        await client.aclose()
    client = LocalClient(url, "u", policy=RetryPolicy(attempts=1))  # the server is gone
    with pytest.raises(LocalUnreachableError):
        await client.get("00000000-0000-0000-0000-000000000000")
    await client.aclose()


def test_only_plain_http_gets_the_lean_transport() -> None:
    assert isinstance(local_transport("http://localhost:8765"), LeanTransport)
    assert local_transport("https://memory.example") is None


@run_async
async def test_large_bodies_stream_and_the_size_cap_stops_them_early() -> None:
    """Bodies past the eager limit are read as the caller iterates: whole when wanted, abandoned at the cap."""
    from memsyncd.errors import ResponseTooLargeError
    from memsyncd.remote.http_edge import send_once
    from memsyncd.remote.lean_http import EAGER_BODY_BYTES

    big = b'"' + b"x" * (EAGER_BODY_BYTES * 3) + b'"'
    sent: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            if b"chunked" in request[0]:
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for start in range(0, len(big), 100_000):
                    part = big[start:start + 100_000]
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(answer(big))
            sent.append(1)
            await writer.drain()

    async with serve(handler) as (url, connections), \
            httpx.AsyncClient(base_url=url, transport=LeanTransport()) as client:
        assert (await client.get("/big")).json() == big.decode()[1:-1]
        assert (await client.get("/chunked")).json() == big.decode()[1:-1]
        assert len(connections) == 1  # read to the end: the connection was reused
        for path in ("/big", "/chunked"):
            with pytest.raises(ResponseTooLargeError):
                await send_once(client, "GET", path, service="OpenMemory", max_body=EAGER_BODY_BYTES)
        assert (await client.get("/big")).status_code == 200
        assert len(connections) == 3  # an abandoned body closes its connection; it is never reused
