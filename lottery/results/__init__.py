"""Results on disk, the machinery that makes every result findable, whole and reproducible.

  paths.py        the layout: where an experiment, a level, a network, a checkpoint lie
  store.py        orbax trees and JSON written whole or not at all, directories that appear whole, locks
  lock.py         the one flock under those locks (and the Optuna storage's)
  identity.py     what an experiment is (the hashed config and data fingerprint) and its config.yaml
  invocations.py  invocations.jsonl: what each command asked for, ran on and added
  metrics.py      what a network's metrics.json holds
  provenance.py   the code, libraries and machine behind a result

Its public names are these modules (``from lottery.results import paths``).
"""

__all__ = ["identity", "invocations", "lock", "metrics", "paths", "provenance", "store"]
