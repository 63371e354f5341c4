"""Several processes (hosts) in one run, through ``jax.distributed``: how this process joins, and
the three ways processes coordinate. Nothing here communicates by itself.

Process 0 alone writes results, takes an experiment's lock and logs to W&B (``primary``); every
process takes part in orbax's saves and restores (orbax writes from process 0); ``barrier`` orders
process 0's writes before everyone's reads; ``agree`` shares a value (a preemption request) so that
every process stops at the same chunk end.

Before JAX starts its backend, ``initialize`` also settles what processes sharing a machine need:
which of the host's devices each process takes (``local_device_ids``) and that processes which may
share a GPU allocate its memory as they go rather than each taking 75% of it at start
(``gpu_memory_environment``).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Dict, List, Optional

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError

jax = lazy.module("jax")


def plan(cfg, environ=os.environ) -> Optional[Dict]:
    """How this process joins a multi-process run: ``None`` for a single process, else a dict
    with ``source`` (config, slurm, env), ``num_processes``, ``process_id``, ``coordinator`` when
    known, and ``local_device_ids`` (``local_device_ids``). Config keys win; then a SLURM job step
    with several tasks (JAX reads the coordinator from SLURM's node list); then JAX's own
    environment variables."""
    explicit = {k: cfg.get(k) for k in ("coordinator", "num_processes", "process_id")}
    joining = None
    if any(v is not None for v in explicit.values()):
        missing = [k for k, v in explicit.items() if v is None]
        if missing:
            raise LotteryError(
                f"distributed.{missing[0]} is not set: a multi-process run needs distributed.coordinator "
                "(host:port of process 0), distributed.num_processes and distributed.process_id"
            )
        if not 0 <= explicit["process_id"] < explicit["num_processes"]:
            raise LotteryError(
                f"distributed.process_id={explicit['process_id']} must be in [0, "
                f"distributed.num_processes={explicit['num_processes']})"
            )
        if explicit["num_processes"] == 1:
            return None
        joining = {"source": "config", **explicit}
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if joining is None and all(k in environ for k in slurm) and int(environ["SLURM_NTASKS"]) > 1:
        joining = {
            "source": "slurm",
            "num_processes": int(environ["SLURM_NTASKS"]),
            "process_id": int(environ["SLURM_PROCID"]),
            "coordinator": None,
        }
    if joining is None and "JAX_COORDINATOR_ADDRESS" in environ and int(environ.get("JAX_NUM_PROCESSES", "1")) > 1:
        joining = {
            "source": "env",
            "num_processes": int(environ["JAX_NUM_PROCESSES"]),
            "process_id": int(environ.get("JAX_PROCESS_ID", "0")),
            "coordinator": environ["JAX_COORDINATOR_ADDRESS"],
        }
    if joining is not None:
        joining["local_device_ids"] = local_device_ids(joining, environ)
    return joining


def local_device_ids(joining: Dict, environ=os.environ) -> Optional[List[int]]:
    """Which of this host's devices (GPUs) a process of a multi-process run takes; None: JAX's
    default. A process sees every GPU of its host unless told otherwise, and two processes on one
    GPU fail in their first collective (NCCL refuses duplicate devices) or run out of its memory:

    - ``JAX_LOCAL_DEVICE_IDS`` (JAX's own variable, e.g. ``0,1``): those devices;
    - under SLURM, None: JAX gives each task the one GPU numbered by its ``SLURM_LOCALID``;
    - a coordinator on a loopback address (every process is on this host, as in the tests): one
      device each, the one numbered by the process id; unless ``CUDA_VISIBLE_DEVICES`` is set, in
      which case whoever set it chose this process's devices;
    - else None: one process per host, which takes all of its host's devices.
    """
    given = environ.get("JAX_LOCAL_DEVICE_IDS", "").strip()
    if given:
        try:
            ids = [int(part) for part in given.split(",")]
        except ValueError:
            ids = None
        if not ids or any(i < 0 for i in ids):
            raise LotteryError(
                f"JAX_LOCAL_DEVICE_IDS={given!r}: expected the numbers of this process's devices "
                "separated by commas, e.g. 0 or 0,1"
            )
        return ids
    if joining["source"] == "slurm" or "CUDA_VISIBLE_DEVICES" in environ:
        return None
    return [joining["process_id"]] if loopback(joining["coordinator"]) else None


def loopback(address: Optional[str]) -> bool:
    """Whether ``host:port`` names this machine's loopback interface (only this host can reach it)."""
    if not address:
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# XLA's GPU client takes 75% of a GPU's memory when it starts unless this says false.
PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"


def gpu_memory_environment(joining: Optional[Dict], environ=os.environ) -> Dict[str, str]:
    """What to add to the environment before JAX's backend starts: processes of ours that may
    share a GPU -- those of a multi-process run (which cannot always tell whether another process
    of the run uses the same GPU) and the jobs of the local launcher (conf/hydra/launcher/local.yaml:
    every job sees the same GPUs) -- allocate as they go instead of each preallocating 75% of it.
    A value the user set is kept; a single process preallocates as JAX does."""
    shared = joining is not None or environ.get("SUBMITIT_EXECUTOR") == "local"
    return {PREALLOCATE: "false"} if shared and PREALLOCATE not in environ else {}


_JOINED = None  # the plan this process joined with, once it did


def initialize(cfg) -> Optional[Dict]:
    """Join the multi-process run this process is part of, if any (once per process: a Hydra sweep
    runs several experiments in one process). Must come before JAX's first computation."""
    global _JOINED
    joining = plan(cfg)
    os.environ.update(gpu_memory_environment(joining))  # read when the backend starts, which it has not yet
    if joining is None or _JOINED is not None:
        if (
            _JOINED is not None
            and joining is not None
            and (joining["num_processes"], joining["process_id"]) != (_JOINED["num_processes"], _JOINED["process_id"])
        ):
            raise LotteryError(
                "distributed: this process already joined a run of "
                f"{_JOINED['num_processes']} processes as {_JOINED['process_id']}; one run per process"
            )
        return _JOINED
    if joining["source"] == "slurm":
        # JAX's SLURM detection: coordinator on the first node of the step, one GPU per task
        jax.distributed.initialize(local_device_ids=joining["local_device_ids"])
    else:
        jax.distributed.initialize(
            joining["coordinator"],
            joining["num_processes"],
            joining["process_id"],
            local_device_ids=joining["local_device_ids"],
        )
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
