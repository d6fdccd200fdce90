"""Which roots' configs the user trusts (stdlib only: the hook and status check it on their fast path).

A root's ``config.json`` decides where the mem0 key and the memories go (``cloud.url``,
``local.url``), which scope they land in and what level unlabelled memories get. The key is
global, so a config planted by another user or committed in a cloned repository must never be
used for anything that touches the network until the user trusted it, as ``direnv allow``,
``mise trust`` and git's ``safe.directory`` do.

Trust is a record in ``$XDG_CONFIG_HOME/memsyncd/trusted.json`` (0600, replaced atomically) of
the config's path and a SHA-256 of its security-relevant fields as the file sets them
(:data:`SECURITY_FIELDS`). Changing any of them needs trust again; other keys (timings,
``cloud.enabled``) may change freely. A root is trusted when:

- it has no ``config.json``: only the built-in defaults and the user's own environment apply
  (``MEMSYNC_*`` variables come from the user, so they are trusted);
- one of the directories in ``MEMSYNC_TRUSTED_ROOTS`` (``os.pathsep``-separated) is the root or
  contains it; or
- the store holds a record for its config whose hash matches the file's fields now.

Independently of trust, a ``.claude`` directory, its ``memory`` directory or the config file
that is not owned by the user, is a symlink, or is writable by group or others is refused
outright (:func:`check_ownership`), even in a trusted root.

File format::

    {"version": 1, "trusted": [{"root": "/p", "config": "/p/.claude/memory/config.json",
                                "hash": "<sha256>", "fields": {"cloud.url": "..."}, "trusted_at": "..."}]}
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from memsyncd.errors import ConfigError, UntrustedRootError
from memsyncd.store.paths import CONFIG_RELPATH
from memsyncd.store.trust_check import (
    SECURITY_FIELDS as SECURITY_FIELDS,
)
from memsyncd.store.trust_check import (
    STORE_NAME as STORE_NAME,
)
from memsyncd.store.trust_check import (
    TRUSTED_ROOTS_ENV as TRUSTED_ROOTS_ENV,
)
from memsyncd.store.trust_check import (
    fields_hash,
    security_fields,
    store_file,
    unsafe_reason,
)
from memsyncd.store.trust_check import (
    trusted_by_env as _trusted_by_env,
)

LOCK_TIMEOUT_SECONDS = 10.0

class Trust(NamedTuple):
    """The answer for one root: trusted or not, why, and what its config sets."""

    root: Path
    trusted: bool
    reason: str  # "no config file", "MEMSYNC_TRUSTED_ROOTS", "trusted", "never trusted", "changed"
    fields: dict[str, Any]
    digest: str | None  # None when there is no config file

    @property
    def config(self) -> Path:
        return self.root / CONFIG_RELPATH


def trust_command(root: Path) -> str:
    """The command that trusts ``root`` (quoted for a POSIX shell)."""
    import shlex

    return f"memsyncctl trust {shlex.quote(str(root))}"


def store_path() -> Path:
    """``$XDG_CONFIG_HOME/memsyncd/trusted.json``."""
    return Path(store_file())


# --- the fields and their hash ----------------------------------------------------------------

def read_config_document(config: Path) -> dict[str, Any] | None:
    """The config's JSON object; None when there is no file.

    Raises:
        ConfigError: it cannot be read or is not a JSON object.
    """
    try:
        raw = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config}: cannot read the file ({exc}).") from None
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{config}: not valid JSON ({exc}). Fix the file; nothing was written.") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{config}: expected a JSON object at the top level, got {type(doc).__name__}.")
    return doc


# --- ownership --------------------------------------------------------------------------------

def check_ownership(root: Path) -> None:
    """Refuse a root whose ``.claude``, ``.claude/memory`` or config another user could have written.

    Raises:
        UntrustedRootError: naming the path, what is wrong and how to fix it. Trust does not override it.
    """
    config = root / CONFIG_RELPATH
    for path in (config.parent.parent, config.parent, config):
        reason = unsafe_reason(path)
        if reason is not None:
            raise UntrustedRootError(
                f"{path} {reason}; memsyncd refuses it outright, since another user could have "
                f"written {config} (where your mem0 key is sent). If the directory is yours, fix it "
                f"(chown to yourself, 'chmod go-w {path}', no symlink); otherwise do not use it as a root.")


def owned_by_me(path: Path) -> bool:
    """Whether ``path`` (followed) is owned by the current user; the upward root search stops where not."""
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False


# --- the store --------------------------------------------------------------------------------

def _records(path: Path | None = None) -> list[dict[str, Any]]:
    """The store's records (missing or unreadable store: none, which only means less is trusted)."""
    try:
        doc = json.loads((path or store_path()).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    trusted = doc.get("trusted") if isinstance(doc, dict) else None
    return [r for r in trusted if isinstance(r, dict)] if isinstance(trusted, list) else []


def trusted_by_env(root: Path) -> bool:
    """Whether ``MEMSYNC_TRUSTED_ROOTS`` names ``root`` or a directory above it."""
    return _trusted_by_env(str(root))


def evaluate(root: Path, *, store: Path | None = None) -> Trust:
    """Whether ``root``'s config may be used for anything that touches the network.

    Raises:
        UntrustedRootError: the root is refused outright (:func:`check_ownership`).
        ConfigError: the config cannot be read or is not a JSON object.
    """
    check_ownership(root)
    config = root / CONFIG_RELPATH
    doc = read_config_document(config)
    if doc is None:
        return Trust(root, True, "no config file", {}, None)
    fields = security_fields(doc)
    digest = fields_hash(fields)
    if trusted_by_env(root):
        return Trust(root, True, TRUSTED_ROOTS_ENV, fields, digest)
    record = next((r for r in _records(store) if r.get("config") == str(config)), None)
    if record is None:
        return Trust(root, False, "never trusted", fields, digest)
    if record.get("hash") != digest:
        return Trust(root, False, "changed", fields, digest)
    return Trust(root, True, "trusted", fields, digest)


def describe(trust: Trust) -> str:
    """What a root's trust covers, for ``trust``, ``init`` and ``roots add``: the URLs, the scope, the level."""
    if trust.digest is None:
        return (f"Root {trust.root}: no {CONFIG_RELPATH}; only the built-in defaults and your MEMSYNC_* "
                "environment apply, which need no trust.")
    how = {"MEMSYNC_TRUSTED_ROOTS": f"trusted through {TRUSTED_ROOTS_ENV}", "trusted": "trusted",
           "changed": "NOT trusted (changed since it was trusted)", "never trusted": "NOT trusted"}[trust.reason]
    shown = ", ".join(f"{name}={json.dumps(value)}" for name, value in sorted(trust.fields.items()))
    return (f"Config {trust.config} is {how}. It sets: {shown or 'none of the URLs, ids or default level'}"
            " (anything it does not set comes from the built-in defaults or your MEMSYNC_* environment).")


def untrusted_error(trust: Trust) -> UntrustedRootError:
    """The error for an untrusted root: what is wrong and the command that trusts it."""
    why = ("its security settings (URLs, ids or default level) changed since you trusted it"
           if trust.reason == "changed" else "you have not trusted it")
    return UntrustedRootError(
        f"{trust.config} is not trusted: {why}. It decides where your mem0 key and memories go, so nothing "
        f"was sent. Review it, then run '{trust_command(trust.root)}'.")


def require_trusted(root: Path, *, store: Path | None = None) -> Trust:
    """:func:`evaluate`, raising unless the root is trusted.

    Raises:
        UntrustedRootError: refused outright, never trusted, or changed since it was trusted.
        ConfigError: the config cannot be read.
    """
    trust = evaluate(root, store=store)
    if not trust.trusted:
        raise untrusted_error(trust)
    return trust


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    from memsyncd.errors import QueueBusyError, UsageError
    from memsyncd.store.queue import flock_exclusive

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    try:
        with flock_exclusive(lock, LOCK_TIMEOUT_SECONDS):
            yield
    except QueueBusyError:
        raise UsageError(f"{lock} stayed locked for {LOCK_TIMEOUT_SECONDS:.0f} s; another memsyncctl is "
                         "changing the trusted roots; try again.") from None


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    from memsyncd.store.queue import atomic_write  # a temp file from mkstemp: 0600

    atomic_write(path, json.dumps({"version": 1, "trusted": records}, indent=2) + "\n")
    os.chmod(path, 0o600)


def record_trust(root: Path, *, store: Path | None = None) -> Trust:
    """Trust ``root``'s config as it is now (its path and the hash of its security fields).

    Raises:
        UntrustedRootError: refused outright (ownership); trust cannot override that.
        ConfigError: the config cannot be read.
    """
    from memsyncd.timestamps import format_ts, utc_now

    root = Path(root).resolve()
    check_ownership(root)
    config = root / CONFIG_RELPATH
    doc = read_config_document(config)
    fields = security_fields(doc) if doc is not None else {}
    digest = fields_hash(fields)
    path = store or store_path()
    with _locked(path):
        records = [r for r in _records(path) if r.get("config") != str(config)]
        records.append({"root": str(root), "config": str(config), "hash": digest, "fields": fields,
                        "trusted_at": format_ts(utc_now())})
        _write(path, records)
    return Trust(root, True, "trusted", fields, digest)


def remove_trust(root: Path, *, store: Path | None = None) -> bool:
    """Forget the trust of ``root``'s config; False if there was none."""
    config = Path(root).resolve() / CONFIG_RELPATH
    path = store or store_path()
    with _locked(path):
        records = _records(path)
        kept = [r for r in records if r.get("config") != str(config)]
        if len(kept) == len(records):
            return False
        _write(path, kept)
    return True


def list_trusted(*, store: Path | None = None) -> list[dict[str, Any]]:
    """The records of the store, oldest first."""
    return _records(store)
