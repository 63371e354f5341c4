"""Hyperparameter search: Hydra's Optuna sweeper with a study that resumes (``pip install -e '.[search]'``).

    python -m lottery.run -m hparams_search=lenet_rewind_rate      # conf/hparams_search/

A preset picks the Optuna sweeper, the search space (``hydra.sweeper.params``), the objective
(config ``objective``, lottery/analysis/objective.py, which ``lottery.run`` returns to the sweeper) and a
study stored in sqlite under ``output_dir``. Each trial is an ordinary experiment, in its own
hash-named directory: a configuration proposed again reads its finished results instead of
training, and ``lottery.report <sweep dir>`` reads a search like any sweep.

``OptunaStudy``, a Hydra callback (conf/config.yaml), prepares the study before the sweeper opens it:
- creates the directory of an sqlite storage (SQLAlchemy creates the file, not its directory);
- takes a lock on the study for the sweep (one sweeper per study at a time);
- makes ``hydra.sweeper.n_trials`` the study's total, where the plugin would add that many trials
  on each command: the trials the study has finished are subtracted, so the same command after an
  interruption runs the trials left, and once more runs none (raise n_trials to add trials);
- trials an interruption left running are marked failed (``interrupted``) and their parameters
  queued first, so their experiments continue from their checkpoints;
- adds the number of trials the study holds to the sampler's seed: a seeded sampler would
  otherwise propose the first command's parameters again;
- warns when the study's earlier trials ran with other fixed overrides (another study is then due);
- before any of that, checks the search space (``check_space``): every value a trial can draw passes
  the config's checks, and the study's earlier trials searched each key with the same kind of
  distribution (and choices), which optuna requires; else one line and nothing is touched.
An error that stops the sweeper between asking for a trial and telling its result leaves no trial
running (``fail_running``, from ``lottery.run``); an interruption does, to run it again first.

A trial whose run ends in an ``error:`` line returns None: the plugin counts a value that is not
float-castable as a failed trial and goes on (a NaN would make its failure handling raise, with
optuna 2.10). Process 0's value is the one returned.
"""

import os
import sys
import traceback
import warnings
from typing import Any, Dict, List, Optional, Tuple

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from lottery.errors import LotteryError, at
from lottery.results.lock import acquire

SQLITE = "sqlite:///"
INTERRUPTED = "interrupted"  # user attribute of a trial a previous command left running


def is_optuna(config: DictConfig) -> bool:
    return str(config.hydra.sweeper.get("_target_", "")).endswith("OptunaSweeper")


class OptunaStudy(Callback):
    """Before an Optuna sweep: the storage's directory, a lock, n_trials as the study's total,
    interrupted trials queued again, and the sampler's seed moved past the trials already drawn."""

    # (storage, study name, trials it held before this sweep) of the study this process prepared
    opened: Optional[Tuple[str, str, int]] = None

    def __init__(self) -> None:
        self.lock = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.prepare(config)
        except LotteryError as error:  # Hydra turns a callback's exceptions into warnings and goes on
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Exception as error:  # a damaged or foreign database: optuna's and SQLAlchemy's many types
            storage = config.hydra.sweeper.get("storage")
            print(
                f"error: {storage}: cannot be opened as an Optuna study ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); move it aside to start the study afresh",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(2)

    def prepare(self, config: DictConfig) -> None:
        if not is_optuna(config):
            return
        space = check_space(config)
        if not config.hydra.sweeper.get("storage") or not config.hydra.sweeper.get("study_name"):
            return  # a study that lives in memory: nothing to resume
        sweeper = config.hydra.sweeper
        storage, name = str(sweeper.storage), str(sweeper.study_name)
        if storage.startswith(SQLITE) and storage != SQLITE + ":memory:":
            # Absolute, ~ expanded, as output_dir is for experiments: the same study from any directory.
            database = os.path.abspath(os.path.expanduser(storage[len(SQLITE) :]))
            storage = SQLITE + database
            with read_write(sweeper):
                sweeper.storage = storage
            with at(os.path.dirname(database) or "."):
                os.makedirs(os.path.dirname(database) or ".", exist_ok=True)
            self.lock = lock(database + ".lock")
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweeper says what it opens
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # a new study: the sweeper creates it
            OptunaStudy.opened = (storage, name, 0)
            return
        trials = study.get_trials(deepcopy=False)
        check_kinds(*space, trials, name)
        OptunaStudy.opened = (storage, name, len(trials))
        if not storage.startswith(SQLITE):  # no lock: a running trial may be another sweeper's
            interrupted = []
        else:
            interrupted = [t for t in trials if t.state == TrialState.RUNNING]
        for trial in interrupted:  # queued again first: its experiment continues from its checkpoint
            study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
            study.tell(trial.number, state=TrialState.FAIL)
            if trial.params:
                with warnings.catch_warnings():  # "experimental" in optuna 2.10, and what this needs
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.enqueue_trial(trial.params)
        finished = [t for t in trials if t.state.is_finished() and not t.user_attrs.get(INTERRUPTED)]
        left = max(0, sweeper.n_trials - len(finished))
        if not left:  # no job creates the sweep directory, where the sweeper writes the best trial
            os.makedirs(str(config.hydra.sweep.dir), exist_ok=True)
        with read_write(sweeper):
            sweeper.n_trials = left
            if sweeper.sampler.get("seed") is not None:
                sweeper.sampler.seed = sweeper.sampler.seed + len(trials)
        print(
            f"optuna study {name} ({storage}): {len(finished)} of {len(finished) + left} trials finished"
            + (f", {len(interrupted)} interrupted (run again first)" if interrupted else "")
            + (f"; running {left} more" if left else "; nothing to run (raise hydra.sweeper.n_trials to add trials)"),
            flush=True,
        )
        earlier = {k: v for t in finished[-1:] for k, v in t.user_attrs.items() if k != INTERRUPTED}
        fixed = fixed_overrides(config)
        if finished and earlier != fixed:
            differ = sorted(k for k in set(earlier) | set(fixed) if earlier.get(k) != fixed.get(k))
            print(
                f"warning: optuna study {name}: its earlier trials ran with other fixed values ("
                + ", ".join(f"{k}: {earlier.get(k, '-')} -> {fixed.get(k, '-')}" for k in differ)
                + "); the sampler compares them with these as if alike; name another study for another "
                "search: hydra.sweeper.study_name=...",
                file=sys.stderr,
                flush=True,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def search_space(config: DictConfig) -> Tuple[Dict[str, Any], Dict[str, str], Dict[str, str]]:
    """What the plugin makes of ``hydra.sweeper.params`` and the command line (its own function): the
    distribution of each searched key, the fixed values every trial gets, and each key's override as written."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    space, fixed = create_params_from_overrides(arguments)
    written = {argument.split("=", 1)[0]: argument for argument in arguments}  # the last one of a key wins
    return {k: v for k, v in space.items() if k not in fixed}, fixed, written  # a fixed value wins, as there


def check_space(config: DictConfig) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Every value a trial can draw, checked as a job's config is (``imp.check``) before the study is
    touched: each choice, and both bounds of each interval or range, the other searched keys at
    their first value. Else a bound the config refuses (``pruning.rate=interval(0.1,1.5)``) fails
    trials at random, each after the study has recorded it. Returns the searched keys' distributions
    and their overrides as written (``search_space``)."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lottery import imp

    space, fixed, written = search_space(config)
    values = {name: list(getattr(d, "choices", None) or (d.low, d.high)) for name, d in space.items()}
    for name, drawn in values.items():
        for value in drawn:
            trial = {**{k: v[0] for k, v in values.items()}, name: value, **fixed}
            try:
                imp.check(
                    compose(config_name=config.hydra.job.config_name, overrides=[f"{k}={v}" for k, v in trial.items()])
                )
            except (LotteryError, HydraException, OmegaConfBaseException) as error:
                why = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise LotteryError(
                    f"{written.get(name, name)}: a trial could draw {value}: {why}; the study was not touched"
                ) from None
    return space, written


def check_kinds(space: Dict[str, Any], written: Dict[str, str], trials, study: str) -> None:
    """The study's earlier trials searched each key of ``space`` with the same kind of distribution
    (and choices): optuna requires it, and would raise with the trial it just asked for left running."""
    from optuna.distributions import check_distribution_compatibility

    for trial in trials:
        for name, distribution in space.items():
            if name not in trial.distributions:
                continue
            try:
                check_distribution_compatibility(trial.distributions[name], distribution)
            except ValueError:
                before = spelled(trial.distributions[name])
                raise LotteryError(
                    f"{written.get(name, name)}: optuna study {study} searched it as {before}; a study "
                    "keeps each key's search: name another study (hydra.sweeper.study_name=...)"
                ) from None


def spelled(distribution) -> str:
    if hasattr(distribution, "choices"):
        return "choice(" + ",".join(map(str, distribution.choices)) + ")"
    return f"{type(distribution).__name__.replace('Distribution', '')}({distribution.low},{distribution.high})"


def fail_running() -> None:
    """After an error (not an interruption: those trials run again first, ``OptunaStudy``), mark the
    trials this sweep added that are still running as failed: the sweeper asks for a trial, then
    configures and launches it, and an error in between would leave it running in the study."""
    if OptunaStudy.opened is None:
        return
    storage, name, before = OptunaStudy.opened
    if not str(storage).startswith(SQLITE):  # another sweeper may share a server storage: its trials are not ours
        return
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=name, storage=storage)
        for trial in study.get_trials(deepcopy=False)[before:]:
            if trial.state == TrialState.RUNNING:
                study.tell(trial.number, state=TrialState.FAIL)
    except Exception:  # the storage itself failing: the error at hand is what to report
        pass


def no_completed_trial(error: BaseException) -> bool:
    """Whether ``error`` is optuna's answer to asking a study without a completed trial for its best
    one, which the sweeper does at the end of every sweep (messages differ by storage)."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(
        frame.name in ("best_trial", "best_trials") and f"{os.sep}optuna{os.sep}" in frame.filename for frame in frames
    )


def fixed_overrides(config: DictConfig) -> dict:
    """The values every trial gets, as the plugin records them in each trial's user attributes:
    overrides of ``hydra.sweeper.params`` and of the command line that are not sweeps."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    params = config.hydra.sweeper.get("params") or {}
    arguments: List[str] = [f"{k}={v}" for k, v in params.items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    return create_params_from_overrides(arguments)[1]


def lock(path: str):
    """An exclusive lock on a study's storage for this process's lifetime (results/lock.py)."""
    return acquire(path, f"the Optuna storage {path[: -len('.lock')]}")
