"""``memsyncctl init``: write a root's config.json and the mem0 key file, then ask both servers.

Values come from flags, else (on a terminal) from questions with defaults, else (with
``--no-input``) from the defaults. Without a terminal and without ``--no-input``, a new config
is refused (exit 2, nothing written): the defaults are never taken silently. The key is read
from stdin (``--key-stdin``) or a prompt without echo — never from argv — and stored in
``$XDG_CONFIG_HOME/memsyncd/mem0_api_key`` (directory 0700, file 0600, replaced atomically):
the file the systemd unit loads with ``LoadCredential=`` and ``load_api_key`` reads last.

Outcome rules (exit codes from the SPEC table):

* An existing config.json is never replaced without ``--force``. Without it, ``init``
  keeps the file (refusing flags that would change it), and still stores a key and runs
  the checks.
* The document is validated with the daemon's own loader before anything is written
  (invalid → exit 2, nothing written).
* OpenMemory unknown user → exit 2; mem0 rejected the key → exit 4 and the key is NOT
  stored. A server that does not answer is a warning: the files are written, exit 0
  (run ``memsyncctl doctor`` once it is up). With ``--strict`` every check must pass:
  otherwise nothing is written and the exit code is the check's (2, 4 or 5).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from memsyncd.cli.clients import cloud_client, local_client
from memsyncd.config import (
    KEY_ENV,
    LocalSettings,
    Paths,
    Settings,
    check_url,
    find_api_key,
    key_file_path,
    load_settings,
    settings_from_dict,
)
from memsyncd.errors import (
    EXIT_AUTH,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    AuthError,
    ConfigError,
    MemsyncError,
    RemoteError,
    UsageError,
)
from memsyncd.store import safe_files
from memsyncd.store.queue import atomic_write
from memsyncd.store.trust import describe, evaluate, record_trust, untrusted_error

DEFAULT_LOCAL_URL = "http://localhost:8765"
DEFAULT_CLOUD_URL = "https://api.mem0.ai"
CONFIG_FLAGS = ("local_url", "user_id", "cloud_url", "cloud_user_id", "app_id", "agent_id", "default_level")
LEVEL_HELP = ("The default level applies to memories that carry no level of their own:\n"
              "  0 = local-only: nothing syncs until you mark a memory level 1 or more\n"
              "      (memsyncctl enqueue ID --level 1). The safe choice.\n"
              "  1 = everything syncs except memories marked level 0.")


class Prompter(Protocol):
    """Where answers come from: the terminal, or a script in tests."""

    def ask(self, question: str, default: str) -> str: ...
    def secret(self, question: str) -> str: ...
    def say(self, text: str) -> None: ...


class TerminalPrompter:
    """Questions on the terminal; the key is read without echo (getpass)."""

    def ask(self, question: str, default: str) -> str:
        try:
            answer = input(f"{question} [{default}]: " if default else f"{question}: ").strip()
        except EOFError:
            raise UsageError("no answer (end of input); rerun with flags, e.g. --no-input.") from None
        return answer or default

    def secret(self, question: str) -> str:
        try:
            return getpass.getpass(f"{question}: ").strip()
        except EOFError:
            return ""

    def say(self, text: str) -> None:
        sys.stdout.write(text + "\n")


@dataclass(frozen=True)
class Choices:
    """Everything ``init`` writes into config.json."""

    local_url: str
    user_id: str
    cloud_enabled: bool
    cloud_url: str
    cloud_user_id: str
    app_id: str | None
    agent_id: str | None
    default_level: int


def config_document(choices: Choices) -> dict[str, Any]:
    """The config.json content for ``choices`` (the SPEC's layout; unset optional ids left out)."""
    cloud: dict[str, Any] = {"enabled": choices.cloud_enabled, "url": choices.cloud_url,
                             "user_id": choices.cloud_user_id}
    if choices.app_id:
        cloud["app_id"] = choices.app_id
    if choices.agent_id:
        cloud["agent_id"] = choices.agent_id
    return {"local": {"url": choices.local_url, "user_id": choices.user_id}, "cloud": cloud,
            "sync": {"default_level": choices.default_level}}


def _valid_url(value: str, flag: str) -> str:
    try:
        return check_url(value)
    except ValueError as exc:
        raise ConfigError(f"{flag} {value!r}: {exc}.") from None


def _valid_level(value: str | int, flag: str = "--default-level") -> int:
    try:
        level = int(value)
    except (TypeError, ValueError):
        level = -1
    if level < 0:
        raise ConfigError(f"{flag} {value!r}: expected a whole number, 0 (local-only) or more.")
    return level


def _ask_valid(prompter: Prompter, question: str, default: str, check: Any, flag: str) -> Any:
    """Ask until the answer passes ``check`` (three tries)."""
    for _ in range(3):
        answer = prompter.ask(question, default)
        try:
            return check(answer, flag)
        except ConfigError as exc:
            prompter.say(f"  {exc.message}")
    raise UsageError(f"no valid answer for {flag}; nothing was written.")


def _optional(value: str) -> str | None:
    return value.strip() or None


def gather_choices(args: Any, prompter: Prompter | None) -> Choices:
    """Flags first; the questions (when there is a terminal) for the rest; defaults otherwise."""
    def pick(flag_value: Any, question: str, default: str) -> str:
        if flag_value is not None:
            return str(flag_value)
        return prompter.ask(question, default) if prompter else default

    local_url = _valid_url(args.local_url, "--local-url") if args.local_url is not None else (
        _ask_valid(prompter, "Local OpenMemory URL", DEFAULT_LOCAL_URL, _valid_url, "--local-url")
        if prompter else DEFAULT_LOCAL_URL)
    user_id = pick(args.user_id, "OpenMemory user id (the $USER the server was started as)", LocalSettings().user_id)
    if args.no_cloud:
        cloud_enabled = False
    elif prompter and args.cloud_url is None:
        cloud_enabled = prompter.ask("Sync with the mem0 cloud? (y/n)", "y").lower().startswith("y")
    else:
        cloud_enabled = True
    cloud_url, cloud_user_id, app_id, agent_id = DEFAULT_CLOUD_URL, user_id, args.app_id, args.agent_id
    if cloud_enabled:
        cloud_url = _valid_url(args.cloud_url, "--cloud-url") if args.cloud_url is not None else (
            _ask_valid(prompter, "mem0 API URL", DEFAULT_CLOUD_URL, _valid_url, "--cloud-url")
            if prompter else DEFAULT_CLOUD_URL)
        cloud_user_id = pick(args.cloud_user_id, "mem0 user id", user_id)
        app_id = _optional(pick(args.app_id, "mem0 app id (optional, empty for none)", ""))
        agent_id = _optional(pick(args.agent_id, "mem0 agent id (optional, empty for none)", ""))
    if args.default_level is not None:
        level = _valid_level(args.default_level)
    elif prompter and cloud_enabled:
        prompter.say(LEVEL_HELP)
        level = _ask_valid(prompter, "Default level", "0", _valid_level, "--default-level")
    else:
        level = 0
    if not user_id.strip() or not cloud_user_id.strip():
        raise ConfigError("the user ids must not be empty.")
    return Choices(local_url, user_id.strip(), cloud_enabled, cloud_url, cloud_user_id.strip(), app_id, agent_id,
                   level)


def read_key(args: Any, prompter: Prompter | None, cloud_enabled: bool) -> str | None:
    """The key given now (stdin or a hidden prompt), or None to keep using the stored one."""
    if args.key_stdin:
        key = sys.stdin.read().strip()
        if not key:
            raise UsageError("--key-stdin: stdin was empty; pipe the key in, e.g. "
                             "'memsyncctl init --key-stdin < FILE'.")
    elif prompter and cloud_enabled:
        _, source = find_api_key()
        keep = f"empty keeps the key from {source}" if source else "empty to skip"
        key = prompter.secret(f"mem0 API key (input hidden; {keep})")
    else:
        return None
    if key and (len(key.split()) != 1):
        raise UsageError("the key must be one word without spaces or line breaks; nothing was written.")
    return key or None


def store_api_key(key: str) -> Path:
    """Write the key file: directory 0700, file 0600 from its creation, replaced atomically."""
    path = key_file_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    atomic_write(path, key + "\n")  # a mkstemp file: 0600 before the first byte is written
    os.chmod(path, 0o600)
    return path


@dataclass
class Answer:
    """What one server said to the setup check."""

    service: str
    ok: bool
    text: str
    error: MemsyncError | None = None  # set when the server said no, or could not be reached


async def check_openmemory(settings: Settings) -> Answer:
    """Is OpenMemory reachable, and does it know the user?"""
    url, user = settings.local.url, settings.local.user_id
    client = local_client(settings)
    try:
        stats = await client.probe()
    except ConfigError as exc:
        return Answer("OpenMemory", False, f"{url} answered, but has no user '{user}'", exc)
    except RemoteError as exc:
        return Answer("OpenMemory", False, f"{url} did not answer ({exc.message})", exc)
    finally:
        await client.aclose()
    total = stats.get("total_memories")
    count = f", {total} memories" if isinstance(total, int) else ""
    return Answer("OpenMemory", True, f"{url} answered: user '{user}' known{count}")


async def check_mem0(settings: Settings, key: str | None) -> Answer:
    """Does mem0 answer, and accept the key?"""
    url = settings.cloud.url
    if key is None:
        return Answer("mem0", False, f"not checked: no key (give it with --key-stdin or set {KEY_ENV})")
    client = cloud_client(settings, key)
    try:
        ping = await client.ping_info()
    except AuthError as exc:
        return Answer("mem0", False, f"{url} rejected the key ({exc.message})", exc)
    except RemoteError as exc:
        return Answer("mem0", False, f"{url} did not answer ({exc.message})", exc)
    finally:
        await client.aclose()
    account = ", ".join(f"{k} {v}" for k, v in (("org", ping.org_id), ("project", ping.project_id)) if v)
    return Answer("mem0", True, f"{url} answered: key accepted" + (f" ({account})" if account else ""))


def _exit_code(answer: Answer) -> int:
    if answer.error is None:
        return EXIT_UNAVAILABLE  # not checked: no key
    if isinstance(answer.error, AuthError):
        return EXIT_AUTH
    if isinstance(answer.error, ConfigError):
        return EXIT_USAGE
    return EXIT_NETWORK


def next_steps(paths: Paths, settings: Settings) -> str:
    """What to run after init, in order."""
    ctl = _ctl(paths)
    steps = [
        (f"{ctl} doctor", "check everything: servers, key, daemon, hook"),
        ("memsyncctl service install", "run the daemon in the background (systemd user unit / LaunchAgent)"),
        ("/plugin marketplace add <memsyncd checkout or GitHub OWNER/REPO>", "in Claude Code, then:"),
        ("/plugin install memsyncd@memsyncd", "(without plugins: memsyncctl integrate claude)"),
        (f"{ctl} sync", "the first sync"),
    ]
    width = max(len(command) for command, _ in steps)
    lines = ["Next steps:"] + [f"  {command:<{width}}  # {note}" for command, note in steps]
    if settings.sync.default_level == 0 and settings.cloud.enabled:
        lines.append("Default level 0: nothing syncs until a memory is marked level 1 or more "
                     "('memsyncctl enqueue ID --level 1'); to sync everything not marked 0, rerun with "
                     "--force --default-level 1.")
    return "\n".join(lines) + "\n"


_NO_TERMINAL = ("memsyncctl init: there is no terminal to ask on (stdin is not a terminal, or carries the key with "
                "--key-stdin) and --no-input was not given; nothing was written. Run 'memsyncctl init' in a "
                "terminal, or give the values as flags with --no-input (unset ones take their defaults), e.g. "
                "'memsyncctl init --no-input --local-url URL --user-id ID --key-stdin < KEYFILE'.")


async def run_init(paths: Paths, args: Any, prompter: Prompter | None = None) -> int:
    """The command (see the module docstring for the rules)."""
    interactive = prompter is not None or (not args.no_input and not args.key_stdin and sys.stdin.isatty())
    prompter = prompter or (TerminalPrompter() if interactive else None)
    say = prompter.say if prompter else (lambda text: sys.stdout.write(text + "\n"))
    exists = paths.config.exists()
    given = [flag for flag in CONFIG_FLAGS if getattr(args, flag) is not None] + (["no_cloud"] if args.no_cloud else [])
    if exists and not args.force:
        if given:
            raise UsageError(f"{paths.config} exists; nothing was overwritten. Rerun with --force to replace it "
                             f"(flags given: {', '.join('--' + g.replace('_', '-') for g in given)}), or edit it.")
        settings = load_settings(paths)
        document = None
        say(f"Keeping the existing {paths.config} (rerun with --force to rewrite it).")
        existing = evaluate(paths.root)
        if not existing.trusted:  # someone else's choice of servers: check nothing, send no key
            say(describe(existing))
            raise untrusted_error(existing)
    else:
        if not interactive and not args.no_input:
            raise UsageError(_NO_TERMINAL)
        say(f"Setting up memsyncd for {paths.root} (config {paths.config}).")
        document = config_document(gather_choices(args, prompter))
        settings = settings_from_dict(document, paths.config)  # the daemon's own validation, before any write
    key = read_key(args, prompter, settings.cloud.enabled)

    answers = [await check_openmemory(settings)]
    if settings.cloud.enabled:
        answers.append(await check_mem0(settings, key or _stored_key()))
    for answer in answers:
        mark = "[ ok ]" if answer.ok else "[FAIL]" if answer.error is not None else "[skip]"
        say(f"{mark} {answer.service}: {answer.text}")
    refused = [a for a in answers if isinstance(a.error, AuthError | ConfigError)]
    down = [a for a in answers if a.error is not None and a not in refused]
    failed = [a for a in answers if not a.ok]
    if args.strict and failed:
        first = (refused or down or failed)[0]
        say(f"--strict: {first.service} did not pass; nothing was written.")
        return _exit_code(first)

    if document is not None:
        previous = safe_files.read_text(paths.config) if exists else None  # never through a symlink
        atomic_write(paths.config, json.dumps(document, indent=2) + "\n")
        try:
            load_settings(paths)
        except ConfigError:
            if previous is None:
                paths.config.unlink(missing_ok=True)
            else:
                atomic_write(paths.config, previous)
            raise
        say(f"{'Replaced' if exists else 'Wrote'} {paths.config}")
        say(describe(record_trust(paths.root)) + " Trusted: you wrote it.")
    key_rejected = any(isinstance(a.error, AuthError) for a in answers)
    if key and not key_rejected:
        replaced = key_file_path().exists()
        say(f"{'Replaced the key in' if replaced else 'Stored the key in'} {store_api_key(key)} (mode 0600)")
    elif key:
        say("The key was not stored: mem0 rejected it. Copy a valid key from the mem0 dashboard and rerun.")
    elif settings.cloud.enabled and key is None:
        stored, source = find_api_key()
        if stored is None:
            say("No mem0 key yet: rerun 'memsyncctl init' on a terminal, or 'memsyncctl init --key-stdin < FILE'.")
        elif source.startswith("the "):
            say(f"The key comes from {source} only; the service reads {key_file_path()}. Store it with: "
                f"printenv {KEY_ENV} | memsyncctl init --key-stdin")
    for answer in refused:
        if answer.service == "OpenMemory" and document is not None:  # saved: say so, and how to fix the user
            say(f"Warning: the setup was saved with OpenMemory user '{settings.local.user_id}', which that server "
                "does not know. Use the user OpenMemory was started for (its $USER): "
                f"{_ctl(paths)} init --force --user-id NAME")
    for answer in down:
        say(f"Warning: {answer.service} could not be reached; the setup was saved anyway. "
            "Run 'memsyncctl doctor' once it is up (or use --strict to save only when both answer).")
    if paths.config.exists():
        from memsyncd.cli.roots import register_root

        say(register_root(paths.root, trust=False))  # trusted above (written here, or found trusted)
    say(next_steps(paths, settings).rstrip("\n"))
    if refused:
        return _exit_code(refused[0])
    return EXIT_OK


def _ctl(paths: Paths) -> str:
    """How to call memsyncctl for this root from anywhere."""
    return "memsyncctl" if paths.root == Path.home().resolve() else f"memsyncctl --root {paths.root}"


def _stored_key() -> str | None:
    key, _ = find_api_key()
    return key.get_secret_value() if key else None
