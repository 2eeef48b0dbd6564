"""Sparse rows: the layer products when most inputs are zero (MNIST images are 81 % zero pixels).

A batch X (N, D) is kept as its nonzero lists (CSR): row i's nonzeros are ``values[k]`` at columns
``columns[k]`` for k in ``indptr[i]:indptr[i + 1]``, columns increasing. Then

    X @ W + b   : for each row, start a register tile at b and add values[k] * W[columns[k]] for
                  its nonzeros only (W streams in row by row, the sums never leave registers);
    W += a X^T D: for each nonzero, W[columns[k]] += (a values[k]) D[i] (a row update in place,
                  chunk by chunk of W's rows), or from X's nonzeros regrouped by column (a
                  counting sort), each row of W's update summed in registers and written once
                  (wide rows: no load and store of a row of W per nonzero).

Both do work in proportion to the nonzeros instead of N x D, and run as tiles of explicit SIMD
(kernels/_simd.py), each row in as few tiles as cover it: at MNIST's density the product takes
about a third of what a dense BLAS call takes. Compression itself is one vcompress per 64 bytes
of input with AVX-512, one table lookup and vpermps per 32 bytes with AVX2 (kernels/_simd.py).

The tile loops take each output row's slice of the nonzero lists as ``lo[r]:hi[r]``, or chunk by
chunk as a cut table (C + 1, R), row r's chunk c at ``cuts[c, r]:cuts[c + 1, r]`` (_chunked_times,
_add_outer; ``cut_table(lo, hi)`` is lo/hi as one chunk), so a caller can hand them a batch of
dataset rows (fit's step reads its batch where the dataset's nonzeros lie) or a batch compressed
on its own (a hidden layer's output). The public functions (same names as their twins in
fastbp.reference) are what a layer calls. Offsets into 2-d arrays are ``row * stride + column``,
``stride`` the row length in elements, so the same loops serve the 64-byte-padded weight copies
of step.py and plain arrays.

The loops index the lists (and the counting sort its counters) with unsigned integers: Numba
checks a signed index for wrapping around (a negative one counts from the end), three
instructions an access. The counting sort of half a Fashion-MNIST batch (22,000 entries) took 44
us with signed list indices, 36 unsigned; its scatter with signed counters twice as long.
"""
import numpy as np

from . import _simd as simd
from ._config import jit, jit_borrowing

# What _rows_times does with a finished tile before storing it (its epilogue).
STORE, STORE_RELU, STORE_RELU_MASKED = 0, 1, 2

# How many rows ahead the tile loops ask for a row's nonzero lists: a row of MNIST takes ~0.2 us
# to multiply, about one trip to memory, and a dataset's rows lie all over ~70 MB.
PREFETCH_ROWS = 2

# The first layer's products go through W in chunks of this many of its rows (the input's
# columns): every row of the batch takes its nonzeros in one chunk before the next chunk's W
# rows come in, so a chunk of W is read from L1 by all the rows instead of each row streaming
# its own W rows from L2 (a row's sums wait in the output meanwhile; the additions are the same,
# in the same order). Measured on a 2-core Zen 4, float64 W (784, 50), us per product, row by
# row -> chunks of 64, warm: 50 MNIST-like rows 40 -> 35 (Fashion-MNIST 91 -> 79); X^T D into 384
# rows of dW from 100 rows 55-60 -> 48-52 (119 -> 108). 64 columns: a compression tile of float32
# (chunks of 48 to 128 columns took within 10 % of it in a first version of these loops).
CHUNK = 64

# _column_outer takes narrower tiles, in more passes, when that keeps a tile-wide slice of every
# row of D in L1 (32 KiB on Zen 3 and 4): D's rows are read once per nonzero, in any order. D
# of 100 rows (a batch), us for X^T D of a MNIST-like batch (15,000 nonzeros) on a Zen 4, by
# tile: float32, 256 wide 141 (1 KiB) / 112 (512) / 96 (256); float64, 50 wide 54 (512) / 48
# (256).
L1_BYTES = 32 * 1024


@jit_borrowing
def _count_nonzeros(x, counts):
    """counts[i] = number of nonzeros in row i of x (N, D), C-contiguous. Returns how many
    entries of x are NaN or infinite (the same pass: callers check input for free).

    Whole tiles load whole and only a row's tail is masked (every tile masked took 7.5 us for
    100 MNIST rows of float32 on a Zen 4, this 5.0: the nets' compiled calls count every batch
    before their first stage)."""
    n, d = x.shape
    tile = simd.zeros(x, 256)
    lanes = simd.lanes(tile)
    nonfinite = 0
    for i in range(n):
        count = 0
        c0 = 0
        while c0 + lanes <= d:
            row = simd.load_full(tile, x, i * d + c0)
            count += simd.count_nonzero(row, lanes)
            nonfinite += simd.count_nonfinite(row, lanes)
            c0 += lanes
        if c0 < d:
            row = simd.load(tile, x, i * d + c0, d - c0)
            count += simd.count_nonzero(row, d - c0)
            nonfinite += simd.count_nonfinite(row, d - c0)
        counts[i] = count
    return nonfinite


@jit_borrowing
def _compress_row(tile, x, i, columns, values, k):
    """Row i of x (N, D)'s nonzeros into columns/values from position k on; -> the position after."""
    d = x.shape[1]
    lanes = simd.lanes(tile)
    c0 = 0
    while c0 + lanes <= d:   # (whole tiles: no masks, see _count_nonzeros)
        k += simd.compress(values, columns, k, simd.load_full(tile, x, i * d + c0), c0, lanes)
        c0 += lanes
    if c0 < d:
        k += simd.compress(values, columns, k, simd.load(tile, x, i * d + c0, d - c0), c0, d - c0)
    return k


@jit_borrowing
def _compress_into(x, indptr, columns, values):
    """Fill indptr (N + 1), columns, values with the CSR of x (N, D), C-contiguous; columns and
    values must hold every nonzero. Returns the number of nonzeros."""
    tile = simd.zeros(x, 256)
    k = 0
    indptr[0] = 0
    for i in range(x.shape[0]):
        k = _compress_row(tile, x, i, columns, values, k)
        indptr[i + 1] = k
    return k


@jit_borrowing
def _compress_rows_into(x, a, b, columns, values, lo, hi):
    """Rows a:b of x (N, D), C-contiguous, as nonzero lists: row i's at lo[i]:hi[i], packed from
    position a * D on: rows 0:N in lists that hold x's nonzeros, or two row ranges at once by two
    threads in lists of N * D entries (no other row uses a range's region)."""
    tile = simd.zeros(x, 256)
    k = a * x.shape[1]
    for i in range(a, b):
        lo[i] = k
        k = _compress_row(tile, x, i, columns, values, k)
        hi[i] = k


@jit_borrowing
def _compress_chunks(x, c0, c1, columns, values, table, k):
    """Every row of x (N, D), C-contiguous, as nonzero lists of its columns c0 * CHUNK:c1 * CHUNK
    (chunks c0:c1), cut where each chunk begins: row after row into columns/values from position
    k on, the cut table (c1 - c0 + 1, N) taking where row i's chunk c0 + j begins (table[j, i])
    and where its lists end (table[c1 - c0, i]; see _chunked_times). -> the position after. (x
    float32 or float64: a tile of no more than CHUNK lanes, so no tile crosses a chunk.)"""
    n, d = x.shape
    tile = simd.zeros(x, 256)
    for i in range(n):
        for s in range(c0 * CHUNK, min(c1 * CHUNK, d), simd.lanes(tile)):
            if s % CHUNK == 0:
                table[s // CHUNK - c0, i] = k
            if s + simd.lanes(tile) <= d:   # (a whole tile: no masks)
                k += simd.compress(values, columns, k, simd.load_full(tile, x, i * d + s), s,
                                   simd.lanes(tile))
            else:
                k += simd.compress(values, columns, k, simd.load(tile, x, i * d + s, d - s), s, d - s)
        table[c1 - c0, i] = k
    return k


@jit
def chunk_count(d):
    """How many CHUNK-column chunks cover d columns."""
    return (d + CHUNK - 1) // CHUNK


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


@jit_borrowing
def _prefetch_row(columns, values, start, end):
    """Bring one row's nonzero lists toward L1, one request per 64-byte line."""
    for k in range(start, end, 64 // columns.itemsize):
        simd.prefetch(columns, k)
    for k in range(start, end, 64 // values.itemsize):
        simd.prefetch(values, k)


@jit_borrowing
def _times_slice(acc, start, end, columns, values, W, w_stride, b, c0, n, out, o, epilogue, h):
    """One tile-wide slice of one output row: out.flat[o:o + n] = epilogue(b[c0:c0 + n] +
    sum_k values[k] * W[columns[k], c0:c0 + n]) for k in start:end, the sums in ``acc`` (its width
    says how many lanes; lanes >= n are masked). Returns c0 + the tile's lanes.

    W's rows are read whole, without masks, where they hold the whole tile: padded rows (fit's
    copies of the weights, step._aligned_rows) put their padding in lanes >= n, which are never
    stored (fit 784-50-10 float32 on one thread: 4 % less time an iteration on a Zen 4)."""
    if b.size:
        acc = simd.load_slice(acc, b, c0, n)
    if c0 + simd.lanes(acc) <= w_stride:
        for k in range(np.uint64(start), np.uint64(end)):
            acc = simd.fma(simd.splat(acc, values[k]),
                           simd.load_full(acc, W, columns[k] * w_stride + c0), acc)
    else:
        for k in range(np.uint64(start), np.uint64(end)):
            acc = simd.fma(simd.splat(acc, values[k]),
                           simd.load_slice(acc, W, columns[k] * w_stride + c0, n), acc)
    if epilogue == STORE_RELU:
        acc = simd.relu(acc)
    elif epilogue == STORE_RELU_MASKED:
        acc = simd.relu_mask(acc, simd.load_slice(acc, h, o, n))
    simd.store_slice(out, o, n, acc)
    return c0 + simd.lanes(acc)


@jit_borrowing
def _times_split(big, mid, small, start, end, columns, values, W, w_stride, b, c0, n, out, o,
                 epilogue, h):
    """_times_slice for a slice whose last lanes fit in 16 bytes past a half and a quarter of the
    tile that would cover it (192 to 208 bytes, a 50-wide float32 row; 384 to 400, float64): the
    sums in tiles of a half, a quarter and 16 bytes (big, mid, small: all lanes 0), the first
    two whole and the last masked to the slice's last lanes, instead of one tile whose last
    register holds two live lanes (see the 16-byte tail at _chunked_split). The same
    additions in the same order as one tile's. Returns c0 + n."""
    m = c0 + simd.lanes(big)
    s = m + simd.lanes(mid)
    left = c0 + n - s   # (the small tile's live lanes)
    a1, a2, a3 = big, mid, small
    if b.size:
        a1, a2 = simd.load_full(big, b, c0), simd.load_full(mid, b, m)
        a3 = simd.load(small, b, s, left)
    if s + simd.lanes(small) <= w_stride:   # (W's rows hold the tiles whole: see _times_slice)
        for k in range(np.uint64(start), np.uint64(end)):
            at, v = columns[k] * w_stride, values[k]
            a1 = simd.fma(simd.splat(a1, v), simd.load_full(a1, W, at + c0), a1)
            a2 = simd.fma(simd.splat(a2, v), simd.load_full(a2, W, at + m), a2)
            a3 = simd.fma(simd.splat(a3, v), simd.load_full(a3, W, at + s), a3)
    else:
        for k in range(np.uint64(start), np.uint64(end)):
            at, v = columns[k] * w_stride, values[k]
            a1 = simd.fma(simd.splat(a1, v), simd.load_full(a1, W, at + c0), a1)
            a2 = simd.fma(simd.splat(a2, v), simd.load_full(a2, W, at + m), a2)
            a3 = simd.fma(simd.splat(a3, v), simd.load(a3, W, at + s, left), a3)
    o2, o3 = o + (m - c0), o + (s - c0)
    if epilogue == STORE_RELU:
        a1, a2, a3 = simd.relu(a1), simd.relu(a2), simd.relu(a3)
    elif epilogue == STORE_RELU_MASKED:
        a1 = simd.relu_mask(a1, simd.load_full(a1, h, o))
        a2 = simd.relu_mask(a2, simd.load_full(a2, h, o2))
        a3 = simd.relu_mask(a3, simd.load(a3, h, o3, left))
    simd.store_full(out, o, a1)
    simd.store_full(out, o2, a2)
    simd.store(out, o3, left, a3)
    return c0 + n


@jit
def _slice_bytes(left):
    """The tile width for the next slice of a row with ``left`` bytes to go: the narrowest tile
    that covers them all (masked past the end), else the widest. Each slice is a pass over the
    row's nonzeros, so one wide masked tile beats several narrow ones: a 50-float row as one
    256-byte tile took 27 us where four 64-byte passes took 81 (784-50, batch 100)."""
    size = simd.TILE_SIZES[0]
    for candidate in simd.TILE_SIZES:   # widest first
        if candidate >= left:
            size = candidate
    return size


@jit
def _splits(size, nbytes):
    """Whether a slice of ``nbytes`` that _slice_bytes covers with a ``size``-byte tile goes as a
    half, a quarter and a 16-byte tail instead (_times_split, _add_outer_split, _chunked_split):
    its last lanes fit in those 16 bytes.

    The callers ask it of a 512-byte tile also on AVX2, whose widest is 256 bytes: a 384-400-byte
    slice (a 50-wide float64 row, the book's nets) then goes in one pass as 256 + 128 + 16 bytes,
    13 registers of sums of AVX2's 16, where it took two passes over the nonzeros (256 bytes,
    then 64 + 64 + 16 by _splits_half), each loading, converting and broadcasting every value
    again. The same additions in the same order: the same numbers. One thread, warm, on a Zen 3:
    half of a MNIST-like batch's first-layer product in the nets (chunked, 7,500 nonzeros) 32.1
    -> 27.8 us."""
    return size >= 256 and 3 * size // 4 < nbytes <= 3 * size // 4 + 16


@jit
def _splits_half(size, nbytes):
    """Whether a slice of ``nbytes`` that _slice_bytes covers with a 256-byte tile goes as two
    quarters and a 16-byte tail (the same functions as _splits): its last lanes fit in 16 bytes
    past half the tile. An 18-wide float64 row on AVX2 (whose widest tile is 256 bytes), or the
    last 18 columns of an 82-wide one: five registers' multiply-adds a nonzero instead of eight,
    three of them masked loads of no live lane. (A 50-wide float64 row took a 256-byte pass and
    this one; it now goes in one pass: see _splits.)"""
    return size == 256 and size // 2 < nbytes <= size // 2 + 16


@jit_borrowing
def _rows_times(lo, hi, columns, values, W, w_stride, b, width, out, out_stride, epilogue, h):
    """out[r, :width] = sum_{k in lo[r]:hi[r]} values[k] * W[columns[k], :width] + b, then the
    epilogue: STORE as is, STORE_RELU max(., 0), STORE_RELU_MASKED zero where h[r] <= 0 (h has
    out's layout). b may be empty (no bias). W (D, >= width) has rows of w_stride elements.

    A row is done in as few tile-wide slices as cover it (1 KiB for a 256-wide float32 row, 64
    bytes for 10 float32 class scores, 128 for float64), each one pass over the row's nonzeros."""
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
            size = _slice_bytes(n * W.itemsize)
            if size == 256 and _splits(size, n * W.itemsize):
                c0 = _times_split(simd.zeros(W, 128), simd.zeros(W, 64), simd.zeros(W, 16), start,
                                  end, columns, values, W, w_stride, b, c0, n, out, o, epilogue, h)
            elif _splits_half(size, n * W.itemsize):
                c0 = _times_split(simd.zeros(W, 64), simd.zeros(W, 64), simd.zeros(W, 16), start,
                                  end, columns, values, W, w_stride, b, c0, n, out, o, epilogue, h)
            elif _splits(512, n * W.itemsize):   # (also on AVX2: see _splits)
                c0 = _times_split(simd.zeros(W, 256), simd.zeros(W, 128), simd.zeros(W, 16), start,
                                  end, columns, values, W, w_stride, b, c0, n, out, o, epilogue, h)
            elif size == 1024:
                c0 = _times_slice(simd.zeros(W, 1024), start, end, columns, values, W, w_stride, b, c0,
                                  n, out, o, epilogue, h)
            elif size == 512:
                c0 = _times_slice(simd.zeros(W, 512), start, end, columns, values, W, w_stride, b, c0,
                                  n, out, o, epilogue, h)
            elif size == 256:
                c0 = _times_slice(simd.zeros(W, 256), start, end, columns, values, W, w_stride, b, c0,
                                  n, out, o, epilogue, h)
            elif size == 128:
                c0 = _times_slice(simd.zeros(W, 128), start, end, columns, values, W, w_stride, b, c0,
                                  n, out, o, epilogue, h)
            else:
                c0 = _times_slice(simd.zeros(W, 64), start, end, columns, values, W, w_stride, b, c0,
                                  n, out, o, epilogue, h)


@jit_borrowing
def _chunked_slice(zero, chunks, columns, values, W, w_stride, b, c0, n, out):
    """One tile-wide slice of _chunked_times: out[:, c0:c0 + n], the sums in tiles of ``zero``'s
    width (all lanes 0). Returns c0 + the tile's lanes."""
    rows, width = out.shape
    for r in range(rows):
        simd.store_slice(out, r * width + c0, n, simd.load_slice(zero, b, c0, n) if b.size else zero)
    full = c0 + simd.lanes(zero) <= w_stride   # (W's rows hold the tile whole: see _times_slice)
    for c in range(chunks.shape[0] - 1):
        for r in range(rows):
            start, end = chunks[c, r], chunks[c + 1, r]
            if start == end:
                continue
            o = r * width + c0
            acc = simd.load_slice(zero, out, o, n)
            # (the loops are written out here: a callee returning the tile took 1.6x as long)
            if full:
                for k in range(np.uint64(start), np.uint64(end)):
                    row = simd.load_full(acc, W, columns[k] * w_stride + c0)
                    acc = simd.fma(simd.splat(acc, values[k]), row, acc)
            else:
                for k in range(np.uint64(start), np.uint64(end)):
                    row = simd.load_slice(acc, W, columns[k] * w_stride + c0, n)
                    acc = simd.fma(simd.splat(acc, values[k]), row, acc)
            simd.store_slice(out, o, n, acc)
    return c0 + simd.lanes(zero)


# A split's last tile (_chunked_split, _column_split; _times_split and _add_outer_split's always)
# is 16 bytes when the slice's last lanes fit in them, as a 50-wide float64 row's last two do: a
# 128-bit multiply-add, which Zen 4 issues on one of its two 256-bit FMA pipes where a 512-bit
# one takes both, so an entry's six 512-bit and one 128-bit multiply-adds take 6.5 cycles where
# seven 512-bit ones took 7 (measured below). The tail's loads and stores are masked (simd.load /
# store: the slice loads of a tile assume 64-byte registers), and W's rows load it whole where
# their stride holds it.
@jit_borrowing
def _chunked_split(big, mid, small, chunks, columns, values, W, w_stride, b, c0, n, out):
    """_chunked_slice for a slice that a tile would cover with a last register holding no live
    lane (384 to 448 bytes of a 512-byte tile, or a slice that _splits or _splits_half): its
    sums in three tiles (big, mid, small: all lanes 0) of a half and a quarter of that tile and
    16 or 64 bytes (the 16-byte tail: see above), or two quarters and 16 bytes, the first two
    whole and the last masked to the slice's last lanes, updated together for each nonzero (a
    50-wide float64 row: six 512-bit registers' multiply-adds and one 128-bit one a nonzero
    instead of eight 512-bit ones; one half of a Fashion-MNIST batch's first-layer product on a
    2-core Zen 4, from padded rows, 58 -> 52 us with a 64-byte last tile, 50 -> 47 and 61 -> 57
    with a 16-byte one). The same additions in the same order as one tile's. Returns c0 + n."""
    rows, width = out.shape
    m = c0 + simd.lanes(big)
    s = m + simd.lanes(mid)
    left = c0 + n - s   # (the small tile's live lanes)
    for r in range(rows):
        o = r * width
        simd.store_full(out, o + c0, simd.load_full(big, b, c0) if b.size else big)
        simd.store_full(out, o + m, simd.load_full(mid, b, m) if b.size else mid)
        simd.store(out, o + s, left, simd.load(small, b, s, left) if b.size else small)
    full = s + simd.lanes(small) <= w_stride
    for c in range(chunks.shape[0] - 1):
        for r in range(rows):
            start, end = chunks[c, r], chunks[c + 1, r]
            if start == end:
                continue
            o = r * width
            a1 = simd.load_full(big, out, o + c0)
            a2 = simd.load_full(mid, out, o + m)
            a3 = simd.load(small, out, o + s, left)
            if full:
                for k in range(np.uint64(start), np.uint64(end)):
                    at, v = columns[k] * w_stride, values[k]
                    a1 = simd.fma(simd.splat(a1, v), simd.load_full(a1, W, at + c0), a1)
                    a2 = simd.fma(simd.splat(a2, v), simd.load_full(a2, W, at + m), a2)
                    a3 = simd.fma(simd.splat(a3, v), simd.load_full(a3, W, at + s), a3)
            else:
                for k in range(np.uint64(start), np.uint64(end)):
                    at, v = columns[k] * w_stride, values[k]
                    a1 = simd.fma(simd.splat(a1, v), simd.load_full(a1, W, at + c0), a1)
                    a2 = simd.fma(simd.splat(a2, v), simd.load_full(a2, W, at + m), a2)
                    a3 = simd.fma(simd.splat(a3, v), simd.load(a3, W, at + s, left), a3)
            simd.store_full(out, o + c0, a1)
            simd.store_full(out, o + m, a2)
            simd.store(out, o + s, left, a3)
    return c0 + n


@jit_borrowing
def _chunked_times(chunks, columns, values, W, w_stride, b, out):
    """out = X @ W + b for out (R, H) C-contiguous and W (D, >= H) with rows of w_stride elements
    (plain, or 64-byte padded: step._aligned_rows), X's rows as nonzero lists cut in chunks:
    the cut table ``chunks`` (C + 1, R) has row r's chunk c at chunks[c, r]:chunks[c + 1, r]
    (_compress_chunks makes one; fit's steps take theirs from the dataset's, step.chunk_cuts).
    Chunk by chunk over all the rows (see CHUNK), each row's sums kept in out in between; b may
    be empty (no bias). The same additions in the same order as _rows_times: the same numbers."""
    width = out.shape[1]
    c0 = 0
    while c0 < width:
        n = width - c0
        size = _slice_bytes(n * W.itemsize)
        if _splits(512, n * W.itemsize):   # (a 16-byte tail: see _chunked_split; AVX2: _splits)
            c0 = _chunked_split(simd.zeros(W, 256), simd.zeros(W, 128), simd.zeros(W, 16), chunks,
                                columns, values, W, w_stride, b, c0, n, out)
        elif size == 256 and _splits(size, n * W.itemsize):
            c0 = _chunked_split(simd.zeros(W, 128), simd.zeros(W, 64), simd.zeros(W, 16), chunks,
                                columns, values, W, w_stride, b, c0, n, out)
        elif _splits_half(size, n * W.itemsize):
            c0 = _chunked_split(simd.zeros(W, 64), simd.zeros(W, 64), simd.zeros(W, 16), chunks,
                                columns, values, W, w_stride, b, c0, n, out)
        elif size == 512 and 384 < n * W.itemsize <= 448:
            c0 = _chunked_split(simd.zeros(W, 256), simd.zeros(W, 128), simd.zeros(W, 64), chunks,
                                columns, values, W, w_stride, b, c0, n, out)
        elif size == 1024:
            c0 = _chunked_slice(simd.zeros(W, 1024), chunks, columns, values, W, w_stride, b, c0, n, out)
        elif size == 512:
            c0 = _chunked_slice(simd.zeros(W, 512), chunks, columns, values, W, w_stride, b, c0, n, out)
        elif size == 256:
            c0 = _chunked_slice(simd.zeros(W, 256), chunks, columns, values, W, w_stride, b, c0, n, out)
        elif size == 128:
            c0 = _chunked_slice(simd.zeros(W, 128), chunks, columns, values, W, w_stride, b, c0, n, out)
        else:
            c0 = _chunked_slice(simd.zeros(W, 64), chunks, columns, values, W, w_stride, b, c0, n, out)


@jit_borrowing
def _add_outer_slice(zero, cuts, columns, values, D, d_stride, W, w_stride, c0, n, scale):
    """One tile-wide slice of _add_outer: W[columns[k], c0:c0 + n] += (scale values[k]) D[r, c0:c0
    + n] for row r's entries k, chunk by chunk, the tiles of ``zero``'s width. Returns c0 + the
    tile's lanes."""
    whole = n >= simd.lanes(zero) or c0 + simd.lanes(zero) <= w_stride   # (see _add_outer)
    for c in range(cuts.shape[0] - 1):
        for r in range(cuts.shape[1]):
            start, end = cuts[c, r], cuts[c + 1, r]
            if start == end:
                continue
            g = simd.mul(simd.load_slice(zero, D, r * d_stride + c0, n), simd.splat(zero, scale))
            if whole:
                for k in range(np.uint64(start), np.uint64(end)):
                    offset = columns[k] * w_stride + c0
                    simd.store_full(W, offset, simd.fma(simd.splat(g, values[k]), g,
                                                        simd.load_full(g, W, offset)))
            else:
                for k in range(np.uint64(start), np.uint64(end)):
                    offset = columns[k] * w_stride + c0
                    row = simd.fma(simd.splat(g, values[k]), g, simd.load_slice(g, W, offset, n))
                    simd.store_slice(W, offset, n, row)
    return c0 + simd.lanes(zero)


@jit_borrowing
def _add_outer_split(big, mid, small, cuts, columns, values, D, d_stride, W, w_stride, c0, n, scale):
    """_add_outer_slice for a slice that _splits: the update in tiles of a half, a quarter and 16
    bytes of the covering tile (big, mid, small), the first two whole, the last masked to the
    slice's last lanes (fit's 784-50-10 float32 update of a batch's W1 rows on one thread, from
    padded rows, 69 -> 45 us on a Zen 4: the one tile's last register was a masked load and a
    masked store a nonzero). The same operations in the same order as one tile's; the kernels'
    float flags (reassociation: kernels/_config.py) let LLVM compile them differently, so a value
    may differ from the one tile's by an ulp (both ~4e-15 from NumPy's float64). Returns c0 + n."""
    m = c0 + simd.lanes(big)
    s = m + simd.lanes(mid)
    left = c0 + n - s   # (the small tile's live lanes)
    whole = s + simd.lanes(small) <= w_stride   # (the tail loaded and stored whole: see _add_outer)
    for c in range(cuts.shape[0] - 1):
        for r in range(cuts.shape[1]):
            start, end = cuts[c, r], cuts[c + 1, r]
            if start == end:
                continue
            o = r * d_stride + c0
            g1 = simd.mul(simd.load_full(big, D, o), simd.splat(big, scale))
            g2 = simd.mul(simd.load_full(mid, D, o + (m - c0)), simd.splat(mid, scale))
            g3 = simd.mul(simd.load(small, D, o + (s - c0), left), simd.splat(small, scale))
            # (the loops are written out: see _chunked_slice)
            if whole:
                for k in range(np.uint64(start), np.uint64(end)):
                    at, v = columns[k] * w_stride, values[k]
                    simd.store_full(W, at + c0,
                                    simd.fma(simd.splat(g1, v), g1, simd.load_full(g1, W, at + c0)))
                    simd.store_full(W, at + m,
                                    simd.fma(simd.splat(g2, v), g2, simd.load_full(g2, W, at + m)))
                    simd.store_full(W, at + s,
                                    simd.fma(simd.splat(g3, v), g3, simd.load_full(g3, W, at + s)))
            else:
                for k in range(np.uint64(start), np.uint64(end)):
                    at, v = columns[k] * w_stride, values[k]
                    simd.store_full(W, at + c0,
                                    simd.fma(simd.splat(g1, v), g1, simd.load_full(g1, W, at + c0)))
                    simd.store_full(W, at + m,
                                    simd.fma(simd.splat(g2, v), g2, simd.load_full(g2, W, at + m)))
                    simd.store(W, at + s, left,
                               simd.fma(simd.splat(g3, v), g3, simd.load(g3, W, at + s, left)))
    return c0 + n


@jit_borrowing
def _add_outer(cuts, columns, values, D, d_stride, W, w_stride, width, scale):
    """W[:, :width] += scale * sum_r sum_k values[k] * outer(e_columns[k], D[r]) over row r's
    entries k in cuts[0, r]:cuts[-1, r]: W += scale X^T D, one in-place update of a row of W per
    nonzero of X. ``cuts`` (C + 1, R) as _chunked_times's: chunk by chunk over all the rows, so
    a chunk's rows of W are updated in L1 by all the rows of D (a 2-row table: row by row).

    Each row of W is updated in the order of the batch's rows (chunk by chunk or not), so the
    result is the same on every run and whatever other rows another caller updates meanwhile.
    Slices as _rows_times.

    Where W's rows hold a slice's last tile whole (w_stride: padded rows, step._aligned_rows),
    that tile loads and stores whole: its lanes past ``width`` get + 0 (D's lanes there load
    as 0), which leaves padding as it was. AVX2 has no cheap masked store (vmaskmovps: ~20
    cycles on Zen 3). fit 784-50-10 float32's update of half a batch's W1 rows from padded rows,
    one thread, on a Zen 3, us: row by row with the 16-byte tail masked 37.6, whole 31.4, in
    chunks of 64 rows 25.7."""
    c0 = 0
    while c0 < width:
        n = width - c0
        size = _slice_bytes(n * W.itemsize)
        if size == 256 and _splits(size, n * W.itemsize):
            c0 = _add_outer_split(simd.zeros(W, 128), simd.zeros(W, 64), simd.zeros(W, 16), cuts,
                                  columns, values, D, d_stride, W, w_stride, c0, n, scale)
        elif _splits_half(size, n * W.itemsize):
            c0 = _add_outer_split(simd.zeros(W, 64), simd.zeros(W, 64), simd.zeros(W, 16), cuts,
                                  columns, values, D, d_stride, W, w_stride, c0, n, scale)
        elif _splits(512, n * W.itemsize):   # (also on AVX2: see _splits)
            c0 = _add_outer_split(simd.zeros(W, 256), simd.zeros(W, 128), simd.zeros(W, 16), cuts,
                                  columns, values, D, d_stride, W, w_stride, c0, n, scale)
        elif size == 1024:
            c0 = _add_outer_slice(simd.zeros(W, 1024), cuts, columns, values, D, d_stride, W,
                                  w_stride, c0, n, scale)
        elif size == 512:
            c0 = _add_outer_slice(simd.zeros(W, 512), cuts, columns, values, D, d_stride, W,
                                  w_stride, c0, n, scale)
        elif size == 256:
            c0 = _add_outer_slice(simd.zeros(W, 256), cuts, columns, values, D, d_stride, W,
                                  w_stride, c0, n, scale)
        elif size == 128:
            c0 = _add_outer_slice(simd.zeros(W, 128), cuts, columns, values, D, d_stride, W,
                                  w_stride, c0, n, scale)
        else:
            c0 = _add_outer_slice(simd.zeros(W, 64), cuts, columns, values, D, d_stride, W,
                                  w_stride, c0, n, scale)


@jit
def cut_table(lo, hi):
    """The cut table (2, R) of rows whose lists are lo[r]:hi[r], each as one chunk (see
    _chunked_times)."""
    cuts = np.empty((2, lo.size), np.int64)
    cuts[0] = lo
    cuts[1] = hi
    return cuts


@jit_borrowing
def _column_lists(lo, hi, columns, values, p0, p1, starts, rows, vals, first):
    """X's nonzeros regrouped by column (a counting sort): from its rows' nonzero lists (row r's
    at lo[r]:hi[r], every column in p0:p1), column p0 + j's entries are rows[starts[j]:starts[j +
    1]], the row (r) of each with its value in vals, rows increasing, from position ``first`` on.
    starts (p1 - p0 + 2,). (Its indices are unsigned: see the top.)"""
    starts[:] = 0
    counts, cursors = starts[2:], starts[1:]
    for r in range(lo.size):   # column p's count at starts[p - p0 + 2] ...
        for k in range(np.uint64(lo[r]), np.uint64(hi[r])):
            counts[np.uint64(columns[k] - p0)] += 1
    starts[0] = starts[1] = first
    for j in range(2, starts.size):   # ... its first position at starts[p - p0 + 1] ...
        starts[j] += starts[j - 1]
    for r in range(lo.size):   # ... and its end there once its entries are placed
        row = np.int32(r)
        for k in range(np.uint64(lo[r]), np.uint64(hi[r])):
            j = np.uint64(columns[k] - p0)
            at = np.uint64(cursors[j])
            rows[at] = row
            vals[at] = values[k]
            cursors[j] = at + np.uint64(1)


@jit
def _column_slice_bytes(left, rows):
    """_slice_bytes for _column_outer, whose every entry reads a tile-wide slice of one of D's
    ``rows`` rows: no wider than keeps that slice of all of them in L1 (L1_BYTES), unless
    even the narrowest tile does not."""
    widest = _slice_bytes(left)
    for size in simd.TILE_SIZES:   # widest first
        if size <= widest and (size * rows <= L1_BYTES or size == simd.TILE_SIZES[-1]):
            return size
    return widest


@jit_borrowing
def _column_outer_slice(zero, starts, rows, vals, D, W, p0, scale, add, s0, n):
    """One tile-wide slice of _column_outer: columns s0:s0 + n of W. Returns s0 + the tile's
    lanes."""
    d_stride, w_stride = D.shape[1], W.shape[1]
    factor = simd.splat(zero, scale)
    for j in range(starts.size - 2):
        acc = zero
        if n >= simd.lanes(zero):   # (every lane live: whole loads, no masks)
            for k in range(np.uint64(starts[j]), np.uint64(starts[j + 1])):
                acc = simd.fma(simd.splat(acc, vals[k]), simd.load_full(zero, D, rows[k] * d_stride + s0),
                               acc)
        else:
            for k in range(np.uint64(starts[j]), np.uint64(starts[j + 1])):
                acc = simd.fma(simd.splat(acc, vals[k]),
                               simd.load_slice(zero, D, rows[k] * d_stride + s0, n), acc)
        o = (p0 + j) * w_stride + s0
        if add:
            simd.store_slice(W, o, n, simd.fma(acc, factor, simd.load_slice(zero, W, o, n)))
        else:
            simd.store_slice(W, o, n, simd.mul(acc, factor))
    return s0 + simd.lanes(zero)


@jit_borrowing
def _column_split(big, small, starts, rows, vals, D, W, p0, scale, add, s0, n):
    """_column_outer_slice for a slice of 128 to 192 bytes, which a 256-byte tile would cover with
    a last register holding no live lane: the sums in two tiles of 128 and 16 or 64 bytes (big
    whole, small masked to the slice's last lanes; the 16-byte tail: see _chunked_split),
    updated together for each entry (the last 18 columns of a 50-wide float64 dW1: three
    registers' multiply-adds an entry instead of four, the third a 128-bit one; a half of a
    Fashion-MNIST batch's dW1 on a 2-core Zen 4 65 -> 58 us with a 64-byte last tile, 59 -> 57
    with a 16-byte one; MNIST-like 23.6 -> 20.6 -> 20.5). The same additions in the same order
    as one tile's. Returns s0 + n."""
    d_stride, w_stride = D.shape[1], W.shape[1]
    m = s0 + simd.lanes(big)
    left = s0 + n - m   # (the small tile's live lanes)
    for j in range(starts.size - 2):
        a1, a2 = big, small
        for k in range(np.uint64(starts[j]), np.uint64(starts[j + 1])):
            at, v = rows[k] * d_stride, vals[k]
            a1 = simd.fma(simd.splat(a1, v), simd.load_full(a1, D, at + s0), a1)
            a2 = simd.fma(simd.splat(a2, v), simd.load(a2, D, at + m, left), a2)
        o = (p0 + j) * w_stride
        if add:
            simd.store_full(W, o + s0, simd.fma(a1, simd.splat(a1, scale), simd.load_full(a1, W, o + s0)))
            simd.store(W, o + m, left,
                       simd.fma(a2, simd.splat(a2, scale), simd.load(a2, W, o + m, left)))
        else:
            simd.store_full(W, o + s0, simd.mul(a1, simd.splat(a1, scale)))
            simd.store(W, o + m, left, simd.mul(a2, simd.splat(a2, scale)))
    return s0 + n


@jit_borrowing
def _column_outer(starts, rows, vals, D, W, width, p0, scale, add):
    """W[p0:p0 + m, :width] = scale (X^T D[:, :width])[p0:p0 + m], or with ``add`` W[...] += that,
    for D (N, >= width) and W (>= p0 + m, >= width) C-contiguous, X's nonzeros in
    columns p0:p0 + m as _column_lists regrouped them (m = starts.size - 2): each row of W summed
    in registers and written once. Each row's sum adds its column's entries in the order of the
    batch's rows, as _add_outer adds them to a row of zeros: with scale 1 and no ``add``, the
    same numbers."""
    s0 = 0
    while s0 < width:
        n = width - s0
        size = _column_slice_bytes(n * W.itemsize, D.shape[0])
        if size == 256 and 128 < n * W.itemsize <= 144:   # (a 16-byte tail: see _chunked_split)
            s0 = _column_split(simd.zeros(W, 128), simd.zeros(W, 16), starts, rows, vals, D, W, p0,
                               scale, add, s0, n)
        elif size == 256 and 128 < n * W.itemsize <= 192:
            s0 = _column_split(simd.zeros(W, 128), simd.zeros(W, 64), starts, rows, vals, D, W, p0, scale,
                               add, s0, n)
        elif size == 1024:
            s0 = _column_outer_slice(simd.zeros(W, 1024), starts, rows, vals, D, W, p0, scale, add,
                                     s0, n)
        elif size == 512:
            s0 = _column_outer_slice(simd.zeros(W, 512), starts, rows, vals, D, W, p0, scale, add,
                                     s0, n)
        elif size == 256:
            s0 = _column_outer_slice(simd.zeros(W, 256), starts, rows, vals, D, W, p0, scale, add,
                                     s0, n)
        elif size == 128:
            s0 = _column_outer_slice(simd.zeros(W, 128), starts, rows, vals, D, W, p0, scale, add,
                                     s0, n)
        else:
            s0 = _column_outer_slice(simd.zeros(W, 64), starts, rows, vals, D, W, p0, scale, add,
                                     s0, n)


# A layer whose row of W fits one tile of this many bytes (the 10 class scores: 40 bytes at
# float32, 80 at float64) reads a hidden layer's output as it is, zeros and all (_dense_times,
# _dense_add_outer), instead of from its nonzero lists: a tile's multiply-add per input costs
# less than making the lists and walking them. Measured on a 2-core Zen 5, one thread, 100 rows
# with half their inputs zero, h @ W + b, us: 50 -> 10 float64 2.0 dense against 15.9 from
# lists (7.1 of them making the lists; NumPy's BLAS 5.8), float32 2.1 against 14.8, 128 -> 10
# float32 3.8 against 18.5 (one row at a time, the dense loops took 3.6, 3.7 and 10.9: each
# multiply-add waited on the one before). The additions of the nonzeros are the same, in the
# same order; a zero input adds 0 (0 x w: the same number unless w is not finite).
DENSE_INPUT_UP_TO = 128


@jit
def _reads_dense(width, itemsize):
    """Whether a layer whose row of W holds ``width`` elements of ``itemsize`` bytes reads a hidden
    layer's output densely (DENSE_INPUT_UP_TO)."""
    return width * itemsize <= DENSE_INPUT_UP_TO


@jit_borrowing
def _dense_times_tile(zero, x, k0, k1, W, w_stride, b, out):
    """_dense_times in tiles of ``zero``'s width (one covers a row of out), four rows at a time:
    four chains of multiply-adds for each row of W loaded (a row alone waits on each multiply-add
    before the next; the last four rows of out, or all if fewer, may include rows done before,
    computed again the same way)."""
    rows, width = out.shape
    whole = simd.lanes(zero) <= w_stride   # (W's rows hold the tile whole: see _times_slice)
    start = simd.load(zero, b, 0, width) if b.size else zero
    last = rows - 1
    for r in range(0, rows, 4):
        r0, r1, r2, r3 = min(r, last), min(r + 1, last), min(r + 2, last), min(r + 3, last)
        a0 = a1 = a2 = a3 = start
        for k in range(k0, k1):
            at = k * w_stride
            row = simd.load_full(zero, W, at) if whole else simd.load(zero, W, at, width)
            a0 = simd.fma(simd.splat(zero, x[r0, k]), row, a0)
            a1 = simd.fma(simd.splat(zero, x[r1, k]), row, a1)
            a2 = simd.fma(simd.splat(zero, x[r2, k]), row, a2)
            a3 = simd.fma(simd.splat(zero, x[r3, k]), row, a3)
        simd.store(out, r0 * width, width, a0)
        simd.store(out, r1 * width, width, a1)
        simd.store(out, r2 * width, width, a2)
        simd.store(out, r3 * width, width, a3)


@jit_borrowing
def _dense_times(x, k0, k1, W, w_stride, b, out):
    """out[r] = sum_{k in k0:k1} x[r, k] W[k, :H] + b for every row r of out (R, H) C-contiguous,
    x (R, >= k1), W (D, >= H) with rows of w_stride elements, b (H,) or empty (no bias); H
    elements fit one tile (_reads_dense)."""
    if out.shape[1] * W.itemsize <= 64:
        _dense_times_tile(simd.zeros(W, 64), x, k0, k1, W, w_stride, b, out)
    else:
        _dense_times_tile(simd.zeros(W, 128), x, k0, k1, W, w_stride, b, out)


@jit_borrowing
def _dense_add_outer_tile(zero, x, k0, k1, D, W, w_stride, width, scale):
    """_dense_add_outer in tiles of ``zero``'s width (one covers a row of W), four rows of W at a
    time (as _dense_times_tile's rows: a row of W appearing twice in the last four is loaded
    twice before either is stored, so both store the same numbers)."""
    rows = x.shape[0]
    whole = simd.lanes(zero) <= w_stride   # (lanes past width get + 0 x 0: see _add_outer)
    last = k1 - 1
    for k in range(k0, k1, 4):
        j1, j2, j3 = min(k + 1, last), min(k + 2, last), min(k + 3, last)
        at0, at1, at2, at3 = k * w_stride, j1 * w_stride, j2 * w_stride, j3 * w_stride
        a0 = simd.load_full(zero, W, at0) if whole else simd.load(zero, W, at0, width)
        a1 = simd.load_full(zero, W, at1) if whole else simd.load(zero, W, at1, width)
        a2 = simd.load_full(zero, W, at2) if whole else simd.load(zero, W, at2, width)
        a3 = simd.load_full(zero, W, at3) if whole else simd.load(zero, W, at3, width)
        for r in range(rows):
            g = simd.mul(simd.load(zero, D, r * width, width), simd.splat(zero, scale))
            a0 = simd.fma(simd.splat(zero, x[r, k]), g, a0)
            a1 = simd.fma(simd.splat(zero, x[r, j1]), g, a1)
            a2 = simd.fma(simd.splat(zero, x[r, j2]), g, a2)
            a3 = simd.fma(simd.splat(zero, x[r, j3]), g, a3)
        if whole:
            simd.store_full(W, at0, a0)
            simd.store_full(W, at1, a1)
            simd.store_full(W, at2, a2)
            simd.store_full(W, at3, a3)
        else:
            simd.store(W, at0, width, a0)
            simd.store(W, at1, width, a1)
            simd.store(W, at2, width, a2)
            simd.store(W, at3, width, a3)


@jit_borrowing
def _dense_add_outer(x, k0, k1, D, W, w_stride, scale):
    """W[k, :H] += scale sum_r x[r, k] D[r] for k in k0:k1: rows k0:k1 of W += scale X^T D, x (R,
    >= k1), D (R, H) C-contiguous, W (>= k1, >= H) with rows of w_stride elements, H elements
    fitting one tile (_reads_dense). Each row of W summed in a tile in the order of D's rows, as
    _add_outer's in-place updates: the same numbers, the zeros of x adding 0."""
    if D.shape[1] * W.itemsize <= 64:
        _dense_add_outer_tile(simd.zeros(W, 64), x, k0, k1, D, W, w_stride, D.shape[1], scale)
    else:
        _dense_add_outer_tile(simd.zeros(W, 128), x, k0, k1, D, W, w_stride, D.shape[1], scale)


@jit_borrowing
def _column_sums_into(D, rows, width, stride, out, scale):
    """out[:width] += scale * sum_r D[r, :width] for r < rows (D rows of stride elements)."""
    tile = simd.zeros(D, 256)
    for c0 in range(0, width, simd.lanes(tile)):
        n = width - c0
        acc = tile
        for r in range(rows):
            acc = simd.add(acc, simd.load(tile, D, r * stride + c0, n))
        simd.store(out, c0, n, simd.fma(acc, simd.splat(tile, scale), simd.load(tile, out, c0, n)))


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
    _add_outer(cut_table(indptr[:-1], indptr[1:]), columns, values, dc, h, dW, h, h, 1.0)
    db = np.zeros(h, dc.dtype)
    _column_sums_into(dc, n, h, h, db, 1.0)
    return dW, db
