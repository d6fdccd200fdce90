"""Shared fixtures: retries without sleeping for in-process tests, telemetry off for mem0ai."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import stamina

os.environ.setdefault("MEM0_TELEMETRY", "false")


@pytest.fixture(autouse=True)
def _no_retry_sleeps() -> Iterator[None]:
    """stamina's testing mode: retries keep their configured attempt counts but never sleep."""
    stamina.set_testing(True, attempts=100, cap=True)
    yield
    stamina.set_testing(False)
