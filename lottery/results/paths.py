"""Where results lie: the one place that composes and parses the results layout.

<output_dir>/<name>-<hash>/                 an experiment (``experiment_directory``; name: its
                                            own, or <model>-<dataset>[-<method>], or quickstart)
  config.yaml  invocations.jsonl  objectives.json  lock  *.png  (diet.json  diet_subset.npy)
  replicate_<r>/level_<L>/                  the level's ticket (``level_dir``)
    metrics.json  ticket/  trained/  rewind_point/ (level 0)
    <control>/                              each control, laid out like the ticket (``network_dir``)
    lmc/                                    copy_a/, copy_b/, metrics.json, path.png (``lmc_dir``)
  checkpoints/level_<L>/<group>/            of the networks being trained (``checkpoint_dir``)
<output_dir>/dense/<model>-<dataset>-<hash>/ the shared dense level 0 (lottery/imp/dense.py)
  dense.yaml  invocations.jsonl  lock
  replicate_<r>/  metrics.json  ticket/  trained/  rewind_points/<k>/
<output_dir>/diets/<model>-<dataset>-<score>-<hash>/ a data diet's shared scores (lottery/imp/diet.py)
  diet.yaml  scores.npy  metrics.json  lock  networks/ (while scoring)
"""

import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple

from lottery.results.identity import DEFAULT_NAME, experiment_hash, experiment_name

DENSE_STORE = "dense"  # below output_dir
DIET_STORE = "diets"  # below output_dir: data diets' scores (lottery/imp/diet.py)
DIET_RECORD, DIET_SUBSET = "diet.json", "diet_subset.npy"  # in an experiment's directory: what its diet chose
CHECKPOINTS = "checkpoints"
# The files and trees of a network's directory (and of an LMC measurement, a draw, a store): named
# here, joined by the functions below, never composed elsewhere.
METRICS = "metrics.json"
TICKET, TRAINED, REWIND_POINT = "ticket", "trained", "rewind_point"  # orbax trees: start, end, θk
LMC = "lmc"
LMC_LEVELS = "lmc_levels"  # the path from the previous level's solution (lmc.between_levels)


def _named(cfg, name: str, digest: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "experiment"
    return os.path.join(os.path.expanduser(cfg.output_dir), f"{name}-{digest}")


def experiment_directory(cfg, data_fingerprint: str) -> str:
    """``<output_dir>/<name>-<hash>``: where an experiment keeps its results (``name``:
    identity.experiment_name's). An experiment that an older version named by the default name
    (``quickstart-<hash>``: the same hash, the name is not hashed) is found there while no
    directory has its own name yet, so that it is never trained twice (``old_name`` says so)."""
    digest = experiment_hash(cfg, data_fingerprint)
    directory = _named(cfg, experiment_name(cfg), digest)
    old = _named(cfg, DEFAULT_NAME, digest)
    if cfg.name == DEFAULT_NAME and directory != old and not os.path.isdir(directory) and os.path.isdir(old):
        return old
    return directory


def old_name(cfg, directory: str) -> bool:
    """Whether ``experiment_directory`` found the experiment of ``cfg`` under the default name, not its own."""
    return experiment_name(cfg) != DEFAULT_NAME and os.path.basename(directory).rsplit("-", 1)[0] == DEFAULT_NAME


def replicate_dir(root: str, replicate: int) -> str:
    """``replicate_<r>`` below an experiment (or the dense store's run)."""
    return os.path.join(root, f"replicate_{replicate}")


def level_dir(root: str, replicate: int, level: int) -> str:
    """A level's directory: its ticket's results, with its controls and LMC measurement inside."""
    return os.path.join(replicate_dir(root, replicate), f"level_{level}")


def network_dir(root: str, replicate: int, level: int, kind: str) -> str:
    """A network's directory: the level's own for the ticket, ``<control>/`` inside it for a control."""
    directory = level_dir(root, replicate, level)
    return directory if kind == "ticket" else os.path.join(directory, kind)


def lmc_dir(root: str, replicate: int, level: int) -> str:
    return os.path.join(level_dir(root, replicate, level), LMC)


def lmc_levels_dir(root: str, replicate: int, level: int) -> str:
    return os.path.join(level_dir(root, replicate, level), LMC_LEVELS)


def checkpoint_dir(root: str, level: int, group: str) -> str:
    """The checkpoints of one group of networks trained together at ``level``."""
    return os.path.join(root, CHECKPOINTS, f"level_{level}", group)


def dense_store(experiment_dir: str, name: str) -> str:
    """The shared dense run ``name`` beside an experiment's directory (in the same output_dir)."""
    return os.path.join(os.path.dirname(experiment_dir), DENSE_STORE, name)


def diet_store(experiment_dir: str, name: str) -> str:
    """The shared scores of a data diet ``name`` beside an experiment's directory."""
    return os.path.join(os.path.dirname(experiment_dir), DIET_STORE, name)


def rewind_point_dir(dense_run: str, replicate: int, step: int) -> str:
    return os.path.join(replicate_dir(dense_run, replicate), "rewind_points", str(step))


def replicates(root: str) -> List[int]:
    """The replicates with a directory below ``root``, in order."""
    names = os.listdir(root) if os.path.isdir(root) else []
    return sorted(int(m.group(1)) for m in map(re.compile(r"replicate_(\d+)").fullmatch, names) if m)


def levels(root: str, replicate: int) -> List[int]:
    """The levels of ``replicate`` with a directory below ``root`` (finished: they appear whole), in order."""
    base = replicate_dir(root, replicate)
    names = os.listdir(base) if os.path.isdir(base) else []
    return sorted(int(m.group(1)) for m in map(re.compile(r"level_(\d+)").fullmatch, names) if m)


def networks(root: str, kinds: Sequence[str]) -> Iterator[Tuple[int, int, str, str]]:
    """(replicate, level, kind, directory) of every finished network of ``kinds`` below the
    experiment ``root``, by replicate, level and the order of ``kinds``."""
    for replicate in replicates(root):
        for level in levels(root, replicate):
            for kind in kinds:
                directory = network_dir(root, replicate, level, kind)
                if os.path.isdir(directory):
                    yield replicate, level, kind, directory


def locate(path: str, kinds: Sequence[str]) -> Optional[Tuple[str, int, int, str]]:
    """(experiment dir, replicate, level, kind) of a network's directory, from where it lies; None
    if it is not one."""
    path = os.path.abspath(path)
    kind, level_path = "ticket", path
    if os.path.basename(path) in kinds and os.path.basename(path) != "ticket":
        kind, level_path = os.path.basename(path), os.path.dirname(path)
    level = re.fullmatch(r"level_(\d+)", os.path.basename(level_path))
    replicate = re.fullmatch(r"replicate_(\d+)", os.path.basename(os.path.dirname(level_path)))
    if level is None or replicate is None:
        return None
    return os.path.dirname(os.path.dirname(level_path)), int(replicate.group(1)), int(level.group(1)), kind


def metrics_file(directory: str) -> str:
    """``<directory>/metrics.json``: a network's results (an LMC measurement's, a draw's, a store's record)."""
    return os.path.join(directory, METRICS)


def ticket_dir(directory: str) -> str:
    """A network's ticket: its mask and the weights training started from (orbax)."""
    return os.path.join(directory, TICKET)


def trained_dir(directory: str) -> str:
    """A network's weights and batch statistics after training (orbax)."""
    return os.path.join(directory, TRAINED)
