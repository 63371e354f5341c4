"""Text classification data: the BBC News corpus in its real layout, a user's CSV or JSONL of
(text, label), a seeded stratified split, and tokenization by the ``tokenizers`` library from a
checkpoint's ``tokenizer.json`` (the ``text`` extra), cached by content.

A tokenized split is an int32 array (examples, 2, max_length): row 0 the token ids ([CLS] ... [SEP],
truncated and padded by the tokenizer to ``max_length``), row 1 the attention mask (1 for a token,
0 for padding), so that a text data set goes through the training program as image data sets do
(batches gathered by index on the device); lottery/models/bert.py reads the two rows.

Bad files are refused in one line naming the file: a directory without the five classes, a text
that is empty, a file in no encoding the loader reads (UTF-8, and Latin-1 for the BBC corpus, where
one real article, ``sports/199.txt``, is Latin-1), a CSV or JSONL row without its text or label, a
label the training split does not have.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from lottery.errors import LotteryError

BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")


@dataclasses.dataclass
class Corpus:
    """Texts and their labels (indices into ``classes``), in a fixed order; ``latin1``: how many
    files were not UTF-8 and were read as Latin-1."""

    texts: List[str]
    labels: np.ndarray  # (N,) int32
    classes: Tuple[str, ...]
    latin1: int = 0


def _decode(path: str, data: bytes, latin1: bool) -> Tuple[str, bool]:
    try:
        return data.decode("utf-8-sig"), False  # a byte-order mark (a CSV saved by Excel) dropped
    except UnicodeDecodeError as error:
        if not latin1:
            raise LotteryError(
                f"{path}: not UTF-8 (byte {data[error.start]:#04x} at offset {error.start}); save it as UTF-8"
            )
        return data.decode("latin-1"), True


def read_bbc(directory: str) -> Corpus:
    """The BBC News corpus (Greene & Cunningham 2006): one directory per class (``BBC_CLASSES``; the
    official archive's ``sport`` is read as sports), one article per ``.txt`` file, its first line
    the headline; files in numeric order. UTF-8, else Latin-1 (the corpus's one such file)."""
    if not os.path.isdir(directory):
        raise LotteryError(f"{directory}: no such directory (the BBC News corpus: {', '.join(BBC_CLASSES)}/*.txt)")
    texts, labels, latin1 = [], [], 0
    for label, name in enumerate(BBC_CLASSES):
        folder = os.path.join(directory, name)
        if not os.path.isdir(folder) and name == "sports" and os.path.isdir(os.path.join(directory, "sport")):
            folder = os.path.join(directory, "sport")
        if not os.path.isdir(folder):
            raise LotteryError(f"{directory}: no {name}/ directory (the BBC News corpus has {', '.join(BBC_CLASSES)})")
        files = sorted((f for f in os.listdir(folder) if f.endswith(".txt")), key=_numeric)
        if not files:
            raise LotteryError(f"{folder}: no .txt articles")
        for file in files:
            path = os.path.join(folder, file)
            with open(path, "rb") as f:
                text, was_latin1 = _decode(path, f.read(), latin1=True)
            if not text.strip():
                raise LotteryError(f"{path}: empty article")
            texts.append(text.strip())
            labels.append(label)
            latin1 += was_latin1
    return Corpus(texts, np.asarray(labels, np.int32), BBC_CLASSES, latin1)


def _numeric(name: str):
    stem = os.path.splitext(name)[0]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def read_table(path: str, classes: Optional[Sequence[str]] = None) -> Corpus:
    """(text, label) rows of a CSV file with a header naming ``text`` and ``label`` columns, or of a
    JSONL file (``.jsonl``: one object with ``text`` and ``label`` per line). Labels are names;
    ``classes`` (the training file's, for a test file) fixes their order, else sorted."""
    if not os.path.isfile(path):
        raise LotteryError(f"{path}: no such file (a CSV with text and label columns, or JSONL)")
    with open(path, "rb") as f:
        data = f.read()
    content, _ = _decode(path, data, latin1=False)
    rows: List[Tuple[str, str, int]] = []
    if path.endswith(".jsonl"):
        # Lines end at \n alone (JSON escapes the rest; str.splitlines would also cut at U+2028, \x0c, ...)
        for number, line in enumerate(content.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise LotteryError(f"{path}:{number}: not a JSON object")
            if not isinstance(row, dict) or "text" not in row or "label" not in row:
                raise LotteryError(f"{path}:{number}: expected an object with text and label")
            rows.append((row["text"], row["label"], number))
    else:
        reader = csv.DictReader(io.StringIO(content, newline=""))  # quoted fields keep their newlines
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise LotteryError(f"{path}: the first line must name the columns text and label (has {reader.fieldnames})")
        rows = []
        for row in reader:
            rows.append((row["text"], row["label"], reader.line_num))  # the line the record ends on
    if not rows:
        raise LotteryError(f"{path}: no rows")
    texts, names = [], []
    for text, label, number in rows:
        if not isinstance(text, str) or not text.strip():
            raise LotteryError(f"{path}:{number}: empty text")
        if label is None or str(label).strip() == "":
            raise LotteryError(f"{path}:{number}: no label")
        texts.append(text.strip())
        names.append(str(label).strip())
    known = tuple(classes) if classes is not None else tuple(sorted(set(names)))
    index = {name: i for i, name in enumerate(known)}
    for (_, _, number), name in zip(rows, names):
        if name not in index:
            raise LotteryError(
                f"{path}:{number}: label {name!r} is not one of the training labels ({', '.join(known)})"
            )
    return Corpus(texts, np.asarray([index[n] for n in names], np.int32), known)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded stratified split: in each class, a permutation by
    ``np.random.default_rng([seed, class])``, its first round(n x ``test_fraction``) to the test
    split; both returned in ascending order (the corpus's order)."""
    if not 0 < test_fraction < 1:
        raise LotteryError(f"dataset.test_fraction={test_fraction} must be between 0 and 1")
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = np.random.default_rng([seed, int(label)]).permutation(members)
        cut = int(round(len(members) * test_fraction))
        test.append(order[:cut])
        train.append(order[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def tokenize(texts: Sequence[str], tokenizer_file: str, max_length: int, cache: Optional[str] = None) -> np.ndarray:
    """(len(texts), 2, max_length) int32: token ids and attention mask, by the ``tokenizers``
    library from ``tokenizer_file`` (truncation and padding to ``max_length`` by the tokenizer).
    With ``cache`` (a directory), kept there as ``.npy`` named by the hash of the tokenizer file,
    ``max_length`` and the texts: tokenized once."""
    if max_length < 2:
        raise LotteryError(f"dataset.max_length={max_length} must be at least 2 ([CLS] and [SEP])")
    if not os.path.isfile(tokenizer_file):
        raise LotteryError(f"{tokenizer_file}: not found (the checkpoint's tokenizer.json, for the tokenizers library)")
    with open(tokenizer_file, "rb") as f:
        spec = f.read()
    digest = hashlib.sha256(spec)
    digest.update(str(max_length).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    path = os.path.join(cache, f"tokens-{digest.hexdigest()[:20]}.npy") if cache else None
    if path and os.path.exists(path):
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(texts), 2, max_length) and cached.dtype == np.int32:
                return cached
        except (OSError, ValueError):
            pass  # a torn or foreign file: tokenized again below, and replaced
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise LotteryError("text data need the tokenizers library: pip install -e '.[text]'")
    try:
        tokenizer = Tokenizer.from_str(spec.decode("utf-8"))
    except Exception as error:  # the library raises its own Exception type for a malformed file
        raise LotteryError(f"{tokenizer_file}: cannot be read by the tokenizers library ({str(error).splitlines()[0]})")
    pad = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]", length=max_length)
    encoded = tokenizer.encode_batch(list(texts))
    out = np.empty((len(texts), 2, max_length), np.int32)
    out[:, 0] = [e.ids for e in encoded]
    out[:, 1] = [e.attention_mask for e in encoded]
    if path:
        os.makedirs(cache, exist_ok=True)
        partial = f"{path[: -len('.npy')]}.{os.getpid()}.partial.npy"  # appears whole, by a rename
        np.save(partial, out, allow_pickle=False)
        os.replace(partial, path)
    return out
