"""IMP levels: rewinding to θk, masks carried through the results directory, resuming."""

import pytest
import io
import os

import jax
import numpy as np
from rich.console import Console

from lottery import imp
from lottery.pruning import masks as pruning
from lottery.training.trainer import stack, unstack
from test_masking import member_keys

QUIET = Console(file=io.StringIO())


def tobytes(tree):
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)]


@pytest.mark.slow
def test_each_level_starts_from_theta_k_times_its_mask(small_config):
    cfg = small_config("rewind=40it", "rewind_optimizer=true", "optimizer=sgd", "optimizer.lr=0.05")
    results = imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    level_dir = lambda level: experiment.level_dir(0, level)
    theta_k = experiment.rewind_point(0)

    # θk is the dense run's state at step k: replaying the first k steps from θ0 gives it bitwise.
    trainer = experiment.trainer
    theta_0 = experiment.initial_weights(experiment.keys(0)["init"])
    state = trainer.init_state(theta_0["params"], theta_0["batch_stats"], pruning.full_mask(theta_0["params"]))
    replay = unstack(trainer.train(stack([state]), *member_keys(experiment), 0, 40)[0], 0)
    assert tobytes(replay["params"]) == tobytes(theta_k["params"])
    assert tobytes(replay["opt_state"]) == tobytes(theta_k["opt_state"])

    ticket_0 = experiment.load(level_dir(0), "ticket")
    assert tobytes(ticket_0["params"]) == tobytes(theta_0["params"])  # level 0 starts from θ0
    previous_mask = ticket_0["mask"]
    for level in (1, 2):
        ticket = experiment.load(level_dir(level), "ticket")
        expected = jax.tree.map(lambda w, m: np.where(m, w, np.float32(0)), theta_k["params"], ticket["mask"])
        assert tobytes(ticket["params"]) == tobytes(expected)
        for new, old in zip(jax.tree.leaves(ticket["mask"]), jax.tree.leaves(previous_mask)):
            assert not np.any(new & ~old)  # nested
        counts = pruning.counts(ticket["mask"], experiment.prunable)
        metrics = results[level]
        assert metrics["remaining"] == sum(c["remaining"] for c in counts.values())
        assert metrics["start_step"] == 40 and metrics["history"][0]["step"] == 60
        trained = experiment.load(level_dir(level), "trained")
        for path, m in pruning.flatten(ticket["mask"]).items():
            assert np.all(pruning.flatten(trained["params"])[path][~m] == 0)
        previous_mask = ticket["mask"]
    assert results[0]["start_step"] == 0 and results[2]["density"] < results[1]["density"] < 1.0


@pytest.mark.slow
def test_metrics_report_accuracy_early_stopping_and_exact_densities(small_config):
    results = imp.run(small_config(), console=QUIET)
    sizes = {"hidden/0/kernel": 64 * 64, "hidden/1/kernel": 64 * 32, "output/kernel": 32 * 10}
    remaining = dict(sizes)
    for metrics in results:
        assert metrics["remaining"] == sum(remaining.values())
        assert {k: v["remaining"] for k, v in metrics["layers"].items()} == remaining
        assert metrics["density"] == sum(remaining.values()) / sum(sizes.values())
        history = metrics["history"]
        assert [r["step"] for r in history] == list(range(20, 101, 20))  # 5 epochs of 20 iterations
        best = min(history, key=lambda r: r["val_loss"])
        assert metrics["early_stop"]["step"] == best["step"]
        assert metrics["early_stop"]["test_accuracy"] == best["test_accuracy"]
        assert metrics["final"] == history[-1] and 0.5 < metrics["final"]["test_accuracy"] <= 1.0
        remaining = {
            k: v - int(np.floor((0.1 if k.startswith("output") else 0.2) * v + 0.5)) for k, v in remaining.items()
        }


@pytest.mark.slow
def test_more_levels_continue_skip_finished_ones_and_match_an_uninterrupted_run(small_config, tmp_path):
    first = small_config("levels=1")
    imp.run(first, console=QUIET)
    experiment = imp.prepare(first)
    files = [os.path.join(experiment.level_dir(0, level), "metrics.json") for level in (0, 1)]
    before = [(os.stat(f).st_mtime_ns, open(f).read()) for f in files]
    os.makedirs(experiment.level_dir(0, 2) + ".partial")  # an interrupted attempt at level 2
    open(os.path.join(experiment.level_dir(0, 2) + ".partial", "junk"), "w").close()

    continued = imp.run(small_config("levels=2"), console=QUIET)
    assert [(os.stat(f).st_mtime_ns, open(f).read()) for f in files] == before
    assert not os.path.exists(experiment.level_dir(0, 2) + ".partial")
    assert [m["level"] for m in continued] == [0, 1, 2]

    fresh_cfg = small_config("levels=2", f"output_dir={tmp_path / 'fresh'}")
    fresh = imp.run(fresh_cfg, console=QUIET)
    fresh_experiment = imp.prepare(fresh_cfg)
    assert [m["final"] for m in fresh] == [m["final"] for m in continued]  # deterministic on CPU
    load = lambda e: e.load(e.level_dir(0, 2), "trained")
    assert tobytes(load(fresh_experiment)) == tobytes(load(experiment))


def test_results_directory_is_named_by_content_hash(small_config):
    a = imp.prepare(small_config("levels=1")).directory
    b = imp.prepare(small_config("levels=4", "progress=true")).directory
    c = imp.prepare(small_config("pruning.rate=0.5")).directory
    d = imp.prepare(small_config("name=../../etc")).directory
    assert a == b and a != c
    assert os.path.basename(a).startswith("quickstart-")
    assert os.path.basename(d).startswith("_.._etc-") and os.path.dirname(d) == os.path.dirname(a)


@pytest.mark.slow
def test_every_result_records_the_commit_versions_and_machine_that_produced_it(small_config, tmp_path, monkeypatch):
    import subprocess

    import lottery
    from lottery.results import provenance

    git = lambda *args: subprocess.run(
        ["git", "-C", str(tmp_path / "src"), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (tmp_path / "src" / "lottery").mkdir(parents=True)
    (tmp_path / "src" / "lottery" / "__init__.py").write_text("")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    monkeypatch.setattr(lottery, "__file__", str(tmp_path / "src" / "lottery" / "__init__.py"))

    def recorded():
        provenance.provenance.cache_clear()
        results = imp.run(small_config("levels=0", f"output_dir={tmp_path / 'runs' / str(len(seen))}"), console=QUIET)
        seen.append(results[0]["provenance"])
        return seen[-1]

    seen = []
    clean = recorded()
    assert clean["commit"] == git("rev-parse", "HEAD") and clean["dirty"] is False
    assert (
        clean["jax"] == jax.__version__
        and clean["backend"] == jax.default_backend()
        and clean["cpus"] == os.cpu_count()
    )
    (tmp_path / "src" / "lottery" / "__init__.py").write_text("# edited")
    assert recorded()["dirty"] is True
    monkeypatch.setattr(lottery, "__file__", str(tmp_path / "elsewhere" / "__init__.py"))  # not a checkout
    assert recorded()["commit"] is None
    provenance.provenance.cache_clear()
