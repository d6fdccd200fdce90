"""Run both emulators on loopback: the ``memsyncd emulate`` command and a test helper.

* :class:`EmulatorServers` — both emulators on HTTP servers in the current
  event loop (``async with``), with optional ``--state`` persistence;
* :class:`RunningEmulators` — the same in a daemon thread with its own loop,
  for synchronous tests and the demo (``with RunningEmulators(...) as emu:``);
* :func:`emulate_main` — the command line. Once both servers listen it prints
  one line to stdout, ``EMULATORS READY {"openmemory": URL, "mem0": URL, "pid": N}``,
  then serves until SIGTERM/SIGINT and exits 0.

Everything binds to loopback only; a non-loopback ``--host`` is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from memsyncd.emulators.faults import FAULT_KINDS, FaultInjector, FaultSpec
from memsyncd.emulators.http import EmulatorHTTPServer
from memsyncd.emulators.mem0 import Mem0Emulator
from memsyncd.emulators.mem0_store import Mem0Store
from memsyncd.emulators.openmemory import OpenMemoryEmulator
from memsyncd.emulators.openmemory_store import OpenMemoryStore
from memsyncd.emulators.service import EmulatorService

__all__ = ["EmulatorConfig", "EmulatorServers", "RunningEmulators", "build_parser", "emulate_main"]

Target = Literal["mem0", "openmemory"]
STATE_FORMAT = 1
SAVE_INTERVAL_S = 0.2


class StateFileError(Exception):
    """Raised when a ``--state`` file cannot be read back."""


def loopback_address(host: str) -> str | None:
    """The address to bind for ``host`` if it is loopback, else ``None``."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        return host if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


@dataclass
class EmulatorConfig:
    """Settings of one emulator pair (mirrors the command-line flags)."""

    host: str = "127.0.0.1"
    mem0_port: int = 0
    openmemory_port: int = 0
    api_key: str = "test-key"
    user: str | None = None
    latency_ms: int = 0
    fail_rate: float = 0.0
    fault: str | None = None
    retry_after: int = 1
    add_mode: Literal["immediate", "queued"] = "immediate"
    add_delay_ms: int = 50
    seed: int | None = None
    state_file: str | None = None

    def fault_spec(self) -> FaultSpec:
        return FaultSpec(
            fault=self.fault, retry_after=self.retry_after, latency_ms=self.latency_ms, fail_rate=self.fail_rate
        )


class EmulatorServers:
    """Both emulators served from the running event loop."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        bind = loopback_address(self.config.host)
        if bind is None:
            raise ValueError(f"refusing to listen on non-loopback host {self.config.host!r}")
        self._bind = bind
        self.mem0_store = Mem0Store(api_key=self.config.api_key)
        self.mem0_store.set_add_mode(self.config.add_mode, delay_ms=self.config.add_delay_ms)
        self.openmemory_store = OpenMemoryStore(self.config.user)
        spec = self.config.fault_spec()
        self.mem0 = Mem0Emulator(self.mem0_store, faults=FaultInjector(spec, seed=self.config.seed))
        self.openmemory = OpenMemoryEmulator(self.openmemory_store, faults=FaultInjector(spec, seed=self.config.seed))
        self._servers: list[EmulatorHTTPServer] = []
        self._saver: asyncio.Task[None] | None = None
        self._saved_versions: tuple[int, int] | None = None
        self.mem0_url = ""
        self.openmemory_url = ""

    def _url(self, port: int) -> str:
        host = f"[{self._bind}]" if ":" in self._bind else self._bind
        return f"http://{host}:{port}"

    async def start(self) -> None:
        """Load the state file (if any) and start listening.

        Raises:
            StateFileError: the state file exists but is unreadable.
            OSError: a port cannot be bound.
        """
        self.load_state()
        try:
            for service, port in ((self.openmemory, self.config.openmemory_port), (self.mem0, self.config.mem0_port)):
                server = EmulatorHTTPServer(service, name=service.name)
                self._servers.append(server)
                bound = await server.listen_tcp(self._bind, port)
                url = self._url(bound)
                if service is self.mem0:
                    self.mem0_url = url
                else:
                    self.openmemory_url = url
        except BaseException:
            await self.close(save=False)
            raise
        if self.config.state_file:
            self._saver = asyncio.create_task(self._save_loop())

    async def close(self, *, save: bool = True) -> None:
        """Stop serving (bounded) and save the state file."""
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        for server in self._servers:
            await server.close()
        self._servers.clear()
        for service in (self.mem0, self.openmemory):
            service.shutdown()
        if save:
            self.save_state()

    async def __aenter__(self) -> EmulatorServers:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def ready_line(self) -> str:
        """``EMULATORS READY {...}`` as printed by ``memsyncd emulate``."""
        info = {"openmemory": self.openmemory_url, "mem0": self.mem0_url, "pid": os.getpid()}
        return f"EMULATORS READY {json.dumps(info)}"

    def service(self, target: Target) -> EmulatorService:
        """The emulator named ``target``."""
        return self.mem0 if target == "mem0" else self.openmemory

    # -- state file ------------------------------------------------------------------

    def load_state(self) -> None:
        """Load ``state_file`` if it exists.

        Raises:
            StateFileError: unreadable or not a state file.
        """
        path = self.config.state_file
        if not path or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
                raise ValueError(f"not a memsyncd emulator state file (format {STATE_FORMAT})")
            self.mem0_store.load(data["mem0"])
            self.openmemory_store.load(data["openmemory"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateFileError(f"cannot load state file {path}: {exc}") from exc
        self._saved_versions = self._versions()

    def _versions(self) -> tuple[int, int]:
        return (self.mem0_store.version, self.openmemory_store.version)

    def save_state(self) -> None:
        """Write ``state_file`` atomically (temp file, fsync, rename) if anything changed."""
        path = self.config.state_file
        if not path:
            return
        versions = self._versions()
        if versions == self._saved_versions and os.path.exists(path):
            return
        data = {"format": STATE_FORMAT, "mem0": self.mem0_store.dump(), "openmemory": self.openmemory_store.dump()}
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".emulator-state-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._saved_versions = versions

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL_S)
            try:
                self.save_state()
            except OSError as exc:
                print(f"memsyncd emulate: cannot save state: {exc}", file=sys.stderr)


class RunningEmulators:
    """Both emulators in a background thread (context manager).

    Example::

        with RunningEmulators(api_key="k", user="alice") as emu:
            emu.openmemory.add("likes tea", {"level": 1})
            httpx.get(f"{emu.mem0_url}/v1/ping/", headers={"Authorization": "Token k"})
            emu.set_fault("mem0", "500", match="fail-me")
            assert emu.mem0.memories() == []
    """

    def __init__(
        self,
        api_key: str = "test-key",
        user: str | None = None,
        *,
        add_mode: Literal["immediate", "queued"] = "immediate",
        add_delay_ms: int = 50,
        latency_ms: int = 0,
        fail_rate: float = 0.0,
        fault: str | None = None,
        seed: int | None = None,
        host: str = "127.0.0.1",
        mem0_port: int = 0,
        openmemory_port: int = 0,
        state_file: str | os.PathLike[str] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.config = EmulatorConfig(
            host=host,
            mem0_port=mem0_port,
            openmemory_port=openmemory_port,
            api_key=api_key,
            user=user,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            fault=fault,
            add_mode=add_mode,
            add_delay_ms=add_delay_ms,
            seed=seed,
            state_file=os.fspath(state_file) if state_file else None,
        )
        self.servers = EmulatorServers(self.config)
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> RunningEmulators:
        """Start the loop thread and wait until both servers listen.

        Raises:
            RuntimeError: the servers did not start in time.
            OSError, StateFileError: as raised by :meth:`EmulatorServers.start`.
        """
        self._thread = threading.Thread(target=self._run, name="memsyncd-emulators", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError("emulators did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the servers and the loop thread."""
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> RunningEmulators:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.servers.start()
        except BaseException as exc:  # reported to start() in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.servers.close()

    # -- access --------------------------------------------------------------------------

    @property
    def mem0_url(self) -> str:
        """Base URL of the mem0 emulator (``http://127.0.0.1:PORT``)."""
        return self.servers.mem0_url

    @property
    def openmemory_url(self) -> str:
        """Base URL of the OpenMemory emulator."""
        return self.servers.openmemory_url

    @property
    def mem0(self) -> Mem0Store:
        """The mem0 emulator's data (memories, events, add mode)."""
        return self.servers.mem0_store

    @property
    def openmemory(self) -> OpenMemoryStore:
        """The OpenMemory emulator's data (users, apps, memories)."""
        return self.servers.openmemory_store

    @property
    def mem0_app(self) -> Mem0Emulator:
        """The mem0 HTTP emulator (``.faults``, ``.log``)."""
        return self.servers.mem0

    @property
    def openmemory_app(self) -> OpenMemoryEmulator:
        """The OpenMemory HTTP emulator (``.faults``, ``.log``)."""
        return self.servers.openmemory

    def set_fault(self, target: Target, fault: str | None = None, **fields: Any) -> FaultSpec:
        """Replace ``target``'s fault spec, e.g. ``set_fault("mem0", "500", match="fail-me", count=2)``.

        Raises:
            FaultSpecError: invalid fields.
        """
        return self.servers.service(target).faults.set(fault=fault, **fields)

    def requests(self, target: Target) -> list[dict[str, Any]]:
        """The request log of ``target`` (what ``GET /_admin/requests`` returns)."""
        return self.servers.service(target).log.entries()

    def clear_requests(self, target: Target | None = None) -> None:
        """Clear one request log, or both."""
        for name in (target,) if target else ("mem0", "openmemory"):
            self.servers.service(name).log.clear()

    def reset(self) -> None:
        """Wipe both emulators' data, faults and request logs."""
        for name in ("mem0", "openmemory"):
            service = self.servers.service(name)
            service.reset_data()
            service.faults.clear()
            service.log.clear()

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
        """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``memsyncd emulate`` argument parser."""
    p = argparse.ArgumentParser(
        prog="memsyncd emulate",
        description=(
            "Run loopback emulators of the OpenMemory REST API and the mem0 platform API, with fault "
            "injection. Prints 'EMULATORS READY {json}' when listening; stops on SIGTERM/SIGINT. "
            "Admin routes live under /_admin/ on both (requests, fault, state, reset)."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--openmemory-port", type=int, default=0, metavar="P", help="0 = pick a free port")
    p.add_argument("--mem0-port", type=int, default=0, metavar="P", help="0 = pick a free port")
    p.add_argument(
        "--api-key",
        default="test-key",
        metavar="K",
        help="mem0 API key the emulator accepts (default 'test-key': for tests only, not a secret)",
    )
    p.add_argument(
        "--user",
        default=None,
        metavar="NAME",
        help="OpenMemory user created at start (default $USER, else default_user)",
    )
    p.add_argument("--latency-ms", type=int, default=0, metavar="N", help="delay added to every API request")
    p.add_argument("--fail-rate", type=float, default=0.0, metavar="F", help="fraction (0..1) of requests answered 500")
    p.add_argument("--fault", choices=FAULT_KINDS, default=None, help="fault applied to every API request")
    p.add_argument("--retry-after", type=int, default=1, metavar="N", help="Retry-After seconds of the 429 fault")
    p.add_argument(
        "--add-mode",
        choices=("immediate", "queued"),
        default="immediate",
        help="mem0 add: store at once, or answer PENDING and store after --add-delay-ms",
    )
    p.add_argument("--add-delay-ms", type=int, default=50, metavar="N", help="queued add processing delay")
    p.add_argument(
        "--state", default=None, metavar="FILE", help="load state from FILE at start, save it on changes and at exit"
    )
    p.add_argument("--seed", type=int, default=None, metavar="N", help="seed of the --fail-rate RNG")
    return p


def _config_from(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        host=args.host,
        mem0_port=args.mem0_port,
        openmemory_port=args.openmemory_port,
        api_key=args.api_key,
        user=args.user,
        latency_ms=args.latency_ms,
        fail_rate=args.fail_rate,
        fault=args.fault,
        retry_after=args.retry_after,
        add_mode=args.add_mode,
        add_delay_ms=args.add_delay_ms,
        seed=args.seed,
        state_file=args.state,
    )


def _usage_error(message: str) -> int:
    print(f"memsyncd emulate: {message}", file=sys.stderr)
    return 2


def emulate_main(argv: Sequence[str]) -> int:
    """Run ``memsyncd emulate`` with ``argv`` (without the program name).

    Returns:
        0 after SIGTERM/SIGINT, 1 when a port cannot be bound, 2 on usage errors
        (including a non-loopback ``--host`` and an unreadable ``--state`` file).
    """
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    if loopback_address(args.host) is None:
        return _usage_error(f"refusing to listen on non-loopback host {args.host!r}; use 127.0.0.1, ::1 or localhost")
    for name in ("openmemory_port", "mem0_port"):
        if not 0 <= getattr(args, name) <= 65535:
            return _usage_error(f"--{name.replace('_', '-')} must be between 0 and 65535")
    if not 0.0 <= args.fail_rate <= 1.0:
        return _usage_error("--fail-rate must be between 0 and 1")
    if args.latency_ms < 0 or args.add_delay_ms < 0 or args.retry_after < 0:
        return _usage_error("--latency-ms, --add-delay-ms and --retry-after must be >= 0")
    if args.state and not Path(args.state).resolve().parent.is_dir():
        return _usage_error(f"--state: directory of {args.state} does not exist")
    return asyncio.run(_serve(_config_from(args)))


async def _serve(config: EmulatorConfig) -> int:
    servers = EmulatorServers(config)
    try:
        await servers.start()
    except StateFileError as exc:
        return _usage_error(str(exc))
    except OSError as exc:
        print(f"memsyncd emulate: cannot listen on {config.host}: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(servers.ready_line(), flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await servers.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(emulate_main(sys.argv[1:]))
