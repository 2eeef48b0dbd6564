"""The numerical gradient and the gradient check: the proof that backprop is right.

``numerical_gradient(f, x)`` is the book's central difference; ``gradient_check(net, x, t)``
compares it with ``net.gradient`` parameter by parameter, as the seeds do.
"""
from dataclasses import dataclass

import numpy as np


def numerical_gradient(f, x, h=1e-4):
    """df/dx by central difference (f(x + h) - f(x - h)) / 2h, one element at a time.

    ``f`` is called with ``x`` (which it may ignore and read through a closure, as the book's
    ``lambda W: net.loss(x, t)`` does); ``x`` is changed in place and restored exactly.
    """
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        got = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"numerical_gradient: x must be a float32 or float64 numpy array (float16 "
                        f"cannot resolve x + h), got {got}")
    if not x.flags.writeable:
        raise ValueError("numerical_gradient: x must be writeable (it is changed in place and "
                         "restored), got a read-only array")
    if x.size == 0:
        raise ValueError(f"numerical_gradient: x must have at least one element, got shape {x.shape}")
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"numerical_gradient: h must be a finite positive step, got {h}")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        idx = it.multi_index
        keep = x[idx]
        x[idx] = keep + h
        f_plus = f(x)
        x[idx] = keep - h
        f_minus = f(x)
        grad[idx] = (f_plus - f_minus) / (2 * h)
        x[idx] = keep
        it.iternext()
    return grad


@dataclass(frozen=True)
class GradCheck:
    """One parameter's comparison of backprop a with the numerical gradient b:
    mean |a - b| (what the seeds print) and max |a - b| / max(max |a|, max |b|)."""
    mean_abs_diff: float
    max_rel_error: float


def gradient_check(net, x, t):
    """{param name: GradCheck} comparing ``net.gradient`` with ``net.numerical_gradient``.

    Use a handful of samples (the book uses 3): the numerical gradient costs two forward passes
    per parameter element.
    """
    if not (callable(getattr(net, "numerical_gradient", None)) and callable(getattr(net, "gradient", None))):
        raise TypeError(f"net: expected a net with gradient and numerical_gradient methods "
                        f"(TwoLayerNet, MultiLayerNet), got {type(net).__name__}")
    numerical = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    report = {}
    for key, num in numerical.items():
        bp = np.asarray(backprop[key], dtype=np.float64)
        num = np.asarray(num, dtype=np.float64)
        diff = np.abs(bp - num)
        scale = max(np.abs(bp).max(), np.abs(num).max(), np.finfo(np.float64).tiny)
        report[key] = GradCheck(float(diff.mean()), float(diff.max() / scale))
    return report
