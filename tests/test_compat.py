"""The import paths from before the packages (lottery/compat.py), kept for one release: each old
path imports the very object of its new home and warns once per process, with a DeprecationWarning
that names the new path; a name that never existed fails as it always did. Each check runs in a
fresh process (the once-per-process rule), all paths of a kind in one process."""

import json
import os
import subprocess
import sys

import pytest

from lottery import compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# For each old path: import it twice (the second from sys.modules or the warned set), compare it with
# the new path, and keep the warnings that name it (others, e.g. a library's own, are not ours).
CHECK = """
import importlib, json, sys, warnings
import lottery

def check(old, use, new):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = use(), use()
    ours = [w for w in caught if old in str(w.message)]
    return {"same": first is new() and second is first, "messages": [str(w.message) for w in ours],
            "categories": [w.category.__name__ for w in ours], "files": [w.filename for w in ours]}

out = {}
for old, new in json.loads(sys.argv[1]).items():
    package, _, name = old.rpartition(".")
    if sys.argv[2] == "import":  # import lottery.criteria
        use = lambda old=old: (exec(f"import {old}", {}), sys.modules[old])[1]
    elif sys.argv[2] == "from":  # from lottery import criteria / from lottery.pruning import number_to_prune
        use = lambda package=package, name=name: (  # noqa: E731
            lambda scope: (exec(f"from {package} import {name}", scope), scope[name])[1]
        )({})
    else:  # lottery.pruning.number_to_prune
        use = lambda package=package, name=name: getattr(importlib.import_module(package), name)
    home, _, attribute = new.rpartition(".") if sys.argv[3] == "name" else (new, "", "")
    out[old] = check(old, use, lambda home=home, attribute=attribute: getattr(importlib.import_module(home), attribute)
                     if attribute else importlib.import_module(home))
print(json.dumps(out))
"""

MODULES = compat.MODULES
NAMES = {
    f"{package}.{name}": f"{home}.{name}" for package, names in compat.NAMES.items() for name, home in names.items()
}


def run_check(paths, how, kind):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(paths), how, kind],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def seen():
    """Each old path used each way, in a fresh process per way and kind."""
    return {
        ("module", "import"): run_check(MODULES, "import", "module"),
        ("module", "from"): run_check(MODULES, "from", "module"),
        ("name", "from"): run_check(NAMES, "from", "name"),
        ("name", "attribute"): run_check(NAMES, "attribute", "name"),
    }


def expect_once(found, old, new):
    assert found["same"], f"{old} is not the object of {new}"
    assert found["categories"] == ["DeprecationWarning"], found
    assert found["messages"] == [f"{old} is now {new}; the old path goes in the next release"]
    assert found["files"] == ["<string>"]  # the warning points at the code that used the old path


@pytest.mark.slow
@pytest.mark.parametrize("how", ["import", "from"])
@pytest.mark.parametrize("old", sorted(MODULES))
def test_an_old_module_path_is_its_new_module_and_warns_once(seen, old, how):
    expect_once(seen["module", how][old], old, MODULES[old])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["from", "attribute"])
@pytest.mark.parametrize("old", sorted(NAMES))
def test_an_old_name_of_a_package_is_its_new_object_and_warns_once(seen, old, how):
    expect_once(seen["name", how][old], old, NAMES[old])


def test_the_paths_the_issue_names_are_kept():
    assert MODULES["lottery.criteria"] == "lottery.pruning.criteria"
    assert NAMES["lottery.pruning.number_to_prune"] == "lottery.pruning.masks.number_to_prune"
    assert NAMES["lottery.training.Trainer"] == "lottery.training.trainer.Trainer"


def test_a_name_that_never_existed_fails_as_usual():
    import lottery.pruning

    with pytest.raises(ModuleNotFoundError, match="No module named 'lottery.no_such_module'"):
        import lottery.no_such_module  # noqa: F401
    with pytest.raises(ModuleNotFoundError):
        import lottery.pruning.no_such_module  # noqa: F401
    with pytest.raises(ImportError, match="cannot import name 'no_such_name' from 'lottery.pruning'"):
        from lottery.pruning import no_such_name  # noqa: F401
    with pytest.raises(ImportError, match="cannot import name 'no_such_name' from 'lottery'"):
        from lottery import no_such_name  # noqa: F401
    with pytest.raises(AttributeError, match="module 'lottery.training' has no attribute 'no_such_name'"):
        __import__("lottery.training").training.no_such_name
    with pytest.raises(AttributeError, match="module 'lottery.imp' has no attribute 'no_such_name'"):
        __import__("lottery.imp").imp.no_such_name


@pytest.mark.slow
def test_importing_lottery_loads_neither_the_old_paths_nor_a_library():
    code = "import sys, lottery; print(sorted(m for m in sys.modules if m.startswith(('lottery', 'jax', 'numpy'))))"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.strip() == "['lottery']"


def test_units_keep_their_old_home_as_a_plain_name():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from lottery.pruning.structure import Units
    from lottery.units import Units as home

    assert Units is home
