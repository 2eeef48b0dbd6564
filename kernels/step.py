"""Whole-net kernels: SGD steps over many mini-batches, and prediction, in compiled code.

The net is a stack of affine layers (weights[i] (D_i, D_i+1), biases[i]) with one activation
between them (0 relu, 1 sigmoid, 2 tanh) and softmax cross-entropy on top; weights and biases
arrive as tuples of the caller's arrays (C-contiguous, one dtype), which are updated in place.
Tuples, not numba typed Lists: a typed List is compiled anew in every process (~1 s per start),
while a function taking a tuple is compiled once per number of layers and then cached.
The fused kernels build on the layer kernels' formulas (activations, softmax_ce) and on
sparse.py's tile loops; _config.py stamps every cached kernel with the digest of all of kernels/,
so editing any of those files recompiles these too.
"""
import numba
import numpy as np
from numba import types
from numba.np.linalg import ensure_blas

from . import _simd as simd
from . import _sync, optimizers, sparse
from ._config import jit, jit_borrowing
from .activations import sigmoid_scalar, tanh_scalar
from .softmax_ce import _softmax_rows, cross_entropy_term
from .sparse import STORE, STORE_RELU, STORE_RELU_MASKED

RELU, SIGMOID, TANH = 0, 1, 2

# BLAS gemm through the entry point Numba's own np.dot uses (SciPy's cython_blas underneath),
# declared with alpha/beta and transpose flags, which np.dot does not expose. Being a named
# external symbol (not a ctypes pointer), it keeps the kernels cacheable.
ensure_blas()
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char,             # kind ('s' or 'd'), transa, transb
    types.intp, types.intp, types.intp,             # m, n, k
    types.voidptr, types.voidptr, types.intp,       # alpha, a, lda
    types.voidptr, types.intp,                      # b, ldb
    types.voidptr, types.voidptr, types.intp))      # beta, c, ldc
_KIND_S, _KIND_D, _N, _T = ord("s"), ord("d"), ord("n"), ord("t")


@jit_borrowing
def _activate(h, activation):
    """h = f(h) in place."""
    n, m = h.shape
    for i in range(n):
        for j in range(m):
            v = h[i, j]
            if activation == RELU:
                h[i, j] = 0 if v <= 0 else v  # NaN stays NaN, as in the book's mask (x <= 0)
            elif activation == SIGMOID:
                h[i, j] = sigmoid_scalar(v)
            else:
                h[i, j] = tanh_scalar(v)


@jit_borrowing
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


def _gemm_numpy(a, trans_a, b, trans_b, c, alpha, beta):
    """_gemm for NUMBA_DISABLE_JIT=1 runs, where the BLAS symbol cannot be called from Python.
    alpha and beta in c's dtype, as BLAS takes them (lr=1e39 is inf in float32)."""
    with np.errstate(over="ignore"):
        alpha, beta = c.dtype.type(alpha), c.dtype.type(beta)
    product = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
    c[...] = product if beta == 0 else product + beta * c  # like BLAS, beta = 0 never reads c


@jit
def _gemm(a, trans_a, b, trans_b, c, alpha, beta):
    """c = alpha * op(a) @ op(b) + beta * c, row-major arrays whose rows are contiguous (C-contiguous
    ones, or blocks of them such as x[:, p0:p1]), op(m) = m.T if trans.

    BLAS sees a row-major matrix as its transpose in column-major order, so it is asked for
    c.T = op(b).T @ op(a).T, each matrix's leading dimension its row stride. ``beta = 1`` lets
    one call apply an SGD update in place (W = W - lr * x.T @ dout) without a gradient buffer;
    the transposes cost no copies.
    """
    k = a.shape[0] if trans_a else a.shape[1]
    scalars = np.empty(2, c.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    _xxgemm(_KIND_S if c.itemsize == 4 else _KIND_D,
            _T if trans_b else _N, _T if trans_a else _N,
            c.shape[1], c.shape[0], k,
            scalars[0:].ctypes, b.ctypes, _leading(b), a.ctypes, _leading(a),
            scalars[1:].ctypes, c.ctypes, _leading(c))


@jit
def _leading(m):
    """BLAS's leading dimension of a row-major matrix m: its row stride in elements (at least 1,
    at least its row length, as BLAS requires even of a matrix with one row)."""
    return max(1, m.shape[1], m.strides[0] // m.itemsize)


if numba.config.DISABLE_JIT:
    _gemm = _gemm_numpy  # noqa: F811


@jit
def _affine_into(h, W, b, out):
    """out = h @ W + b (bias first, then the product accumulated onto it)."""
    n, m = out.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = b[j]
    _gemm(h, False, W, False, out, 1.0, 1.0)


@jit
def _argmax_rows_into(h, labels, start):
    """labels[start + i] = argmax_c h[i, c] for every row i of h (the first of equal maxima)."""
    for i in range(h.shape[0]):
        best = 0
        for j in range(1, h.shape[1]):
            if h[i, j] > h[i, best]:
                best = j
        labels[start + i] = best


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
            out = np.empty((h.shape[0], weights[layer].shape[1]), h.dtype)
            _affine_into(h, weights[layer], biases[layer], out)
            if layer < last:
                _activate(out, activation)
            h = out
        _argmax_rows_into(h, labels, start)
    return labels


# --- Update rules: the book's optimizers, applied inside the step ---------------------------------
#
# A step's ``update`` is a tuple (rule, hyper, w_state, b_state): rule one of the codes below;
# hyper float64 (lr, a, b, weight_decay, iteration) with a, b the rule's own (momentum; decay_rate;
# beta1, beta2) and iteration the Adam steps taken before this call; w_state and b_state the
# rule's state arrays (Momentum/Nesterov v, AdaGrad/RMSprop h, Adam m and v), two slots per
# layer, slot-major (slot 0 of every layer, then slot 1), shaped like W and b (zero-size where the
# rule keeps no state). Weight decay adds weight_decay * W to every dW, as the book's
# MultiLayerNet. Plain SGD without decay updates W in the product itself; the others compute
# dW, then apply the rule: kernels/optimizers.py's per-array updates, the book's formulas.

SGD, MOMENTUM, NESTEROV, ADAGRAD, RMSPROP, ADAM = 0, 1, 2, 3, 4, 5
LR, RULE_A, RULE_B, WEIGHT_DECAY, ITERATION = 0, 1, 2, 3, 4   # positions in hyper


def plain_sgd(lr, weights, biases):
    """The update tuple of SGD with learning rate lr and no weight decay (no state)."""
    none_w = np.empty((0, 0), weights[0].dtype)
    none_b = np.empty(0, weights[0].dtype)
    layers = len(weights)
    return (SGD, np.array([lr, 0.0, 0.0, 0.0, 0.0]), (none_w,) * (2 * layers),
            (none_b,) * (2 * layers))


@jit_borrowing
def _apply_rule(rule, hyper, iteration, p, g, s1, s2):
    """The rule's update of parameter p (1-d) by its gradient g, state s1, s2 (1-d), in place;
    ``iteration`` is Adam's step number t (1, 2, ...)."""
    lr = optimizers._rounded(p, hyper[LR])
    eps = optimizers._rounded(p, optimizers.EPS)
    a = hyper[RULE_A]
    if rule == SGD:
        optimizers._sgd_array(p, g, lr)
    elif rule == MOMENTUM:
        optimizers._momentum_array(p, g, s1, lr, optimizers._rounded(p, a))
    elif rule == NESTEROV:
        optimizers._nesterov_array(p, g, s1, lr, optimizers._rounded(p, a),
                                   optimizers._rounded(p, a * a),
                                   optimizers._rounded(p, (1 + a) * hyper[LR]))
    elif rule == ADAGRAD:
        optimizers._adagrad_array(p, g, s1, lr, eps)
    elif rule == RMSPROP:
        optimizers._rmsprop_array(p, g, s1, lr, optimizers._rounded(p, a),
                                  optimizers._rounded(p, 1 - a), eps)
    else:
        b = hyper[RULE_B]
        lr_t = optimizers._rounded(p, optimizers._adam_step_size(hyper[LR], a, b, iteration))
        optimizers._adam_array(p, g, s1, s2, lr_t, optimizers._rounded(p, 1.0 - a),
                               optimizers._rounded(p, 1.0 - b), eps)


@jit_borrowing
def _add_decay(g, W, decay):
    """g += decay * W (the book's weight decay term of dW), arrays of one shape."""
    gf, Wf = g.reshape(-1), W.reshape(-1)
    for j in range(gf.size):
        gf[j] += decay * Wf[j]


# The stages of one SGD step, in order. sgd_steps runs them all; ``fastbp bench --profile`` runs
# prefixes of them (_sgd_step_stages with upto < BIASES) to measure what each stage adds.
GATHER, FORWARD, LOSS, BACKWARD, WEIGHTS, BIASES = 1, 2, 3, 4, 5, 6


@jit
def _gather_rows(x, rows, out):
    """out[i] = x[rows[i]]. Element loops: a row-slice copy (out[i, :] = x[r]) measured 2x slower."""
    for i in range(out.shape[0]):
        r = rows[i]
        for j in range(out.shape[1]):
            out[i, j] = x[r, j]


@jit_borrowing
def _softmax_ce_rows(scores, t, rows, d, maxes, logsums, terms, a, b):
    """Rows a:b of d = (softmax(scores) - onehot(t[rows])) / N, and each row's cross-entropy in
    terms (_mean_in_order: the mean loss). The softmax rows are the layer kernel's
    (softmax_ce._softmax_rows); maxes, logsums and terms are (N,) float64 scratch."""
    classes = scores.shape[1]
    _softmax_rows(scores[a:b], d[a:b], maxes[a:b], logsums[a:b])
    inv = 1.0 / scores.shape[0]
    for i in range(a, b):
        label = t[rows[i]]
        terms[i] = cross_entropy_term(logsums[i], maxes[i], scores[i, label])
        for j in range(classes):
            d[i, j] = d[i, j] * inv
        d[i, label] -= inv


@jit_borrowing
def _mean_in_order(terms):
    """The rows' cross-entropies summed in their order, over N (fit's steps and the nets' team
    calls: the same mean of the same terms)."""
    total = 0.0
    for i in range(terms.size):
        total += terms[i]
    return total / terms.size


@jit
def _sgd_step_stages(x, t, batches, weights, biases, activation, update, losses, upto):
    """sgd_steps doing only the stages GATHER..upto of every step (upto = BIASES: all of them)."""
    rule, hyper, w_state, b_state = update
    lr, decay = hyper[LR], hyper[WEIGHT_DECAY]
    fused = rule == SGD and decay == 0   # W -= lr x.T @ d in one product, no dW
    last = len(weights) - 1
    steps, size = batches.shape
    dtype = x.dtype
    grads = [np.zeros_like(weights[0])]
    grads.pop()
    for layer in range(last + 1):
        grads.append(np.empty((0, 0) if fused else weights[layer].shape, dtype))
    widest = 0
    for layer in range(last + 1):
        widest = max(widest, biases[layer].size)
    db = np.empty(0 if fused else widest, dtype)
    # acts[0] is the gathered batch, acts[i + 1] the output of layer i; douts[i] its gradient.
    acts = [np.empty((size, x.shape[1]), dtype)]
    douts = []
    for layer in range(last + 1):
        acts.append(np.empty((size, weights[layer].shape[1]), dtype))
        douts.append(np.zeros((size, weights[layer].shape[1]), dtype))
    maxes, logsums, terms = (np.empty(size, np.float64), np.empty(size, np.float64),
                             np.empty(size, np.float64))
    for s in range(steps):
        rows = batches[s]
        _gather_rows(x, rows, acts[0])
        if upto >= FORWARD:
            for layer in range(last + 1):
                _affine_into(acts[layer], weights[layer], biases[layer], acts[layer + 1])
                if layer < last:
                    _activate(acts[layer + 1], activation)
        if upto >= LOSS:
            _softmax_ce_rows(acts[last + 1], t, rows, douts[last], maxes, logsums, terms, 0, size)
            losses[s] = _mean_in_order(terms)
        if upto < BACKWARD:
            continue
        for layer in range(last, -1, -1):
            d = douts[layer]
            W, b = weights[layer], biases[layer]
            if layer > 0:  # dx with the weights of this step, before the update
                _gemm(d, False, W, True, douts[layer - 1], 1.0, 0.0)
            iteration = hyper[ITERATION] + s + 1
            if upto >= WEIGHTS:
                if fused:
                    _gemm(acts[layer], True, d, False, W, -lr, 1.0)  # W -= lr * x.T @ d, one call
                else:
                    g = grads[layer]
                    _gemm(acts[layer], True, d, False, g, 1.0, 0.0)
                    if decay != 0:
                        _add_decay(g, W, decay)
                    _apply_rule(rule, hyper, iteration, W.reshape(-1), g.reshape(-1),
                                w_state[layer].reshape(-1), w_state[last + 1 + layer].reshape(-1))
            if upto >= BIASES:
                width = W.shape[1]
                if fused:
                    for j in range(width):
                        total = d[0, j]
                        for i in range(1, size):
                            total += d[i, j]
                        b[j] -= lr * total
                else:
                    g = db[:width]
                    for j in range(width):
                        total = d[0, j]
                        for i in range(1, size):
                            total += d[i, j]
                        g[j] = total
                    _apply_rule(rule, hyper, iteration, b, g, b_state[layer],
                                b_state[last + 1 + layer])
            if layer > 0:
                _activation_backward(douts[layer - 1], acts[layer], activation)


@jit
def sgd_steps(x, t, batches, weights, biases, activation, update, losses):
    """One training step per row of batches (S, B); losses[s] = batch loss before the update.

    Step s: forward on rows batches[s] of x (M, D) with labels t (M,), softmax-CE, backward, then
    every layer's W and b updated in place by the ``update`` rule (see plain_sgd and the notes
    above: SGD W -= lr * dW, or one of the book's optimizers, with optional weight decay).
    """
    _sgd_step_stages(x, t, batches, weights, biases, activation, update, losses, BIASES)


# --- The same step with the training inputs as nonzero lists (CSR, see kernels/sparse.py) -------
#
# Every layer's input is a CSR batch: the dataset's rows for the first layer (compressed once, so
# a step gathers nothing), the previous layer's output compressed for the others (ReLU leaves about
# half of it zero). Products run as sparse.py's tile loops instead of BLAS.
#
# The steps run on the calling thread and, when fastbp runs two threads, on a helper thread too,
# as a team (team_steps_csr, kernels/_sync.py): a step is three stages of two parts each, and the
# caller computes any part the helper has not claimed, so a helper without a core never holds a
# step up. BLAS's threads and a Numba prange over two column parts of W were tried
# first: each collapsed 14-25x when another process kept the second core busy, as they wait for
# a parked thread; and Numba's parallel=True regions cannot stay anyway, as a cached kernel calling
# one crashed when a new caller in another process linked it (numba#8578). The first layer's
# parts are its input pixels below and from a split (halfway_column), not the batch's rows: then
# each thread reads and writes only its own rows of W, which stay in its core's cache (split by
# rows, a step's weight update went no faster on two threads than on one: every row of W it wrote
# was next read by the other core).
#
# The weights are updated in 64-byte-aligned copies whose rows are padded to whole 64-byte lines
# (see _aligned_rows): a row update that straddles cache lines (a 50-float row is 200 bytes)
# measured 1.8x slower.

@jit
def _aligned_rows(rows, width, like, zeroed=True):
    """A (rows, stride) array of like's dtype, zeroed unless not ``zeroed``, 64-byte aligned, its
    rows an odd number of 64-byte lines long, the least that holds the tiles the tile loops cover
    ``width`` elements with (kernels/sparse.py _slice_bytes).

    Odd: rows whose length is a power of two map onto the same cache sets and alias every 4 KiB
    (a 256 x 128 float32 transpose took 92 us with a 512-byte stride, 9 us with 576). The tiles:
    a row update's tile masked past the row's end must not reach into the next row, even with
    its lanes masked off: the next update, often of the next row, then waits for that store to
    retire (on a 2-core Zen 4, float64 rows of 50 (a 512-byte tile) in 448-byte rows took 138 us
    for a batch's first-layer weight gradient, in 576-byte rows ~100)."""
    per_line = 64 // like.itemsize
    tiled, left = 0, width * like.itemsize
    while left > 0:   # (each tile a whole number of lines, together at least the row)
        size = sparse._slice_bytes(left)
        tiled += size
        left -= size
    lines = tiled // 64
    stride = (lines + 1 - lines % 2) * per_line
    size = rows * stride + per_line
    flat = np.zeros(size, like.dtype) if zeroed else np.empty(size, like.dtype)
    shift = (-flat.ctypes.data) % 64 // flat.itemsize
    return flat[shift:shift + rows * stride].reshape(rows, stride)


@jit_borrowing
def _copy_rows(a, p0, p1, out):
    """out[p0:p1, :w] = a[p0:p1, :w], w the narrower of the two's widths: element by element,
    which LLVM vectorises (a slice assignment of the blocks took 2.4x as long)."""
    for r in range(p0, p1):
        for c in range(min(a.shape[1], out.shape[1])):
            out[r, c] = a[r, c]


@jit_borrowing
def _transpose_into(W, width, out):
    """out[c, p] = W[p, c] for p < W.shape[0], c < width."""
    _transpose_rows_into(W, 0, W.shape[0], width, out)


@jit_borrowing
def _transpose_rows_into(W, p0, p1, width, out):
    """out[c, p] = W[p, c] for p in p0:p1, c < width."""
    for p in range(p0, p1):
        for c in range(width):
            out[c, p] = W[p, c]


@jit_borrowing
def _times(lo, hi, columns, values, W, b, width, out, epilogue, h):
    """out = epilogue(X @ W[:, :width] + b), X's rows lo[r]:hi[r] (see sparse._rows_times)."""
    sparse._rows_times(lo, hi, columns, values, W, W.shape[1], b, width, out, width, epilogue, h)


@jit
def _epilogue(last, activation):
    """What a layer's product does with its sums: ReLU on the way out unless ``last``."""
    return STORE_RELU if not last and activation == RELU else STORE


@jit_borrowing
def _layer_into(lo, hi, columns, values, W, b, last, activation, out):
    """A layer's output into out (R, H), one row per input row given as the slice lo[r]:hi[r] of
    nonzero lists, W (D, >= H); the activation unless ``last``."""
    _times(lo, hi, columns, values, W, b, out.shape[1], out, _epilogue(last, activation), out)
    if not last and activation != RELU:
        _activate(out, activation)


@jit_borrowing
def _dense_layer_into(h, W, b, last, activation, out):
    """_layer_into for a narrow layer (sparse._reads_dense), reading its input h (R, D) as it is."""
    sparse._dense_times(h, 0, h.shape[1], W, W.shape[1], b, out)
    if not last:
        _activate(out, activation)


@jit_borrowing
def _join_halves(out, above, a, b, last, activation):
    """out[a:b] += above[a:b] (the first layer's sums over its input's two column halves), then
    the activation unless ``last``."""
    width = out.shape[1]
    tile = simd.zeros(out, 64)
    relu = not last and activation == RELU
    for r in range(a, b):
        for c0 in range(0, width, simd.lanes(tile)):
            o = r * width + c0
            sums = simd.add(simd.load(tile, out, o, width - c0), simd.load(tile, above, o, width - c0))
            simd.store(out, o, width - c0, simd.relu(sums) if relu else sums)
    if not last and activation != RELU:
        _activate(out[a:b], activation)


@jit_borrowing
def _gradient_below_rows(d, a, b, lists, WT, h_below, d_below, activation):
    """Rows a:b of a layer's input gradient, d_below = (d @ W.T) * f'(h_below), from rows a:b of
    its output gradient d (N, H) made into the nonzero lists ``lists`` (columns, values, lo, hi:
    row r's from position r * H on, so two threads can each take a range of rows) and W.T (H,
    D) padded rows (step._aligned_rows), taken before W's update."""
    columns, values, lo, hi = lists
    sparse._compress_rows_into(d, a, b, columns, values, lo, hi)
    epilogue = STORE_RELU_MASKED if activation == RELU else STORE
    _times(lo[a:b], hi[a:b], columns, values, WT, d[0, :0], d_below.shape[1], d_below[a:b],
           epilogue, h_below[a:b])
    if activation != RELU:
        _activation_backward(d_below[a:b], h_below[a:b], activation)


@jit_borrowing
def _add_outer(cuts, columns, values, D, W, width, scale):
    """W[:, :width] += scale X^T D, X's rows as the cut table ``cuts`` (see sparse._add_outer)."""
    sparse._add_outer(cuts, columns, values, D, width, W, W.shape[1], width, scale)


def csr_workspace(values, weights, w_state, size, fused, cut_columns, split):
    """What team_steps_csr computes in, made once per call and shared by the two threads of a
    team: (per layer: (padded W, padded dW (no rows if ``fused``), padded W.T (none for the first
    layer), outputs, output gradients, its input's nonzero lists (columns, values; none for the
    first layer, which reads the dataset's, or for a narrow one, which reads its input as it is:
    sparse._reads_dense), ``bounds`` (4, N): row r's nonzeros below the layer's split are
    bounds[0, r]:bounds[1, r], the rest bounds[2, r]:bounds[3, r] (none for the first layer), the
    part-1 partial sums (N, width; the first layer's only), its output gradient's nonzero lists
    (columns, values, lo, hi; none for the first layer)), the rule's state padded (slot-major, as
    w_state), (db, softmax scratch maxes, logsums and the rows' losses, per part a layer's input
    lists regrouped by column (sparse._column_lists: starts, rows, values) and per layer its
    output gradient in padded rows, for the layers that regroup (_regroups), and per part the cut
    table of the batch's dataset rows in the first layer (_dataset_chunks): the chunks of
    ``cut_columns`` (first_cut_columns) below and from the first layer's ``split``))."""
    dtype = values.dtype
    last = len(weights) - 1
    layers = []
    for layer, W in enumerate(weights):
        below, width = W.shape
        inputs = 0 if layer == 0 or sparse._reads_dense(width, values.itemsize) else size * below
        above = 0 if layer == 0 else size   # (rows of what only the layers above the first keep)
        layers.append((_aligned_rows(below, width, values),
                       _aligned_rows(0 if fused else below, width, values),
                       _aligned_rows(0 if layer == 0 else width, below, values),
                       np.empty((size, width), dtype), np.zeros((size, width), dtype),
                       np.empty(inputs, np.int32), np.empty(inputs, dtype),
                       np.empty((4, above), np.int64),
                       np.empty((size if layer == 0 else 0, width), dtype),
                       (np.empty(above * width, np.int32), np.empty(above * width, dtype),
                        np.empty(above, np.int64), np.empty(above, np.int64))))
    states = tuple(_aligned_rows(w_state[slot * (last + 1) + layer].shape[0], weights[layer].shape[1],
                                 values) for slot in range(2) for layer in range(last + 1))
    widest = max(W.shape[1] for W in weights)
    below_split = int(np.searchsorted(cut_columns, split))   # (the chunks below it)
    wide = [_regroups(W.shape[1], values.itemsize) for W in weights]
    tallest = max([W.shape[0] for W, regroup in zip(weights, wide) if regroup], default=0)
    regrouped = tuple((np.empty(tallest + 2, np.int64), np.empty(size * tallest, np.int32),
                       np.empty(size * tallest, dtype),
                       tuple(_aligned_rows(size if regroup else 0, W.shape[1], values, False)
                             for W, regroup in zip(weights, wide)))
                      for part in range(2))
    shared = (np.empty(0 if fused else widest, dtype),
              np.empty(size, np.float64), np.empty(size, np.float64), np.empty(size, np.float64),
              regrouped, (np.empty((below_split + 1, size), np.int64),
                          np.empty((cut_columns.size - below_split, size), np.int64)))
    return tuple(layers), states, shared


def halfway_column(columns, width):
    """The column below which half of a dataset's nonzeros lie (columns: its nonzero lists'),
    where fit cuts the first layer's weights in two."""
    if not columns.size:
        return width // 2
    return int(np.searchsorted(np.cumsum(np.bincount(columns, minlength=width)), columns.size / 2))


@jit_borrowing
def _first_from(columns, low, high, split):
    """The first k in low:high with columns[k] >= split (columns increasing there), else high."""
    while low < high:
        m = (low + high) // 2
        if columns[m] < split:
            low = m + 1
        else:
            high = m
    return low


def first_cut_columns(split, width):
    """Where fit cuts the first layer's input lists, as columns (increasing): every CHUNK-th
    column (the layer's products go chunk by chunk: sparse.CHUNK), the split (where its two parts
    meet: halfway_column) and ``width`` (the lists' ends). Part 0 takes the chunks below the
    split, part 1 the rest."""
    return np.array(sorted(set(range(0, width, sparse.CHUNK)) | {split, width}), np.int64)


@jit
def chunk_cuts(indptr, columns, cut_columns, rows):
    """Where the dataset rows ``rows`` (1-D) of a dataset's nonzero lists (indptr, columns: CSR)
    reach each of ``cut_columns`` (increasing; first_cut_columns): cuts[r, j] is the first k of
    row r's list with columns[k] >= cut_columns[j] (its end if none); the other rows' entries
    are 0. fit's steps take each batch row's cuts from here (_dataset_chunks): its TrainingSet
    makes them once for every row (~25 ms and 7 MB for MNIST's 60,000)."""
    cuts = np.zeros((indptr.size - 1, cut_columns.size), np.int64)
    for r in rows:
        k, end = indptr[r], indptr[r + 1]
        for j in range(cut_columns.size):
            while k < end and columns[k] < cut_columns[j]:
                k += 1
            cuts[r, j] = k
    return cuts


@jit_borrowing
def _dataset_chunks(cuts, rows, part, table):
    """Part ``part``'s cut table (table (J, N): see sparse._chunked_times) of the dataset rows
    ``rows``: its chunks of their nonzero lists, from chunk_cuts's ``cuts`` (the first J columns
    for part 0, the last J for part 1: the two share the split's). (Searching each batch row's
    list for the split instead took ~10 us a step and part (1.6 on rows already in cache): the
    probes wait on each other, and a random row of the dataset is in no cache. Measured on a
    2-core Zen 4, fit 784-50-10 float32 MNIST-like, batch 100: the first layer's forward stage
    44 -> 28 us, 53 -> 40 in a slow phase of the VM; a step 101-110 -> 92-103.)"""
    j0 = 0 if part == 0 else cuts.shape[1] - table.shape[0]
    for r in range(rows.size):
        row = rows[r]
        for j in range(table.shape[0]):
            table[j, r] = cuts[row, j0 + j]


@jit_borrowing
def _first_part(work, part, cuts, columns, values, rows, biases):
    """Part ``part`` of the first layer's output: the sums over the dataset columns below its
    split plus the bias (part 0, into the outputs) or over the rest (part 1, into the partial
    sums), so each thread reads only its own rows of W (they stay in its core's cache).

    Row by row for rows of W up to ROW_UPDATES_UP_TO bytes, above it chunk by chunk
    (sparse._chunked_times: the same sums in the same order). The batch's rows of the dataset
    are in no cache yet: the row loop asks for the next rows' lists as it goes, while each
    chunk's pass waits on every row's lists, which a narrow row's few cycles a nonzero do not
    repay. Measured on a 2-core Zen 5, fit MNIST-like, a step's time chunk by chunk over row by
    row (medians of 20-24 turns of 250-300 steps each way in one process): float32 784-H-10 with
    H = 50 1.09, 64 1.19, 100 1.16, 128 (512-byte rows) 1.08, 160 0.92, 192 0.96, 784-256-128-10
    0.93; float64 784-50-10 1.17, 784-100-10 0.93. (With every row's lists in cache, chunk by
    chunk wins for 784-50-10 too: 21.5 us against 27.6 for the stage; asking for the next step's
    lists during this step's weight updates did not get them there soon enough: 86-101 us a step
    against 83-91. Two rows at a time, row by row, took 12 % less for a 50-wide product, the
    same numbers, ~3 % of a step: a nonzero takes ~10 cycles there, ~5 for a 16-wide layer,
    whose W fits L1; a 50-wide W comes from L2, 4 lines a nonzero.)"""
    W, _, _, act, _, _, _, _, partial, _ = work[0][0]
    out, b = (act, biases[0]) if part == 0 else (partial, biases[0][:0])
    table = work[2][5][part]
    _dataset_chunks(cuts, rows, part, table)
    if _regroups(out.shape[1], W.itemsize):
        sparse._chunked_times(table, columns, values, W, W.shape[1], b, out)
    else:
        _times(table[0], table[table.shape[0] - 1], columns, values, W, b, out.shape[1], out, STORE,
               out)


@jit_borrowing
def _layer_rows(work, layer, a, b, biases, activation):
    """Rows a:b of the output of layer ``layer`` > 0, each row summed over all its inputs: the
    rows' nonzero lists (made by _finish_rows below it), or for a narrow layer
    (sparse._reads_dense) the outputs below as they are; the activation unless the last."""
    layers = work[0]
    W, _, _, act, _, cols, vals, bounds, _, _ = layers[layer]
    last = layer == len(layers) - 1
    if sparse._reads_dense(act.shape[1], W.itemsize):
        _dense_layer_into(layers[layer - 1][3][a:b], W, biases[layer], last, activation, act[a:b])
    else:
        _layer_into(bounds[0, a:b], bounds[3, a:b], cols, vals, W, biases[layer], last, activation,
                    act[a:b])


@jit_borrowing
def _finish_rows(work, layer, a, b, splits, activation):
    """Rows a:b of layer ``layer``'s outputs made ready for the layer above: for the first layer,
    its two parts' sums added and the activation (unless it is the last); then, for a hidden
    layer, the rows as the next layer's input lists (unless it reads them densely:
    sparse._reads_dense), each row's cut at the next layer's split (its weight update's parts)."""
    layers = work[0]
    act = layers[layer][3]
    last = len(layers) - 1
    if layer == 0:
        _join_halves(act, layers[0][8], a, b, last == 0, activation)
    if layer == last or sparse._reads_dense(layers[layer + 1][3].shape[1], act.itemsize):
        return
    cols, vals, bounds = layers[layer + 1][5], layers[layer + 1][6], layers[layer + 1][7]
    sparse._compress_rows_into(act, a, b, cols, vals, bounds[0], bounds[3])
    for r in range(a, b):
        cut = _first_from(cols, bounds[0, r], bounds[3, r], splits[layer + 1])
        bounds[1, r] = bounds[2, r] = cut


@jit_borrowing
def _rows_part(work, a, b, splits, t, rows, biases, activation, upto):
    """The ROWS stage's part for rows a:b of the batch (see team_steps_csr): the first layer's
    output rows finished, every other layer's output rows, softmax and the loss's gradient
    (upto >= LOSS), and backward through every layer above the first (upto >= BACKWARD). A
    row needs only its own rows below it, and the layers' W.T as the step began."""
    layers, _, shared = work
    _, maxes, logsums, terms, _, _ = shared
    last = len(layers) - 1
    for layer in range(last + 1):
        if layer > 0:
            _layer_rows(work, layer, a, b, biases, activation)
        _finish_rows(work, layer, a, b, splits, activation)
    if upto < LOSS:
        return
    _softmax_ce_rows(layers[last][3], t, rows, layers[last][4], maxes, logsums, terms, a, b)
    if upto < BACKWARD:
        return
    for layer in range(last, 0, -1):
        _gradient_below_rows(layers[layer][4], a, b, layers[layer][9], layers[layer][2],
                             layers[layer - 1][3], layers[layer - 1][4], activation)


# A layer's x.T @ d goes into W (or dW) by one in-place update of a row of W per nonzero of x for
# rows of W up to this many bytes, and above it from x's nonzeros regrouped by column
# (sparse._column_lists), each row summed in registers and updated once (sparse._column_outer),
# from d copied into 64-byte padded rows (unpadded, most of its rows' loads straddle two cache
# lines). Regrouping costs a counting sort of the batch's nonzeros and saves a load and a store
# of a row of W per nonzero. Measured on a 2-core Zen 4, fit's one-thread step (MNIST-like,
# batch 100, float32), us: 784-50-10 (200-byte rows) 190 in place, 225 regrouped; 784-256-128-10
# 786 in place, 726 with the first layer (1 KiB rows) regrouped, 750 with the second (512-byte
# rows) too. The first layer's forward goes chunk by chunk above the same size (_first_part).
ROW_UPDATES_UP_TO = 512


@jit
def _regroups(width, itemsize):
    """Whether a layer whose rows of W hold ``width`` elements of ``itemsize`` bytes takes x.T @ d
    from the regrouped lists (see ROW_UPDATES_UP_TO)."""
    return width * itemsize > ROW_UPDATES_UP_TO


@jit_borrowing
def _weights_part(work, layer, part, splits, columns, values, weights, update, iteration):
    """Part ``part`` of layer ``layer``'s weight update: W's rows below the layer's split (part
    0) or from it (part 1), the rows the part's nonzeros of x point at (for the first layer, the
    rows its forward part read), each row summed over the batch's rows in their order; then,
    above the first layer, those rows copied into W.T for the next step's backward rows."""
    layers, states, shared = work
    regrouped, first_tables = shared[4], shared[5]
    W, g, WT, _, d, cols, vals, bounds, _, _ = layers[layer]
    below, width = weights[layer].shape
    if layer == 0:
        cols, vals = columns, values
    split = splits[layer]   # this part's rows of W: those its nonzeros point at
    p0, p1 = (0, split) if part == 0 else (split, below)
    rule, hyper, _, _ = update
    fused = rule == SGD and hyper[WEIGHT_DECAY] == 0   # W -= lr x.T @ d, no dW
    target, scale = (W, -hyper[LR]) if fused else (g, 1.0)
    cuts = first_tables[part] if layer == 0 else bounds[2 * part:2 * part + 2]
    if layer > 0 and sparse._reads_dense(width, W.itemsize):   # x dense (see _layer_rows)
        if not fused:
            g[p0:p1] = 0
        sparse._dense_add_outer(layers[layer - 1][3], p0, p1, d, target, target.shape[1], scale)
    elif _regroups(width, W.itemsize):   # x.T @ d's rows summed once each
        starts, rows, column_values, padded = regrouped[part]
        starts = starts[:p1 - p0 + 2]
        sparse._column_lists(cuts[0], cuts[cuts.shape[0] - 1], cols, vals, p0, p1, starts, rows,
                             column_values, 0)
        _copy_rows(d, 0, d.shape[0], padded[layer])
        sparse._column_outer(starts, rows, column_values, padded[layer], target, width, p0, scale,
                             fused)
    else:   # a row of W updated in place per nonzero
        if not fused:
            g[p0:p1] = 0
        _add_outer(cuts, cols, vals, d, target, width, scale)
    if not fused:
        if hyper[WEIGHT_DECAY] != 0:
            _add_decay(g[p0:p1], W[p0:p1], hyper[WEIGHT_DECAY])
        last = len(weights) - 1
        _apply_rule(rule, hyper, iteration, W[p0:p1].reshape(-1), g[p0:p1].reshape(-1),
                    states[layer][p0:p1].reshape(-1), states[last + 1 + layer][p0:p1].reshape(-1))
    if layer > 0:
        _transpose_rows_into(W, p0, p1, width, WT)


@jit_borrowing
def _bias_update(work, layer, update, iteration, biases):
    """Layer ``layer``'s bias updated by the rule from its output gradient's column sums."""
    layers, _, shared = work
    rule, hyper, _, b_state = update
    d = layers[layer][4]
    size, width = d.shape
    last = len(layers) - 1
    if rule == SGD and hyper[WEIGHT_DECAY] == 0:
        sparse._column_sums_into(d, size, width, width, biases[layer], -hyper[LR])
        return
    g = shared[0][:width]
    g[:] = 0
    sparse._column_sums_into(d, size, width, width, g, 1.0)
    _apply_rule(rule, hyper, iteration, biases[layer], g, b_state[layer], b_state[last + 1 + layer])


@jit_borrowing
def team_steps_csr(rank, sync, work, splits, cuts, columns, values, t, batches, weights, biases,
                   activation, update, losses, upto):
    """sgd_steps_csr doing the stages FORWARD..upto of every step (upto = BIASES: all), as
    thread ``rank`` of a team (kernels/_sync.py): the caller (rank 0) and maybe a helper (rank 1),
    sharing ``sync`` and the workspace ``work`` (csr_workspace). A step is three stages of two
    parts each, as the nets' team's (kernels/net.py net_team):

      FIRST    the first layer's sums over the dataset columns below ``splits[0]`` and from it
               (the batch's dataset rows cut there and chunk by chunk at ``cuts``: chunk_cuts);
      ROWS     rows 0:N/2 and N/2:N: the first layer's output (the two sums added), every other
               layer's, softmax, the loss's gradient (each row's loss kept for the caller to sum
               in order), and backward down to the first layer's output gradient;
      WEIGHTS  every layer's W update, its rows below its split and from it (the first layer's
               rows being those each FIRST part read: a thread reads and writes only its own rows
               of the first layer's W), each row summed over the batch's rows in their order;
               then those rows into W.T (the next step's backward), and the biases (part 0).

    No part's result depends on who computes it: one thread or two, the weights are the same
    bits. (A step was six stages for 784-50-10 and nine for 784-256-128-10, each layer's
    forward, finishing and backward its own, and the caller transposed each W alone.)"""
    layers, states, shared = work
    terms = shared[3]
    _, hyper, w_state, _ = update
    last = len(weights) - 1
    steps, size = batches.shape
    half = size // 2
    if rank == 0:
        for layer in range(last + 1):
            width = weights[layer].shape[1]
            _copy_rows(weights[layer], 0, weights[layer].shape[0], layers[layer][0])
            if layer > 0:
                _transpose_into(layers[layer][0], width, layers[layer][2])
            for slot in range(2):
                kept = w_state[slot * (last + 1) + layer]
                _copy_rows(kept, 0, kept.shape[0], states[slot * (last + 1) + layer])
    stage = 0
    for s in range(steps):
        if rank == 1 and _sync.team_finished(sync):
            break
        if upto < FORWARD:
            continue
        rows = batches[s]
        stage += 1
        for part in range(2):
            if _sync.team_part(sync, rank, stage, part):
                _first_part(work, part, cuts, columns, values, rows, biases)
                _sync.team_part_done(sync, rank, stage)
        _sync.team_stage_done(sync, rank, stage)
        stage += 1
        for part in range(2):
            if _sync.team_part(sync, rank, stage, part):
                a, b = (0, half) if part == 0 else (half, size)
                _rows_part(work, a, b, splits, t, rows, biases, activation, upto)
                _sync.team_part_done(sync, rank, stage)
        _sync.team_stage_done(sync, rank, stage)
        if rank == 0 and upto >= LOSS:
            losses[s] = _mean_in_order(terms)
        if upto < WEIGHTS:
            continue
        iteration = hyper[ITERATION] + s + 1
        stage += 1
        for part in range(2):
            if _sync.team_part(sync, rank, stage, part):
                for layer in range(last, -1, -1):
                    _weights_part(work, layer, part, splits, columns, values, weights, update,
                                  iteration)
                if part == 0 and upto >= BIASES:
                    for layer in range(last + 1):
                        _bias_update(work, layer, update, iteration, biases)
                _sync.team_part_done(sync, rank, stage)
        _sync.team_stage_done(sync, rank, stage)
    if rank == 0:
        for layer in range(last + 1):
            _copy_rows(layers[layer][0], 0, weights[layer].shape[0], weights[layer])
            for slot in range(2):
                kept = w_state[slot * (last + 1) + layer]
                _copy_rows(states[slot * (last + 1) + layer], 0, kept.shape[0], kept)
        _sync.team_finish(sync)


def team_arguments_csr(indptr, columns, values, t, batches, weights, biases, activation, update,
                       losses, first_split=None, upto=BIASES, cuts=None):
    """(work, splits, cuts, *the call's arguments but indptr, upto): what follows (rank, sync) in
    a team_steps_csr call; the first layer cut at ``first_split`` (default: halfway), the others
    halfway; ``cuts``: chunk_cuts(indptr, columns, first_cut_columns(first_split, D), ...) of
    every row the batches take, made here unless given (fit's TrainingSet makes them once, for
    all rows)."""
    rule, hyper, w_state, _ = update
    fused = rule == SGD and hyper[WEIGHT_DECAY] == 0
    splits = np.array([W.shape[0] // 2 for W in weights], np.int64)
    if first_split is not None:
        splits[0] = first_split
    cut_columns = first_cut_columns(splits[0], weights[0].shape[0])
    work = csr_workspace(values, weights, w_state, batches.shape[1], fused, cut_columns, splits[0])
    if cuts is None:
        cuts = chunk_cuts(indptr, columns, cut_columns, batches.reshape(-1))
    elif cuts.shape != (indptr.size - 1, cut_columns.size):
        raise ValueError(f"team_arguments_csr: cuts must have a row per row of the dataset and a "
                         f"column per first-layer cut ({indptr.size - 1}, {cut_columns.size}), "
                         f"got shape {cuts.shape}")
    return (work, splits, cuts, columns, values, t, batches, weights, biases, activation, update,
            losses, upto)


def sgd_steps_csr(indptr, columns, values, t, batches, weights, biases, activation, update, losses):
    """sgd_steps with the training inputs x (M, D) given as CSR (indptr, columns, values): rows
    batches[s] of x are the batch of step s. The weights agree with sgd_steps on the dense x to
    rounding. On the calling thread (fastbp/engine.py runs the same steps on two)."""
    team_steps_csr(0, _sync.alone_sync(), *team_arguments_csr(
        indptr, columns, values, t, batches, weights, biases, activation, update, losses))


@jit
def predict_labels_csr(indptr, columns, values, weights, biases, activation):
    """predict_labels with x given as CSR (N rows) -> (N,) int64."""
    n = indptr.size - 1
    last = len(weights) - 1
    labels = np.empty(n, np.int64)
    chunk = 2048  # bounds the memory of the hidden activations
    dtype = values.dtype
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lo, hi = indptr[start:stop], indptr[start + 1:stop + 1]
        cols, vals = columns, values
        for layer in range(last + 1):
            W = weights[layer]
            out = np.empty((stop - start, W.shape[1]), dtype)
            epilogue = STORE_RELU if layer < last and activation == RELU else STORE
            sparse._rows_times(lo, hi, cols, vals, W, W.shape[1], biases[layer], W.shape[1], out,
                               W.shape[1], epilogue, out)
            if layer < last:
                if activation != RELU:
                    _activate(out, activation)
                ptr, cols, vals = sparse.compress_rows(out)
                lo, hi = ptr[:-1], ptr[1:]
            h = out
        _argmax_rows_into(h, labels, start)
    return labels
