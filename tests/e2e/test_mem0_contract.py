"""The official ``mem0ai`` MemoryClient against the mem0 emulator, and ``memsyncd emulate`` as a process.

If the emulator speaks the platform's protocol, the vendor's own client must
work against it unchanged: construction (ping), add in both modes, events,
paginated get_all with v2 filters, get/update/delete/history, and the
exceptions it raises for a bad key or a 401.
"""

from __future__ import annotations

import os
import tempfile

os.environ["MEM0_TELEMETRY"] = "false"  # before mem0 is imported: no PostHog
os.environ.setdefault("MEM0_DIR", tempfile.mkdtemp(prefix="memsyncd-mem0-dir-"))

import json
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

mem0 = pytest.importorskip("mem0")
from mem0 import MemoryClient  # noqa: E402
from mem0.exceptions import AuthenticationError, MemoryNotFoundError, RateLimitError  # noqa: E402

from memsyncd.emulators.runner import RunningEmulators, emulate_main  # noqa: E402

pytestmark = pytest.mark.timeout(60)

KEY = "contract-key"


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulators]:
    with RunningEmulators(api_key=KEY, user="alice") as running:
        yield running


@pytest.fixture
def client(emu: RunningEmulators) -> Iterator[MemoryClient]:
    emu.reset()
    emu.mem0.set_add_mode("immediate")
    c = MemoryClient(api_key=KEY, host=emu.mem0_url)
    yield c
    c.client.close()


def test_construction_pings_and_reads_org_and_project(emu: RunningEmulators, client: MemoryClient) -> None:
    """MemoryClient(...) validates the key with GET /v1/ping/ and keeps org/project."""
    assert (client.org_id, client.project_id) == ("org_emulator", "proj_emulator")
    assert client.user_email == "emulator@memsyncd.invalid"
    [ping] = emu.requests("mem0")
    assert ping["path"] == "/v1/ping/" and ping["headers"]["authorization"] == "<redacted>"
    assert ping["headers"]["mem0-user-id"]


def test_wrong_key_raises_value_error_on_construction(emu: RunningEmulators) -> None:
    """A rejected key surfaces as ValueError carrying the server's detail."""
    with pytest.raises(ValueError, match="Invalid API key"):
        MemoryClient(api_key="not-the-key", host=emu.mem0_url)


def test_add_immediate_and_read_it_back(client: MemoryClient) -> None:
    """add(infer=False) stores the text; get() returns it with metadata."""
    out = client.add("I prefer tabs", user_id="u1", infer=False, metadata={"memsync_local_id": "L1", "level": 1})
    [result] = out["results"]
    assert result["event"] == "ADD" and result["memory"] == "I prefer tabs"
    memory = client.get(result["id"])
    assert memory["memory"] == "I prefer tabs"
    assert memory["metadata"] == {"memsync_local_id": "L1", "level": 1}
    assert memory["user_id"] == "u1"


def test_add_queued_then_event_succeeds(emu: RunningEmulators, client: MemoryClient) -> None:
    """Queued add → PENDING with event_id; GET /v1/event/{id}/ reaches SUCCEEDED with the memory id."""
    emu.mem0.set_add_mode("queued", delay_ms=20)
    out = client.add([{"role": "user", "content": "queued fact"}], user_id="u1", infer=False)
    [pending] = out["results"]
    assert pending["status"] == "PENDING"
    deadline = time.monotonic() + 5
    while True:
        event = client.client.get(f"/v1/event/{pending['event_id']}/").json()
        if event["status"] == "SUCCEEDED" or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert event["status"] == "SUCCEEDED"
    memory_id = event["results"][0]["id"]
    assert client.get(memory_id)["memory"] == "queued fact"


def test_get_all_filters_and_paginates(client: MemoryClient) -> None:
    """get_all(filters=AND[user_id, created_at gte], page, page_size) pages through count/next."""
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    for n in range(3):
        client.add(f"fact {n}", user_id="u1", infer=False)
    client.add("someone else", user_id="u2", infer=False)
    filters = {"AND": [{"user_id": "u1"}, {"created_at": {"gte": since}}]}
    first = client.get_all(filters=filters, page=1, page_size=2)
    assert first["count"] == 3 and first["previous"] is None and first["next"]
    assert [m["memory"] for m in first["results"]] == ["fact 0", "fact 1"]
    second = client.get_all(filters=filters, page=2, page_size=2)
    assert [m["memory"] for m in second["results"]] == ["fact 2"] and second["next"] is None
    everything = client.get_all(filters={"user_id": "u1"})
    assert everything["count"] == 3


def test_update_history_delete(client: MemoryClient) -> None:
    """update(text=...), history() and delete() behave; get() afterwards raises MemoryNotFoundError."""
    memory_id = client.add("draft", user_id="u1", infer=False)["results"][0]["id"]
    updated = client.update(memory_id, text="final")
    assert updated["memory"] == "final"
    assert [h["event"] for h in client.history(memory_id)] == ["ADD", "UPDATE"]
    assert client.delete(memory_id) == {"message": "Memory deleted successfully!"}
    with pytest.raises(MemoryNotFoundError):
        client.get(memory_id)


def test_search_and_users(client: MemoryClient) -> None:
    """search() with filters and users() parse the emulator's answers."""
    client.add("loves hiking in the alps", user_id="u1", infer=False)
    hits = client.search("hiking", filters={"user_id": "u1"})
    assert hits["results"][0]["memory"] == "loves hiking in the alps"
    assert {e["name"] for e in client.users()["results"]} == {"u1"}


def test_fault_401_after_construction_raises_authentication_error(emu: RunningEmulators, client: MemoryClient) -> None:
    """A 401 on a later call maps to mem0.exceptions.AuthenticationError."""
    emu.set_fault("mem0", "401")
    with pytest.raises(AuthenticationError):
        client.get_all(filters={"user_id": "u1"})


def test_fault_429_raises_rate_limit_error_with_retry_after(emu: RunningEmulators, client: MemoryClient) -> None:
    """A 429 maps to RateLimitError; the client reads Retry-After and the X-RateLimit headers."""
    emu.set_fault("mem0", "429", retry_after=7, count=1)
    with pytest.raises(RateLimitError) as info:
        client.add("x", user_id="u1", infer=False)
    assert info.value.debug_info["retry_after"] == 7
    assert info.value.debug_info["x_ratelimit_remaining"] == "0"


# -- memsyncd emulate as a process --------------------------------------------------------------


def _start(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "memsyncd.emulators", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout=20):
        proc.kill()
        pytest.fail("no READY line within 20 s")
    line = proc.stdout.readline()
    prefix = "EMULATORS READY "
    assert line.startswith(prefix), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, json.loads(line[len(prefix) :])


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_emulate_process_prints_ready_and_serves_the_official_client() -> None:
    """python -m memsyncd.emulators prints one READY line, serves both APIs, exits 0 on SIGTERM."""
    proc, info = _start("--api-key", KEY, "--user", "zoe", "--add-mode", "immediate")
    try:
        assert set(info) == {"openmemory", "mem0", "pid"} and info["pid"] == proc.pid
        assert info["mem0"].startswith("http://127.0.0.1:") and info["openmemory"].startswith("http://127.0.0.1:")
        client = MemoryClient(api_key=KEY, host=info["mem0"])
        assert client.add("hello", user_id="zoe", infer=False)["results"][0]["memory"] == "hello"
        stats = httpx.get(f"{info['openmemory']}/api/v1/stats/", params={"user_id": "zoe"})
        assert stats.status_code == 200
    finally:
        code = _stop(proc)
    assert code == 0
    assert proc.stdout is not None and proc.stdout.read() == ""  # exactly one stdout line


def test_emulate_state_file_survives_a_restart(tmp_path: Path) -> None:
    """--state FILE is written on shutdown and loaded on the next start."""
    state = tmp_path / "emu.json"
    proc, info = _start("--api-key", KEY, "--user", "zoe", "--state", str(state))
    try:
        headers = {"Authorization": f"Token {KEY}"}
        body = {"messages": [{"role": "user", "content": "persist me"}], "user_id": "zoe", "infer": False}
        assert httpx.post(f"{info['mem0']}/v3/memories/add/", json=body, headers=headers).status_code == 200
        r = httpx.post(
            f"{info['openmemory']}/api/v1/memories/", json={"user_id": "zoe", "text": "local", "infer": False}
        )
        assert r.status_code == 200
    finally:
        assert _stop(proc) == 0
    saved = json.loads(state.read_text())
    assert [m["memory"] for m in saved["mem0"]["memories"]] == ["persist me"]
    proc, info = _start("--api-key", KEY, "--user", "zoe", "--state", str(state))
    try:
        listed = httpx.post(
            f"{info['mem0']}/v3/memories/",
            json={"filters": {"user_id": "zoe"}},
            headers={"Authorization": f"Token {KEY}"},
        ).json()
        assert [m["memory"] for m in listed["results"]] == ["persist me"]
        local = httpx.post(f"{info['openmemory']}/api/v1/memories/filter", json={"user_id": "zoe"}).json()
        assert [i["content"] for i in local["items"]] == ["local"]
    finally:
        assert _stop(proc) == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com"])
def test_emulate_refuses_non_loopback_hosts(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A non-loopback --host exits 2 with a clear message, before binding anything."""
    assert emulate_main(["--host", host]) == 2
    assert "non-loopback" in capsys.readouterr().err


def test_emulate_usage_errors_and_help(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Bad flags exit 2; --help exits 0 and says the default key is for tests only."""
    assert emulate_main(["--fault", "418"]) == 2
    assert emulate_main(["--fail-rate", "1.5"]) == 2
    bad_state = tmp_path / "state.json"
    bad_state.write_text("{not json")
    assert emulate_main(["--state", str(bad_state)]) == 2
    assert "cannot load state file" in capsys.readouterr().err
    assert emulate_main(["--help"]) == 0
    assert "tests only" in capsys.readouterr().out
