"""The two server adapters built from a root's settings, for init, doctor and forget-cloud-copies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from memsyncd.config import Paths, Settings, load_api_key, load_trusted_settings
from memsyncd.errors import SyncUnavailableError
from memsyncd.logs import register_secret
from memsyncd.remote.cloud import CloudClient, Scope
from memsyncd.remote.http_edge import RetryPolicy
from memsyncd.remote.local import LocalClient

CHECK_TIMEOUT_SECONDS = 10.0  # a check answers within this, or says the server is unreachable


def scope_of(settings: Settings) -> Scope:
    """The cloud scope the daemon syncs, from the settings."""
    cloud = settings.cloud
    return Scope(user_id=settings.cloud_user_id, agent_id=cloud.agent_id, app_id=cloud.app_id,
                 org_id=cloud.org_id, project_id=cloud.project_id)


def local_client(settings: Settings, *, for_checks: bool = True) -> LocalClient:
    """OpenMemory client: one attempt and a short timeout for checks, the sync settings otherwise."""
    if for_checks:
        return LocalClient(settings.local.url, settings.local.user_id, settings.local.app,
                           policy=RetryPolicy(attempts=1), timeout=CHECK_TIMEOUT_SECONDS,
                           max_body=settings.sync.max_response_bytes)
    return LocalClient(settings.local.url, settings.local.user_id, settings.local.app,
                       policy=RetryPolicy(attempts=settings.sync.attempts_per_run),
                       timeout=settings.sync.request_timeout_seconds, max_body=settings.sync.max_response_bytes)


def cloud_client(settings: Settings, key: str, *, for_checks: bool = True) -> CloudClient:
    """mem0 client for the configured scope (same policy rule as :func:`local_client`)."""
    register_secret(key)
    if for_checks:
        return CloudClient(settings.cloud.url, key, scope_of(settings), policy=RetryPolicy(attempts=1),
                           timeout=CHECK_TIMEOUT_SECONDS, max_body=settings.sync.max_response_bytes)
    return CloudClient(settings.cloud.url, key, scope_of(settings),
                       policy=RetryPolicy(attempts=settings.sync.attempts_per_run,
                                          max_retry_after=settings.sync.max_retry_after_seconds),
                       timeout=settings.sync.request_timeout_seconds, max_body=settings.sync.max_response_bytes)


def cloud_settings(paths: Paths) -> tuple[Settings, str]:
    """The root's settings and the mem0 key, for commands that need the cloud.

    Raises:
        ConfigError: the config is invalid (exit 2).
        SyncUnavailableError: cloud sync is off or no key is set (exit 3).
    """
    settings = load_trusted_settings(paths)
    key = load_api_key()
    if not settings.cloud.enabled or key is None:
        raise SyncUnavailableError("Cloud sync is not configured.")
    return settings, key.get_secret_value()


@contextlib.asynccontextmanager
async def open_clients(settings: Settings, key: str, *,
                       for_checks: bool = True) -> AsyncIterator[tuple[LocalClient, CloudClient]]:
    """Both clients, closed on exit."""
    local = local_client(settings, for_checks=for_checks)
    cloud = cloud_client(settings, key, for_checks=for_checks)
    try:
        yield local, cloud
    finally:
        await local.aclose()
        await cloud.aclose()
