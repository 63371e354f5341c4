"""What became of each job of a Hydra multirun, whatever launched it.

Each job writes ``lottery_job.json`` into its job directory (``<sweep dir>/<job number>/``): status
``running`` when it starts, then ``finished``, ``failed`` (with its error line), ``preempted`` or
``interrupted``. The launching process reads them back when the sweep ends (``summary``), so a job
that failed in another process -- a submitit job on a SLURM node, a local job process -- is reported
the same as one that failed in this process, and a job killed without a word (kill -9, out of
memory) shows as ``running``: it never finished. ``SweepJobs``, a Hydra callback (conf/config.yaml),
notes the sweep's directory in the launching process.
"""

import glob
import json
import os
from typing import List, Optional, Tuple

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

STATUS = "lottery_job.json"


class SweepJobs(Callback):
    """Notes, in the launching process, where the jobs of this multirun write their status."""

    directory: Optional[str] = None  # the sweep directory, once a multirun started
    searched: bool = False  # by another sweeper than Hydra's basic one (Optuna): it may run no job

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SweepJobs.directory = os.path.abspath(str(config.hydra.sweep.dir))
        SweepJobs.searched = "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", ""))


def write(job_dir: str, status: str, label: str, error: Optional[str] = None) -> None:
    """This job's status, whole or not at all."""
    os.makedirs(job_dir, exist_ok=True)
    path = os.path.join(job_dir, STATUS)
    with open(path + ".partial", "w") as f:
        json.dump({"status": status, "job": label, **({"error": error} if error else {})}, f)
    os.replace(path + ".partial", path)


def summary() -> Tuple[int, List[str]]:
    """(jobs of this multirun, the lines naming those that did not finish), from their status files."""
    if SweepJobs.directory is None:
        return 0, []
    jobs, failed = 0, []
    for path in sorted(
        glob.glob(os.path.join(SweepJobs.directory, "**", STATUS), recursive=True),
        key=lambda p: [int(part) if part.isdigit() else part for part in p.split(os.sep)],
    ):
        jobs += 1
        try:
            with open(path) as f:
                entry = json.load(f)
        except (OSError, ValueError) as error:
            failed.append(f"{os.path.dirname(path)}: its status cannot be read ({error})")
            continue
        if entry.get("status") == "finished":
            continue
        if entry.get("status") == "running":
            failed.append(
                f"{entry.get('job')}: ended without a word (killed? out of memory? its log: {os.path.dirname(path)})"
            )
        else:
            failed.append(f"{entry.get('job')}: {entry.get('error') or entry.get('status')}")
    return jobs, failed


def failed_line(jobs: int, failed: List[str]) -> str:
    """The sweep's last line where ``failed`` (``summary``) is not empty: how many of the ``jobs`` did
    not finish, and whether any did."""
    named = "; ".join(failed)
    if len(failed) >= jobs:
        return (
            f"error: the sweep's one job did not finish: {named}"
            if jobs == 1
            else f"error: none of the {jobs} sweep jobs finished: {named}"
        )
    return f"error: {len(failed)} of {jobs} sweep jobs did not finish (the others did): {named}"
