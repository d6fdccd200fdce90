"""Network hygiene at the HTTP edge (issue 17): no environment proxy for loopback, redirects are errors,
bodies are capped while streaming, and the request timeout is a total deadline."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from harness import API_KEY, USER, Emulators, ctl, make_root
from pydantic import SecretStr

from memsyncd.cli.doctor import DoctorContext, Status, check_mem0
from memsyncd.config import Paths, load_settings
from memsyncd.errors import ConfigError, RedirectedError, ResponseTooLargeError, ServerError
from memsyncd.models import QueueEntry, format_ts, utc_now
from memsyncd.remote.cloud import CloudClient, Scope
from memsyncd.remote.http_edge import RetryPolicy, is_loopback_url, new_client
from memsyncd.remote.local import LocalClient
from memsyncd.store.queue import QueueStore


class CountingListener:
    """A loopback TCP listener that counts connections and answers nothing (a "proxy" that must stay unused)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture()
def proxy() -> Iterator[CountingListener]:
    listener = CountingListener()
    try:
        yield listener
    finally:
        listener.close()


def test_loopback_sync_never_goes_through_an_environment_proxy(root: Path, emu: Emulators,
                                                               proxy: CountingListener, tmp_path: Path) -> None:
    """HTTP_PROXY/HTTPS_PROXY/ALL_PROXY set for a real `memsyncctl sync`: the proxy gets no connection."""
    memory_id = emu.local_add("proxied? never", level=1)
    paths = Paths(root)
    QueueStore(paths.queue, paths.queue_lock).enqueue(QueueEntry(memory_id, "push", format_ts(utc_now())))
    url = f"http://127.0.0.1:{proxy.port}"
    env = {name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                  "all_proxy")}
    env.update(NO_PROXY="", no_proxy="", XDG_RUNTIME_DIR=str(tmp_path))
    result = ctl(root, "--no-daemon", "sync", **env)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "proxied? never" in emu.cloud_texts()
    assert proxy.accepted == 0


def test_only_loopback_urls_refuse_the_environment() -> None:
    """trust_env is off exactly for loopback hosts."""
    assert is_loopback_url("http://127.0.0.1:8765") and is_loopback_url("http://localhost:1")
    assert is_loopback_url("http://[::1]:80") and not is_loopback_url("https://api.mem0.ai")
    assert new_client("http://127.0.0.1:1", timeout=1, headers={}).trust_env is False
    assert new_client("https://api.mem0.ai", timeout=1, headers={}).trust_env is True


@pytest.mark.parametrize("proxy_url", ["socks5://127.0.0.1:1", "ftp://proxy.example"])
def test_an_unusable_environment_proxy_is_a_config_error(monkeypatch: pytest.MonkeyPatch, proxy_url: str) -> None:
    """A proxy variable httpx cannot use gives a ConfigError naming it, not a crash; loopback ignores it."""
    for name in ("HTTPS_PROXY", "ALL_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(ConfigError, match="proxy set in the environment"):
        new_client("https://api.mem0.ai", timeout=1, headers={})
    new_client("http://127.0.0.1:8765", timeout=1, headers={})


def _cloud(handler: object, **kwargs: object) -> CloudClient:
    return CloudClient("https://mem0.test", "m0-secret-key-abcdefgh", Scope(USER), policy=RetryPolicy(attempts=1),
                       transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def test_a_redirect_is_an_error_and_never_followed() -> None:
    """A 307 from mem0 raises RedirectedError (a run-level stop); the Location is never requested."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"location": "https://evil.test/v1/ping/"})

    async def go() -> None:
        cloud = _cloud(handler)
        with pytest.raises(RedirectedError) as err:
            await cloud.ping()
        assert err.value.stops_run and "never follows redirects" in err.value.message
        with pytest.raises(RedirectedError):
            await cloud.ping_info()
        await cloud.aclose()

    asyncio.run(go())
    assert all("evil.test" not in url for url in seen)


def test_doctor_does_not_count_a_307_as_key_accepted(tmp_path: Path, emu: Emulators) -> None:
    """doctor's mem0 check fails on a redirect instead of saying "key accepted"."""
    root = make_root(tmp_path, emu)
    settings = load_settings(Paths(root))
    emu.fault("mem0", fault="redirect")
    try:
        ctx = DoctorContext(paths=Paths(root), home=tmp_path)
        ctx.settings = settings
        ctx.key = SecretStr(API_KEY)
        check = asyncio.run(check_mem0(ctx))
    finally:
        emu.fault("mem0", fault=None)
    assert check.status is Status.FAIL, check
    assert "key accepted" not in check.detail
    assert "redirect" in check.detail


def test_body_is_capped_while_streaming() -> None:
    """A 300 MB answer is abandoned after the cap: the client reads at most the cap plus one chunk."""
    produced = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        chunk = b" " * 65536
        for _ in range(300 * 16):
            produced += len(chunk)
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body(), headers={"content-type": "application/json"})

    async def go() -> None:
        cloud = _cloud(handler, max_body=2 * 2**20)
        with pytest.raises(ResponseTooLargeError) as err:
            await cloud.get("0b2f4c1e-9a4d-4c55-8d8e-2f6c7b9a1d00")
        assert "larger than 2 MB" in err.value.message
        await cloud.aclose()

    asyncio.run(go())
    assert produced <= 2 * 2**20 + 65536


def test_declared_oversized_body_is_refused_before_reading() -> None:
    """A Content-Length over the cap is refused without reading the body."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[" + b" " * (2**20) + b"]")

    async def go() -> None:
        local = LocalClient("http://127.0.0.1:1", USER, policy=RetryPolicy(attempts=1),
                            transport=httpx.MockTransport(handler), max_body=2**19)
        with pytest.raises(ResponseTooLargeError):
            await local.probe(fresh=True)
        await local.aclose()

    asyncio.run(go())


def test_timeout_is_a_total_deadline_for_a_trickling_answer() -> None:
    """A body trickling a byte every 50 ms (each read well inside the timeout) still ends at the deadline."""
    async def trickle() -> AsyncIterator[bytes]:
        yield b"{"
        for _ in range(400):
            await asyncio.sleep(0.05)
            yield b" "
        yield b"}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=trickle(), headers={"content-type": "application/json"})

    async def go() -> float:
        cloud = _cloud(handler, timeout=0.6)
        t0 = time.monotonic()
        with pytest.raises(ServerError) as err:
            await cloud.ping()
        elapsed = time.monotonic() - t0
        assert "total deadline" in err.value.message
        await cloud.aclose()
        return elapsed

    assert asyncio.run(go()) < 3.0


def test_a_normal_answer_keeps_its_headers_and_body() -> None:
    """The capped read hands back the same status, headers and decoded (gzip) body."""
    import gzip
    import json

    raw = json.dumps({"status": "ok", "org_id": "o1", "project_id": "p1"}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=gzip.compress(raw),
                              headers={"content-encoding": "gzip", "date": "Sat, 05 Dec 2026 05:00:00 GMT"})

    async def go() -> None:
        cloud = _cloud(handler)
        info = await cloud.ping_info()
        assert info.org_id == "o1" and info.server_date is not None
        await cloud.aclose()

    asyncio.run(go())


def test_an_openmemory_redirect_names_local_url() -> None:
    """OpenMemory's 307 (a route without its trailing slash, or a wrong local.url) is an error naming local.url."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": "http://127.0.0.1:9/api/v1/stats/"})

    async def go() -> None:
        local = LocalClient("http://127.0.0.1:1", USER, policy=RetryPolicy(attempts=1),
                            transport=httpx.MockTransport(handler))
        with pytest.raises(RedirectedError, match="local.url"):
            await local.probe(fresh=True)
        await local.aclose()

    asyncio.run(go())
