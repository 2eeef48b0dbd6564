"""Whole-net kernels: SGD steps over many mini-batches, and prediction, in compiled code.

The net is a stack of affine layers (weights[i] (D_i, D_i+1), biases[i]) with one activation
between them (0 relu, 1 sigmoid, 2 tanh) and softmax cross-entropy on top; weights and biases
arrive as numba typed Lists holding the caller's arrays, which are updated in place.
Every helper a fused kernel calls lives in this file: Numba's cache does not notice when a callee
in another file changes.
"""
import numpy as np

from ._config import jit

RELU, SIGMOID, TANH = 0, 1, 2


@jit
def _activate(h, activation):
    """h = f(h) in place."""
    n, m = h.shape
    for i in range(n):
        for j in range(m):
            v = h[i, j]
            if activation == RELU:
                h[i, j] = v if v > 0 else 0
            elif activation == SIGMOID:
                if v >= 0:
                    h[i, j] = 1 / (1 + np.exp(-v))
                else:
                    e = np.exp(v)
                    h[i, j] = e / (1 + e)
            else:
                h[i, j] = np.tanh(v)


@jit
def _activation_backward(d, y, activation):
    """d *= f'(x), written in terms of the forward output y = f(x), in place."""
    n, m = d.shape
    for i in range(n):
        for j in range(m):
            v = y[i, j]
            if activation == RELU:
                if v <= 0:
                    d[i, j] = 0
            elif activation == SIGMOID:
                d[i, j] *= v * (1 - v)
            else:
                d[i, j] *= 1 - v * v


@jit
def _add_bias(h, b):
    n, m = h.shape
    for i in range(n):
        for j in range(m):
            h[i, j] += b[j]


@jit
def predict_labels(x, weights, biases, activation):
    """argmax_c of the net's scores for each row of x (N, D) -> (N,) int64."""
    n = x.shape[0]
    last = len(weights) - 1
    labels = np.empty(n, np.int64)
    chunk = 2048  # bounds the memory of the hidden activations on large x
    for start in range(0, n, chunk):
        h = np.ascontiguousarray(x[start:start + chunk])
        for layer in range(last + 1):
            h = np.dot(h, weights[layer])
            _add_bias(h, biases[layer])
            if layer < last:
                _activate(h, activation)
        for i in range(h.shape[0]):
            best = 0
            for j in range(1, h.shape[1]):
                if h[i, j] > h[i, best]:
                    best = j
            labels[start + i] = best
    return labels


@jit
def sgd_steps(x, t, batches, weights, biases, activation, lr, losses):
    """One SGD step per row of batches (S, B); losses[s] = batch loss before the update.

    Step s: forward on rows batches[s] of x (M, D) with labels t (M,), softmax-CE, backward,
    W -= lr * dW and b -= lr * db for every layer, in place.
    """
    last = len(weights) - 1
    steps, size = batches.shape
    dtype = x.dtype
    step = np.empty(1, dtype)
    step[0] = lr
    lr_ = step[0]  # lr in the weights' dtype, as NumPy's weak-scalar rule gives the reference
    # acts[0] is the gathered batch, acts[i + 1] the output of layer i; douts[i] its gradient.
    acts = [np.empty((size, x.shape[1]), dtype)]
    douts = []
    grads = []
    for layer in range(last + 1):
        acts.append(np.empty((size, weights[layer].shape[1]), dtype))
        douts.append(np.empty((size, weights[layer].shape[1]), dtype))
        grads.append(np.empty(weights[layer].shape, dtype))
    inv = 1.0 / size
    for s in range(steps):
        rows = batches[s]
        xb = acts[0]
        for i in range(size):
            xb[i, :] = x[rows[i]]
        for layer in range(last + 1):
            np.dot(acts[layer], weights[layer], acts[layer + 1])
            _add_bias(acts[layer + 1], biases[layer])
            if layer < last:
                _activate(acts[layer + 1], activation)
        # softmax cross-entropy: douts[last] = (softmax(scores) - onehot(t)) / size
        scores, d = acts[last + 1], douts[last]
        total = 0.0
        for i in range(size):
            label = t[rows[i]]
            m = scores[i, 0]
            for j in range(1, scores.shape[1]):
                if scores[i, j] > m:
                    m = scores[i, j]
            z = 0.0
            for j in range(scores.shape[1]):
                e = np.exp(scores[i, j] - m)
                d[i, j] = e
                z += e
            total += np.log(z) + m - scores[i, label]
            scale = inv / z
            for j in range(scores.shape[1]):
                d[i, j] = d[i, j] * scale
            d[i, label] -= inv
        losses[s] = total * inv
        for layer in range(last, -1, -1):
            d = douts[layer]
            W, b, dW = weights[layer], biases[layer], grads[layer]
            if layer > 0:  # dx with the weights of this step, before the update
                np.dot(d, W.T, douts[layer - 1])
            np.dot(acts[layer].T, d, dW)
            for k in range(W.shape[0]):
                for j in range(W.shape[1]):
                    W[k, j] -= lr_ * dW[k, j]
            for j in range(W.shape[1]):
                db = d[0, j]
                for i in range(1, size):
                    db += d[i, j]
                b[j] -= lr_ * db
            if layer > 0:
                _activation_backward(douts[layer - 1], acts[layer], activation)
