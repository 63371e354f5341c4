"""Vision Transformer for small images (Dosovitskiy et al. 2021), as the baseline ViT of Lee, Lee &
Song, "Vision Transformer for Small-Size Datasets" (arXiv 2112.13492, 2021) on CIFAR.

Read against that paper's code (aanna0701/SPT_LSA_ViT: ``models/vit.py``, and ``models/create_model.py``
for the sizes on 32x32 images: patch 4, width 192, 9 blocks of 12 heads of width 16, MLP ratio 2),
layer by layer (``conf/model/vit.yaml``: ``model.patch=4 model.dim=192 model.depth=9 model.heads=12
model.mlp_dim=384``; 2,692,426 parameters with 10 classes):

- patch embedding: the image cut into non-overlapping patch x patch squares, row-major over the
  grid; each flattened in (row, column, channel) order (the paper's ``'b c (h p1) (w p2) -> b (h w)
  (p1 p2 c)'``) and mapped by one dense layer ``embedding`` (patch^2 x channels -> dim, with bias),
  the same as a patch x patch convolution of stride patch, written as a dense layer so that the model
  has no convolution (``trainer.use_host_loop``: it trains in the compiled loop on CPU too);
- a learned class token ``class_token`` (dim) put before the patches, and learned position
  embeddings ``position`` (patches + 1, dim) added to every token. The class token, not the mean of
  the tokens, is what the classifier reads, as in the paper's code and Dosovitskiy et al.;
- ``depth`` pre-norm blocks ``blocks/i``: x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x));
- attention: separate dense layers ``query``, ``key``, ``value`` (dim -> heads x head_dim, no bias,
  as the paper's ``to_qkv``), softmax(q k^T / sqrt(head_dim)) v per head, and ``out`` (heads x
  head_dim -> dim, with bias; the paper's code leaves it out when one head is as wide as the model,
  here it is always there). head_dim is dim // heads unless ``model.head_dim`` sets it;
- MLP: ``hidden`` (dim -> mlp_dim, with bias), GELU (the exact, erf form: torch's ``nn.GELU()``
  default), ``out`` (mlp_dim -> dim, with bias);
- the head: LayerNorm ``norm`` of the class token, then the dense layer ``output`` (dim -> classes).

**Where a head's weights are** (what head pruning selects). Head h of block i owns columns
[h x head_dim, (h + 1) x head_dim) of ``blocks/i/attention/query/kernel``, ``.../key/kernel`` and
``.../value/kernel`` (each of shape (dim, heads x head_dim): a token's query for head h is
``x @ query[:, h*head_dim:(h+1)*head_dim]``) and rows [h x head_dim, (h + 1) x head_dim) of
``blocks/i/attention/out/kernel`` (shape (heads x head_dim, dim)); the concatenation of the heads'
outputs is in head order. Zeroing those rows of ``out`` removes head h's contribution exactly (``out``'s
bias is shared by all heads); zeroing its query or key columns leaves it attending uniformly.
An MLP hidden unit u of block i is column u of ``blocks/i/mlp/hidden/kernel`` (and entry u of its
bias) and row u of ``blocks/i/mlp/out/kernel``.

Prunable (``kernel``): embedding, query, key, value, attention out, MLP hidden and out, output.
Never pruned: biases, LayerNorm scales and biases, the class token and the position embeddings.

Initialization, as the paper's ``init_weights``: dense kernels from ``model.init`` (glorot_normal is
its ``nn.init.xavier_normal_``), biases 0, LayerNorm scale 1 and bias 0 (eps 1e-5, torch's), class
token and position embeddings N(0, 1) (``torch.randn``). The paper's query, key and value are one
dense layer ``to_qkv`` of dim -> 3 x heads x head_dim, so Glorot's fan there counts all three:
each of ``query``, ``key`` and ``value`` is drawn as one third of such a kernel (``_thirds_of_fused``),
with that kernel's statistics (variance 2 / (dim + 3 x heads x head_dim) for glorot_normal).

Left out of the paper's model (this project's training has neither): stochastic depth (its
default rate 0.1) and dropout (its default rate 0, so nothing is lost there); its SPT and LSA
add-ons, which the paper adds to the baseline, are not implemented.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from lottery.units import attention_heads, hidden_neurons

LAYER_NORM_EPSILON = 1e-5  # torch's nn.LayerNorm default, as the paper's code


def _thirds_of_fused(init):
    """``init`` for one of query, key, value drawn with the statistics of a fused kernel of three
    times the width (the paper's ``to_qkv``): fans count all three projections."""

    def draw(key, shape, dtype=jnp.float32):
        fan_in, width = shape
        return init(key, (fan_in, 3 * width), dtype)[:, :width]

    return draw


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=LAYER_NORM_EPSILON, use_fast_variance=False, rngs=rngs)


def _dense(a: int, b: int, init, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    return nnx.Linear(a, b, use_bias=use_bias, kernel_init=init, bias_init=nnx.initializers.zeros_init(), rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, init, rngs: nnx.Rngs):
        self.heads, self.head_dim = heads, head_dim
        qkv = _thirds_of_fused(init)
        self.query = _dense(dim, heads * head_dim, qkv, rngs, use_bias=False)
        self.key = _dense(dim, heads * head_dim, qkv, rngs, use_bias=False)
        self.value = _dense(dim, heads * head_dim, qkv, rngs, use_bias=False)
        self.out = _dense(heads * head_dim, dim, init, rngs)

    def __call__(self, x):
        batch, tokens, _ = x.shape
        split = lambda y: y.reshape(batch, tokens, self.heads, self.head_dim)  # head h: columns h*hd..(h+1)*hd
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * self.head_dim**-0.5
        weights = jax.nn.softmax(logits, axis=-1)
        heads = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, tokens, self.heads * self.head_dim)
        return self.out(heads)


class MLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, init, rngs: nnx.Rngs):
        self.hidden = _dense(dim, hidden, init, rngs)
        self.out = _dense(hidden, dim, init, rngs)

    def __call__(self, x):
        return self.out(jax.nn.gelu(self.hidden(x), approximate=False))


class Block(nnx.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, init, rngs: nnx.Rngs):
        self.attention_norm = _layer_norm(dim, rngs)
        self.attention = Attention(dim, heads, head_dim, init, rngs)
        self.mlp_norm = _layer_norm(dim, rngs)
        self.mlp = MLP(dim, mlp_dim, init, rngs)

    def __call__(self, x):
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ViT(nnx.Module):
    def __init__(
        self,
        input_shape,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        head_dim: int,
        mlp_dim: int,
        num_classes: int,
        init,
        rngs: nnx.Rngs,
    ):
        height, width, channels = input_shape
        self.patch = patch
        patches = (height // patch) * (width // patch)
        self.embedding = _dense(patch * patch * channels, dim, init, rngs)
        self.class_token = nnx.Param(jax.random.normal(rngs.params(), (dim,)))
        self.position = nnx.Param(jax.random.normal(rngs.params(), (patches + 1, dim)))
        self.blocks = nnx.List([Block(dim, heads, head_dim, mlp_dim, init, rngs) for _ in range(depth)])
        self.norm = _layer_norm(dim, rngs)
        self.output = _dense(dim, num_classes, init, rngs)

    def __call__(self, x, train: bool = False):
        x = self.embedding(patchify(x, self.patch))
        token = jnp.broadcast_to(self.class_token[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([token, x], axis=1) + self.position[...].astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.output(self.norm(x[:, 0]))


def patchify(images, patch: int):
    """(batch, H, W, C) -> (batch, (H / patch) x (W / patch), patch x patch x C): the patches in
    row-major order over the grid, each flattened in (row, column, channel) order."""
    batch, height, width, channels = images.shape
    rows, columns = height // patch, width // patch
    x = images.reshape(batch, rows, patch, columns, patch, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, rows * columns, patch * patch * channels)


def head_width(cfg) -> int:
    """Width of one attention head: ``model.head_dim``, else dim // heads."""
    return cfg.head_dim if cfg.head_dim is not None else cfg.dim // cfg.heads


def units(shapes, heads: int):
    """Each block's attention heads (query, key and value columns, the output projection's rows; see
    the module docstring) and its MLP's hidden units (pruning/structure.py)."""
    blocks = sorted({int(name.split("/")[1]) for name in shapes if name.startswith("blocks/")})
    out = []
    for i in blocks:
        out.append(attention_heads(f"blocks/{i}/attention", heads, shapes))
        out.append(hidden_neurons(f"blocks/{i}/mlp/hidden", f"blocks/{i}/mlp/out", shapes))
    return out


def build(cfg, input_shape, num_classes, init, rngs):
    return ViT(
        input_shape, cfg.patch, cfg.dim, cfg.depth, cfg.heads, head_width(cfg), cfg.mlp_dim, num_classes, init, rngs
    )
