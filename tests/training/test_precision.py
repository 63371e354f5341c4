"""training.precision=bfloat16 (mixed precision) and deterministic=true."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import child_env
from lottery import backend, imp
from lottery.errors import LotteryError
from lottery.pruning import masks
from lottery.results import invocations
from lottery.results.identity import experiment_hash
from lottery.training.trainer import stack, unstack
from test_masking import member_keys, random_mask


@pytest.mark.slow
def test_bfloat16_computes_in_bfloat16_keeps_float32_state_and_pruned_weights_exactly_zero(small_config):
    fp32, bf16 = imp.prepare(small_config()), imp.prepare(small_config("training.precision=bfloat16"))
    assert experiment_hash(fp32.cfg, fp32.data_fingerprint) != experiment_hash(bf16.cfg, bf16.data_fingerprint)
    assert experiment_hash(fp32.cfg, "x") == experiment_hash(small_config("training.precision=float32"), "x")
    trainer = bf16.trainer
    params, stats = trainer.init_params, trainer.init_batch_stats
    x = np.asarray(trainer.inputs(trainer.train_host[0][:32]))
    # The forward pass is the float32 model's with every parameter and input rounded to bfloat16.
    logits, _ = trainer.apply(params, stats, x, train=False)
    rounded = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    expected, _ = fp32.trainer.apply(rounded, stats, x.astype(jnp.bfloat16), train=False)
    assert logits.dtype == jnp.float32 and np.array_equal(np.asarray(logits), np.asarray(expected, np.float32))
    assert not np.array_equal(np.asarray(logits), np.asarray(fp32.trainer.apply(params, stats, x, train=False)[0]))
    # Training: float32 parameters and optimizer state, a pruned weight exactly 0.0 after every step.
    mask = random_mask(params, bf16.prunable, 0.3, seed=1)
    state = stack([trainer.init_state(params, stats, mask)])
    for step in range(5):
        state, loss = trainer.train(state, *member_keys(bf16), step, step + 1)
        assert np.isfinite(np.asarray(loss)).all()
        one = unstack(state, 0)
        assert {a.dtype for a in jax.tree.leaves(one["params"])} == {np.dtype(np.float32)}
        assert {a.dtype for a in jax.tree.leaves(one["opt_state"])} <= {np.dtype(np.float32), np.dtype(np.int32)}
        flat, kept = masks.flatten(one["params"]), masks.flatten(mask)
        for name in bf16.prunable:
            assert np.all(flat[name][~kept[name]] == 0.0) and not np.signbit(flat[name][~kept[name]]).any()


def test_bad_precision_is_one_line(small_config):
    with pytest.raises(
        LotteryError, match=r"training.precision='half' is not a precision; choose one of: float32, bfloat16"
    ):
        imp.check(small_config("training.precision=half"))


@pytest.mark.slow
def test_deterministic_sets_xla_flags_before_the_backend_starts_and_is_recorded(tmp_path):
    env = {k: v for k, v in child_env().items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lottery.run",
            "levels=0",
            "training.steps=20it",
            "progress=false",
            "deterministic=true",
            f"output_dir={tmp_path}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (directory,) = [d for d in tmp_path.iterdir() if d.name.startswith("quickstart-")]
    assert invocations.read(str(directory))[0]["program"]["deterministic"] is True
    # In a process whose backend started without the flag, asking for it is refused in one line.
    assert backend.started()
    with pytest.raises(LotteryError, match=r"deterministic=true: XLA's flags were fixed"):
        backend.deterministic(True, environ={"XLA_FLAGS": ""})
    assert backend.deterministic(False, environ={"XLA_FLAGS": backend.DETERMINISTIC}) is True  # the user's own flag
    assert backend.deterministic(False, environ={}) is False
