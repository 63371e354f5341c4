"""An experiment directory's own record of what it is and how it was filled.

``config.yaml`` is the experiment's identity: the name and every config value that determines its
results (``config.identity``: the keys that are hashed, and the fingerprint of the data's
content). It is the same for every invocation that can reach the directory, so it never goes stale.

``invocations.jsonl`` gets one line when an invocation starts (the time, the command line, the
values of the keys left out of the hash — levels, replicates, controls, lmc, where data live, ... —,
the code and the program: backend, device, jax version, loop placement) and one when it ends
(finished, preempted or failed, and the networks and LMC measurements it added). So the record
says which invocation produced each result and with what.
"""

import glob
import json
import os
import sys
import time
from typing import List

import jax
from omegaconf import OmegaConf

from lottery import config
from lottery.errors import LotteryError, at
from lottery.provenance import provenance

CONFIG = "config.yaml"
INVOCATIONS = "invocations.jsonl"


def write_identity(directory: str, cfg, data_fingerprint: str) -> None:
    """config.yaml, once: the experiment's name and identity."""
    write_once(os.path.join(directory, CONFIG), {"name": cfg.name, **config.identity(cfg, data_fingerprint)},
               "experiment", same=lambda saved, content: {**saved, "name": cfg.name} == content)


def read_identity(directory: str, missing: str = None) -> dict:
    """An experiment's config.yaml: its name and identity (``missing``: what to say if there is none)."""
    path = os.path.join(directory, CONFIG)
    if not os.path.isfile(path):
        raise LotteryError(missing or f"{path}: missing; it is the experiment's identity")
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as error:  # YAML syntax errors of several types, unreadable files
        raise LotteryError(f"{path}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); "
                           "it is the experiment's identity") from None
    if not isinstance(saved, dict) or "name" not in saved:
        raise LotteryError(f"{path}: holds no experiment config (no name); it is corrupt")
    return saved


def write_once(path: str, content: dict, what: str, same=lambda saved, content: saved == content) -> None:
    """The identity file of a hash-named directory (``what``: experiment, dense run), written the
    first time and checked every later time: it must still hold ``content``."""
    if not os.path.exists(path):
        partial = path + ".partial"
        with at(partial):
            OmegaConf.save(OmegaConf.create(content), partial)
        os.replace(partial, path)
        return
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as error:  # YAML syntax errors of several types, unreadable files
        raise LotteryError(f"{path}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); it is the "
                           f"{what}'s identity and is written again if you delete it") from None
    if not isinstance(saved, dict) or not same(saved, content):
        raise LotteryError(f"{path}: is not the identity of this {what} (its values differ from the config "
                           "that hashes to this directory); it was edited or damaged: delete it and it is written again")


def older_versions(directory: str, cfg, data_fingerprint: str) -> List[str]:
    """Experiment directories beside ``directory`` (same name) whose identity is this one's but for
    keys an older version hashed and this one no longer has (``config.legacy``): the same
    experiment under another hash."""
    found = []
    current = config.flatten(config.identity(cfg, data_fingerprint))
    prefix = os.path.basename(directory).rsplit("-", 1)[0]
    for candidate in sorted(glob.glob(os.path.join(os.path.dirname(directory), f"{glob.escape(prefix)}-*", CONFIG))):
        try:
            saved = OmegaConf.to_container(OmegaConf.load(candidate))
        except Exception:  # unreadable: not for a note to judge
            continue
        if not isinstance(saved, dict):
            continue
        saved = {k: v for k, v in config.flatten(saved).items() if k != "name" and not any(
            k == dropped or k.startswith(dropped + ".") for dropped in config._NOT_HASHED)}  # older files held these
        old = {k for k in saved if config.legacy(k)}
        if old and {k: v for k, v in saved.items() if k not in old} == current:
            found.append(os.path.dirname(candidate))
    return found


def program(host_loop: bool, mesh=None) -> dict:
    """What decides the bits of a result besides the config: the backend, its devices, the jax
    version, where the loop over steps runs (a conv model's loops round differently) and the mesh
    asked for (data-parallel sums gradients in another order; 0 is auto)."""
    device = jax.devices()[0]
    out = {"backend": jax.default_backend(), "device": device.device_kind, "devices": len(jax.devices()),
           "jax": jax.__version__, "loop": "host" if host_loop else "device"}
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
        settings = config.extent(cfg)
        if cfg.get("transfer") is not None and cfg.transfer.source is not None:
            settings["transfer.source"] = cfg.transfer.source  # the resolved directory (hashed by its identity)
        self._append({"event": "start", "time": _now(), "argv": sys.argv, "settings": settings,
                      "program": program_, "code": {k: provenance()[k] for k in ("lottery", "commit", "dirty")}})

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

    def add(self, **what) -> None:
        self.added.append(what)

    def end(self, status: str) -> None:
        self._append({"event": "end", "time": _now(), "status": status, "seconds": round(time.time() - self.started, 3),
                      "added": self.added})

    def _append(self, entry: dict) -> None:
        if not self.write:
            return
        with at(self.path), open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
