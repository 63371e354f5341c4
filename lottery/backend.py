"""The backend this process computes on (cpu, gpu, tpu): the line a run starts with, a warning when
a machine with an NVIDIA GPU computes on its CPU, and the CUDA libraries a result was computed with
(results/provenance.py). JAX's own "falling back to cpu" warning is silenced by the command line
(run.py, with its TPU probe); the warning here says what to install instead.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from importlib import metadata
from typing import Callable, Dict, Optional


from lottery import lazy

jax = lazy.module("jax")

# JAX's CUDA plugins, by the extra that installs each (setup.cfg: cuda, cuda12).
CUDA_PLUGINS = ("jax-cuda13-plugin", "jax-cuda12-plugin")


def kind() -> str:
    """What JAX computes on: cpu, gpu or tpu (this starts the backend)."""
    return jax.default_backend()


def gpu_present(environ=os.environ) -> bool:
    """Whether this process seems to have an NVIDIA GPU, without asking JAX: the driver's first
    device file, or its command on PATH; not where CUDA_VISIBLE_DEVICES hides every GPU (as the
    local launcher does with gpus_per_node: 0)."""
    if environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def platforms_chosen() -> Optional[str]:
    """The platforms the user chose (JAX_PLATFORMS, e.g. cpu), or None: JAX picks the best it has."""
    return jax.config.jax_platforms or None


def cuda_plugin() -> Optional[str]:
    """The installed CUDA plugin(s) of JAX with their versions, e.g. ``jax-cuda13-plugin 0.11.2``."""
    found = []
    for name in CUDA_PLUGINS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found) or None


def describe() -> str:
    """``backend: gpu (8 x NVIDIA H200, 2 processes)``: what this run computes on."""
    devices = jax.devices()
    line = f"backend: {kind()} ({len(devices)} x {devices[0].device_kind}"
    return line + (f", {jax.process_count()} processes)" if jax.process_count() > 1 else ")")


def fallback_warning() -> Optional[str]:
    """One line when a machine with an NVIDIA GPU computes on its CPU, saying why and what to do;
    None otherwise, or when the user chose the platform (JAX_PLATFORMS=cpu)."""
    if platforms_chosen() or kind() != "cpu" or not gpu_present():
        return None
    plugin = cuda_plugin()
    if plugin is None:
        why = (
            "JAX's CUDA plugin is not installed; pip install -e '.[cuda]' installs it ('.[cuda12]' for a driver "
            "older than CUDA 13)"
        )
    else:
        from jax._src import xla_bridge  # the reason JAX kept, where this version keeps one

        error = str(getattr(xla_bridge, "_backend_errors", {}).get("cuda", "")).strip().splitlines()
        why = f"{plugin} is installed but its backend did not start" + (
            f" ({error[0]})" if error else " (JAX_PLATFORMS=cuda shows why)"
        )
    return f"warning: this machine seems to have an NVIDIA GPU, but JAX computes on the CPU: {why} (docs/gpu.md)"


def announce(say: Callable[[str], None]) -> None:
    """At the start of a run: process 0 says what the run computes on; any process that runs on
    the CPU of a GPU machine warns, on stderr."""
    warning = fallback_warning()
    if warning:
        print(" ".join(warning.split()), file=sys.stderr)
    if jax.process_index() == 0:
        say(describe())


def _cuda_version(number: Optional[int]) -> Optional[str]:
    """CUDA's encoding, 1000 x major + 10 x minor (12080: 12.8)."""
    return None if number is None else f"{number // 1000}.{number % 1000 // 10}"


def _cudnn_version(number: Optional[int]) -> Optional[str]:
    """cuDNN's encoding: 10000 x major + 100 x minor + patch from 9 on (90800: 9.8.0), 1000 x major before."""
    if number is None:
        return None
    major = 10000 if number >= 90000 else 1000
    return f"{number // major}.{number % major // 100}.{number % 100}"


def cuda() -> Dict[str, Optional[str]]:
    """On a GPU backend, the CUDA runtime, the CUDA version the driver supports, cuDNN, the first
    device's compute capability and the plugin; None each on any other backend."""
    out = {"cuda_plugin": cuda_plugin(), "cuda": None, "cuda_driver": None, "cudnn": None, "compute_capability": None}
    if kind() != "gpu":
        return out
    out["compute_capability"] = getattr(jax.devices()[0], "compute_capability", None)
    try:
        from jax._src.lib import cuda_versions  # the plugin's version queries (None without one)
    except ImportError:
        cuda_versions = None
    if cuda_versions is None:
        return out

    def ask(name):
        try:
            return getattr(cuda_versions, name)()
        except Exception:  # a query this plugin version lacks, or a library that cannot be loaded
            return None

    out.update(
        cuda=_cuda_version(ask("cuda_runtime_get_version")),
        cuda_driver=_cuda_version(ask("cuda_driver_get_version")),
        cudnn=_cudnn_version(ask("cudnn_get_version")),
    )
    return out


DETERMINISTIC = "--xla_gpu_deterministic_ops=true"


def started() -> bool:
    """Whether JAX's backends are up (after which XLA's flags are fixed for the process)."""
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "backends_are_initialized", lambda: False)())


def deterministic_ops(environ=os.environ) -> bool:
    """Whether XLA's deterministic GPU operations are in effect (by ``deterministic`` or the user's XLA_FLAGS)."""
    return DETERMINISTIC in environ.get("XLA_FLAGS", "").split()


def deterministic(wanted: bool, environ=os.environ) -> bool:
    """``deterministic=true``: XLA's deterministic GPU operations (scatter and reductions in a fixed
    order), set in XLA_FLAGS before the backend starts. XLA reads its flags once per process, so a
    job of an in-process sweep that asks for them after the backend started without them is refused
    in one line. Returns whether they are in effect (also when the user set XLA_FLAGS so): what each
    invocation records. CPU programs are deterministic either way."""
    from lottery.errors import LotteryError

    flags = environ.get("XLA_FLAGS", "")
    if deterministic_ops(environ):
        return True
    if not wanted:
        return False
    if started():
        raise LotteryError(
            f"deterministic=true: XLA's flags were fixed when this process started JAX without it "
            f"(XLA_FLAGS={flags!r}); run it in its own process (a new command, or hydra/launcher=local)"
        )
    environ["XLA_FLAGS"] = (flags + " " + DETERMINISTIC).strip()
    return True


def compilation_cache(setting: str, key: str = "compilation_cache") -> str:
    """The directory of JAX's persistent compilation cache, made if missing: one that cannot be
    written is refused here, where JAX would warn at every compilation and carry on without it,
    naming ``key``, where the setting came from (``cache_key``)."""
    from lottery.errors import LotteryError

    directory = os.path.abspath(os.path.expanduser(setting))
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as error:
        reason = "a file, not a directory" if os.path.isfile(directory) else error.strerror or str(error)
        raise LotteryError(
            f"{key}={setting}: {reason}; choose a writable directory, or "
            "compilation_cache='' to compile without the cache"
        ) from None
    return directory


def use_compilation_cache(cfg) -> None:
    """JAX's persistent compilation cache in config ``compilation_cache`` (none where it is empty),
    for programs that take 0.2 s or more to compile."""
    if cfg.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", compilation_cache(cfg.compilation_cache, cache_key(cfg)))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def cache_key(cfg) -> str:
    """Where config ``compilation_cache`` came from: the environment variable LOTTERY_JAX_CACHE (its
    default, conf's interpolation, left as it is), or the key itself (set in a config or override)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_interpolation(cfg, "compilation_cache") and os.environ.get("LOTTERY_JAX_CACHE") is not None:
        return "LOTTERY_JAX_CACHE"
    return "compilation_cache"
