"""The HTTP edge shared by both clients: exception mapping and bounded retries.

``map_transport_errors`` and ``check_status`` turn httpx failures and HTTP error
statuses into the project's errors (``raise ... from``); ``request`` sends one
request with stamina retries on 429 (honouring ``Retry-After``, bounded) and on
5xx/timeouts (exponential backoff with jitter), at most ``attempts`` tries.
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import stamina

from memsyncd.errors import (
    AuthError,
    NetworkUnreachableError,
    NotFoundError,
    RateLimitedError,
    RemoteError,
    RemoteRejectedError,
    ServerError,
)
from memsyncd.logs import redact_text


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request is retried."""

    attempts: int = 3
    max_retry_after: float = 60.0
    wait_initial: float = 0.2
    wait_max: float = 5.0
    wait_jitter: float = 0.5


def error_detail(response: httpx.Response) -> str:
    """The server's own words from a JSON ``detail``/``error`` body, else a short text excerpt.

    Secrets are redacted before anything is cut short (a cut must never leave half a key):
    some proxies echo the request's ``Authorization`` header in their error bodies.
    """
    if response.headers.get("content-type", "").startswith("text/html"):
        return redact_text(response.reason_phrase or "HTML error page")[:200]
    try:
        body = response.json()
    except ValueError:
        return redact_text(response.text)[:200].strip()
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            if body.get(key):
                return redact_text(str(body[key]))[:300]
    return redact_text(str(body))[:200]


@contextlib.contextmanager
def map_transport_errors(service: str, unreachable: type[NetworkUnreachableError], url: str = "") -> Iterator[None]:
    """Translate httpx transport exceptions into project errors (naming the server's ``url`` when given)."""
    where = f"{service} at {url}" if url else service
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise unreachable(f"cannot connect to {where}: {type(exc).__name__}", service=service) from exc
    except httpx.TimeoutException as exc:
        raise ServerError(f"{service} did not answer in time ({type(exc).__name__})", service=service) from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise ServerError(f"{service} dropped the connection ({type(exc).__name__})", service=service) from exc
    except httpx.TransportError as exc:
        raise unreachable(f"cannot reach {where}: {type(exc).__name__}", service=service) from exc


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: delay-seconds, or an HTTP date (RFC 9110 10.2.3) measured from the
    answer's ``Date`` (the server's clock, so clock skew does not count), else from our clock."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        sent = response.headers.get("Date")
        now = email.utils.parsedate_to_datetime(sent) if sent else datetime.now(UTC)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, IndexError):
        return None


def check_status(response: httpx.Response, service: str, *, auth_statuses: tuple[int, ...] = (401, 403)) -> None:
    """Raise the project error matching an HTTP error status; return for 2xx/3xx."""
    status = response.status_code
    if status < 400:
        return
    what = f"{service} returned {status}: {error_detail(response)}"
    if status in auth_statuses:
        raise AuthError(what, status=status, service=service)
    if status == 404:
        raise NotFoundError(what, status=status, service=service)
    if status == 429:
        raise RateLimitedError(what, retry_after=_retry_after(response), status=status, service=service)
    if status >= 500:
        raise ServerError(what, status=status, service=service)
    raise RemoteRejectedError(what, status=status, service=service)


def _backoff_hook(policy: RetryPolicy) -> Any:
    def hook(exc: Exception) -> bool | float:
        if isinstance(exc, RateLimitedError):
            wait = exc.retry_after if exc.retry_after is not None else policy.wait_initial
            return min(wait, policy.max_retry_after)
        return isinstance(exc, ServerError)

    return hook


def retry_context(policy: RetryPolicy, *, attempts: int | None = None) -> Any:
    """A stamina retry context retrying ``ServerError`` and ``RateLimitedError`` per ``policy``."""
    return stamina.retry_context(
        on=_backoff_hook(policy),
        attempts=attempts or policy.attempts,
        timeout=None,
        wait_initial=policy.wait_initial,
        wait_max=policy.wait_max,
        wait_jitter=policy.wait_jitter,
    )


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    service: str,
    unreachable: type[NetworkUnreachableError] = NetworkUnreachableError,
    policy: RetryPolicy,
    auth_statuses: tuple[int, ...] = (401, 403),
    retry: bool = True,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request with bounded retries; return the successful response.

    Raises:
        RemoteError: the most specific subclass for the final failure.
    """
    async for attempt in retry_context(policy, attempts=None if retry else 1):
        with attempt:
            with map_transport_errors(service, unreachable, str(client.base_url).rstrip("/")):
                response = await client.request(method, url, **kwargs)
            check_status(response, service, auth_statuses=auth_statuses)
            return response
    raise RemoteError(f"{service}: no attempt was made")  # pragma: no cover - stamina always yields


def json_body(response: httpx.Response, service: str) -> Any:
    """Decode a JSON body or raise ``RemoteRejectedError`` naming the service."""
    try:
        return response.json()
    except ValueError:
        raise RemoteRejectedError(f"{service} sent a body that is not JSON", service=service) from None
