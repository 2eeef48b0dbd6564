"""A flag two threads hand work over by: atomic loads, stores and compare-exchange on an int64.

fastbp/halves.py hands a team call's second rank to a helper thread by ``flag[0]``, and the two
threads of a team meet at each stage by ``sync`` (below). They wait for each other only here, in
compiled code that holds no GIL, spinning for a bounded number of tries (then they fall back to
sleeping). The loads must be atomic: a plain load in a loop that writes nothing is hoisted out
of it by LLVM, and the loop never sees the other thread's store.

With ``NUMBA_DISABLE_JIT=1`` the same names are plain Python on the array, for one thread: fastbp
runs no helper then (halves._the_helper).
"""
import platform
import sys

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._config import jit, jit_borrowing
from ._simd import _address

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
# POSIX sched_yield (~0.5 us when no other thread wants the core), a named symbol of the C library
# already in the process (so the kernels stay cacheable); not on Windows.
_YIELD = sys.platform != "win32"
_sched_yield = types.ExternalFunction("sched_yield", types.intc())
_usleep = types.ExternalFunction("usleep", types.intc(types.uintc))
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


@intrinsic
def _cycles(typingctx):
    """The CPU's time-stamp counter (a constant rate on CPUs of the last decade): for comparing
    two spans of time measured by one thread, not for seconds."""
    def codegen(context, builder, signature, args):
        function = ir.FunctionType(ir.IntType(64), [])
        return builder.call(builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=function), [])
    return types.int64(), codegen


@jit
def _rest(i):
    """The pause after a spinning thread's try number i: every YIELD_EVERY tries it yields its
    core to any other thread that wants it (if the scheduler put the two threads of fastbp on one
    core, the spinning one would hold up the other, and a process on the other core too)."""
    if _YIELD and i % YIELD_EVERY == YIELD_EVERY - 1:
        _sched_yield()
    else:
        _pause()


# The states of a helper's flag[0] (fastbp/halves.py): nothing posted, a call posted, the helper
# on it, the helper done with it, the caller took it back before the helper started it.
IDLE, POSTED, RUNNING, DONE, TAKEN = 0, 1, 2, 3, 4
CALLER_SPINS = 1 << 14   # the caller's tries for the helper's call before it sleeps (~0.7 ms)


@jit_borrowing
def wait_for(flag, value, tries):
    """Spin until flag[0] == value, at most ``tries`` times (see _rest); -> flag[0] as last seen."""
    seen = _load(flag, 0)
    for i in range(tries):
        if seen == value:
            break
        _rest(i)
        seen = _load(flag, 0)
    return seen


@jit_borrowing
def publish(flag, value):
    """flag[0] = value, seen by the other thread after everything written before it."""
    _store(flag, 0, value)


@jit_borrowing
def publish_then_wait_for(flag, value, awaited, tries):
    """publish(flag, value), then wait_for(flag, awaited, tries): a thread that hands a result
    over and waits for the next holds no GIL from the moment the other thread can see it (had
    it the GIL then, the other would sleep on it, and waking a sleeping thread costs ~40 us)."""
    _store(flag, 0, value)
    return wait_for(flag, awaited, tries)


@jit_borrowing
def claim(flag, expected, new):
    """flag[0] = new if it is ``expected``: True for the one thread that made the change."""
    return _compare_exchange(flag, 0, expected, new)


# --- A team of two threads in one compiled call -------------------------------------------------
#
# fit's steps (kernels/step.py) run as stages, each cut into two fixed parts whose results do not
# depend on which thread computes them. The calling thread (rank 0) and the helper (rank 1) run
# the same loop over the same stages, numbered 1, 2, ... in ``sync`` (a TEAM_SLOTS int64 array):
#
#   caller: OPEN = stage ─ part 0 ─┬ CLAIM stage-1 -> stage succeeds: part 1 too (helper not there)
#                                  └ the helper has part 1: wait for PART_DONE = stage
#   helper: wait for OPEN >= stage ─ OPEN == stage and CLAIM stage-1 -> stage succeeds: part 1,
#           PART_DONE = stage; else the stage is the caller's (skip it)
#
# so the caller never waits for a helper that has not started, only for one that is on its part.
# A helper parked mid-part (another process wants its core) does make the caller wait, so the
# caller judges every stage (and, in the nets' calls, its wait at the end: hand_back). A stage is
# a strike when the
# helper did not claim its part before the caller's part was done (unless that part was SHORT: a
# tiny one is often over before the helper looks) or when the caller waited longer than its own
# part took (a helper slowed down, as the other vCPU of a VM often is for seconds: alone, the stage
# would have taken twice the caller's part), and two and a half when the caller waited LONG
# (longer than a quiet stage, shorter than a time slice) and more than PARKED times its own part's
# time: each such wait costs up to a time slice. Strikes decay by STRIKE_DECAY per stage; past
# TOO_MANY (about six strikes in a row, or two long waits) the caller claims every part itself
# for a while, then tries the helper again (only long waits judged in its first SETTLING_STAGES
# stages, as a helper thread that slept takes a while to wake). The while is ALONE_MIN
# stages when the caller has been back with the helper for CALM ticks (~0.1 s: a quiet VM's
# helper misses a few stages now and then), else twice the last, up to ALONE_MAX (trouble that
# comes back sooner is another process keeping the core busy: the scheduler's slices are
# milliseconds). Calm is time, not stages: a VM's second vCPU is descheduled for a millisecond
# every second or so (five stages of the nets' calls unclaimed), and with calm counted as 4096
# judged stages (~1.5 s of the book's loop) the stretches doubled up to ALONE_MAX: measured on a
# 2-core Zen 4, 40 blocks of 300 iterations of the book's loop, 11 of them wholly alone (~610 us
# an iteration against ~480 in a team; alone, a gradient call took 290 us, in a team 166-230 even
# in the VM's slow phases). fit's stages are ten times shorter, so no stage count suits both.
# While the caller goes alone, the helper polls every SLEEP_US microseconds instead of spinning.
OPEN, CLAIM, PART_DONE = 0, 8, 16            # each on its own cache line
STRIKES, SETTLING, MINE, STARTED, OWN, BACK, LAST_ALONE = 24, 25, 26, 27, 28, 29, 30   # the caller's
HELPED = 32                                  # the helper's: parts it computed in this call
ALONE = 40                                   # the caller's; the helper sleeps while it is > 0
TEAM_SLOTS = 48
FINISHED = 1 << 62                           # OPEN after the caller's last stage
ALWAYS = 1 << 62                             # ALONE of a call with no helper
PARKED = 1
SHORT = 1 << 14                              # time-stamp ticks (~6 us at 2.6 GHz)
LONG = 1 << 18                               # (~100 us: longer than a quiet stage's, shorter than a time slice)
STRIKE_DECAY, STRIKE, PARKED_STRIKE, TOO_MANY = 9, 10, 25, 45   # in tenths: x * 9 // 10 + strike
ALONE_MIN, ALONE_MAX = 64, 8192
CALM = 1 << 28                               # time-stamp ticks (~0.1 s at 2.6 GHz)
SETTLING_STAGES = 64
SLEEP_US = 200
SPINS = 1 << 14


@jit_borrowing
def _poll(sync, slot, stage, sleep):
    """Until sync[slot] >= stage (spinning, or polling every SLEEP_US if ``sleep``); -> the value."""
    seen = _load(sync, slot)
    i = 0
    while seen < stage:
        if sleep or i >= SPINS:
            if _YIELD:
                _usleep(SLEEP_US)
        else:
            _rest(i)
        i += 1
        seen = _load(sync, slot)
    return seen


def team_sync():
    """A fresh ``sync`` for a team's call: no stage open, the caller not judging alone."""
    return np.zeros(TEAM_SLOTS, np.int64)


def team_reset(sync, waking):
    """Ready ``sync`` for a new call: no stage open or claimed; the caller's judgement stays, but
    if the helper thread is ``waking`` (it slept), the first SETTLING_STAGES stages are judged
    only by long waits."""
    sync[OPEN] = sync[CLAIM] = sync[PART_DONE] = sync[HELPED] = 0
    if waking:
        sync[SETTLING] = max(sync[SETTLING], SETTLING_STAGES)


def alone_sync():
    """``sync`` for a call with no helper: the caller claims every part itself."""
    sync = team_sync()
    sync[ALONE] = ALWAYS
    return sync


@jit_borrowing
def team_part(sync, rank, stage, part):
    """Whether this thread computes part ``part`` (0, then 1) of ``stage``; see the comment above.
    After each part it computed, the thread calls team_part_done; after both, team_stage_done."""
    if rank == 0:
        if part == 0:
            mine = sync[ALONE] > 0
            if mine:   # (claimed before the stage opens: the helper cannot get it)
                _compare_exchange(sync, CLAIM, stage - 1, stage)
            sync[MINE] = mine
            _store(sync, OPEN, stage)
            sync[STARTED] = _cycles()
            return True
        sync[OWN] = _cycles() - sync[STARTED]
        if not sync[MINE]:
            sync[MINE] = _compare_exchange(sync, CLAIM, stage - 1, stage)
        return sync[MINE] != 0
    if part == 0:
        return False
    seen = _poll(sync, OPEN, stage, _load(sync, ALONE) > 0)
    if seen == stage and _compare_exchange(sync, CLAIM, stage - 1, stage):
        sync[HELPED] += 1
        return True
    return False


@jit_borrowing
def team_part_done(sync, rank, stage):
    """The helper's part of ``stage`` is written: the caller may go on."""
    if rank == 1:
        _store(sync, PART_DONE, stage)


@jit_borrowing
def team_stage_done(sync, rank, stage):
    """The caller: until both parts of ``stage`` are written, then judge the helper (see above)."""
    if rank != 0:
        return
    helper_had_it = sync[MINE] == 0
    own = sync[OWN]
    strike = STRIKE if not helper_had_it and own > SHORT else 0
    if helper_had_it:
        _poll(sync, PART_DONE, stage, False)
        waited = _cycles() - (sync[STARTED] + own)
        if waited > LONG and waited > PARKED * own:
            strike = PARKED_STRIKE
        elif waited > SHORT and waited > own:   # a slowed helper: alone, the stage is 2 x own
            strike = STRIKE
    if sync[ALONE] > 0:
        sync[ALONE] -= 1
        if sync[ALONE] == 0:
            sync[SETTLING] = SETTLING_STAGES
            sync[BACK] = _cycles()
        return
    if sync[SETTLING] > 0:   # (the helper is waking: only a parked one counts)
        sync[SETTLING] -= 1
        if strike != PARKED_STRIKE:
            return
    _strike(sync, strike)


@jit_borrowing
def _strike(sync, strike):
    """Count a judged stage's strike (0 for none); past TOO_MANY, the caller goes alone."""
    sync[STRIKES] = sync[STRIKES] * STRIKE_DECAY // 10 + strike
    if sync[STRIKES] > TOO_MANY:
        calm = _cycles() - sync[BACK] > CALM
        alone = ALONE_MIN if calm else max(ALONE_MIN, min(2 * sync[LAST_ALONE], ALONE_MAX))
        sync[ALONE] = sync[LAST_ALONE] = alone
        sync[STRIKES] = 0


@jit_borrowing
def hand_back(flag, state, sync):
    """The end of a team caller's compiled call that posted the helper's by publish(flag, state)
    (fastbp/halves.py team(..., publishing=True)): if it did (state POSTED), take the helper's
    call back unless the helper started it, else wait for it to be DONE (at most CALLER_SPINS
    tries), and judge that wait as a stage's (a LONG one: the helper was parked). Waiting here,
    holding no GIL, the caller lets the helper, back in Python to hand its result over, take
    the GIL at once (had the caller returned to Python first, the helper would sleep on the GIL,
    ~40 us)."""
    if state != POSTED or claim(flag, POSTED, TAKEN):
        return
    start = _cycles()
    wait_for(flag, DONE, CALLER_SPINS)
    if _cycles() - start > LONG:
        _strike(sync, PARKED_STRIKE)


@jit_borrowing
def team_finish(sync):
    """The caller is past its last stage: the helper leaves its loop."""
    _store(sync, OPEN, FINISHED)


@jit_borrowing
def team_finished(sync):
    """Whether the caller is past its last stage."""
    return _load(sync, OPEN) == FINISHED


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

    def team_part(sync, rank, stage, part):  # noqa: F811
        return rank == 0   # (one thread: it computes both parts)

    def team_part_done(sync, rank, stage):  # noqa: F811
        pass

    def team_stage_done(sync, rank, stage):  # noqa: F811
        pass

    def team_finish(sync):  # noqa: F811
        sync[OPEN] = FINISHED

    def team_finished(sync):  # noqa: F811
        return sync[OPEN] == FINISHED

    def hand_back(flag, state, sync):  # noqa: F811
        if state == POSTED:   # (never: no helper runs then)
            claim(flag, POSTED, TAKEN)
