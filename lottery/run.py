"""Command line: ``python -m lottery.run [+exp=NAME] [key=value ...]`` (Hydra; ``-m`` for sweeps).

With no experiment it runs the quickstart (``conf/exp/quickstart.yaml`` equals the defaults).
Bad input (an unknown key or name, a wrongly typed or out-of-range value, missing or corrupt data,
a results directory that cannot be written) ends with one line ``error: ...`` on stderr and exit
code 2. SIGTERM writes a checkpoint and ends with one line ``preempted: ...`` and exit code 143
(outside training -- loading data, compiling, writing the report -- it stops at once, with the same
line and code)
(SIGUSR2, submitit's time-limit notice: the same, 140, or in a submitit job a requeue);
Ctrl-C does the same with ``interrupted: ...`` and 130 (twice: at once). The same command
continues the run. In a sweep (``-m``) every job's config is checked before the first starts, a
job that fails does not stop the others, and the sweep ends with a line naming the failed jobs.
A run returns the value config ``objective`` names (lottery/analysis/objective.py) to Hydra's sweeper: an
Optuna search (``-m hparams_search=NAME``, lottery/search.py) optimizes it.
"""

import asyncio
import functools
import logging
import os
import re
import signal
import sys
import traceback
from typing import List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lottery import config  # noqa: F401  (registers the structured config schema)
from lottery import sweeps
from lottery.config import CONF  # conf/: the experiments
from lottery.errors import LotteryError, Preempted, Terminated, describe

# JAX probes for a TPU and warns when there is none; that is not news on CPU or GPU machines.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
# Alembic (under Optuna's sqlite storage) announces each of its plugins at INFO, which Hydra shows.
logging.getLogger("alembic").setLevel(logging.WARNING)
# A failed trial returns None, its error line said why (lottery/search.py): the Optuna sweeper's two
# lines that None is not float-castable say nothing more.
logging.getLogger("hydra_plugins.hydra_optuna_sweeper._impl").addFilter(
    lambda record: "float-castable. Got 'None'" not in record.getMessage()
)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    """One experiment; returns its objective's value (None: objective.name=none, or a failed job,
    which the Optuna sweeper then counts as a failed trial: lottery/search.py). In a sweep, the job
    leaves its status in its job directory (lottery/sweeps.py) and an error does not end the sweep."""
    from lottery.imp.checks import with_data  # imports no JAX: a mistaken setting is refused at once

    status = None
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        job = HydraConfig.get().job
        label = f"job {job.num} ({job.override_dirname or 'no overrides'})"
        status = functools.partial(sweeps.write, HydraConfig.get().runtime.output_dir, label=label)
        status("running")
    try:
        checked = with_data(cfg)  # the config, then with its data (NumPy)
        from lottery import imp  # JAX and Flax: only once the config holds

        value = imp.run(cfg, checked=checked).objective
        if status:
            status("finished")
        return value
    except LotteryError as error:  # handled here, inside the job, so Hydra adds nothing to it
        message = f"error: {error}"
    except Preempted as preempted:  # a signal stops a sweep too: the same command continues it
        word = "interrupted" if preempted.signal == "SIGINT" else "preempted"
        if status:
            status(word)
        finish(f"{word}: {preempted}", preempted.code)
    except Terminated as terminated:  # SIGTERM / SIGUSR2 outside training (loading data, compiling, figures)
        if status:
            status("preempted")
        finish(stopped_outside_training(terminated), terminated.code)
    except KeyboardInterrupt:  # a second Ctrl-C in training, or one before or after it (loading data, figures)
        if status:
            status("interrupted")
        from lottery.training.loop import PREEMPTION

        how = "Ctrl-C twice" if PREEMPTION.requested == "SIGINT" else "Ctrl-C outside training"
        finish(
            f"interrupted: stopped at once ({how}); finished results and the last checkpoint are intact: "
            "run the same command to continue",
            130,
        )
    except Exception as error:
        line = describe(error)
        if line is None:
            if status:
                status("failed", error=f"{type(error).__name__}: {error}".splitlines()[0])
            raise
        message = f"error: {line}"
    if not status:
        finish(message, 2)
    print(f"{message} [{label}]", file=sys.stderr)
    status("failed", error=message[len("error: ") :])  # the sweep goes on; cli() sums up


OUTSIDE = (signal.SIGTERM, signal.SIGUSR2)  # a scheduler's notices; Ctrl-C is Python's KeyboardInterrupt


def stop_outside_training(signum, frame):
    """SIGTERM or SIGUSR2 where the training loop's handler is not installed: stop at once (there
    is no checkpoint to write: before training nothing is trained, after it everything is saved)."""
    raise Terminated(signal.Signals(signum).name, 128 + signum)


stop_outside_training.outside_training = (
    True  # not a launcher's handler: the training loop does not pass signals on to it
)


def stopped_outside_training(terminated: Terminated) -> str:
    return (
        f"preempted: {terminated.signal} outside training (loading data, compiling, or writing the report); "
        "finished results are intact: run the same command to continue"
    )


def finish(line: str, code: int) -> None:
    """End the process with ``line`` on stderr and exit ``code``, and nothing after it: libraries
    that shut down after a failure (orbax's event loop, threads of an aborted write) would otherwise
    print their own tracebacks below the one line that matters."""
    print(" ".join(line.split("\n")), file=sys.stderr, flush=True)  # one line, whatever a library's message held
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    sys.stderr = open(os.devnull, "w")
    sys.exit(code)


def one_line(error: Exception) -> str:
    """Hydra's and OmegaConf's multi-line messages, condensed: what is wrong, and where."""
    text = str(error)
    if error.__cause__ is not None and str(error.__cause__) not in text:
        text += "\n" + str(error.__cause__)
    text = text.replace("Config search path:", "\0").split("\0")[0]
    lines = [line.strip().rstrip(".") for line in text.splitlines()]
    lines = [line for line in lines if line and not re.match(r"(reference_type|object_type)=", line)]
    message = ""
    for line in lines:
        if message.endswith(":"):  # a list of choices follows its heading
            message += " " + line
        elif message and re.fullmatch(r"[\w./-]+", line) and ":" in message:
            message += ", " + line
        else:
            message += ("; " if message else "") + line
    return message


def check_overrides(arguments: List[str]) -> None:
    """Overrides Hydra would take but that say nothing (``=5``: a value without a key)."""
    for argument in arguments:
        if not argument.startswith("-") and "=" in argument and not argument.split("=", 1)[0].lstrip("+~"):
            raise LotteryError(f"override {argument!r} has no key; write key=value, e.g. pruning.rate=0.5")


# Arguments that choose Hydra's Optuna sweeper: a search preset, or the sweeper itself.
SEARCH = re.compile(r"[+~]*(hparams_search=|hydra/sweeper=optuna\b)")


def check_search(arguments: List[str]) -> None:
    """A search is a sweep (``-m``): without it Hydra would quietly run one experiment with the
    preset's fixed values. And it needs the Optuna sweeper plugin, an extra: say so in one line,
    not a Hydra trace."""
    wanted = [a for a in arguments if SEARCH.match(a) and not a.endswith("=null")]
    if not wanted:
        return
    if "-m" not in arguments and "--multirun" not in arguments:
        raise LotteryError(
            f"{wanted[0]} is an Optuna search, a sweep: add -m (python -m lottery.run -m {wanted[0]} "
            "...); without it one experiment would run, and nothing would be searched"
        )
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    except ImportError:
        raise LotteryError(
            f"{wanted[0]} needs Hydra's Optuna sweeper (hydra-optuna-sweeper), which is not "
            "installed: pip install -e '.[search]'"
        ) from None


def check_sweep(arguments: List[str]) -> None:
    """Compose every job of a basic multirun and check its config before the first job starts,
    so that a typo in one value does not surface hours into a sweep. Another sweeper's jobs
    (an Optuna search) are not known in advance: each is checked as it starts."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lottery.imp.checks import check

    # Where the jobs run (hydra/launcher=slurm, hydra.launcher.nodes=2) is not what they are.
    launcher = re.compile(r"hydra[./]launcher\b")
    overrides = [a for a in arguments if not a.startswith("-") and not launcher.match(a.lstrip("+~"))]
    if any(a.split("=", 1)[0].lstrip("+~").startswith(("hydra", "hparams_search")) for a in overrides):
        return  # another sweeper or other Hydra settings: its jobs are checked as they start
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in arguments):
        return  # --cfg, --config-name, --config-dir, ...: Hydra composes otherwise; jobs are checked as they start
    parsed = OverridesParser.create().parse_overrides(overrides)
    try:
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:  # sweeps expanded against the config (glob(...)): each job is checked as it starts
        return
    problems = []
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for number, job in enumerate(jobs):
            try:
                check(compose(config_name="config", overrides=list(job)))
            except (LotteryError, HydraException, OmegaConfBaseException) as error:
                message = str(error) if isinstance(error, LotteryError) else one_line(error)
                problems.append(f"job {number} ({','.join(job) or 'no overrides'}): {message}")
    if problems:
        raise LotteryError(
            f"{len(problems)} of {len(jobs)} sweep jobs have a bad config, nothing was started: " + "; ".join(problems)
        )


def tolerate_closed_event_loops() -> None:
    """When a checkpoint write or read fails (a full disk, a truncated file), tensorstore's reads and
    writes still in flight call back into the event loop orbax already closed, and each prints
    ``RuntimeError: Event loop is closed`` around the one line that reports the failure. A closed
    loop can run no callback: in this process (the command line, not the library), drop them."""
    original = asyncio.BaseEventLoop.call_soon_threadsafe

    def call_soon_threadsafe(self, *args, **kwargs):
        return None if self.is_closed() else original(self, *args, **kwargs)

    asyncio.BaseEventLoop.call_soon_threadsafe = call_soon_threadsafe


def cli() -> None:
    # Let Hydra raise instead of printing its own multi-line report, so every error is one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    tolerate_closed_event_loops()
    for number in OUTSIDE:  # a handler of a launcher (submitit) or of an embedding program stays
        if signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, stop_outside_training)
    arguments = sys.argv[1:]
    try:
        check_overrides(arguments)
        check_search(arguments)
        if "-m" in arguments or "--multirun" in arguments:
            check_sweep(arguments)
        try:
            main()
        except Exception:  # an error, not an interruption: no trial of an Optuna study is left running
            from lottery import search

            search.fail_running()
            raise
    except LotteryError as error:
        finish(f"error: {error}", 2)
    except (HydraException, OmegaConfBaseException) as error:
        finish(f"error: {one_line(error)}", 2)
    except KeyboardInterrupt:  # before any level started (loading data, compiling)
        finish("interrupted: stopped before training began; nothing was lost", 130)
    except Terminated as terminated:  # SIGTERM / SIGUSR2 outside a job's run (Hydra composing, a sweep's set-up)
        finish(stopped_outside_training(terminated), terminated.code)
    except ValueError as error:  # Hydra's refusal of its flags, or the Optuna sweeper's report of the best trial
        from lottery import search  # of a study that has none

        if traceback.extract_tb(error.__traceback__)[-1].name == "_run_hydra":  # e.g. -m with --cfg
            finish(f"error: {error}", 2)
        if not search.no_completed_trial(error):
            raise
        if not sweeps.summary()[1]:  # else the line below names the failed jobs
            finish(
                "error: the Optuna study has no completed trial: every trial failed (their error lines say why); "
                "raise hydra.sweeper.n_trials to run more",
                2,
            )
    jobs, failed = sweeps.summary()  # from every job's status file, whichever process ran it
    if failed:
        finish(sweeps.failed_line(jobs, failed), 2)
    if sweeps.SweepJobs.directory and not jobs and not sweeps.SweepJobs.searched:
        finish("error: the sweep has no job: its overrides expand to no value (an empty choice or glob)", 2)


if __name__ == "__main__":
    cli()
