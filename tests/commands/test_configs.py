"""Every experiment composes and passes the checks that need no data; the schema catches typos."""

import pathlib

import jax
import pytest
from flax import nnx
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from conftest import CONF, compose_config
from lottery import data as datasets
from lottery import models
from lottery.pruning import masks as pruning
from lottery.training import trainer as training
from lottery.results.identity import experiment_hash

DATA = "sha256:" + "0" * 64  # a data fingerprint
from lottery.step import Step  # noqa: E402
from lottery.pruning import criteria, sparse  # noqa: E402

EXPERIMENTS = sorted(p.stem for p in (CONF / "exp").glob("*.yaml"))
INPUT_SHAPES = {
    "digits": (8, 8, 1),
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "cifar10_subset": (32, 32, 3),
    "cifar100": (32, 32, 3),
}
CLASSES = {"cifar100": 100}  # fine labels; every other data set has 10


def test_the_published_experiments_are_all_there():
    assert EXPERIMENTS == [
        "conv2",
        "conv4",
        "conv6",
        "lenet",
        "lenet_at_init",
        "lenet_gmp",
        "lenet_rigl",
        "lenet_set",
        "lenet_static",
        "lenet_transfer",
        "quickstart",
        "resnet",
        "resnet_at_init",
        "resnet_cifar100",
        "vgg",
        "vgg_at_init",
        "vgg_cifar100",
        "vit",
    ]


def test_the_transfer_experiment_trains_lenets_tickets_with_another_optimizer_and_length():
    from lottery import imp
    from lottery.imp import transfer

    cfg = compose_config(["+exp=lenet_transfer"])
    imp.check(cfg)
    source = transfer._compose([f"output_dir={cfg.output_dir}", *transfer.shlex.split(cfg.transfer.source)])
    assert source.name == "lenet" and source.optimizer.name == "adam" and source.training.steps == "5000it"
    assert cfg.optimizer.name == "sgd" and cfg.training.steps == "10000it" and cfg.transfer.weights == "ticket"
    for key in ("model", "dataset", "seed", "rewind"):  # the same network on the same data, from θ0
        assert cfg[key] == source[key], key
    assert set(cfg.controls) == {"random_prune", "random_reinit"} and cfg.levels <= 8


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_is_consistent(name):
    cfg = compose_config([f"+exp={name}"])
    assert cfg.name == name
    header = pathlib.Path(CONF / "exp" / f"{name}.yaml").read_text().splitlines()
    assert header[0] == "# @package _global_" and any(
        f"+exp={name}" in line or "lottery.run" in line for line in header
    )
    pruning.check(cfg.pruning)
    sparse.check(cfg)
    models.check(cfg.model)
    training.make_optimizer(cfg.optimizer)
    per_epoch = 100
    end = Step.parse(cfg.training.steps, per_epoch).iteration
    assert 0 <= Step.parse(cfg.rewind, per_epoch).iteration < end
    for milestone in cfg.training.milestones:
        assert 0 < Step.parse(milestone, per_epoch).iteration < end
    classes = CLASSES.get(cfg.dataset.name, 10)
    model = nnx.eval_shape(lambda: models.build(cfg.model, INPUT_SHAPES[cfg.dataset.name], classes, jax.random.key(0)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert pruning.prunable(params, cfg.pruning.ignore)  # ignore patterns match real parameters


def test_lenet_follows_frankle_and_carbin_exactly():
    cfg = compose_config(["+exp=lenet"])
    assert (cfg.model.name, list(cfg.model.hidden), cfg.model.init) == ("lenet", [300, 100], "glorot_normal")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("adam", 1.2e-3, 0.0)
    assert (cfg.training.steps, cfg.training.batch_size, cfg.training.eval_every) == ("50000it", 60, "100it")
    assert (cfg.pruning.strategy, cfg.pruning.rate, cfg.pruning.output_rate) == ("layerwise", 0.2, 0.1)
    assert (cfg.rewind, cfg.dataset.name, cfg.dataset.validation) == ("0it", "mnist", 5000)

    # The levels land on the paper's sizes (Sec. 2: 51.3%, 21.1%, 7.0%, 3.6%, 1.9%) and end below 2%.
    model = models.build(cfg.model, INPUT_SHAPES["mnist"], 10, jax.random.key(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    names, mask = pruning.prunable(params, cfg.pruning.ignore), pruning.full_mask(params)
    percent = {}
    for level in range(1, cfg.levels + 1):
        mask = criteria.prune(params, mask, cfg.pruning, names)
        percent[level] = round(100 * pruning.density(pruning.counts(mask, names)), 1)
    assert {level: percent[level] for level in (3, 7, 12, 15, 18)} == {3: 51.3, 7: 21.1, 12: 7.0, 15: 3.6, 18: 1.9}
    assert cfg.levels >= 20 and percent[cfg.levels] < 2.0


def test_resnet_and_vgg_follow_the_linear_mode_connectivity_recipe():
    resnet, vgg = compose_config(["+exp=resnet"]), compose_config(["+exp=vgg"])
    for cfg in (resnet, vgg):
        assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (
            "sgd",
            0.1,
            0.9,
            1e-4,
        )
        assert (cfg.training.steps, cfg.training.batch_size, list(cfg.training.milestones)) == (
            "160ep",
            128,
            ["80ep", "120ep"],
        )
        assert cfg.pruning.strategy == "global" and cfg.dataset.augment
    assert (resnet.rewind, vgg.rewind) == ("500it", "1000it")
    assert list(vgg.pruning.ignore) == ["output/kernel"] and vgg.model.depth == 16


@pytest.mark.parametrize("name", ["resnet", "vgg"])
def test_the_cifar100_recipes_are_the_cifar10_ones_on_cifar100(name):
    # Neither the LMC paper nor open_lth trains on CIFAR-100: its recipes are CIFAR-10's, on other data.
    cifar10, cifar100 = (OmegaConf.to_container(compose_config([f"+exp={exp}"])) for exp in (name, f"{name}_cifar100"))
    assert (cifar100["name"], cifar100["dataset"]["name"], cifar100["dataset"]["labels"]) == (
        f"{name}_cifar100",
        "cifar100",
        "fine",
    )
    for config in (cifar10, cifar100):
        del config["name"], config["dataset"]["name"]
    assert cifar100 == cifar10


@pytest.mark.parametrize(
    "group, key, names",
    [
        ("model", "model.name", models.names()),
        ("dataset", "dataset.name", datasets.names()),
        ("optimizer", "optimizer.name", sorted(training.OPTIMIZERS)),
        ("pruning", "pruning.strategy", sorted(pruning.STRATEGIES)),
        ("sparsity", "sparsity.method", sorted(sparse.METHODS)),
    ],
)
def test_config_groups_and_names_are_one_vocabulary(group, key, names):
    # `model=resnet` selects conf/model/resnet.yaml, whose model.name is resnet: every option of a
    # group is named as the code names it, and every name the code takes has its option.
    options = sorted(path.stem for path in (CONF / group).glob("*.yaml"))
    assert options == names
    for option in options:
        assert OmegaConf.select(compose_config([f"{group}={option}"]), key) == option


def test_no_experiment_means_quickstart_with_the_same_hash():
    default, explicit = compose_config([]), compose_config(["+exp=quickstart"])
    assert experiment_hash(default, DATA) == experiment_hash(explicit, DATA) and default.name == "quickstart"


@pytest.mark.slow
def test_hash_ignores_levels_and_locations_but_not_the_experiment():
    base = experiment_hash(compose_config([]), DATA)
    same = [
        "levels=9",
        "output_dir=/elsewhere",
        "progress=false",
        "replicates=3",
        "controls=[random_reinit]",
        "lmc.levels=[0]",
        "training.loop=host",
    ]
    assert experiment_hash(compose_config(same), DATA) == base  # more of the same experiment, or where it runs
    assert experiment_hash(compose_config(["dataset.root=/data"]), DATA) == base
    assert experiment_hash(compose_config(["dataset.subset=null"]), DATA) == base  # unset: as before the key existed
    assert experiment_hash(compose_config(["dataset.subset=1000"]), DATA) != base  # (its fingerprint differs too)
    assert experiment_hash(compose_config(["dataset.labels=fine"]), DATA) == base  # as before the key existed
    assert experiment_hash(compose_config(["dataset.labels=coarse"]), DATA) != base  # (and the labels read differ)
    assert experiment_hash(compose_config([]), "sha256:other") != base  # other data, another experiment
    assert experiment_hash(compose_config(["sparsity=imp", "sparsity.drop_fraction=0.5"]), DATA) == base  # IMP: unused
    rigl = experiment_hash(compose_config(["sparsity=rigl"]), DATA)
    assert experiment_hash(compose_config(["sparsity=rigl", "sparsity.levels=[2]"]), DATA) == rigl != base
    for change in (
        "seed=1",
        "pruning.rate=0.3",
        "rewind=1ep",
        "optimizer.lr=0.01",
        "model.hidden=[10]",
        "retrain=lr_rewind",
        "rewind_optimizer=true",
    ):
        assert experiment_hash(compose_config([change]), DATA) != base, change


def test_keys_added_since_leave_the_published_experiments_hashes_as_they_were():
    # Computed before dataset.subset existed: an added key at its default names the same experiments.
    pinned = {"quickstart": "e7a0fef00f", "lenet": "60b009c1ad", "conv2": "77d7c81375", "resnet": "b47c01efbb"}
    assert {name: experiment_hash(compose_config([f"+exp={name}"]), DATA) for name in pinned} == pinned


@pytest.mark.parametrize(
    "override, error",
    [
        ("pruning.rat=0.5", ConfigCompositionException),
        ("training.batch_size=big", ConfigCompositionException),
        ("model=nonexistent", MissingConfigException),
    ],
)
def test_schema_rejects_unknown_keys_and_wrong_types(override, error):
    with pytest.raises(error):
        compose_config([override])


def test_schema_errors_carry_the_key():
    with pytest.raises(ConfigCompositionException) as caught:
        compose_config(["optimizer.momentun=0.9"])
    assert isinstance(caught.value.__cause__, OmegaConfBaseException)
    assert "Key 'momentun' not in 'OptimizerConfig'" in str(caught.value.__cause__)


@pytest.mark.parametrize("base", ["lenet", "resnet", "vgg"])
def test_pruning_at_initialization_experiments_train_as_their_base(base):
    at_init, imp_run = compose_config([f"+exp={base}_at_init"]), compose_config([f"+exp={base}"])
    for key in ("model", "dataset", "optimizer", "training", "seed", "levels"):
        assert at_init[key] == imp_run[key], key  # the same network, data and training as IMP's
    assert (at_init.pruning.prune_at, at_init.pruning.strategy, at_init.pruning.rate, at_init.rewind) == (
        "start",
        "global",
        imp_run.pruning.rate,
        "0it",
    )
    assert set(at_init.controls) == {"shuffle_layer", "random_reinit", "invert"}


@pytest.mark.slow
def test_the_frankle_2021_script_runs_six_experiments_whose_configs_pass_the_checks(tmp_path):
    """experiments/frankle_2021/reproduce.sh, with a `python` that only records its arguments: every
    run it starts composes and passes the checks (training it is the recorded result's 40 minutes)."""
    import os
    import subprocess

    from lottery import imp

    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$CALLS"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim.parent}:{os.environ['PATH']}",
        "CALLS": str(tmp_path / "calls"),
        "RESULTS": str(tmp_path),
    }
    script = CONF.parent / "experiments" / "frankle_2021" / "reproduce.sh"
    subprocess.run(["bash", str(script), str(tmp_path / "runs"), "training.steps=200it"], env=env, check=True)
    calls = [line.split() for line in (tmp_path / "calls").read_text().splitlines()]
    assert [c[:2] for c in calls] == [["-m", "lottery.run"]] * 6 + [["-m", "lottery.report"]]
    configs = [compose_config(c[2:]) for c in calls[:6]]
    for cfg in configs:
        imp.check(cfg)
        assert (cfg.replicates, cfg.training.steps, cfg.pruning.strategy) == (3, "200it", "global")
    assert [(c.pruning.prune_at, c.pruning.criterion, c.pruning.rounds) for c in configs] == [
        ("trained", "magnitude", 1),
        ("start", "magnitude", 1),
        ("start", "random", 1),
        ("start", "snip", 1),
        ("start", "grasp", 1),
        ("start", "synflow", 100),
    ]
    assert calls[-1][2:] == [str(tmp_path / "runs"), "--csv", str(tmp_path / "levels.csv"), "--output", str(tmp_path)]
