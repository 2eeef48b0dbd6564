"""``fastbp bench``: the speed-up on this machine, measured in one run, as ratios.

Every path trains the same net shape on the same MNIST-shaped data: the NumPy reference
(``fastbp.reference`` through ``fit``, layer by layer as the book does it), fastbp's compiled
``fit``, the book-style Python loop over ``TwoLayerNet.gradient`` on both backends, and, when they
are installed, PyTorch (CPU, eager) and JAX (the whole loop jitted) as peers. The "matmul floor" is
the time BLAS takes for the products a step cannot avoid (forward and weight gradient of every
layer, dx of all but the first), with fit's BLAS thread count, measured in the same run. Absolute
times drift on shared machines; the ratios measured side by side are the result.
"""
import contextlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .backend import use_backend
from .kernels import step
from .nets import MultiLayerNet, TwoLayerNet
from .threads import blas_threads, limited_blas
from .training import fit


def mnist_like(n=10000, d=784, classes=10, zeros=0.81, seed=0, dtype=np.float32):
    """Synthetic images with MNIST's shape and sparsity (81 % zero pixels) and learnable labels."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, d), dtype=np.float32)
    x[rng.random((n, d)) < zeros] = 0
    t = np.argmax(x @ rng.standard_normal((d, classes)).astype(np.float32), axis=1)
    return x.astype(dtype), t


def _net(sizes, dtype, seed=0):
    np.random.seed(seed)
    if len(sizes) == 3:
        return TwoLayerNet(*sizes, dtype=dtype)
    return MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], dtype=dtype)


def time_fit(backend, sizes, x, t, iters, batch_size, dtype):
    net = _net(sizes, dtype)
    with use_backend(backend):
        fit(net, x[:batch_size], t[:batch_size], iters=2, batch_size=batch_size)  # compile / warm
        history = fit(net, x, t, iters=iters, batch_size=batch_size, lr=0.1, seed=1,
                      eval_every=iters)
    return history.train_seconds / iters


def time_book_loop(backend, sizes, x, t, iters, batch_size, dtype):
    """The seeds' loop: gradient, in-place SGD update, loss — in Python, over the layers."""
    net = _net(sizes, dtype)
    rng = np.random.default_rng(1)
    with use_backend(backend):
        net.gradient(x[:batch_size], t[:batch_size])  # compile / warm
        start = time.perf_counter()
        for _ in range(iters):
            mask = rng.integers(0, len(x), batch_size)
            x_batch, t_batch = x[mask], t[mask]
            grads = net.gradient(x_batch, t_batch)
            for key, grad in grads.items():
                net.params[key] -= 0.1 * grad
            net.loss(x_batch, t_batch)
        return (time.perf_counter() - start) / iters


def time_torch(sizes, x, t, iters, batch_size, dtype):
    import torch
    torch.manual_seed(0)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=tdtype))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xs, ts = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = torch.from_numpy(np.random.default_rng(1).integers(0, len(x), (iters + 5, batch_size)))

    def step(rows):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xs[rows]), ts[rows])
        loss.backward()
        opt.step()

    for rows in batches[:5]:
        step(rows)
    start = time.perf_counter()
    for rows in batches[5:]:
        step(rows)
    return (time.perf_counter() - start) / iters


def time_jax(sizes, x, t, iters, batch_size, dtype):
    """JAX as its users write the fast version: the whole loop one jitted ``lax.scan`` over steps,
    each gathering its batch from the dataset on the device. A warm-up call with the same shapes
    compiles it, so the timed call does not."""
    import jax
    import jax.numpy as jnp

    # x64 is a global JAX switch: turn it on for float64 only, and only inside this function.
    precision = jax.enable_x64(True) if dtype == np.float64 else contextlib.nullcontext()
    batches = np.random.default_rng(1).integers(0, len(x), (2 * iters, batch_size))
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
        def step(params, rows):
            value, grads = jax.value_and_grad(loss)(params, xs[rows], ts[rows])
            return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), value
        return jax.lax.scan(step, params, batches)

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


def matmul_floor(sizes, batch_size, dtype, repeat=200):
    """Seconds per step for the BLAS products a step must do (NumPy's BLAS, same data shapes)."""
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, sizes[0])).astype(dtype)
    total = 0.0
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        inp = x if i == 0 else rng.random((batch_size, a)).astype(dtype)
        W = rng.random((a, b)).astype(dtype)
        d = rng.random((batch_size, b)).astype(dtype)
        products = [lambda: inp @ W, lambda: inp.T @ d] + ([lambda: d @ W.T] if i else [])
        for product in products:
            product()
            start = time.perf_counter()
            for _ in range(repeat):
                product()
            total += (time.perf_counter() - start) / repeat
    return total


STAGES = [  # (stage of kernels.step, what it adds to a step)
    (step.GATHER, "gather the batch rows (copy from x)"),
    (step.FORWARD, "forward: bias + h @ W (BLAS), activation"),
    (step.LOSS, "softmax cross-entropy and its gradient"),
    (step.BACKWARD, "backward: dx = d @ W.T (BLAS), activation gradients"),
    (step.WEIGHTS, "weight updates: W -= lr * h.T @ d (one BLAS call)"),
    (step.BIASES, "bias updates: b -= lr * sum(d)"),
]


def profile_step(sizes, x, t, iters, batch_size, dtype, repeats=7):
    """Where a step of ``fit`` goes: [(stage label, seconds per step)], by cumulative ablation.

    A profiler cannot see inside compiled code, so the step is run with its first k stages only,
    for every k, interleaved and repeated (median); a stage's time is what adding it costs. The
    batches are the same for every k, and the BLAS threads those of ``fit``.
    """
    net = _net(sizes, dtype)
    weights, biases, activation = net.stack()
    batches = np.random.default_rng(1).integers(0, len(x), (iters, batch_size))
    losses = np.zeros(iters)
    seconds = {stage: [] for stage, _ in STAGES}
    with limited_blas():
        step._sgd_step_stages(x, t, batches[:2], weights, biases, activation, 0.1, losses, step.BIASES)
        for _ in range(repeats):
            for stage in seconds:
                start = time.perf_counter()
                step._sgd_step_stages(x, t, batches, weights, biases, activation, 0.1, losses, stage)
                seconds[stage].append((time.perf_counter() - start) / iters)
    cumulative = [0.0] + [float(np.median(seconds[stage])) for stage, _ in STAGES]
    return [(label, after - before)
            for (_, label), before, after in zip(STAGES, cumulative, cumulative[1:])]


def print_profile(name, stages):
    total = sum(seconds for _, seconds in stages)
    print(f"\nwhere a step of fastbp fit goes, {name} (each stage: what adding it to the step costs)")
    print(f"  {'stage':<64} {'us/step':>9} {'share':>6}")
    for label, seconds in stages:
        print(f"  {label:<64} {1e6 * seconds:9.1f} {seconds / total:6.0%}")
    print(f"  {'the whole step':<64} {1e6 * total:9.1f}")


def startup_seconds():
    """(cold, warm): `fit` of one step in a fresh interpreter with an empty, then a filled cache."""
    code = ("import numpy as np, fastbp;"
            "fastbp.fit(fastbp.TwoLayerNet(784, 50, 10, dtype=np.float32), np.zeros((100, 784), np.float32),"
            " np.zeros(100, np.int64), iters=1)")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        times = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - start)
    return times


NETS = ([784, 50, 10], [784, 256, 128, 10])


def main(args):
    dtype = np.dtype(args.dtype).type
    x, t = mnist_like(dtype=dtype)
    measure = dict(x=x, t=t, iters=args.iters, batch_size=args.batch_size, dtype=dtype)
    torch_version, jax_version = _version("torch"), _version("jax")
    print(f"fastbp bench: batch {args.batch_size}, {args.dtype}, SGD lr 0.1, {args.iters} iterations "
          f"per path, MNIST-shaped synthetic data (10,000 x 784, 81% zeros); {os.cpu_count()} cores; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"BLAS threads in fit: {blas_threads()} (FASTBP_BLAS_THREADS)", flush=True)
    paths = [
        ("NumPy reference, layer by layer (fit on the reference backend)",
         lambda sizes: time_fit("reference", sizes, **measure)),
        ("fastbp fit (compiled epochs)", lambda sizes: time_fit("kernels", sizes, **measure)),
        ("book-style Python loop, reference layers",
         lambda sizes: time_book_loop("reference", sizes, **measure)),
        ("book-style Python loop, fastbp layers",
         lambda sizes: time_book_loop("kernels", sizes, **measure)),
    ]
    # The peers run after every fastbp and reference path, so their thread pools (which keep
    # spinning for a while after use) cannot slow those down.
    peers = [(label, timer) for label, timer, version in (
        (f"PyTorch {torch_version} CPU eager", lambda sizes: time_torch(sizes, **measure), torch_version),
        (f"JAX {jax_version}, whole loop jitted (lax.scan)", lambda sizes: time_jax(sizes, **measure),
         jax_version)) if version]
    results = {}
    for sizes in NETS:
        rows = [(label, _progress(label, sizes, timer)) for label, timer in paths]
        with limited_blas():
            floor = matmul_floor(sizes, args.batch_size, dtype)
        profile = (_progress("profile", sizes, lambda sizes: profile_step(sizes, **measure))
                   if args.profile else None)
        results[tuple(sizes)] = rows, floor, profile
    for sizes in NETS:
        results[tuple(sizes)][0].extend((label, _progress(label, sizes, timer)) for label, timer in peers)
    print(" " * 79, end="\r", file=sys.stderr)

    for sizes in NETS:
        rows, floor, profile = results[tuple(sizes)]
        name = "-".join(map(str, sizes)) + " relu"
        reference = rows[0][1]
        print(f"\n{name}")
        print(f"  {'path':<64} {'us/iter':>9} {'vs reference':>13}")
        for label, seconds in rows:
            print(f"  {label:<64} {1e6 * seconds:9.1f} {reference / seconds:12.2f}x")
        print(f"  {'matmul floor (the BLAS products of one step, NumPy, as fit)':<64} {1e6 * floor:9.1f}")
        missing = [peer for peer, version in (("torch", torch_version), ("jax", jax_version)) if not version]
        if missing and sizes == NETS[0]:
            print(f"  (not installed, so not compared: {', '.join(missing)}; pip install them to add "
                  f"them as peers)")
        if profile:
            print_profile(name, profile)
    if args.startup:
        cold, warm = startup_seconds()
        print(f"\nstart-up, import + fit of 1 step in a fresh interpreter: {cold:.2f} s with an empty "
              f"Numba cache, {warm:.2f} s with a warm one")
    return 0


def _progress(label, sizes, timer):
    """timer(sizes), saying on stderr what is being measured (a full run takes minutes).

    It first waits 0.3 s: OpenBLAS threads keep spinning ~0.1 s after their last call, and the
    previous path's pool (NumPy's or SciPy's) would otherwise compete with this one's for the cores.
    """
    print(f"measuring {'-'.join(map(str, sizes))}: {label}"[:79].ljust(79), end="\r", file=sys.stderr,
          flush=True)
    time.sleep(0.3)
    return timer(sizes)
