"""A batch in two halves (fastbp/halves.py): the nets' results are the layers' own and do not depend
on which thread computed which half; the hand-over never waits for a half nobody started."""
import threading

import numba
import numpy as np
import pytest

import fastbp
from fastbp import MultiLayerNet, TwoLayerNet, halves, nets


# With kernel bodies as Python (CI's NUMBA_DISABLE_JIT=1 pass) fastbp uses no helper thread
# (halves.both computes both halves on the caller): the hand-over is tested compiled only.
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


def handed_over(second):
    """A function for halves.both whose second half runs ``second()`` and whose first half waits
    until the second has started: so the helper must take the second (a caller that finished
    first would take it back)."""
    started = threading.Event()

    def work(which):
        if which == "second":
            started.set()
            return second()
        assert started.wait(30), "the helper never started the second half"
        return which, _thread()
    return work


@needs_helper
def test_the_helper_computes_the_second_half(helper):
    first, second = halves.both(handed_over(lambda: ("second", _thread())), ("first",), ("second",))
    assert first == ("first", threading.current_thread().name)
    assert second == ("second", "fastbp-helper")
    assert helper.flag[0] == halves.IDLE


@needs_helper
def test_a_first_half_that_posts_the_second_hands_it_over(helper):
    """publishing: the caller's first half posts the second itself (the nets' compiled calls do
    it from compiled code); until it does, the helper does not start."""
    work = handed_over(lambda: ("second", _thread()))

    def publishing(flag, state, which):
        assert flag[0] == halves.IDLE   # nothing posted before the caller's call
        halves._sync.publish(flag, state)
        return work(which)

    first, second = halves.both(work, ("first",), ("second",), publishing)
    assert first == ("first", threading.current_thread().name)
    assert second == ("second", "fastbp-helper")
    assert helper.flag[0] == halves.IDLE


@needs_helper
def test_a_first_half_that_fails_before_it_posts_waits_for_nothing(helper):
    def publishing(flag, state, which):
        raise ArithmeticError("before posting")

    with pytest.raises(ArithmeticError, match="before posting"):
        halves.both(lambda which: which, ("first",), ("second",), publishing)
    assert helper.flag[0] == halves.IDLE
    assert halves.both(lambda which: which, ("a",), ("b",)) == ("a", "b")   # the helper lives on


@needs_helper
def test_a_half_the_helper_has_not_started_is_taken_back(monkeypatch):
    """A helper that never runs (as one parked by a busy machine) costs the caller nothing: it
    computes both halves itself instead of waiting."""
    monkeypatch.setattr(threading.Thread, "start", lambda self: None)   # a helper that never runs
    parked = halves._Helper()
    monkeypatch.undo()
    assert parked.both(lambda which: (which, _thread()), ("first",), ("second",)) == (
        ("first", threading.current_thread().name), ("second", threading.current_thread().name))
    assert parked.flag[0] == halves.IDLE


@needs_helper
def test_an_error_in_the_helpers_half_is_raised_by_the_caller(helper):
    def fail():
        raise ArithmeticError("in the helper's half")

    with pytest.raises(ArithmeticError, match="in the helper's half"):
        halves.both(handed_over(fail), ("first",), ("second",))
    assert halves.both(lambda which: which, ("a",), ("b",)) == ("a", "b")   # the helper lives on


@needs_helper
def test_a_caller_kept_waiting_by_a_parked_helper_goes_alone_for_a_while(helper):
    """Waits for a helper stalled mid-half (here: it sleeps), several in a row, and the caller
    computes both halves itself for the next ALONE_CALLS calls."""
    import time

    def stalled():
        time.sleep(0.02)
        return _thread()

    for _ in range(40):
        halves.both(handed_over(stalled), ("first",), ("second",))
        if helper.alone:
            break
    assert helper.alone == halves.ALONE_CALLS
    assert halves.both(lambda which: _thread(), ("first",), ("second",)) == (_thread(), _thread())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", [
    lambda dtype: TwoLayerNet(784, 50, 10, dtype=dtype),
    lambda dtype: MultiLayerNet(784, [40, 30], 10, activation="tanh", dtype=dtype),
])
@pytest.mark.parametrize("density", [0.19, 0.5])
def test_halves_give_the_layers_results_and_state_on_a_book_batch(monkeypatch, make, dtype, density):
    """A batch of 100 rows, MNIST-like or as dense as Fashion-MNIST: gradient and loss as two
    compiled halves each (counted), equal to the layers one by one, and leaving in the layers
    what they would."""
    from fastbp import kernels
    from test_nets import _layer_state
    rng = np.random.default_rng(5)
    x = (rng.random((100, 784)) * (rng.random((100, 784)) < density)).astype(np.float32)
    t = np.eye(10)[rng.integers(0, 10, 100)]
    calls = []
    for name in ("net_loss", "net_gradient"):
        kernel, publishing = getattr(kernels, name), nets.PUBLISHING[name]
        monkeypatch.setattr(kernels, name,
                            lambda x, *a, _k=kernel, _n=name: (calls.append((_n, x.shape[0])), _k(x, *a))[1])
        monkeypatch.setitem(nets.PUBLISHING, name, lambda flag, state, x, *a, _p=publishing, _n=name: (
            calls.append((_n, x.shape[0])), _p(flag, state, x, *a))[1])

    def run():
        np.random.seed(2)
        net = make(dtype)
        grads = net.gradient(x, t)
        return {"loss": net.loss(x, t), **grads}, _layer_state(net)

    fast, fast_state = run()
    assert sorted(calls) == sorted([("net_gradient", 55), ("net_gradient", 45), ("net_loss", 55),
                                    ("net_loss", 45)]), calls
    monkeypatch.setattr(nets._Net, "_plan", lambda self, x: None)   # the layers, one by one
    slow, slow_state = run()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for key in [*slow, *slow_state]:
        a, b = (fast[key], slow[key]) if key in slow else (fast_state[key], slow_state[key])
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=key)


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
