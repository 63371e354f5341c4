"""What a level asks of a method: the seams of the story levels.py tells.

A level is the same story for every method: prune -> rewind -> controls -> train -> record. What
differs between IMP, pruning before training, ticket transfer, sparse training from scratch,
Early-Bird draws, SWAMP's weight averaging and data diets is behind the few questions below, each
answered by one module (its class, a subclass of ``Method``, registered with ``@method``):

  trains(level)                   is this level trained? (sparse training: ``sparsity.levels``)
  mask(replicate, level)          the ticket's mask (IMP: the previous level's trained weights ranked)
  start(replicate, level, mask)   the ticket's training state from it (rewind to θk, or keep weights)
  ticket(replicate, level)        both at once, for a method whose start is its own (sparse training)
  rewound(replicate, mask)        a network from θk under a mask, as the ticket and controls start
  ranking(replicate, level)       the scores the ticket's mask came from (the invert control)
  updating                        a trainer whose steps move the mask: the ticket trains alone with it
  extra_networks(...)             networks trained beside the ticket and folded into it (SWAMP)
  keep_steps(...)                 steps whose weights training keeps for ``after_training``
  after_training(...)             what training gives the ticket besides its weights (draws, averages)
  record(...)                     what metrics.json says of the method, per network
  saved_start(...)                the ticket as saved (sparse training: the mask it ended with)
  cost(level, start, end)         the training steps behind a network of the level
  level_0(...), level_0_trainer   what a method does to the dense level 0 (a data diet)
  between_levels                  whether each level is pruned from the last (level-to-level LMC)
  label, switch(cfg)              what the method is called, and the setting that chose it (messages)
  honours, ranks, works_with      what it gives meaning to: the one compatibility check (``check``)

Exactly one method makes tickets (``makes_tickets``); the others change how they train (SWAMP) or
how the dense network they rewind to is trained (diets), and are chosen beside it. ``choose`` reads
the config once, in ``prepare``; nothing else asks which method runs. Each registered class says
when it is chosen (``chosen(cfg)``) and is built from a ``Context``: what it may read of its
experiment, and nothing else (as a control reads ``controls.Context``). A method registers by being
imported: every module of ``lottery.imp`` is (``load``), so adding one is its module, its config
group (config.py) and its tests.
"""

import dataclasses
import functools
import importlib
import os
import pkgutil
from typing import Any, Callable, Dict, List, Optional, Tuple

from lottery.errors import LotteryError
from lottery.step import Every
from lottery.training import trainer as training
from lottery.training.loop import Network


@dataclasses.dataclass
class Outcome:
    """What a method's ``after_training`` gives one trained network: weights and history that
    replace training's (SWAMP's average), a record for metrics.json, and files to keep beside it."""

    trained: Optional[dict] = None
    history: Optional[list] = None
    record: Dict[str, object] = dataclasses.field(default_factory=dict)
    save: Optional[Callable[[str], None]] = None  # writes into the network's directory being made


@dataclasses.dataclass(frozen=True)
class Context:
    """What a method reads of its experiment (built once by ``prepare``; the method keeps it as
    ``self.context``): its settings, trainer and names, and the few things every level asks of the
    experiment's results. Nothing else of the experiment (its tracker, invocation, other methods)."""

    cfg: Any  # the experiment's config (a transfer's source resolved)
    trainer: training.Trainer  # the experiment's (a method with mask updates builds its own from it)
    prunable: List[str]  # paths of the prunable tensors
    structure: Any  # pruning.structure.Structure: what a level prunes (weights, units, N:M blocks)
    end: int  # T, the last step of training
    rewind: int  # k, the rewind step
    checkpoint_every: Every  # lottery/step.py
    directory: str  # the experiment's directory
    data_fingerprint: str
    keys: Callable[[int], Dict[str, Any]]  # a replicate's PRNG keys (init, data, augment, controls, lmc)
    sparse_key: Callable[[int, int], Any]  # (replicate, level): sparse training's key
    dense_start: Callable[[int], dict]  # a replicate's θ0, dense, as a training state
    level_dir: Callable[[int, int], str]  # (replicate, level) -> its ticket's directory
    template: Callable[[str], dict]  # what orbax restores a saved ``ticket``/``trained``/... to
    load: Callable[[str, str], dict]  # (directory, what): one saved tree of a network's directory
    rewind_point: Callable[[int], dict]  # θk of a replicate, with its optimizer state
    scoring_context: Callable[..., Any]  # (replicate, level, weights, mask) -> criteria.Context
    dense_directory: Callable[[], str]  # the shared dense run level 0 links to (dense.py)
    level_0_trainer: Callable[..., training.Trainer]  # (dense_directory, say): level 0's trainer (a diet's)


class Method:
    """The seams of a level, answered as IMP answers them; a method overrides what it changes."""

    label = "IMP"
    makes_tickets = True  # False: it changes how another method's tickets train (SWAMP, diets)
    fallback = False  # the method that makes tickets when no other is chosen (IMP)
    between_levels = True  # each level pruned from the last (level-to-level LMC means something)
    honours: frozenset = frozenset()  # the SETTINGS it gives meaning to (any other must stay at its default)
    ranks = False  # its masks come from a ranking that a control can reverse (invert)
    works_with: Tuple[str, ...] = ()  # a method that does not make tickets: the makers it changes

    def __init__(self, context: Context):
        self.context = context

    @staticmethod
    def switch(cfg) -> str:
        """The setting that chose it, as a user wrote it."""
        return ""

    @staticmethod
    def chosen(cfg) -> bool:
        return False

    @staticmethod
    def check_settings(cfg) -> None:
        """Its own settings' checks that need no data (run on every config: leftover keys of a
        method not chosen are config.check_unused's)."""

    @staticmethod
    def check_data(cfg, checked) -> None:
        """Its checks that need the data set too (``checks.Checked``: its size, the points of
        training in iterations), run where it is chosen, before JAX starts."""

    @staticmethod
    def resolve(cfg, data_fingerprint: str, rewind: int):
        """The config as the chosen method runs it, once the data is known (a transfer's source by
        its directory): ``cfg`` itself, or a copy."""
        return cfg

    # --- what a level trains ---

    def trains(self, level: int) -> bool:
        return True

    def mask(self, replicate: int, level: int):
        raise NotImplementedError

    def start(self, replicate: int, level: int, mask) -> dict:
        """The ticket's training state under ``mask``: the survivors rewound to θk."""
        return self.rewound(replicate, mask)

    def ticket(self, replicate: int, level: int) -> dict:
        """An unfinished level's ticket: 1. prune, 2. rewind (or keep the trained weights)."""
        return self.start(replicate, level, self.mask(replicate, level))

    def rewound(self, replicate: int, mask) -> dict:
        return theta_k_start(self.context, replicate, mask)

    def ranking(self, replicate: int, level: int):
        raise LotteryError("this experiment's tickets are not ranked by a criterion")

    updating: Optional[training.Trainer] = None

    def extra_networks(self, replicate: int, level: int, ticket: Network) -> List[Network]:
        return []

    def keep_steps(self, networks: List[Network], start: int, end: int) -> List[int]:
        return []

    def after_training(
        self, networks: List[Network], states, kept: Dict[int, dict], histories, end: int
    ) -> Dict[int, Outcome]:
        return {}

    # --- what is recorded ---

    def record(self, network: Network, level: int, start_state: dict, finished: dict) -> dict:
        return {}

    def saved_start(self, start_state: dict, finished: dict) -> dict:
        return start_state

    def cost(self, level: int, start: int, end: int, copies: int) -> Optional[int]:
        """IMP's: the dense T and every retraining up to the level (``copies``: SWAMP's particles)."""
        return self.context.end + level * copies * (end - start)

    copies = 1  # networks trained for each ticket (SWAMP's particles)

    # --- level 0 ---

    def level_0(self, dense_directory: str, say) -> None:
        pass

    def level_0_trainer(self, trainer: training.Trainer, dense_directory: str, say) -> training.Trainer:
        return trainer

    def dense_identity(self) -> dict:
        """What this method adds to the identity of the dense run it rewinds to (a diet's pre-training)."""
        return {}


REGISTRY: List[type] = []  # in the order the modules were imported


def method(cls: type) -> type:
    """Register a method class: ``choose`` builds it for every config it is ``chosen`` by."""
    REGISTRY.append(cls)
    REGISTRY_LABELS[cls.__name__] = cls.label
    return cls


# The modules of lottery.imp that tell the story and hold no method; every other one is a method's.
STORY = ("checks", "dense", "experiment", "finish", "levels", "lmc", "method")


@functools.cache
def load() -> None:
    """Import every method module of ``lottery.imp``: each method registers by being imported, in the
    order of its module's name (the order ``choose`` returns the methods that change how tickets
    train). They import no JAX until they run (``check`` runs before JAX starts). Once a process:
    ``registered`` asks at every check of a sweep's jobs."""
    for module in sorted(m.name for m in pkgutil.iter_modules([os.path.dirname(__file__)])):
        if module not in STORY:
            importlib.import_module(f"{__package__}.{module}")


def registered() -> List[type]:
    """Every registered method, those of ``lottery.imp`` by their module's name, then any other (a
    user's, a test's) in the order they were registered."""
    load()
    ours = sorted((cls for cls in REGISTRY if cls.__module__.startswith("lottery.imp.")), key=lambda c: c.__module__)
    return ours + [cls for cls in REGISTRY if cls not in ours]


def choose(context: Context) -> Tuple[Method, ...]:
    """The methods of ``context.cfg``, built: the one that makes its tickets first (IMP when no
    other does), then those that change how they train."""
    chosen = [cls for cls in registered() if cls.chosen(context.cfg)]
    makers = [cls for cls in chosen if cls.makes_tickets and not cls.fallback] or [
        cls for cls in chosen if cls.makes_tickets
    ]
    if len(makers) != 1:  # ``check`` refuses these first; this says so if one slips past
        raise LotteryError(
            f"{' and '.join(cls.__name__ for cls in makers) or 'no method'} would make this "
            "experiment's tickets; choose one"
        )
    return tuple(cls(context) for cls in makers + [cls for cls in chosen if not cls.makes_tickets])


def check_data(cfg, checked) -> None:
    """The chosen methods' checks that need the data set too (``Method.check_data``)."""
    for cls in registered():
        if cls.chosen(cfg):
            cls.check_data(cfg, checked)


def resolve(cfg, data_fingerprint: str, rewind: int):
    """The config as its chosen methods run it (``Method.resolve``)."""
    for cls in registered():
        if cls.chosen(cfg):
            cfg = cls.resolve(cfg, data_fingerprint, rewind)
    return cfg


# Settings whose meaning belongs to the method that makes the tickets, at the value that means
# "nothing asked": a method declares those it honours; any other set away from it is refused.
SETTINGS = {
    "retrain": "rewind",
    "rewind_optimizer": False,
    "pruning.criterion": "magnitude",
    "pruning.structure": "weights",
}


def check(cfg) -> None:
    """Each method's own settings (``check_settings``), then the one compatibility check of the
    methods a config chooses, read from what each declares (``makes_tickets``, ``honours``,
    ``ranks``, ``works_with``, ``between_levels``): one method makes
    the tickets; a setting it does not honour stays at its default; a method that changes how
    tickets train works with the one that makes them; ``invert`` needs a ranking; level-to-level LMC
    needs levels pruned from the last. No data needed: each job of a sweep is checked before any starts."""
    from omegaconf import OmegaConf

    text = lambda value: str(value).lower() if isinstance(value, bool) else str(value)
    for cls in registered():
        cls.check_settings(cfg)
    chosen = [cls for cls in registered() if cls.chosen(cfg)]
    makers = [cls for cls in chosen if cls.makes_tickets and not cls.fallback] or [
        cls for cls in chosen if cls.makes_tickets
    ]
    if len(makers) > 1:
        raise LotteryError(
            f"{makers[0].switch(cfg)} and {makers[1].switch(cfg)}: each makes the levels' tickets "
            f"({makers[0].label}; {makers[1].label}); choose one"
        )
    maker = makers[0]
    made_by = f"{maker.label} ({maker.switch(cfg)})" if maker.switch(cfg) else maker.label
    for key, default in SETTINGS.items():
        value = OmegaConf.select(cfg, key)
        if value != default and key not in maker.honours:
            raise LotteryError(
                f"{key}={text(value)}: {made_by} makes this experiment's tickets and does not use it; "
                f"leave {key} at {text(default)}"
            )
    for other in chosen:
        if not other.makes_tickets and maker.__name__ not in other.works_with:
            raise LotteryError(
                f"{other.switch(cfg)}: {other.label} changes how the tickets of "
                f"{' or '.join(REGISTRY_LABELS[name] for name in other.works_with)} train; "
                f"{made_by} makes this experiment's"
            )
    if "invert" in cfg.controls and not maker.ranks:
        raise LotteryError(
            f"controls: invert reverses the ranking that made a ticket, which {made_by} has none of; "
            "use the other controls"
        )
    if cfg.lmc.between_levels and not maker.between_levels:
        raise LotteryError(
            f"lmc.between_levels=true: connectivity between consecutive levels is IMP's (each level "
            f"pruned from the last); {made_by} trains each level on its own"
        )


REGISTRY_LABELS: Dict[str, str] = {}  # class name -> label, for messages


# --- the start every method rewinds to unless it has its own ---------------------------------------


def theta_k_start(context: Context, replicate: int, mask) -> dict:
    """A network that starts from θk under ``mask``: θk ⊙ mask, θk's batch statistics, and with
    ``rewind_optimizer`` θk's optimizer state with the moments of pruned weights zeroed (else a
    fresh one). The ticket, the random-prune control and the LMC copies all start this way, so
    they are trained alike."""
    trainer = context.trainer
    theta_k = context.rewind_point(replicate)
    opt_state = None
    if context.cfg.rewind_optimizer:
        opt_state = training.mask_optimizer_state(trainer.tx, theta_k["opt_state"], mask)
    return trainer.init_state(theta_k["params"], theta_k["batch_stats"], mask, opt_state)
