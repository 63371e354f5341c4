"""The dense level 0, trained once and shared by the experiments of a sweep (lottery/dense.py)."""

import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from rich.console import Console

from conftest import child_env, compose_config
from lottery import imp
from lottery.imp import dense
from lottery.results.store import acquire_lock, load_tree
from lottery.errors import LotteryError

# Tiny runs: 60 steps, evaluations every 20; the rewind point at 20 (the sweep) and 40 (later).
TINY = [
    "model.hidden=[32,16]",
    "training.steps=60it",
    "training.eval_every=20it",
    "levels=1",
    "replicates=2",
    "progress=false",
]


def invocations(directory):
    with open(os.path.join(directory, "invocations.jsonl")) as f:
        return [json.loads(line) for line in f]


def leaves(experiment, directory, what, path=None):
    """The arrays of ``<directory>/<what>`` (or of ``path``, saved as a ``what``)."""
    tree = load_tree(path, experiment.template(what)) if path else experiment.load(directory, what)
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def assert_bitwise(a, b):
    assert len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
def test_a_sweep_trains_level_0_once_and_a_new_rewind_step_trains_only_its_prefix(tmp_path):
    runs = tmp_path / "runs"
    cfg = compose_config([*TINY, "rewind=20it", f"output_dir={runs}"])
    store = dense.Dense(imp.prepare(cfg)).directory
    os.makedirs(store)
    # Another process holds the dense run: the sweep's first job waits for it, then trains it.
    holder = acquire_lock(store)
    sweep = subprocess.Popen(
        [sys.executable, "-m", "lottery.run", "-m", "pruning.rate=0.2,0.5", *TINY, "rewind=20it", f"output_dir={runs}"],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in sweep.stdout:
        lines.append(line)
        if "waiting for" in line:
            break
    assert "another process is working on it" in lines[-1] and store in lines[-1].replace("\n", ""), "".join(lines)
    time.sleep(1)
    assert sweep.poll() is None and not os.path.isdir(os.path.join(store, "replicate_0"))  # still waiting
    holder.close()
    # Meanwhile, in this process: the later experiment below (a new rewind step and another rule of
    # what is prunable) trained alone, with a store of its own, to compare with.
    other = ["rewind=40it", "pruning.rate=0.5", "pruning.ignore=[output/kernel]"]
    alone = compose_config([*TINY, *other, f"output_dir={tmp_path / 'alone'}"])
    imp.run(alone, console=Console(file=io.StringIO()))
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, "".join(lines) + output

    # One dense training of both replicates, in the first job; the other job only linked it.
    trained = [a for entry in invocations(store) if entry["event"] == "end" for a in entry["added"]]
    assert trained == [{"replicate": 0, "trained": 60, "kept": [20]}, {"replicate": 1, "trained": 60, "kept": [20]}]
    experiments = sorted(glob.glob(str(runs / "quickstart-*")))
    assert len(experiments) == 2 and glob.glob(str(runs / "dense" / "*")) == [store]
    experiment = imp.prepare(cfg)
    shared = {
        what: [leaves(experiment, os.path.join(store, f"replicate_{r}"), what) for r in (0, 1)]
        for what in ("ticket", "trained")
    }
    for directory in experiments:
        added = [a for entry in invocations(directory) if entry["event"] == "end" for a in entry["added"]]
        assert [a for a in added if a["level"] == 0] == [
            {"level": 0, "replicate": r, "kind": "ticket", "dense": os.path.relpath(store, runs)} for r in (0, 1)
        ]
        for r in (0, 1):
            level_0 = os.path.join(directory, f"replicate_{r}", "level_0")
            for what in ("ticket", "trained"):
                assert_bitwise(leaves(experiment, level_0, what), shared[what][r])
            assert_bitwise(
                leaves(experiment, level_0, "rewind_point"),
                leaves(experiment, None, "rewind_point", os.path.join(store, f"replicate_{r}", "rewind_points", "20")),
            )
            with open(os.path.join(level_0, "metrics.json")) as f:
                assert json.load(f)["dense"] == os.path.relpath(store, runs)
        # The files are the store's (hard links), not copies of its bytes.
        (some_file,) = [
            f
            for f in glob.glob(os.path.join(directory, "replicate_0", "level_0", "trained", "**"), recursive=True)
            if f.endswith("manifest.ocdbt")
        ][:1]
        assert os.path.samefile(
            some_file,
            some_file.replace(os.path.join(directory, "replicate_0", "level_0"), os.path.join(store, "replicate_0")),
        )

    # A later experiment with a new rewind step (and another rule of what is prunable) reuses the
    # dense run: only the prefix 20 -> 40 is trained.
    later = compose_config([*TINY, *other, f"output_dir={runs}"])
    imp.run(later, console=Console(file=io.StringIO()))
    last = invocations(store)[-1]
    assert last["added"] == [{"replicate": r, "rewind_point": 40, "from_step": 20} for r in (0, 1)]
    # ... and its level 0 and level 1 are bitwise what it trains alone, with a store of its own.
    together, apart = imp.prepare(later), imp.prepare(alone)
    assert together.directory != apart.directory and os.path.basename(together.directory) == os.path.basename(
        apart.directory
    )
    for r in (0, 1):
        for level, whats in ((0, ("ticket", "trained", "rewind_point")), (1, ("ticket", "trained"))):
            for what in whats:
                assert_bitwise(
                    leaves(together, together.level_dir(r, level), what), leaves(apart, apart.level_dir(r, level), what)
                )
        # Level 0 is counted by the experiment's own rule: the output layer is not prunable here.
        counted = [json.load(open(os.path.join(e.level_dir(r, 0), "metrics.json"))) for e in (together, apart)]
        assert [(m["remaining"], m["total"], sorted(m["layers"])) for m in counted] == [
            (counted[1]["total"], counted[1]["total"], ["hidden/0/kernel", "hidden/1/kernel"])
        ] * 2
        with open(os.path.join(store, f"replicate_{r}", "metrics.json")) as f:
            assert "output/kernel" in json.load(f)["layers"]

    # A file damaged in place through an experiment's link is damaged in the store: the next experiment
    # that needs it is told where, in the store, before it links the damage again.
    (damaged,) = [
        f for f in glob.glob(os.path.join(together.level_dir(1, 0), "trained", "**", "*.ocdbt"), recursive=True)
    ][:1]
    with open(damaged, "wb"):
        pass
    third = compose_config([*TINY, "rewind=40it", "pruning.rate=0.7", f"output_dir={runs}"])
    with pytest.raises(LotteryError, match=f"^{os.path.join(store, 'replicate_1', 'trained')}: cannot be read"):
        imp.run(third, console=Console(file=io.StringIO()))


def test_the_store_lock_waits_for_its_holder_and_gives_up_when_asked(tmp_path):
    holder = acquire_lock(str(tmp_path))
    said, got = [], []
    waiter = threading.Thread(target=lambda: got.append(acquire_lock(str(tmp_path), wait=said.append)))
    waiter.start()
    time.sleep(1.2)
    assert waiter.is_alive() and len(said) == 1 and f"pid {os.getpid()}" in said[0]  # said once, still waiting
    holder.close()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and got
    with open(tmp_path / "lock") as f:
        assert f.read() == f"pid {os.getpid()} on {os.uname().nodename}"

    def stop():
        raise LotteryError("asked to stop")

    with pytest.raises(LotteryError, match="asked to stop"):  # a signal while waiting: the run stops
        acquire_lock(str(tmp_path), wait=said.append, stop=stop)
    got[0].close()
    acquire_lock(str(tmp_path)).close()  # the one that gave up holds nothing


@pytest.mark.slow
def test_each_backend_trains_its_own_dense_runs_and_the_cpus_keep_their_hash(tmp_path, monkeypatch):
    from lottery import backend

    runs = tmp_path / "runs"
    # The quickstart's dense run, as every version before backends were told apart named it.
    quickstart = imp.prepare(compose_config([f"output_dir={runs}"]))
    assert os.path.basename(dense.Dense(quickstart).directory) == "lenet-digits-de3c0b9f59"
    assert "backend" not in dense.Dense(quickstart).identity

    cpu = [*TINY, "levels=0", "replicates=1", f"output_dir={runs}"]
    imp.run(compose_config(cpu), console=Console(file=io.StringIO()))
    (on_cpu,) = glob.glob(str(runs / "dense" / "*"))
    # Another experiment with the same level 0, on a GPU (as its backend is seen here): it trains
    # a level 0 of its own in a store of its own instead of building on the CPU's.
    monkeypatch.setattr(backend, "kind", lambda: "gpu")
    gpu = compose_config([*cpu, "pruning.rate=0.5"])
    assert dense.Dense(imp.prepare(gpu)).identity == {
        **dense.Dense(imp.prepare(compose_config(cpu))).identity,
        "backend": "gpu",
    }
    imp.run(gpu, console=Console(file=io.StringIO()))
    (on_gpu,) = set(glob.glob(str(runs / "dense" / "*"))) - {on_cpu}
    assert [a for entry in invocations(on_gpu) if entry["event"] == "end" for a in entry["added"]] == [
        {"replicate": 0, "trained": 60, "kept": [0]}
    ]
    with open(os.path.join(on_gpu, "dense.yaml")) as f:
        assert "backend: gpu" in f.read()


@pytest.mark.slow
def test_damage_to_the_store_is_named_in_experiments_that_link_it_and_repaired_once_retrained(tmp_path):
    """Level 0 of an experiment is hard links into the store: damage done to either is damage to
    both, and a store trained again has new files the older experiments' links do not reach. And
    the store's identity is checked by every experiment that links it, not only one that trains."""
    runs = tmp_path / "runs"
    tiny = [*TINY, "levels=0", "replicates=1", f"output_dir={runs}"]
    older = compose_config([*tiny, "lmc.levels=[0]", "lmc.points=3"])  # level 0 holds more than the links
    imp.run(older, console=Console(file=io.StringIO()))
    (store,) = glob.glob(str(runs / "dense" / "*"))
    identity = os.path.join(store, "dense.yaml")
    with open(identity) as f:
        written = f.read()
    # Another experiment with the same level 0 only links it: a damaged dense.yaml is refused...
    for damage, says in (
        (": : not yaml [", "cannot be read (ParserError"),
        ("model: {name: conv2}\n", "is not the identity"),
    ):
        with open(identity, "w") as f:
            f.write(damage)
        with pytest.raises(LotteryError, match=f"^{identity}: {re.escape(says)}"):
            imp.run(compose_config([*tiny, "pruning.rate=0.5"]), console=Console(file=io.StringIO()))
    os.remove(identity)  # ... and a missing one written again, and said
    out = io.StringIO()
    imp.run(compose_config([*tiny, "pruning.rate=0.5"]), console=Console(file=out, width=300))
    assert f"note: {identity} was missing; written again" in out.getvalue()
    with open(identity) as f:
        assert f.read() == written

    experiment = imp.prepare(older)
    level_0 = experiment.level_dir(0, 0)
    data = [f for f in glob.glob(os.path.join(level_0, "trained", "**", "d", "*"), recursive=True) if os.path.isfile(f)]
    for path in data:  # the arrays' bytes, half of each
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    # A re-run of the finished experiment says what is damaged and what to do (once was silent).
    with pytest.raises(LotteryError) as error:
        imp.run(older, console=Console(file=io.StringIO()))
    replicate = os.path.join(store, "replicate_0")
    assert str(error.value) == (
        f"{level_0}/trained: damaged, and so is the dense store's copy it links to: delete "
        f"{replicate} and run this again (trained there, relinked here)"
    )
    # Done as said: the store trains it again (the same bits) and each experiment's level 0 is linked to the
    # new files when it next runs (once it kept the damaged ones).
    shutil.rmtree(replicate)
    out = io.StringIO()
    with open(os.path.join(level_0, "lmc", "metrics.json")) as f:
        lmc = f.read()
    imp.run(older, console=Console(file=out, width=300))
    assert f"note: {level_0}/trained was damaged; linked again from the dense store" in out.getvalue()
    with open(os.path.join(level_0, "lmc", "metrics.json")) as f:
        assert f.read() == lmc  # the rest of level 0 is kept
    assert_bitwise(
        leaves(experiment, level_0, "trained"), leaves(experiment, None, "trained", os.path.join(replicate, "trained"))
    )
    assert os.path.samefile(
        glob.glob(os.path.join(level_0, "trained", "manifest.ocdbt"))[0],
        os.path.join(replicate, "trained", "manifest.ocdbt"),
    )
    out = io.StringIO()
    imp.run(compose_config([*tiny, "pruning.rate=0.5"]), console=Console(file=out, width=300))
    assert "/level_0/trained was damaged; linked again" in out.getvalue()
    out = io.StringIO()
    imp.run(older, console=Console(file=out, width=300))  # repaired: nothing to say
    assert "note:" not in out.getvalue()
