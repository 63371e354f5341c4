"""Structured configs: one dataclass per config group, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts from ``config_schema`` (``Config`` below), so a key that is not declared
here, or a value of the wrong type, fails when Hydra composes the config, before anything runs.
Values that need the data set to check (points in training, batch size) are checked by
``lottery.imp`` before anything is written.
"""

import dataclasses
import hashlib
import json
import math
import os
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")  # conf/ of the checkout


@dataclasses.dataclass
class ModelConfig:
    name: str = MISSING  # lenet | conv2 | conv4 | conv6 | resnet | vgg
    hidden: List[int] = dataclasses.field(default_factory=lambda: [300, 100])  # lenet fc widths
    depth: int = 20  # resnet: 6n+2 (20, 56, 110); vgg: 11, 13, 16 or 19
    width: int = 16  # resnet: channels of the first stage (then 2x, 4x)
    init: str = "glorot_normal"  # glorot_normal (Frankle & Carbin) | kaiming_normal (open_lth)


@dataclasses.dataclass
class DatasetConfig:
    name: str = MISSING  # digits | mnist | fashion_mnist | cifar10
    root: str = "${oc.env:LOTTERY_DATA_DIR,'~/.cache/lottery'}"  # files live in <root>/<name>/
    validation: int = 5000  # training examples held out for validation (early stopping)
    augment: bool = False  # pad-4 random crop and horizontal flip, on the device
    download: bool = True  # fetch missing files from the official source


@dataclasses.dataclass
class OptimizerConfig:
    name: str = MISSING  # sgd | adam
    lr: float = MISSING
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0  # L2 added to the gradient, as torch.optim does
    b1: float = 0.9  # adam
    b2: float = 0.999  # adam
    eps: float = 1e-8  # adam


@dataclasses.dataclass
class PruningConfig:
    strategy: str = "layerwise"  # layerwise | global
    # Fraction of the *remaining* weights removed per level: of each fc layer (layerwise), or of all
    # prunable weights together (global).
    rate: float = 0.2
    conv_rate: Optional[float] = None  # layerwise, conv layers; None: same as `rate`
    output_rate: Optional[float] = None  # layerwise, output layer; None: rate / 2 (F&C 2019)
    # Parameter paths (regular expressions, full match, e.g. "output/kernel") never pruned.
    # Biases and normalization parameters are never pruned in any case.
    ignore: List[str] = dataclasses.field(default_factory=list)
    # The scores that rank weights (lottery/criteria.py): magnitude (IMP), random, and the criteria
    # of pruning at initialization registered there.
    criterion: str = "magnitude"
    # Which weights are scored: trained (IMP: each level prunes the previous level's trained weights)
    # or start (pruning before training: each level's mask is computed from the weights training
    # starts from -- θ0, or θk with rewind=k -- straight to the level's counts, then trained once).
    prune_at: str = "trained"
    rounds: int = 1  # prune_at=start: prune in this many rounds, density shrinking exponentially (SynFlow: 100)
    # data-dependent criteria: the examples scored, the first of the stored training split (validation
    # is held out at its end): the same in every run and level, not the shuffled training order
    examples: int = 100


@dataclasses.dataclass
class TrainingConfig:
    steps: str = MISSING  # length of training, e.g. 50000it or 160ep
    batch_size: int = 60
    eval_every: str = "100it"  # validation and test evaluation interval
    eval_batch_size: int = 1000
    milestones: List[str] = dataclasses.field(default_factory=list)  # lr x gamma at each
    gamma: float = 0.1
    warmup: str = "0it"  # linear learning-rate warmup from 0
    # Where the loop over steps runs: device (a compiled loop of steps per dispatch), host (one
    # compiled step per dispatch), auto (host for conv models on CPU, where XLA runs convolutions
    # in loop bodies slowly; device otherwise). Not part of the experiment's hash.
    loop: str = "auto"


@dataclasses.dataclass
class LMCConfig:
    """Linear mode connectivity (Frankle et al. 2020): at each of `levels`, two copies trained
    from the level's start with different data orders, evaluated along the line between them."""

    levels: List[int] = dataclasses.field(default_factory=list)
    points: int = 30  # evenly spaced points on the path, endpoints included


@dataclasses.dataclass
class MeshConfig:
    """How a level's networks and their batches are laid over the devices (lottery/distributed.py):
    a mesh of `members` x `data` devices. 0 is "the rest": both 0 (auto) uses every device, along
    members when a level has at least as many networks as devices, else along the batch."""

    members: int = 0  # devices that train different networks, with no communication
    data: int = 0  # devices that split one network's batch, gradients averaged by XLA


@dataclasses.dataclass
class DistributedConfig:
    """Several processes (hosts) in one run, through jax.distributed. Unset: detected under SLURM
    (a job step with more than one task) and from JAX's JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES
    / JAX_PROCESS_ID; otherwise one process."""

    coordinator: Optional[str] = None  # host:port of process 0
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


@dataclasses.dataclass
class TransferConfig:
    """Ticket transfer (lottery/transfer.py): each pruned level starts from another experiment's
    ticket at that level (its mask and start weights) and trains with this experiment's data,
    optimizer and training."""

    source: Optional[str] = None  # the source experiment's directory, or the overrides that run it
    weights: str = "ticket"  # ticket: the source ticket's start weights (θk ⊙ mask) | init: the source's θ0 ⊙ mask


@dataclasses.dataclass
class WandbConfig:
    """Weights & Biases tracking (lottery/tracking.py)."""

    mode: str = "${oc.env:WANDB_MODE,offline}"  # online | offline | disabled
    project: str = "lottery"
    entity: Optional[str] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    log_ticket: bool = False  # upload the last level's ticket (mask + starting weights) as an artifact


@dataclasses.dataclass
class ObjectiveConfig:
    """A value computed from an experiment's finished results at the end of each run, printed,
    written to ``objectives.json`` and returned to Hydra sweepers (lottery/objective.py)."""

    # none | accuracy (test accuracy at a level) | auc (mean test accuracy over log10(1/density)
    # from the dense network to a level) | lmc_barrier (LMC error barrier at a level in lmc.levels)
    name: str = "none"
    at: str = "early_stop"  # accuracy at the early-stopping iteration, or final
    level: Optional[int] = None  # this level; None (and no `remaining`): the last level
    remaining: Optional[float] = None  # % of weights remaining: the level closest to it (auc: up to it)
    kind: str = "ticket"  # ticket, or a control in `controls` (CONTROLS)


# The controls a ticket can be trained beside (lottery/controls.py); the order gives each its PRNG
# stream: new ones go at the end.
CONTROLS = ("random_reinit", "random_prune", "shuffle_layer", "invert", "sign_preserving_reinit")


@dataclasses.dataclass
class Config:
    name: str = "quickstart"  # experiment name: first part of the results directory's name
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    pruning: PruningConfig = dataclasses.field(default_factory=PruningConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    rewind: str = "0it"  # rewind step k: each level restarts from the dense run's weights at k
    rewind_optimizer: bool = False  # restart levels from the optimizer state at k (else fresh)
    # How a pruned network is retrained (Renda et al. 2020): rewind (weights to θk, schedule from
    # k), lr_rewind (trained weights, schedule from k), finetune (trained weights, final lr).
    retrain: str = "rewind"
    finetune_steps: Optional[str] = None  # length of fine-tuning; None: T - k, rewinding's budget
    levels: int = 3  # pruning levels after the dense level 0
    seed: int = 0
    replicates: int = 1  # independent IMP trajectories (own initialization, data order, masks)
    controls: List[str] = dataclasses.field(default_factory=list)  # of CONTROLS (lottery/controls.py)
    lmc: LMCConfig = dataclasses.field(default_factory=LMCConfig)
    transfer: TransferConfig = dataclasses.field(default_factory=TransferConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    output_dir: str = "runs"
    checkpoint_every: str = "10ep"  # checkpoints inside a level (at the end of a compiled chunk)
    progress: bool = True  # progress bar
    # JAX's persistent compilation cache: a repeated run skips XLA compilation ("" turns it off).
    compilation_cache: str = "${oc.env:LOTTERY_JAX_CACHE,'~/.cache/lottery/jax'}"


# Keys that do not change what is computed, so they stay out of the experiment's identity and its
# hash. Each is safe for a finished result: `levels`, `replicates`, `controls` and `lmc.levels` only
# add networks (a network's bits do not depend on what it is trained beside); `lmc.points` is
# recorded in each LMC result, which is re-measured from its saved copies when asked for another
# count; `checkpoint_every` does not change bits (resume is bitwise); `dataset.root` is replaced by
# the fingerprint of the data read from it; `training.loop` is recorded with the backend in each
# invocation (a conv model's host and device loops round differently, like two backends) and a
# change is announced; so are `mesh` and `distributed` (member-parallel is bitwise one device,
# data-parallel sums gradients in another order); `objective` is read from the finished results,
# after training, and changes none of them (a search asks the same experiment for several); the
# rest are names, places and display.
_NOT_HASHED = ("name", "levels", "replicates", "controls", "lmc", "objective", "output_dir", "progress", "wandb",
               "compilation_cache", "checkpoint_every",
               "dataset.root", "dataset.download", "training.loop", "mesh", "distributed")


# What determines the dense level 0 (lottery/dense.py): how the network is built, the data, the
# optimizer, training and the seed (with the replicate, its PRNG keys). Not how it is pruned,
# rewound or retrained afterwards, so every experiment that differs only there shares one dense run.
DENSE = ("model", "dataset", "optimizer", "training", "seed")


def extent(cfg: DictConfig) -> dict:
    """The keys of ``_NOT_HASHED`` as this invocation set them (recorded, not hashed)."""
    content = OmegaConf.to_container(cfg, resolve=True)
    out = {}
    for dotted in _NOT_HASHED:
        node = content
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[dotted] = node
    return out


# Keys added after experiments existed, at the value that computes what those experiments computed:
# left out of the identity at that value, so that adding them changed no experiment's hash.
_HASHED_UNLESS = {"pruning.criterion": "magnitude", "pruning.prune_at": "trained", "pruning.rounds": 1,
                  "pruning.examples": 100}


def identity(cfg: DictConfig, data_fingerprint: str) -> dict:
    """What determines an experiment's results: the resolved config without the keys in
    ``_NOT_HASHED`` (and those of ``_HASHED_UNLESS`` at their value), and the fingerprint of the
    data's content (``lottery.data.fingerprint``)."""
    content = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _NOT_HASHED + tuple(_HASHED_UNLESS):
        *parents, leaf = dotted.split(".")
        node = content
        for parent in parents:
            node = node[parent]
        if dotted in _HASHED_UNLESS and node.get(leaf) != _HASHED_UNLESS[dotted]:
            continue
        node.pop(leaf, None)
    content["dataset"]["fingerprint"] = data_fingerprint
    transfer = content.pop("transfer", None)  # absent unless set: every earlier hash unchanged
    if transfer is not None and transfer.get("source") is not None:
        from lottery.transfer import identity as source_identity

        content["transfer"] = {**transfer, "source": source_identity(transfer["source"])}  # by its hash, not its path
    return content


def dense_identity(cfg: DictConfig, data_fingerprint: str) -> dict:
    """What determines the dense level 0: the keys of ``DENSE`` of the experiment's identity."""
    content = identity(cfg, data_fingerprint)
    return {key: content[key] for key in DENSE}


def digest(content: dict) -> str:
    """Content hash of an identity: the last part of a results directory's name."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def experiment_hash(cfg: DictConfig, data_fingerprint: str) -> str:
    """Content hash of the experiment's ``identity``: the results directory's name."""
    return digest(identity(cfg, data_fingerprint))


def levels_to_reach(remaining: float, rate: float) -> int:
    """The fewest pruning levels after which (1 - rate)^levels <= remaining / 100: config
    ``levels: ${lottery.levels_to_reach:${objective.remaining},${pruning.rate}}`` trains as many
    levels as a search's target needs at each pruning rate (conf/hparams_search/). It counts the fc
    rate alone: where conv layers or the output layer are pruned more slowly (conv_rate, output_rate)
    the overall density falls more slowly, and a preset should ask for a level or two more."""
    if remaining is None or not 0 < remaining <= 100 or not 0 < rate < 1:
        raise ValueError(f"lottery.levels_to_reach: needs 0 < remaining <= 100 and 0 < rate < 1, got {remaining}, {rate}")
    return max(0, math.ceil(math.log(remaining / 100) / math.log(1 - rate) - 1e-9))


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def legacy(dotted: str) -> bool:
    """Whether a key of a saved identity no longer exists (an older version's, e.g. ``parallel``):
    it said nothing about what this version computes."""
    if dotted in ("name", "dataset.fingerprint"):
        return False
    schema = flatten(OmegaConf.to_container(OmegaConf.structured(Config), resolve=False))
    return not any(dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + ".") for key in schema)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    OmegaConf.register_new_resolver("lottery.levels_to_reach", levels_to_reach, replace=True)


register()
