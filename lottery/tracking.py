"""Weights & Biases tracking: one W&B run per (experiment, replicate, kind), or under a W&B sweep
agent one run per trial (below).

``group`` is the experiment's directory name (``<name>-<hash>``), ``job_type`` what was trained
(``ticket``, ``random_reinit``, ``random_prune``), and the run id is derived from both, so
re-running or continuing an experiment resumes the same W&B runs. Logged:
  - inside each level, at every evaluation: ``level``, ``iteration``, ``train/loss``,
    ``val/loss``, ``val/accuracy``, ``test/loss``, ``test/accuracy``;
  - per level, against ``level/percent_remaining`` (``define_metric``): test accuracy (final and at
    early stop), early-stop iteration, remaining weights, density of each layer, training wall
    time, LMC barrier;
  - at the end: a table of the level results and a line plot of test accuracy vs % remaining, and
    with ``wandb.log_ticket`` the last level's ticket (mask + starting weights) as an artifact.

The mode comes from ``wandb.mode`` (default: ``$WANDB_MODE``, else ``offline``). Offline runs land
in ``<experiment dir>/wandb/`` and upload with ``wandb sync``. Online mode without an API key, or
with no network, falls back to offline with a warning: a run never blocks or prompts.

Resuming after kill -9 (every row once, at a step the run's ``Ledger`` fixes) and W&B sweep
agents (one run per trial, ``agent_run_id``) are explained where they are done.
"""

import atexit
import contextlib
import glob
import json
import logging
import os
import queue
import re
import shutil
import socket
import sys
import tempfile
import threading
import warnings
from typing import Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from lottery.analysis.runs import METRICS
from lottery.errors import LotteryError, at
from lottery.pruning import controls
from lottery.results import paths
from lottery.results.metrics import LMC_KEYS, NETWORK_KEYS
from lottery.results.store import read_json

MODES = ("online", "offline", "disabled")


def agent_run_id() -> Optional[str]:
    """The run a W&B sweep agent started this process for (``$WANDB_RUN_ID``), or None outside one.

    Sweep agents. ``wandb agent`` starts each trial with ``WANDB_SWEEP_ID`` and ``WANDB_RUN_ID`` set and
    waits for that one run, which W&B would give every ``wandb.init`` of the process. So under an agent
    the whole invocation logs ONE run, id ``$WANDB_RUN_ID`` (group: the experiment; job type
    ``trial``), holding every replicate's and kind's series under the prefix ``replicate_<r>/<kind>/``:
      - evaluations: ``replicate_0/ticket/iteration``, ``replicate_0/ticket/test/accuracy``, ...,
        against ``replicate_0/ticket/iteration``;
      - per level: ``replicate_0/ticket/level/test_accuracy``, ``.../level/density/<layer>``,
        ``.../level/lmc_barrier``, ..., against ``replicate_0/ticket/level/percent_remaining``;
      - at the end, one ``summary`` row: ``replicate_0/ticket/levels`` (table) and
        ``replicate_0/ticket/accuracy_vs_sparsity`` (plot) for every network of the experiment;
      - ``finish(df, summary)``'s keys, unprefixed, in the run's summary: ``metric.name`` of the sweep
        file (``objective``) is what the sweep optimizes.
    Its ledger is ``<experiment>/wandb/$WANDB_RUN_ID.steps.jsonl``, its rows keyed as above with
    ``(replicate, kind)`` in front, so a trial killed and run again with the same ``WANDB_RUN_ID``
    continues the same run as a plain experiment does. The run is opened at the end even when nothing
    was trained (a configuration proposed twice, or a finished experiment): it restates the
    experiment's whole record from disk and carries the trial's objective. The sweep sees the trial
    online only: offline (the default without ``$WANDB_MODE``) a warning says so, and the sample sweep
    file, ``experiments/wandb_sweep.yaml``, passes ``wandb.mode=online``. ``WANDB_SWEEP_ID`` without
    ``WANDB_RUN_ID`` is an error (W&B would give every run a random id and the ledgers could not resume
    them)."""
    if not os.environ.get("WANDB_SWEEP_ID"):
        return None
    if not os.environ.get("WANDB_RUN_ID"):
        raise LotteryError(
            "WANDB_SWEEP_ID is set but WANDB_RUN_ID is not: `wandb agent` sets both; outside an agent, "
            "unset WANDB_SWEEP_ID (W&B would give every run of the experiment a random id)"
        )
    return os.environ["WANDB_RUN_ID"]


def prefix(replicate: int, kind: str) -> str:
    """What a network's W&B keys start with in a sweep trial's one run."""
    return f"replicate_{replicate}/{kind}/"


def prefixed(replicate: int, kind: str, row: Tuple[tuple, dict]) -> Tuple[tuple, dict]:
    """A network's row in a sweep trial's one run: keyed and named by its replicate and kind."""
    key, values = row
    return (replicate, kind, *key), {prefix(replicate, kind) + name: value for name, value in values.items()}


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read()


class Ledger:
    """The W&B steps of one run's rows: one JSON line per row key, appended before the row is
    logged, so that a row has one step whichever process logs it (a key's last line wins; step
    null forgets it). Also ``opened``/``finished`` lines: a run whose last line is not ``finished``
    may hold a record that a killed process left incomplete; ``finished`` names the offline
    directory that holds the run's record below step ``next``.

    Resuming after kill -9. The results on disk and the level checkpoints are complete, but W&B loses
    whatever the killed process had not flushed, and every process writes its own offline directory.
    So every history row has an identity -- ``("eval", level, iteration)``, ``("level", level)``,
    ``("lmc", level)``, ``("summary", n)`` -- and is logged at an explicit W&B step that a ledger of the
    run fixes (``<experiment>/wandb/<run id>.steps.jsonl``, a key's line appended before its row is
    logged): whichever process logs a row, it lands on the same step. A process that opens a run
    restates the run's record from what is on disk (finished levels' histories and level rows, LMC
    barriers) in step order; ``train()`` restates the histories of a level it resumes from a checkpoint,
    and the rest of the level is logged live, at the steps the killed process gave it. Online, W&B's
    history up to ``run.step`` at resume is on the server and is not sent again; offline, the new
    directory holds the run's whole record (less what ``wandb sync`` uploaded from a finished one), and
    the older offline directories of that run are moved to ``wandb/superseded/`` (never deleted), so
    ``wandb sync wandb/offline-run-*`` uploads one complete record per run. The end-of-run table and
    plot are a new ``summary`` row of each invocation that touched the run: W&B shows the latest, and
    an offline directory holds one. ``finish(df, summary)`` writes ``summary``'s keys (the objective a
    search optimizes) to the W&B summary of every run it finishes; a re-run of finished work opens no
    run, so it writes none."""

    def __init__(self, path: str):
        self.path, self.steps, self.complete = path, {}, False
        self.high = -1  # the highest step ever given: never given twice
        self.finished: List[Tuple[str, int]] = []  # (offline directory, next step)
        self.existed = os.path.exists(path)
        if not self.existed:
            return
        with open(path, "rb+") as f:
            data = f.read()
            whole = data[: data.rfind(b"\n") + 1]
            if len(whole) < len(data):  # a line torn by a kill: never logged, drop it
                f.truncate(len(whole))
        for line in whole.decode().splitlines():
            entry = json.loads(line)
            if "key" in entry:
                key, step = tuple(entry["key"]), entry["step"]
                if step is None:
                    self.steps.pop(key, None)
                else:
                    self.steps[key], self.high = step, max(self.high, step)
            if "finished" in entry and entry.get("directory"):
                self.finished.append((entry["directory"], entry["next"]))
            self.complete = "finished" in entry

    @property
    def next(self) -> int:
        return self.high + 1

    def _append(self, entry: dict) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with at(self.path), open(self.path, "a") as f:  # flushed at close: it survives a kill -9 of this process
            f.write(json.dumps(entry) + "\n")

    def add(self, key: tuple, step: int) -> int:
        self._append({"key": list(key), "step": step})
        self.steps[key], self.high = step, max(self.high, step)
        return step

    def forget(self, key: tuple) -> None:
        self._append({"key": list(key), "step": None})
        del self.steps[key]

    def mark(self, event: str, **details) -> None:
        self._append({event: True, **details})
        self.complete = event == "finished"


class Record:
    """What this process logs to one W&B run: each row once, at its ledger step.

    Rows below ``floor`` are on the W&B server already: online, it is ``run.step`` when the run was
    opened (W&B uploads rows in step order); offline, 0 (a new directory), or where a finished
    directory that ``wandb sync`` uploaded ends (``synced``). A row whose step this process has
    passed, or that has no step yet, gets the next free one."""

    def __init__(self, run, ledger: Ledger, synced: int = 0):
        self.run, self.ledger = run, ledger
        self.floor = max(run.step, synced)
        self.last = -1  # the last step logged by this process
        self.held = set()  # keys of the rows this record holds: logged by this process, or on the server

    def log(self, key: tuple, values: dict) -> None:
        if key in self.held:
            return
        self.held.add(key)
        step = self.ledger.steps.get(key)
        if step is not None and step < self.floor:
            return  # on the W&B server already
        if step is None or step <= self.last:  # W&B drops a row below its current step
            step = self.ledger.add(key, max(self.ledger.next, self.floor))
        self.run.log(values, step=step, commit=True)
        self.last = step


# --- the rows: one function per kind, used live and when restating from disk ---------------------


def evaluation_row(level: int, record: dict) -> Tuple[tuple, dict]:
    values = {"level": level, "iteration": record["step"], "train/loss": record["train_loss"]}
    for split in ("val", "test"):
        for metric in ("loss", "accuracy"):
            if f"{split}_{metric}" in record:
                values[f"{split}/{metric}"] = record[f"{split}_{metric}"]
    return ("eval", level, record["step"]), values


def level_row(metrics: dict) -> Tuple[tuple, dict]:
    early = metrics["early_stop"] or {}
    values = {
        "level/index": metrics["level"],
        "level/percent_remaining": 100 * metrics["density"],
        "level/remaining_weights": metrics["remaining"],
        "level/test_accuracy": metrics["final"]["test_accuracy"],
        "level/train_loss": metrics["final"]["train_loss"],
        "level/wall_time_s": metrics["wall_time_s"],
    }
    if early:
        values.update(
            {"level/test_accuracy_early_stop": early["test_accuracy"], "level/early_stop_iteration": early["step"]}
        )
    for layer, counts in metrics["layers"].items():
        values[f"level/density/{layer}"] = counts["density"]
    return ("level", metrics["level"]), values


def lmc_row(level: int, density: float, path: dict) -> Tuple[tuple, dict]:
    """Keyed by the number of points too: a path measured again at another count (imp.remeasure_lmc)
    is a new row, which W&B gets, not one its ledger has seen."""
    points = path.get("points", len(path.get("alphas", [])))
    return ("lmc", level, points), {
        "level/index": level,
        "level/percent_remaining": 100 * density,
        "level/lmc_barrier": path["barrier"],
        "level/lmc_points": points,
    }


def define_metrics(run, prefix: str) -> None:
    """Evaluations against the iteration inside their level; level rows against % weights remaining."""
    run.define_metric(f"{prefix}iteration")
    for split in ("train", "val", "test"):
        run.define_metric(f"{prefix}{split}/*", step_metric=f"{prefix}iteration")
    run.define_metric(f"{prefix}level/percent_remaining")
    run.define_metric(f"{prefix}level/*", step_metric=f"{prefix}level/percent_remaining")


SIMILARITY = (
    "jaccard",
    "jaccard_chance",
    "jaccard_above_chance",
    "sign_agreement",
    "sign_chance",
)  # analysis/tickets.py


def import_wandb(temporary: str):
    """``import wandb``. On import W&B makes two temporary directories (``tmp*wandb-media``,
    ``tmp*wandb-artifacts``) that it removes at exit, so a kill -9 leaves them in /tmp for good. They
    are made in ``temporary/<host>-<pid>/`` instead (the experiment's ``wandb/tmp/``), removed at
    exit too; those of this host's processes that ended without it are removed here."""
    host = socket.gethostname()
    if os.path.isdir(temporary):
        for name in os.listdir(temporary):
            owner, _, pid = name.rpartition("-")
            if owner == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(temporary, name), ignore_errors=True)
    if "wandb" in sys.modules:  # its directories were made when this process first imported it
        return sys.modules["wandb"]
    own = os.path.join(temporary, f"{host}-{os.getpid()}")
    os.makedirs(own, exist_ok=True)
    atexit.register(shutil.rmtree, own, True)  # W&B's own removal, before or after it, finds them gone or removes them
    previous, tempfile.tempdir = tempfile.tempdir, own
    try:
        import wandb
    finally:
        tempfile.tempdir = previous
    return wandb


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


class Worker:
    """One thread that makes a tracker's W&B calls, in the order they were asked for, so that
    training never waits for W&B: importing it (~1 s) and opening a run (``wandb.init``, 2-3 s, its
    service process started) happen beside the first level. An error there is raised in the caller's
    thread at its next call (``submit``, ``wait``): the run stops with the same one line as before,
    a little later. Rows are logged once at their ledger steps whichever thread logs them (``Record``),
    so what a killed process leaves is what it was before: rows not yet logged are restated from
    disk by the process that resumes."""

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()
        self.error: Optional[BaseException] = None
        self.cancelled = False  # jobs not started yet are dropped (a second Ctrl-C: stop at once)
        self.thread = threading.Thread(target=self._run, name="lottery-wandb", daemon=True)
        self.thread.start()
        # Drained at exit before atexit's handlers run (W&B's own teardown is one of them, registered
        # later, so it would run first), as concurrent.futures' threads are.
        try:
            threading._register_atexit(self.drain)
        except (AttributeError, RuntimeError):  # another Python; or the interpreter is already stopping
            atexit.register(self.drain)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:  # close(): this thread ends
                    return
                if self.error is None and not self.cancelled:
                    job()
            except BaseException as error:  # raised in the caller's thread (raise_error)
                self.error = error
            finally:
                self.jobs.task_done()

    def submit(self, job) -> None:
        self.raise_error()
        self.jobs.put(job)

    def drain(self) -> None:
        """Wait for every job asked for (a failure stays in ``error``)."""
        self.jobs.join()

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def wait(self) -> None:
        self.drain()
        self.raise_error()

    def cancel(self) -> None:
        """Drop the jobs not started yet and wait for the one running (at most one W&B call)."""
        self.cancelled = True
        self.jobs.join()

    def close(self) -> None:
        """End the thread once its jobs are done (a Hydra multirun runs many experiments in one process)."""
        if self.thread.is_alive():
            self.jobs.put(None)


class Tracker:
    """The W&B runs of one experiment. With ``background`` (a run of levels: imp/levels.py), the
    calls that log are made by a ``Worker`` thread; otherwise (tests, notebooks) in the caller's."""

    def __init__(self, cfg, directory: str, enabled: bool = True, background: bool = False):
        self.cfg, self.directory = cfg, directory
        self.background, self.worker, self._owned = background, None, None
        self.mode = cfg.wandb.mode if enabled else "disabled"
        if self.mode not in MODES:
            raise LotteryError(f"wandb.mode={self.mode!r} is not a mode; choose one of: {', '.join(MODES)}")
        if self.mode == "online" and not _has_api_key():
            print("warning: wandb.mode=online but no W&B API key is set; logging offline instead", file=sys.stderr)
            self.mode = "offline"
        self.group = os.path.basename(directory)
        self.agent = agent_run_id() if self.enabled else None  # the trial's one run, under `wandb agent`
        if self.agent and self.mode == "offline":
            print(
                f"warning: a W&B sweep agent started this trial (run {self.agent}) but wandb.mode=offline: the sweep "
                f"sees its objective only once `wandb sync` uploads it",
                file=sys.stderr,
            )
        self.runs: Dict[tuple, Record] = {}
        self.defined = set()  # (replicate, kind) whose metrics the open agent run has defined

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def record(self, replicate: int, kind: str) -> Record:
        """The W&B run of one replicate's ticket or control (under an agent: the trial's run), opened
        on first use."""
        key = ("trial",) if self.agent else (replicate, kind)
        if key not in self.runs:
            self.runs[key] = self._open(replicate, kind)
        return self.runs[key]

    def run_id(self, replicate: int, kind: str) -> str:
        if self.agent:
            return self.agent
        return re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.group}-r{replicate}-{kind}")

    def _log(self, replicate: int, kind: str, row: Tuple[tuple, dict]) -> None:
        with at(self.wandb_dir):  # W&B's own writes fail without a path (a full disk)
            record = self.record(replicate, kind)
            if self.agent:
                self._define(record.run, replicate, kind)
                row = prefixed(replicate, kind, row)
            record.log(*row)

    @property
    def wandb_dir(self) -> str:
        return os.path.join(self.directory, "wandb")

    def ledger(self, replicate: int, kind: str) -> Ledger:
        return Ledger(os.path.join(self.directory, "wandb", f"{self.run_id(replicate, kind)}.steps.jsonl"))

    def _open(self, replicate: int, kind: str) -> Record:
        """Start (or resume) the run and restate its record from the results on disk."""
        ledger = self.ledger(replicate, kind)
        ledger.mark("opened")  # before anything is superseded: a kill from here on leaves it incomplete
        synced = self._synced(ledger)
        self._supersede(self.run_id(replicate, kind))
        record = Record(self._init(replicate, kind), ledger, synced)
        if self.agent:  # the trial's run holds every network of the experiment
            self.defined.clear()
            rows = []
            for replicate, kind in self.networks_on_disk():
                self._define(record.run, replicate, kind)
                rows += [prefixed(replicate, kind, row) for row in self.rows_on_disk(replicate, kind)]
        else:
            rows = self.rows_on_disk(replicate, kind)
        known = sorted((row for row in rows if row[0] in ledger.steps), key=lambda row: ledger.steps[row[0]])
        # Rows on disk without a step: results written by a process killed before it logged them, or
        # while W&B was disabled. (A run without a ledger that W&B has online was logged, rows and
        # all, by this code before it kept ledgers.)
        new = [row for row in rows if row[0] not in ledger.steps] if ledger.existed or record.floor == 0 else []
        for key, values in known + new:
            record.log(key, values)
        return record

    def _synced(self, ledger: Ledger) -> int:
        """The step below which ``wandb sync`` uploaded the run: the end of the newest finished
        offline directory that carries W&B's ``.wandb.synced`` marker (0 if none)."""
        wandb_dir = os.path.join(self.directory, "wandb")
        for name, end in reversed(ledger.finished):
            for where in (name, os.path.join("superseded", glob.escape(name) + "*")):
                if glob.glob(os.path.join(wandb_dir, where, "*.wandb.synced")):
                    return end
        return 0

    def _supersede(self, run_id: str) -> None:
        """Move the earlier offline directories of a run aside (never deleted): the record this
        process starts restates them, so each run has one current directory to sync."""
        wandb_dir = os.path.join(self.directory, "wandb")
        for path in sorted(glob.glob(os.path.join(wandb_dir, "offline-run-*"))):
            name = os.path.basename(path)
            if not re.fullmatch(r"offline-run-\d{8}_\d{6}-" + re.escape(run_id), name):
                continue
            os.makedirs(os.path.join(wandb_dir, "superseded"), exist_ok=True)
            target, n = os.path.join(wandb_dir, "superseded", name), 1
            while os.path.exists(target):  # the same name twice: two processes in one second
                target, n = os.path.join(wandb_dir, "superseded", f"{name}.{n}"), n + 1
            os.rename(path, target)

    def networks_on_disk(self) -> List[Tuple[int, str]]:
        """(replicate, kind) of every network with a finished level."""
        kinds = controls.kinds()
        found = {(replicate, kind) for replicate, _, kind, _ in paths.networks(self.directory, kinds)}
        return sorted(found, key=lambda network: (network[0], kinds.index(network[1])))

    def rows_on_disk(self, replicate: int, kind: str) -> List[Tuple[tuple, dict]]:
        """The rows of a run that its finished results hold (directories appear only when complete)."""
        rows = []
        for level in paths.levels(self.directory, replicate):
            directory = paths.network_dir(self.directory, replicate, level, kind)
            if not os.path.isdir(directory):
                continue
            metrics = read_json(paths.metrics_file(directory), NETWORK_KEYS)
            rows += [evaluation_row(level, record) for record in metrics["history"]]
            rows.append(level_row(metrics))
            lmc = paths.lmc_dir(self.directory, replicate, level)
            if kind == "ticket" and os.path.isdir(lmc):
                path = read_json(paths.metrics_file(lmc), LMC_KEYS)
                rows.append(lmc_row(level, metrics["density"], path))
        return rows

    @contextlib.contextmanager
    def _own_directories(self):
        """W&B stages every logged table as an artifact file in ~/.local/share/wandb (and caches
        artifacts in ~/.cache/wandb), read-only and never removed offline: dozens a day. Unless the
        user chose those places (WANDB_DATA_DIR, WANDB_CACHE_DIR), they go into the experiment's own
        wandb/ directory, next to the runs that need them for `wandb sync`. Set once by ``begin`` for
        a background tracker (the main thread changes os.environ, never the worker): then a no-op."""
        if self._owned is not None:
            yield
            return
        own = {
            "WANDB_DATA_DIR": os.path.join(self.directory, "wandb", "data"),
            "WANDB_CACHE_DIR": os.path.join(self.directory, "wandb", "cache"),
        }
        chosen = {key: os.environ.get(key) for key in own}
        for key, value in own.items():
            os.environ[key] = chosen[key] or value
        try:
            yield
        finally:
            for key, value in chosen.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _init(self, replicate: int, kind: str):
        with self._own_directories():
            return self._start(replicate, kind)

    def _start(self, replicate: int, kind: str):
        wandb = import_wandb(os.path.join(self.directory, "wandb", "tmp"))

        config = OmegaConf.to_container(self.cfg, resolve=True)
        if self.agent:  # W&B adds the sweep's parameters (``pruning.rate``, ...) to this config itself
            config.update(experiment=self.group)
            names = dict(job_type="trial", name=self.group)
        else:
            config.update(replicate=replicate, kind=kind, experiment=self.group)
            names = dict(job_type=kind, name=f"{self.group}/r{replicate}/{kind}")
        # Under an agent W&B ignores project, entity and id in favour of the sweep's (the same id).
        arguments = dict(
            project=self.cfg.wandb.project,
            entity=self.cfg.wandb.entity,
            group=self.group,
            **names,
            id=self.run_id(replicate, kind),
            resume="allow",
            dir=self.directory,
            config=config,
            tags=list(self.cfg.wandb.tags),
            reinit="create_new",
            settings=wandb.Settings(silent=True, init_timeout=60),
        )
        try:
            run = wandb.init(mode=self.mode, **arguments)
        except Exception as error:  # online but unreachable: keep the run, log offline
            if self.mode != "online":
                raise
            warnings.warn(f"W&B online init failed ({error}); logging offline instead")
            self.mode = "offline"
            run = wandb.init(mode="offline", **arguments)
        quiet_debug_log()
        if not self.agent:
            define_metrics(run, "")
        return run

    def _define(self, run, replicate: int, kind: str) -> None:
        """The step axes of a network's series in the trial's run, before its first row."""
        if (replicate, kind) not in self.defined:
            self.defined.add((replicate, kind))
            define_metrics(run, prefix(replicate, kind))

    def _submit(self, job) -> None:
        """``job`` now, or by the worker thread (``background``)."""
        if not self.background:
            return job()
        if self.worker is None:
            self.worker = Worker()
        self.worker.submit(job)

    def begin(self) -> None:
        """Import W&B beside what follows (``background``; a no-op otherwise)."""
        if self.enabled and self.background:
            owned = contextlib.ExitStack()  # the environment changed here, in the main thread
            owned.enter_context(self._own_directories())
            self._owned = owned
            self._submit(self._import_quietly)

    def _import_quietly(self) -> None:
        """W&B's import ahead of its first run; a failure here is the first run's to report."""
        with contextlib.suppress(Exception):
            import_wandb(os.path.join(self.directory, "wandb", "tmp"))

    def _release(self) -> None:
        """The environment as it was before ``begin``, and the worker thread ended."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()

    def wait(self) -> None:
        """Every call asked for made (``background``); raises the error of one that failed."""
        if self.worker is not None:
            self.worker.wait()

    def log_evaluation(self, replicate: int, kind: str, level: int, record: dict) -> None:
        if self.enabled:
            row = evaluation_row(level, record)  # made here: the worker never reads what the caller may change
            self._submit(lambda: self._log(replicate, kind, row))

    def log_history(self, replicate: int, kind: str, level: int, history: List[dict]) -> None:
        """The evaluations of a level resumed from a checkpoint: the killed process may have lost
        them, and they keep their steps."""
        for record in history:
            self.log_evaluation(replicate, kind, level, record)

    def log_level(self, metrics: dict) -> None:
        if self.enabled:
            replicate, kind, row = metrics["replicate"], metrics["kind"], level_row(metrics)
            self._submit(lambda: self._log(replicate, kind, row))

    def log_lmc(self, replicate: int, level: int, density: float, path: dict) -> None:
        if self.enabled:
            row = lmc_row(level, density, path)
            self._submit(lambda: self._log(replicate, "ticket", row))

    def finish(self, df, summary: Optional[dict] = None, similarity=None) -> None:
        """Tables and plots of every level of the runs this invocation touched, and of those a
        killed process left incomplete (``df``: the experiment's ``analysis.load_runs``); close them all.
        ``summary`` (e.g. ``{"objective": 0.97}``) goes into the W&B summary of every run closed here:
        under an agent, the trial's one run, opened here if nothing opened it. ``similarity``
        (``tickets.similarity_table``, whole-network rows) gives each network's run the table of
        how alike its masks are to the other replicates' and to its ticket's controls."""
        if not self.enabled:
            return
        self.wait()
        try:
            with self._own_directories(), at(self.wandb_dir):
                self._finish(df, summary or {}, similarity)
        finally:
            self._release()

    def _finish(self, df, summary: dict, similarity=None) -> None:
        networks = {(int(r), k) for r, k in zip(df["replicate"], df["kind"])} if len(df) else set()
        networks = sorted(networks, key=lambda network: (network[0], controls.kinds().index(network[1])))
        if self.agent:
            record = self.record(0, "ticket")  # the trial's run, whichever network names it
            row = {}
            for replicate, kind in networks:
                self._define(record.run, replicate, kind)
                tables = self._tables(df, replicate, kind, record, similarity)
                row.update({prefix(replicate, kind) + name: value for name, value in tables.items()})
            self._close(record, row, summary)
            self.runs.clear()
            return
        for replicate, kind in networks:
            ledger = self.ledger(replicate, kind)
            if (replicate, kind) not in self.runs and ledger.existed and not ledger.complete:
                self.record(replicate, kind)
        for (replicate, kind), record in self.runs.items():
            self._close(record, self._tables(df, replicate, kind, record, similarity), summary)
        self.runs.clear()

    def _tables(self, df, replicate: int, kind: str, record: Record, similar=None) -> dict:
        """A network's table of level results and its plot of accuracy vs sparsity (and, with
        ``wandb.log_ticket``, its last ticket as an artifact of the run)."""
        import wandb

        columns = ["level", "percent_remaining", *METRICS]
        mine = df[(df["replicate"] == replicate) & (df["kind"] == kind)].sort_values("level")[columns]
        table = wandb.Table(columns=columns, data=mine.astype(object).where(mine.notna(), None).values.tolist())
        if self.cfg.wandb.log_ticket and kind == "ticket" and len(mine):
            last = mine.iloc[-1]
            level = int(last["level"])
            artifact = wandb.Artifact(
                re.sub(r"[^A-Za-z0-9_.-]", "_", f"ticket-{self.group}-r{replicate}"),
                type="ticket",
                metadata={"level": level, "percent_remaining": float(last["percent_remaining"])},
            )
            artifact.add_dir(paths.ticket_dir(paths.level_dir(self.directory, replicate, level)))
            record.run.log_artifact(artifact)
        title = "test accuracy vs % weights remaining" + (f" (replicate {replicate}, {kind})" if self.agent else "")
        tables = {
            "levels": table,
            "accuracy_vs_sparsity": wandb.plot.line(table, "percent_remaining", "test_accuracy", title=title),
        }
        if similar is not None and len(similar):
            rows = []
            for _, pair in similar.iterrows():
                for me, other in (("a", "b"), ("b", "a")):
                    if (pair[f"replicate_{me}"], pair[f"kind_{me}"]) == (replicate, kind):
                        rows.append(
                            [
                                pair["comparison"],
                                int(pair[f"level_{me}"]),
                                f"replicate {pair[f'replicate_{other}']} {pair[f'kind_{other}']}",
                                100 * float(pair[f"density_{me}"]),
                                *(float(pair[m]) for m in SIMILARITY),
                            ]
                        )
            if rows:
                tables["mask_similarity"] = wandb.Table(
                    columns=["comparison", "level", "with", "percent_remaining", *SIMILARITY], data=rows
                )
        return tables

    def _close(self, record: Record, row: dict, summary: dict) -> None:
        """The end-of-run row, the summary, and the run closed; its ledger marked finished."""
        if row:
            record.log(("summary", sum(key[0] == "summary" for key in record.ledger.steps)), row)
        # Ledger rows this record does not hold (a level left unfinished, earlier summaries) lose
        # their steps, so the record holds every row below its end; back, they get new ones.
        for key, step in list(record.ledger.steps.items()):
            if key not in record.held and step >= record.floor:
                record.ledger.forget(key)
        for key, value in summary.items():
            record.run.summary[key] = value
        directory = os.path.basename(record.run.sync_dir) if record.run.offline else None
        record.run.finish()
        record.ledger.mark("finished", directory=directory, next=record.ledger.next)  # after finish(): written

    def abort(self, at_once: bool = False) -> None:
        """Close the runs after an error, marking them failed. The error at hand is what the user
        needs to hear: W&B failing to close a run (its files on the same full disk) is dropped, and
        so is a failure of the worker thread's calls (made first: every row asked for is logged).
        ``at_once`` (a second Ctrl-C): the rows not logged yet are dropped (the run that resumes
        restates them from disk), only the W&B call under way is waited for."""
        if self.worker is not None:
            if at_once:
                self.worker.cancel()
            else:
                self.worker.drain()
            self.worker.error = None
        for record in self.runs.values():
            with contextlib.suppress(Exception):
                record.run.finish(exit_code=1)
        self.runs.clear()
        self._release()


def quiet_debug_log() -> None:
    """W&B writes each run's debug.log from this process, through the ``wandb`` logger: on a full
    disk every record it cannot write printed a traceback ("--- Logging error ---") around the one
    line that reports the failure. Those are W&B's diagnostics, not results: drop what cannot be written.
    Only W&B's own debug logs: other handlers on that logger (an application's, pytest's) keep theirs."""
    for handler in logging.getLogger("wandb").handlers:
        if isinstance(handler, logging.FileHandler) and os.path.basename(handler.baseFilename) == "debug.log":
            handler.handleError = lambda record: None
