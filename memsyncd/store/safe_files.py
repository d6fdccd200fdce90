"""Opening memsyncd's own files without following symlinks, creating them private (stdlib only).

Everything memsyncd keeps under a root's ``.claude/`` (config, queue, its lock, temp files,
the state DB and its sidecars, the pid file, ``.corrupt-*`` copies) goes through here:

* directories are walked from the ``.claude`` component down with ``openat(O_NOFOLLOW |
  O_DIRECTORY)`` on the previous component's descriptor, so a symlinked ``.claude``,
  ``.claude/memory`` or ``.claude/session`` is refused, never followed, even if it is swapped
  in while we walk; the directories above ``.claude`` are the root's, resolved by the caller;
* the file itself is opened relative to that directory descriptor with ``O_NOFOLLOW`` (any path,
  under ``.claude`` or not) and must be a regular file;
* created directories are 0700 and created files 0600 whatever the umask (explicit modes, then
  ``fchmod``); memsyncd's own directories (``.claude/memory``, ``.claude/session``) and files
  found group/other-accessible are tightened when they belong to the user. ``.claude`` itself is
  only created 0700, never changed (other tools keep files there).

A symlink found anywhere on that path raises :class:`SymlinkRefusedError` naming it (exit 6).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from memsyncd.errors import FileAccessError, SymlinkRefusedError

GUARDED_DIR = ".claude"
DIR_MODE = 0o700
FILE_MODE = 0o600
_SYMLINK_ERRNOS = (errno.ELOOP, errno.EMLINK)  # EMLINK: FreeBSD's answer to O_NOFOLLOW on a link
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _guard_start(parts: tuple[str, ...]) -> int | None:
    """Index of the last ``.claude`` component: from there down nothing may be a symlink."""
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == GUARDED_DIR:
            return index
    return None


def _tighten(fd: int, mode: int) -> None:
    """Give a file or directory of ours exactly ``mode`` when group or others have any access."""
    info = os.fstat(fd)
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        os.fchmod(fd, mode)


def _open_component(parent_fd: int, name: str, where: Path, *, create: bool, own: bool) -> int:
    """Open one directory below ``parent_fd`` without following a symlink (creating it 0700 if asked)."""
    created = False
    for _ in range(3):
        try:
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
                created = True
            except FileExistsError:  # a concurrent writer made it: open theirs
                pass
            continue
        except OSError as exc:
            if exc.errno in (*_SYMLINK_ERRNOS, errno.ENOTDIR):
                info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    raise SymlinkRefusedError.at(where) from None
                raise FileAccessError(f"{where} is not a directory. Nothing was read or written; move it away "
                                      "and retry.") from None
            raise
        try:
            if created:
                os.fchmod(fd, DIR_MODE)  # mkdir's mode went through the umask
            elif own:
                _tighten(fd, DIR_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise FileNotFoundError(errno.ENOENT, "vanished while being created", str(where))


def open_dir_fd(directory: Path, *, create: bool = True) -> int:
    """A descriptor of ``directory`` reached without following a symlink at or below ``.claude``.

    Raises:
        SymlinkRefusedError: a component from ``.claude`` down is a symlink.
        FileAccessError: a component is not a directory.
        OSError: the directory is missing (``create=False``) or cannot be made or opened.
    """
    parts = directory.parts
    start = _guard_start(parts)
    if start is None:
        if create:
            os.makedirs(directory, DIR_MODE, exist_ok=True)
        return os.open(directory, _DIR_FLAGS)
    base = Path(*parts[:start]) if start else Path(".")
    if create:
        os.makedirs(base, exist_ok=True)  # the root itself (as mkdir -p would): not ours to make private
    fd = os.open(base, _DIR_FLAGS)
    try:
        for index in range(start, len(parts)):
            child = _open_component(fd, parts[index], Path(*parts[:index + 1]), create=create, own=index > start)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened_dir(directory: Path, *, create: bool = True) -> Iterator[int]:
    """:func:`open_dir_fd` as a context manager (closes the descriptor)."""
    fd = open_dir_fd(directory, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_in(dir_fd: int, name: str, where: Path, flags: int) -> int:
    """Open ``name`` below ``dir_fd`` with ``O_NOFOLLOW``; a regular file only; created 0600, tightened if ours."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _SYMLINK_ERRNOS:
            raise SymlinkRefusedError.at(where) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileAccessError(f"{where} is not a regular file. Nothing was read or written; move it away "
                                  "and retry.")
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            _tighten(fd, FILE_MODE)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` without following symlinks (see the module doc); the caller closes it.

    Raises:
        SymlinkRefusedError: ``path`` or a directory from ``.claude`` down is a symlink.
        FileAccessError: it is not a regular file, or a directory on the way is not a directory.
        OSError: as ``os.open`` (e.g. FileNotFoundError without ``O_CREAT``).
    """
    with opened_dir(path.parent, create=bool(flags & os.O_CREAT)) as dir_fd:
        return _open_in(dir_fd, path.name, path, flags)


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, None when it (or its directory) does not exist; never through a symlink."""
    try:
        fd = open_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def read_text(path: Path) -> str | None:
    """The file's UTF-8 text, None when missing; never through a symlink (UnicodeDecodeError as ``bytes.decode``)."""
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8")


def lstat_in(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` below ``dir_fd``; None when absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


FileIdentity = tuple[int, int, int] | None


def identity_in(dir_fd: int, name: str) -> FileIdentity:
    """(inode, mtime ns, size) of ``name`` (the link itself if it is one), None when absent."""
    info = lstat_in(dir_fd, name)
    return None if info is None else (info.st_ino, info.st_mtime_ns, info.st_size)


class ChangedUnderUs(Exception):
    """The file's identity was not the expected one just before the rename: nothing was replaced."""


def atomic_write(path: Path, data: bytes, *, expect: FileIdentity | bool = False) -> None:
    """Replace ``path`` atomically: 0600 temp file in the same (non-symlinked) directory, fsync, rename, fsync dir.

    The rename replaces a symlink at ``path`` rather than following it, but a symlink there is
    refused first (it names a file the user did not mean memsyncd to own). With ``expect`` (an
    :func:`identity_in` value) the rename only happens if the file is still the one that was read.

    Raises:
        ChangedUnderUs: ``expect`` did not match; nothing was replaced.
        SymlinkRefusedError: ``path`` or a directory from ``.claude`` down is a symlink.
        OSError: the write failed; the old file is unchanged.
    """
    with opened_dir(path.parent) as dir_fd:
        current = lstat_in(dir_fd, path.name)
        if current is not None and stat.S_ISLNK(current.st_mode):
            raise SymlinkRefusedError.at(path)
        tmp = f".{path.name}.{os.urandom(6).hex()}.tmp"
        fd = _open_in(dir_fd, tmp, path.with_name(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if expect is not False and identity_in(dir_fd, path.name) != expect:
                raise ChangedUnderUs
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)


def check_regular_or_absent(path: Path, *, create_dirs: bool = True) -> None:
    """Refuse ``path`` when it is a symlink or not a regular file; make its directories (0700) safely.

    For files another library opens by name (SQLite's ``-wal``/``-shm``/``-journal``): the check
    plus that library's own no-follow open is the guard; a file of ours found group- or
    other-accessible is tightened to 0600.
    """
    with opened_dir(path.parent, create=create_dirs) as dir_fd:
        info = lstat_in(dir_fd, path.name)
        if info is None:
            return
        if stat.S_ISLNK(info.st_mode):
            raise SymlinkRefusedError.at(path)
        if not stat.S_ISREG(info.st_mode):
            raise FileAccessError(f"{path} is not a regular file. Nothing was read or written; move it away "
                                  "and retry.")
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            fd = _open_in(dir_fd, path.name, path, os.O_RDONLY)
            try:
                _tighten(fd, FILE_MODE)
            finally:
                os.close(fd)


def create_private(path: Path) -> None:
    """Create ``path`` empty and 0600 when missing (so a library that creates files with the umask does not)."""
    with opened_dir(path.parent) as dir_fd, contextlib.suppress(FileExistsError):
        os.close(_open_in(dir_fd, path.name, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
