"""The helper thread: a second core for fastbp's compiled calls, as a team of two threads.

A team call runs function(rank, sync, ...) on the calling thread (rank 0) and on the helper
(rank 1) at once; the kernel cuts its work into stages of two fixed parts each and the caller
computes every part the helper has not claimed (kernels/_sync.py), so no result depends on which
thread computed what, or on whether the helper took part at all. fit's steps (kernels/step.py
team_steps_csr, ~0.15 s of steps a call) and the nets' gradient and loss on a batch
(kernels/net.py net_team, ~0.1-0.3 ms a call) run so.

How a call is handed over (the flag in kernels/_sync.py)::

    caller:  post ─ run rank 0 ─┬ helper has not started: take the call back (TAKEN)
                                └ helper is on it: wait until it is DONE
    helper:  spin (a post is taken within a microsecond) ─ run rank 1 ─ DONE
             after ~2.6 ms without a post, sleep until woken

The nets' calls post from inside their compiled code (``publishing``), where the caller holds no
GIL, and wait for the helper there too: a thread that sleeps on the GIL takes ~40 us to wake.
Nothing waits for a part that no thread has started: when the other core is busy (another
process), the helper is not scheduled in time and the caller computes every part at one-thread
speed. A helper parked *while* on its part does make the caller wait: after a few such waits the
caller goes alone for a while (kernels/_sync.py's judge). Two-thread BLAS and OpenMP pools wait
for their parked thread instead, and a product then takes milliseconds. The nets' calls from a
user's loop also go alone while the loop's own cycles have been faster so (_Cycles: in some
phases of a VM every transfer between the cores is slow, and a team loses without any wait).

Off (the caller computes every part) with ``FASTBP_THREADS=1`` or ``fastbp.set_threads(1)``
(fastbp/threads.py), on a single-core machine, and when kernel bodies run as Python
(``NUMBA_DISABLE_JIT=1``).
"""
import os
import threading
import time

import numba
import numpy as np

from .kernels import _sync
from .kernels._sync import CALLER_SPINS, DONE, IDLE, POSTED, RUNNING, TAKEN
from .threads import threads_now

HELPER_SPINS = 1 << 16   # the helper's tries for a new post before it sleeps (~2.6 ms on Zen 4)


class _Cycles:
    """Team or alone for the short calls a user's loop makes (the nets' gradient and loss), chosen
    by the time the loop takes. A cycle runs from one call of the leading kind (the first kind
    seen: the book's loop's gradient on its batch shape) to the next, the user's own work
    included: after a team's gradient the in-place update takes longer (50-68 us in the loop
    against 23 after a one-thread call): the W1 lines the helper read must come back from its
    core when the update writes them (a test helper reading a private copy of W1 left the update
    at 33 us, and at 24 in the VM's slow phases, where a team's took 190-270), and so must the
    memory malloc hands the update's temporary ``lr * grad``, freed by a batch or a dW1 the
    helper touched (README, How fast), which no timing of the call alone shows. The cycles go as
    a team unless those measured alone have been shorter; EXPLORE cycles in every EVERY go the
    other way, the first of them not counted (the caches of the other way, a helper that
    slept). Calls of other kinds go the way of their cycle. A team's cycle in which the strike
    judge had the caller go alone (kernels/_sync.py) is not counted either: it timed neither
    way. (Counted, a VM's hiccup that set the judge off also made the team's next cycles, run
    alone, look slower than alone's, and the loop stayed alone for thousands of iterations:
    blocks of 2,000 iterations of the book's loop, MNIST-like, 488 and 437 us an iteration
    against ~400 as a team.)

    Measured on a 2-core Zen 4 VM (784-50-10, float64 net, MNIST-like batches): a team's cycle
    ~480 us against ~620 alone in most phases; in others the VM's cross-core traffic is slow and
    a team's cycle takes 770-1000 us (a team's gradient call 270-285 against 291 alone, its loss
    222 against 136, the update slower too) while alone holds at ~630. The strike judge
    (kernels/_sync.py) cannot see those: no wait for the helper is long, everything is slow."""

    EVERY, EXPLORE = 128, 3
    # Each counted cycle's share of its way's mean; a cycle longer than CLIP times the mean counts
    # as that (a VM's hiccup of milliseconds moves a mean by 6 %: with 2.0, by 25 %, and two
    # in a row took a team's 375 us past alone's 490)
    WEIGHT, CLIP = 0.25, 1.25
    PATIENCE = 8               # calls of other kinds in a row after which a new kind leads

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.leader = None
        self.others = 0          # calls of other kinds since the leader's last
        self.started = None      # when the current cycle started
        self.alone = False       # the current cycle's way
        self.counted = False     # whether the current cycle's time counts
        self.mean = {False: None, True: None}   # a cycle's time, as a team and alone
        self.cycles = 0

    def way(self, kind):
        """True if a call of ``kind`` (hashable) goes alone, False if as a team."""
        if kind != self.leader:
            self.others += 1
            if self.leader is not None and self.others <= self.PATIENCE:
                return self.alone
            self.leader, self.started = kind, None   # (a new loop)
        self.others = 0
        now = self.clock()
        if self.started is not None and self.counted:
            took, mean = now - self.started, self.mean[self.alone]
            self.mean[self.alone] = took if mean is None else mean + self.WEIGHT * (min(took, self.CLIP * mean) - mean)
        team, alone = self.mean[False], self.mean[True]
        preferred = team is not None and alone is not None and alone < team
        self.cycles += 1
        way = not preferred if self.cycles % self.EVERY >= self.EVERY - self.EXPLORE else preferred
        self.counted = self.started is not None and way == self.alone
        self.started, self.alone = now, way
        return way

    def uncount(self):
        """The current cycle's time does not count (see above)."""
        self.counted = False


class _Helper:
    """The helper thread and the flag it shares with callers (one call at a time)."""

    def __init__(self):
        self.flag = np.zeros(8, np.int64)   # flag[0]; the rest keeps other data off its cache line
        self.sync = _sync.team_sync()       # a team call's stages; the helper judged across calls
        self.posting = threading.Lock()     # one caller at a time hands a call over
        self.wake = threading.Event()       # set to wake a sleeping helper
        self.asleep = False
        self.job = None                     # (function, arguments) of the posted call
        self.result = self.error = None
        self.cycles = _Cycles()             # team or alone for the nets' calls (kind given)
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
            # DONE is the last touch of job and result (the caller owns them then)
            seen = _sync.publish_then_wait_for(self.flag, DONE, POSTED, HELPER_SPINS)

    def team(self, function, arguments, publishing=False, kind=None):
        """function(0, sync, *arguments) here and function(1, sync, *arguments) on the helper, a
        team sharing sync (kernels/_sync.py: the caller computes every part the helper has not
        claimed, so this never waits for a helper that does not start); -> the caller's result.
        ``publishing``: both get (flag, POSTED) after sync; the caller's call posts the helper's
        by storing POSTED in flag[0], and hands it back (kernels/_sync.py hand_back). ``kind``
        (publishing calls only): the call is one of a user's loop, which goes as a team or alone
        as _Cycles finds faster."""
        if not self.posting.acquire(blocking=False):   # (another caller has the helper)
            return function(0, _sync.alone_sync(), *_unposted(publishing), *arguments)
        try:
            if kind is not None and self.cycles.way(kind):
                return function(0, _sync.alone_sync(), *_unposted(publishing), *arguments)
            sync = self.sync
            _sync.team_reset(sync, waking=self.asleep)
            if publishing and sync[_sync.ALONE] > 0:
                # (the caller goes alone for a while: the helper then polls only every
                # _sync.SLEEP_US, longer than a whole short call, so it is not posted at all)
                if kind is not None:
                    self.cycles.uncount()
                return function(0, sync, *_unposted(publishing), *arguments)
            posting = (self.flag, POSTED) if publishing else ()
            self._post(function, (1, sync, *posting, *arguments), publish=not publishing)
            try:
                result = function(0, sync, *posting, *arguments)
            finally:
                _sync.team_finish(sync)   # (done by the caller's last stage, unless it raised)
                # (TAKEN or DONE: handed back by the call (_sync.hand_back); IDLE: it failed
                # before it posted)
                if not (self.flag[0] in (TAKEN, DONE) or _sync.claim(self.flag, POSTED, TAKEN)
                        or _sync.claim(self.flag, IDLE, TAKEN)):
                    self._wait()
            if self.error is not None:
                raise self.error
            return result
        finally:
            self._retire()

    def _post(self, function, arguments, publish=True):
        """Hand function(*arguments) to the helper (the caller holds ``posting``), by publishing
        POSTED now or (``publish=False``) by the caller's next compiled call; wake it if it
        sleeps."""
        self.job = (function, arguments)
        if publish:
            _sync.publish(self.flag, POSTED)
        if self.asleep:
            self.wake.set()

    def _retire(self):
        """The posted work is over (done, taken back or never started): the helper is free."""
        self.job = self.result = self.error = None
        _sync.publish(self.flag, IDLE)
        self.posting.release()

    def _wait(self):
        """Until the helper's call is done; a Ctrl-C meanwhile is raised after it (the helper
        is still reading the call's arguments and writing its result)."""
        interrupted = None
        while _sync.wait_for(self.flag, DONE, CALLER_SPINS) != DONE:
            try:
                time.sleep(0.001)   # (parked mid-call: sleep rather than spin)
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
    if numba.config.DISABLE_JIT or threads_now() < 2:
        return None
    if _helper is None:
        with _starting:
            if _helper is None:
                _helper = _Helper()
    return _helper


def _unposted(publishing):
    """The (flag, state) a publishing team function stores when no helper is posted: a flag of
    its own, which no thread watches."""
    return (np.zeros(1, np.int64), IDLE) if publishing else ()


def team(function, arguments, publishing=False, kind=None):
    """function(rank, sync, *arguments) as a team of two threads (kernels/_sync.py), or as the
    caller alone (rank 0, every part its own) when fastbp runs one thread; -> the caller's result.
    ``publishing``: function(rank, sync, flag, state, *arguments) stores ``state`` in flag[0]
    first when rank is 0, which posts the helper's call (see the module's docstring). ``kind``:
    see _Helper.team."""
    helper = _the_helper()
    if helper is None:
        return function(0, _sync.alone_sync(), *_unposted(publishing), *arguments)
    return helper.team(function, arguments, publishing, kind)
