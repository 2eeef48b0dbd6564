"""``fit``: the seeds' training loop (random mini-batches, SGD, accuracy every epoch), its steps run
by compiled code with no Python per step.

The steps between two evaluations run as a few calls of ``sgd_steps``, each sized from the measured
step time to last about ``CALL_SECONDS``: Python can only act on Ctrl-C between two such calls, so
an interrupt is honoured within a fraction of a second, and never halfway through an update. The
batches are drawn call by call from one generator stream, so they, and the weights, are those of
drawing them all at once; memory does not grow with ``iters``. How the steps run (the data's
layout, one core or two) is fastbp/engine.py's business and never changes the weights.
"""
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _checks, optimizers, progress
from .engine import RULES, TrainingSet, update_rule
from .kernels import step
from .threads import limited_blas

CALL_SECONDS = 0.15          # target length of one compiled call, i.e. the longest wait for Ctrl-C
_BATCH_ENTRIES = 1 << 20     # batch indices drawn at once at most (8 MB of int64), whatever iters
_EVAL_FLOPS = 1e9            # work per compiled call while measuring accuracy
_PREDICT_BLOCK = 2048        # predict_labels' own block of rows (kernels/step.py)
UNNORMALISED_ABOVE = 2       # whole-number input beyond this looks like raw pixels or counts
CHANCE_TOLERANCE = 0.02      # final loss above 98 % of ln(classes): nothing learnt
_CHANCE_STEPS = 100          # ... judged on the mean of the last this many steps, if fit ran as many
COMPILE_NOTICE_SECONDS = 0.5  # first calls slower than this are compiling (loading from the cache takes ~0.03 s)


class TrainingDiverged(FloatingPointError):
    """A loss or a weight became NaN or infinite: the learning rate is too large for this net and data."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, or a KeyboardInterrupt raised by the callback, stopped ``fit``.

    ``history`` is the History so far (``len(history.loss)`` steps, the rows evaluated). The net
    holds the weights after exactly those steps, the weights ``fit`` with the same seed and
    ``iters=len(history.loss)`` gives. Being a KeyboardInterrupt, it stops a program that does not
    catch it as Ctrl-C always did.
    """

    history = None


class TrainingWarning(UserWarning):
    """``fit`` finished, but something suggests the net did not learn (or will not learn) well."""


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
    """What ``fit`` returns: one row per evaluation and the loss of every step.

    The three times add up to fit's time in compiled code: ``compile_seconds`` is that of the
    first calls, which compile the kernels (seconds, on the first run after installing) or load
    them from Numba's cache, and take the first step; ``train_seconds`` that of every later SGD
    step, so ``iterations_per_second`` is the speed of training, whatever the cache held.
    """
    rows: list = field(default_factory=list)
    loss: np.ndarray = None         # (iters,) batch loss of each step, before its update
    train_seconds: float = 0.0      # time in the SGD steps after the first
    eval_seconds: float = 0.0       # time spent measuring accuracy
    compile_seconds: float = 0.0    # the first step and first predictions: compiling or loading kernels

    @property
    def train_acc(self):
        return [r.train_acc for r in self.rows]

    @property
    def test_acc(self):
        return [r.test_acc for r in self.rows]

    def plot(self, title=None):
        """The loss and accuracy curves as a matplotlib Figure (shown under a notebook cell;
        ``plt.show()`` or ``.savefig(path)`` in a script). Needs matplotlib: fastbp[plot]."""
        from .plotting import plot_history
        return plot_history(self, title)

    @property
    def iterations_per_second(self):
        """SGD steps per second, the first step (timed with the compiling) left out."""
        timed = len(self.loss) - 1
        return timed / self.train_seconds if self.train_seconds > 0 else float("inf")


def _data(name, x, t, n_in, n_out, dtype):
    """x (N, n_in) and its labels, checked -> (x as given or converted, fit's private TrainingSet
    of them). fit reads only the TrainingSet, so whatever a callback does to the caller's arrays,
    the compiled steps read what was checked."""
    x = _checks.as_float_array(name, x, dtype)
    _checks.check_nonempty(name, x)
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != n_in:
        raise ValueError(f"{name}: the net takes {n_in} inputs per sample, got {x.shape[1]} "
                         f"(x has shape {x.shape})")
    _checks.check_finite(name, x)
    kind, labels = _checks.as_labels("t" + name[1:], t, x.shape[0], n_out)
    if kind == "onehot":
        labels = np.argmax(labels, axis=1)
    return x, TrainingSet(x, labels)


def _accuracy(data, weights, biases, activation):
    """Share of the rows of a TrainingSet the net classifies right, a slice of rows per compiled
    call (so Ctrl-C waits for one slice). Slices are whole numbers of predict_labels' blocks: the
    result is one call's."""
    flops_per_row = 2 * sum(W.size for W in weights)
    rows = _PREDICT_BLOCK * max(1, int(_EVAL_FLOPS / (_PREDICT_BLOCK * flops_per_row)))
    hits = 0
    for start in range(0, data.rows, rows):
        hits += data.hits(start, min(start + rows, data.rows), weights, biases, activation)
    return hits / data.rows


def _unnormalised_warning(x):
    """The warning for input of whole numbers beyond UNNORMALISED_ABOVE (pixels 0..255), or None.
    Only whole numbers: standardised data can exceed 2 in places and is fine."""
    top = max(float(x.max()), -float(x.min()))
    sample = x[:1000]
    if top <= UNNORMALISED_ABOVE or not np.array_equal(sample, np.round(sample)):
        return None
    return (f"fit: x_train holds whole numbers up to {top:g}, like raw pixel values; SGD on "
            f"unnormalised input tends to stall or diverge: scale it to [0, 1] (x / {top:g}; "
            f"load_mnist(normalize=True) divides pixels by 255) or standardise it")


def _chance_warning(losses, classes, lr):
    """The warning for a final loss at (or above) ln(classes), what guessing uniformly costs, or
    None. A net whose ReLUs all died, after a huge step or on unnormalised input, ends there."""
    if len(losses) < _CHANCE_STEPS or classes < 2:
        return None
    final, chance = float(losses[-_CHANCE_STEPS:].mean()), math.log(classes)
    if final < (1 - CHANCE_TOLERANCE) * chance:
        return None
    return (f"fit: the loss ended at {final:.4f}, no better than chance for {classes} classes "
            f"(ln {classes} = {chance:.4f}): the net learnt nothing. Try a smaller learning rate "
            f"(lr={lr:g} now), normalised input, or a smaller weight_init_std")


def _divergence(data, batches, weights, biases, activation, update, lr, first, tracked, snapshot):
    """TrainingDiverged for the first step of a diverged call (steps first, first + 1, ...) whose
    loss is not finite, or after which a weight is not: the call replayed step by step from
    ``snapshot``, the parameters and optimizer state (``tracked``) as they were before it (a
    step's result does not depend on how many steps a call takes)."""
    params = [*weights, *biases]
    names = [f"W{i}" for i in range(1, len(weights) + 1)] + [f"b{i}" for i in range(1, len(biases) + 1)]
    for a, before in zip(tracked, snapshot):
        np.copyto(a, before)
    loss = np.zeros(1)
    rule, hyper, w_state, b_state = update
    for s in range(len(batches)):
        hyper_s = hyper.copy()
        hyper_s[step.ITERATION] += s   # Adam's step count, as in the call
        data.sgd_steps(batches[s:s + 1], weights, biases, activation, (rule, hyper_s, w_state, b_state),
                       loss)
        what = None if np.isfinite(loss[0]) else f"the loss became {loss[0]}"
        for name, p in zip(names, params):
            if what is None and not np.isfinite(p).all():
                where = tuple(int(i) for i in np.argwhere(~np.isfinite(p))[0])
                what = f"{name} became {p[where]} at index {where}"
        if what is not None:
            return TrainingDiverged(f"fit: {what} at iteration {first + s} (lr={lr}); training "
                                    "diverged: lower the learning rate")
    return TrainingDiverged(f"fit: a loss or weight became NaN or infinite during iterations {first} "
                            f"to {first + len(batches) - 1} (lr={lr}); training diverged: lower the "
                            "learning rate")


# The book's optimizer names (its Trainer's, 'rmsprpo' its spelling) -> fastbp.optimizers classes.
OPTIMIZERS = {"sgd": optimizers.SGD, "momentum": optimizers.Momentum, "nesterov": optimizers.Nesterov,
              "adagrad": optimizers.AdaGrad, "rmsprop": optimizers.RMSprop,
              "rmsprpo": optimizers.RMSprop, "adam": optimizers.Adam}


def _optimizer(optimizer, lr):
    """The optimizer fit trains with: an instance of fastbp.optimizers (its lr), or a name of one
    made with lr (default 0.1, the book's chapter 5 rate), or None for plain SGD."""
    if optimizer is None or isinstance(optimizer, str):
        name = "sgd" if optimizer is None else optimizer.lower()
        if name not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or an optimizer of "
                             f"fastbp.optimizers, got {optimizer!r}")
        return OPTIMIZERS[name](lr=0.1 if lr is None else _checks.positive_float("lr", lr))
    if type(optimizer) not in RULES:
        raise TypeError(f"optimizer: expected a name or one of fastbp's {', '.join(c.__name__ for c in RULES)}, "
                        f"got {type(optimizer).__name__}")
    if lr is not None:
        raise ValueError(f"lr: give the learning rate to the optimizer ({type(optimizer).__name__}"
                         f"(lr=...)), not to fit as well; got lr={lr!r}")
    return optimizer


def fit(net, x_train, t_train, x_test=None, t_test=None, *, iters=10000, batch_size=100, lr=None,
        optimizer=None, seed=0, eval_every=None, callback=None, verbose=False):
    """Train ``net`` (TwoLayerNet or MultiLayerNet) in place with mini-batch SGD; return a History.

    Each step draws ``batch_size`` rows with replacement (``np.random.choice(train_size,
    batch_size)`` in the book's loop), takes the gradient and updates the weights: ``W -= lr * dW``
    by default, or by ``optimizer``, one of the book's chapter 6 rules, by name ("sgd",
    "momentum", "nesterov", "adagrad", "rmsprop", "adam"; made with ``lr``, default 0.1, and the
    book's other defaults) or as an instance of fastbp.optimizers (its own lr; its state, e.g.
    Adam's m, v and iter, is used and left as the training ends, so a later fit goes on from it).
    A MultiLayerNet's ``weight_decay_lambda`` adds lambda * W to every dW, as the book's
    ``gradient``; the losses recorded are the cross-entropy, without its 0.5 lambda sum W^2. After step
    ``i`` (0-based) with ``i % eval_every == 0``, and after the last step, train and test accuracy
    are measured and a row is added (``callback(row)`` is called with it, e.g. to print).
    ``eval_every`` defaults to one epoch, ``max(train_size // batch_size, 1)`` steps, so the rows
    match the seeds' table. The same ``seed`` gives the same batches, hence (with the same thread
    settings) the same weights. Labels may be class indices or one-hot. ``fit`` trains on private
    copies of the data, checked once: changing the arrays passed in (from a callback, say) does not
    change what it reads.

    ``verbose=True`` prints the table ``fastbp train`` prints, a row per evaluation as it comes
    (on a terminal also the iteration reached between rows), then a closing line with the times;
    and "compiling kernels (once: ...)" while the first calls compile. The default is
    quiet, as a library function called in a loop (a sweep, a test) should be.

    BLAS runs with ``fastbp.threads.blas_threads()`` threads (default 1; see fastbp/threads.py).
    Raises TrainingDiverged when a loss or a weight becomes NaN or infinite, naming the step and
    the weight. Ctrl-C, or a KeyboardInterrupt from ``callback``, raises TrainingInterrupted (a
    KeyboardInterrupt) within about CALL_SECONDS plus one slice of evaluation; the net then holds
    the weights after the last completed step, never half an update, and the exception carries
    the History so far. Warns (TrainingWarning) when x_train looks unnormalised and when the
    final loss sits at chance level.
    """
    if not callable(getattr(net, "stack", None)):
        raise TypeError(f"net: expected a TwoLayerNet or MultiLayerNet, got {type(net).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a function of one EpochRow, got {type(callback).__name__}")
    if not isinstance(verbose, (bool, np.bool_)):
        raise TypeError(f"verbose: expected True or False, got {type(verbose).__name__} {verbose!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed: expected None or a non-negative integer, got {seed!r}")
    weights, biases, activation = net.stack()
    for i, (W, b) in enumerate(zip(weights, biases), start=1):
        hint = " (a previous run diverged? re-initialise the net)"
        _checks.check_finite(f"fit: W{i}", W, hint)
        _checks.check_finite(f"fit: b{i}", b, hint)
    dtype = weights[0].dtype
    n_in, n_out = weights[0].shape[0], weights[-1].shape[1]
    x, train = _data("x_train", x_train, t_train, n_in, n_out, dtype)
    if (x_test is None) != (t_test is None):
        raise ValueError("x_test and t_test: give both or neither")
    test = None if x_test is None else _data("x_test", x_test, t_test, n_in, n_out, dtype)[1]
    iters = _checks.positive_int("iters", iters)
    batch_size = _checks.positive_int("batch_size", batch_size)
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size: expected at most the number of training samples "
                         f"({x.shape[0]}), got {batch_size}")
    optimizer = _optimizer(optimizer, lr)
    lr = optimizer.lr
    decay = float(getattr(net, "weight_decay_lambda", 0) or 0)
    per_epoch = max(x.shape[0] // batch_size, 1)
    eval_every = per_epoch if eval_every is None else _checks.positive_int("eval_every", eval_every)
    if (message := _unnormalised_warning(x)) is not None:
        warnings.warn(message, TrainingWarning, stacklevel=2)
    rng = np.random.default_rng(seed)

    params = [*weights, *biases]
    history = History()
    losses = np.zeros(min(iters, 1 << 16))    # grows as steps are done, never to more than iters
    most = max(1, _BATCH_ENTRIES // batch_size)
    steps, timed = 1, False   # the first call also compiles: one step, and its time says nothing
    done = 0
    table = progress.Table() if verbose else None
    with limited_blas(), progress.after(COMPILE_NOTICE_SECONDS, table and table.compiling) as cold:
        start = time.perf_counter()
        try:
            # the first predictions compile the evaluation's kernels (or load them): timed apart
            for data in (train,) if test is None else (train, test):
                data.hits(0, 1, weights, biases, activation)
            history.compile_seconds = time.perf_counter() - start
            while done < iters:
                # steps up to and including the next evaluation point i (i % eval_every == 0, or the last)
                stop = min((done // eval_every + (done % eval_every != 0)) * eval_every + 1, iters)
                first = done
                while done < stop:
                    k = min(steps, stop - done)
                    if done + k > len(losses):
                        grown = np.zeros(min(iters, max(2 * len(losses), done + k)))
                        grown[:done] = losses[:done]
                        losses = grown
                    batches = rng.integers(0, train.rows, size=(k, batch_size))
                    update = update_rule(optimizer, weights, biases, decay)
                    tracked = params + [a for a in (*update[2], *update[3]) if a.size]  # + state
                    snapshot = [a.copy() for a in tracked]
                    adam_steps = getattr(optimizer, "iter", None)
                    before = done
                    tick = time.perf_counter()
                    try:
                        train.sgd_steps(batches, weights, biases, activation, update,
                                        losses[done:done + k])
                        seconds = time.perf_counter() - tick
                        if not (np.isfinite(losses[done:done + k]).all()
                                and all(np.isfinite(p).all() for p in params)):
                            raise _divergence(train, batches, weights, biases, activation, update,
                                              lr, done, tracked, snapshot)
                        if adam_steps is not None:
                            optimizer.iter = adam_steps + k
                        done = before + k   # the last statement: from here the steps count
                    except KeyboardInterrupt:
                        if done == before:   # (steps of a call interrupted half-way, or not counted)
                            for a, kept in zip(tracked, snapshot):
                                np.copyto(a, kept)
                            if adam_steps is not None:
                                optimizer.iter = adam_steps
                        raise
                    if timed:
                        history.train_seconds += seconds
                    else:
                        history.compile_seconds += seconds
                        cold.cancel()
                    # the rate just measured sets the next call's length; a call cut short by an
                    # evaluation point may only shrink it, and growth is at most 4x per call
                    if timed and (k == steps or seconds > CALL_SECONDS):
                        steps = max(1, min(4 * steps, int(CALL_SECONDS * k / max(seconds, 1e-9)), most))
                    timed = True
                    if table is not None and done < stop:
                        table.step(done, iters)
                tock = time.perf_counter()
                row = EpochRow(
                    epoch=stop / per_epoch, iteration=stop,
                    train_acc=_accuracy(train, weights, biases, activation),
                    test_acc=None if test is None else _accuracy(test, weights, biases, activation),
                    loss=float(losses[first:stop].mean()), elapsed=time.perf_counter() - start)
                history.eval_seconds += time.perf_counter() - tock
                history.rows.append(row)
                if table is not None:
                    table.row(row)
                if callback is not None:
                    callback(row)
        except KeyboardInterrupt as interrupt:
            history.loss = losses[:done]
            stopped = TrainingInterrupted(f"fit interrupted after {done} of {iters} iterations")
            stopped.history = history
            raise stopped.with_traceback(interrupt.__traceback__) from None
    history.loss = losses[:done]
    if table is not None:
        table.done(history, time.perf_counter() - start)
    if (message := _chance_warning(history.loss, n_out, lr)) is not None:
        warnings.warn(message, TrainingWarning, stacklevel=2)
    return history
