"""Softmax and cross-entropy fused: one pass gives the loss and the probabilities y.

The loss is computed as logsumexp(x) - x[t] with the row maximum subtracted first, so exp never
overflows and log never sees 0: logits of +-1e4 give a finite loss. Sums run in float64.
"""
import numpy as np

from ._config import jit


@jit
def _softmax_rows(x, y, lse):
    """y[i] = softmax(x[i]); lse[i] = log(sum exp(x[i] - max)) + max (float64)."""
    n, c = x.shape
    for i in range(n):
        m = x[i, 0]
        for j in range(1, c):
            if x[i, j] > m:
                m = x[i, j]
        s = 0.0
        for j in range(c):
            e = np.exp(x[i, j] - m)
            y[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(c):
            y[i, j] = y[i, j] * inv
        lse[i] = np.log(s) + m


@jit
def softmax_cross_entropy(x, t):
    """Integer labels t (N,): L = mean_n(logsumexp(x_n) - x_n[t_n]); y = softmax(x).   -> (L, y)"""
    n = x.shape[0]
    y = np.empty(x.shape, x.dtype)
    lse = np.empty(n, np.float64)
    _softmax_rows(x, y, lse)
    total = 0.0
    for i in range(n):
        total += lse[i] - x[i, t[i]]
    return total / n, y


@jit
def softmax_cross_entropy_backward(y, t):
    """dx = (y - onehot(t)) / N."""
    n, c = y.shape
    dx = np.empty((n, c), y.dtype)
    inv = 1.0 / n
    for i in range(n):
        for j in range(c):
            dx[i, j] = y[i, j] * inv
        dx[i, t[i]] = (y[i, t[i]] - 1) * inv
    return dx


@jit
def softmax_cross_entropy_onehot(x, t):
    """One-hot labels t (N, C): L = mean_n sum_c t_nc (logsumexp(x_n) - x_nc).   -> (L, y)"""
    n, c = x.shape
    y = np.empty(x.shape, x.dtype)
    lse = np.empty(n, np.float64)
    _softmax_rows(x, y, lse)
    total = 0.0
    for i in range(n):
        for j in range(c):
            if t[i, j] != 0:
                total += t[i, j] * (lse[i] - x[i, j])
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
