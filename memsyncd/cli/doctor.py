"""``memsyncctl doctor``: check every part of a setup, one line each, with the command that fixes a failure.

Each check is a small function returning a :class:`Check` (name, status, detail, fix).
Checks run in order and share what they learned through :class:`DoctorContext` (the
settings, the key, the ping answer, the open state DB), so a check whose prerequisite
failed reports ``skip`` instead of failing twice. Network checks make one attempt with a
short timeout. Exit status: 0 when no check failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from memsyncd import __version__
from memsyncd.cli.clients import cloud_client, local_client
from memsyncd.cli.integration import (
    HOOK_COMMAND,
    SERVICE_NAME,
    run_without_manager_help,
    service_target,
)
from memsyncd.config import KEY_ENV, Paths, Settings, find_api_key, key_file_path, load_settings
from memsyncd.errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    AuthError,
    ConfigError,
    MemsyncError,
    NetworkUnreachableError,
    QueueUnreadableError,
    RedirectedError,
    RemoteError,
    StateUnreadableError,
)
from memsyncd.models import QueueDoc, utc_now
from memsyncd.remote.cloud import PingInfo
from memsyncd.store.state import StateStore
from memsyncd.terminal import escape_controls

CLOCK_WARN_SECONDS = 60.0  # the pull's overlap window
CLOCK_FAIL_SECONDS = 300.0  # the exactly-once lookup's skew margin (exactly_once.INTENT_SKEW)
SERVICE_CHECK_TIMEOUT = 10.0
PLUGIN_NAME = "memsyncd"
PLUGIN_INSTALL = ("in Claude Code: '/plugin marketplace add <memsyncd checkout or GitHub OWNER/REPO>' then "
                  "'/plugin install memsyncd@memsyncd' (without plugins: 'memsyncctl integrate claude')")


class Status(enum.Enum):
    """The outcome of one check."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # not applicable, or its prerequisite failed (reported by that check)


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


@dataclass
class DoctorContext:
    """What the checks need and what earlier checks found out."""

    paths: Paths
    home: Path
    socket: str | None = None
    now: Callable[[], datetime] = utc_now
    claude_dir: Path | None = None  # $CLAUDE_CONFIG_DIR, else ~/.claude
    settings: Settings | None = None
    key: SecretStr | None = None
    local_ok: bool = False
    ping: PingInfo | None = None
    queue_doc: QueueDoc | None = None
    state: StateStore | None = None

    @property
    def cloud_on(self) -> bool:
        return self.settings is not None and self.settings.cloud.enabled


def _skip(name: str, why: str) -> Check:
    return Check(name, Status.SKIP, why)


# --- configuration and key -----------------------------------------------------------------------


def check_config(ctx: DoctorContext) -> Check:
    """config.json (plus MEMSYNC_* overrides) loads with the daemon's own loader."""
    path = ctx.paths.config
    try:
        settings = load_settings(ctx.paths)
    except ConfigError as exc:
        return Check("config", Status.FAIL, exc.message,
                     f"fix the file, or rewrite it with 'memsyncctl --root {ctx.paths.root} init --force'")
    from memsyncd.store.trust import evaluate, trust_command, untrusted_error

    try:
        trust = evaluate(ctx.paths.root)
    except ConfigError as exc:  # refused outright: another owner, group/other-writable, a symlink
        return Check("config", Status.FAIL, exc.message, f"fix the ownership and mode of {path}")
    if not trust.trusted:  # ctx.settings stays None: no server is contacted with an untrusted config
        return Check("config", Status.FAIL, untrusted_error(trust).message,
                     f"review {path}, then: {trust_command(ctx.paths.root)}")
    ctx.settings = settings
    if not path.exists() and not settings.cloud.enabled:
        return Check("config", Status.FAIL, f"no config at {path}: cloud sync is off",
                     f"memsyncctl --root {ctx.paths.root} init")
    level = settings.sync.default_level
    meaning = "memories without a level stay local-only" if level == 0 else "memories sync unless marked level 0"
    detail = (f"{path if path.exists() else 'MEMSYNC_* environment'}: OpenMemory {settings.local.url} as "
              f"'{settings.local.user_id}', mem0 {settings.cloud.url} as '{settings.cloud_user_id}', "
              f"default level {level} ({meaning})")
    if not settings.cloud.enabled:
        return Check("config", Status.WARN, f"cloud sync is off (cloud.enabled is false) in {path}",
                     f"memsyncctl --root {ctx.paths.root} init --force (answers yes to cloud sync)")
    return Check("config", Status.OK, detail)


def check_key(ctx: DoctorContext) -> Check:
    """A mem0 key is set, where the service can read it, in a file only you can read."""
    if ctx.settings is None:
        return _skip("mem0 key", "needs a valid config")
    if not ctx.cloud_on:
        return _skip("mem0 key", "cloud sync is off")
    key, source = find_api_key()
    ctx.key = key
    key_file = key_file_path()
    if key is None:
        return Check("mem0 key", Status.FAIL, f"no mem0 API key (MEM0_API_KEY is unset and {key_file} is missing)",
                     "memsyncctl init (asks for the key without echo), or: memsyncctl init --key-stdin < FILE")
    if key_file.exists():
        mode = stat.S_IMODE(key_file.stat().st_mode)
        if mode & 0o077:
            return Check("mem0 key", Status.WARN, f"{key_file} is readable by others (mode {mode:o})",
                         f"chmod 600 {key_file}")
    elif source == f"the {KEY_ENV} environment variable":
        return Check("mem0 key", Status.WARN, f"key found in {source} only; the service reads {key_file}",
                     'store it for the service: printenv MEM0_API_KEY | memsyncctl init --key-stdin')
    return Check("mem0 key", Status.OK, f"found in {source}")


# --- servers -------------------------------------------------------------------------------------


async def check_openmemory(ctx: DoctorContext) -> Check:
    """OpenMemory answers and knows the configured user."""
    if ctx.settings is None:
        return _skip("OpenMemory", "needs a valid config")
    local = local_client(ctx.settings)
    url = ctx.settings.local.url
    try:
        stats = await local.probe()
    except ConfigError as exc:
        return Check("OpenMemory", Status.FAIL, exc.message,
                     f"memsyncctl --root {ctx.paths.root} init --force --user-id <the server's user>")
    except NetworkUnreachableError:
        return Check("OpenMemory", Status.FAIL, f"nothing answers at {url}",
                     "start OpenMemory (e.g. 'docker compose up -d' in its directory), or set local.url: "
                     f"memsyncctl --root {ctx.paths.root} init --force --local-url URL")
    except RemoteError as exc:
        return Check("OpenMemory", Status.FAIL, f"{url}: {exc.message}", "check the OpenMemory server's logs")
    finally:
        await local.aclose()
    ctx.local_ok = True
    total = stats.get("total_memories")
    count = f", {total} memories" if isinstance(total, int) else ""
    return Check("OpenMemory", Status.OK, f"{url}: reachable, user '{ctx.settings.local.user_id}' known{count}")


async def check_mem0(ctx: DoctorContext) -> Check:
    """mem0 answers a ping and accepts the key."""
    if ctx.settings is None:
        return _skip("mem0", "needs a valid config")
    if not ctx.cloud_on:
        return _skip("mem0", "cloud sync is off")
    if ctx.key is None:
        return _skip("mem0", "no key to check")
    url = ctx.settings.cloud.url
    cloud = cloud_client(ctx.settings, ctx.key.get_secret_value())
    try:
        ctx.ping = await cloud.ping_info()
    except AuthError as exc:
        return Check("mem0", Status.FAIL, f"{url} rejected the key ({exc.message})",
                     "store a valid key: memsyncctl init (asks for it), or: memsyncctl init --key-stdin < FILE")
    except NetworkUnreachableError:
        return Check("mem0", Status.FAIL, f"cannot connect to {url}",
                     "check your network connection and cloud.url in config.json")
    except RedirectedError as exc:  # never "key accepted": the key was not checked by mem0
        return Check("mem0", Status.FAIL, f"{url} answered {exc.status}, a redirect (not followed; the key was "
                     "not checked)", "set cloud.url in config.json to the address mem0 really answers on "
                     "(https://api.mem0.ai)")
    except RemoteError as exc:
        return Check("mem0", Status.FAIL, f"{url}: {exc.message}", "try again later; see https://status.mem0.ai")
    finally:
        await cloud.aclose()
    account = ", ".join(f"{k} {v}" for k, v in (("org", ctx.ping.org_id), ("project", ctx.ping.project_id)) if v)
    return Check("mem0", Status.OK, f"{url}: key accepted" + (f" ({account})" if account else ""))


def clock_check(server_date: datetime | None, local_now: datetime) -> Check:
    """Compare this machine's clock with the cloud's ``Date`` header (second precision)."""
    if server_date is None:
        return Check("clock", Status.WARN, "mem0 sent no Date header; clock skew unknown")
    skew = (local_now - server_date).total_seconds()
    text = f"this machine is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} mem0's clock"
    fix = "turn on network time: sudo timedatectl set-ntp true (macOS: System Settings > Date & Time)"
    if abs(skew) > CLOCK_FAIL_SECONDS:
        return Check("clock", Status.FAIL, text, fix)
    if abs(skew) > CLOCK_WARN_SECONDS:
        return Check("clock", Status.WARN, text, fix)
    return Check("clock", Status.OK, f"within {max(abs(skew), 1):.0f} s of mem0's clock")


def check_clock(ctx: DoctorContext) -> Check:
    """No clock skew beyond the sync's margins."""
    if ctx.ping is None:
        return _skip("clock", "needs an answer from mem0")
    return clock_check(ctx.ping.server_date, ctx.now())


# --- the daemon and the service ------------------------------------------------------------------


async def check_daemon(ctx: DoctorContext) -> Check:
    """A daemon answers for this root, with the client's version."""
    from memsyncd.cli.control_client import connect_daemon

    root = ctx.paths.root
    try:
        client = await connect_daemon(ctx.paths, ctx.socket)
    except MemsyncError as exc:
        return Check("daemon", Status.FAIL, str(exc), "fix the runtime directory named above")
    if client is None:
        from memsyncd.store.roots import RootRegistry

        start = "memsyncctl service install" if RootRegistry().contains(root) else \
            f"memsyncctl roots add {root} && memsyncctl service install"  # 'roots add' only when it is needed
        return Check("daemon", Status.FAIL, f"no memsyncd answers for {root}: changes are not synced in the background",
                     f"{start} (or run 'memsyncd run' in your login session)")
    attention: list[dict[str, Any]] = []
    try:
        health = await client.health()
        with contextlib.suppress(MemsyncError):  # a root the daemon cannot serve is reported by other checks
            attention = (await client.status()).attention
    except MemsyncError as exc:
        return Check("daemon", Status.FAIL, f"the daemon did not answer its health check ({exc})",
                     "systemctl --user restart memsyncd")
    finally:
        await client.aclose()
    version, pid = health.get("version"), health.get("pid")
    if version != __version__:
        return Check("daemon", Status.FAIL, f"daemon (pid {pid}) runs version {version}, memsyncctl is {__version__}",
                     "restart it to load the installed version: systemctl --user restart memsyncd "
                     "(or stop and rerun 'memsyncd run')")
    if attention:
        from memsyncd.cli.render import attention_text

        first = attention[0]
        return Check("daemon", Status.FAIL, f"daemon (pid {pid}) runs; Needs attention: {attention_text(first)}"
                     + (f" (and {len(attention) - 1} more; see 'memsyncctl status')" if len(attention) > 1 else ""),
                     "the message above says what to do; 'memsyncctl status' shows it until a run succeeds")
    if health.get("paused"):
        return Check("daemon", Status.WARN, f"daemon (pid {pid}, version {version}) is paused", "memsyncctl resume")
    return Check("daemon", Status.OK, f"running (pid {pid}, version {version})")


def check_service(ctx: DoctorContext) -> Check:
    """The systemd user unit (or LaunchAgent) is installed and active."""
    target = service_target(ctx.home)
    if not target.exists():
        return Check("service", Status.WARN, f"not installed ({target} is missing); the daemon will not start "
                     "at login", "memsyncctl service install")
    if platform.system() == "Darwin":
        command = ["launchctl", "print", f"gui/{os.getuid()}/io.memsyncd.agent"]
    else:
        command = ["systemctl", "--user", "is-active", SERVICE_NAME]
    if shutil.which(command[0]) is None:
        return Check("service", Status.FAIL, f"{target} is installed but {command[0]} is missing",
                     run_without_manager_help(ctx.home))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SERVICE_CHECK_TIMEOUT, check=False)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return Check("service", Status.FAIL, f"'{' '.join(command)}' failed ({type(exc).__name__})",
                     run_without_manager_help(ctx.home))
    output = (done.stdout + done.stderr).strip()
    first = output.splitlines()[0] if output else f"exit {done.returncode}"
    if done.returncode == 0:
        return Check("service", Status.OK, f"{target.name} installed and active")
    if "bus" in output.lower() or "no medium" in output.lower():
        return Check("service", Status.FAIL, f"no user service manager answers ({first})",
                     run_without_manager_help(ctx.home))
    return Check("service", Status.FAIL, f"{target.name} is installed but {first}",
                 "systemctl --user enable --now memsyncd; see why with: journalctl --user -u memsyncd -e")


# --- Claude Code ---------------------------------------------------------------------------------


def _json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _has_hook(settings: dict[str, Any]) -> bool:
    hooks = settings.get("hooks")
    groups = hooks.get("PostToolUse") if isinstance(hooks, dict) else None
    for group in groups if isinstance(groups, list) else []:
        for hook in (group.get("hooks") or []) if isinstance(group, dict) else []:
            if isinstance(hook, dict) and hook.get("command") == HOOK_COMMAND:
                return True
    return False


def check_claude(ctx: DoctorContext) -> Check:
    """The plugin (or the integrate files) put the PostToolUse hook where Claude Code reads it."""
    claude_dir = ctx.claude_dir or Path(os.environ.get("CLAUDE_CONFIG_DIR") or ctx.home / ".claude")
    settings_files = [claude_dir / "settings.json", ctx.paths.root / ".claude" / "settings.json",
                      ctx.paths.root / ".claude" / "settings.local.json"]
    settings = [(path, _json_file(path)) for path in dict.fromkeys(settings_files)]
    installed = _json_file(claude_dir / "plugins" / "installed_plugins.json").get("plugins")
    plugin_ids = [pid for pid in installed if pid.startswith(f"{PLUGIN_NAME}@")] if isinstance(installed, dict) else []
    enabled = [pid for pid in plugin_ids for _, data in settings
               if isinstance(data.get("enabledPlugins"), dict) and data["enabledPlugins"].get(pid) is True]
    hook_files = [path for path, data in settings if _has_hook(data)]
    if not (plugin_ids or hook_files):
        return Check("Claude Code", Status.WARN, "no memsyncd hook: memories written in Claude Code are not queued "
                     "for sync automatically", PLUGIN_INSTALL)
    if shutil.which("memsyncctl") is None:
        return Check("Claude Code", Status.FAIL, "the hook runs 'memsyncctl', which is not on PATH",
                     "pipx install memsyncd (or add the directory holding memsyncctl to PATH)")
    if plugin_ids and not enabled and not hook_files:
        return Check("Claude Code", Status.WARN, f"plugin {plugin_ids[0]} is installed but disabled",
                     f"claude plugin enable {plugin_ids[0]}")
    if enabled and hook_files:
        return Check("Claude Code", Status.WARN, f"both the plugin {enabled[0]} and the hook in {hook_files[0]} are "
                     "installed: every memory is queued twice", f"remove the memsyncd hook from {hook_files[0]}, "
                     "or uninstall the plugin: claude plugin uninstall " + enabled[0])
    if enabled:
        entries = installed.get(enabled[0]) if isinstance(installed, dict) else None
        entry = entries[0] if isinstance(entries, list) and entries and isinstance(entries[0], dict) else {}
        version = entry.get("version")
        if version and version != __version__:
            return Check("Claude Code", Status.WARN, f"plugin {enabled[0]} is version {version}, memsyncctl is "
                         f"{__version__}", f"claude plugin update {enabled[0]}")
        return Check("Claude Code", Status.OK, f"plugin {enabled[0]} {version or ''} enabled".replace("  ", " "))
    return Check("Claude Code", Status.OK, f"hook installed in {hook_files[0]}")


# --- local files ---------------------------------------------------------------------------------


def check_queue(ctx: DoctorContext) -> Check:
    """The shared sync queue parses."""
    from memsyncd.store.queue import QueueStore

    try:
        ctx.queue_doc = QueueStore(ctx.paths.queue, ctx.paths.queue_lock).read()
    except QueueUnreadableError as exc:
        return Check("queue", Status.FAIL, f"{exc.path}: {exc.reason}",
                     f"memsyncctl --root {ctx.paths.root} queue repair")
    doc = ctx.queue_doc
    return Check("queue", Status.OK, f"{len(doc.pending)} pending, last sync {doc.last_sync or 'never'}")


def check_state(ctx: DoctorContext) -> Check:
    """The SQLite state opens (and migrates) cleanly."""
    path = ctx.paths.state
    if not path.exists():
        return Check("state", Status.OK, "no state yet (the first sync creates it)")
    try:
        ctx.state = StateStore(path)
    except StateUnreadableError as exc:
        return Check("state", Status.FAIL, exc.message,
                     "memsyncctl state rebuild  (moves it aside and rebuilds the id map from the cloud)")
    return Check("state", Status.OK, f"{ctx.state.count_mappings()} memories synced")


def check_errors(ctx: DoctorContext) -> Check:
    """No queue entry keeps failing."""
    if ctx.queue_doc is None:
        return _skip("sync errors", "needs a readable queue")
    rows = ctx.queue_doc.sync_errors
    if not rows:
        return Check("sync errors", Status.OK, "none")
    worst = max(rows, key=lambda row: row.retries)
    return Check("sync errors", Status.WARN, f"{len(rows)} entries failing; e.g. {worst.id}: {worst.error} "
                 f"({worst.retries} tries)", "memsyncctl sync   (retries them now and shows each error)")


def check_conflicts(ctx: DoctorContext) -> Check:
    """No conflict waits for the user."""
    if ctx.state is None:
        return Check("conflicts", Status.OK, "none") if not ctx.paths.state.exists() else \
            _skip("conflicts", "needs a readable state")
    count = len(ctx.state.conflicts())
    if count == 0:
        return Check("conflicts", Status.OK, "none")
    return Check("conflicts", Status.WARN, f"{count} unresolved (both sides changed)",
                 "memsyncctl conflicts list, then: memsyncctl conflicts resolve ID --keep local|cloud|both "
                 "(or /memory:conflict in Claude Code)")


async def check_private_copies(ctx: DoctorContext) -> Check:
    """No memory marked level 0 still has its earlier copy in the cloud."""
    from memsyncd.cli.forget import find_cloud_copies

    name = "level-0 copies"
    if not ctx.paths.state.exists():
        return Check(name, Status.OK, "none (nothing synced yet)")
    if ctx.state is None:
        return _skip(name, "needs a readable state")
    if ctx.settings is None:
        return _skip(name, "needs a valid config")
    if not ctx.local_ok:
        return _skip(name, "needs OpenMemory")
    local = local_client(ctx.settings)
    try:
        copies = await find_cloud_copies(local, ctx.state, ctx.queue_doc.pending if ctx.queue_doc else [])
    except RemoteError as exc:
        return Check(name, Status.FAIL, f"could not list local memories ({exc.message})", "memsyncctl doctor")
    finally:
        await local.aclose()
    if not copies:
        return Check(name, Status.OK, "no local-only memory has a copy in the cloud")
    return Check(name, Status.FAIL, f"{len(copies)} memories marked level 0 (local-only) still have their earlier "
                 "copy in the mem0 cloud", "memsyncctl forget-cloud-copies   (lists them and asks before deleting "
                 "the cloud copies; the local memories stay)")


def check_scans(ctx: DoctorContext) -> Check:
    """Local scans are on, and no local deletion waits for the user's confirmation (the max-delete guard)."""
    from memsyncd.engine.scan import META_DELETES_HELD, META_LAST_FULL, parse_held

    name = "local scans"
    if ctx.settings is None:
        return _skip(name, "needs a valid config")
    sync = ctx.settings.sync
    every = (f"new memories every {sync.local_scan_interval_seconds:g} s" if sync.local_scan_interval_seconds
             else "incremental scan off")
    every += (f", edits and deletions every {sync.local_full_scan_interval_seconds:g} s"
              if sync.local_full_scan_interval_seconds else ", full scan off")
    held = parse_held(ctx.state.get_meta(META_DELETES_HELD)) if ctx.state is not None else None
    if held is not None:
        return Check(name, Status.WARN, f"{held.get('reason', 'local deletions held')} ({every})",
                     f"{held.get('command', 'memsyncctl sync --confirm-deletes')}   (or restore the memories in "
                     "OpenMemory; the next full scan then clears this)")
    last = ctx.state.get_meta(META_LAST_FULL) if ctx.state is not None else None
    if not sync.local_scan_interval_seconds and not sync.local_full_scan_interval_seconds:
        return Check(name, Status.WARN, "off: only queued changes are pushed (memories written by other "
                     "OpenMemory clients never sync)",
                     "set sync.local_scan_interval_seconds / sync.local_full_scan_interval_seconds above 0")
    return Check(name, Status.OK, f"{every}; last full scan {last or 'never'}")


def check_rules(ctx: DoctorContext) -> Check:
    """Show the selective-sync rules (memories by app or category kept local-only or capped)."""
    name = "sync rules"
    if ctx.settings is None:
        return _skip(name, "needs a valid config")
    rules = ctx.settings.sync.rules
    if not rules:
        return Check(name, Status.OK, "none (every memory follows its level / sync.default_level)")
    return Check(name, Status.OK, "; ".join(rule.describe() for rule in rules))


CheckFunction = Callable[[DoctorContext], "Check | Awaitable[Check]"]
CHECKS: tuple[CheckFunction, ...] = (
    check_config, check_key, check_openmemory, check_mem0, check_clock, check_daemon, check_service,
    check_claude, check_queue, check_state, check_errors, check_conflicts, check_private_copies, check_scans,
    check_rules,
)


async def run_checks(ctx: DoctorContext, checks: tuple[CheckFunction, ...] = CHECKS) -> list[Check]:
    """Run the checks in order; a check that raises unexpectedly is reported as failed, never a traceback."""
    results: list[Check] = []
    try:
        for check in checks:
            try:
                outcome = check(ctx)
                result = outcome if isinstance(outcome, Check) else await outcome
            except MemsyncError as exc:
                result = Check(check.__name__.removeprefix("check_"), Status.FAIL, str(exc))
            results.append(result)
    finally:
        if ctx.state is not None:
            ctx.state.close()
            ctx.state = None
    return results


_MARK = {Status.OK: "[ ok ]", Status.WARN: "[warn]", Status.FAIL: "[FAIL]", Status.SKIP: "[skip]"}


def render_checks(results: list[Check], root: Path) -> str:
    """One line per check, the fix indented under each warning or failure, a summary."""
    width = max(len(r.name) for r in results)
    lines = [f"memsyncd doctor {__version__}, root {root}"]
    for result in results:
        lines.append(f"{_MARK[result.status]} {result.name:<{width}}  {result.detail}")
        if result.fix and result.status in (Status.WARN, Status.FAIL):
            lines.append(f"       {'':<{width}}  fix: {result.fix}")
    failed = sum(r.status is Status.FAIL for r in results)
    warned = sum(r.status is Status.WARN for r in results)
    if failed:
        lines.append(f"{failed} failed, {warned} warnings: run the fixes above, then 'memsyncctl doctor' again.")
    elif warned:
        lines.append(f"All required checks passed ({warned} warnings).")
    else:
        lines.append("All checks passed.")
    return "\n".join(lines) + "\n"


async def run_doctor(paths: Paths, args: Any) -> int:
    """The command: run every check, print them (or one JSON object), exit 1 when one failed."""
    ctx = DoctorContext(paths=paths, home=Path.home(), socket=args.socket)
    results = await run_checks(ctx)
    ok = not any(r.status is Status.FAIL for r in results)
    if args.json:
        sys.stdout.write(json.dumps({"ok": ok, "version": __version__, "root": str(paths.root),
                                     "checks": [r.to_json() for r in results]}, indent=2) + "\n")
    else:
        sys.stdout.write(escape_controls(render_checks(results, paths.root)))
    return EXIT_OK if ok else EXIT_PARTIAL
