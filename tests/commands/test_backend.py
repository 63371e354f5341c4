"""What a run computes on: the suite on the CPU, the line a run starts with, the warning when a GPU
machine computes on its CPU, and the accelerator's libraries in every result's provenance."""

import subprocess
import sys
import types

import jax
import pytest

from conftest import SMALL, child_env
from lottery import backend
from lottery.results import provenance


def test_the_suite_and_the_commands_it_starts_run_on_the_cpu():
    assert jax.default_backend() == "cpu"
    assert child_env()["JAX_PLATFORMS"] == "cpu"
    assert child_env(JAX_PLATFORMS="cuda")["JAX_PLATFORMS"] == "cuda"  # a test that says otherwise is heard


def test_a_run_says_what_it_computes_on():
    assert backend.describe() == f"backend: cpu ({len(jax.devices())} x cpu)"


@pytest.mark.parametrize(
    "gpu, chosen, plugin, expected",
    [
        (False, None, None, None),  # a CPU machine: nothing to say
        (True, "cpu", None, None),  # the user chose the CPU (JAX_PLATFORMS=cpu)
        (True, None, None, "JAX's CUDA plugin is not installed; pip install -e '.[cuda]' installs it"),
        (True, None, "jax-cuda13-plugin 0.11.2", "jax-cuda13-plugin 0.11.2 is installed but its backend did not start"),
    ],
)
def test_a_gpu_machine_computing_on_its_cpu_is_warned_in_one_line(monkeypatch, gpu, chosen, plugin, expected):
    monkeypatch.setattr(backend, "gpu_present", lambda: gpu)
    monkeypatch.setattr(backend, "platforms_chosen", lambda: chosen)
    monkeypatch.setattr(backend, "cuda_plugin", lambda: plugin)
    warning = backend.fallback_warning()
    if expected is None:
        assert warning is None
    else:
        assert warning.startswith("warning: this machine seems to have an NVIDIA GPU, but JAX computes on the CPU: ")
        assert expected in warning and "\n" not in warning


def test_gpus_hidden_from_the_process_are_not_present(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{child_env()['PATH']}")
    assert backend.gpu_present({})
    assert not backend.gpu_present({"CUDA_VISIBLE_DEVICES": ""})  # the local launcher's gpus_per_node: 0
    assert not backend.gpu_present({"CUDA_VISIBLE_DEVICES": "-1"})
    assert backend.gpu_present({"CUDA_VISIBLE_DEVICES": "0"})


def test_announce_says_the_backend_on_stdout_and_warns_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(backend, "gpu_present", lambda: True)
    monkeypatch.setattr(backend, "platforms_chosen", lambda: None)
    said = []
    backend.announce(said.append)
    assert said == [backend.describe()]
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: ") and "'.[cuda]'" in line


@pytest.mark.slow
@pytest.mark.skipif(
    backend.cuda_plugin() is not None,
    reason="a CUDA plugin is installed: without JAX_PLATFORMS the run could compute on a GPU",
)
def test_the_command_line_warns_once_when_a_gpu_seems_present_but_jax_computes_on_the_cpu(tmp_path):
    fake = tmp_path / "bin" / "nvidia-smi"  # the probe finds the driver's command on PATH
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = child_env(JAX_PLATFORMS="", PATH=f"{fake.parent}:{child_env()['PATH']}")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lottery.run",
            *SMALL,
            "levels=0",
            "training.steps=20it",
            "training.eval_every=10it",
            f"output_dir={tmp_path / 'runs'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "backend: cpu (1 x cpu)"
    warnings = [line for line in done.stderr.splitlines() if "NVIDIA GPU" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "pip install -e '.[cuda]'" in warnings[0]
    assert "Falling back" not in done.stderr  # JAX's own warning stays silenced: one line says it


def test_provenance_records_the_accelerators_libraries_and_the_matmul_precision():
    found = provenance.provenance()
    for key in ("cuda_plugin", "cuda", "cuda_driver", "cudnn", "compute_capability", "matmul_precision"):
        assert key in found
    assert found["cuda"] is found["cuda_driver"] is found["cudnn"] is found["compute_capability"] is None  # on a CPU
    assert found["matmul_precision"] == jax.config.jax_default_matmul_precision


def test_on_a_gpu_the_cuda_versions_are_read_from_jaxs_plugin(monkeypatch):
    from jax._src import lib

    versions = types.SimpleNamespace(
        cuda_runtime_get_version=lambda: 13000, cuda_driver_get_version=lambda: 13010, cudnn_get_version=lambda: 91000
    )  # no other query: they are asked one by one
    monkeypatch.setattr(lib, "cuda_versions", versions, raising=False)
    monkeypatch.setattr(backend, "kind", lambda: "gpu")
    found = backend.cuda()
    assert (found["cuda"], found["cuda_driver"], found["cudnn"]) == ("13.0", "13.1", "9.10.0")
    assert backend._cudnn_version(8907) == "8.9.7" and backend._cuda_version(12080) == "12.8"
