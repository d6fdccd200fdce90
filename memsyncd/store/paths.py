"""Where things live: a root's files, which root a command is for, and the per-user runtime dir (stdlib only)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import NamedTuple

from memsyncd.errors import DaemonError, UsageError

CONFIG_RELPATH = Path(".claude/memory/config.json")
QUEUE_RELPATH = Path(".claude/session/sync-queue.json")
STATE_RELPATH = Path(".claude/memory/memsync.db")


class Paths(NamedTuple):
    """Every file memsyncd touches under one root.

    A NamedTuple (immutable, hashable, compared by value) rather than a frozen dataclass:
    ``dataclasses`` imports ``inspect``, about 10 ms of every thin-client command.
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_RELPATH

    @property
    def queue(self) -> Path:
        return self.root / QUEUE_RELPATH

    @property
    def queue_lock(self) -> Path:
        return self.queue.with_name(self.queue.name + ".lock")

    @property
    def state(self) -> Path:
        return self.root / STATE_RELPATH


def _owned_by(directory: Path, uid: int) -> bool:
    try:
        return os.stat(directory).st_uid == uid
    except OSError:
        return False


def resolve_root(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """Find the root: ``--root``, else ``MEMSYNC_ROOT``, else the nearest ancestor with a config, else home.

    The upward search stops at the first directory the current user does not own (``/tmp``,
    ``/home``, a directory another user made): a config planted there is never picked up.

    Raises:
        UsageError: the current directory was deleted, or there is no home directory to fall back to.
    """
    try:
        if explicit:
            return Path(explicit).expanduser().resolve()
        env_root = os.environ.get("MEMSYNC_ROOT")
        if env_root:
            return Path(env_root).expanduser().resolve()
        here = (cwd or Path.cwd()).resolve()
        me = os.geteuid()
        for candidate in (here, *here.parents):
            if not _owned_by(candidate, me):  # another user's directory: its (or its parents') config is not ours
                break
            if (candidate / CONFIG_RELPATH).is_file():
                return candidate
        return Path.home().resolve()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists; cd to your project, or pass --root DIR "
                         "(or set MEMSYNC_ROOT).") from None
    except RuntimeError as exc:  # expanduser()/home() without HOME or a passwd entry
        raise UsageError(f"cannot find your home directory ({exc}); pass --root DIR or set MEMSYNC_ROOT.") from None


# Per-user runtime locations (sockets, pair run locks).

USER_SOCKET_NAME = "memsyncd.sock"
USER_PID_NAME = "memsyncd.pid"


def root_id(root: Path) -> str:
    """A short stable id for a root directory (names its socket)."""
    return hashlib.sha256(str(root.resolve()).encode("utf-8")).hexdigest()[:16]


def runtime_dir(*, create: bool = True) -> Path:
    """``$XDG_RUNTIME_DIR/memsyncd``, else ``/tmp/memsyncd-<uid>``; created 0700 and checked to be ours.

    A fallback squatted by another user (not a directory, a symlink, not owned by us) is never used.

    Raises:
        DaemonError: the directory is not a real directory owned by the user.
        FileNotFoundError: it does not exist and ``create`` is false.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    directory = Path(base) / "memsyncd" if base and Path(base).is_dir() else Path(f"/tmp/memsyncd-{os.getuid()}")
    if create:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DaemonError(f"{directory} is not a directory owned by you; remove it or set XDG_RUNTIME_DIR.")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return directory


def default_socket_path(root: Path) -> Path:
    """Where a single-root daemon (``memsyncd run --root DIR``) of ``root`` listens."""
    return runtime_dir() / f"{root_id(root)}.sock"


def user_socket_path() -> Path:
    """Where the user's daemon (``memsyncd run``, serving every registered root) listens."""
    return runtime_dir() / USER_SOCKET_NAME


def daemon_socket_candidates(root: Path, explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """The sockets to try for ``root``, in order: ``--socket``; else its single-root daemon, then the user's."""
    if explicit:
        return [Path(explicit)]
    return [default_socket_path(root), user_socket_path()]


def pair_lock_path(pair_key: str) -> Path:
    """The run lock of one pair of stores (shared by every root and process that syncs that pair)."""
    directory = runtime_dir() / "pairs"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / f"{pair_key}.lock"
