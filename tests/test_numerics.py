"""Numbers that hold at the edges: softmax cross-entropy, sigmoid, tanh and ReLU at extreme and
tiny inputs (against exact high-precision values), float32 training that stays finite, divergence
that is reported instead of turning into NaN, and reproducibility across interpreter runs and
thread counts.
"""
import decimal
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings
from contextlib import contextmanager
from decimal import Decimal

import numpy as np
import pytest

import fastbp
from fastbp import (Relu, Sigmoid, SoftmaxWithLoss, Tanh, TrainingDiverged, TwoLayerNet,
                    fit, use_backend)

MODULES = {"kernels": fastbp.kernels, "reference": fastbp.reference}
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=["kernels", "reference"])
def backend(request):
    with use_backend(request.param):
        yield request.param


@contextmanager
def strict_floats(backend):
    """No floating-point warning may escape: overflow, invalid and divide raise. Underflow is the
    right answer here (exp of a very negative number is 0), and it raises only where the kernel
    bodies run as Python (NUMBA_DISABLE_JIT=1), so it is allowed on both backends."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            yield


def accumulation_eps(backend, dtype):
    """The precision log(sum exp(x - max)) is formed in: float64 on both backends."""
    return np.finfo(np.float64).eps


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy against an exact formula


def exact_softmax_ce(x, t):
    """Per-row loss log(sum_j exp(x_j - x_t)) and softmax y, computed in 50-digit decimals from the
    exact values of the floats in x. -> (loss per row (float), y (float64))"""
    losses, ys = [], []
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        for row, label in zip(np.asarray(x, np.float64), t):
            d = [Decimal(float(v)) for v in row]
            m = max(d)
            e = [(v - m).exp() for v in d]
            s = sum(e)
            losses.append(float((m - d[label]) + s.ln()))
            ys.append([float(v / s) for v in e])
    return np.array(losses), np.array(ys)


def softmax_ce_both_ways(backend, x, t, labels):
    """(loss, y, dx) through the layer on ``backend``, checked equal to the backend's functions."""
    n, c = x.shape
    target = t if labels == "index" else np.eye(c, dtype=x.dtype)[t]
    with use_backend(backend), strict_floats(backend):
        layer = SoftmaxWithLoss()
        loss = layer.forward(x, target)
        dx = layer.backward()
        mod = MODULES[backend]
        if labels == "index":
            loss2, y = mod.softmax_cross_entropy(x, t.astype(np.int64))
            dx2 = mod.softmax_cross_entropy_backward(y, t.astype(np.int64))
        else:
            loss2, y = mod.softmax_cross_entropy_onehot(x, target)
            dx2 = mod.softmax_cross_entropy_onehot_backward(y, target)
    assert loss == loss2
    np.testing.assert_array_equal(layer.y, y)
    np.testing.assert_array_equal(dx, dx2)
    assert dx.dtype == y.dtype == x.dtype
    return float(loss), y, dx


def extreme_logits(big, dtype):
    b = float(dtype(big))
    rows = [([b, -b, 0.0, 1.0], 0),      # correct class far ahead: loss ~ 0
            ([b, -b, 0.0, 1.0], 1),      # correct class far behind: loss 2b
            ([-b, 0.0, b, b], 3),        # a tie at the top: loss log 2
            ([0.5, -b, b, -0.25], 0),    # loss b - 0.5
            ([-b, -b, -b, -b], 2)]       # all equal and very negative: log 4
    if big < 1e6:
        rows.append(([b, b - 1, 0.0, -b], 1))   # a near tie: 1 + log(1 + e^-1)
    x = np.array([r for r, _ in rows], dtype=dtype)
    assert np.isfinite(x).all()         # 1e30 is a finite float32 (its max is 3.4e38)
    return x, np.array([t for _, t in rows])


@pytest.mark.parametrize("labels", ["index", "onehot"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("big", [1e4, 1e30])
@pytest.mark.parametrize("backend_name", ["kernels", "reference"])
def test_softmax_ce_at_extreme_logits_matches_the_exact_formula(backend_name, big, dtype, labels):
    x, t = extreme_logits(big, dtype)
    loss, y, dx = softmax_ce_both_ways(backend_name, x, t, labels)
    exact_rows, exact_y = exact_softmax_ce(x, t)
    n = len(t)
    assert np.isfinite(loss) and np.isfinite(y).all() and np.isfinite(dx).all()
    assert ((0 <= y) & (y <= 1)).all()
    # loss: exact up to rounding: of exp and log in the dtype, and of adding back the row maximum
    # (float64 in the kernels) at the logits' magnitude
    eps, eps_acc = np.finfo(dtype).eps, accumulation_eps(backend_name, dtype)
    bound = np.mean(4 * eps * (exact_rows + math.log(x.shape[1])) + 4 * eps_acc * np.abs(x).max(axis=1))
    assert abs(loss - exact_rows.mean()) <= bound, (loss, exact_rows.mean(), bound)
    # gradient: (y - onehot) / N, exact to a few units in the last place of the dtype
    onehot = np.eye(x.shape[1])[t]
    exact_dx = (exact_y - onehot) / n
    fi = np.finfo(dtype)
    tol = 8 * fi.eps * (exact_y + onehot) / n + 4 * fi.smallest_subnormal   # rounding of y - t
    assert (np.abs(dx - exact_dx) <= tol).all(), (dx, exact_dx)
    np.testing.assert_allclose(y.astype(np.float64), exact_y, rtol=8 * fi.eps, atol=4 * fi.smallest_subnormal)


@pytest.mark.parametrize("labels", ["index", "onehot"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [0.0, 7.5, -3.25])
@pytest.mark.parametrize("classes, n", [(3, 1), (10, 4), (7, 5)])
@pytest.mark.parametrize("backend_name", ["kernels", "reference"])
def test_softmax_ce_all_equal_logits_give_log_c_and_the_exact_gradient(backend_name, classes, n,
                                                                        value, dtype, labels):
    x = np.full((n, classes), value, dtype)
    t = np.arange(n) % classes
    loss, y, dx = softmax_ce_both_ways(backend_name, x, t, labels)
    eps = accumulation_eps(backend_name, dtype)
    assert abs(loss - math.log(classes)) <= 4 * eps * (abs(value) + math.log(classes)), loss
    exact_y = np.full((n, classes), 1 / classes)
    np.testing.assert_array_max_ulp(y, exact_y.astype(dtype), maxulp=1)
    exact_dx = (exact_y - np.eye(classes)[t]) / n
    np.testing.assert_array_max_ulp(dx, exact_dx.astype(dtype), maxulp=2)


@pytest.mark.parametrize("labels", ["index", "onehot"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [1e4, -1e4, 1e30])
@pytest.mark.parametrize("backend_name", ["kernels", "reference"])
def test_softmax_ce_loss_is_shift_invariant_for_all_equal_logits(backend_name, offset, dtype, labels):
    """Softmax cross-entropy depends only on differences of logits: all-equal logits give
    log(C) whatever their common value. The loss must not lose it to cancellation in
    (log(sum) + max) - x[t] when the logits are large (log(sum) + (max - x[t]) keeps it)."""
    classes = 10
    x = np.full((3, classes), offset, dtype)
    t = np.array([0, 4, 9])
    loss, y, dx = softmax_ce_both_ways(backend_name, x, t, labels)
    assert loss == pytest.approx(math.log(classes), rel=1e-6), (
        f"all logits {offset:g} ({np.dtype(dtype).name}): loss {loss!r}, exact log(10) = {math.log(10)!r}")
    np.testing.assert_array_max_ulp(dx, ((np.full((3, classes), 0.1) - np.eye(classes)[t]) / 3).astype(dtype), maxulp=2)


@pytest.mark.parametrize("labels", ["index", "onehot"])
@pytest.mark.parametrize("dtype, gap", [(np.float32, 1e4), (np.float64, 1e4), (np.float32, 1e30),
                                        (np.float64, 1e30)])
@pytest.mark.parametrize("rest", [0.0, "-gap"])
@pytest.mark.parametrize("backend_name", ["kernels", "reference"])
def test_softmax_ce_huge_gap_gives_zero_loss_and_zero_gradient(backend_name, rest, dtype, gap, labels):
    classes, n = 5, 4
    other = -gap if rest == "-gap" else rest
    x = np.full((n, classes), other, dtype)
    t = np.array([0, 3, 4, 1])
    x[np.arange(n), t] = gap
    loss, y, dx = softmax_ce_both_ways(backend_name, x, t, labels)
    assert loss == 0.0            # exactly log(1 + (C-1) e^-gap) rounded: 0
    np.testing.assert_array_equal(y, np.eye(classes)[t])
    assert not dx.any()


def test_softmax_ce_logits_beyond_float32_are_computed_on_with_a_warning():
    with np.errstate(over="ignore"):
        x = np.array([[1e39, 0.0, -1.0]]).astype(np.float32)   # does not fit: inf
    with pytest.warns(RuntimeWarning, match=r"SoftmaxWithLoss.forward: the loss is NaN or Inf"):
        loss = SoftmaxWithLoss().forward(x, np.array([0]))
    assert not np.isfinite(loss)
    # the same logits in float64 are fine
    loss = SoftmaxWithLoss().forward(np.array([[1e39, 0.0, -1.0]]), np.array([1]))
    assert loss == 1e39


# ---------------------------------------------------------------------------------------------
# sigmoid, tanh, relu at the edges


def exact_sigmoid(v):
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        d = Decimal(float(v))
        if d >= 0:
            return float(1 / (1 + (-d).exp()))
        e = d.exp()
        return float(e / (1 + e))


EDGES = {np.float32: [88.0, 89.0, 1e4, 1e30], np.float64: [710.0, 800.0, 1e4, 1e30]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_type", [Sigmoid, Tanh])
def test_sigmoid_and_tanh_saturate_exactly_without_nan_or_warnings(backend, layer_type, dtype):
    magnitudes = EDGES[dtype]
    x = np.array([s * m for m in magnitudes for s in (1, -1)] + [0.0], dtype=dtype)
    dout = np.full_like(x, 2.0)
    layer = layer_type()
    with strict_floats(backend):
        y = layer.forward(x)
        dx = layer.backward(dout)
    assert y.dtype == dx.dtype == dtype
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    if layer_type is Tanh:
        np.testing.assert_array_equal(y, np.sign(x))       # tanh(88) is 1 to far below float32's eps
        assert not dx[:-1].any() and dx[-1] == 2.0
        return
    exact = np.array([exact_sigmoid(v) for v in x])
    np.testing.assert_array_max_ulp(y, exact.astype(dtype), maxulp=2)   # denormals included
    pos, neg = x > 0, x < 0
    assert (y[pos] == 1).all() and (dx[pos] == 0).all()                 # saturated: exactly 1 and 0
    saturated_low = neg & (exact == 0)                  # e^-x below the smallest denormal
    assert (y[saturated_low] == 0).all() and (dx[saturated_low] == 0).all()
    assert ((0 <= y[neg]) & (y[neg] < np.finfo(dtype).tiny)).all()   # the rest: denormal, not 0
    np.testing.assert_array_max_ulp(dx[neg], (2 * exact[neg]).astype(dtype), maxulp=2)
    assert y[-1] == 0.5 and dx[-1] == 0.5
    assert np.isin(y[np.abs(x) >= 1e4], [0.0, 1.0]).all()    # far out: exactly 0 or 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_at_zero_negative_zero_and_denormals(backend, dtype):
    fi = np.finfo(dtype)
    x = np.array([0.0, -0.0, fi.smallest_subnormal, -fi.smallest_subnormal, fi.tiny, -fi.tiny,
                  1.0, -1.0, fi.max, -fi.max, np.inf, -np.inf], dtype=dtype)
    layer = Relu()
    with strict_floats(backend):
        y = layer.forward(x)
        dx = layer.backward(np.full_like(x, 3.0))
    book_mask = x <= 0                                   # the book: self.mask = (x <= 0)
    np.testing.assert_array_equal(layer.mask, book_mask)
    assert layer.mask.dtype == np.bool_
    book_out = x.copy()
    book_out[book_mask] = 0                              # out[self.mask] = 0
    np.testing.assert_array_equal(y, book_out)
    assert not np.signbit(y).any()                       # -0.0 comes out as +0.0, as in the book
    assert y[2] == fi.smallest_subnormal and y[4] == fi.tiny   # denormals are not flushed
    np.testing.assert_array_equal(dx, np.where(book_mask, 0.0, 3.0).astype(dtype))
    assert y.dtype == dx.dtype == dtype


# ---------------------------------------------------------------------------------------------
# training: float32 stays finite, divergence is reported


@pytest.mark.slow   # 2,000 steps on 60,000 images: hours as Python, since fit's sparse kernels are loops
def test_float32_training_on_fashion_mnist_stays_finite(fashion_mnist):
    (x_train, t_train), (x_test, t_test) = fashion_mnist
    np.random.seed(0)
    net = TwoLayerNet(784, 50, 10, dtype=np.float32)
    history = fit(net, x_train, t_train, x_test, t_test, iters=2000, batch_size=100, lr=0.1, seed=0,
                  eval_every=1000)
    assert history.loss.shape == (2000,) and np.isfinite(history.loss).all()
    assert all(p.dtype == np.float32 and np.isfinite(p).all() for p in net.params.values())
    assert history.rows[-1].iteration == 2000
    assert history.rows[-1].test_acc > 0.8, history.rows


def toy(n=300, d=10, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, np.argmax(x @ rng.standard_normal((d, c)), axis=1)


def diverging_net(dtype):
    np.random.seed(0)
    return TwoLayerNet(10, 16, 3, weight_init_std=1.0, dtype=dtype)


# The NumPy twins warn while the numbers blow up (overflow in matmul, inf - inf): expected here.
QUIET_BLOWUP = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                          "ignore:invalid value encountered:RuntimeWarning")


@QUIET_BLOWUP
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_reports_divergence_with_the_iteration_and_lr(backend, dtype):
    x, t = toy()
    x = x * 100
    run = dict(batch_size=10, lr=1e30, seed=4, eval_every=1000)
    with pytest.raises(TrainingDiverged) as info:
        fit(diverging_net(dtype), x, t, iters=50, **run)
    found = re.fullmatch(r"fit: the loss became (nan|inf|-inf) at iteration (\d+) \(lr=1e\+30\); "
                         r"training diverged: lower the learning rate", str(info.value))
    assert found, str(info.value)
    bad = int(found.group(2))
    assert isinstance(info.value, FloatingPointError)
    # the iteration named is the first bad one: the steps before it all had a finite loss ...
    if bad > 0:
        history = fit(diverging_net(dtype), x, t, iters=bad, **run)
        assert np.isfinite(history.loss).all()
    # ... and it is bad again when training stops right after it
    with pytest.raises(TrainingDiverged, match=rf"at iteration {bad} \(lr=1e\+30\)"):
        fit(diverging_net(dtype), x, t, iters=bad + 1, **run)


@QUIET_BLOWUP
@pytest.mark.parametrize("dtype", DTYPES)
def test_book_style_loop_divergence_is_warned_once_and_goes_on_as_numpy(backend, dtype):
    """The seeds' loop (net.gradient, then params[key] -= lr * grad[key]) with lr = 1e30 on data
    scaled by 100: the weights blow up. As with the book's code the run goes on (NaN/Inf
    propagate, accuracy stays a number in [0, 1]); fastbp says so once, naming the cure."""
    x, t = toy()
    x = x * 100
    net = diverging_net(dtype)
    np.random.seed(0)
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(30):
            batch = np.random.choice(len(x), 10)
            losses.append(net.loss(x[batch], t[batch]))
            accuracy = net.accuracy(x, t)
            assert 0 <= accuracy <= 1, (step, accuracy)
            grads = net.gradient(x[batch], t[batch])
            for key in ("W1", "b1", "W2", "b2"):
                net.params[key] -= 1e30 * grads[key]
    ours = [w for w in caught if "Computing on with NaN/Inf" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert re.match(r"TwoLayerNet: NaN or Inf in the output although the input x is finite: the "
                    r"weights overflowed; training diverged\? Lower the learning rate", str(ours[0].message))
    assert ours[0].category is RuntimeWarning
    assert np.isfinite(losses[0]) and not np.isfinite(losses[-1])
    with pytest.raises(ValueError, match=r"TwoLayerNet: x: expected finite values, got nan"):
        net.loss(np.full_like(x[:3], np.nan), t[:3])   # bad data is still refused after divergence


# ---------------------------------------------------------------------------------------------
# reproducibility across interpreter runs and thread counts

REPRO_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from fastbp import TwoLayerNet, fit
    from fastbp.engine import TrainingSet

    data, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    x, t = np.load(data + "/x.npy"), np.load(data + "/t.npy")

    def digest(params):
        h = hashlib.sha256()
        for key in sorted(params):
            h.update(key.encode() + params[key].tobytes())
        return h.hexdigest()

    np.random.seed(0)
    net = TwoLayerNet(784, 50, 10, dtype=np.float32)
    sparse = np.where(x > 0.5, x, 0)   # 31 % nonzero: fit's sparse layout
    assert TrainingSet(sparse, t).sparse
    fit(net, sparse, t, iters=200, batch_size=100, lr=0.1, seed=0)
    np.savez(out, **net.params)
    print("fit", digest(net.params), flush=True)

    np.random.seed(0)   # no zero left in x: fit's dense layout, whose products are BLAS's
    net = TwoLayerNet(784, 50, 10, dtype=np.float32)
    fit(net, 0.9 * x + 0.05, t, iters=200, batch_size=100, lr=0.1, seed=0)
    print("dense", digest(net.params), flush=True)

    if mode == "fit+book":   # the seeds' loop, as the book writes it
        np.random.seed(0)
        book = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
        for i in range(200):
            batch_mask = np.random.choice(x.shape[0], 100)
            grad = book.gradient(x[batch_mask], t[batch_mask])
            for key in ("W1", "b1", "W2", "b2"):
                book.params[key] -= 0.1 * grad[key]
        print("book", digest(book.params), flush=True)
""")


@pytest.fixture(scope="module")
def repro_runs(fashion_mnist, tmp_path_factory):
    """Four fresh interpreters: two with 1 thread (fit and the book loop), two with 2 threads
    (fit). -> {name: ({"fit": sha, "dense": sha, "book": sha}, fit's weights)}"""
    folder = tmp_path_factory.mktemp("repro")
    (x_train, t_train), _ = fashion_mnist
    np.save(folder / "x.npy", x_train[:3000])
    np.save(folder / "t.npy", t_train[:3000])

    def start(name, threads, mode):
        # The thread counts a user's environment sets. fit's sparse kernels (Fashion-MNIST is half
        # zeros) run on the calling thread, its dense steps on fastbp.blas_threads() BLAS threads
        # (1 unless FASTBP_BLAS_THREADS says otherwise: then the last bits may change, see the
        # README); the book loop on the process's OpenBLAS setting.
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
        return name, subprocess.Popen(
            [sys.executable, "-c", REPRO_SCRIPT, str(folder), str(folder / f"{name}.npz"), mode],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def finish(name, proc):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        hashes = dict(line.split() for line in out.splitlines())
        with np.load(folder / f"{name}.npz") as f:
            return hashes, {k: f[k] for k in f.files}

    runs = {}
    # the single-threaded pair side by side (one core each), the two-threaded ones one at a time
    pair = [start("1 thread, run 1", 1, "fit+book"), start("1 thread, run 2", 1, "fit+book")]
    for name, proc in pair:
        runs[name] = finish(name, proc)
    for name in ("2 threads, run 1", "2 threads, run 2"):
        runs[name] = finish(*start(name, 2, "fit"))
    return runs


@pytest.mark.slow   # 200 steps on Fashion-MNIST in four fresh interpreters
def test_fit_is_bit_identical_across_interpreter_runs(repro_runs):
    for threads in ("1 thread", "2 threads"):
        first, second = repro_runs[f"{threads}, run 1"][0], repro_runs[f"{threads}, run 2"][0]
        assert first["fit"] == second["fit"] and first["dense"] == second["dense"], threads


@pytest.mark.slow   # 200 steps on Fashion-MNIST in four fresh interpreters
def test_book_loop_is_bit_identical_across_interpreter_runs(repro_runs):
    assert repro_runs["1 thread, run 1"][0]["book"] == repro_runs["1 thread, run 2"][0]["book"]


@pytest.mark.slow   # 200 steps on Fashion-MNIST in four fresh interpreters
def test_fit_weights_do_not_depend_on_the_thread_count(repro_runs):
    """Bit for bit, on both layouts, whatever threads the environment offers: the sparse steps run
    on the calling thread and the dense steps' BLAS on fastbp's own setting (1 by default)."""
    (h1, w1), (h2, w2) = repro_runs["1 thread, run 1"], repro_runs["2 threads, run 1"]
    for key in w1:
        assert w1[key].dtype == np.float32
        np.testing.assert_array_equal(w2[key], w1[key], err_msg=key)
    assert h1["fit"] == h2["fit"] and h1["dense"] == h2["dense"]