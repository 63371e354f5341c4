"""Every failure of the data loaders is one line that names the file or the URL and says what to do:
corrupt, truncated and unreadable files, and downloads that fail, stall or outlast their deadline.

Files are generated in the real formats, or (MNIST) are copies of the real ones; servers listen on
127.0.0.1 only and end every response within seconds, so no test can hang on them.
"""

import builtins
import errno
import gzip
import hashlib
import http.server
import os
import re
import shutil
import signal
import socket
import tarfile
import threading
import time
import zlib

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import run_cli
from lottery import data as datasets
from lottery.config import DatasetConfig
from lottery.data import cifar10, download, mnist
from lottery.errors import LotteryError
from test_data import local_server, make_idx_dataset, write_cifar_batch, write_cifar_subset  # noqa: F401 (a fixture)

SHARED_MNIST = os.path.join(os.environ.get("LOTTERY_DATA_DIR", os.path.expanduser("~/.cache/lottery")), "mnist")


def dataset_config(name, root, download=False, **kwargs):
    return OmegaConf.structured(DatasetConfig(name=name, root=str(root), download=download, **kwargs))


@pytest.fixture
def real_mnist(tmp_path):
    """Copies of the real MNIST .gz files in tmp_path/mnist (the shared ones are never modified)."""
    names = [name + ".gz" for name in mnist.FILES]
    if not all(os.path.exists(os.path.join(SHARED_MNIST, name)) for name in names):
        if os.environ.get("LOTTERY_REQUIRE_MNIST") == "1":
            pytest.fail(f"MNIST is required (LOTTERY_REQUIRE_MNIST=1) but not found in {SHARED_MNIST}")
        pytest.skip(f"MNIST .gz files not found in {SHARED_MNIST}")
    os.makedirs(tmp_path / "mnist")
    for name in names:
        shutil.copyfile(os.path.join(SHARED_MNIST, name), tmp_path / "mnist" / name)
    return tmp_path


def flip(path, offset):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0xFF
    open(path, "wb").write(bytes(data))


def corrupt_gzip(path, how):
    """Damage a .gz file the ways disks and interrupted copies do."""
    data = bytearray(open(path, "rb").read())
    if how == "deflate":  # the first block header of the deflate stream says "reserved block type"
        data[10] |= 0b111
    elif how == "header":  # the gzip magic number
        data[0] ^= 0xFF
    elif how == "truncated":
        data = data[: len(data) // 2]
    elif how == "crc":  # the trailer's CRC-32 of the content
        data[-8] ^= 0xFF
    open(path, "wb").write(bytes(data))


GZIP_REASONS = {
    "deflate": r"Error -3 while decompressing data",  # zlib.error
    "header": r"Not a gzipped file",  # gzip.BadGzipFile
    "truncated": r"Compressed file ended before the end-of-stream marker was reached",  # EOFError
    "crc": r"CRC check failed",  # gzip.BadGzipFile
}


def gzip_message(path, how):
    return (
        rf"^{re.escape(str(path))}: not a readable gzip file \({GZIP_REASONS[how]}.*\); it is corrupt or "
        r"truncated: delete it to download it again, or replace it with a good copy$"
    )


# --- corrupt and truncated .gz files ------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(GZIP_REASONS))
def test_corrupt_real_mnist_gz_is_named_with_what_to_do(real_mnist, how):
    path = real_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz"
    corrupt_gzip(path, how)
    with pytest.raises(LotteryError, match=gzip_message(path, how)):
        datasets.load(dataset_config("mnist", real_mnist))


@pytest.mark.slow
def test_a_flipped_byte_in_real_mnist_is_one_line_and_exit_code_2_on_the_command_line(real_mnist):
    path = real_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz"
    flip(path, 20)
    result = run_cli(
        "+exp=lenet",
        f"dataset.root={real_mnist}",
        "dataset.download=false",
        "levels=0",
        "training.steps=10it",
        "progress=false",
        f"output_dir={real_mnist / 'runs'}",
        cwd=real_mnist,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {path}: not a readable gzip file (Error -3 while decompressing data")


@pytest.mark.parametrize("how", sorted(GZIP_REASONS))
def test_every_gzip_reading_path_names_the_file(tmp_path, how):
    """The checksum, the IDX reader and a Fashion-MNIST load (no checksum: straight to the reader)."""
    directory = tmp_path / "fashion_mnist"
    make_idx_dataset(directory, compress=(True,) * 4)
    path = directory / "train-labels-idx1-ubyte.gz"
    # Labels compress well: a deflate stream with Huffman blocks, written without a file name.
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), mtime=0))
    corrupt_gzip(path, how)
    if how == "deflate":  # the zlib-level error, which no OSError handler catches
        with pytest.raises(zlib.error):
            gzip.decompress(path.read_bytes())
    message = gzip_message(path, how)
    with pytest.raises(LotteryError, match=message):
        download.file_digest(str(path), decompress=True)
    with pytest.raises(LotteryError, match=message):
        mnist.read_idx(str(path))
    with pytest.raises(LotteryError, match=message):
        datasets.load(dataset_config("fashion_mnist", tmp_path))


# --- unreadable files -----------------------------------------------------------------------------


@pytest.fixture
def deny(monkeypatch):
    """Make a file unreadable: chmod 000, and where that does not bite (as root), opening it fails
    the way it then would for anyone else."""

    def deny(path):
        path = str(path)
        os.chmod(path, 0)
        if os.access(path, os.R_OK):
            real_open = builtins.open

            def guarded_open(file, *args, **kwargs):
                if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == path:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
                return real_open(file, *args, **kwargs)

            monkeypatch.setattr(builtins, "open", guarded_open)

    return deny


@pytest.fixture
def small_cifar(tmp_path, monkeypatch):
    """The real record format, 8 records per file, in tmp_path/cifar10/cifar-10-batches-bin."""
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", 8)
    rng = np.random.default_rng(1)
    directory = tmp_path / "cifar10" / cifar10.SUBDIR
    os.makedirs(directory)
    for name in cifar10.TRAIN_FILES + cifar10.TEST_FILES:
        write_cifar_batch(directory / name, rng.integers(0, 256, (8, 32, 32, 3)), rng.integers(0, 10, 8))
    return tmp_path, directory


def test_an_mnist_file_that_is_a_directory_or_unreadable_is_named(tmp_path, deny):
    directory = tmp_path / "mnist"
    make_idx_dataset(directory)
    path = directory / "train-images-idx3-ubyte.gz"
    os.remove(path)
    os.makedirs(path)
    with pytest.raises(
        LotteryError, match=rf"^{re.escape(str(path))}: cannot be read \(it is a directory\): remove it"
    ):
        datasets.load(dataset_config("mnist", tmp_path))
    os.rmdir(path)
    make_idx_dataset(directory)
    deny(path)
    with pytest.raises(
        LotteryError, match=rf"^{re.escape(str(path))}: cannot be read \(permission denied\): make it readable"
    ):
        datasets.load(dataset_config("mnist", tmp_path))


def test_a_cifar10_batch_that_is_a_directory_or_unreadable_is_named(small_cifar, deny):
    root, directory = small_cifar
    path = directory / "data_batch_2.bin"
    os.remove(path)
    os.makedirs(path)
    with pytest.raises(LotteryError, match=rf"^{re.escape(str(path))}: cannot be read \(it is a directory\)"):
        datasets.load(dataset_config("cifar10", root))
    os.rmdir(path)
    write_cifar_batch(path, np.zeros((8, 32, 32, 3)), np.zeros(8))  # the right size
    deny(path)
    with pytest.raises(LotteryError, match=rf"^{re.escape(str(path))}: cannot be read \(permission denied\)"):
        datasets.load(dataset_config("cifar10", root))


# --- other bad files ---------------------------------------------------------------------------------


def idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    "case",
    ["gzip_without_gz", "empty", "header_cut_short", "label_out_of_range", "image_sizes_differ", "no_test_examples"],
)
def test_idx_files_that_parse_but_cannot_be_used_are_named(tmp_path, case):
    directory = tmp_path / "fashion_mnist"
    make_idx_dataset(directory, compress=(False,) * 4)
    name, content, message = {
        "gzip_without_gz": (
            "train-labels-idx1-ubyte",
            gzip.compress(idx_bytes(np.zeros(50))),
            r"train-labels-idx1-ubyte: gzip-compressed content in a file without \.gz: "
            r"name it train-labels-idx1-ubyte\.gz",
        ),
        "empty": ("t10k-images-idx3-ubyte", b"", r"t10k-images-idx3-ubyte: not an IDX file .*\(the file is empty\)"),
        "header_cut_short": (
            "t10k-labels-idx1-ubyte",
            bytes([0, 0, 0x08, 3, 0, 0]),
            r"t10k-labels-idx1-ubyte: IDX header of 3 dimensions cut short: 6 of 16 bytes",
        ),
        "label_out_of_range": (
            "train-labels-idx1-ubyte",
            idx_bytes(np.full(50, 10)),
            r"train-labels-idx1-ubyte: label 10 found, labels are 0-9",
        ),
        "image_sizes_differ": (
            "t10k-images-idx3-ubyte",
            idx_bytes(np.zeros((20, 32, 32))),
            r"fashion_mnist: train images are 28x28 but t10k images 32x32",
        ),
        "no_test_examples": ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((0, 28, 28))), None),
    }[case]
    (directory / name).write_bytes(content)
    if case == "no_test_examples":
        (directory / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0)))
        message = r"fashion_mnist: the t10k files hold no examples"
    with pytest.raises(LotteryError, match=message):
        datasets.load(dataset_config("fashion_mnist", tmp_path, validation=10))


# --- part of CIFAR-10 (dataset=cifar10_subset, dataset.subset) ----------------------------------------


@pytest.fixture
def cifar_subset(tmp_path):
    """Part of CIFAR-10 as the shared subset is named: 10 training and 4 test records."""
    directory = tmp_path / cifar10.SUBSET_DIRECTORY
    write_cifar_subset(directory, {"data_batch_1.first10.bin": 10, "test_batch.first4.bin": 4})
    return tmp_path, directory


def record_bytes(n, label=0):
    return (bytes([label]) + bytes(cifar10.RECORD - 1)) * n


@pytest.mark.parametrize(
    "case",
    [
        "not_whole_records",
        "empty",
        "label_out_of_range",
        "no_test_file",
        "no_training_file",
        "no_directory",
        "subset_too_large",
        "validation_too_large",
    ],
)
def test_part_of_cifar10_that_cannot_be_used_is_one_line_naming_the_file_and_what_to_do(cifar_subset, case):
    root, directory = cifar_subset
    train, test = directory / "data_batch_1.first10.bin", directory / "test_batch.first4.bin"
    settings = dict(validation=2)
    if case == "not_whole_records":
        train.write_bytes(record_bytes(3) + b"\0" * 100)  # a copy cut short
        message = (
            rf"{re.escape(str(train))}: 9,319 bytes, not whole 3073-byte records \(3 and 100 bytes over\): "
            r"truncated, or not CIFAR-10's binary version; replace it with whole records$"
        )
    elif case == "empty":
        test.write_bytes(b"")
        message = rf"{re.escape(str(test))}: 0 bytes, less than one 3073-byte record; remove it, or replace it"
    elif case == "label_out_of_range":  # a label byte no CIFAR-10 record has
        test.write_bytes(record_bytes(2) + record_bytes(2, label=57))
        message = (
            rf"{re.escape(str(test))}: label 57 found \(record 2\), CIFAR-10's are 0-9: corrupt, or not the "
            r"binary version; replace it with a good copy$"
        )
    elif case == "no_test_file":
        test.unlink()
        message = (
            rf"{re.escape(str(directory / 'test_batch*.bin'))}: no such file \(test records\); put CIFAR-10 binary "
            r"records there as data_batch_\*\.bin and test_batch\*\.bin files, or set dataset\.root$"
        )
    elif case == "no_training_file":
        train.rename(directory / "train.bin")  # not named as a training batch
        message = rf"{re.escape(str(directory / 'data_batch_*.bin'))}: no such file \(training records\); put CIFAR-10"
    elif case == "no_directory":
        shutil.rmtree(directory)
        message = rf"{re.escape(str(directory))}: no such directory; put CIFAR-10 binary records there as data_batch_"
    elif case == "subset_too_large":
        settings = dict(validation=2, subset=11)
        message = (
            rf"dataset\.subset=11: {re.escape(str(directory))} holds 10 training examples; ask for 1 to 10, or "
            r"leave dataset\.subset unset \(null\) for all of them"
        )
    else:  # Conv-2's 5,000 of the full set, on a subset
        settings = dict(validation=10)
        message = (
            r"dataset\.validation=10 must be between 0 and the 10 training examples; set it lower "
            r"\(e\.g\. dataset\.validation=1\)"
        )
    with pytest.raises(LotteryError, match=f"^{message}") as caught:
        datasets.load(dataset_config("cifar10_subset", root, **settings))
    assert (
        "\n" not in str(caught.value)
        and len(str(caught.value).replace(str(directory), "/work/shared/data/cifar10-subset")) < 200
    )


@pytest.mark.slow
def test_a_missing_cifar10_test_file_is_one_line_and_exit_code_2_on_the_command_line(cifar_subset):
    root, directory = cifar_subset
    (directory / "test_batch.first4.bin").unlink()
    result = run_cli(
        "+exp=conv2",
        "dataset=cifar10_subset",
        f"dataset.root={root}",
        "dataset.validation=2",
        "levels=0",
        "training.steps=1it",
        "progress=false",
        f"output_dir={root / 'runs'}",
        cwd=root,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {directory / 'test_batch*.bin'}: no such file (test records); put ")
    assert not (root / "runs").exists()


# --- the CIFAR-10 archive ---------------------------------------------------------------------------


def make_archive(path, batches, leave_out=()):
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(os.listdir(batches)):
            if name not in leave_out:
                tar.add(batches / name, arcname=f"{cifar10.SUBDIR}/{name}")
    return hashlib.md5(open(path, "rb").read()).hexdigest()


@pytest.fixture
def cifar_archive(small_cifar, monkeypatch):
    """A CIFAR-10 binary archive of small batches in tmp_path/cifar10, and no batch files beside it;
    its md5 stands in for the official one."""
    root, batches = small_cifar
    directory = root / "cifar10"
    shutil.move(batches, root / "batches")
    archive = directory / cifar10.ARCHIVE
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", make_archive(archive, root / "batches"))
    return root, directory, archive


def test_a_cifar10_archive_found_in_place_is_checked_then_unpacked(cifar_archive):
    root, directory, archive = cifar_archive
    good = archive.read_bytes()
    flip(archive, len(good) // 2)  # inside a batch's bytes: tarfile alone would unpack it silently
    with pytest.raises(
        LotteryError, match=rf"^{re.escape(str(archive))}: checksum mismatch \(md5 should be .*delete it"
    ):
        datasets.load(dataset_config("cifar10", root, download=True, validation=4))
    archive.write_bytes(good)
    data = datasets.load(dataset_config("cifar10", root, download=True, validation=4))
    assert len(data.train_x) + len(data.val_x) == 40 and len(data.test_x) == 8
    assert sorted(os.listdir(directory)) == sorted([cifar10.ARCHIVE, cifar10.SUBDIR])  # no scratch directory left


@pytest.mark.parametrize("how", ["truncated", "not_gzip", "gzip_not_tar", "is_a_directory"])
def test_an_unreadable_cifar10_archive_is_named_and_leaves_no_partial_batch(cifar_archive, monkeypatch, how):
    root, directory, archive = cifar_archive
    good = archive.read_bytes()
    if how == "is_a_directory":
        archive.unlink()
        os.makedirs(archive)
        message = r"cannot be read \(it is a directory\)"
    else:
        bad = {
            "truncated": good[: len(good) * 3 // 4],
            "not_gzip": os.urandom(5000),
            "gzip_not_tar": gzip.compress(b"\1" * 5000),
        }[how]
        archive.write_bytes(bad)
        # The checksum passes (as for an archive with the official md5), so reading it is what fails.
        monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(bad).hexdigest())
        message = r"not a readable tar\.gz archive \(.+\); it is corrupt or truncated: delete it to download it again"
    with pytest.raises(LotteryError, match=rf"^{re.escape(str(archive))}: {message}"):
        datasets.load(dataset_config("cifar10", root, download=True))
    assert sorted(os.listdir(directory)) == [cifar10.ARCHIVE]  # no batch file, whole or partial


def test_a_cifar10_archive_without_a_batch_file_says_which(cifar_archive, monkeypatch):
    root, directory, archive = cifar_archive
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", make_archive(archive, root / "batches", leave_out=("test_batch.bin",)))
    with pytest.raises(
        LotteryError, match=rf"^{re.escape(str(archive))}: holds no cifar-10-batches-bin/test_batch\.bin"
    ):
        datasets.load(dataset_config("cifar10", root, download=True))


# --- downloads ----------------------------------------------------------------------------------------

SERVER_LIMIT = 4.0  # seconds a slow server keeps any one response going


@pytest.fixture
def slow_server():
    """A loopback HTTP server whose responses are slow or short: ``/drip-body`` sends headers then a
    byte every 0.1 s; ``/drip-headers`` sends even its status line a byte at a time; ``/silent``
    sends headers, then nothing; ``/short`` promises 1,000 bytes and closes after 10. Every
    response ends within SERVER_LIMIT seconds, and all of them when the test does."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def drip(self, data):
            end = time.monotonic() + SERVER_LIMIT
            for i in range(len(data)):
                if stop.wait(0.1) or time.monotonic() > end:
                    return
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()

        def do_GET(self):
            head = b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n"
            if self.path == "/drip-headers":
                return self.drip(head)
            self.wfile.write(head)
            self.wfile.flush()
            if self.path == "/drip-body":
                self.drip(b"x" * 1000)
            elif self.path == "/silent":
                stop.wait(SERVER_LIMIT)
            elif self.path == "/short":
                self.wfile.write(b"x" * 10)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    """A loopback URL where nothing listens: connection refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def no_dns(monkeypatch):
    """Names under .invalid fail to resolve at once, as every name does on a machine without DNS."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if str(host).endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return "http://mirror.lottery.invalid"


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_a_download_that_outlasts_its_deadline_stops_and_leaves_nothing(slow_server, tmp_path, monkeypatch, path):
    monkeypatch.setattr(download, "DEADLINE", 0.6)
    monkeypatch.setattr(download, "TIMEOUT", 5.0)  # each byte comes well within it
    start = time.monotonic()
    with pytest.raises(
        download.DownloadError, match=rf"could not download {slow_server}{path}: not finished after 0\.6 s"
    ):
        download.fetch(f"{slow_server}{path}", str(tmp_path / "root" / "mnist" / "file.gz"))
    assert time.monotonic() - start < 2.5
    assert os.listdir(tmp_path) == []  # no partial file, and not the directories fetch created


@pytest.mark.parametrize(
    "path, message",
    [("/silent", r"no response for 0\.3 s"), ("/short", r"the connection closed after 10 of 1,000 bytes")],
)
def test_a_download_that_stalls_or_ends_early_is_a_clear_error(slow_server, tmp_path, monkeypatch, path, message):
    monkeypatch.setattr(download, "TIMEOUT", 0.3)
    with pytest.raises(download.DownloadError, match=rf"could not download {slow_server}{path}: {message}$"):
        download.fetch(f"{slow_server}{path}", str(tmp_path / "data" / "file.gz"))
    assert os.listdir(tmp_path) == []


def test_an_interrupted_download_leaves_no_partial_file_or_directory(slow_server, tmp_path):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT does not raise KeyboardInterrupt here")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            download.fetch(f"{slow_server}/drip-body", str(tmp_path / "root" / "mnist" / "file.gz"))
    finally:
        timer.cancel()
    assert os.listdir(tmp_path) == []


def test_with_no_network_every_mirror_is_named_with_its_error(closed_port, no_dns, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "FASHION_MIRRORS", (f"{closed_port}/", f"{no_dns}/"))
    cfg = OmegaConf.structured(DatasetConfig(name="fashion_mnist", root=str(tmp_path / "root")))
    with pytest.raises(LotteryError) as error:
        datasets.load(cfg)
    message = str(error.value)
    assert message == (
        f"fashion_mnist: missing train-images-idx3-ubyte[.gz] in {tmp_path / 'root' / 'fashion_mnist'}; "
        "no connection to any mirror (is this machine offline?): "
        f"{closed_port}/train-images-idx3-ubyte.gz: Connection refused; "
        f"{no_dns}/train-images-idx3-ubyte.gz: Name or service not known; "
        "put the IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        f"t10k-labels-idx1-ubyte[.gz]) in {tmp_path / 'root' / 'fashion_mnist'}, or set dataset.root / LOTTERY_DATA_DIR"
    )
    assert os.listdir(tmp_path) == []  # neither root/ nor root/fashion_mnist/ is left behind


def test_mirrors_that_fail_differently_are_all_named(closed_port, local_server, tmp_path, monkeypatch):
    _, url = local_server
    monkeypatch.setattr(mnist, "FASHION_MIRRORS", (f"{closed_port}/", f"{url}/absent/"))
    cfg = OmegaConf.structured(DatasetConfig(name="fashion_mnist", root=str(tmp_path / "root")))
    with pytest.raises(
        LotteryError,
        match=(
            rf"; download failed \({closed_port}/train-images-idx3-ubyte\.gz: Connection refused; "
            rf"{url}/absent/train-images-idx3-ubyte\.gz: HTTP 404 File not found\); put the IDX files"
        ),
    ):
        datasets.load(cfg)
    assert not (tmp_path / "root").exists()


def test_cifar10_download_failure_says_so_and_leaves_no_directory(closed_port, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "URL", f"{closed_port}/cifar-10-binary.tar.gz")
    with pytest.raises(
        LotteryError,
        match=(
            rf"^cifar10: missing binary batch files in {re.escape(str(tmp_path / 'cifar10'))}; no connection to the "
            rf"server \(is this machine offline\?\): {closed_port}/cifar-10-binary\.tar\.gz: Connection refused; put "
        ),
    ):
        datasets.load(dataset_config("cifar10", tmp_path, download=True))
    assert os.listdir(tmp_path) == []


def test_a_data_root_that_cannot_hold_a_directory_is_a_clear_error(local_server, tmp_path, monkeypatch):
    _, url = local_server
    monkeypatch.setattr(mnist, "FASHION_MIRRORS", (f"{url}/",))
    (tmp_path / "root").write_text("a file, not a directory")
    with pytest.raises(
        LotteryError, match=r"train-images-idx3-ubyte\.gz: cannot write in .*root/fashion_mnist \(Not a directory\)"
    ):
        datasets.load(dataset_config("fashion_mnist", tmp_path / "root", download=True))


def test_partial_files_left_by_killed_downloads_are_removed(local_server, tmp_path):
    served, url = local_server
    (served / "file.gz").write_bytes(b"payload")
    directory = tmp_path / "data"
    os.makedirs(directory)
    stale = [directory / "file.gz.k2j4h.part", directory / "tmpa8d7f.part"]
    live = directory / "file.gz.x7q1z.part"  # another download of it, still running
    for path in stale + [live]:
        path.write_bytes(b"partial")
    old = time.time() - download.DEADLINE - download.TIMEOUT - 60
    for path in stale:
        os.utime(path, (old, old))
    download.fetch(f"{url}/file.gz", str(directory / "file.gz"))
    assert sorted(os.listdir(directory)) == ["file.gz", live.name]
