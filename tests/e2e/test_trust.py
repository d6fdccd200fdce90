"""The trust model for roots (issue 17, item 1): a config is used for the network only once the user trusted it.

These tests run WITHOUT the suite's blanket ``MEMSYNC_TRUSTED_ROOTS`` (conftest.py), so they prove
the refusal: a planted or cloned config pointing at a loopback listener gets no request, no key;
the hook queues but never registers; the user daemon never serves it; ``memsyncctl trust`` makes
it work; changing a security field afterwards makes it untrusted again. Ownership tests create a
second user with ``useradd`` when run as root and skip otherwise.
"""

from __future__ import annotations

import http.server
import json
import os
import pwd
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, USER, Emulators, base_env, hook_payload, read_queue, user_daemon, wait_for, write_config

from memsyncd.errors import UntrustedRootError
from memsyncd.store import trust
from memsyncd.store.paths import resolve_root
from memsyncd.store.roots import RootRegistry

CONFIG = Path(".claude/memory/config.json")


@pytest.fixture(autouse=True)
def _no_blanket_trust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``MEMSYNC_TRUSTED_ROOTS`` here (in-process or in subprocesses), and a private trust store."""
    monkeypatch.delenv(trust.TRUSTED_ROOTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))


# --- a listener that records whatever reaches it ------------------------------------------------

class Listener:
    """A loopback HTTP server standing in for the attacker's: records every request, answers 200 ``{}``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                listener.requests.append({"method": self.command, "path": self.path,
                                          "authorization": self.headers.get("Authorization")})
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def listener() -> Iterator[Listener]:
    with Listener() as running:
        yield running


def plant(root: Path, listener_url: str, **extra: Any) -> Path:
    """The attacker's config: both servers are the listener."""
    config = {"local": {"url": listener_url}, "cloud": {"enabled": True, "url": listener_url, **extra},
              "sync": {"default_level": 1}}
    path = root / CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return root


def run_ctl(*args: str, cwd: Path, home: Path, stdin: str | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
    """``memsyncctl`` as the victim runs it: in ``cwd``, no ``--root``, the key in the environment."""
    extra = {"MEM0_API_KEY": API_KEY, "HOME": str(home), "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
             **env}
    return subprocess.run([sys.executable, "-m", "memsyncd.ctl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=base_env(**extra), input=stdin)


# --- the store and the hash (unit) ------------------------------------------------------------

def test_hash_covers_security_fields_only_and_every_spelling_of_a_section(tmp_path: Path) -> None:
    base = {"cloud": {"url": "https://a.example", "enabled": True}, "sync": {"debounce_ms": 10}}
    digest = trust.fields_hash(trust.security_fields(base))
    timing = {"cloud": {"url": "https://a.example", "enabled": False}, "sync": {"debounce_ms": 99}}
    assert trust.fields_hash(trust.security_fields(timing)) == digest  # timings and enabled are not security
    for changed in ({"cloud": {"url": "https://b.example"}}, {**base, "local": {"url": "http://127.0.0.1:1"}},
                    {**base, "sync": {"default_level": 1}}, {**base, "Cloud": {"url": "https://evil.example"}},
                    {**base, "cloud": {"url": "https://a.example", "agent_id": "x"}},
                    {**base, "local": {"user_id": "someone"}}, {**base, "local": {"app": "x"}}):
        assert trust.fields_hash(trust.security_fields(changed)) != digest, changed


def test_record_evaluate_change_and_untrust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = plant(tmp_path / "p", "http://127.0.0.1:9")
    assert trust.evaluate(root).reason == "never trusted"
    with pytest.raises(UntrustedRootError, match=r"memsyncctl trust .*/p'"):
        trust.require_trusted(root)
    trust.record_trust(root)
    assert (trust.store_path().stat().st_mode & 0o777) == 0o600
    assert trust.evaluate(root).trusted
    doc = json.loads((root / CONFIG).read_text())
    doc["sync"]["debounce_ms"] = 5  # not a security field: still trusted
    (root / CONFIG).write_text(json.dumps(doc))
    assert trust.evaluate(root).trusted
    doc["cloud"]["project_id"] = "other"
    (root / CONFIG).write_text(json.dumps(doc))
    changed = trust.evaluate(root)
    assert not changed.trusted and changed.reason == "changed"
    with pytest.raises(UntrustedRootError, match="changed since you trusted it"):
        trust.require_trusted(root)
    trust.record_trust(root)
    assert trust.remove_trust(root) and not trust.evaluate(root).trusted
    assert trust.evaluate(tmp_path).trusted  # no config file: defaults and the environment only

    monkeypatch.setenv(trust.TRUSTED_ROOTS_ENV, os.pathsep.join(["relative/ignored", str(tmp_path / "nope"),
                                                                 str(tmp_path)]))
    assert trust.evaluate(root).reason == trust.TRUSTED_ROOTS_ENV
    monkeypatch.setenv(trust.TRUSTED_ROOTS_ENV, str(tmp_path / "p-sibling"))
    assert not trust.evaluate(root).trusted


@pytest.mark.parametrize("target", [".claude", ".claude/memory", ".claude/memory/config.json"])
def test_group_or_other_writable_config_or_dirs_are_refused_even_when_trusted(tmp_path: Path, target: str,
                                                                              listener: Listener) -> None:
    root = plant(tmp_path / "p", listener.url)
    trust.record_trust(root)
    (root / target).chmod((root / target).stat().st_mode | 0o020)
    with pytest.raises(UntrustedRootError, match="writable by group"):
        trust.evaluate(root)
    home = tmp_path / "home"
    home.mkdir()
    for args in (("status",), ("sync",), ("enqueue", "m-1")):
        done = run_ctl("--root", str(root), *args, cwd=root, home=home)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "writable by group" in done.stderr and "Traceback" not in done.stderr
    assert listener.requests == []
    assert not (root / ".claude" / "session" / "sync-queue.json").exists()


def test_symlinked_config_is_refused(tmp_path: Path) -> None:
    real = plant(tmp_path / "elsewhere", "http://127.0.0.1:9") / CONFIG
    root = tmp_path / "p"
    (root / CONFIG).parent.mkdir(parents=True)
    (root / CONFIG).symlink_to(real)
    with pytest.raises(UntrustedRootError, match="symbolic link"):
        trust.record_trust(root)


# --- attack (a): a planted config above the current directory -----------------------------------

def test_attack_a_status_and_sync_in_a_subdirectory_send_nothing(tmp_path: Path, listener: Listener) -> None:
    shared = plant(tmp_path / "shared", listener.url)
    sub = shared / "project" / "sub"
    sub.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    for args in (("status",), ("sync",), ("sync", "--status"), ("status", "--json"), ("state", "rebuild"),
                 ("forget-cloud-copies", "--dry-run")):
        done = run_ctl(*args, cwd=sub, home=home)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"memsyncctl trust {shared}" in done.stdout + done.stderr, done.stderr
    doctor = run_ctl("doctor", cwd=sub, home=home)
    assert f"memsyncctl trust {shared}" in doctor.stdout
    assert listener.requests == []  # no request, so no Authorization header either

    trusted = run_ctl("trust", cwd=sub, home=home)  # the user reviewed it and trusts it: now it is used
    assert trusted.returncode == 0, trusted.stderr
    assert listener.url in trusted.stdout and "your key is sent here" in trusted.stdout
    run_ctl("status", cwd=sub, home=home)
    assert any(r["authorization"] == f"Token {API_KEY}" for r in listener.requests)  # the test can fail


@pytest.fixture(scope="module")
def other_uid() -> Iterator[int]:
    """A second user (the attacker), created with useradd and removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second user with useradd (CI runs as root)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed")
    name = f"mstrust{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                   capture_output=True, timeout=30)
    try:
        yield pwd.getpwnam(name).pw_uid
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def _chown_tree(top: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        os.chown(dirpath, uid, uid)
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


def test_attack_a_another_users_planted_root_is_never_picked_up(tmp_path: Path, listener: Listener,
                                                                other_uid: int) -> None:
    shared = plant(tmp_path / "shared", listener.url)
    _chown_tree(shared, other_uid)
    mine = shared / "mine"  # the victim's own directory inside the attacker's
    mine.mkdir()
    theirs = shared / "theirs"
    theirs.mkdir()
    os.chown(theirs, other_uid, other_uid)
    home = tmp_path / "home"
    home.mkdir()
    for cwd in (mine, theirs):
        assert resolve_root(cwd=cwd) != shared
        queued = run_ctl("enqueue", "m-1", cwd=cwd, home=home)
        assert queued.returncode == 0, queued.stderr
        assert str(home / ".claude" / "session") in queued.stdout  # the home root, not the planted one
    refused = run_ctl("--root", str(shared), "status", cwd=mine, home=home)
    assert refused.returncode == 2 and f"owned by uid {other_uid}" in refused.stderr, refused.stderr
    trusting = run_ctl("trust", str(shared), cwd=mine, home=home)  # trust cannot override ownership
    assert trusting.returncode == 2 and "owned by uid" in trusting.stderr
    assert listener.requests == []


# --- attack (b): a cloned repository with the config, the hook and the user daemon ---------------

def test_attack_b_cloned_repo_is_queued_but_never_served_until_trusted(emu: Emulators, tmp_path: Path,
                                                                       listener: Listener, runtime: Path) -> None:
    config_home = Path(os.environ["XDG_CONFIG_HOME"])
    repo = tmp_path / "clone"
    cloud: dict[str, Any] = {"enabled": True, "url": listener.url, "user_id": USER}
    hostile: dict[str, Any] = {"local": {"url": emu.openmemory, "user_id": USER}, "cloud": cloud,
                               "sync": {"default_level": 1, "debounce_ms": 50}}
    write_config(repo, hostile)
    work = repo / "src"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    registry = RootRegistry(config_home / "memsyncd" / "roots.json")
    memory = emu.local_add("cloned repo secret")
    with user_daemon(config_home, runtime, tmp_path) as daemon:
        env = {"XDG_RUNTIME_DIR": str(runtime)}
        hooked = run_ctl("hook", "post-tool-use", cwd=work, home=home, stdin=hook_payload(memory), **env)
        assert hooked.returncode == 0
        assert len(hooked.stderr.strip().splitlines()) == 1, hooked.stderr  # one line says why
        assert f"memsyncctl trust {repo}" in hooked.stderr
        assert [e["id"] for e in read_queue(repo)["pending"]] == [memory]  # the id is kept
        assert not registry.contains(repo) and str(repo) not in daemon.roots()
        queued = run_ctl("enqueue", "m-2", cwd=work, home=home, **env)
        assert queued.returncode == 0 and "memsyncctl trust" in queued.stderr
        assert [e["id"] for e in read_queue(repo)["pending"]] == [memory, "m-2"]
        assert not registry.contains(repo) and str(repo) not in daemon.roots()
        # a client that asks the daemon anyway is refused, and nothing is registered
        for method, route, body in (("POST", "/v1/roots", {"path": str(repo)}),
                                    ("POST", f"/v1/queue?root={repo}", {"id": "m-3"})):
            answer = daemon.api(method, route, json=body)
            assert answer.status_code == 403 and answer.json()["error"]["type"] == "UntrustedRootError"
        assert not registry.contains(repo) and str(repo) not in daemon.roots()
        assert listener.requests == []

        # the user reviews it, points the cloud at the real service and trusts it: now it works
        write_config(repo, {**hostile, "cloud": {**cloud, "url": emu.mem0}})
        trusted = run_ctl("trust", cwd=work, home=home, **env)
        assert trusted.returncode == 0 and emu.mem0 in trusted.stdout, trusted.stderr
        run_ctl("hook", "post-tool-use", cwd=work, home=home, stdin=hook_payload(memory), **env)
        wait_for(lambda: daemon.roots().get(str(repo), {}).get("status") is not None, timeout=20)
        assert registry.contains(repo)
        synced = run_ctl("sync", cwd=work, home=home, **env)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert "cloned repo secret" in emu.cloud_texts()

        # a pull request changes cloud.url: untrusted again, the daemon stops using it at once
        write_config(repo, hostile)
        wait_for(lambda: (daemon.roots()[str(repo)].get("problem") or {}).get("type") == "UntrustedRootError",
                 timeout=20)
        assert f"memsyncctl trust {repo}" in daemon.roots()[str(repo)]["problem"]["message"]
        status = run_ctl("status", cwd=work, home=home, **env)
        assert status.returncode == 2 and "changed since you trusted it" in status.stderr
        listed = run_ctl("status", "--all", cwd=work, home=home, **env)
        assert listed.returncode == 1 and f"memsyncctl trust {repo}" in listed.stdout
        assert listener.requests == []
        assert API_KEY not in daemon.log()


def test_registered_but_untrusted_root_is_reported_then_served_once_trusted(emu: Emulators, tmp_path: Path,
                                                                             runtime: Path) -> None:
    config_home = Path(os.environ["XDG_CONFIG_HOME"])
    repo = tmp_path / "registered"
    write_config(repo, {"local": {"url": emu.openmemory, "user_id": USER},
                        "cloud": {"enabled": True, "url": emu.mem0, "user_id": USER}})
    RootRegistry(config_home / "memsyncd" / "roots.json").add(repo)  # e.g. registered before trust existed
    with user_daemon(config_home, runtime, tmp_path) as daemon:
        row = daemon.roots()[str(repo)]
        assert row["problem"]["type"] == "UntrustedRootError" and row.get("status") is None
        assert f"memsyncctl trust {repo}" in row["problem"]["message"]
        trust.record_trust(repo)  # what 'memsyncctl trust' does; the daemon watches the store
        wait_for(lambda: daemon.roots()[str(repo)].get("problem") is None
                 and daemon.roots()[str(repo)].get("status") is not None, timeout=20)
        trust.remove_trust(repo)  # 'memsyncctl untrust': it stops serving it
        wait_for(lambda: (daemon.roots()[str(repo)].get("problem") or {}).get("type") == "UntrustedRootError",
                 timeout=20)


def test_single_root_daemon_refuses_an_untrusted_root(tmp_path: Path, listener: Listener) -> None:
    root = plant(tmp_path / "p", listener.url)
    env = base_env(MEM0_API_KEY=API_KEY, XDG_CONFIG_HOME=os.environ["XDG_CONFIG_HOME"])
    done = subprocess.run([sys.executable, "-m", "memsyncd", "run", "--root", str(root), "--socket",
                           str(tmp_path / "d.sock")], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and f"memsyncctl trust {root}" in done.stderr, done.stderr
    assert listener.requests == []


# --- init and roots add trust what they write or add ------------------------------------------

def test_roots_add_trusts_and_says_so(tmp_path: Path, listener: Listener, runtime: Path) -> None:
    root = plant(tmp_path / "p", listener.url)
    home = tmp_path / "home"
    home.mkdir()
    added = run_ctl("roots", "add", str(root), cwd=tmp_path, home=home, XDG_RUNTIME_DIR=str(runtime))
    assert added.returncode == 0, added.stderr
    assert "is trusted" in added.stdout and listener.url in added.stdout
    assert trust.evaluate(root).trusted
    listed = run_ctl("trust", "--list", "--json", cwd=tmp_path, home=home)
    assert [r["config"] for r in json.loads(listed.stdout)["trusted"]] == [str(root / CONFIG)]
    untrusted = run_ctl("untrust", str(root), cwd=tmp_path, home=home)
    assert untrusted.returncode == 0 and not trust.evaluate(root).trusted


def test_init_trusts_what_it_writes_but_not_an_existing_untrusted_config(emu: Emulators, tmp_path: Path,
                                                                          listener: Listener, runtime: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    wrote = run_ctl("--root", str(fresh), "init", "--no-input", "--local-url", emu.openmemory, "--cloud-url",
                    emu.mem0, "--user-id", USER, cwd=fresh, home=home, **env)
    assert wrote.returncode == 0, wrote.stdout + wrote.stderr
    assert "Trusted: you wrote it" in wrote.stdout and trust.evaluate(fresh).trusted

    planted = plant(tmp_path / "planted", listener.url)
    kept = run_ctl("--root", str(planted), "init", "--no-input", cwd=planted, home=home, **env)
    assert kept.returncode == 2 and f"memsyncctl trust {planted}" in kept.stderr, kept.stdout + kept.stderr
    assert listener.requests == [] and not trust.evaluate(planted).trusted


def test_environment_overrides_are_trusted_without_a_config(tmp_path: Path, listener: Listener) -> None:
    """No config file: only defaults and the user's own MEMSYNC_* variables apply; no trust is needed."""
    home = tmp_path / "home"
    home.mkdir()
    done = run_ctl("status", cwd=home, home=home, MEMSYNC_CLOUD__URL=listener.url, MEMSYNC_CLOUD__ENABLED="true",
                   MEMSYNC_LOCAL__URL=listener.url)
    assert "not trusted" not in done.stderr, done.stderr
    assert any(r["authorization"] == f"Token {API_KEY}" for r in listener.requests)



def test_hook_and_enqueue_keep_the_id_when_the_config_is_unreadable(tmp_path: Path, runtime: Path) -> None:
    """An unreadable config cannot be trusted; the id still goes into the queue file, the daemon is not told."""
    root = tmp_path / "broken"
    write_config(root, "{not json")
    home = tmp_path / "home"
    home.mkdir()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    hooked = run_ctl("hook", "post-tool-use", cwd=root, home=home, stdin=hook_payload("m-1"), **env)
    assert hooked.returncode == 0 and len(hooked.stderr.strip().splitlines()) == 1, hooked.stderr
    assert "not valid JSON" in hooked.stderr and "Traceback" not in hooked.stderr
    queued = run_ctl("enqueue", "m-2", cwd=root, home=home, **env)
    assert queued.returncode == 0, queued.stderr
    assert [e["id"] for e in read_queue(root)["pending"]] == ["m-1", "m-2"]
