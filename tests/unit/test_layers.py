"""The arrows point one way: each package of fastagi imports only the layers below it
(docs: README "Layout"; /work/shared/ARCHITECTURE.md), the domain does no I/O, the
runtime never imports the development tools, and no two modules import each other.

Read from the source with ``ast``, imports inside functions included: a lazy import is
still an arrow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fastagi"

# Bottom to top. A package may import its own modules and any package of a lower layer.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"domain"}),  # pure types and rules
    frozenset({"config", "logs"}),  # the one settings class
    frozenset({"store", "agi", "ami", "tts", "notify", "sdnotify", "freepbx"}),  # adapters
    frozenset({"alarms", "admin", "assurance"}),  # services
    frozenset({"flows"}),  # one module per dialplan route
    frozenset({"app"}),  # wiring
    frozenset({"metrics"}),  # /metrics and /healthz over the wiring's services
    frozenset({"web"}),  # the web console, an interface over the wiring's services
    frozenset({"cli"}),  # the command line; `fastagi serve` starts the web console
    frozenset({"__main__"}),  # python -m fastagi
)
# What the domain may not import: anything that talks to the outside world.
IO_MODULES = frozenset(
    {
        "aiosmtplib",
        "asyncpg",
        "httpx",
        "panoramisk",
        "pyttsx3",
        "socket",
        "ssl",
        "subprocess",
        "uvloop",
    }
)


def _layer(package: str) -> int:
    for number, members in enumerate(LAYERS):
        if package in members:
            return number
    raise AssertionError(f"fastagi.{package} is in no layer: add it to LAYERS")


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level or None]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def _package(name: str) -> str:
    return name.split(".")[1] if name.count(".") else name


GRAPH = {module: _imports(path, module) for module, path in _modules()}
MODULES = frozenset(GRAPH)


def _ours(names: set[str]) -> set[str]:
    """The fastagi modules among ``names`` (``from x import name`` may name a module)."""
    return {name for name in names if name in MODULES}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    if module == "fastagi":
        return
    own = _package(module)
    upward = sorted(
        name
        for name in _ours(GRAPH[module])
        if name != "fastagi" and _package(name) != own and _layer(_package(name)) >= _layer(own)
    )
    assert upward == [], f"{module} (layer {_layer(own)}) imports {upward}"


def test_the_runtime_never_imports_the_development_tools() -> None:
    offenders = sorted(
        module
        for module, names in GRAPH.items()
        if any(name == "fastagi_dev" or name.startswith("fastagi_dev.") for name in names)
    )
    assert offenders == []


def test_the_domain_does_no_io() -> None:
    offenders = {
        module: sorted(name for name in names if name.split(".")[0] in IO_MODULES)
        for module, names in GRAPH.items()
        if module.startswith("fastagi.domain")
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_no_import_cycles() -> None:
    # A module importing its own package's __init__ (which re-exports it) is no cycle of
    # concerns; every other import between two modules is an edge.
    edges = {
        module: {name for name in _ours(names) - {module} if not module.startswith(name + ".")}
        for module, names in GRAPH.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in sorted(edges[module]):
            if state.get(name) == 1:
                cycles.append([*path[path.index(name) :], name])
            elif name not in state:
                visit(name, [*path, name])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []
