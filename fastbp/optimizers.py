"""The book's chapter 6 optimizers: SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam.

Constructor arguments, defaults, attributes (``lr``, ``momentum``, ``decay_rate``, ``beta1``,
``beta2``, ``iter``; the state ``v``, ``h``, ``m`` as dicts keyed like the parameters, created at
the first update) and ``update(params, grads)`` are the book's. ``update`` changes the arrays of
``params`` in place, as the book's ``params[key] -= ...`` does, so a net's layers see the new
values; each update is one call of a compiled kernel over all parameters (``fastbp.kernels``,
twins in ``fastbp.reference``), equal to the book's NumPy arithmetic bit for bit in float64.

Parameters that are plain numbers (the book's ``optimizer_compare_naive.py`` optimises
``params['x']``, a Python float) cannot change in place; they are replaced in ``params``, as
the book's ``params[key] -= ...`` replaces them.
"""
import numbers

import numpy as np  # `from fastbp.optimizers import *` gives np, as the book's module does

from . import _checks
from .backend import ops

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "np"]


def _number(name, value, low=0.0, high=None, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {_checks.describe(value)}")
    value = float(value)
    above = value > high or (high_open and value == high) if high is not None else False
    if not np.isfinite(value) or value < low or above:
        upper = "" if high is None else f" and {'below' if high_open else 'at most'} {high}"
        raise ValueError(f"{name}: expected a finite number of at least {low}{upper}, got {value}")
    return value


class _Optimizer:
    """update(params, grads): validate, gather flat views, call the kernel once per dtype."""

    kernel = None      # the name of the (reference, kernel) pair in fastbp.TWINS
    state = ()         # the names of the state dicts, in the kernel's argument order

    def __init__(self, lr):
        self.lr = _checks.positive_float("lr", lr)
        for name in self.state:
            setattr(self, name, None)

    def _hyper(self):
        """The kernel's scalar arguments after the state arrays."""
        return (float(self.lr),)

    def update(self, params, grads):
        """Update every parameter of ``params`` (a dict of arrays or numbers) by ``grads[key]``."""
        hyper = self._hyper()
        if not hasattr(params, "items") or not hasattr(params, "__setitem__"):
            raise TypeError(f"params: expected a dict of parameter arrays, got {_checks.describe(params)}")
        if not hasattr(grads, "__getitem__"):
            raise TypeError(f"grads: expected a dict of gradients, got {_checks.describe(grads)}")
        groups = {}      # dtype -> ([param views], [grad views], [[state views] per state])
        write_back = []  # (key, flat buffer, original): non-contiguous arrays and plain numbers
        for key, p in params.items():
            flat, original = self._flat_param(key, p)
            views = groups.setdefault(flat.dtype, ([], [], [[] for _ in self.state]))
            views[0].append(flat)
            views[1].append(self._flat_grad(key, grads, p, flat.dtype))
            for i, name in enumerate(self.state):
                views[2][i].append(self._state(name, key, p, flat.dtype).reshape(-1))
            if original is not None:
                write_back.append((key, flat, original))
        kernel = getattr(ops(), self.kernel)
        for ps, gs, states in groups.values():
            kernel(tuple(ps), tuple(gs), *(tuple(s) for s in states), *hyper)
        for key, flat, original in write_back:
            if isinstance(original, np.ndarray):
                original[...] = flat.reshape(original.shape)
            else:
                params[key] = flat[0]  # a NumPy scalar of the parameter's precision

    @staticmethod
    def _flat_param(key, p):
        """(1-d view to update in place, None) or (a flat copy, the original to write back)."""
        if isinstance(p, np.ndarray):
            if p.dtype not in _checks.FLOAT_DTYPES:
                raise TypeError(f"params[{key!r}]: expected a float32 or float64 array, got dtype {p.dtype}")
            if not p.flags.writeable:
                raise ValueError(f"params[{key!r}]: the array is read-only; the optimizer updates "
                                 "parameters in place")
            if p.flags.c_contiguous:
                return p.reshape(-1), None
            return np.ascontiguousarray(p).reshape(-1), p
        if isinstance(p, (numbers.Real, np.floating, np.integer)) and not isinstance(p, (bool, np.bool_)):
            dtype = p.dtype if isinstance(p, np.floating) else np.dtype(np.float64)
            return np.array([p], dtype), p
        raise TypeError(f"params[{key!r}]: expected a float32 or float64 array or a number, "
                        f"got {_checks.describe(p)}")

    @staticmethod
    def _flat_grad(key, grads, p, dtype):
        try:
            g = grads[key]
        except KeyError:
            raise ValueError(f"grads: no gradient for parameter {key!r} (grads has "
                             f"{sorted(map(str, grads.keys())) if hasattr(grads, 'keys') else '?'})") from None
        flat = _checks.as_float_array(f"grads[{key!r}]", g, dtype)  # (at least 1-d)
        if np.shape(g) != np.shape(p):
            raise ValueError(f"grads[{key!r}]: expected the shape of params[{key!r}] {np.shape(p)}, "
                             f"got {np.shape(g)}")
        return flat.reshape(-1)

    def _state(self, name, key, p, dtype):
        """The state array ``self.<name>[key]`` (zeros at first), created like the book's."""
        table = getattr(self, name)
        if table is None:
            table = {}
            setattr(self, name, table)
        s = table.get(key)
        if s is None:
            s = table[key] = np.zeros(np.shape(p), dtype)
        elif not (isinstance(s, np.ndarray) and s.shape == np.shape(p) and s.dtype == dtype
                  and s.flags.c_contiguous and s.flags.writeable):
            raise ValueError(f"{type(self).__name__}.{name}[{key!r}]: expected a writeable "
                             f"C-contiguous {dtype} array of shape {np.shape(p)} (the state of "
                             f"params[{key!r}]), got {_checks.describe(s)}")
        return s


class SGD(_Optimizer):
    """Stochastic gradient descent: p -= lr * g."""

    kernel = "sgd_update"

    def __init__(self, lr=0.01):
        super().__init__(lr)


class Momentum(_Optimizer):
    """Momentum SGD: v = momentum * v - lr * g;  p += v."""

    kernel = "momentum_update"
    state = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = _number("momentum", momentum)

    def _hyper(self):
        return float(self.lr), float(self.momentum)


class Nesterov(Momentum):
    """Nesterov's accelerated gradient in the book's form (arXiv:1212.0901):
    p += momentum^2 * v;  p -= (1 + momentum) * lr * g;  v = momentum * v - lr * g."""

    kernel = "nesterov_update"


class AdaGrad(_Optimizer):
    """AdaGrad: h += g * g;  p -= lr * g / (sqrt(h) + 1e-7)."""

    kernel = "adagrad_update"
    state = ("h",)

    def __init__(self, lr=0.01):
        super().__init__(lr)


class RMSprop(_Optimizer):
    """RMSprop: h = decay_rate * h + (1 - decay_rate) * g * g;  p -= lr * g / (sqrt(h) + 1e-7)."""

    kernel = "rmsprop_update"
    state = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99):
        super().__init__(lr)
        self.decay_rate = _number("decay_rate", decay_rate, high=1.0)

    def _hyper(self):
        return float(self.lr), float(self.decay_rate)


class Adam(_Optimizer):
    """Adam in the book's form (arXiv:1412.6980v8), with ``iter`` counting the updates:
    lr_t = lr * sqrt(1 - beta2^iter) / (1 - beta1^iter);  m += (1 - beta1) * (g - m);
    v += (1 - beta2) * (g * g - v);  p -= lr_t * m / (sqrt(v) + 1e-7)."""

    kernel = "adam_update"
    state = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        super().__init__(lr)
        self.beta1 = _number("beta1", beta1, high=1.0, high_open=True)
        self.beta2 = _number("beta2", beta2, high=1.0, high_open=True)
        self.iter = 0

    def update(self, params, grads):
        self.iter += 1  # first, as the book: the first update is step 1
        try:
            super().update(params, grads)
        except (TypeError, ValueError):
            self.iter -= 1  # a refused update changes nothing
            raise

    def _hyper(self):
        return float(self.lr), float(self.beta1), float(self.beta2), int(self.iter)
