"""The models and data are what the recipes cite, checked against computations written here from the sources.

Sources: open_lth at commit 2ce732f (facebookresearch/open_lth: models/cifar_resnet.py,
models/cifar_vgg.py, models/mnist_lenet.py, models/initializers.py, models/bn_initializers.py,
datasets/cifar10.py) and torch's documented defaults (nn.Conv2d / nn.Linear bias
U(-1/sqrt(fan_in), 1/sqrt(fan_in)); nn.BatchNorm2d momentum 0.1, eps 1e-5, running variance
updated with the unbiased batch variance); Frankle & Carbin 2019, Fig. 2, for LeNet-300-100 and
Conv-2/4/6. The reference forward passes below are plain numpy, written from those sources'
layer lists (torch semantics: cross-correlation, symmetric zero padding, floor output sizes), and
share nothing with the models but their weights.
"""

import functools

import jax
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf

from lottery import data as datasets
from lottery import models
from lottery.pruning import masks as pruning
from lottery.config import ModelConfig
from lottery.models import conv, layers, vgg
from test_data import dataset_config, small_cifar  # noqa: F401 (fixture)

TORCH_BN_EPS = 1e-5


@functools.lru_cache(maxsize=None)
def build(shape=(32, 32, 3), **kwargs):
    """Each model is built once for the whole module (building is most of these tests' time); a test
    that changes one works on ``nnx.clone`` of it."""
    cfg = OmegaConf.structured(ModelConfig(**kwargs))
    return models.build(cfg, shape, 10, jax.random.key(0))


def abstract(shape=(32, 32, 3), **kwargs):
    cfg = OmegaConf.structured(ModelConfig(**kwargs))
    return nnx.eval_shape(lambda: models.build(cfg, shape, 10, jax.random.key(0)))


RESNET20 = dict(name="resnet", depth=20, width=16, init="kaiming_normal")
VGG16 = dict(name="vgg", depth=16, init="kaiming_normal")
CONV2 = dict(name="conv2", init="glorot_normal")
LENET = dict(shape=(28, 28, 1), name="lenet", init="glorot_normal")


def value(variable):
    return np.asarray(variable[...], np.float64)


# --- numpy reference layers (NHWC images, HWIO kernels) ------------------------------------------


def np_conv(x, kernel, bias=None, stride=1, pad=0):
    """torch.nn.functional.conv2d: output (i, j) = sum over taps (a, b) of padded x[s*i + a, s*j + b]."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, kernel.shape[3]))
    for a in range(kh):
        for b in range(kw):
            out += x[:, a : a + stride * (oh - 1) + 1 : stride, b : b + stride * (ow - 1) + 1 : stride] @ kernel[a, b]
    return out if bias is None else out + bias


def np_bn_eval(x, bn):
    """torch BatchNorm2d in eval mode, from its running statistics."""
    return (x - value(bn.mean)) / np.sqrt(value(bn.var) + TORCH_BN_EPS) * value(bn.scale) + value(bn.bias)


def np_pool(x, reduce):
    """2x2 window, stride 2, floor (torch MaxPool2d(2, 2) / AvgPool2d(2))."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    return reduce(x, axis=(2, 4))


relu = lambda x: np.maximum(x, 0)


def randomize_batch_norms(model, seed=0):
    """Running statistics and BN parameters away from their initial values, so eval mode shows."""
    rng = np.random.default_rng(seed)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.BatchNorm):
            c = module.mean[...].shape
            module.mean[...] = rng.normal(0, 0.5, c).astype(np.float32)
            module.var[...] = rng.uniform(0.5, 2.0, c).astype(np.float32)
            module.bias[...] = rng.normal(0, 0.5, c).astype(np.float32)


# --- data ------------------------------------------------------------------------------------------


def test_cifar10_is_normalized_with_open_lths_imagenet_constants(small_cifar):  # noqa: F811
    # open_lth datasets/cifar10.py: Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), the
    # ImageNet channel statistics as torchvision publishes them; pixels first scaled by 1/255 (ToTensor).
    root, _, _ = small_cifar
    data = datasets.load(dataset_config("cifar10", root, validation=4))
    assert data.scale == 255.0
    assert tuple(data.mean) == (0.485, 0.456, 0.406)
    assert tuple(data.std) == (0.229, 0.224, 0.225)


# --- ResNet (open_lth models/cifar_resnet.py) ------------------------------------------------------


def test_resnet_stride_2_convolution_pads_one_pixel_on_each_side_as_torch():
    block = build(**RESNET20).blocks[3]  # first block of stage 2: conv1 3x3 stride 2, shortcut 1x1 stride 2
    k = value(block.conv1.kernel)
    # An impulse at pixel (0, 0): with padding 1 the 3x3 window of output (0, 0) covers input rows and
    # columns -1..1, so the impulse meets the kernel's centre tap. Padding (0, 1) ("SAME" at stride 2)
    # would put it under the top-left tap instead.
    impulse = np.zeros((1, 8, 8, 16), np.float32)
    impulse[0, 0, 0, 0] = 1.0
    out = np.asarray(block.conv1(impulse))
    assert out.shape == (1, 4, 4, 32)
    np.testing.assert_allclose(out[0, 0, 0], k[1, 1, 0], rtol=1e-6)
    assert not np.any(out[0, 1:]) and not np.any(out[0, :, 1:])
    # An impulse at (1, 1) is seen by outputs (0..1, 0..1) through taps (2 - 2i, 2 - 2j).
    impulse = np.zeros((1, 8, 8, 16), np.float32)
    impulse[0, 1, 1, 0] = 1.0
    out = np.asarray(block.conv1(impulse))
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(out[0, i, j], k[2 - 2 * i, 2 - 2 * j, 0], rtol=1e-6)
    # And on a random image, against the explicitly padded convolution (numpy and XLA's own).
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(block.conv1(x), np_conv(x, k, stride=2, pad=1), rtol=1e-4, atol=1e-5)
    lax = jax.lax.conv_general_dilated(
        x, k.astype(np.float32), (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(block.conv1(x), lax, rtol=1e-5, atol=1e-6)


def test_resnet_projection_shortcut_reads_the_even_pixels_without_padding():
    block = build(**RESNET20).blocks[3]
    w = value(block.shortcut_conv.kernel)[0, 0]
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 16)).astype(np.float32)
    # torch nn.Conv2d(f_in, f_out, kernel_size=1, stride=2): output (i, j) = x[2i, 2j] @ W.
    np.testing.assert_allclose(block.shortcut_conv(x), x[:, ::2, ::2] @ w, rtol=1e-4, atol=1e-5)


def resnet_reference(model, x, width, n):
    """open_lth cifar_resnet.Model.forward, plan [(W, n), (2W, n), (4W, n)], BN in eval mode."""
    out = relu(np_bn_eval(np_conv(x, value(model.conv.kernel), pad=1), model.bn))
    blocks, f_in = iter(model.blocks), width
    for segment, filters in enumerate((width, 2 * width, 4 * width)):
        for index in range(n):
            block, downsample = next(blocks), segment > 0 and index == 0
            stride = 2 if downsample else 1
            y = relu(np_bn_eval(np_conv(out, value(block.conv1.kernel), stride=stride, pad=1), block.bn1))
            y = np_bn_eval(np_conv(y, value(block.conv2.kernel), pad=1), block.bn2)
            if downsample or f_in != filters:
                shortcut = np_bn_eval(np_conv(out, value(block.shortcut_conv.kernel), stride=2), block.shortcut_bn)
            else:
                shortcut = out
            out, f_in = relu(y + shortcut), filters
    pooled = out.mean(axis=(1, 2))  # F.avg_pool2d(out, out.size()[3]) on a square map
    return pooled @ value(model.output.kernel) + value(model.output.bias)


def test_resnet20_forward_equals_open_lths_layer_list_in_numpy():
    model = nnx.clone(build(**RESNET20))
    randomize_batch_norms(model)
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x, train=False), resnet_reference(model, x, 16, 3), rtol=2e-4, atol=2e-4)


# --- VGG (open_lth models/cifar_vgg.py) ------------------------------------------------------------


def vgg_reference(model, x, plan):
    """open_lth cifar_vgg.Model.forward: ConvModule = conv 3x3 pad 1 (bias) - BN - ReLU; 'M' = MaxPool2d(2, 2);
    then AvgPool2d(2), flatten, fc 512 -> 10."""
    convs = iter(zip(model.convs, model.norms))
    for spec in plan:
        if spec == "M":
            x = np_pool(x, np.max)
        else:
            c, bn = next(convs)
            x = relu(np_bn_eval(np_conv(x, value(c.kernel), value(c.bias), pad=1), bn))
    x = np_pool(x, np.mean).reshape(len(x), -1)
    return x @ value(model.output.kernel) + value(model.output.bias)


@pytest.mark.slow
def test_vgg16_forward_equals_open_lths_layer_list_in_numpy():
    # open_lth's plan for cifar_vgg_16, copied from the source, not from lottery.models.vgg.
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    assert vgg.PLANS[16] == plan
    model = nnx.clone(build(**VGG16))
    randomize_batch_norms(model)
    x = np.random.default_rng(3).normal(size=(1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x, train=False), vgg_reference(model, x, plan), rtol=2e-4, atol=2e-4)


# --- Conv-2/4/6 and LeNet (Frankle & Carbin 2019, Fig. 2) ------------------------------------------


def test_conv2_forward_is_padded_3x3_convs_then_max_pool_then_fc_in_numpy():
    model = build(**CONV2)
    x = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype(np.float32)
    y = x
    for c in model.convs:
        y = relu(np_conv(y, value(c.kernel), value(c.bias), pad=1))
    y = np_pool(y, np.max).reshape(len(x), -1)  # (H, W, C) order, as Keras's Flatten
    for layer in model.fc:
        y = relu(y @ value(layer.kernel) + value(layer.bias))
    y = y @ value(model.output.kernel) + value(model.output.bias)
    np.testing.assert_allclose(model(x), y, rtol=2e-4, atol=2e-4)


def conv_weights(plan, padded, side=32, channels=3):
    """Weights (no biases) of F&C's Conv-N: 3x3 convs, 2x2 pools, then fc 256, 256, 10."""
    total = 0
    for spec in plan:
        if spec == "M":
            side //= 2
        else:
            total += 9 * channels * spec
            channels, side = spec, side if padded else side - 2
    widths = [side * side * channels, 256, 256, 10]
    return total + sum(a * b for a, b in zip(widths, widths[1:]))


def test_conv_nets_weight_counts_imply_padded_convolutions():
    plans = {"conv2": [64, 64, "M"], "conv4": [64, 64, "M", 128, 128, "M"]}
    # F&C 2019, Fig. 2: Conv-2 4.3M weights, Conv-4 2.4M. Padded convolutions give them; unpadded do not.
    assert round(conv_weights(plans["conv2"], True) / 1e6, 1) == 4.3
    assert round(conv_weights(plans["conv4"], True) / 1e6, 1) == 2.4
    assert round(conv_weights(plans["conv2"], False) / 1e6, 1) == 3.3
    assert round(conv_weights(plans["conv4"], False) / 1e6, 1) == 1.1
    # Conv-6 padded has 2.26M weights, not the paper's 1.7M (unexplained; see lottery/models/conv.py).
    plans["conv6"] = [64, 64, "M", 128, 128, "M", 256, 256, "M"]
    assert conv_weights(plans["conv6"], True) == 2_261_184
    for name, plan in plans.items():
        model = abstract(name=name)
        kernels = sum(np.prod(layer.kernel.shape) for layer in [*model.convs, *model.fc, model.output])
        assert conv.PLANS[name] == plan and kernels == conv_weights(plan, True)


def test_lenet_forward_is_fc_relu_fc_relu_fc_in_numpy():
    model = build(**LENET)
    x = np.random.default_rng(5).normal(size=(2, 28, 28, 1)).astype(np.float32)
    y = x.reshape(2, -1)
    for layer in model.hidden:
        y = relu(y @ value(layer.kernel) + value(layer.bias))
    y = y @ value(model.output.kernel) + value(model.output.bias)
    np.testing.assert_allclose(model(x), y, rtol=1e-4, atol=1e-5)


# --- parameter counts, by hand from the sources' layer lists ---------------------------------------


def parameter_count(model):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_parameter_counts_equal_open_lths_models():
    # cifar_resnet_20 (W=16, D=3): conv 3->16 (no bias) + BN(16); per block two 3x3 convs without bias
    # and two BNs (weight + bias); 1x1 shortcut conv + BN in the first block of stages 2 and 3; fc 64->10.
    bn = lambda c: 2 * c
    stem = 3 * 16 * 9 + bn(16)
    stage1 = 3 * (2 * 16 * 16 * 9 + 2 * bn(16))
    stage2 = (16 * 32 * 9 + 32 * 32 * 9 + 2 * bn(32) + 16 * 32 + bn(32)) + 2 * (2 * 32 * 32 * 9 + 2 * bn(32))
    stage3 = (32 * 64 * 9 + 64 * 64 * 9 + 2 * bn(64) + 32 * 64 + bn(64)) + 2 * (2 * 64 * 64 * 9 + 2 * bn(64))
    resnet20 = stem + stage1 + stage2 + stage3 + 64 * 10 + 10
    assert resnet20 == 272_474
    assert parameter_count(abstract(name="resnet", depth=20, width=16)) == resnet20
    # cifar_vgg_16: thirteen 3x3 convs with bias, each followed by BN(c); fc 512->10.
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    vgg16 = sum(9 * a * b + b + bn(b) for a, b in zip(widths, widths[1:])) + 512 * 10 + 10
    assert vgg16 == 14_728_266
    assert parameter_count(abstract(name="vgg", depth=16)) == vgg16
    # mnist_lenet_300_100: fc 784->300->100->10, all with bias.
    lenet = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert lenet == 266_610
    assert parameter_count(abstract((28, 28, 1), name="lenet")) == lenet


def test_which_layers_have_biases():
    def bias_owners(model):
        names = pruning.flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        return {n.rsplit("/", 1)[0] for n in names if n.endswith("bias") and "bn" not in n and "norms" not in n}

    # open_lth ResNet: no conv has a bias (bias=False everywhere); only the fc output layer.
    resnet = abstract(name="resnet", depth=8, width=4)
    assert bias_owners(resnet) == {"output"}
    # open_lth VGG: every conv (nn.Conv2d default bias=True) and the output.
    vgg16 = abstract(name="vgg", depth=16)
    assert bias_owners(vgg16) == {f"convs/{i}" for i in range(13)} | {"output"}
    # LeNet and Conv-2: every layer.
    assert bias_owners(abstract((28, 28, 1), name="lenet")) == {"hidden/0", "hidden/1", "output"}
    assert bias_owners(abstract(name="conv2")) == {"convs/0", "convs/1", "fc/0", "fc/1", "output"}


# --- initialization --------------------------------------------------------------------------------


def check_normal(w, variance):
    """Mean 0, the given variance (4 standard errors: sqrt(2/n) relative) and untruncated tails:
    P(|z| > 2) = 4.55% for a normal (0 if truncated at 2 standard deviations)."""
    w = w.ravel()
    n = w.size
    assert abs(w.mean()) < 4 * np.sqrt(variance / n)
    assert w.var() == pytest.approx(variance, rel=4 * np.sqrt(2 / n))
    tail = np.mean(np.abs(w) > 2 * np.sqrt(variance))
    assert tail == pytest.approx(0.0455, abs=4 * np.sqrt(0.0455 * 0.9545 / n))


def test_kaiming_normal_kernels_have_variance_2_over_fan_in():
    # open_lth models/initializers.py kaiming_normal: torch.nn.init.kaiming_normal_(w.weight), i.e.
    # a=0, mode='fan_in', gain sqrt(2): N(0, 2 / fan_in), fan_in = in_channels x 3 x 3 for a conv.
    resnet = build(**RESNET20)
    check_normal(value(resnet.blocks[8].conv2.kernel), 2 / (64 * 9))  # 36,864 weights
    check_normal(value(resnet.blocks[3].shortcut_conv.kernel), 2 / 16)  # 1x1: fan_in = 16
    vgg16 = build(**VGG16)
    check_normal(value(vgg16.convs[12].kernel), 2 / (512 * 9))
    check_normal(value(vgg16.output.kernel), 2 / 512)


def test_glorot_normal_kernels_have_variance_2_over_fan_in_plus_fan_out():
    # F&C 2019 "Gaussian Glorot": N(0, 2 / (fan_in + fan_out)); for a conv both fans count the 3x3 window.
    lenet = build(**LENET)
    check_normal(value(lenet.hidden[0].kernel), 2 / (784 + 300))
    conv2 = build(**CONV2)
    check_normal(value(conv2.convs[1].kernel), 2 / (9 * 64 + 9 * 64))
    check_normal(value(conv2.fc[0].kernel), 2 / (16 * 16 * 64 + 256))


def test_biases_follow_each_source():
    # open_lth keeps torch's default biases, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): its initializers set only .weight.
    vgg16 = build(**VGG16)
    bound = 1 / np.sqrt(9 * 512)
    b = np.concatenate([value(c.bias) for c in vgg16.convs[8:]])  # the five 512->512 convs: 2,560 biases
    assert np.all(np.abs(b) <= bound) and np.abs(b).max() > 0.95 * bound
    assert b.var() == pytest.approx(bound**2 / 3, rel=0.1)  # uniform: sd of the sample variance ~2%
    first = value(vgg16.convs[0].bias)  # fan_in 27
    assert np.all(np.abs(first) <= 1 / np.sqrt(27)) and np.abs(first).max() > 0.7 / np.sqrt(27)
    out = value(vgg16.output.bias)
    assert np.all(np.abs(out) <= 1 / np.sqrt(512)) and np.any(out != 0)
    resnet = build(**RESNET20)
    out = value(resnet.output.bias)
    assert np.all(np.abs(out) <= 1 / 8) and np.any(out != 0)
    # Frankle & Carbin (TF): zero biases.
    lenet = build(**LENET)
    conv2 = build(**CONV2)
    for layer in [*lenet.hidden, lenet.output, *conv2.convs, *conv2.fc, conv2.output]:
        assert not np.any(value(layer.bias))


def test_batch_norm_starts_as_open_lths_uniform_initializer():
    # open_lth models/bn_initializers.py uniform: weight = torch.rand (U[0, 1)), bias = 0; running stats 0 / 1.
    vgg16 = build(**VGG16)
    scale = np.concatenate([value(n.scale) for n in vgg16.norms])  # 4,224 channels
    assert scale.min() >= 0 and scale.max() < 1
    assert scale.mean() == pytest.approx(0.5, abs=4 * np.sqrt(1 / 12 / scale.size))
    assert scale.var() == pytest.approx(1 / 12, rel=0.1)
    for norm in vgg16.norms:
        assert not np.any(value(norm.bias)) and not np.any(value(norm.mean)) and np.all(value(norm.var) == 1)
        assert norm.epsilon == TORCH_BN_EPS


def test_batch_norm_training_step_matches_torch_batchnorm2d():
    bn = layers.BatchNorm(3, nnx.Rngs(params=jax.random.key(0)))
    x = np.random.default_rng(6).normal(2.0, 3.0, size=(4, 5, 5, 3)).astype(np.float32)
    y = np.asarray(bn(x, use_running_average=False))
    # Training: normalize with the batch mean and *biased* variance over (N, H, W) ...
    mean, biased = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = (x - mean) / np.sqrt(biased + TORCH_BN_EPS) * value(bn.scale) + value(bn.bias)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    # ... and update the running statistics with momentum 0.1 and the *unbiased* variance (n = 100 per channel).
    np.testing.assert_allclose(value(bn.mean), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value(bn.var), 0.9 * 1.0 + 0.1 * x.var(axis=(0, 1, 2), ddof=1), rtol=1e-5)
