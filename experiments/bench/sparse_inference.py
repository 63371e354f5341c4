"""Inference of trained IMP tickets: the dense masked network vs sparse execution, at each density.

Does a ticket run faster sparse? For every level of replicate 0 of an IMP experiment on a fully
connected model (LeNet-300-100, the quickstart MLP), the trained weights run as

  JAX dense    the network as lottery runs it today: the model (Flax NNX) applied in one jitted
               program to the trained weights, pruned weights held as zeros;
  BCOO, BCSR   jax.experimental.sparse, jitted: each layer is W^T @ h, the sparse weight on the
               left of features-major activations h (the layout cuSPARSE's SpMM takes; on a GPU
               both lower to cuSPARSE, on a CPU BCOO is a gather + scatter-add and BCSR has its
               own kernel);
  NumPy dense  the same layer arithmetic in NumPy (BLAS) on the host, activations features-major,
               BLAS on one thread (``--blas-threads``) as SciPy's sparse kernels run;
  SciPy CSR    W^T as scipy.sparse CSR @ h, bias and ReLU in NumPy, beside NumPy dense so that
               comparison is like for like.

Each is timed at batch 1 (latency: median and range of per-forward ms over repeats) and at a large
batch (throughput: examples/s), after a warm-up call that compiles, every call blocked on
(``block_until_ready``), in rounds that time the five paths one after another (so that load from
elsewhere on a shared machine falls on all of them), with a pause before each (XLA's worker
threads spin for a while after a long call, and slowed the BLAS call after it by a third or more).
Speed-ups are measured side by side in this one run, as the median over rounds of the ratio within
a round: BCOO and BCSR against JAX dense, SciPy CSR against NumPy dense. Also: the bytes of each
ticket's weight matrices as dense float32, BCOO (data + indices) and CSR (data + indices + indptr),
and the test accuracy of every path on the whole test set. The script fails (exit 1) where a
sparse path's accuracy differs from the dense network's, or where the dense network's differs from
the accuracy lottery recorded for the level (``final.test_accuracy`` in its metrics.json): the
benchmark measures the real network.

The tickets come from ``--results <experiment dir>`` (an existing results tree: replicate 0, every
level, trained weights; ``--data-root`` must hold its data set) or, by default, from a short IMP
run trained here first: LeNet-300-100 on MNIST, ``--steps`` per level, 50% of the weights pruned
per level for ``--levels`` levels (F&C's 10% for the output layer), into ``--output`` (default: a
temporary directory, removed at the end). Conv models are out of scope (see docs/benchmarks.md).

    python experiments/bench/sparse_inference.py [--levels 9] [--steps 2000it] [--batch 1024]
        [--repeats 9] [--blas-threads 1] [--data-root ../shared/data] [--output DIR] [--results DIR] [--smoke]
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np
import scipy
import scipy.sparse
from jax.experimental import sparse
from omegaconf import OmegaConf
from rich.console import Console
from threadpoolctl import threadpool_limits

from common import compose_config, machine
from lottery import analysis, imp
from lottery.analysis import tickets
from lottery.results.store import read_json
from lottery.results.identity import read_identity

PATHS = ("JAX dense", "BCOO", "BCSR", "NumPy dense", "SciPy CSR")
BASELINE = {"BCOO": "JAX dense", "BCSR": "JAX dense", "SciPy CSR": "NumPy dense"}


# --- the tickets ------------------------------------------------------------------------------


def train_tickets(args, output: str) -> str:
    """Run a short IMP experiment with lottery (resumes where ``output`` already holds it); its directory."""
    if args.smoke:  # the quickstart's LeNet-300-100 on scikit-learn's bundled digits: offline, seconds
        overrides = ["+exp=quickstart", "training.steps=3ep", "training.eval_every=3ep"]
    else:
        overrides = [
            "+exp=lenet",
            f"dataset.root={args.data_root}",
            "dataset.download=false",
            f"training.steps={args.steps}",
            f"training.eval_every={args.steps}",
        ]
    cfg = compose_config(
        [
            *overrides,
            f"levels={args.levels}",
            "pruning.rate=0.5",
            f"output_dir={output}",
            "progress=false",
            "wandb.mode=disabled",
        ]
    )
    imp.run(cfg, Console(file=io.StringIO()))
    return imp.prepare(cfg).directory


def open_experiment(directory: str, data_root: str):
    """The ``imp.Experiment`` of a results directory, rebuilt from its config.yaml; it must hash to
    the same directory (the same config and the same data: the fingerprint is part of the hash)."""
    saved = read_identity(directory)
    saved["dataset"].pop("fingerprint", None)
    cfg = OmegaConf.merge(compose_config([]), saved)
    cfg.dataset.root, cfg.dataset.download = data_root, False
    cfg.output_dir, cfg.wandb.mode = os.path.dirname(os.path.abspath(directory)), "disabled"
    if cfg.model.name != "lenet":
        sys.exit(
            f"{directory}: model {cfg.model.name} is convolutional; this benchmark covers fully connected "
            "models only (see experiments/bench/README.md)"
        )
    experiment = imp.prepare(cfg)
    if os.path.abspath(experiment.directory) != os.path.abspath(directory):
        sys.exit(
            f"{directory}: its config.yaml with the data under {data_root} hashes to "
            f"{os.path.basename(experiment.directory)}: not the same data (or experiment)"
        )
    return experiment


def levels_of(experiment):
    """(level, metrics, layers) of replicate 0's tickets: layers are (kernel (in, out), bias, mask)
    in the order the model applies them, the trained weights as saved."""
    found = []
    runs = analysis.load_runs(experiment.directory)  # finished levels only (not level_3.partial)
    for _, network in runs[(runs.replicate == 0) & (runs.kind == "ticket")].iterrows():
        level_dir = tickets.network_dir(network)
        trained = experiment.load(level_dir, "trained")["params"]
        mask = experiment.load(level_dir, "ticket")["mask"]
        names = [("hidden", i) for i in sorted(trained["hidden"])] + [("output",)]
        layers = []
        for name in names:
            weights, kept = trained, mask
            for key in name:
                weights, kept = weights[key], kept[key]
            kernel, keep = np.asarray(weights["kernel"], np.float32), np.asarray(kept["kernel"], bool)
            if np.any(kernel[~keep]):
                sys.exit(f"FAIL: {level_dir}: trained weights outside the mask are not zero")
            layers.append((kernel, np.asarray(weights["bias"], np.float32), keep))
        found.append((int(network.level), read_json(os.path.join(level_dir, "metrics.json")), layers))
    return sorted(found, key=lambda row: row[0])


# --- the five ways to run a ticket ------------------------------------------------------------


def sparse_parts(kernel, keep):
    """The kept weights of W^T (out, in) as COO/CSR arrays, in row-major order (sorted, unique):
    exactly the ticket's weights, even one that trained to 0.0."""
    rows, cols = np.nonzero(keep.T)
    data = kernel.T[rows, cols]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=keep.shape[1]))]).astype(np.int32)
    return data, rows.astype(np.int32), cols.astype(np.int32), indptr


def jax_sparse_forward(ws, bs, xt):
    """Features-major forward: h <- relu(W^T @ h + b), the last layer without ReLU; logits (batch, classes)."""
    h = xt
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = w @ h + b[:, None]
        if i < len(ws) - 1:
            h = jax.nn.relu(h)
    return h.T


def numpy_forward(ws, bs, xt):
    h = xt
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = w @ h  # ndarray for both a dense array and a scipy.sparse CSR matrix
        h += b[:, None]
        if i < len(ws) - 1:
            np.maximum(h, 0, out=h)
    return h.T


def runners(experiment, layers):
    """name -> (run(x_batch_major, xt_features_major) -> logits, bytes of the weight matrices)."""
    trainer = experiment.trainer
    params = {
        "hidden": {i: {"kernel": k, "bias": b} for i, (k, b, _) in enumerate(layers[:-1])},
        "output": {"kernel": layers[-1][0], "bias": layers[-1][1]},
    }
    params, batch_stats = jax.device_put((params, trainer.init_batch_stats))
    dense = jax.jit(lambda p, x: trainer.apply(p, batch_stats, x, train=False)[0])

    biases = [b for _, b, _ in layers]
    bcoo, bcsr, csr = [], [], []
    for kernel, _, keep in layers:
        data, rows, cols, indptr = sparse_parts(kernel, keep)
        shape = kernel.T.shape
        bcoo.append(
            sparse.BCOO((data, np.stack([rows, cols], 1)), shape=shape, indices_sorted=True, unique_indices=True)
        )
        bcsr.append(sparse.BCSR((data, cols, indptr), shape=shape, indices_sorted=True, unique_indices=True))
        csr.append(scipy.sparse.csr_matrix((data, cols, indptr), shape=shape))
    dense_t = [np.ascontiguousarray(k.T) for k, _, _ in layers]
    jax_sparse = jax.jit(jax_sparse_forward)
    device = lambda tree: jax.device_put(tree)
    bcoo, bcsr, jbiases = device(bcoo), device(bcsr), device(biases)

    nbytes = lambda *arrays: sum(np.asarray(a).nbytes for a in arrays)
    return {
        "JAX dense": (lambda x, xt: dense(params, x), nbytes(*dense_t)),
        "BCOO": (lambda x, xt: jax_sparse(bcoo, jbiases, xt), sum(nbytes(m.data, m.indices) for m in bcoo)),
        "BCSR": (lambda x, xt: jax_sparse(bcsr, jbiases, xt), sum(nbytes(m.data, m.indices, m.indptr) for m in bcsr)),
        "NumPy dense": (lambda x, xt: numpy_forward(dense_t, biases, xt), nbytes(*dense_t)),
        "SciPy CSR": (
            lambda x, xt: numpy_forward(csr, biases, xt),
            sum(nbytes(m.data, m.indices, m.indptr) for m in csr),
        ),
    }


def inputs(path: str, x: np.ndarray):
    """The batch as the path takes it: (x, x^T) on the JAX device for JAX, on the host for NumPy."""
    xt = np.ascontiguousarray(x.T)
    return jax.device_put((x, xt)) if path in ("JAX dense", "BCOO", "BCSR") else (x, xt)


# --- measuring --------------------------------------------------------------------------------


def timed(paths, x, repeats: int, min_time: float):
    """path -> seconds per forward in each of ``repeats`` rounds. Every path is warmed up
    (compiled) and given enough calls to last ``min_time``; then each round times every path once,
    one after another, every call blocked on. Interleaving the paths puts a burst of load from
    elsewhere on the machine into one round of all of them rather than into one path's timings."""
    batches, calls = {}, {}
    for path, (run, _) in paths.items():
        batches[path] = inputs(path, x)
        jax.block_until_ready(run(*batches[path]))
        calls[path], start = 0, time.perf_counter()
        while calls[path] == 0 or time.perf_counter() - start < min_time:
            jax.block_until_ready(run(*batches[path]))
            calls[path] += 1
    times = {path: [] for path in paths}
    for _ in range(repeats):
        for path, (run, _) in paths.items():
            time.sleep(min_time)  # the previous path's threads go idle
            start = time.perf_counter()
            for _ in range(calls[path]):
                jax.block_until_ready(run(*batches[path]))
            times[path].append((time.perf_counter() - start) / calls[path])
    return {path: np.asarray(t) for path, t in times.items()}


def speedup(times, path):
    """Median over rounds of the dense baseline's time over the sparse path's, in the same round."""
    return float(np.median(times[BASELINE[path]] / times[path]))


def logits_on(run, path, images, batch: int):
    return np.concatenate([np.asarray(run(*inputs(path, images[i : i + batch]))) for i in range(0, len(images), batch)])


def wins_from(densities, speedups):
    """The highest density from which the sparse path is faster at it and at every lower one."""
    start = None
    for density, speedup in zip(densities, speedups):
        if speedup > 1:
            start = density if start is None else start
        else:
            start = None
    if start is None:
        return "never"
    return "at every density" if start == densities[0] else f"from {100 * start:.3g}% density down"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", help="an experiment directory (runs/<name>-<hash>) to take the tickets from")
    parser.add_argument("--data-root", default=os.environ.get("LOTTERY_DATA_DIR", "~/.cache/lottery"))
    parser.add_argument("--output", help="where to train the tickets (default: a temporary directory, removed)")
    parser.add_argument("--levels", type=int, default=9, help="pruning levels to train (50%% each)")
    parser.add_argument("--steps", default="2000it", help="training steps per level")
    parser.add_argument("--batch", type=int, default=1024, help="the large batch (throughput)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds each repeat lasts at least")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="NumPy dense's BLAS threads (1: as SciPy's sparse products; on a busy 2-core machine "
        "a 2-thread BLAS waits on its slower thread and ran up to 17x slower)",
    )
    parser.add_argument("--smoke", action="store_true", help="quickstart-size tickets (digits), few repeats")
    args = parser.parse_args()
    if args.smoke:
        args.levels, args.repeats, args.min_time = 2, 2, 0.002

    if args.results:
        experiment = open_experiment(args.results, args.data_root)
        levels = levels_of(experiment)
    else:
        output = args.output or tempfile.mkdtemp(prefix="sparse_inference-")
        began = time.perf_counter()
        directory = train_tickets(args, output)
        print(
            f"trained {args.levels + 1} levels into {directory} in {time.perf_counter() - began:.0f} s", file=sys.stderr
        )
        experiment = open_experiment(directory, args.data_root)
        levels = levels_of(experiment)
        if not args.output:
            shutil.rmtree(output)
    if not levels:
        sys.exit(f"{experiment.directory}: no finished levels in replicate_0")

    trainer = experiment.trainer
    test_x, test_y = trainer.eval_host["test"][0], trainer.eval_host["test"][1]
    n_test = int(np.sum(trainer.eval_host["test"][2]))
    images = np.asarray(trainer.inputs(test_x.reshape(-1, *test_x.shape[2:])))[:n_test]  # normalized, as lottery
    images = images.reshape(n_test, -1)
    labels = test_y.reshape(-1)[:n_test]
    batch = min(args.batch, n_test)
    densities = [metrics["density"] for _, metrics, _ in levels]
    cfg = experiment.cfg
    print(f"machine: {machine()}")
    print(
        f"numpy {np.__version__}, scipy {scipy.__version__}; JAX paths on {jax.default_backend()}, "
        f"NumPy/SciPy on the host CPU, BLAS on {args.blas_threads} thread(s)"
    )
    where = experiment.directory + (
        " (trained here, in a temporary directory since removed)" if not args.results and not args.output else ""
    )
    print(
        f"tickets: {where}, replicate 0, levels {levels[0][0]}-{levels[-1][0]}: "
        f"{cfg.model.name} {list(cfg.model.hidden)} on {cfg.dataset.name}, trained {cfg.training.steps} per level, "
        f"pruning.rate {cfg.pruning.rate}"
    )

    threadpool_limits(args.blas_threads, user_api="blas")  # after training: NumPy dense and SciPy CSR only
    timings = {}  # (level, batch) -> path -> (median, min, max) seconds per forward
    memory, checks, failed = {}, [], False
    for level, metrics, layers in levels:
        paths = runners(experiment, layers)
        memory[level] = {path: paths[path][1] for path in ("JAX dense", "BCOO", "SciPy CSR")}
        logits = {path: logits_on(run, path, images, batch) for path, (run, _) in paths.items()}
        correct = {path: int(np.sum(np.argmax(z, -1) == labels)) for path, z in logits.items()}
        recorded = round(metrics["final"]["test_accuracy"] * n_test)
        differ = max(float(np.max(np.abs(z - logits["JAX dense"]))) for z in logits.values())
        flips = max(int(np.sum(np.argmax(z, -1) != np.argmax(logits["JAX dense"], -1))) for z in logits.values())
        same = len(set(correct.values())) == 1 and correct["JAX dense"] == recorded
        failed |= not same
        checks.append((level, metrics["density"], recorded, correct, differ, flips, same))
        for size in (1, batch):
            timings[level, size] = timed(paths, images[:size], args.repeats, args.min_time)

    report(args, levels, densities, batch, n_test, checks, timings, memory)
    if failed:
        sys.exit("FAIL: a path's test accuracy differs from the dense masked network's or from lottery's record")
    print("accuracies: every path equals the dense masked network, which equals lottery's record, at every level")


def speed(seconds, size):
    """A timing cell: ms per forward at batch 1, thousands of examples/s at a larger batch."""
    median, low, high = np.median(seconds), np.min(seconds), np.max(seconds)
    if size == 1:
        return f"{1e3 * median:.3f} [{1e3 * low:.3f}-{1e3 * high:.3f}]"
    rate = lambda seconds, digits: (
        f"{size / seconds / 1e3:.{digits}g}" if size / seconds < 10 ** (digits + 2) else f"{size / seconds / 1e3:.0f}"
    )  # no 1.08e+03
    return f"{rate(median, 4)} [{rate(high, 3)}-{rate(low, 3)}]"


def report(args, levels, densities, batch, n_test, checks, timings, memory):
    print(f"\naccuracy on the {n_test} test examples (number correct); lottery: its metrics.json final.test_accuracy")
    print(
        f"{'level':>5s} {'density':>8s} {'lottery':>8s} "
        + " ".join(f"{p:>11s}" for p in PATHS)
        + f" {'max |dlogit|':>12s} {'pred. differ':>12s} {'accuracies':>10s}"
    )
    for level, density, recorded, correct, differ, flips, same in checks:
        print(
            f"{level:5d} {100 * density:7.2f}% {recorded:8d} "
            + " ".join(f"{correct[p]:11d}" for p in PATHS)
            + f" {differ:12.2e} {flips:12d} {'equal' if same else 'DIFFER':>10s}"
        )

    for size in (1, batch):
        unit = "ms per forward" if size == 1 else "thousand examples/s"
        print(
            f"\nbatch {size}: {unit}, median [min-max] of {args.repeats} repeats; "
            "x = speed-up over its dense baseline, median of the rounds' ratios"
        )
        print(f"{'density':>8s} " + " ".join(f"{p:>24s}" + (f" {'x':>6s}" if p in BASELINE else "") for p in PATHS))
        for (level, _, _), density in zip(levels, densities):
            cells = []
            for path in PATHS:
                cells.append(f"{speed(timings[level, size][path], size):>24s}")
                if path in BASELINE:
                    cells.append(f"{speedup(timings[level, size], path):5.2f}x")
            print(f"{100 * density:7.2f}% " + " ".join(cells))

    layers = levels[0][2]
    weights = sum(k.size for k, _, _ in layers)
    rows = sum(k.shape[1] + 1 for k, _, _ in layers)  # CSR of W^T: one indptr entry per output, plus one
    print(
        f"\nweight matrices of the ticket, KiB (biases, {sum(b.size for _, b, _ in layers)} floats, are dense in "
        "every format). Dense float32: 4 B per weight; BCOO: 12 B per kept weight (value, row, column), smaller "
        f"below 33.3% density; CSR: 8 B per kept weight + 4 B per row, smaller below "
        f"{100 * (4 * weights - 4 * rows) / (8 * weights):.1f}%"
    )
    print(f"{'density':>8s} {'dense f32':>10s} {'BCOO':>10s} {'CSR':>10s} {'BCOO/dense':>11s} {'CSR/dense':>10s}")
    for (level, _, _), density in zip(levels, densities):
        d, coo, csr = (memory[level][p] for p in ("JAX dense", "BCOO", "SciPy CSR"))
        print(
            f"{100 * density:7.2f}% {d / 1024:10.1f} {coo / 1024:10.1f} {csr / 1024:10.1f} {coo / d:11.3f} "
            f"{csr / d:10.3f}"
        )

    print("\nwhere sparse wins (median speed-up > 1 at that density and at every lower one measured):")
    for size in (1, batch):
        for path, base in BASELINE.items():
            speedups = [speedup(timings[level, size], path) for level, _, _ in levels]
            print(f"  batch {size:5d}, {path} vs {base}: {wins_from(densities, speedups)}")
    for path in ("BCOO", "SciPy CSR"):
        smaller = [memory[level]["JAX dense"] / memory[level][path] for level, _, _ in levels]
        print(f"  memory, {path} vs dense float32: {wins_from(densities, smaller)}")


if __name__ == "__main__":
    main()
