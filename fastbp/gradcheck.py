"""The numerical gradient and the gradient check: the proof that backprop is right.

``numerical_gradient(f, x)`` is the book's central difference; ``gradient_check(net, x, t)``
compares it with ``net.gradient`` parameter by parameter, as the seeds do, and says which entries
the comparison cannot judge: where a shift of +-h moves a ReLU input across 0, the central difference
straddles the kink and is wrong there while backprop is right.
"""
import contextvars
from dataclasses import dataclass

import numpy as np

from .layers import Relu

# gradient_check's hook (a _Kinks or None): numerical_gradient tells it after each evaluation of f,
# a net's compiled numerical gradient hands it the kinks it found itself
_observer = contextvars.ContextVar("fastbp_numerical_gradient_observer", default=None)


class _Kinks:
    """Which entries of which parameters have a shift of +-h that flips a ReLU."""

    def __init__(self, net):
        layers = getattr(net, "layers", None)
        self.relus = ([layer for layer in layers.values() if isinstance(layer, Relu)]
                      if isinstance(layers, dict) else [])
        self.masks = [layer.mask.copy() for layer in self.relus]   # of the unshifted forward pass
        params = getattr(net, "params", {})
        self.flipped = {id(p): np.zeros(p.shape, bool) for p in params.values()
                        if isinstance(p, np.ndarray)}

    def after_shift(self, param, idx):
        """f was evaluated with param[idx] shifted: compare the ReLU masks with the unshifted."""
        if id(param) in self.flipped and any(not np.array_equal(layer.mask, mask)
                                             for layer, mask in zip(self.relus, self.masks)):
            self.flipped[id(param)][idx] = True

    def add(self, param, flipped):
        """A compiled numerical gradient found these entries (a bool array like param)."""
        if id(param) in self.flipped:
            self.flipped[id(param)] |= flipped


def numerical_gradient(f, x, h=1e-4):
    """df/dx by central difference (f(x + h) - f(x - h)) / 2h, one element at a time.

    ``f`` is called with ``x`` (which it may ignore and read through a closure, as the book's
    ``lambda W: net.loss(x, t)`` does); ``x`` is changed in place and restored exactly, also when
    ``f`` raises (Ctrl-C included).
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
    kinks = _observer.get()
    for idx in np.ndindex(x.shape):
        keep = x[idx]
        try:
            x[idx] = keep + h
            f_plus = f(x)
            if kinks is not None and kinks.relus:
                kinks.after_shift(x, idx)
            x[idx] = keep - h
            f_minus = f(x)
            if kinks is not None and kinks.relus:
                kinks.after_shift(x, idx)
        finally:   # an exception or Ctrl-C in f must not leave x shifted by h
            x[idx] = keep
        grad[idx] = (f_plus - f_minus) / (2 * h)
    return grad


@dataclass(frozen=True)
class GradCheck:
    """One parameter's comparison of backprop a with the numerical gradient b: mean |a - b| over
    all entries (what the seeds print), and max |a - b| / max(max |a|, max |b|) over the entries
    the numerical gradient can judge. ``kinks`` counts the entries left out of that maximum: those
    whose shift by +-h flips a ReLU (an input within h of 0 for some sample), where the central
    difference straddles the kink and is unreliable."""
    mean_abs_diff: float
    max_rel_error: float
    kinks: int = 0


def gradient_check(net, x, t):
    """{param name: GradCheck} comparing ``net.gradient`` with ``net.numerical_gradient``.

    Use a handful of samples (the book uses 3): the numerical gradient costs two forward passes
    per parameter element. Entries near a ReLU kink are recognised for nets whose ReLUs are
    ``fastbp.Relu`` layers in ``net.layers`` and whose numerical gradient is
    ``fastbp.numerical_gradient`` (TwoLayerNet, MultiLayerNet): after each shifted forward pass the
    ReLU masks are compared with those of the unshifted one.
    """
    if not (callable(getattr(net, "numerical_gradient", None)) and callable(getattr(net, "gradient", None))):
        raise TypeError(f"net: expected a net with gradient and numerical_gradient methods "
                        f"(TwoLayerNet, MultiLayerNet), got {type(net).__name__}")
    backprop = net.gradient(x, t)   # its forward pass leaves the unshifted ReLU masks
    kinks = _Kinks(net)
    params = getattr(net, "params", {})
    token = _observer.set(kinks)
    try:
        numerical = net.numerical_gradient(x, t)
    finally:
        _observer.reset(token)
    report = {}
    for key, num in numerical.items():
        bp = np.asarray(backprop[key], dtype=np.float64)
        num = np.asarray(num, dtype=np.float64)
        diff = np.abs(bp - num)
        at_kinks = kinks.flipped.get(id(params.get(key)), np.zeros(diff.shape, bool))
        judged = ~at_kinks
        if judged.any():
            scale = max(np.abs(bp[judged]).max(), np.abs(num[judged]).max(), np.finfo(np.float64).tiny)
            worst = float(diff[judged].max() / scale)
        else:
            worst = 0.0
        report[key] = GradCheck(float(diff.mean()), worst, int(at_kinks.sum()))
    return report
