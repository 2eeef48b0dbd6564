"""Whole-net kernels for the book's API: a net's forward, loss and gradient in one compiled call.

``TwoLayerNet.gradient(x, t)`` in the book runs a dozen NumPy calls through Python per batch;
here the nets hand their weights to one kernel that does the whole pass on the batch's nonzero
lists (kernels/sparse.py) and returns what the book's layers hold afterwards: every layer's
output, the softmax probabilities, the loss and the gradients. Labels are class indices
(index_labels and onehot_labels check and convert the book's two forms; the loss and
(y - t) / N are the same numbers for both).

The first layer reads the caller's x as it is (float32 images into a float64 net need no
converted copy) through its nonzero lists, cut in column chunks (sparse.CHUNK) and made per
call in two vector passes that also count the entries that are not finite (``nonfinite``, for
the caller to refuse such input); when more than DENSE_SHARE of x is nonzero, its products are
BLAS calls instead (on x's columns converted to the weights' dtype). Its output is the sum of
two halves' sums, over x's columns below a cut and from it (_first_layer_into), so that two
threads can compute them apart (net_team). The layers above it
read their inputs' nonzero lists (ReLU leaves about half of them zero), but for a narrow layer
(the 10 class scores), which reads its input as it is (sparse._reads_dense).
"""
import numpy as np

from . import _sync, sparse
from ._config import jit, jit_borrowing
from .softmax_ce import (_backward_rows_into, _softmax_rows, cross_entropy_term, softmax_cross_entropy,
                         softmax_cross_entropy_backward)
from .step import (RELU, _add_outer, _aligned_rows, _argmax_rows_into, _copy_rows, _dense_layer_into,
                   _first_from, _gemm, _gradient_below_rows, _join_halves, _layer_into,
                   _mean_in_order, _transpose_into)

# The first layer's products (x @ W1, x.T @ d) go to BLAS instead of the nonzero lists when more
# than this share of the batch x is nonzero: the lists' work grows with the nonzeros, BLAS's
# does not. Measured on a 2-core Zen 4 in the book's loop (784-50-10, float64 net, float32 x,
# batch 100; one BLAS thread per half), us an iteration, lists against BLAS, both ways of
# running (the team of two threads; one thread): Fashion-MNIST's 50 % nonzero 632 / 664, 842 /
# 970; 60 % (dense images, pixels zeroed at random) 626 / 639, 981 / 980; 75 % 701 / 646, 1149
# / 945; 90 % 810 / 629.
DENSE_SHARE = 0.6


@jit
def index_labels(t, classes):
    """Class indices t (N,) checked: -> (t as int64, the first i with t[i] outside [0, classes),
    or -1)."""
    labels = np.empty(t.size, np.int64)
    bad = -1
    for i in range(t.size):
        labels[i] = t[i]
        if bad < 0 and not 0 <= t[i] < classes:
            bad = i
    return labels, bad


@jit
def onehot_labels(t):
    """One-hot rows t (N, C) as class indices: -> (indices (N,) int64: each row's first 1, the
    first row that is not zeros and a single one, or -1)."""
    n, c = t.shape
    labels = np.zeros(n, np.int64)
    bad = -1
    for i in range(n):
        ones = 0
        for j in range(c):
            v = t[i, j]
            if v == 1:
                if ones == 0:
                    labels[i] = j
                ones += 1
            elif v != 0 and bad < 0:
                bad = i
        if ones != 1 and bad < 0:
            bad = i
    return labels, bad


@jit
def _input_csr(x):
    """A hidden layer's input lists: the nonzero lists of x (N, D), C-contiguous (columns, values
    (x's dtype), lo, hi: row r's list is lo[r]:hi[r])."""
    n = x.shape[0]
    counts = np.empty(n, np.int64)
    sparse._count_nonzeros(x, counts)
    columns = np.empty(counts.sum(), np.int32)
    values = np.empty(counts.sum(), x.dtype)
    lo, hi = np.empty(n, np.int64), np.empty(n, np.int64)
    sparse._compress_rows_into(x, 0, n, columns, values, lo, hi)
    return columns, values, lo, hi


@jit
def _first_cut(d):
    """The chunk (sparse.CHUNK) at which the first layer's input columns (d of them) are cut in
    two halves: the first layer's product is the sum of the halves' products (see
    _first_layer_into)."""
    return sparse.chunk_count(d) // 2


@jit
def _first_split(d):
    """The first of the first layer's input columns from the cut (_first_cut) on."""
    return min(_first_cut(d) * sparse.CHUNK, d)


@jit
def _first_columns(d, part):
    """The columns of x (d of them) in the first layer's half ``part``: (first, end)."""
    split = _first_split(d)
    return (0, split) if part == 0 else (split, d)


@jit_borrowing
def _dense_first(x, part, W, b, blocks, out, above):
    """The first layer's sums over x's column half ``part`` by BLAS (DENSE_SHARE; see
    _first_layer_into): the half converted into blocks[part], W's dtype, C-contiguous (BLAS read
    a column block of x in place 14 % slower), then its product with W's rows of it, plus b,
    into out (part 0), or from 0 into ``above`` (part 1). The half may have no columns."""
    p0, p1 = _first_columns(x.shape[1], part)
    block = blocks[part]
    for i in range(block.shape[0]):
        for j in range(block.shape[1]):
            block[i, j] = x[i, p0 + j]
    sums = out if part == 0 else above
    for i in range(sums.shape[0]):
        for j in range(sums.shape[1]):
            sums[i, j] = b[j] if part == 0 else 0
    if p1 > p0:
        _gemm(block, False, W[p0:p1], False, sums, 1.0, 1.0)


@jit_borrowing
def _dense_first_gradient(blocks, part, d, dW):
    """dW1's rows of x's column half ``part`` (see _dense_first): blocks[part].T @ d."""
    p0, p1 = _first_columns(dW.shape[0], part)
    if p1 > p0:   # (beta 0: BLAS writes the rows whole)
        _gemm(blocks[part], True, d, False, dW[p0:p1], 1.0, 0.0)


@jit_borrowing
def _sparse_first_gradient(table, columns, values, part, d, starts, rows, vals, dW):
    """dW1's rows of x's column half ``part`` from the half's lists (table: see _first_csr): its
    nonzeros regrouped by column into starts/rows/vals (sparse._column_lists: rows and vals as
    long as columns and values, starts at least two longer than the half has columns), then each
    row of dW1 summed in registers and written once (sparse._column_outer) from d, the first
    layer's output gradient in 64-byte padded rows (step._aligned_rows: unpadded, most of its
    rows' loads straddle two cache lines; both halves for a MNIST-like batch of 100 took 60 us
    where they took 51)."""
    p0, p1 = _first_columns(dW.shape[0], part)
    starts = starts[:p1 - p0 + 2]
    ends = table.shape[0] - 1
    sparse._column_lists(table[0], table[ends], columns, values, p0, p1, starts, rows, vals,
                         table[0, 0])
    sparse._column_outer(starts, rows, vals, d, dW, dW.shape[1], p0, 1.0, False)


@jit
def _first_csr(x, dense_above=1.0):
    """The first layer's input lists of x (N, D), C-contiguous: (columns, values (x's dtype),
    tables: (lower, upper), where each row's nonzeros begin chunk by chunk and end (see
    sparse._compress_chunks), lower for its columns below the cut (_first_cut), upper from it; how
    many entries of x are NaN or infinite, dense); when more than ``dense_above`` of x's entries
    are nonzero, dense is True and the lists are empty."""
    n, d = x.shape
    counts = np.empty(n, np.int64)
    nonfinite = sparse._count_nonzeros(x, counts)
    cut, whole = _first_cut(d), sparse.chunk_count(d)
    lower, upper = np.empty((cut + 1, n), np.int64), np.empty((whole - cut + 1, n), np.int64)
    if counts.sum() > dense_above * x.size:
        return np.empty(0, np.int32), np.empty(0, x.dtype), (lower[:0], upper[:0]), nonfinite, True
    columns = np.empty(counts.sum(), np.int32)
    values = np.empty(counts.sum(), x.dtype)
    k = sparse._compress_chunks(x, 0, cut, columns, values, lower, 0)
    sparse._compress_chunks(x, cut, whole, columns, values, upper, k)
    return columns, values, (lower, upper), nonfinite, False


@jit
def _first_layer_into(tables, columns, values, W, b, last, activation, out, above):
    """The first layer's output into out, its input as the lists of its two column halves
    (_first_csr): the lower half's sums (from b) into out, the upper half's (from 0) into
    ``above`` (out's shape), then their sum and the activation unless ``last``. (Two threads
    compute the halves apart, kernels/net.py net_team; every path sums the same way, so the
    numbers do not depend on which ran.)"""
    sparse._chunked_times(tables[0], columns, values, W, W.shape[1], b, out)
    sparse._chunked_times(tables[1], columns, values, W, W.shape[1], b[:0], above)
    _join_halves(out, above, 0, out.shape[0], last, activation)


@jit
def _first_layer(tables, columns, values, W, b, last, activation):
    """_first_layer_into a new array."""
    out = np.empty((tables[0].shape[1], W.shape[1]), W.dtype)
    _first_layer_into(tables, columns, values, W, b, last, activation, out, np.empty_like(out))
    return out


@jit
def _layer(lo, hi, columns, values, W, b, last, activation):
    """One layer's output for inputs given as row slices of nonzero lists."""
    out = np.empty((lo.size, W.shape[1]), W.dtype)
    _layer_into(lo, hi, columns, values, W, b, last, activation, out)
    return out


@jit
def _hidden_layer(h, W, b, last, activation):
    """-> (the output of a layer whose input is the hidden layer output h (N, D) C-contiguous, the
    nonzero lists of h it read (columns, values, lo, hi)): a narrow layer (sparse._reads_dense)
    reads h as it is, and its lists are empty."""
    if sparse._reads_dense(W.shape[1], W.itemsize):
        out = np.empty((h.shape[0], W.shape[1]), W.dtype)
        _dense_layer_into(h, W, b, last, activation, out)
        none = np.empty(0, np.int64)
        return out, (np.empty(0, np.int32), np.empty(0, h.dtype), none, none)
    columns, values, lo, hi = _input_csr(h)
    return _layer(lo, hi, columns, values, W, b, last, activation), (columns, values, lo, hi)


@jit
def _forward(x, weights, biases, activation, dense_ok):
    """-> ([h1, ..., scores], the first layer's input (its chunked lists, and x in the weights'
    dtype when the product went to BLAS (see DENSE_SHARE; only if ``dense_ok``), else an empty
    array), the hidden layers' input lists (empty where a layer read its input densely:
    _hidden_layer), how many entries of x are not finite). x (N, D) C-contiguous."""
    last = len(weights) - 1
    W = weights[0]
    columns, values, tables, nonfinite, dense = _first_csr(x, DENSE_SHARE if dense_ok else 1.0)
    n, d = x.shape
    split = _first_split(d) if dense else 0
    blocks = (np.empty((n, split), W.dtype), np.empty((n, d - split) if dense else (n, 0), W.dtype))
    if dense:
        out, above = np.empty((n, W.shape[1]), W.dtype), np.empty((n, W.shape[1]), W.dtype)
        for part in range(2):
            _dense_first(x, part, W, biases[0], blocks, out, above)
        _join_halves(out, above, 0, n, last == 0, activation)
        outputs = [out]
    else:
        outputs = [_first_layer(tables, columns, values, W, biases[0], last == 0, activation)]
    first = (columns, values, tables, blocks)
    none = np.empty(0, np.int64)
    hidden = [(np.empty(0, np.int32), np.empty(0, weights[0].dtype), none, none)]
    hidden.pop()  # (typed by a dummy first element: a net without hidden layers has none)
    for layer in range(1, last + 1):
        out, lists = _hidden_layer(outputs[layer - 1], weights[layer], biases[layer], layer == last,
                                   activation)
        hidden.append(lists)
        outputs.append(out)
    return outputs, first, hidden, nonfinite


@jit
def net_scores(x, weights, biases, activation):
    """Every layer's output of the net for x (N, D). -> ([h1, ..., scores], how many entries of x
    are NaN or infinite)"""
    outputs, _, _, nonfinite = _forward(np.ascontiguousarray(x), weights, biases, activation, True)
    return outputs, nonfinite


@jit
def net_loss(x, t, weights, biases, activation):
    """Mean softmax cross-entropy of the net on x (N, D), class indices t (N,) int64.
    -> (loss, y = softmax(scores), [h1, ..., scores], how many entries of x are not finite)"""
    outputs, nonfinite = net_scores(x, weights, biases, activation)
    loss, y = softmax_cross_entropy(outputs[len(outputs) - 1], t)
    return loss, y, outputs, nonfinite


@jit
def _copied_out(sums, W):
    """A layer's dW summed in padded rows (step._aligned_rows: see _team_weights) as a fresh
    C-contiguous array of W's shape."""
    dW = np.empty(W.shape, W.dtype)
    _copy_rows(sums, 0, W.shape[0], dW)
    return dW


@jit
def net_gradient(x, t, weights, biases, activation):
    """The loss and its gradient with respect to every weight and bias, by backpropagation.
    -> (loss, y, [h1, ..., scores], [dW1, ...], [db1, ...], how many entries of x are not finite)"""
    outputs, first, hidden, nonfinite = _forward(np.ascontiguousarray(x), weights, biases, activation, True)
    last = len(weights) - 1
    n = x.shape[0]
    loss, y = softmax_cross_entropy(outputs[last], t)
    d = softmax_cross_entropy_backward(y, t)
    dWs, dbs = [d[:, :0]], [d[0, :0]]  # typed by their first, dummy element
    dWs.pop()
    dbs.pop()
    for layer in range(last, -1, -1):
        W = weights[layer]
        below, width = W.shape
        if layer == 0:
            columns, values, tables, blocks = first   # (x's dtype: a call of its own)
            dW = np.empty((below, width), y.dtype)
            if blocks[1].shape[1]:   # the product went to BLAS: x.T @ d too
                for part in range(2):
                    _dense_first_gradient(blocks, part, d, dW)
            else:
                rows, vals = np.empty(columns.size, np.int32), np.empty_like(values)
                starts = np.empty(below + 2, np.int64)
                padded = _aligned_rows(n, width, d, False)
                _copy_rows(d, 0, n, padded)
                for part in range(2):
                    _sparse_first_gradient(tables[part], columns, values, part, padded, starts,
                                           rows, vals, dW)
            dWs.append(dW)
        else:
            sums = _aligned_rows(below, width, W)
            if sparse._reads_dense(width, W.itemsize):
                sparse._dense_add_outer(outputs[layer - 1], 0, below, d, sums, sums.shape[1], 1.0)
            else:
                columns, values, lo, hi = hidden[layer - 1]
                _add_outer(sparse.cut_table(lo, hi), columns, values, d, sums, width, 1.0)
            dWs.append(_copied_out(sums, W))
        db = np.zeros(width, y.dtype)
        sparse._column_sums_into(d, n, width, width, db, 1.0)
        dbs.append(db)
        if layer > 0:  # d_below = (d @ W.T) * f'(.), with W as it is (the caller updates later)
            WT = _aligned_rows(width, below, W)
            _transpose_into(W, width, WT)
            d_lists = (np.empty(n * width, np.int32), np.empty(n * width, y.dtype),
                       np.empty(n, np.int64), np.empty(n, np.int64))
            d_below = np.empty((n, below), y.dtype)
            _gradient_below_rows(d, 0, n, d_lists, WT, outputs[layer - 1], d_below, activation)
            d = d_below
    dWs.reverse()
    dbs.reverse()
    return loss, y, outputs, dWs, dbs, nonfinite


# --- A batch's loss and gradient by a team of two threads (kernels/_sync.py) ----------------------
#
# net_team computes what net_loss / net_gradient do, as the caller (rank 0) and maybe the helper
# thread (rank 1) of a team. The caller first counts x's nonzeros (and so picks the lists or BLAS
# for the first layer, as DENSE_SHARE, and finds entries that are not finite) and, for a
# gradient, copies the hidden layers' W.T; the helper, posted by the same call, is not there yet.
# Then stages of two fixed parts each:
#
#   FIRST    the first layer's sums over x's columns below the cut (_first_cut) and from it: each
#            part makes its half's nonzero lists (or, for BLAS, converts its columns of x) and
#            reads only its half of W1's rows;
#   ROWS     rows 0:m and m:N: the first layer's output (its halves' sums added), every other
#            layer's, softmax, the rows' losses, and backward down to the first layer's output
#            gradient (each row needs only its own inputs);
#   WEIGHTS  every dW cut in two: dW1 at the cut (each part from its own half's lists), the
#            others at their middle row (each row of dW is summed over the batch's rows in their
#            order, wherever they were computed), and the db's (the caller's part).
#
# So no result depends on which thread computed which part, or on whether the helper took part
# at all; on the nonzero lists the numbers are net_loss's and net_gradient's bits (tests/
# test_team.py). Nothing is combined afterwards, and each thread writes only its own rows of each
# dW. The arrays of a call are the caller's: ``work`` (team_workspace, scratch that can be kept
# for the next call of the same shapes) and the outputs (fresh for every call: they go to the
# layers and the user). Rows are cut in half: the helper, posted by the caller's call, starts
# about when the caller has counted x. (The count is no loss: without it, each FIRST part
# counting its half's lists and the caller choosing BLAS after the stage, the helper missed
# FIRST's part more often, 18 % of the gradient calls against 2.5 %, and the book's loop was no
# faster: 405-431 against 395-406 us, medians of 5,000 iterations in turns, a 2-core Zen 5.)
# Measured on a 2-core Zen 4 in the book's loop (784-50-10, float64 net, float32 x, batch 100,
# MNIST-like), us per call (the caller's compiled part), helper's share of the rows 0.45 / 0.5:
# gradient 191 / 169, loss 103 / 93. The design before (each thread a whole net_gradient on
# half of the rows, the two dWs then averaged: ~56 us of combining a call) took 1.25-1.3x as
# long an iteration of the book's loop as this one, on MNIST-like and Fashion-MNIST batches
# (side by side in one process, a quiet phase of the VM).
#
# Why FIRST cuts x's columns, not its rows: each thread then reads half of W1 instead of all of
# it, which is most of what a call reads, and half as many of W1's lines have to come back from
# the helper's core when the user's update writes them (``params['W1'] -= lr * grad['W1']``; the
# update of NumPy timed after a helper thread read all of W1 or half of it: 48-55 us against
# 33-39, 18 when it read none). The first layer's output is then the sum of the two halves'
# sums, on every path (_first_layer_into). Measured as above, the two designs side by side in
# one process, both as a team, medians over 10 rounds of 300 iterations: an iteration 453
# against 486 us (gradient 215 against 230, loss 113 against 130); Fashion-MNIST (BLAS) 623
# against 638.
FIRST, ROWS, WEIGHTS = 1, 2, 3
NONFINITE, DENSE, WANTS_BLAS = 0, 1, 2     # positions in the workspace's ``facts``


def team_workspace(x, weights):
    """Scratch for net_team on x (N, D) C-contiguous and the weights: (counts, facts, the first
    layer's (x's nonzero lists: columns, values, tables (see _first_csr), each half packed in a
    region of its own; the upper half's sums (N, H1); for dW1, the lists regrouped by column (each
    half's starts, rows, vals) and the layer's output gradient in padded rows: see
    _sparse_first_gradient; W1 copied into 64-byte padded rows, each half's rows by the part that
    reads them (the padding zeros: the tiles read it whole, and never garbage such as denormals,
    which some CPUs multiply slowly): unpadded, a 50-wide float64 row's loads mostly straddle two
    cache lines (Fashion-MNIST, a half's product on a 2-core Zen 4: 69 -> 58 us, the copy 3), x's
    two column halves in the weights' dtype (for BLAS: each half C-contiguous, as BLAS read a
    column block of x in place 14 % slower), then per layer (its input's nonzero lists (none for
    the first, or for a narrow layer: sparse._reads_dense), its output gradient (N, width), its
    W.T (64-byte padded rows; none for the first), the output gradient's nonzero lists), per
    layer dW's sums (D, H in 64-byte padded rows: _add_outer's rows; see step._aligned_rows; none
    for the first), each part's bounds (2, 2, N), and the softmax's maxes, logsums and the rows'
    losses (N,))."""
    n = x.shape[0]
    dtype = weights[0].dtype

    def lists(count, values_dtype):
        return (np.empty(count, np.int32), np.empty(count, values_dtype), np.empty(n, np.int64),
                np.empty(n, np.int64))

    first, width = weights[0].shape
    cut, whole = _first_cut(first), sparse.chunk_count(first)
    split = _first_split(first)
    by_column = ((np.empty(split + 2, np.int64), np.empty(first - split + 2, np.int64)),
                 np.empty(n * first, np.int32), np.empty(n * first, x.dtype),
                 _aligned_rows(n, width, weights[0], False))
    first_layer = (np.empty(n * first, np.int32), np.empty(n * first, x.dtype),
                   (np.empty((cut + 1, n), np.int64), np.empty((whole - cut + 1, n), np.int64)),
                   np.empty((n, width), dtype), by_column, _aligned_rows(first, width, weights[0]))
    inputs = tuple(lists(0 if layer == 0 or sparse._reads_dense(W.shape[1], W.itemsize)
                         else n * W.shape[0], dtype) for layer, W in enumerate(weights))
    grads = tuple(np.empty((n, W.shape[1]), dtype) for W in weights)
    transposes = tuple(_aligned_rows(0 if layer == 0 else W.shape[1], W.shape[0], W)
                       for layer, W in enumerate(weights))
    grad_lists = tuple(lists(n * W.shape[1], dtype) for W in weights)
    sums = tuple(_aligned_rows(0 if layer == 0 else W.shape[0], W.shape[1], W, False)
                 for layer, W in enumerate(weights))
    blocks = (np.empty((n, split), dtype), np.empty((n, first - split), dtype))
    return (np.empty(n, np.int64), np.zeros(8, np.int64), first_layer, blocks, inputs, grads, transposes,
            grad_lists, sums, np.empty((2, 2, n), np.int64), np.empty(n, np.float64),
            np.empty(n, np.float64), np.empty(n, np.float64))


def team_arguments(x, t, weights, biases, activation, gradient, work=None, blas_limited=True):
    """(work, x, t, weights, biases, activation, outputs, y, dWs, dbs, gradient, blas_limited):
    what follows (rank, sync, flag, state) in a net_team call on x (N, D) C-contiguous and class
    indices t, with fresh output arrays; ``work`` is team_workspace(x, weights) unless one is
    given (kept from a call of the same shapes). ``blas_limited``: the caller holds BLAS at one
    thread (see net_team)."""
    n, dtype = x.shape[0], weights[0].dtype
    outputs = tuple([np.empty((n, W.shape[1]), dtype) for W in weights])
    dWs = tuple([np.empty(W.shape if gradient else (0, 0), dtype) for W in weights])
    dbs = tuple([np.zeros(W.shape[1] if gradient else 0, dtype) for W in weights])
    return (team_workspace(x, weights) if work is None else work, x, t, weights, biases, activation,
            outputs, np.empty((n, weights[-1].shape[1]), dtype), dWs, dbs, gradient, blas_limited)


def team_results(arguments, loss, nonfinite):
    """What net_gradient returns (net_loss: if the call computed no gradient), from a net_team
    call's arguments and its caller's (loss, nonfinite)."""
    _, _, _, _, _, _, outputs, y, dWs, dbs, gradient, _ = arguments
    if not gradient:
        return loss, y, list(outputs), nonfinite
    return loss, y, list(outputs), list(dWs), list(dbs), nonfinite


@jit_borrowing
def _add_outer_part(lists, split, part, bounds, d, dW, width):
    """dW[p0:p1, :width] += X^T d over X's nonzero lists (columns, values, lo, hi; columns
    increasing in each row's) at columns p0:p1, those below ``split`` (part 0) or from it (part
    1); bounds (2, N) takes each row's slice of them."""
    columns, values, lo, hi = lists
    for r in range(lo.size):
        cut = _first_from(columns, lo[r], hi[r], split)
        bounds[0, r] = lo[r] if part == 0 else cut
        bounds[1, r] = cut if part == 0 else hi[r]
    _add_outer(bounds, columns, values, d, dW, width, 1.0)


@jit_borrowing
def _team_first(work, part, x, weights, biases, activation, outputs):
    """The FIRST stage's part ``part`` (see above)."""
    _, facts, first_layer, blocks, _, _, _, _, _, _, _, _, _ = work
    columns, values, tables, above, _, padded = first_layer
    if facts[DENSE]:
        _dense_first(x, part, weights[0], biases[0], blocks, outputs[0], above)
        return
    n, d = x.shape
    cut = _first_cut(d)
    c0, c1 = (0, cut) if part == 0 else (cut, sparse.chunk_count(d))
    table = tables[0] if part == 0 else tables[1]   # (each half packed in a region of its own)
    sparse._compress_chunks(x, c0, c1, columns, values, table, n * c0 * sparse.CHUNK)
    p0, p1 = _first_columns(d, part)
    _copy_rows(weights[0], p0, p1, padded)   # (the half's rows of W1, read whole: see team_workspace)
    out, b = (outputs[0], biases[0]) if part == 0 else (above, biases[0][:0])
    sparse._chunked_times(table, columns, values, padded, padded.shape[1], b, out)


@jit_borrowing
def _team_rows(work, a, b, x, t, weights, biases, activation, outputs, y, gradient):
    """The ROWS stage's part for rows a:b (see above)."""
    _, facts, first_layer, _, inputs, grads, transposes, grad_lists, _, _, maxes, logsums, terms = work
    n = x.shape[0]
    last = len(weights) - 1
    _join_halves(outputs[0], first_layer[3], a, b, last == 0, activation)
    for layer in range(1, last + 1):
        W = weights[layer]
        if sparse._reads_dense(W.shape[1], W.itemsize):
            _dense_layer_into(outputs[layer - 1][a:b], W, biases[layer], layer == last, activation,
                              outputs[layer][a:b])
            continue
        columns, values, lo, hi = inputs[layer]
        sparse._compress_rows_into(outputs[layer - 1], a, b, columns, values, lo, hi)
        _layer_into(lo[a:b], hi[a:b], columns, values, weights[layer], biases[layer], layer == last,
                    activation, outputs[layer][a:b])
    scores = outputs[last]
    _softmax_rows(scores[a:b], y[a:b], maxes[a:b], logsums[a:b])
    for i in range(a, b):
        terms[i] = cross_entropy_term(logsums[i], maxes[i], scores[i, t[i]])
    if not gradient:
        return
    _backward_rows_into(y, t, a, b, n, grads[last])
    for layer in range(last, 0, -1):   # d_below = (d @ W.T) * f'(.)
        _gradient_below_rows(grads[layer], a, b, grad_lists[layer], transposes[layer],
                             outputs[layer - 1], grads[layer - 1], activation)
    if not facts[DENSE]:   # (dW1's sums read it in padded rows)
        _copy_rows(grads[0], a, b, first_layer[4][3])


@jit_borrowing
def _team_weights(work, part, x, weights, outputs, dWs, dbs):
    """The WEIGHTS stage's part ``part`` (see above)."""
    _, facts, first_layer, blocks, inputs, grads, _, _, sums, bounds, _, _, _ = work
    n = x.shape[0]
    for layer in range(len(weights)):
        dW = dWs[layer]
        if layer == 0:
            if facts[DENSE]:
                _dense_first_gradient(blocks, part, grads[0], dW)
            else:   # (each half's lists touch only its rows of dW1)
                columns, values, tables, _, (starts, rows, vals, padded), _ = first_layer
                _sparse_first_gradient(tables[part], columns, values, part, padded, starts[part],
                                       rows, vals, dW)
            continue
        below, width = weights[layer].shape
        split = below // 2
        p0, p1 = (0, split) if part == 0 else (split, below)
        acc = sums[layer]   # (summed in padded rows, then handed over as plain ones)
        acc[p0:p1] = 0
        if sparse._reads_dense(width, acc.itemsize):
            sparse._dense_add_outer(outputs[layer - 1], p0, p1, grads[layer], acc, acc.shape[1], 1.0)
        else:
            _add_outer_part(inputs[layer], split, part, bounds[part], grads[layer], acc, width)
        _copy_rows(acc, p0, p1, dW)
    if part == 0:
        for layer in range(len(weights)):
            width = weights[layer].shape[1]
            sparse._column_sums_into(grads[layer], n, width, width, dbs[layer], 1.0)


@jit_borrowing
def net_team(rank, sync, flag, state, work, x, t, weights, biases, activation, outputs, y, dWs, dbs,
             gradient, blas_limited):
    """net_loss (``gradient`` False) or net_gradient of x (N, D) C-contiguous with class indices
    t, as thread ``rank`` of a team sharing ``sync`` (see above), into the caller's arrays:
    ``outputs`` (every layer's, (N, width) each), y, and with ``gradient`` the dWs (each W's
    shape) and dbs (zeros). The caller first stores ``state`` in flag[0], from here where it
    holds no GIL (fastbp/halves.py team(..., publishing=True)).
    -> the caller's (loss, how many entries of x are not finite); the helper's is (0, 0).

    A batch dense enough for BLAS (DENSE_SHARE) when the caller does not hold BLAS at one thread
    (not ``blas_limited``: limiting it costs ~5 us a call, and sparse batches need no BLAS) stops
    before the first stage with facts[WANTS_BLAS] set, for the caller to call again with the
    limit held (two threads of BLAS beside the helper would oversubscribe the cores)."""
    counts, facts, _, _, _, _, transposes, _, _, _, _, _, terms = work
    if rank == 0:   # (before the first stage opens: the helper reads none of this until then)
        _sync.publish(flag, state)
        facts[NONFINITE] = sparse._count_nonzeros(x, counts)
        facts[DENSE] = counts.sum() > DENSE_SHARE * x.size
        facts[WANTS_BLAS] = facts[DENSE] and not blas_limited
        if facts[WANTS_BLAS]:
            _sync.team_finish(sync)   # (the helper, posted, leaves without a part)
            _sync.hand_back(flag, state, sync)
            return 0.0, 0
        if gradient:
            for layer in range(1, len(weights)):
                _transpose_into(weights[layer], weights[layer].shape[1], transposes[layer])
    for part in range(2):
        if _sync.team_part(sync, rank, FIRST, part):
            _team_first(work, part, x, weights, biases, activation, outputs)
            _sync.team_part_done(sync, rank, FIRST)
    _sync.team_stage_done(sync, rank, FIRST)
    n = x.shape[0]
    m = (n + 1) // 2
    for part in range(2):
        if _sync.team_part(sync, rank, ROWS, part):
            a, b = (0, m) if part == 0 else (m, n)
            _team_rows(work, a, b, x, t, weights, biases, activation, outputs, y, gradient)
            _sync.team_part_done(sync, rank, ROWS)
    _sync.team_stage_done(sync, rank, ROWS)
    if gradient:
        for part in range(2):
            if _sync.team_part(sync, rank, WEIGHTS, part):
                _team_weights(work, part, x, weights, outputs, dWs, dbs)
                _sync.team_part_done(sync, rank, WEIGHTS)
        _sync.team_stage_done(sync, rank, WEIGHTS)
    if rank != 0:
        return 0.0, 0
    loss = _mean_in_order(terms)
    _sync.hand_back(flag, state, sync)
    return loss, facts[NONFINITE]


@jit
def _mean_loss(scores, t, book):
    """The mean cross-entropy of the scores: exact, or the book's -mean_n log(y[n, t_n] + 1e-7)
    of y = softmax(scores) (``book``)."""
    loss, y = softmax_cross_entropy(scores, t)
    if not book:
        return loss
    total = 0.0
    for i in range(y.shape[0]):
        total -= np.log(np.float64(y[i, t[i]]) + 1e-7)
    return total / y.shape[0]


@jit
def _shifted_loss(first, weights, biases, activation, t, relu_off, book):
    """(the mean cross-entropy of the net (see _mean_loss) on the first layer's input lists
    ``first`` with labels t, whether a ReLU's mask h <= 0 differs from ``relu_off`` (the unshifted
    masks, hidden layer by layer) for some sample)."""
    columns, values, tables, _ = first
    last = len(weights) - 1
    h = _first_layer(tables, columns, values, weights[0], biases[0], last == 0, activation)
    flipped = False
    for layer in range(1, last + 1):
        if activation == RELU and not flipped:
            off = relu_off[layer - 1]
            for i in range(h.shape[0]):
                for j in range(h.shape[1]):
                    flipped = flipped or (h[i, j] <= 0) != off[i, j]
        h, _ = _hidden_layer(h, weights[layer], biases[layer], layer == last, activation)
    return _mean_loss(h, t, book), flipped


@jit
def _central_differences(p, first, weights, biases, activation, t, step, relu_off, book):
    """((L(p + step) - L(p - step)) / 2 step, whether the shift flips a ReLU) for every entry of
    the parameter array p, one of weights/biases: each entry shifted in place and put back."""
    flat = p.reshape(-1)
    grad = np.empty(flat.size, p.dtype)
    kinks = np.zeros(flat.size, np.bool_)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + step
        above, flipped_above = _shifted_loss(first, weights, biases, activation, t, relu_off, book)
        flat[i] = keep - step
        below, flipped_below = _shifted_loss(first, weights, biases, activation, t, relu_off, book)
        flat[i] = keep
        grad[i] = (above - below) / (2 * step)
        kinks[i] = flipped_above or flipped_below
    return grad.reshape(p.shape), kinks.reshape(p.shape)


@jit
def net_numerical_gradient(x, t, weights, biases, activation, step, book):
    """The book's numerical gradient of the mean cross-entropy (the book's, log(y + 1e-7), if
    ``book``, else the exact one), every weight and bias shifted by
    +-step in turn (and restored exactly), and which shifts flip a ReLU (a hidden input within
    step of 0: the central difference straddles the kink there).
    -> ([dW1, ...], [db1, ...], [W1 kinks, ...], [b1 kinks, ...]). x's nonzero lists are made
    once; every shifted loss is a whole forward pass, as the book's."""
    outputs, first, _, _ = _forward(np.ascontiguousarray(x), weights, biases, activation, False)
    relu_off = [outputs[0] <= 0]
    relu_off.pop()
    for layer in range(len(weights) - 1):
        relu_off.append(outputs[layer] <= 0)
    dWs, dbs = [weights[0][:0]], [biases[0][:0]]  # typed by their first, dummy element
    kWs, kbs = [weights[0][:0] != 0], [biases[0][:0] != 0]
    dWs.pop()
    dbs.pop()
    kWs.pop()
    kbs.pop()
    for layer in range(len(weights)):
        dW, kW = _central_differences(weights[layer], first, weights, biases, activation, t, step,
                                      relu_off, book)
        db, kb = _central_differences(biases[layer], first, weights, biases, activation, t, step,
                                      relu_off, book)
        dWs.append(dW)
        dbs.append(db)
        kWs.append(kW)
        kbs.append(kb)
    return dWs, dbs, kWs, kbs


@jit
def net_labels(x, weights, biases, activation):
    """argmax_c of the net's scores for each row of x (N, D) -> (N,) int64, 2048 rows at a time
    (so the nonzero lists and hidden outputs of a whole dataset are never held at once)."""
    n = x.shape[0]
    labels = np.empty(n, np.int64)
    last = len(weights) - 1
    for start in range(0, n, 2048):
        rows = np.ascontiguousarray(x[start:start + 2048])
        columns, values, tables, _, _ = _first_csr(rows)
        h = _first_layer(tables, columns, values, weights[0], biases[0], last == 0, activation)
        for layer in range(1, last + 1):
            h, _ = _hidden_layer(h, weights[layer], biases[layer], layer == last, activation)
        _argmax_rows_into(h, labels, start)
    return labels
