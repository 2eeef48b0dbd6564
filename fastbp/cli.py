"""The ``fastbp`` command: train, evaluate, gradcheck, bench, book-compare, graph, sweep.

    fastbp train                      # MNIST if it can be had, else Fashion-MNIST, else the shipped digits
    fastbp train --dataset fashion-mnist --hidden 100 --iters 20000 --plot curves.png --save net.npz
    fastbp evaluate net.npz
    fastbp gradcheck
    fastbp bench
    fastbp book-compare path/to/deep-learning-from-scratch
    fastbp graph apple -o apple.svg
    fastbp sweep --trials 100 --csv sweep.csv --plot sweep.png
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np

from . import __version__, _checks, _io, datasets
from .backend import use_backend
from .gradcheck import gradient_check
from .graph import GraphvizMissing
from .nets import MultiLayerNet, TwoLayerNet
from .training import TrainingDiverged, TrainingInterrupted, fit

DATASETS = {"mnist": datasets.load_mnist, "fashion-mnist": datasets.load_fashion_mnist,
            "digits": datasets.load_digits}
# --iters when not given: the book's chapter 5 protocol on the 60,000 images; on the 1,500 small
# digits the test accuracy stops rising after ~2,000 steps (0.98), so the run ends soon after
DEFAULT_ITERS = {"mnist": 10000, "fashion-mnist": 10000, "digits": 3000}
TABLE_ROWS = 16   # a longer run gets a row every few epochs, so that its table fits a screen


def how_to_get_mnist(error):
    """Lines saying why MNIST was not had and which files to put where, from its
    DatasetNotFoundError."""
    files = "these four files" if len(error.missing) == 4 else f"these {len(error.missing)} files"
    outcome = error.outcome.splitlines()
    return "\n".join([
        f"  MNIST download {outcome[0]}", *(f"  {line}" for line in outcome[1:]),
        f"  To use MNIST, put {files} in {error.folder}{os.sep}:",
        "      " + "  ".join(error.missing),
        f"  (from {datasets.MIRRORS['mnist'][0]}), or set FASTBP_DATA to a folder whose mnist/ "
        "holds them."])


def load_dataset(name, data_dir=None, say=print):
    """(name, (x_train, t_train), (x_test, t_test)); ``auto`` takes the first that can be had
    and says which, and, when it is not MNIST, how to get MNIST."""
    if name == "digits":
        return name, *datasets.load_digits()
    if name != "auto":
        return name, *DATASETS[name](data_dir=data_dir)
    try:
        data = datasets.load_mnist(data_dir=data_dir)
        say("dataset: MNIST")
        return "mnist", *data
    except datasets.DatasetNotFoundError as error:
        mnist = error
    try:
        data = datasets.load_fashion_mnist(data_dir=data_dir, download=False)
        say("dataset: Fashion-MNIST (same shapes as MNIST, clothes instead of digits), found "
            "locally; MNIST is not available:")
        say(how_to_get_mnist(mnist))
        return "fashion-mnist", *data
    except datasets.DatasetNotFoundError:
        pass
    say("dataset: digits, the 8x8 handwritten digits shipped with fastbp (1,797 samples), as "
        "neither MNIST nor Fashion-MNIST is available:")
    say(how_to_get_mnist(mnist))
    return "digits", *datasets.load_digits()


def table_interval(per_epoch, iters, rows=TABLE_ROWS):
    """Steps between two rows of the table: one epoch, as in the book, or as many whole epochs
    as keep a long run near ``rows`` rows."""
    return per_epoch * max(1, round(iters / per_epoch / rows))


def build_net(input_size, hidden, output_size, activation, dtype, weight_init_std=None,
              weight_decay=0.0):
    if len(hidden) == 1 and activation == "relu" and weight_init_std is None and not weight_decay:
        return TwoLayerNet(input_size, hidden[0], output_size, dtype=dtype)
    return MultiLayerNet(input_size, hidden, output_size, activation=activation,
                         weight_init_std="auto" if weight_init_std is None else weight_init_std,
                         weight_decay_lambda=weight_decay, dtype=dtype)


def _hidden(text):
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 50 or 100,50, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


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


def npz_name(path):
    """The file ``np.savez`` writes for ``path``: it adds .npz when missing; ``evaluate`` agrees."""
    return path if path.endswith(".npz") else path + ".npz"


def cmd_train(args):
    # every output is checked before the work, so a bad path costs seconds, not the training
    save_path = npz_name(args.save) if args.save else None
    plot_path, plot_format = plot_target(args.plot) if args.plot else (None, None)
    for option, path in (("--save", save_path), ("--plot", plot_path)):
        if path and (problem := _io.write_problem(path)) is not None:
            raise ValueError(f"{option}: cannot write {path}: {problem}")
    if plot_path:
        check_plotting(plot_path, plot_format)
    outputs = [path for path in (save_path, plot_path) if path]
    untouched = f" ({' and '.join(outputs)} left as they were)" if outputs else ""
    name, (x_train, t_train), (x_test, t_test) = load_dataset(args.dataset, args.data_dir)
    # the arguments that depend on the data are checked here, before anything is printed for the run
    if args.batch_size > len(x_train):
        raise ValueError(f"--batch-size: expected at most the number of training samples of "
                         f"{name} ({len(x_train):,}), got {args.batch_size}")
    iters = args.iters or DEFAULT_ITERS[name]
    per_epoch = max(len(x_train) // args.batch_size, 1)
    eval_every = args.eval_every or table_interval(per_epoch, iters)
    dtype = np.dtype(args.dtype)
    np.random.seed(args.seed)
    net = build_net(x_train.shape[1], args.hidden, int(t_train.max()) + 1, args.activation, dtype,
                    weight_decay=args.weight_decay)
    every = ("every epoch" if eval_every == per_epoch else
             f"every {eval_every / per_epoch:g} epochs" if eval_every % per_epoch == 0 else
             f"every {eval_every:,} iterations")
    decay = f", weight decay {args.weight_decay}" if args.weight_decay else ""
    print(f"net: {type(net).__name__} {x_train.shape[1]}-{'-'.join(map(str, args.hidden))}-"
          f"{net.params[f'W{len(args.hidden) + 1}'].shape[1]} {args.activation}, {dtype}; "
          f"{len(x_train):,} train / {len(x_test):,} test samples; iters {iters:,}, "
          f"batch {args.batch_size}, {args.optimizer} lr {args.lr}{decay}, seed {args.seed}, "
          f"backend {args.backend}; a row {every} ({per_epoch:,} iterations per epoch)", flush=True)
    try:
        with use_backend(args.backend):
            history = fit(net, x_train, t_train, x_test, t_test, iters=iters,
                          batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                          seed=args.seed, eval_every=eval_every, verbose=True)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        print(f"interrupted after {len(stop.history.loss):,} of {iters:,} iterations; "
              f"nothing saved{untouched}", file=sys.stderr)
        return 130
    try:
        if save_path:
            save(save_path, net, name, args.activation)
            print(f"saved: {save_path}", flush=True)
        if plot_path:
            plot(plot_path, history, name, plot_format)
            print(f"plot: {plot_path}", flush=True)
    except KeyboardInterrupt:
        print("interrupted while writing the outputs; any not reported written were left as they "
              "were", file=sys.stderr)
        return 130
    return 0


def save(path, net, dataset, activation):
    """The net's parameters and what rebuilds it, as .npz, written whole or not at all."""
    meta = {"dataset": dataset, "activation": activation, "dtype": str(net.dtype),
            "sizes": [net.params["W1"].shape[0]] + [net.params[f"W{i}"].shape[1]
                                                     for i in range(1, len(net.params) // 2 + 1)]}
    with _io.atomic_write(path) as f:
        np.savez(f, meta=json.dumps(meta), **net.params)


def load_saved(path):
    """(net, meta) from a file written by ``save``; anything else is one ValueError."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            params = {k: f[k] for k in f.files if k != "meta"}
        sizes, activation, dtype = meta["sizes"], meta["activation"], np.dtype(meta["dtype"])
        if meta["dataset"] not in DATASETS:
            raise ValueError(f"dataset {meta['dataset']!r} is none of {sorted(DATASETS)}")
        if not (isinstance(sizes, list) and len(sizes) >= 2
                and all(isinstance(n, int) and n > 0 for n in sizes)):
            raise ValueError(f"sizes {sizes!r} are not layer sizes")
        expected = {}
        for i in range(1, len(sizes)):
            expected[f"W{i}"], expected[f"b{i}"] = (sizes[i - 1], sizes[i]), (sizes[i],)
        # before build_net allocates anything: the arrays in the file must be the net's
        if set(params) != set(expected):
            raise ValueError(f"holds arrays {sorted(params)}, expected {sorted(expected)}")
        for key, value in params.items():
            if value.shape != expected[key]:
                raise ValueError(f"{key} has shape {value.shape}, expected {expected[key]}")
        net = build_net(sizes[0], sizes[1:-1], sizes[-1], activation, dtype)
    except Exception as error:   # a damaged or foreign file fails in many ways; all mean the same
        raise ValueError(f"{path}: not a net saved by `fastbp train --save` "
                         f"({type(error).__name__}: {error})") from None
    for key, value in params.items():
        _checks.check_finite(f"{path}: {key}", value)  # a net saved after it diverged
        net.params[key][...] = value
    return net, meta


def cmd_evaluate(args):
    path = npz_name(args.file)
    net, meta = load_saved(path)
    name = args.dataset or meta["dataset"]
    name, (x_train, t_train), (x_test, t_test) = load_dataset(name, args.data_dir)
    print(f"{path}: {type(net).__name__} {'-'.join(map(str, meta['sizes']))} {meta['activation']} "
          f"trained on {meta['dataset']}")
    print(f"{name}: train acc {net.accuracy(x_train, t_train):.4f}, test acc {net.accuracy(x_test, t_test):.4f}")
    return 0


def cmd_gradcheck(args):
    name, (x_train, t_train), _ = load_dataset(args.dataset, args.data_dir)
    np.random.seed(args.seed)
    if args.samples > len(x_train):
        raise ValueError(f"--samples: expected at most the number of training samples of {name} "
                         f"({len(x_train)}), got {args.samples}")
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
    for key, check in report.items():
        if check.kinks:
            print(f"{key}: {check.kinks} {'entry' if check.kinks == 1 else 'entries'} within h of a "
                  f"ReLU kink, excluded: numerical estimate unreliable there")
    ok = worst < 1e-6
    print(f"{'OK' if ok else 'FAIL'}: max relative error {worst:.1e} ({'<' if ok else '>='} 1e-6)")
    return 0 if ok else 1


def cmd_bench(args):
    from .bench import main as bench_main  # imported here: only this command needs it
    return bench_main(args)


def plot_target(path):
    """(file name, format) for --plot: without a suffix .png is added, as matplotlib's savefig does."""
    suffix = os.path.splitext(path)[1][1:].lower()
    return (path, suffix) if suffix else (path + ".png", "png")


def check_plotting(path, fmt):
    """Before training: matplotlib is installed and can draw ``fmt``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib, which is not installed: "
                         "pip install 'fastbp[plot]' (or pip install matplotlib)") from None
    formats = Figure().canvas.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(f"--plot: cannot draw {path}: matplotlib does not know the format .{fmt}; "
                         f"use one of {', '.join('.' + f for f in sorted(formats))}")


def plot(path, history, dataset, fmt="png"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = history.plot(title=f"fastbp train on {dataset}: {len(history.loss):,} iterations")
    try:
        with _io.atomic_write(path) as f:
            fig.savefig(f, dpi=100, format=fmt)
    finally:
        plt.close(fig)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default after its help, unless it has none to show; reST's ``literals``
    (docstrings are reused as descriptions) printed as plain text."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

    def _format_text(self, text):
        return super()._format_text(text.replace("``", ""))

    def _expand_help(self, action):
        return super()._expand_help(action).replace("``", "")


class _RawHelp(argparse.RawDescriptionHelpFormatter, _Help):
    """_Help, keeping the description's own lines (a table of examples)."""


DESCRIPTION = """\
fastbp: backpropagation as taught in "Deep Learning from Scratch", on compiled kernels.

  fastbp train                      train the book's 784-50-10 net on MNIST (or what can be had)
  fastbp train --dataset digits     the same on the small digits set shipped with fastbp
  fastbp COMMAND --help             the options of a command, with their defaults
"""


def parser():
    p = argparse.ArgumentParser(prog="fastbp", description=DESCRIPTION, formatter_class=_RawHelp)
    p.add_argument("--version", action="version",
                   version=f"fastbp {__version__} (Python {sys.version.split()[0]}, NumPy "
                           f"{np.__version__}, Numba {_numba_version()})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_options(q, default="auto"):
        q.add_argument("--dataset", choices=["auto", *DATASETS], default=default,
                       help="auto: MNIST if found or downloadable, else Fashion-MNIST if found, "
                            "else the 8x8 digits shipped with fastbp")
        q.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/ "
                                          "(default: $FASTBP_DATA, else a per-user cache folder)")

    def net_options(q):
        q.add_argument("--hidden", type=_hidden, default="50", help="hidden sizes, e.g. 50 or 100,50")
        q.add_argument("--activation", choices=["relu", "sigmoid", "tanh"], default="relu",
                       help="of the hidden layers")
        q.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the batches")
        q.add_argument("--backend", choices=["kernels", "reference"], default="kernels",
                       help="kernels (compiled) or reference (plain NumPy twins)")

    t = sub.add_parser("train", help="train a net, printing a table of accuracies as it goes",
                       description="Train a net with mini-batch SGD, as chapter 5 of the book does, "
                                   "printing train and test accuracy every epoch (every few epochs "
                                   "on long runs), then where the time went.",
                       formatter_class=_Help)
    data_options(t)
    net_options(t)
    t.add_argument("--iters", type=_positive(int),
                   help="SGD steps (default: 10000 on MNIST and Fashion-MNIST, the book's "
                        "protocol; 3000 on the digits)")
    t.add_argument("--batch-size", type=_positive(int), default=100, help="samples per step")
    t.add_argument("--lr", type=_positive(float), default=0.1, help="learning rate")
    t.add_argument("--optimizer", choices=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"],
                   default="sgd", help="the book's chapter 6 update rules (their other settings: the "
                                       "book's defaults)")
    t.add_argument("--weight-decay", type=_non_negative_float, default=0.0, metavar="LAMBDA",
                   help="L2 weight decay, as the book's MultiLayerNet(weight_decay_lambda=)")
    t.add_argument("--eval-every", type=_positive(int), metavar="N",
                   help="steps between two rows of the table (default: one epoch, or whole epochs "
                        f"giving about {TABLE_ROWS} rows on long runs)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="of the weights and the data")
    t.add_argument("--plot", metavar="FILE.png", help="draw loss and accuracy curves (needs "
                                                      "matplotlib); .png is added when there is "
                                                      "no suffix")
    t.add_argument("--save", metavar="FILE.npz", help="save the trained parameters (.npz is added "
                                                      "when missing)")
    t.set_defaults(run=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy of a net saved with train --save",
                       description="Train and test accuracy of a net saved by fastbp train --save.",
                       formatter_class=_Help)
    e.add_argument("file", help="a file written by train --save (.npz is added when missing)")
    e.add_argument("--dataset", choices=["auto", *DATASETS],
                   help="default: the dataset it was trained on")
    e.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/ "
                                      "(default: $FASTBP_DATA, else a per-user cache folder)")
    e.set_defaults(run=cmd_evaluate)

    g = sub.add_parser("gradcheck", help="backprop vs numerical gradient, per parameter",
                       description="Compare backprop's gradient with the numerical one (central "
                                   "differences), per parameter, as the book's gradient_check.py.",
                       formatter_class=_Help)
    data_options(g)
    net_options(g)
    g.add_argument("--samples", type=_positive(int), default=3, help="how many samples the loss "
                                                                      "is taken over")
    g.set_defaults(run=cmd_gradcheck)

    b = sub.add_parser("bench", help="reference vs fastbp (vs PyTorch, JAX if installed), in one run",
                       description="Time every training path on the same MNIST-shaped data in one "
                                   "run: the NumPy reference, fastbp, the book's loop, and PyTorch "
                                   "and JAX when installed.",
                       formatter_class=_Help)
    b.add_argument("--iters", type=_positive(int), default=1000,
                   help="steps timed per path (a quarter of it under load)")
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="of the compiled loops; the book's loop is float64 as the book")
    b.add_argument("--load", action="store_true",
                   help="also measure while another process keeps one core busy")
    b.add_argument("--startup", action="store_true",
                   help="also time import + first fit in fresh interpreters, cold and warm cache")
    b.add_argument("--profile", action="store_true",
                   help="also show where a step of fit goes, stage by stage")
    b.set_defaults(run=cmd_bench)

    from . import bookcompare, graph, sweep  # their own modules; only their argparse wiring here
    bookcompare.add_command(sub).formatter_class = _RawHelp
    graph.add_command(sub).formatter_class = _Help
    sweep.add_command(sub).formatter_class = _Help
    return p


def _numba_version():
    import numba
    return numba.__version__


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def main(argv=None):
    """Run the command; exit code 0, 1 (training diverged, gradient check failed), 2 (bad input),
    130 (interrupted: one line saying what was kept, no traceback), 141 (the reader of the output
    went away, as in `fastbp train | head`)."""
    args = parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning   # a warning is one line, like an error
        try:
            return args.run(args)
        except (ValueError, TypeError, datasets.DatasetNotFoundError, GraphvizMissing) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:   # `fastbp ... | head` closed the pipe: stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # (for the exit flush)
            return 141


if __name__ == "__main__":
    sys.exit(main())
