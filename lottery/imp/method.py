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
  title                           what the results table calls the pruned levels

Exactly one method makes tickets (``makes_tickets``); the others change how they train (SWAMP) or
how the dense network they rewind to is trained (diets), and are chosen beside it. ``choose`` reads
the config once, in ``prepare``; nothing else asks which method runs. Each registered class says
when it is chosen (``chosen(cfg)``) and builds itself from the experiment (``build``); the modules
register by being imported (experiment.py imports each).
"""

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Tuple

from lottery.errors import LotteryError
from lottery.pruning import masks
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


class Method:
    """The seams of a level, answered as IMP answers them; a method overrides what it changes."""

    title = "IMP"
    makes_tickets = True  # False: it changes how another method's tickets train (SWAMP, diets)
    fallback = False  # the method that makes tickets when no other is chosen (IMP)
    between_levels = True  # each level pruned from the last (level-to-level LMC means something)

    @staticmethod
    def chosen(cfg) -> bool:
        return False

    @classmethod
    def build(cls, experiment) -> "Method":
        return cls()

    # --- what a level trains ---

    def trains(self, level: int) -> bool:
        return True

    def mask(self, experiment, replicate: int, level: int):
        raise NotImplementedError

    def start(self, experiment, replicate: int, level: int, mask) -> dict:
        """The ticket's training state under ``mask``: the survivors rewound to θk."""
        return self.rewound(experiment, replicate, mask)

    def ticket(self, experiment, replicate: int, level: int) -> dict:
        """An unfinished level's ticket: 1. prune, 2. rewind (or keep the trained weights)."""
        return self.start(experiment, replicate, level, self.mask(experiment, replicate, level))

    def rewound(self, experiment, replicate: int, mask) -> dict:
        return theta_k_start(experiment, replicate, mask)

    def ranking(self, experiment, replicate: int, level: int):
        raise LotteryError("this experiment's tickets are not ranked by a criterion")

    updating: Optional[training.Trainer] = None

    def extra_networks(self, experiment, replicate: int, level: int, ticket: Network) -> List[Network]:
        return []

    def keep_steps(self, experiment, networks: List[Network], start: int, end: int) -> List[int]:
        return []

    def after_training(self, experiment, networks: List[Network], states, kept: Dict[int, dict], histories,
                       end: int) -> Dict[int, Outcome]:
        return {}

    # --- what is recorded ---

    def record(self, experiment, network: Network, level: int, start_state: dict, finished: dict) -> dict:
        return {}

    def saved_start(self, start_state: dict, finished: dict) -> dict:
        return start_state

    def cost(self, experiment, level: int, start: int, end: int, copies: int) -> Optional[int]:
        """IMP's: the dense T and every retraining up to the level (``copies``: SWAMP's particles)."""
        return experiment.end + level * copies * (end - start)

    copies = 1  # networks trained for each ticket (SWAMP's particles)

    # --- level 0 ---

    def level_0(self, experiment, dense_directory: str, say) -> None:
        pass

    def level_0_trainer(self, experiment, trainer: training.Trainer, dense_directory: str, say) -> training.Trainer:
        return trainer

    def dense_identity(self) -> dict:
        """What this method adds to the identity of the dense run it rewinds to (a diet's pre-training)."""
        return {}


REGISTRY: List[type] = []  # in the order the modules were imported


def method(cls: type) -> type:
    """Register a method class: ``choose`` builds it for every config it is ``chosen`` by."""
    REGISTRY.append(cls)
    return cls


def choose(experiment) -> Tuple[Method, ...]:
    """The methods of ``experiment.cfg``: the one that makes its tickets first (IMP when no other
    does), then those that change how they train."""
    chosen = [cls for cls in REGISTRY if cls.chosen(experiment.cfg)]
    makers = [cls for cls in chosen if cls.makes_tickets and not cls.fallback] or \
        [cls for cls in chosen if cls.makes_tickets]
    if len(makers) != 1:  # the config checks refuse these combinations first; this says so if one slips past
        raise LotteryError(f"{' and '.join(cls.__name__ for cls in makers) or 'no method'} would make this "
                           "experiment's tickets; choose one")
    return tuple(cls.build(experiment) for cls in makers + [cls for cls in chosen if not cls.makes_tickets])


# --- the start every method rewinds to unless it has its own ---------------------------------------


def theta_k_start(experiment, replicate: int, mask) -> dict:
    """A network that starts from θk under ``mask``: θk ⊙ mask, θk's batch statistics, and with
    ``rewind_optimizer`` θk's optimizer state with the moments of pruned weights zeroed (else a
    fresh one). The ticket, the random-prune control and the LMC copies all start this way, so
    they are trained alike."""
    trainer = experiment.trainer
    theta_k = experiment.rewind_point(replicate)
    opt_state = None
    if experiment.cfg.rewind_optimizer:
        opt_state = training.mask_optimizer_state(trainer.tx, theta_k["opt_state"], mask)
    return trainer.init_state(theta_k["params"], theta_k["batch_stats"], mask, opt_state)


def finished_mask(experiment, replicate: int, level: int):
    """The mask a finished level's ticket trained under (None: the level is not finished)."""
    this_level = experiment.level_dir(replicate, level)
    return experiment.load(this_level, "ticket")["mask"] if os.path.isdir(this_level) else None


def dense_mask(experiment):
    return masks.full_mask(experiment.trainer.init_params)
