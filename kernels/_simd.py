"""Explicit SIMD for fastbp's kernels: a vector type and the few LLVM operations the sparse paths need.

Why: LLVM's loop vectoriser turns an inner loop over a hidden width of 50 into a 64-wide vector body
that never runs (50 < 64) plus a scalar remainder, and cannot keep a row of sums in registers
across a loop that also reads a weight array it might alias. A ``Tile`` is an LLVM vector of
``nbytes`` bytes (64 bytes = one AVX-512 register, 16 float32 lanes); a kernel holds one row slice
of sums in it while it streams weight rows in, and loads/stores it with a lane count, so a width
of 50 costs one masked tile, not 50 scalar steps.

Kernels pick the width per row slice from TILE_SIZES (a 10-class row takes 64 bytes at float32,
128 at float64, a 256-wide float32 row 1 KiB: fewer passes over the nonzero lists and fewer trips
through the weights). The widest is 1 KiB (16 registers) where the CPU has AVX-512's 32
registers, 256 bytes on AVX2's 16. Sizes are powers of two: LLVM splits such a vector into whole
registers, but legalised a 448-byte one (seven registers, for a 50-wide float64 row) with
shuffles and spills in the inner loop, which ran 2x slower than the 512-byte tile; the hot loops
cover such a row with three tiles of 256, 128 and 64 bytes instead (kernels/sparse.py
_chunked_split). The 128-byte
tile is for float64 class scores: two registers where a 256-byte tile spent four (the nets'
second layer, 50 rows of a 784-50-10 net's batch on a Zen 4: 6.6 -> 4.9 us), and on AVX2 four
where it spent eight (with sparse._splits_half, a Zen 3's one-thread stages of the book's
gradient: half a batch's rows through the second layer and back 63 -> 34 us, half of the
weight gradients 124 -> 58).
The operations take their width from a tile argument (``zeros(like, nbytes)`` makes the first),
so each loop is written once and compiled per width. ``load``/``store`` mask lanes >= n;
``load_full``/``store_full`` move whole tiles: a loop over full tiles keeps no masks live (with
16 masked registers, LLVM rebuilt the masks in every iteration of the inner loop);
``load_slice``/``store_slice`` mask only the registers of a row's last slice that may be short.

Every operation is one LLVM instruction or intrinsic. Offsets are element offsets into an array's
(C-contiguous) buffer; lanes ``>= n`` are neither read nor written, so a masked tile never touches
memory past a row's end. Kernels call these only on offsets computed from validated shapes: like
any kernel, they trust their input.

With ``NUMBA_DISABLE_JIT=1`` (the test suite's bounds-checking pass) the same names are plain
NumPy functions with the same meaning, so kernel bodies still run as Python.
"""
import llvmlite.binding
import numba
import numba.core.codegen
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue
from numba.extending import intrinsic, models, register_model

from ._config import FASTMATH


def _target_features():
    """The CPU features Numba compiles for, as Numba itself picks them: NUMBA_CPU_FEATURES when
    set, else this CPU's (without AVX where NUMBA_ENABLE_AVX=0). An AVX-512 instruction in code
    compiled for a CPU without it would not compile."""
    if numba.config.CPU_FEATURES is not None:
        return numba.config.CPU_FEATURES
    return numba.core.codegen.get_host_cpu_features()


def _target_cpu():
    """The CPU Numba compiles for, by LLVM's name for it ("znver4", "sapphirerapids", ...), as
    Numba picks it: NUMBA_CPU_NAME when set, else this CPU's."""
    if numba.config.CPU_NAME is not None:
        return numba.config.CPU_NAME
    return llvmlite.binding.get_host_cpu_name()


_FEATURES = _target_features()
_AVX512 = "+avx512f" in _FEATURES
# compress's register form on AMD's Zen, which microcodes the memory form (see _compress_store);
# 8 int32 column numbers go in a ymm
_COMPRESS_IN_REGISTERS = _AVX512 and "+avx512vl" in _FEATURES and _target_cpu().startswith("znver")
# compress by a permutation table where there is no compressing store (see _compress_by_table)
_COMPRESS_BY_TABLE = not _AVX512 and "+avx2" in _FEATURES
TILE_SIZES = (1024, 512, 256, 128, 64) if _AVX512 else (256, 128, 64)   # bytes, widest first
REGISTER = 64 if _AVX512 else 32                              # bytes in a vector register
_FAST = tuple(sorted(FASTMATH))  # the kernels' LLVM flags: FMA contraction, no nnan/ninf


class Tile(types.Type):
    """A register-resident vector of ``lanes`` elements of ``dtype``."""

    def __init__(self, dtype, nbytes):
        self.dtype = dtype
        self.nbytes = nbytes
        self.lanes = nbytes * 8 // dtype.bitwidth
        super().__init__(name=f"Tile({dtype}x{self.lanes})")


@register_model(Tile)
class _TileModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _suffix(vector_type):
    element = {"float": "f32", "double": "f64", "i32": "i32"}[str(vector_type.element)]
    return f"v{vector_type.count}{element}"


def _splat(builder, value, lanes):
    vector = builder.insert_element(ir.Constant(ir.VectorType(value.type, lanes), ir.Undefined),
                                    value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))


def _lane_mask(builder, lanes, n):
    """<lanes x i1>: lane < n (compared as 32-bit lanes: 16 to an AVX-512 instruction)."""
    iota = ir.Constant(ir.VectorType(_I32, lanes), list(range(lanes)))
    n32 = builder.select(builder.icmp_signed(">", n, ir.Constant(n.type, lanes)),
                         ir.Constant(n.type, lanes), n)
    n32 = builder.trunc(n32, _I32) if n.type.width > 32 else n32
    return builder.icmp_signed("<", iota, _splat(builder, n32, lanes))


def _address(context, builder, array_type, array, offset):
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [offset])


def _call(builder, name, return_type, args):
    function_type = ir.FunctionType(return_type, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, function_type, name), args)


def _popcount(builder, mask, lanes):
    """The number of true lanes of mask, as int64."""
    count = _call(builder, f"llvm.ctpop.i{lanes}", ir.IntType(lanes),
                  [builder.bitcast(mask, ir.IntType(lanes))])
    return builder.zext(count, _I64) if lanes < 64 else (count if lanes == 64 else builder.trunc(count, _I64))


@intrinsic
def zeros(typingctx, like, nbytes):
    """A tile of ``nbytes`` bytes (a literal) of like's dtype, all lanes 0."""
    if not isinstance(nbytes, types.IntegerLiteral):
        raise RequireLiteralValue(nbytes)
    tile = Tile(like.dtype, nbytes.literal_value)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(tile), None)
    return tile(like, nbytes), codegen


@intrinsic
def lanes(typingctx, tile):
    """How many lanes a tile has (a compile-time constant)."""
    def codegen(context, builder, signature, args):
        return ir.Constant(_I64, tile.lanes)
    return types.int64(tile), codegen


@intrinsic
def load(typingctx, like, array, offset, n):
    """A tile like ``like`` holding array.flat[offset + l] in lanes l < n (0 elsewhere, not read)."""
    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(like)
        pointer = builder.bitcast(_address(context, builder, signature.args[1], args[1], args[2]),
                                  vector_type.as_pointer())
        mask = _lane_mask(builder, like.lanes, args[3])
        return _call(builder, f"llvm.masked.load.{_suffix(vector_type)}.p0", vector_type,
                     [pointer, ir.Constant(_I32, array.dtype.bitwidth // 8), mask,
                      ir.Constant(vector_type, None)])
    return like(like, array, offset, n), codegen


def _store_register(builder, part, pointer, align, n, first):
    """Store the register ``part`` (its first lane is lane ``first`` of a tile) at pointer, its
    lanes below n. Without AVX-512, one whole store where all of its lanes are, else a masked one:
    AVX2's masked store (vmaskmovps) takes ~20 cycles on a Zen 3, a plain one one; none where it
    has no lane below n."""
    def masked():
        _call(builder, f"llvm.masked.store.{_suffix(part.type)}.p0", ir.VoidType(),
              [part, pointer, ir.Constant(_I32, align),
               _lane_mask(builder, part.type.count, _lanes_from(builder, n, first))])
    if _AVX512:
        masked()
        return
    whole = builder.icmp_signed(">=", n, ir.Constant(n.type, first + part.type.count))
    with builder.if_else(whole, likely=True) as (then, otherwise):
        with then:
            builder.store(part, pointer, align=align)
        with otherwise:   # (none of its lanes, as in a wide tile's last registers: no store)
            with builder.if_then(builder.icmp_signed(">", n, ir.Constant(n.type, first))):
                masked()


@intrinsic
def store(typingctx, array, offset, n, tile):
    """array.flat[offset + l] = tile[l] for lanes l < n."""
    def codegen(context, builder, signature, args):
        vector = args[3]
        align = array.dtype.bitwidth // 8
        if _AVX512 or tile.nbytes <= REGISTER:   # (one store: AVX-512 masks a whole tile for free)
            pointer = builder.bitcast(_address(context, builder, signature.args[0], args[0], args[1]),
                                      vector.type.as_pointer())
            _store_register(builder, vector, pointer, align, args[2], 0)
            return context.get_dummy_value()
        for part, pointer, first, _ in _register_parts(context, builder, signature.args[0], args[0],
                                                       args[1], vector, tile):
            _store_register(builder, part, pointer, align, args[2], first)
        return context.get_dummy_value()
    return types.none(array, offset, n, tile), codegen


def _whole_bytes(nbytes):
    """How many leading bytes of a slice tile of ``nbytes`` always hold live lanes: the width of
    the next narrower tile size (0 for the narrowest), since a slice takes the narrowest tile
    that covers its lanes."""
    return max([size for size in TILE_SIZES if size < nbytes], default=0)


def _registers(context, builder, array_type, array, offset, tile):
    """The LLVM type of one vector register of a slice tile's lanes, and per register of the
    tile at array.flat[offset:]: (pointer to its lanes, its first lane, whether it is whole (see
    _whole_bytes))."""
    per_register = REGISTER * 8 // tile.dtype.bitwidth
    register_type = ir.VectorType(context.get_value_type(tile.dtype), per_register)
    start = _address(context, builder, array_type, array, offset)
    whole = _whole_bytes(tile.nbytes) * 8 // tile.dtype.bitwidth
    return register_type, [(builder.bitcast(builder.gep(start, [ir.Constant(_I64, first)]),
                                            register_type.as_pointer()), first, first + per_register <= whole)
                           for first in range(0, tile.lanes, per_register)]


def _register_parts(context, builder, array_type, array, offset, vector, tile):
    """_registers with the tile's value: per register, (its lanes of vector, pointer, first lane,
    whole)."""
    register_type, registers = _registers(context, builder, array_type, array, offset, tile)
    return [(builder.shuffle_vector(vector, vector, ir.Constant(
                ir.VectorType(_I32, register_type.count), list(range(first, first + register_type.count)))),
             pointer, first, whole) for pointer, first, whole in registers]


def _lanes_from(builder, n, first):
    """n - first: how many lanes of a register starting at lane ``first`` are < n (clamped by
    _lane_mask; 0 or fewer is none)."""
    return builder.sub(n, ir.Constant(n.type, first))


@intrinsic
def load_slice(typingctx, like, array, offset, n):
    """load(like, array, offset, n) for a slice tile: one that sparse._slice_bytes picked as the
    narrowest covering n lanes (or the widest, for more), so n is more than the next narrower
    tile's lanes. The registers below that width load whole; only those above carry a mask each.
    (One mask over a 512-byte tile is eight, one more than AVX-512's seven mask registers: LLVM
    then rebuilt masks inside the inner loop. Measured on a Zen 4, warm, 784 x 50 float64:
    x @ W + b for 50 MNIST-like rows by chunks 33.8 -> 31.7 us, X^T D for 100 rows into 384 rows
    of padded sums 50.9 -> 47.3.)"""
    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(like)
        align = ir.Constant(_I32, array.dtype.bitwidth // 8)
        parts = []
        register_type, registers = _registers(context, builder, signature.args[1], args[1], args[2],
                                              like)
        for pointer, first, whole in registers:
            if whole:
                parts.append(builder.load(pointer, align=array.dtype.bitwidth // 8))
            else:
                mask = _lane_mask(builder, register_type.count, _lanes_from(builder, args[3], first))
                parts.append(_call(builder, f"llvm.masked.load.{_suffix(register_type)}.p0",
                                   register_type, [pointer, align, mask,
                                                   ir.Constant(register_type, None)]))
        while len(parts) > 1:   # (joined pairwise: shufflevector takes two vectors of one type)
            parts = [builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, 2 * a.type.count),
                                                              list(range(2 * a.type.count))))
                     for a, b in zip(parts[::2], parts[1::2])]
        assert parts[0].type == vector_type
        return parts[0]
    return like(like, array, offset, n), codegen


@intrinsic
def store_slice(typingctx, array, offset, n, tile):
    """store(array, offset, n, tile) for a slice tile (see load_slice)."""
    def codegen(context, builder, signature, args):
        align = array.dtype.bitwidth // 8
        for part, pointer, first, whole in _register_parts(context, builder, signature.args[0],
                                                           args[0], args[1], args[3], tile):
            if whole:
                builder.store(part, pointer, align=align)
            else:
                _store_register(builder, part, pointer, align, args[2], first)
        return context.get_dummy_value()
    return types.none(array, offset, n, tile), codegen


@intrinsic
def load_full(typingctx, like, array, offset):
    """A tile like ``like`` holding array.flat[offset + l] for all its lanes."""
    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(like)
        pointer = builder.bitcast(_address(context, builder, signature.args[1], args[1], args[2]),
                                  vector_type.as_pointer())
        return builder.load(pointer, align=array.dtype.bitwidth // 8)
    return like(like, array, offset), codegen


@intrinsic
def store_full(typingctx, array, offset, tile):
    """array.flat[offset + l] = tile[l] for all its lanes."""
    def codegen(context, builder, signature, args):
        pointer = builder.bitcast(_address(context, builder, signature.args[0], args[0], args[1]),
                                  args[2].type.as_pointer())
        builder.store(args[2], pointer, align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(array, offset, tile), codegen


@intrinsic
def splat(typingctx, like, value):
    """A tile like ``like`` with every lane = value."""
    def codegen(context, builder, signature, args):
        scalar = context.cast(builder, args[1], signature.args[1], like.dtype)
        return _splat(builder, scalar, like.lanes)
    return like(like, value), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c, lane by lane (one rounding where the CPU has FMA)."""
    def codegen(context, builder, signature, args):
        return builder.fadd(builder.fmul(args[0], args[1], flags=_FAST), args[2], flags=_FAST)
    return a(a, b, c), codegen


@intrinsic
def add(typingctx, a, b):
    """a + b, lane by lane."""
    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1], flags=_FAST)
    return a(a, b), codegen


@intrinsic
def mul(typingctx, a, b):
    """a * b, lane by lane."""
    def codegen(context, builder, signature, args):
        return builder.fmul(args[0], args[1], flags=_FAST)
    return a(a, b), codegen


@intrinsic
def relu(typingctx, a):
    """0 where a <= 0, else a (NaN stays NaN, as the book's mask x <= 0 leaves it)."""
    def codegen(context, builder, signature, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered("<=", args[0], zero), zero, args[0])
    return a(a), codegen


@intrinsic
def relu_mask(typingctx, d, h):
    """d where h > 0, else 0 (h the ReLU's output; NaN in h lets d through, as the book's mask)."""
    def codegen(context, builder, signature, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered("<=", args[1], zero), zero, args[0])
    return d(d, h), codegen


def _compress_store(builder, vector, mask, pointer, element_bytes, lanes_per_store):
    """Store the lanes of vector where mask is true, packed, at pointer; the number stored (i64).

    On AMD's Zen with AVX-512 (_COMPRESS_IN_REGISTERS), one register-form vcompress and one
    masked store per 64 bytes: the memory form that LLVM's masked.compressstore emits is
    microcoded on Zen 4, where compressing a batch of 100 MNIST images took 249 us with it and
    takes 23 us this way. Elsewhere LLVM's masked.compressstore, which it lowers as it sees fit;
    on an Intel Xeon with AVX-512 (a 2-core VM, family 6 model 167) the memory form is the faster:
    a MNIST-like batch of 100 rows compressed in 22.0 us against 32.9 in registers at float64,
    13.5 against 14.1 at float32."""
    count = vector.type.count
    if not _COMPRESS_IN_REGISTERS:
        _call(builder, f"llvm.masked.compressstore.{_suffix(vector.type)}", ir.VoidType(),
              [vector, pointer, mask])
        return _popcount(builder, mask, count)
    step = min(count, lanes_per_store)
    chunk_type = ir.VectorType(vector.type.element, step)
    stored = ir.Constant(_I64, 0)
    for first in range(0, count, step):
        lanes = ir.Constant(ir.VectorType(_I32, step), list(range(first, first + step)))
        chunk = builder.shuffle_vector(vector, vector, lanes)
        chunk_mask = builder.shuffle_vector(mask, mask, lanes)
        packed = _call(builder, f"llvm.x86.avx512.mask.compress.{_suffix(chunk_type)}", chunk_type,
                       [chunk, ir.Constant(chunk_type, None), chunk_mask])
        n = _popcount(builder, chunk_mask, step)
        _call(builder, f"llvm.masked.store.{_suffix(chunk_type)}.p0", ir.VoidType(),
              [packed, builder.gep(pointer, [stored]), ir.Constant(_I32, element_bytes),
               _lane_mask(builder, step, n)])
        stored = builder.add(stored, n)
    return stored


_LANE_TABLE = "fastbp_set_lanes"


def _lane_table(module):
    """The module's table of set lanes: entry m (0 to 255) holds, in its first lanes, the numbers
    of the bits set in m, lowest first (the rest 0): an 8 x i32 permutation per 8-bit mask."""
    table = module.globals.get(_LANE_TABLE)
    if table is None:
        entries = [[bit for bit in range(8) if m >> bit & 1] for m in range(256)]
        row_type = ir.VectorType(_I32, 8)
        table = cgutils.global_constant(module, _LANE_TABLE, ir.Constant(
            ir.ArrayType(row_type, 256), [ir.Constant(row_type, e + [0] * (8 - len(e))) for e in entries]))
        table.align = 32
    return table


def _compress_by_table(builder, vector, n, room, value_pointer, column_pointer, column0):
    """compress's stores where AVX2 has no compressing store (LLVM's masked.compressstore
    becomes a branch and a store per lane: 62 us for a MNIST-like batch of 100 float32 rows on a
    Zen 3): per 32-byte register of values, the set lanes of its mask from a table
    (_lane_table), one vpermps packing them, and a store each of the values and of their column
    numbers (the table's lane numbers plus the register's first column). The stores are whole
    registers (their lanes past the packed ones are junk, overwritten by the next store) where
    the register's lanes are all below n and ``room`` (the elements from the lists' position to
    their arrays' end) holds them: so they never reach past the position of lane n, nor past the
    arrays. Otherwise the packed lanes only (_store_register: masked unless all are packed); Zen 3
    takes ~20 cycles for a masked store (the whole batch with masked stores only: 148 us). -> the
    number stored (i64)."""
    count = vector.type.count
    step = 4 if isinstance(vector.type.element, ir.DoubleType) else 8   # lanes in 32 bytes
    table = _lane_table(builder.module)
    float8 = ir.VectorType(ir.FloatType(), 8)
    stored = ir.Constant(_I64, 0)
    for first in range(0, count, step):
        lanes = ir.Constant(ir.VectorType(_I32, step), list(range(first, first + step)))
        chunk = builder.shuffle_vector(vector, vector, lanes)
        chunk_mask = builder.and_(builder.fcmp_unordered("!=", chunk, ir.Constant(chunk.type, None)),
                                  _lane_mask(builder, step, _lanes_from(builder, n, first)))
        bits = builder.zext(builder.bitcast(chunk_mask, ir.IntType(step)), _I64)
        order = builder.load(builder.gep(table, [ir.Constant(_I64, 0), bits]), align=32)
        if step == 8:   # (float32)
            packed = _call(builder, "llvm.x86.avx2.permps", float8, [chunk, order])
            column_lanes = order
        else:           # (float64: lane p of 4 is lanes 2p, 2p + 1 of 8 floats)
            column_lanes = builder.shuffle_vector(order, order, ir.Constant(ir.VectorType(_I32, 4),
                                                                             [0, 1, 2, 3]))
            halves = builder.shuffle_vector(order, order, ir.Constant(ir.VectorType(_I32, 8),
                                                                      [0, 0, 1, 1, 2, 2, 3, 3]))
            halves = builder.add(builder.shl(halves, ir.Constant(halves.type, [1] * 8)),
                                 ir.Constant(halves.type, [0, 1] * 4))
            packed = builder.bitcast(_call(builder, "llvm.x86.avx2.permps", float8,
                                           [builder.bitcast(chunk, float8), halves]), chunk.type)
        first_column = builder.add(column0, ir.Constant(_I32, first))
        numbers = builder.add(column_lanes, _splat(builder, first_column, step))
        packed_count = _popcount(builder, chunk_mask, step)
        destinations = [(data, builder.bitcast(builder.gep(start, [stored]), data.type.as_pointer()),
                         align) for data, start, align in ((packed, value_pointer, 32 // step),
                                                           (numbers, column_pointer, 4))]
        whole = builder.and_(builder.icmp_signed(">=", n, ir.Constant(n.type, first + step)),
                             builder.icmp_signed(">=", builder.sub(room, stored),
                                                 ir.Constant(_I64, step)))
        with builder.if_else(whole, likely=True) as (then, otherwise):
            with then:
                for data, pointer, align in destinations:
                    builder.store(data, pointer, align=align)
            with otherwise:   # (the packed lanes only)
                for data, pointer, align in destinations:
                    _store_register(builder, data, pointer, align, packed_count, 0)
        stored = builder.add(stored, packed_count)
    return stored


@intrinsic
def compress(typingctx, values, columns, offset, tile, column0, n):
    """Append the nonzero lanes l < n of ``tile`` to values[offset:] and their column numbers
    (column0 + l, int32) to columns[offset:], in lane order; returns how many (int64). The
    entries after those, up to offset + n, may be overwritten (the table form's whole stores:
    _compress_by_table); nothing from offset + n on, nor past either array.

    What turns a dense row into its nonzero list (see _compress_store). NaN is nonzero."""
    def codegen(context, builder, signature, args):
        vector = args[3]
        count = tile.lanes
        value_pointer = _address(context, builder, signature.args[0], args[0], args[2])
        column_pointer = _address(context, builder, signature.args[1], args[1], args[2])
        column0 = builder.trunc(args[4], _I32) if args[4].type.width > 32 else args[4]
        if _COMPRESS_BY_TABLE:
            sizes = [context.make_array(signature.args[i])(context, builder, args[i]).nitems
                     for i in (0, 1)]
            size = builder.select(builder.icmp_signed("<", sizes[0], sizes[1]), sizes[0], sizes[1])
            return _compress_by_table(builder, vector, args[5], builder.sub(size, args[2]),
                                      value_pointer, column_pointer, column0)
        nonzero = builder.fcmp_unordered("!=", vector, ir.Constant(vector.type, None))
        mask = builder.and_(nonzero, _lane_mask(builder, count, args[5]))
        # one 64-byte register of values per store, and as many column numbers as it holds values
        per_store = 512 // tile.dtype.bitwidth
        stored = _compress_store(builder, vector, mask, value_pointer, tile.dtype.bitwidth // 8,
                                 per_store)
        iota = ir.Constant(ir.VectorType(_I32, count), list(range(count)))
        column_numbers = builder.add(iota, _splat(builder, column0, count))
        _compress_store(builder, column_numbers, mask, column_pointer, 4, per_store)
        return stored
    return types.int64(values, columns, offset, tile, column0, n), codegen


@intrinsic
def count_nonzero(typingctx, tile, n):
    """How many lanes l < n of tile are nonzero (NaN counts as nonzero), as int64."""
    def codegen(context, builder, signature, args):
        vector = args[0]
        nonzero = builder.fcmp_unordered("!=", vector, ir.Constant(vector.type, None))
        return _popcount(builder, builder.and_(nonzero, _lane_mask(builder, tile.lanes, args[1])),
                         tile.lanes)
    return types.int64(tile, n), codegen


@intrinsic
def count_nonfinite(typingctx, tile, n):
    """How many lanes l < n of tile are NaN or infinite, as int64."""
    def codegen(context, builder, signature, args):
        vector = args[0]
        # x - x is 0 for every finite x, NaN for NaN and both infinities
        nonfinite = builder.fcmp_unordered("!=", builder.fsub(vector, vector),
                                           ir.Constant(vector.type, None))
        return _popcount(builder, builder.and_(nonfinite, _lane_mask(builder, tile.lanes, args[1])),
                         tile.lanes)
    return types.int64(tile, n), codegen


@intrinsic
def prefetch(typingctx, array, offset):
    """Ask the CPU to bring the cache line holding array.flat[offset] into L1 (a hint: never faults)."""
    def codegen(context, builder, signature, args):
        pointer = builder.bitcast(_address(context, builder, signature.args[0], args[0], args[1]),
                                  ir.IntType(8).as_pointer())
        _call(builder, "llvm.prefetch.p0", ir.VoidType(),
              [pointer, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return types.none(array, offset), codegen


# --- NUMBA_DISABLE_JIT=1: the same operations on NumPy arrays, so kernel bodies run as Python ---

def _py_zeros(like, nbytes):
    return np.zeros(nbytes // like.dtype.itemsize, like.dtype)


def _py_load(like, array, offset, n):
    flat = array.reshape(-1)
    out = np.zeros_like(like)
    count = max(0, min(int(n), out.size))
    if count and (offset < 0 or offset + count > flat.size):
        raise IndexError(f"tile load outside the array: [{offset}, {offset + count}) of {flat.size}")
    out[:count] = flat[offset:offset + count]
    return out


def _py_store(array, offset, n, tile):
    flat = array.reshape(-1)
    count = max(0, min(int(n), tile.size))
    if count and (offset < 0 or offset + count > flat.size):
        raise IndexError(f"tile store outside the array: [{offset}, {offset + count}) of {flat.size}")
    flat[offset:offset + count] = tile[:count]


def _py_slice_lanes(tile, n):
    """The lanes a slice tile's n must exceed (see load_slice): a kernel that breaks the promise
    would read and write whole registers past n, so the Python twins refuse it."""
    whole = _whole_bytes(tile.nbytes) // tile.dtype.itemsize
    if not whole < n:
        raise IndexError(f"slice tile of {tile.size} lanes given n = {n}, not above its {whole} "
                         "whole lanes")


def _py_load_slice(like, array, offset, n):
    _py_slice_lanes(like, n)
    return _py_load(like, array, offset, n)


def _py_store_slice(array, offset, n, tile):
    _py_slice_lanes(tile, n)
    _py_store(array, offset, n, tile)


def _py_compress(values, columns, offset, tile, column0, n):
    lanes_ = np.flatnonzero(tile[:max(0, min(int(n), tile.size))] != 0)
    values[offset:offset + lanes_.size] = tile[lanes_]
    columns[offset:offset + lanes_.size] = column0 + lanes_
    return lanes_.size


if numba.config.DISABLE_JIT:
    zeros, load, store, compress = _py_zeros, _py_load, _py_store, _py_compress  # noqa: F811
    load_slice, store_slice = _py_load_slice, _py_store_slice  # noqa: F811
    load_full = lambda like, array, offset: _py_load(like, array, offset, like.size)  # noqa: E731, F811
    store_full = lambda array, offset, tile: _py_store(array, offset, tile.size, tile)  # noqa: E731, F811
    lanes = lambda tile: tile.size  # noqa: E731, F811
    splat = lambda like, value: np.full_like(like, value)  # noqa: E731, F811
    fma = lambda a, b, c: (a * b + c).astype(a.dtype)  # noqa: E731, F811
    add = lambda a, b: a + b  # noqa: E731, F811
    mul = lambda a, b: a * b  # noqa: E731, F811
    relu = lambda a: np.where(a <= 0, a.dtype.type(0), a)  # noqa: E731, F811
    relu_mask = lambda d, h: np.where(h <= 0, d.dtype.type(0), d)  # noqa: E731, F811
    count_nonzero = lambda tile, n: int(np.count_nonzero(tile[:max(0, min(int(n), tile.size))]))  # noqa: E731, F811
    count_nonfinite = lambda tile, n: int(np.count_nonzero(~np.isfinite(tile[:max(0, min(int(n), tile.size))])))  # noqa: E731, F811
    prefetch = lambda array, offset: None  # noqa: E731, F811
