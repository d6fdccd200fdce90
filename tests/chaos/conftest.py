"""Fixtures of the chaos suite: a root on emulators whose data, faults and request log start empty."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Emulators, make_root


@pytest.fixture()
def clean_root(tmp_path: Path, emu: Emulators) -> Path:
    """A fresh root on emulators wiped of every earlier test's memories, faults and requests."""
    for service in ("mem0", "openmemory"):
        emu.fault(service, fault=None, latency_ms=0)
        emu.http.post(f"{emu.mem0 if service == 'mem0' else emu.openmemory}/_admin/reset").raise_for_status()
        emu.clear_requests(service)
    emu.add_mode("immediate")
    return make_root(tmp_path, emu)
