"""``fit``: the seeds' training loop (random mini-batches, SGD, accuracy every epoch), with the
steps between two evaluations run as one call into compiled code, so there is no Python per step.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from . import _checks
from .backend import ops
from .threads import limited_blas


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite: the learning rate is too large for this net and data."""


@dataclass
class EpochRow:
    """One evaluation: after ``iteration`` steps (``epoch`` = iteration / iterations per epoch)."""
    epoch: float
    iteration: int
    train_acc: float
    test_acc: float | None
    loss: float          # mean batch loss over the steps since the previous row
    elapsed: float       # seconds since fit started, evaluation included


@dataclass
class History:
    """What ``fit`` returns: one row per evaluation and the loss of every step."""
    rows: list = field(default_factory=list)
    loss: np.ndarray = None         # (iters,) batch loss of each step, before its update
    train_seconds: float = 0.0      # time in the SGD steps alone
    eval_seconds: float = 0.0       # time spent measuring accuracy

    @property
    def train_acc(self):
        return [r.train_acc for r in self.rows]

    @property
    def test_acc(self):
        return [r.test_acc for r in self.rows]

    @property
    def iterations_per_second(self):
        return len(self.loss) / self.train_seconds if self.train_seconds > 0 else float("inf")


def _data(name, x, t, n_in, n_out, dtype):
    """Private, checked copies of x (N, n_in) and its labels (N,) int64: fit reads only these, so
    whatever a callback does to the caller's arrays, the compiled steps read what was checked."""
    x = _checks.as_float_array(name, x, dtype, copy=True)
    _checks.check_nonempty(name, x)
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != n_in:
        raise ValueError(f"{name}: the net takes {n_in} inputs per sample, got {x.shape[1]} "
                         f"(x has shape {x.shape})")
    _checks.check_finite(name, x)
    kind, labels = _checks.as_labels("t" + name[1:], t, x.shape[0], n_out)
    if kind == "onehot":
        labels = np.ascontiguousarray(np.argmax(labels, axis=1), dtype=np.int64)
    return x, labels


def _accuracy(x, t, weights, biases, activation):
    return float(np.mean(ops().predict_labels(x, weights, biases, activation) == t))


def fit(net, x_train, t_train, x_test=None, t_test=None, *, iters=10000, batch_size=100, lr=0.1,
        seed=0, eval_every=None, callback=None):
    """Train ``net`` (TwoLayerNet or MultiLayerNet) in place with mini-batch SGD; return a History.

    Each step draws ``batch_size`` rows with replacement (``np.random.choice(train_size,
    batch_size)`` in the seeds), takes the gradient and applies ``W -= lr * dW``. After step
    ``i`` (0-based) with ``i % eval_every == 0``, and after the last step, train and test accuracy
    are measured and a row is added (``callback(row)`` is called with it, e.g. to print).
    ``eval_every`` defaults to one epoch, ``max(train_size // batch_size, 1)`` steps, so the rows
    match the seeds' table. The same ``seed`` gives the same batches, hence (with the same thread
    settings) the same weights. Labels may be class indices or one-hot. ``fit`` trains on private
    copies of the data, checked once: changing the arrays passed in (from a callback, say) does not
    change what it reads.

    BLAS runs with ``fastbp.threads.blas_threads()`` threads (default 1; see fastbp/threads.py).
    Raises TrainingDiverged when the loss becomes NaN or infinite.
    """
    if not callable(getattr(net, "stack", None)):
        raise TypeError(f"net: expected a TwoLayerNet or MultiLayerNet, got {type(net).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a function of one EpochRow, got {type(callback).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed: expected None or a non-negative integer, got {seed!r}")
    weights, biases, activation = net.stack()
    for i, (W, b) in enumerate(zip(weights, biases), start=1):
        hint = " (a previous run diverged? re-initialise the net)"
        _checks.check_finite(f"fit: W{i}", W, hint)
        _checks.check_finite(f"fit: b{i}", b, hint)
    dtype = weights[0].dtype
    n_in, n_out = weights[0].shape[0], weights[-1].shape[1]
    x, t = _data("x_train", x_train, t_train, n_in, n_out, dtype)
    if (x_test is None) != (t_test is None):
        raise ValueError("x_test and t_test: give both or neither")
    if x_test is not None:
        x_test, t_test = _data("x_test", x_test, t_test, n_in, n_out, dtype)
    iters = _checks.positive_int("iters", iters)
    batch_size = _checks.positive_int("batch_size", batch_size)
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size: expected at most the number of training samples "
                         f"({x.shape[0]}), got {batch_size}")
    lr = _checks.positive_float("lr", lr)
    per_epoch = max(x.shape[0] // batch_size, 1)
    eval_every = per_epoch if eval_every is None else _checks.positive_int("eval_every", eval_every)
    rng = np.random.default_rng(seed)

    kernels = ops()
    history = History(loss=np.zeros(iters))
    with limited_blas():
        start = time.perf_counter()
        done = 0
        while done < iters:
            # steps up to and including the next evaluation point i (i % eval_every == 0, or the last)
            stop = min((done // eval_every + (done % eval_every != 0)) * eval_every + 1, iters)
            batches = rng.integers(0, x.shape[0], size=(stop - done, batch_size))
            tick = time.perf_counter()
            kernels.sgd_steps(x, t, batches, weights, biases, activation, lr, history.loss[done:stop])
            tock = time.perf_counter()
            history.train_seconds += tock - tick
            losses = history.loss[done:stop]
            if not np.isfinite(losses).all():
                bad = done + int(np.argmin(np.isfinite(losses)))
                raise TrainingDiverged(f"fit: the loss became {history.loss[bad]} at iteration {bad} "
                                       f"(lr={lr}); training diverged: lower the learning rate")
            row = EpochRow(
                epoch=stop / per_epoch, iteration=stop,
                train_acc=_accuracy(x, t, weights, biases, activation),
                test_acc=None if x_test is None else _accuracy(x_test, t_test, weights, biases, activation),
                loss=float(losses.mean()), elapsed=time.perf_counter() - start)
            history.eval_seconds += time.perf_counter() - tock
            history.rows.append(row)
            if callback is not None:
                callback(row)
            done = stop
    return history
