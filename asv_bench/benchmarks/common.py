"""Seeded data and helpers shared by every benchmark file.

Everything here is deterministic (fixed seeds) so two commits are timed on identical inputs.
Data are MNIST-shaped: 784 inputs, 10 classes, pixel values in [0, 1] with about 81% exact zeros
(MNIST's share), in float32 or float64.

The data builders are memoised per process: asv re-runs ``setup`` before every timed sample, and
with the memo that costs a dict look-up instead of regenerating the arrays (bench_kernels.py
memoises each kernel's arguments and warm-up call the same way).

Nothing here is named ``time_*``/``track_*``/``peakmem_*``/``timeraw_*``: asv would run it.
"""
import functools

import numpy as np

import fastbp
from fastbp.kernels.step import plain_sgd
import fastbp.reference

N_IN = 784          # MNIST pixels
N_CLASSES = 10
HIDDEN = 50         # the book's TwoLayerNet(784, 50, 10)
BATCH = 100         # the book's batch size
LR = 0.1            # the book's learning rate

BACKENDS = ["reference", "kernels"]
DTYPES = {"float32": np.float32, "float64": np.float64}
RELU = 0            # activation codes of fastbp.kernels.step
SGD_STEPS = 5       # SGD steps per sgd_steps call in the kernel benchmarks
TRAIN_ROWS = 2000   # rows of the training set sgd_steps draws its batches from

# Each class lights ~20% of the pixels and an image keeps 90% of its class's pixels plus 1% noise:
# 1 - (0.2 * 0.9 + 0.8 * 0.01) = 81.2% zeros. Half the lit pixels are saturated (1.0) like MNIST's
# strokes, the rest in (0.05, 1).
_LIT, _KEEP, _NOISE = 0.20, 0.90, 0.01


def rng(seed=0):
    return np.random.default_rng(seed)


@functools.lru_cache(maxsize=None)
def _prototypes():
    return rng(20240).random((N_CLASSES, N_IN)) < _LIT


@functools.lru_cache(maxsize=None)
def mnist_like(n, dtype="float32", seed=0):
    """(x (n, 784) in [0, 1], ~81% zeros, t (n,) int64 labels 0..9). Memoised: do not modify."""
    r = rng(seed)
    t = r.integers(0, N_CLASSES, size=n).astype(np.int64)
    lit = (_prototypes()[t] & (r.random((n, N_IN)) < _KEEP)) | (r.random((n, N_IN)) < _NOISE)
    values = np.where(r.random((n, N_IN)) < 0.5, 1.0, r.uniform(0.05, 1.0, (n, N_IN)))
    return np.where(lit, values, 0.0).astype(DTYPES[dtype]), t


def onehot(t, dtype="float32"):
    """One-hot rows (len(t), 10) in ``dtype``, as the book's load_mnist(one_hot_label=True)."""
    return np.eye(N_CLASSES, dtype=DTYPES[dtype])[t]


@functools.lru_cache(maxsize=None)
def mnist_onehot(n, dtype="float32", seed=0):
    x, t = mnist_like(n, dtype, seed)
    return x, onehot(t, dtype)


def net_params(sizes, dtype, seed=1):
    """He-initialised (weights, biases) as tuples of arrays, what fastbp's whole-net kernels take."""
    r = rng(seed)
    dt = DTYPES[dtype]
    ws = tuple((r.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dt)
               for a, b in zip(sizes, sizes[1:]))
    bs = tuple(np.zeros(b, dt) for b in sizes[1:])
    return ws, bs


def make_net(spec, dtype="float32", seed=0):
    """A net from a spec "784-50-10" (the book's TwoLayerNet) or "784-256-128-10" (MultiLayerNet).

    The nets draw their weights from NumPy's global generator, like the book's: seeded here.
    """
    sizes = [int(s) for s in spec.split("-")]
    np.random.seed(seed)
    if len(sizes) == 3:
        return fastbp.TwoLayerNet(*sizes, dtype=DTYPES[dtype])
    return fastbp.MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], dtype=DTYPES[dtype])


def parse_shape(shape):
    """"100x50" -> (batch 100, hidden 50)."""
    batch, hidden = shape.split("x")
    return int(batch), int(hidden)


# --- Arguments for every kernel of fastbp.TWINS -------------------------------------------------
# KERNEL_CASES: name -> (group, maker). ``group`` picks the benchmark class (and so the sizes) in
# bench_kernels.py; ``maker(r, n, h, dtype)`` returns the kernel's arguments for batch n and width h
# (the hidden width for affine and whole-net kernels, the class count for softmax, the row width
# for element-wise kernels). bench_kernels.py checks at import that this covers fastbp.TWINS, so a
# new kernel without a benchmark fails `asv check`.

def _normal(r, shape, dtype, scale=1.0):
    return (scale * r.standard_normal(shape)).astype(DTYPES[dtype])


def _sgd_args(r, n, h, dtype):
    x, t = mnist_like(TRAIN_ROWS, dtype)
    ws, bs = net_params([N_IN, h, N_CLASSES], dtype)
    batches = r.integers(0, TRAIN_ROWS, size=(SGD_STEPS, n)).astype(np.int64)
    return x, t, batches, ws, bs, RELU, plain_sgd(LR, ws, bs), np.zeros(SGD_STEPS)


def _csr(n, dtype):
    """The CSR triple of n MNIST-like rows (made by the reference twin)."""
    return fastbp.reference.compress_rows(mnist_like(n, dtype)[0])


def _sgd_csr_args(r, n, h, dtype):
    x, t = mnist_like(TRAIN_ROWS, dtype)
    ws, bs = net_params([N_IN, h, N_CLASSES], dtype)
    batches = r.integers(0, TRAIN_ROWS, size=(SGD_STEPS, n)).astype(np.int64)
    return (*fastbp.reference.compress_rows(x), t, batches, ws, bs, RELU, plain_sgd(LR, ws, bs),
            np.zeros(SGD_STEPS))


def _optimizer_case(states, *hyper):
    """An optimizer kernel's arguments for the flattened parameters of a 784-h-10 net: params,
    grads, ``states`` state tuples, then the hyper-parameters. (The batch size does not apply.)"""
    def make(r, n, h, dtype):
        ws, bs = net_params([N_IN, h, N_CLASSES], dtype)
        params = tuple(a.copy().reshape(-1) for a in (ws[0], bs[0], ws[1], bs[1]))
        grads = tuple(_normal(r, p.shape, dtype, 0.01) for p in params)
        state = [tuple(np.zeros_like(p) for p in params) for _ in range(states)]
        return (params, grads, *state, *hyper)
    return make


def _batchnorm_args(r, n, h, dtype):
    x = _normal(r, (n, h), dtype, 2.0)
    return (x, np.ones(h, DTYPES[dtype]), np.zeros(h, DTYPES[dtype]), np.zeros(h, DTYPES[dtype]),
            np.ones(h, DTYPES[dtype]))


def _batchnorm_backward_args(r, n, h, dtype):
    x, gamma, beta, mean, var = _batchnorm_args(r, n, h, dtype)
    _, xc, xn, std, _, _ = fastbp.reference.batchnorm_forward(x, gamma, beta, mean, var, 0.9)
    return _normal(r, (n, h), dtype, 0.01), gamma, xc, xn, std


KERNEL_CASES = {
    "dropout_forward": ("elementwise", lambda r, n, h, dt: (
        _normal(r, (n, h), dt), r.random((n, h)), 0.5)),
    "dropout_backward": ("elementwise", lambda r, n, h, dt: (
        _normal(r, (n, h), dt), r.random((n, h)) > 0.5)),
    "batchnorm_forward": ("elementwise", lambda r, n, h, dt: (*_batchnorm_args(r, n, h, dt), 0.9)),
    "batchnorm_forward_inference": ("elementwise", _batchnorm_args),
    "batchnorm_backward": ("elementwise", _batchnorm_backward_args),
    "sgd_update": ("net", _optimizer_case(0, LR)),
    "momentum_update": ("net", _optimizer_case(1, 0.01, 0.9)),
    "nesterov_update": ("net", _optimizer_case(1, 0.01, 0.9)),
    "adagrad_update": ("net", _optimizer_case(1, 0.01)),
    "rmsprop_update": ("net", _optimizer_case(1, 0.01, 0.99)),
    "adam_update": ("net", _optimizer_case(2, 0.001, 0.9, 0.999, 10)),
    "affine_forward": ("affine", lambda r, n, h, dt: (
        mnist_like(n, dt)[0], _normal(r, (N_IN, h), dt, 0.05), _normal(r, h, dt, 0.1))),
    "affine_backward": ("affine", lambda r, n, h, dt: (
        mnist_like(n, dt)[0], _normal(r, (N_IN, h), dt, 0.05), _normal(r, (n, h), dt, 0.01))),
    "affine_backward_params": ("affine", lambda r, n, h, dt: (
        mnist_like(n, dt)[0], _normal(r, (n, h), dt, 0.01))),
    "relu_forward": ("elementwise", lambda r, n, h, dt: (_normal(r, (n, h), dt),)),
    "relu_backward": ("elementwise", lambda r, n, h, dt: (
        _normal(r, (n, h), dt), r.standard_normal((n, h)) <= 0)),
    "sigmoid_forward": ("elementwise", lambda r, n, h, dt: (_normal(r, (n, h), dt, 4.0),)),
    "sigmoid_backward": ("elementwise", lambda r, n, h, dt: (
        _normal(r, (n, h), dt), r.random((n, h)).astype(DTYPES[dt]))),
    "tanh_forward": ("elementwise", lambda r, n, h, dt: (_normal(r, (n, h), dt, 2.0),)),
    "tanh_backward": ("elementwise", lambda r, n, h, dt: (
        _normal(r, (n, h), dt), r.uniform(-1, 1, (n, h)).astype(DTYPES[dt]))),
    "softmax_cross_entropy": ("softmax", lambda r, n, c, dt: (
        _normal(r, (n, c), dt, 4.0), r.integers(0, c, size=n).astype(np.int64))),
    "softmax_cross_entropy_backward": ("softmax", lambda r, n, c, dt: (
        r.dirichlet(np.ones(c), n).astype(DTYPES[dt]), r.integers(0, c, size=n).astype(np.int64))),
    "softmax_cross_entropy_onehot": ("softmax", lambda r, n, c, dt: (
        _normal(r, (n, c), dt, 4.0), onehot(r.integers(0, c, size=n), dt))),
    "softmax_cross_entropy_onehot_backward": ("softmax", lambda r, n, c, dt: (
        r.dirichlet(np.ones(c), n).astype(DTYPES[dt]), onehot(r.integers(0, c, size=n), dt))),
    "predict_labels": ("net", lambda r, n, h, dt: (
        mnist_like(n, dt)[0], *net_params([N_IN, h, N_CLASSES], dt), RELU)),
    "sgd_steps": ("net", _sgd_args),
    "compress_rows": ("affine", lambda r, n, h, dt: (mnist_like(n, dt)[0],)),
    "csr_affine_forward": ("affine", lambda r, n, h, dt: (
        *_csr(n, dt), _normal(r, (N_IN, h), dt, 0.05), _normal(r, h, dt, 0.1))),
    "csr_affine_backward_params": ("affine", lambda r, n, h, dt: (
        *_csr(n, dt), N_IN, _normal(r, (n, h), dt, 0.01))),
    "predict_labels_csr": ("net", lambda r, n, h, dt: (
        *_csr(n, dt), *net_params([N_IN, h, N_CLASSES], dt), RELU)),
    "sgd_steps_csr": ("net", _sgd_csr_args),
    "index_labels": ("softmax", lambda r, n, c, dt: (r.integers(0, c, size=n).astype(np.uint8), c)),
    "onehot_labels": ("softmax", lambda r, n, c, dt: (onehot(r.integers(0, c, size=n), dt),)),
    "net_scores": ("net", lambda r, n, h, dt: (
        mnist_like(n, "float32")[0], *net_params([N_IN, h, N_CLASSES], dt), RELU)),
    "net_loss": ("net", lambda r, n, h, dt: (
        mnist_like(n, "float32")[0], mnist_like(n, "float32")[1], *net_params([N_IN, h, N_CLASSES], dt),
        RELU)),
    "net_gradient": ("net", lambda r, n, h, dt: (
        mnist_like(n, "float32")[0], mnist_like(n, "float32")[1], *net_params([N_IN, h, N_CLASSES], dt),
        RELU)),
    "net_labels": ("net", lambda r, n, h, dt: (
        mnist_like(n, "float32")[0], *net_params([N_IN, h, N_CLASSES], dt), RELU)),
    "net_numerical_gradient": ("numerical", lambda r, n, h, dt: (
        mnist_like(n, dt)[0], mnist_like(n, dt)[1], *net_params([N_IN, h, N_CLASSES], dt), RELU,
        1e-4, False)),
}


def _seed(name):
    return sum(map(ord, name))  # stable across processes, unlike hash()


def kernel_args(name, n, h, dtype):
    """Seeded arguments of kernel ``name``: the same for both backends (the seed is the name's).

    sgd_steps and the optimizer updates write into their arguments (the weights keep training
    from call to call, which does not change the work per call).
    """
    return KERNEL_CASES[name][1](rng(_seed(name)), n, h, dtype)


def switch_backend(name):
    """fastbp.set_backend(name); returns the previous backend, for teardown to restore."""
    previous = fastbp.get_backend()
    fastbp.set_backend(name)
    return previous
