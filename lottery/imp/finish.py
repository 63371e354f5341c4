"""The end of a run, once every level is trained: the results collected, the objective measured,
W&B's summary and mask similarity, the figures and the table; and the warnings a finished network
can give (layer collapse, chance accuracy). Also how a run's invocation is recorded from its start
to its end (finished, preempted, interrupted or failed) and the progress bars it shows meanwhile.
"""

import contextlib
import os
import shutil
import sys
from typing import List, Optional

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lottery import backend, hosts
from lottery.errors import Preempted
from lottery.training import loop
from lottery.analysis import figures, objective, runs, tables, tickets
from lottery.imp.experiment import Experiment
from lottery.pruning import controls, masks
from lottery.results import paths
from lottery.results.invocations import Invocation, program
from lottery.results.metrics import LMC_KEYS, NETWORK_KEYS
from lottery.results.store import read_json


class Results(list):
    """The metrics of every trained network, ordered by level, replicate, kind (ticket first), and
    the value of the objective config ``objective`` names (None: none, or not process 0)."""

    objective: Optional[float] = None


@contextlib.contextmanager
def recorded(experiment, console: Console):
    """This invocation's record in invocations.jsonl (``experiment.invocation``) around its levels:
    its program (with a note where results here were trained by another), then how it ended."""
    cfg, trainer = experiment.cfg, experiment.trainer
    invocation = experiment.invocation = Invocation(
        experiment.directory,
        cfg,
        program(trainer.host_loop, cfg.mesh, trainer.width, backend.deterministic_ops()),  # set before JAX started
        write=hosts.primary(),
    )
    if paths.replicates(experiment.directory):
        invocation.note_other_programs(console.print)
    record_sweep_job(experiment.directory)
    try:
        yield invocation
    except Preempted:
        experiment.tracker.abort()
        invocation.end("preempted")
        loop.PREEMPTION.pass_on()  # under submitit: requeue the job and exit (SystemExit)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, nothing failed
        experiment.tracker.abort(at_once=True)
        invocation.end("interrupted")
        raise
    except BaseException as error:
        experiment.tracker.abort()
        invocation.end(f"failed: {type(error).__name__}: {error}".splitlines()[0])
        raise
    invocation.end("finished")


def progress(console: Console, enabled: bool) -> Progress:
    """The bars of the levels being trained (none where ``enabled`` is false or the console quiet)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    columns += (TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not enabled or console.quiet)


def finish(experiment, console: Console, trained: int) -> Results:
    """Every finished network's results (``Results``) and, on process 0, what the run reports of
    them: the objective (printed, written, returned to a sweeper), W&B's summary and similarity
    table, the figures and the results table. ``trained``: networks this invocation trained (a
    re-run of finished work rewrites nothing)."""
    cfg = experiment.cfg
    results = Results(collect(experiment))
    if not hosts.primary():
        return results
    shutil.rmtree(os.path.join(experiment.directory, paths.CHECKPOINTS), ignore_errors=True)  # all finished
    df = runs.load_runs(experiment.directory)
    measured = objective.measure(cfg, df)  # config `objective`'s value (objective.py), or why the results lack it
    outcome = None  # the W&B summary: what a W&B sweep optimizes, or why it is missing
    if isinstance(measured, objective.Objective):
        outcome = {"objective": measured.value, "objective/spec": measured.key}
    elif measured is not None:
        outcome = {"objective/error": str(measured)}
    similarity = None  # how alike the masks are, for W&B (analysis/tickets.py; report shows it too)
    if experiment.tracker.enabled and cfg.levels > 0 and trained:  # a re-run of finished work: no new runs
        similarity = tickets.similarity_table(experiment.directory, ("replicates", "kinds"), kinds=None, layers=False)
    experiment.tracker.finish(df, summary=outcome, similarity=similarity)
    figure = os.path.join(experiment.directory, "accuracy_vs_sparsity.png")
    if trained or not os.path.exists(figure):  # a re-run of finished work rewrites nothing
        figures.save_figures(df, experiment.directory)
    summary = runs.summarize(df)
    console.print(
        tables.results(summary, title=f"{tables.method(cfg)} results: {experiment.directory}", experiment_column=False)
    )
    console.print(f"figures: {os.path.join(experiment.directory, '*.png')}")
    results.objective = objective.report(measured, experiment.directory, console)  # prints, writes; raises if missing
    return results


def record_sweep_job(directory: str) -> None:
    """Under a Hydra multirun, leave a pointer to the experiment in the job's directory, so that
    ``lottery.report`` and ``load_runs`` find a sweep's experiments from the sweep directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and hosts.primary():
        job_dir = HydraConfig.get().runtime.output_dir
        os.makedirs(job_dir, exist_ok=True)
        with open(os.path.join(job_dir, runs.POINTER), "w") as f:
            f.write(os.path.abspath(directory))


def warn_collapse(experiment: Experiment, metrics: dict, mask) -> None:
    """Pruning that empties a layer, or cuts half its units off from every input, leaves a network
    that cannot learn past it (layer collapse, Tanaka et al. 2020): say so (analysis/tickets.py).
    Under a unit structure (neurons, channels, heads) units without inputs are what was pruned."""
    found = tickets.collapse(masks.flatten(mask), experiment.prunable)
    if experiment.structure.layers:  # units pruned whole are the structure, not a collapse: only empty layers
        found = [c for c in found if c["empty"]]
    if found:
        cfg = experiment.cfg.pruning
        cause = "the layer's pruning rate empties it before the others"
        if cfg.strategy == "global":
            cause = "global ranking does this at high sparsity (pruning.strategy=layerwise keeps every layer" + (
                ", as pruning.rounds>1 does for data-free criteria at start)" if cfg.prune_at == "start" else ")"
            )
        print(
            f"warning: level {metrics['level']}, replicate {metrics['replicate']}, {metrics['kind']}: layer collapse: "
            f"{tickets.describe_collapse(found)}; {cause}",
            file=sys.stderr,
        )


def warn_at_chance(experiment: Experiment, metrics: dict) -> None:
    """A network that ends at chance accuracy learned nothing, without a NaN to stop it (Adam with
    lr=1e6 sits at ~10%): say so. Chance: 1/classes, plus three standard errors of the test set."""
    accuracy = metrics["final"].get("test_accuracy")
    tested = float(np.sum(experiment.trainer.eval_data["test"][2])) if experiment.trainer.eval_data["test"] else 0
    if accuracy is None or not tested:
        return
    chance = 1 / experiment.num_classes
    if accuracy <= chance + 3 * (chance * (1 - chance) / tested) ** 0.5:
        print(
            f"warning: level {metrics['level']}, replicate {metrics['replicate']}, {metrics['kind']}: test accuracy "
            f"{accuracy:.1%} is at chance ({chance:.0%} for {experiment.num_classes} classes): the network learned "
            f"nothing; a learning rate too large for it (optimizer.lr={experiment.cfg.optimizer.lr}) is the usual "
            "cause, or pruning emptied a layer",
            file=sys.stderr,
        )


def collect(experiment: Experiment) -> List[dict]:
    """Every finished network's metrics (levels, replicates, kinds in order), with LMC results."""
    results = []
    for level in range(experiment.cfg.levels + 1):
        for replicate in range(experiment.cfg.replicates):
            lmc_file = paths.metrics_file(paths.lmc_dir(experiment.directory, replicate, level))
            for kind in controls.kinds():
                metrics_file = paths.metrics_file(paths.network_dir(experiment.directory, replicate, level, kind))
                if os.path.exists(metrics_file):
                    metrics = read_json(metrics_file, NETWORK_KEYS)
                    if kind == "ticket" and os.path.exists(lmc_file):
                        metrics["lmc"] = read_json(lmc_file, LMC_KEYS)
                    results.append(metrics)
    return results
