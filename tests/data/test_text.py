"""Text data (lottery/data/text.py): the real BBC News corpus (``$LOTTERY_DATA_DIR/bbc``), tokenized by
the real MiniLM's tokenizer.json; a user's CSV/JSONL; the seeded stratified split; bad files in one line."""

import os

import numpy as np
import pytest

from lottery.data import text
from lottery.errors import LotteryError

DATA = os.environ.get("LOTTERY_DATA_DIR", os.path.expanduser("~/.cache/lottery"))
BBC, MINILM = os.path.join(DATA, "bbc"), os.path.join(DATA, "all-MiniLM-L6-v2")
needs_real = pytest.mark.skipif(not os.path.isdir(BBC) or not os.path.isdir(MINILM), reason="set LOTTERY_DATA_DIR")


@needs_real
def test_the_real_bbc_corpus_is_read_whole_with_its_latin1_article():
    corpus = text.read_bbc(BBC)
    counts = [int(np.sum(corpus.labels == i)) for i in range(5)]
    assert counts == [510, 386, 417, 511, 401]  # the official counts (shared/data/README.md)
    assert corpus.latin1 == 1  # sports/199.txt: byte 0xA3 is a pound sign in Latin-1
    files = sorted(os.listdir(os.path.join(BBC, "sports")), key=lambda f: int(f[:-4]))
    article = corpus.texts[510 + 386 + 417 + files.index("199.txt")]
    assert "£" in article and "\ufffd" not in article
    with open(os.path.join(BBC, "business", "001.txt"), encoding="utf-8") as f:
        assert corpus.texts[0] == f.read().strip()  # the first business article, first


def test_the_stratified_split_keeps_each_class_share_and_its_seed():
    labels = np.repeat(np.arange(3, dtype=np.int32), [50, 31, 7])
    train, test = text.stratified_split(labels, 0.2, seed=4)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    assert [int(np.sum(labels[test] == c)) for c in range(3)] == [10, 6, 1]  # round(n x 0.2) of each class
    again, other = text.stratified_split(labels, 0.2, seed=4), text.stratified_split(labels, 0.2, seed=5)
    assert np.array_equal(again[1], test) and not np.array_equal(other[1], test)
    with pytest.raises(LotteryError, match="dataset.test_fraction=1.0 must be between 0 and 1"):
        text.stratified_split(labels, 1.0, seed=0)


@needs_real
def test_tokens_are_the_tokenizers_truncated_and_padded_and_cached(tmp_path, monkeypatch):
    tokenizer = os.path.join(MINILM, "tokenizer.json")
    texts = ["Shares in Marks & Spencer rose.", "word " * 300]
    tokens = text.tokenize(texts, tokenizer, 16, cache=str(tmp_path))
    assert tokens.shape == (2, 2, 16) and tokens.dtype == np.int32
    ids, attention = tokens[:, 0], tokens[:, 1]
    assert ids[0, 0] == 101 and ids[0, attention[0].sum() - 1] == 102  # [CLS] ... [SEP] of this vocabulary
    assert np.all(ids[0, attention[0].sum() :] == 0) and np.all(attention[1] == 1)  # padded; truncated
    assert ids[1, -1] == 102  # truncation keeps the [SEP]
    import tokenizers

    monkeypatch.setattr(tokenizers, "Tokenizer", None)  # from the cache: the library is not called again
    assert np.array_equal(text.tokenize(texts, tokenizer, 16, cache=str(tmp_path)), tokens)
    (cached,) = tmp_path.glob("tokens-*.npy")
    cached.write_bytes(b"torn")  # a torn cache file is tokenized again
    monkeypatch.undo()
    assert np.array_equal(text.tokenize(texts, tokenizer, 16, cache=str(tmp_path)), tokens)
    assert not np.array_equal(text.tokenize(texts, tokenizer, 12, cache=str(tmp_path))[:, :, :12], tokens[:, :, :12])


def test_a_csv_and_a_jsonl_file_of_texts_and_labels(tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"Goal, then another",sport\nRates rise,economy\n')
    corpus = text.read_table(str(tmp_path / "train.csv"))
    assert corpus.texts == ["Goal, then another", "Rates rise"] and corpus.classes == ("economy", "sport")
    assert corpus.labels.tolist() == [1, 0]
    (tmp_path / "test.jsonl").write_text(
        '{"text": "Cup final", "label": "sport"}\n\n{"text": "GDP", "label": "economy"}\n'
    )
    test = text.read_table(str(tmp_path / "test.jsonl"), classes=corpus.classes)
    assert test.labels.tolist() == [1, 0]


def test_quoted_newlines_a_byte_order_mark_and_unicode_line_separators_are_read_as_written(tmp_path):
    (tmp_path / "a.csv").write_bytes('\ufefftext,label\n"Line one\nline two",x\nplain,y\n'.encode())
    corpus = text.read_table(str(tmp_path / "a.csv"))  # Excel's BOM; a quoted field over two lines
    assert corpus.texts == ["Line one\nline two", "plain"] and corpus.classes == ("x", "y")
    (tmp_path / "b.csv").write_bytes(b'text,label\n"two\nlines",x\n   ,y\n')
    with pytest.raises(LotteryError, match=r"b\.csv:4: empty text"):  # the line the record is on
        text.read_table(str(tmp_path / "b.csv"))
    (tmp_path / "c.jsonl").write_text('{"text": "a\u2028b\u0085c", "label": "x"}\n', encoding="utf-8")
    assert text.read_table(str(tmp_path / "c.jsonl")).texts == ["a\u2028b\u0085c"]


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("a.csv", b"text,label\nfine,x\n\xa3 sterling,y\n", "a.csv: not UTF-8 (byte 0xa3 at offset"),
        ("a.csv", b"text,label\nfine,x\n   ,y\n", "a.csv:3: empty text"),
        ("a.csv", b"body,label\nfine,x\n", "a.csv: the first line must name the columns text and label"),
        ("a.csv", b"text,label\nfine,\n", "a.csv:2: no label"),
        ("a.jsonl", b'{"text": "a", "label": "x"}\n[1, 2]\n', "a.jsonl:2: expected an object with text and label"),
        ("a.jsonl", b'{"text": "a", "label": "x"}\n{oops\n', "a.jsonl:2: not a JSON object"),
        ("a.jsonl", b'{"text": "a", "label": "z"}\n', "a.jsonl:1: label 'z' is not one of the training labels (x, y)"),
    ],
)
def test_a_bad_text_file_is_one_line_naming_it(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    classes = ("x", "y") if "label 'z'" in expected else None
    with pytest.raises(LotteryError) as refused:
        text.read_table(str(tmp_path / name), classes)
    assert str(refused.value).startswith(str(tmp_path)) and expected in str(refused.value)


def test_a_bbc_directory_without_a_class_or_with_an_empty_article_is_one_line(tmp_path):
    for name in text.BBC_CLASSES[:-1]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "001.txt").write_text("Headline\n\nBody.")
    with pytest.raises(LotteryError, match=r"no tech/ directory \(the BBC News corpus has business, "):
        text.read_bbc(str(tmp_path))
    (tmp_path / "tech").mkdir()
    (tmp_path / "tech" / "001.txt").write_text("  \n")
    with pytest.raises(LotteryError, match=r"tech/001\.txt: empty article"):
        text.read_bbc(str(tmp_path))
    with pytest.raises(LotteryError, match=r"tokenizer\.json: not found"):
        text.tokenize(["a"], str(tmp_path / "tokenizer.json"), 8)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(LotteryError, match=r"tokenizer\.json: cannot be read by the tokenizers library"):
        text.tokenize(["a"], str(tmp_path / "tokenizer.json"), 8)
