"""Bad input through every public entry point: one clear exception (or, for the command, exit
code 2 and one ``error:`` line), never a crash, a traceback, a NumPy-internal message or a silent
NaN. (MulLayer and AddLayer broadcast like NumPy, so they fail like it.)

The battery is one table: (entry point, bad input) -> exception type and a regex on its message.
The messages name the argument, what was expected and what was received, as ``fastbp._checks``
promises. Accepted-but-converted input (integer and float16 data, non-contiguous and read-only
arrays) is checked after the table; so is the promise that a refused call leaves a layer as it was.
"""
import functools
import gzip
import hashlib
import http.server
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fastbp import (AddLayer, Affine, MulLayer, MultiLayerNet, Relu, Sigmoid, SoftmaxWithLoss, Tanh,
                    TwoLayerNet, datasets, fit, gradient_check, numerical_gradient, use_backend)
from fastbp.datasets import FILE_NAMES, DatasetNotFoundError, load_fashion_mnist, load_mnist, read_idx

TRAIN_IMG, TRAIN_LBL, TEST_IMG, TEST_LBL = FILE_NAMES


# ---------------------------------------------------------------------------------------------
# helpers


@dataclass
class Env:
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch


def net(dtype=np.float64):
    """A 4-5-3 TwoLayerNet whose parameters come from a fixed generator."""
    n = TwoLayerNet(4, 5, 3, weight_init_std=0.5, dtype=dtype)
    rng = np.random.default_rng(0)
    for p in n.params.values():
        p[...] = rng.standard_normal(p.shape)
    return n


def net_with(key, index, value):
    n = net()
    n.params[key][index] = value
    return n


def net_with_readonly(key):
    n = net()
    n.params[key].flags.writeable = False
    return n


X = np.linspace(-1, 1, 8).reshape(2, 4)    # 2 samples, 4 features
T = np.array([0, 2])                        # their labels, 3 classes
RNG = np.random.default_rng(42)
XT = RNG.standard_normal((30, 4))           # a training set for fit
TT = np.arange(30) % 3


def fit_small(n=None, x=XT, t=TT, **kwargs):
    kwargs = {"iters": 3, "batch_size": 5, **kwargs}
    return fit(net() if n is None else n, x, t, **kwargs)


def with_nan(a, index):
    a = np.array(a, dtype=np.float64)
    a[index] = np.nan
    return a


def readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_set(folder, n_train=4, n_test=2, seed=0):
    """The four IDX files of a tiny 28x28 set, gzipped, in ``folder``."""
    rng = np.random.default_rng(seed)
    arrays = {TRAIN_IMG: rng.integers(0, 256, (n_train, 28, 28)), TRAIN_LBL: rng.integers(0, 10, n_train),
              TEST_IMG: rng.integers(0, 256, (n_test, 28, 28)), TEST_LBL: rng.integers(0, 10, n_test)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return folder


def damaged_set(env, name, damage, dataset="mnist"):
    """A data folder whose ``dataset/name`` is damaged: 'truncate', 'gzip' (bad deflate), 'magic'."""
    folder = write_set(env.tmp_path / "data" / dataset)
    path = folder / name
    raw = gzip.decompress(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(gzip.compress(raw[:-3]))
    elif damage == "gzip":
        packed = bytearray(path.read_bytes())
        packed[len(packed) // 2] ^= 0xFF
        packed[len(packed) // 2 + 1] ^= 0xFF
        path.write_bytes(bytes(packed))
    elif damage == "magic":
        path.write_bytes(gzip.compress(raw[:2] + b"\x0d" + raw[3:]))   # float32 type code
    return env.tmp_path / "data"


def write_file(env, name, data):
    path = env.tmp_path / name
    path.write_bytes(data)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def load_with_wrong_checksum(env):
    """Download MNIST from an HTTP mirror on 127.0.0.1 whose train images do not match the
    table's SHA-256."""
    mirror = write_set(env.tmp_path / "mirror", seed=7)
    sums = {name: hashlib.sha256((mirror / name).read_bytes()).hexdigest() for name in FILE_NAMES}
    sums[TRAIN_IMG] = "0" * 64
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        _QuietHandler, directory=str(mirror)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        env.monkeypatch.delenv(proxy, raising=False)
    env.monkeypatch.setattr(datasets, "MIRRORS", {"mnist": [f"http://127.0.0.1:{server.server_address[1]}/"]})
    env.monkeypatch.setattr(datasets, "SHA256", {"mnist": sums})
    env.monkeypatch.delenv("FASTBP_OFFLINE", raising=False)
    try:
        return load_mnist(data_dir=env.tmp_path / "data")
    finally:
        server.shutdown()
        server.server_close()


def load_missing(env, loader=load_mnist, **kwargs):
    env.monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST_DIR", env.tmp_path / "no-debian")
    return loader(data_dir=env.tmp_path / "no-such-folder", **kwargs)


# --- the command, in a subprocess -------------------------------------------------------------

class CliFailed(Exception):
    """``python -m fastbp ...`` exited non-zero; str() is "exit <code>: <stderr>"."""

    def __init__(self, returncode, stderr):
        super().__init__(f"exit {returncode}: {stderr.strip()}")
        self.returncode, self.stderr = returncode, stderr


def cli(env, *args):
    full_env = {**os.environ, "FASTBP_OFFLINE": "1", "FASTBP_DATA": str(env.tmp_path / "empty-data")}
    out = subprocess.run([sys.executable, "-m", "fastbp", *map(str, args)], capture_output=True,
                         text=True, env=full_env, cwd=env.tmp_path, timeout=300)
    if out.returncode != 0:
        raise CliFailed(out.returncode, out.stderr)
    return out


def saved_net(env, name, meta=None, **arrays):
    """An .npz like ``fastbp train --save`` writes (64-5-10 relu on digits), with changes."""
    rng = np.random.default_rng(1)
    params = {"W1": rng.standard_normal((64, 5)), "b1": np.zeros(5), "W2": rng.standard_normal((5, 10)),
              "b2": np.zeros(10)}
    params = {k: v.astype(np.float32) for k, v in params.items()}
    params.update(arrays)
    if meta is None:
        meta = {"dataset": "digits", "activation": "relu", "dtype": "float32", "sizes": [64, 5, 10]}
    path = env.tmp_path / name
    np.savez(path, meta=json.dumps(meta), **params)
    return path


def no_sizes_meta():
    return {"dataset": "digits", "activation": "relu", "dtype": "float32"}


# ---------------------------------------------------------------------------------------------
# the battery

LABEL_RANGE = r"class indices must lie in \[0, 3\), got "
ONEHOT_SHAPE = r"t: expected class indices of shape \(2,\) or one-hot labels of shape \(2, 3\), got shape "
NOT_FINITE = r"expected finite values, got "

CASES = [
    # --- layers ---------------------------------------------------------------------------
    pytest.param(lambda env: Affine(np.ones((3, 2), np.float16), np.zeros(2, np.float16)),
                 TypeError, r"Affine: W: expected dtype float32 or float64, got float16",
                 id="Affine(W float16)"),
    pytest.param(lambda env: Affine(np.ones((3, 2)), [0.0, 0.0]),
                 TypeError, r"Affine: b: expected a float32 or float64 numpy array, got list",
                 id="Affine(b list)"),
    pytest.param(lambda env: Affine(np.ones((3, 2)), np.zeros(2)).forward(np.ones((2, 3, 2))),
                 ValueError, r"Affine.forward: x has 6 features per sample \(shape \(2, 3, 2\)\), but W expects 3",
                 id="Affine.forward: 3-d x of the wrong size"),
    pytest.param(lambda env: Affine(np.ones((3, 2)), np.zeros(2)).forward(np.ones((2, 3), np.complex128)),
                 TypeError, r"Affine.forward: x: expected real numbers \(float or integer dtype\), got dtype complex128",
                 id="Affine.forward: complex x"),
    pytest.param(lambda env: Relu().forward(np.array([True, False])),
                 TypeError, r"Relu.forward: x: expected real numbers .*got dtype bool",
                 id="Relu.forward: bool x"),
    pytest.param(lambda env: Sigmoid().forward(np.array([1.0, None])),
                 TypeError, r"Sigmoid.forward: x: expected real numbers .*got dtype object",
                 id="Sigmoid.forward: object x"),
    pytest.param(lambda env: Tanh().forward(np.array(["0.5", "1"])),
                 TypeError, r"Tanh.forward: x: expected real numbers .*got dtype <U",
                 id="Tanh.forward: str x"),
    pytest.param(lambda env: Tanh().backward(np.ones(3)),
                 RuntimeError, r"Tanh.backward: call forward first",
                 id="Tanh.backward before forward"),
    pytest.param(lambda env: (lambda s: (s.forward(np.ones(3)), s.backward(np.ones(3, np.complex64))))(Sigmoid()),
                 TypeError, r"Sigmoid.backward: dout: expected real numbers .*got dtype complex64",
                 id="Sigmoid.backward: complex dout"),
    pytest.param(lambda env: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([0, 2**63], np.uint64)),
                 ValueError, r"SoftmaxWithLoss.forward: t: " + LABEL_RANGE + r"9223372036854775808",
                 id="SoftmaxWithLoss.forward: uint64 label 2**63"),
    pytest.param(lambda env: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([True, False])),
                 TypeError, r"SoftmaxWithLoss.forward: t: class indices must have an integer dtype, got bool",
                 id="SoftmaxWithLoss.forward: bool labels"),
    pytest.param(lambda env: SoftmaxWithLoss().forward(np.ones((2, 3)), np.zeros((2, 1), int)),
                 ValueError, ONEHOT_SHAPE + r"\(2, 1\)",
                 id="SoftmaxWithLoss.forward: labels as a column"),
    pytest.param(lambda env: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([[0, 0, 0], [0, 0, 1]])),
                 ValueError, r"one-hot labels need exactly one 1 and zeros elsewhere in each row; row 0 is \[0, 0, 0\]",
                 id="SoftmaxWithLoss.forward: one-hot row of zeros"),
    pytest.param(lambda env: SoftmaxWithLoss().forward(np.ones((2, 3)), with_nan(np.eye(3)[[0, 1]], (1, 1))),
                 ValueError, r"SoftmaxWithLoss.forward: t: " + NOT_FINITE + r"nan at index \(1, 1\)",
                 id="SoftmaxWithLoss.forward: NaN in one-hot"),
    pytest.param(lambda env: SoftmaxWithLoss().forward(np.ones((0, 3)), np.zeros(0, int)),
                 ValueError, r"SoftmaxWithLoss.forward: x: expected at least one sample, got an empty array of shape \(0, 3\)",
                 id="SoftmaxWithLoss.forward: empty batch"),
    pytest.param(lambda env: MulLayer().backward(np.ones(3)),
                 RuntimeError, r"MulLayer.backward: call forward first",
                 id="MulLayer.backward before forward"),
    pytest.param(lambda env: MulLayer().forward(np.ones((2, 3)), np.ones(4)),
                 ValueError, r"operands could not be broadcast together with shapes \(2,3\) \(4,\)",
                 id="MulLayer.forward: shapes that do not broadcast"),
    pytest.param(lambda env: AddLayer().forward(np.ones((2, 3)), np.ones((3, 2))),
                 ValueError, r"operands could not be broadcast together with shapes \(2,3\) \(3,2\)",
                 id="AddLayer.forward: shapes that do not broadcast"),

    # --- nets -----------------------------------------------------------------------------
    pytest.param(lambda env: TwoLayerNet(784, "50", 10),
                 TypeError, r"hidden_size: expected a positive integer, got str '50'",
                 id="TwoLayerNet(hidden_size str)"),
    pytest.param(lambda env: TwoLayerNet(4, 5, 3, weight_init_std=float("nan")),
                 ValueError, r"weight_init_std: expected a finite positive number, got nan",
                 id="TwoLayerNet(weight_init_std nan)"),
    pytest.param(lambda env: TwoLayerNet(4, 5, 3, dtype="flaot32"),
                 TypeError, r"dtype: expected float32 or float64, got 'flaot32'",
                 id="TwoLayerNet(dtype misspelt)"),
    pytest.param(lambda env: MultiLayerNet(4, [3, 0], 2),
                 ValueError, r"hidden_size_list: expected a positive integer, got 0",
                 id="MultiLayerNet(hidden 0)"),
    pytest.param(lambda env: MultiLayerNet(4, None, 2),
                 TypeError, r"hidden_size_list: expected .*got NoneType",
                 id="MultiLayerNet(hidden None)"),
    pytest.param(lambda env: MultiLayerNet(4, [3], -1),
                 ValueError, r"output_size: expected a positive integer, got -1",
                 id="MultiLayerNet(output_size -1)"),
    pytest.param(lambda env: MultiLayerNet(4, [3], 2, dtype=np.float16),
                 TypeError, r"dtype: expected float32 or float64, got <class 'numpy.float16'>",
                 id="MultiLayerNet(dtype float16)"),
    pytest.param(lambda env: net().loss(X, np.array([0, 3])),
                 ValueError, r"SoftmaxWithLoss.forward: t: " + LABEL_RANGE + "3",
                 id="TwoLayerNet.loss: label == classes"),
    pytest.param(lambda env: net().accuracy(X, np.array([-1, 0])),
                 ValueError, r"accuracy: t: " + LABEL_RANGE + "-1",
                 id="TwoLayerNet.accuracy: negative label"),
    pytest.param(lambda env: net().gradient(X, np.array([0, 1], np.float32)),
                 TypeError, r"t: class indices must have an integer dtype, got float32; convert with t.astype\(int\)",
                 id="TwoLayerNet.gradient: float labels"),
    pytest.param(lambda env: net().loss(X, np.array([0, 1, 2])),
                 ValueError, r"t: expected 2 labels \(one per sample in x\), got 3",
                 id="TwoLayerNet.loss: more labels than samples"),
    pytest.param(lambda env: net().accuracy(X, np.eye(4)[[0, 1]]),
                 ValueError, r"accuracy: " + ONEHOT_SHAPE + r"\(2, 4\)",
                 id="TwoLayerNet.accuracy: one-hot of width 4"),
    pytest.param(lambda env: net().gradient(X, np.array([[0.5, 0.5, 0.0], [0, 0, 1]])),
                 ValueError, r"exactly one 1 .*row 0 is \[0.5, 0.5, 0.0\]",
                 id="TwoLayerNet.gradient: soft labels"),
    pytest.param(lambda env: net().accuracy(X, np.zeros((2, 1, 1), int)),
                 ValueError, r"accuracy: t: expected class indices of shape \(2,\), got shape \(2, 1, 1\)",
                 id="TwoLayerNet.accuracy: 3-d labels"),
    pytest.param(lambda env: net().predict(with_nan(X, (1, 3))),
                 ValueError, r"TwoLayerNet: x: " + NOT_FINITE + r"nan at index \(1, 3\)",
                 id="TwoLayerNet.predict: NaN in x"),
    pytest.param(lambda env: net().loss(np.where(X > 0.5, np.inf, X), T),
                 ValueError, r"TwoLayerNet: x: " + NOT_FINITE + r"inf at index \(1, 2\)",
                 id="TwoLayerNet.loss: inf in x"),
    pytest.param(lambda env: net_with("W2", (4, 1), np.nan).gradient(with_nan(X, (0, 0)), T),
                 ValueError, r"TwoLayerNet: x: " + NOT_FINITE + r"nan at index \(0, 0\)",
                 id="TwoLayerNet.gradient: NaN in x of a diverged net"),
    pytest.param(lambda env: net().loss(X[:, :3], T),
                 ValueError, r"Affine.forward: x has 3 features per sample \(shape \(2, 3\)\), but W expects 4",
                 id="TwoLayerNet.loss: 3 features for 4"),
    pytest.param(lambda env: net().loss(X[:0], T[:0]),
                 ValueError, r"Affine.forward: x: expected at least one sample, got an empty array of shape \(0, 4\)",
                 id="TwoLayerNet.loss: empty batch"),
    pytest.param(lambda env: net().predict(X > 0),
                 TypeError, r"Affine.forward: x: expected real numbers .*got dtype bool",
                 id="TwoLayerNet.predict: bool x"),
    pytest.param(lambda env: net().accuracy(X.astype(object), T),
                 TypeError, r"Affine.forward: x: expected real numbers .*got dtype object",
                 id="TwoLayerNet.accuracy: object x"),
    pytest.param(lambda env: MultiLayerNet(4, [6, 5], 3, activation="tanh").loss(X, np.array([3, 0])),
                 ValueError, r"SoftmaxWithLoss.forward: t: " + LABEL_RANGE + "3",
                 id="MultiLayerNet.loss: label == classes"),

    # --- fit ------------------------------------------------------------------------------
    pytest.param(lambda env: fit_small(t=np.where(TT == 2, 3, TT)),
                 ValueError, r"t_train: " + LABEL_RANGE + "3",
                 id="fit: label == classes"),
    pytest.param(lambda env: fit_small(x_test=XT[:4], t_test=np.array([0, 1, -1, 2])),
                 ValueError, r"t_test: " + LABEL_RANGE + "-1",
                 id="fit: negative test label"),
    pytest.param(lambda env: fit_small(t=TT.astype(np.float64)),
                 TypeError, r"t_train: class indices must have an integer dtype, got float64; convert",
                 id="fit: float labels"),
    pytest.param(lambda env: fit_small(t=np.eye(4)[TT]),
                 ValueError, r"t_train: expected class indices of shape \(30,\) or one-hot labels of shape \(30, 3\), got shape \(30, 4\)",
                 id="fit: one-hot of width 4"),
    pytest.param(lambda env: fit_small(x=with_nan(XT, (17, 2))),
                 ValueError, r"x_train: " + NOT_FINITE + r"nan at index \(17, 2\)",
                 id="fit: NaN in x_train"),
    pytest.param(lambda env: fit_small(x_test=np.full((2, 4), -np.inf), t_test=T),
                 ValueError, r"x_test: " + NOT_FINITE + r"-inf at index \(0, 0\)",
                 id="fit: -inf in x_test"),
    pytest.param(lambda env: fit_small(net_with("W1", (0, 0), np.nan)),
                 ValueError, r"W1?: " + NOT_FINITE + r"nan at index \(0, 0\)",
                 id="fit: NaN in W1"),
    pytest.param(lambda env: fit_small(net_with("b2", 1, np.inf)),
                 ValueError, r"b2?: " + NOT_FINITE + r"inf at index \(1,\)",
                 id="fit: inf in b2"),
    pytest.param(lambda env: fit_small(net_with_readonly("W1")),
                 ValueError, r"fit: layer 1's W must be a writeable C-contiguous array",
                 id="fit: read-only W1"),
    pytest.param(lambda env: fit_small(x=XT[:, :3]),
                 ValueError, r"x_train: the net takes 4 inputs per sample, got 3 \(x has shape \(30, 3\)\)",
                 id="fit: x of the wrong shape"),
    pytest.param(lambda env: fit_small(t=TT[:29]),
                 ValueError, r"t_train: expected 30 labels \(one per sample in x\), got 29",
                 id="fit: one label short"),
    pytest.param(lambda env: fit_small(x=XT.astype(np.complex64)),
                 TypeError, r"x_train: expected real numbers .*got dtype complex64",
                 id="fit: complex x"),
    pytest.param(lambda env: fit_small(batch_size=10**9),
                 ValueError, r"batch_size: expected at most the number of training samples \(30\), got 1000000000",
                 id="fit: batch_size 1e9"),
    pytest.param(lambda env: fit_small(iters=-5),
                 ValueError, r"iters: expected a positive integer, got -5",
                 id="fit: iters -5"),
    pytest.param(lambda env: fit_small(lr=0.0),
                 ValueError, r"lr: expected a finite positive number, got 0.0",
                 id="fit: lr 0"),
    pytest.param(lambda env: fit_small(lr=-np.inf),
                 ValueError, r"lr: expected a finite positive number, got -inf",
                 id="fit: lr -inf"),
    pytest.param(lambda env: fit_small(lr="0.1"),
                 TypeError, r"lr: expected a positive number, got str '0.1'",
                 id="fit: lr str"),
    pytest.param(lambda env: fit_small(batch_size=True),
                 TypeError, r"batch_size: expected a positive integer, got bool True",
                 id="fit: batch_size True"),
    pytest.param(lambda env: fit_small(eval_every=0),
                 ValueError, r"eval_every: expected a positive integer, got 0",
                 id="fit: eval_every 0"),

    # --- gradient_check, numerical_gradient ------------------------------------------------
    pytest.param(lambda env: gradient_check(net(), X, np.array([1, 5])),
                 ValueError, r"SoftmaxWithLoss.forward: t: " + LABEL_RANGE + "5",
                 id="gradient_check: label 5 of 3"),
    pytest.param(lambda env: gradient_check(net(), with_nan(X, (0, 0)), T),
                 ValueError, r"TwoLayerNet: x: " + NOT_FINITE + r"nan at index \(0, 0\)",
                 id="gradient_check: NaN in x"),
    pytest.param(lambda env: gradient_check(net(), X[:, :2], T),
                 ValueError, r"x has 2 features per sample .*W expects 4",
                 id="gradient_check: wrong width"),
    pytest.param(lambda env: numerical_gradient(lambda w: float(np.sum(w)), [1.0, 2.0]),
                 TypeError, r"numerical_gradient: x must be a float32 or float64 numpy array .*got list",
                 id="numerical_gradient: list"),
    pytest.param(lambda env: numerical_gradient(lambda w: float(np.sum(w.astype(np.float64) ** 2)), np.ones(3, np.float16)),
                 TypeError, r"numerical_gradient: x.*float16",
                 id="numerical_gradient: float16 (h=1e-4 is below its resolution)"),
    pytest.param(lambda env: numerical_gradient(lambda w: float(np.sum(w ** 2)), readonly(np.ones(3))),
                 ValueError, r"numerical_gradient: x .*(read-only|writeable)",
                 id="numerical_gradient: read-only x"),

    # --- loaders --------------------------------------------------------------------------
    pytest.param(lambda env: read_idx(write_file(env, "labels.idx", idx_bytes(np.arange(10))[:-4])),
                 ValueError, r"labels.idx: IDX payload is 6 bytes, expected 10 for dims 10 \(truncated\)",
                 id="read_idx: truncated raw file"),
    pytest.param(lambda env: read_idx(write_file(env, "f.gz", gzip.compress(idx_bytes(np.arange(99)))[:20])),
                 ValueError, r"f.gz: corrupt gzip stream \(EOFError",
                 id="read_idx: gzip cut after its header"),
    pytest.param(lambda env: read_idx(write_file(env, "f.gz", b"PK\x03\x04" + b"\x00" * 40)),
                 ValueError, r"f.gz: not an IDX file: magic bytes 504b0304, expected 0000 08 NN",
                 id="read_idx: a zip file"),
    pytest.param(lambda env: read_idx(env.tmp_path / "absent.gz"),
                 FileNotFoundError, r"No such file or directory: .*absent.gz",
                 id="read_idx: no such file"),
    pytest.param(lambda env: load_mnist(data_dir=damaged_set(env, TEST_IMG, "truncate")),
                 ValueError, TEST_IMG + r": IDX payload is 1565 bytes, expected 1568 for dims 2 x 28 x 28 \(truncated\)",
                 id="load_mnist: truncated test images"),
    pytest.param(lambda env: load_mnist(data_dir=damaged_set(env, TRAIN_LBL, "gzip")),
                 ValueError, TRAIN_LBL + r": corrupt gzip stream",
                 id="load_mnist: corrupt gzip"),
    pytest.param(lambda env: load_fashion_mnist(data_dir=damaged_set(env, TRAIN_IMG, "magic", "fashion-mnist")),
                 ValueError, TRAIN_IMG + r": IDX type code 0x0d \(float32\) is not supported",
                 id="load_fashion_mnist: wrong type code"),
    pytest.param(lambda env: load_with_wrong_checksum(env),
                 DatasetNotFoundError, r"hash of downloaded file \(train-images-idx3-ubyte.gz\) does not match the known hash: expected sha256:0{64} but got [0-9a-f]{64}",
                 id="load_mnist: checksum mismatch on download"),
    pytest.param(lambda env: load_missing(env, download=False),
                 DatasetNotFoundError, r"MNIST not found. Put these four files in .*no-such-folder",
                 id="load_mnist: missing data folder"),
    pytest.param(lambda env: load_missing(env, load_fashion_mnist, download=False),
                 DatasetNotFoundError, r"Fashion-MNIST not found. .*no-such-folder",
                 id="load_fashion_mnist: missing data folder"),
    pytest.param(lambda env: load_mnist(data_dir=3.5),
                 TypeError, r"data_dir: expected a folder path \(str or os.PathLike\) or None, got float 3.5",
                 id="load_mnist: data_dir a number"),

    # --- the command (subprocess) -----------------------------------------------------------
    pytest.param(lambda env: cli(env, "train", "--dataset", "digits", "--lr", "inf", "--iters", "5"),
                 CliFailed, r"exit 2: error: lr: expected a finite positive number, got inf$",
                 id="cli train --lr inf"),
    pytest.param(lambda env: cli(env, "train", "--dataset", "fashion-mnist", "--iters", "5",
                                 "--data-dir", damaged_set(env, TEST_LBL, "gzip", "fashion-mnist")),
                 CliFailed, r"exit 2: error: .*t10k-labels-idx1-ubyte.gz: corrupt gzip stream .*download or copy it again$",
                 id="cli train: corrupt gzip"),
    pytest.param(lambda env: cli(env, "gradcheck", "--dataset", "mnist", "--data-dir", env.tmp_path / "nothing"),
                 CliFailed, r"exit 2: error: MNIST not found. Put these four files in ",
                 id="cli gradcheck: missing data folder"),
    pytest.param(lambda env: cli(env, "evaluate", saved_net(env, "nan.npz", W2=np.full((5, 10), np.nan, np.float32))),
                 CliFailed, r"exit 2: error: .*nan.npz: W2: " + NOT_FINITE + r"nan at index \(0, 0\)",
                 id="cli evaluate: NaN weights"),
    pytest.param(lambda env: cli(env, "evaluate", saved_net(env, "nosizes.npz", meta=no_sizes_meta())),
                 CliFailed, r"exit 2: error: .*nosizes.npz: not a net saved by `fastbp train --save`",
                 id="cli evaluate: meta without sizes"),
    pytest.param(lambda env: cli(env, "evaluate", saved_net(env, "extra.npz", W9=np.ones(3, np.float32))),
                 CliFailed, r"exit 2: error: .*extra.npz: .*W9",
                 id="cli evaluate: an array the net does not have"),
]


def test_the_battery_is_big_enough():
    assert len(CASES) >= 30
    entry_points = {case.id.split(":")[0].split("(")[0].split(".")[0].split(" ")[0] for case in CASES}
    assert {"Affine", "Relu", "Sigmoid", "Tanh", "SoftmaxWithLoss", "MulLayer", "TwoLayerNet",
            "MultiLayerNet", "fit", "gradient_check", "numerical_gradient", "read_idx", "load_mnist",
            "cli"} <= entry_points


@pytest.mark.parametrize("call, error, match", CASES)
def test_bad_input_is_refused_clearly(call, error, match, tmp_path, monkeypatch):
    with pytest.raises(error, match=match) as info:
        call(Env(tmp_path, monkeypatch))
    if isinstance(info.value, CliFailed):
        stderr = info.value.stderr
        assert info.value.returncode == 2 and "Traceback" not in stderr, stderr
        assert [line for line in stderr.splitlines() if "error:" in line] == [stderr.splitlines()[0]], stderr
        if "not found" not in stderr:   # the not-found message lists the four files on purpose
            assert len(stderr.strip().splitlines()) == 1, stderr
    else:
        assert info.value.__cause__ is None   # one message, not a chained NumPy traceback


# ---------------------------------------------------------------------------------------------
# the nastiest cases with Numba's bounds checking on, in a fresh interpreter

BOUNDSCHECK_SCRIPT = textwrap.dedent("""
    import numpy as np
    import numba
    from fastbp import TwoLayerNet, SoftmaxWithLoss, fit, kernels
    assert numba.config.BOUNDSCHECK, "NUMBA_BOUNDSCHECK=1 was not seen"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4))
    t = np.arange(60) % 3

    def fresh():
        np.random.seed(0)
        return TwoLayerNet(4, 5, 3, weight_init_std=0.5)

    def nan_net():
        n = fresh()
        n.params["W1"][0, 0] = np.nan
        return n

    cases = {
        "softmax label == classes": lambda: SoftmaxWithLoss().forward(x[:3, :3], np.array([0, 1, 3])),
        "loss negative label": lambda: fresh().loss(x[:3], np.array([0, -1, 2])),
        "gradient NaN weights": lambda: nan_net().gradient(x[:3], t[:3]),
        "fit label == classes": lambda: fit(fresh(), x, np.where(t == 2, 3, t), iters=5, batch_size=10),
        "fit negative label": lambda: fit(fresh(), x, t - 1, iters=5, batch_size=10),
        "fit NaN weights": lambda: fit(nan_net(), x, t, iters=5, batch_size=10),
        "fit huge batch": lambda: fit(fresh(), x, t, iters=5, batch_size=2**40),
        "fit valid": lambda: fit(fresh(), x, t, x[:7], t[:7], iters=25, batch_size=60, eval_every=10),
        # the canary: a kernel called directly trusts its input; bounds checking must catch it
        "kernel direct, label 10**7": lambda: kernels.softmax_cross_entropy(x[:3, :3].copy(), np.array([0, 1, 10**7])),
    }
    for name, call in cases.items():
        try:
            call()
            print(f"{name} -> ok", flush=True)
        except Exception as error:
            print(f"{name} -> {type(error).__name__}: {error}", flush=True)
    print("survived", flush=True)
""")

BOUNDSCHECK_EXPECTED = {
    "softmax label == classes": r"ValueError: SoftmaxWithLoss.forward: t: " + LABEL_RANGE + "3$",
    "loss negative label": r"ValueError: SoftmaxWithLoss.forward: t: " + LABEL_RANGE + "-1$",
    "gradient NaN weights": r"ok$",   # computed on as NumPy would (and warned): no stray read
    "fit label == classes": r"ValueError: t_train: " + LABEL_RANGE + "3$",
    "fit negative label": r"ValueError: t_train: " + LABEL_RANGE + "-1$",
    "fit NaN weights": r"ValueError: .*W1?: " + NOT_FINITE + r"nan at index \(0, 0\)",
    "fit huge batch": r"ValueError: batch_size: expected at most the number of training samples \(60\), got 1099511627776$",
    "fit valid": r"ok$",
    # Numba's bounds check says "index is out of bounds"; with NUMBA_DISABLE_JIT=1, NumPy's own
    # IndexError names the index: either proves the read was stopped
    "kernel direct, label 10**7": r"IndexError: index (10000000 )?is out of bounds",
}


def test_nastiest_cases_under_numba_boundscheck(tmp_path):
    """NUMBA_BOUNDSCHECK=1 with an empty cache folder (a cached kernel would be the unchecked one):
    the interpreter survives, every bad input gets its promised error, valid training indexes
    nothing out of bounds, and the canary proves the checks are really on."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    out = subprocess.run([sys.executable, "-c", BOUNDSCHECK_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0 and "Traceback" not in out.stderr, (out.returncode, out.stdout, out.stderr)
    results = dict(line.split(" -> ", 1) for line in out.stdout.splitlines() if " -> " in line)
    assert out.stdout.rstrip().endswith("survived"), out.stdout
    wrong = {name: results.get(name) for name, pattern in BOUNDSCHECK_EXPECTED.items()
             if not re.search(pattern, results.get(name, "(missing)"))}
    assert not wrong, f"not the promised outcome: {wrong}"


# ---------------------------------------------------------------------------------------------
# checked, then changed: what compiled code reads later is what was checked

MUTATION_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fastbp import SoftmaxWithLoss, TwoLayerNet, fit
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))

    # labels changed between forward and backward (index labels: the kernel indexes with them)
    for kind in ("index", "onehot"):
        t = np.array([0, 2, 1, 2]) if kind == "index" else np.eye(3)[[0, 2, 1, 2]]
        want = SoftmaxWithLoss()
        want.forward(x, t.copy())
        layer = SoftmaxWithLoss()
        layer.forward(x, t)
        t[...] = 10**9
        print(kind, "backward after t changed:", np.array_equal(layer.backward(), want.backward()), flush=True)

    # the training data changed in place by a callback, between two compiled calls
    xt = rng.standard_normal((60, 4))
    tt = np.arange(60) % 3          # int64: fit could keep it as it is, without a copy

    def run(change):
        np.random.seed(0)
        net = TwoLayerNet(4, 5, 3, weight_init_std=0.5)
        x_train, t_train, x_test, t_test = xt.copy(), tt.copy(), xt[:10].copy(), tt[:10].copy()

        def callback(row):
            if change:
                t_train[:] = 10**9
                t_test[:] = -10**9
                x_train[:] = np.nan
                x_test[:] = 1e300
        history = fit(net, x_train, t_train, x_test, t_test, iters=50, batch_size=10, seed=1,
                      eval_every=5, callback=callback)
        return net.params, [(r.train_acc, r.test_acc, r.loss) for r in history.rows]

    (p0, rows0), (p1, rows1) = run(False), run(True)
    same = all(np.array_equal(p0[k], p1[k]) for k in p0) and rows0 == rows1
    print("fit with data changed by its callback:", same, flush=True)
""")


def test_labels_and_data_changed_after_checking_are_not_read(tmp_path):
    """Compiled code (no bounds checks unless CI's NUMBA_BOUNDSCHECK pass) would read and write
    out of bounds with a label of 10**9: a segfault, or silent corruption. The layer and fit keep
    private copies of what they checked, so the results are those of the unchanged input."""
    out = subprocess.run([sys.executable, "-c", MUTATION_SCRIPT], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "Traceback" not in out.stderr, (out.returncode, out.stdout, out.stderr)
    assert out.stdout.splitlines() == [
        "index backward after t changed: True",
        "onehot backward after t changed: True",
        "fit with data changed by its callback: True",
    ], out.stdout


# ---------------------------------------------------------------------------------------------
# finite in float64, beyond float32: said so, not reported as "inf"

BEYOND_FLOAT32 = (r"x(_train)?: has values up to 3.4e\+39, beyond float32's range \(\+-3.4e\+38\); "
                  r"use dtype=float64 or normalise the data")


@pytest.mark.parametrize("call", [
    lambda x: Affine(np.ones((4, 2), np.float32), np.zeros(2, np.float32)).forward(x),
    lambda x: net(np.float32).predict(x),
    lambda x: net(np.float32).loss(x, T),
    lambda x: net(np.float32).gradient(x, T),
    lambda x: fit(net(np.float32), np.vstack([x] * 5), np.tile(T, 5), iters=2, batch_size=2),
], ids=["Affine.forward", "predict", "loss", "gradient", "fit"])
def test_values_beyond_float32_are_named_not_turned_into_inf(call):
    x = X.copy()
    x[1, 2] = 3.4e39     # finite in float64
    with pytest.raises(ValueError, match=BEYOND_FLOAT32) as info:
        call(x)
    assert info.value.__cause__ is None
    assert net(np.float64).predict(x).dtype == np.float64   # fine for a float64 net


# ---------------------------------------------------------------------------------------------
# accepted input: converted as documented, and equal to the plain case


@pytest.fixture(params=["kernels", "reference"])
def backend(request):
    with use_backend(request.param):
        yield request.param


@pytest.mark.parametrize("kind", [np.int64, np.uint8, np.int16, np.float16])
def test_integer_and_float16_x_are_converted_to_the_weights_dtype(backend, kind):
    x = np.array([[1, 0, 3, 2], [0, 4, 1, 1], [2, 2, 0, 1]], dtype=kind)
    t = np.array([0, 2, 1], dtype=np.uint8)      # the loader's label dtype
    for dtype in (np.float32, np.float64):
        converted = x.astype(dtype)
        a, b = net(dtype), net(dtype)
        assert a.predict(x).dtype == dtype
        np.testing.assert_array_equal(a.predict(x), b.predict(converted))
        assert a.loss(x, t) == b.loss(converted, t)
        ga, gb = a.gradient(x, t), b.gradient(converted, t)
        for key in ga:
            assert ga[key].dtype == dtype
            np.testing.assert_array_equal(ga[key], gb[key])
        assert a.accuracy(x, t) == b.accuracy(converted, t.astype(np.int64))
        assert all(p.dtype == dtype for p in a.params.values())   # weights are never cast
    for layer in (Relu, Sigmoid, Tanh):          # no weights: anything but float32/64 -> float64
        out = layer().forward(x)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, layer().forward(x.astype(np.float64)))


@pytest.mark.filterwarnings("ignore:fit. x_train holds whole numbers")   # the data here are 4 * XT rounded
@pytest.mark.parametrize("kind", [np.int32, np.float16])
def test_fit_converts_integer_and_float16_x(kind):
    x = np.round(XT * 4).astype(kind)
    results = []
    for data in (x, x.astype(np.float32)):
        n = net(np.float32)
        fit(n, data, TT.astype(np.int8), iters=7, batch_size=6, seed=3)
        results.append(n.params)
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])


def _layouts(x):
    """x as a read-only array, a strided view, a Fortran-ordered copy and a transposed view."""
    ro = x.copy()
    ro.flags.writeable = False
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), x.dtype)
    wide[:, ::2] = x
    return {"read-only": ro, "strided": wide[:, ::2], "fortran": np.asfortranarray(x),
            "transposed view": np.ascontiguousarray(x.T).T}


@pytest.mark.parametrize("layout", ["read-only", "strided", "fortran", "transposed view"])
def test_noncontiguous_and_readonly_inputs_give_the_same_results(backend, layout):
    x = np.random.default_rng(5).standard_normal((6, 4))
    t = np.array([0, 1, 2, 2, 1, 0])
    xv = _layouts(x)[layout]
    tv = readonly(t) if layout == "read-only" else np.repeat(t, 2)[::2]
    assert not (xv.flags.writeable and xv.flags.c_contiguous)
    a, b = net(), net()
    np.testing.assert_array_equal(a.predict(xv), b.predict(x))
    assert a.loss(xv, tv) == b.loss(x, t)
    assert a.accuracy(xv, tv) == b.accuracy(x, t)
    ga, gb = a.gradient(xv, tv), b.gradient(x, t)
    for key in ga:
        np.testing.assert_array_equal(ga[key], gb[key])
    for layer in (Relu, Sigmoid, Tanh):
        la, lb = layer(), layer()
        np.testing.assert_array_equal(la.forward(xv), lb.forward(x))
        np.testing.assert_array_equal(la.backward(xv), lb.backward(x))
    sa, sb = SoftmaxWithLoss(), SoftmaxWithLoss()
    assert sa.forward(xv[:, :3], tv) == sb.forward(x[:, :3], t)
    np.testing.assert_array_equal(sa.backward(), sb.backward())
    aff_a, aff_b = Affine(a.params["W1"], a.params["b1"]), Affine(b.params["W1"], b.params["b1"])
    np.testing.assert_array_equal(aff_a.forward(xv), aff_b.forward(x))
    np.testing.assert_array_equal(aff_a.backward(np.ones((6, 5))), aff_b.backward(np.ones((6, 5))))
    np.testing.assert_array_equal(aff_a.dW, aff_b.dW)
    fa, fb = fit(a, xv, tv, xv, tv, iters=4, batch_size=3, seed=2), fit(b, x, t, x, t, iters=4, batch_size=3, seed=2)
    np.testing.assert_array_equal(fa.loss, fb.loss)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    if layout == "read-only":
        assert not xv.flags.writeable   # nothing made it writable behind the caller's back


# ---------------------------------------------------------------------------------------------
# a refused call leaves the layer as it was


W_FIXED = np.array([[1.5, -0.5], [0.25, 2.0], [-1.0, 0.75]])
B_FIXED = np.array([0.1, -0.2])


def _affine_refusals():
    # (NaN or Inf in x or W is no refusal: it is computed on as NumPy would, see test_layers.py)
    return {
        "features mismatch": lambda layer, x: layer.forward(np.ones((4, 5))),
        "bool x": lambda layer, x: layer.forward(x > 0),
        "empty x": lambda layer, x: layer.forward(x[:0]),
    }


AFFINE_REFUSALS = _affine_refusals()


@pytest.mark.parametrize("refusal", list(AFFINE_REFUSALS))
def test_affine_keeps_no_partial_state_after_a_refused_forward(backend, refusal):
    rng = np.random.default_rng(8)
    W, b = W_FIXED.copy(), B_FIXED.copy()
    x = rng.standard_normal((2, 3))
    dout = rng.standard_normal((2, 2))
    layer, twin = Affine(W, b), Affine(W.copy(), b.copy())
    layer.forward(x)
    twin.forward(x)
    with pytest.raises((ValueError, TypeError)):
        AFFINE_REFUSALS[refusal](layer, x)
    # backward still belongs to the last valid forward
    np.testing.assert_array_equal(layer.backward(dout), twin.backward(dout))
    np.testing.assert_array_equal(layer.dW, twin.dW)
    np.testing.assert_array_equal(layer.db, twin.db)


@pytest.mark.parametrize("refusal", list(AFFINE_REFUSALS))
def test_affine_refused_first_forward_leaves_nothing_to_backward(refusal):
    rng = np.random.default_rng(9)
    layer = Affine(W_FIXED.copy(), B_FIXED.copy())
    with pytest.raises((ValueError, TypeError)):
        AFFINE_REFUSALS[refusal](layer, rng.standard_normal((2, 3)))
    with pytest.raises(RuntimeError, match=r"Affine.backward: call forward first"):
        layer.backward(np.ones((2, 2)))


@pytest.mark.parametrize("refusal, call", [
    ("label out of range", lambda s: s.forward(np.ones((4, 3)), np.array([0, 1, 2, 3]))),
    ("NaN one-hot label", lambda s: s.forward(np.ones((4, 3)), with_nan(np.eye(3)[[0, 1, 2, 0]], (3, 0)))),
    ("one-hot of the wrong width", lambda s: s.forward(np.ones((4, 3)), np.eye(4))),
])
def test_softmax_with_loss_keeps_no_partial_state(backend, refusal, call):
    x, t = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]), np.array([1, 2])
    layer, twin = SoftmaxWithLoss(), SoftmaxWithLoss()
    layer.forward(x, t)
    twin.forward(x, t)
    with pytest.raises(ValueError):
        call(layer)
    assert layer.loss == twin.loss and layer.t is t
    np.testing.assert_array_equal(layer.backward(), twin.backward())
    fresh = SoftmaxWithLoss()
    with pytest.raises(ValueError):
        call(fresh)
    with pytest.raises(RuntimeError, match=r"call forward first"):
        fresh.backward()


@pytest.mark.parametrize("layer_type", [Relu, Sigmoid, Tanh])
def test_activations_keep_no_partial_state(backend, layer_type):
    x = np.array([[-1.0, 0.5], [2.0, -0.25]])
    layer, twin = layer_type(), layer_type()
    layer.forward(x)
    twin.forward(x)
    with pytest.raises(TypeError):
        layer.forward(np.ones((3, 3), dtype=np.complex128))
    np.testing.assert_array_equal(layer.backward(np.ones((2, 2))), twin.backward(np.ones((2, 2))))
