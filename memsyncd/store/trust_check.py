"""The trust rules on the fast paths: ownership of ``.claude``, the security fields' hash, and one quick answer.

Stdlib only and free of ``pathlib``/``typing``: ``status``, ``enqueue`` and the hook check trust
on every call. :mod:`memsyncd.store.trust` (the store, the messages, the commands) builds on these
same functions, so the rules exist once. :func:`quick_trusted` answers only "trusted, nothing to
say"; every other case (refused, untrusted, changed, unreadable) goes to
:func:`memsyncd.store.trust.evaluate`, which names the problem.
"""

from __future__ import annotations

import json
import os
import stat

from memsyncd.store.locate import CONFIG_RELPATH, sha256_hex

TRUSTED_ROOTS_ENV = "MEMSYNC_TRUSTED_ROOTS"
STORE_NAME = "trusted.json"

# (section, key): where the key and the memories go, whose they are, and what leaves by default.
SECURITY_FIELDS: dict[str, tuple[str, ...]] = {
    "local": ("url", "user_id", "app"),
    "cloud": ("url", "user_id", "agent_id", "app_id", "org_id", "project_id"),
    "sync": ("default_level",),
}


def security_fields(doc: dict[str, object]) -> dict[str, object]:
    """The security-relevant values a config document sets, as ``{"cloud.url": value}``.

    Top-level section names are matched case-insensitively (pydantic-settings accepts ``"Cloud"``),
    so every spelling is covered and kept under its own name; absent keys are left out.
    """
    fields: dict[str, object] = {}
    for section, value in doc.items():
        keys = SECURITY_FIELDS.get(str(section).lower())
        if keys is None:
            continue
        if not isinstance(value, dict):
            fields[str(section)] = value  # invalid anyway, but its value still counts
            continue
        for key in keys:
            if key in value:
                fields[f"{section}.{key}"] = value[key]
    return fields


def fields_hash(fields: dict[str, object]) -> str:
    """SHA-256 of the fields in a canonical JSON form (the same everywhere)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return sha256_hex(canonical.encode("ascii"))


def unsafe_reason(path: str | os.PathLike[str], *, uid: int | None = None) -> str | None:
    """Why ``path`` may not be trusted (another owner, a symlink, group/other-writable); None if fine or absent."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link (memsyncd follows no symlink under .claude/)"
    me = os.geteuid() if uid is None else uid
    if info.st_uid != me:
        return f"is owned by uid {info.st_uid}, not by you (uid {me})"
    writers = [name for bit, name in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others")) if info.st_mode & bit]
    if writers:
        return f"is writable by {' and '.join(writers)} (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def guarded_paths(root: str) -> tuple[str, str, str]:
    """``.claude``, ``.claude/memory`` and the config of ``root``: what :func:`unsafe_reason` must pass."""
    config = os.path.join(root, CONFIG_RELPATH)
    memory = os.path.dirname(config)
    return os.path.dirname(memory), memory, config


def trusted_by_env(root: str) -> bool:
    """Whether ``MEMSYNC_TRUSTED_ROOTS`` names ``root`` (resolved) or a directory above it."""
    for entry in os.environ.get(TRUSTED_ROOTS_ENV, "").split(os.pathsep):
        entry = entry.strip()
        if not entry:
            continue
        expanded = os.path.expanduser(entry)
        if not os.path.isabs(expanded):
            continue
        try:
            base = os.path.realpath(expanded)
        except (OSError, ValueError):
            continue
        if root == base or root.startswith(base if base.endswith(os.sep) else base + os.sep):
            return True
    return False


def store_file() -> str:
    """``$XDG_CONFIG_HOME/memsyncd/trusted.json`` (``~/.config`` when unset or relative)."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    if not (base and os.path.isabs(base)):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "memsyncd", STORE_NAME)


def quick_trusted(root: str) -> bool:
    """True when ``root`` (resolved) is trusted and nothing about it needs saying; False means "ask
    :func:`memsyncd.store.trust.evaluate`" (refused, untrusted, changed, unreadable, or unusual)."""
    for path in guarded_paths(root):
        if unsafe_reason(path) is not None:
            return False
    config = os.path.join(root, CONFIG_RELPATH)
    try:
        with open(config, encoding="utf-8") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return True  # no config: only the defaults and the user's own environment apply
    except (OSError, UnicodeDecodeError):
        return False
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict):
        return False
    if trusted_by_env(root):
        return True
    digest = fields_hash(security_fields(doc))
    try:
        with open(store_file(), encoding="utf-8") as handle:
            store = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return False
    records = store.get("trusted") if isinstance(store, dict) else None
    for record in records if isinstance(records, list) else []:
        if isinstance(record, dict) and record.get("config") == config:
            return bool(record.get("hash") == digest)
    return False
