"""CIFAR-100's binary version on files generated here in the real record format (2 label bytes,
coarse then fine, then the R, G and B planes), with fewer records than the official files: the
reader checks each file's size against ``cifar100.RECORDS``, which the tests set smaller. No test
downloads anything."""

import hashlib
import os
import re
import tarfile

import jax
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf

from conftest import compose_config
from lottery import data as datasets
from lottery import models
from lottery.config import DatasetConfig
from lottery.data import cifar100
from lottery.errors import LotteryError
from lottery.results.identity import experiment_hash

SMALL = {"train.bin": 60, "test.bin": 20}


def dataset_config(name, root, download=False, **kwargs):
    return OmegaConf.structured(DatasetConfig(name=name, root=str(root), download=download, **kwargs))


def write_records(path, images, coarse, fine):
    """Records byte by byte as the data set's page describes them: <coarse><fine><1024 red><1024
    green><1024 blue>, each plane row-major."""
    with open(path, "wb") as f:
        for image, c, label in zip(images, coarse, fine):
            f.write(bytes([c, label]))
            for channel in range(3):
                f.write(image[:, :, channel].astype(np.uint8).tobytes())  # rows of 32, top to bottom


def make_files(directory, seed=0):
    """Random images and labels in ``SMALL``'s record counts; what was written, by file name."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    written = {}
    for name, records in SMALL.items():
        arrays = (
            rng.integers(0, 256, (records, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 20, records),
            rng.integers(0, 100, records),
        )
        write_records(directory / name, *arrays)
        written[name] = arrays
    return written


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar100, "RECORDS", dict(SMALL))  # the real record format, fewer records
    return tmp_path, tmp_path / "cifar100" / cifar100.SUBDIR


def one_line(error):
    message = str(error.value)
    assert "\n" not in message  # the command line prints it as `error: <message>`, exit code 2
    return message


def test_pixels_and_both_kinds_of_label_decode_to_what_was_written(small):
    root, directory = small
    written = make_files(directory)
    images, coarse, fine = written["train.bin"]
    test_images, test_coarse, test_fine = written["test.bin"]
    for labels, train_y, test_y, classes in (("fine", fine, test_fine, 100), ("coarse", coarse, test_coarse, 20)):
        data = datasets.load(dataset_config("cifar100", root, validation=10, labels=labels))
        np.testing.assert_array_equal(data.train_x, images[:50])
        np.testing.assert_array_equal(data.val_x, images[50:])
        np.testing.assert_array_equal(data.test_x, test_images)
        np.testing.assert_array_equal(np.concatenate([data.train_y, data.val_y]), train_y)
        np.testing.assert_array_equal(data.test_y, test_y)
        assert data.num_classes == classes and data.train_y.dtype == np.int32 and data.input_shape == (32, 32, 3)
        assert (data.scale, data.mean, data.std) == (255.0, cifar100.STATS["mean"], cifar100.STATS["std"])


def test_one_record_by_its_byte_offsets(tmp_path):
    record = np.zeros(cifar100.RECORD, np.uint8)
    record[0], record[1] = 19, 99  # coarse, then fine
    record[2 + 0 * 1024 + 5 * 32 + 9] = 11  # red plane, row 5, column 9
    record[2 + 1 * 1024 + 31 * 32 + 31] = 12  # green plane, row 31, column 31
    record[2 + 2 * 1024 + 0] = 13  # blue plane, row 0, column 0
    record.tofile(tmp_path / "one.bin")
    images, fine = cifar100.read(str(tmp_path / "one.bin"), 1)
    _, coarse = cifar100.read(str(tmp_path / "one.bin"), 1, "coarse")
    assert (fine.tolist(), coarse.tolist(), images.shape) == ([99], [19], (1, 32, 32, 3))
    assert (images[0, 5, 9, 0], images[0, 31, 31, 1], images[0, 0, 0, 2], images.sum()) == (11, 12, 13, 36)


def test_fine_and_coarse_are_other_data_other_experiments_and_other_output_layers(small):
    root, directory = small
    make_files(directory)
    fine, coarse = (
        datasets.load(dataset_config("cifar100", root, labels=labels, validation=10)) for labels in ("fine", "coarse")
    )
    assert fine.fingerprint != coarse.fingerprint
    assert fine.fingerprint == datasets.load(dataset_config("cifar100", root, validation=10)).fingerprint  # the default
    cfg = compose_config(["+exp=resnet_cifar100"])
    assert experiment_hash(cfg, fine.fingerprint) != experiment_hash(
        compose_config(["+exp=resnet_cifar100", "dataset.labels=coarse"]), coarse.fingerprint
    )
    for data, classes in ((fine, 100), (coarse, 20)):  # as lottery.imp.experiment.prepare builds it
        model = nnx.eval_shape(lambda: models.build(cfg.model, data.input_shape, data.num_classes, jax.random.key(0)))
        assert model.output.kernel.shape == (64, classes)


def test_an_archive_in_place_is_checked_then_unpacked(tmp_path, monkeypatch):
    # What the download path does after fetching (lottery/data/download.py: unpack_archive), on a
    # generated archive laid out as the official one, whose md5 stands in for the published one.
    monkeypatch.setattr(cifar100, "RECORDS", dict(SMALL))
    written = make_files(tmp_path / "files")
    archive = tmp_path / "cifar100" / cifar100.ARCHIVE
    os.makedirs(archive.parent)
    with tarfile.open(archive, "w:gz") as tar:
        for name in SMALL:
            tar.add(tmp_path / "files" / name, arcname=f"{cifar100.SUBDIR}/{name}")
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(LotteryError, match=rf"^{re.escape(str(archive))}: checksum mismatch \(md5 should be 0{{32}}\)"):
        datasets.load(dataset_config("cifar100", tmp_path, download=True, validation=10))
    monkeypatch.setattr(cifar100, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    data = datasets.load(dataset_config("cifar100", tmp_path, download=True, validation=10))
    np.testing.assert_array_equal(data.test_x, written["test.bin"][0])
    assert sorted(os.listdir(tmp_path / "cifar100")) == sorted([cifar100.ARCHIVE, cifar100.SUBDIR])  # no scratch left
    assert sorted(os.listdir(tmp_path / "cifar100" / cifar100.SUBDIR)) == sorted(SMALL)


def test_a_truncated_or_corrupt_file_is_one_line_naming_it_and_what_to_do(small):
    root, directory = small
    written = make_files(directory)
    path = directory / "train.bin"
    content = path.read_bytes()
    path.write_bytes(content[:-1000])
    with pytest.raises(LotteryError) as error:
        datasets.load(dataset_config("cifar100", root))
    assert one_line(error) == (
        f"{path}: 183,440 bytes, expected 184,440 (60 records of 3,074 bytes): truncated, or not "
        "CIFAR-100's binary version; delete it to download it again, or replace it with the official file"
    )
    images, coarse, fine = written["train.bin"]
    for kind, column, value in (("coarse", 0, 20), ("fine", 1, 100)):
        labels = [coarse.copy(), fine.copy()]
        labels[column][7] = value
        write_records(path, images, *labels)
        with pytest.raises(LotteryError) as error:
            datasets.load(dataset_config("cifar100", root))  # fine labels asked for: the coarse byte is checked too
        assert one_line(error) == (
            f"{path}: {kind} label {value} in record 7, CIFAR-100's are 0-{value - 1}: corrupt, "
            "or not the binary version; replace it with a good copy"
        )


def test_the_official_sizes_are_required_without_the_tests_records(tmp_path):
    # RECORDS as shipped: 50,000 and 10,000 records of 3,074 bytes (153,700,000 and 30,740,000 bytes).
    assert {name: records * cifar100.RECORD for name, records in cifar100.RECORDS.items()} == {
        "train.bin": 153_700_000,
        "test.bin": 30_740_000,
    }
    make_files(tmp_path / "cifar100")  # 60 and 20 records, in the directory itself
    with pytest.raises(LotteryError, match=r"train\.bin: 184,440 bytes, expected 153,700,000 \(50,000 records"):
        datasets.load(dataset_config("cifar100", tmp_path))


def test_missing_files_and_the_pickled_version_are_named(small):
    root, directory = small
    make_files(directory)
    os.remove(directory / "test.bin")
    with pytest.raises(LotteryError) as error:
        datasets.load(dataset_config("cifar100", root))
    where = root / "cifar100"
    assert one_line(error) == (
        f"cifar100: no test.bin in {where} and dataset.download=false; put the binary version's "
        f"train.bin, test.bin (cifar-100-binary.tar.gz) in {where} (or its cifar-100-binary/), or "
        "set dataset.root / LOTTERY_DATA_DIR"
    )
    os.remove(directory / "train.bin")
    pickled = where / "cifar-100-python"  # as cifar-100-python.tar.gz unpacks: pickles, never read
    os.makedirs(pickled)
    for name in ("train", "test", "meta"):
        (pickled / name).write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(LotteryError) as error:
        datasets.load(dataset_config("cifar100", root))
    assert one_line(error).startswith(
        f"cifar100: no train.bin, test.bin in {where} and dataset.download=false; "
        f"{pickled}: the pickled Python version, which is never read; put the binary "
    )


def test_labels_are_fine_or_coarse_and_coarse_only_where_there_are_coarse_labels(small):
    root, directory = small
    make_files(directory)
    with pytest.raises(LotteryError) as error:
        datasets.load(dataset_config("cifar100", root, labels="superclass"))
    assert one_line(error) == "dataset.labels=superclass is not a kind of label of cifar100; choose fine or coarse"
    with pytest.raises(LotteryError) as error:
        datasets.load(dataset_config("cifar10", root, labels="coarse"))
    assert (
        one_line(error)
        == "dataset.labels=coarse is not a kind of label of cifar10; choose fine (coarse labels: cifar100)"
    )
