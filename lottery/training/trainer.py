"""The compiled training program: data on the device, masks in the state, many steps per dispatch.

The training state is a dict of pytrees ``{params, batch_stats, opt_state, mask}``. One call of
``Trainer.train`` runs steps ``[start, stop)`` of each member of a stack (replicates, controls,
LMC copies), each by the same single-member program, as one jitted ``lax.fori_loop`` per epoch touched
(on CPU, conv models dispatch one compiled step at a time instead: see ``use_host_loop``): each
step gathers its batch from the device-resident training set by index into the epoch's order
(a seeded permutation computed once per epoch on the device), takes a gradient step, and applies
the mask. Masking is part of the step, so nothing outside it has to re-apply a mask:

- gradients of pruned weights are zeroed before the optimizer sees them, so optimizer moments of
  pruned weights stay exactly 0 (Adam's m and v, SGD's momentum trace, weight decay of a zero);
- the updated weights are selected with ``where(mask, w, 0.0)``, so a pruned weight is exactly
  0.0 after every step, whatever the optimizer computed.

A sparse-training method's mask updates are part of the program too (pruning/sparse.py,
``Updates``): GMP prunes after the optimizer step; SET and RigL update the mask instead of it on an
update iteration (Evci et al. 2020, Algorithm 1). For SET and RigL the compiled loop runs the
masked steps between two updates as one inner loop and each update's step after it, so a step
without an update costs the masked step; GMP's steps, and a step dispatched alone (the host loop),
pick their update by ``lax.cond`` on the step number (GMP's steps in an inner loop round
differently: XLA fuses the step before the branch otherwise, so that would be a new experiment).

The learning rate is applied here from an optax schedule indexed by the *global* training step,
not by the optimizer's own step count: a level that restarts at the rewind step k with a fresh
optimizer state still continues the schedule from k (Frankle et al. 2020).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math

import numpy as np

from lottery import lazy
from lottery.data import Dataset
from lottery.errors import LotteryError
from lottery.pruning.masks import apply_mask
from lottery.step import Step
from lottery.training import mesh, settings

jax = lazy.module("jax")
jnp = lazy.module("jax.numpy")
optax = lazy.module("optax")
nnx = lazy.module("flax.nnx")

OPTIMIZERS = settings.OPTIMIZERS


def make_optimizer(cfg) -> optax.GradientTransformation:
    """The update direction of ``cfg.name``, before the learning rate (see the module docstring)."""
    settings.check_optimizer(cfg)
    # L2 weight decay added to the gradient, as torch.optim.SGD / Adam (open_lth) do.
    decay = [optax.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay else []
    if cfg.name == "sgd":
        direction = optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov)
    else:
        direction = optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(*decay, direction)


def make_schedule(optimizer_cfg, training_cfg, iterations_per_epoch: int) -> optax.Schedule:
    """Learning rate at each global step: linear warmup, then x gamma at each milestone."""
    lr = optimizer_cfg.lr
    if not math.isfinite(training_cfg.gamma) or training_cfg.gamma <= 0:
        raise LotteryError(f"training.gamma={training_cfg.gamma} must be a positive number")
    milestones = {
        Step.parse(m, iterations_per_epoch, "training.milestones").iteration: training_cfg.gamma
        for m in training_cfg.milestones
    }
    decayed = optax.piecewise_constant_schedule(lr, milestones)
    warmup = Step.parse(training_cfg.warmup, iterations_per_epoch, "training.warmup").iteration
    if not warmup:
        return decayed
    # join_schedules hands the second schedule (step - warmup); milestones are global steps.
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), lambda count: decayed(count + warmup)], [warmup]
    )


def mask_optimizer_state(tx, opt_state, mask):
    """Zero the optimizer state of pruned weights (a rewound state holds dense moments)."""
    return optax.tree_map_params(tx, lambda v, m: jnp.where(m, v, 0), opt_state, mask)


class Trainer:
    """Compiled training and evaluation of one model on one data set.

    The program interface, one network's functions before compilation (this trainer jits them,
    vmapped over a block of ``width`` members; mesh.MeshTrainer shards them over a mesh, splitting
    each batch over ``data_axis``):

      train_steps       steps [start, stop) of one epoch in one loop, the losses added to loss_sum
      train_step        one step: its batch, the masked update, its loss added to loss_sum
      evaluate_batches  mean loss and accuracy over a split's padded batches
      evaluate_batch    summed loss and number correct on one batch
      data_order        the training examples' order in an epoch (on the device, computed once)
    """

    def __init__(
        self,
        model: nnx.Module,
        tx,
        schedule,
        data: Dataset,
        batch_size: int,
        eval_batch_size: int,
        augment: bool,
        loop: str = "auto",
        masked: bool = True,
        mesh=None,
        stack: str = "1",
        precision: str = "float32",
    ):
        self.graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        self.init_params = nnx.to_pure_dict(params)
        self.init_batch_stats = nnx.to_pure_dict(batch_stats)
        self.tx, self.schedule, self.augment = tx, schedule, augment
        self.masked = masked  # False only to measure what masking costs (experiments/bench)
        self.batch_size = batch_size
        self.iterations_per_epoch = len(data.train_x) // batch_size
        self.scale = data.scale
        self.mean = np.asarray(data.mean, np.float32)
        self.std = np.asarray(data.std, np.float32)
        self.train_host = (data.train_x, data.train_y)
        self.eval_host = {
            "val": _eval_batches(data.val_x, data.val_y, eval_batch_size),
            "test": _eval_batches(data.test_x, data.test_y, eval_batch_size),
        }
        self.train_data = jax.device_put(self.train_host)
        self.eval_data = {split: None if b is None else jax.device_put(b) for split, b in self.eval_host.items()}
        self.mesh = mesh  # the `mesh` config: how stacks are laid over several devices (mesh.py)
        self._meshes = {}
        self.host_loop = use_host_loop(loop, model)
        self.compute_dtype = compute_dtype(precision)
        # Every program runs on a stack of members (replicates, controls, copies) along a leading
        # axis: the data are shared, each member has its own state, data order and augmentation.
        # The members go through in blocks of ``width``, each block one program: width 1 runs the
        # single-member program; a wider block its vmap over the block. XLA picks reduction and
        # contraction orders by the batched shapes, so a network's bits depend on the width; they
        # do not depend on which networks share its block or where in it (measured on CPU and
        # tested: each member's arithmetic is the same program's, whatever the others hold).
        self.width = stack_width(stack)
        self.updates = None  # a sparse-training method's mask updates (with_updates)
        self.diet = None  # a data diet's pre-training subset (with_diet)
        self._compile()
        self._epoch_order = jax.jit(functools.partial(epoch_order, n=len(data.train_x)))
        self._orders = {}  # the current epoch's data order of each member, computed once per epoch

    def _compile(self):
        """The jitted programs: each single-member, or its vmap over a block of ``width``."""
        train, step = jax.jit(self.train_steps, donate_argnums=(0,)), jax.jit(self.train_step, donate_argnums=(0,))
        evaluate, evaluate_batch = jax.jit(self.evaluate_batches), jax.jit(self.evaluate_batch)
        if self.width > 1:
            block, shared = 0, None
            train = jax.jit(
                jax.vmap(self.train_steps, in_axes=(block, shared, block, block, shared, shared, block)),
                donate_argnums=(0,),
            )
            step = jax.jit(
                jax.vmap(self.train_step, in_axes=(block, shared, block, block, shared, block)), donate_argnums=(0,)
            )
            evaluate = jax.jit(jax.vmap(self.evaluate_batches, in_axes=(block, block, shared)))
            evaluate_batch = jax.jit(jax.vmap(self.evaluate_batch, in_axes=(block, block, shared)))
        self._train, self._train_step, self._evaluate, self._evaluate_batch = train, step, evaluate, evaluate_batch
        self._init_state = jax.jit(self._fresh_state)  # init_state's (traced at its first call)

    def with_updates(self, updates) -> "Trainer":
        """This trainer with a sparse-training method's mask updates inside every step
        (pruning/sparse.py: GMP, SET, RigL), sharing its data on the device."""
        other = copy.copy(self)
        other.updates, other._meshes, other._orders = updates, {}, {}
        other._compile()
        return other

    def with_diet(self, indices, until: int) -> "Trainer":
        """This trainer with a data diet (lottery/imp/diet.py): steps [0, ``until``) draw their
        batches from the training examples ``indices`` alone, in epochs of that subset (each a seeded
        permutation of it); later steps from the whole set, as without a diet. Shares its data on
        the device; the compiled programs are the same (an order's length sets its epoch)."""
        if len(indices) < self.batch_size:
            raise LotteryError(
                f"a data diet's subset of {len(indices)} examples is smaller than a batch ({self.batch_size})"
            )
        other = copy.copy(self)
        subset = jnp.asarray(np.asarray(indices, np.int32))
        other.diet = Diet(
            until,
            len(indices) // self.batch_size,
            jax.jit(lambda key, epoch: subset[epoch_order(key, epoch, len(indices))]),
        )
        other._meshes, other._orders = {}, {}
        return other

    # --- the model as a pure function of its parameters -------------------------------------

    def apply(self, params, batch_stats, x, train: bool):
        """Logits (float32) and updated batch statistics. In bfloat16 precision the parameters and
        inputs enter the model as bfloat16 (every matmul, conv and activation in bfloat16); the
        parameters stay float32 outside (their gradients come back through the cast as float32),
        and so do the batch statistics and the logits the loss is taken of."""
        if self.compute_dtype != jnp.float32:
            params, x = _cast(params, self.compute_dtype), x.astype(self.compute_dtype)
        model = nnx.merge(self.graphdef, nnx.State(params), nnx.State(batch_stats))
        logits = model(x, train=train)
        updated = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
        if self.compute_dtype != jnp.float32:
            updated = jax.tree.map(lambda new, old: new.astype(old.dtype), updated, batch_stats)
        return logits.astype(jnp.float32), updated

    def inputs(self, images, key=None):
        """uint8 images -> normalized floats; with ``key``, pad-4 random crop and flip first."""
        x = images.astype(jnp.float32) / self.scale
        if key is not None:
            x = _crop_and_flip(key, x)
        return (x - self.mean) / self.std

    def init_state(self, params, batch_stats, mask, opt_state=None, sparse=None):
        """One member's training state; the optimizer state is fresh unless one is given. ``sparse``:
        what a sparse-training method's updates read (pruning/sparse.py, ``Updates.state``). One
        compiled program (masking, zeros and copies: no bit differs from doing it op by op)."""
        return self._init_state(params, batch_stats, mask, opt_state, sparse)

    def _fresh_state(self, params, batch_stats, mask, opt_state, sparse):
        params = apply_mask(params, mask)
        if opt_state is None:
            opt_state = self.tx.init(params)
        # Fresh device copies: training donates the state's buffers, and must never write into
        # host arrays (θk, a loaded ticket) that a zero-copy transfer could have shared.
        state = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state, "mask": mask}
        if sparse is not None:
            state["sparse"] = sparse
        return jax.tree.map(lambda a: jnp.array(a, copy=True), state)

    def over_mesh(self, networks: int):
        """The ``mesh.MeshTrainer`` that trains a stack of ``networks`` over several devices, or
        None where there is one device (or the mesh is 1 x 1): then each network in turn, here."""
        if self.mesh is None or jax.device_count() == 1:
            return None
        members, data = mesh.shape(self.mesh, networks, jax.device_count())
        if members * data == 1:
            return None
        if (members, data) not in self._meshes:
            self._meshes[members, data] = mesh.MeshTrainer(self, members, data)
        return self._meshes[members, data]

    # --- training ---------------------------------------------------------------------------

    def train(self, state, data_key, augment_key, start: int, stop: int, loss_sum=None, check=None):
        """Run steps [start, stop) of a stack of members (``stack``): each its own state, data
        key and augmentation key. Returns the new states and each member's training loss summed
        over the steps and added to ``loss_sum``: the running sum is carried through the compiled
        loop, so splitting a range (at an epoch, a checkpoint, a preemption) changes no bit.
        ``check`` is called before each epoch's compiled loop and may raise to stop there (loop.py:
        a second Ctrl-C)."""
        members = members_of(state)
        if loss_sum is None:
            loss_sum = jnp.zeros(members, jnp.float32)
        spread = self.over_mesh(members)
        if spread is not None:
            return spread.train(state, data_key, augment_key, start, stop, loss_sum, check)
        states, sums = [], []
        for ids in self.blocks(members):
            block, block_sum = self._take(state, ids), self._take(loss_sum, ids)
            augment = self._take(augment_key, ids)
            for step, end, epoch, subset in self.epochs(start, stop):  # one compiled loop per epoch touched
                if check:
                    check()
                order = self._take_orders([data_key[i] for i in ids], epoch, subset)
                if self.host_loop:
                    for j in range(step, end):
                        block, block_sum = self._train_step(
                            block, self.train_data, order, augment, jnp.int32(j), block_sum
                        )
                else:
                    block, block_sum = self._train(
                        block, self.train_data, order, augment, jnp.int32(step), jnp.int32(end), block_sum
                    )
            states.append(block)
            sums.append(block_sum)
        return self._join(states, members), self._join(sums, members)

    def epochs(self, start: int, stop: int):
        """The parts of steps [start, stop) that run with one data order: (first step, end, epoch,
        whether on a diet's subset), one per epoch touched; a diet's pre-training runs in epochs of
        its subset and ends at its last step."""
        step = start
        while step < stop:
            subset = self.diet is not None and step < self.diet.until
            per_epoch = self.diet.per_epoch if subset else self.iterations_per_epoch
            epoch = step // per_epoch
            end = min(stop, (epoch + 1) * per_epoch, self.diet.until if subset else stop)
            yield step, end, epoch, subset
            step = end

    # --- blocks of members: one program each --------------------------------------------------

    def blocks(self, members: int):
        """The stack's indices in blocks of ``width``, the last padded with copies of its first
        member (trained, then dropped: never written anywhere)."""
        out = []
        for first in range(0, members, self.width):
            ids = list(range(first, min(first + self.width, members)))
            out.append(ids + [ids[0]] * (self.width - len(ids)))
        return out

    def _take(self, stacked, ids):
        """A block of a stack: one member as it is (width 1), or the members ``ids`` along the axis."""
        return _member(stacked, ids[0]) if self.width == 1 else _gather(stacked, np.asarray(ids))

    def _take_orders(self, data_keys, epoch: int, subset: bool = False):
        orders = [self.data_order(key, epoch, subset) for key in data_keys]
        return orders[0] if self.width == 1 else jnp.stack(orders)

    def _join(self, blocks, members: int):
        """Blocks back into one stack of ``members`` (padding dropped), on the device."""
        return stack(blocks) if self.width == 1 else _concatenate(blocks, members)

    def data_order(self, data_key, epoch: int, subset: bool = False):
        """The indices of the training examples in ``epoch``'s order (``subset``: of a diet's
        subset's epoch), computed on the device once."""
        key = (epoch, subset, np.asarray(jax.random.key_data(data_key)).tobytes())
        if key not in self._orders:
            if len(self._orders) > 64:  # members of a level share epochs: keep the recent ones
                self._orders.clear()
            self._orders[key] = (self.diet.order if subset else self._epoch_order)(data_key, epoch)
        return self._orders[key]

    def _batch(self, train_data, order, augment_key, step, data_axis=None):
        """The batch of ``step``: its slice of the epoch's order, gathered on the device (with
        ``data_axis``, split over that mesh axis: data-parallel, see mesh.py)."""
        images, labels = train_data
        position = step % (order.shape[-1] // self.batch_size)  # the epoch's steps: of the data, or a diet's subset
        index = jax.lax.dynamic_slice_in_dim(order, position * self.batch_size, self.batch_size)
        key = jax.random.fold_in(augment_key, step) if self.augment else None
        return _split(self.inputs(images[index], key), data_axis), _split(labels[index], data_axis)

    def train_steps(self, state, train_data, order, augment_key, start, stop, loss_sum, data_axis=None):
        """Steps [start, stop) of one epoch in one compiled loop, adding the losses to loss_sum. With
        SET's or RigL's updates, the steps between two updates are one inner loop of the masked step
        alone (no branch in it: what a step costs without an update), each update step after it:
        the same steps, in the same order, on the same batches, the same bits."""

        def steps(first, last, carry, update):
            body = lambda step, c: self.train_step(c[0], train_data, order, augment_key, step, c[1], data_axis, update)
            return jax.lax.fori_loop(first, last, body, carry)

        if self.updates is None or not self.updates.replaces_step:  # GMP: its branch in every step (below)
            return steps(start, stop, (state, loss_sum), None)

        def segment(carry):  # the masked steps up to the next update, then that update's step
            step, inner = carry
            upto = jnp.minimum(self.updates.next_step(step), stop)
            inner = steps(step, upto, inner, False)
            inner = jax.lax.cond(upto < stop, lambda c: steps(upto, upto + 1, c, True), lambda c: c, inner)
            return jnp.minimum(upto + 1, stop), inner

        _, carry = jax.lax.while_loop(lambda c: c[0] < stop, segment, (start, (state, loss_sum)))
        return carry

    def train_step(self, state, train_data, order, augment_key, step, loss_sum, data_axis=None, update=None):
        """One step: its batch, the masked update, and its loss added to loss_sum. ``update``: with
        a sparse-training method, whether the step carries its mask update (None: decided by the
        step number inside the program; True/False: known beforehand, no branch)."""
        state, loss = self._step(state, *self._batch(train_data, order, augment_key, step, data_axis), step, update)
        return state, loss_sum + loss

    def _step(self, state, x, y, step, update=None):
        mask = state["mask"]

        def loss_fn(params):
            logits, batch_stats = self.apply(params, state["batch_stats"], x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), batch_stats

        (loss, batch_stats), dense_grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])

        def optimizer_step():
            grads = apply_mask(dense_grads, mask) if self.masked else dense_grads
            updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
            lr = self.schedule(step)
            if self.masked:
                params = jax.tree.map(
                    lambda p, u, m: jnp.where(m, p - lr * u, jnp.zeros_like(p)), state["params"], updates, mask
                )
            else:
                params = jax.tree.map(lambda p, u: p - lr * u, state["params"], updates)
            return params, opt_state

        if self.updates is None or update is False:
            params, opt_state = optimizer_step()
        else:  # a sparse-training method's step: the optimizer's, and its mask update (pruning/sparse.py)
            mask_opt_state = lambda o, m: mask_optimizer_state(self.tx, o, m)
            at = (state["params"], mask, state["opt_state"], dense_grads, step, state["sparse"], mask_opt_state)
            if update is None:  # picked by the step number, inside the program
                params, mask, opt_state = self.updates.step(optimizer_step, *at)
            else:  # an update iteration of SET/RigL, known beforehand: the update instead of the step
                params, mask, opt_state = self.updates.update_step(*at)
        return {**state, "params": params, "batch_stats": batch_stats, "opt_state": opt_state, "mask": mask}, loss

    # --- evaluation -------------------------------------------------------------------------

    def evaluate(self, state, split: str):
        """Each member's (mean loss, accuracy) on ``split`` ('val' or 'test') as two arrays;
        None for an empty split."""
        batches = self.eval_data[split]
        if batches is None:
            return None
        spread = self.over_mesh(members_of(state["params"]))
        if spread is not None:
            return spread.evaluate(state, split)
        members, results = members_of(state["params"]), []
        weights = {"params": state["params"], "batch_stats": state["batch_stats"]}
        for ids in self.blocks(members):
            block = self._take(weights, ids)
            if self.host_loop:
                sums = [
                    self._evaluate_batch(block["params"], block["batch_stats"], jax.tree.map(lambda a: a[b], batches))
                    for b in range(batches[0].shape[0])
                ]
                loss, correct = (np.sum(column, axis=0) for column in zip(*sums))
                total = float(np.sum(batches[2]))
                results.append((np.reshape(loss / total, -1), np.reshape(correct / total, -1)))
            else:
                loss, accuracy = jax.device_get(self._evaluate(block["params"], block["batch_stats"], batches))
                results.append((np.reshape(loss, -1), np.reshape(accuracy, -1)))
        loss, accuracy = (np.concatenate(column)[:members] for column in zip(*results))
        return loss, accuracy

    def evaluate_batch(self, params, batch_stats, batch, data_axis=None):
        """Summed loss and number correct on one batch (padding has weight 0)."""
        images, labels, weights = (_split(a, data_axis) for a in batch)
        logits, _ = self.apply(params, batch_stats, self.inputs(images), train=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = jnp.argmax(logits, -1) == labels
        return jnp.sum(losses * weights), jnp.sum(correct * weights)

    def evaluate_batches(self, params, batch_stats, batches, data_axis=None):
        """Mean loss and accuracy over a split's batches, in one loop (padding has weight 0)."""
        losses, corrects = jax.lax.map(
            lambda batch: self.evaluate_batch(params, batch_stats, batch, data_axis), batches
        )
        total = jnp.sum(batches[2])
        return jnp.sum(losses) / total, jnp.sum(corrects) / total


def _split(batch, data_axis):
    """``batch`` laid along its first axis over the mesh axis ``data_axis`` (None: as it is)."""
    if data_axis is None:
        return batch
    return jax.lax.with_sharding_constraint(batch, jax.sharding.PartitionSpec(data_axis))


@dataclasses.dataclass(frozen=True)
class Diet:
    """A data diet as the trainer runs it (``Trainer.with_diet``)."""

    until: int  # steps [0, until) on the subset
    per_epoch: int  # steps in an epoch of the subset
    order: object  # (data key, epoch) -> the subset's indices in that epoch's order (compiled)


def members_of(stacked) -> int:
    """The number of members of a stack."""
    return jax.tree.leaves(stacked)[0].shape[0]


def member(stacked, i: int):
    """Member ``i`` of a stack, on the device."""
    return jax.tree.map(lambda leaf: leaf[i], stacked)


def _stacked(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


# The same as compiled programs, one dispatch for a whole tree instead of one per leaf: they run
# between every chunk of every block. Copies, so they change no bit.
_member = lazy.jit(member)
stack = lazy.jit(_stacked)  # members' pytrees stacked along a new leading axis, on the device
_gather = lazy.jit(lambda stacked, ids: jax.tree.map(lambda leaf: leaf[ids], stacked))
_concatenate = lazy.jit(
    lambda blocks, members: jax.tree.map(lambda *parts: jnp.concatenate(parts)[:members], *blocks), static_argnums=(1,)
)


def stack_width(text: str) -> int:
    """``training.stack``: a positive width, or auto (1 on CPU, where it keeps every result as it
    was; 8 on GPU/TPU, not yet measured: experiments/bench/device.sh measures widths)."""
    if str(text) == "auto":
        return 1 if jax.default_backend() == "cpu" else AUTO_WIDTH
    return settings.stack_width(text)


AUTO_WIDTH = 8


def compute_dtype(precision: str):
    settings.check_precision(precision)
    return getattr(jnp, precision)


def _cast(tree, dtype):
    """Floating leaves of ``tree`` as ``dtype`` (masks and integer leaves as they are)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def unstack(tree, i: int):
    """Member ``i`` of a stack, as host arrays."""
    if not 0 <= i < members_of(tree):  # a traced index would clamp: say it
        raise IndexError(f"member {i} of a stack of {members_of(tree)}")
    return jax.tree.map(np.asarray, jax.device_get(_member(tree, i)))


def epoch_order(data_key, epoch, n):
    """The order of the training examples in ``epoch``: the same for every level of a replicate."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)


LOOPS = ("auto", "device", "host")


def use_host_loop(loop: str, model: nnx.Module) -> bool:
    """Whether to dispatch one compiled step at a time instead of a compiled loop of steps.

    XLA:CPU runs convolutions inside loop bodies far slower than outside them (the weight
    gradient ~300x on 2 cores; jax-ml/jax#12868), so on CPU a conv model trains one compiled step
    per dispatch (``auto``); everything else, and every model on GPU/TPU, runs a whole chunk of
    steps in one ``fori_loop``. Data order and batches are computed on the device either way.
    """
    if loop not in LOOPS:
        raise LotteryError(f"training.loop={loop!r} is not a loop placement; choose one of: {', '.join(LOOPS)}")
    if loop != "auto":
        return loop == "host"
    has_conv = any(isinstance(module, nnx.Conv) for _, module in nnx.iter_graph(model))
    return has_conv and jax.default_backend() == "cpu"


def _eval_batches(images, labels, batch_size: int):
    """Split into equal batches on the device, padding the last with weight-0 examples."""
    n = len(images)
    if n == 0:
        return None
    batch_size = min(batch_size, n)
    batches = -(-n // batch_size)
    pad = batches * batch_size - n
    weights = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    shape = lambda a: a.reshape(batches, batch_size, *a.shape[1:])
    return shape(images), shape(labels), shape(weights)


def _crop_and_flip(key, x):
    """CIFAR augmentation: zero-pad 4 pixels, random crop back to size, random horizontal flip."""
    b, h, w, c = x.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (b, 2), 0, 9)
    padded = jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    crop = functools.partial(jax.lax.dynamic_slice, slice_sizes=(h, w, c))
    x = jax.vmap(lambda image, o: crop(image, (o[0], o[1], 0)))(padded, offsets)
    flip = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1], x)
