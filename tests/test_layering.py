"""The package's layers: imports only go down (cli -> checkpoints -> inference / io -> models -> nn), no import
cycles between modules, and the top-level `__init__.py` is explicit re-exports only.

Every import is read with `ast`, including the ones inside functions (the CLI imports lazily).
"""

import ast
import os
import types

import pytest

import eqx_vae

PACKAGE = "eqx_vae"
ROOT = os.path.dirname(os.path.abspath(eqx_vae.__file__))

# A module may import from its own group, or from groups of a strictly lower level.
LEVELS = {
    "_custom_types": 0,
    "nn": 1,
    "models": 2,
    "inference": 3,
    "io": 3,
    "checkpoints": 4,
    "cli": 5,
    "__init__": 6,
    "__main__": 6,
}


def read_package(root: str = ROOT, package: str = PACKAGE) -> dict[str, str]:
    """Dotted module name -> source, for every .py file of the package (`pkg.sub` for `pkg/sub/__init__.py`)."""
    sources = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(directory, name), root)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            with open(os.path.join(directory, name), encoding="utf-8") as file:
                sources[".".join([package, *parts])] = file.read()
    return sources


def _is_package(module: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(module + ".") for other in sources)


def _resolve(target: str, sources: dict[str, str]) -> str | None:
    """The package module that `target` (a dotted name, maybe an attribute of a module) lives in, or None."""
    while target:
        if target in sources:
            return target
        target = target.rpartition(".")[0]
    return None


def imports_of(module: str, sources: dict[str, str]) -> set[str]:
    """The package modules that `module` imports, anywhere in its body (functions included)."""
    tree = ast.parse(sources[module])
    here = module if _is_package(module, sources) else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            resolved = _resolve(name, sources)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


def group_of(module: str) -> str:
    """`eqx_vae.nn._conv` -> "nn"; `eqx_vae` -> "__init__"; `eqx_vae._custom_types` -> "_custom_types"."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def layering_problems(sources: dict[str, str]) -> list[str]:
    """Upward imports, imports between groups of the same level, modules outside every layer, and import cycles."""
    problems = []
    graph = {module: imports_of(module, sources) for module in sources}
    for module, targets in sorted(graph.items()):
        group = group_of(module)
        if group not in LEVELS:
            problems.append(f"{module} belongs to no layer (add it to LEVELS or move it)")
            continue
        for target in sorted(targets):
            target_group = group_of(target)
            if target_group == group:
                continue
            if target_group not in LEVELS or LEVELS[target_group] >= LEVELS[group]:
                problems.append(
                    f"{module} (level {LEVELS[group]}) imports {target} "
                    f"(level {LEVELS.get(target_group, '?')}): imports must go to a strictly lower level"
                )
    problems.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in import_cycles(graph))
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(_closed_path(sorted(component), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _closed_path(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A path start -> ... -> start inside one strongly connected component."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                frontier.append(target)
    return component  # pragma: no cover - a component always has a cycle through its first member


def test_imports_only_go_down_and_have_no_cycles():
    sources = read_package()
    assert "eqx_vae.nn._conv" in sources and "eqx_vae.cli._main" in sources
    problems = layering_problems(sources)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"eqx_vae.nn._conv": "from ..models import AutoencoderKL", "eqx_vae.models": ""}, "imports eqx_vae.models"),
        (  # an import inside a function counts too
            {"eqx_vae.io._images": "def read():\n    from ..inference import encode\n", "eqx_vae.inference": ""},
            "imports eqx_vae.inference (level 3)",
        ),
        ({"eqx_vae.models._a": "from . import _b", "eqx_vae.models._b": "from ._a import x"}, "import cycle"),
        ({"eqx_vae.models": "from ._a import A as A", "eqx_vae.models._a": "from eqx_vae.models import B"},
         "import cycle: eqx_vae.models -> eqx_vae.models._a -> eqx_vae.models"),
        ({"eqx_vae._helpers": ""}, "belongs to no layer"),
    ],
)
def test_the_check_finds_upward_imports_and_cycles(sources, expected):
    problems = layering_problems(sources)
    assert any(expected in problem for problem in problems), problems


def reexport_problems(source: str) -> list[str]:
    """Statements of a top-level `__init__.py` other than a docstring, `__version__ = ...` and
    `from .x import A as A`."""
    problems = []
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue
        if isinstance(statement, ast.Assign) and [ast.unparse(t) for t in statement.targets] == ["__version__"]:
            continue
        if isinstance(statement, ast.ImportFrom) and statement.level == 1 and statement.module:
            problems.extend(
                f"line {statement.lineno}: `{ast.unparse(statement)}` must re-export as `{alias.name} as {alias.name}`"
                for alias in statement.names
                if alias.asname != alias.name
            )
            continue
        problems.append(f"line {statement.lineno}: `{ast.unparse(statement)}` is not an explicit re-export")
    return problems


def test_top_level_init_is_explicit_reexports_only():
    with open(os.path.join(ROOT, "__init__.py"), encoding="utf-8") as file:
        source = file.read()
    problems = reexport_problems(source)
    assert not problems, "\n".join(problems)
    exported = {
        alias.asname for node in ast.parse(source).body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    public = {
        name for name, value in vars(eqx_vae).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == exported


@pytest.mark.parametrize(
    "source", ["from .models import AutoencoderKL", "from .models import AutoencoderKL as VAE", "import os",
               "from eqx_vae.models import preset_config as preset_config", "X = 1"]
)
def test_the_reexport_check_finds_other_statements(source):
    assert reexport_problems(source)
