"""The book's chapter 6 optimizers: one fused update over all parameters per call.

Each public kernel takes homogeneous tuples of 1-d arrays of one float dtype (the parameters
flattened with ``.reshape(-1)`` views, their gradients, the optimizer's state arrays, index by
index alike) and scalar hyper-parameters, and updates parameters and state in place; nothing is
allocated, nothing returned. Being plain functions of arrays and numbers, they can be called from
other compiled code (a fused training step) as well as from ``fastbp.optimizers``; the
``_<name>_array`` helpers do the same for one parameter with its scalars already rounded.

The formulas are the book's, operation for operation, in its order, compiled with plain IEEE
arithmetic (``jit_ieee``): in float64 a trajectory equals the book's NumPy code bit for bit. Scalars are
first rounded to the arrays' dtype, so float32 arithmetic stays float32 throughout (``_rounded``).
Callers guarantee: at least one parameter, and grads[i] and the state arrays as long as params[i].
"""
import math

import numpy as np

from ._config import jit_ieee

EPS = 1e-7  # the book's guard against dividing by sqrt(h) = 0 (AdaGrad, RMSprop, Adam)


@jit_ieee
def _rounded(a, value):
    """``value`` rounded to the dtype of array ``a`` (float32 or float64)."""
    s = np.empty(1, a.dtype)
    s[0] = value
    return s[0]


# --- SGD: p -= lr * g ----------------------------------------------------------------------------

@jit_ieee
def _sgd_array(p, g, lr):
    for j in range(p.shape[0]):
        p[j] -= lr * g[j]


@jit_ieee
def sgd_update(params, grads, lr):
    """p -= lr * g for every (p, g) of params, grads."""
    lr_ = _rounded(params[0], lr)
    for i in range(len(params)):
        _sgd_array(params[i], grads[i], lr_)


# --- Momentum: v = momentum * v - lr * g;  p += v ----------------------------------------------

@jit_ieee
def _momentum_array(p, g, v, lr, momentum):
    for j in range(p.shape[0]):
        vj = momentum * v[j] - lr * g[j]
        v[j] = vj
        p[j] += vj


@jit_ieee
def momentum_update(params, grads, v, lr, momentum):
    """v = momentum * v - lr * g;  p += v."""
    lr_, momentum_ = _rounded(params[0], lr), _rounded(params[0], momentum)
    for i in range(len(params)):
        _momentum_array(params[i], grads[i], v[i], lr_, momentum_)


# --- Nesterov (the book's form, arXiv:1212.0901) -----------------------------------------------

@jit_ieee
def _nesterov_array(p, g, v, lr, momentum, momentum_sq, lr_ahead):
    for j in range(p.shape[0]):
        pj = p[j] + momentum_sq * v[j]
        p[j] = pj - lr_ahead * g[j]
        v[j] = v[j] * momentum - lr * g[j]


@jit_ieee
def nesterov_update(params, grads, v, lr, momentum):
    """p += momentum^2 * v;  p -= (1 + momentum) * lr * g;  v = momentum * v - lr * g."""
    p0 = params[0]
    lr_, momentum_ = _rounded(p0, lr), _rounded(p0, momentum)
    momentum_sq = _rounded(p0, momentum * momentum)
    lr_ahead = _rounded(p0, (1 + momentum) * lr)
    for i in range(len(params)):
        _nesterov_array(params[i], grads[i], v[i], lr_, momentum_, momentum_sq, lr_ahead)


# --- AdaGrad: h += g^2;  p -= lr * g / (sqrt(h) + eps) -----------------------------------------

@jit_ieee
def _adagrad_array(p, g, h, lr, eps):
    for j in range(p.shape[0]):
        gj = g[j]
        hj = h[j] + gj * gj
        h[j] = hj
        p[j] -= lr * gj / (np.sqrt(hj) + eps)


@jit_ieee
def adagrad_update(params, grads, h, lr):
    """h += g * g;  p -= lr * g / (sqrt(h) + 1e-7)."""
    lr_, eps = _rounded(params[0], lr), _rounded(params[0], EPS)
    for i in range(len(params)):
        _adagrad_array(params[i], grads[i], h[i], lr_, eps)


# --- RMSprop: h = decay * h + (1 - decay) * g^2;  p -= lr * g / (sqrt(h) + eps) ----------------

@jit_ieee
def _rmsprop_array(p, g, h, lr, decay_rate, one_minus_decay, eps):
    for j in range(p.shape[0]):
        gj = g[j]
        hj = h[j] * decay_rate
        hj = hj + one_minus_decay * gj * gj
        h[j] = hj
        p[j] -= lr * gj / (np.sqrt(hj) + eps)


@jit_ieee
def rmsprop_update(params, grads, h, lr, decay_rate):
    """h *= decay_rate;  h += (1 - decay_rate) * g * g;  p -= lr * g / (sqrt(h) + 1e-7)."""
    p0 = params[0]
    lr_, decay_, eps = _rounded(p0, lr), _rounded(p0, decay_rate), _rounded(p0, EPS)
    one_minus_decay = _rounded(p0, 1 - decay_rate)
    for i in range(len(params)):
        _rmsprop_array(params[i], grads[i], h[i], lr_, decay_, one_minus_decay, eps)


# --- Adam (the book's form, arXiv:1412.6980v8) -------------------------------------------------

@jit_ieee
def _adam_step_size(lr, beta1, beta2, iteration):
    """lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), in float64 (``math.pow`` is libm's pow, as
    Python's float ``**``)."""
    t = float(iteration)
    return lr * math.sqrt(1.0 - math.pow(beta2, t)) / (1.0 - math.pow(beta1, t))


@jit_ieee
def _adam_array(p, g, m, v, lr_t, one_minus_beta1, one_minus_beta2, eps):
    for j in range(p.shape[0]):
        gj = g[j]
        mj = m[j] + one_minus_beta1 * (gj - m[j])
        vj = v[j] + one_minus_beta2 * (gj * gj - v[j])
        m[j] = mj
        v[j] = vj
        p[j] -= lr_t * mj / (np.sqrt(vj) + eps)


@jit_ieee
def adam_update(params, grads, m, v, lr, beta1, beta2, iteration):
    """Step ``iteration`` (1, 2, ...): lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t);
    m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g * g - v);  p -= lr_t * m / (sqrt(v) + 1e-7)."""
    p0 = params[0]
    lr_t = _rounded(p0, _adam_step_size(lr, beta1, beta2, iteration))
    one_minus_beta1, one_minus_beta2 = _rounded(p0, 1.0 - beta1), _rounded(p0, 1.0 - beta2)
    eps = _rounded(p0, EPS)
    for i in range(len(params)):
        _adam_array(params[i], grads[i], m[i], v[i], lr_t, one_minus_beta1, one_minus_beta2, eps)
