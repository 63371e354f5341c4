"""``python -m lottery.export LEVEL_DIR FILE``: one trained network as a file anyone can read.

LEVEL_DIR is a finished network of an experiment, ``<output_dir>/<name>-<hash>/replicate_<r>/level_<L>/``
(the ticket) or a control inside it (``level_<L>/random_prune/``, ...); FILE is written in the
safetensors format, which NumPy and PyTorch read in one line without lottery or JAX::

    tensors = safetensors.numpy.load_file(FILE)      # or safetensors.torch.load_file(FILE)
    metadata = safetensors.safe_open(FILE, "np").metadata()

Tensors (``<path>``: the parameter's Flax module path with ``.`` between parts, ``hidden.0.kernel``):

  mask.<path>                  bool, every parameter's mask (True = kept; biases and batch-norm
                               scales are never pruned: all True)
  start.params.<path>          the weights training started from (θk ⊙ mask: ticket/)
  start.batch_stats.<path>     their batch-norm statistics (models with batch norm only)
  trained.params.<path>        the weights after training (trained/)
  trained.batch_stats.<path>   their batch-norm statistics

``--weights start`` or ``trained`` leaves the other group out; masks are always there. Values are
bitwise those of the run; a pruned weight is exactly 0 in both groups (a checkpoint where it is not
is refused, as are masks that disagree with metrics.json's counts, per layer and in all).

``--layout torch`` writes PyTorch's names and layouts instead, each group one ``state_dict``:
``start.<module>.<name>`` and ``trained.<module>.<name>`` for params and batch statistics
together, ``mask.<module>.<name>``; ``kernel`` becomes ``weight`` transposed to PyTorch's layout
(Dense (in, out) -> Linear (out, in); Conv HWIO -> OIHW), ``scale`` becomes ``weight``, ``mean``
and ``var`` become ``running_mean`` and ``running_var``. Each tensor is converted alone: a Dense
layer fed by a flattened feature map (Conv-2/4/6) takes its inputs in Flax's (H, W, C) order, so
flatten with ``x.permute(0, 2, 3, 1).flatten(1)`` in PyTorch (a note says so).

Metadata (strings, as safetensors has them; JSON where marked):

  format        ``lottery.export/1``: the version of this scheme
  layout        ``flax`` or ``torch``
  weights       ``both``, ``start`` or ``trained``: the groups in the file
  kind          ``ticket`` or the control (``random_prune``, ...)
  level         the level L (decimal)
  replicate     the replicate r (decimal)
  density       remaining / total prunable weights (JSON number, exact: metrics.json's)
  experiment    the experiment directory's name, ``<name>-<hash>``
  hash          the experiment hash (the content hash of config.yaml's identity)
  source        the level directory exported (absolute path)
  config        JSON: the experiment's config.yaml (its identity: every value that decides results)
  metrics       JSON: the network's metrics.json (accuracies, early stop, per-layer densities, history)
  trained_by    JSON: the provenance of the run that trained it (metrics.json's; absent if it has none)
  exported_by   JSON: lottery version, git commit and dirty flag of the code that exported it
  compact       JSON (``--compact`` only): each unit layer's kept units, by its kernel's name

``--compact`` writes the smaller dense network a structured ticket is (lottery/pruning/structure.py):
every unit (neuron, channel, head) that no kept weight reads or is read by is removed with its
kernel columns, bias and batch-norm entries and the next layer's input rows, so each layer is
narrower and the logits are the masked network's. The masks in the file are then all True but for
weights pruned inside kept units. An N:M ticket needs no compact form: ``--layout torch`` writes
each Linear weight as (out, in) with N of every M along ``in``, the dense layout that PyTorch's
``torch.sparse.to_sparse_semi_structured`` compresses (2:4, on an Ampere or newer GPU). A ticket
with no unit pruned whole (weights, N:M) has no smaller network: ``--compact`` refuses it in one
line rather than write the full one.

The file is written to ``FILE.partial`` and renamed into place, and an existing FILE is kept
unless ``--force``. Bad input is one line ``error: ...`` and exit code 2, with nothing written.
``read(FILE)`` gives the same back as nested dicts, for those who have lottery.
"""

import argparse
import json
import os
import sys
from typing import Dict

import numpy as np
import safetensors
import safetensors.numpy

import lottery
from lottery.errors import LotteryError
from lottery.pruning import controls
from lottery.results import paths
from lottery.results.identity import read_identity
from lottery.results.metrics import NETWORK_KEYS
from lottery.results.provenance import provenance
from lottery.results.store import read_flat, read_json, write_whole

FORMAT = "lottery.export/1"
WEIGHTS = ("both", "start", "trained")
LAYOUTS = ("flax", "torch")
JSON_METADATA = ("level", "replicate", "density", "config", "metrics", "trained_by", "exported_by", "compact")
TORCH_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
EXPECTED = (
    "expected a finished network: <output_dir>/<name>-<hash>/replicate_<r>/level_<L>/ or a control "
    "inside it ({}), with ticket/, trained/ and metrics.json"
)


# --- the level directory --------------------------------------------------------------------------


def locate(level_dir: str):
    """(experiment dir, replicate, level, kind) of a network's directory, from where it is."""
    path = os.path.abspath(level_dir)
    expected = EXPECTED.format(", ".join(c + "/" for c in controls.names()))
    if not os.path.isdir(path):
        raise LotteryError(
            f"{level_dir}: {'not a directory' if os.path.exists(path) else 'no such directory'}; {expected}"
        )
    found = paths.locate(path, controls.kinds())
    if found is None:
        raise LotteryError(f"{level_dir}: not a level directory; {expected}")
    return found


def load(level_dir: str) -> dict:
    """Everything exported from ``level_dir``, checked: its mask, start and trained weights,
    metrics.json, the experiment's config.yaml and where it all is."""
    experiment_dir, replicate, level, kind = locate(level_dir)
    metrics = read_json(paths.metrics_file(level_dir), NETWORK_KEYS)
    said = (metrics["level"], metrics["replicate"], metrics["kind"])
    if said != (level, replicate, kind):
        raise LotteryError(
            f"{paths.metrics_file(level_dir)}: is of level {said[0]}, replicate {said[1]}, "
            f"{said[2]}, not of level {level}, replicate {replicate}, {kind} where it lies; "
            "it was moved or copied there: export the directory it came from"
        )
    config = read_identity(
        experiment_dir,
        missing=f"{os.path.join(experiment_dir, 'config.yaml')}: missing; the experiment "
        f"directory above a level ({experiment_dir}) holds its identity there: export a level inside "
        "its experiment directory",
    )

    ticket = read_flat(paths.ticket_dir(level_dir), ("mask", "params", "batch_stats"))
    trained = read_flat(paths.trained_dir(level_dir), ("params", "batch_stats"))
    mask = ticket.pop("mask")
    check(level_dir, mask, ticket, trained, metrics)
    return {
        "mask": mask,
        "start": ticket,
        "trained": trained,
        "metrics": metrics,
        "config": config,
        "experiment_dir": experiment_dir,
    }


def check(level_dir: str, mask, start, trained, metrics) -> None:
    """What makes the file a ticket: a boolean mask for every parameter, start and trained weights
    of the same shapes, every pruned weight exactly 0, and the mask's counts those of metrics.json."""
    shapes = lambda flat: {name: (a.shape, a.dtype) for name, a in flat.items()}
    params = shapes(start["params"])
    if {name: shape for name, (shape, _) in params.items()} != {name: a.shape for name, a in mask.items()} or any(
        m.dtype != np.bool_ for m in mask.values()
    ):
        raise LotteryError(
            f"{paths.ticket_dir(level_dir)}: its mask is not one boolean array per parameter, "
            "shaped like it; it is corrupt"
        )
    if shapes(trained["params"]) != params or shapes(trained["batch_stats"]) != shapes(start["batch_stats"]):
        raise LotteryError(
            f"{paths.trained_dir(level_dir)}: its weights are not shaped like those of ticket/ "
            "beside it; the two are of different networks"
        )
    for group, weights in (("ticket", start["params"]), ("trained", trained["params"])):
        for name, m in mask.items():
            nonzero = int(np.count_nonzero(weights[name][~m]))
            if nonzero:
                raise LotteryError(
                    f"{os.path.join(level_dir, group)}: {nonzero} pruned weights of {name} are not 0 "
                    "(the mask in ticket/ says they are pruned); it does not hold this ticket"
                )
    for layer, count in metrics["layers"].items():
        name = layer.replace("/", ".")
        if name not in mask or (int(mask[name].sum()), mask[name].size) != (count["remaining"], count["total"]):
            raise LotteryError(
                f"{paths.ticket_dir(level_dir)}: its mask of {layer} does not have metrics.json's "
                f"{count['remaining']} of {count['total']} weights; the two are of different networks"
            )
    # The totals the file's metadata copies: the sum of the layers just checked against the mask.
    kept, total = (sum(count[key] for count in metrics["layers"].values()) for key in ("remaining", "total"))
    said = (metrics["remaining"], metrics.get("total", total), metrics["density"])
    if said != (kept, total, kept / total if total else said[2]):
        raise LotteryError(
            f"{paths.metrics_file(level_dir)}: says {said[0]} of {said[1]} weights remain "
            f"(density {said[2]:.6g}), its mask keeps {kept} of {total}; it was edited or damaged"
        )


# --- names and layouts ----------------------------------------------------------------------------


def tensors(network: dict, weights: str = "both", layout: str = "flax") -> Dict[str, np.ndarray]:
    """The file's tensors by name (the module docstring)."""
    groups = ["start", "trained"] if weights == "both" else [weights]
    if layout == "flax":
        out = {f"mask.{name}": m for name, m in network["mask"].items()}
        for group in groups:
            for collection in ("params", "batch_stats"):
                out.update({f"{group}.{collection}.{name}": a for name, a in network[group][collection].items()})
        return out
    out = {f"mask.{torch_name(name)}": torch_array(name, m) for name, m in network["mask"].items()}
    for group in groups:
        for collection in ("params", "batch_stats"):
            for name, array in network[group][collection].items():
                key = f"{group}.{torch_name(name)}"
                if key in out:
                    raise LotteryError(
                        f"{name} and another parameter both become {key} in PyTorch's names; export with --layout flax"
                    )
                out[key] = torch_array(name, array)
    return out


def torch_name(name: str) -> str:
    """``hidden.0.kernel`` -> ``hidden.0.weight``, ``bn.mean`` -> ``bn.running_mean``."""
    module, _, leaf = name.rpartition(".")
    if leaf not in TORCH_NAMES:
        raise LotteryError(
            f"{name}: no PyTorch name for a Flax {leaf!r} (known: {', '.join(TORCH_NAMES)}); export with --layout flax"
        )
    return f"{module}.{TORCH_NAMES[leaf]}" if module else TORCH_NAMES[leaf]


def torch_array(name: str, array: np.ndarray) -> np.ndarray:
    """A Flax kernel (spatial..., in, out) in PyTorch's layout (out, in, spatial...): a Dense
    kernel (in, out) becomes a Linear weight (out, in), a Conv kernel HWIO becomes OIHW; every
    other tensor is the same in both."""
    if name.rpartition(".")[2] != "kernel" or array.ndim < 2:
        return array
    n = array.ndim
    return np.ascontiguousarray(array.transpose(n - 1, n - 2, *range(n - 2)))


def flatten_notes(params: Dict[str, np.ndarray]):
    """A note for a conv net with Dense layers that may take a flattened feature map (their inputs
    are not the channel count of any conv): in PyTorch their inputs must come in Flax's (H, W, C) order."""
    channels = {a.shape[-1] for name, a in params.items() if name.endswith(".kernel") and a.ndim == 4}
    dense = [
        f"{torch_name(name)} {a.shape[0]}"
        for name, a in params.items()
        if channels and name.endswith(".kernel") and a.ndim == 2 and a.shape[0] not in channels
    ]
    if not dense:
        return []
    return [
        f"inputs that are not a conv's channel count: {', '.join(dense)}; the layer fed by a flattened conv feature "
        "map takes it in Flax's (H, W, C) order: in PyTorch flatten with x.permute(0, 2, 3, 1).flatten(1) before it"
    ]


# --- the file -------------------------------------------------------------------------------------


def metadata(network: dict, level_dir: str, weights: str, layout: str) -> Dict[str, str]:
    """The file's metadata (the module docstring), every value a string."""
    metrics, experiment = network["metrics"], os.path.basename(network["experiment_dir"])
    code = provenance()
    out = {
        "format": FORMAT,
        "layout": layout,
        "weights": weights,
        "kind": metrics["kind"],
        "level": str(metrics["level"]),
        "replicate": str(metrics["replicate"]),
        "density": json.dumps(metrics["density"]),
        "experiment": experiment,
        "hash": experiment.rpartition("-")[2],
        "source": os.path.abspath(level_dir),
        "config": json.dumps(network["config"]),
        "metrics": json.dumps(metrics),
        "exported_by": json.dumps({"lottery": lottery.__version__, "commit": code["commit"], "dirty": code["dirty"]}),
    }
    if "provenance" in metrics:
        out["trained_by"] = json.dumps(metrics["provenance"])
    return out


def destination(path: str, force: bool) -> None:
    """Fail before reading anything if ``path`` cannot be the file written."""
    if os.path.isdir(path):
        raise LotteryError(
            f"{path}: is a directory; give the file to write, e.g. {os.path.join(path, 'ticket.safetensors')}"
        )
    if os.path.lexists(path) and not force:
        raise LotteryError(f"{path}: exists; it is kept: choose another file, or pass --force to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        found = parent  # the nearest part of the path that exists: a file where a directory should be?
        while not os.path.lexists(found):
            found = os.path.dirname(found)
        if not os.path.isdir(found):
            raise LotteryError(f"{path}: {found} is a file, not a directory; choose another file")
        raise LotteryError(f"{path}: the directory {parent} does not exist; make it first or choose another file")


def compacted(network: dict, level_dir: str) -> dict:
    """``network`` (``load``) as its compact network (``--compact``; pruning/structure.py: pruned units
    removed, every kept weight and logit the same), with the kept units of each layer. A ticket with
    no unit pruned whole (weights, N:M) has no smaller network: refused, rather than written full."""
    from omegaconf import OmegaConf

    from lottery import models
    from lottery.pruning import structure

    slash = lambda flat: {name.replace(".", "/"): a for name, a in flat.items()}
    dot = lambda flat: {name.replace("/", "."): a for name, a in flat.items()}
    mask = slash(network["mask"])
    units = models.units(OmegaConf.create(network["config"]["model"]), {n: a.shape for n, a in mask.items()})
    trees = {f"{g}/{c}": slash(network[g][c]) for g in ("start", "trained") for c in ("params", "batch_stats")}
    mask, trees, kept = structure.compact(mask, trees, units)
    if all(len(kept[layer.producers[0]]) == layer.count for layer in units):
        raise LotteryError(
            f"{level_dir}: --compact: no unit (neuron, channel, head) of this ticket is pruned whole "
            "(its weights are pruned one by one, or N of every M): its compact network is the full "
            "one; export it without --compact"
        )
    out = {**network, "mask": dot(mask), "compact": {name.replace("/", "."): k for name, k in kept.items()}}
    for group in ("start", "trained"):
        out[group] = {c: dot(trees[f"{group}/{c}"]) for c in ("params", "batch_stats")}
    return out


def export(
    level_dir: str, path: str, weights: str = "both", layout: str = "flax", force: bool = False, compact: bool = False
) -> dict:
    """Write the network of ``level_dir`` to the safetensors file ``path`` (module docstring).
    Returns a summary: path, tensors, bytes, kind, level, replicate, density, notes."""
    if weights not in WEIGHTS:
        raise LotteryError(f"weights={weights!r}: choose one of {', '.join(WEIGHTS)}")
    if layout not in LAYOUTS:
        raise LotteryError(f"layout={layout!r}: choose one of {', '.join(LAYOUTS)}")
    destination(path, force)
    network = load(level_dir)
    if compact:
        network = compacted(network, level_dir)
    out = {name: np.ascontiguousarray(a) for name, a in tensors(network, weights, layout).items()}  # safetensors
    # writes an array's memory as it is: one in another order (a compact network's slices) would be scrambled
    notes = flatten_notes(network["start"]["params"]) if layout == "torch" else []
    meta = metadata(network, level_dir, weights, layout)
    if compact:
        meta["compact"] = json.dumps(network["compact"])
    data = safetensors.numpy.save(out, metadata=meta)  # bytes: written here, so that OS errors are ours to name

    def write(partial):
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def still_free():
        if os.path.lexists(path) and not force:  # appeared while this one was written
            raise LotteryError(f"{path}: exists; it is kept: choose another file, or pass --force to replace it")

    try:
        write_whole(path, write, before=still_free)
    except OSError as error:
        raise LotteryError(
            f"{path}: cannot write the file there ({error.strerror or error}); choose another file"
        ) from None
    metrics = network["metrics"]
    return {
        "path": path,
        "tensors": len(out),
        "bytes": os.path.getsize(path),
        "kind": metrics["kind"],
        "level": metrics["level"],
        "replicate": metrics["replicate"],
        "density": metrics["density"],
        "notes": notes,
    }


def read(path: str) -> dict:
    """A file written by ``export`` as nested dicts: ``{"metadata": ..., "mask": ..., "start": {"params",
    "batch_stats"}, "trained": {...}}`` (the groups in the file), the JSON metadata decoded and
    integer parts of a path as ints (Flax NNX's lists), so that a flax-layout file gives the trees
    lottery saved. Reading needs none of this: ``safetensors.numpy.load_file`` does it."""
    try:
        with safetensors.safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
        flat = safetensors.numpy.load_file(path)
    except Exception as error:  # a missing file, a file that is not safetensors
        raise LotteryError(f"{path}: cannot be read as a safetensors file ({type(error).__name__}: {error})") from None
    if meta.get("format") != FORMAT:
        raise LotteryError(f"{path}: format {meta.get('format')!r}, not {FORMAT!r}: not written by lottery.export")
    groups = ["start", "trained"] if meta["weights"] == "both" else [meta["weights"]]
    out = {"metadata": {k: json.loads(v) if k in JSON_METADATA else v for k, v in meta.items()}, "mask": {}}
    for group in groups:
        out[group] = {"params": {}, "batch_stats": {}} if meta["layout"] == "flax" else {}
    for name, array in flat.items():
        node = out
        *parents, leaf = [int(part) if part.isdigit() else part for part in name.split(".")]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = array
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lottery.export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "level_dir",
        help="a finished network: <output_dir>/<name>-<hash>/replicate_<r>/level_<L>/ or a control inside it",
    )
    parser.add_argument("file", help="the safetensors file to write")
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="both",
        help="start (ticket/: θk ⊙ mask), trained (trained/) or both (default); masks are always written",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="flax",
        help="flax (default: Flax names and layouts) or torch (state_dict names, kernels transposed)",
    )
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="the smaller dense network a structured ticket is: pruned units removed (same logits)",
    )
    args = parser.parse_args(argv)
    try:
        summary = export(args.level_dir, args.file, args.weights, args.layout, args.force, args.compact)
    except LotteryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"wrote {summary['path']}: {summary['tensors']} tensors, {summary['bytes']} bytes; level {summary['level']}, "
        f"replicate {summary['replicate']}, {summary['kind']}, {100 * summary['density']:.2f}% of weights remaining"
    )
    return 0


if __name__ == "__main__":
    import jax

    jax.config.update("jax_platforms", "cpu")  # reading a checkpoint needs no accelerator: leave a busy GPU alone
    sys.exit(main())
