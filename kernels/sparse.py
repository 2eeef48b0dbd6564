"""Sparse rows: the layer products when most inputs are zero (MNIST images are 81 % zero pixels).

A batch X (N, D) is kept as its nonzero lists (CSR): row i's nonzeros are ``values[k]`` at columns
``columns[k]`` for k in ``indptr[i]:indptr[i + 1]``, columns increasing. Then

    X @ W + b   : for each row, start a register tile at b and add values[k] * W[columns[k]] for
                  its nonzeros only (W streams in row by row, the sums never leave registers);
    W += a X^T D: for each nonzero, W[columns[k]] += (a values[k]) D[i] (a row update in place).

Both do work in proportion to the nonzeros instead of N x D, and run as 256-byte tiles of
explicit SIMD (kernels/_simd.py): at MNIST's density the product takes about a third of what a
dense BLAS call takes. Compression itself is one vcompress per 64 bytes of input.

The tile loops take each output row's slice of the nonzero lists as ``lo[r]:hi[r]``, so a caller
can hand them a batch of dataset rows, or half of each row's columns (see kernels/step.py: the two
halves of a large layer go to two cores, each keeping its half of W in its own L2 cache). The
public functions (same names as their twins in fastbp.reference) are what a layer calls. Offsets
into 2-d arrays are ``row * stride + column``, ``stride`` the row length in elements, so the same
loops serve the 64-byte-padded weight copies of step.py and plain arrays.
"""
import numpy as np

from . import _simd as simd
from ._config import jit

# What _rows_times does with a finished tile before storing it (its epilogue).
STORE, STORE_RELU, STORE_RELU_MASKED = 0, 1, 2

# How many rows ahead the tile loops ask for a row's nonzero lists: a row of MNIST takes ~0.2 us
# to multiply, about one trip to memory, and a dataset's rows lie all over ~70 MB.
PREFETCH_ROWS = 2


@jit
def _tile_lanes(a):
    """Lanes of a 256-byte tile of a's dtype: 64 for float32, 32 for float64."""
    return simd.TILE_BYTES // a.itemsize


@jit
def _vec_lanes(a):
    """Lanes of a 64-byte vector of a's dtype: 16 for float32, 8 for float64."""
    return simd.VEC_BYTES // a.itemsize


@jit
def _count_nonzeros(x, counts):
    """counts[i] = number of nonzeros in row i of x (N, D), C-contiguous."""
    n, d = x.shape
    lanes = _tile_lanes(x)
    for i in range(n):
        count = 0
        for c0 in range(0, d, lanes):
            count += simd.count_nonzero(simd.load_tile(x, i * d + c0, d - c0), d - c0)
        counts[i] = count


@jit
def _compress_into(x, indptr, columns, values):
    """Fill indptr (N + 1), columns, values with the CSR of x (N, D), C-contiguous; columns and
    values must hold every nonzero. Returns the number of nonzeros."""
    n, d = x.shape
    lanes = _tile_lanes(x)
    k = 0
    indptr[0] = 0
    for i in range(n):
        for c0 in range(0, d, lanes):
            k += simd.compress(values, columns, k, simd.load_tile(x, i * d + c0, d - c0), c0, d - c0)
        indptr[i + 1] = k
    return k


@jit
def compress_rows(x):
    """CSR of x (N, D): (indptr (N + 1,) int64, columns (nnz,) int32, values (nnz,) x.dtype),
    row i's nonzeros at indptr[i]:indptr[i + 1] in increasing column order."""
    xc = np.ascontiguousarray(x)
    n = xc.shape[0]
    counts = np.empty(n, np.int64)
    _count_nonzeros(xc, counts)
    nnz = 0
    for i in range(n):
        nnz += counts[i]
    indptr = np.empty(n + 1, np.int64)
    columns = np.empty(nnz, np.int32)
    values = np.empty(nnz, xc.dtype)
    _compress_into(xc, indptr, columns, values)
    return indptr, columns, values


@jit
def _first_at_or_after(columns, start, end, column):
    """The first k in [start, end) with columns[k] >= column (end if none); columns increasing."""
    while start < end:
        middle = (start + end) // 2
        if columns[middle] < column:
            start = middle + 1
        else:
            end = middle
    return start


@jit
def _row_slices(indptr, columns, rows, split, lo, mid, hi):
    """For each r: lo[r]:hi[r] is row rows[r]'s nonzero list, split at mid[r] = its first column
    >= split (the two halves of the row's columns)."""
    for r in range(rows.size):
        i = rows[r]
        lo[r], hi[r] = indptr[i], indptr[i + 1]
        mid[r] = _first_at_or_after(columns, lo[r], hi[r], split)


@jit
def _prefetch_row(columns, values, start, end):
    """Bring one row's nonzero lists toward L1, one request per 64-byte line."""
    for k in range(start, end, 64 // columns.itemsize):
        simd.prefetch(columns, k)
    for k in range(start, end, 64 // values.itemsize):
        simd.prefetch(values, k)


@jit
def _rows_times(lo, hi, columns, values, W, w_stride, b, width, out, out_stride, epilogue, h):
    """out[r, :width] = sum_{k in lo[r]:hi[r]} values[k] * W[columns[k], :width] + b, then the
    epilogue: STORE as is, STORE_RELU max(., 0), STORE_RELU_MASKED zero where h[r] <= 0 (h has
    out's layout). b may be empty (no bias). W (D, >= width) has rows of w_stride elements.

    Columns go in 256-byte tiles; a last block that fits 64 bytes (the 10 class scores) uses a
    64-byte vector instead, so narrow layers do not pay for three empty registers."""
    tile_lanes, vec_lanes = _tile_lanes(W), _vec_lanes(W)
    rows = lo.size
    for r in range(min(PREFETCH_ROWS, rows)):
        _prefetch_row(columns, values, lo[r], hi[r])
    for r in range(rows):
        if r + PREFETCH_ROWS < rows:
            _prefetch_row(columns, values, lo[r + PREFETCH_ROWS], hi[r + PREFETCH_ROWS])
        start, end = lo[r], hi[r]
        c0 = 0
        while c0 < width:
            n = width - c0
            o = r * out_stride + c0
            if n > vec_lanes:
                acc = simd.load_tile(b, c0, n) if b.size else simd.splat_tile(W, 0.0)
                for k in range(start, end):
                    acc = simd.fma(simd.splat_tile(W, values[k]),
                                   simd.load_tile(W, columns[k] * w_stride + c0, n), acc)
                if epilogue == STORE_RELU:
                    acc = simd.relu(acc)
                elif epilogue == STORE_RELU_MASKED:
                    acc = simd.relu_mask(acc, simd.load_tile(h, o, n))
                simd.store(out, o, n, acc)
                c0 += tile_lanes
            else:
                vec = simd.load_vec(b, c0, n) if b.size else simd.splat_vec(W, 0.0)
                for k in range(start, end):
                    vec = simd.fma(simd.splat_vec(W, values[k]),
                                   simd.load_vec(W, columns[k] * w_stride + c0, n), vec)
                if epilogue == STORE_RELU:
                    vec = simd.relu(vec)
                elif epilogue == STORE_RELU_MASKED:
                    vec = simd.relu_mask(vec, simd.load_vec(h, o, n))
                simd.store(out, o, n, vec)
                c0 += vec_lanes


@jit
def _add_outer(lo, hi, columns, values, D, d_stride, W, w_stride, width, scale):
    """W[:, :width] += scale * sum_r sum_{k in lo[r]:hi[r]} values[k] * outer(e_columns[k], D[r]):
    W += scale X^T D, one in-place update of a row of W per nonzero of X.

    Each row of W is updated in the order of the batch's rows, so the result is the same on
    every run and whatever other rows another caller updates meanwhile. Column blocks as in
    _rows_times."""
    tile_lanes, vec_lanes = _tile_lanes(W), _vec_lanes(W)
    rows = lo.size
    for r in range(min(PREFETCH_ROWS, rows)):
        _prefetch_row(columns, values, lo[r], hi[r])
    for r in range(rows):
        if r + PREFETCH_ROWS < rows:
            _prefetch_row(columns, values, lo[r + PREFETCH_ROWS], hi[r + PREFETCH_ROWS])
        start, end = lo[r], hi[r]
        c0 = 0
        while c0 < width:
            n = width - c0
            if n > vec_lanes:
                g = simd.mul(simd.load_tile(D, r * d_stride + c0, n), simd.splat_tile(W, scale))
                for k in range(start, end):
                    offset = columns[k] * w_stride + c0
                    simd.store(W, offset, n, simd.fma(simd.splat_tile(W, values[k]), g,
                                                      simd.load_tile(W, offset, n)))
                c0 += tile_lanes
            else:
                gv = simd.mul(simd.load_vec(D, r * d_stride + c0, n), simd.splat_vec(W, scale))
                for k in range(start, end):
                    offset = columns[k] * w_stride + c0
                    simd.store(W, offset, n, simd.fma(simd.splat_vec(W, values[k]), gv,
                                                      simd.load_vec(W, offset, n)))
                c0 += vec_lanes


@jit
def _column_sums_into(D, rows, width, stride, out, scale):
    """out[:width] += scale * sum_r D[r, :width] for r < rows (D rows of stride elements)."""
    lanes = _tile_lanes(D)
    for c0 in range(0, width, lanes):
        n = width - c0
        acc = simd.splat_tile(D, 0.0)
        for r in range(rows):
            acc = simd.add(acc, simd.load_tile(D, r * stride + c0, n))
        simd.store(out, c0, n, simd.fma(acc, simd.splat_tile(out, scale), simd.load_tile(out, c0, n)))


@jit
def csr_affine_forward(indptr, columns, values, W, b):
    """out = X @ W + b for X in CSR form (N rows).   W (D, H), b (H,) -> (N, H)"""
    Wc = np.ascontiguousarray(W)
    n, h = indptr.size - 1, Wc.shape[1]
    out = np.empty((n, h), Wc.dtype)
    _rows_times(indptr[:-1], indptr[1:], columns, values, Wc, h, np.ascontiguousarray(b), h, out, h,
                STORE, out)
    return out


@jit
def csr_affine_backward_params(indptr, columns, values, n_features, dout):
    """dW = X^T @ dout, db = sum_n dout for X in CSR form (N rows, n_features columns).
    -> (dW (n_features, H), db (H,))"""
    dc = np.ascontiguousarray(dout)
    n, h = dc.shape
    dW = np.zeros((n_features, h), dc.dtype)
    _add_outer(indptr[:-1], indptr[1:], columns, values, dc, h, dW, h, h, 1.0)
    db = np.zeros(h, dc.dtype)
    _column_sums_into(dc, n, h, h, db, 1.0)
    return dW, db
