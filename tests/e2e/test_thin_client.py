"""The thin client: fast paths load only the stdlib, talk to the daemon or write the queue, never lose an id,
and every failure ends in a message and an exit code, never a traceback."""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from harness import API_KEY, PROC_TIMEOUT, Emulators, base_env, ctl, queue_path, read_queue, running_daemon

from memsyncd import ctl as ctl_module
from memsyncd.cli import commands, fast
from memsyncd.cli.output import project_error_for
from memsyncd.cli.render import render_status
from memsyncd.engine.report import StatusReport
from memsyncd.errors import EXIT_UNREADABLE, DaemonError, FileAccessError, StateUnreadableError
from memsyncd.models import format_ts
from memsyncd.store.paths import Paths
from memsyncd.wire_http import DaemonSilent, NoDaemon, call_daemon

# Third-party libraries and engine modules the fast paths must never load.
FORBIDDEN = ("httpx", "pydantic", "pydantic_core", "pydantic_settings", "structlog", "apscheduler", "watchdog", "h11",
             "filelock", "stamina", "asyncio", "sqlite3",
             "memsyncd.engine.syncer", "memsyncd.engine.context", "memsyncd.config", "memsyncd.cli.backend",
             "memsyncd.cli.control_client", "memsyncd.daemon.control", "memsyncd.remote.cloud", "memsyncd.remote.local",
             "memsyncd.remote.http_edge", "memsyncd.daemon.http_server", "memsyncd.store.state", "memsyncd.logs",
             "memsyncd.daemon.process", "memsyncd.cli.integration", "memsyncd.cli.commands")
# memsyncd's own modules that are stdlib-only by design (package __init__ files are docstrings only).
STDLIB_ONLY = {"memsyncd", "memsyncd.ctl", "memsyncd.cli", "memsyncd.cli.fast", "memsyncd.cli.hook",
               "memsyncd.cli.render", "memsyncd.cli.output", "memsyncd.wire_http", "memsyncd.errors",
               "memsyncd.models", "memsyncd.store", "memsyncd.store.paths", "memsyncd.store.queue", "memsyncd.engine",
               "memsyncd.engine.report", "memsyncd.daemon", "memsyncd.daemon.runtime", "memsyncd.store.roots",
               "memsyncd.ids", "memsyncd.timestamps", "memsyncd.cli.parser", "memsyncd.wire",
               "memsyncd.store.trust", "memsyncd.store.locate", "memsyncd.store.trust_check",
               "memsyncd.store.queue_file", "memsyncd.store.safe_files", "memsyncd.store.spool",
               "memsyncd.terminal"}
# Stdlib modules the hot commands must not load either (each costs milliseconds on every call):
# ``argparse`` (a hand-written dispatch in memsyncd.ctl), ``pathlib``, ``typing``, ``dataclasses``
# (with ``inspect``), ``urllib``, ``tempfile``, ``hashlib`` (OpenSSL), ``datetime``, ``contextlib``
# and ``socket`` (``_socket`` is enough). ``enum`` cannot be forbidden: ``re`` loads it, and ``json``
# and the console-script wrapper load ``re``.
HOT_FORBIDDEN = ("argparse", "pathlib", "typing", "dataclasses", "inspect", "urllib", "tempfile", "hashlib",
                 "datetime", "contextlib", "socket", "selectors",
                 "memsyncd.models", "memsyncd.store.paths", "memsyncd.store.queue", "memsyncd.store.trust",
                 "memsyncd.store.roots", "memsyncd.store.spool", "memsyncd.cli.parser", "memsyncd.engine.report")
# memsyncctl as its console script runs it, writing sys.modules to $MODULES_OUT at exit.
PROBE = ("import atexit, json, os, sys\n"
         "atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write(json.dumps(sorted(sys.modules))))\n"
         "from memsyncd.ctl import main\n"
         "sys.exit(main())\n")
ADD_EVENT = {"hook_event_name": "PostToolUse", "tool_name": "mcp__openmemory__add_memories",
             "tool_input": {"text": "likes green tea"},
             "tool_response": [{"type": "text", "text": json.dumps(
                 {"results": [{"id": "hook-id-1", "memory": "likes green tea", "event": "ADD"}]})}]}


def interpreter_baseline(tmp_path: Path) -> set[str]:
    """Modules an empty interpreter has loaded at exit in the same environment (site, encodings, ...)."""
    out = tmp_path / "baseline.json"
    code = "import atexit, json, os, sys\n" \
           "atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write(json.dumps(sorted(sys.modules))))\n"
    subprocess.run([sys.executable, "-c", code], env=base_env(MODULES_OUT=str(out)), check=True, timeout=PROC_TIMEOUT)
    return set(json.loads(out.read_text()))


def run_probed(tmp_path: Path, *args: str,
               stdin: str | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run memsyncctl with ``args``; its result and the modules it had loaded at exit."""
    out = tmp_path / f"modules-{uuid.uuid4().hex}.json"
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, input=stdin,
                          timeout=PROC_TIMEOUT, env=base_env(MEM0_API_KEY=API_KEY, MODULES_OUT=str(out)))
    return done, set(json.loads(out.read_text()))


def run_bare(tmp_path: Path, *args: str, stdin: str | None = None,
             cwd: Path | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """memsyncctl run as :func:`run_probed` does, but with ``python -S`` (no site, so nothing an installer's
    ``.pth`` file imports) and this checkout on ``PYTHONPATH``: every module loaded is memsyncctl's own doing."""
    out = tmp_path / f"modules-{uuid.uuid4().hex}.json"
    checkout = str(Path(ctl_module.__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-S", "-c", PROBE, *args], capture_output=True, text=True, input=stdin,
                          timeout=PROC_TIMEOUT, cwd=cwd,
                          env=base_env(MEM0_API_KEY=API_KEY, MODULES_OUT=str(out), PYTHONPATH=checkout))
    return done, set(json.loads(out.read_text()))


def assert_hot(modules: set[str], what: str) -> None:
    loaded = sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in HOT_FORBIDDEN))
    assert loaded == [], f"{what} loaded {loaded}"


def assert_stdlib_only(modules: set[str], baseline: set[str], what: str) -> None:
    forbidden = sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert forbidden == [], f"{what} loaded {forbidden}"
    foreign = sorted(m for m in modules - baseline
                     if m.split(".")[0] not in sys.stdlib_module_names and m not in STDLIB_ONLY)
    assert foreign == [], f"{what} loaded modules outside the stdlib: {foreign}"


FAST_WITHOUT_DAEMON: list[tuple[tuple[str, ...], str | None]] = [
    (("--version",), None),
    (("--help",), None),
    (("status", "--help"), None),
    (("hook", "--help"), None),
    (("enqueue", "--help"), None),
    (("hook", "post-tool-use"), json.dumps(ADD_EVENT)),
    (("hook", "post-tool-use"), "this is not JSON"),
    (("enqueue", "m-direct"), None),
    (("--no-daemon", "enqueue", "m-no-daemon", "--delete"), None),
]


@pytest.mark.parametrize(("args", "stdin"), FAST_WITHOUT_DAEMON)
def test_fast_paths_without_a_daemon_load_only_the_stdlib(tmp_path: Path, args: tuple[str, ...],
                                                           stdin: str | None) -> None:
    """--version, --help, the hook and enqueue (straight into the queue file) import nothing else."""
    root = tmp_path / "root"
    root.mkdir()
    done, modules = run_probed(tmp_path, "--root", str(root), *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert_stdlib_only(modules, interpreter_baseline(tmp_path), " ".join(args))
    if "enqueue" in args and "--help" not in args:
        assert [e["id"] for e in read_queue(root)["pending"]] == [args[-1] if args[-1] != "--delete" else args[-2]]


def test_fast_paths_with_a_daemon_load_only_the_stdlib(root: Path, emu: Emulators, tmp_path: Path) -> None:
    """status, sync --status (text and JSON), enqueue and the hook with a daemon up: the stdlib only."""
    baseline = interpreter_baseline(tmp_path)
    with running_daemon(root) as daemon:
        daemon.api("POST", "/v1/pause")  # queued entries stay visible in the file
        sock = ("--root", str(root), "--socket", str(daemon.socket))
        for args, stdin in [(("status",), None), (("status", "--json"), None), (("sync", "--status"), None),
                            (("enqueue", "m-via-daemon", "--level", "0"), None),
                            (("hook", "post-tool-use"), json.dumps(ADD_EVENT)), (("--version",), None)]:
            done, modules = run_probed(tmp_path, *sock, *args, stdin=stdin)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            assert done.stderr == "", (args, done.stderr)
            assert_stdlib_only(modules, baseline, " ".join(args))
            if "--json" in args:
                assert json.loads(done.stdout)["daemon"]["pid"] == daemon.proc.pid  # answered by the daemon
            elif args[0] in ("status", "sync"):
                assert f"Daemon:   pid {daemon.proc.pid}, paused" in done.stdout
        assert {"m-via-daemon", "hook-id-1"} <= {e["id"] for e in read_queue(root)["pending"]}


HOT_COMMANDS: list[tuple[tuple[str, ...], str | None]] = [
    (("--version",), None), (("status",), None), (("status", "--json"), None), (("sync", "--status"), None),
    (("sync", "--status", "--json"), None), (("enqueue", "m-hot", "--level", "1"), None),
    (("hook", "post-tool-use"), json.dumps(ADD_EVENT)), (("hook", "post-tool-use"), "not JSON"),
]


def test_hot_commands_run_from_the_root_without_argparse_pathlib_typing_or_dataclasses(
        root: Path, emu: Emulators, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: Path) -> None:
    """Run as users do (from the root's directory, no flags; a trusted root; the daemon up, found by its
    socket's name): the hot commands load none of the modules that cost milliseconds per call."""
    from memsyncd.store.paths import default_socket_path

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    _hot_commands(root, tmp_path, default_socket_path(root.resolve()))


def _hot_commands(root: Path, tmp_path: Path, socket_path: Path) -> None:
    with running_daemon(root, socket_path=socket_path) as daemon:
        daemon.api("POST", "/v1/pause")
        for args, stdin in HOT_COMMANDS:
            done, modules = run_bare(tmp_path, *args, stdin=stdin, cwd=root)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stdout, done.stderr)
            assert_hot(modules, " ".join(args))
            if args[0] in ("status", "sync"):  # answered by the daemon, not in-process
                assert str(daemon.proc.pid) in done.stdout, (args, done.stdout)
        assert {"m-hot", "hook-id-1"} <= {e["id"] for e in read_queue(root)["pending"]}
    done, modules = run_bare(tmp_path, "hook", "post-tool-use", stdin=json.dumps(ADD_EVENT), cwd=root)
    assert done.returncode == 0 and done.stderr == ""  # no daemon: still the queue only
    assert_hot(modules, "hook without a daemon")


@pytest.mark.parametrize("args", [
    ("enqueue",), ("enqueue", "--level", "x", "m1"), ("enqueue", "m1", "m2"), ("enqueue", "-m1"),
    ("enqueue", "m1", "--level"), ("enqueue", "m1", "--content-hash", "--json"), ("status", "--bogus"),
    ("sync", "--status", "--push"), ("hook", "pre-tool-use"), ("hook",), ("--root",), ("--root", "--version"),
    ("status", "--help"), ("enqueue", "--help"), ("hook", "--help"), ("--help",),
])
def test_unusual_spellings_of_hot_commands_get_argparse_answers(tmp_path: Path, args: tuple[str, ...],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The hand-written dispatch takes only plain spellings; everything else is argparse's, error for error."""
    assert ctl_module.hot_args(list(args)) is None
    with pytest.raises(SystemExit) as expected:
        ctl_module.build_parser().parse_args(list(args))
    want = capsys.readouterr()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=PROC_TIMEOUT,
                          cwd=tmp_path, env=base_env(MODULES_OUT=str(tmp_path / "m.json")))
    if expected.value.code == 0:  # help: argparse printed it and exited 0
        assert (done.returncode, done.stdout) == (0, want.out)
    else:
        assert (done.returncode, done.stderr) == (expected.value.code, want.err)


def test_plain_spellings_parse_as_argparse_does() -> None:
    """Each hot spelling gives the attributes argparse's namespace has (the handlers read the same values)."""
    for argv in (["status"], ["--root", "/r", "status", "--json"], ["--socket=/s", "-v", "sync", "--json", "--status"],
                 ["enqueue", "m1"], ["--no-daemon", "enqueue", "--level", "0", "m1", "--delete", "--json",
                                     "--content-hash", "abc"], ["hook", "post-tool-use"], ["--root=/x", "hook",
                                                                                          "post-tool-use"]):
        hot = ctl_module.hot_args(argv)
        assert isinstance(hot, ctl_module.HotArgs), argv
        want = vars(ctl_module.build_parser().parse_args(argv))
        assert {key: getattr(hot, key) for key in want} == want, argv
    abbreviated = ["--verb", "status", "--js"]  # argparse takes unique prefixes; the dispatch leaves them to it
    assert ctl_module.hot_args(abbreviated) is None
    assert vars(ctl_module.build_parser().parse_args(abbreviated))["json"] is True


def test_status_without_a_daemon_runs_in_process_with_the_same_text(root: Path, emu: Emulators) -> None:
    """No daemon answers: the engine computes the same SYNC STATUS block; its daemon line says none runs."""
    with running_daemon(root) as daemon:
        daemon.api("POST", "/v1/pause")
        ctl(root, "--no-daemon", "enqueue", emu.local_add("thin: pending", level=1))  # paused: stays pending
        via_daemon = daemon.ctl("status")
    stopped = ctl(root, "--socket", str(root / "d.sock"), "status")  # where the stopped daemon listened
    no_socket = ctl(root, "status")
    assert via_daemon.returncode == stopped.returncode == no_socket.returncode == 0
    lines = [line for line in via_daemon.stdout.splitlines() if not line.startswith("Daemon:")]
    not_running = "Daemon:   not running"
    assert stopped.stdout.splitlines()[:-1] == lines == no_socket.stdout.splitlines()[:-1]
    assert stopped.stdout.splitlines()[-1].startswith(not_running) and not_running in no_socket.stdout
    assert "1 memories to push" in no_socket.stdout and no_socket.stderr == ""


# --- a fake daemon on a Unix socket --------------------------------------------------------------


class FakeDaemon:
    """A Unix socket that records each request and answers it with ``reply``, or never (``reply=None``)."""

    def __init__(self, path: Path, reply: bytes | None) -> None:
        self.path = path
        self.reply = reply
        self.requests: list[tuple[str, bytes]] = []
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeDaemon:
        self._listener.bind(str(self.path))
        self._listener.listen(8)
        self._listener.settimeout(0.1)  # so the accept loop sees _stop
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10)
        for conn in self._held:
            conn.close()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append((head.split(b"\r\n", 1)[0].decode(), body))
            if self.reply is None:
                self._held.append(conn)  # accepted, read, never answered
            else:
                conn.sendall(self.reply)
                conn.close()


def http_reply(status: int, body: Any) -> bytes:
    payload = json.dumps(body).encode()
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
            "connection: close\r\n\r\n").encode() + payload


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (pytest's tmp paths can exceed the 108-byte limit)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mst-") as name:
        yield Path(name)


@pytest.mark.parametrize(("reply", "status", "body"), [
    (http_reply(200, {"ok": True}), 200, {"ok": True}),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
     b"5\r\n{\"a\":\r\n2;ext=1\r\n1}\r\n0\r\n\r\n", 200, {"a": 1}),
    (b"HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"error\": {}}", 404, {"error": {}}),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: 6\r\n\r\nup 1\n\n",
     200, "up 1\n\n"),
])
def test_call_daemon_reads_every_framing(short_dir: Path, reply: bytes, status: int, body: Any) -> None:
    """Content-Length, chunked and close-delimited answers; JSON or text bodies."""
    with FakeDaemon(short_dir / "d.sock", reply=reply) as fake:
        answer = call_daemon(fake.path, "POST", "/v1/queue", body={"id": "x"}, timeout=10)
    assert (answer.status, answer.body) == (status, body)
    request_line, sent = fake.requests[0]
    assert request_line == "POST /v1/queue HTTP/1.1" and json.loads(sent) == {"id": "x"}


@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"cut\": ",
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!",
    b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n{}",
    b"",
])
def test_call_daemon_reports_unusable_answers_as_silence(short_dir: Path, reply: bytes) -> None:
    """Not HTTP, cut short, not JSON, or closed at once: DaemonSilent (the caller falls back), never a crash."""
    with FakeDaemon(short_dir / "d.sock", reply=reply) as fake, pytest.raises(DaemonSilent):
        call_daemon(fake.path, "GET", "/v1/status", timeout=10)


def test_call_daemon_without_a_listener_is_no_daemon(short_dir: Path) -> None:
    """Absent socket, or a stale socket file nobody listens on: NoDaemon."""
    with pytest.raises(NoDaemon):
        call_daemon(short_dir / "absent.sock", "GET", "/v1/status", timeout=1)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_dir / "stale.sock"))
    stale.close()  # the file stays, nothing listens
    with pytest.raises(NoDaemon):
        call_daemon(short_dir / "stale.sock", "GET", "/v1/status", timeout=1)


def test_enqueue_falls_back_to_the_file_when_the_daemon_never_answers(tmp_path: Path, short_dir: Path) -> None:
    """The daemon accepts and stays silent: after the short timeout the id goes into the queue file; exit 0."""
    with FakeDaemon(short_dir / "silent.sock", reply=None) as fake:
        done = ctl(tmp_path, "--socket", str(fake.path), "enqueue", "m-silent", "--level", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Queued push of m-silent in {queue_path(tmp_path)}\n" and done.stderr == ""
    assert [(e["id"], e["level"]) for e in read_queue(tmp_path)["pending"]] == [("m-silent", 1)]
    root = quote(str(tmp_path.resolve()))
    assert [(line, json.loads(body)["id"]) for line, body in fake.requests] == [
        (f"POST /v1/queue?root={root} HTTP/1.1", "m-silent")]


def test_enqueue_falls_back_to_the_file_on_a_5xx(tmp_path: Path, short_dir: Path) -> None:
    """The daemon fails to queue (500): the id goes into the file; the same text, exit 0."""
    error = {"error": {"type": "QueueBusyError", "title": "sync queue is busy", "message": "locked"}}
    with FakeDaemon(short_dir / "d.sock", reply=http_reply(500, error)) as fake:
        done = ctl(tmp_path, "--socket", str(fake.path), "enqueue", "m-500", "--delete", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"queued": "m-500", "action": "delete", "queue_path": str(queue_path(tmp_path))}
    assert [(e["id"], e["action"]) for e in read_queue(tmp_path)["pending"]] == [("m-500", "delete")]
    assert len(fake.requests) == 1


def test_enqueue_trusts_the_daemon_when_it_accepts(tmp_path: Path, short_dir: Path) -> None:
    """202 from the daemon: memsyncctl does not write the file itself (the daemon did)."""
    with FakeDaemon(short_dir / "d.sock", reply=http_reply(202, {"queued": "m-ok", "action": "push"})) as fake:
        done = ctl(tmp_path, "--socket", str(fake.path), "enqueue", "m-ok")
    assert done.returncode == 0 and done.stdout == f"Queued push of m-ok in {queue_path(tmp_path)}\n"
    assert not queue_path(tmp_path).exists() and len(fake.requests) == 1


def test_enqueue_reports_the_daemons_4xx_as_the_same_error(tmp_path: Path, short_dir: Path) -> None:
    """A refusal (400 with an error body) is the project error it names: message on stderr, its exit code."""
    error = {"error": {"type": "UsageError", "title": "Invalid usage", "message": '"id" is not known here'}}
    with FakeDaemon(short_dir / "d.sock", reply=http_reply(400, error)) as fake:
        done = ctl(tmp_path, "--socket", str(fake.path), "enqueue", "m-bad")
    assert done.returncode == 2 and done.stderr == 'memsyncctl: Invalid usage: "id" is not known here\n'
    assert not queue_path(tmp_path).exists()


def test_status_from_the_daemon_shows_the_age_of_an_old_pull_figure(tmp_path: Path, short_dir: Path) -> None:
    """to_pull_as_of older than the pull interval: the pull line says how old; unknown keys are ignored."""
    as_of = format_ts((datetime.now(UTC) - timedelta(minutes=12, seconds=5)).replace(microsecond=0))
    status = {"local_url": "http://localhost:8765", "cloud_configured": True, "pending_push": 2, "pending_pull": 3,
              "conflicts": 0, "last_sync": None, "daemon": {"pid": 4242, "paused": False, "uptime_seconds": 61},
              "to_pull_as_of": as_of, "pull_interval_seconds": 300, "a_field_from_a_newer_daemon": [1]}
    with FakeDaemon(short_dir / "d.sock", reply=http_reply(200, status)):
        done = ctl(tmp_path, "--socket", str(short_dir / "d.sock"), "status")
    assert done.returncode == 0, done.stderr
    assert "          3 memories to pull (as of 12 minutes ago)\n" in done.stdout
    assert "Daemon:   pid 4242, running, up 0h01m01s" in done.stdout


def test_status_error_from_the_daemon_prints_the_seed_block(tmp_path: Path, short_dir: Path) -> None:
    """503 SyncUnavailableError over the socket: the seed's SYNC UNAVAILABLE block and exit 3, as in-process."""
    error = {"error": {"type": "SyncUnavailableError", "title": "SYNC UNAVAILABLE",
                       "message": "Cloud sync is not configured."}}
    with FakeDaemon(short_dir / "d.sock", reply=http_reply(503, error)):
        done = ctl(tmp_path, "--socket", str(short_dir / "d.sock"), "status")
    assert done.returncode == 3 and done.stdout.startswith("SYNC UNAVAILABLE\nCloud sync is not configured.\n")


def test_status_with_a_silent_daemon_falls_back_in_process(short_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """No answer within the status timeout: a note, and the engine computes it here (no second probe)."""
    monkeypatch.setattr(fast, "STATUS_TIMEOUT_SECONDS", 0.2)
    args = ctl_module.build_parser().parse_args(["--root", str(short_dir), "--socket", str(short_dir / "s.sock"),
                                                 "status"])
    with FakeDaemon(short_dir / "s.sock", reply=None):
        assert fast.run_fast(args) is None
    assert args.no_daemon is True
    assert "gave no usable answer" in capsys.readouterr().err


def test_other_commands_map_a_silent_daemon_to_a_daemon_error(tmp_path: Path, short_dir: Path) -> None:
    """conflicts list against a daemon that never answers: one line and exit 2, no traceback."""
    with FakeDaemon(short_dir / "d.sock", reply=None):
        done = ctl(tmp_path, "--socket", str(short_dir / "d.sock"), "conflicts", "list")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("memsyncctl: daemon error: the daemon on ") and "did not answer" in done.stderr
    assert "Traceback" not in done.stderr


# --- errors never reach the user as a traceback ---------------------------------------------------


def _run_main(monkeypatch: pytest.MonkeyPatch, exc: BaseException, *argv: str) -> int:
    def boom(args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setattr(fast, "run_fast", boom)
    return ctl_module.main(["--root", "/nonexistent-root", *argv])


def test_unexpected_exception_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A bug: one line naming the type and message, how to report it; the key is redacted; exit 1."""
    monkeypatch.setenv("MEM0_API_KEY", "m0-secret-value-123")
    assert _run_main(monkeypatch, RuntimeError("boom with m0-secret-value-123\nsecond line"), "status") == 1
    err = capsys.readouterr().err
    assert err == ("memsyncctl: internal error: RuntimeError: boom with <redacted> second line; please report it, "
                   "with the log from 'memsyncctl -v ...'\n")


def test_keyboard_interrupt_is_exit_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C: exit 130 and one line, no traceback."""
    assert _run_main(monkeypatch, KeyboardInterrupt(), "status") == 130
    assert capsys.readouterr().err == "memsyncctl: interrupted\n"


def test_os_error_on_a_file_names_the_file(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An OSError that carries a file name becomes a FileAccessError (exit 6) naming it."""
    error = PermissionError(13, "Permission denied", "/r/.claude/memory/config.json")
    assert _run_main(monkeypatch, error, "status") == EXIT_UNREADABLE
    err = capsys.readouterr().err
    assert err.startswith("memsyncctl: cannot access a file: /r/.claude/memory/config.json: Permission denied.")
    assert isinstance(project_error_for(error), FileAccessError)
    assert project_error_for(ValueError("x")) is None


def test_unwritable_queue_directory_is_exit_6_naming_the_path(tmp_path: Path) -> None:
    """The queue's directory cannot be created (a file is in the way): exit 6, the path, nothing else."""
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "session").write_text("a file where a directory should be")
    done = ctl(tmp_path, "--no-daemon", "enqueue", "m1")
    assert done.returncode == EXIT_UNREADABLE, done.stderr
    assert str(tmp_path / ".claude" / "session") in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(("raised", "expected", "needle"), [
    (sqlite3.DatabaseError("file is not a database"), StateUnreadableError, "memsyncctl state rebuild"),
    (httpx.ReadTimeout("timed out"), DaemonError, "did not answer in time"),
    (httpx.RemoteProtocolError("peer closed"), DaemonError, "RemoteProtocolError"),
    (json.JSONDecodeError("Expecting value", "", 0), DaemonError, "not valid JSON"),
])
def test_library_errors_from_commands_become_project_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            raised: Exception, expected: type[Exception],
                                                            needle: str) -> None:
    """SQLite, httpx and JSON errors that reach the command layer get a message and a SPEC exit code."""
    async def fail(paths: Paths, args: argparse.Namespace) -> int:
        raise raised

    monkeypatch.setattr(commands, "dispatch", fail)
    args = ctl_module.build_parser().parse_args(["--root", str(tmp_path), "--socket", "/run/x.sock",
                                                 "conflicts", "list"])
    with pytest.raises(expected) as info:
        commands.run_command(args)
    assert needle in str(info.value)
    if expected is StateUnreadableError:
        assert str(Paths(tmp_path).state) in str(info.value) and info.value.exit_code == EXIT_UNREADABLE


# --- stderr is for humans unless -v ---------------------------------------------------------------


def test_stderr_has_no_log_records_without_verbose(root: Path, emu: Emulators) -> None:
    """A failing item logs a warning: only with -v does it reach stderr (as a JSON record)."""
    memory = emu.local_add("quiet-stderr fail-me", level=1)
    ctl(root, "enqueue", memory)
    emu.fault(fault="500", match="quiet-stderr")
    quiet = ctl(root, "sync", "--push")
    loud = ctl(root, "-v", "sync", "--push")
    assert quiet.returncode == loud.returncode == 1
    assert quiet.stderr == "", quiet.stderr
    records = [json.loads(line) for line in loud.stderr.splitlines() if line.startswith("{")]
    assert any(r["event"] == "push.item_failed" for r in records)


# --- rendering of the status wire fields ----------------------------------------------------------

NOW = datetime(2026, 1, 18, 12, 0, tzinfo=UTC)


def _status(**fields: Any) -> StatusReport:
    return StatusReport("http://localhost:8765", True, 2, 3, 0, None, **fields)


@pytest.mark.parametrize(("fields", "pull_line"), [
    ({}, "          3 memories to pull"),
    ({"to_pull_as_of": "2026-01-18T11:48:00Z", "pull_interval_seconds": 300},
     "          3 memories to pull (as of 12 minutes ago)"),
    ({"to_pull_as_of": "2026-01-18T11:58:00Z", "pull_interval_seconds": 300}, "          3 memories to pull"),
    ({"to_pull_as_of": "2026-01-16T12:00:00Z", "pull_interval_seconds": 3600},
     "          3 memories to pull (as of 2 days ago)"),
    ({"to_pull_as_of": "2026-01-18T11:00:00Z"}, "          3 memories to pull (as of 1 hour ago)"),
    ({"to_pull_as_of": "not a time", "pull_interval_seconds": 300}, "          3 memories to pull"),
    ({"to_pull_as_of": "2026-01-18T11:00:00Z", "pending_pull": None}, "          ? memories to pull"),
])
def test_pull_line_says_how_old_a_stale_figure_is(fields: dict[str, Any], pull_line: str) -> None:
    """Only a figure older than one pull interval gets its age; a live or fresh one reads as before."""
    status = _status(**{k: v for k, v in fields.items() if k != "pending_pull"})
    if "pending_pull" in fields:
        status.pending_pull = fields["pending_pull"]
    assert render_status(status, NOW).splitlines()[7] == pull_line


def test_status_report_round_trips_and_ignores_unknown_keys() -> None:
    """from_json(to_json()) is the identity; keys from a newer daemon are dropped, not fatal."""
    status = _status(to_pull_as_of="2026-01-18T11:48:00Z", pull_interval_seconds=300, daemon={"pid": 1})
    assert StatusReport.from_json({**status.to_json(), "new_in_v2": True}) == status
    assert StatusReport.from_json({k: v for k, v in status.to_json().items()
                                   if k not in ("to_pull_as_of", "pull_interval_seconds")}).to_pull_as_of is None


def test_ctl_module_imports_only_the_stdlib(tmp_path: Path) -> None:
    """``import memsyncd.ctl`` and the fast modules load nothing outside the stdlib."""
    out = tmp_path / "m.json"
    code = ("import json, os, sys\nimport memsyncd.ctl, memsyncd.cli.fast, memsyncd.cli.hook, memsyncd.cli.render, "
            "memsyncd.cli.output, memsyncd.wire_http, memsyncd.store.paths, memsyncd.store.queue, "
            "memsyncd.engine.report\n"
            "open(os.environ['MODULES_OUT'], 'w').write(json.dumps(sorted(sys.modules)))\n")
    subprocess.run([sys.executable, "-c", code], env=base_env(MODULES_OUT=str(out)), check=True, timeout=PROC_TIMEOUT)
    assert_stdlib_only(set(json.loads(out.read_text())), interpreter_baseline(tmp_path), "import memsyncd.ctl")


def test_the_hook_writes_only_the_queue_and_creates_no_runtime_dir(tmp_path: Path) -> None:
    """No daemon: the hook makes no runtime dir, writes nothing under HOME or XDG_CONFIG_HOME, only the queue."""
    root, home, runtime = tmp_path / "root", tmp_path / "home", tmp_path / "run"
    for directory in (root / ".claude/session", root / ".claude/memory", home / ".config", runtime):
        directory.mkdir(parents=True, mode=0o700)
    (root / ".claude/memory/config.json").write_text('{"local": {"url": "http://127.0.0.1:9"}}')
    (root / ".claude/memory/config.json").chmod(0o600)
    env = base_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_RUNTIME_DIR=str(runtime),
                   MODULES_OUT=str(tmp_path / "m.json"))

    def snapshot() -> set[str]:
        return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.name != "m.json"}

    before = snapshot()
    done = subprocess.run([sys.executable, "-c", PROBE, "hook", "post-tool-use"], input=json.dumps(ADD_EVENT),
                          capture_output=True, text=True, cwd=root, env=env, timeout=PROC_TIMEOUT)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert snapshot() - before == {"root/.claude/session/sync-queue.json", "root/.claude/session/sync-queue.json.lock"}
    assert [e["id"] for e in read_queue(root)["pending"]] == ["hook-id-1"]
