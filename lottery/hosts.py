"""Several processes (hosts) in one run, through ``jax.distributed``: how this process joins, and
the three ways processes coordinate. Nothing here communicates by itself.

Process 0 alone writes results, takes an experiment's lock and logs to W&B (``primary``); every
process takes part in orbax's saves and restores (orbax writes from process 0); ``barrier`` orders
process 0's writes before everyone's reads; ``agree`` shares a value (a preemption request) so that
every process stops at the same chunk end.
"""

import os
from typing import Dict, Optional

import jax
import numpy as np

from lottery.errors import LotteryError


def plan(cfg, environ=os.environ) -> Optional[Dict]:
    """How this process joins a multi-process run: ``None`` for a single process, else a dict
    with ``source`` (config, slurm, env), ``num_processes``, ``process_id`` and, when known,
    ``coordinator``. Config keys win; then a SLURM job step with several tasks (JAX reads the
    coordinator from SLURM's node list); then JAX's own environment variables."""
    explicit = {k: cfg.get(k) for k in ("coordinator", "num_processes", "process_id")}
    if any(v is not None for v in explicit.values()):
        missing = [k for k, v in explicit.items() if v is None]
        if missing:
            raise LotteryError(f"distributed.{missing[0]} is not set: a multi-process run needs distributed.coordinator "
                               "(host:port of process 0), distributed.num_processes and distributed.process_id")
        if not 0 <= explicit["process_id"] < explicit["num_processes"]:
            raise LotteryError(f"distributed.process_id={explicit['process_id']} must be in [0, "
                               f"distributed.num_processes={explicit['num_processes']})")
        return {"source": "config", **explicit} if explicit["num_processes"] > 1 else None
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in environ for k in slurm) and int(environ["SLURM_NTASKS"]) > 1:
        return {"source": "slurm", "num_processes": int(environ["SLURM_NTASKS"]),
                "process_id": int(environ["SLURM_PROCID"]), "coordinator": None}
    if "JAX_COORDINATOR_ADDRESS" in environ and int(environ.get("JAX_NUM_PROCESSES", "1")) > 1:
        return {"source": "env", "num_processes": int(environ["JAX_NUM_PROCESSES"]),
                "process_id": int(environ.get("JAX_PROCESS_ID", "0")), "coordinator": environ["JAX_COORDINATOR_ADDRESS"]}
    return None


_JOINED = None  # the plan this process joined with, once it did


def initialize(cfg) -> Optional[Dict]:
    """Join the multi-process run this process is part of, if any (once per process: a Hydra sweep
    runs several experiments in one process). Must come before JAX's first computation."""
    global _JOINED
    joining = plan(cfg)
    if joining is None or _JOINED is not None:
        if _JOINED is not None and joining is not None and (joining["num_processes"], joining["process_id"]) != (
                _JOINED["num_processes"], _JOINED["process_id"]):
            raise LotteryError("distributed: this process already joined a run of "
                               f"{_JOINED['num_processes']} processes as {_JOINED['process_id']}; one run per process")
        return _JOINED
    if joining["source"] == "slurm":
        jax.distributed.initialize()  # JAX's SLURM detection: coordinator on the first node of the step
    else:
        jax.distributed.initialize(joining["coordinator"], joining["num_processes"], joining["process_id"])
    _JOINED = joining
    return joining


def processes() -> int:
    return jax.process_count()


def primary() -> bool:
    """Whether this process writes results (process 0, or the only one)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(value: int) -> np.ndarray:
    """Every process's ``value``, in process order (one allgather; no-op for one process)."""
    if jax.process_count() == 1:
        return np.asarray([value])
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.int32(value))).reshape(-1)
