"""Loopback emulators of the OpenMemory REST API and the mem0 platform API.

Used by ``memsyncd emulate``, the demo and the tests. Modules, one role each:

* :mod:`.runner` — start both (``RunningEmulators``, ``EmulatorServers``, the CLI);
* :mod:`.mem0` / :mod:`.mem0_store` / :mod:`.mem0_filters` — mem0 routes, data, filter language;
* :mod:`.openmemory` / :mod:`.openmemory_store` / :mod:`.fastapi_compat` — OpenMemory
  routes, data, FastAPI framework behaviour;
* :mod:`.service` / :mod:`.routing` / :mod:`.faults` / :mod:`.clock` — what both share:
  request pipeline with admin routes and request log, route matching, fault
  injection, timestamps;
* :mod:`.http` — the daemon's HTTP server plus what only the emulators need: a
  loopback TCP listener, connection resets, streamed bodies.

Names are imported lazily so ``python -m memsyncd.emulators.runner`` does not
import the runner twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memsyncd.emulators.mem0 import Mem0Emulator
    from memsyncd.emulators.mem0_store import Mem0Store
    from memsyncd.emulators.openmemory import OpenMemoryEmulator
    from memsyncd.emulators.openmemory_store import OpenMemoryStore
    from memsyncd.emulators.runner import EmulatorConfig, EmulatorServers, RunningEmulators, emulate_main

__all__ = [
    "EmulatorConfig",
    "EmulatorServers",
    "Mem0Emulator",
    "Mem0Store",
    "OpenMemoryEmulator",
    "OpenMemoryStore",
    "RunningEmulators",
    "emulate_main",
]

_HOMES = {
    "Mem0Emulator": "memsyncd.emulators.mem0",
    "Mem0Store": "memsyncd.emulators.mem0_store",
    "OpenMemoryEmulator": "memsyncd.emulators.openmemory",
    "OpenMemoryStore": "memsyncd.emulators.openmemory_store",
    "EmulatorConfig": "memsyncd.emulators.runner",
    "EmulatorServers": "memsyncd.emulators.runner",
    "RunningEmulators": "memsyncd.emulators.runner",
    "emulate_main": "memsyncd.emulators.runner",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
