"""Fixtures of the chaos suite: a root on emulators whose data, faults and request log start empty.

Every test under ``tests/chaos/`` carries the ``chaos`` marker: ``pytest -m "not chaos"`` skips the suite
for a quick run, ``pytest tests/chaos`` (or ``-m chaos``) runs only it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Emulators, make_root

CHAOS_DIR = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the chaos suite of issue 8 (tests/chaos, ~85 s)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CHAOS_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture()
def clean_root(tmp_path: Path, emu: Emulators) -> Path:
    """A fresh root on emulators wiped of every earlier test's memories, faults and requests."""
    for service in ("mem0", "openmemory"):
        emu.fault(service, fault=None, latency_ms=0)
        emu.http.post(f"{emu.mem0 if service == 'mem0' else emu.openmemory}/_admin/reset").raise_for_status()
        emu.clear_requests(service)
    emu.add_mode("immediate")
    return make_root(tmp_path, emu)
