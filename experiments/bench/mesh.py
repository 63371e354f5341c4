"""A level's stack over several devices: one device vs member-parallel vs data-parallel meshes.

Trains a stack of N LeNet-300-100 networks (batch 60, Adam, MNIST-shaped synthetic data, 20%
density) for a number of steps with the trainer's programs, once per layout, each layout in its own
process (JAX fixes the device count per process: ``JAX_NUM_CPU_DEVICES`` on CPU; on a GPU host the
mesh takes the first devices). Prints the median and range of several timings per layout and
the speed-up over one device, side by side, and whether the member-parallel stack came out bitwise
the one-device stack (it must). On a CPU the virtual devices share the host's cores, so the
speed-up is bounded by what one network leaves idle; on a multi-GPU host each device is its own.

    python experiments/bench/mesh.py [--networks 8] [--steps 500] [--chunk 0] [--repeats 3] [--smoke]

``--chunk N`` trains in calls of N steps, as evaluations and checkpoints split a level's training:
what the mesh costs between chunks.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

LAYOUTS = [  # (name, devices, mesh.members, mesh.data)
    ("one device", 1, 1, 1),
    ("members x2", 2, 2, 1),
    ("members x4", 4, 4, 1),
    ("data x2", 2, 1, 2),
    ("data x4", 4, 1, 4),
]


def measure(args):
    """In a child process: time one layout, print a JSON line."""
    import jax
    import numpy as np

    from common import compose_config
    from lottery.training import trainer as training
    from masked_step import make_trainer, random_mask

    trainer = make_trainer("lenet", masked=True)
    trainer.mesh = compose_config([f"mesh.members={args.members}", f"mesh.data={args.data}"]).mesh
    members = [
        trainer.init_state(trainer.init_params, trainer.init_batch_stats, random_mask(trainer, 0.2, seed=i))
        for i in range(args.networks)
    ]
    keys = jax.random.split(jax.random.key(0), 2 * args.networks).reshape(2, args.networks)
    times, state = [], None
    for attempt in range(args.repeats + 1):  # the first compiles
        state = training.stack(members)
        begin = time.perf_counter()
        loss, chunk = None, args.chunk or args.steps
        for start in range(0, args.steps, chunk):  # chunks, as evaluations split a level's training
            state, loss = trainer.train(state, keys[0], keys[1], start, min(start + chunk, args.steps), loss)
        jax.block_until_ready((state, loss))
        if attempt:
            times.append(time.perf_counter() - begin)
    digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(state["params"]))).hexdigest()
    print(json.dumps({"times": times, "digest": digest, "devices": jax.device_count()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=0, help="steps per call of the trainer (0: all in one)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few steps, 2 networks, one device and members x2: checks the script runs",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--members", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.networks, args.steps, args.repeats = 2, 5, 1
    if args.child:
        return measure(args)

    from common import machine

    print(f"machine: {machine()}")
    chunks = f", in chunks of {args.chunk}" if args.chunk else ""
    print(
        f"lenet, {args.networks} networks x {args.steps} steps{chunks}, {args.repeats} timings each (median, range s)"
    )
    print(f"{'layout':>12s} {'seconds':>22s} {'speed-up':>9s} {'bitwise one device':>19s}")
    base = None
    layouts = (
        LAYOUTS[:2] if args.smoke else LAYOUTS
    )  # smoke: the script runs (data-parallel: tests/training/test_distributed.py)
    for name, devices, members, data in layouts:
        env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices)}  # CPU; a GPU host uses the first `devices` GPUs
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                f"--networks={args.networks}",
                f"--steps={args.steps}",
                f"--repeats={args.repeats}",
                f"--chunk={args.chunk}",
                f"--members={members}",
                f"--data={data}",
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        if done.returncode:
            sys.exit(f"{name}: {done.stderr.strip().splitlines()[-1]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        times = sorted(result["times"])
        median = times[len(times) // 2]
        base = base or (median, result["digest"])
        same = result["digest"] == base[1]
        print(f"{name:>12s} {median:9.2f} [{times[0]:.2f}-{times[-1]:.2f}] {base[0] / median:8.2f}x {str(same):>19s}")


if __name__ == "__main__":
    main()
