"""The helper thread (fastbp/halves.py): a call posted from the caller's own call is run by the
helper, handed back, or taken back when the helper has not started it (never waited for); the
nets' results by a team are the layers' own and do not depend on the thread count."""
import contextlib
import threading
import types

import numba
import numpy as np
import pytest

import fastbp
from fastbp import MultiLayerNet, TwoLayerNet, halves, nets, threads


# With kernel bodies as Python (CI's NUMBA_DISABLE_JIT=1 pass) fastbp uses no helper thread
# (the caller computes every part): the hand-over is tested compiled only.
needs_helper = pytest.mark.skipif(numba.config.DISABLE_JIT,
                                  reason="NUMBA_DISABLE_JIT=1: fastbp runs no helper thread")


@pytest.fixture
def helper(monkeypatch):
    """A helper of this test's own (the process's one keeps its state between tests)."""
    monkeypatch.setattr(fastbp.threads, "_threads", 2)
    fresh = halves._Helper()
    monkeypatch.setattr(halves, "_helper", fresh)
    return fresh


def _thread():
    return threading.current_thread().name


def publishing_call(helper_part, caller_waits=True):
    """A team function as the nets' (halves.team(..., publishing=True)): rank 0 posts the
    helper's call itself, then (``caller_waits``) waits until rank 1 has started, so the helper
    must be the one to run it, and hands it back; rank 1 runs ``helper_part()``. -> (function,
    where the ranks ran: {rank: thread name})."""
    started = threading.Event()
    ran = {}

    def function(rank, sync, flag, state, which):
        ran[rank] = _thread()
        if rank == 1:
            started.set()
            return helper_part()
        halves._sync.publish(flag, state)
        if caller_waits:
            assert started.wait(30), "the helper never started its call"
        halves._sync.hand_back(flag, state, sync)
        return which
    return function, ran


@needs_helper
def test_the_helper_runs_the_second_rank_of_a_call_its_caller_posts(helper):
    function, ran = publishing_call(lambda: "helper's")
    assert halves.team(function, ("caller's",), publishing=True) == "caller's"
    assert ran == {0: _thread(), 1: "fastbp-helper"}
    assert helper.flag[0] == halves.IDLE


@needs_helper
def test_a_call_that_fails_before_it_posts_waits_for_nothing(helper):
    def function(rank, sync, flag, state, which):
        raise ArithmeticError("before posting")

    with pytest.raises(ArithmeticError, match="before posting"):
        halves.team(function, ("caller's",), publishing=True)
    assert helper.flag[0] == halves.IDLE
    function, ran = publishing_call(lambda: None)
    assert halves.team(function, ("again",), publishing=True) == "again"   # the helper lives on
    assert ran[1] == "fastbp-helper"


@needs_helper
def test_a_call_the_helper_has_not_started_is_taken_back(monkeypatch):
    """A helper that never runs (as one parked by a busy machine) costs the caller nothing: its
    rank is never run, and the caller does not wait for it."""
    monkeypatch.setattr(threading.Thread, "start", lambda self: None)   # a helper that never runs
    parked = halves._Helper()
    monkeypatch.undo()
    function, ran = publishing_call(lambda: None, caller_waits=False)
    assert parked.team(function, ("caller's",), publishing=True) == "caller's"
    assert ran == {0: _thread()}
    assert parked.flag[0] == halves.IDLE


@needs_helper
def test_an_error_in_the_helpers_call_is_raised_by_the_caller(helper):
    def fail():
        raise ArithmeticError("in the helper's call")

    function, _ = publishing_call(fail)
    with pytest.raises(ArithmeticError, match="in the helper's call"):
        halves.team(function, ("caller's",), publishing=True)
    function, ran = publishing_call(lambda: None)
    assert halves.team(function, ("again",), publishing=True) == "again"   # the helper lives on
    assert ran[1] == "fastbp-helper"


@needs_helper
def test_a_caller_kept_waiting_by_a_parked_helper_goes_alone_for_a_while(helper):
    """Long waits at the end of a call for a helper stalled on its rank (here: it sleeps), a few
    in a row, and the caller goes alone for a while: the next calls are not posted at all."""
    import time

    for _ in range(10):
        function, _ = publishing_call(lambda: time.sleep(0.02))
        halves.team(function, ("caller's",), publishing=True)
        if helper.sync[halves._sync.ALONE]:
            break
    assert helper.sync[halves._sync.ALONE] > 0
    function, ran = publishing_call(lambda: None, caller_waits=False)
    assert halves.team(function, ("alone",), publishing=True) == "alone"
    assert ran == {0: _thread()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", [
    lambda dtype: TwoLayerNet(784, 50, 10, dtype=dtype),
    lambda dtype: MultiLayerNet(784, [40, 30], 10, activation="tanh", dtype=dtype),
])
@pytest.mark.parametrize("density", [0.19, 0.5])
def test_a_team_gives_the_layers_results_and_state_on_a_book_batch(monkeypatch, make, dtype, density):
    """A batch of 100 rows, MNIST-like or as dense as Fashion-MNIST: gradient and loss by a team
    (counted), equal to the layers one by one, and leaving in the layers what they would."""
    from test_nets import _layer_state
    rng = np.random.default_rng(5)
    x = (rng.random((100, 784)) * (rng.random((100, 784)) < density)).astype(np.float32)
    t = np.eye(10)[rng.integers(0, 10, 100)]
    calls = []
    kernel = nets.net_team

    def counted(rank, sync, flag, state, work, *rest):
        result = kernel(rank, sync, flag, state, work, *rest)
        if not work[1][nets.WANTS_BLAS]:   # (not a call that stopped to have BLAS held)
            calls.append((rank, rest[-2]))
        return result

    monkeypatch.setattr(nets, "net_team", counted)

    def run():
        np.random.seed(2)
        net = make(dtype)
        grads = net.gradient(x, t)
        return {"loss": net.loss(x, t), **grads}, _layer_state(net)

    fast, fast_state = run()
    assert [call for call in calls if call[0] == 0] == [(0, True), (0, False)], calls   # (gradient, loss)
    monkeypatch.setattr(nets._Net, "_plan", lambda self, x: None)   # the layers, one by one
    slow, slow_state = run()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for key in [*slow, *slow_state]:
        a, b = (fast[key], slow[key]) if key in slow else (fast_state[key], slow_state[key])
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=key)


def test_blas_is_held_at_one_thread_for_the_batches_that_use_it(monkeypatch):
    """Sparse batches run no BLAS and leave it as it is; a batch dense enough for BLAS
    (kernels/net.py DENSE_SHARE) runs with every BLAS at one thread: at once when the last batch
    of its shape was dense too, else after net_team stopped before its first stage. The results
    are the layers' either way."""
    held = []
    limited = nets.limited_blas

    @contextlib.contextmanager
    def counted(*args, **kwargs):
        with limited(*args, **kwargs):
            held.append(True)
            try:
                yield
            finally:
                held.pop()

    calls = []   # (BLAS held during the call, the call's blas_limited, it stopped for BLAS)
    kernel = nets.net_team

    def recorded(rank, *a):
        result = kernel(rank, *a)
        if rank == 0:
            calls.append((bool(held), a[-1], bool(a[3][1][nets.WANTS_BLAS])))
        return result

    monkeypatch.setattr(nets, "limited_blas", counted)
    monkeypatch.setattr(nets, "net_team", recorded)
    rng = np.random.default_rng(8)
    t = rng.integers(0, 10, 100)
    sparse, dense = ((rng.random((100, 784)) * (rng.random((100, 784)) < share)).astype(np.float32)
                     for share in (0.1, 0.9))
    np.random.seed(3)
    net = TwoLayerNet(784, 50, 10)
    fast = [net.loss(x, t) for x in (sparse, dense, dense, sparse, sparse)]
    assert calls == [(False, False, False),                       # sparse: no BLAS, not held
                     (False, False, True), (True, True, False),   # dense after sparse: stop, again
                     (True, True, False),                         # dense after dense: held
                     (True, True, False),                         # sparse after dense: held
                     (False, False, False)], calls
    monkeypatch.setattr(nets._Net, "_plan", lambda self, x: None)   # the layers, one by one
    slow = [net.loss(x, t) for x in (sparse, dense, dense, sparse, sparse)]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def _cycles_run(cycles, cycle_time, count, kinds=("gradient", "loss")):
    """``count`` cycles of a loop calling ``kinds`` in turn, on a played clock: each cycle takes
    cycle_time(alone, number) seconds. -> the way (True: alone) of each cycle."""
    ways = []
    for number in range(count):
        alone = cycles.way(kinds[0])
        assert all(cycles.way(kind) == alone for kind in kinds[1:])   # (the cycle's way)
        ways.append(alone)
        cycles.clock.now += cycle_time(alone, number)
    return ways


def _played_cycles():
    clock = type("Clock", (), {"now": 0.0, "__call__": lambda self: self.now})()
    return halves._Cycles(clock)


def test_a_loop_goes_as_a_team_while_a_team_is_faster():
    """Cycles of 480 us as a team, 620 alone: a team but for EXPLORE cycles in every EVERY."""
    cycles = _played_cycles()
    ways = _cycles_run(cycles, lambda alone, _: 620e-6 if alone else 480e-6, 20 * cycles.EVERY)
    assert sum(ways) == 20 * cycles.EXPLORE
    assert all(ways[i] == ((i + 1) % cycles.EVERY >= cycles.EVERY - cycles.EXPLORE) for i in range(len(ways)))
    assert cycles.mean[False] == pytest.approx(480e-6) and cycles.mean[True] == pytest.approx(620e-6)


def test_a_loop_goes_alone_while_alone_is_faster_and_back_when_the_team_is():
    """A VM phase in which a team's cycle takes 940 us and one alone 630: alone after the first
    exploration, but for EXPLORE cycles in every EVERY; then the phase ends (a team's cycle 480
    us): a team again within two explorations."""
    cycles = _played_cycles()
    every, explore = cycles.EVERY, cycles.EXPLORE
    phase_end = 20 * every

    def cycle_time(alone, number):
        return 630e-6 if alone else (940e-6 if number < phase_end else 480e-6)

    ways = _cycles_run(cycles, cycle_time, 40 * every)
    bad = ways[2 * every:phase_end]
    assert len(bad) - sum(bad) == explore * (len(bad) // every)   # (a team only to explore)
    assert sum(ways[phase_end + 3 * every:]) == explore * 17       # (alone only to explore)


def test_a_cycles_first_call_leads_and_a_new_loop_takes_over():
    """The first kind seen starts the cycles; another kind's calls go the way of their cycle;
    after PATIENCE calls of other kinds in a row, a new kind leads (a new loop in the program)."""
    cycles = _played_cycles()
    assert cycles.way("gradient") is False and cycles.leader == "gradient"
    for _ in range(cycles.PATIENCE):
        assert cycles.way("loss") is False
    assert cycles.leader == "gradient"
    cycles.way("loss")
    assert cycles.leader == "loss"


def test_one_cycle_longer_than_clip_times_its_ways_mean_counts_as_that():
    """An outlier (the loop printed accuracies on the whole training set) moves the mean by at
    most WEIGHT (CLIP - 1) times the mean, not by WEIGHT times the outlier."""
    cycles = _played_cycles()
    _cycles_run(cycles, lambda alone, _: 500e-6, 10, kinds=("gradient",))
    _cycles_run(cycles, lambda alone, _: 0.5, 1, kinds=("gradient",))
    cycles.way("gradient")
    assert cycles.mean[False] == pytest.approx(500e-6 * (1 + cycles.WEIGHT * (cycles.CLIP - 1)))


def test_two_hiccups_in_a_row_leave_a_loop_as_a_team():
    """A team's cycles 375 us, alone's 490 (the book's loop, MNIST-like): two cycles of 10 ms in a
    row (the VM's other vCPU descheduled) do not make alone look faster."""
    cycles = _played_cycles()
    ways = _cycles_run(cycles, lambda alone, n: 490e-6 if alone else (0.01 if n in (300, 301) else 375e-6),
                       4 * cycles.EVERY)
    assert sum(ways) == 4 * cycles.EXPLORE


def test_a_team_cycle_the_strike_judge_ran_alone_does_not_count():
    """uncount(): the cycle's time is not a team's (the caller went alone: kernels/_sync.py)."""
    cycles = _played_cycles()
    _cycles_run(cycles, lambda alone, _: 400e-6, 10, kinds=("gradient",))
    assert cycles.way("gradient") is False
    cycles.uncount()
    cycles.clock.now += 700e-6
    cycles.way("gradient")
    assert cycles.mean[False] == pytest.approx(400e-6)


def test_the_books_loop_gives_the_same_bits_on_one_thread_or_two():
    """30 iterations of the book's loop (gradient, update, loss): weights and losses bit for bit
    the same with the helper and without it."""
    rng = np.random.default_rng(7)
    x = (rng.random((1000, 784)) * (rng.random((1000, 784)) < 0.19)).astype(np.float32)
    t = np.eye(10)[rng.integers(0, 10, 1000)]

    def train(threads):
        fastbp.set_threads(threads)
        try:
            np.random.seed(0)
            net = TwoLayerNet(784, 50, 10)
            batches = np.random.default_rng(1).integers(0, 1000, (30, 100))
            losses = []
            for rows in batches:
                grad = net.gradient(x[rows], t[rows])
                for key in net.params:
                    net.params[key] -= 0.1 * grad[key]
                losses.append(net.loss(x[rows], t[rows]))
            return net.params, losses
        finally:
            fastbp.set_threads(None)

    (one, losses_one), (two, losses_two) = train(1), train(2)
    assert losses_one == losses_two
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_fastbp_threads_must_be_a_positive_integer(monkeypatch, value):
    monkeypatch.setenv("FASTBP_THREADS", value)
    with pytest.raises(ValueError, match=f"FASTBP_THREADS: expected a positive integer.*{value!r}"):
        fastbp.get_threads()


def test_set_threads(monkeypatch):
    monkeypatch.delenv("FASTBP_THREADS", raising=False)
    try:
        fastbp.set_threads(1)
        assert fastbp.get_threads() == 1
        fastbp.set_threads(8)
        assert fastbp.get_threads() == 2
        with pytest.raises(ValueError, match="n: expected a positive integer, got 0"):
            fastbp.set_threads(0)
        with pytest.raises(TypeError, match="n: expected a positive integer, got float 1.5"):
            fastbp.set_threads(1.5)
    finally:
        fastbp.set_threads(None)
    monkeypatch.setenv("FASTBP_THREADS", "1")
    assert fastbp.get_threads() == 1


def test_threads_now_follows_set_threads_at_once_and_the_environment_within_look_every(monkeypatch):
    """The nets' calls ask threads_now, which asks get_threads again only every LOOK_EVERY
    seconds (reading the environment costs more than a short call should)."""
    now = [1000.0]
    monkeypatch.setattr(threads, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.delenv("FASTBP_THREADS", raising=False)
    try:
        fastbp.set_threads(1)
        assert threads.threads_now() == 1
        fastbp.set_threads(None)
        assert threads.threads_now() == fastbp.get_threads() == min(2, threads.available_cores())
        monkeypatch.setenv("FASTBP_THREADS", "1")
        now[0] += threads.LOOK_EVERY / 2
        assert threads.threads_now() == min(2, threads.available_cores())   # (asked 0.05 s ago)
        now[0] += threads.LOOK_EVERY
        assert threads.threads_now() == 1
    finally:
        fastbp.set_threads(None)
