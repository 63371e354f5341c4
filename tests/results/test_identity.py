"""A hash-named experiment means one thing whatever the history of commands that filled it: the
data's content is part of its identity, config.yaml is that identity, invocations.jsonl records
what each invocation asked for and added, and keys left out of the hash never change a finished
result (LMC points are re-measured from the saved copies, with their count recorded)."""

import io
import json
import os
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
from rich.console import Console

from conftest import compose_config
from lottery import analysis, imp
from lottery.results import identity, invocations
from lottery.imp import dense as dense_store
from lottery import data as datasets
from lottery.errors import LotteryError
from test_data import make_idx_dataset

QUIET = Console(file=io.StringIO())
FASHION = [
    "dataset=fashion_mnist",
    "dataset.download=false",
    "dataset.validation=10",
    "training.batch_size=10",
    "training.steps=8it",
    "training.eval_every=4it",
    "model.hidden=[16]",
    "levels=0",
]


def test_the_fingerprint_is_of_the_content_not_the_files(tmp_path):
    arrays = make_idx_dataset(tmp_path / "gz" / "fashion_mnist", compress=(True, True, True, True))
    make_idx_dataset(tmp_path / "raw" / "fashion_mnist", compress=(False, False, False, False))
    make_idx_dataset(tmp_path / "other" / "fashion_mnist", seed=1)
    load = lambda root: datasets.load(
        OmegaConf.create({"name": "fashion_mnist", "root": str(tmp_path / root), "download": False, "validation": 10})
    )
    gz, raw, other = load("gz"), load("raw"), load("other")
    assert gz.fingerprint == raw.fingerprint != other.fingerprint
    changed = [a.copy() for a in arrays]
    changed[2][0, 0, 0] ^= 1  # one bit of one test image
    assert datasets.fingerprint(*changed) != datasets.fingerprint(*arrays)
    assert datasets.fingerprint(*arrays) == datasets.fingerprint(*[a.copy() for a in arrays])  # a function of content


@pytest.mark.slow
def test_other_data_under_the_same_config_is_another_experiment(small_config, tmp_path):
    make_idx_dataset(tmp_path / "a" / "fashion_mnist")
    make_idx_dataset(tmp_path / "b" / "fashion_mnist", seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    at = lambda root: small_config(*FASHION, f"dataset.root={tmp_path / root}")
    a, b, copy = (imp.prepare(at(root)) for root in ("a", "b", "copy"))
    assert a.directory == copy.directory != b.directory  # where the files live is not the experiment
    results = imp.run(at("a"), console=QUIET)
    identity = OmegaConf.to_container(OmegaConf.load(os.path.join(a.directory, "config.yaml")))
    assert identity["dataset"]["fingerprint"] == a.data_fingerprint == results[0]["data_fingerprint"]
    assert identity["dataset"]["fingerprint"].startswith("sha256:") and "root" not in identity["dataset"]


@pytest.mark.slow
def test_config_yaml_is_the_identity_and_every_invocation_is_recorded(small_config):
    first = small_config("levels=0")
    imp.run(first, console=QUIET)
    more = small_config("levels=1", "replicates=2", "controls=[random_reinit]", "lmc.levels=[1]", "lmc.points=3")
    imp.run(more, console=QUIET)
    experiment = imp.prepare(more)
    saved = OmegaConf.to_container(OmegaConf.load(os.path.join(experiment.directory, "config.yaml")))
    assert saved == {"name": "quickstart", **identity.identity(more, experiment.data_fingerprint)}
    assert not {"levels", "replicates", "controls", "lmc"} & set(saved)  # never stale: not part of it
    entries = invocations.read(experiment.directory)
    assert [e["event"] for e in entries] == ["start", "end", "start", "end"]
    assert entries[0]["settings"]["levels"] == 0 and entries[2]["settings"]["replicates"] == 2
    assert entries[2]["settings"]["controls"] == ["random_reinit"] and entries[2]["settings"]["lmc"]["points"] == 3
    assert entries[0]["program"] == invocations.program(experiment.trainer.host_loop)
    dense = os.path.relpath(dense_store.Dense(experiment).directory, os.path.dirname(experiment.directory))
    assert entries[1]["added"] == [
        {"level": 0, "replicate": 0, "kind": "ticket", "dense": dense}
    ]  # from the shared level 0
    added = sorted((a["level"], a["replicate"], a["kind"]) for a in entries[3]["added"])
    assert added == [
        (0, 1, "ticket"),
        (1, 0, "lmc"),
        (1, 0, "random_reinit"),
        (1, 0, "ticket"),
        (1, 1, "lmc"),
        (1, 1, "random_reinit"),
        (1, 1, "ticket"),
    ]
    assert all(e["status"] == "finished" for e in entries if e["event"] == "end")


@pytest.mark.slow
def test_another_program_is_announced(small_config):
    cfg = small_config("levels=0")
    imp.run(cfg, console=QUIET)
    experiment = imp.prepare(cfg)
    with open(os.path.join(experiment.directory, invocations.INVOCATIONS), "a") as f:
        # One that added nothing (it failed at once), lines that are not records, a start without its program ...
        f.write(json.dumps({"event": "start", "program": {**invocations.program(False), "backend": "tpu"}}) + "\n")
        f.write(json.dumps({"event": "end", "status": "failed", "added": []}) + "\n")
        f.write("[1, 2]\n" + json.dumps({"event": "start"}) + "\n" + json.dumps({"event": "end", "added": []}) + "\n")
        # ... and one killed before its end line: it may have trained what is here.
        f.write(json.dumps({"event": "start", "program": {**invocations.program(False), "backend": "gpu"}}) + "\n")
    out = io.StringIO()
    imp.run(small_config("levels=1"), console=Console(file=out, width=400))
    assert "note: results in" in out.getvalue() and "backend gpu" in out.getvalue() and "tpu" not in out.getvalue()


@pytest.mark.slow
def test_other_lmc_points_are_measured_again_from_the_saved_copies(small_config):
    cfg = small_config("levels=1", "lmc.levels=[1]", "lmc.points=3")
    first = imp.run(cfg, console=QUIET)[1]["lmc"]
    experiment = imp.prepare(cfg)
    directory = os.path.join(experiment.level_dir(0, 1), "lmc")
    copies = {what: os.stat(os.path.join(directory, what)).st_mtime_ns for what in ("copy_a", "copy_b")}
    out = io.StringIO()
    second = imp.run(small_config("levels=1", "lmc.levels=[1]", "lmc.points=5"), console=Console(file=out, width=400))[
        1
    ]["lmc"]
    assert first["points"] == 3 and second["points"] == 5 and len(second["alphas"]) == 5
    assert {what: os.stat(os.path.join(directory, what)).st_mtime_ns for what in copies} == copies  # not retrained
    # The same two copies: the endpoints of both paths are the same networks.
    assert second["test_error"][0] == first["test_error"][0] and second["test_error"][-1] == first["test_error"][-1]
    assert "measured again at 5 points from its saved copies (was 3)" in out.getvalue()
    assert json.load(open(os.path.join(directory, "metrics.json")))["points"] == 5
    # A measurement from before the copies were kept cannot be re-measured: a clear error.
    shutil.rmtree(os.path.join(directory, "copy_a"))
    with pytest.raises(LotteryError, match=r"lmc was measured at 5 points and its copies were not kept.*lmc\.points=5"):
        imp.run(small_config("levels=1", "lmc.levels=[1]", "lmc.points=7"), console=QUIET)
    assert np.isclose(json.load(open(os.path.join(directory, "metrics.json")))["barrier"], second["barrier"])


@pytest.mark.slow
def test_checkpoint_every_does_not_change_a_bit(small_config, tmp_path):
    from test_controls import saved

    runs = {}
    # chunks cut every 7 steps (checkpoints written) vs. at evaluations only vs. a checkpoint at
    # every epoch's end (a duration shorter than any epoch: wherever the clock says)
    for every in ("7it", "10ep", "0.001s"):
        cfg = small_config("levels=1", f"checkpoint_every={every}", f"output_dir={tmp_path / every}")
        imp.run(cfg, console=QUIET)
        experiment = imp.prepare(cfg)
        runs[every] = [saved(experiment, experiment.level_dir(0, level)) for level in (0, 1)]
    assert runs["7it"] == runs["10ep"] == runs["0.001s"]


@pytest.mark.slow
def test_an_experiment_an_older_version_hashed_with_a_removed_key_is_named_not_silently_redone(small_config):
    import pandas as pd

    cfg = small_config("levels=0")
    experiment = imp.prepare(cfg)
    older = os.path.join(os.path.dirname(experiment.directory), "quickstart-0123456789")
    os.makedirs(os.path.join(older, "replicate_0"))
    saved = {
        "name": "quickstart",
        **identity.identity(cfg, experiment.data_fingerprint),
        "parallel": "vmap",
        "levels": 3,
    }  # `parallel` was hashed once; old files also held levels
    OmegaConf.save(OmegaConf.create(saved), os.path.join(older, "config.yaml"))
    out = io.StringIO()
    imp.run(cfg, console=Console(file=out, width=400))
    assert f"note: {older} holds this experiment as an older version of lottery hashed it" in out.getvalue()
    assert (
        identity.older_versions(experiment.directory, small_config("levels=0", "seed=1"), experiment.data_fingerprint)
        == []
    )
    # The results API does not show the removed key as something that tells experiments apart.
    shutil.copytree(experiment.level_dir(0, 0), os.path.join(older, "replicate_0", "level_0"))
    df = analysis.load_runs(os.path.dirname(experiment.directory))
    assert len(df) == 2 and "parallel" not in df.columns and isinstance(df, pd.DataFrame)


def test_set_and_rigl_have_a_new_identity_for_skipping_the_optimizer_step_and_the_rest_keep_theirs():
    """SET's and RigL's update iteration skips the optimizer step (Evci et al. 2020, Alg. 1; issue 35),
    which changes their bits: their hash is no longer the earlier rule's (the identity without
    ``sparsity.update_step``). Static, GMP and IMP hash as they did."""

    def old_rule(content):  # the identity as the earlier rule hashed it
        content = json.loads(json.dumps(content))
        content.get("sparsity", {}).pop("update_step", None)
        return content

    for method in ("set", "rigl", "static", "gmp", "imp"):
        cfg = compose_config([f"sparsity={method}"])
        content = identity.identity(cfg, "sha256:0")
        if method in ("set", "rigl"):
            assert content["sparsity"]["update_step"] == "skip"
            assert identity.experiment_hash(cfg, "sha256:0") != identity.digest(old_rule(content))
        else:
            assert "update_step" not in content.get("sparsity", {})
            assert identity.experiment_hash(cfg, "sha256:0") == identity.digest(old_rule(content))


@pytest.mark.slow
def test_experiments_are_named_by_what_they_are_with_the_hash_unchanged(tmp_path):
    from conftest import compose_config
    from lottery.results import paths

    def named(*overrides):
        cfg = compose_config([*overrides, f"output_dir={tmp_path}"])
        directory = os.path.basename(paths.experiment_directory(cfg, "fingerprint"))
        name, digest = directory.rsplit("-", 1)
        assert digest == identity.experiment_hash(cfg, "fingerprint")  # the name is never hashed
        return name

    assert named() == named("+exp=quickstart") == "quickstart"  # README's runs/quickstart-<hash>
    assert named("model=vit", "dataset=cifar10") == "vit-cifar10"
    assert named("sparsity.method=rigl") == "lenet-digits-rigl" and named("swamp.particles=2") == "lenet-digits-swamp"
    assert named("model=conv2", "dataset=cifar10", "pruning.structure=neurons") == "conv2-cifar10-neurons"
    assert named("pruning.prune_at=start", "pruning.criterion=snip") == "lenet-digits-snip_at_init"
    assert named("early_bird.enabled=true", "diet.score=el2n") == "lenet-digits-early_bird-diet"
    assert named("+exp=lenet_rigl") == "lenet_rigl" and named("name=mine", "model=vit") == "mine"  # set: kept
    # The quickstart's own directory, as the README and CI name it.
    cfg = compose_config([])
    assert paths.experiment_directory(cfg, datasets.load(cfg.dataset).fingerprint) == os.path.join(
        "runs", "quickstart-7c1c387142"
    )


@pytest.mark.slow
def test_an_experiment_under_its_old_name_is_found_not_trained_again(small_config):
    import glob

    cfg = small_config("levels=0", "pruning.structure=neurons")
    experiment = imp.prepare(cfg)
    assert os.path.basename(experiment.directory).startswith("lenet-digits-neurons-")
    imp.run(cfg, console=QUIET)
    # As an older version left it: the same hash under the default name, its config.yaml saying so.
    runs, digest = os.path.dirname(experiment.directory), experiment.directory.rsplit("-", 1)[1]
    old = os.path.join(runs, f"quickstart-{digest}")
    os.rename(experiment.directory, old)
    saved = OmegaConf.load(os.path.join(old, "config.yaml"))
    saved.name = "quickstart"
    OmegaConf.save(saved, os.path.join(old, "config.yaml"))
    assert imp.prepare(cfg).directory == old
    out = io.StringIO()
    imp.run(cfg, console=Console(file=out, width=400))
    notes = [line for line in out.getvalue().splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {old} holds this experiment under its old name (an older version named every experiment "
        "quickstart); it is used, not trained again, and a new one of this kind is named "
        "lenet-digits-neurons-<hash>"
    ]
    assert not os.path.exists(experiment.directory) and len(glob.glob(os.path.join(runs, f"*-{digest}"))) == 1
    with open(os.path.join(old, "invocations.jsonl")) as f:
        ends = [entry for entry in map(json.loads, f) if entry["event"] == "end"]
    assert len(ends) == 2 and ends[-1]["added"] == []  # found finished: nothing trained again
    assert OmegaConf.load(os.path.join(old, "config.yaml")).name == "quickstart"
    # Another experiment of the kind, with no old directory, is named by what it is.
    assert os.path.basename(
        imp.prepare(small_config("levels=0", "pruning.structure=neurons", "seed=3")).directory
    ).startswith("lenet-digits-neurons-")
