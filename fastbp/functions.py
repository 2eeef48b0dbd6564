"""The book's ``common/functions.py`` names: activation functions, softmax and the losses of its
chapters 3 and 4, with the same signatures and results.

``cross_entropy_error`` is the book's formula, -mean_n log(y[n, t_n] + 1e-7), whatever
``fastbp.set_loss`` says (that switch is for ``SoftmaxWithLoss``). Inputs are checked like
everywhere in fastbp (real numbers; labels as class indices or one-hot rows), but NaN and Inf
go through as they would in NumPy: a diverging training run must not stop here.
"""
import numbers

import numpy as np

from . import _checks
from .backend import ops

__all__ = ["identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad",
           "softmax", "sum_squared_error", "cross_entropy_error", "softmax_loss"]

BOOK_LOG_EPS = 1e-7  # the book adds this to y before the log, so that log(0) cannot occur


def _real(name, x):
    """x as an ndarray of real numbers (0-d for a number), without changing its dtype."""
    if isinstance(x, np.ndarray):
        a = x
    elif isinstance(x, (list, tuple, numbers.Real, np.generic)):
        a = np.asarray(x)
    else:
        raise TypeError(f"{name}: expected a number or a numpy array of numbers, got {_checks.describe(x)}")
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers (float or integer dtype), got dtype {a.dtype}")
    return a


def identity_function(x):
    """y = x (the output layer's activation for regression)."""
    return x


def step_function(x):
    """y = 1 where x > 0, else 0, as integers."""
    return np.array(_real("step_function: x", x) > 0, dtype=int)


def sigmoid(x):
    """y = 1 / (1 + exp(-x)), element-wise, computed without overflow; a number gives a number."""
    a = _real("sigmoid: x", x)
    y = ops().sigmoid_forward(_checks.as_float_array("sigmoid: x", a, None)).reshape(a.shape)
    return y[()] if a.ndim == 0 else y


def sigmoid_grad(x):
    """dy/dx of the sigmoid at x: (1 - sigmoid(x)) * sigmoid(x)."""
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    """y = max(0, x), element-wise."""
    return np.maximum(0, _real("relu: x", x))


def relu_grad(x):
    """1 where x >= 0, else 0 (the book counts x = 0 as active), in x's dtype."""
    a = _real("relu_grad: x", x)
    grad = np.zeros_like(a)
    grad[a >= 0] = 1
    return grad


def softmax(x):
    """y = exp(x - max x) / sum exp(x - max x) along the last axis (a row per sample)."""
    a = _real("softmax: x", x)
    if a.ndim and a.shape[-1] == 0:
        raise ValueError(f"softmax: x: expected an array with at least one value along its last "
                         f"axis, got shape {a.shape}")
    e = np.exp(a - np.max(a, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def sum_squared_error(y, t):
    """E = 0.5 * sum (y - t)^2."""
    y, t = _real("sum_squared_error: y", y), _real("sum_squared_error: t", t)
    if y.shape != t.shape:
        raise ValueError(f"sum_squared_error: y and t must have the same shape, got {y.shape} and {t.shape}")
    return 0.5 * np.sum((y - t) ** 2)


def _label_indices(name, y, t):
    """(y as (N, C), class index per row) from the book's accepted forms of y and t."""
    y = _real(f"{name}: y", y)
    _checks.check_ndim(f"{name}: y", y, (1, 2))
    _checks.check_nonempty(f"{name}: y", y)
    if y.ndim == 1:  # one sample: t is its class index or its one-hot row
        y = y.reshape(1, -1)
        t = np.asarray(t)
        t = t.reshape(1, -1) if t.size == y.size and y.size > 1 else t.reshape(-1)
    kind, labels = _checks.as_labels(f"{name}: t", t, y.shape[0], y.shape[1])
    return y, (np.argmax(labels, axis=1) if kind == "onehot" else labels)


def _cross_entropy_of_rows(y, idx):
    """-(1/N) sum_n log(y[n, idx_n] + 1e-7), y (N, C), idx (N,) valid class indices."""
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), idx] + BOOK_LOG_EPS)) / batch_size


def cross_entropy_error(y, t):
    """E = -(1/N) sum_n log(y[n, t_n] + 1e-7) for probabilities y (N, C) or (C,) and labels t
    (class indices, or one-hot rows as y's shape) — the book's formula, 1e-7 included."""
    return _cross_entropy_of_rows(*_label_indices("cross_entropy_error", y, t))


def softmax_loss(X, t):
    """cross_entropy_error(softmax(X), t)."""
    return cross_entropy_error(softmax(X), t)
