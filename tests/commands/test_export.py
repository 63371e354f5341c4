"""Exporting a network: a safetensors file that NumPy reads without lottery (or JAX), holding bitwise
the run's mask and weights, and the one-line errors of the command."""

import base64
import glob
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf
from rich.console import Console

from conftest import REPO, child_env, compose_config
from lottery import export, imp
from lottery.pruning import masks as pruning
from lottery.results.store import save_tree
from lottery.errors import LotteryError

# A level and a control after it, trained for 20 iterations: a real results tree in a few seconds.
TINY = [
    "model.hidden=[64,32]",
    "training.steps=20it",
    "training.eval_every=20it",
    "levels=1",
    "controls=[random_prune]",
    "progress=false",
]

# Reads the files given as arguments with safetensors and NumPy only; lottery, JAX, Flax and orbax
# cannot be imported. Checks what needs no run (pruned weights are 0, the density is the mask's) and
# prints every tensor's bytes and the metadata for the test to compare with the run's.
READER = r"""
import base64, importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("lottery", "jax", "jaxlib", "flax", "orbax"):
            raise ImportError(f"{name} is not for the reader")

sys.meta_path.insert(0, Refuse())
import numpy as np
import safetensors
from safetensors.numpy import load_file

out = {}
for path in sys.argv[1:]:
    tensors = load_file(path)
    with safetensors.safe_open(path, framework="np") as f:
        metadata = f.metadata()
    metrics = json.loads(metadata["metrics"])
    for name, mask in tensors.items():
        if name.startswith("mask."):
            for group in ("start", "trained"):
                weights = tensors[f"{group}.params.{name[len('mask.'):]}"]
                assert np.array_equal(weights * mask, weights) and np.all(weights[~mask] == 0.0), name
    masks = [tensors["mask." + layer.replace("/", ".")] for layer in metrics["layers"]]
    assert float(metadata["density"]) == sum(int(m.sum()) for m in masks) / sum(m.size for m in masks)
    out[path] = {"metadata": metadata, "tensors": {
        name: [a.dtype.str, list(a.shape), base64.b64encode(a.tobytes()).decode()] for name, a in tensors.items()}}
assert not any(m.split(".")[0] in ("lottery", "jax", "flax", "orbax") for m in sys.modules), sorted(sys.modules)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny experiment, trained, and lottery's view of it (``imp.prepare``: its orbax loader)."""
    cfg = compose_config([*TINY, f"output_dir={tmp_path_factory.mktemp('export') / 'runs'}"])
    imp.run(cfg, console=Console(file=io.StringIO()))
    return imp.prepare(cfg)


def expected_tensors(experiment, directory, layout="flax"):
    """What the file must hold, from the run's checkpoints as lottery loads them."""
    ticket, trained = experiment.load(directory, "ticket"), experiment.load(directory, "trained")
    dotted = lambda tree: {name.replace("/", "."): np.asarray(a) for name, a in pruning.flatten(tree).items()}
    out = {f"mask.{n}": a for n, a in dotted(ticket["mask"]).items()}
    for group, weights in (("start", ticket), ("trained", trained)):
        for collection in ("params", "batch_stats"):
            out.update({f"{group}.{collection}.{n}": a for n, a in dotted(weights[collection]).items()})
    return out


def read_without_lottery(tmp_path, *paths):
    """READER in a process whose path holds no lottery (the environment's PYTHONPATH removed, run
    from an empty directory; an editable install is refused by READER's import hook)."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in child_env().items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", READER, *map(str, paths)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_a_level_and_its_control_read_bitwise_by_numpy_alone(run, tmp_path, capsys):
    level = run.level_dir(0, 1)
    control = os.path.join(level, "random_prune")
    ticket_file, control_file = tmp_path / "ticket.safetensors", tmp_path / "control.safetensors"
    assert export.main([level, str(ticket_file)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {ticket_file}: 18 tensors, ")
    assert export.export(control, str(control_file))["tensors"] == 18

    read = read_without_lottery(tmp_path, ticket_file, control_file)
    config = OmegaConf.to_container(OmegaConf.load(os.path.join(run.directory, "config.yaml")))
    for directory, path, kind in ((level, ticket_file, "ticket"), (control, control_file, "random_prune")):
        expected, got = expected_tensors(run, directory), read[str(path)]["tensors"]
        assert sorted(got) == sorted(expected)
        for name, array in expected.items():
            dtype, shape, data = got[name]
            assert (dtype, tuple(shape)) == (array.dtype.str, array.shape) and base64.b64decode(
                data
            ) == array.tobytes(), name
        assert got["mask.hidden.0.kernel"][0] == "|b1"  # bool, as NumPy and PyTorch (torch.bool) load it

        metadata = read[str(path)]["metadata"]
        with open(os.path.join(directory, "metrics.json")) as f:
            metrics = json.load(f)
        assert json.loads(metadata["metrics"]) == metrics and json.loads(metadata["config"]) == config
        assert (metadata["kind"], metadata["level"], metadata["replicate"]) == (kind, "1", "0")
        assert json.loads(metadata["density"]) == metrics["density"] < 1.0
        assert metadata["experiment"] == os.path.basename(run.directory) == f"quickstart-{metadata['hash']}"
        assert metadata["source"] == os.path.abspath(directory) and metadata["format"] == export.FORMAT
        assert (metadata["layout"], metadata["weights"]) == ("flax", "both")
        assert json.loads(metadata["trained_by"]) == metrics["provenance"]
        assert json.loads(metadata["exported_by"])["lottery"] == metrics["provenance"]["lottery"]
    assert not glob.glob(str(tmp_path / "*.partial"))


@pytest.mark.slow
def test_read_gives_the_trees_lottery_saved(run, tmp_path):
    directory = run.level_dir(0, 1)
    export.export(directory, str(tmp_path / "t.safetensors"))
    read = export.read(str(tmp_path / "t.safetensors"))
    saved = {
        "mask": run.load(directory, "ticket")["mask"],
        "start": run.load(directory, "ticket"),
        "trained": run.load(directory, "trained"),
    }
    saved["start"].pop("mask")
    for key in ("mask", "start", "trained"):
        assert jax.tree.structure(read[key]) == jax.tree.structure(saved[key])
        for a, b in zip(jax.tree.leaves(read[key]), jax.tree.leaves(saved[key])):
            assert a.dtype == np.asarray(b).dtype and a.tobytes() == np.asarray(b).tobytes()
    assert read["metadata"]["level"] == 1 and read["metadata"]["config"]["name"] == "quickstart"


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["start", "trained"])
def test_weights_picks_a_group_and_keeps_the_masks(run, tmp_path, weights):
    path = tmp_path / "t.safetensors"
    assert export.main([run.level_dir(0, 1), str(path), "--weights", weights]) == 0
    names = set(export.read(str(path))) - {"metadata"}
    assert names == {"mask", weights}


@pytest.mark.slow
def test_torch_layout_computes_the_flax_forward_as_torch_does(run, tmp_path):
    """Linear: y = x W^T + b with W the Flax kernel transposed, bitwise and through the network."""
    directory = run.level_dir(0, 1)
    path = tmp_path / "torch.safetensors"
    assert export.main([directory, str(path), "--layout", "torch"]) == 0
    tensors = export.read(str(path))
    flat = {name: a for name, a in pruning.flatten({k: v for k, v in tensors.items() if k != "metadata"}).items()}
    expected = expected_tensors(run, directory)
    for name in ("hidden.0", "hidden.1", "output"):
        assert (
            flat[f"trained/{name.replace('.', '/')}/weight"].tobytes()
            == expected[f"trained.params.{name}.kernel"].T.copy().tobytes()
        )
        assert np.array_equal(flat[f"mask/{name.replace('.', '/')}/weight"], expected[f"mask.{name}.kernel"].T)
    assert set(tensors["trained"]) == {"hidden", "output"} and tensors["metadata"]["layout"] == "torch"

    # The network's logits: Flax's model against the forward pass PyTorch's nn.Linear computes.
    trained = run.load(directory, "trained")
    x = np.asarray(run.trainer.inputs(run.trainer.train_host[0][:16]))
    flax_logits = np.asarray(run.trainer.apply(trained["params"], trained["batch_stats"], x, False)[0])
    t = tensors["trained"]
    h = x.reshape(len(x), -1)
    for layer in (t["hidden"][0], t["hidden"][1]):
        h = np.maximum(h @ layer["weight"].T + layer["bias"], 0)
    np.testing.assert_allclose(h @ t["output"]["weight"].T + t["output"]["bias"], flax_logits, rtol=1e-5, atol=1e-5)


def test_torch_layout_of_a_conv_is_oihw_and_batch_norm_gets_torch_names():
    conv = nnx.Conv(3, 5, (3, 2), padding="VALID", rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype(np.float32)
    flax_out = np.asarray(conv(x)).transpose(0, 3, 1, 2)  # NHWC -> NCHW
    weight = export.torch_array("conv.kernel", np.asarray(conv.kernel[...]))
    assert weight.shape == (5, 3, 3, 2) and weight.flags.c_contiguous
    # torch.nn.functional.conv2d (cross-correlation, NCHW, OIHW) in closed form
    windows = np.lib.stride_tricks.sliding_window_view(x.transpose(0, 3, 1, 2), (3, 2), axis=(2, 3))
    torch_out = np.einsum("nchwij,ocij->nohw", windows, weight) + np.asarray(conv.bias[...])[:, None, None]
    np.testing.assert_allclose(torch_out, flax_out, rtol=1e-5, atol=1e-5)

    names = {n: export.torch_name(n) for n in ("bn.scale", "bn.bias", "bn.mean", "bn.var", "fc.0.kernel")}
    assert names == {
        "bn.scale": "bn.weight",
        "bn.bias": "bn.bias",
        "bn.mean": "bn.running_mean",
        "bn.var": "bn.running_var",
        "fc.0.kernel": "fc.0.weight",
    }
    # Conv-2's first fc layer takes a flattened (H, W, C) feature map: said; a global-pooled output is not.
    notes = export.flatten_notes(
        {
            "convs.1.kernel": np.zeros((3, 3, 64, 64)),
            "fc.0.kernel": np.zeros((16 * 64, 256)),
            "output.kernel": np.zeros((256, 10)),
        }
    )
    assert len(notes) == 1 and "not a conv's channel count: fc.0.weight 1024, output.weight 256;" in notes[0]
    assert not export.flatten_notes({"conv.kernel": np.zeros((3, 3, 16, 64)), "output.kernel": np.zeros((64, 10))})
    with pytest.raises(LotteryError, match="embed.embedding: no PyTorch name"):
        export.torch_name("embed.embedding")


# --- bad input: one line, exit code 2, nothing written --------------------------------------------


def damaged(run, tmp_path, damage):
    """A copy of the experiment with ``damage(level_dir)`` done to its level 1."""
    copy = tmp_path / os.path.basename(run.directory)
    shutil.copytree(run.directory, copy)
    level = os.path.join(str(copy), "replicate_0", "level_1")
    damage(level)
    return level


def remove(path):
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def scramble(directory):
    for path in glob.glob(os.path.join(directory, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "wb") as f:
                f.write(b"not a checkpoint")


def unpruned(run):
    def damage(level):
        ticket = run.load(level, "ticket")
        kernel = np.array(ticket["params"]["hidden"][0]["kernel"])
        kernel[~np.asarray(ticket["mask"]["hidden"][0]["kernel"])] = 0.5
        ticket["params"]["hidden"][0]["kernel"] = kernel
        shutil.rmtree(os.path.join(level, "ticket"))
        save_tree(os.path.join(level, "ticket"), ticket)

    return damage


def recount(level):
    with open(os.path.join(level, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["layers"]["hidden/1/kernel"]["remaining"] += 1
    with open(os.path.join(level, "metrics.json"), "w") as f:
        json.dump(metrics, f)


def overcount(level):
    with open(os.path.join(level, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["remaining"] += 1  # the layers' counts, which the mask has, left alone
    with open(os.path.join(level, "metrics.json"), "w") as f:
        json.dump(metrics, f)


CASES = {  # what is damaged -> (damage, what the line must say, where the level is)
    "not a level": (lambda level: None, "not a level directory; expected a finished network", ".."),
    "no such directory": (lambda level: None, "no such directory", "../level_9"),
    "ticket missing": (lambda level: remove(os.path.join(level, "ticket")), "ticket: missing; expected the orbax", "."),
    "ticket corrupt": (
        lambda level: scramble(os.path.join(level, "ticket")),
        "ticket: cannot be read as an orbax checkpoint",
        ".",
    ),
    "trained missing": (
        lambda level: remove(os.path.join(level, "trained")),
        "trained: missing; expected the orbax",
        ".",
    ),
    "config.yaml missing": (
        lambda level: remove(os.path.join(level, "..", "..", "config.yaml")),
        "config.yaml: missing",
        ".",
    ),
    "metrics.json missing": (
        lambda level: remove(os.path.join(level, "metrics.json")),
        "metrics.json: cannot be read",
        ".",
    ),
    "metrics disagree": (recount, "its mask of hidden/1/kernel does not have metrics.json's 1639 of 2048 weights", "."),
    "remaining disagrees": (
        overcount,
        "metrics.json: says 5204 of 6464 weights remain (density 0.80492), its mask keeps 5203 of 6464",
        ".",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_level_is_one_line_and_nothing_written(run, tmp_path, capsys, case):
    damage, says, where = CASES[case]
    level = os.path.normpath(os.path.join(damaged(run, tmp_path, damage), where))
    out = tmp_path / "out"
    out.mkdir()
    assert export.main([level, str(out / "t.safetensors")]) == 2
    stdout, stderr = capsys.readouterr()
    assert not stdout and stderr.count("\n") == 1 and stderr.startswith("error: ") and says in stderr, stderr
    assert str(tmp_path / os.path.basename(run.directory)) in stderr  # the path at fault is named
    assert not os.listdir(out)


@pytest.mark.slow
def test_pruned_weights_that_are_not_zero_are_refused(run, tmp_path, capsys):
    level = damaged(run, tmp_path, unpruned(run))
    assert export.main([level, str(tmp_path / "t.safetensors")]) == 2
    stderr = capsys.readouterr().err
    assert (
        stderr.count("\n") == 1
        and f"error: {level}/ticket: " in stderr
        and "pruned weights of hidden.0.kernel are not 0" in stderr
    )
    assert not glob.glob(str(tmp_path / "t.safetensors*"))


@pytest.mark.slow
def test_a_corrupt_checkpoint_is_one_line_from_the_command(run, tmp_path):
    """The real command (orbax's own reports and late tracebacks would show here, not in capsys)."""
    level = damaged(run, tmp_path, lambda level: scramble(os.path.join(level, "trained")))
    result = subprocess.run(
        [sys.executable, "-m", "lottery.export", level, str(tmp_path / "t.safetensors")],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {level}/trained: cannot be read"), (
        result.stderr
    )
    assert not glob.glob(str(tmp_path / "t.safetensors*"))


@pytest.mark.slow
def test_destinations_that_cannot_be_written(run, tmp_path, capsys):
    level = run.level_dir(0, 1)
    (tmp_path / "a_file").write_text("someone's file")
    cases = [
        (tmp_path, "is a directory"),
        (tmp_path / "no" / "t.safetensors", "does not exist"),
        (tmp_path / "a_file" / "t.safetensors", f"{tmp_path / 'a_file'} is a file, not a directory; choose another"),
    ]
    if os.path.isdir("/proc"):  # no file can be made there, not even by root
        cases.append(("/proc/t.safetensors", "cannot write the file there"))
    for path, says in cases:
        assert export.main([level, str(path)]) == 2
        stderr = capsys.readouterr().err
        assert stderr.count("\n") == 1 and stderr.startswith(f"error: {path}: ") and says in stderr, stderr
    assert not os.path.exists("/proc/t.safetensors.partial") and os.listdir(tmp_path) == ["a_file"]


@pytest.mark.slow
def test_an_existing_file_is_kept_unless_forced(run, tmp_path, capsys):
    path = tmp_path / "t.safetensors"
    path.write_text("someone's file")
    assert export.main([run.level_dir(0, 1), str(path)]) == 2
    assert "exists; it is kept" in capsys.readouterr().err and path.read_text() == "someone's file"
    assert export.main([run.level_dir(0, 1), str(path), "--force"]) == 0
    assert export.read(str(path))["metadata"]["kind"] == "ticket" and os.listdir(tmp_path) == ["t.safetensors"]


@pytest.mark.slow
def test_compact_of_a_ticket_with_no_unit_pruned_whole_is_one_line_and_nothing_written(run, tmp_path, capsys):
    level = run.level_dir(0, 1)  # weights pruned one by one: no neuron goes whole, no smaller network
    out = tmp_path / "t.safetensors"
    assert export.main([level, str(out), "--compact"]) == 2
    stdout, stderr = capsys.readouterr()
    assert not stdout and stderr.count("\n") == 1, stderr
    assert stderr.startswith(
        f"error: {level}: --compact: no unit (neuron, channel, head) of this ticket is pruned whole"
    )
    assert not glob.glob(str(tmp_path / "t.safetensors*"))
