"""Datasets: MNIST and Fashion-MNIST the way the book's ``load_mnist`` returns them, and digits.

``load_mnist`` and ``load_fashion_mnist`` return ``(x_train, t_train), (x_test, t_test)`` exactly as
the book's ``dataset/mnist.py`` does. They look for the data in this order and use the first
complete copy they find:

1. the data folder's ``mnist/`` (or ``fashion-mnist/``) subfolder, holding the four standard IDX
   files ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
   ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` (the same names without ``.gz``
   work too). The data folder is the ``data_dir`` argument, else the ``FASTBP_DATA`` environment
   variable, else a per-user cache folder (``$XDG_CACHE_HOME/fastbp``, ``~/.cache/fastbp``, or
   ``%LOCALAPPDATA%\\fastbp`` on Windows); see ``default_data_dir``;
2. MNIST only: the book's pickle, ``<data folder>/mnist/mnist.pkl`` or ``<data folder>/mnist.pkl``
   (unpickling runs code, so it is read only from a file and folder that no user but you or root
   can write to; see ``fastbp._io.open_for_unpickling``);
   Fashion-MNIST only: Debian's ``/usr/share/datasets/fashion-mnist`` (package
   ``dataset-fashion-mnist``);
3. with ``download=True`` (and the environment variable ``FASTBP_OFFLINE`` unset or empty): the
   missing files are downloaded from the mirrors in ``MIRRORS`` into
   the subfolder of step 1, each checked against its SHA-256 in ``SHA256`` before it takes its
   final name. Files found on disk are not hash-checked (Debian's copies carry another gzip
   header, so other hashes), only format-checked by ``read_idx``.

If all of that fails, ``DatasetNotFoundError`` says which files to put in which folder.

``load_digits`` needs nothing: it reads the 1,797 real 8x8 handwritten digits shipped inside the
package (UCI "Optical Recognition of Handwritten Digits"), for offline use and fast tests.
"""
import gzip
import hashlib
import http.client
import importlib.resources
import io
import math
import os
import pickle
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from . import _io

__all__ = [
    "DatasetNotFoundError", "read_idx", "default_data_dir",
    "load_mnist", "load_fashion_mnist", "load_digits",
]

# The four files of MNIST and Fashion-MNIST, in the order train images, train labels, test
# images, test labels.
FILE_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Tried in order. yann.lecun.com, MNIST's original home, answers 403 these days, so it is left out.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",        # PyTorch's mirror
        "https://storage.googleapis.com/cvdf-datasets/mnist/",   # TensorFlow's mirror
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",   # Zalando's own
    ],
}

# SHA-256 of the .gz files as the mirrors serve them; plain http is fine, the hash is the check.
# The Fashion-MNIST values are also checked by tests/test_datasets.py against Zalando's bytes,
# rebuilt from Debian's copies (same deflate stream, different gzip header).
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT = 30   # seconds without data before a mirror counts as unreachable

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
              0x0D: "float32", 0x0E: "float64"}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is nowhere on disk and could not be downloaded; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# IDX files


def read_idx(path):
    """Read an IDX file of unsigned bytes (gzip-compressed or raw) into an array of shape dims.

    Layout: magic ``00 00 08 NN`` (NN = number of dims, 1..4), NN big-endian uint32 sizes (none of
    them 0), then exactly prod(sizes) bytes. Anything else raises ``ValueError`` naming the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:   # truncated, bad CRC, bad deflate
            raise ValueError(
                f"{path}: corrupt gzip stream ({type(error).__name__}: {error}); "
                "delete the file and download or copy it again") from None

    magic = raw[:4]
    if (len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_TYPES
            or not 1 <= magic[3] <= 4):
        raise ValueError(f"{path}: not an IDX file: magic bytes {magic.hex() or '(empty file)'}, "
                         "expected 0000 08 NN (NN = number of dimensions, 01..04)")
    if magic[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: IDX type code 0x{magic[2]:02x} ({_IDX_TYPES[magic[2]]}) is not "
                         "supported, expected 0x08 (unsigned byte) as in MNIST")
    ndim = magic[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header cut short: {len(raw)} bytes, expected {header} "
                         f"(magic + {ndim} dimension sizes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if 0 in dims:
        raise ValueError(f"{path}: IDX header gives a size of 0 (dims {' x '.join(map(str, dims))}); "
                         "expected positive sizes: the file is empty or damaged")
    expected = math.prod(dims)   # exact: four sizes of up to 2**32 - 1 overflow int64
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes after the data"
        raise ValueError(f"{path}: IDX payload is {found} bytes, expected {expected} for dims "
                         f"{' x '.join(map(str, dims))} ({what})")
    # A copy, so the array is writable like any other (frombuffer on bytes is read-only).
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


# ---------------------------------------------------------------------------------------------
# Where the data lives


def default_data_dir(data_dir=None):
    """The data folder: ``data_dir`` if given, else ``$FASTBP_DATA``, else a per-user cache."""
    if data_dir is not None:
        try:
            return Path(data_dir).expanduser()
        except TypeError:
            raise TypeError(f"data_dir: expected a folder path (str or os.PathLike) or None, "
                            f"got {type(data_dir).__name__} {data_dir!r}") from None
    env = os.environ.get("FASTBP_DATA")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
    else:
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):   # the XDG spec says to ignore a relative value
            base = Path.home() / ".cache"
    return Path(base) / "fastbp"


def _idx_files(folder):
    """Paths of the four files in ``folder`` (``name.gz`` or ``name``); None for a missing one."""
    found = []
    for name in FILE_NAMES:
        candidates = [folder / name, folder / name[:-len(".gz")]]
        found.append(next((p for p in candidates if p.is_file()), None))
    return found


def _read_idx_set(paths):
    x_train, t_train, x_test, t_test = (read_idx(p) for p in paths)
    return (x_train, t_train, x_test, t_test), [str(p) for p in paths]


def _read_book_pickle(path):
    """The book's ``mnist.pkl``: a dict of train_img, test_img (N, 784) uint8 and train_label,
    test_label (N,)."""
    with _io.open_for_unpickling(path) as f:   # refuses a file another user could have written
        try:
            data = pickle.load(f)
        except Exception as error:   # unpickling can fail in many ways; all mean "not a good file"
            raise ValueError(f"{path}: cannot unpickle ({type(error).__name__}: {error}); expected "
                             "the book's mnist.pkl, a pickled dict of NumPy arrays") from None
    keys = ("train_img", "train_label", "test_img", "test_label")
    if not isinstance(data, dict) or not all(k in data for k in keys):
        got = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a dict with keys {list(keys)} (the book's mnist.pkl), "
                         f"found {got}")
    arrays = [np.asarray(data[k]) for k in keys]
    for key, a in zip(keys, arrays):
        if key.endswith("_img") and (a.ndim != 2 or a.shape[1] != 28 * 28 or a.dtype != np.uint8):
            raise ValueError(f"{path}: {key} must be a (N, 784) uint8 array, "
                             f"found {a.shape} {a.dtype}")
        if key.endswith("_label") and (a.ndim != 1 or a.dtype.kind not in "iu"):
            raise ValueError(f"{path}: {key} must be a (N,) integer array, "
                             f"found {a.shape} {a.dtype}")
    x_train, t_train, x_test, t_test = arrays
    names = [f"{path}[{k!r}]" for k in keys]
    return (x_train.reshape(-1, 28, 28), t_train, x_test.reshape(-1, 28, 28), t_test), names


# ---------------------------------------------------------------------------------------------
# Download


def _reason(error):
    """A one-line reason for a failed download."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, BaseException):
            return str(error.reason)
        error = error.reason
    if isinstance(error, TimeoutError):
        return f"no answer within {DOWNLOAD_TIMEOUT} s"
    return f"{type(error).__name__}: {error}"


def _fetch(url, dest, sha256):
    """Download ``url`` to ``dest`` through a temporary file in the same folder.

    Returns (size in bytes, SHA-256 received); ``dest`` is written only if that hash is ``sha256``.

    The bytes only get the name ``dest`` after their SHA-256 matched, so a half or wrong file never
    sits under the final name; the temporary file is removed on every failure, Ctrl-C included.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with _io.atomic_write(dest) as out, \
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            if digest.hexdigest() != sha256:
                raise _ChecksumMismatch
    except _ChecksumMismatch:
        pass
    return size, digest.hexdigest()


class _ChecksumMismatch(Exception):
    """Raised inside ``atomic_write`` to discard a download whose hash is wrong."""


def _download(name, folder, missing):
    """Fetch ``missing`` file names into ``folder``; [] if all came, else what went wrong."""
    for file_name in missing:
        expected = SHA256[name][file_name]
        failures = []
        for mirror in MIRRORS[name]:
            url = mirror + file_name
            print(f"downloading {file_name} from {mirror} ... ", end="", file=sys.stderr,
                  flush=True)
            try:
                size, received = _fetch(url, folder / file_name, expected)
            except (OSError, http.client.HTTPException) as error:   # URLError, timeouts too
                print("failed", file=sys.stderr)
                failures.append(f"{url}: {_reason(error)}")
                continue
            if received == expected:
                print(f"{size / 1e6:.1f} MB", file=sys.stderr)
                break
            print("checksum mismatch", file=sys.stderr)
            failures.append(f"{url}: SHA-256 mismatch for {file_name}: expected {expected}, "
                            f"received {received} ({size} bytes); file discarded")
        else:
            return failures   # this file came from no mirror: no point fetching the rest
    return []


def _writable_folder_problem(folder):
    """None if files can be created in ``folder`` (made if needed), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{type(error).__name__}: {error.strerror or error}"
    return _io.write_problem(folder / FILE_NAMES[0])


# ---------------------------------------------------------------------------------------------
# Loading


def _not_found_message(name, folder, present, elsewhere, outcome):
    title = _TITLES[name]
    lines = [f"{title} not found. Put these four files in {folder}{os.sep}",
             *(f"    {f}" + ("   (present)" if p else "") for f, p in zip(FILE_NAMES, present)),
             "(the same names without .gz work too).",
             "Also looked for: " + ", ".join(map(str, elsewhere)) + ".",
             outcome,
             f"The files can be fetched from: {', '.join(MIRRORS[name])}",
             f"To use another folder (one holding {name}/), set FASTBP_DATA=/that/folder "
             f"or pass data_dir='/that/folder'."]
    return "\n".join(lines)


def _load_dataset(name, data_dir, download):
    """The four raw arrays of ``name`` and the file names they came from, per the search order."""
    root = default_data_dir(data_dir)
    folder = root / name
    paths = _idx_files(folder)
    if all(paths):
        return _read_idx_set(paths)

    elsewhere = []
    if name == "mnist":
        for pkl in (folder / "mnist.pkl", root / "mnist.pkl"):
            if pkl.is_file():
                return _read_book_pickle(pkl)
            elsewhere.append(pkl)
    else:
        debian = _idx_files(Path(DEBIAN_FASHION_MNIST_DIR))
        if all(debian):
            return _read_idx_set(debian)
        elsewhere.append(Path(DEBIAN_FASHION_MNIST_DIR))

    missing = [f for f, p in zip(FILE_NAMES, paths) if p is None]
    if not download:
        outcome = "Download: not attempted (download=False)."
    elif os.environ.get("FASTBP_OFFLINE"):
        outcome = "Download: not attempted (FASTBP_OFFLINE is set)."
    elif (problem := _writable_folder_problem(folder)) is not None:
        outcome = (f"Download: not possible, the folder {folder} is not writable ({problem}). "
                   "Set FASTBP_DATA to a writable folder or pass data_dir=.")
    elif failures := _download(name, folder, missing):
        outcome = "Download failed:\n" + "\n".join(f"    {line}" for line in failures)
    else:
        return _read_idx_set(_idx_files(folder))
    present = [p is not None for p in _idx_files(folder)]   # downloads may have filled some
    raise DatasetNotFoundError(_not_found_message(name, folder, present, elsewhere, outcome))


def _check_split(x, t, x_name, t_name, side, n_classes=10):
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"{x_name}: {side} images must be 28x28, expected shape (N, 28, 28), "
                         f"found {x.shape}")
    if t.ndim != 1:
        raise ValueError(f"{t_name}: {side} labels must be one-dimensional, expected (N,), "
                         f"found {t.shape}")
    if len(x) != len(t):
        raise ValueError(f"{t_name}: {len(t)} {side} labels but {x_name} holds {len(x)} images; "
                         "expected matching counts")
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(f"{t_name}: {side} labels must be in 0..{n_classes - 1}, "
                         f"found {t.min()}..{t.max()}")


def _one_hot(t, n_classes=10):
    """Labels (N,) → float64 one-hot (N, n_classes), as the book's ``_change_one_hot_label``."""
    out = np.zeros((t.size, n_classes))
    out[np.arange(t.size), t] = 1
    return out


def _format(x, t, normalize, flatten, one_hot_label, scale, image_shape):
    """Apply the book's options to images (N, H, W) uint8 and labels (N,)."""
    x = x.astype(np.float32) / np.float32(scale) if normalize else x.astype(np.uint8, copy=False)
    x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, *image_shape)
    t = t.astype(np.uint8, copy=False)
    return x, (_one_hot(t) if one_hot_label else t)


def _load_28x28(name, normalize, flatten, one_hot_label, data_dir, download):
    (x_train, t_train, x_test, t_test), src = _load_dataset(name, data_dir, download)
    _check_split(x_train, t_train, src[0], src[1], "training")
    _check_split(x_test, t_test, src[2], src[3], "test")
    opts = dict(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label, scale=255,
                image_shape=(28, 28))
    return _format(x_train, t_train, **opts), _format(x_test, t_test, **opts)


def load_mnist(normalize=True, flatten=True, one_hot_label=False, data_dir=None, download=True):
    """MNIST as ``(x_train, t_train), (x_test, t_test)``: 60,000 / 10,000 handwritten digits.

    normalize: float32 pixels in [0, 1] (x / 255), else uint8 0..255.
    flatten: images (N, 784), else (N, 1, 28, 28).
    one_hot_label: labels float64 (N, 10) one-hot, else uint8 (N,).
    data_dir: the data folder (default ``$FASTBP_DATA`` or a per-user cache, see the module doc).
    download: fetch missing files from ``MIRRORS['mnist']``, checked against ``SHA256``.
    """
    return _load_28x28("mnist", normalize, flatten, one_hot_label, data_dir, download)


def load_fashion_mnist(normalize=True, flatten=True, one_hot_label=False, data_dir=None,
                       download=True):
    """Fashion-MNIST (Zalando): 10 clothing classes; shapes and options as ``load_mnist``."""
    return _load_28x28("fashion-mnist", normalize, flatten, one_hot_label, data_dir, download)


def load_digits(normalize=True, flatten=True, one_hot_label=False, test_size=297, seed=0):
    """The shipped 8x8 digits (1,797 samples) as ``(x_train, t_train), (x_test, t_test)``.

    Rows are shuffled with ``np.random.default_rng(seed)``; the last ``test_size`` are the test set.
    normalize: float32 pixels in [0, 1] (x / 16), else uint8 0..16.
    flatten: images (N, 64), else (N, 1, 8, 8).
    one_hot_label: labels float64 (N, 10) one-hot, else uint8 (N,).
    """
    resource = importlib.resources.files("fastbp.data") / "digits.csv.gz"
    table = np.loadtxt(io.BytesIO(gzip.decompress(resource.read_bytes())), delimiter=",",
                       dtype=np.int64, ndmin=2)
    if table.shape[1] != 65 or table[:, :64].min() < 0 or table[:, :64].max() > 16:
        raise ValueError(f"{resource}: expected rows of 64 pixel values 0..16 and a label, "
                         f"found {table.shape[1]} columns, values {table.min()}..{table.max()}")
    n = len(table)
    if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) \
            or not 1 <= test_size < n:
        raise ValueError(f"test_size: expected an integer in 1..{n - 1}, got {test_size!r}")
    table = table[np.random.default_rng(seed).permutation(n)]
    x = table[:, :64].reshape(n, 8, 8).astype(np.uint8)
    t = table[:, 64]
    split = n - test_size
    if t.min() < 0 or t.max() > 9:
        raise ValueError(f"{resource}: labels must be in 0..9, found {t.min()}..{t.max()}")
    opts = dict(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label, scale=16,
                image_shape=(8, 8))
    return _format(x[:split], t[:split], **opts), _format(x[split:], t[split:], **opts)
