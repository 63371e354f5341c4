"""A 2-job Hydra multirun in a subprocess, and the notebooks executed against its results."""

import glob
import json
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, run_cli
from lottery import analysis
from wandb_records import read_run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_cli(
        "-m",
        "levels=1",
        "rewind=0it,20it",
        "replicates=2",
        "controls=[random_reinit]",
        "lmc.levels=[1]",
        "lmc.points=3",
        "training.steps=3ep",
        "progress=false",
        "wandb.mode=offline",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    (sweep_dir,) = glob.glob(str(cwd / "runs" / "multirun" / "*"))
    return cwd, sweep_dir


@pytest.mark.slow
def test_multirun_jobs_get_their_own_directories_and_wandb_runs(sweep):
    cwd, sweep_dir = sweep
    experiments = sorted(glob.glob(str(cwd / "runs" / "quickstart-*")))
    assert len(experiments) == 2  # rewind is part of the hash
    run_ids = set()
    for directory in experiments:
        runs = glob.glob(os.path.join(directory, "wandb", "offline-run-*"))
        assert len(runs) == 4  # 2 replicates x (ticket, random_reinit)
        for run_dir in runs:
            run, _, history = read_run(run_dir)
            run_ids.add(run.run_id)
            assert run.run_group == os.path.basename(directory)
            assert any("levels/path" in row for row in history)  # each job finished its own runs
            # how alike its mask is to the other replicate's and to its ticket's control's (or ticket's)
            (summary,) = [row for row in history if "levels/path" in row]
            with open(os.path.join(run_dir, "files", summary["mask_similarity/path"])) as f:
                similarity = json.load(f)
            replicate, kind = re.search(r"-r(\d+)-(ticket|random_reinit)$", run_dir).groups()
            replicate, other = int(replicate), "random_reinit" if kind == "ticket" else "ticket"
            assert [row[:3] for row in similarity["data"]] == [
                ["replicates", 1, f"replicate {1 - replicate} {kind}"],
                ["kinds", 1, f"replicate {replicate} {other}"],
            ]
    assert len(run_ids) == 8
    pointers = sorted(glob.glob(os.path.join(sweep_dir, "*", analysis.POINTER)))
    assert [os.path.basename(os.path.dirname(p)) for p in pointers] == ["0", "1"]
    df = analysis.load_runs(sweep_dir)
    assert sorted(df["rewind"].unique()) == ["0it", "20it"] and df["lmc_barrier"].notna().sum() == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["analysis", "sweep_analysis"])
def test_notebook_executes_against_fresh_results(sweep, name, monkeypatch):
    cwd, sweep_dir = sweep
    monkeypatch.setenv("LOTTERY_RUNS", str(cwd / "runs"))
    monkeypatch.setenv("LOTTERY_SWEEP", sweep_dir)
    path = REPO / "notebooks" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # The figures were drawn: analysis (per experiment, early stopping, comparison, layer densities);
    # sweep (one line per job, instability vs rewind; the heat map needs two swept keys).
    assert sum("image/png" in o.get("data", {}) for o in outputs) == {"analysis": 4, "sweep_analysis": 2}[name]
    if name == "analysis":  # the mask similarity table, against chance
        assert any("jaccard_above_chance" in o.get("data", {}).get("text/html", "") for o in outputs)


@pytest.mark.parametrize("name", ["analysis", "sweep_analysis"])
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
