"""Ticket transfer (Morcos et al. 2019, "One ticket to win them all"): an experiment whose pruned
levels start from the tickets another experiment found.

With ``transfer.source`` set, level L >= 1 of replicate r does not prune: it starts from the
source's replicate r, level L ticket -- its mask, and its start weights (``transfer.weights``:
``ticket``, the weights the source trained it from, θk ⊙ mask with k the source's rewind step; or
``init``, the source's θ0 ⊙ mask) -- and trains with this experiment's data, optimizer and training
from step 0 (a fresh optimizer state). A ticket found with Adam trains with SGD, one found on MNIST
trains on Fashion-MNIST (same input shape), one found in 5K iterations trains for 50K. Level 0 is
this experiment's own dense network (the dense baseline of the task it is transferred to). The
controls keep their meaning: random_prune and shuffle_layer put a random mask of the ticket's counts
on the transferred start weights, random_reinit puts the transferred mask on fresh weights of this
experiment.

``transfer.source`` is the source experiment's directory, or the command-line overrides that run it
(``"+exp=lenet training.steps=5000it"``; composed with this experiment's output_dir unless they set
one): the source must have finished levels 1..levels for every replicate this experiment trains.
The source is part of the hash by its own hash (the digest of its config.yaml), not by its path.
"""

import os
import shlex
from typing import Optional

from omegaconf import OmegaConf

from lottery import pruning
from lottery.config import digest
from lottery.errors import LotteryError

WEIGHTS = ("ticket", "init")
CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def check(cfg) -> None:
    """What a transfer experiment cannot also be (no data needed)."""
    transfer = cfg.transfer
    if transfer.weights not in WEIGHTS:
        raise LotteryError(f"transfer.weights={transfer.weights!r} is not an option; choose one of: {', '.join(WEIGHTS)}")
    if transfer.source is None:
        return
    if cfg.retrain != "rewind" or cfg.pruning.prune_at != "trained":
        raise LotteryError(f"transfer.source is set: the levels start from the source's tickets, so retrain={cfg.retrain} "
                           f"and pruning.prune_at={cfg.pruning.prune_at} mean nothing here; leave them at rewind, trained")
    if "invert" in cfg.controls:
        raise LotteryError("controls: invert reverses the ranking that made a ticket, which a transferred ticket was "
                           "not made by here; use random_prune, shuffle_layer, random_reinit or sign_preserving_reinit")


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside `python -m lottery.run`: its config search path
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def source_directory(cfg) -> str:
    """The source experiment's directory: ``transfer.source`` itself, or where the experiment its
    overrides compose keeps its results."""
    source = cfg.transfer.source
    if "=" not in source:
        return os.path.abspath(os.path.expanduser(source))
    from lottery import data as datasets
    from lottery.imp import experiment_directory

    try:
        source_cfg = _compose([f"output_dir={cfg.output_dir}", *shlex.split(source)])
    except Exception as error:  # Hydra's many exception types for a bad override
        raise LotteryError(f"transfer.source={source!r}: cannot be composed as an experiment's overrides "
                           f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    if source_cfg.transfer.source is not None:
        raise LotteryError(f"transfer.source={source!r}: is itself a transfer; name the experiment that found the tickets")
    return experiment_directory(source_cfg, datasets.load(source_cfg.dataset).fingerprint)


def identity(source: str) -> str:
    """The source's hash: the digest of its identity (config.yaml without its name)."""
    path = os.path.join(source, "config.yaml")
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
    except FileNotFoundError:
        raise LotteryError(f"transfer.source: {source} holds no experiment (no config.yaml); give an experiment's "
                           "directory (<output_dir>/<name>-<hash>) or the overrides that run it, and run it first") from None
    except Exception as error:  # YAML syntax errors of several types, unreadable files
        raise LotteryError(f"{path}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); it is the "
                           "transfer source's identity") from None
    if not isinstance(saved, dict):
        raise LotteryError(f"{path}: holds no experiment config; it is corrupt")
    return digest({k: v for k, v in saved.items() if k != "name"})


def level_dir(source: str, replicate: int, level: int) -> str:
    return os.path.join(source, f"replicate_{replicate}", f"level_{level}")


def check_source(experiment) -> None:
    """Before anything is written: the source has every ticket this experiment starts from, and
    they have this experiment's parameter shapes."""
    from lottery.export import restore  # by the checkpoint's own metadata: any shapes, named

    cfg, source = experiment.cfg, experiment.transfer_source
    for replicate in range(cfg.replicates):
        for level in range(cfg.levels + 1):  # level 0: θ0 and θk, the controls' start weights
            directory = level_dir(source, replicate, level)
            if not (os.path.isfile(os.path.join(directory, "metrics.json")) and os.path.isdir(os.path.join(directory, "ticket"))):
                raise LotteryError(f"transfer.source: {directory} is not a finished level; the source must have levels "
                                   f"0..{cfg.levels} of replicates 0..{cfg.replicates - 1} (run it with at least "
                                   f"levels={cfg.levels} replicates={cfg.replicates})")
    if cfg.levels < 1:
        return
    found = restore(os.path.join(level_dir(source, 0, 1), "ticket"), ("mask", "params", "batch_stats"))
    for group, like in (("params", experiment.trainer.init_params), ("batch_stats", experiment.trainer.init_batch_stats)):
        mine = {name.replace("/", "."): tuple(a.shape) for name, a in pruning.flatten(like).items()}
        theirs = {name: tuple(a.shape) for name, a in found[group].items()}
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                raise LotteryError(
                    f"transfer.source: {level_dir(source, 0, 1)}/ticket has {group} {name} of shape "
                    f"{theirs.get(name, 'none')}, this experiment's model has {mine.get(name, 'none')}; a ticket "
                    "transfers to the same model on inputs of the same shape")


def start(experiment, replicate: int, level: int, mask=None) -> dict:
    """The training state of the transferred ticket at ``level``: bitwise the source's start (its
    saved ticket/) with ``transfer.weights=ticket``. With another ``mask`` (the random-mask
    controls), that mask on the whole weights the source's tickets start from: its θk (level 0's
    rewind_point/) or, with ``init``, its θ0."""
    source, weights = experiment.transfer_source, experiment.cfg.transfer.weights
    ticket = experiment.load(level_dir(source, replicate, level), "ticket")
    if mask is None and weights == "ticket":
        return experiment.trainer.init_state(ticket["params"], ticket["batch_stats"], ticket["mask"])
    if weights == "init":
        whole = experiment.load(level_dir(source, replicate, 0), "ticket")  # θ0, dense
    else:
        whole = rewind_point(experiment, replicate)
    return experiment.trainer.init_state(whole["params"], whole["batch_stats"], ticket["mask"] if mask is None else mask)


def rewind_point(experiment, replicate: int) -> dict:
    """The source's θk and batch statistics (its optimizer state, another optimizer's, is left)."""
    import orbax.checkpoint as ocp

    from lottery.export import flatten

    directory = os.path.join(level_dir(experiment.transfer_source, replicate, 0), "rewind_point")
    try:
        checkpointer = ocp.StandardCheckpointer()
        found = checkpointer.restore(os.path.abspath(directory))
        checkpointer.close()
        found = {group: flatten(found[group], directory) for group in ("params", "batch_stats")}
    except LotteryError:
        raise
    except Exception as error:  # orbax raises many types for missing, truncated or foreign files
        raise LotteryError(f"{directory}: cannot be read as the source's rewind point ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''}); it is corrupt") from None
    mine = {"params": experiment.trainer.init_params, "batch_stats": experiment.trainer.init_batch_stats}
    return {group: pruning.unflatten(like, {name: found[group][name.replace("/", ".")]
                                            for name in pruning.flatten(like)}) for group, like in mine.items()}


def recorded(experiment, replicate: int, level: int) -> Optional[dict]:
    """What metrics.json says of a transferred network's origin (None: not a transfer)."""
    if experiment.transfer_source is None or level == 0:
        return None
    return {"source": experiment.transfer_source, "hash": identity(experiment.transfer_source),
            "replicate": replicate, "level": level, "weights": experiment.cfg.transfer.weights}
