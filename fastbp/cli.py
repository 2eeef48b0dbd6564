"""The ``fastbp`` command: train, evaluate, gradcheck, bench.

    fastbp train                      # MNIST if it can be had, else Fashion-MNIST, else the shipped digits
    fastbp train --dataset fashion-mnist --hidden 100 --iters 20000 --plot curves.png --save net.npz
    fastbp evaluate net.npz
    fastbp gradcheck
    fastbp bench
    fastbp book-compare path/to/deep-learning-from-scratch
"""
import argparse
import json
import sys
import time

import numpy as np

from . import _checks, datasets
from .backend import use_backend
from .gradcheck import gradient_check
from .nets import MultiLayerNet, TwoLayerNet
from .training import TrainingDiverged, fit

DATASETS = {"mnist": datasets.load_mnist, "fashion-mnist": datasets.load_fashion_mnist,
            "digits": datasets.load_digits}


def load_dataset(name, data_dir=None, say=print):
    """(name, (x_train, t_train), (x_test, t_test)); ``auto`` takes the first that can be had."""
    if name == "digits":
        return name, *datasets.load_digits()
    if name != "auto":
        return name, *DATASETS[name](data_dir=data_dir)
    try:
        data = datasets.load_mnist(data_dir=data_dir)
        say("dataset: MNIST (found or downloaded)")
        return "mnist", *data
    except datasets.DatasetNotFoundError as error:
        mnist_missing = str(error).splitlines()[0]
    try:
        data = datasets.load_fashion_mnist(data_dir=data_dir, download=False)
        say(f"dataset: Fashion-MNIST, found locally (MNIST unavailable: {mnist_missing})")
        return "fashion-mnist", *data
    except datasets.DatasetNotFoundError:
        pass
    say("dataset: the small handwritten-digits set shipped with fastbp (8x8 UCI digits, "
        f"1,797 samples), as neither MNIST nor Fashion-MNIST is available ({mnist_missing}). "
        "Use --dataset or set FASTBP_DATA to train on MNIST.")
    return "digits", *datasets.load_digits()


def build_net(input_size, hidden, output_size, activation, dtype, weight_init_std=None):
    if len(hidden) == 1 and activation == "relu" and weight_init_std is None:
        return TwoLayerNet(input_size, hidden[0], output_size, dtype=dtype)
    return MultiLayerNet(input_size, hidden, output_size, activation=activation,
                         weight_init_std="auto" if weight_init_std is None else weight_init_std,
                         dtype=dtype)


def _hidden(text):
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 50 or 100,50, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


HEADER = f"{'epoch':>6} {'iter':>6} {'train acc':>9} {'test acc':>9} {'loss':>8} {'elapsed':>8}"


def format_row(row):
    test = "-" if row.test_acc is None else f"{row.test_acc:.4f}"
    return (f"{row.epoch:6.2f} {row.iteration:6d} {row.train_acc:9.4f} {test:>9} "
            f"{row.loss:8.4f} {row.elapsed:7.2f}s")


def cmd_train(args):
    if args.plot:
        _require_matplotlib()
    name, (x_train, t_train), (x_test, t_test) = load_dataset(args.dataset, args.data_dir)
    dtype = np.dtype(args.dtype)
    np.random.seed(args.seed)
    net = build_net(x_train.shape[1], args.hidden, int(t_train.max()) + 1, args.activation, dtype)
    print(f"net: {type(net).__name__} {x_train.shape[1]}-{'-'.join(map(str, args.hidden))}-"
          f"{net.params[f'W{len(args.hidden) + 1}'].shape[1]} {args.activation}, {dtype}; "
          f"{len(x_train):,} train / {len(x_test):,} test samples; iters {args.iters}, "
          f"batch {args.batch_size}, lr {args.lr}, seed {args.seed}, backend {args.backend}")
    print(HEADER)
    start = time.perf_counter()
    try:
        with use_backend(args.backend):
            history = fit(net, x_train, t_train, x_test, t_test, iters=args.iters,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          callback=lambda row: print(format_row(row), flush=True))
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    total = time.perf_counter() - start
    last = history.rows[-1]
    print(f"done: {args.iters} iterations in {total:.2f} s ({history.train_seconds:.2f} s in SGD "
          f"steps: {history.iterations_per_second:,.0f} iterations/s, "
          f"{1e6 * history.train_seconds / args.iters:.0f} us/iteration; "
          f"{history.eval_seconds:.2f} s measuring accuracy); "
          f"final train acc {last.train_acc:.4f}, test acc {last.test_acc:.4f}")
    if args.save:
        save(args.save, net, name, args.activation)
        print(f"saved: {args.save}")
    if args.plot:
        plot(args.plot, history, name)
        print(f"plot: {args.plot}")
    return 0


def save(path, net, dataset, activation):
    meta = {"dataset": dataset, "activation": activation, "dtype": str(net.dtype),
            "sizes": [net.params["W1"].shape[0]] + [net.params[f"W{i}"].shape[1]
                                                     for i in range(1, len(net.params) // 2 + 1)]}
    np.savez(path, meta=json.dumps(meta), **net.params)


def load_saved(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            params = {k: f[k] for k in f.files if k != "meta"}
        sizes, activation, dtype = meta["sizes"], meta["activation"], np.dtype(meta["dtype"])
        net = build_net(sizes[0], sizes[1:-1], sizes[-1], activation, dtype)
    except (OSError, KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a net saved by `fastbp train --save` "
                         f"({type(error).__name__}: {error})") from None
    if set(params) != set(net.params):
        raise ValueError(f"{path}: holds arrays {sorted(params)}, expected {sorted(net.params)}")
    for key, value in params.items():
        if net.params[key].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {value.shape}, expected {net.params[key].shape}")
        _checks.check_finite(f"{path}: {key}", value)  # a net saved after it diverged
        net.params[key][...] = value
    return net, meta


def cmd_evaluate(args):
    net, meta = load_saved(args.file)
    name = args.dataset or meta["dataset"]
    name, (x_train, t_train), (x_test, t_test) = load_dataset(name, args.data_dir)
    print(f"{args.file}: {type(net).__name__} {'-'.join(map(str, meta['sizes']))} {meta['activation']} "
          f"trained on {meta['dataset']}")
    print(f"{name}: train acc {net.accuracy(x_train, t_train):.4f}, test acc {net.accuracy(x_test, t_test):.4f}")
    return 0


def cmd_gradcheck(args):
    name, (x_train, t_train), _ = load_dataset(args.dataset, args.data_dir)
    np.random.seed(args.seed)
    net = build_net(x_train.shape[1], args.hidden, int(t_train.max()) + 1, args.activation, np.float64)
    x, t = x_train[:args.samples], t_train[:args.samples]
    print(f"gradient check: {type(net).__name__} {x.shape[1]}-{'-'.join(map(str, args.hidden))}-"
          f"{int(t_train.max()) + 1} {args.activation}, float64, {args.samples} samples of {name}, "
          f"backend {args.backend}")
    with use_backend(args.backend):
        report = gradient_check(net, x, t)
    print(f"{'param':>6} {'mean |backprop - numerical|':>28} {'max rel error':>14}")
    worst = 0.0
    for key, check in report.items():
        print(f"{key:>6} {check.mean_abs_diff:28.3e} {check.max_rel_error:14.3e}")
        worst = max(worst, check.max_rel_error)
    ok = worst < 1e-6
    print(f"{'OK' if ok else 'FAIL'}: max relative error {worst:.1e} ({'<' if ok else '>='} 1e-6)")
    return 0 if ok else 1


def cmd_bench(args):
    from .bench import main as bench_main  # imported here: only this command needs it
    return bench_main(args)


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib, which is not installed: "
                         "pip install 'fastbp[plot]' (or pip install matplotlib)") from None


def plot(path, history, dataset):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(np.arange(1, len(history.loss) + 1), history.loss, lw=0.5)
    left.set(xlabel="iteration", ylabel="batch loss", title=f"loss ({dataset})")
    epochs = [r.epoch for r in history.rows]
    right.plot(epochs, history.train_acc, "o-", label="train")
    if history.rows[0].test_acc is not None:
        right.plot(epochs, history.test_acc, "s--", label="test")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parser():
    p = argparse.ArgumentParser(prog="fastbp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def data_options(q, default="auto"):
        q.add_argument("--dataset", choices=["auto", *DATASETS], default=default,
                       help="auto: MNIST if cached or downloadable, else Fashion-MNIST if found "
                            "locally, else the digits shipped with fastbp (default: %(default)s)")
        q.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/ "
                                          "(default: $FASTBP_DATA, else a per-user cache folder)")

    def net_options(q):
        q.add_argument("--hidden", type=_hidden, default=[50], help="hidden sizes, e.g. 50 or 100,50")
        q.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default="relu")
        q.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the batches")
        q.add_argument("--backend", choices=["kernels", "reference"], default="kernels",
                       help="kernels (compiled) or reference (plain NumPy twins)")

    t = sub.add_parser("train", help="train a net and print the per-epoch table")
    data_options(t)
    net_options(t)
    t.add_argument("--iters", type=_positive(int), default=10000)
    t.add_argument("--batch-size", type=_positive(int), default=100)
    t.add_argument("--lr", type=_positive(float), default=0.1)
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    t.add_argument("--plot", metavar="FILE.png", help="draw loss and accuracy curves (needs matplotlib)")
    t.add_argument("--save", metavar="FILE.npz", help="save the trained parameters")
    t.set_defaults(run=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy of a net saved with train --save")
    e.add_argument("file")
    e.add_argument("--dataset", choices=["auto", *DATASETS], default=None,
                   help="default: the dataset it was trained on")
    e.add_argument("--data-dir")
    e.set_defaults(run=cmd_evaluate)

    g = sub.add_parser("gradcheck", help="backprop vs numerical gradient, per parameter")
    data_options(g)
    net_options(g)
    g.add_argument("--samples", type=_positive(int), default=3)
    g.set_defaults(run=cmd_gradcheck)

    b = sub.add_parser("bench", help="reference vs fastbp (vs PyTorch, JAX if installed), in one run")
    b.add_argument("--iters", type=_positive(int), default=1000, help="steps timed per path")
    b.add_argument("--batch-size", type=_positive(int), default=100)
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    b.add_argument("--startup", action="store_true",
                   help="also time import + first fit in fresh interpreters, cold and warm cache")
    b.add_argument("--profile", action="store_true",
                   help="also show where a step of fit goes, stage by stage")
    b.set_defaults(run=cmd_bench)

    from . import bookcompare  # its own module; only its argparse wiring is needed here
    bookcompare.add_command(sub)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, datasets.DatasetNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
