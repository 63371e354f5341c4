"""The Python parts of ``device.sh``, one subcommand per piece (each its own process there, so that
a failure in one leaves the others to run):

    python device.py digest DIR                  sha256 of a results tree: every orbax array + metrics.json
                                                 (without wall_time_s and provenance), in path order
    python device.py steps [--smoke] --json F    ms per masked step, fp32 and bf16, lottery vs PyTorch
    python device.py cifar DIR --json F          a finished Conv-2 run: test accuracy, remaining vs counting rule
    python device.py summary WORK                the one table of device.sh, from WORK/*.json
"""

import argparse
import glob
import hashlib
import json
import os
import sys

EPOCH_160 = 62_400  # 160 epochs of 390 batches of 128 (conf/exp/resnet.yaml)


def peak_bytes():
    """Peak device memory of this process (None where the backend does not report it, e.g. CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


# --- digest: are two runs' saved trees the same bits? ---------------------------------------------


def digest(directory):
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory, followlinks=False)):
        dirs.sort()
        relative = os.path.relpath(root, directory)
        if "_CHECKPOINT_METADATA" in files:  # an orbax tree: its arrays, not its files (timestamps)
            checkpointer = ocp.StandardCheckpointer()
            tree = checkpointer.restore(os.path.abspath(root))
            checkpointer.close()
            for path, leaf in sorted(
                jax.tree_util.tree_leaves_with_path(tree), key=lambda p: jax.tree_util.keystr(p[0])
            ):
                h.update(f"{relative}{jax.tree_util.keystr(path)}".encode())
                h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
            dirs[:] = []
        elif "metrics.json" in files:
            with open(os.path.join(root, "metrics.json")) as f:
                metrics = json.load(f)
            for key in ("wall_time_s", "provenance"):
                metrics.pop(key, None)
            h.update(relative.encode() + json.dumps(metrics, sort_keys=True).encode())
    return h.hexdigest()


# --- steps: ms per masked training step against PyTorch -------------------------------------------


def steps(args):
    import jax

    from masked_step import make_trainer, step_time

    models = ["lenet"] if args.smoke else ["resnet20", "vgg16"]
    count = 3 if args.smoke else args.steps
    try:
        import torch

        from torch_reference import torch_step_time

        device = "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        torch = None
    rows = []
    for name in models:
        for precision in ("float32", "bfloat16"):
            row = dict(model=name, precision=precision, batch=60 if name == "lenet" else 128)
            row["lottery_ms"] = 1e3 * step_time(make_trainer(name, True, precision=precision), 0.2, count)
            for variant, compiled in (("torch_ms", False), ("torch_compile_ms", True)):
                if torch is None or (
                    compiled and (args.smoke or precision != "float32")
                ):  # compiling costs ~1 min each
                    row[variant] = None
                    continue
                try:
                    row[variant] = 1e3 * torch_step_time(
                        name, 0.2, count, device=device, compiled=compiled, precision=precision
                    )
                except Exception as error:  # torch.compile needs a compiler toolchain; say so, go on
                    print(f"{name} {precision} {variant}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
                    row[variant] = None
            rows.append(row)
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
            print(
                f"{name:9s} {precision:9s} lottery {fmt(row['lottery_ms'])} ms/step, torch eager "
                f"{fmt(row['torch_ms'])}, "
                f"torch.compile {fmt(row['torch_compile_ms'])}",
                flush=True,
            )
    with open(args.json, "w") as f:
        json.dump(
            {
                "rows": rows,
                "backend": jax.default_backend(),
                "peak_bytes": peak_bytes(),
                "torch": None if torch is None else f"{torch.__version__} on {device}",
            },
            f,
        )


# --- cifar: a shortened Conv-2 run on the real CIFAR-10 records ------------------------------------


def cifar(args):
    import numpy as np

    from common import compose_config
    from lottery.pruning import masks

    levels = sorted(glob.glob(os.path.join(args.directory, "conv2-*", "replicate_0", "level_*", "metrics.json")))
    if not levels:
        sys.exit(f"no level's metrics.json under {args.directory}")
    cfg = compose_config(["+exp=conv2"])
    params = _params(cfg)
    names = masks.prunable(params, cfg.pruning.ignore)
    ones = masks.unflatten(params, {name: np.ones(np.shape(a), bool) for name, a in masks.flatten(params).items()})
    out = []
    for path in levels:
        with open(path) as f:
            m = json.load(f)
        rule = sum(masks.level_counts(ones, cfg.pruning, names, m["level"]))
        out.append(
            dict(
                level=m["level"],
                remaining=m["remaining"],
                rule=rule,
                test_accuracy=m["final"]["test_accuracy"],
                steps=m["final"]["step"],
            )
        )
        print(
            f"level {m['level']}: test accuracy {100 * m['final']['test_accuracy']:.2f}% after {m['final']['step']} "
            "its; "
            f"remaining {m['remaining']:,}, counting rule {rule:,}: "
            f"{'equal' if rule == m['remaining'] else 'DIFFERENT'}"
        )
    with open(args.json, "w") as f:
        json.dump({"levels": out}, f)


def _params(cfg):
    import jax
    from flax import nnx

    from lottery import models

    model = models.build(cfg.model, (32, 32, 3), 10, jax.random.key(0))
    return nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[1])


# --- summary: the one table ------------------------------------------------------------------------


def summary(args):
    work = args.work
    read = lambda name: json.load(open(os.path.join(work, name))) if os.path.exists(os.path.join(work, name)) else None
    fmt = lambda v, f="{:.3f}": "n/a" if v is None else f.format(v)
    rows = []

    # a. the quickstart twice
    quick = read("quickstart.json") or {}
    for label, key in (
        ("default", "default"),
        ("deterministic=true", "deterministic"),
        ("matmul precision highest (no TF32)", "highest"),
    ):
        pair = quick.get(key)
        value = "n/a" if pair is None else "n/a (one run)" if len(pair) < 2 else str(pair[0] == pair[1])
        rows.append((f"a. quickstart bitwise in 2 processes, {label}", value))
    same = [quick.get(k) for k in ("default", "highest")]
    rows.append(
        ("a. quickstart default == highest precision", "n/a" if None in same else str(same[0][0] == same[1][0]))
    )

    # b. ms per step
    step = read("steps.json")
    best = None
    for model in ("resnet20", "vgg16", "lenet"):
        for precision in ("float32", "bfloat16"):
            row = next(
                (r for r in (step or {}).get("rows", []) if r["model"] == model and r["precision"] == precision), None
            )
            if row is None and model == "lenet":
                continue
            label = (
                f"b. {model} ms/step batch {128 if model != 'lenet' else 60} {precision}: "
                "lottery / torch / torch.compile"
            )
            value = (
                "n/a"
                if row is None
                else " / ".join(fmt(row[k]) for k in ("lottery_ms", "torch_ms", "torch_compile_ms"))
            )
            rows.append((label, value))
            if row and model == "resnet20" and precision == "float32":
                best = row["lottery_ms"]

    # c. stacks
    per_network = None
    for model in ("lenet", "resnet"):
        stacks = read(f"stacks_{model}.json")
        value = "n/a"
        if stacks:
            value = ", ".join(
                f"w{r['width']} {r['networks_per_s']:.2f}/s ({r['speedup']:.2f}x)" for r in stacks["rows"]
            )
            if model == "resnet":
                top = max(stacks["rows"], key=lambda r: r["networks_per_s"])
                per_network = (
                    top["seconds"] / top["networks"] / top["steps"]
                )  # seconds per network-step at the best width
        rows.append((f"c. {model} networks/s by stack width (speed-up over width 1)", value))
        rows.append(
            (
                f"c. {model} network 0 bitwise beside other mates, every width",
                "n/a" if not stacks else str(all(r["bitwise"] for r in stacks["rows"])),
            )
        )

    # d. extrapolations
    level = None if best is None else EPOCH_160 * best / 1e3
    rows.append(("d. one 160-epoch ResNet-20 level, one network (62,400 its x ms/step)", fmt(level, "{:.0f} s")))
    stacked = None if per_network is None else EPOCH_160 * per_network
    rows.append(("d. the same per network at the best stack width", fmt(stacked, "{:.0f} s")))
    imp = None if (stacked or level) is None else 21 * 3 * (stacked or level)
    rows.append(
        (
            "d. 20-level (+ dense), 3-replicate IMP run, training only",
            fmt(None if imp is None else imp / 3600, "{:.2f} h"),
        )
    )

    # e. peak memory
    peaks = [
        p
        for p in [(read(n) or {}).get("peak_bytes") for n in ("steps.json", "stacks_lenet.json", "stacks_resnet.json")]
        if p
    ]
    rows.append(
        ("e. peak device memory (max over sections)", fmt(max(peaks) / 2**30, "{:.2f} GiB") if peaks else "n/a")
    )

    # f. Conv-2 on CIFAR-10
    c2 = read("cifar.json")
    if c2:
        last = c2["levels"][-1]
        rows.append(
            (
                "f. Conv-2 on CIFAR-10 records: test acc, last level",
                f"{100 * last['test_accuracy']:.2f}% after {last['steps']} its",
            )
        )
        rows.append(
            (
                "f. remaining == counting rule, every level",
                str(all(row["remaining"] == row["rule"] for row in c2["levels"])),
            )
        )
    else:
        rows += [
            ("f. Conv-2 on CIFAR-10 records: test acc, last level", "n/a"),
            ("f. remaining == counting rule, every level", "n/a"),
        ]

    # g. 2:4 sparse tensor cores
    semi = read("semi.json") or {}
    for row in semi.get("rows") or [{"size": "-"}]:
        value = (
            "n/a"
            if "speedup" not in row
            else f"{row['dense_ms']:.3f} / {row['sparse_ms']:.3f} ms "
            f"({row['speedup']:.2f}x, max |diff| {row['max_diff']:.4f})"
        )
        if "why" in row:
            value = f"n/a ({row['why']})"
        rows.append((f"g. 2:4 fp16 linear {row['size']}x{row['size']}: dense / to_sparse_semi_structured", value))

    # h. sparse training's updates
    dst = read("sparse_training.json") or {}
    times = dst.get("ms_per_step", {})
    for method in ("gmp", "set", "rigl"):
        idle, update = times.get(f"{method} idle"), times.get(f"{method} update")
        value = (
            "n/a"
            if idle is None
            else f"idle {idle / times['masked']:.2f}x masked, "
            f"update +{(update - times['masked']) / times['dense']:.2f} dense steps"
        )
        rows.append((f"h. {method} step (LeNet, 20%): idle / update cost", value))

    failed = read("failed.json") or {}
    width = max(len(r[0]) for r in rows)
    print("\n== summary ==")
    print(f"| {'what':{width}s} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for label, value in rows:
        section = label.split(".")[0]
        if value == "n/a" and section in failed:
            value = f"n/a (failed: {failed[section]})"
        print(f"| {label:{width}s} | {value} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("digest")
    p.add_argument("directory")
    p = sub.add_parser("steps")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", required=True)
    p = sub.add_parser("cifar")
    p.add_argument("directory")
    p.add_argument("--json", required=True)
    p = sub.add_parser("summary")
    p.add_argument("work")
    args = parser.parse_args()
    if args.command == "digest":
        print(digest(args.directory))
    else:
        {"steps": steps, "cifar": cifar, "summary": summary}[args.command](args)


if __name__ == "__main__":
    main()
