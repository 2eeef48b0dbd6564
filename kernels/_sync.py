"""A flag two threads hand work over by: atomic loads, stores and compare-exchange on an int64.

fastbp/halves.py lets a helper thread take the second half of a batch's work while the calling
thread computes the first. Both wait for each other only here, in compiled code that holds no
GIL, spinning on ``flag[0]`` for a bounded number of tries (then they fall back to sleeping in
Python). The loads must be atomic: a plain load in a loop that writes nothing is hoisted out of
it by LLVM, and the loop never sees the other thread's store.

With ``NUMBA_DISABLE_JIT=1`` the same names are plain Python on the array, for one thread: fastbp
runs no helper then (halves.both).
"""
import platform
import sys

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._config import jit
from ._simd import _address

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
# POSIX sched_yield (~0.5 us when no other thread wants the core), a named symbol of the C library
# already in the process (so the kernels stay cacheable); not on Windows.
_YIELD = sys.platform != "win32"
_sched_yield = types.ExternalFunction("sched_yield", types.intc())
YIELD_EVERY = 32


@intrinsic
def _load(typingctx, flag, index):
    """flag[index], an acquire load."""
    def codegen(context, builder, signature, args):
        pointer = _address(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(flag, index), codegen


@intrinsic
def _store(typingctx, flag, index, value):
    """flag[index] = value, a release store."""
    def codegen(context, builder, signature, args):
        pointer = _address(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(context.cast(builder, args[2], signature.args[2], types.int64), pointer,
                             "release", 8)
        return context.get_dummy_value()
    return types.none(flag, index, value), codegen


@intrinsic
def _compare_exchange(typingctx, flag, index, expected, new):
    """If flag[index] == expected, set it to new; True if it did (one atomic step)."""
    def codegen(context, builder, signature, args):
        pointer = _address(context, builder, signature.args[0], args[0], args[1])
        pair = builder.cmpxchg(pointer, context.cast(builder, args[2], signature.args[2], types.int64),
                               context.cast(builder, args[3], signature.args[3], types.int64),
                               "acq_rel", "acquire")
        return builder.extract_value(pair, 1)
    return types.boolean(flag, index, expected, new), codegen


@intrinsic
def _pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``): the other hardware thread of the core runs on."""
    def codegen(context, builder, signature, args):
        if _X86:
            function = ir.FunctionType(ir.VoidType(), [])
            builder.call(builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=function), [])
        return context.get_dummy_value()
    return types.none(), codegen


@jit
def wait_for(flag, value, tries):
    """Spin until flag[0] == value, at most ``tries`` times; -> flag[0] as last seen. Every
    YIELD_EVERY tries the thread yields its core to any other thread that wants it (if the
    scheduler put the two threads of fastbp on one core, the spinning one would hold up the other,
    and a process on the other core too)."""
    seen = _load(flag, 0)
    for i in range(tries):
        if seen == value:
            break
        if _YIELD and i % YIELD_EVERY == YIELD_EVERY - 1:
            _sched_yield()
        else:
            _pause()
        seen = _load(flag, 0)
    return seen


@jit
def publish(flag, value):
    """flag[0] = value, seen by the other thread after everything written before it."""
    _store(flag, 0, value)


@jit
def publish_then_wait_for(flag, value, awaited, tries):
    """publish(flag, value), then wait_for(flag, awaited, tries): a thread that hands a result
    over and waits for the next holds no GIL from the moment the other thread can see it (had
    it the GIL then, the other would sleep on it, and waking a sleeping thread costs ~40 us)."""
    _store(flag, 0, value)
    return wait_for(flag, awaited, tries)


@jit
def claim(flag, expected, new):
    """flag[0] = new if it is ``expected``: True for the one thread that made the change."""
    return _compare_exchange(flag, 0, expected, new)


if numba.config.DISABLE_JIT:
    def wait_for(flag, value, tries):  # noqa: F811
        return int(flag[0])   # (one look: spinning in Python would hold the GIL the other needs)

    def publish(flag, value):  # noqa: F811
        flag[0] = value

    def publish_then_wait_for(flag, value, awaited, tries):  # noqa: F811
        flag[0] = value
        return int(flag[0])

    def claim(flag, expected, new):  # noqa: F811
        if flag[0] != expected:
            return False
        flag[0] = new
        return True
