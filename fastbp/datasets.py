"""Datasets: MNIST and Fashion-MNIST the way the book's ``load_mnist`` returns them, and digits.

``load_mnist`` and ``load_fashion_mnist`` return ``(x_train, t_train), (x_test, t_test)`` exactly as
the book's ``dataset/mnist.py`` does. They look for the data in this order and use the first
complete copy they find:

1. the data folder's ``mnist/`` (or ``fashion-mnist/``) subfolder, holding the four standard IDX
   files ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
   ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` (the same names without ``.gz``
   work too). The data folder is the ``data_dir`` argument, else the ``FASTBP_DATA`` environment
   variable, else the platform's per-user cache folder (``~/.cache/fastbp`` on Linux); see
   ``default_data_dir``;
2. MNIST only: the book's pickle, ``<data folder>/mnist/mnist.pkl`` or ``<data folder>/mnist.pkl``
   (unpickling runs code, so it is read only from a file and folder that no user but you or root
   can write to; see ``fastbp._io.open_for_unpickling``);
   Fashion-MNIST only: Debian's ``/usr/share/datasets/fashion-mnist`` (package
   ``dataset-fashion-mnist``);
3. with ``download=True`` (and the environment variable ``FASTBP_OFFLINE`` unset or empty): the
   missing files are downloaded from the mirrors in ``MIRRORS`` into the subfolder of step 1 by
   pooch, each checked against its SHA-256 in ``SHA256`` before it takes its final name. All
   mirrors are first asked at once; when none answers within ``CONNECT_SECONDS`` (no network),
   nothing more is tried. Folders are made only to hold a downloaded file. Files found on disk
   are not hash-checked (Debian's copies carry another gzip header, so other hashes), only
   format-checked by ``read_idx``.

If all of that fails, ``DatasetNotFoundError`` says which files to put in which folder.

``load_digits`` needs nothing: it reads the 1,797 real 8x8 handwritten digits shipped inside the
package (UCI "Optical Recognition of Handwritten Digits"), for offline use and fast tests.
"""
import gzip
import importlib.resources
import io
import math
import os
import pickle
import queue
import threading
import time
import urllib.parse
import zlib
from pathlib import Path

import numpy as np
import platformdirs

from . import _io, progress

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
CONNECT_SECONDS = 5    # all mirrors are asked at once; none answering within this means no network
READ_SECONDS = 30      # a download that stalls this long between two pieces has failed

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
              0x0D: "float32", 0x0E: "float64"}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is nowhere on disk and could not be downloaded; the message says what to do.

    Also as attributes, for a program to say it its own way: ``dataset`` (its title), ``folder``
    (where the files go), ``missing`` (the file names not there), ``outcome`` (why no download
    happened, or how it failed: one line, or a line per mirror)."""

    dataset = folder = outcome = None
    missing = ()


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
    """The data folder: ``data_dir`` if given, else ``$FASTBP_DATA``, else the per-user cache
    folder of the platform (platformdirs' ``user_cache_dir("fastbp")``: ``~/.cache/fastbp`` or
    ``$XDG_CACHE_HOME/fastbp`` on Linux, ``~/Library/Caches/fastbp`` on macOS,
    ``%LOCALAPPDATA%\\fastbp\\Cache`` on Windows)."""
    if data_dir is not None:
        try:
            return Path(data_dir).expanduser()
        except TypeError:
            raise TypeError(f"data_dir: expected a folder path (str or os.PathLike) or None, "
                            f"got {type(data_dir).__name__} {data_dir!r}") from None
    env = os.environ.get("FASTBP_DATA")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("fastbp", appauthor=False))


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
# Download (pooch: the hash registry, the temporary file renamed once its SHA-256 matched, retries)


def _root_cause(error):
    """The innermost error under ``error`` (requests wraps urllib3, which wraps the socket's)."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = error.__cause__ or error.__context__
        if inner is None and isinstance(getattr(error, "reason", None), BaseException):
            inner = error.reason
        if inner is None and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if inner is None:
            break
        error = inner
    return error


def _reason(error, seconds):
    """A few words saying why a request failed."""
    import requests
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    if isinstance(error, requests.Timeout):
        return f"no answer within {seconds:g} s"
    root = _root_cause(error)
    if isinstance(root, TimeoutError):
        return f"no answer within {seconds:g} s"
    if isinstance(root, OSError) and root.strerror:
        return root.strerror
    return f"{type(root).__name__}: {root}"


def _ask_mirrors(urls, seconds):
    """{url: None if it answered HEAD with 200, else why not} for the mirrors' ``urls``, all asked
    at once and waited for ``seconds`` in all: name lookup included, which no socket timeout
    bounds. It returns at the first 200, leaving out the urls not answered yet."""
    import requests
    answers = queue.SimpleQueue()

    def ask(url):
        try:
            response = requests.head(url, timeout=seconds, allow_redirects=True)
            answers.put((url, None if response.status_code == 200
                         else f"HTTP {response.status_code} {response.reason}"))
        except Exception as error:   # whatever stops the request is the answer
            answers.put((url, _reason(error, seconds)))

    for url in urls:   # daemon threads: one stuck in a name lookup does not hold the program
        threading.Thread(target=ask, args=(url,), daemon=True, name="fastbp-mirror-probe").start()
    deadline = time.monotonic() + seconds
    result = {}
    while len(result) < len(urls):
        try:
            url, why = answers.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        result[url] = why
        if why is None:
            return result
    return {url: result.get(url, f"no answer within {seconds:g} s") for url in urls}


class _Bar:
    """The progress bar pooch's HTTPDownloader drives (``total``, ``update``, ``reset``,
    ``close``), drawn on a progress.Line."""

    def __init__(self, line):
        self.line, self.total, self.done = line, 0, 0

    def update(self, size):
        self.done += size
        of = f" of {self.total / 1e6:.1f}" if self.total else ""
        self.line.show(f"{min(self.done, self.total or self.done) / 1e6:.1f}{of} MB")

    def reset(self):
        self.done = 0

    def close(self):
        pass


def _download(name, folder, missing):
    """Fetch the ``missing`` files of ``name`` into ``folder`` (made for them, and removed again
    if it stays empty); [] if all came, else the lines saying what went wrong."""
    mirrors = MIRRORS[name]
    answers = _ask_mirrors([mirror + missing[0] for mirror in mirrors], CONNECT_SECONDS)
    failed = {m: answers[m + missing[0]] for m in mirrors if answers.get(m + missing[0])}
    if len(failed) == len(mirrors):
        hosts = "; ".join(f"{urllib.parse.urlsplit(m).netloc}: {why}" for m, why in failed.items())
        return [f"no network? No mirror could be reached ({hosts}). "
                "Set FASTBP_OFFLINE=1 to skip the download."]
    import pooch
    registry = {file: f"sha256:{digest}" for file, digest in SHA256[name].items()}
    made = _io.make_folders(folder)
    try:
        for file_name in missing:
            failures = []
            for mirror in (m for m in mirrors if m not in failed):
                line = progress.Line(f"downloading {file_name} ({_TITLES[name]}) from {mirror}: ")
                bar = _Bar(line)
                source = pooch.create(path=folder, base_url=mirror, registry=registry,
                                      retry_if_failed=1)
                try:
                    with _quiet(pooch.get_logger()):
                        path = source.fetch(file_name, downloader=pooch.HTTPDownloader(
                            progressbar=bar, chunk_size=1 << 16,
                            timeout=(CONNECT_SECONDS, READ_SECONDS)))
                except Exception as error:   # network, HTTP status, or a SHA-256 mismatch
                    why = (str(error).split(". ")[0] if isinstance(error, ValueError)
                           else _reason(error, READ_SECONDS))
                    line.end(f"failed ({why})")
                    failures.append(f"{mirror}{file_name}: {why}")
                    continue
                except BaseException:
                    line.end("interrupted")
                    raise
                # pooch's temporary file is private (0600): give the data the mode of any new file
                os.chmod(path, _io.new_file_mode(folder))
                line.end(f"{os.path.getsize(path) / 1e6:.1f} MB, SHA-256 checked")
                break
            else:
                return failures   # this file came from no mirror: no point fetching the rest
        return []
    finally:
        _io.remove_empty(made)


class _quiet:
    """Pooch logs each download on stderr; fastbp draws its own line instead."""

    def __init__(self, logger):
        self.logger = logger

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel("WARNING")

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def _writable_folder_problem(folder):
    """None if files can be written into ``folder`` (made when they are), else why not. It
    creates nothing: the nearest folder that exists is asked whether it takes files."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    return _io.write_problem(existing / FILE_NAMES[0])


# ---------------------------------------------------------------------------------------------
# Loading


def _not_found(name, folder, present, elsewhere, outcome):
    """The DatasetNotFoundError saying which files to put where, and why none were downloaded."""
    lines = [f"{_TITLES[name]} not found. Put these four files in {folder}{os.sep}",
             *(f"    {f}" + ("   (present)" if p else "") for f, p in zip(FILE_NAMES, present)),
             "(the same names without .gz work too).",
             "Also looked for: " + ", ".join(map(str, elsewhere)) + ".",
             f"Download: {outcome}",
             f"The files can be fetched from: {', '.join(MIRRORS[name])}",
             f"To use another folder (one holding {name}/), set FASTBP_DATA=/that/folder "
             f"or pass data_dir='/that/folder'."]
    error = DatasetNotFoundError("\n".join(lines))
    error.dataset, error.folder, error.outcome = _TITLES[name], folder, outcome
    error.missing = tuple(f for f, p in zip(FILE_NAMES, present) if not p)
    return error


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
        outcome = "not attempted (download=False)."
    elif os.environ.get("FASTBP_OFFLINE"):
        outcome = "not attempted (FASTBP_OFFLINE is set)."
    elif (problem := _writable_folder_problem(folder)) is not None:
        outcome = (f"not possible, the folder {folder} is not writable ({problem}). "
                   "Set FASTBP_DATA to a writable folder or pass data_dir=.")
    elif failures := _download(name, folder, missing):
        outcome = ("failed: " + failures[0] if len(failures) == 1
                   else "failed:\n" + "\n".join(f"    {line}" for line in failures))
    else:
        return _read_idx_set(_idx_files(folder))
    present = [p is not None for p in _idx_files(folder)]   # downloads may have filled some
    raise _not_found(name, folder, present, elsewhere, outcome)


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
