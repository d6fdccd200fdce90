"""Which root a command is for and which sockets may serve it, as strings, with a few ``os.stat`` calls.

The fast paths (``status``, ``enqueue``, the hook) run this on every call, so it loads ``os``
only: no ``pathlib`` and no ``hashlib`` unless a socket name must be computed.
:mod:`memsyncd.store.paths` builds its ``Path`` API on these functions, so both answer alike.
"""

from __future__ import annotations

import os

CONFIG_RELPATH = ".claude/memory/config.json"
QUEUE_RELPATH = ".claude/session/sync-queue.json"
USER_SOCKET_NAME = "memsyncd.sock"


class RootNotFound(Exception):
    """The root cannot be determined: the message says why and what to do (the caller's UsageError)."""


def _absolute(path: str) -> str:
    """``path`` with ``~`` expanded, made absolute and free of symlinks (``Path.resolve()``, non-strict)."""
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        raise RootNotFound(f"cannot find your home directory to expand {path!r}; pass --root DIR or set "
                           "MEMSYNC_ROOT.")
    return os.path.realpath(expanded)


def find_root(explicit: str | None = None, cwd: str | None = None) -> str:
    """``--root``, else ``MEMSYNC_ROOT``, else the nearest ancestor with a config, else home.

    The upward search stops at the first directory the current user does not own (``/tmp``,
    ``/home``, a directory another user made): a config planted there is never picked up.

    Raises:
        RootNotFound: the current directory was deleted, or there is no home directory to fall back to.
    """
    if explicit:
        return _absolute(os.fspath(explicit))
    env_root = os.environ.get("MEMSYNC_ROOT")
    if env_root:
        return _absolute(env_root)
    try:
        here = os.path.realpath(cwd if cwd is not None else os.getcwd())
    except FileNotFoundError:
        raise RootNotFound("the current directory no longer exists; cd to your project, or pass --root DIR "
                           "(or set MEMSYNC_ROOT).") from None
    if cwd is not None and not os.path.isdir(here):
        raise RootNotFound("the current directory no longer exists; cd to your project, or pass --root DIR "
                           "(or set MEMSYNC_ROOT).")
    me = os.geteuid()
    candidate = here
    while True:
        try:
            if os.stat(candidate).st_uid != me:  # another user's directory: its (or its parents') config is not ours
                break
        except OSError:
            break
        if os.path.isfile(os.path.join(candidate, CONFIG_RELPATH)):
            return candidate
        parent = os.path.dirname(candidate)
        if parent == candidate:
            break
        candidate = parent
    home = os.path.expanduser("~")
    if home.startswith("~"):
        raise RootNotFound("cannot find your home directory (no HOME and no passwd entry); pass --root DIR or "
                           "set MEMSYNC_ROOT.")
    return os.path.realpath(home)


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` in hex, without loading OpenSSL through ``hashlib`` where CPython allows (~2 ms)."""
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:  # pragma: no cover - other interpreters and versions
        from hashlib import sha256
    return str(sha256(data).hexdigest())


def root_id(root: str) -> str:
    """A short stable id for a (resolved) root directory: it names the root's own daemon socket."""
    return sha256_hex(root.encode("utf-8"))[:16]


def runtime_dir_name() -> str:
    """``$XDG_RUNTIME_DIR/memsyncd`` when that base directory exists, else ``/tmp/memsyncd-<uid>`` (not created)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "memsyncd")
    return f"/tmp/memsyncd-{os.getuid()}"


def checked_runtime_dir() -> str | None:
    """The runtime dir when it is a 0700 directory of the user's; "" when it is absent (no daemon ever
    listened there; nothing is created); None when it exists otherwise: the caller then takes the full
    path (:func:`memsyncd.store.paths.runtime_dir`), which repairs or refuses it with a message."""
    directory = runtime_dir_name()
    try:
        info = os.lstat(directory)
    except OSError:
        return ""
    if (info.st_mode & 0o170000) != 0o040000 or info.st_uid != os.getuid() or (info.st_mode & 0o777) != 0o700:
        return None
    return directory


def socket_candidates(root: str, explicit: str | None = None) -> list[str] | None:
    """The sockets to try for ``root``, in order: ``--socket``; else its single-root daemon's, then the user's.

    Sockets that do not exist are left out (a stat each), so a missing daemon costs no connect.
    None when the runtime dir needs the full check (:func:`checked_runtime_dir`).
    """
    if explicit:
        return [os.fspath(explicit)]
    directory = checked_runtime_dir()
    if not directory:
        return None if directory is None else []
    found = []
    for name in (f"{root_id(root)}.sock", USER_SOCKET_NAME):
        path = os.path.join(directory, name)
        try:
            if (os.stat(path).st_mode & 0o170000) == 0o140000:  # a socket
                found.append(path)
        except OSError:
            continue
    return found


def in_registry(root: str) -> bool:
    """Whether the roots registry (``$XDG_CONFIG_HOME/memsyncd/roots.json``) names ``root`` exactly,
    as a served root or as one removed by hand (``ignored``).

    A quick look for the hook: False also when the file is absent, unreadable or names the root
    in another spelling; :class:`memsyncd.store.roots.RootRegistry` gives the full answer.
    """
    import json

    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not (base and os.path.isabs(base)):
        base = os.path.join(os.path.expanduser("~"), ".config")
    try:
        with open(os.path.join(base, "memsyncd", "roots.json"), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(data, dict):
        return False
    for key in ("roots", "ignored"):
        listed = data.get(key)
        if isinstance(listed, list) and any(isinstance(r, dict) and r.get("path") == root for r in listed):
            return True
    return False
