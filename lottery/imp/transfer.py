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
experiment. A control that means nothing here says so in its registration (pruning/controls.py).

``transfer.source`` is the source experiment's directory, or the command-line overrides that run it
(``"+exp=lenet training.steps=5000it"``; composed with this experiment's output_dir unless they set
one): the source must have finished levels 1..levels for every replicate this experiment trains.
The source is part of the hash by its own hash (the digest of its config.yaml), not by its path.
"""

import glob
import json
import os
import shlex
import sys
from typing import Optional

from omegaconf import OmegaConf

from lottery.config import CONF
from lottery.errors import LotteryError
from lottery.imp.method import Method, method
from lottery.pruning import masks
from lottery.results import paths
from lottery.results.identity import read_source_identity, source_hash
from lottery.results.metrics import NETWORK_KEYS
from lottery.results.store import load_tree, read_flat, read_json

WEIGHTS = ("ticket", "init")
# What to do about a damaged checkpoint of the source: not this command's to train again.
REPAIR = "rerun the transfer source, then this command"


def check(cfg) -> None:
    """What a transfer experiment cannot also be (no data needed; controls: controls.check)."""
    transfer = cfg.transfer
    if transfer.weights not in WEIGHTS:
        raise LotteryError(
            f"transfer.weights={transfer.weights!r} is not an option; choose one of: {', '.join(WEIGHTS)}"
        )
    if transfer.source is None:
        return
    # what a transfer cannot be beside (retrain, rewind_optimizer, another method): imp/method.py's check


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside `python -m lottery.run`: its config search path
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def source_directory(cfg, data_fingerprint: str) -> str:
    """The source experiment's directory: ``transfer.source`` itself (a directory), or where the
    experiment its overrides compose keeps its results (under this experiment's output_dir unless
    they name one; ``data_fingerprint``: this experiment's data, the source's when the same)."""
    source = cfg.transfer.source
    if os.path.isdir(os.path.expanduser(source)) or "=" not in source:
        return os.path.abspath(os.path.expanduser(source))
    from omegaconf import open_dict

    from lottery import data as datasets

    overrides = shlex.split(source)
    try:
        source_cfg = _compose(overrides)
    except Exception as error:  # Hydra's many exception types for a bad override
        raise LotteryError(
            f"transfer.source={source!r}: neither a directory nor an experiment's overrides "
            f"({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    if not any(o.lstrip("+~").split("=", 1)[0] == "output_dir" for o in overrides):
        with open_dict(source_cfg):  # set, not composed: a path may hold what overrides cannot (= ,)
            source_cfg.output_dir = cfg.output_dir
    if source_cfg.transfer.source is not None:
        raise LotteryError(
            f"transfer.source={source!r}: is itself a transfer; name the experiment that found the tickets"
        )
    same = OmegaConf.to_container(source_cfg.dataset) == OmegaConf.to_container(cfg.dataset)
    fingerprint = data_fingerprint if same else datasets.load(source_cfg.dataset).fingerprint
    return paths.experiment_directory(source_cfg, fingerprint)


class Source:
    """The experiment whose tickets this one's pruned levels start from, and which of its weights."""

    def __init__(self, directory: str, weights: str):
        self.directory, self.weights = directory, weights

    def check(
        self, replicates: int, levels: int, templates: dict, experiment_dir: str, structure: str = "weights"
    ) -> None:
        """Before anything is written: the source has every ticket this experiment starts from, and
        they have this experiment's parameter shapes (``templates``: its params and batch_stats)."""
        source = self.directory
        saved = read_source_identity(source)
        made_as = (saved.get("pruning") or {}).get("structure", "weights")
        if made_as != structure:  # its controls and warnings are this experiment's structure's
            raise LotteryError(
                f"transfer.source: {source} pruned {made_as}; this experiment has "
                f"pruning.structure={structure}: set pruning.structure={made_as}"
            )
        if saved.get("retrain", "rewind") != "rewind" or saved.get("transfer"):
            what = f"retrain={saved['retrain']}" if saved.get("retrain", "rewind") != "rewind" else "itself a transfer"
            raise LotteryError(
                f"transfer.source: {source} is {what}: its tickets do not start from its θk (or θ0) under "
                "their masks, so neither they nor their controls would be what they are called; transfer "
                "from an experiment that rewinds (retrain=rewind)"
            )
        for replicate in range(replicates):
            for level in range(levels + 1):  # level 0: θ0 and θk, the controls' start weights
                directory = paths.level_dir(source, replicate, level)
                metrics_file = paths.metrics_file(directory)
                if not (os.path.isfile(metrics_file) and os.path.isdir(paths.ticket_dir(directory))):
                    raise LotteryError(
                        f"transfer.source: {directory} is not a finished level; the source must have levels "
                        f"0..{levels} of replicates 0..{replicates - 1} (run it with at least "
                        f"levels={levels} replicates={replicates})"
                    )
                try:  # a level is finished only with its result (the report, export, similarity read it)
                    read_json(metrics_file, NETWORK_KEYS)
                except LotteryError:
                    raise LotteryError(
                        f"transfer.source: {metrics_file}: not a readable lottery result; the source is "
                        f"damaged there: delete {directory} and run the source experiment again"
                    ) from None
        for metrics_file in sorted(glob.glob(paths.metrics_file(paths.level_dir(experiment_dir, "*", "*")))):
            try:
                origin = json.load(open(metrics_file)).get("transfer")
            except (OSError, ValueError):
                continue  # a damaged result is named where it is read
            if origin and os.path.realpath(origin["source"]) != os.path.realpath(source):
                print(
                    f"note: {metrics_file} was transferred from {origin['source']}; this invocation's source is "
                    f"{source} "
                    "(the same experiment by its hash, another copy of it)",
                    file=sys.stderr,
                )
                break
        if levels < 1:
            return
        first = paths.level_dir(source, 0, 1)
        found = read_flat(paths.ticket_dir(first), ("mask", "params", "batch_stats"), separator="/", then=REPAIR)
        for group in ("params", "batch_stats"):
            mine = {name: tuple(a.shape) for name, a in masks.flatten(templates[group]).items()}
            theirs = {name: tuple(a.shape) for name, a in found[group].items()}
            for name in sorted(set(mine) | set(theirs)):
                if mine.get(name) != theirs.get(name):
                    raise LotteryError(
                        f"transfer.source: {first}/ticket has {group} {name} of shape "
                        f"{theirs.get(name, 'none')}, this experiment's model has {mine.get(name, 'none')}; a ticket "
                        "transfers to the same model on inputs of the same shape"
                    )

    def mask(self, replicate: int, level: int, template: dict):
        """The mask of the source's ticket at ``level`` (``template``: a saved ticket's structure)."""
        ticket = paths.ticket_dir(paths.level_dir(self.directory, replicate, level))
        return load_tree(ticket, template, then=REPAIR)["mask"]

    def start_weights(self, replicate: int, templates: dict) -> dict:
        """What the pruned levels rewind to (``Transfer.rewound``): the source's θk and its batch
        statistics (level 0's rewind_point/, without its optimizer state: another optimizer's), so
        that a ticket starts bitwise from the source's saved start; with ``transfer.weights=init``,
        the source's θ0 (``templates``: this experiment's params and batch_stats; with a mask for init)."""
        level_0 = paths.level_dir(self.directory, replicate, 0)
        if self.weights == "init":
            return load_tree(paths.ticket_dir(level_0), templates["ticket"], then=REPAIR)  # θ0, dense
        found = read_flat(
            os.path.join(level_0, "rewind_point"), ("params", "batch_stats"), exact=False, separator="/", then=REPAIR
        )
        return {group: masks.unflatten(templates[group], found[group]) for group in ("params", "batch_stats")}

    def recorded(self, replicate: int, level: int) -> Optional[dict]:
        """What metrics.json says of a transferred network's origin (None on level 0: not transferred)."""
        if level == 0:
            return None
        return {
            "source": self.directory,
            "hash": source_hash(self.directory),
            "replicate": replicate,
            "level": level,
            "weights": self.weights,
        }


def resolve(cfg, data_fingerprint: str, rewind: int):
    """The config with ``transfer.source`` resolved to the source's directory (a copy; the caller's
    stays as given), or ``cfg`` itself without a transfer."""
    if cfg.transfer.source is None:
        return cfg
    if rewind != 0:
        raise LotteryError(
            f"rewind={cfg.rewind}: a transfer experiment trains its tickets from step 0 (their start "
            "weights are the source's); use rewind=0it"
        )
    directory = source_directory(cfg, data_fingerprint)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    cfg.transfer.source = directory  # hashed by its config.yaml, recorded as resolved
    return cfg


@method
class Transfer(Method):
    """Each pruned level starts from the source's ticket at that level: no pruning here."""

    label = "ticket transfer"
    between_levels = False  # each level is the source's, not pruned from the last
    # the source's tickets under this experiment's training: its structure (checked against the
    # source's); no retraining rule, criterion or rewound optimizer state of this experiment's
    honours = frozenset({"pruning.structure"})

    check_settings = staticmethod(check)  # its settings' checks that need no data
    resolve = staticmethod(resolve)  # transfer.source by its directory

    @staticmethod
    def switch(cfg) -> str:
        return "transfer.source is set"

    def __init__(self, context):
        super().__init__(context)
        cfg, trainer = context.cfg, context.trainer
        self.source = Source(cfg.transfer.source, cfg.transfer.weights)
        self.source.check(
            cfg.replicates,
            cfg.levels,
            {"params": trainer.init_params, "batch_stats": trainer.init_batch_stats},
            context.directory,
            cfg.pruning.structure,
        )

    @staticmethod
    def chosen(cfg) -> bool:
        return cfg.transfer.source is not None

    def mask(self, replicate: int, level: int):
        return self.source.mask(replicate, level, self.context.template("ticket"))

    def rewound(self, replicate: int, mask) -> dict:
        """The source's start weights under ``mask``, with a fresh optimizer state."""
        trainer = self.context.trainer
        templates = {
            "params": trainer.init_params,
            "batch_stats": trainer.init_batch_stats,
            "ticket": self.context.template("ticket"),
        }
        start = self.source.start_weights(replicate, templates)
        return trainer.init_state(start["params"], start["batch_stats"], mask)

    def record(self, network, level: int, start_state: dict, finished: dict) -> dict:
        origin = self.source.recorded(network.replicate, level)
        return {} if origin is None else {"transfer": origin}

    def cost(self, level: int, start: int, end: int, copies: int):
        return None  # its source's
