"""Command line: ``python -m lottery.run [+exp=NAME] [key=value ...]`` (Hydra; ``-m`` for sweeps).

With no experiment it runs the quickstart (``conf/exp/quickstart.yaml`` equals the defaults).
Bad input (an unknown key or name, a wrongly typed or out-of-range value, missing data) ends with
one line ``error: ...`` on stderr and exit code 2. SIGTERM writes a checkpoint and ends with one
line ``preempted: ...`` and exit code 143; the same command continues the run.
"""

import logging
import os
import re
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lottery import config  # noqa: F401  (registers the structured config schema)
from lottery.errors import LotteryError, Preempted

# JAX probes for a TPU and warns when there is none; that is not news on CPU or GPU machines.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from lottery import imp  # imported here so that `--help` and config errors stay fast

    try:
        imp.run(cfg)
    except LotteryError as error:  # handled here, inside the job, so Hydra adds nothing to it
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Preempted as preempted:
        print(f"preempted: {preempted}", file=sys.stderr)
        sys.exit(143)  # 128 + SIGTERM, as a process ended by the signal reports


def one_line(error: Exception) -> str:
    """Hydra's and OmegaConf's multi-line messages, condensed: what is wrong, and where."""
    text = str(error)
    if error.__cause__ is not None and str(error.__cause__) not in text:
        text += "\n" + str(error.__cause__)
    text = text.replace("Config search path:", "\0").split("\0")[0]
    lines = [line.strip().rstrip(".") for line in text.splitlines()]
    lines = [line for line in lines if line and not re.match(r"(reference_type|object_type)=", line)]
    message = ""
    for line in lines:
        if message.endswith(":"):  # a list of choices follows its heading
            message += " " + line
        elif message and re.fullmatch(r"[\w./-]+", line) and ":" in message:
            message += ", " + line
        else:
            message += ("; " if message else "") + line
    return message


def cli() -> None:
    # Let Hydra raise instead of printing its own multi-line report, so every error is one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except (HydraException, OmegaConfBaseException) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
