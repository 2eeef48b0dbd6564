"""``fastbp bench``: the speed-up on this machine, measured in one run, as ratios.

Every path trains the same net on the same MNIST-shaped data with the same batches:
the NumPy reference (``fastbp.reference`` through ``fit``, layer by layer as the book does it),
fastbp's compiled ``fit``, the book-style Python loop over ``TwoLayerNet.gradient`` on both
backends, and PyTorch on the CPU when it is installed. The "matmul floor" is the time BLAS
takes for the products a step cannot avoid (forward and weight gradient of every layer, dx of all
but the first), measured in the same run. Absolute times drift on shared machines; the ratios
measured side by side are the result.
"""
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


def main(args):
    dtype = np.dtype(args.dtype).type
    x, t = mnist_like(dtype=dtype)
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    print(f"fastbp bench: batch {args.batch_size}, {args.dtype}, SGD lr 0.1, {args.iters} iterations "
          f"per path, MNIST-shaped synthetic data (10,000 x 784, 81% zeros); {os.cpu_count()} cores; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"BLAS threads in fit: {blas_threads()} (FASTBP_BLAS_THREADS)")
    for sizes in ([784, 50, 10], [784, 256, 128, 10]):
        name = "-".join(map(str, sizes)) + " relu"
        reference = time_fit("reference", sizes, x, t, args.iters, args.batch_size, dtype)
        rows = [("NumPy reference, layer by layer (fit on the reference backend)", reference),
                ("fastbp fit (compiled epochs)", time_fit("kernels", sizes, x, t, args.iters,
                                                          args.batch_size, dtype)),
                ("book-style Python loop, reference layers", time_book_loop(
                    "reference", sizes, x, t, args.iters, args.batch_size, dtype)),
                ("book-style Python loop, fastbp layers", time_book_loop(
                    "kernels", sizes, x, t, args.iters, args.batch_size, dtype))]
        if torch_version:
            rows.append((f"PyTorch {torch_version} CPU eager", time_torch(
                sizes, x, t, args.iters, args.batch_size, dtype)))
        with limited_blas():
            floor = matmul_floor(sizes, args.batch_size, dtype)
        print(f"\n{name}")
        print(f"  {'path':<64} {'us/iter':>9} {'vs reference':>13}")
        for label, seconds in rows:
            print(f"  {label:<64} {1e6 * seconds:9.1f} {reference / seconds:12.2f}x")
        print(f"  {'matmul floor (the BLAS products of one step, NumPy, as fit)':<64} {1e6 * floor:9.1f}")
        if not torch_version and sizes == [784, 50, 10]:
            print("  (PyTorch not installed: pip install torch to add it as a peer)")
        if args.profile:
            print_profile(name, profile_step(sizes, x, t, args.iters, args.batch_size, dtype))
    if args.startup:
        cold, warm = startup_seconds()
        print(f"\nstart-up, import + fit of 1 step in a fresh interpreter: {cold:.2f} s with an empty "
              f"Numba cache, {warm:.2f} s with a warm one")
    return 0
