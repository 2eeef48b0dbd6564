"""fit's steps and the nets' gradient and loss as a team of two threads (kernels/_sync.py,
kernels/step.team_steps_csr, kernels/net.net_team): the results are the same bits whichever thread
computed which part, and the caller never waits for a helper that does not start, nor for long
for one that is parked."""
import threading
import time

import numba
import numpy as np
import pytest

import fastbp
from fastbp import halves
from fastbp.kernels import _sync, step
from test_kernels import csr, labels, net, sparse_rows, update_case

needs_helper = pytest.mark.skipif(numba.config.DISABLE_JIT,
                                  reason="NUMBA_DISABLE_JIT=1: fastbp runs no helper thread")


def _training_call(seed, sizes, dtype, rows=40, batch=16, steps=25):
    """Arguments of a team_steps_csr call (after rank and sync) on random sparse data, a random
    activation and update rule (SGD, or a book optimizer, maybe with weight decay): the same
    ones, in fresh arrays, for the same arguments here."""
    rng = np.random.default_rng(seed)
    weights, biases = net(rng, sizes, dtype)
    update = update_case(rng, weights, biases)
    indptr, columns, values = csr(rng, rows, sizes[0], dtype)
    return step.team_arguments_csr(
        indptr, columns, values, labels(rng, rows, sizes[-1]),
        rng.integers(0, rows, size=(steps, batch)), weights, biases, int(rng.integers(0, 3)), update,
        np.zeros(steps), step.halfway_column(columns, sizes[0]))


def _trained(arguments):
    """What a call changed: the weights, biases, the rule's state and the losses, copied."""
    _, _, _, _, _, _, _, weights, biases, _, update, losses, _ = arguments
    return [a.copy() for a in (*weights, *biases, *update[2], *update[3], losses)]


@needs_helper
@pytest.mark.parametrize("sizes", [[30, 9, 4], [30, 17, 8, 5], [30, 140, 4]])   # (140: see below)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_team_gives_the_bits_of_one_thread_whoever_computes_which_part(sizes, dtype):
    """Rank 0 here and rank 1 on another thread, racing for every stage's second part, many
    times: always the weights, state and losses of the caller alone, and the helper did compute
    parts (so both ways were taken). (Rows of 140 take x.T @ d regrouped by column:
    kernels/step.py ROW_UPDATES_UP_TO.)"""
    helped = seed = 0
    while seed < 12 or (not helped and seed < 100):   # (on a busy machine the helper may be late)
        seed += 1
        arguments = _training_call(seed, sizes, dtype, steps=200)   # (time for the helper to join)
        alone = _training_call(seed, sizes, dtype, steps=200)
        step.team_steps_csr(0, _sync.alone_sync(), *alone)
        sync = _sync.team_sync()
        started = threading.Event()

        def helper_thread():
            started.set()
            step.team_steps_csr(1, sync, *arguments)
        helper = threading.Thread(target=helper_thread)
        helper.start()
        assert started.wait(30)
        step.team_steps_csr(0, sync, *arguments)
        helper.join(30)
        assert not helper.is_alive()
        helped += sync[_sync.HELPED]
        for mine, theirs in zip(_trained(arguments), _trained(alone)):
            np.testing.assert_array_equal(mine, theirs)
    assert helped > 0


@needs_helper
def test_fit_gives_the_same_bits_on_one_thread_or_two():
    x = np.random.default_rng(0).random((300, 64)) * (np.random.default_rng(1).random((300, 64)) < 0.2)
    t = np.random.default_rng(2).integers(0, 10, 300)
    trained = {}
    for threads in (1, 2):
        fastbp.set_threads(threads)
        try:
            for name in ("sgd", "adam"):
                np.random.seed(0)
                net = fastbp.MultiLayerNet(64, [20, 12], 10, weight_decay_lambda=0.01 if name == "adam" else 0)
                history = fastbp.fit(net, x, t, iters=150, batch_size=30, seed=3,
                                     optimizer=fastbp.Adam(lr=0.01) if name == "adam" else None)
                trained[threads, name] = [p.copy() for p in net.params.values()] + [np.array(history.loss)]
        finally:
            fastbp.set_threads(None)
    for name in ("sgd", "adam"):
        for one, two in zip(trained[1, name], trained[2, name]):
            np.testing.assert_array_equal(one, two)


@needs_helper
def test_a_helper_that_never_starts_costs_the_team_nothing(monkeypatch):
    """A helper thread that never runs (as one parked by a busy machine): the caller computes
    every part itself and returns, with the bits of one thread."""
    monkeypatch.setattr(threading.Thread, "start", lambda self: None)
    parked = halves._Helper()
    monkeypatch.undo()
    arguments = _training_call(0, [30, 9, 4], np.float32)
    alone = _training_call(0, [30, 9, 4], np.float32)
    step.team_steps_csr(0, _sync.alone_sync(), *alone)
    start = time.perf_counter()
    parked.team(step.team_steps_csr, arguments)
    assert time.perf_counter() - start < 30
    assert parked.flag[0] == halves.IDLE and parked.sync[_sync.HELPED] == 0
    for mine, theirs in zip(_trained(arguments), _trained(alone)):
        np.testing.assert_array_equal(mine, theirs)


@needs_helper
def test_a_helper_that_starts_after_the_caller_finished_leaves_at_once():
    arguments = _training_call(1, [30, 9, 4], np.float64)
    sync = _sync.team_sync()
    step.team_steps_csr(0, sync, *arguments)
    before = _trained(arguments)
    step.team_steps_csr(1, sync, *arguments)   # (would hang, were it waiting for a stage)
    for mine, theirs in zip(_trained(arguments), before):
        np.testing.assert_array_equal(mine, theirs)
    assert sync[_sync.HELPED] == 0


def _stage(sync, stage, helper_takes, helper_seconds=0.0):
    """One stage driven by hand: the caller opens it and finishes part 0; the helper (played
    here) claims part 1 if ``helper_takes`` and holds it for helper_seconds."""
    assert _sync.team_part(sync, 0, stage, 0)
    took = helper_takes and _sync.team_part(sync, 1, stage, 1)
    mine = _sync.team_part(sync, 0, stage, 1)
    assert mine != took
    if took:
        time.sleep(helper_seconds)
        _sync.team_part_done(sync, 1, stage)
    _sync.team_stage_done(sync, 0, stage)
    return took


@needs_helper
def test_a_caller_kept_waiting_by_a_parked_helper_goes_alone_then_tries_again():
    sync = _sync.team_sync()
    stage = 0
    for _ in range(20):   # quick parts by the helper (a preempted test may look parked, though)
        stage += 1
        _stage(sync, stage, True)
    sync[_sync.ALONE] = sync[_sync.STRIKES] = sync[_sync.LAST_ALONE] = strikes = 0
    while not sync[_sync.ALONE]:   # the helper holds its part for 20 ms (a parked thread)
        stage += 1
        assert _stage(sync, stage, True, 0.02)
        strikes += 1
        assert strikes < 20
    assert strikes == 2 and sync[_sync.ALONE] == _sync.ALONE_MIN   # (each wait: up to a time slice)
    for _ in range(_sync.ALONE_MIN):   # alone: the caller claims part 1 before opening the stage
        stage += 1
        assert not _stage(sync, stage, True)
    assert sync[_sync.ALONE] == 0 and sync[_sync.SETTLING] == _sync.SETTLING_STAGES
    stage += 1
    assert _stage(sync, stage, True)   # the helper again
    sync[_sync.STRIKES] = strikes = 0
    while not sync[_sync.ALONE]:   # parked again soon (settling or not): alone for twice as long
        stage += 1
        assert _stage(sync, stage, True, 0.02)
        strikes += 1
        assert strikes < 20
    assert strikes == 2 and sync[_sync.ALONE] == 2 * _sync.ALONE_MIN
    for _ in range(2 * _sync.ALONE_MIN):
        stage += 1
        assert not _stage(sync, stage, True)
    sync[_sync.BACK] -= _sync.CALM   # (back with the helper for a calm spell: as if CALM ticks ago)
    sync[_sync.STRIKES] = strikes = 0
    while not sync[_sync.ALONE]:   # parked after a calm spell: alone for the shortest while again
        stage += 1
        assert _stage(sync, stage, True, 0.02)
        strikes += 1
        assert strikes < 20
    assert strikes == 2 and sync[_sync.ALONE] == _sync.ALONE_MIN


@needs_helper
def test_a_helper_that_does_not_claim_its_parts_is_a_strike_unless_the_parts_are_tiny():
    sync = _sync.team_sync()
    for stage in range(1, 40):   # tiny parts, never claimed by the helper: not judged
        _stage(sync, stage, False)
    assert sync[_sync.ALONE] == 0
    sync[_sync.STRIKES] = 0
    stage = 40
    while not sync[_sync.ALONE]:
        assert _sync.team_part(sync, 0, stage, 0)
        time.sleep(0.001)   # a caller's part of 1 ms, and no helper
        assert _sync.team_part(sync, 0, stage, 1)
        _sync.team_stage_done(sync, 0, stage)
        stage += 1
        assert stage < 60
    assert stage == 46


def _busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@needs_helper
def test_a_helper_slower_than_the_caller_is_a_strike():
    """A helper on its part longer than the caller's own part took (a vCPU slowed down, not
    parked: every wait shorter than LONG) is a strike a stage; one that is slower, but by less,
    is not (the team still beats the caller alone). The parts are played here in real time, so
    a run in which the machine preempted the test mid-stage (a stage took 30 us longer than
    played) says nothing and is run again."""
    def stages(own, helper, count):
        """-> (each judged stage's strike, the stage at which the caller went alone or None), or
        None if the machine preempted the test mid-stage."""
        sync = _sync.team_sync()
        strikes = []
        for stage in range(1, count + 1):
            start = time.perf_counter()
            assert _sync.team_part(sync, 0, stage, 0)
            assert _sync.team_part(sync, 1, stage, 1)   # the helper (played here) claims part 1
            _busy(own)
            assert not _sync.team_part(sync, 0, stage, 1)
            _busy(helper)   # the helper's part goes on after the caller's
            _sync.team_part_done(sync, 1, stage)
            before = sync[_sync.STRIKES]
            _sync.team_stage_done(sync, 0, stage)
            if time.perf_counter() - start > own + helper + 30e-6:
                return None
            if sync[_sync.ALONE]:
                return strikes, stage
            strikes.append(sync[_sync.STRIKES] - before * _sync.STRIKE_DECAY // 10)
        return strikes, None

    def undisturbed(own, helper):
        for _ in range(20):
            run = stages(own, helper, 40)
            if run is not None:
                return run
        pytest.fail("the machine preempted every run of the stages")

    strikes, went_alone = undisturbed(20e-6, 50e-6)
    assert strikes == [_sync.STRIKE] * 5 and went_alone == 6   # (10, 19, 27, 34, 40, 46 > TOO_MANY)
    strikes, went_alone = undisturbed(60e-6, 10e-6)
    assert strikes == [0] * 40 and went_alone is None


# --- The nets' gradient and loss as a team (kernels/net.py net_team) ------------------------------

def _net_team_call(seed, sizes, dtype, zeros, gradient=True, rows=50):
    """The arguments of a net_team call (after rank, sync, flag, state) on random input as
    sparse as ``zeros``: float32 x (the book's loader's), a net of ``dtype``, a random activation."""
    from fastbp.kernels import net as net_kernels
    rng = np.random.default_rng(seed)
    weights, biases = net(rng, sizes, dtype)
    x = sparse_rows(rng, rows, sizes[0], np.float32, zeros=zeros)
    return net_kernels.team_arguments(x, labels(rng, rows, sizes[-1]), weights, biases,
                                      int(rng.integers(0, 3)), gradient)


def _results(arguments, caller):
    from fastbp.kernels import net as net_kernels
    loss, y, outputs, *grads, nonfinite = net_kernels.team_results(arguments, *caller)
    return [np.float64(loss), y, *outputs, *(a for group in grads for a in group), nonfinite]


@pytest.mark.parametrize("sizes", [[40, 9, 4], [40, 17, 8, 5], [40, 6]])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gradient", [True, False])
def test_a_nets_team_computes_net_gradient_and_net_loss(sizes, dtype, gradient):
    """The caller alone (every part its own): on the nonzero lists the bits of net_gradient /
    net_loss (the loss to rounding: its sum runs in another order), by BLAS (a dense batch) the
    same numbers to rounding."""
    from fastbp.kernels import net as net_kernels
    for seed, zeros in enumerate([0.8, 0.8, 0.0]):
        arguments = _net_team_call(seed, sizes, dtype, zeros, gradient)
        _, x, t, weights, biases, activation, *_ = arguments
        mine = _results(arguments, net_kernels.net_team(0, _sync.alone_sync(), np.zeros(1, np.int64), 0,
                                                        *arguments))
        kernel = net_kernels.net_gradient if gradient else net_kernels.net_loss
        loss, y, outputs, *grads, nonfinite = kernel(x, t, weights, biases, activation)
        theirs = [loss, y, *outputs, *(a for group in grads for a in group), nonfinite]
        assert len(mine) == len(theirs)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(mine[0], theirs[0], rtol=1e-12 if zeros else tol)
        for a, b in zip(mine[1:], theirs[1:]):
            if zeros:
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@needs_helper
@pytest.mark.parametrize("sizes", [[40, 9, 4], [40, 17, 8, 5]])
@pytest.mark.parametrize("zeros", [0.8, 0.0])
def test_a_nets_team_gives_the_bits_of_one_thread_whoever_computes_which_part(sizes, zeros):
    """Rank 0 here and rank 1 on another thread, racing for every stage's second part, many
    times: always the outputs and gradients of the caller alone (dense batches too), and the
    helper did compute parts. The call is handed over as fastbp/halves.py does: the caller's
    compiled code posts it (flag[0] = POSTED) and the helper, spinning on the flag, claims it
    or finds it taken back. (2,000 rows: a call of 100 takes tens of microseconds, often over
    before the helper's own call has unpacked its arguments; with the other core busy, the
    helper then computed no part in 200 tries.) BLAS is held at one thread, as the nets hold it
    for a dense batch (the calls say so: team_arguments's blas_limited): a two-thread BLAS
    product's second thread, spinning after it, kept the helper off the other core (dense
    batches: no part in 200 tries in a CI run; 0 and 4 tries of 40 with parts, 18 with the
    limit)."""
    from fastbp.kernels import net as net_kernels
    from fastbp.kernels._sync import DONE, IDLE, POSTED, RUNNING
    from fastbp.threads import limited_blas
    helped = seed = 0
    unposted = (np.zeros(1, np.int64), 0)
    with limited_blas(1):
        while seed < 12 or (not helped and seed < 200):
            seed += 1
            arguments = _net_team_call(seed, sizes, np.float64, zeros, rows=2000)
            alone = _results(arguments, net_kernels.net_team(0, _sync.alone_sync(), *unposted, *arguments))
            arguments = (arguments[0], *_net_team_call(seed, sizes, np.float64, zeros, rows=2000)[1:])
            sync, flag = _sync.team_sync(), np.zeros(8, np.int64)

            def helper_thread():
                until = time.monotonic() + 30   # (a caller that failed before posting posts nothing)
                while (seen := _sync.wait_for(flag, POSTED, 1 << 14)) == IDLE and time.monotonic() < until:
                    pass
                if seen == POSTED and _sync.claim(flag, POSTED, RUNNING):   # (else taken back)
                    net_kernels.net_team(1, sync, flag, POSTED, *arguments)
                    _sync.publish(flag, DONE)
            helper = threading.Thread(target=helper_thread, daemon=True)   # (never holds up the exit)
            helper.start()
            caller = net_kernels.net_team(0, sync, flag, POSTED, *arguments)
            helper.join(30)
            assert not helper.is_alive()
            helped += sync[_sync.HELPED]
            for mine, theirs in zip(_results(arguments, caller), alone):
                np.testing.assert_array_equal(mine, theirs)
    assert helped > 0
