"""Many trainings at once: the book's hyperparameter search (ch06/hyperparameter_optimization.py)
and sweeps like it, on the local cores or on a Dask cluster.

    result = fastbp.sweep.sweep(x_train, t_train, {"lr": "log:1e-6:1e-2",
                                                   "weight_decay": "log:1e-8:1e-4"}, trials=100)
    print(result.table()); result.to_csv("sweep.csv"); result.plot("sweep.png")

The data is shuffled and its first ``validation`` share (the book's 20 %) held out; each trial
builds a ``MultiLayerNet`` (the book's 784-[100]x6-10 by default) with its parameters and trains
it with ``fit`` for ``epochs`` epochs, measuring train and validation accuracy every epoch.

Where trials run: one trial per worker process, each worker with one BLAS thread and one fastbp
thread (two workers on two cores, not four threads fighting for them). ``executor="auto"`` takes
Dask when it is installed (``pip install 'fastbp[dask]'``): a ``LocalCluster`` of ``workers``
processes, or the cluster at ``scheduler`` (``tcp://host:8786``), so the code path tested on one
machine is the one a cluster runs; without Dask, a ``concurrent.futures`` process pool. The data
goes to each worker once (Dask: scattered with ``broadcast=True``; the pool: its initializer),
not with every trial.

Workers are spawned processes (fork is unsafe with the BLAS and Numba threads a process holds),
as Dask's are: a script that calls ``sweep`` must do so under ``if __name__ == "__main__":``, or
each worker would re-run the script on start (Python's multiprocessing rule for spawn).

Reproducible: trial i's parameters and seeds come from ``np.random.SeedSequence([seed, i])``
alone, its initial weights from ``np.random.seed`` inside the worker, its batches from fit's
``seed``, all with one BLAS thread; so its result (down to the digest of the trained weights)
does not depend on the worker, the machine's load or the order trials ran in.
"""
import contextlib
import csv
import hashlib
import io
import itertools
import math
import numbers
import os
import signal
import sys
import threading
import time
import warnings
from concurrent import futures as cf
from dataclasses import dataclass, field

import numpy as np

from . import _checks, _io
from .threads import available_cores

__all__ = ["sweep", "LogUniform", "Uniform", "Choice", "Trial", "TrialResult", "SweepResult",
           "WorkerDied", "run_trial", "parse_space"]

PARAMETERS = ("weight_decay", "lr", "batch_size")   # what a search space may vary, in the
                                                    # order random values are drawn (the book's)
BOOK_SPACE = {"weight_decay": "log:1e-8:1e-4", "lr": "log:1e-6:1e-2"}
BOOK_HIDDEN = (100, 100, 100, 100, 100, 100)


# -- the search space ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Uniform:
    """Uniform on [low, high]; in a grid, ``points`` evenly spaced values from low to high."""
    low: float
    high: float
    points: int | None = None

    def draw(self, rng):
        return float(rng.uniform(self.low, self.high))

    def grid(self):
        return [float(v) for v in np.linspace(self.low, self.high, self.points)]


@dataclass(frozen=True)
class LogUniform(Uniform):
    """10 ** Uniform(log10 low, log10 high), as the book draws lr and weight decay; in a grid,
    ``points`` values evenly spaced in log."""

    def draw(self, rng):
        return float(10 ** rng.uniform(math.log10(self.low), math.log10(self.high)))

    def grid(self):
        return [float(v) for v in np.geomspace(self.low, self.high, self.points)]


@dataclass(frozen=True)
class Choice:
    """One of ``values``, equally likely; in a grid, each of them."""
    values: tuple

    def draw(self, rng):
        return self.values[int(rng.integers(len(self.values)))]

    def grid(self):
        return list(self.values)


SPEC_HELP = ("a list of values (0.1,0.01), log:LOW:HIGH (log-uniform, as the book's lr and weight "
             "decay), lin:LOW:HIGH (uniform); in a grid, log:LOW:HIGH:POINTS or lin:LOW:HIGH:POINTS")


def _spec(name, spec):
    """A parameter's spec (text, list or distribution) as a Uniform, LogUniform or Choice."""
    if name not in PARAMETERS:
        raise ValueError(f"search space: unknown parameter {name!r}; expected some of "
                         f"{', '.join(PARAMETERS)}")
    kind = int if name == "batch_size" else float
    if isinstance(spec, (Uniform, Choice)):
        dist = spec
    elif isinstance(spec, str):
        dist = _parse_text(name, spec.strip(), kind)
    elif isinstance(spec, (list, tuple)):
        dist = Choice(tuple(spec))
    else:
        raise TypeError(f"search space: {name}: expected {SPEC_HELP}, got {_checks.describe(spec)}")
    if isinstance(dist, Choice):
        if not dist.values:
            raise ValueError(f"search space: {name}: expected at least one value, got none")
        dist = Choice(tuple(_value(name, v, kind) for v in dist.values))
    else:
        if kind is int:
            raise ValueError(f"search space: {name}: expected a list of whole numbers such as "
                             f"50,100,200, got a range {spec!r}")
        low, high = _value(name, dist.low, float), _value(name, dist.high, float)
        if not low < high:
            raise ValueError(f"search space: {name}: expected LOW < HIGH, got {low:g} and {high:g}")
        if dist.points is not None and (isinstance(dist.points, bool) or not isinstance(dist.points, int)
                                        or dist.points < 1):
            raise ValueError(f"search space: {name}: expected a positive whole number of grid "
                             f"points, got {dist.points!r}")
        dist = type(dist)(low, high, dist.points)
    return dist


def _parse_text(name, text, kind):
    head, _, rest = text.partition(":")
    if head in ("log", "lin"):
        parts = rest.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"search space: {name}={text}: expected {head}:LOW:HIGH or "
                             f"{head}:LOW:HIGH:POINTS")
        low, high = (_number(name, p, float) for p in parts[:2])
        points = _number(name, parts[2], int) if len(parts) == 3 else None
        return (LogUniform if head == "log" else Uniform)(low, high, points)
    if ":" in text:
        raise ValueError(f"search space: {name}={text}: unknown kind {head!r}; expected {SPEC_HELP}")
    return Choice(tuple(_number(name, p, kind) for p in text.split(",")))


def _number(name, text, kind):
    try:
        return kind(text) if kind is float else int(text)
    except ValueError:
        raise ValueError(f"search space: {name}: expected {'a number' if kind is float else 'a whole number'}, "
                         f"got {text!r}") from None


def _value(name, v, kind):
    """A parameter value checked: positive and finite (lr, weight decay 0 allowed, batch size)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or (kind is int and v != int(v)):
        raise TypeError(f"search space: {name}: expected {'a whole number' if kind is int else 'a number'}, "
                        f"got {_checks.describe(v)}")
    v = kind(v)
    if not (math.isfinite(v) and (v > 0 or (name == "weight_decay" and v == 0))):
        raise ValueError(f"search space: {name}: expected a finite number "
                         f"{'>= 0' if name == 'weight_decay' else '> 0'}, got {v}")
    return v


def parse_space(space):
    """{name: spec} or ["name=spec", ...] (the command line's --param) -> {name: distribution}."""
    if isinstance(space, (list, tuple)):
        pairs = {}
        for item in space:
            name, eq, spec = str(item).partition("=")
            if not eq:
                raise ValueError(f"search space: expected NAME=SPEC such as lr=log:1e-6:1e-2, got {item!r}")
            if name.strip() in pairs:
                raise ValueError(f"search space: {name.strip()} is given twice")
            pairs[name.strip()] = spec
        space = pairs
    if not isinstance(space, dict) or not space:
        raise ValueError(f"search space: expected a non-empty dict of parameter -> spec, got {space!r}")
    return {name: _spec(name, spec) for name, spec in space.items()}


# -- trials -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    """What one training needs besides the data: its index, parameters and seeds."""
    index: int
    params: dict
    init_seed: int      # np.random.seed before building the net (its initial weights)
    fit_seed: int       # fit's seed (its batches)


def make_trials(space, trials=None, grid=False, seed=0):
    """The trials of a search: random (``trials`` draws) or the grid (every combination)."""
    space = parse_space(space)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    names = [n for n in PARAMETERS if n in space]
    if grid:
        for name, dist in space.items():
            if isinstance(dist, Uniform) and dist.points is None:
                raise ValueError(f"search space: {name}: a grid needs a number of points for a "
                                 f"range ({'log' if isinstance(dist, LogUniform) else 'lin'}:LOW:HIGH:POINTS)")
        combos = list(itertools.product(*(space[n].grid() for n in names)))
        if trials is not None and trials != len(combos):
            raise ValueError(f"trials: the grid has {len(combos)} points, got trials={trials}; "
                             "leave trials out for a grid")
    else:
        trials = _checks.positive_int("trials", 100 if trials is None else trials)
        combos = [None] * trials
    out = []
    for i, combo in enumerate(combos):
        params_seq, init_seq, fit_seq = np.random.SeedSequence([seed, i]).spawn(3)
        if combo is None:
            rng = np.random.default_rng(params_seq)
            params = {n: space[n].draw(rng) for n in names}
        else:
            params = dict(zip(names, combo))
        out.append(Trial(i, params, int(init_seq.generate_state(1)[0]),
                         int(fit_seq.generate_state(1)[0])))
    return out


@dataclass(frozen=True)
class Setup:
    """What every trial shares: the net's shape and the training length."""
    output_size: int = 10
    hidden_size_list: tuple = BOOK_HIDDEN
    activation: str = "relu"
    weight_init_std: object = "relu"
    epochs: int = 50
    batch_size: int = 100
    dtype: str = "float64"
    optimizer: str = "sgd"   # a name fit takes (the book's search: SGD)


@dataclass
class TrialResult:
    trial: Trial
    val_acc: float                 # after the last step (NaN if it diverged)
    train_acc: float
    val_curve: list = field(default_factory=list)     # per evaluation: after steps 1, 1 + epoch, ...
    train_curve: list = field(default_factory=list)
    seconds: float = 0.0
    digest: str = ""               # sha256 of the trained weights: equal digests, equal nets
    note: str = ""                 # "diverged: ...", "learnt nothing: ..." or ""
    worker: str = ""

    @property
    def params(self):
        return self.trial.params


_WORKER = {}   # in a worker process: the data sent once, and whether threads are set


def _init_worker(data):
    """Process-pool initializer: keep the data, one thread each, and leave Ctrl-C to the parent
    (which stops the workers itself), so an interrupt prints one line, not a traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["data"] = data
    _single_threaded()


def _single_threaded():
    """One BLAS thread in this process (two workers on two cores must not run four threads).
    Dask's nanny sets OPENBLAS_NUM_THREADS=1 too; a worker started otherwise gets it here."""
    if _WORKER.get("single"):
        return
    from threadpoolctl import threadpool_limits

    from .threads import set_blas_threads
    threadpool_limits(1)
    set_blas_threads(1)
    _WORKER["single"] = True


def run_trial(trial, setup, data=None):
    """Train trial's net on ``data`` ((x_train, t_train, x_val, t_val); default: what this
    worker was sent) and return its TrialResult. Divergence is a result, not an error."""
    from .nets import MultiLayerNet
    from .training import TrainingDiverged, TrainingWarning, fit
    _single_threaded()
    x_train, t_train, x_val, t_val = _WORKER["data"] if data is None else data
    params = trial.params
    batch_size = int(params.get("batch_size", setup.batch_size))
    np.random.seed(trial.init_seed)
    net = MultiLayerNet(x_train.shape[1], list(setup.hidden_size_list), int(setup.output_size),
                        activation=setup.activation, weight_init_std=setup.weight_init_std,
                        weight_decay_lambda=params.get("weight_decay", 0), dtype=setup.dtype)
    per_epoch = max(x_train.shape[0] // batch_size, 1)
    start = time.perf_counter()
    note = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainingWarning)
        try:
            history = fit(net, x_train, t_train, x_val, t_val, iters=setup.epochs * per_epoch,
                          batch_size=batch_size, optimizer=setup.optimizer,
                          lr=params.get("lr", 0.01), seed=trial.fit_seed, eval_every=per_epoch)
        except TrainingDiverged as error:
            history, note = None, f"diverged: {error}"
    for w in caught:
        if issubclass(w.category, TrainingWarning) and "chance" in str(w.message):
            note = note or "learnt nothing: loss at chance level"
        elif not issubclass(w.category, TrainingWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    seconds = time.perf_counter() - start
    digest = hashlib.sha256()
    for key in sorted(net.params):
        digest.update(key.encode() + np.ascontiguousarray(net.params[key]).tobytes())
    worker = f"{os.uname().nodename}:{os.getpid()}"
    if history is None:
        return TrialResult(trial, math.nan, math.nan, seconds=seconds, digest=digest.hexdigest(),
                           note=note, worker=worker)
    return TrialResult(trial, history.rows[-1].test_acc, history.rows[-1].train_acc,
                       val_curve=history.test_acc, train_curve=history.train_acc, seconds=seconds,
                       digest=digest.hexdigest(), note=note, worker=worker)


# -- where trials run ---------------------------------------------------------------------------
class WorkerDied(RuntimeError):
    """A worker process ended while running trials (a crash or the memory limit), not a trial's
    own error: which trial was running is unknown, so the search stops."""


class _Processes:
    """A process pool of ``workers`` spawned processes, the data sent to each by its initializer."""

    name = "processes"

    def __init__(self, workers, data):
        import multiprocessing
        # spawn, not fork: the parent holds BLAS and Numba threads, which a fork does not copy
        self.pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_init_worker, initargs=(data,))
        self.where = f"{workers} local worker process{'es' if workers > 1 else ''} (process pool)"

    def submit(self, trial, setup):
        return self.pool.submit(run_trial, trial, setup)

    def result(self, future):
        try:
            return future.result()
        except cf.process.BrokenProcessPool as error:
            raise WorkerDied(f"sweep: a worker process died while running a trial ({error}); "
                             "a crash in compiled code (a signal such as SIGSEGV) or the machine "
                             "running out of memory stops a worker this way") from error

    def as_completed(self, fs):
        return cf.as_completed(fs)

    def close(self, stop_now=False):
        if stop_now:
            # a trial can run for minutes: stop the workers now instead of letting them finish
            # (ProcessPoolExecutor.terminate_workers is Python 3.14+; _processes is what it uses)
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Dask:
    """A Dask client: of the cluster at ``scheduler``, else of a LocalCluster of ``workers``
    single-threaded processes; the data scattered to every worker once (broadcast)."""

    name = "dask"

    def __init__(self, workers, data, scheduler=None):
        import distributed
        self.distributed = distributed
        self.cluster = None
        if scheduler is None:
            import dask
            # SIGINT ignored by the workers it starts: Ctrl-C is the parent's to handle. Workers
            # without Dask's sampling profiler (every 10 ms): measured 5-8 % more trials a minute.
            with _sigint_ignored(), dask.config.set({"distributed.worker.profile.enabled": False}):
                self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                                        processes=True, dashboard_address=None,
                                                        silence_logs=40)
            self.client = distributed.Client(self.cluster)
            self.where = f"{workers} Dask worker process{'es' if workers > 1 else ''} (LocalCluster)"
        else:
            self.client = distributed.Client(scheduler, timeout="20s")
            n = len(self.client.scheduler_info().get("workers", {}))
            self.where = f"the Dask cluster at {scheduler} ({n} workers now)"
        self.data = self.client.scatter(data, broadcast=True)

    def submit(self, trial, setup):
        return self.client.submit(run_trial, trial, setup, self.data, pure=False)

    def result(self, future):
        try:
            return future.result()
        except self.distributed.client.FutureCancelledError as error:
            # a worker that dies takes the scattered data with it, and Dask cancels the trials
            raise WorkerDied(f"sweep: a Dask worker died while running trials, and the data sent "
                             f"to it with it ({error}); its log says why (a signal such as SIGSEGV, "
                             "or the nanny's memory limit)") from error

    def as_completed(self, fs):
        return self.distributed.as_completed(fs)

    def close(self, stop_now=False):
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored while the body starts processes, which keep ignoring it (an ignored signal
    stays ignored across exec, and Python then installs no KeyboardInterrupt handler): a Ctrl-C
    at the terminal, sent to every process of the group, then reaches only the parent, which
    stops the workers itself instead of each printing a traceback. Only the main thread may."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def dask_available():
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def _executor(executor, workers, data, scheduler):
    if executor not in ("auto", "processes", "dask"):
        raise ValueError(f"executor: expected 'auto', 'processes' or 'dask', got {executor!r}")
    if scheduler is not None and executor == "processes":
        raise ValueError("scheduler: a scheduler address needs executor 'dask' (or 'auto')")
    if executor == "dask" or scheduler is not None or (executor == "auto" and dask_available()):
        if not dask_available():
            raise ValueError("running on Dask needs dask[distributed]: pip install 'fastbp[dask]'")
        return _Dask(workers, data, scheduler)
    return _Processes(workers, data)


# -- the search ---------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """The finished trials, best validation accuracy first (NaN last), and how the search ran."""
    results: list
    planned: int
    where: str = ""
    seconds: float = 0.0
    interrupted: bool = False

    def __post_init__(self):
        self.results.sort(key=lambda r: (-r.val_acc if r.val_acc == r.val_acc else math.inf,
                                         r.trial.index))

    @property
    def best(self):
        return self.results[0] if self.results else None

    def _names(self):
        return sorted({n for r in self.results for n in r.params})

    def rows(self):
        """One dict per trial, best first: the CSV's rows."""
        names = self._names()
        return [{"rank": rank, "trial": r.trial.index, **{n: r.params.get(n, "") for n in names},
                 "val_acc": r.val_acc, "train_acc": r.train_acc, "seconds": round(r.seconds, 3),
                 "init_seed": r.trial.init_seed, "fit_seed": r.trial.fit_seed,
                 "weights_sha256": r.digest, "worker": r.worker, "note": r.note}
                for rank, r in enumerate(self.results, start=1)]

    def table(self, top=None):
        """The results as text, best first (the first ``top`` rows)."""
        names = self._names()
        head = f"{'rank':>4} {'trial':>5} " + " ".join(f"{n:>12}" for n in names) + \
            f" {'val acc':>8} {'train acc':>9} {'seconds':>8}  note"
        lines = [head]
        for row in self.rows()[:top]:
            lines.append(f"{row['rank']:4d} {row['trial']:5d} "
                         + " ".join(f"{_fmt(row[n]):>12}" for n in names)
                         + f" {row['val_acc']:8.4f} {row['train_acc']:9.4f} {row['seconds']:8.2f}  "
                           f"{row['note'][:60]}")
        return "\n".join(lines)

    def to_csv(self, path):
        """Write the rows to ``path`` as CSV, whole or not at all."""
        text = io.StringIO()
        rows = self.rows()
        fields = list(rows[0]) if rows else ["rank", "trial", "val_acc", "train_acc"]
        writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with _io.atomic_write(path) as f:
            f.write(text.getvalue().encode())
        return path

    def plot(self, path, top=20, columns=5, fmt=None):
        """The book's figure: the best ``top`` trials' validation (solid) and training (dashed)
        accuracy per epoch, ``columns`` to a row, titled Best-1, Best-2, ...; needs matplotlib."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        shown = [r for r in self.results if r.val_curve][:top]
        rows = max(1, math.ceil(len(shown) / columns))
        fig = plt.figure(figsize=(2.4 * columns, 2.0 * rows))
        for i, r in enumerate(shown):
            ax = fig.add_subplot(rows, columns, i + 1)
            ax.set_title(f"Best-{i + 1}", fontsize=9)
            ax.set_ylim(0.0, 1.0)
            if i % columns:
                ax.set_yticks([])
            ax.set_xticks([])
            x = np.arange(len(r.val_curve))
            ax.plot(x, r.val_curve)
            ax.plot(x, r.train_curve, "--")
        fig.tight_layout()
        try:
            with _io.atomic_write(path) as f:
                fig.savefig(f, dpi=100, format=fmt or (os.path.splitext(os.fspath(path))[1][1:] or "png"))
        finally:
            plt.close(fig)
        return path


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def split_validation(x, t, validation=0.2, seed=0):
    """(x_train, t_train, x_val, t_val): the samples shuffled (by ``seed``), the first
    ``validation`` share of them held out, as the book's int(N * 0.2) after shuffle_dataset."""
    if isinstance(validation, bool) or not isinstance(validation, numbers.Real) or not 0 < validation < 1:
        raise ValueError(f"validation: expected a share between 0 and 1 (the book's 0.2), got {validation!r}")
    x, t = np.asarray(x), np.asarray(t)
    if x.ndim < 1 or t.ndim < 1 or x.shape[0] != t.shape[0]:
        raise ValueError(f"x and t: expected the same number of samples, got shapes {x.shape} and {t.shape}")
    held = int(x.shape[0] * validation)
    if held < 1 or held >= x.shape[0]:
        raise ValueError(f"validation: {validation} of {x.shape[0]} samples leaves "
                         f"{held} for validation and {x.shape[0] - held} for training; need >= 1 of each")
    order = np.random.default_rng(seed).permutation(x.shape[0])
    x, t = x[order], t[order]
    return x[held:], t[held:], x[:held], t[:held]


def sweep(x_train, t_train, space=None, *, trials=None, grid=False, hidden_size_list=BOOK_HIDDEN,
          activation="relu", weight_init_std="relu", epochs=50, batch_size=100, optimizer="sgd",
          validation=0.2, dtype="float64", seed=0, workers=None, executor="auto", scheduler=None, csv=None,
          progress=print):
    """Train one net per trial of the search ``space`` (default the book's: lr log-uniform in
    [1e-6, 1e-2], weight decay in [1e-8, 1e-4]) on the local cores or a Dask cluster; return a
    SweepResult, best validation accuracy first.

    ``trials``: how many random draws (default 100, the book's); ``grid=True`` runs every
    combination instead. Each trial: ``MultiLayerNet(D, hidden_size_list, classes, activation,
    weight_init_std, weight_decay_lambda=weight_decay)`` trained with ``fit`` for ``epochs``
    epochs of ``batch_size`` with ``optimizer`` (a name ``fit`` takes; lr 0.01 unless the space
    has lr) on the training part of the split, accuracy measured each epoch.
    ``workers``: processes (default: the cores this process may use). ``csv``: rewritten (whole)
    after every finished trial, so an interrupted or crashed search leaves what it finished.
    ``progress(line)`` is called once per finished trial (None: quiet).

    Ctrl-C stops the workers and returns the finished trials with ``interrupted=True`` (the CSV
    then holds them too). A trial that raises (not one that diverges: that is a result) stops the
    search and re-raises.
    """
    space = parse_space(BOOK_SPACE if space is None else space)
    plan = make_trials(space, trials, grid, seed)
    x_train = _checks.as_float_array("x_train", x_train, dtype)
    x_tr, t_tr, x_val, t_val = split_validation(x_train, t_train, validation, seed)
    classes = _classes(t_train)
    setup = Setup(classes, tuple(_checks.positive_int("hidden_size_list", h) for h in hidden_size_list),
                  activation, weight_init_std, _checks.positive_int("epochs", epochs),
                  _checks.positive_int("batch_size", batch_size), str(np.dtype(dtype)),
                  _optimizer_name(optimizer))
    workers = available_cores() if workers is None else _checks.positive_int("workers", workers)
    if csv is not None and (problem := _io.write_problem(csv)) is not None:
        raise ValueError(f"csv: cannot write {csv}: {problem}")

    start = time.perf_counter()
    done, pending = [], []
    runner = _executor(executor, min(workers, len(plan)), (x_tr, t_tr, x_val, t_val), scheduler)
    interrupted, failed = False, True
    try:
        if progress:
            progress(f"sweep: {len(plan)} trials on {runner.where}; {len(x_tr)} training / "
                     f"{len(x_val)} validation samples, {epochs} epochs each")
        pending = [runner.submit(trial, setup) for trial in plan]
        best = None
        for future in runner.as_completed(pending):
            result = runner.result(future)
            done.append(result)
            if best is None or result.val_acc > best.val_acc:
                best = result
            if csv is not None:
                SweepResult(list(done), len(plan)).to_csv(csv)
            if progress:
                progress(_progress_line(result, len(done), len(plan), best))
        failed = False
    except KeyboardInterrupt:
        interrupted, failed = True, False
    finally:
        for future in pending:
            future.cancel()
        runner.close(stop_now=failed or interrupted)
    result = SweepResult(done, len(plan), runner.where, time.perf_counter() - start, interrupted)
    if csv is not None:
        result.to_csv(csv)
    return result


def _optimizer_name(name):
    from .training import OPTIMIZERS
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(set(OPTIMIZERS) - {'rmsprpo'})}, "
                         f"got {name!r}")
    return name.lower()


def _classes(t):
    t = np.asarray(t)
    if t.ndim == 2:
        return t.shape[1]
    if t.ndim != 1 or t.dtype.kind not in "iu" or t.size == 0 or t.min() < 0:
        raise ValueError(f"t_train: expected class indices (N,) or one-hot rows (N, C), got "
                         f"{_checks.describe(t)}")
    return int(t.max()) + 1


def _progress_line(r, i, n, best):
    params = ", ".join(f"{k} {_fmt(v)}" for k, v in r.params.items())
    acc = "diverged" if r.val_acc != r.val_acc else f"val acc {r.val_acc:.4f}"
    return (f"trial {i:>{len(str(n))}}/{n} (#{r.trial.index}) {acc} | {params} | "
            f"{r.seconds:.1f} s | best {best.val_acc:.4f} (#{best.trial.index})")


# -- the command --------------------------------------------------------------------------------
def command(args):
    from .cli import check_plotting, load_dataset, plot_target
    plot_path, plot_format = plot_target(args.plot) if args.plot else (None, None)
    for option, path in (("--csv", args.csv), ("--plot", plot_path)):
        if path and (problem := _io.write_problem(path)) is not None:
            raise ValueError(f"{option}: cannot write {path}: {problem}")
    if plot_path:
        check_plotting(plot_path, plot_format)
    space = parse_space(args.param) if args.param else None
    name, (x_train, t_train), _ = load_dataset(args.dataset, args.data_dir)
    if args.train_size:
        if args.train_size > len(x_train):
            raise ValueError(f"--train-size: {name} has {len(x_train)} training samples, got "
                             f"{args.train_size}")
        x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
    result = sweep(x_train, t_train, space, trials=args.trials, grid=args.grid,
                   hidden_size_list=args.hidden, activation=args.activation, epochs=args.epochs,
                   batch_size=args.batch_size, optimizer=args.optimizer,
                   validation=args.validation, dtype=args.dtype,
                   seed=args.seed, workers=args.workers, executor=args.executor,
                   scheduler=args.scheduler, csv=args.csv,
                   progress=lambda line: print(line, flush=True))
    print(result.table(args.top))
    per_minute = 60 * len(result.results) / result.seconds if result.seconds else 0
    print(f"{len(result.results)} of {result.planned} trials in {result.seconds:.1f} s "
          f"({per_minute:.1f} trials/minute) on {result.where}")
    if args.csv:
        print(f"csv: {args.csv}")
    if result.interrupted:
        print(f"interrupted: {len(result.results)} of {result.planned} trials finished"
              f"{' and written to ' + args.csv if args.csv else ''}", file=sys.stderr)
        return 130
    if plot_path and result.results:
        result.plot(plot_path, top=args.top, fmt=plot_format)
        print(f"plot: {plot_path}")
    return 0


def add_command(subparsers):
    """The ``sweep`` subcommand of ``fastbp``."""
    from .cli import DATASETS, _hidden, _positive
    c = subparsers.add_parser(
        "sweep", help="many trainings at once: the book's hyperparameter search and sweeps like it",
        description="Train one MultiLayerNet per trial of a search space, on the local cores or a "
                    "Dask cluster; print the trials best first, write them to CSV and draw the "
                    "book's figure. Default: the book's ch06/hyperparameter_optimization.py (100 "
                    "random trials of lr and weight decay, 784-[100]x6-10, 50 epochs, 500 samples).")
    c.add_argument("--dataset", choices=["auto", *DATASETS], default="auto")
    c.add_argument("--data-dir", help="default: $FASTBP_DATA, else a per-user cache folder")
    c.add_argument("--train-size", type=_positive(int), default=500,
                   help="use the first N training samples (default: the book's 500)")
    c.add_argument("--all", dest="train_size", action="store_const", const=0,
                   help="use every training sample")
    c.add_argument("--validation", type=float, default=0.2, help="share held out (default 0.2)")
    c.add_argument("--param", action="append", metavar="NAME=SPEC",
                   help=f"a parameter of the search ({', '.join(PARAMETERS)}) and its values: "
                        f"{SPEC_HELP}. Default: the book's lr=log:1e-6:1e-2 "
                        "weight_decay=log:1e-8:1e-4")
    c.add_argument("--grid", action="store_true", help="every combination instead of random draws")
    c.add_argument("--trials", type=_positive(int), default=None,
                   help="random trials (default 100, the book's; a grid runs all its points)")
    c.add_argument("--hidden", type=_hidden, default=list(BOOK_HIDDEN), help="default 100 x 6")
    c.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default="relu")
    c.add_argument("--epochs", type=_positive(int), default=50)
    c.add_argument("--batch-size", type=_positive(int), default=100)
    c.add_argument("--optimizer", choices=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"],
                   default="sgd", help="default sgd, the book's")
    c.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    c.add_argument("--seed", type=int, default=0, help="seeds the split and every trial")
    c.add_argument("--workers", type=_positive(int), default=None,
                   help="worker processes (default: the cores available)")
    c.add_argument("--executor", choices=["auto", "processes", "dask"], default="auto",
                   help="auto: Dask's LocalCluster when dask is installed, else a process pool")
    c.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run on this Dask cluster instead of local workers")
    c.add_argument("--csv", metavar="FILE.csv", help="write every trial, best first (rewritten "
                                                     "after each, so Ctrl-C keeps what finished)")
    c.add_argument("--plot", metavar="FILE.png", help="the book's figure of the best trials' curves")
    c.add_argument("--top", type=_positive(int), default=20, help="trials shown and drawn (20)")
    c.set_defaults(run=command)
    return c
