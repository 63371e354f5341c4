"""The import paths from before lottery/ was reshaped into packages (d576c34), for one release.

Each old path still imports, as the very same object as its new home, and says once per process
(a DeprecationWarning) where that home is; the old paths go in the next release, with this file.

  modules  ``import lottery.criteria`` and ``from lottery import criteria``: the import hook of
           lottery/__init__.py asks ``find_spec``, whose loader hands out the new module
  names    ``lottery.pruning.number_to_prune``: the package's ``__getattr__`` (PEP 562) calls
           ``moved(package, name)``

The new homes are named here as strings and imported only when an old path is used: importing
lottery loads none of them (nor any library), and no layer imports from one above it
(tests/test_package.py).
A module split in two (distributed.py, record.py, layout.py) maps to the half git saw it renamed
to, or the one that kept most of its names. Names that were renamed, not moved, have no shim:
imp.py's ``rewound`` is ``imp.method.theta_k_start`` (a transfer's ``Transfer.rewound``) and its
``pruned_at_start`` is ``imp.at_start.AtStart.mask``, since the level protocol (imp/method.py).
"""

import importlib
import importlib.machinery
import sys
import warnings

MODULES = {
    "lottery.checkpoint": "lottery.results.store",
    "lottery.controls": "lottery.pruning.controls",
    "lottery.criteria": "lottery.pruning.criteria",
    "lottery.dense": "lottery.imp.dense",
    "lottery.distributed": "lottery.training.mesh",  # its process half is lottery.hosts
    "lottery.driver": "lottery.training.loop",
    "lottery.layout": "lottery.results.store",  # count_fields: lottery.results.metrics
    "lottery.lmc": "lottery.imp.lmc",
    "lottery.objective": "lottery.analysis.objective",
    "lottery.provenance": "lottery.results.provenance",
    "lottery.record": "lottery.results.invocations",  # the identity half is lottery.results.identity
    "lottery.tickets": "lottery.analysis.tickets",
    "lottery.transfer": "lottery.imp.transfer",
}

# Names the old modules pruning.py, training.py and imp.py held, now in the packages' modules.
_MASKS = (
    "STRATEGIES",
    "check",
    "counts",
    "decimal",
    "density",
    "exponential_counts",
    "flatten",
    "full_mask",
    "groups",
    "keep_at_density",
    "layer_kind",
    "layerwise_rates",
    "level_counts",
    "number_to_prune",
    "path_names",
    "prunable",
    "prune_by_scores",
    "prune_to_counts",
    "random_mask",
    "unflatten",
)
_TRAINER = (
    "LOOPS",
    "OPTIMIZERS",
    "Trainer",
    "epoch_order",
    "make_optimizer",
    "make_schedule",
    "mask_optimizer_state",
    "member",
    "members_of",
    "stack",
    "unstack",
    "use_host_loop",
)
_LEVELS = ("dense_level", "lmc_start", "run_locked", "ticket_start")
_FINISH = ("collect", "record_sweep_job", "warn_at_chance", "warn_collapse")
NAMES = {
    "lottery.pruning": {**dict.fromkeys(_MASKS, "lottery.pruning.masks"), "prune": "lottery.pruning.criteria"},
    "lottery.training": {**dict.fromkeys(_TRAINER, "lottery.training.trainer"), "apply_mask": "lottery.pruning.masks"},
    "lottery.imp": {
        **dict.fromkeys(_LEVELS, "lottery.imp.levels"),
        **dict.fromkeys(_FINISH, "lottery.imp.finish"),
        "MAX_NAME": "lottery.imp.checks",
        "RETRAIN": "lottery.imp.checks",
        "experiment_directory": "lottery.results.paths",
    },
}

_warned = set()


def _warn(old: str, new: str) -> None:
    if old in _warned:
        return
    _warned.add(old)
    warnings.warn(
        f"{old} is now {new}; the old path goes in the next release", DeprecationWarning, stacklevel=_caller()
    )


def _caller() -> int:
    """The stack level of the code that used the old path, past this module, a package's
    ``__getattr__`` and importlib (Python's default filters show a DeprecationWarning only where
    __main__ caused it). warnings skips the import system's own frames itself: they are not counted."""
    frame, level = sys._getframe(2), 2  # the caller of _warn
    while frame is not None:
        internal = "importlib" in frame.f_code.co_filename and "_bootstrap" in frame.f_code.co_filename
        if not internal:
            if frame.f_globals.get("__name__") not in (__name__, "importlib") and frame.f_code.co_name != "__getattr__":
                return level
            level += 1
        frame = frame.f_back
    return 1


def moved(package: str, name: str):
    """``package.name`` from its new home (a package's ``__getattr__``), or the usual AttributeError."""
    home = NAMES.get(package, {}).get(name)
    if home is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn(f"{package}.{name}", f"{home}.{name}")
    return getattr(importlib.import_module(home), name)


def find_spec(fullname: str):
    """The spec of an old module path (None for any other name: the usual ModuleNotFoundError)."""
    return importlib.machinery.ModuleSpec(fullname, _OldModule) if fullname in MODULES else None


class _OldModule:
    """Loads an old path by putting its new module in its place in sys.modules (the import system
    then returns that module, and sets it as the attribute of lottery)."""

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        new = importlib.import_module(MODULES[module.__name__])
        _warn(module.__name__, new.__name__)
        sys.modules[module.__name__] = new
