"""Linear mode connectivity and instability analysis (Frankle, Dziugaite, Roy & Carbin 2020).

Two copies of a network are trained from the same starting point with different data orders; the
test error is evaluated at evenly spaced points on the straight line between the two trained
weight vectors (batch-norm statistics are interpolated alike). The error barrier is the largest
error on the path minus the mean of the two endpoints' errors; a network is "stable" when it is
below 2%.

``run`` trains the copies of every replicate at a level (from where the levels say they start),
``measure`` evaluates the path between them and writes ``lmc/metrics.json`` and ``path.png``.

``between_levels`` (config ``lmc.between_levels``) measures level-to-level connectivity (Paul,
Chen, Larsen, Frankle, Ganguli & Dziugaite, "Unmasking the Lottery Ticket Hypothesis", ICLR 2023,
Sec. 4): the path from level L-1's trained weights projected onto level L's mask (the pruned
weights set to 0, the point IMP prunes from) to level L's trained weights. They find IMP succeeds
while consecutive levels are linearly connected (small barrier) and fails once they are not. No
training: two saved networks, ``lmc.points`` evaluations, ``level_L/lmc_levels/``.
"""

import os
import shutil
from typing import Callable

import jax
import numpy as np

from lottery import hosts
from lottery.errors import LotteryError
from lottery.imp.experiment import Experiment
from lottery.pruning import masks
from lottery.results import paths
from lottery.results.metrics import LMC_KEYS
from lottery.results.store import fresh, read_json, save_tree, write_json
from lottery.training import trainer as training
from lottery.training.loop import Network, group_checkpoints, remove_checkpoints

STABLE_BARRIER = 0.02
POINTS_PER_CALL = 8  # interpolated networks evaluated by one batched call (bounds memory)


def interpolate(a, b, alphas):
    """A stack of networks (1 - α) a + α b, one per α, along a leading axis."""
    alphas = np.asarray(alphas, np.float32)

    def mix(x, y):
        alpha = alphas.reshape(-1, *[1] * np.ndim(x))  # broadcast over the leaf's axes
        return (1 - alpha) * x + alpha * y

    return jax.tree.map(mix, a, b)


def error_along_path(trainer, a, b, points: int) -> dict:
    """Test error and loss at ``points`` evenly spaced points from network ``a`` (α=0) to ``b``.

    ``a`` and ``b`` are ``{"params", "batch_stats"}`` pytrees of host arrays.
    """
    alphas = np.linspace(0.0, 1.0, points)
    errors, losses = [], []
    for first in range(0, points, POINTS_PER_CALL):
        networks = interpolate(a, b, alphas[first : first + POINTS_PER_CALL])
        loss, accuracy = trainer.evaluate(networks, "test")
        errors.extend((1 - accuracy).tolist())
        losses.extend(loss.tolist())
    return {"alphas": alphas.tolist(), "test_error": errors, "test_loss": losses, "barrier": barrier(errors)}


def barrier(errors) -> float:
    return float(max(errors) - (errors[0] + errors[-1]) / 2)


def plot(paths, file: str, title: str) -> None:
    """Test error along the path, one line per replicate, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for i, path in enumerate(paths):
        axis.plot(
            path["alphas"],
            100 * np.asarray(path["test_error"]),
            marker=".",
            label=f"replicate {i}: barrier {100 * path['barrier']:.2f}%",
        )
    axis.set_xlabel("interpolation α")
    axis.set_ylabel("test error (%)")
    axis.set_title(title)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(file, dpi=120)
    plt.close(figure)


def run(experiment: Experiment, level: int, progress, start_state: Callable[[int], dict]) -> int:
    """Instability analysis at ``level`` for every replicate that has not had it yet, the copies
    starting from ``start_state(replicate)``; returns the number of copies trained. A measurement
    with another ``lmc.points`` is re-measured from the copies it kept (``lmc/copy_a``,
    ``lmc/copy_b``); the copies are never retrained."""
    points, networks = experiment.cfg.lmc.points, []
    for replicate in range(experiment.cfg.replicates):
        directory = paths.lmc_dir(experiment.directory, replicate, level)
        if os.path.isdir(directory):
            remeasure(experiment, level, replicate, directory, progress.console.print)
            continue
        state = start_state(replicate)
        keys = experiment.keys(replicate)["lmc"]
        for copy, kind in enumerate(("lmc_a", "lmc_b")):
            data_key, augment_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(keys, level), copy))
            networks.append(Network(replicate, kind, directory, state, data_key, augment_key))
    if not networks:
        return 0
    start, end = experiment.segment(level)
    start = experiment.rewind if level == 0 else start  # level 0: the copies start at θk
    states = training.stack([network.state for network in networks])
    task = progress.add_task(f"level {level}: linear mode connectivity, {len(networks)} copies", total=end - start)
    checkpoints = group_checkpoints(experiment.directory, "lmc", level, networks, start, end)
    states, _, _, _ = experiment.train(
        states,
        networks,
        level,
        start,
        end,
        lambda n: progress.advance(task, n),
        evaluate=False,
        checkpoints=checkpoints,
        say=progress.console.print,
    )
    for i in range(0, len(networks), 2):
        copies = [training.unstack(states, j) for j in (i, i + 1)]
        a, b = ({key: c[key] for key in ("params", "batch_stats")} for c in copies)
        work_dir = fresh(networks[i].directory + ".partial")
        save_tree(os.path.join(work_dir, "copy_a"), a)
        save_tree(os.path.join(work_dir, "copy_b"), b)
        path = measure(experiment, level, networks[i].replicate, start, a, b, work_dir)
        if hosts.primary():
            os.rename(work_dir, networks[i].directory)
            experiment.invocation.add(level=level, replicate=networks[i].replicate, kind="lmc", points=points)
            density = masks.density(masks.counts(networks[i].state["mask"], experiment.prunable))
            experiment.tracker.log_lmc(networks[i].replicate, level, density, path)
    remove_checkpoints(checkpoints)
    return len(networks)


def measure(experiment: Experiment, level: int, replicate: int, start: int, a, b, directory: str) -> dict:
    """The error along the path between copies ``a`` and ``b`` at ``lmc.points`` points, written
    with the number of points to ``directory``/metrics.json, and its plot."""
    path = error_along_path(experiment.trainer, a, b, experiment.cfg.lmc.points)
    path.update(level=level, replicate=replicate, start_step=start, points=experiment.cfg.lmc.points)
    write_json(paths.metrics_file(directory), path)
    if hosts.primary():
        plot([path], os.path.join(directory, "path.png"), f"level {level}, replicate {replicate}: from step {start}")
    return path


def between_levels(experiment: Experiment, level: int, say=print) -> int:
    """Level-to-level connectivity at ``level`` (module docstring) for every replicate whose level
    has no measurement at ``lmc.points`` points yet; returns how many were measured."""
    points, measured = experiment.cfg.lmc.points, 0
    for replicate in range(experiment.cfg.replicates):
        directory = paths.lmc_levels_dir(experiment.directory, replicate, level)
        metrics_file = paths.metrics_file(directory)
        if os.path.exists(metrics_file) and read_json(metrics_file, LMC_KEYS).get("points") == points:
            continue
        this_level = experiment.level_dir(replicate, level)
        previous = experiment.load(experiment.level_dir(replicate, level - 1), "trained")
        mask = experiment.load(this_level, "ticket")["mask"]
        a = {"params": masks.apply_mask(previous["params"], mask), "batch_stats": previous["batch_stats"]}
        path = error_along_path(experiment.trainer, a, experiment.load(this_level, "trained"), points)
        path.update(
            level=level,
            replicate=replicate,
            start_step=experiment.segment(level)[0],
            points=points,
            endpoints=[f"level {level - 1} trained, pruned to level {level}'s mask", f"level {level} trained"],
        )
        work_dir = fresh(directory + ".partial")
        write_json(paths.metrics_file(work_dir), path)
        if hosts.primary():
            plot([path], os.path.join(work_dir, "path.png"), f"replicate {replicate}: level {level - 1} -> {level}")
            if os.path.isdir(directory):  # measured at another number of points: the new one replaces it
                os.rename(directory, directory + ".old")
                os.rename(work_dir, directory)
                shutil.rmtree(directory + ".old")
            else:
                os.rename(work_dir, directory)
            experiment.invocation.add(level=level, replicate=replicate, kind="lmc_levels", points=points)
        measured += 1
    return measured


def remeasure(experiment: Experiment, level: int, replicate: int, directory: str, say) -> None:
    """A finished LMC measurement asked for at another number of points: measure the path again
    from its saved copies (the copies, trained once, are the result; the path records its points)."""
    points = experiment.cfg.lmc.points
    measured = read_json(paths.metrics_file(directory), LMC_KEYS)
    had = measured.get("points", len(measured.get("alphas", [])))
    if had == points:
        return
    if not os.path.isdir(os.path.join(directory, "copy_a")):
        raise LotteryError(
            f"{directory} was measured at {had} points and its copies were not kept (an older "
            f"version); ask for lmc.points={had}, or delete that directory to train the copies "
            f"again and measure {points} points"
        )
    a, b = (experiment.load(directory, what) for what in ("copy_a", "copy_b"))
    path = measure(experiment, level, replicate, measured["start_step"], a, b, directory)
    experiment.invocation.add(level=level, replicate=replicate, kind="lmc", points=points, remeasured_from=had)
    say(
        f"level {level}, replicate {replicate}: LMC path measured again at {points} points from its saved copies "
        f"(was {had}): barrier {100 * path['barrier']:.2f}% (was {100 * measured['barrier']:.2f}%)"
    )
    density = masks.density(
        masks.counts(experiment.load(experiment.level_dir(replicate, level), "ticket")["mask"], experiment.prunable)
    )
    experiment.tracker.log_lmc(replicate, level, density, path)
