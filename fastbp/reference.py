"""The oracle: every kernel of ``fastbp.kernels`` written as plain NumPy.

Each function here has a compiled twin with the same name and signature in ``fastbp.kernels``;
the tests compare every pair, the benchmarks time every pair, and ``fastbp.use_backend("reference")``
runs the layers, nets and ``fit`` on these instead of the kernels. They favour being obviously
right over being fast. Shapes: ``N`` batch, ``D`` inputs, ``H`` outputs of a layer, ``C`` classes.

Like the kernels, these trust their input: validation happens once, at the public entry points.
"""
import numpy as np

__all__ = [
    "affine_forward", "affine_backward", "affine_backward_params",
    "relu_forward", "relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "softmax_cross_entropy_onehot", "softmax_cross_entropy_onehot_backward",
    "predict_labels", "sgd_steps",
    "compress_rows", "csr_affine_forward", "csr_affine_backward_params",
    "predict_labels_csr", "sgd_steps_csr",
    "index_labels", "onehot_labels", "net_scores", "net_loss", "net_gradient",
]

RELU, SIGMOID, TANH = 0, 1, 2  # activation codes shared with the kernels


# --- Affine: out = x @ W + b -------------------------------------------------------------------

def affine_forward(x, W, b):
    """out = x @ W + b.   x (N, D), W (D, H), b (H,) -> (N, H)"""
    return x @ W + b


def affine_backward(x, W, dout):
    """dx = dout @ W.T, dW = x.T @ dout, db = sum_n dout.   -> (dx (N, D), dW (D, H), db (H,))"""
    dW, db = affine_backward_params(x, dout)
    return dout @ W.T, dW, db


def affine_backward_params(x, dout):
    """affine_backward without dx (a first layer never needs it).   -> (dW (D, H), db (H,))"""
    return x.T @ dout, dout.sum(axis=0)


# --- ReLU: y = max(x, 0) -----------------------------------------------------------------------

def relu_forward(x):
    """y = x where x > 0 else 0; mask = (x <= 0), kept for backward.   -> (y, mask)"""
    mask = x <= 0
    y = x.copy()
    y[mask] = 0
    return y, mask


def relu_backward(dout, mask):
    """dx = dout where x > 0 else 0."""
    dx = dout.copy()
    dx[mask] = 0
    return dx


# --- Sigmoid: y = 1 / (1 + exp(-x)) --------------------------------------------------------------

def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), computed without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dout, y):
    """dx = dout * y * (1 - y)."""
    return dout * y * (1 - y)


# --- Tanh: y = tanh(x) ---------------------------------------------------------------------------

def tanh_forward(x):
    """y = tanh(x)."""
    return np.tanh(x)


def tanh_backward(dout, y):
    """dx = dout * (1 - y * y)."""
    return dout * (1 - y * y)


# --- Softmax + cross-entropy, fused ------------------------------------------------------------

def _softmax(x):
    """y = exp(x - m) / sum exp(x - m) row by row, with m the row max; also (m, log sum exp(x - m)).

    logsumexp(x) - x_c is then log sum exp(x - m) + (m - x_c): the log never sees 0 or overflow,
    and subtracting m - x_c first loses nothing to cancellation however large the logits.
    """
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True, dtype=np.float64)
    return (e / s).astype(x.dtype, copy=False), m.astype(np.float64), np.log(s)


def softmax_cross_entropy(x, t):
    """Integer labels t (N,): L = mean_n(logsumexp(x_n) - x_n[t_n]); y = softmax(x).   -> (L, y)"""
    y, m, logsum = _softmax(x)
    n = x.shape[0]
    loss = np.mean(logsum[:, 0] + (m[:, 0] - x[np.arange(n), t].astype(np.float64)))
    return float(loss), y


def softmax_cross_entropy_backward(y, t):
    """dx = (y - onehot(t)) / N."""
    n = y.shape[0]
    dx = y.copy()
    dx[np.arange(n), t] -= 1
    return dx / y.dtype.type(n)


def softmax_cross_entropy_onehot(x, t):
    """One-hot labels t (N, C): L = mean_n sum_c t_nc (logsumexp(x_n) - x_nc).   -> (L, y)"""
    y, m, logsum = _softmax(x)
    per_class = logsum + (m - x.astype(np.float64))
    return float(np.mean(np.sum(t * per_class, axis=1))), y


def softmax_cross_entropy_onehot_backward(y, t):
    """dx = (y - t) / N."""
    return ((y - t) / y.shape[0]).astype(y.dtype, copy=False)


# --- Whole nets: a stack of affine layers with one activation, softmax-CE on top --------------

_FORWARD = {RELU: lambda h: relu_forward(h)[0], SIGMOID: sigmoid_forward, TANH: tanh_forward}


def predict_labels(x, weights, biases, activation):
    """argmax_c of the net's scores for each row of x (N, D) -> (N,) int64."""
    h = x
    for layer, (W, b) in enumerate(zip(weights, biases)):
        h = affine_forward(h, W, b)
        if layer < len(weights) - 1:
            h = _FORWARD[activation](h)
    return np.argmax(h, axis=1).astype(np.int64)


def sgd_steps(x, t, batches, weights, biases, activation, lr, losses):
    """One SGD step per row of batches (S, B), layer by layer as the book's TwoLayerNet does it.

    Step s takes rows batches[s] of x (M, D) and labels t (M,), runs forward and backward, stores the
    batch loss (before the update) in losses[s] and updates weights[i] and biases[i] in place:
    W -= lr * dW, b -= lr * db.
    """
    last = len(weights) - 1
    for s in range(batches.shape[0]):
        rows = batches[s]
        h = x[rows]
        inputs, caches = [], []
        for layer in range(last + 1):
            inputs.append(h)
            h = affine_forward(h, weights[layer], biases[layer])
            if layer < last:
                if activation == RELU:
                    h, cache = relu_forward(h)
                elif activation == SIGMOID:
                    h = cache = sigmoid_forward(h)
                else:
                    h = cache = tanh_forward(h)
                caches.append(cache)
        loss, y = softmax_cross_entropy(h, t[rows])
        losses[s] = loss
        dout = softmax_cross_entropy_backward(y, t[rows])
        for layer in range(last, -1, -1):
            if layer > 0:
                dx, dW, db = affine_backward(inputs[layer], weights[layer], dout)
            else:
                dW, db = affine_backward_params(inputs[layer], dout)
            W, b = weights[layer], biases[layer]  # the caller's arrays, updated in place
            W -= lr * dW
            b -= lr * db
            if layer > 0:
                cache = caches[layer - 1]
                if activation == RELU:
                    dout = relu_backward(dx, cache)
                elif activation == SIGMOID:
                    dout = sigmoid_backward(dx, cache)
                else:
                    dout = tanh_backward(dx, cache)


# --- Sparse rows (CSR): row i's nonzeros are values[indptr[i]:indptr[i + 1]] at those columns ----

def compress_rows(x):
    """CSR of x (N, D): (indptr (N + 1,) int64, columns (nnz,) int32, values (nnz,) x.dtype),
    row i's nonzeros at indptr[i]:indptr[i + 1] in increasing column order."""
    rows, columns = np.nonzero(x)
    indptr = np.zeros(x.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=x.shape[0]), out=indptr[1:])
    return indptr, columns.astype(np.int32), x[rows, columns]


def _densify(indptr, columns, values, n_features):
    """The dense (N, n_features) array a CSR triple stands for."""
    x = np.zeros((indptr.size - 1, n_features), values.dtype)
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    x[rows, columns[:indptr[-1]]] = values[:indptr[-1]]
    return x


def csr_affine_forward(indptr, columns, values, W, b):
    """out = X @ W + b for X in CSR form (N rows).   W (D, H), b (H,) -> (N, H)"""
    return affine_forward(_densify(indptr, columns, values, W.shape[0]), W, b)


def csr_affine_backward_params(indptr, columns, values, n_features, dout):
    """dW = X^T @ dout, db = sum_n dout for X in CSR form (N rows, n_features columns).
    -> (dW (n_features, H), db (H,))"""
    return affine_backward_params(_densify(indptr, columns, values, n_features), dout)


def predict_labels_csr(indptr, columns, values, weights, biases, activation):
    """predict_labels with x given as CSR (N rows) -> (N,) int64."""
    return predict_labels(_densify(indptr, columns, values, weights[0].shape[0]), weights, biases,
                          activation)


def sgd_steps_csr(indptr, columns, values, split, t, batches, weights, biases, activation, lr,
                  losses, threads):
    """sgd_steps with the training inputs x (M, D) given as CSR; ``split`` and ``threads`` say how
    the kernel divides the first layer's work and change nothing in the result."""
    x = _densify(indptr, columns, values, weights[0].shape[0])
    sgd_steps(x, t, batches, weights, biases, activation, lr, losses)


# --- Whole nets through the book's API: labels, forward, loss, gradient -------------------------

def index_labels(t, classes):
    """Class indices t (N,) checked: -> (t as int64, the first i with t[i] outside [0, classes),
    or -1)."""
    bad = np.flatnonzero((t < 0) | (t >= classes))
    return t.astype(np.int64), int(bad[0]) if bad.size else -1


def onehot_labels(t):
    """One-hot rows t (N, C) as class indices: -> (indices (N,) int64: each row's first 1, the
    first row that is not zeros and a single one, or -1)."""
    good = ((t == 0) | (t == 1)).all(axis=1) & ((t == 1).sum(axis=1) == 1)
    bad = np.flatnonzero(~good)
    return np.argmax(t == 1, axis=1).astype(np.int64), int(bad[0]) if bad.size else -1


def _activate(h, activation):
    return _FORWARD[activation](h)


def net_scores(x, weights, biases, activation, threads):
    """Every layer's output of the net for x (N, D). -> ([h1, ..., scores], how many entries of x
    are NaN or infinite)"""
    outputs, h = [], x.astype(weights[0].dtype)
    for layer, (W, b) in enumerate(zip(weights, biases)):
        h = affine_forward(h, W, b)
        if layer < len(weights) - 1:
            h = _activate(h, activation)
        outputs.append(h)
    return outputs, int(np.count_nonzero(~np.isfinite(x)))


def net_loss(x, t, weights, biases, activation, threads):
    """Mean softmax cross-entropy of the net on x (N, D), class indices t (N,) int64.
    -> (loss, y = softmax(scores), [h1, ..., scores], how many entries of x are not finite)"""
    outputs, nonfinite = net_scores(x, weights, biases, activation, threads)
    loss, y = softmax_cross_entropy(outputs[-1], t)
    return loss, y, outputs, nonfinite


_BACKWARD = {SIGMOID: sigmoid_backward, TANH: tanh_backward}


def net_gradient(x, t, weights, biases, activation, threads):
    """The loss and its gradient with respect to every weight and bias, by backpropagation.
    -> (loss, y, [h1, ..., scores], [dW1, ...], [db1, ...], how many entries of x are not finite)"""
    loss, y, outputs, nonfinite = net_loss(x, t, weights, biases, activation, threads)
    inputs = [x.astype(weights[0].dtype)] + outputs[:-1]
    dout = softmax_cross_entropy_backward(y, t)
    dWs, dbs = [], []
    for layer in range(len(weights) - 1, -1, -1):
        dW, db = affine_backward_params(inputs[layer], dout)
        dWs.insert(0, dW)
        dbs.insert(0, db)
        if layer > 0:
            dx = dout @ weights[layer].T
            h = outputs[layer - 1]
            dout = relu_backward(dx, h <= 0) if activation == RELU else _BACKWARD[activation](dx, h)
    return loss, y, outputs, dWs, dbs, nonfinite
