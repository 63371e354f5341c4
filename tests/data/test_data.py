"""Loaders against files generated here in the real formats, checksums, and download checks."""

import functools
import gzip
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest
from omegaconf import OmegaConf

from lottery import data as datasets
from lottery.config import DatasetConfig
from lottery.data import cifar10, download, mnist
from lottery.errors import LotteryError


def write_idx(path, array, compress):
    """An IDX file: 0, 0, type 0x08 (unsigned byte), ndim, big-endian int32 dims, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    content = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path + (".gz" if compress else ""), "wb") as f:
        f.write(content)


def make_idx_dataset(directory, n_train=50, n_test=20, seed=0, compress=(True, False, True, False)):
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28)),
        rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 28, 28)),
        rng.integers(0, 10, n_test),
    )
    os.makedirs(directory, exist_ok=True)
    for name, array, gz in zip(mnist.FILES, arrays, compress):
        write_idx(os.path.join(directory, name), array, gz)
    return arrays


def dataset_config(name, root, **kwargs):
    return OmegaConf.structured(DatasetConfig(name=name, root=str(root), download=False, **kwargs))


def test_idx_files_raw_and_gzip_load_with_a_validation_split(tmp_path):
    train_x, train_y, test_x, test_y = make_idx_dataset(tmp_path / "fashion_mnist")
    data = datasets.load(dataset_config("fashion_mnist", tmp_path, validation=10))
    assert data.train_x.shape == (40, 28, 28, 1) and data.val_x.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(data.train_x[..., 0], train_x[:40])
    np.testing.assert_array_equal(data.val_x[..., 0], train_x[40:])  # the last examples held out
    np.testing.assert_array_equal(data.val_y, train_y[40:])
    np.testing.assert_array_equal(data.test_x[..., 0], test_x)
    np.testing.assert_array_equal(data.test_y, test_y)
    assert data.train_x.dtype == np.uint8 and data.train_y.dtype == np.int32


def test_mnist_content_checksum_mismatch_names_the_file(tmp_path):
    make_idx_dataset(tmp_path / "mnist")
    with pytest.raises(
        LotteryError, match=r"train-images-idx3-ubyte\.gz: checksum mismatch \(md5 of the decompressed content"
    ):
        datasets.load(dataset_config("mnist", tmp_path))


def test_truncated_or_foreign_idx_files_are_rejected_by_name(tmp_path):
    directory = tmp_path / "fashion_mnist"
    make_idx_dataset(directory)
    path = os.path.join(directory, "train-labels-idx1-ubyte")
    with open(path, "r+b") as f:
        f.truncate(20)
    with pytest.raises(
        LotteryError, match=r"train-labels-idx1-ubyte: IDX header declares shape \(50,\) but the file holds 12 bytes"
    ):
        datasets.load(dataset_config("fashion_mnist", tmp_path))
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 not an idx file")
    with pytest.raises(LotteryError, match=r"train-labels-idx1-ubyte: not an IDX file"):
        datasets.load(dataset_config("fashion_mnist", tmp_path))


def test_missing_files_name_what_is_expected_and_where(tmp_path):
    with pytest.raises(LotteryError) as error:
        datasets.load(dataset_config("fashion_mnist", tmp_path))
    message = str(error.value)
    assert "missing train-images-idx3-ubyte[.gz]" in message and str(tmp_path / "fashion_mnist") in message
    assert "t10k-labels-idx1-ubyte[.gz]" in message and "LOTTERY_DATA_DIR" in message


def test_validation_larger_than_the_training_set_is_rejected(tmp_path):
    make_idx_dataset(tmp_path / "fashion_mnist")
    with pytest.raises(LotteryError, match=r"dataset\.validation=50 must be between 0 and the 50 training examples"):
        datasets.load(dataset_config("fashion_mnist", tmp_path, validation=50))


def write_cifar_batch(path, images, labels):
    """Binary CIFAR-10 records: 1 label byte, then the R, G and B planes of 32x32 pixels."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    np.concatenate([labels[:, None], planes], axis=1).astype(np.uint8).tofile(path)


@pytest.fixture
def small_cifar(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", 8)  # the real record format, fewer records
    rng = np.random.default_rng(1)
    directory = tmp_path / "cifar10" / "cifar-10-batches-bin"
    os.makedirs(directory)
    batches = {}
    for name in cifar10.TRAIN_FILES + cifar10.TEST_FILES:
        images, labels = rng.integers(0, 256, (8, 32, 32, 3)), rng.integers(0, 10, 8)
        write_cifar_batch(directory / name, images, labels)
        batches[name] = images, labels
    return tmp_path, directory, batches


def test_cifar10_binary_records_decode_to_hwc_images(small_cifar):
    root, _, batches = small_cifar
    data = datasets.load(dataset_config("cifar10", root, validation=4))
    train_x = np.concatenate([batches[n][0] for n in cifar10.TRAIN_FILES])
    train_y = np.concatenate([batches[n][1] for n in cifar10.TRAIN_FILES])
    np.testing.assert_array_equal(data.train_x, train_x[:36])
    np.testing.assert_array_equal(data.val_y, train_y[36:])
    np.testing.assert_array_equal(data.test_x, batches["test_batch.bin"][0])
    assert data.input_shape == (32, 32, 3)


def test_cifar10_pixel_planes_are_red_green_blue(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", 1)
    record = np.zeros(cifar10.RECORD, np.uint8)
    record[0] = 7
    record[1 + 0 * 1024 + 5 * 32 + 9] = 11  # red plane, row 5, column 9
    record[1 + 2 * 1024 + 0] = 13  # blue plane, row 0, column 0
    record.tofile(tmp_path / "one.bin")
    images, labels = cifar10.read_batch(str(tmp_path / "one.bin"))
    assert labels.tolist() == [7] and images.shape == (1, 32, 32, 3)
    assert images[0, 5, 9, 0] == 11 and images[0, 0, 0, 2] == 13 and images.sum() == 24


def test_cifar10_wrong_size_or_label_is_rejected_by_name(small_cifar):
    root, directory, _ = small_cifar
    path = directory / "data_batch_3.bin"
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(LotteryError, match=r"data_batch_3\.bin: 24585 bytes, expected 24584"):
        datasets.load(dataset_config("cifar10", root))
    write_cifar_batch(path, np.zeros((8, 32, 32, 3)), np.full(8, 12))
    with pytest.raises(LotteryError, match=r"data_batch_3\.bin: label 12 found"):
        datasets.load(dataset_config("cifar10", root))


def write_cifar_subset(directory, counts, seed=2):
    """Files of ``counts[name]`` CIFAR-10 records each in ``directory``; their (images, labels)."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    batches = {}
    for name, n in counts.items():
        batches[name] = rng.integers(0, 256, (n, 32, 32, 3)), rng.integers(0, 10, n)
        write_cifar_batch(directory / name, *batches[name])
    return batches


def test_cifar10_subset_reads_whole_records_of_every_batch_file_in_name_order(tmp_path):
    # As the shared subset is named, plus a whole official batch and a second partial one.
    counts = {"data_batch_2.first5.bin": 5, "data_batch_1.bin": 8, "test_batch.first3.bin": 3, "test_batch.bin": 4}
    batches = write_cifar_subset(tmp_path / cifar10.SUBSET_DIRECTORY, counts)
    (tmp_path / cifar10.SUBSET_DIRECTORY / "README").write_text("not a batch file: not read")
    data = datasets.load(dataset_config("cifar10_subset", tmp_path, validation=3))
    train = [batches["data_batch_1.bin"], batches["data_batch_2.first5.bin"]]  # sorted by file name
    test = [batches["test_batch.bin"], batches["test_batch.first3.bin"]]
    np.testing.assert_array_equal(np.concatenate([data.train_x, data.val_x]), np.concatenate([x for x, _ in train]))
    np.testing.assert_array_equal(np.concatenate([data.train_y, data.val_y]), np.concatenate([y for _, y in train]))
    np.testing.assert_array_equal(data.test_x, np.concatenate([x for x, _ in test]))
    np.testing.assert_array_equal(data.test_y, np.concatenate([y for _, y in test]))
    assert data.examples == {"train": 10, "validation": 3, "test": 7} and data.input_shape == (32, 32, 3)
    assert (data.scale, data.mean, data.std) == (255.0, cifar10.STATS["mean"], cifar10.STATS["std"])


def test_cifar10_subset_files_may_sit_in_cifar_10_batches_bin(tmp_path):
    write_cifar_subset(
        tmp_path / cifar10.SUBSET_DIRECTORY / cifar10.SUBDIR, {"data_batch_1.bin": 6, "test_batch.bin": 2}
    )
    data = datasets.load(dataset_config("cifar10_subset", tmp_path, validation=0))
    assert data.examples == {"train": 6, "validation": 0, "test": 2}


def test_cifar10_refuses_a_batch_of_fewer_records_and_says_to_ask_for_the_subset(small_cifar):
    # A truncated official file is never taken for the whole set: the opt-in is dataset=cifar10_subset.
    root, directory, batches = small_cifar
    write_cifar_batch(directory / "data_batch_5.bin", *(a[:5] for a in batches["data_batch_5.bin"]))
    with pytest.raises(
        LotteryError,
        match=r"data_batch_5\.bin: 5 records, not 8: for part of CIFAR-10 use "
        r"dataset=cifar10_subset \(README: Data\), else replace it with the official file$",
    ):
        datasets.load(dataset_config("cifar10", root, validation=4))


def test_cifar10_subset_checks_the_sha256sums_it_finds(tmp_path):
    directory = tmp_path / cifar10.SUBSET_DIRECTORY
    write_cifar_subset(directory, {"data_batch_1.first6.bin": 6, "test_batch.first2.bin": 2})
    sha = lambda name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
    lines = [
        f"{sha('data_batch_1.first6.bin')}  data_batch_1.first6.bin",
        f"{sha('test_batch.first2.bin')} *test_batch.first2.bin",
    ]
    (directory / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    cfg = dataset_config("cifar10_subset", tmp_path, validation=1)
    assert datasets.load(cfg).examples == {"train": 5, "validation": 1, "test": 2}
    other = np.fromfile(directory / "test_batch.first2.bin", np.uint8)
    other[5] ^= 1  # a pixel: the file still parses
    other.tofile(directory / "test_batch.first2.bin")
    with pytest.raises(
        LotteryError,
        match=r"test_batch\.first2\.bin: checksum mismatch \(sha256 should be [0-9a-f]{64}, "
        r"from SHA256SUMS\); it is corrupt or not the file listed: replace it",
    ):
        datasets.load(cfg)
    (directory / "SHA256SUMS").write_text(lines[0] + "\n")
    with pytest.raises(
        LotteryError, match=r"test_batch\.first2\.bin: not listed in .*SHA256SUMS; add its sha256 there"
    ):
        datasets.load(cfg)
    (directory / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    os.remove(directory / "test_batch.first2.bin")
    write_cifar_subset(directory, {"test_batch.first9.bin": 9})
    with pytest.raises(LotteryError, match=r"test_batch\.first2\.bin: listed in SHA256SUMS but missing"):
        datasets.load(cfg)


def test_a_subset_of_the_training_examples_is_other_data_with_the_test_set_whole(tmp_path):
    full = datasets.load(dataset_config("digits", tmp_path, validation=180))
    part = datasets.load(dataset_config("digits", tmp_path, validation=100, subset=1000))
    assert full.examples == {"train": 1257, "validation": 180, "test": 360}
    assert part.examples == {"train": 900, "validation": 100, "test": 360}
    np.testing.assert_array_equal(np.concatenate([part.train_x, part.val_x]), full.train_x[:1000])  # the first ones
    np.testing.assert_array_equal(part.test_x, full.test_x)
    assert part.fingerprint != full.fingerprint


def test_digits_need_no_download_and_split_the_same_way_every_time(tmp_path):
    a = datasets.load(dataset_config("digits", tmp_path / "nowhere", validation=180))
    b = datasets.load(dataset_config("digits", tmp_path / "elsewhere", validation=180))
    assert (len(a.train_x), len(a.val_x), len(a.test_x)) == (1257, 180, 360)
    assert a.train_x.max() == 16 and a.scale == 16.0
    np.testing.assert_array_equal(a.test_y, b.test_y)


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on loopback serving tmp_path/served (no network beyond this machine)."""
    served = tmp_path / "served"
    os.makedirs(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_checks_the_md5_and_leaves_nothing_on_mismatch(local_server, tmp_path):
    served, url = local_server
    payload = os.urandom(100_000)
    (served / "file.gz").write_bytes(payload)
    good = hashlib.md5(payload).hexdigest()
    target = tmp_path / "data" / "file.gz"
    download.fetch(f"{url}/file.gz", str(target), md5=good)
    assert target.read_bytes() == payload
    other = tmp_path / "data" / "other.gz"
    with pytest.raises(LotteryError, match="downloaded file has the wrong md5"):
        download.fetch(f"{url}/file.gz", str(other), md5="0" * 32)
    assert sorted(os.listdir(tmp_path / "data")) == ["file.gz"]  # no partial file left behind
    with pytest.raises(LotteryError, match=r"could not download .*/absent\.gz"):
        download.fetch(f"{url}/absent.gz", str(other))
    assert sorted(os.listdir(tmp_path / "data")) == ["file.gz"]


def test_idx_download_uses_the_mirrors_and_verifies(local_server, tmp_path, monkeypatch):
    served, url = local_server
    arrays = make_idx_dataset(served, compress=(True,) * 4)
    md5s = tuple(hashlib.md5((served / f"{n}.gz").read_bytes()).hexdigest() for n in mnist.FILES)
    monkeypatch.setattr(mnist, "FASHION_MIRRORS", (f"{url}/missing/", f"{url}/"))
    monkeypatch.setattr(mnist, "FASHION_GZ_MD5", md5s)
    cfg = OmegaConf.structured(DatasetConfig(name="fashion_mnist", root=str(tmp_path / "root"), validation=5))
    data = datasets.load(cfg)
    np.testing.assert_array_equal(data.test_x[..., 0], arrays[2])
    assert sorted(os.listdir(tmp_path / "root" / "fashion_mnist")) == sorted(f"{n}.gz" for n in mnist.FILES)
