"""The HTTP edge shared by both clients: client construction, limits, exception mapping, bounded retries.

``new_client`` builds the ``httpx.AsyncClient`` both adapters use: redirects are never
followed, and proxies from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
``NO_PROXY``) are honoured only for a non-loopback (hence https, see ``config.check_url``) URL,
where a proxy only ever sees a CONNECT tunnel: loopback traffic (the OpenMemory listing, a
plain-http test cloud and its key) never goes to a proxy.

``map_transport_errors`` and ``check_status`` turn httpx failures and HTTP error
statuses into the project's errors (``raise ... from``); a 3xx is an error
(``RedirectedError``), never a success. ``request`` sends one request with stamina
retries on 429 (honouring ``Retry-After``, bounded) and on 5xx/timeouts (exponential
backoff with jitter), at most ``attempts`` tries. Each try has a *total* deadline
(``request_timeout_seconds``: connect, send and the whole body, so a server trickling
bytes cannot stretch it), and the body is streamed and abandoned at ``max_body`` bytes
(``ResponseTooLargeError``) instead of being buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import stamina

from memsyncd.errors import (
    AuthError,
    ConfigError,
    NetworkUnreachableError,
    NotFoundError,
    RateLimitedError,
    RedirectedError,
    RemoteError,
    RemoteRejectedError,
    ResponseTooLargeError,
    ServerError,
)
from memsyncd.logs import redact_text
from memsyncd.loopback import is_loopback_host

DEFAULT_MAX_BODY = 16 * 2**20  # bytes of one decoded response body
DEFAULT_TIMEOUT = 30.0  # seconds, the total deadline of one try


def is_loopback_url(url: str | httpx.URL) -> bool:
    """True when ``url``'s host is localhost, 127.0.0.0/8 or ::1."""
    return is_loopback_host(httpx.URL(str(url)).host)


def new_client(base_url: str, *, timeout: float, headers: Mapping[str, str],
               transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` of one adapter: no redirects followed, no environment proxy for loopback.

    ``trust_env`` is off for a loopback ``base_url`` (no ``HTTP(S)_PROXY``/``ALL_PROXY``, no
    ``.netrc``, no ``SSL_CERT_*``); for any other URL (always https: ``config.check_url``
    refuses plain http off loopback) a proxy from the environment may carry the request, but
    only as a CONNECT tunnel: the key is inside TLS, never sent to the proxy in clear.
    """
    try:
        return httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=dict(headers), transport=transport,
                                 follow_redirects=False, trust_env=not is_loopback_url(base_url))
    except (ImportError, ValueError) as exc:  # a proxy variable httpx cannot use (socks5://, ftp://, garbage)
        raise ConfigError(
            f"the proxy set in the environment (HTTPS_PROXY / ALL_PROXY) cannot be used for {base_url}: {exc} "
            "Unset it, point it at an http:// proxy, or add the host to NO_PROXY.") from exc


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
    """Raise the project error matching a status that is not 2xx; return for 2xx.

    A 3xx is never followed (the key would go wherever ``Location`` points) and never a success.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        location = redact_text(response.headers.get("location", "(no Location)"))[:200]
        raise RedirectedError(
            f"{service} at {response.request.url.copy_with(query=None)} answered {status} (a redirect to "
            f"{location}); memsyncd never follows redirects, so nothing was sent there. Check the "
            f"{'cloud.url' if service == 'mem0' else 'local.url'} in config.json: set it to the address "
            "the server really answers on.", status=status, service=service)
    what = f"{service} returned {status}: {error_detail(response)}"
    if status < 200:
        raise RemoteRejectedError(what, status=status, service=service)
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


async def _read_capped(response: httpx.Response, service: str, max_body: int) -> bytes:
    """The decoded body, read chunk by chunk; abandoned as soon as it passes ``max_body`` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body and "content-encoding" not in response.headers:
        raise _too_large(service, max_body, response)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_body:
            raise _too_large(service, max_body, response)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(service: str, max_body: int, response: httpx.Response) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"{service} sent an answer larger than {max_body / 2**20:g} MB to {response.request.method} "
        f"{response.request.url.path}; it was not read. A sane {service} answers far smaller: check that the "
        "configured URL is the real server (not a proxy or a file server).", status=response.status_code,
        service=service)


async def send_once(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    service: str,
    unreachable: type[NetworkUnreachableError] = NetworkUnreachableError,
    deadline: float | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    **kwargs: Any,
) -> httpx.Response:
    """One try: send, then stream the body under ``max_body``, all within ``deadline`` seconds.

    ``deadline`` defaults to the client's own timeout. The answer comes back fully read (its
    ``content`` holds the decoded body), whatever its status.

    Raises:
        ServerError: the deadline passed (a slow or trickling server).
        ResponseTooLargeError: the body passed ``max_body``.
        NetworkUnreachableError: (or ``unreachable``) no connection could be made.
    """
    total = deadline if deadline is not None else (client.timeout.read or DEFAULT_TIMEOUT)
    try:
        async with asyncio.timeout(total):
            with map_transport_errors(service, unreachable, str(client.base_url).rstrip("/")):
                request_ = client.build_request(method, url, **kwargs)
                response = await client.send(request_, stream=True)
                try:
                    body = await _read_capped(response, service, max_body)
                finally:
                    await response.aclose()
    except TimeoutError:
        raise ServerError(f"{service} did not send its whole answer within {total:g} s "
                          "(sync.request_timeout_seconds, a total deadline per request)", service=service) from None
    headers = [(k, v) for k, v in response.headers.multi_items()
               if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=body, request=request_,
                          extensions={k: v for k, v in response.extensions.items()
                                      if k in ("http_version", "reason_phrase")})


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
    deadline: float | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request with bounded retries; return the successful (2xx) response, body read.

    Each try is bounded by ``deadline`` seconds in total and ``max_body`` bytes (:func:`send_once`).

    Raises:
        RemoteError: the most specific subclass for the final failure.
    """
    async for attempt in retry_context(policy, attempts=None if retry else 1):
        with attempt:
            response = await send_once(client, method, url, service=service, unreachable=unreachable,
                                       deadline=deadline, max_body=max_body, **kwargs)
            check_status(response, service, auth_statuses=auth_statuses)
            return response
    raise RemoteError(f"{service}: no attempt was made")  # pragma: no cover - stamina always yields


def json_body(response: httpx.Response, service: str) -> Any:
    """Decode a JSON body or raise ``RemoteRejectedError`` naming the service."""
    try:
        return response.json()
    except ValueError:
        raise RemoteRejectedError(f"{service} sent a body that is not JSON", service=service) from None
