"""Structured configs: one dataclass per config group, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts from ``config_schema`` (``Config`` below), so a key that is not declared
here, or a value of the wrong type, fails when Hydra composes the config, before anything runs.
Values that need the data set to check (points in training, batch size) are checked by
``lottery.imp`` before anything is written.
"""

import dataclasses
import math
import os
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")  # conf/ of the checkout


# --- what each group declares beside its schema ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rules:
    """What a config group declares beside its keys (a ``RULES`` class variable of its dataclass):
    how it joins an experiment's identity, which results/identity.py applies without knowing the
    group, and when it is in use, which ``check_unused`` applies: a key of a group that is not in
    use (a method not chosen) is refused the same way for every group."""

    hashed: bool = True  # False: none of its keys change what is computed (recorded per invocation)
    not_hashed: Tuple[str, ...] = ()  # keys that change nothing computed (recorded per invocation)
    # Keys added after experiments existed, at the value that computes what those experiments
    # computed: left out of the identity at that value, so that adding them changed no hash.
    hashed_unless: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # A method's group: in use (and in the identity: absent otherwise, so that adding the method
    # changed no earlier hash) only when this holds of its values.
    in_use: Optional[Callable[[Mapping], bool]] = None
    unused: str = ""  # what is true when it is not in use, and how to use it: for the refusal
    switches: Tuple[str, ...] = ()  # its keys that choose whether it is in use (never "left over")
    by_content: Tuple[str, ...] = ()  # keys naming a file: hashed by its content, not its path
    by_experiment: Tuple[str, ...] = ()  # keys naming an experiment's directory: hashed by its hash
    unused_keys: Optional[Callable[[Mapping], Tuple[str, ...]]] = None  # keys its own settings make moot
    # What the group adds to its identity beside its keys: a rule of the code that changed bits, so
    # that no directory mixes results of the old and the new rule.
    rule_keys: Optional[Callable[[Mapping], Dict[str, Any]]] = None


@dataclasses.dataclass
class ModelConfig:
    name: str = MISSING  # lenet | conv2 | conv4 | conv6 | resnet | vgg | vit
    hidden: List[int] = dataclasses.field(default_factory=lambda: [300, 100])  # lenet fc widths
    depth: int = 20  # resnet: 6n+2 (20, 56, 110); vgg: 11, 13, 16 or 19; vit: transformer blocks
    width: int = 16  # resnet: channels of the first stage (then 2x, 4x)
    init: str = "glorot_normal"  # glorot_normal (Frankle & Carbin) | kaiming_normal (open_lth)
    # vit (lottery/models/vit.py; conf/model/vit.yaml sets them): null for every other model, and
    # then left out of the experiment's hash (results/identity.py), so older experiments keep theirs.
    patch: Optional[int] = None  # side of the square patches, in pixels
    dim: Optional[int] = None  # width of a token
    heads: Optional[int] = None  # attention heads per block
    head_dim: Optional[int] = None  # width of one head; null: dim / heads
    mlp_dim: Optional[int] = None  # hidden units of each block's MLP

    # the ViT's sizes: unset (null) for every other model; head_dim also for a ViT whose heads are dim / heads wide
    RULES: ClassVar[Rules] = Rules(
        hashed_unless={"patch": None, "dim": None, "heads": None, "head_dim": None, "mlp_dim": None}
    )


@dataclasses.dataclass
class DatasetConfig:
    name: str = MISSING  # digits | mnist | fashion_mnist | cifar10 | cifar10_subset | cifar100
    # files live in <root>/<name>/ (cifar10_subset: <root>/cifar10-subset/)
    root: str = "${oc.env:LOTTERY_DATA_DIR,'~/.cache/lottery'}"
    validation: int = 5000  # training examples held out for validation (early stopping)
    # Use only the first N training examples (validation included, held out from their end); the test
    # set stays whole. None: all. A subset is other data: another fingerprint, another experiment.
    subset: Optional[int] = None
    augment: bool = False  # pad-4 random crop and horizontal flip, on the device
    download: bool = True  # fetch missing files from the official source
    # Which labels, where a data set has two kinds: CIFAR-100's fine (100 classes) or coarse (20
    # superclasses). Every other data set has one kind, fine. Hashed unless fine (and the labels
    # read are in the data fingerprint either way).
    labels: str = "fine"

    # root is replaced by the fingerprint of the data read from it
    RULES: ClassVar[Rules] = Rules(not_hashed=("root", "download"), hashed_unless={"subset": None, "labels": "fine"})


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
    # The scores that rank weights (lottery/pruning/criteria.py): magnitude (IMP), random, and the criteria
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
    # What a level prunes (lottery/pruning/structure.py): weights (single weights) | neurons (fc units)
    # | channels (conv channels and fc units) | heads (attention heads) | N:M, e.g. 2:4 (N of every M
    # consecutive weights along a kernel's input axis). Hashed unless weights.
    structure: str = "weights"

    RULES: ClassVar[Rules] = Rules(
        hashed_unless={
            "criterion": "magnitude",
            "prune_at": "trained",
            "rounds": 1,
            "examples": 100,
            "structure": "weights",
        }
    )


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
    # Networks trained together in one vmapped program (lottery/training/trainer.py): a width W, or
    # auto (1 on CPU, where every result stays as before; wider on GPU/TPU). A network's bits depend
    # on W, not on which networks share its stack or where in it: recorded with each invocation,
    # like the loop, not hashed.
    stack: str = "auto"
    # float32, or bfloat16: activations and matmul/conv inputs in bfloat16, parameters, optimizer
    # state and loss in float32 (mixed precision, Micikevicius et al. 2018). Hashed when not float32.
    precision: str = "float32"

    # loop is recorded with the backend in each invocation (a conv model's host and device loops round
    # differently, like two backends) and a change is announced; so is stack (a network's bits depend
    # on the stack's width, as on a backend, never on its stack-mates)
    RULES: ClassVar[Rules] = Rules(not_hashed=("loop", "stack"), hashed_unless={"precision": "float32"})


@dataclasses.dataclass
class SparsityConfig:
    """Sparse training from scratch beside IMP (lottery/pruning/sparse.py): each level L trains one
    network from θ0 at IMP level L's density. Hashed unless method is imp."""

    method: str = "imp"  # imp | static | gmp (Zhu & Gupta 2017) | set (Mocanu et al. 2018) | rigl (Evci et al. 2020)
    distribution: str = "imp"  # per-layer counts: imp (IMP's at the level) | uniform | erk
    update_every: str = "100it"  # ΔT between mask updates (SET, RigL), Δt between pruning steps (GMP)
    drop_fraction: float = 0.3  # α (RigL) / ζ (SET): the fraction of each layer's weights updated at first
    decay: str = "cosine"  # of the drop fraction: cosine (to 0 at `end`) | constant
    begin: float = 0.0  # fraction of training before the first update (GMP: t0; SET/RigL: the first update iteration)
    end: float = 0.75  # fraction of training after which the mask stays (RigL: 0.75; GMP: t0 + nΔt)
    levels: List[int] = dataclasses.field(default_factory=list)  # train only these levels ([]: all); not hashed

    RULES: ClassVar[Rules] = Rules(
        not_hashed=("levels",),
        in_use=lambda group: group["method"] != "imp",
        switches=("method",),
        # SET and RigL (drop_grow, pruning/sparse.py): an update iteration skips the optimizer step
        # (Evci et al. 2020, Alg. 1), bits other than before that rule
        rule_keys=lambda group: {"update_step": "skip"} if group["method"] in ("set", "rigl") else {},
        unused="sparsity.method is imp (IMP: each level pruned from the last, no sparse training): choose a "
        "sparse-training method (sparsity=static, gmp, set or rigl)",
    )


@dataclasses.dataclass
class SwampConfig:
    """Weight averaging inside IMP (SWAMP, Choi et al. 2024; lottery/imp/swamp.py). Hashed unless
    particles is 1 (plain IMP)."""

    particles: int = 1  # copies of each level's ticket trained from its start, averaged before pruning
    average_from: float = 1.0  # each particle averages its epoch-end weights from this fraction of training (SWA)

    RULES: ClassVar[Rules] = Rules(
        in_use=lambda group: group["particles"] != 1,
        switches=("particles",),
        unused="swamp.particles is 1 (plain IMP, no weight averaging): set swamp.particles >= 2",
    )


@dataclasses.dataclass
class EarlyBirdConfig:
    """Early-Bird tickets (You et al. 2020; lottery/imp/early_bird.py): each level's mask drawn from
    the previous level's weights once the masks they give stop changing. Hashed when enabled."""

    enabled: bool = False
    epsilon: float = 0.1  # the mask distance (fraction of prunable weights that differ) below which masks settle
    window: int = 5  # consecutive distances below epsilon (You et al.'s FIFO queue of 5)
    every: str = "1ep"  # steps between checks (You et al.: every epoch)

    RULES: ClassVar[Rules] = Rules(
        in_use=lambda group: group["enabled"],
        switches=("enabled",),
        unused="early_bird.enabled is false: set early_bird.enabled=true",
    )


@dataclasses.dataclass
class DietConfig:
    """Data diets (Paul, Ganguli & Dziugaite 2021; Paul, Larsen, Ganguli, Frankle & Dziugaite 2022;
    lottery/imp/diet.py): the dense level 0 pre-trains its first `pretrain` steps on a subset of the
    training set chosen by how hard each example is, scored early in training of independent dense
    networks; every level then rewinds to those weights and trains on the whole set. Hashed when
    a score or a scores file is set."""

    # el2n | grand: computed here | random: uniform, the random-subset control (null: no diet, unless
    # `scores` is given)
    score: Optional[str] = None
    scores: Optional[str] = None  # a scores.npy to use instead (another run's, model's): hashed by its content
    # When the scoring networks are scored; null: a tenth of training (Paul et al. 2021: EL2N at
    # epoch 20 of 200; GraNd also at initialization, 0it).
    score_at: Optional[str] = None
    networks: int = 4  # independent scoring networks the scores are averaged over (Paul et al. 2021: 10)
    keep: float = 0.1  # the fraction of the training set pre-trained on (Paul et al. 2022: a small fraction suffices)
    # easy: the lowest scores (Paul et al. 2022: fewest pre-training steps) | hard: the highest
    subset: str = "easy"
    # the fraction left out at the subset's end before keeping (hard: the very hardest, Paul et al.
    # 2021, Sec. 4; easy: the very easiest)
    offset: float = 0.0
    balance: bool = False  # keep each class's share of the set, from each class's own ranking
    pretrain: Optional[str] = None  # steps [0, pretrain) of level 0 on the subset (null: the rewind step k)

    RULES: ClassVar[Rules] = Rules(
        hashed_unless={"balance": False},
        in_use=lambda group: group["score"] is not None or group["scores"] is not None,
        switches=("score", "scores"),
        by_content=("scores",),
        unused="no diet is: set diet.score (el2n, grand, random) or diet.scores (a file)",
        # a scores file or random scores: no scoring networks
        unused_keys=lambda group: (
            ("score_at", "networks") if group["scores"] is not None or group["score"] == "random" else ()
        ),
    )


@dataclasses.dataclass
class LMCConfig:
    """Linear mode connectivity (Frankle et al. 2020): at each of `levels`, two copies trained
    from the level's start with different data orders, evaluated along the line between them."""

    levels: List[int] = dataclasses.field(default_factory=list)
    points: int = 30  # evenly spaced points on the path, endpoints included
    # Level-to-level connectivity (Paul et al. 2023): at every pruned level L, the error along the
    # line from level L-1's trained weights pruned to level L's mask to level L's trained weights.
    between_levels: bool = False

    # levels only add networks; points is recorded in each LMC result, which is re-measured from its
    # saved copies when asked for another count
    RULES: ClassVar[Rules] = Rules(hashed=False)


@dataclasses.dataclass
class MeshConfig:
    """How a level's networks and their batches are laid over the devices (lottery/training/mesh.py):
    a mesh of `members` x `data` devices. 0 is "the rest": both 0 (auto) uses every device, along
    members when a level has at least as many networks as devices, else along the batch."""

    members: int = 0  # devices that train different networks, with no communication
    data: int = 0  # devices that split one network's batch, gradients averaged by XLA

    # member-parallel is bitwise one device, data-parallel sums gradients in another order: recorded
    RULES: ClassVar[Rules] = Rules(hashed=False)


@dataclasses.dataclass
class DistributedConfig:
    """Several processes (hosts) in one run, through jax.distributed. Unset: detected under SLURM
    (a job step with more than one task) and from JAX's JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES
    / JAX_PROCESS_ID; otherwise one process."""

    coordinator: Optional[str] = None  # host:port of process 0
    num_processes: Optional[int] = None
    process_id: Optional[int] = None

    RULES: ClassVar[Rules] = Rules(hashed=False)


@dataclasses.dataclass
class TransferConfig:
    """Ticket transfer (lottery/imp/transfer.py): each pruned level starts from another experiment's
    ticket at that level (its mask and start weights) and trains with this experiment's data,
    optimizer and training."""

    source: Optional[str] = None  # the source experiment's directory, or the overrides that run it
    weights: str = "ticket"  # ticket: the source ticket's start weights (θk ⊙ mask) | init: the source's θ0 ⊙ mask

    RULES: ClassVar[Rules] = Rules(
        in_use=lambda group: group["source"] is not None,
        switches=("source",),
        by_experiment=("source",),
        unused="transfer.source is not set: set it to the experiment whose tickets to train",
    )


@dataclasses.dataclass
class WandbConfig:
    """Weights & Biases tracking (lottery/tracking.py)."""

    mode: str = "${oc.env:WANDB_MODE,offline}"  # online | offline | disabled
    project: str = "lottery"
    entity: Optional[str] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    log_ticket: bool = False  # upload the last level's ticket (mask + starting weights) as an artifact

    RULES: ClassVar[Rules] = Rules(hashed=False)


@dataclasses.dataclass
class ObjectiveConfig:
    """A value computed from an experiment's finished results at the end of each run, printed,
    written to ``objectives.json`` and returned to Hydra sweepers (lottery/analysis/objective.py)."""

    # none | accuracy (test accuracy at a level) | auc (mean test accuracy over log10(1/density)
    # from the dense network to a level) | lmc_barrier (LMC error barrier at a level in lmc.levels)
    name: str = "none"
    at: str = "early_stop"  # accuracy at the early-stopping iteration, or final
    level: Optional[int] = None  # this level; None (and no `remaining`): the last level
    remaining: Optional[float] = None  # % of weights remaining: the level closest to it (auc: up to it)
    kind: str = "ticket"  # ticket, or a control in `controls` (CONTROLS)

    # read from the finished results, after training, and changes none of them
    RULES: ClassVar[Rules] = Rules(hashed=False)


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
    controls: List[str] = dataclasses.field(default_factory=list)  # lottery/pruning/controls.py
    sparsity: SparsityConfig = dataclasses.field(default_factory=SparsityConfig)
    swamp: SwampConfig = dataclasses.field(default_factory=SwampConfig)
    early_bird: EarlyBirdConfig = dataclasses.field(default_factory=EarlyBirdConfig)
    diet: DietConfig = dataclasses.field(default_factory=DietConfig)
    lmc: LMCConfig = dataclasses.field(default_factory=LMCConfig)
    transfer: TransferConfig = dataclasses.field(default_factory=TransferConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    output_dir: str = "runs"
    # Inside a level: steps (500it, 10ep) or a duration of training (30s, 5min, 1h; at the first
    # epoch end after it). A duration costs nothing on a short level, where steps would write
    # checkpoints that take longer than what they save (the quickstart: 22 in 0.5 s levels).
    checkpoint_every: str = "5min"
    # XLA's deterministic GPU operations (--xla_gpu_deterministic_ops): the same bits from run to
    # run on one GPU, at some speed. CPU runs are deterministic either way. Recorded, not hashed.
    deterministic: bool = False  # checkpoints inside a level (at the end of a compiled chunk)
    progress: bool = True  # progress bar
    # JAX's persistent compilation cache: a repeated run skips XLA compilation ("" turns it off).
    compilation_cache: str = "${oc.env:LOTTERY_JAX_CACHE,'~/.cache/lottery/jax'}"


# Keys of the top level that change nothing computed: `levels`, `replicates` and `controls` only add
# networks (a network's bits do not depend on what it is trained beside); `checkpoint_every` does
# not change bits (resume is bitwise); `deterministic` is GPU only and recorded; the rest are
# names, places and display. Each group's own are in its RULES.
NOT_HASHED = (
    "name",
    "levels",
    "replicates",
    "controls",
    "output_dir",
    "progress",
    "compilation_cache",
    "checkpoint_every",
    "deterministic",
)


def group_rules() -> Dict[str, Rules]:
    """Every config group's declared rules (a group without RULES: hashed whole, always in use)."""
    return {
        field.name: getattr(field.type, "RULES", Rules())
        for field in dataclasses.fields(Config)
        if dataclasses.is_dataclass(field.type)
    }


def not_hashed() -> Tuple[str, ...]:
    """Every key left out of the identity, dotted: the top level's and each group's."""
    out = list(NOT_HASHED)
    for group, rules in group_rules().items():
        out += [group] if not rules.hashed else [f"{group}.{key}" for key in rules.not_hashed]
    return tuple(out)


def check_unused(cfg) -> None:
    """A key of a group not in use (a method not chosen) set away from its default does nothing:
    refused, the same way for every group that declares when it is in use."""
    from lottery.errors import LotteryError

    schema = Config()
    for group, rules in group_rules().items():
        if rules.in_use is None:
            continue
        values, defaults = cfg[group], dataclasses.asdict(getattr(schema, group))
        used = rules.in_use(values)
        moot = () if not used else (rules.unused_keys(values) if rules.unused_keys else ())
        for key, default in defaults.items():
            if key in rules.switches or (used and key not in moot):
                continue
            value = values[key]
            value = list(value) if isinstance(default, list) else value
            if value != default:
                if used:
                    raise LotteryError(
                        f"{group}.{key}={value} does nothing with these {group} settings; leave it at {default}"
                    )
                raise LotteryError(
                    f"{group}.{key}={value} is set, but {rules.unused}, or leave {group}'s other keys alone"
                )


def levels_to_reach(remaining: float, rate: float) -> int:
    """The fewest pruning levels after which (1 - rate)^levels <= remaining / 100: config
    ``levels: ${lottery.levels_to_reach:${objective.remaining},${pruning.rate}}`` trains as many
    levels as a search's target needs at each pruning rate (conf/hparams_search/). It counts the fc
    rate alone: where conv layers or the output layer are pruned more slowly (conv_rate, output_rate)
    the overall density falls more slowly, and a preset should ask for a level or two more."""
    if remaining is None or not 0 < remaining <= 100 or not 0 < rate < 1:
        raise ValueError(
            f"lottery.levels_to_reach: needs 0 < remaining <= 100 and 0 < rate < 1, got {remaining}, {rate}"
        )
    return max(0, math.ceil(math.log(remaining / 100) / math.log(1 - rate) - 1e-9))


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    OmegaConf.register_new_resolver("lottery.levels_to_reach", levels_to_reach, replace=True)


register()
