"""Command line: ``python -m lottery.run [+exp=NAME] [key=value ...]`` (Hydra; ``-m`` for sweeps).

With no experiment it runs the quickstart (``conf/exp/quickstart.yaml`` equals the defaults).
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from lottery import config  # noqa: F401  (registers the structured config schema)
from lottery.errors import LotteryError

# JAX probes for a TPU and warns when there is none; that is not news on CPU or GPU machines.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from lottery import imp  # imported here so that `--help` and config errors stay fast

    try:
        imp.run(cfg)
    except LotteryError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
