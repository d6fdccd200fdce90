"""Control-socket limits (issue 17): a cap on connections, a total deadline per request, accept errors logged
once per burst; 300 half-sent requests neither hang `status` nor flood the daemon's log."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import API_KEY, Emulators, base_env, read_until_closed, serve, stop_process, wait_for

from memsyncd.daemon.http_server import Request, Response, quiet_accept_errors

pytestmark = pytest.mark.timeout(120)


async def _ok(request: Request) -> Response:
    return Response.json({"ok": True})


def test_half_sent_request_is_answered_408_and_closed_at_the_deadline() -> None:
    """A request whose body never completes is cut off at the total deadline, even while bytes keep coming."""
    with serve(_ok, request_deadline=0.5) as s, s.connect(timeout=10) as conn:
        t0 = time.monotonic()
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        for _ in range(3):  # trickling keeps every single read short; the total deadline still holds
            time.sleep(0.1)
            conn.sendall(b"{")
        answer = read_until_closed(conn)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - t0 < 5


def test_connections_over_the_cap_get_503_and_are_closed() -> None:
    """With the cap reached by silent clients, one more connection gets 503 at once; a freed slot serves again."""
    with serve(_ok, max_connections=3, request_deadline=30) as s:
        idle = [s.connect(timeout=10) for _ in range(3)]
        try:
            time.sleep(0.2)
            with s.connect(timeout=10) as extra:
                assert read_until_closed(extra).startswith(b"HTTP/1.1 503 ")
        finally:
            for conn in idle:
                conn.close()
        time.sleep(0.2)
        with s.connect(timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(conn).startswith(b"HTTP/1.1 200 ")


def test_accept_errors_are_logged_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio's accept-error reports (one per retry) become one log line per burst, without a traceback."""
    loop = asyncio.new_event_loop()
    try:
        quiet_accept_errors(loop)
        quiet_accept_errors(loop)  # idempotent
        handler = loop.get_exception_handler()
        assert handler is not None
        with caplog.at_level(logging.DEBUG, logger="memsyncd.daemon.http_server"):
            for _ in range(500):
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(24, "Too many open files")})
        lines = [r for r in caplog.records if r.name == "memsyncd.daemon.http_server"]
        assert len(lines) == 1 and "Too many open files" in lines[0].getMessage()
        assert lines[0].exc_info is None
    finally:
        loop.close()


def test_300_half_sent_control_requests_do_not_hang_status_or_flood_the_log(root: Path, emu: Emulators,
                                                                             tmp_path: Path) -> None:
    """A daemon with 256 file descriptors and 300 half-sent requests: status answers, the log stays short."""
    sock_path = tmp_path / "d.sock"
    log_path = tmp_path / "daemon.log"
    env = base_env(MEM0_API_KEY=API_KEY, XDG_RUNTIME_DIR=str(tmp_path))

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--root", str(root), "--socket",
                                 str(sock_path), "--log-level", "debug", "--log-format", "json"],
                                stdout=log, stderr=log, env=env, preexec_fn=low_fd_limit)
    conns: list[socket.socket] = []
    try:
        wait_for(lambda: "daemon.started" in log_path.read_text() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, log_path.read_text()
        connected = 0
        for _ in range(300):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(str(sock_path))  # blocking: waits while the listen backlog is full
                connected += 1
                conn.sendall(b"POST /v1/sync HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            except OSError:
                conn.close()
                continue
            conns.append(conn)
        t0 = time.monotonic()
        status = subprocess.run([sys.executable, "-m", "memsyncd.ctl", "--root", str(root), "--socket",
                                 str(sock_path), "status"], capture_output=True, text=True, env=env, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert time.monotonic() - t0 < 30
        time.sleep(3)  # let accept retries (once a second) happen while the clients stay connected
        text = log_path.read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]
        assert text.count("cannot accept connections") <= 2
        assert len(text.splitlines()) < 50
        assert connected == 300  # every half-sent request really reached the daemon
    finally:
        for conn in conns:
            conn.close()
        stop_process(proc)
