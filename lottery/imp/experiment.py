"""An IMP experiment as the levels see it: its config checked, its data loaded, its model built, its
directory named, and what every level needs of them (PRNG keys, θ0, θk, the saved trees).

``check`` (checks.py) is every check that needs no data (cheap enough for each job of a sweep before the first
starts); ``prepare`` loads the data, builds the trainer and names the directory, writing nothing.
"""

import dataclasses
import functools
import math
import os
import shutil
from typing import Dict, List, Optional, Tuple

import jax
import numpy as np
from flax import nnx

from lottery import hosts, models, tracking
from lottery.analysis import objective
from lottery.imp import method as methods
from lottery.imp.checks import Checked, check, with_data  # noqa: F401 (check: its home before checks.py)
from lottery.imp.method import Context, Method
from lottery.pruning import criteria, masks
from lottery.pruning import structure as structures
from lottery.step import Every
from lottery.results import identity, paths
from lottery.results.invocations import INVOCATIONS, Invocation
from lottery.results.lock import LOCK
from lottery.results.store import load_tree
from lottery.training import loop, mesh, trainer as training


@dataclasses.dataclass
class Experiment:
    cfg: object
    trainer: training.Trainer
    prunable: List[str]  # paths of the prunable tensors
    end: int  # T, the last step of training
    rewind: int  # k, the rewind step
    finetune_steps: int
    eval_every: int
    checkpoint_every: Every  # lottery/step.py
    input_shape: tuple
    num_classes: int
    directory: str  # <output_dir>/<name>-<hash>
    tracker: tracking.Tracker
    data_fingerprint: str  # of the data's content, part of the hash (lottery.data.fingerprint)
    data_examples: Dict[str, int]  # examples in each split (train, validation, test): recorded with each result
    invocation: Optional[Invocation] = None  # this invocation's record, once the directory is locked
    structure: Optional[structures.Structure] = None  # what a level prunes: weights, units or N:M blocks
    # How the levels make and train their tickets (imp/method.py): the method that makes them first
    # (IMP, pruning before training, transfer, sparse training, Early-Bird), then those that change
    # how they train (SWAMP, a data diet). Chosen once, by ``prepare``.
    methods: Tuple[Method, ...] = ()
    _rewind_points: Dict[int, dict] = dataclasses.field(default_factory=dict, repr=False)  # rewind_point's

    @property
    def method(self) -> Method:
        """The method that makes this experiment's tickets."""
        return self.methods[0]

    def keys(self, replicate: int) -> Dict[str, jax.Array]:
        """The PRNG keys of one replicate: its initialization, data order, augmentation, controls."""
        key = jax.random.fold_in(jax.random.key(self.cfg.seed), replicate)
        init, data, augment, controls_key, copies = jax.random.split(key, 5)
        return {"init": init, "data": data, "augment": augment, "controls": controls_key, "lmc": copies}

    def scoring_rng(self, replicate: int, level: int) -> np.random.Generator:
        """The generator of criteria that draw (random), one stream per replicate and level."""
        key = jax.random.fold_in(self.keys(replicate)["init"], 2**20 + level)  # `init` itself is never folded
        return np.random.default_rng(np.asarray(jax.random.key_data(key)))

    def scoring_context(self, replicate: int, level: int, weights: dict, mask) -> criteria.Context:
        """What a criterion scores at ``level``: ``weights`` (params and batch statistics) under
        ``mask``, the model (batch norm with its running statistics), the first ``pruning.examples``
        examples of the stored training split (data-dependent criteria) and a generator (random)."""
        x, y = self.trainer.train_host
        n = self.cfg.pruning.examples
        return criteria.Context(
            weights["params"],
            mask,
            self.prunable,
            self.scoring_rng(replicate, level),
            apply=criteria.model_apply(self.trainer, weights["batch_stats"]),
            batch=(np.asarray(self.trainer.inputs(x[:n])), np.asarray(y[:n])),
            input_shape=tuple(self.input_shape),
        )

    def sparse_key(self, replicate: int, level: int) -> jax.Array:
        """Sparse training's key at ``level``: its random start mask and SET's random growth."""
        return jax.random.fold_in(self.keys(replicate)["init"], 2**21 + level)  # beside scoring_rng's 2**20 + level

    def cost(self, level: int) -> Optional[int]:
        """The training steps behind a network of ``level`` (the field's equal-budget axis, Evci et
        al. 2020): IMP, the dense T and every retraining up to it (SWAMP: each particle's); pruning
        before training and sparse training, one training (θk's k steps included). None for a
        transferred ticket (its source's)."""
        if level == 0:
            return self.end
        copies = math.prod(m.copies for m in self.methods)
        return self.method.cost(level, *self.segment(level), copies)

    def trains(self, level: int) -> bool:
        """Whether ``level`` is trained (level 0 always; sparse training may train only some)."""
        return level == 0 or all(m.trains(level) for m in self.methods)

    def initial_weights(self, key):
        model = models.build(self.cfg.model, self.input_shape, self.num_classes, key)
        return {
            "params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
            "batch_stats": nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)),
        }

    def dense_start(self, replicate: int) -> dict:
        """The training state level 0 starts from: θ0 of ``replicate``, dense."""
        theta_0 = self.initial_weights(self.keys(replicate)["init"])
        return self.trainer.init_state(theta_0["params"], theta_0["batch_stats"], masks.full_mask(theta_0["params"]))

    def level_0_trainer(self, dense_directory: str, say=print) -> training.Trainer:
        """The trainer of the dense level 0 (the run in ``dense_directory``): with a data diet, its
        pre-training steps on the subset that run keeps (chosen the first time: diet.py)."""
        trainer = self.trainer
        for method in self.methods:
            trainer = method.level_0_trainer(trainer, dense_directory, say)
        return trainer

    def level_dir(self, replicate: int, level: int) -> str:
        return paths.level_dir(self.directory, replicate, level)

    def segment(self, level: int):
        """The steps [start, end) that ``level`` trains."""
        if level == 0:
            return 0, self.end
        if self.cfg.retrain == "finetune":
            return self.end, self.end + self.finetune_steps
        return self.rewind, self.end

    def template(self, what: str) -> dict:
        """The structure, shapes and dtypes orbax restores a saved ``what`` to: ``ticket`` (mask and
        starting weights), ``trained`` (final weights), ``rewind_point`` (θk with its optimizer
        state), or ``copy_a`` / ``copy_b`` (an LMC measurement's two trained copies)."""
        weights = {"params": self.trainer.init_params, "batch_stats": self.trainer.init_batch_stats}
        return {
            "ticket": lambda: {"mask": masks.full_mask(self.trainer.init_params), **weights},
            "trained": lambda: weights,
            "rewind_point": lambda: {**weights, "opt_state": self.trainer.tx.init(self.trainer.init_params)},
            "copy_a": lambda: weights,
            "copy_b": lambda: weights,
        }[what]()

    def load(self, directory: str, what: str) -> dict:
        """One saved checkpoint of a network's directory: ``<directory>/<what>`` (``template``)."""
        return load_tree(os.path.join(directory, what), self.template(what))

    def rewind_point(self, replicate: int) -> dict:
        """θk of ``replicate``: the dense level 0's state at the rewind step (read once a process:
        every level's ticket and controls start from it; its arrays are read-only)."""
        if replicate not in self._rewind_points:
            tree = self.load(self.level_dir(replicate, 0), "rewind_point")
            for leaf in jax.tree.leaves(tree):
                if isinstance(leaf, np.ndarray):
                    leaf.setflags(write=False)
            self._rewind_points[replicate] = tree
        return self._rewind_points[replicate]

    @functools.cached_property
    def context(self) -> Context:
        """What its methods read of it (imp/method.py), and nothing else."""
        from lottery.imp import dense

        return Context(
            cfg=self.cfg,
            trainer=self.trainer,
            prunable=self.prunable,
            structure=self.structure,
            end=self.end,
            rewind=self.rewind,
            checkpoint_every=self.checkpoint_every,
            directory=self.directory,
            data_fingerprint=self.data_fingerprint,
            keys=self.keys,
            sparse_key=self.sparse_key,
            dense_start=self.dense_start,
            level_dir=self.level_dir,
            template=self.template,
            load=self.load,
            rewind_point=self.rewind_point,
            scoring_context=self.scoring_context,
            dense_directory=lambda: dense.Dense(self).directory,
            level_0_trainer=self.level_0_trainer,
        )

    def announce_other_directories(self, say) -> None:
        """Where this experiment's results may already lie under another directory: an older
        version's hash (keys since removed) or its old name (every experiment was once quickstart)."""
        cfg = self.cfg
        if not os.path.isdir(self.directory):
            for older in identity.older_versions(self.directory, cfg, self.data_fingerprint):
                say(
                    f"note: {older} holds this experiment as an older version of lottery hashed it (with keys "
                    f"since removed); its results stay there, and this one starts afresh in {self.directory}"
                )
        if paths.old_name(cfg, self.directory):
            say(
                f"note: {self.directory} holds this experiment under its old name (an older version named "
                f"every experiment {identity.DEFAULT_NAME}); it is used, not trained again, and a new one of "
                f"this kind is named {identity.experiment_name(cfg)}-<hash>"
            )

    def remove_if_empty(self) -> None:
        """A start that failed before the new experiment's directory held any result (a damaged diet
        scores store, say): the directory goes, rather than stay as an empty experiment (its identity,
        lock and the record of an invocation that failed only). One stopped by a signal stays: its
        record says it was stopped, and the same command continues it."""
        directory = self.directory
        if not hosts.primary() or not os.path.isdir(directory) or paths.replicates(directory):
            return
        if set(os.listdir(directory)) <= {identity.CONFIG, INVOCATIONS, LOCK}:
            shutil.rmtree(directory, ignore_errors=True)

    def train(self, states, networks, level: int, start: int, end: int, advance, trainer=None, **options):
        """``loop.train`` with this experiment's trainer (or ``trainer``), evaluation and checkpoint
        intervals, and log."""
        return loop.train(
            trainer or self.trainer,
            states,
            networks,
            level,
            start,
            end,
            advance,
            eval_every=self.eval_every,
            checkpoint_every=self.checkpoint_every,
            log=self.tracker,
            **options,
        )


def prepare(cfg, checked: Optional[Checked] = None) -> Experiment:
    """Check the whole config, load the data and build the model; writes nothing (``checked``: the
    config already checked with its data, ``checks.with_data``, before JAX started)."""
    checked = checked or with_data(cfg)
    data, per_epoch, batch_size = checked.data, checked.per_epoch, cfg.training.batch_size
    end, rewind, finetune_steps = checked.end, checked.rewind, checked.finetune_steps
    eval_every, checkpoint_every = checked.eval_every, checked.checkpoint_every
    tx = training.make_optimizer(cfg.optimizer)
    schedule = training.make_schedule(cfg.optimizer, cfg.training, per_epoch)

    model = models.build(cfg.model, data.input_shape, data.num_classes, jax.random.key(0))  # a template
    mesh.check(cfg.mesh, jax.device_count())
    trainer = training.Trainer(
        model,
        tx,
        schedule,
        data,
        batch_size,
        cfg.training.eval_batch_size,
        cfg.dataset.augment,
        cfg.training.loop,
        mesh=cfg.mesh,
        stack=cfg.training.stack,
        precision=cfg.training.precision,
    )
    prunable = masks.prunable(trainer.init_params, cfg.pruning.ignore)
    if cfg.transfer.source is None and cfg.pruning.structure == "weights":  # a transfer's levels have its source's
        # densities; a structured experiment's follow its units (checked after training, as they are reached)
        full = masks.full_mask(trainer.init_params)
        objective.check_reach(cfg, masks.level_densities(full, cfg.pruning, prunable, cfg.levels))
    cfg = methods.resolve(cfg, data.fingerprint, rewind)  # a transfer's source by its directory
    directory = paths.experiment_directory(cfg, data.fingerprint)
    # process 0 logs for all; W&B's calls made by a thread of their own, beside training
    tracker = tracking.Tracker(cfg, directory, enabled=hosts.primary(), background=True)
    experiment = Experiment(
        cfg,
        trainer,
        prunable,
        end,
        rewind,
        finetune_steps,
        eval_every,
        checkpoint_every,
        data.input_shape,
        data.num_classes,
        directory,
        tracker,
        data.fingerprint,
        data.examples,
    )
    shapes = {name: np.shape(leaf) for name, leaf in masks.flatten(trainer.init_params).items()}
    experiment.structure = structures.Structure(cfg.pruning, prunable, models.units(cfg.model, shapes), shapes)
    experiment.methods = methods.choose(experiment.context)
    return experiment
