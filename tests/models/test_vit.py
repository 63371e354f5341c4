"""The ViT (lottery/models/vit.py) against its layer list: a NumPy forward pass written from the
docstring (patches cut by slicing, each head by its columns), the head layout that head pruning
relies on, the parameter count in closed form, its initializers and configs. Its masked training is
the trainer's, which knows no model (tests/training/test_masking.py); a short masked training of a tiny ViT on
the CIFAR-10 records was checked when the model came and left out of the suite for its time."""

import math

import jax
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf
from scipy.special import erf

from conftest import compose_config
from lottery import models
from lottery.config import ModelConfig
from lottery.errors import LotteryError
from lottery.pruning import masks
from lottery.results.identity import experiment_hash, identity

DATA = "sha256:" + "0" * 64  # a data fingerprint
TINY = dict(name="vit", patch=4, dim=16, depth=2, heads=2, mlp_dim=32)


def vit(shape, classes=10, key=0, **sizes):
    cfg = OmegaConf.structured(ModelConfig(**{**TINY, **sizes}))
    return models.build(cfg, shape, classes, jax.random.key(key))


@pytest.fixture(scope="module")
def tiny():
    """A ViT of width 16 with 3 heads 6 wide (model.head_dim: heads x head_dim = 18 is not the width,
    the general layout) on 12x8 images
    (3 x 2 patches: rows and columns cannot be swapped unnoticed), its parameters drawn at random
    from N(0, 0.3^2) (biases, LayerNorm and the class token take part; at initialization they are 0
    or 1), and its forward pass as one compiled function of the parameters (NumPy trees in)."""
    shape = (12, 8, 3)
    model = nnx.eval_shape(lambda: vit(shape, heads=3, head_dim=6))
    graphdef, abstract = nnx.split(model, nnx.Param)
    like = nnx.to_pure_dict(abstract)
    rng = np.random.default_rng(0)
    params = {name: 0.3 * rng.standard_normal(v.shape) for name, v in masks.flatten(like).items()}
    apply = jax.jit(lambda p, x: nnx.merge(graphdef, nnx.State(masks.unflatten(like, p)))(x))
    images = rng.standard_normal((3, *shape))
    forward = lambda p: np.asarray(apply({k: np.float32(v) for k, v in p.items()}, np.float32(images)))
    return params, images, forward


def layer_norm(x, scale, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_vit(p, images, patch, head_dim):
    """The docstring's layer list in float64. The number of heads of each block is read from its
    query kernel's width / head_dim, so a compacted network (heads removed) runs here too."""
    images = np.asarray(images, np.float64)
    batch, height, width, _ = images.shape
    patches = [
        images[:, r : r + patch, c : c + patch, :].reshape(batch, -1)  # (row, column, channel) order
        for r in range(0, height, patch)
        for c in range(0, width, patch)
    ]  # row-major over the grid
    x = np.stack(patches, 1) @ p["embedding/kernel"] + p["embedding/bias"]
    x = np.concatenate([np.broadcast_to(p["class_token"], (batch, 1, x.shape[-1])), x], 1) + p["position"]
    depth = len({name.split("/")[1] for name in p if name.startswith("blocks/")})
    for i in range(depth):
        b = lambda name: p[f"blocks/{i}/{name}"]
        h = layer_norm(x, b("attention_norm/scale"), b("attention_norm/bias"))
        q, k, v = (h @ b(f"attention/{name}/kernel") for name in ("query", "key", "value"))
        outputs = []
        for head in range(q.shape[-1] // head_dim):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            weights = softmax(q[..., cols] @ np.swapaxes(k[..., cols], 1, 2) / math.sqrt(head_dim))
            outputs.append(weights @ v[..., cols])
        x = x + np.concatenate(outputs, -1) @ b("attention/out/kernel") + b("attention/out/bias")
        h = layer_norm(x, b("mlp_norm/scale"), b("mlp_norm/bias"))
        h = h @ b("mlp/hidden/kernel") + b("mlp/hidden/bias")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))  # exact GELU
        x = x + h @ b("mlp/out/kernel") + b("mlp/out/bias")
    return layer_norm(x[:, 0], p["norm/scale"], p["norm/bias"]) @ p["output/kernel"] + p["output/bias"]


def test_vit_equals_a_numpy_forward_pass_of_its_layer_list(tiny):
    params, images, forward = tiny
    logits = forward(params)
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(logits, numpy_vit(params, images, patch=4, head_dim=6), rtol=1e-4, atol=1e-4)


def test_a_heads_columns_and_rows_are_that_head_alone(tiny):
    # Head 1 of block 0 masked out (its query, key, value columns and its rows of out, as head
    # pruning will) computes what the network with that head deleted computes: head h of a block is
    # columns [h*hd, (h+1)*hd) of query, key and value and those rows of out, nothing else.
    params, images, forward = tiny
    head_dim, block = 6, "blocks/0/attention"
    head_1, kept = slice(head_dim, 2 * head_dim), np.r_[0:head_dim, 2 * head_dim : 3 * head_dim]  # heads 0, 2 kept
    masked, compact = {k: v.copy() for k, v in params.items()}, dict(params)
    for name in ("query", "key", "value"):
        masked[f"{block}/{name}/kernel"][:, head_1] = 0
        compact[f"{block}/{name}/kernel"] = params[f"{block}/{name}/kernel"][:, kept]
    masked[f"{block}/out/kernel"][head_1, :] = 0
    compact[f"{block}/out/kernel"] = params[f"{block}/out/kernel"][kept, :]
    logits = forward(masked)
    np.testing.assert_allclose(logits, numpy_vit(compact, images, patch=4, head_dim=head_dim), rtol=1e-4, atol=1e-4)
    assert not np.allclose(logits, forward(params), atol=1e-3)  # the head mattered


def closed_form_count(patch, dim, depth, heads, head_dim, mlp_dim, side=32, channels=3, classes=10):
    """Parameters of the layer list, counted by hand."""
    tokens = (side // patch) ** 2 + 1
    inner = heads * head_dim
    embedding = patch * patch * channels * dim + dim
    attention = 3 * dim * inner + inner * dim + dim  # query, key, value without bias; out with bias
    mlp = dim * mlp_dim + mlp_dim + mlp_dim * dim + dim
    block = 2 * 2 * dim + attention + mlp  # two LayerNorms
    return embedding + dim + tokens * dim + depth * block + 2 * dim + dim * classes + classes


def parameter_count(cfg):
    model = nnx.eval_shape(lambda: models.build(cfg, (32, 32, 3), 10, jax.random.key(0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_parameter_count_is_the_closed_form():
    cfg = compose_config(["model=vit"]).model
    assert (cfg.patch, cfg.dim, cfg.depth, cfg.heads, cfg.head_dim, cfg.mlp_dim) == (4, 192, 9, 12, None, 384)
    # Lee, Lee & Song 2021's ViT on CIFAR: 192 * 48 + 192 patch embedding, 192 class token, 65 * 192
    # position embeddings, 9 blocks of 296,448, final LayerNorm 384, output 1,930.
    assert closed_form_count(4, 192, 9, 12, 16, 384) == 9_408 + 192 + 12_480 + 9 * 296_448 + 384 + 1_930 == 2_692_426
    assert parameter_count(cfg) == 2_692_426
    # DeiT-Tiny's sizes (Touvron et al. 2021) at patch 4, and 6 heads of 16 (96 wide in all, not 192)
    for overrides, sizes in (
        (dict(depth=12, heads=3, mlp_dim=768), (4, 192, 12, 3, 64, 768)),
        (dict(heads=6, head_dim=16), (4, 192, 9, 6, 16, 384)),
    ):
        assert parameter_count(OmegaConf.merge(cfg, overrides)) == closed_form_count(*sizes)


def test_prunable_kernels_and_initializers():
    model = vit((32, 32, 3), depth=1)  # the smoke test's sizes below: their initializers are compiled once
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    names = masks.prunable(params)
    assert names == [
        "blocks/0/attention/key/kernel",
        "blocks/0/attention/out/kernel",
        "blocks/0/attention/query/kernel",
        "blocks/0/attention/value/kernel",
        "blocks/0/mlp/hidden/kernel",
        "blocks/0/mlp/out/kernel",
        "embedding/kernel",
        "output/kernel",
    ]
    flat = masks.flatten(params)
    assert [masks.layer_kind(n, flat[n]) for n in names] == ["fc"] * 7 + ["output"]
    assert np.ravel(flat["position"]).size == 65 * 16  # 8 x 8 patches and the class token
    # Glorot normal (standard errors of these estimates: 2.6%, 3.1%, 2.6%, 2.2%); query, key and
    # value as thirds of the paper's fused to_qkv (fan_out 3 x 16)
    qkv = np.concatenate([np.ravel(flat[f"blocks/0/attention/{n}/kernel"]) for n in ("query", "key", "value")])
    assert qkv.std() == pytest.approx(math.sqrt(2 / (16 + 3 * 16)), rel=0.1)
    assert np.asarray(flat["blocks/0/mlp/hidden/kernel"]).std() == pytest.approx(math.sqrt(2 / (16 + 32)), rel=0.1)
    assert np.asarray(flat["embedding/kernel"]).std() == pytest.approx(math.sqrt(2 / (48 + 16)), rel=0.1)
    position = np.concatenate([np.ravel(flat["position"]), np.ravel(flat["class_token"])])
    assert position.std() == pytest.approx(1.0, rel=0.1)  # torch.randn, as the paper's code
    for name, value in flat.items():
        if name.endswith("bias"):
            assert np.all(np.asarray(value) == 0), name
        if name.endswith("scale"):
            assert np.all(np.asarray(value) == 1), name


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dim=20, heads=3), r"model\.dim=20 is not a multiple of model\.heads=3"),
        (dict(patch=None), r"model\.patch=None: the ViT needs a positive patch"),
        (dict(mlp_dim=0), r"model\.mlp_dim=0: the ViT needs a positive mlp_dim"),
        (
            dict(name="resnet", depth=20, dim=None, patch=None, heads=None, mlp_dim=None, head_dim=8),
            r"model\.head_dim=8 is a ViT size; model resnet does not use it",
        ),
    ],
)
def test_bad_vit_configs_are_named(overrides, message):
    with pytest.raises(LotteryError, match=message):
        models.check(OmegaConf.structured(ModelConfig(**{**TINY, **overrides})))


def test_images_must_be_whole_patches():
    cfg = OmegaConf.structured(ModelConfig(**{**TINY, "patch": 3}))
    with pytest.raises(LotteryError, match=r"model vit cuts images into 3x3 patches .* dataset cifar10 has 32x32"):
        models.check_input(cfg, (32, 32, 3), "cifar10")
    models.check_input(cfg, (9, 12, 1), "other")  # 3 x 4 patches
    with pytest.raises(LotteryError, match="needs images"):
        models.check_input(cfg, (64,), "digits_flat")


def test_vit_sizes_name_vit_experiments_only():
    base = compose_config(["+exp=vit"])
    assert identity(base, DATA)["model"] == {
        "name": "vit",
        "hidden": [300, 100],
        "depth": 9,
        "width": 16,
        "init": "glorot_normal",
        "patch": 4,
        "dim": 192,
        "heads": 12,
        "mlp_dim": 384,
    }
    for change in ("model.dim=96", "model.heads=6", "model.head_dim=8", "model.patch=8", "model.mlp_dim=768"):
        assert experiment_hash(compose_config(["+exp=vit", change]), DATA) != experiment_hash(base, DATA), change
    assert "patch" not in identity(compose_config(["+exp=resnet"]), DATA)["model"]  # unset: not hashed
