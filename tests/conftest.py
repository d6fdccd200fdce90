"""Shared fixtures: a private user environment, retries without sleeping, telemetry off for mem0ai,
the emulators and a configured root."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina

os.environ.setdefault("MEM0_TELEMETRY", "false")
sys.path.insert(0, str(Path(__file__).parent))

from harness import INPROC_KEY, INPROC_USER, Emulators, make_root, running_emulators  # noqa: E402

from memsyncd.emulators.isolation import isolate_user_environment  # noqa: E402
from memsyncd.emulators.runner import RunningEmulators  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Before any test: a private HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR for this process and its children.

    No test reads your mem0 key file, writes ~/.config, or reaches the daemon you run (its socket
    and registry are found through these variables); see :mod:`memsyncd.emulators.isolation`.
    """
    isolate_user_environment()


@pytest.fixture(autouse=True, scope="session")
def _trusted_tmp_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The roots tests make under pytest's tmp directory point at the emulators: trust them all.

    ``MEMSYNC_TRUSTED_ROOTS`` reaches subprocesses through ``harness.base_env``. Tests of the trust
    model itself (tests/test_trust.py) clear it, so they prove the refusal.
    """
    saved = os.environ.get("MEMSYNC_TRUSTED_ROOTS")
    os.environ["MEMSYNC_TRUSTED_ROOTS"] = str(tmp_path_factory.getbasetemp())
    yield
    if saved is None:
        os.environ.pop("MEMSYNC_TRUSTED_ROOTS", None)
    else:
        os.environ["MEMSYNC_TRUSTED_ROOTS"] = saved


@pytest.fixture(autouse=True)
def _no_retry_sleeps() -> Iterator[None]:
    """stamina's testing mode: retries keep their configured attempt counts but never sleep."""
    stamina.set_testing(True, attempts=100, cap=True)
    yield
    stamina.set_testing(False)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulators]:
    """``memsyncd emulate`` as a subprocess, shared by the tests of one module."""
    with running_emulators() as emulators:
        yield emulators


@pytest.fixture()
def root(tmp_path: Path, emu: Emulators) -> Path:
    """A fresh root configured for the emulators, whose faults are cleared."""
    for service in ("mem0", "openmemory"):
        emu.fault(service, fault=None, latency_ms=0)
    emu.add_mode("immediate")
    return make_root(tmp_path, emu)


@pytest.fixture(scope="module")
def servers() -> Iterator[RunningEmulators]:
    """Both emulators in-process (a thread), for tests that drive the Syncer directly."""
    with RunningEmulators(api_key=INPROC_KEY, user=INPROC_USER) as emulators:
        yield emulators
