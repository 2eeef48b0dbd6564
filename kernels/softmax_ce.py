"""Softmax and cross-entropy fused: one pass gives the loss and the probabilities y.

The loss is computed as log(sum exp(x - max)) + (max - x[t]): exp never overflows, log never sees
0, and nothing cancels, so logits of +-1e4 (or 1e30) give the exact loss. Sums run in float64.
"""
import numpy as np

from ._config import jit, jit_borrowing, jit_exact


@jit_exact
def cross_entropy_term(logsum, m, x_c):
    """logsumexp(x) - x_c = log(sum exp(x - m)) + (m - x_c), in this order (no reassociation)."""
    return logsum + (m - x_c)


@jit_borrowing
def _softmax_rows(x, y, maxes, logsums):
    """y[i] = softmax(x[i]); maxes[i] = max x[i]; logsums[i] = log(sum exp(x[i] - max)) (float64).

    The loss needs logsumexp(x[i]) - x[i, c] = logsums[i] + (maxes[i] - x[i, c]): subtracting
    first keeps it exact when the logits are huge (1e30 + log 10 would round to 1e30).
    """
    n, c = x.shape
    for i in range(n):
        m = x[i, 0]
        for j in range(1, c):
            if x[i, j] > m:
                m = x[i, j]
        s = np.float64(0.0)  # (a bare 0.0 would stay float32 when NUMBA_DISABLE_JIT=1)
        for j in range(c):
            e = np.exp(x[i, j] - m)
            y[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(c):
            y[i, j] = y[i, j] * inv
        maxes[i] = m
        logsums[i] = np.log(s)


@jit
def softmax_cross_entropy(x, t):
    """Integer labels t (N,): L = mean_n(logsumexp(x_n) - x_n[t_n]); y = softmax(x).   -> (L, y)"""
    n = x.shape[0]
    y = np.empty(x.shape, x.dtype)
    maxes, logsums = np.empty(n, np.float64), np.empty(n, np.float64)
    _softmax_rows(x, y, maxes, logsums)
    total = 0.0
    for i in range(n):
        total += cross_entropy_term(logsums[i], maxes[i], x[i, t[i]])
    return total / n, y


@jit
def softmax_cross_entropy_backward(y, t):
    """dx = (y - onehot(t)) / N."""
    dx = np.empty(y.shape, y.dtype)
    _backward_rows_into(y, t, 0, y.shape[0], y.shape[0], dx)
    return dx


@jit_borrowing
def _backward_rows_into(y, t, a, b, n, dx):
    """Rows a:b of softmax_cross_entropy_backward's dx for a batch of n rows, into dx."""
    inv = 1.0 / n
    for i in range(a, b):
        for j in range(y.shape[1]):
            dx[i, j] = y[i, j] * inv
        dx[i, t[i]] = (y[i, t[i]] - 1) * inv


@jit
def softmax_cross_entropy_onehot(x, t):
    """One-hot labels t (N, C): L = mean_n sum_c t_nc (logsumexp(x_n) - x_nc).   -> (L, y)"""
    n, c = x.shape
    y = np.empty(x.shape, x.dtype)
    maxes, logsums = np.empty(n, np.float64), np.empty(n, np.float64)
    _softmax_rows(x, y, maxes, logsums)
    total = 0.0
    for i in range(n):
        for j in range(c):
            if t[i, j] != 0:
                total += t[i, j] * cross_entropy_term(logsums[i], maxes[i], x[i, j])
    return total / n, y


@jit
def softmax_cross_entropy_onehot_backward(y, t):
    """dx = (y - t) / N."""
    n, c = y.shape
    dx = np.empty((n, c), y.dtype)
    inv = 1.0 / n
    for i in range(n):
        for j in range(c):
            dx[i, j] = (y[i, j] - t[i, j]) * inv
    return dx
