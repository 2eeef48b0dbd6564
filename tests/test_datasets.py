"""fastbp.datasets: IDX parsing, the search order, downloads, and the real data sets.

Everything except the real-data tests runs on tiny IDX files written to tmp_path; downloads come
from HTTP servers on 127.0.0.1 started by the tests, so no test touches the network.
"""
import functools
import gzip
import hashlib
import http.server
import os
import pickle
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from fastbp import datasets
from fastbp.datasets import (FILE_NAMES, DatasetNotFoundError, default_data_dir, load_digits,
                             load_fashion_mnist, load_mnist, read_idx)

TRAIN_IMG, TRAIN_LBL, TEST_IMG, TEST_LBL = FILE_NAMES


# ---------------------------------------------------------------------------------------------
# helpers


def idx_bytes(array, type_code=0x08):
    """The IDX encoding of a uint8 array: 00 00 type ndim, big-endian uint32 dims, the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(path, data, gz=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_set(folder, n_train=5, n_test=3, seed=0, gz=True, train_labels=None):
    """Write the four files of a tiny 28x28 data set into ``folder``; return the raw arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        TRAIN_IMG: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        TRAIN_LBL: (rng.integers(0, 10, n_train, dtype=np.uint8)
                    if train_labels is None else np.asarray(train_labels, np.uint8)),
        TEST_IMG: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        TEST_LBL: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write(folder / (name if gz else name[:-3]), idx_bytes(array), gz=gz)
    return arrays


def no_network(*args, **kwargs):
    raise AssertionError("no download may be attempted here")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        self.server.requests.append((self.command, self.path))


@pytest.fixture
def serve(monkeypatch):
    """serve(folder) -> (base URL of an HTTP server on 127.0.0.1 serving ``folder``, the list of
    (method, path) it was asked for)."""
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    servers = []

    def start(folder):
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        server.requests = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", server.requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def refused_url():
    """A URL on 127.0.0.1 where nothing listens: the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


@pytest.fixture
def silent_url():
    """A URL whose server takes the connection and never answers (a network that swallows packets
    looks the same from here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)   # connections complete in the backlog, nobody reads them
        yield f"http://127.0.0.1:{s.getsockname()[1]}/"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Mirrors that cannot answer, and no Debian copy of Fashion-MNIST."""
    nowhere = refused_url()
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [nowhere], "fashion-mnist": [nowhere]})
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")


@pytest.fixture
def mirror(tmp_path, monkeypatch, serve):
    """An HTTP mirror holding a tiny MNIST, with SHA256 set to its files' hashes."""
    folder = tmp_path / "mirror"
    arrays = make_set(folder, seed=7)
    sums = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILE_NAMES}
    url, _ = serve(folder)
    monkeypatch.setattr(datasets, "SHA256", {"mnist": sums})
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [url]})
    return folder, arrays, dict(sums)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# read_idx


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4), (2, 1, 3, 2)])
def test_read_idx_round_trip(tmp_path, gz, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    # gzip is recognised by its magic bytes, not by the name: the raw file is named .gz too.
    got = read_idx(write(tmp_path / "f.gz", idx_bytes(array), gz=gz))
    assert got.dtype == np.uint8 and got.shape == shape
    np.testing.assert_array_equal(got, array)
    got[...] = 0   # a writable array, like any other


def test_read_idx_gzip_without_gz_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "plain", idx_bytes(array))), array)


@pytest.mark.parametrize("data, found", [
    (b"\x00\x01\x08\x01" + b"\x00" * 5, "00010801"),
    (b"\x00\x00\x08\x00", "00000800"),                   # 0 dimensions
    (b"\x00\x00\x08\x05" + b"\x00" * 20, "00000805"),     # 5 dimensions
    (b"", "(empty file)"),
])
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_read_idx_wrong_magic(tmp_path, data, found, gz):
    path = write(tmp_path / "train-images-idx3-ubyte.gz", data, gz=gz)
    with pytest.raises(ValueError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "not an IDX file" in message
    assert found in message and "expected 0000 08 NN" in message


def test_read_idx_gzipped_twice(tmp_path):
    path = write(tmp_path / "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(np.zeros(3))))
    with pytest.raises(ValueError, match="not an IDX file: magic bytes 1f8b0800, expected 0000 08"):
        read_idx(path)


def test_read_idx_rejects_other_type_codes(tmp_path):
    data = idx_bytes(np.zeros((2, 2)), type_code=0x0D)
    with pytest.raises(ValueError, match=r"type code 0x0d \(float32\).*expected 0x08 \(unsigned"):
        read_idx(write(tmp_path / "f.gz", data))


def test_read_idx_header_cut_short(tmp_path):
    path = write(tmp_path / "f", b"\x00\x00\x08\x03" + b"\x00" * 6, gz=False)
    with pytest.raises(ValueError, match="header cut short: 10 bytes, expected 16"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("change, found, what", [(-1, 23, "truncated"), (+2, 26, "trailing bytes")])
def test_read_idx_payload_size_must_match_dims(tmp_path, gz, change, found, what):
    data = idx_bytes(np.ones((2, 3, 4)))
    data = data[:change] if change < 0 else data + b"\x00" * change
    path = write(tmp_path / "f.gz", data, gz=gz)
    with pytest.raises(ValueError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert f"payload is {found} bytes, expected 24 for dims 2 x 3 x 4" in message
    assert what in message


@pytest.mark.parametrize("dims", [(0,), (0, 28, 28), (3, 0, 28), (3, 28, 0)])
def test_read_idx_refuses_a_size_of_zero(tmp_path, dims):
    header = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    path = write(tmp_path / "zero.idx", header, gz=False)
    with pytest.raises(ValueError, match=r"zero.idx: IDX header gives a size of 0 \(dims "
                                         + " x ".join(map(str, dims)) + r"\); expected positive"):
        read_idx(path)


@pytest.mark.parametrize("dims", [(2**32 - 1,) * 4, (2**32 - 1, 2**32 - 1), (65536, 65536, 65536, 65537),
                                  (2**31, 2**31, 4, 1)])
def test_read_idx_sizes_whose_product_overflows_are_refused_clearly(tmp_path, dims):
    """prod(dims) beyond int64: compared exactly with the bytes present, never wrapped around."""
    header = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    path = write(tmp_path / "huge.idx", header + bytes(16), gz=False)
    expected = 1
    for d in dims:
        expected *= d
    with pytest.raises(ValueError, match=rf"huge.idx: IDX payload is 16 bytes, expected {expected} "
                                         r"for dims .* \(truncated\)") as info:
        read_idx(path)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_read_idx_corrupt_gzip_is_a_value_error(tmp_path, damage):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    if damage == "truncate":
        packed = packed[:len(packed) // 2]
    else:
        packed[-5] ^= 0xFF   # inside the CRC/size trailer
    path = write(tmp_path / "t10k-labels-idx1-ubyte.gz", bytes(packed), gz=False)
    with pytest.raises(ValueError, match="corrupt gzip stream") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# load_mnist / load_fashion_mnist from a data folder


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("one_hot_label", [True, False])
def test_load_mnist_options(tmp_path, normalize, flatten, one_hot_label):
    raw = make_set(tmp_path / "mnist")
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=normalize, flatten=flatten, one_hot_label=one_hot_label, data_dir=tmp_path,
        download=False)
    for x, t, images, labels in [(x_train, t_train, raw[TRAIN_IMG], raw[TRAIN_LBL]),
                                 (x_test, t_test, raw[TEST_IMG], raw[TEST_LBL])]:
        n = len(images)
        assert x.shape == ((n, 784) if flatten else (n, 1, 28, 28))
        if normalize:
            assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
            np.testing.assert_array_equal(x.reshape(n, 28, 28), images.astype(np.float32) / 255)
        else:
            assert x.dtype == np.uint8
            np.testing.assert_array_equal(x.reshape(n, 28, 28), images)
        if one_hot_label:
            assert t.dtype == np.float64 and t.shape == (n, 10)
            np.testing.assert_array_equal(t, np.eye(10)[labels])
        else:
            assert t.dtype == np.uint8 and t.shape == (n,)
            np.testing.assert_array_equal(t, labels)


def test_load_mnist_accepts_names_without_gz(tmp_path):
    raw = make_set(tmp_path / "mnist", gz=False)
    (x_train, _), (_, t_test) = load_mnist(normalize=False, data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(x_train.reshape(-1, 28, 28), raw[TRAIN_IMG])
    np.testing.assert_array_equal(t_test, raw[TEST_LBL])


def test_load_fashion_mnist_reads_its_own_folder(tmp_path, offline):
    make_set(tmp_path / "mnist", seed=1)
    raw = make_set(tmp_path / "fashion-mnist", n_train=4, seed=2)
    (x_train, t_train), _ = load_fashion_mnist(normalize=False, data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(x_train.reshape(-1, 28, 28), raw[TRAIN_IMG])
    np.testing.assert_array_equal(t_train, raw[TRAIN_LBL])


def test_images_and_labels_must_have_matching_counts(tmp_path):
    make_set(tmp_path / "mnist", n_train=5, train_labels=[1, 2, 3, 4])
    with pytest.raises(ValueError) as info:
        load_mnist(data_dir=tmp_path, download=False)
    message = str(info.value)
    assert TRAIN_LBL in message and TRAIN_IMG in message
    assert "4 training labels" in message and "5 images" in message


def test_labels_must_be_digits(tmp_path):
    make_set(tmp_path / "mnist", train_labels=[0, 1, 12, 3, 4])
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9, found 0\.\.12") as info:
        load_mnist(data_dir=tmp_path, download=False)
    assert TRAIN_LBL in str(info.value)


def test_images_must_be_28x28(tmp_path):
    make_set(tmp_path / "mnist")
    write(tmp_path / "mnist" / TEST_IMG, idx_bytes(np.zeros((3, 27, 28))))
    with pytest.raises(ValueError, match=r"28x28.*found \(3, 27, 28\)") as info:
        load_mnist(data_dir=tmp_path, download=False)
    assert TEST_IMG in str(info.value)


# ---------------------------------------------------------------------------------------------
# where the data is looked for


def test_default_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "env"))
    assert default_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert default_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("FASTBP_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "fastbp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == Path(platformdirs.user_cache_dir("fastbp", appauthor=False))
    if sys.platform.startswith("linux"):
        assert default_data_dir() == tmp_path / "home" / ".cache" / "fastbp"


def test_default_data_dir_rejects_non_paths():
    with pytest.raises(TypeError, match="data_dir: expected a folder path"):
        default_data_dir(42)


def test_fastbp_data_env_is_used(monkeypatch, tmp_path):
    raw = make_set(tmp_path / "from-env" / "mnist", n_train=2)
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "from-env"))
    monkeypatch.setattr(datasets, "_download", no_network)
    (x_train, t_train), _ = load_mnist()
    assert x_train.shape == (2, 784)
    np.testing.assert_array_equal(t_train, raw[TRAIN_LBL])


@pytest.mark.parametrize("where", ["mnist/mnist.pkl", "mnist.pkl"])
def test_book_pickle(tmp_path, monkeypatch, where):
    rng = np.random.default_rng(3)
    book = {"train_img": rng.integers(0, 256, (4, 784), dtype=np.uint8),
            "train_label": np.array([0, 9, 3, 3], np.uint8),
            "test_img": rng.integers(0, 256, (2, 784), dtype=np.uint8),
            "test_label": np.array([5, 1], np.uint8)}
    (tmp_path / where).parent.mkdir(exist_ok=True)
    (tmp_path / where).write_bytes(pickle.dumps(book))
    monkeypatch.setattr(datasets, "_download", no_network)
    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False, one_hot_label=True,
                                                      data_dir=tmp_path)
    assert x_train.shape == (4, 1, 28, 28) and x_train.dtype == np.float32
    np.testing.assert_array_equal(x_test.reshape(2, 784), book["test_img"] / np.float32(255))
    np.testing.assert_array_equal(t_train.argmax(axis=1), book["train_label"])
    np.testing.assert_array_equal(t_test, np.eye(10)[[5, 1]])


@pytest.mark.parametrize("content, match", [
    ({"train_img": 1}, "expected a dict with keys"),
    ([1, 2], "expected a dict with keys.*found list"),
    ({"train_img": np.zeros((2, 783), np.uint8), "train_label": np.zeros(2, np.uint8),
      "test_img": np.zeros((1, 784), np.uint8), "test_label": np.zeros(1, np.uint8)},
     r"train_img must be a \(N, 784\) uint8 array, found \(2, 783\) uint8"),
    ({"train_img": np.zeros((2, 784)), "train_label": np.zeros(2, np.uint8),
      "test_img": np.zeros((1, 784), np.uint8), "test_label": np.zeros(1, np.uint8)},
     r"train_img must be a \(N, 784\) uint8 array, found \(2, 784\) float64"),
])
def test_book_pickle_is_checked(tmp_path, content, match):
    (tmp_path / "mnist.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(ValueError, match=match) as info:
        load_mnist(data_dir=tmp_path, download=False)
    assert str(tmp_path / "mnist.pkl") in str(info.value)


def test_book_pickle_unreadable(tmp_path):
    (tmp_path / "mnist.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot unpickle .*expected the book's mnist.pkl") as info:
        load_mnist(data_dir=tmp_path, download=False)
    assert str(tmp_path / "mnist.pkl") in str(info.value)


class Evil:
    """A pickle that runs code when loaded: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('planted code ran')",)


def planted_pickle(tmp_path, file_mode=0o644, folder_mode=0o755, owner=None):
    """<data>/mnist.pkl holding Evil, with the given modes (and owner, when root)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist.pkl").write_bytes(pickle.dumps(Evil(tmp_path / "MARKER")))
    (data / "mnist.pkl").chmod(file_mode)
    data.chmod(folder_mode)
    if owner is not None:
        os.chown(data / "mnist.pkl", owner, owner)
    return data


OTHER_UID = 4242


@pytest.mark.parametrize("file_mode, folder_mode, reason", [
    (0o666, 0o755, r"other users can write to it \(mode 0666\)"),
    (0o664, 0o755, r"other users can write to it \(mode 0664\)"),
    (0o644, 0o777, r"can be written by other users \(mode 0777\)"),
    (0o644, 0o775, r"can be written by other users \(mode 0775\)"),
])
def test_book_pickle_others_could_have_written_is_not_unpickled(tmp_path, file_mode, folder_mode, reason):
    data = planted_pickle(tmp_path, file_mode, folder_mode)
    with pytest.raises(ValueError, match=r"mnist.pkl: not unpickled: .*" + reason) as info:
        load_mnist(data_dir=data, download=False)
    assert not (tmp_path / "MARKER").exists()
    assert "Unpickling runs code" in str(info.value) and "chmod go-w" in str(info.value)


def test_book_pickle_of_another_user_is_not_unpickled(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        data = planted_pickle(tmp_path, owner=OTHER_UID)
        reason = f"it belongs to user id {OTHER_UID}"
    else:   # we cannot give a file away: become someone else instead
        data = planted_pickle(tmp_path)
        monkeypatch.setattr(datasets._io._config, "_uid", lambda: OTHER_UID)
        reason = f"it belongs to user id {os.geteuid()}"
    with pytest.raises(ValueError, match=r"mnist.pkl: not unpickled: " + reason):
        load_mnist(data_dir=data, download=False)
    assert not (tmp_path / "MARKER").exists()


def test_book_pickle_of_root_is_read_by_any_user(tmp_path, monkeypatch):
    """A system-wide copy (root's, not writable by others) is trusted like one's own."""
    if os.geteuid() != 0:
        pytest.skip("only root can make root's files here")
    data = planted_pickle(tmp_path)
    monkeypatch.setattr(datasets._io._config, "_uid", lambda: OTHER_UID)
    with pytest.raises(ValueError, match="found NoneType"):   # it was unpickled (and ran)
        load_mnist(data_dir=data, download=False)
    assert (tmp_path / "MARKER").exists()


def test_idx_folder_comes_before_the_pickle(tmp_path):
    make_set(tmp_path / "mnist", n_train=5)
    (tmp_path / "mnist.pkl").write_bytes(b"not a pickle; must not be read")
    (x_train, _), _ = load_mnist(data_dir=tmp_path, download=False)
    assert len(x_train) == 5


def test_debian_fashion_mnist_folder(tmp_path, monkeypatch):
    raw = make_set(tmp_path / "usr-share" / "fashion-mnist", n_train=6)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR",
                        tmp_path / "usr-share" / "fashion-mnist")
    monkeypatch.setattr(datasets, "_download", no_network)
    (x_train, t_train), _ = load_fashion_mnist(data_dir=tmp_path / "empty")
    assert x_train.shape == (6, 784)
    np.testing.assert_array_equal(t_train, raw[TRAIN_LBL])
    # A copy in the data folder comes first.
    make_set(tmp_path / "empty" / "fashion-mnist", n_train=2)
    (x_train, _), _ = load_fashion_mnist(data_dir=tmp_path / "empty")
    assert len(x_train) == 2


@pytest.mark.parametrize("download", [True, False])
def test_offline_without_files_gives_one_clear_error(tmp_path, offline, download, capsys):
    write(tmp_path / "data" / "mnist" / TEST_LBL, idx_bytes(np.zeros(3)))   # 1 of 4 present
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=tmp_path / "data", download=download)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.__cause__ is None and info.value.__context__ is None   # no chained traceback
    message = str(info.value)
    assert f"Put these four files in {tmp_path / 'data' / 'mnist'}" in message
    assert all(name in message for name in FILE_NAMES)
    assert f"{TEST_LBL}   (present)" in message and f"{TRAIN_IMG}   (present)" not in message
    assert str(tmp_path / "data" / "mnist.pkl") in message
    assert "FASTBP_DATA" in message and "data_dir" in message
    if download:
        assert "Download: failed: no network? No mirror could be reached (127.0.0.1:" in message
        assert "Connection refused" in message and "Set FASTBP_OFFLINE=1" in message
        assert capsys.readouterr().err == ""   # no download began: no progress line
    else:
        assert "not attempted (download=False)" in message
    assert leftovers(tmp_path / "data" / "mnist") == [TEST_LBL]


def test_fastbp_offline_skips_the_download(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(datasets, "_download", no_network)
    monkeypatch.setenv("FASTBP_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match=r"not attempted \(FASTBP_OFFLINE is set\)"):
        load_mnist(data_dir=tmp_path / "data")
    assert leftovers(tmp_path / "data" / "mnist") == []


def test_offline_fashion_mnist_names_debian_folder(tmp_path, offline):
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist(data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "Fashion-MNIST not found" in message and str(tmp_path / "fashion-mnist") in message
    assert str(tmp_path / "no-debian") in message


# ---------------------------------------------------------------------------------------------
# downloads


def test_download_fills_missing_files(tmp_path, mirror, monkeypatch, capsys):
    folder, arrays, sums = mirror
    url = datasets.MIRRORS["mnist"][0]
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [refused_url(), url]})
    target = tmp_path / "data" / "mnist"
    target.mkdir(parents=True)
    (target / TRAIN_LBL).write_bytes((folder / TRAIN_LBL).read_bytes())   # already there
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=False, data_dir=tmp_path / "data")
    np.testing.assert_array_equal(x_test.reshape(-1, 28, 28), arrays[TEST_IMG])
    np.testing.assert_array_equal(t_train, arrays[TRAIN_LBL])
    assert leftovers(target) == sorted(FILE_NAMES)   # no temporary files left
    for name in FILE_NAMES:
        assert hashlib.sha256((target / name).read_bytes()).hexdigest() == sums[name]
    err = capsys.readouterr().err
    # not a terminal: each file's progress line is written once, whole, and without \r
    assert f"downloading {TRAIN_IMG} (MNIST) from {url}: 0.0 MB, SHA-256 checked\n" in err
    assert f"downloading {TRAIN_LBL}" not in err and "\r" not in err


def test_download_asks_first_then_fetches_only_what_is_missing(tmp_path, serve, monkeypatch):
    folder = tmp_path / "mirror"
    make_set(folder, seed=7)
    url, requests = serve(folder)
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [url]})
    monkeypatch.setattr(datasets, "SHA256", {"mnist": {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILE_NAMES}})
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    (tmp_path / "data" / "mnist" / TEST_LBL).write_bytes((folder / TEST_LBL).read_bytes())
    load_mnist(data_dir=tmp_path / "data")
    assert requests == [("HEAD", "/" + TRAIN_IMG), ("GET", "/" + TRAIN_IMG),
                        ("GET", "/" + TRAIN_LBL), ("GET", "/" + TEST_IMG)]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_downloaded_files_get_the_permissions_of_any_new_file(tmp_path, mirror, umask):
    """Not mkstemp's 0600: a second user of a shared data folder must be able to read them."""
    old = os.umask(umask)
    try:
        load_mnist(data_dir=tmp_path / "data")
    finally:
        os.umask(old)
    for name in FILE_NAMES:
        assert (tmp_path / "data" / "mnist" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_checksum_mismatch_leaves_nothing(tmp_path, mirror, monkeypatch):
    folder, _, sums = mirror
    wrong = "0" * 64
    monkeypatch.setitem(datasets.SHA256["mnist"], TRAIN_IMG, wrong)
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=tmp_path / "data")
    message = str(info.value)
    assert f"hash of downloaded file ({TRAIN_IMG}) does not match" in message
    assert f"expected sha256:{wrong}" in message and f"got {sums[TRAIN_IMG]}" in message
    # neither the final name nor a temporary file, nor the folders made to hold them
    assert not (tmp_path / "data").exists()


def test_checksum_mismatch_tries_the_next_mirror(tmp_path, mirror, monkeypatch, serve):
    folder, arrays, _ = mirror
    bad = tmp_path / "bad-mirror"
    make_set(bad, seed=99)   # same names, other bytes
    bad_url, _ = serve(bad)
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [bad_url, datasets.MIRRORS["mnist"][0]]})
    (_, t_train), _ = load_mnist(data_dir=tmp_path / "data")
    np.testing.assert_array_equal(t_train, arrays[TRAIN_LBL])
    assert leftovers(tmp_path / "data" / "mnist") == sorted(FILE_NAMES)


def test_interrupted_download_leaves_no_partial_file(tmp_path, mirror, monkeypatch):
    def ctrl_c(self, size):   # pooch calls it after writing the first piece
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets._Bar, "update", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        load_mnist(data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_no_network_fails_fast_and_says_so(tmp_path, monkeypatch, silent_url):
    """Mirrors that never answer (a network that drops packets) and refuse: one wait of
    CONNECT_SECONDS in all, not a timeout per mirror and file. The time bound is loose, only to
    catch a hang."""
    monkeypatch.setattr(datasets, "CONNECT_SECONDS", 1)
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [silent_url, refused_url()]})
    monkeypatch.delenv("FASTBP_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=tmp_path / "data")
    seconds = time.monotonic() - start
    assert seconds < 15, seconds
    message = str(info.value)
    assert "no network? No mirror could be reached" in message
    assert "no answer within 1 s" in message and "Connection refused" in message
    assert "Set FASTBP_OFFLINE=1 to skip the download" in message
    assert info.value.outcome.startswith("failed: no network?") and len(info.value.missing) == 4
    assert not (tmp_path / "data").exists()


def test_a_name_lookup_that_hangs_is_bounded_too(tmp_path, monkeypatch):
    """No socket timeout covers the name lookup; the mirrors are asked from threads, waited for
    CONNECT_SECONDS in all."""
    release = threading.Event()

    def lookup_that_hangs(*args, **kwargs):
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "CONNECT_SECONDS", 1)
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": ["http://mirror.invalid/"]})
    monkeypatch.setattr(socket, "getaddrinfo", lookup_that_hangs)
    monkeypatch.delenv("FASTBP_OFFLINE", raising=False)
    start = time.monotonic()
    try:
        with pytest.raises(DatasetNotFoundError, match=r"mirror.invalid: no answer within 1 s"):
            load_mnist(data_dir=tmp_path / "data")
        assert time.monotonic() - start < 15
    finally:
        release.set()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("how", ["offline", "no network", "download=False", "FASTBP_OFFLINE"])
def test_a_failed_search_makes_no_folder(tmp_path, monkeypatch, how):
    """Not in a mistyped data_dir, not in FASTBP_DATA's folder: folders exist only to hold files."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [refused_url()],
                                              "fashion-mnist": [refused_url()]})
    monkeypatch.delenv("FASTBP_OFFLINE", raising=False)
    if how == "FASTBP_OFFLINE":
        monkeypatch.setenv("FASTBP_OFFLINE", "1")
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "env"))
    for loader in (load_mnist, load_fashion_mnist):
        for data_dir in (tmp_path / "typo" / "deeper", None):
            with pytest.raises(DatasetNotFoundError):
                loader(data_dir=data_dir, download=how != "download=False")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env"]
    assert list((tmp_path / "env").iterdir()) == []


def test_unwritable_data_folder(tmp_path, offline, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        (locked / "probe").touch()
        writable_anyway = True   # root ignores permission bits
    except PermissionError:
        writable_anyway = False
    if writable_anyway:
        (locked / "probe").unlink()
        (tmp_path / "afile").write_text("a file, so nothing can be created under it")
        data_dir = tmp_path / "afile" / "sub"
    else:
        data_dir = locked
    monkeypatch.setattr(datasets, "_download", no_network)
    try:
        with pytest.raises(DatasetNotFoundError) as info:
            load_mnist(data_dir=data_dir)
    finally:
        locked.chmod(0o700)
    message = str(info.value)
    assert f"the folder {data_dir / 'mnist'} is not writable" in message
    assert "FASTBP_DATA" in message and "data_dir" in message


# ---------------------------------------------------------------------------------------------
# the real data


def test_real_fashion_mnist(fashion_mnist):
    (x_train, t_train), (x_test, t_test) = fashion_mnist
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert t_train.shape == (60000,) and t_test.shape == (10000,)
    for x, t in [(x_train, t_train), (x_test, t_test)]:
        assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
        assert t.dtype == np.uint8 and set(np.unique(t)) == set(range(10))
        assert 0.4 < np.mean(x == 0) < 0.6
    # Fashion-MNIST is balanced: 6,000 / 1,000 of each class.
    assert np.bincount(t_train).tolist() == [6000] * 10
    assert np.bincount(t_test).tolist() == [1000] * 10


def _fashion_folder():
    for folder in (default_data_dir() / "fashion-mnist", datasets.DEBIAN_FASHION_MNIST_DIR):
        if all(datasets._idx_files(folder)):
            return folder
    pytest.fail("real Fashion-MNIST not found; set FASTBP_DATA=../shared/datasets")


@pytest.mark.parametrize("name", [TRAIN_LBL, TEST_IMG, TEST_LBL])
def test_fashion_sha256_table_matches_upstream_bytes(name):
    """The download table holds the hashes of Zalando's files, not of a recompressed copy.

    Debian's copies carry the same deflate stream as Zalando's; only the gzip header differs.
    Zalando's header names the file and keeps its 2017-08-31 time stamp, so it can be rebuilt.
    """
    data = (_fashion_folder() / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != datasets.SHA256["fashion-mnist"][name]:
        mtime = {TRAIN_LBL: 1504176606, TEST_IMG: 1504176627, TEST_LBL: 1504176627}[name]
        header = b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03"
        data = header + name[:-3].encode() + b"\0" + data[10:]
    assert hashlib.sha256(data).hexdigest() == datasets.SHA256["fashion-mnist"][name]


# ---------------------------------------------------------------------------------------------
# load_digits


def test_digits(digits):
    (x_train, t_train), (x_test, t_test) = digits
    assert x_train.shape == (1500, 64) and x_test.shape == (297, 64)
    assert t_train.shape == (1500,) and t_test.shape == (297,)
    for x, t in [(x_train, t_train), (x_test, t_test)]:
        assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
        assert t.dtype == np.uint8 and set(np.unique(t)) == set(range(10))
    # Every sample once: train + test hold the class counts of the whole set.
    assert np.bincount(np.concatenate([t_train, t_test])).tolist() == [
        178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_options():
    (x_train, t_train), (x_test, t_test) = load_digits(normalize=False, flatten=False,
                                                       one_hot_label=True, test_size=97)
    assert x_train.shape == (1700, 1, 8, 8) and x_test.shape == (97, 1, 8, 8)
    assert x_train.dtype == np.uint8 and x_train.max() == 16
    assert t_train.dtype == np.float64 and t_train.shape == (1700, 10)
    np.testing.assert_array_equal(t_test.sum(axis=1), 1)
    (x_norm, t_index), _ = load_digits(test_size=97)
    np.testing.assert_array_equal(x_norm, x_train.reshape(1700, 64) / np.float32(16))
    np.testing.assert_array_equal(t_index, t_train.argmax(axis=1))


def test_digits_split_is_seeded(digits):
    (x_a, t_a), (x_a_test, _) = digits
    (x_b, t_b), (x_b_test, _) = load_digits(seed=0)
    np.testing.assert_array_equal(x_a, x_b)
    np.testing.assert_array_equal(x_a_test, x_b_test)
    (x_c, _), (x_c_test, _) = load_digits(seed=1)
    assert not np.array_equal(x_a_test, x_c_test)
    # Different split, same data: the sorted rows of train + test agree.
    rows = lambda *xs: np.sort(np.concatenate(xs).view(f"V{64 * 4}").ravel())   # noqa: E731
    assert rows(x_a, x_a_test).tobytes() == rows(x_c, x_c_test).tobytes()


@pytest.mark.parametrize("test_size", [0, 1797, -1, 2.5, True, "10"])
def test_digits_rejects_bad_test_size(test_size):
    with pytest.raises(ValueError, match=r"test_size: expected an integer in 1\.\.1796"):
        load_digits(test_size=test_size)
