"""Architectures and initializations as the papers give them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf

from lottery import models
from lottery.pruning import masks as pruning
from lottery.config import ModelConfig
from lottery.models import conv, vgg


def build(shape=(32, 32, 3), abstract=True, **kwargs):
    cfg = OmegaConf.structured(ModelConfig(**kwargs))
    make = lambda: models.build(cfg, shape, 10, jax.random.key(0))
    return nnx.eval_shape(make) if abstract else make()


def parameter_count(model):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def conv_plan_count(plan, channels, fc, with_bn, side=32):
    """Parameters of a plan of 3x3 convs (with bias) and 'M' pools, then fc layers and the output."""
    total = 0
    for entry in plan:
        if entry == "M":
            side //= 2
            continue
        total += 9 * channels * entry + entry + (2 * entry if with_bn else 0)
        channels = entry
    widths = [side * side * channels if fc else channels, *fc, 10]
    return total + sum(a * b + b for a, b in zip(widths, widths[1:]))


def test_parameter_counts_match_the_papers():
    assert parameter_count(build((28, 28, 1), name="lenet")) == 266_200 + 410  # LeNet-300-100
    assert parameter_count(build(name="resnet", depth=20, width=16, init="kaiming_normal")) == 272_474
    for name in ("conv2", "conv4", "conv6"):
        assert parameter_count(build(name=name)) == conv_plan_count(conv.PLANS[name], 3, conv.FC_WIDTHS, False)
    assert parameter_count(build(name="conv2")) == 4_301_642  # "4.3M" in F&C 2019, Fig. 2
    for depth, plan in vgg.PLANS.items():
        assert parameter_count(build(name="vgg", depth=depth)) == conv_plan_count(plan, 3, (), True)


def test_resnet_depth_gives_6n_plus_2_layers_with_projection_shortcuts():
    model = build(name="resnet", depth=56, width=16)
    names = pruning.prunable(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    convs = [n for n in names if "shortcut" not in n and n != "output/kernel"]
    assert len(convs) + 1 == 56 and sum("shortcut" in n for n in names) == 2


def test_initializations_have_the_papers_scales():
    lenet = build((28, 28, 1), abstract=False, name="lenet", init="glorot_normal")
    w = np.asarray(lenet.hidden[0].kernel[...])
    assert w.std() == pytest.approx(np.sqrt(2 / (784 + 300)), rel=0.02)
    assert np.abs(w).max() > 2.5 * w.std()  # untruncated normal, as torch's xavier_normal_
    assert np.all(np.asarray(lenet.hidden[0].bias[...]) == 0)
    resnet = build(abstract=False, name="resnet", depth=8, width=16, init="kaiming_normal")
    w = np.asarray(resnet.blocks[2].conv2.kernel[...])
    assert w.std() == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.03)
    scale = np.asarray(resnet.bn.scale[...])
    assert scale.min() >= 0 and scale.max() < 1 and scale.std() > 0.1  # U[0, 1), open_lth


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs", [dict(name="resnet", depth=8, width=4), dict(name="vgg", depth=11), dict(name="conv2")]
)
def test_forward_shapes_and_batch_norm_statistics_update_only_in_training(kwargs):
    model = build(abstract=False, **kwargs)
    x = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
    assert model(x, train=False).shape == (3, 10)
    after_eval = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after_eval)))
    assert jnp.all(jnp.isfinite(model(x, train=True)))
    after_train = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after_train))]
    assert all(changed) if changed else kwargs["name"] == "conv2"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="resnet", depth=21), r"model\.depth=21 is not a CIFAR ResNet depth"),
        (dict(name="vgg", depth=12), r"model\.depth=12 is not a VGG depth; choose one of: 11, 13, 16, 19"),
        (dict(name="lenet", init="orthogonal"), r"model\.init='orthogonal' is not an initializer"),
    ],
)
def test_bad_model_configs_are_named(kwargs, message):
    with pytest.raises(Exception, match=message):
        models.check(OmegaConf.structured(ModelConfig(**kwargs)))
