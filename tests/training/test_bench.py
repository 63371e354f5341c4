"""Benchmarks run at their --smoke size, so that the scripts never rot (their numbers are not checked)."""

import concurrent.futures
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, child_env, compose_config


DEVICE = "test_device_script_smoke_runs_every_section_and_prints_one_table"


@pytest.fixture(scope="module", autouse=True)
def device_script(request, tmp_path_factory):
    """experiments/bench/device.sh --smoke, started when this module's first test starts (where its
    test is one of those run): it runs beside the other scripts' tests (each a process of its own,
    mostly one core's work) and its test, the last, waits for it."""
    if not any(item.name == DEVICE for item in request.session.items):
        yield None
        return
    out = tmp_path_factory.mktemp("device")
    process = subprocess.Popen(
        ["bash", "experiments/bench/device.sh", "--smoke"],
        cwd=REPO,
        env=child_env(PYTHON=sys.executable, OUT=str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # read as it runs (to the end of its tee)
        try:
            yield pool.submit(process.communicate, timeout=600), process, out
        finally:
            if process.poll() is None:  # its test failed or was not reached: stop the script, its sections
                os.killpg(process.pid, signal.SIGKILL)


def smoke(script: str) -> subprocess.CompletedProcess:
    """experiments/bench/``script`` --smoke, run to its end (its output captured)."""
    result = subprocess.run(
        [sys.executable, script, "--smoke"],
        cwd=REPO / "experiments" / "bench",
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_lenet_level_benchmark_runs_and_its_shares_add_up_to_the_level():
    result = smoke("lenet_level.py")
    seconds = {line[:24].strip(): float(line[24:].split()[0]) for line in result.stdout.splitlines() if " s" in line}
    parts = seconds["train"] + seconds["evaluate"] + seconds["host (metrics, saving)"]
    assert seconds["train"] > 0 and abs(parts - seconds["level (after compile)"]) < 0.02, result.stdout
    final = float(result.stdout.split("test accuracy ")[1].split("%")[0])
    assert final > 80.0, result.stdout  # 200 iterations of LeNet-300-100 on the real MNIST learn it (~95%)


@pytest.mark.slow
def test_mesh_benchmark_runs_and_member_parallel_is_bitwise_one_device():
    result = smoke("mesh.py")
    rows = {line[:13].strip(): line.split() for line in result.stdout.splitlines() if line.endswith(("True", "False"))}
    assert set(rows) == {"one device", "members x2"}, result.stdout
    assert rows["members x2"][-1] == "True", result.stdout  # each device runs the one-network program


@pytest.mark.slow
def test_sparse_inference_benchmark_runs_and_sparse_accuracies_equal_dense():
    result = smoke("sparse_inference.py")
    lines = result.stdout.splitlines()
    checks = [line.split() for line in lines if line.split()[:1] and line.split()[0].isdigit()]
    assert [row[0] for row in checks] == ["0", "1", "2"], result.stdout  # a quickstart ticket per level
    for row in checks:
        # lottery's recorded accuracy, then JAX dense, BCOO, BCSR, NumPy dense, SciPy CSR: all equal.
        assert len(set(row[2:8])) == 1 and row[-1] == "equal", result.stdout
    densities = [row[1] for row in checks]
    tables = [line.split()[0] for line in lines if line.split()[:1] and line.split()[0].endswith("%")]
    assert tables == densities * 3, result.stdout  # batch 1, the large batch, memory: a row per density
    assert "where sparse wins" in result.stdout


@pytest.mark.slow
def test_structured_inference_benchmark_runs_and_compact_networks_give_the_same_logits():
    result = smoke("structured_inference.py")
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["lenet"], ["conv2"])]
    assert len(rows) == 8 and all(row[-1] == "True" for row in rows), result.stdout


@pytest.mark.slow
def test_device_script_smoke_runs_every_section_and_prints_one_table(device_script):
    """experiments/bench/device.sh --smoke on the CPU: every section runs (GPU-only or torch figures
    may be n/a), the summary has each section's rows, and stacks.py's rows are there, network 0
    bitwise beside other mates. (Started by the fixture above, with the module's first test.)"""
    outputs, process, tmp_path = device_script
    out, err = outputs.result()
    assert process.returncode == 0, out + err
    assert not [line for line in out.splitlines() if "FAILED" in line and not line.startswith("section f")], out
    assert (tmp_path / "device.log").read_text().strip().endswith(f"log: {tmp_path / 'device.log'}")
    table = out[out.index("== summary ==") :].splitlines()
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in table
        if line.startswith("| ") and "what" not in line
    }
    assert {label.split(".")[0] for label in rows} == set("abcdefgh"), out
    assert rows["h. rigl step (LeNet, 20%): idle / update cost"] != "n/a", out  # (smoke: RigL only)
    assert rows["a. quickstart bitwise in 2 processes, default"] == "True", out
    assert rows["c. lenet network 0 bitwise beside other mates, every width"] == "True", out
    # section f (Conv-2 on the CIFAR-10 records) is skipped by --smoke: tests/data/test_cifar10_subset.py runs its check
    stack_rows = [
        line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["1"], ["2"]) and line.endswith(("True", "False"))
    ]
    assert [row[0] for row in stack_rows] == ["1", "2"] and all(row[-1] == "True" for row in stack_rows), out


def test_the_benchmarks_compose_the_commands_config_and_make_data_of_a_real_sets_shape():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_common", REPO / "experiments" / "bench" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert common.compose_config(["+exp=lenet", "levels=3"]) == compose_config(["+exp=lenet", "levels=3"])
    data = common.synthetic((32, 32, 3), n_train=100, n_test=10)
    assert data.train_x.shape == (100, 32, 32, 3) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (10, 32, 32, 3) and len(data.val_x) == 0
    assert set(data.train_y.tolist()) <= set(range(10))
