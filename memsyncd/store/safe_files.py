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

Paths may be given as ``str`` or ``Path``; this module handles them as strings and loads neither
``pathlib`` nor ``contextlib``: the hook and ``enqueue`` write the queue through it on every call.
"""

from __future__ import annotations

import errno
import os
import stat

from memsyncd.errors import FileAccessError, SymlinkRefusedError

TYPE_CHECKING = False  # typing is not loaded on the fast paths; mypy reads the block
if TYPE_CHECKING:
    StrPath = str | os.PathLike[str]

GUARDED_DIR = ".claude"
DIR_MODE = 0o700
FILE_MODE = 0o600
_SYMLINK_ERRNOS = (errno.ELOOP, errno.EMLINK)  # EMLINK: FreeBSD's answer to O_NOFOLLOW on a link
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _parts(path: StrPath) -> list[str]:
    """``PurePosixPath(path).parts`` as a list: "/" first for an absolute path, no empty or "." parts."""
    text = os.fspath(path)
    parts = [part for part in text.split("/") if part and part != "."]
    return ["/", *parts] if text.startswith("/") else parts


def _join(parts: list[str]) -> str:
    """``str(Path(*parts))`` ("." for none)."""
    if not parts:
        return "."
    return "/" + "/".join(parts[1:]) if parts[0] == "/" else "/".join(parts)


def _split(path: StrPath) -> tuple[str, str]:
    """(parent, name) of a file path, as ``Path.parent`` and ``Path.name``."""
    parts = _parts(path)
    return _join(parts[:-1]), (parts[-1] if parts and parts[-1] != "/" else "")


def _guard_start(parts: list[str]) -> int | None:
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


def _open_component(parent_fd: int, name: str, where: str, *, create: bool, own: bool) -> int:
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
    raise FileNotFoundError(errno.ENOENT, "vanished while being created", where)


def open_dir_fd(directory: StrPath, *, create: bool = True) -> int:
    """A descriptor of ``directory`` reached without following a symlink at or below ``.claude``.

    Raises:
        SymlinkRefusedError: a component from ``.claude`` down is a symlink.
        FileAccessError: a component is not a directory.
        OSError: the directory is missing (``create=False``) or cannot be made or opened.
    """
    parts = _parts(directory)
    start = _guard_start(parts)
    if start is None:
        if create:
            os.makedirs(directory, DIR_MODE, exist_ok=True)
        return os.open(directory, _DIR_FLAGS)
    base = _join(parts[:start])
    if create:
        try:
            fd = os.open(base, _DIR_FLAGS)
        except FileNotFoundError:  # the root itself (as mkdir -p would): not ours to make private
            os.makedirs(base, exist_ok=True)
            fd = os.open(base, _DIR_FLAGS)
    else:
        fd = os.open(base, _DIR_FLAGS)
    try:
        for index in range(start, len(parts)):
            child = _open_component(fd, parts[index], _join(parts[:index + 1]), create=create, own=index > start)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class opened_dir:  # noqa: N801 - used as a function: ``with opened_dir(path) as dir_fd:``
    """:func:`open_dir_fd` as a context manager (closes the descriptor)."""

    def __init__(self, directory: StrPath, *, create: bool = True) -> None:
        self._directory, self._create, self._fd = directory, create, -1

    def __enter__(self) -> int:
        self._fd = open_dir_fd(self._directory, create=self._create)
        return self._fd

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)


def _open_in(dir_fd: int, name: str, where: StrPath, flags: int) -> int:
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


def open_file(path: StrPath, flags: int) -> int:
    """``os.open(path, flags)`` without following symlinks (see the module doc); the caller closes it.

    Raises:
        SymlinkRefusedError: ``path`` or a directory from ``.claude`` down is a symlink.
        FileAccessError: it is not a regular file, or a directory on the way is not a directory.
        OSError: as ``os.open`` (e.g. FileNotFoundError without ``O_CREAT``).
    """
    parent, name = _split(path)
    with opened_dir(parent, create=bool(flags & os.O_CREAT)) as dir_fd:
        return _open_in(dir_fd, name, path, flags)


def read_bytes(path: StrPath) -> bytes | None:
    """The file's bytes, None when it (or its directory) does not exist; never through a symlink."""
    try:
        fd = open_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def read_text(path: StrPath) -> str | None:
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


def atomic_write(path: StrPath, data: bytes, *, expect: FileIdentity | bool = False) -> None:
    """Replace ``path`` atomically: 0600 temp file in the same (non-symlinked) directory, fsync, rename, fsync dir.

    The rename replaces a symlink at ``path`` rather than following it, but a symlink there is
    refused first (it names a file the user did not mean memsyncd to own). With ``expect`` (an
    :func:`identity_in` value) the rename only happens if the file is still the one that was read.

    Raises:
        ChangedUnderUs: ``expect`` did not match; nothing was replaced.
        SymlinkRefusedError: ``path`` or a directory from ``.claude`` down is a symlink.
        OSError: the write failed; the old file is unchanged.
    """
    parent, name = _split(path)
    with opened_dir(parent) as dir_fd:
        current = lstat_in(dir_fd, name)
        if current is not None and stat.S_ISLNK(current.st_mode):
            raise SymlinkRefusedError.at(path)
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        fd = _open_in(dir_fd, tmp, os.path.join(parent, tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if expect is not False and identity_in(dir_fd, name) != expect:
                raise ChangedUnderUs
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:  # noqa: SIM105 - contextlib is not loaded on the fast paths
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        os.fsync(dir_fd)


def check_regular_or_absent(path: StrPath, *, create_dirs: bool = True) -> None:
    """Refuse ``path`` when it is a symlink or not a regular file; make its directories (0700) safely.

    For files another library opens by name (SQLite's ``-wal``/``-shm``/``-journal``): the check
    plus that library's own no-follow open is the guard; a file of ours found group- or
    other-accessible is tightened to 0600.
    """
    parent, name = _split(path)
    with opened_dir(parent, create=create_dirs) as dir_fd:
        info = lstat_in(dir_fd, name)
        if info is None:
            return
        if stat.S_ISLNK(info.st_mode):
            raise SymlinkRefusedError.at(path)
        if not stat.S_ISREG(info.st_mode):
            raise FileAccessError(f"{path} is not a regular file. Nothing was read or written; move it away "
                                  "and retry.")
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            fd = _open_in(dir_fd, name, path, os.O_RDONLY)
            try:
                _tighten(fd, FILE_MODE)
            finally:
                os.close(fd)


def create_private(path: StrPath) -> None:
    """Create ``path`` empty and 0600 when missing (so a library that creates files with the umask does not)."""
    parent, name = _split(path)
    with opened_dir(parent) as dir_fd:
        try:  # noqa: SIM105 - contextlib is not loaded on the fast paths
            os.close(_open_in(dir_fd, name, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
