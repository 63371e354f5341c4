"""Compilations across a 5-level IMP run, without and with JAX's persistent compilation cache.

Runs the same 5-level LeNet experiment (MNIST-shaped digits data: the quickstart) twice in fresh
processes sharing one new cache directory, and counts XLA compilations by program name: the
training chunk and the evaluation should compile once each for the whole run (shapes do not change
from level to level), and the second process should find them in the cache.

    python experiments/bench/compiles.py
"""

import collections
import json
import logging
import os
import subprocess
import sys
import tempfile
import time


def child(cache_dir, output_dir):
    import io

    import jax
    from rich.console import Console

    from common import compose_config
    from lottery import imp

    compiles, hits = collections.Counter(), [0]

    class Counter(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling "):
                compiles[message.split()[1]] += 1

    jax.config.update("jax_log_compiles", True)
    for name in ("jax._src.interpreters.pxla", "jax._src.dispatch"):
        logging.getLogger(name).addHandler(Counter())
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.__setitem__(0, hits[0] + (event == "/jax/compilation_cache/cache_hits"))
    )
    cfg = compose_config(
        [
            "levels=5",
            "training.steps=10ep",
            f"output_dir={output_dir}",
            f"compilation_cache={cache_dir}",
            "progress=false",
            "wandb.mode=disabled",
        ]
    )
    start = time.perf_counter()
    imp.run(cfg, console=Console(file=io.StringIO()))
    print(json.dumps({"seconds": time.perf_counter() - start, "compiles": dict(compiles), "cache_hits": hits[0]}))


def main():
    print("5-level quickstart run (LeNet on digits), two fresh processes, one new cache directory")
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as output:
        for attempt in ("cold cache", "warm cache"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", cache, os.path.join(output, attempt)],
                capture_output=True,
                text=True,
                check=True,
                cwd=os.path.dirname(os.path.abspath(__file__)),
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            compiles = result["compiles"]
            main = {
                k: v for k, v in compiles.items() if k.startswith(("jit(_train", "jit(_evaluate", "jit(epoch_order"))
            }
            print(
                f"{attempt}: {result['seconds']:.1f} s; main programs compiled: {main}; "
                f"{sum(compiles.values()) - sum(main.values())} small eager ops (stack, slices, init) compiled; "
                f"{result['cache_hits']} programs found in the persistent cache"
            )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
