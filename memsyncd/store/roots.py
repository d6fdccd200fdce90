"""The registry of roots one user's daemon serves: ``$XDG_CONFIG_HOME/memsyncd/roots.json``.

Stdlib only: the thin client reads it on the hook's path to decide whether the daemon must be
told about a root. Writes take an ``flock`` on the ``.lock`` sidecar, re-read under it and
replace the file atomically, like the sync queue; a corrupt registry is never overwritten.

File format::

    {"version": 1, "roots": [{"path": "/home/me/project", "added": "2026-11-26T10:00:00Z"}],
     "ignored": [{"path": "/home/me/old", "removed": "2026-11-27T09:00:00Z"}]}

``ignored`` lists the roots removed with ``roots remove``: automatic registration (the hook,
``enqueue``, ``POST /v1/queue``) leaves them alone until ``roots add`` registers them again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from memsyncd.errors import QueueBusyError, RegistryUnreadableError, RootNotServedError, UsageError
from memsyncd.models import format_ts, utc_now
from memsyncd.store.queue import atomic_write, flock_exclusive

LOCK_TIMEOUT_SECONDS = 10.0
CLAUDE_DIR = ".claude"


def config_home() -> Path:
    """``$XDG_CONFIG_HOME`` (absolute), else ``~/.config``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"


def registry_path() -> Path:
    """Where the roots of this user are listed."""
    return config_home() / "memsyncd" / "roots.json"


def is_root(path: Path) -> bool:
    """A root is a directory that has a ``.claude`` directory."""
    return (path / CLAUDE_DIR).is_dir()


@dataclass(frozen=True)
class RootEntry:
    """One registered root."""

    path: Path
    added: str


def _parse_all(text: str, where: Path) -> tuple[list[RootEntry], list[RootEntry]]:
    """(registered roots, ignored roots); an ignored entry's ``added`` holds when it was removed."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RegistryUnreadableError(str(where), f"not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("roots", []), list) \
            or not isinstance(data.get("ignored", []), list):
        raise RegistryUnreadableError(str(where), 'expected {"roots": [...], "ignored": [...]}')
    found: dict[str, list[RootEntry]] = {"roots": [], "ignored": []}
    for name, stamp in (("roots", "added"), ("ignored", "removed")):
        for index, raw in enumerate(data.get(name, [])):
            if not isinstance(raw, dict) or not isinstance(raw.get("path"), str) or not raw["path"].startswith("/"):
                raise RegistryUnreadableError(str(where), f"{name}[{index}] needs an absolute \"path\" string")
            found[name].append(RootEntry(Path(raw["path"]), str(raw.get(stamp) or "")))
    return found["roots"], found["ignored"]


def _parse(text: str, where: Path) -> list[RootEntry]:
    return _parse_all(text, where)[0]


def _dump(entries: list[RootEntry], ignored: list[RootEntry] | None = None) -> str:
    data: dict[str, object] = {"version": 1, "roots": [{"path": str(e.path), "added": e.added} for e in entries]}
    if ignored:
        data["ignored"] = [{"path": str(e.path), "removed": e.added} for e in ignored]
    return json.dumps(data, indent=2) + "\n"


def ignored_message(root: Path) -> str:
    """Why a root is not served again automatically, and how to serve it."""
    return (f"{root} was removed with 'memsyncctl roots remove'; it is not registered again automatically "
            f"(hook, enqueue) until 'memsyncctl roots add {root}'.")


class RootRegistry:
    """The roots file of one user."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or registry_path()
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def roots(self) -> list[RootEntry]:
        """The registered roots, in the order they were added (missing file = none).

        Raises:
            RegistryUnreadableError: the file is corrupt; it is left untouched.
        """
        return self._read()[0]

    def ignored(self) -> list[RootEntry]:
        """The roots removed with ``roots remove``, which automatic registration leaves alone."""
        return self._read()[1]

    def is_ignored(self, root: Path) -> bool:
        """Whether ``root`` was removed by hand (an unreadable registry counts as not)."""
        try:
            return any(e.path == Path(root).resolve() for e in self.ignored())
        except RegistryUnreadableError:
            return False

    def _read(self) -> tuple[list[RootEntry], list[RootEntry]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return [], []
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryUnreadableError(str(self.path), str(exc)) from None
        return _parse_all(text, self.path)

    def contains(self, root: Path) -> bool:
        """Whether ``root`` is registered (an unreadable registry counts as not)."""
        try:
            return any(e.path == root for e in self.roots())
        except RegistryUnreadableError:
            return False

    def add(self, root: Path, *, auto: bool = False) -> bool:
        """Register ``root`` (an absolute, existing directory with ``.claude/``); False if it already was.

        By hand (``auto`` False) it also leaves the ignore list; automatic registration (a client
        wrote the root's queue) refuses a root removed by hand.

        Raises:
            UsageError: the directory does not exist or has no ``.claude`` directory.
            RootNotServedError: ``auto`` and the root was removed with ``roots remove``.
        """
        root = Path(root).resolve()
        if not root.is_dir():
            raise UsageError(f"{root} is not a directory; give the project directory that holds .claude/.")
        if not is_root(root):
            raise UsageError(f"{root} has no .claude/ directory; run 'memsyncctl init' there first.")
        with self._locked():
            entries, ignored = self._read()
            if auto and any(e.path == root for e in ignored):
                raise RootNotServedError(ignored_message(root))
            kept = [e for e in ignored if e.path != root]
            if any(e.path == root for e in entries):
                if len(kept) != len(ignored):
                    atomic_write(self.path, _dump(entries, kept))
                return False
            entries.append(RootEntry(root, format_ts(utc_now())))
            atomic_write(self.path, _dump(entries, kept))
        return True

    def remove(self, root: Path) -> bool:
        """Forget ``root`` and ignore it for automatic registration; False if it was not registered.

        Its files are not touched; ``add`` (by hand) registers it again.
        """
        root = Path(root).resolve()
        with self._locked():
            entries, ignored = self._read()
            kept = [e for e in entries if e.path != root]
            if not any(e.path == root for e in ignored):
                ignored.append(RootEntry(root, format_ts(utc_now())))
            atomic_write(self.path, _dump(kept, ignored))
            return len(kept) != len(entries)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(flock_exclusive(self.lock_path, LOCK_TIMEOUT_SECONDS))
            except QueueBusyError:  # the queue's lock helper names the file; say what it guards here
                raise UsageError(f"{self.lock_path} stayed locked for {LOCK_TIMEOUT_SECONDS:.0f} s; "
                                 "another memsyncctl is changing the roots; try again.") from None
            yield
