"""Where a root's files live, and which root a command is for (stdlib only, so the thin client can use it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from memsyncd.errors import UsageError

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
