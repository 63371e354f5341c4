"""BERT encoders (Devlin et al. 2019) built from a checkpoint directory in the Hugging Face layout:
``config.json`` for the sizes, ``model.safetensors`` for the weights (torch's names and (out, in)
layout), ``tokenizer.json`` for the ``tokenizers`` library (lottery/data/text.py). Any BERT-family
checkpoint with absolute positions and a GELU MLP: BERT-base/large, MiniLM (``all-MiniLM-L6-v2``),
the BERT-Tickets models (Chen et al., NeurIPS 2020).

The network, as ``transformers``' ``BertModel`` computes it (post-LN):
- embeddings: word + position (0, 1, ...) + token type, then LayerNorm ``embeddings/norm``;
- ``layers/i``: ``attention`` (``query``, ``key``, ``value``: hidden -> hidden with bias, heads of
  hidden / heads columns each, in head order; softmax(q k^T / sqrt(head width) + padding mask) v;
  ``out``: hidden -> hidden), ``x = LayerNorm(x + attention)``; ``intermediate`` (hidden -> the
  intermediate size, GELU: the exact, erf form, config ``hidden_act=gelu``) and ``output``
  (back to hidden), ``x = LayerNorm(x + mlp)``;
- the pooler: tanh(dense(the first token's state)), and the classifier ``output`` (hidden ->
  classes) on it, as ``BertForSequenceClassification`` (dropout left out: this project's training
  has none).

Padding: a key position whose attention mask is 0 gets ``finfo(float32).min`` added to its logits
(as ``transformers``), so a padded token changes nothing of the others.

**Units** (structured pruning, issue 37): head h of layer i owns columns [h d, (h + 1) d) of
``query``/``key``/``value`` and rows [h d, (h + 1) d) of ``attention/out`` (d: hidden / heads); FFN
neuron u of layer i is column u of ``intermediate/kernel`` and row u of ``output/kernel``.

Prunable (``kernel``): the encoder's linear layers (query, key, value, attention out, intermediate,
output) and, by the project's rule, the pooler and the classifier ``output``
(``pruning.ignore`` leaves these out, as Chen et al. do). Never pruned: embeddings, LayerNorms, biases.

``pretrained=None``: BERT's own random initialization, for the "no pre-training" control:
weights N(0, ``initializer_range``) (0.02), biases 0, LayerNorm scale 1 and bias 0, the padding
token's word embedding 0 (``BertPreTrainedModel._init_weights``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Tuple

import numpy as np

from lottery import lazy
from lottery.errors import LotteryError
from lottery.units import attention_heads, hidden_neurons

jax = lazy.module("jax")
jnp = lazy.module("jax.numpy")
nnx = lazy.module("flax.nnx")

ACTIVATIONS = ("gelu",)  # the exact (erf) GELU: transformers' "gelu"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def read_config(directory: str) -> BertConfig:
    """The checkpoint's ``config.json`` as a ``BertConfig``; one line for what this BERT cannot build."""
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise LotteryError(f"{path}: not found: a BERT checkpoint directory holds config.json and model.safetensors")
    except (OSError, ValueError) as error:
        raise LotteryError(f"{path}: cannot be read as JSON ({type(error).__name__}: {error})")
    if not isinstance(raw, dict):
        raise LotteryError(f"{path}: expected a JSON object of the model's sizes")
    if raw.get("model_type", "bert") != "bert":
        raise LotteryError(f"{path}: model_type={raw['model_type']!r} is not a BERT (expected model_type bert)")
    fields = {f.name for f in dataclasses.fields(BertConfig)}
    required = [f.name for f in dataclasses.fields(BertConfig) if f.default is dataclasses.MISSING]
    missing = [key for key in required if key not in raw]
    if missing:
        raise LotteryError(f"{path}: missing {', '.join(missing)}")
    config = BertConfig(**{key: value for key, value in raw.items() if key in fields})
    for key in required + ["max_position_embeddings", "type_vocab_size"]:
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LotteryError(f"{path}: {key}={value!r} must be a positive integer")
    if config.hidden_size % config.num_attention_heads:
        raise LotteryError(
            f"{path}: hidden_size={config.hidden_size} is not a multiple of "
            f"num_attention_heads={config.num_attention_heads}"
        )
    if config.hidden_act not in ACTIVATIONS:
        raise LotteryError(f"{path}: hidden_act={config.hidden_act!r} is not supported; expected one of: gelu")
    if config.position_embedding_type != "absolute":
        raise LotteryError(
            f"{path}: position_embedding_type={config.position_embedding_type!r} is not supported; expected absolute"
        )
    if not 0 <= config.pad_token_id < config.vocab_size:
        raise LotteryError(f"{path}: pad_token_id={config.pad_token_id} is outside the vocabulary")
    return config


def _dense(a: int, b: int, std: float, rngs) -> "nnx.Linear":
    return nnx.Linear(
        a,
        b,
        kernel_init=nnx.initializers.normal(std),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


def _layer_norm(config: BertConfig, rngs) -> "nnx.LayerNorm":
    return nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps, use_fast_variance=False, rngs=rngs)


class Embeddings(nnx.Module):
    def __init__(self, config: BertConfig, rngs):
        init = nnx.initializers.normal(config.initializer_range)
        self.word = nnx.Embed(config.vocab_size, config.hidden_size, embedding_init=init, rngs=rngs)
        self.word.embedding[...] = self.word.embedding[...].at[config.pad_token_id].set(0.0)
        self.position = nnx.Embed(config.max_position_embeddings, config.hidden_size, embedding_init=init, rngs=rngs)
        self.token_type = nnx.Embed(config.type_vocab_size, config.hidden_size, embedding_init=init, rngs=rngs)
        self.norm = _layer_norm(config, rngs)

    def __call__(self, ids, token_types):
        positions = jnp.arange(ids.shape[1])
        return self.norm(self.word(ids) + self.position(positions)[None] + self.token_type(token_types))


class Attention(nnx.Module):
    def __init__(self, config: BertConfig, rngs):
        std, dim = config.initializer_range, config.hidden_size
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.query, self.key, self.value = (_dense(dim, dim, std, rngs) for _ in range(3))
        self.out = _dense(dim, dim, std, rngs)

    def __call__(self, x, bias):
        batch, tokens, _ = x.shape
        split = lambda y: y.reshape(batch, tokens, self.heads, self.head_dim)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.float32(np.sqrt(self.head_dim)) + bias
        weights = jax.nn.softmax(logits, axis=-1)
        heads = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, tokens, self.heads * self.head_dim)
        return self.out(heads)


class Layer(nnx.Module):
    def __init__(self, config: BertConfig, rngs):
        std = config.initializer_range
        self.attention = Attention(config, rngs)
        self.attention_norm = _layer_norm(config, rngs)
        self.intermediate = _dense(config.hidden_size, config.intermediate_size, std, rngs)
        self.output = _dense(config.intermediate_size, config.hidden_size, std, rngs)
        self.output_norm = _layer_norm(config, rngs)

    def __call__(self, x, bias):
        x = self.attention_norm(x + self.attention(x, bias))
        return self.output_norm(x + self.output(jax.nn.gelu(self.intermediate(x), approximate=False)))


class Bert(nnx.Module):
    """A BERT encoder with a pooler and a classification head ``output`` (``num_classes``)."""

    def __init__(self, config: BertConfig, num_classes: int, rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs)
        self.layers = nnx.List([Layer(config, rngs) for _ in range(config.num_hidden_layers)])
        self.pooler = _dense(config.hidden_size, config.hidden_size, config.initializer_range, rngs)
        self.output = _dense(config.hidden_size, num_classes, config.initializer_range, rngs)

    def encode(self, ids, attention_mask, token_types=None):
        """The last layer's hidden states (batch, tokens, hidden)."""
        if ids.shape[1] > self.config.max_position_embeddings:  # nnx.Embed would give NaN past its table
            raise LotteryError(
                f"{ids.shape[1]} tokens are more than the checkpoint's max_position_embeddings="
                f"{self.config.max_position_embeddings}: set dataset.max_length to at most that"
            )
        if token_types is None:
            token_types = jnp.zeros_like(ids)
        bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        x = self.embeddings(ids, token_types)
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def __call__(self, ids, attention_mask, token_types=None, train: bool = False):
        pooled = jnp.tanh(self.pooler(self.encode(ids, attention_mask, token_types)[:, 0]))
        return self.output(pooled)


def build(config: BertConfig, num_classes: int, key) -> Bert:
    return Bert(config, num_classes, nnx.Rngs(params=key))


# --- a checkpoint's weights, by name ------------------------------------------------------------


def checkpoint_names(config: BertConfig) -> Dict[str, Tuple[str, bool, tuple]]:
    """Each parameter of the encoder and pooler: its '/'-path here -> (the checkpoint's name, whether
    torch stores it transposed: a Linear's weight is (out, in), a kernel here (in, out); its shape here)."""
    h, m = config.hidden_size, config.intermediate_size
    names = {
        "embeddings/word/embedding": ("embeddings.word_embeddings.weight", False, (config.vocab_size, h)),
        "embeddings/position/embedding": (
            "embeddings.position_embeddings.weight",
            False,
            (config.max_position_embeddings, h),
        ),
        "embeddings/token_type/embedding": (
            "embeddings.token_type_embeddings.weight",
            False,
            (config.type_vocab_size, h),
        ),
        "embeddings/norm/scale": ("embeddings.LayerNorm.weight", False, (h,)),
        "embeddings/norm/bias": ("embeddings.LayerNorm.bias", False, (h,)),
        "pooler/kernel": ("pooler.dense.weight", True, (h, h)),
        "pooler/bias": ("pooler.dense.bias", False, (h,)),
    }
    linears = {  # here: (theirs, inputs, outputs)
        "attention/query": ("attention.self.query", h, h),
        "attention/key": ("attention.self.key", h, h),
        "attention/value": ("attention.self.value", h, h),
        "attention/out": ("attention.output.dense", h, h),
        "intermediate": ("intermediate.dense", h, m),
        "output": ("output.dense", m, h),
    }
    norms = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
    for i in range(config.num_hidden_layers):
        for ours, (theirs, a, b) in linears.items():
            names[f"layers/{i}/{ours}/kernel"] = (f"encoder.layer.{i}.{theirs}.weight", True, (a, b))
            names[f"layers/{i}/{ours}/bias"] = (f"encoder.layer.{i}.{theirs}.bias", False, (b,))
        for ours, theirs in norms.items():
            names[f"layers/{i}/{ours}/scale"] = (f"encoder.layer.{i}.{theirs}.weight", False, (h,))
            names[f"layers/{i}/{ours}/bias"] = (f"encoder.layer.{i}.{theirs}.bias", False, (h,))
    return names


# Older checkpoints (TensorFlow-converted BERT) name LayerNorm's scale and bias gamma and beta.
_OLD_NAMES = {".weight": ".gamma", ".bias": ".beta"}


def read_weights(directory: str, config: BertConfig) -> Dict[str, np.ndarray]:
    """The encoder's and pooler's weights from ``model.safetensors``, by '/'-path here, in this
    model's layout (float32); a missing tensor, a wrong shape or a file that is not safetensors is
    one line naming the file and the tensor. A ``bert.`` prefix (a model with a task head) is read
    through; the checkpoint's own heads and buffers (``position_ids``) are left."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.path.join(directory, "model.safetensors")
    if not os.path.exists(path):
        raise LotteryError(f"{path}: not found (only safetensors weights are read; convert a pytorch_model.bin first)")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as error:  # TypeError: a dtype NumPy lacks
        raise LotteryError(f"{path}: cannot be read as safetensors ({type(error).__name__}: {error})")
    prefix = "bert." if any(name.startswith("bert.") for name in tensors) else ""
    weights = {}
    for ours, (theirs, transposed, shape) in checkpoint_names(config).items():
        name = prefix + theirs
        if name not in tensors and "LayerNorm" in name:
            for new, old in _OLD_NAMES.items():
                if name.endswith(new) and name[: -len(new)] + old in tensors:
                    name = name[: -len(new)] + old
        if name not in tensors:
            raise LotteryError(f"{path}: no tensor {prefix + theirs} (the checkpoint does not match its config.json)")
        array = np.asarray(tensors[name])
        if array.dtype.name == "bfloat16":  # ml_dtypes' (safetensors reads BF16 as it): widened exactly
            array = array.astype(np.float32)
        if not np.issubdtype(array.dtype, np.floating):
            raise LotteryError(f"{path}: {name} is {array.dtype}, expected floating-point weights")
        array = array.T if transposed else array
        if array.shape != shape:
            theirs_shape = array.T.shape if transposed else array.shape
            expected = shape[::-1] if transposed else shape
            raise LotteryError(f"{path}: {name} has shape {theirs_shape}, config.json implies {expected}")
        weights[ours] = np.ascontiguousarray(array, dtype=np.float32)
    return weights


def load_pretrained(model: Bert, directory: str) -> Bert:
    """``model`` with the checkpoint's encoder and pooler weights (its classifier ``output`` stays
    as initialized: a new task's head)."""
    weights = read_weights(directory, model.config)
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    for path, variable in flat.items():
        name = "/".join(str(part) for part in path)
        if name in weights:
            variable[...] = jnp.asarray(weights[name])
    nnx.update(model, state)
    return model


def units(shapes, heads: int):
    """Each layer's attention heads (query, key and value columns and biases, attention out's rows)
    and its intermediate (FFN) neurons (pruning/structure.py), as the ViT's (lottery/units.py)."""
    layers = sorted({int(name.split("/")[1]) for name in shapes if name.startswith("layers/")})
    found = []
    for i in layers:
        found.append(attention_heads(f"layers/{i}/attention", heads, shapes, biases=True))
        found.append(hidden_neurons(f"layers/{i}/intermediate", f"layers/{i}/output", shapes))
    return found


def pretrained_directory(spec: str, cache_dir: Optional[str] = None) -> str:
    """``model.pretrained``: a local directory in the Hugging Face layout, or a Hub id
    (``sentence-transformers/all-MiniLM-L6-v2``) fetched once by ``huggingface_hub`` into its cache
    (the ``text`` extra; the files this model reads, no others)."""
    if os.path.isdir(os.path.expanduser(spec)):
        return os.path.expanduser(spec)
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise LotteryError(f"model.pretrained={spec}: no such directory (nor a Hub id of the form owner/name)")
    try:
        import huggingface_hub
    except ImportError:
        raise LotteryError(
            f"model.pretrained={spec}: a Hub id needs huggingface_hub: pip install -e '.[text]' (or give a directory)"
        )
    try:
        return huggingface_hub.snapshot_download(
            spec, allow_patterns=["config.json", "model.safetensors", "tokenizer.json"], cache_dir=cache_dir
        )
    except Exception as error:  # offline, unknown repository, no access: many types
        raise LotteryError(f"model.pretrained={spec}: cannot be fetched from the Hub ({type(error).__name__}: {error})")
