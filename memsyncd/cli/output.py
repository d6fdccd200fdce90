"""What memsyncctl writes: JSON on stdout, project errors as the seed's blocks or one stderr line, and
the last-resort line for an unexpected exception (never a traceback). Stdlib only.
"""

from __future__ import annotations

import json
import os
import sys

from memsyncd.cli.render import render_fatal, render_unavailable
from memsyncd.errors import (
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    FileAccessError,
    MemsyncError,
    QueueUnreadableError,
    StateUnreadableError,
    SyncUnavailableError,
)
from memsyncd.terminal import escape_controls

TYPE_CHECKING = False  # typing is not loaded on the fast paths; mypy reads the block
if TYPE_CHECKING:
    from typing import Any

PROG = "memsyncctl"
_SHORT = 200


def print_json(data: Any) -> None:
    """One indented JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def note(text: str) -> None:
    """One human line on stderr."""
    sys.stderr.write(escape_controls(text.rstrip("\n")) + "\n")


def report_error(error: MemsyncError, *, as_json: bool = False) -> int:
    """Print an error the way the seed does (or as one JSON object) and return its exit code."""
    if as_json:
        print_json({"exit_code": error.exit_code, "error": error.to_dict()})
        return error.exit_code
    if isinstance(error, SyncUnavailableError):
        sys.stdout.write(render_unavailable())
        return EXIT_UNAVAILABLE
    if isinstance(error, QueueUnreadableError | StateUnreadableError):  # the seed's SYNC ERROR block
        sys.stdout.write(escape_controls(render_fatal(error)))
        return error.exit_code
    note(f"{PROG}: {error.title}: {error.message}" if error.message else f"{PROG}: {error.title}")
    return error.exit_code


def scrub(text: str) -> str:
    """``text`` on one line, shortened, with the mem0 key (if this process has it) replaced."""
    key = os.environ.get("MEM0_API_KEY", "").strip()
    if len(key) >= 4:
        text = text.replace(key, "<redacted>")
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHORT else flat[: _SHORT - 1] + "…"


def project_error_for(exc: BaseException) -> MemsyncError | None:
    """The project error for an exception whose meaning is clear without context, else None."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return FileAccessError.from_os_error(exc, exc.filename)
    return None


def report_internal_error(exc: BaseException) -> int:
    """The last-resort line for a bug: type and short message, how to report it; exit 1."""
    note(f"{PROG}: internal error: {type(exc).__name__}: {scrub(str(exc)) or '(no message)'}; please report it, "
         f"with the log from '{PROG} -v ...'")
    return EXIT_PARTIAL
