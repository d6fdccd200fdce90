"""Test harness: the emulators, memsyncctl and the daemon as real subprocesses on loopback / Unix sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from memsyncd.config import Settings
from memsyncd.emulators.admin import EmulatorAdmin, wait_until
from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.emulators.runner import RunningEmulators
from memsyncd.models import Action, QueueEntry, format_ts, utc_now
from memsyncd.store.queue import QueueStore

isolate_user_environment()  # whoever uses the harness never reaches the user's daemon, registry or key

API_KEY = "m0-test-key-0123456789abcdefghij"
USER = "alice"
PROC_TIMEOUT = 60.0


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment for subprocesses: no inherited key, no real root, telemetry off."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMSYNC_", "MEM0_", "NOTIFY_SOCKET", "WATCHDOG_", "CREDENTIALS_DIRECTORY"))}
    if os.environ.get("MEMSYNC_TRUSTED_ROOTS"):  # the suite's blanket trust of its tmp roots (conftest.py)
        env["MEMSYNC_TRUSTED_ROOTS"] = os.environ["MEMSYNC_TRUSTED_ROOTS"]
    env["MEM0_TELEMETRY"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Emulators(EmulatorAdmin):
    """A running ``memsyncd emulate`` process with the admin client for both services."""

    proc: subprocess.Popen[str] | None = None

    def stop(self) -> None:
        self.close()
        if self.proc is not None:
            stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Stop a child process, escalating to SIGKILL; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@contextlib.contextmanager
def running_emulators(*extra: str) -> Iterator[Emulators]:
    """Start ``memsyncd emulate`` on free loopback ports and wait for its READY line."""
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in finally; never a pipe (a full one blocks)
    proc = subprocess.Popen(
        [sys.executable, "-m", "memsyncd", "emulate", "--openmemory-port", "0", "--mem0-port", "0",
         "--api-key", API_KEY, "--user", USER, *extra],
        stdout=subprocess.PIPE, stderr=errors, text=True, env=base_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("EMULATORS READY "):
            errors.seek(0)
            raise RuntimeError(f"emulators did not start: {line!r} {errors.read()}")
        urls = json.loads(line[len("EMULATORS READY "):])
        emu = Emulators(urls["openmemory"], urls["mem0"], API_KEY, USER, proc=proc)
        try:
            yield emu
        finally:
            emu.close()
    finally:
        stop_process(proc)
        if proc.stdout:
            proc.stdout.close()
        errors.close()


def make_root(root: Path, emu: Emulators, *, enabled: bool = True, **sync: Any) -> Path:
    """Write a config.json for ``root`` pointing at the emulators.

    Local scans are off unless asked for (``local_scan_interval_seconds=...``): the emulators are shared
    by a module's tests, and a scan would push the memories earlier tests left in OpenMemory.
    """
    config = {
        "local": {"url": emu.openmemory, "user_id": USER},
        "cloud": {"enabled": enabled, "url": emu.mem0, "user_id": USER},
        "sync": {"default_level": 0, "debounce_ms": 50, "local_scan_interval_seconds": 0,
                 "local_full_scan_interval_seconds": 0, **sync},
    }
    path = root / ".claude" / "memory" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return root


def ctl(root: Path, *args: str, key: str | None = API_KEY, stdin: str | None = None,
        timeout: float = PROC_TIMEOUT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run memsyncctl as a subprocess for ``root``."""
    extra = dict(env)
    if key is not None:
        extra["MEM0_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "memsyncd.ctl", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, env=base_env(**extra), input=stdin)


def queue_path(root: Path) -> Path:
    return root / ".claude" / "session" / "sync-queue.json"


def read_queue(root: Path) -> dict[str, Any]:
    path = queue_path(root)
    return json.loads(path.read_text()) if path.exists() else {"pending": [], "sync_errors": [], "last_sync": None}


def append_entries(store: QueueStore, ids: Iterable[str], *, action: Action = "push",
                   level: int | None = None) -> list[QueueEntry]:
    """One entry per id (one timestamp, in order) appended to ``store`` in one locked update; returns them."""
    stamp = format_ts(utc_now())
    entries = [QueueEntry(i, action, stamp, level=level) for i in ids]
    store.update(lambda doc: doc.pending.extend(entries))
    return entries


def enqueue_each(store: QueueStore, *ids: str, action: Action = "push", level: int | None = None) -> None:
    """One entry per id, each appended with its own timestamp and locked write (as one ``enqueue`` each)."""
    for memory_id in ids:
        store.enqueue(QueueEntry(memory_id, action, format_ts(utc_now()), level=level))


def fill_queue(root: Path, ids: list[str]) -> None:
    """One push entry per id (one timestamp, in order) appended to ``root``'s queue in one locked update."""
    append_entries(QueueStore(queue_path(root)), ids)


def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test at the deadline."""
    try:
        return wait_until(predicate, timeout=timeout, interval=0.05)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


@dataclass
class DaemonProc:
    """A ``memsyncd run`` subprocess for one root, with its control socket and log file."""

    root: Path
    socket: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def ctl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return ctl(self.root, "--socket", str(self.socket), *args, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://memsyncd",
                          timeout=30) as client:
            return client.request(method, path, **kwargs)

    def health(self) -> dict[str, Any] | None:
        try:
            response = self.api("GET", "/v1/health")
        except (httpx.TransportError, OSError):
            return None
        return dict(response.json()) if response.status_code == 200 else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        return stop_process(self.proc, sig, timeout)


def start_daemon(root: Path, *, key: str | None = API_KEY, wait: bool = True, socket_path: Path | None = None,
                 **env: str) -> DaemonProc:
    """Start ``memsyncd run`` for ``root`` (socket under the root by default) and wait until it answers."""
    socket_path = socket_path or root / "d.sock"
    log_path = root / f"daemon-{time.monotonic_ns()}.log"
    extra = dict(env)
    if key is not None:
        extra["MEM0_API_KEY"] = key
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--root", str(root), "--socket",
                                 str(socket_path), "--log-level", "debug", "--log-format", "json"],
                                stdout=log, stderr=log, env=base_env(**extra))
    daemon = DaemonProc(root, socket_path, proc, log_path)
    if wait:
        try:
            wait_for(lambda: daemon.health() or proc.poll() is not None, timeout=20)
        except AssertionError:
            daemon.stop(signal.SIGKILL)
            raise
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}: {daemon.log()[-3000:]}")
    return daemon


@contextlib.contextmanager
def running_daemon(root: Path, **kwargs: Any) -> Iterator[DaemonProc]:
    """``start_daemon`` that always stops (and, if needed, kills) the daemon."""
    daemon = start_daemon(root, **kwargs)
    try:
        yield daemon
    finally:
        daemon.stop()


def write_config(root: Path, config: dict[str, Any] | str) -> Path:
    """Replace ``root``'s config.json atomically (as editors and ``init`` do) with ``config``; returns ``root``."""
    path = root / ".claude" / "memory" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("config.json.tmp")
    tmp.write_text(config if isinstance(config, str) else json.dumps(config))
    os.replace(tmp, path)
    return root


def user_root(root: Path, emu: Emulators, *, local_url: str | None = None) -> Path:
    """A root for a user daemon on the emulators: default level 1, 50 ms debounce, local scans at their defaults."""
    return write_config(root, {"local": {"url": local_url or emu.openmemory, "user_id": USER},
                               "cloud": {"enabled": True, "url": emu.mem0, "user_id": USER},
                               "sync": {"default_level": 1, "debounce_ms": 50}})


def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


ADD_TOOL = "mcp__openmemory__add_memories"


def hook_payload(*ids: str) -> str:
    """What Claude Code hands the post-tool-use hook after an OpenMemory add of ``ids``."""
    return json.dumps({"tool_name": ADD_TOOL,
                       "tool_response": json.dumps({"results": [{"id": i, "event": "ADD"} for i in ids]})})


# a systemctl that finds no user bus (a container, an SSH session without lingering)
NO_BUS = 'echo "Failed to connect to bus: No medium found" >&2; exit 1'


def service_env(tmp: Path, systemctl: str | None) -> dict[str, str]:
    """HOME/XDG in ``tmp``; PATH holds only a fake systemctl running ``systemctl`` (or none at all).

    ``service install`` finds memsyncd next to the interpreter (the venv's script).
    """
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    if systemctl is not None:
        (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp}/systemctl.calls\n{systemctl}\n")
        (bin_dir / "systemctl").chmod(0o755)
    (tmp / "home").mkdir(exist_ok=True)
    return {"PATH": str(bin_dir), "HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "cfg")}


# --- the user daemon: `memsyncd run` without --root, with its own XDG_CONFIG_HOME and XDG_RUNTIME_DIR ---


@dataclass
class UserDaemon:
    """A ``memsyncd run`` in user mode with its private config and runtime directories."""

    proc: subprocess.Popen[bytes]
    config_home: Path
    runtime: Path
    log_path: Path

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_CONFIG_HOME": str(self.config_home), "XDG_RUNTIME_DIR": str(self.runtime)}

    @property
    def socket(self) -> Path:
        return self.runtime / "memsyncd" / "memsyncd.sock"

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://memsyncd",
                          timeout=30) as client:
            return client.request(method, path, **kwargs)

    def roots(self) -> dict[str, dict[str, Any]]:
        return {row["root"]: row for row in self.api("GET", "/v1/roots").json()["roots"]}

    def ctl(self, root: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return ctl(root, *args, **self.env, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found


@contextlib.contextmanager
def user_daemon(config_home: Path, runtime: Path, log_dir: Path, *, key: str | None = API_KEY,
                timeout: float = 20.0, clean_log: bool = True) -> Iterator[UserDaemon]:
    """A user daemon, ready (its health says so) within ``timeout`` seconds, stopped on exit.

    ``key`` is its MEM0_API_KEY (None: the key file under ``config_home``, if any). With ``clean_log``
    its log must, at the end, hold no traceback (unless it exited with an error) and never the key.
    """
    log_path = log_dir / f"user-daemon-{time.monotonic_ns()}.log"
    extra = {"XDG_CONFIG_HOME": str(config_home), "XDG_RUNTIME_DIR": str(runtime)}
    if key is not None:
        extra["MEM0_API_KEY"] = key
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--log-level", "debug",
                                 "--log-format", "json"], stdout=log, stderr=log, env=base_env(**extra))
    daemon = UserDaemon(proc, config_home, runtime, log_path)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}: {daemon.log()[-3000:]}")
        try:
            return bool(daemon.api("GET", "/v1/health").json().get("ready"))
        except (httpx.TransportError, OSError):
            return False

    try:
        wait_for(up, timeout=timeout)
        yield daemon
    finally:
        code = stop_process(proc)
        if clean_log:
            assert "Traceback" not in daemon.log() or code != 0, daemon.log()[-3000:]
            assert API_KEY not in daemon.log()


# --- in-process emulators (tests that drive the Syncer directly) -------------------------------

INPROC_KEY = "m0-inprocess-key"
INPROC_USER = "bob"


def fresh_admin(servers: RunningEmulators) -> EmulatorAdmin:
    """An admin client for in-process emulators whose data was just wiped."""
    admin = EmulatorAdmin(servers.openmemory_url, servers.mem0_url, INPROC_KEY, INPROC_USER)
    for url in (servers.mem0_url, servers.openmemory_url):
        admin.http.post(f"{url}/_admin/reset").raise_for_status()
    return admin


def emulator_settings(servers: RunningEmulators, **sync: Any) -> Settings:
    """Settings pointing a Syncer at in-process emulators."""
    return Settings(local={"url": servers.openmemory_url, "user_id": INPROC_USER},
                    cloud={"enabled": True, "url": servers.mem0_url, "user_id": INPROC_USER}, sync=sync)


# --- engine concerns in-process: the emulators behind httpx.MockTransport, a SyncContext over them ---

import asyncio  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import TypeVar  # noqa: E402
from urllib.parse import parse_qsl, unquote  # noqa: E402

from memsyncd.config import CloudSettings, LocalSettings, Paths, SyncSettings  # noqa: E402
from memsyncd.daemon.http_server import BadRequest  # noqa: E402
from memsyncd.daemon.http_server import Request as EmuRequest  # noqa: E402
from memsyncd.emulators.http import ResetConnection  # noqa: E402
from memsyncd.emulators.mem0 import Mem0Emulator  # noqa: E402
from memsyncd.emulators.mem0_store import Mem0Store  # noqa: E402
from memsyncd.emulators.openmemory import OpenMemoryEmulator  # noqa: E402
from memsyncd.emulators.openmemory_store import OpenMemoryStore  # noqa: E402
from memsyncd.emulators.service import EmulatorService  # noqa: E402
from memsyncd.engine.context import SyncContext  # noqa: E402
from memsyncd.remote.cloud import CloudClient, Scope  # noqa: E402
from memsyncd.remote.http_edge import RetryPolicy  # noqa: E402
from memsyncd.remote.local import LocalClient  # noqa: E402

T = TypeVar("T")
Before = Callable[[httpx.Request], "httpx.Response | None"]


class EmulatorTransport(httpx.MockTransport):
    """An emulator answered in the test's own event loop (no socket, no thread), every request kept in ``sent``.

    ``before(request)`` sees each request first and may answer it itself (a 500, a 401; or raise an
    httpx error such as ``httpx.ConnectError``); returning None passes it on to the emulator.
    """

    def __init__(self, service: EmulatorService) -> None:
        super().__init__(self._answer)
        self.service = service
        self.sent: list[httpx.Request] = []
        self.before: Before | None = None

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.sent.append(request)
        if self.before is not None:
            early = self.before(request)
            if early is not None:
                return early
        target = request.url.raw_path.decode("ascii")
        raw_path, _, raw_query = target.partition("?")
        parsed = EmuRequest(method=request.method, target=target, path=unquote(raw_path),
                            query=dict(parse_qsl(raw_query, keep_blank_values=True)),
                            headers={k.lower(): v for k, v in request.headers.items()}, body=body, peer_uid=None)
        try:
            reply = await self.service(parsed)
        except BadRequest as exc:
            return httpx.Response(exc.status, json={"detail": exc.detail})
        except ResetConnection:
            raise httpx.ReadError("connection reset by the emulator", request=request) from None
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body)

    def requests(self, method: str | None = None, path: str | None = None) -> list[httpx.Request]:
        """Requests sent so far, by method and/or path prefix."""
        return [r for r in self.sent
                if (method is None or r.method == method) and (path is None or r.url.path.startswith(path))]


@dataclass
class EngineRig:
    """One root's :class:`SyncContext` over in-process emulators (both stores reachable directly)."""

    ctx: SyncContext
    cloud: CloudClient
    mem0: Mem0Store
    openmemory: OpenMemoryStore
    mem0_http: EmulatorTransport
    local_http: EmulatorTransport

    def local_add(self, text: str, **metadata: Any) -> str:
        """A memory in OpenMemory (as the MCP server would write it); returns its id."""
        return str(self.openmemory.add(text, metadata)["id"])

    def cloud_add(self, text: str, **metadata: Any) -> str:
        """A memory in mem0 in our scope; returns its id."""
        return str(self.mem0.add(text, user_id=INPROC_USER, metadata=metadata)["id"])

    def cloud_texts(self) -> list[str]:
        return sorted(str(m["memory"]) for m in self.mem0.memories())

    def local_texts(self) -> list[str]:
        return sorted(str(m["content"]) for m in self.openmemory.memories(user_id=INPROC_USER))

    def enqueue(self, *ids: str, action: Action = "push", level: int | None = None) -> list[QueueEntry]:
        """Append one queue entry per id (one timestamp, in order); returns them."""
        return append_entries(self.ctx.queue, ids, action=action, level=level)

    async def aclose(self) -> None:
        await self.ctx.local.aclose()
        await self.cloud.aclose()
        self.ctx.state.close()


def engine_rig(root: Path, *, api_key: str = INPROC_KEY, attempts: int = 3, **sync: Any) -> EngineRig:
    """A fresh pair of emulator stores and a context for ``root`` (``default_level`` 1 unless given).

    Requests never leave the process: both clients talk to the emulators through :class:`EmulatorTransport`.
    """
    mem0 = Mem0Store(api_key=INPROC_KEY)
    openmemory = OpenMemoryStore(INPROC_USER)
    mem0_http = EmulatorTransport(Mem0Emulator(mem0))
    local_http = EmulatorTransport(OpenMemoryEmulator(openmemory))
    sync.setdefault("default_level", 1)
    settings = Settings(local=LocalSettings(url="http://127.0.0.1:9", user_id=INPROC_USER),
                        cloud=CloudSettings(enabled=True, url="http://127.0.0.1:9", user_id=INPROC_USER),
                        sync=SyncSettings(attempts_per_run=attempts, **sync))
    policy = RetryPolicy(attempts=attempts)
    cloud = CloudClient(settings.cloud.url, api_key, Scope(INPROC_USER), policy=policy, transport=mem0_http,
                        max_in_flight=settings.sync.concurrency)
    local = LocalClient(settings.local.url, INPROC_USER, policy=policy, transport=local_http)
    ctx = SyncContext.create(settings, Paths(root), api_key, local=local, cloud=cloud, state=None, clock=utc_now)
    return EngineRig(ctx, cloud, mem0, openmemory, mem0_http, local_http)


RIG_TIMEOUT = 10.0  # seconds: an in-process engine scenario that takes longer is a hang, not a slow machine


def run_with_rig(root: Path, body: Callable[[EngineRig], Awaitable[T]], **rig: Any) -> T:
    """Build an :func:`engine_rig` inside a fresh event loop, run ``body`` on it (bounded), close it."""

    async def go() -> T:
        built = engine_rig(root, **rig)
        try:
            return await asyncio.wait_for(body(built), RIG_TIMEOUT)
        finally:
            await built.aclose()

    return asyncio.run(go())


# --- one event loop per test for helpers that are not handed it (tests/unit/conftest.py: one_loop_per_test) ---

from collections.abc import Coroutine  # noqa: E402

_AIO_RUNNER: asyncio.Runner | None = None


@contextlib.contextmanager
def running_aio(runner: asyncio.Runner) -> Iterator[None]:
    """While inside, :func:`aio` runs its coroutines on ``runner``."""
    global _AIO_RUNNER
    _AIO_RUNNER = runner
    try:
        yield
    finally:
        _AIO_RUNNER = None


def aio(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the test's event loop (the ``one_loop_per_test`` fixture)."""
    assert _AIO_RUNNER is not None, "aio() needs the one_loop_per_test fixture"
    return _AIO_RUNNER.run(coro)


# --- the daemon's HTTPServer in a background event loop (tests of the control socket and the emulators) ---

import threading  # noqa: E402

from memsyncd.daemon.http_server import HTTPServer, Request, Response  # noqa: E402


class Served:
    """An HTTPServer running in a background event loop, listening on a Unix socket or on 127.0.0.1 TCP."""

    def __init__(self, server: HTTPServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.path: str | None = None
        self.port: int | None = None

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, timeout: float = 5) -> socket.socket:
        """A raw client socket connected to the server."""
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.path)
            return sock
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client whose relative URLs reach the server."""
        if self.path is not None:
            return httpx.Client(transport=httpx.HTTPTransport(uds=self.path), base_url="http://memsyncd", **kwargs)
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", **kwargs)


@contextlib.contextmanager
def running(server: HTTPServer, listen: Callable[[Served], Awaitable[None]]) -> Iterator[Served]:
    """Run ``server`` in a background event loop; ``listen(served)`` starts its listener there."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    served = Served(server, loop)
    try:
        served.run(listen(served))
        yield served
    finally:
        served.run(server.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@contextlib.contextmanager
def serve(handler: Callable[[Request], Any], *, unix_path: str | None = None, **kwargs: Any) -> Iterator[Served]:
    """Serve ``handler`` with the daemon's HTTPServer on a Unix socket (``unix_path``, or one in a fresh short
    temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="http-") as tmp:
        server = HTTPServer(handler, **kwargs)

        async def listen(served: Served) -> None:
            served.path = unix_path or os.path.join(tmp, "s.sock")
            await server.listen_unix(served.path)

        with running(server, listen) as served:
            yield served


async def echo(request: Request) -> Response:
    """Echo the parsed request back as JSON."""
    return Response.json(
        {
            "method": request.method,
            "target": request.target,
            "path": request.path,
            "query": request.query,
            "headers": request.headers,
            "body": request.body.decode(),
            "peer_uid": request.peer_uid,
        }
    )


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection."""
    chunks: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def raw_exchange(served: Served, payload: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    with served.connect() as sock:
        sock.sendall(payload)
        return read_until_closed(sock)
