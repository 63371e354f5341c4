"""Weights & Biases tracking: one W&B run per (experiment, replicate, kind).

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
"""

import os
import re
import sys
import warnings
from typing import Dict

from omegaconf import OmegaConf

MODES = ("online", "offline", "disabled")


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read()


class Tracker:
    def __init__(self, cfg, directory: str):
        self.cfg, self.directory = cfg, directory
        self.mode = cfg.wandb.mode
        if self.mode not in MODES:
            from lottery.errors import LotteryError

            raise LotteryError(f"wandb.mode={self.mode!r} is not a mode; choose one of: {', '.join(MODES)}")
        if self.mode == "online" and not _has_api_key():
            print("warning: wandb.mode=online but no W&B API key is set; logging offline instead", file=sys.stderr)
            self.mode = "offline"
        self.group = os.path.basename(directory)
        self.runs: Dict[tuple, object] = {}

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def run(self, replicate: int, kind: str):
        """The W&B run of one replicate's ticket or control, started on first use."""
        key = (replicate, kind)
        if key not in self.runs:
            self.runs[key] = self._init(replicate, kind)
        return self.runs[key]

    def _init(self, replicate: int, kind: str):
        import wandb

        config = OmegaConf.to_container(self.cfg, resolve=True)
        config.update(replicate=replicate, kind=kind, experiment=self.group)
        run_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.group}-r{replicate}-{kind}")
        arguments = dict(
            project=self.cfg.wandb.project, entity=self.cfg.wandb.entity, group=self.group, job_type=kind,
            name=f"{self.group}/r{replicate}/{kind}", id=run_id, resume="allow", dir=self.directory,
            config=config, tags=list(self.cfg.wandb.tags), reinit="create_new",
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
        run.define_metric("iteration")
        run.define_metric("train/*", step_metric="iteration")
        run.define_metric("val/*", step_metric="iteration")
        run.define_metric("test/*", step_metric="iteration")
        run.define_metric("level/percent_remaining")
        run.define_metric("level/*", step_metric="level/percent_remaining")
        return run

    def log_evaluation(self, replicate: int, kind: str, level: int, record: dict) -> None:
        if not self.enabled:
            return
        values = {"level": level, "iteration": record["step"], "train/loss": record["train_loss"]}
        for split in ("val", "test"):
            for metric in ("loss", "accuracy"):
                if f"{split}_{metric}" in record:
                    values[f"{split}/{metric}"] = record[f"{split}_{metric}"]
        self.run(replicate, kind).log(values)

    def log_level(self, metrics: dict) -> None:
        if not self.enabled:
            return
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
            values.update({"level/test_accuracy_early_stop": early["test_accuracy"],
                           "level/early_stop_iteration": early["step"]})
        for layer, counts in metrics["layers"].items():
            values[f"level/density/{layer}"] = counts["density"]
        self.run(metrics["replicate"], metrics["kind"]).log(values)

    def log_lmc(self, replicate: int, level: int, density: float, path: dict) -> None:
        if not self.enabled:
            return
        self.run(replicate, "ticket").log({"level/index": level, "level/percent_remaining": 100 * density,
                                           "level/lmc_barrier": path["barrier"]})

    def finish(self, df) -> None:
        """Tables and plots of every level of the runs this invocation touched (``df``: the
        experiment's ``analysis.load_runs``); close them all."""
        if not self.enabled:
            return
        import wandb

        from lottery.analysis import METRICS

        columns = ["level", "percent_remaining", *METRICS]
        for (replicate, kind), run in self.runs.items():
            mine = df[(df["replicate"] == replicate) & (df["kind"] == kind)].sort_values("level")[columns]
            table = wandb.Table(columns=columns, data=mine.astype(object).where(mine.notna(), None).values.tolist())
            run.log({"levels": table,
                     "accuracy_vs_sparsity": wandb.plot.line(table, "percent_remaining", "test_accuracy",
                                                             title="test accuracy vs % weights remaining")})
            if self.cfg.wandb.log_ticket and kind == "ticket" and len(mine):
                last = mine.iloc[-1]
                level = int(last["level"])
                artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "_", f"ticket-{self.group}-r{replicate}"), type="ticket",
                                          metadata={"level": level, "percent_remaining": float(last["percent_remaining"])})
                artifact.add_dir(os.path.join(self.directory, f"replicate_{replicate}", f"level_{level}", "ticket"))
                run.log_artifact(artifact)
            run.finish()
        self.runs.clear()

    def abort(self) -> None:
        """Close the runs after an error, marking them failed."""
        for run in self.runs.values():
            run.finish(exit_code=1)
        self.runs.clear()
