"""An experiment directory's record of how it was filled (its identity, config.yaml, is identity.py's).

``invocations.jsonl`` gets one line when an invocation starts (the time, the command line, the
values of the keys left out of the hash — levels, replicates, controls, lmc, where data live, ... —,
the code and the program: backend, device, jax version, loop placement) and one when it ends
(finished, preempted or failed, and the networks and LMC measurements it added). So the record
says which invocation produced each result and with what.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import List


from lottery import lazy
from lottery.errors import at
from lottery.results.identity import unhashed_settings
from lottery.results.provenance import provenance

jax = lazy.module("jax")

INVOCATIONS = "invocations.jsonl"


def program(host_loop: bool, mesh=None, width: int = 1, deterministic: bool = False) -> dict:
    """What decides the bits of a result besides the config: the backend, its devices, the jax
    version, where the loop over steps runs (a conv model's loops round differently), the mesh
    asked for (data-parallel sums gradients in another order; 0 is auto), the width of the stacks
    networks train in (a vmapped program rounds by its batched shapes), the matmul precision
    (TF32 on recent NVIDIA GPUs unless set) and XLA's deterministic GPU operations. The last three
    appear only when they are not the default, so earlier invocations' programs compare equal."""
    device = jax.devices()[0]
    out = {
        "backend": jax.default_backend(),
        "device": device.device_kind,
        "devices": len(jax.devices()),
        "jax": jax.__version__,
        "loop": "host" if host_loop else "device",
    }
    if width != 1:
        out["stack"] = width
    if jax.config.jax_default_matmul_precision is not None:
        out["matmul_precision"] = str(jax.config.jax_default_matmul_precision)
    if deterministic:
        out["deterministic"] = True
    if len(jax.devices()) > 1 and mesh is not None:
        out["mesh"] = f"{mesh.members}x{mesh.data}"
    if jax.process_count() > 1:
        out["processes"] = jax.process_count()
    return out


def read(directory: str) -> List[dict]:
    """The entries of invocations.jsonl (a line torn by a crash is skipped)."""
    entries = []
    try:
        with open(os.path.join(directory, INVOCATIONS)) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict):  # a line that is not ours (edited, damaged) is not a record
                    entries.append(entry)
    except FileNotFoundError:
        pass
    return entries


class Invocation:
    """This invocation's lines in invocations.jsonl; ``added`` lists what it finished."""

    def __init__(self, directory: str, cfg, program_: dict, write: bool = True):
        self.path = os.path.join(directory, INVOCATIONS)
        self.write = write  # False in the processes other than 0 of a multi-process run
        self.started = time.time()
        self.program = program_
        self.added: List[dict] = []
        self.earlier = read(directory)
        settings = unhashed_settings(cfg)
        if cfg.get("transfer") is not None and cfg.transfer.source is not None:
            settings["transfer.source"] = cfg.transfer.source  # the resolved directory (hashed by its identity)
        self._append(
            {
                "event": "start",
                "time": _now(),
                "argv": sys.argv,
                "settings": settings,
                "program": program_,
                "code": {k: provenance()[k] for k in ("lottery", "commit", "dirty")},
            }
        )

    def other_programs(self) -> List[dict]:
        """The programs of earlier invocations that differ from this one's and trained something
        here (or may have: killed before their end line)."""
        differing, program = [], None
        for entry in self.earlier + [{"event": "start"}]:  # the sentinel closes the last invocation
            if entry.get("event") == "end" and program is not None:
                if entry.get("added") and program not in differing:
                    differing.append(program)
                program = None
            elif entry.get("event") == "start":
                if program is not None and program not in differing:  # no end line: it may have added
                    differing.append(program)
                found = entry.get("program")
                program = found if isinstance(found, dict) and found and found != self.program else None
        return differing

    def note_other_programs(self, say) -> None:
        """Say so where results here were also trained by another program than this invocation's."""
        if self.other_programs():
            others = "; ".join(", ".join(f"{k} {v}" for k, v in p.items()) for p in self.other_programs())
            now = ", ".join(f"{k} {v}" for k, v in self.program.items())
            say(
                f"note: results in {os.path.dirname(self.path)} were also trained by another program ({others}); "
                f"this invocation trains with {now}: their bits are not comparable (docs/reproducibility.md)"
            )

    def add(self, **what) -> None:
        self.added.append(what)

    def end(self, status: str) -> None:
        self._append(
            {
                "event": "end",
                "time": _now(),
                "status": status,
                "seconds": round(time.time() - self.started, 3),
                "added": self.added,
            }
        )

    def _append(self, entry: dict) -> None:
        if not self.write:
            return
        with at(self.path), open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
