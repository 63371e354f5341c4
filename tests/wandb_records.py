"""Reading an offline W&B run back, for tests (no network): the ``.wandb`` file is a LevelDB-style
log of ``wandb_internal_pb2.Record`` protobufs: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of records, each with a 7-byte header (checksum, length, type: full/first/middle/last)."""

import glob
import json
import os

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:  # block trailer: padding
            position += left
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == FULL:
            yield _parse(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield _parse(pending + chunk)


def _parse(chunk):
    record = wandb_internal_pb2.Record()
    record.ParseFromString(chunk)
    return record


def read_run(run_dir):
    """The run's metadata, config and history rows (dicts of decoded values) of an offline run."""
    (path,) = glob.glob(os.path.join(run_dir, "*.wandb"))
    run, config, history = None, {}, []
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            for item in record.run.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return run, config, history


def read_summary(run_dir):
    """The run's summary as its offline file leaves it: every summary update, the last one winning."""
    (path,) = glob.glob(os.path.join(run_dir, "*.wandb"))
    summary = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary
