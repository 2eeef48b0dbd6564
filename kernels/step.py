"""Whole-net kernels: SGD steps over many mini-batches, and prediction, in compiled code.

The net is a stack of affine layers (weights[i] (D_i, D_i+1), biases[i]) with one activation
between them (0 relu, 1 sigmoid, 2 tanh) and softmax cross-entropy on top; weights and biases
arrive as tuples of the caller's arrays (C-contiguous, one dtype), which are updated in place.
Tuples, not numba typed Lists: a typed List is compiled anew in every process (~1 s per start),
while a function taking a tuple is compiled once per number of layers and then cached.
Every helper a fused kernel calls lives in this file (Numba's cache does not notice when a callee
in another file changes), except the pieces shared with the layer kernels
(activations.sigmoid_scalar, tanh_scalar, softmax_ce.cross_entropy_term, _softmax_rows): after
editing one of those, clear the __pycache__ folders of kernels/.
"""
import numba
import numpy as np
from numba import types
from numba.np.linalg import ensure_blas

from ._config import jit
from .activations import sigmoid_scalar, tanh_scalar  # small formulas: see the caching note above
from .softmax_ce import _softmax_rows, cross_entropy_term

RELU, SIGMOID, TANH = 0, 1, 2

# BLAS gemm through the entry point Numba's own np.dot uses (SciPy's cython_blas underneath),
# declared with alpha/beta and transpose flags, which np.dot does not expose. Being a named
# external symbol (not a ctypes pointer), it keeps the kernels cacheable.
ensure_blas()
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char,             # kind ('s' or 'd'), transa, transb
    types.intp, types.intp, types.intp,             # m, n, k
    types.voidptr, types.voidptr, types.intp,       # alpha, a, lda
    types.voidptr, types.intp,                      # b, ldb
    types.voidptr, types.voidptr, types.intp))      # beta, c, ldc
_KIND_S, _KIND_D, _N, _T = ord("s"), ord("d"), ord("n"), ord("t")


@jit
def _activate(h, activation):
    """h = f(h) in place."""
    n, m = h.shape
    for i in range(n):
        for j in range(m):
            v = h[i, j]
            if activation == RELU:
                h[i, j] = 0 if v <= 0 else v  # NaN stays NaN, as in the book's mask (x <= 0)
            elif activation == SIGMOID:
                h[i, j] = sigmoid_scalar(v)
            else:
                h[i, j] = tanh_scalar(v)


@jit
def _activation_backward(d, y, activation):
    """d *= f'(x), written in terms of the forward output y = f(x), in place."""
    n, m = d.shape
    for i in range(n):
        for j in range(m):
            v = y[i, j]
            if activation == RELU:
                if v <= 0:
                    d[i, j] = 0
            elif activation == SIGMOID:
                d[i, j] *= v * (1 - v)
            else:
                d[i, j] *= 1 - v * v


def _gemm_numpy(a, trans_a, b, trans_b, c, alpha, beta):
    """_gemm for NUMBA_DISABLE_JIT=1 runs, where the BLAS symbol cannot be called from Python."""
    product = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
    c[...] = product if beta == 0 else product + beta * c  # like BLAS, beta = 0 never reads c


@jit
def _gemm(a, trans_a, b, trans_b, c, alpha, beta):
    """c = alpha * op(a) @ op(b) + beta * c, row-major C-contiguous arrays, op(m) = m.T if trans.

    BLAS sees a row-major matrix as its transpose in column-major order, so it is asked for
    c.T = op(b).T @ op(a).T. ``beta = 1`` lets one call apply an SGD update in place
    (W = W - lr * x.T @ dout) without a gradient buffer; the transposes cost no copies.
    """
    k = a.shape[0] if trans_a else a.shape[1]
    scalars = np.empty(2, c.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    _xxgemm(_KIND_S if c.itemsize == 4 else _KIND_D,
            _T if trans_b else _N, _T if trans_a else _N,
            c.shape[1], c.shape[0], k,
            scalars[0:].ctypes, b.ctypes, b.shape[1], a.ctypes, a.shape[1],
            scalars[1:].ctypes, c.ctypes, c.shape[1])


if numba.config.DISABLE_JIT:
    _gemm = _gemm_numpy  # noqa: F811


@jit
def _affine_into(h, W, b, out):
    """out = h @ W + b (bias first, then the product accumulated onto it)."""
    n, m = out.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = b[j]
    _gemm(h, False, W, False, out, 1.0, 1.0)


@jit
def predict_labels(x, weights, biases, activation):
    """argmax_c of the net's scores for each row of x (N, D) -> (N,) int64."""
    n = x.shape[0]
    last = len(weights) - 1
    labels = np.empty(n, np.int64)
    chunk = 2048  # bounds the memory of the hidden activations on large x
    for start in range(0, n, chunk):
        h = np.ascontiguousarray(x[start:start + chunk])
        for layer in range(last + 1):
            out = np.empty((h.shape[0], weights[layer].shape[1]), h.dtype)
            _affine_into(h, weights[layer], biases[layer], out)
            if layer < last:
                _activate(out, activation)
            h = out
        for i in range(h.shape[0]):
            best = 0
            for j in range(1, h.shape[1]):
                if h[i, j] > h[i, best]:
                    best = j
            labels[start + i] = best
    return labels


# The stages of one SGD step, in order. sgd_steps runs them all; ``fastbp bench --profile`` runs
# prefixes of them (_sgd_step_stages with upto < BIASES) to measure what each stage adds.
GATHER, FORWARD, LOSS, BACKWARD, WEIGHTS, BIASES = 1, 2, 3, 4, 5, 6


@jit
def _gather_rows(x, rows, out):
    """out[i] = x[rows[i]]. Element loops: a row-slice copy (out[i, :] = x[r]) measured 2x slower."""
    for i in range(out.shape[0]):
        r = rows[i]
        for j in range(out.shape[1]):
            out[i, j] = x[r, j]


@jit
def _softmax_ce_gradient(scores, t, rows, d, maxes, logsums):
    """d = (softmax(scores) - onehot(t[rows])) / N; returns the mean cross-entropy.

    The softmax rows are the layer kernel's (softmax_ce._softmax_rows); maxes and logsums are
    (N,) float64 scratch."""
    size, classes = scores.shape
    _softmax_rows(scores, d, maxes, logsums)
    inv = 1.0 / size
    total = 0.0
    for i in range(size):
        label = t[rows[i]]
        total += cross_entropy_term(logsums[i], maxes[i], scores[i, label])
        for j in range(classes):
            d[i, j] = d[i, j] * inv
        d[i, label] -= inv
    return total * inv


@jit
def _sgd_step_stages(x, t, batches, weights, biases, activation, lr, losses, upto):
    """sgd_steps doing only the stages GATHER..upto of every step (upto = BIASES: all of them)."""
    last = len(weights) - 1
    steps, size = batches.shape
    dtype = x.dtype
    # acts[0] is the gathered batch, acts[i + 1] the output of layer i; douts[i] its gradient.
    acts = [np.empty((size, x.shape[1]), dtype)]
    douts = []
    for layer in range(last + 1):
        acts.append(np.empty((size, weights[layer].shape[1]), dtype))
        douts.append(np.zeros((size, weights[layer].shape[1]), dtype))
    maxes, logsums = np.empty(size, np.float64), np.empty(size, np.float64)
    for s in range(steps):
        rows = batches[s]
        _gather_rows(x, rows, acts[0])
        if upto >= FORWARD:
            for layer in range(last + 1):
                _affine_into(acts[layer], weights[layer], biases[layer], acts[layer + 1])
                if layer < last:
                    _activate(acts[layer + 1], activation)
        if upto >= LOSS:
            losses[s] = _softmax_ce_gradient(acts[last + 1], t, rows, douts[last], maxes, logsums)
        if upto < BACKWARD:
            continue
        for layer in range(last, -1, -1):
            d = douts[layer]
            W, b = weights[layer], biases[layer]
            if layer > 0:  # dx with the weights of this step, before the update
                _gemm(d, False, W, True, douts[layer - 1], 1.0, 0.0)
            if upto >= WEIGHTS:
                _gemm(acts[layer], True, d, False, W, -lr, 1.0)  # W -= lr * x.T @ d, in one call
            if upto >= BIASES:
                for j in range(W.shape[1]):
                    db = d[0, j]
                    for i in range(1, size):
                        db += d[i, j]
                    b[j] -= lr * db
            if layer > 0:
                _activation_backward(douts[layer - 1], acts[layer], activation)


@jit
def sgd_steps(x, t, batches, weights, biases, activation, lr, losses):
    """One SGD step per row of batches (S, B); losses[s] = batch loss before the update.

    Step s: forward on rows batches[s] of x (M, D) with labels t (M,), softmax-CE, backward,
    W -= lr * dW and b -= lr * db for every layer, in place.
    """
    _sgd_step_stages(x, t, batches, weights, biases, activation, lr, losses, BIASES)
