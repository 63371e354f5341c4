"""What an experiment is: the config values that determine its results, their hash (the last part
of its directory's name), and ``config.yaml``, the file in that directory that holds them.

``config.yaml`` is the experiment's name and identity (``identity``: the keys that are hashed, and
the fingerprint of the data's content). It is the same for every invocation that can reach the
directory, so it never goes stale. What an invocation set that is not hashed (levels, replicates,
controls, where data live, ...) is recorded by invocations.py.
"""

import glob
import functools
import hashlib
import json
import os
from typing import List, Tuple

from omegaconf import DictConfig, OmegaConf

from lottery.config import NOT_HASHED, Config, group_rules, not_hashed
from lottery.errors import LotteryError
from lottery.results.store import write_whole

CONFIG = "config.yaml"


# Keys that do not change what is computed, so they stay out of the experiment's identity and its
# hash: declared by each config group (config.py: ``NOT_HASHED`` and each group's ``RULES``, with why).
_NOT_HASHED = not_hashed()


# What determines the dense level 0 (lottery/imp/dense.py): how the network is built, the data, the
# optimizer, training and the seed (with the replicate, its PRNG keys). Not how it is pruned,
# rewound or retrained afterwards, so every experiment that differs only there shares one dense run.
DENSE = ("model", "dataset", "optimizer", "training", "seed")


def unhashed_settings(cfg: DictConfig) -> dict:
    """The keys of ``_NOT_HASHED`` as this invocation set them (recorded, not hashed)."""
    content = OmegaConf.to_container(cfg, resolve=True)
    out = {}
    for dotted in _NOT_HASHED:
        node = content
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[dotted] = node
    return out


def identity(cfg: DictConfig, data_fingerprint: str) -> dict:
    """What determines an experiment's results: the resolved config as each group's declared rules
    hash it (config.py ``Rules``: keys left out, keys left out at their old value, a method's group
    only while it is in use, files and experiments by their content), and the fingerprint of the
    data's content (``lottery.data.fingerprint``)."""
    content = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_HASHED:
        content.pop(key, None)
    for name, rules in group_rules().items():
        group = content.pop(name, None)
        if group is None or not rules.hashed:
            continue
        group = {
            k: v
            for k, v in group.items()
            if k not in rules.not_hashed and not (k in rules.hashed_unless and v == rules.hashed_unless[k])
        }
        if rules.in_use is not None and not rules.in_use(group):
            continue  # absent unless in use: every hash from before the method unchanged
        moot = rules.unused_keys(group) if rules.unused_keys else ()
        content[name] = {k: hashed_value(rules, name, k, v) for k, v in group.items() if k not in moot}
        content[name].update(rules.rule_keys(group) if rules.rule_keys else {})
    content["dataset"]["fingerprint"] = data_fingerprint
    return content


def hashed_value(rules, group: str, key: str, value):
    """A value as the identity holds it: a file by its content, an experiment by its hash (not paths)."""
    if value is None:
        return value
    if key in rules.by_content:
        return file_digest(os.path.abspath(os.path.expanduser(value)), f"{group}.{key}")
    if key in rules.by_experiment:
        return source_hash(value)
    return value


def file_digest(path: str, key: str) -> str:
    """The content hash of a file a config names (``key``): its identity in a hash, not its path."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError as error:
        raise LotteryError(f"{key}: {path}: cannot be read ({error.strerror or type(error).__name__})") from None


def dense_identity(cfg: DictConfig, data_fingerprint: str, backend: str = "cpu") -> dict:
    """What determines the dense level 0: the keys of ``DENSE`` of the experiment's identity, and
    the backend it trains on (cpu, gpu, tpu) when it is not the CPU. A level 0 trained on one
    backend differs in its last bits from another's, and every level after it inherits the
    difference: a GPU run keeps its own dense runs rather than silently building on the CPU's. The
    CPU is left out of the identity so that every dense run trained before keeps its hash."""
    content = identity(cfg, data_fingerprint)
    dense = {key: content[key] for key in DENSE}
    return dense if backend == "cpu" else {**dense, "backend": backend}


def digest(content: dict) -> str:
    """Content hash of an identity: the last part of a results directory's name."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def experiment_hash(cfg: DictConfig, data_fingerprint: str) -> str:
    """Content hash of the experiment's ``identity``: the results directory's name."""
    return digest(identity(cfg, data_fingerprint))


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def legacy(dotted: str) -> bool:
    """Whether a key of a saved identity no longer exists (an older version's, e.g. ``parallel``):
    it said nothing about what this version computes."""
    if dotted in ("name", "dataset.fingerprint"):
        return False
    return not any(dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + ".") for key in _schema())


@functools.cache
def _schema() -> Tuple[str, ...]:
    """Every key of this version's config schema, dotted (built once: 0.1 s each time)."""
    return tuple(flatten(OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)))


DEFAULT_NAME = "quickstart"  # conf/config.yaml's name: the quickstart's, and every experiment's that set none
SPARSE_TRAINING = {"static": "static", "gmp": "GMP", "set": "SET", "rigl": "RigL"}  # pruning/sparse.py's methods


def method(cfg) -> Tuple[str, str]:
    """(label, slug) of an experiment's method, read from its config (the composed one, or a saved
    config.yaml's, where a key an older version did not write has its default): the label for a
    reader (IMP, RigL, GMP, static, SET, SWAMP, Early-Bird, transfer, ``<criterion> at init``, with
    its structure and a diet beside it: ``IMP (neurons)``, ``IMP + diet``), the slug for a name
    ("" for plain IMP: ``swamp``, ``rigl``, ``snip_at_init``, ``neurons``, ``diet``, joined by -)."""
    section = lambda key: (cfg.get(key) if hasattr(cfg, "get") else None) or {}
    pruning, sparsity = section("pruning"), section("sparsity")
    if section("transfer").get("source"):
        label, slug = "transfer", "transfer"
    elif pruning.get("prune_at", "trained") == "start":
        criterion = pruning.get("criterion", "magnitude")
        label, slug = f"{criterion} at init", f"{criterion}_at_init"
    elif sparsity.get("method", "imp") != "imp":
        label = SPARSE_TRAINING.get(sparsity["method"], sparsity["method"])
        slug = str(sparsity["method"])
    elif section("early_bird").get("enabled"):
        label, slug = "Early-Bird", "early_bird"
    elif section("swamp").get("particles", 1) != 1:
        label, slug = "SWAMP", "swamp"
    else:
        label, slug = "IMP", ""
    slugs = [slug]
    structure = pruning.get("structure", "weights")
    if structure != "weights":
        label += f" ({structure})"
        slugs.append(str(structure).replace(":", "of"))  # 2:4 -> 2of4
    diet = section("diet")
    if diet.get("score") is not None or diet.get("scores") is not None:
        label += " + diet"
        slugs.append("diet")
    return label, "-".join(s for s in slugs if s)


def experiment_name(cfg) -> str:
    """The experiment's name, the first part of its directory's: ``name`` as set (an ``+exp``'s, or
    given), except the default one on an experiment that is not the quickstart: then
    ``<model>-<dataset>[-<method slug>]`` (``vit-cifar10``, ``lenet-mnist-rigl``), so that a runs
    directory can be read without opening each config.yaml. The quickstart (LeNet on digits by IMP)
    keeps its name."""
    if cfg.name != DEFAULT_NAME:
        return cfg.name
    derived = "-".join(part for part in (cfg.model.name, cfg.dataset.name, method(cfg)[1]) if part)
    return DEFAULT_NAME if derived == "lenet-digits" else derived


def write_identity(directory: str, cfg, data_fingerprint: str) -> None:
    """config.yaml, once: the experiment's name and identity."""
    name = experiment_name(cfg)  # compared without it: a directory under its old name keeps its config.yaml
    write_once(
        os.path.join(directory, CONFIG),
        {"name": name, **identity(cfg, data_fingerprint)},
        "experiment",
        same=lambda saved, content: {**saved, "name": name} == content,
    )


def read_identity(directory: str, missing: str = None) -> dict:
    """An experiment's config.yaml: its name and identity (``missing``: what to say if there is none)."""
    path = os.path.join(directory, CONFIG)
    if not os.path.isfile(path):
        raise LotteryError(missing or f"{path}: missing; it is the experiment's identity")
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as error:  # YAML syntax errors of several types, unreadable files
        raise LotteryError(
            f"{path}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "it is the experiment's identity"
        ) from None
    if not isinstance(saved, dict) or "name" not in saved:
        raise LotteryError(f"{path}: holds no experiment config (no name); it is corrupt")
    return saved


def write_once(path: str, content: dict, what: str, same=lambda saved, content: saved == content) -> None:
    """The identity file of a hash-named directory (``what``: experiment, dense run), written the
    first time and checked every later time: it must still hold ``content``."""
    if not os.path.exists(path):
        write_whole(path, lambda partial: OmegaConf.save(OmegaConf.create(content), partial))
        return
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as error:  # YAML syntax errors of several types, unreadable files
        raise LotteryError(
            f"{path}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); it is the "
            f"{what}'s identity and is written again if you delete it"
        ) from None
    if not isinstance(saved, dict) or not same(saved, content):
        raise LotteryError(
            f"{path}: is not the identity of this {what} (its values differ from the config "
            "that hashes to this directory); it was edited or damaged: delete it and it is written again"
        )


def older_versions(directory: str, cfg, data_fingerprint: str) -> List[str]:
    """Experiment directories beside ``directory`` (same name) whose identity is this one's but for
    keys an older version hashed and this one no longer has (``config.legacy``): the same
    experiment under another hash."""
    found = []
    current = flatten(identity(cfg, data_fingerprint))
    prefix = os.path.basename(directory).rsplit("-", 1)[0]
    for candidate in sorted(glob.glob(os.path.join(os.path.dirname(directory), f"{glob.escape(prefix)}-*", CONFIG))):
        try:
            saved = OmegaConf.to_container(OmegaConf.load(candidate))
        except Exception:  # unreadable: not for a note to judge
            continue
        if not isinstance(saved, dict):
            continue
        saved = {
            k: v
            for k, v in flatten(saved).items()
            if k != "name" and not any(k == dropped or k.startswith(dropped + ".") for dropped in _NOT_HASHED)
        }  # older files held these
        old = {k for k in saved if legacy(k)}
        if old and {k: v for k, v in saved.items() if k not in old} == current:
            found.append(os.path.dirname(candidate))
    return found


def read_source_identity(directory: str) -> dict:
    """A transfer source's config.yaml: its name and identity."""
    return read_identity(
        directory,
        missing=f"transfer.source: {directory} holds no experiment (no config.yaml); give "
        "an experiment's directory (<output_dir>/<name>-<hash>) or the overrides that run it, and run it first",
    )


def source_hash(directory: str) -> str:
    """The hash of the experiment in ``directory`` (a transfer's source): the digest of its identity,
    config.yaml without its name."""
    return digest({k: v for k, v in read_source_identity(directory).items() if k != "name"})
