"""The import graph: data flows one way (sources -> store -> translate -> xds ->
status/admin), and the code says so. The allowed imports are the block under
"## Layers" in docs/architecture.md, so the document and the code cannot drift apart."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "controlplane"
DOC = ROOT / "docs" / "architecture.md"


def declared() -> dict[str, set[str]]:
    """unit -> the units it may import, from the doc's layer block."""
    text = DOC.read_text()
    block = re.search(r"## Layers\n.*?```text\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ## Layers block"
    allowed: dict[str, set[str]] = {}
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        unit, _, deps = line.partition(":")
        allowed[unit.strip()] = {d for d in deps.split() if d != "-"}
    return allowed


def unit_of(module: str) -> str | None:
    """`controlplane.xds.stream` -> `xds`; the package root (its version) -> None."""
    parts = module.split(".")
    if parts[0] != "controlplane" or len(parts) == 1:
        return None
    return parts[1]


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if "v1" in parts and parts[-1].endswith(("_pb2", "_pb2_grpc")):
            continue  # generated admin API
        yield ".".join(parts), path


def imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module of ours `module` imports, anywhere in the file (a function-level
    import is still a dependency), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("controlplane"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("controlplane"):
                continue
            for alias in node.names:
                # `from controlplane import log` names a module; `from x import name`
                # names something in x.
                candidate = f"{base}.{alias.name}"
                yield (candidate if _is_module(candidate) else base), node.lineno


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


Graph = dict[str, list[tuple[str, int]]]


def graph() -> Graph:
    return {module: list(imports(module, path)) for module, path in modules()}


def test_every_unit_is_declared() -> None:
    allowed = declared()
    units = {unit_of(m) for m, _ in modules()} - {None}
    assert units == set(allowed), ("units in the code but not in docs/architecture.md's "
                                   f"layers: {units - set(allowed)}; declared but gone: "
                                   f"{set(allowed) - units}")


def test_declared_layers_have_no_cycle() -> None:
    allowed = declared()
    for unit, deps in allowed.items():
        assert deps <= set(allowed), f"{unit} names unknown units {deps - set(allowed)}"
    assert _cycle({u: sorted(d) for u, d in allowed.items()}) is None


def crossings(found: Graph, allowed: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in found.items():
        unit = unit_of(module)
        for target, line in targets:
            other = unit_of(target)
            # The package root (its version) is below everything and imports nothing.
            if unit is None or (other is not None and other != unit
                                and other not in allowed[unit]):
                out.append(f"{module}:{line} imports {target} ({unit} -> {other})")
    return out


def reaching_into_translate(found: Graph) -> list[str]:
    return [f"{module}:{line} imports {target}"
            for module, targets in found.items() if unit_of(module) != "translate"
            for target, line in targets if target.startswith("controlplane.translate.")]


def test_imports_go_only_where_the_layers_allow() -> None:
    bad = crossings(graph(), declared())
    assert not bad, "imports the layers do not allow:\n" + "\n".join(bad)


def test_no_module_imports_itself_back() -> None:
    """No cycle between modules either, function-level imports included: a cycle hidden
    in a function is still two modules that cannot be understood apart."""
    edges = {m: sorted({t for t, _ in found if t != m}) for m, found in graph().items()}
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_translate_is_used_through_its_package() -> None:
    """Code outside translate imports the translator from `controlplane.translate`,
    which says what it offers; only translate's own modules reach into each other."""
    reaching = reaching_into_translate(graph())
    assert not reaching, "\n".join(reaching)


def _cycle(edges: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_checks_catch_what_they_are_for() -> None:
    """Each check fails on the crossings it was written against (the layout before the
    xds split): translate using the wire format, the ADS server importing the sync
    registry and the translator, the push loop reaching into translate's modules."""
    before = {
        "controlplane.translate.routes": [("controlplane.xds.wire", 47)],
        "controlplane.xds.server": [("controlplane.status.sync", 40),
                                    ("controlplane.translate.proxy", 41)],
        "controlplane.pipeline": [("controlplane.translate.guard", 32)],
    }
    bad = crossings(before, declared())
    assert len(bad) == 3 and all(u in " ".join(bad) for u in
                                 ("translate -> xds", "xds -> status", "xds -> translate"))
    assert "controlplane.pipeline:32 imports controlplane.translate.guard" in (
        reaching_into_translate(before))
    assert _cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert _cycle({"a": ["b"], "b": []}) is None
    assert unit_of("controlplane.xds.stream") == "xds"
    assert unit_of("controlplane") is None
