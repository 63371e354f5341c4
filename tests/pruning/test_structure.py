"""Structured tickets (config ``pruning.structure``; lottery/pruning/structure.py): exact unit and
N:M counts, nested masks, pruned units cut both ways, the structured controls, and the compact
export's logits against a NumPy forward pass of the smaller network."""

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from conftest import compose_config
from lottery import export, models
from lottery.imp import levels
from lottery.imp.experiment import prepare
from lottery.pruning import masks, structure


def _setup(*overrides, shape=(8, 8, 1)):
    cfg = compose_config(["model.hidden=[64,32]", *overrides])
    model = nnx.eval_shape(lambda: models.build(cfg.model, shape, 10, jax.random.key(0)))  # shapes suffice
    rng = np.random.default_rng(7)
    params = jax.tree.map(
        lambda a: rng.standard_normal(a.shape).astype(np.float32), nnx.to_pure_dict(nnx.state(model, nnx.Param))
    )
    names = masks.prunable(params, cfg.pruning.ignore)
    shapes = {n: np.shape(a) for n, a in masks.flatten(params).items()}
    return cfg, params, structure.Structure(cfg.pruning, names, models.units(cfg.model, shapes))


def _random_scores(params, rng):
    return masks.unflatten(params, {n: rng.random(np.shape(a)) for n, a in masks.flatten(params).items()})


def test_neurons_follow_the_counting_rule_nest_and_are_cut_from_both_sides():
    cfg, params, found = _setup("pruning.structure=neurons")
    assert [u.producers for u in found.layers] == [("hidden/0/kernel",), ("hidden/1/kernel",)]
    rng = np.random.default_rng(0)
    mask = masks.full_mask(params)
    for level in range(1, 5):
        new = found.prune(_random_scores(params, rng), mask, level)
        flat, old = masks.flatten(new), masks.flatten(mask)
        for name in flat:
            assert not np.any(flat[name] & ~old[name])  # nested
        for layer, count in zip(found.layers, (64, 32)):
            alive = found.alive(flat, layer)
            assert (
                alive.sum()
                == {1: {64: 51, 32: 26}, 2: {64: 41, 32: 21}, 3: {64: 33, 32: 17}, 4: {64: 26, 32: 14}}[level][count]
            )  # round(0.2 x remaining), halves up, per level
            producer, consumer = flat[layer.producers[0]], flat[layer.consumers[0]]
            assert not producer[:, ~alive].any() and not consumer[~alive, :].any()  # in and out cut
        mask = new
    # alive units keep every incoming weight from alive inputs: nothing but whole units goes
    flat = masks.flatten(mask)
    inputs = found.alive(flat, found.layers[0])
    assert flat["hidden/1/kernel"][np.ix_(inputs, found.alive(flat, found.layers[1]))].all()


def test_units_are_ranked_by_the_l1_norm_of_their_incoming_weights():
    cfg, params, found = _setup("pruning.structure=neurons", "pruning.rate=0.25")
    scores = jax.tree.map(np.abs, params)  # magnitude
    flat = masks.flatten(found.prune(scores, masks.full_mask(params), 1))
    kernel = np.asarray(masks.flatten(params)["hidden/0/kernel"])
    expected = np.sort(np.argsort(-np.abs(kernel).sum(axis=0), kind="stable")[:48])  # keep 64 - 16
    np.testing.assert_array_equal(np.flatnonzero(found.alive(flat, found.layers[0])), expected)


def test_a_pruned_conv_channel_takes_its_rows_of_the_flattened_fc_layer():
    cfg, params, found = _setup("model=conv2", "pruning.structure=channels", "pruning.rate=0.5", shape=(32, 32, 3))
    assert [u.kind for u in found.layers] == ["channels", "channels", "neurons", "neurons"]
    flat = masks.flatten(found.prune(_random_scores(params, np.random.default_rng(1)), masks.full_mask(params), 1))
    alive = found.alive(flat, found.layers[1])  # convs/1: 64 channels, flattened after a 2x2 pool: 16 x 16 x 64
    assert alive.sum() == 32
    fc = flat["fc/0/kernel"]
    for channel in np.flatnonzero(~alive):
        rows = np.arange(16 * 16) * 64 + channel  # (H, W, C) order: position p's copy of the channel
        assert not fc[rows].any()
    assert fc[np.arange(16 * 16)[:, None] * 64 + np.flatnonzero(alive)[None, :]].any(axis=-1).all()


def test_resnet_units_are_the_first_conv_of_each_block_only():
    cfg, params, found = _setup("model=resnet", "model.depth=8", "pruning.structure=channels", shape=(32, 32, 3))
    assert [u.producers[0] for u in found.layers] == [f"blocks/{b}/conv1/kernel" for b in range(3)]
    assert all(u.consumers == (u.producers[0].replace("conv1", "conv2"),) for u in found.layers)


def test_n_of_m_holds_exactly_n_in_every_block_and_its_controls_keep_it():
    assert structure.n_schedule(2, 4, 0.2, 5) == [3, 2]
    assert structure.n_schedule(2, 4, 0.5, 5) == [2]  # one shot, as NVIDIA's ASP
    assert structure.n_schedule(1, 8, 0.25, 9) == [6, 4, 3, 2, 1]
    cfg, params, found = _setup("pruning.structure=2:4")
    rng = np.random.default_rng(2)
    mask = masks.full_mask(params)
    for level, n in ((1, 3), (2, 2)):
        scores = _random_scores(params, rng)
        new = found.prune(scores, mask, level)
        flat = masks.flatten(new)
        for name in found.n_m_kernels(flat):
            blocks = flat[name].reshape(flat[name].shape[0] // 4, 4, -1)  # M consecutive inputs per output
            assert (blocks.sum(axis=1) == n).all()
            assert not np.any(flat[name] & ~masks.flatten(mask)[name])
            kept_scores = np.where(blocks, np.asarray(masks.flatten(scores)[name]).reshape(blocks.shape), np.inf)
            dropped = np.where(
                ~blocks & masks.flatten(mask)[name].reshape(blocks.shape),
                np.asarray(masks.flatten(scores)[name]).reshape(blocks.shape),
                -np.inf,
            )
            assert (kept_scores.min(axis=1) >= dropped.max(axis=1)).all()  # the highest-scored survivors stay
        random = masks.flatten(found.random(new, rng))
        inverted = masks.flatten(found.inverted(scores, mask, new))
        for name in found.n_m_kernels(flat):
            for other in (random, inverted):
                assert (other[name].reshape(-1, 4, flat[name].shape[-1]).sum(axis=1) == n).all()
        mask = new


def test_structured_controls_keep_each_layers_unit_count():
    cfg, params, found = _setup("pruning.structure=neurons", "pruning.rate=0.5")
    scores = _random_scores(params, np.random.default_rng(3))
    ticket = found.prune(scores, masks.full_mask(params), 1)
    flat = masks.flatten(ticket)
    for other in (
        found.random(ticket, np.random.default_rng(4)),
        found.inverted(scores, masks.full_mask(params), ticket),
    ):
        other = masks.flatten(other)
        for layer in found.layers:
            assert found.alive(other, layer).sum() == found.alive(flat, layer).sum()
            assert not other[layer.consumers[0]][~found.alive(other, layer)].any()
    inverted = masks.flatten(found.inverted(scores, masks.full_mask(params), ticket))
    unit = found.unit_scores(masks.flatten(scores), found.layers[0])
    assert unit[found.alive(inverted, found.layers[0])].max() <= unit[found.alive(flat, found.layers[0])].min()


def _numpy_forward(params, x):
    """The compact Conv-2, in NumPy: 3x3 'same' convs with ReLU, a 2x2 max-pool, fc layers with ReLU."""
    for i in range(2):
        kernel, bias = params[f"convs.{i}.kernel"], params[f"convs.{i}.bias"]
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        h, w = x.shape[1:3]
        x = sum(padded[:, dy : dy + h, dx : dx + w] @ kernel[dy, dx] for dy in range(3) for dx in range(3)) + bias
        x = np.maximum(x, 0)
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    hidden = [params[f"fc.{i}.kernel"] for i in range(2)]
    biases = [params[f"fc.{i}.bias"] for i in range(2)]
    x = x.reshape(x.shape[0], -1)
    for kernel, bias in zip(hidden, biases):
        x = np.maximum(x @ kernel + bias, 0)
    return x @ params["output.kernel"] + params["output.bias"]


@pytest.mark.slow
def test_the_compact_export_is_smaller_and_computes_the_masked_networks_logits(tmp_path, capfd):
    """Conv-2 with pruned channels (through the flatten into fc/0) and fc neurons, compacted."""
    overrides = [
        "training.steps=1ep",
        "training.eval_every=20it",
        "levels=1",
        "progress=false",
        "model=conv2",
        "pruning.structure=channels",
        "pruning.rate=0.5",
        "controls=[random_prune]",
        f"output_dir={tmp_path}",
    ]
    cfg = compose_config(overrides)
    levels.run(cfg)
    experiment = prepare(cfg)
    level_dir = experiment.level_dir(0, 1)
    with open(os.path.join(level_dir, "metrics.json")) as f:
        record = json.load(f)["structure"]
    assert [u["remaining"] for u in record["units"].values()] == [u["total"] // 2 for u in record["units"].values()]
    assert (
        "layer collapse" not in capfd.readouterr().err
    )  # half the units pruned whole is the structure, not a collapse
    summary = export.export(level_dir, str(tmp_path / "compact.safetensors"), compact=True)
    compact = safetensors.numpy.load_file(summary["path"])
    trained = {k[len("trained.params.") :]: v for k, v in compact.items() if k.startswith("trained.params.")}
    full = export.load(level_dir)["trained"]["params"]
    assert sum(a.size for a in trained.values()) < sum(a.size for a in full.values())
    assert trained["convs.0.kernel"].shape[-1] == experiment.trainer.init_params["convs"][0]["kernel"].shape[-1] // 2
    x = np.asarray(experiment.trainer.inputs(experiment.trainer.eval_host["test"][0][0][:50]))
    saved = experiment.load(level_dir, "trained")
    logits, _ = experiment.trainer.apply(saved["params"], saved["batch_stats"], x, train=False)
    np.testing.assert_allclose(_numpy_forward(trained, x.astype(np.float64)), np.asarray(logits), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["pruning.structure=rows"],
            "pruning.structure='rows' is not a structure; choose one of: weights, neurons, channels, heads, or N:M",
        ),
        (["pruning.structure=4:2"], "pruning.structure=4:2: N:M needs 0 < N < M, e.g. 2:4"),
        (
            ["pruning.structure=2:4", "levels=3"],
            "levels=3: pruning.structure=2:4 is reached at level 2 (pruning.rate=0.2); use levels=2",
        ),
        (
            ["pruning.structure=neurons", "pruning.prune_at=start"],
            "pruning.structure=neurons: pruning before training "
            "(pruning.prune_at=start) makes this experiment's tickets and does not use it; leave pruning.structure at "
            "weights",
        ),
        (
            ["pruning.structure=channels", "sparsity=rigl"],
            "pruning.structure=channels: sparse training from scratch "
            "(sparsity.method=rigl) makes this experiment's tickets and does not use it; leave pruning.structure at "
            "weights",
        ),
    ],
)
def test_structures_that_cannot_run_are_one_line(overrides, message):
    from lottery.errors import LotteryError
    from lottery.imp.experiment import check

    with pytest.raises(LotteryError) as error:
        check(compose_config(overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_model_without_the_units_asked_for_is_one_line():
    from lottery.errors import LotteryError

    with pytest.raises(LotteryError, match="pruning.structure=heads: this model has no heads to prune"):
        _setup("pruning.structure=heads")
    cfg = compose_config(["model.hidden=[64,32]", "pruning.structure=1:9"])  # 64, 64 and 32 inputs: none in 9s
    shapes = {"hidden/0/kernel": (64, 64), "hidden/1/kernel": (64, 32), "output/kernel": (32, 10)}
    with pytest.raises(LotteryError, match="no prunable kernel's input size is a multiple of 9"):
        structure.Structure(cfg.pruning, list(shapes), [], shapes)


def test_heads_are_cut_whole_and_the_compact_vit_computes_the_same_logits():
    from test_vit import numpy_vit

    cfg, params, found = _setup(
        "model=vit",
        "model.dim=16",
        "model.depth=2",
        "model.heads=4",
        "model.mlp_dim=32",
        "model.patch=4",
        "pruning.structure=heads",
        "pruning.rate=0.5",
        shape=(16, 16, 3),
    )
    assert [u.kind for u in found.layers] == ["heads", "heads"] and found.layers[0].width == 4
    mask = found.prune(_random_scores(params, np.random.default_rng(5)), masks.full_mask(params), 1)
    flat = masks.flatten(mask)
    for layer in found.layers:
        alive = found.alive(flat, layer)
        assert alive.sum() == 2
        for h in np.flatnonzero(~alive):
            columns = slice(4 * h, 4 * h + 4)
            assert not any(flat[p][:, columns].any() for p in layer.producers)
            assert not flat[layer.consumers[0]][columns, :].any()
        assert all(flat[p][:, np.repeat(alive, 4)].all() for p in layer.producers)
    weights = {n: np.where(flat[n], a, 0) if n in flat else a for n, a in masks.flatten(params).items()}
    _, trees, kept = structure.compact(flat, {"params": weights}, found.layers)
    compact = trees["params"]
    assert compact["blocks/0/attention/query/kernel"].shape == (16, 8)
    images = np.random.default_rng(6).standard_normal((3, 16, 16, 3))
    np.testing.assert_allclose(
        numpy_vit(compact, images, patch=4, head_dim=4),
        numpy_vit(weights, images, patch=4, head_dim=4),
        rtol=1e-6,
        atol=1e-6,
    )
