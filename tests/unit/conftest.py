"""Fixtures of the in-process engine tests: a fresh emulator admin client and one event loop per test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from harness import fresh_admin, running_aio

from memsyncd.emulators.admin import EmulatorAdmin
from memsyncd.emulators.runner import RunningEmulators


@pytest.fixture()
def admin(servers: RunningEmulators) -> Iterator[EmulatorAdmin]:
    """An admin client for the module's in-process emulators, whose data was just wiped."""
    client = fresh_admin(servers)
    yield client
    client.close()


@pytest.fixture()
def loop() -> Iterator[asyncio.Runner]:
    """One event loop per test: a Syncer's httpx clients belong to it, so every step of a test shares it."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture()
def one_loop_per_test(loop: asyncio.Runner) -> Iterator[None]:
    """:func:`harness.aio` runs on this test's loop (for helpers that are not handed the loop)."""
    with running_aio(loop):
        yield
