"""A level's stack of networks over several devices, with JAX's own machinery (``jax.sharding``,
``shard_map``): nothing here communicates by itself.

On one device each network of a stack (replicates x controls x LMC copies) is trained in turn by
the one-network program (``trainer.Trainer``). With several devices, a ``MeshTrainer`` lays them
over a 2-D mesh ``members x data``:

- along ``members``, each device trains its own networks, one at a time, by the very same
  one-network program (``shard_map`` over the members axis): no collective operation, and a
  network's bits are those of the one-device run. The stack is padded to a multiple of the axis
  with copies of its first network, which are dropped (never written anywhere);
- along ``data``, one network's batch is split over the devices (a sharding constraint on the
  batch inside the program); XLA partitions the step and inserts the all-reduce of gradients and
  of batch-norm statistics, which are still over the whole batch. Sums in another order: results
  equal the one-device run's to float rounding, not bitwise;
- both at once on a 2-D mesh.

The data are replicated on every device of the mesh. Between compiled chunks (at evaluations and
checkpoints) the states stay on the mesh's devices when the stack fills whole rounds (its networks a
multiple of members x the trainer's width) in one process: the stack is one array split along
``members``, device d holding networks [d R W, (d + 1) R W) of a stack of R rounds, and round r is
each device's networks [r W, (r + 1) W) of its own, cut out and written back by per-device slices
(no communication at all, no copy through the host; which networks share a round changes no bit,
as a network's bits do not depend on its mates). Only what is saved or evaluated comes to the host,
and the training loop brings a group's states to the default device once, when its training ends
(``settled``). Otherwise (a stack padded to whole rounds, or several processes) the states are host
arrays between chunks, identical in every process. With several processes (``lottery.hosts``) the
mesh spans every process's devices and each runs the same program on its part.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from lottery import lazy
from lottery.pruning import masks
from lottery.errors import LotteryError

jax = lazy.module("jax")
sharding_ = lazy.module("jax.sharding")

AXES = ("members", "data")


def shape(cfg, networks: int, devices: int) -> Tuple[int, int]:
    """The mesh (members, data) for a stack of ``networks`` on ``devices`` devices (``mesh.*``)."""
    members, data = cfg.members, cfg.data
    for key, value in (("members", members), ("data", data)):
        if value < 0:
            raise LotteryError(f"mesh.{key}={value} must be a number of devices, or 0 for the rest")
    if members == 0 and data == 0:
        return (devices, 1) if networks >= devices else (1, devices)
    if members == 0 or data == 0:
        given, key = (data, "data") if members == 0 else (members, "members")
        if devices % given:
            raise LotteryError(
                f"mesh.{key}={given} does not divide the {devices} devices; give both mesh.members "
                "and mesh.data to use fewer devices"
            )
        return (devices // given, data) if members == 0 else (members, devices // given)
    if members * data > devices:
        raise LotteryError(f"mesh.members={members} x mesh.data={data} is more than the {devices} devices")
    return members, data


def check(cfg, devices: int) -> None:
    """The mesh config's errors, before anything is written."""
    shape(cfg, devices, devices)


def to_global(tree, mesh, spec):
    """Host arrays (the same in every process) as arrays laid over ``mesh`` by ``spec``."""
    sharding = sharding_.NamedSharding(mesh, spec)
    return jax.tree.map(lambda a: jax.make_array_from_callback(a.shape, sharding, lambda index: a[index]), tree)


def to_host(tree):
    """Arrays over a mesh as whole host arrays, in every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def settled(tree):
    """Arrays left on a mesh's devices (``MeshTrainer`` between chunks) as arrays of the default
    device, as one-device training leaves them; anything else as it is."""
    on_mesh = lambda a: isinstance(a, jax.Array) and len(a.sharding.device_set) > 1
    if not any(on_mesh(a) for a in jax.tree.leaves(tree)):
        return tree
    return jax.tree.map(lambda a: jax.numpy.asarray(np.asarray(a)) if on_mesh(a) else a, tree)


class MeshTrainer:
    """A ``members x data`` mesh and the trainer's programs compiled over it."""

    def __init__(self, trainer, members: int, data: int):
        self.trainer, self.members, self.data = trainer, members, data
        devices = jax.devices()[: members * data]
        self.mesh = jax.make_mesh(
            (members, data), AXES, devices=devices, axis_types=(sharding_.AxisType.Auto, sharding_.AxisType.Auto)
        )  # Explicit breaks gathers (jax#36562)
        axis = "data" if data > 1 else None
        block, every = sharding_.PartitionSpec("members"), sharding_.PartitionSpec()
        key = jax.random.wrap_key_data  # a PRNG key travels as its raw uint32 data
        self._train = self._program(
            lambda state, data, order, k, *rest: trainer.train_steps(state, data, order, key(k), *rest, data_axis=axis),
            (block, every, block, block, every, every, block),
            (block, block),
        )
        self._train_step = self._program(
            lambda state, data, order, k, *rest: trainer.train_step(state, data, order, key(k), *rest, data_axis=axis),
            (block, every, block, block, every, block),
            (block, block),
        )
        self._evaluate = self._program(
            lambda *a: trainer.evaluate_batches(*a, data_axis=axis), (block, block, every), (block, block)
        )
        self._evaluate_batch = self._program(
            lambda *a: trainer.evaluate_batch(*a, data_axis=axis), (block, block, every), (block, block)
        )
        self._replicated = {}
        self._split = sharding_.NamedSharding(self.mesh, block)
        per_device = lambda f, in_specs: jax.shard_map(
            f, mesh=self.mesh, in_specs=in_specs, out_specs=block, axis_names={"members"}
        )
        width = trainer.width
        # round r of a stack kept on the mesh: each device's networks [r W, (r + 1) W) of its own
        cut = lambda tree, r: jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, r * width, width), tree)
        put = lambda tree, part, r: jax.tree.map(
            lambda a, b: jax.lax.dynamic_update_slice_in_dim(a, b, r * width, 0), tree, part
        )
        self._cut = jax.jit(per_device(cut, (block, every)))
        self._put = jax.jit(per_device(put, (block, block, every)), donate_argnums=(0,))
        self._orders = {}  # (id of the data keys, epoch, subset) -> (the keys, each round's orders)

    def _program(self, one_network, in_specs, out_specs):
        """``one_network`` run by each device on its block of the stack: one network (width 1) or
        the trainer's ``width`` networks, by the same vmapped program as on one device."""
        width = self.trainer.width

        def per_device(*args):
            if width > 1:
                axes = [0 if spec == sharding_.PartitionSpec("members") else None for spec in in_specs]
                return jax.vmap(one_network, in_axes=axes)(*args)
            args = [
                jax.tree.map(lambda a: a[0], arg) if spec == sharding_.PartitionSpec("members") else arg
                for arg, spec in zip(args, in_specs)
            ]
            return jax.tree.map(lambda a: a[None], one_network(*args))

        return jax.jit(
            jax.shard_map(per_device, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, axis_names={"members"})
        )

    def replicated(self, name, host):
        """A host pytree (the data, an evaluation batch) replicated on every device of the mesh,
        made once per ``name``."""
        if name not in self._replicated:
            self._replicated[name] = to_global(host, self.mesh, sharding_.PartitionSpec())
        return self._replicated[name]

    def rounds(self, networks: int):
        """The stack's indices in rounds of one block (the trainer's width) per members-device, the
        last padded with copies of the first network."""
        per_round = self.members * self.trainer.width
        padded = math.ceil(networks / per_round) * per_round
        index = list(range(networks)) + [0] * (padded - networks)
        return [index[i : i + per_round] for i in range(0, padded, per_round)]

    def _scalar(self, value):
        """An int32 the same on every device of the mesh (a step, a round)."""
        return to_global(np.int32(value), self.mesh, sharding_.PartitionSpec())

    def _members(self, host, ids):
        """The networks ``ids`` of a host stack, laid out along ``members`` (one round)."""
        chosen = jax.tree.map(lambda a: a[np.asarray(ids)], host)
        return to_global(chosen, self.mesh, sharding_.PartitionSpec("members"))

    def resident(self, networks: int) -> bool:
        """Whether a stack of ``networks`` stays on the mesh between chunks (whole rounds, one process)."""
        return jax.process_count() == 1 and networks % (self.members * self.trainer.width) == 0

    def kept_rounds(self, networks: int):
        """The rounds of a stack kept on the mesh: round r is each device's networks [r W, (r + 1) W)."""
        width, per_device = self.trainer.width, networks // self.members
        return [
            [d * per_device + r * width + j for d in range(self.members) for j in range(width)]
            for r in range(per_device // width)
        ]

    def _on_mesh(self, tree):
        """``tree`` split along ``members`` on the mesh: as it is where it already is (the previous
        chunk's states), else copied there (from the default device or the host; a copy, never the
        caller's buffer, which ``train`` would consume)."""
        here = lambda a: isinstance(a, jax.Array) and a.sharding == self._split
        return jax.tree.map(lambda a: a if here(a) else jax.device_put(a, self._split, may_alias=False), tree)

    def _round_orders(self, data_key, epoch: int, subset: bool):
        """Each kept round's data orders for ``epoch`` (the trainer's, per network), split along
        ``members``: computed on the device once per epoch and copied between devices."""
        key = (id(data_key), epoch, subset)  # the entry keeps data_key alive: its id is not reused
        if key not in self._orders:
            if len(self._orders) > 8:
                self._orders.clear()
            trainer = self.trainer
            orders = [
                jax.device_put(
                    jax.numpy.stack([trainer.data_order(data_key[i], epoch, subset) for i in ids]), self._split
                )
                for ids in self.kept_rounds(len(data_key))
            ]
            self._orders[key] = (data_key, orders)
        return self._orders[key][1]

    def train(self, state, data_key, augment_key, start: int, stop: int, loss_sum, check=None):
        """As ``Trainer.train``. A stack of whole rounds comes back on the mesh, and one that came in
        from a previous call is consumed (its buffers donated), as the training loop passes each
        chunk's states on; one from the default device or the host is copied and left as it was."""
        if not self.resident(len(loss_sum)):
            return self._train_through_host(state, data_key, augment_key, start, stop, loss_sum, check)
        state, loss_sum, augment = self._on_mesh((state, loss_sum, jax.random.key_data(augment_key)))
        for r in range(len(self.kept_rounds(len(loss_sum)))):
            block, block_sum, keys = self._cut((state, loss_sum, augment), self._scalar(r))
            orders = lambda epoch, subset: self._round_orders(data_key, epoch, subset)[r]
            block, block_sum = self._round(block, block_sum, keys, orders, start, stop, check)
            state, loss_sum = self._put((state, loss_sum), (block, block_sum), self._scalar(r))
        return state, loss_sum

    def _round(self, block, block_sum, keys, orders, start: int, stop: int, check=None):
        """One round's block trained over [start, stop): one compiled loop per epoch touched, as on
        one device (``orders(epoch, subset)``: its networks' data orders, laid out as the block)."""
        trainer = self.trainer
        data = self.replicated("train", trainer.train_host)
        for step, end, epoch, subset in trainer.epochs(start, stop):
            if check:
                check()
            order = orders(epoch, subset)
            if trainer.host_loop:
                for j in range(step, end):
                    block, block_sum = self._train_step(block, data, order, keys, self._scalar(j), block_sum)
            else:
                block, block_sum = self._train(
                    block, data, order, keys, self._scalar(step), self._scalar(end), block_sum
                )
        return block, block_sum

    def _train_through_host(self, state, data_key, augment_key, start: int, stop: int, loss_sum, check=None):
        """A stack padded to whole rounds, or several processes: the states as whole host arrays
        between chunks, in every process."""
        trainer = self.trainer
        host, sums = jax.device_get(state), np.asarray(loss_sum)
        augment = np.asarray(jax.random.key_data(augment_key))
        out_states, out_sums = [], []
        for ids in self.rounds(len(sums)):
            block, block_sum, keys = (self._members(tree, ids) for tree in (host, sums, augment))
            orders = lambda epoch, subset: to_global(
                np.stack([np.asarray(trainer.data_order(data_key[i], epoch, subset)) for i in ids]),
                self.mesh,
                sharding_.PartitionSpec("members"),
            )
            block, block_sum = self._round(block, block_sum, keys, orders, start, stop, check)
            out_states.append(to_host(block))
            out_sums.append(to_host(block_sum))
        return _joined(out_states, len(sums)), _joined(out_sums, len(sums))

    def evaluate(self, state, split: str):
        trainer = self.trainer
        weights = {"params": state["params"], "batch_stats": state["batch_stats"]}
        networks = len(jax.tree.leaves(weights)[0])
        if self.resident(networks):  # cut from the stack where it is
            weights = self._on_mesh(weights)
            rounds = self.kept_rounds(networks)
            take = lambda r: self._cut(weights, self._scalar(r))
        else:
            host = jax.device_get(weights)
            rounds = self.rounds(networks)
            take = lambda r: self._members(host, rounds[r])
        out = []
        for r in range(len(rounds)):
            block = take(r)
            if trainer.host_loop:
                count = trainer.eval_host[split][0].shape[0]
                one = lambda b: self.replicated((split, b), jax.tree.map(lambda a: a[b], trainer.eval_host[split]))
                sums = [
                    to_host(self._evaluate_batch(block["params"], block["batch_stats"], one(b))) for b in range(count)
                ]
                loss, correct = (np.sum(column, axis=0) for column in zip(*sums))
                total = float(np.sum(trainer.eval_host[split][2]))
                out.append((loss / total, correct / total))
            else:
                batches = self.replicated(split, trainer.eval_host[split])
                out.append(to_host(self._evaluate(block["params"], block["batch_stats"], batches)))
        _, first = np.unique(np.concatenate(rounds), return_index=True)  # each network's place (not its copies)
        loss, accuracy = (np.concatenate(column)[first] for column in zip(*out))
        return loss, accuracy

    def compiled_text(self) -> str:
        """The optimized HLO of the training program on this mesh (for tests: collectives)."""
        trainer = self.trainer
        one = trainer.init_state(trainer.init_params, trainer.init_batch_stats, masks.full_mask(trainer.init_params))
        n = self.members * trainer.width
        stacked = jax.tree.map(lambda a: np.stack([np.asarray(a)] * n), one)
        args = (
            to_global(stacked, self.mesh, sharding_.PartitionSpec("members")),
            self.replicated("train", trainer.train_host),
            to_global(
                np.zeros((n, len(trainer.train_host[1])), np.int32), self.mesh, sharding_.PartitionSpec("members")
            ),
            to_global(np.zeros((n, 2), np.uint32), self.mesh, sharding_.PartitionSpec("members")),
            to_global(np.int32(0), self.mesh, sharding_.PartitionSpec()),
            to_global(np.int32(1), self.mesh, sharding_.PartitionSpec()),
            to_global(np.zeros(n, np.float32), self.mesh, sharding_.PartitionSpec("members")),
        )
        program = self._train_step if trainer.host_loop else self._train
        if trainer.host_loop:
            args = args[:5] + args[6:]
        return program.lower(*args).compile().as_text()


def _joined(blocks, networks: int):
    """Rounds of host blocks back into one stack of ``networks`` (padding dropped), on the device."""
    return jax.tree.map(lambda *parts: jax.numpy.asarray(np.concatenate(parts)[:networks]), *blocks)


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
