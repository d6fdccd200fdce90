"""Where things live: a root's files, which root a command is for, and the per-user runtime dir (stdlib only)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

from memsyncd.errors import DaemonError, UsageError
from memsyncd.store import locate
from memsyncd.store.locate import RootNotFound, find_root

CONFIG_RELPATH = Path(locate.CONFIG_RELPATH)
QUEUE_RELPATH = Path(locate.QUEUE_RELPATH)
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


def resolve_root(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """Find the root: ``--root``, else ``MEMSYNC_ROOT``, else the nearest ancestor with a config, else home.

    The upward search stops at the first directory the current user does not own (``/tmp``,
    ``/home``, a directory another user made): a config planted there is never picked up.
    (:func:`memsyncd.store.locate.find_root`, which the fast paths call directly.)

    Raises:
        UsageError: the current directory was deleted, or there is no home directory to fall back to.
    """
    try:
        return Path(find_root(os.fspath(explicit) if explicit else None, str(cwd) if cwd is not None else None))
    except RootNotFound as exc:
        raise UsageError(str(exc)) from None


# Per-user runtime locations (sockets, pair run locks).

USER_SOCKET_NAME = locate.USER_SOCKET_NAME
USER_PID_NAME = "memsyncd.pid"


def root_id(root: Path) -> str:
    """A short stable id for a root directory (names its socket)."""
    return locate.root_id(str(root.resolve()))


def runtime_dir(*, create: bool = True) -> Path:
    """``$XDG_RUNTIME_DIR/memsyncd``, else ``/tmp/memsyncd-<uid>``; created 0700 and checked to be ours.

    A fallback squatted by another user (not a directory, a symlink, not owned by us) is never used.

    Raises:
        DaemonError: the directory is not a real directory owned by the user.
        FileNotFoundError: it does not exist and ``create`` is false.
    """
    directory = Path(locate.runtime_dir_name())
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
