"""The package's shape (README "Where things are"): no import circle, and no module imports from a
layer above its own. Read from the source with ast, lazy imports inside functions included."""

import ast
import dataclasses
import pathlib

LOTTERY = pathlib.Path(__file__).resolve().parents[1] / "lottery"

# Bottom to top: a module may import from its own layer and the layers below it. lottery.compat (the
# old import paths, for one release) is at the bottom: it imports nothing of lottery, and names the
# old paths' new homes, of every layer, as strings it imports only when an old path is used
# (checked below: each is a module of the package).
LAYERS = (
    (
        "lottery",
        "lottery.errors",
        "lottery.step",
        "lottery.units",
        "lottery.config",
        "lottery.hosts",
        "lottery.backend",
        "lottery.compat",
        "lottery.lazy",
    ),
    ("lottery.results", "lottery.models", "lottery.data", "lottery.pruning"),
    ("lottery.training",),
    ("lottery.analysis", "lottery.tracking"),
    ("lottery.imp",),
    ("lottery.run", "lottery.report", "lottery.export", "lottery.search", "lottery.sweeps"),
)


def modules():
    found = {}
    for path in sorted(LOTTERY.rglob("*.py")):
        parts = path.relative_to(LOTTERY.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(known):
    """{module: the lottery modules it imports} (``from lottery.x import y``: y if it is a module)."""
    edges = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    if target in known:
                        targets.add(target)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in known}
        edges[name] = targets - {name}
    return edges


def layer(module: str) -> int:
    for index, members in enumerate(LAYERS):
        if any(module == m or (m != "lottery" and module.startswith(m + ".")) for m in members):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_package.py: place it in the README's map and here")


def test_every_module_has_a_layer_and_imports_only_from_its_own_or_below():
    edges = imports(modules())
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer(b) > layer(a)]
    assert upward == []


def test_there_is_no_import_circle():
    edges = imports(modules())
    state, stack, circles = {}, [], []

    def visit(module):  # depth-first search: an edge back to a module on the stack closes a circle
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert circles == []


def test_models_do_not_import_pruning():
    # A model declares its units (lottery/units.py) and pruning reads them: building a network
    # needs nothing of how it is pruned.
    edges = imports(modules())
    found = [
        f"{a} -> {b}"
        for a, targets in edges.items()
        if a == "lottery.models" or a.startswith("lottery.models.")
        for b in targets
        if b == "lottery.pruning" or b.startswith("lottery.pruning.")
    ]
    assert found == []


def test_the_old_paths_lead_to_modules_of_the_package_and_to_no_module_that_is_still_there():
    from lottery import compat

    known = modules()
    assert compat.MODULES and all(new in known and old not in known for old, new in compat.MODULES.items())
    assert all(home in known for names in compat.NAMES.values() for home in names.values())
    assert imports(known)["lottery.compat"] == set()


def test_the_reading_finds_the_imports_it_judges():
    # The checks above are only as good as this reading: it must see the imports the code has.
    edges = imports(modules())
    assert "lottery.imp.experiment" in edges["lottery.imp.levels"]
    assert "lottery.pruning.masks" in edges["lottery.pruning.criteria"]
    assert "lottery.imp" in edges["lottery.run"]  # a lazy import inside a function
    assert "lottery.units" in edges["lottery.models.lenet"] and "lottery.units" in edges["lottery.pruning.structure"]
    assert layer("lottery.imp.levels") > layer("lottery.training.loop") > layer("lottery.results.store")


def test_result_file_names_are_composed_in_results_paths_only():
    """A network's files and trees are named in results/paths.py (METRICS, TICKET, TRAINED) and
    joined there: a layout change is one place (issue 34)."""
    import re

    composed = re.compile(r"""os\.path\.join\([^)]*["'](metrics\.json|ticket|trained)["']\)""")
    found = [
        f"{path.relative_to(LOTTERY.parent)}:{n}"
        for path in sorted(LOTTERY.rglob("*.py"))
        if path.name != "paths.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if composed.search(line) or "'metrics.json'" in line or '"metrics.json"' in line
    ]
    assert found == []


def test_a_method_reads_only_its_context_and_is_registered_by_its_module_alone():
    """imp/method.py (issue 34): a method module imports neither the experiment nor the story that
    runs it (levels, finish), its seams take no experiment (what it reads is ``Context``), and no
    module names a method module for it to register: ``method.load`` imports each."""
    import inspect

    from lottery.imp import experiment, method

    method.load()
    ours = [cls for cls in method.REGISTRY if cls.__module__.startswith("lottery.imp.")]
    homes = {cls.__module__ for cls in ours}
    assert homes == {
        f"lottery.imp.{m}"
        for m in ("iterative", "at_start", "sparse_training", "transfer", "early_bird", "swamp", "diet")
    }
    edges = imports(modules())
    for home in homes:
        assert not edges[home] & {"lottery.imp.experiment", "lottery.imp.levels", "lottery.imp.finish"}, home
    seams = [name for name, value in vars(method.Method).items() if inspect.isfunction(value)]
    assert {"mask", "start", "ticket", "rewound", "ranking", "after_training", "record", "cost"} <= set(seams)
    for cls in ours:
        for name in seams:
            parameters = inspect.signature(getattr(cls, name)).parameters
            assert "experiment" not in parameters, f"{cls.__name__}.{name}"
    importers = {name for name, targets in edges.items() if name not in homes and targets & homes}
    assert importers == set()  # nothing names a method module (EarlyBird, IMP drawn early, imports iterative's class)
    assert {f.name for f in dataclasses.fields(method.Context)}.isdisjoint({"tracker", "invocation", "methods"})
    assert not hasattr(experiment, "at_start") and not hasattr(experiment, "diets")  # no registration imports
