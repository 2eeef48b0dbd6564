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
    "net_numerical_gradient", "net_labels",
    "sgd_update", "momentum_update", "nesterov_update", "adagrad_update", "rmsprop_update",
    "adam_update",
    "dropout_forward", "dropout_backward",
    "batchnorm_forward", "batchnorm_forward_inference", "batchnorm_backward",
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


# --- Dropout: keep a unit where its uniform draw exceeds the ratio ------------------------------

def dropout_forward(x, rand, dropout_ratio):
    """Training mode: mask = rand > dropout_ratio;  out = x * mask.   -> (out, mask)"""
    mask = rand > dropout_ratio
    return x * mask, mask


def dropout_backward(dout, mask):
    """dx = dout * mask."""
    return dout * mask


# --- Batch normalisation over the rows of x (N, D) ---------------------------------------------

_BATCHNORM_EPS = 1e-6  # the book's 10e-7


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum):
    """Training mode: mu = mean_n x;  xc = x - mu;  var = mean_n xc^2;  std = sqrt(var + 1e-6);
    xn = xc / std;  out = gamma * xn + beta;  running_mean' = momentum * running_mean
    + (1 - momentum) * mu, running_var' likewise with var.
    x (N, D), the others (D,) -> (out, xc, xn, std, running_mean', running_var')"""
    dtype = x.dtype
    mu = x.mean(axis=0, dtype=np.float64)   # the statistics in float64, as the kernel's sums
    xc64 = x - mu
    var = np.mean(xc64 ** 2, axis=0)
    xc = xc64.astype(dtype)
    std = np.sqrt(var + _BATCHNORM_EPS).astype(dtype)
    xn = xc / std
    out = gamma * xn + beta
    new_mean = (momentum * running_mean + (1 - momentum) * mu).astype(running_mean.dtype)
    new_var = (momentum * running_var + (1 - momentum) * var).astype(running_var.dtype)
    return out, xc, xn, std, new_mean, new_var


def batchnorm_forward_inference(x, gamma, beta, running_mean, running_var):
    """Test mode: out = gamma * (x - running_mean) / sqrt(running_var + 1e-6) + beta."""
    xn = (x - running_mean) / np.sqrt(running_var + _BATCHNORM_EPS)
    return (gamma * xn + beta).astype(x.dtype, copy=False)


def batchnorm_backward(dout, gamma, xc, xn, std):
    """dbeta = sum_n dout;  dgamma = sum_n xn * dout;  dxn = gamma * dout;
    dvar = -0.5 * sum_n(dxn * xc) / std^3;  dxc = dxn / std + (2 / N) * xc * dvar;
    dx = dxc - mean_n dxc.   dout, xc, xn (N, D), gamma, std (D,) -> (dx, dgamma, dbeta)

    In float64 throughout, results in dout's dtype (for small batches dx is a small difference
    of large terms)."""
    n, dtype = dout.shape[0], dout.dtype
    dout, gamma, xc, xn, std = (a.astype(np.float64) for a in (dout, gamma, xc, xn, std))
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(xn * dout, axis=0)
    dxn = gamma * dout
    dvar = -0.5 * np.sum(dxn * xc, axis=0) / (std * std * std)
    dxc = dxn / std + (2.0 / n) * xc * dvar
    dx = dxc - np.sum(dxc, axis=0) / n
    return dx.astype(dtype), dgamma.astype(dtype), dbeta.astype(dtype)


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


def sgd_steps(x, t, batches, weights, biases, activation, update, losses):
    """One training step per row of batches (S, B), layer by layer as the book's nets and loop do.

    Step s takes rows batches[s] of x (M, D) and labels t (M,), runs forward and backward, stores the
    batch loss (before the update) in losses[s], adds weight decay to every dW and updates
    weights[i] and biases[i] in place by the ``update`` rule (rule, hyper, w_state, b_state; see
    kernels/step.py): SGD W -= lr * dW, or one of the book's optimizers.
    """
    rule, hyper, w_state, b_state = update
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
        grads = [None] * (last + 1)
        for layer in range(last, -1, -1):
            if layer > 0:
                dx, dW, db = affine_backward(inputs[layer], weights[layer], dout)
            else:
                dW, db = affine_backward_params(inputs[layer], dout)
            grads[layer] = (dW + hyper[3] * weights[layer] if hyper[3] else dW, db)
            if layer > 0:
                cache = caches[layer - 1]
                if activation == RELU:
                    dout = relu_backward(dx, cache)
                elif activation == SIGMOID:
                    dout = sigmoid_backward(dx, cache)
                else:
                    dout = tanh_backward(dx, cache)
        _update(rule, hyper, hyper[4] + s + 1, weights, biases, grads, w_state, b_state)


_STATE_SLOTS = (0, 1, 1, 1, 1, 2)   # state arrays per parameter of each rule (kernels/step.py)


def _update(rule, hyper, iteration, weights, biases, grads, w_state, b_state):
    """The book's optimizer.update over every parameter (W1 b1 W2 b2 ...) at once."""
    rules = (sgd_update, momentum_update, nesterov_update, adagrad_update, rmsprop_update,
             adam_update)
    layers = len(weights)
    params, flat_grads = [], []
    slots = [[] for _ in range(_STATE_SLOTS[rule])]
    for layer in range(layers):
        for p, g, state in ((weights[layer], grads[layer][0], w_state),
                            (biases[layer], grads[layer][1], b_state)):
            params.append(p.reshape(-1))
            flat_grads.append(g.reshape(-1).astype(p.dtype))
            for slot, kept in enumerate(slots):
                kept.append(state[slot * layers + layer].reshape(-1))
    hyper_args = {0: (hyper[0],), 1: (hyper[0], hyper[1]), 2: (hyper[0], hyper[1]),
                  3: (hyper[0],), 4: (hyper[0], hyper[1]),
                  5: (hyper[0], hyper[1], hyper[2], iteration)}[rule]
    rules[rule](tuple(params), tuple(flat_grads), *(tuple(k) for k in slots), *hyper_args)


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


def sgd_steps_csr(indptr, columns, values, t, batches, weights, biases, activation, update, losses):
    """sgd_steps with the training inputs x (M, D) given as CSR."""
    x = _densify(indptr, columns, values, weights[0].shape[0])
    sgd_steps(x, t, batches, weights, biases, activation, update, losses)


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


def net_scores(x, weights, biases, activation):
    """Every layer's output of the net for x (N, D). -> ([h1, ..., scores], how many entries of x
    are NaN or infinite)"""
    outputs, h = [], x.astype(weights[0].dtype)
    for layer, (W, b) in enumerate(zip(weights, biases)):
        h = affine_forward(h, W, b)
        if layer < len(weights) - 1:
            h = _activate(h, activation)
        outputs.append(h)
    return outputs, int(np.count_nonzero(~np.isfinite(x)))


def net_loss(x, t, weights, biases, activation):
    """Mean softmax cross-entropy of the net on x (N, D), class indices t (N,) int64.
    -> (loss, y = softmax(scores), [h1, ..., scores], how many entries of x are not finite)"""
    outputs, nonfinite = net_scores(x, weights, biases, activation)
    loss, y = softmax_cross_entropy(outputs[-1], t)
    return loss, y, outputs, nonfinite


_BACKWARD = {SIGMOID: sigmoid_backward, TANH: tanh_backward}


def net_gradient(x, t, weights, biases, activation):
    """The loss and its gradient with respect to every weight and bias, by backpropagation.
    -> (loss, y, [h1, ..., scores], [dW1, ...], [db1, ...], how many entries of x are not finite)"""
    loss, y, outputs, nonfinite = net_loss(x, t, weights, biases, activation)
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


# --- Optimizers (the book's chapter 6), one call over all parameters -----------------------------
# params, grads and every state tuple hold 1-d arrays of one dtype, index by index alike; all are
# updated in place, operation for operation in the book's order. Scalars are rounded to the arrays'
# dtype first, so float32 stays float32 (in float64 nothing changes).

_OPTIMIZER_EPS = 1e-7


def _scalars(a, *values):
    return [a.dtype.type(value) for value in values]


def sgd_update(params, grads, lr):
    """p -= lr * g for every (p, g) of params, grads."""
    lr, = _scalars(params[0], lr)
    for p, g in zip(params, grads):
        p -= lr * g


def momentum_update(params, grads, v, lr, momentum):
    """v = momentum * v - lr * g;  p += v."""
    lr, momentum = _scalars(params[0], lr, momentum)
    for p, g, vi in zip(params, grads, v):
        vi[...] = momentum * vi - lr * g
        p += vi


def nesterov_update(params, grads, v, lr, momentum):
    """p += momentum^2 * v;  p -= (1 + momentum) * lr * g;  v = momentum * v - lr * g."""
    momentum_sq, lr_ahead = _scalars(params[0], momentum * momentum, (1 + momentum) * lr)
    lr, momentum = _scalars(params[0], lr, momentum)
    for p, g, vi in zip(params, grads, v):
        p += momentum_sq * vi
        p -= lr_ahead * g
        vi *= momentum
        vi -= lr * g


def adagrad_update(params, grads, h, lr):
    """h += g * g;  p -= lr * g / (sqrt(h) + 1e-7)."""
    lr, eps = _scalars(params[0], lr, _OPTIMIZER_EPS)
    for p, g, hi in zip(params, grads, h):
        hi += g * g
        p -= lr * g / (np.sqrt(hi) + eps)


def rmsprop_update(params, grads, h, lr, decay_rate):
    """h *= decay_rate;  h += (1 - decay_rate) * g * g;  p -= lr * g / (sqrt(h) + 1e-7)."""
    one_minus_decay, = _scalars(params[0], 1 - decay_rate)
    lr, decay_rate, eps = _scalars(params[0], lr, decay_rate, _OPTIMIZER_EPS)
    for p, g, hi in zip(params, grads, h):
        hi *= decay_rate
        hi += one_minus_decay * g * g
        p -= lr * g / (np.sqrt(hi) + eps)


def adam_update(params, grads, m, v, lr, beta1, beta2, iteration):
    """Step ``iteration`` (1, 2, ...): lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t);
    m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g * g - v);  p -= lr_t * m / (sqrt(v) + 1e-7)."""
    lr_t = lr * np.sqrt(1.0 - beta2 ** iteration) / (1.0 - beta1 ** iteration)
    lr_t, one_minus_beta1, one_minus_beta2, eps = _scalars(
        params[0], lr_t, 1.0 - beta1, 1.0 - beta2, _OPTIMIZER_EPS)
    for p, g, mi, vi in zip(params, grads, m, v):
        mi += one_minus_beta1 * (g - mi)
        vi += one_minus_beta2 * (g * g - vi)
        p -= lr_t * mi / (np.sqrt(vi) + eps)


def net_numerical_gradient(x, t, weights, biases, activation, step, book):
    """The book's numerical gradient of the mean cross-entropy (the book's, log(y + 1e-7), if
    ``book``, else the exact one), every weight and bias shifted by
    +-step in turn (and restored exactly), and which shifts flip a ReLU (a hidden input within
    step of 0: the central difference straddles the kink there).
    -> ([dW1, ...], [db1, ...], [W1 kinks, ...], [b1 kinks, ...])"""
    hidden = net_scores(x, weights, biases, activation)[0][:-1]
    relu_off = [h <= 0 for h in hidden]

    def shifted_loss():
        loss, y, outputs, _ = net_loss(x, t, weights, biases, activation)
        if book:
            loss = -np.mean(np.log(y[np.arange(len(t)), t].astype(np.float64) + 1e-7))
        flipped = activation == RELU and any(((h <= 0) != off).any()
                                             for h, off in zip(outputs[:-1], relu_off))
        return loss, flipped

    def central(p):
        grad, kinks = np.empty_like(p), np.zeros(p.shape, bool)
        for i in np.ndindex(p.shape):
            keep = p[i]
            p[i] = keep + step
            above, flipped_above = shifted_loss()
            p[i] = keep - step
            below, flipped_below = shifted_loss()
            p[i] = keep
            grad[i] = (above - below) / (2 * step)
            kinks[i] = flipped_above or flipped_below
        return grad, kinks
    ws, bs = [central(W) for W in weights], [central(b) for b in biases]
    return [g for g, _ in ws], [g for g, _ in bs], [k for _, k in ws], [k for _, k in bs]


def net_labels(x, weights, biases, activation):
    """argmax_c of the net's scores for each row of x (N, D) -> (N,) int64."""
    return predict_labels(x.astype(weights[0].dtype), weights, biases, activation)
