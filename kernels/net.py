"""Whole-net kernels for the book's API: a net's forward, loss and gradient in one compiled call.

``TwoLayerNet.gradient(x, t)`` in the book runs a dozen NumPy calls through Python per batch;
here the nets hand their weights to one kernel that does the whole pass on the batch's nonzero
lists (kernels/sparse.py) and returns what the book's layers would hold afterwards: every layer's
output, the softmax probabilities, the loss and the gradients. Labels are class indices (the
nets convert checked one-hot rows to indices: the loss and (y - t) / N are the same numbers).

The first layer's input is the caller's x, compressed per call (about a microsecond per 1,000
pixels); a layer large enough (SPLIT_MIN_WEIGHTS) is computed in two column parts, on two cores
when ``threads`` is 2, with the same arithmetic either way (see kernels/step.py).
"""
import numpy as np

from . import sparse
from ._config import jit
from .softmax_ce import softmax_cross_entropy, softmax_cross_entropy_backward
from .sparse import STORE, STORE_RELU, STORE_RELU_MASKED
from .step import (RELU, SPLIT_MIN_WEIGHTS, _activate, _activation_backward, _aligned_rows, _times,
                   _transpose_into)
from .step import _add_outer as _add_outer_parts


@jit
def _input_csr(x, like):
    """CSR of x (N, D) with values of like's dtype (the weights'), and its row slices split at
    column D // 2: (columns, values, lo, mid, hi)."""
    indptr, columns, values = sparse.compress_rows(x)
    n = indptr.size - 1
    lo, mid, hi = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    sparse._row_slices(indptr, columns, np.arange(n), x.shape[1] // 2, lo, mid, hi)
    return columns, values.astype(like.dtype), lo, mid, hi


@jit
def _forward(x, weights, biases, activation, threads, inputs):
    """Every layer's output [h1, ..., scores] for x (N, D); appends each layer's input CSR
    (columns, values, lo, mid, hi) to ``inputs`` for the backward pass."""
    last = len(weights) - 1
    n = x.shape[0]
    dtype = weights[0].dtype
    outputs = []
    columns, values, lo, mid, hi = _input_csr(x, weights[0])
    for layer in range(last + 1):
        W = weights[layer]
        below, width = W.shape
        if layer > 0:
            columns, values, lo, mid, hi = _input_csr(outputs[layer - 1], W)
        inputs.append((columns, values, lo, mid, hi))
        out = np.empty((n, width), dtype)
        epilogue = STORE_RELU if layer < last and activation == RELU else STORE
        _times(lo, mid, hi, columns, values, W, biases[layer], width, out, epilogue, out,
               below * width >= SPLIT_MIN_WEIGHTS, np.empty((2, n, width), dtype), threads)
        if layer < last and activation != RELU:
            _activate(out, activation)
        outputs.append(out)
    return outputs


@jit
def _no_inputs(like):
    """An empty list typed to hold _input_csr's results."""
    inputs = [(np.empty(0, np.int32), np.empty(0, like.dtype), np.empty(0, np.int64),
               np.empty(0, np.int64), np.empty(0, np.int64))]
    inputs.pop()
    return inputs


@jit
def net_scores(x, weights, biases, activation, threads):
    """Every layer's output [h1, ..., scores] of the net for x (N, D)."""
    return _forward(x, weights, biases, activation, threads, _no_inputs(weights[0]))


@jit
def net_loss(x, t, weights, biases, activation, threads):
    """Mean softmax cross-entropy of the net on x (N, D), labels t (N,) int64.
    -> (loss, y = softmax(scores), [h1, ..., scores])"""
    outputs = net_scores(x, weights, biases, activation, threads)
    loss, y = softmax_cross_entropy(outputs[len(outputs) - 1], t)
    return loss, y, outputs


@jit
def net_gradient(x, t, weights, biases, activation, threads):
    """The loss and its gradient with respect to every weight and bias, by backpropagation.
    -> (loss, y, [h1, ..., scores], [dW1, ...], [db1, ...])"""
    inputs = _no_inputs(weights[0])
    outputs = _forward(x, weights, biases, activation, threads, inputs)
    last = len(weights) - 1
    n = x.shape[0]
    loss, y = softmax_cross_entropy(outputs[last], t)
    d = softmax_cross_entropy_backward(y, t)
    no_bias = np.empty(0, y.dtype)
    dWs, dbs = [d[:, :0]], [d[0, :0]]  # typed by their first, dummy element
    dWs.pop()
    dbs.pop()
    for layer in range(last, -1, -1):
        W = weights[layer]
        below, width = W.shape
        columns, values, lo, mid, hi = inputs[layer]
        dW = _aligned_rows(below, width, W)  # zeroed; 64-byte rows for the in-place row updates
        _add_outer_parts(lo, mid, hi, columns, values, d, dW, width, 1.0,
                         below * width >= SPLIT_MIN_WEIGHTS, threads)
        db = np.zeros(width, y.dtype)
        sparse._column_sums_into(d, n, width, width, db, 1.0)
        dWs.append(dW[:, :width])
        dbs.append(db)
        if layer > 0:  # d_below = (d @ W.T) * f'(.)
            WT = _aligned_rows(width, below, W)
            _transpose_into(W, width, WT)
            d_columns, d_values, d_lo, d_mid, d_hi = _input_csr(d, W)
            d_below = np.empty((n, below), y.dtype)
            epilogue = STORE_RELU_MASKED if activation == RELU else STORE
            _times(d_lo, d_mid, d_hi, d_columns, d_values, WT, no_bias, below, d_below, epilogue,
                   outputs[layer - 1], below * width >= SPLIT_MIN_WEIGHTS,
                   np.empty((2, n, below), y.dtype), threads)
            if activation != RELU:
                _activation_backward(d_below, outputs[layer - 1], activation)
            d = d_below
    dWs.reverse()
    dbs.reverse()
    return loss, y, outputs, dWs, dbs
