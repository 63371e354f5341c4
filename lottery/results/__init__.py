"""Results on disk, the machinery that makes every result findable, whole and reproducible.

  paths.py        the layout: where an experiment, a level, a network, a checkpoint lie
  store.py        orbax trees and JSON written whole or not at all, directories that appear whole, locks
  identity.py     what an experiment is (the hashed config and data fingerprint) and its config.yaml
  invocations.py  invocations.jsonl: what each command asked for, ran on and added
  metrics.py      what a network's metrics.json holds
  provenance.py   the code, libraries and machine behind a result
"""
