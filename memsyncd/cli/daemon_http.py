"""The daemon's control API with the stdlib only: HTTP/1.1 + JSON over its Unix socket via ``http.client``.

Three outcomes a caller must tell apart:

* :class:`NoDaemon`: nothing listens (socket absent, connection refused, stale file): fall back
  to in-process work.
* :class:`DaemonSilent`: something accepted the connection but gave no usable answer in time
  (timeout, reset, not HTTP, not JSON): the caller decides (enqueue writes the file itself).
* :class:`DaemonAnswer`: an HTTP answer; error bodies ``{"error": {"type", "title", "message"}}``
  become the same :mod:`memsyncd.errors` error via :func:`~memsyncd.errors.error_from_dict`.
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memsyncd.errors import DaemonError, MemsyncError, error_from_dict

CONNECT_TIMEOUT_SECONDS = 1.0


class NoDaemon(Exception):
    """Raised when nothing accepts a connection on the socket."""


class DaemonSilent(Exception):
    """Raised when the daemon accepted the connection but gave no usable answer in time."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` on an ``AF_UNIX`` stream socket, with a short connect timeout."""

    def __init__(self, socket_path: Path, *, timeout: float,
                 connect_timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
        super().__init__("memsyncd", timeout=timeout)
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(str(self.socket_path))
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass
class DaemonAnswer:
    """One HTTP answer: status and decoded body (JSON value, or text for ``text/plain``)."""

    status: int
    body: Any

    def error(self) -> MemsyncError:
        """The project error an error answer carries (a generic one when the body has none)."""
        detail = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(detail, dict):
            return error_from_dict(detail)
        return DaemonError(f"the daemon answered HTTP {self.status}: {str(self.body)[:200]}")

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


def call_daemon(socket_path: Path, method: str, path: str, *, body: Any = None, timeout: float) -> DaemonAnswer:
    """Send one request and read the whole answer.

    Args:
        socket_path: the daemon's control socket.
        method: HTTP method.
        path: route, e.g. ``/v1/status``.
        body: a JSON-able request body, or None.
        timeout: seconds to wait for each read of the answer once connected.

    Raises:
        NoDaemon: nothing accepted the connection.
        DaemonSilent: no complete, decodable answer within ``timeout``.
    """
    connection = UnixHTTPConnection(socket_path, timeout=timeout)
    try:
        try:
            connection.connect()
        except OSError as exc:  # absent, refused, not a socket, path too long, connect timeout
            raise NoDaemon(f"{socket_path}: {exc.strerror or type(exc).__name__}") from None
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except TimeoutError:
            raise DaemonSilent(f"no answer from {socket_path} within {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonSilent(f"{socket_path}: {type(exc).__name__}: {exc}") from None
    finally:
        connection.close()
    if (response.getheader("Content-Type") or "").startswith("text/plain"):
        return DaemonAnswer(response.status, raw.decode("utf-8", errors="replace"))
    try:
        return DaemonAnswer(response.status, json.loads(raw) if raw.strip() else None)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DaemonSilent(f"{socket_path} answered HTTP {response.status} with a body that is not JSON") from None
