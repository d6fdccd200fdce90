"""Match request paths against route patterns like ``/v1/memories/{memory_id}/``.

Matching follows Starlette's rules, which both emulated services share in
spirit: routes are tried in registration order, the first route matching
path and method wins, a path match with the wrong method means 405, and a
path parameter matches one non-empty segment (``[^/]+``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Found", "MethodNotAllowed", "NotFound", "Router"]

H = TypeVar("H", bound=Callable[..., Awaitable[object]])

_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


@dataclass(frozen=True)
class Found(Generic[H]):
    """A route matched path and method."""

    handler: H
    params: dict[str, str]


@dataclass(frozen=True)
class MethodNotAllowed:
    """The path exists, but not for this method."""

    allowed: tuple[str, ...]


@dataclass(frozen=True)
class NotFound:
    """No route has this path."""


@dataclass
class _Route(Generic[H]):
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: H


def _compile(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    for m in _PARAM.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        parts.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(parts) + "$")


@dataclass
class Router(Generic[H]):
    """An ordered route table."""

    _routes: list[_Route[H]] = field(default_factory=list)

    def add(self, method: str, pattern: str, handler: H) -> None:
        """Register ``handler`` for ``method`` on ``pattern``."""
        self._routes.append(_Route(method.upper(), pattern, _compile(pattern), handler))

    def match(self, method: str, path: str) -> Found[H] | MethodNotAllowed | NotFound:
        """Find the route for ``method path``."""
        allowed: list[str] = []
        for route in self._routes:
            m = route.regex.match(path)
            if m is None:
                continue
            if route.method == method.upper() or (method.upper() == "HEAD" and route.method == "GET"):
                return Found(route.handler, m.groupdict())
            if route.method not in allowed:
                allowed.append(route.method)
        if allowed:
            return MethodNotAllowed(tuple(allowed))
        return NotFound()

    def has_path(self, path: str) -> bool:
        """True when some route (any method) matches ``path``."""
        return any(route.regex.match(path) for route in self._routes)
