"""The import rules of hvdlm and benchmarks, checked on source text (ast), not by importing.

Every `import` and `from ... import` counts, at any depth (inside functions, `if TYPE_CHECKING`,
`try`). Each check takes the `Graph` of a root folder and returns its violations as lines that
name the file, the line and the import, so tests/test_architecture.py can run the same checks
on the real tree and on small synthetic trees that break one rule each.

    .venv/bin/python -c "from tests.import_rules import *; print(all_violations(ROOT))"
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from hvdlm.commands import COMMANDS as LISTED
from hvdlm.commands import DISPATCHER

PACKAGES = ("hvdlm", "benchmarks")
# The command modules (hvdlm/commands.py), with the __main__.py that runs a package's command.
COMMANDS = frozenset([DISPATCHER, *(c.module for c in LISTED.values()),
                      *(f"{c.module.removesuffix('.command')}.__main__" for c in LISTED.values()
                        if c.module.endswith(".command"))])
SHIMS = ("hvdlm.launch", "hvdlm.submit")  # the cluster commands re-export hvdlm.cluster.*
SHIM_STDLIB = frozenset({"sys", "__future__"})
LINE_LIMIT = 400
LINE_LIMIT_FOLDERS = ("hvdlm", "benchmarks", "tests", "scripts")


@dataclass(frozen=True)
class Import:
    name: str  # dotted: `import a.b` -> a.b; `from a import b` -> a.b; `from . import b` resolved
    line: int


@dataclass
class Module:
    name: str
    path: Path   # relative to the root
    imports: list[Import] = field(default_factory=list)


@dataclass
class Graph:
    root: Path
    modules: dict[str, Module]

    def resolve(self, name: str) -> str | None:
        """The module an import runs: the longest known prefix of `name` (`from pkg import
        mod` is pkg.mod when that is a module, else pkg itself), None outside the tree."""
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.modules:
                return ".".join(parts[:n])
        return None

    def where(self, module: Module, imp: Import) -> str:
        return f"{module.path}:{imp.line} imports {imp.name}"


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, name: str, is_package: bool) -> list[Import]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in (or is)
                package = name.split(".")
                package = package if is_package else package[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            out += [Import(base if a.name == "*" else f"{base}.{a.name}" if base else a.name,
                           node.lineno) for a in node.names]
    return out


def build_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            name = module_name(rel)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))
            modules[name] = Module(name, rel, _imports(tree, name, path.name == "__init__.py"))
    return Graph(root, modules)


def _is(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def models_stay_local(g: Graph) -> list[str]:
    """(a) hvdlm.models imports neither Horovod nor torch.distributed."""
    return [g.where(m, i) + " (models are pure PyTorch)" for m in g.modules.values()
            if _is(m.name, "hvdlm.models") for i in m.imports
            if _is(i.name, "horovod", "torch.distributed")]


def horovod_torch_only_in_distributed(g: Graph) -> list[str]:
    """(b) within hvdlm, only hvdlm.cluster.distributed imports horovod.torch (or bare
    `horovod`, whose framework API it is)."""
    return [g.where(m, i) + " (only hvdlm/cluster/distributed.py may)"
            for m in g.modules.values() if _is(m.name, "hvdlm")
            and m.name != "hvdlm.cluster.distributed" for i in m.imports
            if i.name == "horovod" or _is(i.name, "horovod.torch")]


def process_tools_only_in_cluster(g: Graph) -> list[str]:
    """(c) within hvdlm, only hvdlm.cluster imports horovod.runner, submitit or subprocess;
    the command shims hvdlm.launch and hvdlm.submit import hvdlm.cluster (and sys) only."""
    out = [g.where(m, i) + " (only hvdlm/cluster/ may)"
           for m in g.modules.values() if _is(m.name, "hvdlm") and not _is(m.name, "hvdlm.cluster")
           for i in m.imports if _is(i.name, "horovod.runner", "submitit", "subprocess")]
    for shim in SHIMS:
        if shim in g.modules:
            m = g.modules[shim]
            out += [g.where(m, i) + " (a command shim imports only hvdlm.cluster)"
                    for i in m.imports
                    if not _is(i.name, "hvdlm.cluster")
                    and i.name.split(".")[0] not in SHIM_STDLIB]
    return out


def no_command_imports(g: Graph) -> list[str]:
    """(d) no module but a command imports a command module (benchmarks included)."""
    return [g.where(m, i) + " (a command module; import the library module instead)"
            for m in g.modules.values() if m.name not in COMMANDS for i in m.imports
            if g.resolve(i.name) in COMMANDS]


def import_cycles(g: Graph) -> list[str]:
    """(e) strongly connected components of the import graph with more than one module (or a
    module importing itself), each written as one cycle through the files' import lines."""
    edges: dict[str, dict[str, Import]] = {n: {} for n in g.modules}
    for m in g.modules.values():
        for i in m.imports:
            target = g.resolve(i.name)
            if target is not None and target not in edges[m.name]:
                edges[m.name][target] = i
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan; the trees are small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    out = []
    for component in components:
        path = _cycle_in(component, edges)
        hops = [g.where(g.modules[a], edges[a][b]) for a, b in zip(path, path[1:])]
        out.append("import cycle " + " -> ".join(path) + ": " + "; ".join(hops))
    return out


def _cycle_in(component: list[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """One cycle from the component's first module back to itself (breadth first)."""
    start, inside = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return path[::-1] + [start]
                if w in inside and w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # unreachable for an SCC


def long_files(root: Path, folders: tuple[str, ...] = LINE_LIMIT_FOLDERS,
               limit: int = LINE_LIMIT) -> list[str]:
    """(f) no .py file over `limit` lines."""
    out = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > limit:
                out.append(f"{path.relative_to(root)} has {n} lines (limit {limit})")
    return out


CHECKS = (models_stay_local, horovod_torch_only_in_distributed, process_tools_only_in_cluster,
          no_command_imports, import_cycles)


def all_violations(root: Path) -> list[str]:
    g = build_graph(root)
    return [v for check in CHECKS for v in check(g)] + long_files(root)
