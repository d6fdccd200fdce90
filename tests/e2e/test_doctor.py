"""``memsyncctl doctor`` and ``forget-cloud-copies`` against the emulators, passing and failing."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, Emulators, ctl, queue_path, running_daemon

from memsyncd.cli.doctor import DoctorContext, Status, check_claude, check_key, check_service, clock_check
from memsyncd.cli.integration import integrate_claude
from memsyncd.config import Paths, Settings
from memsyncd.store.state import StateStore


def env_for(tmp: Path) -> dict[str, str]:
    """HOME and XDG_CONFIG_HOME inside the test's directory (doctor reads ~/.claude and the key file)."""
    (tmp / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "cfg")}


def doctor(root: Path, *extra: str, key: str | None = API_KEY, **env: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = ctl(root, *extra, "doctor", "--json", key=key, **env)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is (result.returncode == 0)
    return result.returncode, {check["name"]: check for check in report["checks"]}


def store_key(tmp: Path) -> None:
    key = tmp / "cfg" / "memsyncd" / "mem0_api_key"
    key.parent.mkdir(parents=True, mode=0o700)
    key.write_text(API_KEY)
    key.chmod(0o600)


def test_healthy_setup_passes_with_a_running_daemon(root: Path, emu: Emulators) -> None:
    """Config, key file, both servers, clock, daemon version, queue, state: ok. Service and hook: warnings."""
    env = env_for(root)
    store_key(root)
    integrate_claude(root)
    bin_dir = root / "bin"  # the hook runs memsyncctl: doctor checks it is on PATH
    bin_dir.mkdir()
    (bin_dir / "memsyncctl").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "memsyncctl").chmod(0o755)
    with running_daemon(root, key=None, **env) as daemon:
        code, checks = doctor(root, "--socket", str(daemon.socket), key=None, PATH=f"{bin_dir}:/usr/bin:/bin", **env)
    assert code == 0, checks
    for name in ("config", "mem0 key", "OpenMemory", "mem0", "clock", "daemon", "Claude Code", "queue", "state",
                 "sync errors", "conflicts", "level-0 copies"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "key accepted" in checks["mem0"]["detail"]
    assert "version 0.1.0" in checks["daemon"]["detail"]
    assert checks["service"]["status"] == "warn" and checks["service"]["fix"] == "memsyncctl service install"
    text = ctl(root, "doctor", key=None, **env)  # the human form: one line per check
    assert text.returncode == 1  # no daemon any more
    assert "[FAIL] daemon" in text.stdout and "fix: memsyncctl service install" in text.stdout
    assert API_KEY not in text.stdout + text.stderr


def test_bad_key_fails_with_the_command_that_fixes_it(root: Path, emu: Emulators) -> None:
    """mem0 answers 401: the mem0 check fails and names 'memsyncctl init'; clock is skipped."""
    code, checks = doctor(root, key="m0-not-the-key-1234567890", **env_for(root))
    assert code == 1
    assert checks["mem0"]["status"] == "fail" and "rejected the key" in checks["mem0"]["detail"]
    assert "memsyncctl init" in checks["mem0"]["fix"]
    assert checks["clock"]["status"] == "skip"
    assert checks["mem0 key"]["status"] == "warn"  # only in MEM0_API_KEY: the service would not see it
    assert "--key-stdin" in checks["mem0 key"]["fix"]


def test_openmemory_down_fails_and_skips_what_needs_it(root: Path, tmp_path: Path) -> None:
    """Nothing listens at local.url: OpenMemory fails with how to start it."""
    config = json.loads((root / ".claude/memory/config.json").read_text())
    config["local"]["url"] = "http://127.0.0.1:9"  # discard port: closed
    (root / ".claude/memory/config.json").write_text(json.dumps(config))
    StateStore(root / ".claude/memory/memsync.db").close()
    code, checks = doctor(root, **env_for(root))
    assert code == 1
    assert checks["OpenMemory"]["status"] == "fail" and "nothing answers" in checks["OpenMemory"]["detail"]
    assert "start OpenMemory" in checks["OpenMemory"]["fix"]
    assert checks["level-0 copies"]["status"] == "skip"


def test_corrupt_queue_and_state_fail_with_their_repairs(root: Path) -> None:
    """An unreadable queue → 'queue repair'; an unreadable state DB → 'state rebuild'. Nothing is changed."""
    queue_path(root).parent.mkdir(parents=True, exist_ok=True)
    queue_path(root).write_text('{"pending": [oops')
    db = root / ".claude/memory/memsync.db"
    db.write_bytes(b"this is not sqlite" * 100)
    code, checks = doctor(root, **env_for(root))
    assert code == 1
    assert checks["queue"]["status"] == "fail" and "queue repair" in checks["queue"]["fix"]
    assert checks["sync errors"]["status"] == "skip"
    assert checks["state"]["status"] == "fail" and "memsyncctl state rebuild" in checks["state"]["fix"]
    assert queue_path(root).read_text() == '{"pending": [oops'
    assert db.read_bytes() == b"this is not sqlite" * 100


def test_missing_config_and_absent_daemon_fail(tmp_path: Path) -> None:
    """A fresh machine: no config (fix: init), no daemon (fix: service install); the rest is skipped or ok."""
    code, checks = doctor(tmp_path, key=None, **env_for(tmp_path))
    assert code == 1
    assert checks["config"]["status"] == "fail" and "init" in checks["config"]["fix"]
    assert checks["daemon"]["status"] == "fail" and "service install" in checks["daemon"]["fix"]
    assert checks["mem0"]["status"] == "skip" and checks["mem0 key"]["status"] == "skip"


def test_errors_and_conflicts_pending_are_warnings(root: Path, emu: Emulators) -> None:
    """A failing queue entry and an open conflict are reported with their commands."""
    queue_path(root).parent.mkdir(parents=True, exist_ok=True)
    queue_path(root).write_text(json.dumps({"pending": [], "last_sync": None, "sync_errors": [
        {"id": "x1", "error": "mem0 returned 500", "timestamp": "2026-01-01T00:00:00Z", "retries": 3}]}))
    state = StateStore(root / ".claude/memory/memsync.db")
    state.record_conflict("l1", "c1", "base", "local", "cloud", "both changed")
    state.close()
    code, checks = doctor(root, **env_for(root))
    assert checks["sync errors"]["status"] == "warn" and "x1: mem0 returned 500" in checks["sync errors"]["detail"]
    assert checks["conflicts"]["status"] == "warn" and "conflicts resolve" in checks["conflicts"]["fix"]


@pytest.mark.parametrize(("skew", "status"), [(0, Status.OK), (-45, Status.OK), (120, Status.WARN),
                                               (-120, Status.WARN), (900, Status.FAIL)])
def test_clock_skew_against_the_cloud_date(skew: int, status: Status) -> None:
    """Within the pull overlap: ok; beyond it: warn; beyond the exactly-once margin: fail."""
    server = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    check = clock_check(server, server + timedelta(seconds=skew))
    assert check.status is status, check
    assert (check.fix != "") is (status is not Status.OK)
    assert clock_check(None, server).status is Status.WARN


def test_key_file_readable_by_others_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file with group/other bits: warn, fix chmod 600."""
    monkeypatch.delenv("MEM0_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    store_key(tmp_path)
    key = tmp_path / "cfg/memsyncd/mem0_api_key"
    key.chmod(0o644)
    ctx = DoctorContext(paths=Paths(tmp_path), home=tmp_path, settings=Settings(cloud={"enabled": True}))
    check = check_key(ctx)
    assert check.status is Status.WARN and check.fix == f"chmod 600 {key}"
    key.chmod(0o600)
    assert check_key(ctx).status is Status.OK and stat.S_IMODE(key.stat().st_mode) == 0o600


def fake_memsyncctl(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "memsyncctl").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "memsyncctl").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_claude_check_sees_hook_plugin_or_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hook: warn; integrate's hook: ok; plugin enabled too: warn (queued twice); memsyncctl missing: fail."""
    home, root = tmp_path / "home", tmp_path / "root"
    home.mkdir()
    root.mkdir()
    ctx = DoctorContext(paths=Paths(root), home=home, claude_dir=home / ".claude")
    fake_memsyncctl(tmp_path, monkeypatch)
    assert check_claude(ctx).status is Status.WARN
    integrate_claude(root)
    ok = check_claude(ctx)
    assert ok.status is Status.OK and "settings.json" in ok.detail
    plugins = home / ".claude" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "installed_plugins.json").write_text(json.dumps(
        {"version": 2, "plugins": {"memsyncd@memsyncd": [{"scope": "user", "version": "0.1.0"}]}}))
    (home / ".claude" / "settings.json").write_text(json.dumps({"enabledPlugins": {"memsyncd@memsyncd": True}}))
    both = check_claude(ctx)
    assert both.status is Status.WARN and "queued twice" in both.detail
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert check_claude(ctx).status is Status.FAIL


def fake_systemctl(tmp: Path, script: str) -> str:
    """A PATH whose systemctl runs ``script``."""
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "systemctl").write_text("#!/bin/sh\n" + script + "\n")
    (bin_dir / "systemctl").chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def test_service_check_without_a_user_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit installed, but systemctl cannot reach the bus: fail, with what to do instead."""
    monkeypatch.setattr("platform.system", lambda: "Linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    unit = tmp_path / "cfg/systemd/user/memsyncd.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    ctx = DoctorContext(paths=Paths(tmp_path), home=tmp_path)
    monkeypatch.setenv("PATH", fake_systemctl(tmp_path, 'echo "Failed to connect to bus: No medium found" >&2; exit 1'))
    check = check_service(ctx)
    assert check.status is Status.FAIL and "No medium found" in check.detail
    assert "memsyncd run" in check.fix and "loginctl enable-linger" in check.fix
    monkeypatch.setenv("PATH", fake_systemctl(tmp_path, 'echo inactive; exit 3'))
    inactive = check_service(ctx)
    assert inactive.status is Status.FAIL and "inactive" in inactive.detail and "journalctl" in inactive.fix
    monkeypatch.setenv("PATH", fake_systemctl(tmp_path, 'echo active; exit 0'))
    assert check_service(ctx).status is Status.OK


# --- level-0 memories still in the cloud --------------------------------------------------------


def push_then_mark_private(root: Path, emu: Emulators, text: str) -> tuple[str, str]:
    """A memory synced at level 1, then queued again with level 0 (no daemon: the entry stays pending)."""
    local_id = emu.local_add(text)
    assert ctl(root, "--no-daemon", "enqueue", local_id, "--level", "1").returncode == 0
    pushed = ctl(root, "--no-daemon", "sync", "--push")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    cloud_id = next(m["id"] for m in emu.cloud_memories() if m["memory"] == text)
    assert ctl(root, "--no-daemon", "enqueue", local_id, "--level", "0").returncode == 0
    return local_id, cloud_id


def mapped(root: Path, local_id: str) -> Any:
    state = StateStore(root / ".claude/memory/memsync.db")
    try:
        return state.mapping_for_local(local_id)
    finally:
        state.close()


def test_level_0_copies_are_found_and_forgotten_after_confirmation(root: Path, emu: Emulators) -> None:
    """doctor fails and names forget-cloud-copies; without --yes and no terminal nothing is deleted; --yes
    deletes only the cloud copy and unmaps it; the local memory stays and doctor passes that check."""
    env = env_for(root)
    text = "doctor private-later memory ✓"
    local_id, cloud_id = push_then_mark_private(root, emu, text)
    _, checks = doctor(root, **env)
    assert checks["level-0 copies"]["status"] == "fail", checks["level-0 copies"]
    assert "memsyncctl forget-cloud-copies" in checks["level-0 copies"]["fix"]

    listed = ctl(root, "forget-cloud-copies", "--dry-run", **env)
    assert listed.returncode == 0 and local_id in listed.stdout and "queued with level 0" in listed.stdout
    refused = ctl(root, "forget-cloud-copies", **env)  # stdin is not a terminal
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cloud_id in {m["id"] for m in emu.cloud_memories()} and mapped(root, local_id) is not None

    emu.clear_requests()
    done = ctl(root, "forget-cloud-copies", "--yes", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Deleted 1 cloud copies" in done.stdout
    assert cloud_id not in {m["id"] for m in emu.cloud_memories()}
    assert [r["method"] for r in emu.requests() if r["method"] != "GET"] == ["DELETE"]
    assert emu.local_get(local_id)["text"] == text and emu.local_get(local_id)["state"] == "active"
    assert mapped(root, local_id) is None
    _, after = doctor(root, **env)
    assert after["level-0 copies"]["status"] == "ok"


def test_forget_restores_the_mapping_when_the_cloud_refuses(root: Path, emu: Emulators) -> None:
    """mem0 rejects the key mid-way: exit 4, the pair stays mapped (a later run can finish)."""
    local_id, cloud_id = push_then_mark_private(root, emu, "doctor private memory, cloud down")
    emu.fault("mem0", fault="401")
    result = ctl(root, "forget-cloud-copies", "--yes", **env_for(root))
    emu.fault("mem0", fault=None)
    assert result.returncode == 4, result.stdout + result.stderr
    assert mapped(root, local_id).cloud_id == cloud_id
    assert cloud_id in {m["id"] for m in emu.cloud_memories()}


def test_level_0_in_metadata_counts_and_the_default_level_does_not(root: Path, emu: Emulators) -> None:
    """A mapped memory whose metadata says level 0 is found; one synced by a level-1 entry under default 0 is not."""
    from memsyncd.cli.forget import private_reason
    from memsyncd.models import LocalMemory, Mapping

    mapping = Mapping("l", "c", "h", "t", level=1)
    assert private_reason(LocalMemory("l", "t", metadata={"level": 0}), mapping, None) == "metadata.level is 0"
    assert private_reason(LocalMemory("l", "t", metadata={"level": "secret"}), mapping, None) is not None
    assert private_reason(LocalMemory("l", "t"), mapping, None) is None
    assert private_reason(LocalMemory("l", "t"), mapping, 0) == "queued with level 0"
    assert private_reason(LocalMemory("l", "t"), Mapping("l", "c", "h", "t", level=0), None) is not None
