"""2:4 sparsity on a GPU's sparse tensor cores against the dense matmul, side by side.

An N:M ticket (``pruning.structure=2:4``) keeps 2 of every 4 consecutive weights along a layer's
input axis, the pattern Ampere and newer GPUs multiply at up to twice the dense rate (Mishra et al.
2021). This times ``y = x W^T`` for square fp16 layers (``--sizes``) at batch ``--batch``: dense,
against the same 2:4 weight compressed by PyTorch's ``to_sparse_semi_structured``, and checks the
two agree. JAX has no N:M kernel in its public API (``jax.experimental.sparse`` has BCOO/BCSR);
where a future jax has one (``nm_*`` in jax.experimental.sparse) it is listed. Without PyTorch on a
CUDA device every row is n/a, with the reason (the CPU smoke run).

    python experiments/bench/semi_structured.py [--sizes 4096,8192] [--batch 4096] [--repeats 20] \
        [--json FILE] [--smoke]
"""

import argparse
import json

import numpy as np


def two_of_four(weight):
    """Of every 4 consecutive entries along the last axis, the 2 of largest magnitude (ties: later kept)."""
    import torch

    blocks = weight.reshape(weight.shape[0], -1, 4)
    order = blocks.abs().argsort(dim=-1, stable=True)
    mask = torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, order[..., 2:], True)
    return (blocks * mask).reshape(weight.shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,8192")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.batch, args.repeats = "256", 256, 2
    import jax.experimental.sparse as jsparse

    jax_nm = [name for name in dir(jsparse) if name.startswith("nm")]
    print(f"jax N:M kernels: {', '.join(jax_nm) if jax_nm else 'none in this jax'}")
    out = {"rows": [], "jax_nm": jax_nm}
    why = None
    try:
        import torch
        from torch.sparse import to_sparse_semi_structured

        if not torch.cuda.is_available():
            why = "no CUDA device for PyTorch"
    except Exception as error:  # no torch, or a torch without semi-structured sparsity
        why = f"PyTorch's semi-structured sparsity unavailable ({type(error).__name__})"
    print(f"{'size':>6s} {'batch':>6s} {'dense ms':>9s} {'2:4 ms':>8s} {'speed-up':>9s} {'max |diff|':>11s}")
    for size in map(int, args.sizes.split(",")):
        if why:
            print(f"{size:6d} {args.batch:6d} {'n/a':>9s} {'n/a':>8s} {'n/a':>9s} {'n/a':>11s}  ({why})")
            out["rows"].append({"size": size, "batch": args.batch, "why": why})
            continue
        torch.manual_seed(0)
        weight = two_of_four(torch.randn(size, size, dtype=torch.float16, device="cuda"))
        x = torch.randn(args.batch, size, dtype=torch.float16, device="cuda")
        sparse = to_sparse_semi_structured(weight)
        dense_ms, sparse_ms = [], []
        for _ in range(3):  # warm-up
            torch.nn.functional.linear(x, weight), torch.nn.functional.linear(x, sparse)
        for _ in range(args.repeats):
            for w, times in ((weight, dense_ms), (sparse, sparse_ms)):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                y = torch.nn.functional.linear(x, w)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
        diff = float((torch.nn.functional.linear(x, weight) - torch.nn.functional.linear(x, sparse)).abs().max())
        ratio = float(np.median(np.asarray(dense_ms) / np.asarray(sparse_ms)))
        print(
            f"{size:6d} {args.batch:6d} {np.median(dense_ms):9.3f} {np.median(sparse_ms):8.3f} {ratio:8.2f}x "
            f"{diff:11.4f}"
        )
        out["rows"].append(
            {
                "size": size,
                "batch": args.batch,
                "dense_ms": float(np.median(dense_ms)),
                "sparse_ms": float(np.median(sparse_ms)),
                "speedup": ratio,
                "max_diff": diff,
            }
        )
        del y
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
