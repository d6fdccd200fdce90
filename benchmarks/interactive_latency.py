"""Benchmark: wall time of the interactive memsyncctl commands as users run them, as JSON.

Hermetic: a temporary HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR, the loopback emulators (in this
process), and the user's daemon (``memsyncd run``, no flags) serving one registered, trusted root
(``memsyncctl trust`` + ``memsyncctl roots add``, as a user sets it up). Then it times, in
interleaved rounds, the INSTALLED console script (``memsyncctl`` next to this interpreter, i.e. the
venv's ``bin/``) run from the root's directory with no flags, exactly what Claude Code and a user run:

* ``python -c pass`` (the floor, same interpreter and environment as the script);
* ``memsyncctl --version``;
* ``memsyncctl status`` (daemon up; root discovery, trust check and socket lookup included);
* ``memsyncctl hook post-tool-use`` fed a realistic PostToolUse event of ``add_memories`` on stdin;
* ``memsyncctl enqueue ID`` (daemon up).

When memsyncd is an editable install (setuptools' import-hook finder, which loads ``pathlib``,
``urllib`` and ``re`` in every interpreter of the venv and triples ``python -c pass``), the main
lines use a temporary venv laid out as a wheel install leaves it (plain ``.pth`` path entries to
this checkout and the dependencies, pip's console-script wrapper) and the venv's own script is
timed as extra lines. Second lines, for diagnosis: the in-process variant (``python -c "from memsyncd.ctl import main"``
with ``--root``/``--socket`` given, which skips the wrapper, root discovery and socket lookup),
and ``status``/``enqueue`` against a canned daemon (a thread here answering at once), which
isolates the client's share from the daemon's. Prints medians of wall time and of CPU time
(user + system; steadier when other processes load the machine), their ratios to
``python -c pass`` measured in the same run, the goals (hook <= 3x, status <= 2.5x, on wall
time), and the requests mem0 received per ``status`` (goal 0: the daemon answers from memory).

The children may write bytecode caches to a private ``PYTHONPYCACHEPREFIX`` (as an installed
package has ``.pyc`` files) even when ``PYTHONDONTWRITEBYTECODE`` is set; ``--no-bytecode``
measures without them. Everything talks to 127.0.0.1 and Unix sockets under the temp directory.

Usage: python benchmarks/interactive_latency.py [--runs N] [--no-bytecode]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import memsyncd
from memsyncd.emulators.admin import EmulatorAdmin, wait_until
from memsyncd.emulators.isolation import isolate_user_environment
from memsyncd.emulators.runner import RunningEmulators

isolate_user_environment()  # never reach the daemon or registry of the user running the benchmark

KEY = "bench-key-0123456789"
USER = "bench"
CTL = "import sys; from memsyncd.ctl import main; sys.exit(main())"  # what the memsyncctl script runs
GOALS = {"hook": 3.0, "status": 2.5}
CANNED_STATUS: dict[str, Any] = {
    "local_url": "http://localhost:8765", "cloud_configured": True, "pending_push": 0, "pending_pull": 2,
    "conflicts": 0, "last_sync": "2026-01-18T10:00:00Z", "errors": 0, "queue_path": "", "pull_note": "",
    "daemon": {"ok": True, "pid": 1, "paused": False, "busy": False, "uptime_seconds": 5.0}}


class CannedDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers the control API's health, status and queue routes at once, with fixed bodies."""

    daemon_threads = True


class _CannedHandler(socketserver.StreamRequestHandler):
    """One connection: answers requests until the client closes it or asks to (keep-alive as h11 does)."""

    def handle(self) -> None:
        while request_line := self.rfile.readline():
            length, close = 0, False
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                close = close or (name.strip().lower() == b"connection" and b"close" in value.lower())
            self.rfile.read(length)
            body: dict[str, Any]
            if request_line.startswith(b"POST /v1/queue"):
                status, body = "202 Accepted", {"queued": "x", "action": "push"}
            elif request_line.startswith(b"GET /v1/status"):
                status, body = "200 OK", CANNED_STATUS
            else:
                status, body = "200 OK", CANNED_STATUS["daemon"]
            payload = json.dumps(body).encode()
            self.wfile.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
            self.wfile.flush()
            if close:
                return


def hook_event(memory_id: str, cwd: Path) -> str:
    """A PostToolUse event as Claude Code sends it after ``add_memories`` (MCP content blocks)."""
    result = {"results": [{"id": memory_id, "memory": "prefers small focused commits", "event": "ADD"}]}
    return json.dumps({
        "session_id": "0b8c5f3e-bench", "transcript_path": str(cwd / "transcript.jsonl"), "cwd": str(cwd),
        "permission_mode": "default",
        "hook_event_name": "PostToolUse", "tool_name": "mcp__openmemory__add_memories",
        "tool_input": {"text": "The user prefers small, focused commits."},
        "tool_response": [{"type": "text", "text": json.dumps(result)}],
        "tool_use_id": f"toolu_{memory_id}",
    })


def child_env(tmp: Path, cache_dir: Path | None) -> dict[str, str]:
    """The children's environment: the user's key, a private home, config and runtime dir (hermetic)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEMSYNC_", "MEM0_", "NOTIFY_SOCKET", "XDG_"))}
    home = tmp / "home"
    for sub in ("", ".config", "run"):
        (home / sub).mkdir(mode=0o700, exist_ok=True)
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_RUNTIME_DIR": str(home / "run"),
                "MEM0_API_KEY": KEY, "MEM0_TELEMETRY": "false"})
    if cache_dir is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


def health(socket_path: Path) -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://memsyncd",
                          timeout=2) as client:
            return client.get("/v1/health").status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def run_once(argv: list[str], env: dict[str, str], stdin: str | None, cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+system) of one run of ``argv`` in ``cwd``."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False,
                          cwd=cwd)
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or done.stderr:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stdout[-500:]} {done.stderr[-500:]}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu


def installed_script() -> Path:
    """The ``memsyncctl`` console script installed next to this interpreter (the venv's bin/)."""
    script = Path(sys.executable).parent / "memsyncctl"
    if not script.is_file():
        raise SystemExit(f"{script} not found: install memsyncd in this interpreter's environment "
                         "(pip install -e .) and run the benchmark with it.")
    return script


def editable_install() -> bool:
    """Whether memsyncd is installed in editable mode with an import-hook finder (setuptools' ``__editable__``)."""
    return any(Path(p).is_dir() and any(Path(p).glob("__editable__*memsyncd*finder.py")) for p in sys.path)


def plain_install(tmp: Path) -> tuple[Path, Path]:
    """A venv as a wheel install leaves it: memsyncd and its dependencies on plain ``.pth`` path entries
    (no import hook at start-up) and pip's console-script wrapper. Returns (its python, its memsyncctl).

    An editable install's finder imports ``pathlib``, ``urllib`` and ``re`` in every interpreter of
    that venv (``python -c pass`` included): about 3x the bare start-up on the development machine,
    which would hide the client's own cost in the ratio.
    """
    venv = tmp / "plain-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    checkout = Path(memsyncd.__file__ or ".").resolve().parent.parent
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (Path(purelib) / "memsyncd.pth").write_text("\n".join([str(checkout), *deps]) + "\n")
    script = venv / "bin" / "memsyncctl"
    script.write_text(f"#!{python}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom memsyncd.ctl import main\n"
                      "if __name__ == '__main__':\n"
                      "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                      "    sys.exit(main())\n")
    script.chmod(0o755)
    return python, script


def measure(root: Path, socket_path: Path, canned: Path, admin: EmulatorAdmin, runs: int,
            env: dict[str, str], python: str, script: str) -> dict[str, Any]:
    ctl = [python, "-c", CTL]
    counter = iter(range(10**9))
    flags = ["--root", str(root), "--socket", str(socket_path)]
    commands: dict[str, Callable[[], tuple[list[str], str | None]]] = {
        "python -c pass": lambda: ([python, "-c", "pass"], None),
        "--version": lambda: ([script, "--version"], None),
        "status": lambda: ([script, "status"], None),
        "hook": lambda: ([script, "hook", "post-tool-use"], hook_event(f"hook-{next(counter)}", root)),
        "enqueue": lambda: ([script, "enqueue", f"enq-{next(counter)}", "--level", "0"], None),
        "status, in-process (python -c, --root/--socket)": lambda: ([*ctl, *flags, "status"], None),
        "hook, in-process (python -c, --root)": lambda: ([*ctl, "--root", str(root), "hook", "post-tool-use"],
                                                         hook_event(f"hook-{next(counter)}", root)),
        "status, client only (canned daemon)": lambda: ([script, "--socket", str(canned), "status"], None),
        "enqueue, client only (canned daemon)": lambda: ([script, "--socket", str(canned), "enqueue", "x"], None),
    }
    if python != sys.executable:  # also this venv's own interpreter and script (an editable install)
        commands.update({
            "python -c pass (this venv, editable install)": lambda: ([sys.executable, "-c", "pass"], None),
            "status (this venv's bin/memsyncctl, editable)": lambda: ([str(installed_script()), "status"], None),
            "hook (this venv's bin/memsyncctl, editable)": lambda: (
                [str(installed_script()), "hook", "post-tool-use"], hook_event(f"hook-{next(counter)}", root)),
        })
    for make in commands.values():  # warm-up: bytecode caches, page cache
        argv, stdin = make()
        run_once(argv, env, stdin, root)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu_times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):  # interleaved, so load from other processes hits every command alike
        for name, make in commands.items():
            argv, stdin = make()
            wall, cpu = run_once(argv, env, stdin, root)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    # mem0 requests caused by status alone: once the daemon has drained the queue, nothing else runs
    queue = root / ".claude/session/sync-queue.json"
    wait_until(lambda: not json.loads(queue.read_text())["pending"], timeout=60, what="queue drained")
    admin.clear_requests()
    status_runs = min(runs, 10)
    for _ in range(status_runs):
        run_once(commands["status"]()[0], env, None, root)
    status_requests = len(admin.requests())
    floor = statistics.median(times["python -c pass"])
    cpu_floor = statistics.median(cpu_times["python -c pass"])
    results: dict[str, Any] = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        cpu = statistics.median(cpu_times[name])
        entry: dict[str, Any] = {"median_ms": round(median * 1000, 1), "ratio": round(median / floor, 2),
                                 "cpu_median_ms": round(cpu * 1000, 1), "cpu_ratio": round(cpu / cpu_floor, 2)}
        if name in GOALS:
            entry["goal_ratio"] = GOALS[name]
            entry["meets_goal"] = median / floor <= GOALS[name]
        results[name] = entry
    editable_floor = times.get("python -c pass (this venv, editable install)")
    for name in ("status (this venv's bin/memsyncctl, editable)", "hook (this venv's bin/memsyncctl, editable)"):
        if editable_floor and name in results:
            results[name]["ratio_to_editable_floor"] = round(statistics.median(times[name]) /
                                                             statistics.median(editable_floor), 2)
    return {"times": results, "mem0_requests_per_status": round(status_requests / status_runs, 2),
            "mem0_requests_per_status_goal": 0, "command": f"cd {root} && {script} ...",
            "ratios_against": f"{python} -c pass"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command (default 30)")
    parser.add_argument("--no-bytecode", action="store_true", help="do not let the children cache bytecode")
    args = parser.parse_args()
    script = str(installed_script())
    with RunningEmulators(api_key=KEY, user=USER) as emu, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name).resolve()
        os.chdir(tmp)  # never in a checkout: "python -c" puts the cwd first on sys.path
        root = tmp / "root"
        config = {"local": {"url": emu.openmemory_url, "user_id": USER},
                  "cloud": {"enabled": True, "url": emu.mem0_url, "user_id": USER},
                  "sync": {"default_level": 0, "pull_interval_seconds": 3600, "reconcile_interval_seconds": 36000}}
        (root / ".claude/memory").mkdir(parents=True, mode=0o755)
        (root / ".claude/memory/config.json").write_text(json.dumps(config))
        env = child_env(tmp, None if args.no_bytecode else tmp / "pycache")
        socket_path = Path(env["XDG_RUNTIME_DIR"]) / "memsyncd" / "memsyncd.sock"  # the user's daemon
        for setup in (["trust", str(root)], ["roots", "add", str(root)]):  # as a user sets a root up
            done = subprocess.run([script, *setup], capture_output=True, text=True, env=env, timeout=60, cwd=root,
                                  check=False)
            if done.returncode != 0:
                raise RuntimeError(f"memsyncctl {' '.join(setup)} failed: {done.stdout} {done.stderr}")
        admin = EmulatorAdmin(emu.openmemory_url, emu.mem0_url, KEY, USER)
        for i in range(20):
            admin.cloud_add(f"bench cloud memory {i}")
        with open(tmp / "daemon.log", "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "memsyncd", "run", "--log-level", "warning"],
                                      stdout=log, stderr=log, env=env, cwd=tmp)
        try:
            wait_until(lambda: health(socket_path) or daemon.poll() is not None, timeout=30, what="daemon health")
            if daemon.poll() is not None:
                raise RuntimeError((tmp / "daemon.log").read_text()[-2000:])
            first = subprocess.run([script, "sync"], capture_output=True, text=True, env=env, timeout=120,
                                   check=False, cwd=root)
            if first.returncode != 0:
                raise RuntimeError(f"first sync failed: {first.stdout} {first.stderr}")
            canned = CannedDaemon(str(tmp / "canned.sock"), _CannedHandler)
            threading.Thread(target=canned.serve_forever, daemon=True).start()
            python, used = (plain_install(tmp) if editable_install() else (Path(sys.executable), Path(script)))
            try:
                report = measure(root, socket_path, tmp / "canned.sock", admin, args.runs, env, str(python), str(used))
            finally:
                canned.shutdown()
                canned.server_close()
        finally:
            daemon.terminate()
            daemon.wait(15)
            admin.close()
    report.update({"editable_install_measured_as_plain": editable_install(),
                   "runs": args.runs, "bytecode_cache": not args.no_bytecode, "python": sys.version.split()[0],
                   "cores": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                   "memsyncd": str(Path(memsyncd.__file__ or "?").parent)})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
