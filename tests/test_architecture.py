"""The package is one house: no import cycles, nothing imports upward, ``import neurovar`` is light.

Every module of the package is parsed with :mod:`ast` (imports inside functions included, since
those hide cycles best), the import graph is built, and the floors of DESIGN.md and
docs/architecture.md are checked. A package's ``__init__`` running before its submodules is
Python's import machinery, not an edge of the graph.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neurovar"

# (floor, module prefixes), from the bottom up; a module belongs to its longest matching prefix.
FLOORS: dict[str, tuple[str, ...]] = {
    "bottom": (
        "neurovar._version",
        "neurovar._compat",
        "neurovar._progress",
        "neurovar._torch",
        "neurovar._rng",
        "neurovar._validation",
        "neurovar._io",
        "neurovar.dims",
    ),
    "data": ("neurovar.datasets", "neurovar.models"),
    "core": ("neurovar.record", "neurovar.noise", "neurovar.stats", "neurovar.inference"),
    "package": ("neurovar",),  # the root __init__: imports record, stats, dims
    "perturb": ("neurovar.perturb",),
    "cortex": ("neurovar.cortex",),
    # figures of statistics, noise, robustness and cortex comparisons; the experiment's report
    # draws with them
    "figures": ("neurovar.plot",),
    "top": ("neurovar.experiment",),
    # neurovar.demo, neurovar.report, neurovar.report_reproduction: deprecated re-exports of
    # neurovar.cli.demo and neurovar.experiment.report
    "roof": ("neurovar.cli", "neurovar.demo", "neurovar.__main__", "neurovar.report",
             "neurovar.report_reproduction"),
}
# which floors a floor may import (its own included: then only acyclically)
MAY_IMPORT: dict[str, set[str]] = {
    "bottom": {"bottom"},
    "data": {"bottom", "data"},
    "core": {"bottom", "core"},
    "package": {"bottom", "core"},
    "perturb": {"bottom", "core", "perturb"},
    "cortex": {"bottom", "core", "cortex"},
    "figures": {"bottom", "data", "core", "package", "perturb", "cortex", "figures"},
    "top": {"bottom", "data", "core", "package", "perturb", "cortex", "figures", "top"},
    "roof": set(FLOORS),
}
# rules inside the core floor: the statistics are torch-free and know nothing of models;
# record and noise meet only in neurovar._torch (noise discovery by marker); cortex uses
# only the statistics.
FORBIDDEN: list[tuple[str, tuple[str, ...]]] = [
    ("neurovar.stats", ("neurovar.record", "neurovar.noise", "neurovar.inference")),
    ("neurovar.inference", ("neurovar.record", "neurovar.noise")),
    ("neurovar.record", ("neurovar.noise",)),
    ("neurovar.noise", ("neurovar.record",)),
    ("neurovar.cortex", ("neurovar.record", "neurovar.noise")),
]
# Known cycles, to be removed. The lead removes an entry when the fix is merged (the test fails
# on a stale entry, so it cannot be forgotten).
KNOWN_CYCLES: list[frozenset[str]] = []  # none: every module imports only downwards


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _import_graph() -> dict[str, set[str]]:
    """``{module: {imported neurovar modules}}``, from every import statement of every module."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "neurovar")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod.split(".")[0] != "neurovar":
                    continue
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{mod}.{alias.name}"
                    targets.add(sub if sub in modules else mod)
        graph[name] = {t for t in targets if t != name}
    return graph


def _floor(module: str) -> str | None:
    best, floor = -1, None
    for name, prefixes in FLOORS.items():
        for prefix in prefixes:
            # the root package is a floor of its own: its prefix does not cover new modules
            covers = module == prefix or (prefix != "neurovar" and module.startswith(prefix + "."))
            if covers and len(prefix) > best:
                best, floor = len(prefix), name
    return floor


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


GRAPH = _import_graph()


def test_the_graph_sees_imports_inside_functions():
    # record imported models.resolve_device at module level and _rng imported neurovar.noise
    # inside a function; the parser must see both kinds (here: a function-level import).
    source = "def f():\n    from neurovar.noise import NoiseModule\n"
    found = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    assert found and found[0].module == "neurovar.noise"
    assert "neurovar.noise" in GRAPH["neurovar.perturb.diagnostics"]  # imported in a function
    assert "neurovar._torch" in GRAPH["neurovar.record"]


def test_every_module_has_a_floor():
    assert not [m for m in GRAPH if _floor(m) is None]


# Loose top-level modules (not in a folder) and their floor; a new module goes into a folder.
LOOSE: dict[str, str] = {
    "neurovar._version": "bottom",
    "neurovar._compat": "bottom",
    "neurovar._torch": "bottom",
    "neurovar._rng": "bottom",
    "neurovar._io": "bottom",
    "neurovar._progress": "bottom",
    "neurovar.dims": "bottom",
    "neurovar.datasets": "data",
    "neurovar.models": "data",
    "neurovar.report": "roof",  # deprecated re-export of neurovar.experiment.report
    "neurovar.report_reproduction": "roof",  # the same
    "neurovar.demo": "roof",  # deprecated re-export of neurovar.cli.demo
    "neurovar.__main__": "roof",  # python -m neurovar
}


def test_every_folder_is_one_floor():
    """The folder names show the floors: every module of a subpackage is on its folder's floor."""
    modules = _modules()
    folders = [name for name, (_, is_pkg) in modules.items() if is_pkg and name != "neurovar"]
    assert {"neurovar.record", "neurovar.cli", "neurovar.plot", "neurovar.perturb.attacks"} <= set(
        folders
    )
    mixed = [
        (m, _floor(m), folder, _floor(folder))
        for folder in folders
        for m in modules
        if m.startswith(folder + ".") and _floor(m) != _floor(folder)
    ]
    assert not mixed, f"modules on another floor than their folder: {mixed}"


def test_loose_modules_are_listed():
    loose = {
        name
        for name, (_, is_pkg) in _modules().items()
        if not is_pkg and name.count(".") == 1
    }
    assert loose == set(LOOSE), (
        f"new loose modules (put them in a folder): {sorted(loose - set(LOOSE))}; "
        f"gone (remove them from LOOSE): {sorted(set(LOOSE) - loose)}"
    )
    assert {m: _floor(m) for m in LOOSE} == LOOSE


def test_no_import_cycles():
    cycles = [frozenset(c) for c in _strongly_connected(GRAPH)]
    unknown = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not unknown, f"import cycles: {unknown}"
    stale = [sorted(c) for c in KNOWN_CYCLES if c not in cycles]
    assert not stale, f"these known cycles are gone; remove them from KNOWN_CYCLES: {stale}"


def test_no_module_imports_upward():
    upward = [
        (m, t, _floor(m), _floor(t))
        for m, targets in GRAPH.items()
        for t in targets
        if _floor(t) not in MAY_IMPORT[_floor(m)]
    ]
    assert not upward, "imports across floors (module, imported, its floor, imported floor): " + (
        repr(upward)
    )


@pytest.mark.parametrize(("owner", "forbidden"), FORBIDDEN)
def test_rules_inside_the_core_floor(owner, forbidden):
    def within(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    bad = [
        (m, t)
        for m, targets in GRAPH.items()
        if within(m, owner)
        for t in targets
        if any(within(t, f) for f in forbidden)
    ]
    assert not bad


def test_torch_helpers_are_defined_once():
    """Layer names, the device rule, noise discovery and seeded RNG live in neurovar._torch."""
    names = {
        "layer_names",
        "resolve_device",
        "model_device",
        "_model_device",
        "find_noise_hooks",
        "noise_hooks",
        "_noise_hooks",
        "noise_modules",
        "seed_from",
        "seeded_torch",
        "reseeded_noise",
        "unit_coords",
    }
    allowed = {"_torch.py": names, "dims.py": {"unit_coords"}, "stats/_util.py": {"unit_coords"}}
    defined = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in names:
                if node.name not in allowed.get(rel, set()):
                    defined.append((rel, node.name))
    assert not defined


def test_generic_checkers_are_defined_once_in_the_validation_layer():
    """Integer, real and choice checks live in neurovar._validation only (issue 24): no
    subpackage keeps a wrapper that re-orders the arguments or changes a default."""
    names = {
        "check_int",
        "check_real",
        "check_choice",
        "check_confidence_level",
        # the wrappers folded into _validation; a new one under an old name is a regression
        "check_option",
        "check_number",
        "check_nonneg_float",
        "check_positive_int",
        "check_unit_interval",
        "check_seed",
    }
    defined = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("_validation/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
                defined.append((rel, node.name))
    assert not defined


def test_import_neurovar_loads_no_heavy_subpackage():
    code = (
        "import sys, neurovar\n"
        "heavy = ['neurovar.models', 'neurovar.datasets', 'neurovar.noise', 'neurovar.perturb',"
        " 'neurovar.cortex', 'neurovar.plot']\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "neurovar.record_activations, neurovar.stats.noise_covariance\n"
        "assert 'neurovar.models' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
