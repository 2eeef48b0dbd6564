"""The book's layers (chapter 5), with its attribute and method names, each a thin shell:
validate the input, call a kernel (or its reference twin, see ``fastbp.use_backend``), keep the
state that backward needs.

MulLayer and AddLayer are the teaching nodes of the apple example: on numbers they do plain
Python arithmetic (so the seeds' printed values come out digit for digit); otherwise (arrays, and
lists or tuples, which are taken as arrays) they broadcast like NumPy and backward returns each
input's gradient in that input's own shape: summed over what broadcasting repeated, a number for
a number.

NaN and Inf are computed with as NumPy would, never refused here: a training run that diverges
goes on as the book's does. ``Affine`` and ``SoftmaxWithLoss`` say so once (a RuntimeWarning per
layer) when they run on their own; inside a net the net reports it, since only the net can tell
bad input data (which it refuses) from weights that blew up.
"""
import contextvars
import math
import numbers
import warnings

import numpy as np

from . import _checks, _trace
from .backend import ops
from .functions import _cross_entropy_of_rows
from .losses import get_loss

DIVERGED_HINT = ("training diverged? Lower the learning rate or the initial weight scale "
                 "(weight_init_std), or use batch normalisation")

# True while a net runs its layers: the net, not each layer, reports NaN/Inf (see fastbp.nets).
net_reports = contextvars.ContextVar("fastbp_net_reports", default=False)


def _warn_once(layer, what):
    """Warn that ``what`` came out NaN/Inf, once per layer, unless a net is running the layer."""
    if layer._warned or net_reports.get():
        return
    layer._warned = True
    warnings.warn(f"{what}; {DIVERGED_HINT}. Computing on with NaN/Inf, as NumPy would.",
                  RuntimeWarning, stacklevel=3)


def _unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched, back to ``shape``."""
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(axis=tuple(range(lead)))
    stretched = tuple(axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _operand(v):
    """Lists and tuples become arrays, so [1, 2] * 3 is [3, 6] (not [1, 2, 1, 2, 1, 2])."""
    return np.asarray(v) if isinstance(v, (list, tuple)) else v


def _is_number(v):
    return isinstance(v, numbers.Number)


def _upstream(layer, dout, out_shape):
    """dout as an array that broadcasts to forward's output shape (a number counts for every entry)."""
    dout = np.asarray(dout)
    try:
        fits = np.broadcast_shapes(dout.shape, out_shape) == out_shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{layer}.backward: dout must have the shape of forward's output {out_shape} "
                         f"(or broadcast to it), got {dout.shape}")
    return dout


def _gradient(g, v, out_shape):
    """dL/dv from g = dout * (d out / d v): g broadcast to the output's shape, then summed over the
    axes broadcasting gave v, so it has v's shape; a number gets a number (as PyTorch gives a 0-d
    tensor a 0-d gradient: the sum)."""
    g = np.asarray(g)
    if g.shape != out_shape:
        g = np.broadcast_to(g, out_shape)
    g = np.asarray(_unbroadcast(g, np.shape(v)))
    if not isinstance(v, np.ndarray):
        return g[()] if isinstance(v, np.generic) else g.item()   # a Python number for one
    return g if g.flags.writeable else g.copy()   # never a read-only broadcast view or scalar


class MulLayer:
    """out = x * y;  dx = dout * y,  dy = dout * x."""

    def __init__(self):
        self.x = None
        self.y = None
        self._out_shape = None

    def forward(self, x, y):
        x, y = _operand(x), _operand(y)
        out = x * y
        self.x, self.y, self._out_shape = x, y, np.shape(out)
        if (graph := _trace.recorder.get()) is not None:
            graph.forward(self, {"x": x, "y": y}, out)
        return out

    def backward(self, dout):
        if self.x is None:
            raise RuntimeError("MulLayer.backward: call forward first")
        if _is_number(self.x) and _is_number(self.y):
            dx, dy = dout * self.y, dout * self.x   # the book's own arithmetic on numbers
        else:
            dout = _upstream("MulLayer", _operand(dout), self._out_shape)
            dx = _gradient(dout * self.y, self.x, self._out_shape)
            dy = _gradient(dout * self.x, self.y, self._out_shape)
        if (graph := _trace.recorder.get()) is not None:
            graph.backward(self, dout, (dx, dy))
        return dx, dy


class AddLayer:
    """out = x + y;  dx = dout,  dy = dout."""

    def __init__(self):
        self.x_shape = None
        self.y_shape = None
        self._inputs = None

    def forward(self, x, y):
        x, y = _operand(x), _operand(y)
        out = x + y
        self.x_shape, self.y_shape, self._out_shape = np.shape(x), np.shape(y), np.shape(out)
        self._inputs = x, y   # only their kind and shape matter to backward
        if (graph := _trace.recorder.get()) is not None:
            graph.forward(self, {"x": x, "y": y}, out)
        return out

    def backward(self, dout):
        if self._inputs is None:
            raise RuntimeError("AddLayer.backward: call forward first")
        x, y = self._inputs
        if _is_number(x) and _is_number(y):
            dx, dy = dout * 1, dout * 1
        else:
            dout = _upstream("AddLayer", _operand(dout), self._out_shape)
            dx, dy = _gradient(dout, x, self._out_shape), _gradient(dout, y, self._out_shape)
        if (graph := _trace.recorder.get()) is not None:
            graph.backward(self, dout, (dx, dy))
        return dx, dy


def _check_dout(layer, dout, shape, dtype):
    """dout for backward: same shape as the forward output, converted to its dtype."""
    if shape is None:
        raise RuntimeError(f"{layer}.backward: call forward first")
    dout = _checks.as_float_array(f"{layer}.backward: dout", dout, dtype)
    if dout.shape != shape:
        raise ValueError(f"{layer}.backward: dout must have the shape of forward's output {shape}, "
                         f"got {dout.shape}")
    return dout


def _as_activation_input(layer, x):
    return _checks.as_float_array(f"{layer}.forward: x", x, None)


class Relu:
    """y = max(x, 0);  dx = dout where x > 0, else 0.  ``mask`` is (x <= 0), as in the book."""

    def __init__(self):
        self.mask = None

    @property
    def mask(self):
        if self._mask is None and self._out is not None:   # (see _ran)
            self._mask, self._out = self._out <= 0, None
        return self._mask

    @mask.setter
    def mask(self, value):
        self._mask, self._out = value, None

    def forward(self, x):
        out, self.mask = ops().relu_forward(_as_activation_input("Relu", x))
        if (graph := _trace.recorder.get()) is not None:
            graph.forward(self, {"x": x}, out)
        return out

    def backward(self, dout):
        mask = self.mask
        dout = _check_dout("Relu", dout, None if mask is None else mask.shape, None)
        dx = ops().relu_backward(dout, mask)
        if (graph := _trace.recorder.get()) is not None:
            graph.backward(self, dout, (dx,))
        return dx

    def _ran(self, out):
        """Take the state of a forward whose output ``out`` was computed elsewhere (a net's
        whole-net kernel): the mask x <= 0, which is out <= 0, made when first read (the nets'
        own calls never read it: ~2 us a call saved)."""
        self._mask, self._out = None, out


class _ActivationOfOutput:
    """A node whose backward needs only its own output y, kept in ``out`` as the book does."""

    kernel = None  # "sigmoid" or "tanh": the <kernel>_forward / <kernel>_backward twins

    def __init__(self):
        self.out = None

    def forward(self, x):
        name = type(self).__name__
        self.out = getattr(ops(), f"{self.kernel}_forward")(_as_activation_input(name, x))
        if (graph := _trace.recorder.get()) is not None:
            graph.forward(self, {"x": x}, self.out)
        return self.out

    def backward(self, dout):
        y = self.out
        dout = _check_dout(type(self).__name__, dout, None if y is None else y.shape,
                           None if y is None else y.dtype)
        dx = getattr(ops(), f"{self.kernel}_backward")(dout, y)
        if (graph := _trace.recorder.get()) is not None:
            graph.backward(self, dout, (dx,))
        return dx

    def _ran(self, out):
        """Take the state of a forward whose output was computed elsewhere (a whole-net kernel)."""
        self.out = out


class Sigmoid(_ActivationOfOutput):
    """y = 1 / (1 + exp(-x));  dx = dout * y * (1 - y).  ``out`` keeps y."""

    kernel = "sigmoid"


class Tanh(_ActivationOfOutput):
    """y = tanh(x);  dx = dout * (1 - y^2).  ``out`` keeps y."""

    kernel = "tanh"


class Affine:
    """out = x @ W + b;  dx = dout @ W.T,  dW = x.T @ dout,  db = sum_n dout.

    ``W`` and ``b`` are the caller's arrays (e.g. ``net.params['W1']``), read afresh on every call,
    so updating them in place is seen here. Input of any shape (N, ...) is flattened to (N, D) and
    dx gets the original shape back; a 1-d input is one sample. Input is converted to W's dtype
    (the book's loader gives float32 images while its weights are float64); W is never cast.
    """

    def __init__(self, W, b):
        _checks.as_param("Affine: W", W)
        _checks.as_param("Affine: b", b)
        self.W = W
        self.b = b
        self._warned = False
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def _params(self):
        W, b = self.W, self.b
        _checks.as_param("Affine: W", W)
        _checks.as_param("Affine: b", b)
        if W.ndim != 2 or b.shape != (W.shape[1],) or b.dtype != W.dtype:
            raise ValueError(f"Affine: expected W of shape (D, H) and b of shape (H,) with W's dtype, "
                             f"got W {W.shape} {W.dtype} and b {b.shape} {b.dtype}")
        return W, b

    def forward(self, x):
        W, b = self._params()
        given = x   # the object a graph being recorded knows (x is converted and reshaped below)
        x = _checks.as_float_array("Affine.forward: x", x, W.dtype)
        _checks.check_nonempty("Affine.forward: x", x)
        shape = x.shape
        x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
        if x.shape[1] != W.shape[0]:
            raise ValueError(f"Affine.forward: x has {x.shape[1]} features per sample (shape "
                             f"{shape}), but W expects {W.shape[0]} (W is {W.shape})")
        out = ops().affine_forward(x, W, b)
        if not (self._warned or net_reports.get()) and not np.isfinite(out).all():
            _warn_once(self, "Affine.forward: x @ W + b has NaN or Inf values (from x, W or b, or "
                             "from an overflow)")
        self.x, self.original_x_shape = x, shape  # only now: a refused call leaves no state
        out = out[0] if len(shape) == 1 else out
        if (graph := _trace.recorder.get()) is not None:
            graph.forward(self, {"x": given, "W": W, "b": b}, out)
        return out

    def backward(self, dout, need_dx=True):
        """Sets dW and db; returns dx (or None when ``need_dx`` is False, as for a first layer)."""
        W, _ = self._params()
        if self.x is None:
            raise RuntimeError("Affine.backward: call forward first")
        n, h = self.x.shape[0], W.shape[1]
        expected = (h,) if len(self.original_x_shape) == 1 else (n, h)
        dout = _check_dout("Affine", dout, expected, W.dtype).reshape(n, h)
        x = self.x if self.x.dtype == W.dtype else self.x.astype(W.dtype)  # (see _ran)
        if need_dx:
            dx, self.dW, self.db = ops().affine_backward(x, W, dout)
            dx = dx.reshape(self.original_x_shape)
        else:
            dx = None
            self.dW, self.db = ops().affine_backward_params(x, dout)
        if (graph := _trace.recorder.get()) is not None:
            graph.backward(self, dout, (dx, self.dW, self.db))
        return dx

    def _ran(self, x, shape, dW=None, db=None):
        """Take the state of a forward (and backward, given dW, db) computed elsewhere, by a
        net's whole-net kernel: the input x as rows (N, D), as given (float32 images for a float64
        W: backward converts them when it needs them), its original shape."""
        self.x, self.original_x_shape = x, shape
        if dW is not None:
            self.dW, self.db = dW, db


class SoftmaxWithLoss:
    """Softmax and cross-entropy error as one node: loss = -mean_n log softmax(x_n)[t_n].

    ``t`` may be class indices (N,) or one-hot rows (N, C); a single sample may be a 1-d ``x`` (C,)
    with one index or one one-hot row (C,), and then ``y`` and backward's dx are 1-d too. backward
    returns (y - t) / N and, like the book's, ignores ``dout`` (the loss is the end of the graph).
    ``t`` keeps the caller's labels, as the book's; backward computes from a private copy of them,
    so changing ``t`` between forward and backward changes nothing. The loss is exact unless
    ``fastbp.set_loss("book")`` (or FASTBP_LOSS=book) asks for the book's log(y + 1e-7).
    """

    def __init__(self):
        self._warned = False
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        given = x   # the object a graph being recorded knows
        x = _checks.as_float_array("SoftmaxWithLoss.forward: x", x, None)
        _checks.check_ndim("SoftmaxWithLoss.forward: x", x, (1, 2))
        single = x.ndim == 1
        if single:
            x = x.reshape(1, -1)
        _checks.check_nonempty("SoftmaxWithLoss.forward: x", x)
        kind, labels = _checks.as_labels("SoftmaxWithLoss.forward: t", t, x.shape[0], x.shape[1])
        if kind == "index":
            self.loss, y = ops().softmax_cross_entropy(x, labels)
            self._backward = ops().softmax_cross_entropy_backward
        else:
            labels = np.ascontiguousarray(labels, dtype=x.dtype)
            self.loss, y = ops().softmax_cross_entropy_onehot(x, labels)
            self._backward = ops().softmax_cross_entropy_onehot_backward
        self.y = y[0] if single else y
        if get_loss() == "book":
            self.loss = _cross_entropy_of_rows(
                y, labels if kind == "index" else np.argmax(labels, axis=1))
        if not math.isfinite(self.loss):
            _warn_once(self, "SoftmaxWithLoss.forward: the loss is NaN or Inf (NaN or Inf in x, "
                             "or logits too large)")
        self.t = t
        self._y, self._labels, self._single = y, labels, single   # what backward's kernel reads
        if (graph := _trace.recorder.get()) is not None:
            graph.forward(self, {"x": given, "t": t}, self.loss)
        return self.loss

    def _ran(self, loss, y, t, labels, single=False):
        """Take the state of a forward computed elsewhere (a whole-net kernel): the loss, the
        probabilities y (N, C), the caller's t and the class indices ``labels`` (a private array);
        ``single`` for the book's one-sample form (then ``y`` and backward's dx are 1-d)."""
        self.loss, self.y, self.t = loss, y[0] if single else y, t
        self._y, self._labels, self._single = y, labels, single
        self._backward = ops().softmax_cross_entropy_backward

    def backward(self, dout=1):
        if self.y is None:
            raise RuntimeError("SoftmaxWithLoss.backward: call forward first")
        dx = self._backward(self._y, self._labels)
        dx = dx[0] if self._single else dx
        if (graph := _trace.recorder.get()) is not None:
            graph.backward(self, dout, (dx, None))
        return dx
