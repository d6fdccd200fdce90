"""The package layout holds its rule: imports flow one way, cli → daemon → engine → config → store/remote → ground.

Every ``import`` in every module is read with ``ast`` (function-level ones too, which is where cycles hide).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import memsyncd

PACKAGE = Path(memsyncd.__file__).parent

# Floors, bottom to top. A module may import its own floor or lower floors, never a higher one.
GROUND = {"memsyncd", "memsyncd.models", "memsyncd.errors", "memsyncd.ids", "memsyncd.timestamps",
          "memsyncd.logs", "memsyncd.wire", "memsyncd.wire_http", "memsyncd.terminal", "memsyncd.loopback"}
FLOORS: list[tuple[str, float]] = [
    ("memsyncd.store", 1), ("memsyncd.remote", 1), ("memsyncd.config", 2), ("memsyncd.engine", 3),
    ("memsyncd.daemon", 4), ("memsyncd.emulators", 4.5), ("memsyncd.cli", 5), ("memsyncd.ctl", 5),
    ("memsyncd.main", 5), ("memsyncd.demo", 5), ("memsyncd.__main__", 5),
]
# The engine's concerns each import only the shared context (and the floors below), never each other.
ENGINE_CONCERNS = {"memsyncd.engine.push", "memsyncd.engine.pull", "memsyncd.engine.reconcile",
                   "memsyncd.engine.resolve", "memsyncd.engine.scan"}
# decide.py is the sans-IO core: no I/O library may reach it.
IO_MODULES = {"httpx", "sqlite3", "asyncio", "socket", "time", "os", "structlog", "h11", "watchdog", "apscheduler"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The modules ``path`` imports (memsyncd's own resolved to module names; others as top-level names)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:  # `from memsyncd.store import queue` imports the submodule
                if f"{node.module}.{alias.name}" in modules:
                    yield f"{node.module}.{alias.name}"


def floor_of(name: str) -> float:
    if name in GROUND:
        return 0
    for prefix, floor in FLOORS:
        if name == prefix or name.startswith(prefix + "."):
            return floor
    raise AssertionError(f"{name} has no floor: add it to GROUND or FLOORS in tests/unit/test_layout.py")


def own_imports() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: {i for i in imports_of(path, modules) if i in modules} for name, path in modules.items()}


def test_every_module_has_a_floor() -> None:
    for name in all_modules():
        floor_of(name)


def test_imports_never_go_up_a_floor() -> None:
    upward = [f"{name} (floor {floor_of(name)}) imports {target} (floor {floor_of(target)})"
              for name, targets in own_imports().items() for target in targets
              if floor_of(target) > floor_of(name)]
    assert not upward, "\n".join(upward)


def test_store_and_remote_do_not_import_each_other() -> None:
    graph = own_imports()
    crossing = [f"{name} imports {target}" for name, targets in graph.items() for target in targets
                if {package_of(name), package_of(target)} == {"store", "remote"}]
    assert not crossing, "\n".join(crossing)


def test_engine_concerns_import_no_other_concern() -> None:
    graph = own_imports()
    crossing = [f"{name} imports {target}" for name in ENGINE_CONCERNS & graph.keys()
                for target in graph[name] & ENGINE_CONCERNS]
    assert not crossing, "\n".join(crossing)


def test_decide_is_pure() -> None:
    path = PACKAGE / "engine" / "decide.py"
    found = {name.split(".")[0] for name in imports_of(path, all_modules())} & IO_MODULES
    assert not found, f"engine/decide.py imports I/O modules: {sorted(found)}"


def test_no_import_cycles() -> None:
    graph = own_imports()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []
    cycles: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph.get(name, ())):
            if target == name or is_package_of(target, name):
                continue  # a package's __init__ is not a real edge back from its own submodules
            if state.get(target) == 1:
                cycles.append(" → ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(cycles)


def package_of(name: str) -> str:
    """``store`` for ``memsyncd.store.queue``; ``""`` for a top-level module."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else ""


def is_package_of(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an engine module importing the daemon is reported."""
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from memsyncd.daemon.process import Daemon\n")
    targets = set(imports_of(source, all_modules()))
    assert "memsyncd.daemon.process" in targets
    assert floor_of("memsyncd.daemon.process") > floor_of("memsyncd.engine.push")
