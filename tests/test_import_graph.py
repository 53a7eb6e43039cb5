"""The import graph of the project's own modules: no cycle, and no private name imported across modules.

Every module under pllbench/, methods/ (installed as pllbench.methods) and datasets/ (pllbench.datasets) is parsed
with `ast`; every import counts, at module level, inside functions (a deferred import still couples the two modules,
it only hides the cycle until the function runs) and under `if TYPE_CHECKING:`. Relative imports are resolved against
the importing module's package. `from P import name` is an edge to the submodule P.name when there is one, else to P.

Not counted: the implicit import of a package's `__init__` when one of its submodules is imported (a package that
imports its own submodules, as methods/__init__.py does, is the normal layout, not a cycle).

A package `__init__` that imports its submodules by name at run time (`importlib.import_module(f"{__name__}.…")`
over `pkgutil.iter_modules`) gets an edge to each of them, so the plugin registries are in the graph too.

The layer rule (docs/architecture.md): core ← train ← analysis ← cli. A module imports only modules of its own layer
or of a layer below it, never one above; within a layer the cycle check applies. The built-in methods and datasets are
plugins like a third party's: they import only the public contract (METHOD_CONTRACT, DATASET_CONTRACT) and each other.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# pyproject.toml's [tool.setuptools.package-dir] (a test below checks they agree)
PACKAGE_DIRS = {"pllbench": REPO / "pllbench", "pllbench.methods": REPO / "methods",
                "pllbench.datasets": REPO / "datasets"}

# (importer, imported): a deliberate edge left out of the cycle check, each with its reason.
ALLOWED_EDGES = {
    ("pllbench.method", "pllbench.methods"):
        "the method registry imports the built-in method plugins on first lookup (load_plugins, like the entry "
        "points it loads next); each plugin imports pllbench.method to subclass Method and register itself",
}


# Each layer's packages, lowest first; a module of pllbench/ outside every listed package is core.
LAYERS = {
    "core": ("pllbench.data", "pllbench.views", "pllbench.cad_edits", "pllbench.methods", "pllbench.datasets"),
    "train": ("pllbench.train", "pllbench.grid"),
    "analysis": ("pllbench.leaderboard", "pllbench.entangle", "pllbench.tune"),
    "cli": ("pllbench.cli", "pllbench.__main__"),
}
# What a method or dataset plugin may import from pllbench (a third-party plugin has the same); the CAD family also
# uses CAD's edit pipeline.
METHOD_CONTRACT = {"pllbench.method", "pllbench.losses", "pllbench.nets", "pllbench.tune_space", "pllbench.queue",
                   "pllbench.errors", "pllbench.util", "pllbench.cad_edits"}
DATASET_CONTRACT = {"pllbench.dataset", "pllbench.errors", "pllbench.util"}


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module = field(repr=False)

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def project_modules() -> dict[str, Module]:
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = list(rel.parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package, *parts])
            modules[name] = Module(name, path, is_package, ast.parse(path.read_text(), filename=str(path)))
    return modules


def resolve_from(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def owning_module(dotted: str, modules: dict[str, Module]) -> str | None:
    """The longest project module that `dotted` names or lies in."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def dotted_name(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def dynamic_submodule_imports(module: Module, modules: dict[str, Module]) -> set[str]:
    """`importlib.import_module(f"{__name__}.{...}")` in a package: every submodule of it."""
    if not module.is_package:
        return set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module" \
                and node.args and isinstance(node.args[0], ast.JoinedStr):
            head = node.args[0].values[0]
            if isinstance(head, ast.FormattedValue) and isinstance(head.value, ast.Name) \
                    and head.value.id == "__name__":
                return {m for m in modules if m.rpartition(".")[0] == module.name}
    return set()


def imports_of(module: Module, modules: dict[str, Module]) -> tuple[dict[str, int], list[str]]:
    """({imported project module: first line}, private-name problems) of one module."""
    edges: dict[str, int] = {}
    problems: list[str] = []
    module_aliases: dict[str, str] = {}  # a local name bound to a project module → that module

    def add(target: str | None, line: int) -> None:
        if target is not None and target != module.name:
            edges.setdefault(target, line)

    where = shown(module.path)
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = owning_module(alias.name, modules)
                add(target, node.lineno)
                if target is not None and alias.asname:
                    module_aliases[alias.asname] = target
                for part in alias.name.split(".")[1:]:
                    if target is not None and is_private(part):
                        problems.append(f"{where}:{node.lineno}: imports the private module {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            base = resolve_from(module, node)
            base_module = owning_module(base, modules)
            if base_module is None:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    add(sub, node.lineno)
                    module_aliases[alias.asname or alias.name] = sub
                else:
                    add(base_module, node.lineno)
                if is_private(alias.name) and base_module != module.name:
                    problems.append(f"{where}:{node.lineno}: imports the private name {alias.name} from {base}")
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = dotted_name(node.value)
            target = module_aliases.get(owner) or (owner if owner in modules else None)
            if target is not None and target != module.name:
                problems.append(f"{where}:{node.lineno}: reaches the private name {node.attr} of {target}")
    for target in dynamic_submodule_imports(module, modules):
        add(target, 0)
    return edges, problems


def import_graph() -> tuple[dict[str, dict[str, int]], list[str], dict[str, Module]]:
    modules = project_modules()
    graph, problems = {}, []
    for name, module in modules.items():
        graph[name], found = imports_of(module, modules)
        problems += found
    return graph, problems, modules


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (a list of modules, first = last) of the directed graph, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Module]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        line = graph[a][b]
        steps.append(f"{a} ({shown(modules[a].path)}:{line}) → {b}")
    return "import cycle: " + " ; ".join(steps)


def checked_graph(graph: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    return {a: {b for b in targets if (a, b) not in ALLOWED_EDGES} for a, targets in graph.items()}


def test_the_graph_sees_every_package_and_kind_of_import():
    graph, _, modules = import_graph()
    assert {"pllbench", "pllbench.methods", "pllbench.datasets", "pllbench.cli"} <= set(modules)
    assert "pllbench.method" in graph["pllbench.methods.dirk"]  # an absolute import into the core
    assert "pllbench.methods.dirk" in graph["pllbench.methods"]  # the plugin package's run-time imports
    assert any(target.startswith("pllbench.cli.") for target in graph["pllbench.cli"])  # relative, into a package
    for a, b in ALLOWED_EDGES:
        assert b in graph[a], f"allowed edge {a} → {b} no longer exists: remove it from ALLOWED_EDGES"


def test_no_import_cycle():
    graph, _, modules = import_graph()
    cycle = find_cycle(checked_graph(graph))
    assert cycle is None, describe_cycle(cycle, graph, modules)


def test_no_private_name_is_imported_across_modules():
    _, problems, _ = import_graph()
    assert not problems, "\n".join(problems)


def test_the_cycle_finder_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_function_level_and_private_imports_are_caught(tmp_path):
    source = ("from .cli import _device\nimport pllbench.util as util\nimport pllbench\n\n\ndef f():\n"
              "    from .errors import _x\n    return util._hidden, pllbench.util._y, util.public\n")
    module = Module("pllbench.fake", tmp_path / "fake.py", False, ast.parse(source))
    modules = {m: Module(m, tmp_path / "x.py", m == "pllbench", ast.parse(""))
               for m in ("pllbench", "pllbench.cli", "pllbench.util", "pllbench.errors")}
    edges, problems = imports_of(module, modules)
    assert edges == {"pllbench.cli": 1, "pllbench.util": 2, "pllbench": 3, "pllbench.errors": 7}
    assert [p.split(": ", 1)[1] for p in problems] == [
        "imports the private name _device from pllbench.cli", "imports the private name _x from pllbench.errors",
        "reaches the private name _hidden of pllbench.util", "reaches the private name _y of pllbench.util"]


def test_pyproject_installs_every_package_of_the_graph():
    """A package left out of [tool.setuptools] packages works in an editable install and is missing from a wheel."""
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {name: REPO / folder for name, folder in setup["package-dir"].items()} == PACKAGE_DIRS
    code = [m.name for m in project_modules().values() if m.is_package]
    data = list(setup["package-data"])  # folders of data files only (pllbench/data and its prompts)
    assert sorted(setup["packages"]) == sorted(code + data)
    assert not any(any((REPO / name.replace(".", "/")).glob("*.py")) for name in data)


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_of(module: str) -> int:
    """The index of the module's layer in LAYERS (0: core)."""
    for index, packages in enumerate(LAYERS.values()):
        if any(in_package(module, package) for package in packages):
            return index
    return 0


def upward_edges(graph: dict[str, dict[str, int]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_every_subpackage_has_a_layer():
    """A new subpackage of pllbench/ is placed in LAYERS (else it would count as core without anyone deciding so)."""
    _, _, modules = import_graph()
    listed = [package for packages in LAYERS.values() for package in packages]
    unplaced = [m.name for m in modules.values() if m.is_package and m.name != "pllbench"
                and not any(in_package(m.name, package) for package in listed)]
    assert not unplaced, f"subpackages missing from LAYERS: {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    graph, _, modules = import_graph()
    names = list(LAYERS)
    problems = [f"{shown(modules[a].path)}:{graph[a][b]}: {a} ({names[layer_of(a)]}) imports {b} "
                f"({names[layer_of(b)]})" for a, b in upward_edges(graph)]
    assert not problems, "\n".join(problems)


def test_the_layer_check_reports_an_upward_edge():
    graph = {"pllbench.train.loop": {"pllbench.leaderboard.results": 3, "pllbench.errors": 1},
             "pllbench.cli.run": {"pllbench.train.loop": 2}, "pllbench.method": {"pllbench.methods": 5}}
    assert upward_edges(graph) == [("pllbench.train.loop", "pllbench.leaderboard.results")]


def plugin_problems(graph: dict[str, dict[str, int]], plugins: str, contract: set[str]) -> list[str]:
    return [f"{a} imports {b}" for a, targets in sorted(graph.items()) if in_package(a, plugins) and a != plugins
            for b in sorted(targets) if not in_package(b, plugins)
            and not any(in_package(b, allowed) for allowed in contract)]


def test_methods_and_datasets_import_only_the_public_contract():
    graph, _, _ = import_graph()
    problems = plugin_problems(graph, "pllbench.methods", METHOD_CONTRACT)
    problems += plugin_problems(graph, "pllbench.datasets", DATASET_CONTRACT)
    assert not problems, "\n".join(problems)
    fake = {"pllbench.methods.x": {"pllbench.method": 1, "pllbench.methods.y": 2, "pllbench.train.loop": 3}}
    want = ["pllbench.methods.x imports pllbench.train.loop"]
    assert plugin_problems(fake, "pllbench.methods", METHOD_CONTRACT) == want
