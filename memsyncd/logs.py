"""structlog set-up: JSON lines when stderr is not a TTY (journald), console on a TTY, secrets redacted.

The daemon logs with :func:`configure_logging`; ``memsyncctl`` with :func:`configure_cli_logging`
(structured records only with ``-v``, so stderr otherwise carries human messages only).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRETS: set[str] = set()
_SENSITIVE_KEYS = {"authorization", "api_key", "mem0_api_key", "token", "key"}
REDACTED = "<redacted>"


def register_secret(value: str | None) -> None:
    """Remember a secret so that no log line ever contains it."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``<redacted>``.

    Every string that came from a server (error bodies, reason phrases) passes through
    this before it reaches an error message, a file, the output or a log: some proxies
    echo the request's ``Authorization`` header in their error pages.
    """
    for secret in tuple(_SECRETS):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in _SENSITIVE_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    return value


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop sensitive keys and every registered secret from all values."""
    for key in list(event):
        if key.lower() in _SENSITIVE_KEYS:
            event[key] = REDACTED
        else:
            event[key] = _scrub(event[key])
    return event


def _escaped(renderer: Any) -> Any:
    """Wrap a console renderer so control characters from outside (memory text, server messages) print escaped."""
    from memsyncd.terminal import escape_controls

    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        return escape_controls(str(renderer(logger, name, event)))

    return render


def configure_logging(level: str = "info", *, json_lines: bool | None = None) -> None:
    """Configure structlog to write to stderr.

    Args:
        level: minimum level name.
        json_lines: force JSON (True) or console (False); default: JSON unless stderr is a TTY.
    """
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: Any = (structlog.processors.JSONRenderer() if json_lines
                     else _escaped(structlog.dev.ConsoleRenderer(colors=False)))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def _drop(_logger: Any, _name: str, _event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop the record (critical ones included)."""
    raise structlog.DropEvent


def configure_cli_logging(*, verbose: bool) -> None:
    """``memsyncctl``'s logging: with ``-v``, debug records on stderr as the daemon writes them; without,
    none at all (structlog drops every level, stdlib ``logging`` and warnings stay quiet), so stderr
    carries only the human messages memsyncctl prints itself.
    """
    if verbose:
        configure_logging("debug")
        return
    structlog.configure(
        processors=[_drop],
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),  # below: no-op methods
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if not any(isinstance(handler, logging.NullHandler) for handler in root.handlers):
        root.addHandler(logging.NullHandler())  # no "last resort" stderr output for library warnings
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
