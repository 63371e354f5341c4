"""Where a result came from: code version, library versions and machine, stored with every
trained network so that a number in a table can be traced to what produced it."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata


import lottery
from lottery import lazy
from lottery import backend

jax = lazy.module("jax")

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")


def _git(*args):
    source = os.path.dirname(os.path.abspath(lottery.__file__))
    try:
        out = subprocess.run(["git", "-C", source, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def provenance() -> dict:
    """The git commit of the lottery source (None when not run from a checkout; ``dirty`` when it
    had uncommitted changes), versions, the accelerator and the host. On a GPU also the CUDA
    runtime, the CUDA version of the driver, cuDNN, the compute capability and JAX's CUDA plugin
    (None elsewhere), and the default precision of float32 matmuls (``jax_default_matmul_precision``;
    None: JAX's default, which on a GPU since Ampere may use TF32)."""
    commit = _git("rev-parse", "HEAD")
    device = jax.devices()[0]
    return {
        "lottery": lottery.__version__,
        "commit": commit,
        "dirty": bool(_git("status", "--porcelain")) if commit else None,
        "python": platform.python_version(),
        **{name: _version(name) for name in LIBRARIES},
        "backend": jax.default_backend(),
        "device": f"{len(jax.devices())} x {device.device_kind}",
        **backend.cuda(),
        "matmul_precision": jax.config.jax_default_matmul_precision,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "host": platform.node(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return platform.processor() or None
