"""model=bert (lottery/models/bert.py): the real pre-trained MiniLM (``$LOTTERY_DATA_DIR/all-MiniLM-L6-v2``,
a BERT encoder in the Hugging Face layout) against our own NumPy forward pass of the same files;
checkpoints that do not fit their config refused in one line; BERT's random initialization."""

import json
import os
import shutil

import numpy as np
import pytest

from lottery.errors import LotteryError
from lottery.models import bert

MINILM = os.path.join(os.environ.get("LOTTERY_DATA_DIR", os.path.expanduser("~/.cache/lottery")), "all-MiniLM-L6-v2")
needs_minilm = pytest.mark.skipif(not os.path.isdir(MINILM), reason=f"no {MINILM} (set LOTTERY_DATA_DIR)")


def numpy_bert(tensors: dict, config: dict, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """The last hidden states of BertModel, written from the paper and the checkpoint's names alone,
    in float64 NumPy: torch's Linear is x @ W.T + b, LayerNorm with the biased variance."""
    from scipy.special import erf

    t = {name: np.asarray(value, np.float64) for name, value in tensors.items()}
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]

    def norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * t[prefix + ".weight"] + t[prefix + ".bias"]

    linear = lambda x, prefix: x @ t[prefix + ".weight"].T + t[prefix + ".bias"]
    gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))
    batch, tokens = ids.shape
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:tokens][None]
    x = norm(x + t["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    d = x.shape[-1] // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (
            linear(x, p + f"attention.self.{n}").reshape(batch, tokens, heads, d) for n in ("query", "key", "value")
        )
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
        logits = np.where(attention[:, None, None, :] > 0, logits, -1e30)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        context = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, tokens, heads * d)
        x = norm(x + linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        x = norm(x + linear(gelu(linear(x, p + "intermediate.dense")), p + "output.dense"), p + "output.LayerNorm")
    return x


@needs_minilm
def test_the_real_minilm_equals_a_numpy_forward_pass_of_its_files():
    import jax
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    config = bert.read_config(MINILM)
    model = bert.load_pretrained(bert.build(config, 5, jax.random.key(0)), MINILM)
    tokenizer = Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    tokenizer.enable_padding(pad_id=config.pad_token_id, length=24)
    tokenizer.enable_truncation(24)
    texts = ["The lottery ticket hypothesis holds for pre-trained BERT networks.", "Shares rose 3% in London."]
    encoded = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], np.int32)
    attention = np.array([e.attention_mask for e in encoded], np.int32)
    assert attention[1].sum() < attention[0].sum() <= 24  # the second is padded
    assert ids[0, 0] == tokenizer.token_to_id("[CLS]") and ids[1, attention[1].sum() - 1] == tokenizer.token_to_id(
        "[SEP]"
    )

    ours = np.asarray(model.encode(ids, attention))
    reference = numpy_bert(
        load_file(os.path.join(MINILM, "model.safetensors")), json.load(open(f"{MINILM}/config.json")), ids, attention
    )
    real = attention.astype(bool)
    assert np.abs(ours[real] - reference[real]).max() < 2e-5  # float32 against float64, 6 layers (measured 1.7e-6)
    assert np.abs(reference[real]).max() > 1.0  # states of a trained network, not zeros

    # a padded token changes nothing of the others: the second text alone, unpadded, gives its states
    alone = tokenizer.encode(texts[1])
    n = attention[1].sum()
    assert alone.ids[:n] == list(ids[1, :n])
    unpadded = np.asarray(model.encode(np.array([alone.ids[:n]], np.int32), np.ones((1, n), np.int32)))
    assert np.abs(unpadded[0] - ours[1, :n]).max() < 1e-4

    logits = np.asarray(model(ids, attention))
    assert logits.shape == (2, 5) and np.all(np.isfinite(logits))


@needs_minilm
def test_units_are_heads_and_ffn_neurons_of_each_layer():
    import jax
    from flax import nnx

    config = bert.read_config(MINILM)
    model = bert.build(config, 5, jax.random.key(0))
    shapes = {"/".join(map(str, path)): v[...].shape for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    units = bert.units(shapes, config.num_attention_heads)
    assert [u.kind for u in units] == ["heads", "neurons"] * 6
    assert units[0].count == 12 and units[0].width == 32 and units[1].count == 1536
    assert units[0].producers == tuple(f"layers/0/attention/{p}/kernel" for p in ("query", "key", "value"))


def test_random_initialization_is_berts():
    """N(0, 0.02) weights and embeddings (the padding token's word embedding 0), zero biases, unit
    LayerNorms: the "no pre-training" control."""
    import jax
    from flax import nnx

    config = bert.BertConfig(
        vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256
    )
    model = bert.build(config, 3, jax.random.key(1))
    flat = {"/".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert np.all(flat["embeddings/word/embedding"][config.pad_token_id] == 0)
    for name, value in flat.items():
        if name.endswith("/bias"):
            assert np.all(value == 0), name
        elif name.endswith("/scale"):
            assert np.all(value == 1), name
        else:
            drawn = value if "word" not in name else np.delete(value, config.pad_token_id, axis=0)
            assert abs(drawn.std() - 0.02) < 0.1 * 0.02 and abs(drawn.mean()) < 0.01, name


def fake_checkpoint(directory, config: dict, tensors: dict):
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    save_file(tensors, os.path.join(directory, "model.safetensors"))


TINY = {"model_type": "bert", "vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}
TINY |= {"intermediate_size": 16, "max_position_embeddings": 12}


def tiny_tensors(prefix=""):
    """A checkpoint for TINY in torch's names and layouts, random."""
    config = bert.BertConfig(**{k: v for k, v in TINY.items() if k != "model_type"})
    rng = np.random.default_rng(0)
    tensors = {}
    for theirs, transposed, shape in bert.checkpoint_names(config).values():
        tensors[prefix + theirs] = rng.normal(size=shape[::-1] if transposed else shape).astype(np.float32)
    return tensors


def test_a_tiny_checkpoint_loads_by_name_and_transposes_torchs_linears(tmp_path):
    import jax
    from flax import nnx

    tensors = tiny_tensors("bert.")  # a model with a task head names its encoder bert.*
    tensors["classifier.weight"] = np.zeros((3, 8), np.float32)  # its own head: left
    fake_checkpoint(tmp_path, TINY, tensors)
    config = bert.read_config(str(tmp_path))
    model = bert.load_pretrained(bert.build(config, 3, jax.random.key(0)), str(tmp_path))
    flat = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert np.array_equal(
        flat["layers/0/intermediate/kernel"], tensors["bert.encoder.layer.0.intermediate.dense.weight"].T
    )
    assert np.array_equal(flat["embeddings/word/embedding"], tensors["bert.embeddings.word_embeddings.weight"])
    assert np.array_equal(flat["layers/0/output_norm/scale"], tensors["bert.encoder.layer.0.output.LayerNorm.weight"])
    assert np.any(flat["output/kernel"] != 0)  # the new classifier: BERT's initialization, not the checkpoint's head


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c, t: c.update(model_type="gpt2"), "model_type='gpt2' is not a BERT"),
        (lambda c, t: c.pop("hidden_size"), "missing hidden_size"),
        (lambda c, t: c.update(hidden_act="relu"), "hidden_act='relu' is not supported"),
        (lambda c, t: c.update(num_attention_heads=3), "hidden_size=8 is not a multiple of num_attention_heads=3"),
        (lambda c, t: c.update(position_embedding_type="relative_key"), "position_embedding_type='relative_key'"),
        (lambda c, t: t.pop("encoder.layer.0.output.dense.weight"), "no tensor encoder.layer.0.output.dense.weight"),
        (
            lambda c, t: c.update(intermediate_size=32),
            "encoder.layer.0.intermediate.dense.weight has shape (16, 8), config",
        ),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_file(tmp_path, change, expected):
    import jax

    config, tensors = dict(TINY), tiny_tensors()
    change(config, tensors)
    fake_checkpoint(tmp_path, config, tensors)
    with pytest.raises(LotteryError) as refused:
        bert.load_pretrained(bert.build(bert.read_config(str(tmp_path)), 2, jax.random.key(0)), str(tmp_path))
    message = str(refused.value)
    assert message.startswith(str(tmp_path)) and expected in message and "\n" not in message


def test_a_bfloat16_checkpoint_loads_widened_and_too_many_tokens_are_one_line(tmp_path):
    import jax
    import ml_dtypes
    from flax import nnx

    tensors = {name: value.astype(ml_dtypes.bfloat16) for name, value in tiny_tensors().items()}
    fake_checkpoint(tmp_path, TINY, tensors)
    model = bert.load_pretrained(bert.build(bert.read_config(str(tmp_path)), 2, jax.random.key(0)), str(tmp_path))
    flat = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    expected = tensors["encoder.layer.0.output.dense.weight"].astype(np.float32).T
    assert flat["layers/0/output/kernel"].dtype == np.float32 and np.array_equal(
        flat["layers/0/output/kernel"], expected
    )
    ids = np.ones((1, 13), np.int32)  # TINY has 12 positions: nnx.Embed would give NaN past them
    with pytest.raises(LotteryError, match="13 tokens are more than the checkpoint's max_position_embeddings=12"):
        model(ids, np.ones_like(ids))


def test_files_that_are_not_a_checkpoint_are_one_line(tmp_path):
    with pytest.raises(LotteryError, match=r"config\.json: not found"):
        bert.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LotteryError, match=r"config\.json: cannot be read as JSON"):
        bert.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    config = bert.read_config(str(tmp_path))
    with pytest.raises(LotteryError, match=r"model\.safetensors: not found"):
        bert.read_weights(str(tmp_path), config)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(LotteryError, match=r"model\.safetensors: cannot be read as safetensors"):
        bert.read_weights(str(tmp_path), config)
    shutil.rmtree(tmp_path)
    with pytest.raises(LotteryError, match=r"model\.pretrained=nope/x/y: no such directory"):
        bert.pretrained_directory("nope/x/y")
