"""``fastbp book-compare``: run the book's own chapter 4-6 scripts twice, on the book's ``common/``
and on fastbp, and compare what they print and plot.

    fastbp book-compare path/to/deep-learning-from-scratch            # every script, full length
    fastbp book-compare BOOK --quick                                  # long loops cut (same cut both sides)
    fastbp book-compare BOOK --scripts ch05/gradient_check.py ch06/overfit_dropout.py

BOOK is a checkout of github.com/oreilly-japan/deep-learning-from-scratch (or its bare git
folder). Nothing in it is changed: it is copied twice into a private temporary folder. In the
"fastbp" copy ``common/``, ``dataset/mnist.py`` and the chapters' helper modules
(``two_layer_net.py``, ``layer_naive.py``) are deleted and the import lines that named them are
rewritten (``IMPORTS``), so the scripts can only run on fastbp. Both copies read the same
``dataset/mnist.pkl``, written from MNIST when it can be had (the checkout's own ``mnist.pkl``,
else fastbp's loader) or else from Fashion-MNIST (same shapes), and both runs start from the same
``np.random.seed``, so the book's unseeded scripts draw the same batches and initial weights.

Each run is timed (wall clock of the whole process: start-up, imports and data included).
Printed numbers are compared token by token; the figures each script shows (``plt.show`` is
intercepted under the Agg backend) are compared by the data of their lines and bars. By default
fastbp reports the book's loss (FASTBP_LOSS=book, see ``fastbp.set_loss``), so that what is left
are rounding differences; ``--loss exact`` shows fastbp's own loss instead.
"""
import argparse
import functools
import json
import math
import os
import pickle
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHAPTERS = ("ch04", "ch05", "ch06")

# The import lines of the book's chapters 4-6 and what they become on fastbp: (chapter or None for
# any, module the book imports, fastbp module). Star imports keep working: fastbp.optimizers gives
# np as the book's common/optimizer.py does (optimizer_compare_mnist.py relies on it).
IMPORTS = [
    (None, "common.optimizer", "fastbp.optimizers"),
    (None, "common.functions", "fastbp.functions"),
    (None, "common.util", "fastbp.util"),
    (None, "common.gradient", "fastbp"),
    (None, "common.layers", "fastbp"),
    (None, "common.multi_layer_net", "fastbp"),
    (None, "common.multi_layer_net_extend", "fastbp"),
    (None, "common.trainer", "fastbp"),
    (None, "dataset.mnist", "fastbp"),
    ("ch04", "two_layer_net", "fastbp.ch04"),
    ("ch05", "two_layer_net", "fastbp"),
    ("ch05", "layer_naive", "fastbp"),
    ("ch04", "gradient_2d", "fastbp"),   # gradient_method.py takes numerical_gradient from it
]
# Files the rewritten imports replace: absent from the fastbp copy, and not run as scripts.
REPLACED = ["common", "dataset/mnist.py", "ch04/two_layer_net.py", "ch05/two_layer_net.py",
            "ch05/layer_naive.py"]
LIBRARY_MODULES = {"ch04/two_layer_net.py", "ch05/two_layer_net.py", "ch05/layer_naive.py"}

# --quick: the loop lengths cut in both copies (name = value, as an assignment or a keyword).
QUICK = {
    "ch04/train_neuralnet.py": {"iters_num": 1201},
    "ch05/train_neuralnet.py": {"iters_num": 1201},
    "ch06/optimizer_compare_mnist.py": {"max_iterations": 301},
    "ch06/weight_init_compare.py": {"max_iterations": 301},
    "ch06/overfit_weight_decay.py": {"max_epochs": 21},
    "ch06/overfit_dropout.py": {"epochs": 21},
    "ch06/batch_norm_test.py": {"max_epochs": 5},
    "ch06/hyperparameter_optimization.py": {"optimization_trial": 10},
}

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])|(?<!\w)-?(?:nan|inf)(?!\w)")

# Runs a script as `python script.py` would (its folder first on sys.path), after seeding NumPy's
# global generator, with plt.show saving each open figure and the data of its lines and bars.
RUNNER = r"""
import json, os, runpy, sys
script, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.argv = [script]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
import numpy as np
np.random.seed(seed)
figures = []
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None

def show(*args, **kwargs):
    for number in plt.get_fignums():
        fig = plt.figure(number)
        curves = []
        for ax in fig.axes:
            for line in ax.get_lines():
                curves.append([float(v) for v in np.asarray(line.get_ydata(), dtype=float).ravel()])
            bars = [float(p.get_height()) for p in ax.patches if hasattr(p, "get_height")]
            if bars:
                curves.append(bars)
        fig.savefig(os.path.join(out, f"figure{len(figures) + 1}.png"), dpi=60)
        figures.append(curves)
    plt.close("all")

if plt is not None:
    plt.show = show
try:
    runpy.run_path(script, run_name="__main__")
finally:
    if plt is not None and plt.get_fignums():
        show()
    with open(os.path.join(out, "figures.json"), "w") as f:
        json.dump(figures, f)
"""


@dataclass
class Run:
    """One run of one script on one side."""
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    figures: list = field(default_factory=list)
    load: tuple = ()          # 1-minute load average before and after


@dataclass
class Comparison:
    script: str
    book: Run
    fastbp: Run
    printed: str              # verdict on stdout
    figures: str              # verdict on the plotted data

    @property
    def ok(self):
        return (self.book.returncode == 0 and self.fastbp.returncode == 0
                and not self.printed.startswith(("differ", "not compared"))
                and not self.figures.startswith("differ"))


# --- preparing the two copies -------------------------------------------------------------------

def rewrite_imports(text, chapter):
    """The script's import lines pointed at fastbp (``IMPORTS``); other lines unchanged."""
    def replace(match):
        module = match.group("module")
        for where, book_module, ours in IMPORTS:
            if module == book_module and where in (None, chapter):
                return f"{match.group('indent')}from {ours} import"
        return match.group(0)
    return re.sub(r"(?m)^(?P<indent>[ \t]*)from[ \t]+(?P<module>[\w.]+)[ \t]+import", replace, text)


def set_constants(text, values, where):
    """``name = <number>`` (assignment or keyword argument) set to ``values[name]`` everywhere in
    the script; a name that does not occur is an error (the book's script changed)."""
    for name, value in values.items():
        pattern = re.compile(rf"(?<![\w.])({re.escape(name)}[ \t]*=[ \t]*)[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w.])")
        text, count = pattern.subn(lambda m: f"{m.group(1)}{value}", text)
        if count == 0:
            raise ValueError(f"{where}: no '{name} = <number>' to set")
    return text


def _kind_of_checkout(book):
    """"tree" or "git" (a bare git folder); anything else is refused."""
    book = Path(book)
    if (book / "common").is_dir() and (book / "ch05").is_dir():
        return "tree"
    if (book / "objects").is_dir() and (book / "HEAD").is_file():
        return "git"
    raise ValueError(f"book: expected a checkout of the book's code (a folder holding common/ and "
                     f"ch04/ ... ch06/) or its bare git folder, got {book}")


def _extract_checkout(book, dest):
    """Copy the chapters, common/ and dataset/ of a checkout (or of a bare git folder) to dest."""
    book = Path(book)
    if _kind_of_checkout(book) == "tree":
        for name in (*CHAPTERS, "common", "dataset"):
            if (book / name).is_dir():
                shutil.copytree(book / name, dest / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pkl", "*.gz"))
        return
    archive = subprocess.run(["git", "--git-dir", str(book), "archive", "HEAD", *CHAPTERS,
                              "common", "dataset"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise ValueError(f"book: git archive failed in {book}: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryFile() as f:
        f.write(archive.stdout)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(dest, filter="data")


def discover_scripts(root):
    """Every ch04-ch06 script of the copy at ``root`` (helper modules excluded), as 'chNN/x.py'."""
    return sorted(f"{p.parent.name}/{p.name}" for chapter in CHAPTERS
                  for p in (root / chapter).glob("*.py")
                  if f"{chapter}/{p.name}" not in LIBRARY_MODULES)


def load_images(dataset, book, data_dir=None, say=print):
    """(name, dict of the book's mnist.pkl) for ``dataset`` in auto | mnist | fashion-mnist."""
    from . import datasets
    own = Path(book) / "dataset" / "mnist.pkl"
    if dataset == "auto" and own.is_file():
        say(f"data: MNIST from the checkout's {own}")
        return "MNIST", datasets._read_book_pickle(own)
    tries = {"auto": ["mnist", "fashion-mnist"], "mnist": ["mnist"], "fashion-mnist": ["fashion-mnist"]}
    problems = []
    for name in tries[dataset]:
        loader = datasets.load_mnist if name == "mnist" else datasets.load_fashion_mnist
        try:
            (x, t), (xt, tt) = loader(normalize=False, data_dir=data_dir,
                                      download=name == "mnist" and not os.environ.get("FASTBP_OFFLINE"))
        except datasets.DatasetNotFoundError as error:
            problems.append(str(error).splitlines()[0])
            continue
        label = "MNIST" if name == "mnist" else "Fashion-MNIST (standing in for MNIST)"
        say(f"data: {label}" + (f"; {problems[0]}" if problems else ""))
        return label, {"train_img": x, "train_label": t, "test_img": xt, "test_label": tt}
    raise datasets.DatasetNotFoundError("book-compare: no data: " + " / ".join(problems))


def _write_pickle(images, folder):
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, delete=False) as f:
        pickle.dump({k: images[k] for k in ("train_img", "train_label", "test_img", "test_label")}, f, -1)
    os.replace(f.name, folder / "mnist.pkl")


def prepare(book, workspace, images, scripts=None, constants=None):
    """The two copies under ``workspace`` ("book", "fastbp"); returns the scripts to run."""
    constants = constants or {}
    originals = workspace / "checkout"
    _extract_checkout(book, originals)
    found = discover_scripts(originals)
    scripts = found if not scripts else list(scripts)
    unknown = [s for s in list(scripts) + list(constants) if s not in found]
    if unknown:
        raise ValueError(f"scripts: not among the checkout's chapter 4-6 scripts: {unknown} "
                         f"(there are: {' '.join(found)})")
    for side in ("book", "fastbp"):
        root = workspace / side
        shutil.copytree(originals, root)
        for name in REPLACED if side == "fastbp" else ():
            path = root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        for path in (root / chapter / name for chapter in CHAPTERS
                     for name in sorted(os.listdir(root / chapter)) if name.endswith(".py")):
            script = f"{path.parent.name}/{path.name}"
            text = path.read_text(encoding="utf-8")
            if script in scripts and script in constants:
                text = set_constants(text, constants[script], script)
            if side == "fastbp":
                text = rewrite_imports(text, path.parent.name)
            path.write_text(text, encoding="utf-8")
        _write_pickle(images, root / "dataset")
    shutil.rmtree(originals)
    return scripts


# --- running and comparing ----------------------------------------------------------------------

def run_script(root, script, seed, env, timeout, out):
    out.mkdir(parents=True, exist_ok=True)
    before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", RUNNER, Path(script).name, str(seed), str(out)],
                              cwd=root / Path(script).parent, env=env, capture_output=True,
                              text=True, timeout=timeout)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        code = -1
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        stderr = f"timed out after {timeout} s"
    seconds = time.perf_counter() - start
    after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    figures = []
    if (out / "figures.json").is_file():
        figures = json.loads((out / "figures.json").read_text())
    (out / "stdout.txt").write_text(stdout)
    (out / "stderr.txt").write_text(stderr)
    return Run(code, seconds, stdout, stderr, figures, (before, after))


def compare_text(book, ours, rtol, atol):
    """Verdict on two printed outputs: equal / close (every number within tolerance) / differ."""
    if book == ours:
        count = len(NUMBER.findall(book))
        return f"equal ({count} numbers)"
    a, b = book.splitlines(), ours.splitlines()
    if len(a) != len(b):
        return f"differ: {len(a)} lines vs {len(b)}"
    count, beyond, max_abs, max_rel, first = 0, 0, 0.0, 0.0, None
    text = lambda line: [" ".join(part.split()) for part in NUMBER.split(line)]  # noqa: E731
    for i, (la, lb) in enumerate(zip(a, b)):
        if text(la) != text(lb):   # (NumPy pads printed arrays to the widest number)
            return f"differ: line {i + 1} has other text: {la!r} vs {lb!r}"
        for x, y in zip(map(float, NUMBER.findall(la)), map(float, NUMBER.findall(lb))):
            count += 1
            if x == y or (math.isnan(x) and math.isnan(y)):
                continue
            diff = abs(x - y)
            rel = diff / max(abs(x), abs(y))
            max_abs, max_rel = max(max_abs, diff), max(max_rel, rel)
            if not diff <= atol + rtol * abs(x):
                beyond += 1
                first = first or f"line {i + 1}: {la.strip()!r} vs {lb.strip()!r}"
    summary = f"max |diff| {max_abs:.2g}, max rel {max_rel:.2g}"
    if beyond:
        return f"differ: {beyond} of {count} numbers beyond tolerance ({summary}; first at {first})"
    return f"close: {count} numbers within tolerance ({summary})"


def compare_figures(book, ours, rtol, atol):
    if not book and not ours:
        return "-"
    shape = lambda figs: [[len(c) for c in f] for f in figs]  # noqa: E731
    if shape(book) != shape(ours):
        return f"differ: {len(book)} vs {len(ours)} figures, or other curves"
    points = beyond = 0
    max_abs = 0.0
    for fa, fb in zip(book, ours):
        for ca, cb in zip(fa, fb):
            for x, y in zip(ca, cb):
                points += 1
                if x == y or (math.isnan(x) and math.isnan(y)):
                    continue
                diff = abs(x - y)
                max_abs = max(max_abs, diff if math.isfinite(diff) else math.inf)
                if not diff <= atol + rtol * abs(x):
                    beyond += 1
    curves = sum(len(f) for f in book)
    if points == 0:
        return f"{len(book)} figure(s) without line or bar data"
    if beyond:
        return f"differ: {beyond} of {points} points beyond tolerance (max |diff| {max_abs:.2g})"
    return (f"equal ({curves} curves, {points} points)" if max_abs == 0
            else f"close ({curves} curves, {points} points, max |diff| {max_abs:.2g})")


def compare(book, scripts=None, *, quick=False, constants=None, seed=0, loss="book",
            dataset="auto", data_dir=None, images=None, timeout=3600, rtol=1e-6, atol=1e-6,
            blas_threads=None, keep=None, say=functools.partial(print, flush=True)):
    """Run the scripts on both sides and return a list of Comparison (see the module doc)."""
    constants = {**(QUICK if quick else {}), **(constants or {})}
    _kind_of_checkout(book)
    if images is None:
        label, images = load_images(dataset, book, data_dir, say)
    else:
        label = "given arrays"
    workspace = Path(tempfile.mkdtemp(prefix="fastbp-book-compare-"))
    try:
        scripts = prepare(book, workspace, images, scripts, constants)
        base = {**os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "FASTBP_OFFLINE": "1"}
        if blas_threads is not None:
            for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                base[name] = str(blas_threads)
        envs = {"book": base,
                "fastbp": {**base, "FASTBP_LOSS": loss, "FASTBP_DATA": str(workspace / "fastbp" / "dataset")}}
        say(f"{len(scripts)} scripts, seed {seed}, fastbp loss {loss!r}, data {label}"
            + (f", BLAS threads {blas_threads}" if blas_threads is not None else "")
            + (f", cut: {constants}" if constants else ""))
        results = []
        for script in scripts:
            runs = {side: run_script(workspace / side, script, seed, envs[side], timeout,
                                     workspace / "out" / side / script.replace("/", "_"))
                    for side in ("book", "fastbp")}
            b, f = runs["book"], runs["fastbp"]
            if b.returncode == 0 and f.returncode == 0:
                printed = compare_text(b.stdout, f.stdout, rtol, atol)
            else:
                printed = "not compared (a run failed)"
            result = Comparison(script, b, f, printed, compare_figures(b.figures, f.figures, rtol, atol))
            say(format_row(result))
            results.append(result)
        return results
    finally:
        if keep:
            shutil.copytree(workspace, keep, dirs_exist_ok=True)
            say(f"kept: {keep} (both copies, and out/<side>/<script>/: stdout, stderr, figures)")
        shutil.rmtree(workspace, ignore_errors=True)


# --- report -------------------------------------------------------------------------------------

HEADER = (f"{'script':<42} {'book':>8} {'fastbp':>8} {'ratio':>6}  {'ran':<10} printed numbers / figures"
          "\n(ratio: book time / fastbp time, wall clock of the whole run: start-up, imports, data)")


def _ran(result):
    sides = [name for name, run in (("book", result.book), ("fastbp", result.fastbp)) if run.returncode != 0]
    return "ok" if not sides else "FAILED: " + "+".join(sides)


def format_row(result):
    b, f = result.book.seconds, result.fastbp.seconds
    row = (f"{result.script:<42} {b:7.2f}s {f:7.2f}s {b / f if f else float('nan'):5.2f}x  "
           f"{_ran(result):<10} {result.printed}")
    if result.figures != "-":
        row += f" / figures {result.figures}"
    for name, run in (("book", result.book), ("fastbp", result.fastbp)):
        if run.returncode != 0:
            last = [line for line in run.stderr.strip().splitlines() if line.strip()][-1:] or ["?"]
            row += f"\n    {name} side failed (exit {run.returncode}): {last[0]}"
    return row


def _cpu():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(args):
    import numpy
    say = print
    say(f"fastbp book-compare: {args.book}; python {platform.python_version()}, numpy "
        f"{numpy.__version__}, {_cpu()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    constants = {}
    for item in args.set or []:
        m = re.fullmatch(r"(?P<script>[\w./]+):(?P<name>\w+)=(?P<value>[-+0-9.eE]+)", item)
        if not m:
            raise ValueError(f"--set: expected SCRIPT:NAME=NUMBER such as ch06/overfit_dropout.py:epochs=11, "
                             f"got {item!r}")
        constants.setdefault(m.group("script"), {})[m.group("name")] = m.group("value")
    results = compare(args.book, args.scripts, quick=args.quick, constants=constants, seed=args.seed,
                      loss=args.loss, dataset=args.dataset, data_dir=args.data_dir,
                      timeout=args.timeout, rtol=args.rtol, atol=args.atol,
                      blas_threads=args.blas_threads, keep=args.keep)
    say("")
    say(HEADER)
    for result in results:
        say(format_row(result))
    book_total = sum(r.book.seconds for r in results)
    ours_total = sum(r.fastbp.seconds for r in results)
    loads = [x for r in results for run in (r.book, r.fastbp) for x in run.load]
    say(f"{'total':<42} {book_total:7.2f}s {ours_total:7.2f}s {book_total / ours_total:5.2f}x  "
        f"(1-minute load average during the runs: {min(loads):.2f}-{max(loads):.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**asdict(r), "ok": r.ok} for r in results], f, indent=1)
    return 0 if all(r.ok for r in results) else 1


def add_command(subparsers):
    """The ``book-compare`` subcommand of ``fastbp``."""
    c = subparsers.add_parser("book-compare", help="run the book's ch04-ch06 scripts on its code and "
                                                   "on fastbp, compare outputs and times",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("book", help="the book's checkout (or its bare git folder)")
    c.add_argument("--scripts", nargs="+", metavar="chNN/NAME.py", help="default: all of ch04-ch06")
    c.add_argument("--quick", action="store_true", help=f"cut the long loops in both copies: {QUICK}")
    c.add_argument("--set", action="append", metavar="SCRIPT:NAME=NUMBER",
                   help="set a loop length in both copies, e.g. ch06/overfit_dropout.py:epochs=51")
    c.add_argument("--seed", type=int, default=0, help="np.random.seed before each script (both sides)")
    c.add_argument("--loss", choices=["book", "exact"], default="book",
                   help="the loss fastbp reports (FASTBP_LOSS): the book's log(y + 1e-7), or exact")
    c.add_argument("--dataset", choices=["auto", "mnist", "fashion-mnist"], default="auto",
                   help="auto: the checkout's dataset/mnist.pkl, else MNIST, else Fashion-MNIST")
    c.add_argument("--data-dir", help="where fastbp looks for the data (default $FASTBP_DATA)")
    c.add_argument("--blas-threads", type=int, help="OPENBLAS/OMP/MKL_NUM_THREADS for both sides")
    c.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    c.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance for printed numbers")
    c.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance for printed numbers")
    c.add_argument("--keep", metavar="DIR", help="keep both copies, outputs and figures in DIR")
    c.add_argument("--json", metavar="FILE", help="write the results as JSON")
    c.set_defaults(run=main)
    return c
