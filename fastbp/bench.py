"""``fastbp bench``: the speed-up on this machine, measured in one run, as ratios.

For each net (784-50-10 and 784-256-128-10, ReLU, batch 100, SGD lr 0.1) and each input (MNIST-like,
dense, and the real Fashion-MNIST when it is found), two tables:

- compiled training loops (``--dtype``, float32 by default): the NumPy reference (fit on the
  reference backend, layer by layer as the book does it), fastbp's ``fit``, and PyTorch (eager) and
  JAX (the whole loop jitted in ``lax.scan``) when installed;
- the book's own loop (``gradient``, ``params[key] -= lr * grad[key]``, ``loss``, in Python; float64
  and one-hot labels as the book): a faithful NumPy implementation of the book's net
  (``BookNet``: the book's choices, written here) against fastbp's TwoLayerNet / MultiLayerNet.

``--load`` repeats them while another process keeps one core busy (``python -c "while True:
pass"``), where thread pools that wait for a parked thread collapse, then times fastbp's own paths
quiet and loaded in turns (loaded / quiet from one stretch of time). Every path trains on the
same data and batches, and the paths of a table take turns (several rounds each, the median);
absolute times drift on shared machines, the ratios within a run are the result. Progress goes
to stderr.
"""
import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from . import datasets, halves
from .backend import use_backend
from .engine import SPARSE_MAX_DENSITY, TrainingSet
from .kernels import step
from .nets import MultiLayerNet, TwoLayerNet
from .progress import is_terminal
from .threads import limited_blas
from .training import TrainingWarning, fit

NETS = ([784, 50, 10], [784, 256, 128, 10])
ROWS = 60000        # MNIST's training set
LR = 0.1


# --- data ----------------------------------------------------------------------------------------

def mnist_like(n=ROWS, seed=0, dtype=np.float32):
    """(x (n, 784) in [0, 1], t (n,) int64): real handwriting with MNIST's layout and sparsity.

    Each image is one of the 1,797 handwritten digits shipped with fastbp (8x8, UCI), stretched
    to 20x20 and drawn into a 28x28 frame with a random shift of up to 3 pixels, as MNIST centres
    its digits in a 20x20 box; faint pixels are zero, leaving 81 % of the pixels exactly zero, in
    the frame's borders and between the strokes, as in MNIST (where uniformly random zeros would
    spread the nonzeros over every pixel). t is the digit."""
    (x_digits, t_digits), (x_more, t_more) = datasets.load_digits(normalize=True, flatten=False,
                                                                  test_size=297)
    digits = np.concatenate([x_digits, x_more])[:, 0].astype(np.float32)   # (1797, 8, 8)
    labels = np.concatenate([t_digits, t_more]).astype(np.int64)
    grid = np.linspace(0, 7, 20)                                              # bilinear 8 -> 20
    i0 = np.minimum(grid.astype(int), 6)
    frac = (grid - i0).astype(np.float32)
    rows = digits[:, i0] * (1 - frac)[None, :, None] + digits[:, i0 + 1] * frac[None, :, None]
    big = rows[:, :, i0] * (1 - frac) + rows[:, :, i0 + 1] * frac             # (1797, 20, 20)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(big), n)
    shift = rng.integers(-3, 4, (n, 2))
    x = np.zeros((n, 28, 28), np.float32)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            which = np.flatnonzero((shift[:, 0] == dy) & (shift[:, 1] == dx))
            x[which, 4 + dy:24 + dy, 4 + dx:24 + dx] = big[pick[which]]
    x = x.reshape(n, 784)
    x[x < np.quantile(x[:2000], 0.81)] = 0
    return x.astype(dtype), labels[pick]


def dense_like(n=ROWS, seed=0, dtype=np.float32):
    """(x (n, 784) uniform in (0, 1], no zeros, t (n,) int64 learnable labels): dense input."""
    rng = np.random.default_rng(seed)
    x = 1 - rng.random((n, 784), dtype=np.float32)
    t = np.argmax(x @ rng.standard_normal((784, 10)).astype(np.float32), axis=1)
    return x.astype(dtype), t


def inputs(dtype):
    """{name: (x, t)}: MNIST-like, dense, and Fashion-MNIST when it is on disk (never downloaded)."""
    found = {"MNIST-like": mnist_like(dtype=dtype), "dense": dense_like(dtype=dtype)}
    try:
        (x, t), _ = datasets.load_fashion_mnist(download=False)
        found["Fashion-MNIST"] = (x.astype(dtype), t.astype(np.int64))
    except datasets.DatasetNotFoundError:
        pass
    return found


# --- the book's net, written here with the book's choices ------------------------------------------

class BookNet:
    """What a user of the book's code leaves behind: its ch05 TwoLayerNet (or ch06 MultiLayerNet
    without extras) as the book computes it, in NumPy, float64: every Affine keeps its input and
    computes dx (the first layer's too), ReLU copies its input and zeroes it by a mask, softmax
    subtracts the row max, cross-entropy adds 1e-7 inside the log."""

    def __init__(self, sizes, weight_init_std=0.01):
        self.params = {}
        for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
            self.params[f"W{i}"] = weight_init_std * np.random.randn(a, b)
            self.params[f"b{i}"] = np.zeros(b)
        self.layers = len(sizes) - 1

    def _scores(self, x):
        self.inputs, self.masks = [], []
        for i in range(1, self.layers + 1):
            self.inputs.append(x)
            x = np.dot(x, self.params[f"W{i}"]) + self.params[f"b{i}"]
            if i < self.layers:
                mask = x <= 0
                x = x.copy()
                x[mask] = 0
                self.masks.append(mask)
        return x

    def loss(self, x, t):
        scores = self._scores(x)
        shifted = scores - np.max(scores, axis=-1, keepdims=True)
        self.y = np.exp(shifted) / np.sum(np.exp(shifted), axis=-1, keepdims=True)
        self.t = t
        labels = t.argmax(axis=1) if t.size == self.y.size else t
        return -np.sum(np.log(self.y[np.arange(len(self.y)), labels] + 1e-7)) / len(self.y)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = (self.y - self.t) / len(self.y)
        grads = {}
        for i in range(self.layers, 0, -1):
            dx = np.dot(dout, self.params[f"W{i}"].T)
            grads[f"W{i}"] = np.dot(self.inputs[i - 1].T, dout)
            grads[f"b{i}"] = np.sum(dout, axis=0)
            if i > 1:
                dx[self.masks[i - 2]] = 0
            dout = dx
        return grads


def _fastbp_net(sizes, dtype, weight_init_std=0.01):
    if len(sizes) == 3:
        return TwoLayerNet(*sizes, weight_init_std=weight_init_std, dtype=dtype)
    return MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], weight_init_std=weight_init_std,
                         dtype=dtype)


# --- the timed paths: each returns seconds per step ---------------------------------------------

def time_fit(backend, sizes, x, t, iters, dtype, optimizer=None, lr=LR):
    np.random.seed(0)
    net = _fastbp_net(sizes, dtype)
    with use_backend(backend), warnings.catch_warnings():
        # (a 2-step warm-up, or Adam's small steps, can end at chance level: not news here)
        warnings.simplefilter("ignore", TrainingWarning)
        fit(net, x[:200], t[:200], iters=2, optimizer=optimizer, lr=lr)   # compiles
        history = fit(net, x, t, iters=iters, optimizer=optimizer, lr=lr, seed=1, eval_every=iters)
    return 1 / history.iterations_per_second   # the steps after the first (which compiles)


def time_book_loop(net, x, t, iters):
    """The book's ch05 loop: a random batch, gradient, in-place update, loss; float64 one-hot.
    Its first steps are not timed: two, then those of WARM_SECONDS."""
    onehot = np.eye(10)[t]
    rng = np.random.default_rng(1)
    keys = list(net.params)

    def steps(n):
        for _ in range(n):
            mask = rng.integers(0, len(x), 100)
            x_batch, t_batch = x[mask], onehot[mask]
            grad = net.gradient(x_batch, t_batch)
            for key in keys:
                net.params[key] -= LR * grad[key]
            net.loss(x_batch, t_batch)

    steps(2)   # (compiles or loads fastbp's kernels: both calls the loop makes)
    warm_until = time.perf_counter() + WARM_SECONDS
    while time.perf_counter() < warm_until:
        steps(1)
    start = time.perf_counter()
    steps(iters)
    return (time.perf_counter() - start) / iters


def time_torch(sizes, x, t, iters, dtype):
    import torch
    torch.manual_seed(0)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=tdtype))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    xs, ts = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = torch.from_numpy(np.random.default_rng(1).integers(0, len(x), (iters + 5, 100)))

    def one_step(rows):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xs[rows]), ts[rows])
        loss.backward()
        opt.step()

    for rows in batches[:5]:
        one_step(rows)
    start = time.perf_counter()
    for rows in batches[5:]:
        one_step(rows)
    return (time.perf_counter() - start) / iters


def time_jax(sizes, x, t, iters, dtype):
    """JAX as its users write the fast version: the whole loop one jitted ``lax.scan`` over steps,
    each gathering its batch from the dataset on the device. A warm-up call with the same shapes
    compiles it, so the timed call does not."""
    import jax
    import jax.numpy as jnp

    # x64 is a global JAX switch: turn it on for float64 only, and only inside this function.
    precision = jax.enable_x64(True) if dtype == np.float64 else contextlib.nullcontext()
    batches = np.random.default_rng(1).integers(0, len(x), (2 * iters, 100))
    rng = np.random.default_rng(0)
    init = [(0.01 * rng.standard_normal((a, b))).astype(dtype) for a, b in zip(sizes, sizes[1:])]

    def loss(params, x_batch, t_batch):
        h = x_batch
        for W, b in params[:-1]:
            h = jax.nn.relu(h @ W + b)
        W, b = params[-1]
        log_p = jax.nn.log_softmax(h @ W + b)
        return -jnp.mean(jnp.take_along_axis(log_p, t_batch[:, None], axis=1))

    @jax.jit
    def train(params, xs, ts, batches):  # the data as arguments: closed over, it would be a constant
        def one_step(params, rows):
            value, grads = jax.value_and_grad(loss)(params, xs[rows], ts[rows])
            return jax.tree.map(lambda p, g: p - LR * g, params, grads), value
        return jax.lax.scan(one_step, params, batches)

    with precision:
        params = [(jnp.asarray(W), jnp.zeros(W.shape[1], dtype)) for W in init]
        xs, ts = jnp.asarray(x), jnp.asarray(t, jnp.int32)
        jax.block_until_ready(train(params, xs, ts, jnp.asarray(batches[:iters])))  # compiles
        timed = jnp.asarray(batches[iters:])
        start = time.perf_counter()
        jax.block_until_ready(train(params, xs, ts, timed))
        return (time.perf_counter() - start) / iters


def _version(distribution):
    """The installed version of an optional peer, without importing it (that starts thread pools)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def compiled_paths(dtype):
    """[(label, timer(sizes, x, t, iters))] of the compiled training loops, the reference first."""
    paths = [("NumPy reference (fit on the reference backend)",
              lambda s, x, t, n: time_fit("reference", s, x, t, n, dtype)),
             ("fastbp fit", lambda s, x, t, n: time_fit("kernels", s, x, t, n, dtype)),
             ("fastbp fit, Adam lr 0.001 (the book's chapter 6 rule)",
              lambda s, x, t, n: time_fit("kernels", s, x, t, n, dtype, "adam", 0.001))]
    # the peers last, so their thread pools (which keep spinning after use) slow nothing of fastbp's
    if (version := _version("torch")):
        paths.append((f"PyTorch {version} CPU eager", lambda s, x, t, n: time_torch(s, x, t, n, dtype)))
    if (version := _version("jax")):
        paths.append((f"JAX {version}, whole loop jitted (lax.scan)",
                      lambda s, x, t, n: time_jax(s, x, t, n, dtype)))
    return paths


BOOK_PATHS = [
    ("book-faithful NumPy net (the book's own computations)",
     lambda s, x, t, n: (np.random.seed(0), time_book_loop(BookNet(s), x, t, n))[1]),
    ("fastbp net (TwoLayerNet / MultiLayerNet), same loop",
     lambda s, x, t, n: (np.random.seed(0), time_book_loop(_fastbp_net(s, np.float64), x, t, n))[1]),
]


# --- profile: where a step of fit goes -----------------------------------------------------------

STAGES = [  # (stage of kernels.step, what it adds to a step)
    (step.FORWARD, "forward: each layer on its input's nonzeros (narrow: densely)"),
    (step.LOSS, "softmax cross-entropy and its gradient"),
    (step.BACKWARD, "backward: d @ W.T below each layer, activation gradients"),
    (step.WEIGHTS, "weight updates: W -= lr * x.T @ d, row by row"),
    (step.BIASES, "bias updates: b -= lr * sum(d)"),
]


def profile_step(sizes, x, t, iters, dtype, repeats=7):
    """Where a step of ``fit`` goes on the sparse layout: [(stage label, seconds per step)].

    A profiler cannot see inside compiled code, so the step is run with its first k stages only,
    for every k, interleaved and repeated (median); a stage's time is what adding it costs."""
    np.random.seed(0)
    weights, biases, activation = _fastbp_net(sizes, dtype).stack()
    data = TrainingSet(x, t)   # (fit's own layout: the nonzero lists, the first layer's cut)
    if not data.sparse:
        raise ValueError(f"profile_step: x must be at most {SPARSE_MAX_DENSITY:.0%} nonzero (fit's "
                         f"sparse layout), got {data.density:.0%}")
    batches = np.random.default_rng(1).integers(0, len(x), (iters, 100))
    losses = np.zeros(iters)
    seconds = {stage: [] for stage, _ in STAGES}

    update = step.plain_sgd(LR, weights, biases)

    def run(stage, rows):
        halves.team(step.team_steps_csr, step.team_arguments_csr(
            data.indptr, data.columns, data.values, data.t, rows, weights, biases, activation,
            update, losses, data.first_split, stage, data.first_cuts))

    run(step.BIASES, batches[:2])
    for _ in range(repeats):
        for stage in seconds:
            start = time.perf_counter()
            run(stage, batches)
            seconds[stage].append((time.perf_counter() - start) / iters)
    cumulative = [0.0] + [float(np.median(seconds[stage])) for stage, _ in STAGES]
    return [(label, after - before)
            for (_, label), before, after in zip(STAGES, cumulative, cumulative[1:])]


def print_profile(name, stages):
    total = sum(seconds for _, seconds in stages)
    print(f"\nwhere a step of fastbp fit goes, {name}, MNIST-like "
          f"(each stage: what adding it to the step costs)")
    print(f"  {'stage':<64} {'us/step':>9} {'share':>6}")
    for label, seconds in stages:
        print(f"  {label:<64} {1e6 * seconds:9.1f} {seconds / total:6.0%}")
    print(f"  {'the whole step':<64} {1e6 * total:9.1f}")


# --- start-up ------------------------------------------------------------------------------------

def startup_seconds():
    """(cold, warm): `fit` of one step in a fresh interpreter with an empty, then a filled cache."""
    code = ("import numpy as np, fastbp;"
            "fastbp.fit(fastbp.TwoLayerNet(784, 50, 10, dtype=np.float32), np.zeros((100, 784), np.float32),"
            " np.zeros(100, np.int64), iters=1)")
    with tempfile.TemporaryDirectory() as cache:
        os.chmod(cache, 0o700)
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        times = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - start)
    return times


# --- the tables ----------------------------------------------------------------------------------

def cpu_model():
    """The CPU's model name and, on x86, family/model and the vector extension in use."""
    name, family, model = platform.processor() or platform.machine(), "", ""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        name = info.get("model name", name)
        family, model = info.get("cpu family", ""), info.get("model", "")
        flags = info.get("flags", "").split()
        vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    except OSError:
        vector = "?"
    where = f", family {family} model {model}" if family else ""
    return f"{name}{where}, {vector}, {os.cpu_count()} cores"


def _progress(text):
    """What is being measured, on one line redrawn in place: on a terminal only (a log would keep
    every half-line)."""
    if is_terminal(sys.stderr):
        print(f"measuring {text}"[:79].ljust(79), end="\r", file=sys.stderr, flush=True)


def _progress_done():
    if is_terminal(sys.stderr):
        print(" " * 79, end="\r", file=sys.stderr)


# Rounds in which a table's paths take turns (_measure_in_turns); the book's loops run as many
# steps as the compiled ones. (With a quarter, turns of 50 steps, a turn's first steps weighed
# in: each turn trains a new net after 0.3 s idle, and fastbp's first ~15 steps are slower (the
# idle core waking, most likely; Fashion-MNIST, 784-50-10, one VM phase: 1,761 us a step falling
# to ~800 by the 12th; medians of steps 0-50 against 50-300 over 6 turns: 1,159 against 836 us,
# the book's 1,320 against 1,184). The book's ch05 loop that these stand for runs 10,000 steps.)
COMPILED_TURNS, BOOK_TURNS = 3, 5
# The first steps of a turn of the book's loop that are not timed, in seconds. Each turn follows
# 0.3 s idle (_measure_in_turns), after which this VM's second vCPU takes tens of milliseconds to
# run at speed again: in fastbp's first ~65 steps of a turn (Fashion-MNIST, 784-50-10; ~45 ms) the
# helper missed stages, and the caller went alone twice (kernels/_sync.py's strike judge).
# A user's loop pays that once, not every 200 steps.
WARM_SECONDS = 0.1


def _measure_in_turns(paths, sizes, data, iters, rounds):
    """[(label, {input name: seconds per step})] of paths that take turns on each input: ``rounds``
    rounds of iters / rounds steps each, every path once per round, the median of its rounds.
    This VM's speed moves in phases of seconds (the book's loop took 780 us a step in one, 1,500
    in the next); measured one after the other, two paths can land in different phases, and taking
    turns gives both the same mix of phases (measured once each, fit's large net took 776 us a
    step in one run, beside 485 in the same run's turns table). Each run first waits 0.3 s:
    OpenBLAS threads keep spinning ~0.1 s after their last call and would compete with it."""
    times = {label: {} for label, _ in paths}
    for name, (x, t) in data.items():
        runs = {label: [] for label, _ in paths}
        for round_ in range(rounds):
            for label, timer in paths:
                _progress(f"{'-'.join(map(str, sizes))} on {name}: {label} ({round_ + 1}/{rounds})")
                time.sleep(0.3)   # (BLAS threads still spinning from the last path)
                runs[label].append(timer(sizes, x, t, max(iters // rounds, 10)))
        for label, _ in paths:
            times[label][name] = float(np.median(runs[label]))
    return [(label, times[label]) for label, _ in paths]


def _load_in_turns(paths, sizes, data, iters, rounds=3):
    """[(label, {input name: (quiet, loaded) seconds per step})] of paths timed quiet and under
    load in turns: ``rounds`` rounds of one quiet run and one run while busy_core() keeps a core
    busy, the median of each. The VM's phases last seconds to minutes; a quiet table and a
    loaded one taken minutes apart compare two phases as much as two loads."""
    times = {label: {} for label, _ in paths}
    for name, (x, t) in data.items():
        for label, timer in paths:
            quiet, loaded = [], []
            for round_ in range(rounds):
                _progress(f"{'-'.join(map(str, sizes))} on {name}: {label}, quiet and loaded in turns "
                          f"({round_ + 1}/{rounds})")
                time.sleep(0.3)   # (as _measure_in_turns)
                quiet.append(timer(sizes, x, t, iters))
                with busy_core():
                    loaded.append(timer(sizes, x, t, iters))
            times[label][name] = (float(np.median(quiet)), float(np.median(loaded)))
    return [(label, times[label]) for label, _ in paths]


def print_load_table(title, rows, names):
    """rows [(label, {input: (quiet, loaded) seconds})]: both, and loaded / quiet, per input."""
    print(f"\n{title}")
    print(f"  {'':<56}" + "".join(f" {name:>25}" for name in names))
    print(f"  {'':<56}" + "".join(f" {'quiet':>8} {'loaded':>8} {'ratio':>7}" for _ in names))
    for label, seconds in rows:
        cells = "".join(f" {1e6 * seconds[n][0]:8.1f} {1e6 * seconds[n][1]:8.1f} {seconds[n][1] / seconds[n][0]:6.2f}x"
                        for n in names)
        print(f"  {label:<56}{cells}")


def print_table(title, rows, names):
    """rows [(label, {input: seconds})]; ratios against the first row, per input."""
    print(f"\n{title}")
    print(f"  {'':<56}" + "".join(f" {name:>21}" for name in names))
    print(f"  {'':<56}" + "".join(f" {'us/step':>11} {'vs first':>9}" for _ in names))
    for label, seconds in rows:
        cells = "".join(f" {1e6 * seconds[n]:11.1f} {rows[0][1][n] / seconds[n]:8.2f}x" for n in names)
        print(f"  {label:<56}{cells}")


@contextlib.contextmanager
def busy_core():
    """Another process keeping one core busy for the duration."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def run_tables(args, data32, data64, iters, loaded):
    where = "under load (another process keeps one core busy)" if loaded else "quiet"
    names = list(data32)
    for sizes in NETS:
        net = "-".join(map(str, sizes)) + " relu"
        compiled = _measure_in_turns(compiled_paths(np.dtype(args.dtype).type), sizes, data32, iters,
                                     COMPILED_TURNS)
        book = _measure_in_turns(BOOK_PATHS, sizes, data64, iters, BOOK_TURNS)
        _progress_done()
        print_table(f"{net}, {where}: compiled training loops, {args.dtype}", compiled, names)
        print_table(f"{net}, {where}: the book's loop (gradient, update, loss), float64, one-hot",
                    book, names)


def run_load_tables(args, data32, data64, iters):
    """fastbp's paths quiet and under load in turns (_load_in_turns), one table per net."""
    names = list(data32)
    fits = [(label, timer) for label, timer in compiled_paths(np.dtype(args.dtype).type)
            if label.startswith("fastbp")]
    for sizes in NETS:
        rows = _load_in_turns(fits, sizes, data32, iters) + _load_in_turns(BOOK_PATHS[1:], sizes, data64, iters)
        _progress_done()
        print_load_table(f"{'-'.join(map(str, sizes))} relu, quiet and under load taken in turns: fastbp's "
                         f"paths ({args.dtype} fit; the book's loop float64)", rows, names)


def main(args):
    dtype = np.dtype(args.dtype).type
    versions = ", ".join(f"{d} {v}" for d in ("numba", "numpy", "scipy", "torch", "jax")
                         if (v := _version(d)))
    print(f"fastbp bench: {cpu_model()}; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{versions}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    _progress("preparing the data")
    data32 = inputs(dtype)
    data64 = data32 if dtype == np.float32 else inputs(np.float32)   # the book's float32 images
    print(f"data: {ROWS:,} images of 784 pixels each, batch 100, SGD lr {LR}; "
          + "; ".join(f"{name} {100 * np.mean(x[:2000] == 0):.0f}% zeros" for name, (x, _) in data32.items())
          + f"; {args.iters} steps per compiled path in {COMPILED_TURNS} turns, "
          f"{args.iters} per book-loop path in {BOOK_TURNS} (the paths of a table take turns; median)",
          flush=True)
    missing = [peer for peer in ("torch", "jax") if not _version(peer)]
    if missing:
        print(f"(not installed, so not compared: {', '.join(missing)}; pip install them to add them as peers)")
    run_tables(args, data32, data64, args.iters, loaded=False)
    if args.load:
        with busy_core():
            run_tables(args, data32, data64, max(args.iters // 4, 20), loaded=True)
        run_load_tables(args, data32, data64, max(args.iters // 4, 20))
    if args.profile:
        x, t = data32["MNIST-like"]
        for sizes in NETS:
            _progress(f"profile {'-'.join(map(str, sizes))}")
            with limited_blas():
                stages = profile_step(sizes, x, t, args.iters, dtype)
            _progress_done()
            print_profile("-".join(map(str, sizes)) + " relu", stages)
    if args.startup:
        cold, warm = startup_seconds()
        print(f"\nstart-up, import + fit of 1 step in a fresh interpreter: {cold:.2f} s with an empty "
              f"Numba cache, {warm:.2f} s with a warm one")
    return 0
