"""A batch's work in two halves: the calling thread computes one, a helper thread the other; and
fit's steps as a team of the same two threads (``team``, below).

The nets' compiled calls (``gradient`` and ``loss`` on a batch of the book's size) run on two
fixed halves of the batch's rows (the helper's a little smaller) and combine their results in a
fixed way, so the numbers are the same whichever thread computed which half, and whether the
helper took part at all.

How the halves meet (the flag in kernels/_sync.py)::

    caller:  post the second half ─ compute the first ─┬ helper has not started it: take it back
             (from the compiled call of the first)     └ helper is on it: wait for it to finish
    helper:  spin (a posted half is taken within a microsecond) ─ after ~2.6 ms without one, sleep

Nothing ever waits for a half that no thread has started: when the other core is busy (another
process), the helper is not scheduled in time and the caller computes both halves at one-thread
speed. Two-thread BLAS and OpenMP pools wait for their parked thread instead, and a product then
takes milliseconds. A helper parked *while* on its half does make the caller wait: after a few
such waits in a row the caller goes without the helper for a while (see PARKED).

fit's steps are one long compiled call each (~0.15 s of steps), so there the helper joins the
caller inside it: both run kernels/step.py's team_steps_csr, which hands each stage's second part
over by a flag of its own with the same rule (kernels/_sync.py: the caller takes any part the
helper has not claimed, and goes alone for a while after waits for a parked helper).

Off (the caller computes both halves, and every part) with ``FASTBP_THREADS=1`` or
``fastbp.set_threads(1)`` (fastbp/threads.py), on a single-core machine, and when kernel bodies
run as Python (``NUMBA_DISABLE_JIT=1``).
"""
import os
import threading
import time

import numba
import numpy as np

from .kernels import _sync
from .threads import get_threads

IDLE, POSTED, RUNNING, DONE, TAKEN = 0, 1, 2, 3, 4
HELPER_SPINS = 1 << 16   # the helper's tries for a new post before it sleeps (~2.6 ms on Zen 4)
CALLER_SPINS = 1 << 14   # the caller's tries for the helper's half before it sleeps (~0.7 ms)
# The helper had no core for a call when, awake, it did not start its half before the caller
# finished the other, or the caller then waited for it longer than PARKED times what its own half
# took (parked by the scheduler mid-half: another process wants the core). Such calls are counted
# with a decay (STRIKE_DECAY per call); past STRIKES (about six in a row) the machine is busy, and
# the caller computes both halves itself for the next ALONE_CALLS calls while the helper sleeps
# (spinning, it would take a third of the caller's core), then tries the helper again. The
# SETTLING_CALLS calls after a sleeping helper is woken are not counted: on a quiet VM its first
# few halves start late too. Quiet, about 1 call in 200 is such a call here. Measured on a 2-core
# Zen 4 with the other core busy, the book's loop on MNIST-like batches, us per iteration:
# 916-1279 without this rule, 711-739 with one thread only, 691-699 with the rule (quiet 524-611).
PARKED = 1.0
STRIKE_DECAY = 0.9
STRIKES = 4.5
SETTLING_CALLS = 8
ALONE_CALLS = 256


class _Helper:
    """The helper thread and the flag it shares with callers (one half at a time)."""

    def __init__(self):
        self.flag = np.zeros(8, np.int64)   # flag[0]; the rest keeps other data off its cache line
        self.sync = _sync.team_sync()       # a team's stages (fit's steps), judged across calls
        self.posting = threading.Lock()     # one caller at a time hands a half over
        self.wake = threading.Event()       # set to wake a sleeping helper
        self.done = threading.Event()       # set when a half is done, for a caller that sleeps
        self.asleep = False
        self.alone = 0                      # calls to go without the helper (see PARKED)
        self.strikes = 0.0                  # recent calls with a parked helper, decaying
        self.settling = 0                   # calls to go before the next judged one
        self.job = None                     # (function, arguments) of the posted half
        self.result = self.error = None
        threading.Thread(target=self._serve, name="fastbp-helper", daemon=True).start()

    def _serve(self):
        seen = _sync.wait_for(self.flag, POSTED, HELPER_SPINS)
        while True:
            if seen != POSTED:
                self.asleep = True         # (set before looking again: a caller that posts
                self.wake.clear()          # after this look sees asleep and sets wake)
                woken = True
                if _sync.wait_for(self.flag, POSTED, 0) != POSTED:
                    woken = self.wake.wait(1.0)   # (the flag is the truth: the event only wakes)
                self.asleep = False
                seen = _sync.wait_for(self.flag, POSTED, HELPER_SPINS if woken else 0)
                continue
            if not _sync.claim(self.flag, POSTED, RUNNING):
                seen = _sync.wait_for(self.flag, POSTED, HELPER_SPINS)
                continue                   # the caller took it back
            function, arguments = self.job
            try:
                self.result, self.error = function(*arguments), None
            except BaseException as error:  # handed to the caller, which raises it
                self.result, self.error = None, error
            self.done.set()
            # DONE is the last touch of job and result (the caller owns them then)
            seen = _sync.publish_then_wait_for(self.flag, DONE, POSTED, HELPER_SPINS)

    def both(self, function, first, second, publishing=None):
        """(function(*first), function(*second)), the second maybe on the helper (see both)."""
        if self.alone or not self.posting.acquire(blocking=False):   # (another caller has it)
            self.alone = max(0, self.alone - 1)
            return function(*first), function(*second)
        try:
            if self._post(function, second, publish=publishing is None):
                self.settling = SETTLING_CALLS
            start = time.perf_counter()
            try:
                if publishing is None:
                    result = function(*first)
                else:
                    result = publishing(self.flag, POSTED, *first)
            finally:
                mine_done = time.perf_counter()
                # (IDLE: the call failed before it posted)
                helper_has_it = not (_sync.claim(self.flag, POSTED, TAKEN)
                                     or _sync.claim(self.flag, IDLE, TAKEN))
                parked = not helper_has_it   # an awake helper that never started: no core for it
                if helper_has_it:
                    self._wait()
                    parked = time.perf_counter() - mine_done > PARKED * (mine_done - start)
                self._judge(parked)
            if not helper_has_it:
                return result, function(*second)
            if self.error is not None:
                raise self.error
            return result, self.result
        finally:
            self._retire()

    def team(self, function, arguments):
        """function(0, sync, *arguments) here and function(1, sync, *arguments) on the helper, a
        team sharing sync (kernels/_sync.py: the caller computes every part the helper has not
        claimed, so this never waits for a helper that does not start)."""
        if not self.posting.acquire(blocking=False):   # (another caller has the helper)
            function(0, _sync.alone_sync(), *arguments)
            return
        try:
            sync = self.sync
            _sync.team_reset(sync)
            self._post(function, (1, sync, *arguments))
            try:
                function(0, sync, *arguments)
            finally:
                _sync.team_finish(sync)   # (done by the caller's last stage, unless it raised)
                if not _sync.claim(self.flag, POSTED, TAKEN):
                    self._wait()
            if self.error is not None:
                raise self.error
        finally:
            self._retire()

    def _post(self, function, arguments, publish=True):
        """Hand function(*arguments) to the helper (the caller holds ``posting``), by publishing
        POSTED now or (``publish=False``) by the caller's next compiled call; -> whether the
        helper was asleep (and is being woken)."""
        self.job = (function, arguments)
        self.done.clear()
        if publish:
            _sync.publish(self.flag, POSTED)
        asleep = self.asleep
        if asleep:
            self.wake.set()
        return asleep

    def _retire(self):
        """The posted work is over (done, taken back or never started): the helper is free."""
        self.job = self.result = self.error = None
        _sync.publish(self.flag, IDLE)
        self.posting.release()

    def _judge(self, parked):
        """Count a call on which the helper had no core (see PARKED); past STRIKES the caller
        goes alone, and the helper, seeing no posts, soon sleeps instead of spinning."""
        if self.settling:   # (just woken: its first halves start late on a quiet machine too)
            self.settling -= 1
            return
        self.strikes = STRIKE_DECAY * self.strikes + parked
        if self.strikes > STRIKES:
            self.alone, self.strikes = ALONE_CALLS, 0.0

    def _wait(self):
        """Until the helper's half is done; a Ctrl-C meanwhile is raised after it (the helper
        is still reading the half's arguments and writing its result)."""
        interrupted = None
        while _sync.wait_for(self.flag, DONE, CALLER_SPINS) != DONE:
            try:
                self.done.wait(0.001)   # (parked mid-half: sleep rather than spin)
            except BaseException as error:
                interrupted = error
        if interrupted is not None:
            raise interrupted


_helper = None
_starting = threading.Lock()


def _reset_after_fork():
    global _helper, _starting
    _helper, _starting = None, threading.Lock()   # the child has no helper thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _the_helper():
    """The helper thread, started on first use; None when fastbp runs one thread (see above)."""
    global _helper
    if numba.config.DISABLE_JIT or get_threads() < 2:
        return None
    if _helper is None:
        with _starting:
            if _helper is None:
                _helper = _Helper()
    return _helper


def both(function, first, second, publishing=None):
    """(function(*first), function(*second)): the two halves, at once when a helper is free.
    ``publishing(flag, state, *first)``, when given, is function(*first) after flag[0] = state,
    stored by its compiled code (kernels/net.py PUBLISHING): then the helper is handed its half
    only once the caller holds no GIL, and does not sleep on the GIL before starting it (a
    sleeping thread takes ~40 us to wake)."""
    helper = _the_helper()
    if helper is None:
        return function(*first), function(*second)
    return helper.both(function, first, second, publishing)


def team(function, arguments):
    """function(rank, sync, *arguments) as a team of two threads (kernels/_sync.py), or as the
    caller alone (rank 0, every part its own) when fastbp runs one thread."""
    helper = _the_helper()
    if helper is None:
        function(0, _sync.alone_sync(), *arguments)
    else:
        helper.team(function, arguments)
