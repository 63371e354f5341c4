"""Benchmarks run at their --smoke size, so that the scripts never rot (their numbers are not checked)."""

import subprocess
import sys

from conftest import REPO, child_env


def test_replicates_benchmark_runs_and_shows_why_members_run_alone():
    result = subprocess.run([sys.executable, "replicates.py", "--smoke"], cwd=REPO / "experiments" / "bench",
                            env=child_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"]
    # One program per member: member 0 is bitwise the network trained alone, in every group.
    assert all(row[-3] == "True" for row in rows), result.stdout


def test_mesh_benchmark_runs_and_member_parallel_is_bitwise_one_device():
    result = subprocess.run([sys.executable, "mesh.py", "--smoke"], cwd=REPO / "experiments" / "bench",
                            env=child_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = {line[:13].strip(): line.split() for line in result.stdout.splitlines() if line.endswith(("True", "False"))}
    assert set(rows) == {"one device", "members x2"}, result.stdout
    assert rows["members x2"][-1] == "True", result.stdout  # each device runs the one-network program


def test_sparse_inference_benchmark_runs_and_sparse_accuracies_equal_dense():
    result = subprocess.run([sys.executable, "sparse_inference.py", "--smoke"], cwd=REPO / "experiments" / "bench",
                            env=child_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
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
