"""The project's exception hierarchy: every failure a user can see, with a title and what to do.

Hierarchy::

    MemsyncError                      title + message (what to do) + exit_code
    ├── ConfigError                   bad config.json / env / flags            (exit 2)
    │   └── UntrustedRootError        a root's config is not trusted, or not safely owned (exit 2)
    ├── UsageError                    bad command-line or API arguments        (exit 2)
    ├── SyncUnavailableError          cloud not enabled / no API key           (exit 3)
    ├── QueueUnreadableError          sync queue file corrupt or wrong type    (exit 6)
    ├── QueueBusyError                unlocked writers kept replacing it       (exit 1)
    ├── StateUnreadableError          SQLite state unreadable                  (exit 6)
    ├── RegistryUnreadableError       roots.json unreadable                    (exit 6)
    ├── FileAccessError               a queue/state/lock file cannot be read or written (exit 6)
    │   └── SymlinkRefusedError       a symlink where memsyncd keeps its files (.claude/...) (exit 6)
    ├── DaemonError                   daemon-level problems                    (exit 2)
    │   ├── DaemonNotRunningError
    │   ├── RootNotServedError        the daemon that answered does not serve this root
    │   └── AlreadyRunningError
    ├── RemoteError                   "their fault": a server said no or could not be reached
    │   ├── NetworkUnreachableError   connection refused, DNS, reset           (exit 5)
    │   │   └── LocalUnreachableError OpenMemory server down                   (exit 5)
    │   ├── AuthError                 401 / 403 from mem0                      (exit 4)
    │   ├── RateLimitedError          429 (carries retry_after)               (retryable)
    │   ├── ServerError               5xx and timeouts                         (retryable)
    │   ├── CloudProcessingError      queued add not finished yet (entry waits, no error)
    │   ├── NotFoundError             404 for one item
    │   ├── RedirectedError           a 3xx: never followed, the URL is wrong   (exit 2)
    │   ├── MisbehavingServerError    a listing that never ends or repeats itself
    │   └── RemoteRejectedError       other 4xx, or a 200 with an error body
    │       └── ResponseTooLargeError an answer over the body cap (16 MB)
    ├── ConflictError                 a conflict changed under its resolution  (exit 1)
    ├── ServiceNotActiveError         the user service is not installed/running (exit 1)
    └── ServiceManagerError           systemctl/launchctl missing or unreachable (exit 5)

Per-item errors (``ServerError``, ``RateLimitedError``, ``NotFoundError``,
``RemoteRejectedError``) fail one queue entry; run-level errors
(``AuthError``, ``NetworkUnreachableError``, ``RedirectedError``) stop the whole run at once.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_AUTH = 4
EXIT_NETWORK = 5
EXIT_UNREADABLE = 6


class MemsyncError(Exception):
    """Base class: a short ``title`` plus an actionable ``message``."""

    title: str = "memsyncd error"
    exit_code: int = EXIT_USAGE

    def __init__(self, message: str = "", *, title: str | None = None) -> None:
        super().__init__(message or self.title)
        self.message = message
        if title is not None:
            self.title = title

    def __str__(self) -> str:
        return f"{self.title}: {self.message}" if self.message else self.title

    def to_dict(self) -> dict[str, str]:
        """Serialise for the control socket (rebuilt by :func:`error_from_dict`)."""
        return {"type": type(self).__name__, "title": self.title, "message": self.message}


class ConfigError(MemsyncError):
    """Raised when config.json, the environment or the key source is invalid."""

    title = "Invalid configuration"
    exit_code = EXIT_USAGE


class UntrustedRootError(ConfigError):
    """Raised when a root's config was never trusted, changed since, or is not safely owned.

    Nothing that touches the network (or the daemon, for the hook) happens for such a root.
    """

    title = "Untrusted root"
    exit_code = EXIT_USAGE


class UsageError(MemsyncError):
    """Raised when a command or an API request has invalid arguments."""

    title = "Invalid usage"
    exit_code = EXIT_USAGE


class SyncUnavailableError(MemsyncError):
    """Raised when cloud sync is not enabled or no API key is available."""

    title = "SYNC UNAVAILABLE"
    exit_code = EXIT_UNAVAILABLE


class QueueUnreadableError(MemsyncError):
    """Raised when the sync queue file cannot be parsed or has the wrong shape."""

    title = "sync queue is unreadable"
    exit_code = EXIT_UNREADABLE

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"({path}: {reason}). The file was left untouched; fix it or run "
            "'memsyncctl queue repair' to move it aside and salvage valid entries."
        )
        self.path = path
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        """Also carries the path and reason, so the client can print the seed's line."""
        return {**super().to_dict(), "path": self.path, "reason": self.reason}


class QueueBusyError(MemsyncError):
    """Raised when unlocked writers keep replacing the queue during a locked update."""

    title = "sync queue is busy"
    exit_code = EXIT_PARTIAL


class StateUnreadableError(MemsyncError):
    """Raised when the SQLite state database cannot be opened or is too new."""

    title = "sync state is unreadable"
    exit_code = EXIT_UNREADABLE


class RegistryUnreadableError(MemsyncError):
    """Raised when the roots registry (``roots.json``) cannot be parsed; it is left untouched."""

    title = "roots registry is unreadable"
    exit_code = EXIT_UNREADABLE

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"({path}: {reason}). The file was left untouched; fix it, or move it aside and "
                         "register the roots again with 'memsyncctl roots add DIR'.")


class FileAccessError(MemsyncError):
    """Raised when a file memsyncd needs cannot be created, read or written (permissions, disk full)."""

    title = "cannot access a file"
    exit_code = EXIT_UNREADABLE

    @classmethod
    def from_os_error(cls, error: OSError, path: object) -> FileAccessError:
        """The error for ``error`` on ``path``: names the file, the reason, and that nothing was changed."""
        reason = error.strerror or type(error).__name__
        return cls(f"{path}: {reason}. Nothing was changed; check the permissions "
                   "and free space of that directory, then retry.")


class SymlinkRefusedError(FileAccessError):
    """Raised when a file or directory memsyncd keeps under ``.claude/`` is a symbolic link (never followed)."""

    title = "refusing to follow a symbolic link"

    @classmethod
    def at(cls, path: object) -> SymlinkRefusedError:
        """The error for a symlink found at ``path``: names it, why it is refused, and what to do."""
        return cls(f"{path} is a symbolic link. memsyncd never follows symlinks under .claude/ (a link there "
                   "could make it write over another file). Nothing was read or written. If you did not put the "
                   f"link there, it may come from the repository you are in: remove it ('rm {path}') and run "
                   "the command again; memsyncd recreates the file or directory.")


class DaemonError(MemsyncError):
    """Raised for daemon lifecycle problems."""

    title = "daemon error"


class DaemonNotRunningError(DaemonError):
    """Raised when no daemon answers on the control socket."""

    title = "memsyncd is not running"


class RootNotServedError(DaemonError):
    """Raised when the daemon that answered does not serve the root a command is for."""

    title = "root not served by the daemon"


class AlreadyRunningError(DaemonError):
    """Raised when another daemon already holds this root's lock."""

    title = "memsyncd is already running"


class RemoteError(MemsyncError):
    """Raised when a remote server refused or could not be reached."""

    title = "remote error"
    exit_code = EXIT_PARTIAL
    retryable = False
    stops_run = False
    status: int | None = None
    service: str = "mem0"

    def __init__(self, message: str = "", *, status: int | None = None, service: str = "mem0") -> None:
        super().__init__(message)
        self.status = status
        self.service = service


class NetworkUnreachableError(RemoteError):
    """Raised when a connection cannot be made (refused, DNS, reset)."""

    title = "Network unreachable"
    exit_code = EXIT_NETWORK
    stops_run = True


class LocalUnreachableError(NetworkUnreachableError):
    """Raised when the local OpenMemory server cannot be reached (the title names its URL when known)."""

    title = "Local OpenMemory server unreachable"


class AuthError(RemoteError):
    """Raised when mem0 rejects the API key (401/403); ``key_source`` says where the key came from."""

    title = "mem0 rejected the API key"
    exit_code = EXIT_AUTH
    stops_run = True
    key_source: str = ""  # "the MEM0_API_KEY environment variable", a key file's path, ... ("" = unknown)

    def to_dict(self) -> dict[str, str]:
        """Also carries the key's source (never the key), so the client names it."""
        data = super().to_dict()
        if self.key_source:
            data["key_source"] = self.key_source
        return data


class RateLimitedError(RemoteError):
    """Raised when a server answers 429; ``retry_after`` is in seconds."""

    title = "Rate limited"
    retryable = True

    def __init__(self, message: str = "", *, retry_after: float | None = None, status: int | None = 429,
                 service: str = "mem0") -> None:
        super().__init__(message, status=status, service=service)
        self.retry_after = retry_after


class ServerError(RemoteError):
    """Raised on 5xx answers and timeouts."""

    title = "Server error"
    retryable = True


class CloudProcessingError(RemoteError):
    """Raised when mem0 accepted an add but is still processing it (queued add, event PENDING)."""

    title = "mem0 is still processing"


class NotFoundError(RemoteError):
    """Raised when the item does not exist on the server (404)."""

    title = "Not found"


class RemoteRejectedError(RemoteError):
    """Raised on other 4xx answers, or a 200 whose body reports an error."""

    title = "Request rejected"


class ResponseTooLargeError(RemoteRejectedError):
    """Raised when an answer's body passes the size cap; the rest of it is not read."""

    title = "Answer too large"


class RedirectedError(RemoteError):
    """Raised on a 3xx answer: redirects are never followed (the key would go elsewhere)."""

    title = "Server answered with a redirect"
    exit_code = EXIT_USAGE
    stops_run = True


class MisbehavingServerError(RemoteError):
    """Raised when a server's answers contradict themselves (a listing that never ends or repeats a page)."""

    title = "Server misbehaves"


class ConflictError(MemsyncError):
    """Raised when a conflict changed while the user was resolving it; nothing was written."""

    title = "Conflict changed"
    exit_code = EXIT_PARTIAL


class ServiceNotActiveError(MemsyncError):
    """Raised when the memsyncd user service is not installed, or its manager failed to start it."""

    title = "memsyncd service is not running"
    exit_code = EXIT_PARTIAL


class ServiceManagerError(MemsyncError):
    """Raised when the user's service manager (systemd --user, launchd) is missing or cannot be reached.

    Exit 5, like any local server that is down: the file may be written, but nothing runs it.
    """

    title = "service manager unreachable"
    exit_code = EXIT_NETWORK


_REGISTRY: dict[str, type[MemsyncError]] = {
    cls.__name__: cls
    for cls in (
        MemsyncError, ConfigError, UntrustedRootError, UsageError, SyncUnavailableError, StateUnreadableError,
        QueueBusyError,
        FileAccessError,
        DaemonError, DaemonNotRunningError, AlreadyRunningError, RemoteError,
        NetworkUnreachableError, LocalUnreachableError, AuthError, RateLimitedError, ServerError,
        CloudProcessingError,
        RegistryUnreadableError, RootNotServedError,
        NotFoundError, RemoteRejectedError, ConflictError, ResponseTooLargeError, RedirectedError,
        MisbehavingServerError,
    )
}


def error_from_dict(data: dict[str, object]) -> MemsyncError:
    """Rebuild an error sent over the control socket, from a fixed registry (never eval)."""
    if data.get("type") == "QueueUnreadableError":
        return QueueUnreadableError(str(data.get("path", "")), str(data.get("reason", "")))
    cls = _REGISTRY.get(str(data.get("type")), MemsyncError)
    message = str(data.get("message", ""))
    title = str(data.get("title", cls.title))
    err = cls.__new__(cls)
    MemsyncError.__init__(err, message, title=title)
    if isinstance(err, AuthError) and data.get("key_source"):
        err.key_source = str(data["key_source"])
    return err
