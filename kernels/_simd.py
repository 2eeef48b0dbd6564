"""Explicit SIMD for fastbp's kernels: a vector type and the few LLVM operations the sparse paths need.

Why: LLVM's loop vectoriser turns an inner loop over a hidden width of 50 into a 64-wide vector body
that never runs (50 < 64) plus a scalar remainder, and cannot keep a row of sums in registers
across a loop that also reads a weight array it might alias. A ``Tile`` is a 256-byte LLVM vector
(64 float32 or 32 float64 lanes: four AVX-512 registers, eight AVX2 ones); a kernel holds one row
slice of sums in it while it streams weight rows in, and loads/stores it with a lane count, so a
width of 50 costs one masked tile, not 50 scalar steps. ``Vec`` is the same with 64 bytes (one
AVX-512 register), for narrow rows such as the 10 class scores.

Every operation here is one LLVM instruction or intrinsic, so the kernels read like the maths.
Offsets are element offsets into an array's (C-contiguous) buffer; lanes ``>= n`` are neither
read nor written, so a masked tile never touches memory past a row's end. Kernels call these
only on offsets they have computed from validated shapes: like any kernel, they trust their input.

With ``NUMBA_DISABLE_JIT=1`` (the test suite's bounds-checking pass) the same names are plain
NumPy functions with the same meaning, so kernel bodies still run as Python.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ._config import FASTMATH

TILE_BYTES = 256
VEC_BYTES = 64
_FAST = tuple(sorted(FASTMATH))  # the kernels' LLVM flags: FMA contraction, no nnan/ninf


class Tile(types.Type):
    """A register-resident vector of ``lanes`` elements of ``dtype``."""

    def __init__(self, dtype, nbytes):
        self.dtype = dtype
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
    """<lanes x i1>: lane < n."""
    iota = ir.Constant(ir.VectorType(_I64, lanes), list(range(lanes)))
    return builder.icmp_signed("<", iota, _splat(builder, builder.sext(n, _I64) if n.type.width < 64 else n, lanes))


def _address(context, builder, array_type, array, offset):
    return builder.gep(context.make_array(array_type)(context, builder, array).data, [offset])


def _call(builder, name, return_type, args):
    function_type = ir.FunctionType(return_type, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, function_type, name), args)


def _masked_load(builder, vector_type, pointer, mask, align):
    pointer = builder.bitcast(pointer, vector_type.as_pointer())
    return _call(builder, f"llvm.masked.load.{_suffix(vector_type)}.p0", vector_type,
                 [pointer, ir.Constant(_I32, align), mask, ir.Constant(vector_type, None)])


def _masked_store(builder, vector, pointer, mask, align):
    pointer = builder.bitcast(pointer, vector.type.as_pointer())
    _call(builder, f"llvm.masked.store.{_suffix(vector.type)}.p0", ir.VoidType(),
          [vector, pointer, ir.Constant(_I32, align), mask])


def _loader(nbytes):
    @intrinsic
    def load(typingctx, array, offset, n):
        tile = Tile(array.dtype, nbytes)

        def codegen(context, builder, signature, args):
            pointer = _address(context, builder, signature.args[0], args[0], args[1])
            return _masked_load(builder, context.get_value_type(tile), pointer,
                                _lane_mask(builder, tile.lanes, args[2]), array.dtype.bitwidth // 8)
        return tile(array, offset, n), codegen
    return load


def _splatter(nbytes):
    @intrinsic
    def splat(typingctx, like, value):
        tile = Tile(like.dtype, nbytes)

        def codegen(context, builder, signature, args):
            scalar = context.cast(builder, args[1], signature.args[1], like.dtype)
            return _splat(builder, scalar, tile.lanes)
        return tile(like, value), codegen
    return splat


load_tile = _loader(TILE_BYTES)
load_tile.__doc__ = "array.flat[offset + l] for lanes l < n of a tile (0 elsewhere)."
load_vec = _loader(VEC_BYTES)
splat_tile = _splatter(TILE_BYTES)
splat_tile.__doc__ = "A tile of like.dtype with every lane = value."
splat_vec = _splatter(VEC_BYTES)


@intrinsic
def store(typingctx, array, offset, n, tile):
    """array.flat[offset + l] = tile[l] for lanes l < n."""
    def codegen(context, builder, signature, args):
        pointer = _address(context, builder, signature.args[0], args[0], args[1])
        _masked_store(builder, args[3], pointer, _lane_mask(builder, tile.lanes, args[2]),
                      array.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(array, offset, n, tile), codegen


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


@intrinsic
def compress(typingctx, values, columns, offset, tile, column0, n):
    """Append the nonzero lanes l < n of ``tile`` to values[offset:] and their column numbers
    (column0 + l, int32) to columns[offset:], in lane order; returns how many (int64).

    One AVX-512 vcompress per register: what turns a dense row into its nonzero list."""
    def codegen(context, builder, signature, args):
        vector = args[3]
        lanes = signature.args[3].lanes
        nonzero = builder.fcmp_unordered("!=", vector, ir.Constant(vector.type, None))
        mask = builder.and_(nonzero, _lane_mask(builder, lanes, args[5]))
        value_pointer = _address(context, builder, signature.args[0], args[0], args[2])
        _call(builder, f"llvm.masked.compressstore.{_suffix(vector.type)}", ir.VoidType(),
              [vector, value_pointer, mask])
        column0 = builder.trunc(args[4], _I32) if args[4].type.width > 32 else args[4]
        iota = ir.Constant(ir.VectorType(_I32, lanes), list(range(lanes)))
        column_numbers = builder.add(iota, _splat(builder, column0, lanes))
        column_pointer = _address(context, builder, signature.args[1], args[1], args[2])
        _call(builder, f"llvm.masked.compressstore.{_suffix(column_numbers.type)}", ir.VoidType(),
              [column_numbers, column_pointer, mask])
        count = _call(builder, f"llvm.ctpop.i{lanes}", ir.IntType(lanes),
                      [builder.bitcast(mask, ir.IntType(lanes))])
        return builder.zext(count, _I64) if lanes < 64 else count
    return types.int64(values, columns, offset, tile, column0, n), codegen


@intrinsic
def count_nonzero(typingctx, tile, n):
    """How many lanes l < n of tile are nonzero (NaN counts as nonzero), as int64."""
    def codegen(context, builder, signature, args):
        vector = args[0]
        lanes = signature.args[0].lanes
        nonzero = builder.fcmp_unordered("!=", vector, ir.Constant(vector.type, None))
        mask = builder.and_(nonzero, _lane_mask(builder, lanes, args[1]))
        count = _call(builder, f"llvm.ctpop.i{lanes}", ir.IntType(lanes),
                      [builder.bitcast(mask, ir.IntType(lanes))])
        return builder.zext(count, _I64) if lanes < 64 else count
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

def _lanes(dtype, nbytes):
    return nbytes // np.dtype(dtype).itemsize


def _py_loader(nbytes):
    def load(array, offset, n):
        flat = array.reshape(-1)
        out = np.zeros(_lanes(array.dtype, nbytes), array.dtype)
        count = max(0, min(int(n), out.size))
        out[:count] = flat[offset:offset + count]
        if count and offset + count > flat.size:
            raise IndexError(f"tile load past the end: offset {offset} + {count} > {flat.size}")
        return out
    return load


def _py_splatter(nbytes):
    def splat(like, value):
        return np.full(_lanes(like.dtype, nbytes), value, like.dtype)
    return splat


def _py_store(array, offset, n, tile):
    flat = array.reshape(-1)
    count = max(0, min(int(n), tile.size))
    if offset + count > flat.size:
        raise IndexError(f"tile store past the end: offset {offset} + {count} > {flat.size}")
    flat[offset:offset + count] = tile[:count]


def _py_compress(values, columns, offset, tile, column0, n):
    lanes = np.flatnonzero(tile[:max(0, min(int(n), tile.size))] != 0)
    values[offset:offset + lanes.size] = tile[lanes]
    columns[offset:offset + lanes.size] = column0 + lanes
    return lanes.size


if numba.config.DISABLE_JIT:
    load_tile, load_vec = _py_loader(TILE_BYTES), _py_loader(VEC_BYTES)  # noqa: F811
    splat_tile, splat_vec = _py_splatter(TILE_BYTES), _py_splatter(VEC_BYTES)  # noqa: F811
    store = _py_store  # noqa: F811
    fma = lambda a, b, c: (a * b + c).astype(a.dtype)  # noqa: E731, F811
    add = lambda a, b: a + b  # noqa: E731, F811
    mul = lambda a, b: a * b  # noqa: E731, F811
    relu = lambda a: np.where(a <= 0, a.dtype.type(0), a)  # noqa: E731, F811
    relu_mask = lambda d, h: np.where(h <= 0, d.dtype.type(0), d)  # noqa: E731, F811
    compress = _py_compress  # noqa: F811
    count_nonzero = lambda tile, n: int(np.count_nonzero(tile[:max(0, min(int(n), tile.size))]))  # noqa: E731, F811
    prefetch = lambda array, offset: None  # noqa: E731, F811
