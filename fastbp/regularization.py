"""The layers chapter 6 adds for training deep nets: ``BatchNormalization`` (the book's 6.3) and
``Dropout`` (6.4.3), with the book's constructor arguments, attributes and
``forward(x, train_flg=True)`` / ``backward(dout)``, as thin shells over compiled kernels.

Both behave differently in training and in testing, which is why ``MultiLayerNetExtend`` passes
``train_flg`` to them. Dropout draws its mask from ``np.random.rand`` like the book, so
``np.random.seed`` repeats a run draw for draw.
"""
import numbers

import numpy as np

from . import _checks, _trace
from .backend import ops
from .layers import _check_dout


def _ratio(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number in [0, 1], got {_checks.describe(value)}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value}")
    return float(value)


class Dropout:
    """Training: out = x * mask with mask = (np.random.rand(*x.shape) > dropout_ratio), kept in
    ``mask``; dx = dout * mask.  Testing (train_flg=False): out = x * (1 - dropout_ratio)."""

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = _ratio("dropout_ratio", dropout_ratio)
        self.mask = None

    def forward(self, x, train_flg=True):
        given = x   # the object a graph being recorded knows
        x = _checks.as_float_array("Dropout.forward: x", x, None)
        if train_flg:
            out, self.mask = ops().dropout_forward(x, np.random.rand(*x.shape), self.dropout_ratio)
        else:
            out = x * (1.0 - self.dropout_ratio)
        if (graph := _trace.recorder.get()) is not None:
            graph.forward(self, {"x": given}, out)
        return out

    def backward(self, dout):
        mask = self.mask
        dout = _check_dout("Dropout", dout, None if mask is None else mask.shape, None)
        dx = ops().dropout_backward(dout, mask)
        if (graph := _trace.recorder.get()) is not None:
            graph.backward(self, dout, (dx,))
        return dx


class BatchNormalization:
    """Normalise each feature over the batch, then scale and shift (arXiv:1502.03167).

    Training: mu, var = mean and variance of x over the batch; xn = (x - mu) / sqrt(var + 1e-6);
    out = gamma * xn + beta; the running averages move towards mu and var by ``1 - momentum``.
    Testing (train_flg=False): the running averages stand in for mu and var.
    ``gamma`` and ``beta`` (D,) are the caller's arrays (a net's ``params['gamma1']``), read at
    every call, so an optimizer's in-place update is seen. x is (N, D) or (N, C, H, W), taken as
    (N, C*H*W), and is converted to gamma's dtype. The book's attributes: ``running_mean``,
    ``running_var`` (zeros until the first forward), ``input_shape``, ``batch_size``, ``xc``,
    ``xn``, ``std``, ``dgamma``, ``dbeta``.
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self._params()
        self.momentum = _ratio("momentum", momentum)
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xc = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None
        self._train_shape = None

    def _params(self):
        gamma = _checks.as_param("BatchNormalization: gamma", self.gamma)
        beta = _checks.as_param("BatchNormalization: beta", self.beta)
        if gamma.ndim != 1 or beta.shape != gamma.shape or beta.dtype != gamma.dtype:
            raise ValueError(f"BatchNormalization: expected gamma and beta of one shape (D,) and "
                             f"dtype, got gamma {gamma.shape} {gamma.dtype} and beta {beta.shape} "
                             f"{beta.dtype}")
        return gamma, beta

    def _running(self, name, d, dtype):
        value = getattr(self, name)
        if value is None:
            return np.zeros(d, dtype)
        value = _checks.as_float_array(f"BatchNormalization: {name}", value, dtype)
        if value.shape != (d,):
            raise ValueError(f"BatchNormalization: {name}: expected shape ({d},) (one per feature), "
                             f"got {value.shape}")
        return value

    def forward(self, x, train_flg=True):
        gamma, beta = self._params()
        given = x   # the object a graph being recorded knows
        x = _checks.as_float_array("BatchNormalization.forward: x", x, gamma.dtype)
        if x.ndim < 2:
            raise ValueError(f"BatchNormalization.forward: x: expected a batch of shape (N, D) or "
                             f"(N, C, H, W), got shape {x.shape}")
        _checks.check_nonempty("BatchNormalization.forward: x", x)
        shape = x.shape
        x = x.reshape(shape[0], -1)
        d = gamma.shape[0]
        if x.shape[1] != d:
            raise ValueError(f"BatchNormalization.forward: x has {x.shape[1]} features per sample "
                             f"(shape {shape}), but gamma has {d}")
        mean = self._running("running_mean", d, gamma.dtype)
        var = self._running("running_var", d, gamma.dtype)
        self.input_shape = shape
        if train_flg:
            out, self.xc, self.xn, self.std, self.running_mean, self.running_var = \
                ops().batchnorm_forward(x, gamma, beta, mean, var, self.momentum)
            self.batch_size = shape[0]
            self._train_shape = shape
        else:
            self.running_mean, self.running_var = mean, var
            out = ops().batchnorm_forward_inference(x, gamma, beta, mean, var)
        out = out.reshape(shape)
        if (graph := _trace.recorder.get()) is not None:
            graph.forward(self, {"x": given, "gamma": gamma, "beta": beta}, out)
        return out

    def backward(self, dout):
        """Sets dgamma and dbeta; returns dx in the shape of the last training-mode input."""
        gamma, _ = self._params()
        shape = self._train_shape
        if shape is None:
            raise RuntimeError("BatchNormalization.backward: call forward(x, train_flg=True) first")
        dout = _check_dout("BatchNormalization", dout, shape, gamma.dtype)
        n, d = shape[0], gamma.shape[0]
        kept = {"xc": (self.xc, (n, d)), "xn": (self.xn, (n, d)), "std": (self.std, (d,))}
        for name, (a, want) in kept.items():  # the kernel reads them: they must still fit
            if not (isinstance(a, np.ndarray) and a.shape == want and a.dtype == gamma.dtype):
                raise ValueError(f"BatchNormalization.backward: {name} must be the {gamma.dtype} "
                                 f"array of shape {want} that forward kept (has gamma changed "
                                 f"since?), got {_checks.describe(a)}")
        dx, self.dgamma, self.dbeta = ops().batchnorm_backward(
            dout.reshape(shape[0], -1), gamma, self.xc, self.xn, self.std)
        dx = dx.reshape(shape)
        if (graph := _trace.recorder.get()) is not None:
            graph.backward(self, dout, (dx, self.dgamma, self.dbeta))
        return dx
