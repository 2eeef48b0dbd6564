"""The ``fastbp`` command and the seeds' own scripts, run as a user runs them: in a subprocess."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import sigint_as_a_terminal_sends_it
from fastbp.datasets import FILE_NAMES

HERE = Path(__file__).parent


def run(*args, env=None, cwd=None, timeout=600):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "fastbp", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


ROW = re.compile(r"^\s*(\d+\.\d\d)\s+(\d+)\s+(\d\.\d{4})\s+(\d\.\d{4}|-)\s+(\d+\.\d{4})\s+(\d+\.\d\d)s$", re.M)


def test_train_on_the_shipped_digits_prints_the_epoch_table(tmp_path):
    out = run("train", "--dataset", "digits", "--iters", "300", "--hidden", "40", "--seed", "3",
              "--save", str(tmp_path / "net.npz"))
    assert out.returncode == 0, out.stderr
    assert "epoch   iter train acc  test acc     loss  elapsed" in out.stdout
    rows = ROW.findall(out.stdout)
    assert [int(r[1]) for r in rows] == [1, 16, 31, 46, 61, 76, 91, 106, 121, 136, 151, 166, 181,
                                         196, 211, 226, 241, 256, 271, 286, 300]
    final = float(rows[-1][3])
    assert final > 0.8, out.stdout  # 0.89 here after 300 steps; a broken backprop stays near 0.1
    done = re.search(r"done: 300 iterations in .* iterations/s, (\d+) us/iteration;.* test acc (\d\.\d{4})", out.stdout)
    assert done and float(done.group(2)) == final
    assert (tmp_path / "net.npz").is_file() and f"saved: {tmp_path / 'net.npz'}" in out.stdout

    ev = run("evaluate", str(tmp_path / "net.npz"))
    assert ev.returncode == 0, ev.stderr
    assert re.search(rf"digits: train acc \d\.\d{{4}}, test acc {final:.4f}", ev.stdout), ev.stdout


@pytest.mark.slow   # 3,000 steps: minutes with NUMBA_DISABLE_JIT=1
def test_the_default_run_offline_is_short_says_what_it_trained_on_and_how_to_get_mnist(tmp_path):
    """`fastbp train` with no data and no network: the shipped digits, a table that fits a
    screen, the four MNIST files and where they go; nothing made in the data folder."""
    out = run("train", env={"FASTBP_DATA": str(tmp_path), "FASTBP_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("dataset: digits, the 8x8 handwritten digits shipped with fastbp")
    assert "  MNIST download not attempted (FASTBP_OFFLINE is set)." in lines
    assert f"  To use MNIST, put these four files in {tmp_path / 'mnist'}{os.sep}:\n" in out.stdout
    assert "      " + "  ".join(FILE_NAMES) in lines
    assert "net: TwoLayerNet 64-50-10 relu, float32" in out.stdout and "iters 3,000," in out.stdout
    rows = ROW.findall(out.stdout)
    assert 10 <= len(rows) <= 20 and int(rows[-1][1]) == 3000, out.stdout
    assert float(rows[-1][3]) > 0.9, out.stdout   # a meaningful run: 0.98 here
    assert len(lines) <= 30, out.stdout
    assert lines[-1].startswith("done: 3,000 iterations in ")
    assert list(tmp_path.iterdir()) == []   # no stray mnist/ folder
    assert "train on MNIST" not in out.stdout


def test_gradcheck_falls_back_without_talking_of_training(tmp_path):
    out = run("gradcheck", "--hidden", "5", env={"FASTBP_DATA": str(tmp_path), "FASTBP_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert "To use MNIST, put these four files in" in out.stdout
    assert "train on" not in out.stdout and "training" not in out.stdout, out.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_mistyped_data_dir_is_not_created(tmp_path):
    out = run("train", "--data-dir", str(tmp_path / "typo" / "data"), "--iters", "20",
              env={"FASTBP_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("iters, rows", [("10000", 17), ("300", 21), ("100000", 17)])
def test_the_table_has_a_row_per_epoch_or_per_few_epochs_on_long_runs(iters, rows):
    """One epoch of the digits is 15 steps: 10,000 steps would print 668 rows, one per epoch."""
    from fastbp.cli import table_interval
    per_epoch = 15
    every = table_interval(per_epoch, int(iters))
    assert every % per_epoch == 0
    # rows after steps 1, 1 + every, ... (0-based i with i % every == 0), and after the last step
    assert len(range(0, int(iters), every)) + ((int(iters) - 1) % every != 0) == rows
    assert table_interval(600, 10000) == 600   # MNIST's 10,000 steps: a row per epoch, 18 rows


@pytest.mark.slow
def test_auto_takes_fashion_mnist_when_only_it_is_there(tmp_path, fashion_mnist):
    data = Path(os.environ.get("FASTBP_DATA", ""))
    if not (data / "fashion-mnist").is_dir():
        pytest.fail("FASTBP_DATA must point at a folder holding fashion-mnist/ (see conftest.py)")
    out = run("train", "--iters", "601", "--dataset", "auto", env={"FASTBP_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("dataset: Fashion-MNIST (same shapes as MNIST, clothes instead of "
                                 "digits), found locally; MNIST is not available:\n")
    assert f"To use MNIST, put these four files in {data / 'mnist'}{os.sep}:\n" in out.stdout
    rows = ROW.findall(out.stdout)
    assert [int(r[1]) for r in rows] == [1, 601] and float(rows[-1][3]) > 0.75


def test_gradcheck_prints_the_seeds_table():
    out = run("gradcheck", "--dataset", "digits", "--hidden", "10")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {m.group(1): (float(m.group(2)), float(m.group(3)))
             for m in re.finditer(r"^\s+(W1|b1|W2|b2)\s+(\S+)\s+(\S+)$", out.stdout, re.M)}
    assert list(lines) == ["W1", "b1", "W2", "b2"]
    assert all(mean < 1e-7 and rel < 1e-6 for mean, rel in lines.values()), out.stdout
    assert "OK: max relative error" in out.stdout


def test_plot_needs_matplotlib_or_draws_the_curves(tmp_path):
    png = tmp_path / "curves.png"
    out = run("train", "--dataset", "digits", "--iters", "50", "--plot", str(png))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert out.returncode != 0
        assert "--plot needs matplotlib" in out.stderr and "pip install 'fastbp[plot]'" in out.stderr
        assert "epoch" not in out.stdout  # refused before training, not after
    else:
        assert out.returncode == 0, out.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["train", "--iters", "0"], "--iters: expected a positive int, got '0'"),
    (["train", "--lr", "-1"], "--lr: expected a positive float, got '-1'"),
    (["train", "--hidden", "50,x"], "--hidden: expected sizes like 50 or 100,50, got '50,x'"),
    (["train", "--dataset", "cifar"], "--dataset: invalid choice: 'cifar'"),
    (["train", "--dataset", "digits", "--batch-size", "5000"], "--batch-size: expected at most the number of training samples of digits (1,500), got 5000"),
    (["evaluate", "missing.npz"], "missing.npz: not a net saved by `fastbp train --save`"),
])
def test_bad_arguments_get_one_clear_line(args, message, tmp_path):
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert "epoch" not in out.stdout and "net:" not in out.stdout   # refused before the run


@pytest.mark.slow   # every path on 10,000 MNIST-sized rows: many minutes with NUMBA_DISABLE_JIT=1
def test_bench_prints_every_path_for_both_nets():
    out = run("bench", "--iters", "3", "--profile")
    assert out.returncode == 0, out.stderr
    inputs = ["MNIST-like", "dense"] + (["Fashion-MNIST"] if "Fashion-MNIST" in out.stdout else [])
    for net in ("784-50-10 relu", "784-256-128-10 relu"):
        assert f"{net}, quiet: compiled training loops" in out.stdout
        assert f"{net}, quiet: the book's loop" in out.stdout
    cell = r"\s+(\d+\.\d)\s+(\d+\.\d\d)x"
    rows = re.findall(r"^  (\S.+?)" + cell * len(inputs) + "$", out.stdout, re.M)
    labels = [row[0].strip() for row in rows]
    for label in ("NumPy reference (fit on the reference backend)", "fastbp fit",
                  "book-faithful NumPy net (the book's own computations)",
                  "fastbp net (TwoLayerNet / MultiLayerNet), same loop"):
        assert labels.count(label) == 2, (label, out.stdout)
    assert all(float(us) > 0 for row in rows for us in row[1::2]), out.stdout   # (3 steps: no ratios)
    # --profile: every stage of the compiled step, for both nets, then the total
    from fastbp.bench import STAGES
    for _, label in STAGES:
        assert out.stdout.count(f"  {label} ") == 2, (label, out.stdout)
    assert len(re.findall(r"^  the whole step\s+\d+\.\d$", out.stdout, re.M)) == 2, out.stdout


def test_a_tables_paths_take_turns_and_report_their_median(monkeypatch):
    """fastbp bench's tables: the paths alternate (so a change of the machine's speed between them
    falls on all) and each cell is the median of its turns."""
    from fastbp import bench
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    calls = []

    def path(label, seconds):
        def timer(sizes, x, t, iters):
            calls.append((label, iters))
            return seconds.pop(0)
        return label, timer

    data = {"A": (None, None), "B": (None, None)}
    rows = bench._measure_in_turns([path("book", [5, 1, 2, 9, 3, 7, 7, 7, 7, 7]),
                                    path("fastbp", [1, 1, 4, 1, 1, 2, 2, 8, 2, 2])],
                                   [784, 50, 10], data, 250, bench.BOOK_TURNS)
    assert calls == [("book", 250 // bench.BOOK_TURNS), ("fastbp", 250 // bench.BOOK_TURNS)] * 10
    assert rows == [("book", {"A": 3.0, "B": 7.0}), ("fastbp", {"A": 1.0, "B": 2.0})]


def test_book_loop_times_only_the_steps_after_its_warm_up(monkeypatch):
    """fastbp bench's book loop: two steps, then WARM_SECONDS of steps, untimed (the VM's idle
    core waking after the pause between turns), then ``iters`` timed ones."""
    from fastbp import bench
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    class Net:   # each gradient call takes "one second"
        params = {"W1": np.zeros((784, 2))}
        calls = 0

        def gradient(self, x, t):
            Net.calls += 1
            clock[0] += 1.0
            return {"W1": np.zeros((784, 2))}

        def loss(self, x, t):
            return 0.0

    x, t = np.zeros((300, 784), np.float32), np.zeros(300, np.int64)
    assert bench.WARM_SECONDS < 1.0   # (so one step after the first two ends the warm-up)
    assert bench.time_book_loop(Net(), x, t, 7) == 1.0
    assert Net.calls == 2 + 1 + 7


def test_load_table_takes_quiet_and_loaded_runs_in_turns(monkeypatch):
    """fastbp bench --load's table of loaded / quiet: each path runs quiet, then with a core kept
    busy, in turns, and each cell holds the medians of both."""
    from fastbp import bench
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    calls = []

    @contextlib.contextmanager
    def busy_core():
        calls.append("busy")
        yield
        calls.append("quiet")
    monkeypatch.setattr(bench, "busy_core", busy_core)

    seconds = [1, 3, 2, 9, 1, 4, 5, 6, 5, 7, 6, 8]   # (A: quiet 1 2 1, loaded 3 9 4; B: 5 5 6, 6 7 8)

    def timer(sizes, x, t, iters):
        calls.append(iters)
        return seconds.pop(0)

    rows = bench._load_in_turns([("fit", timer)], [784, 50, 10], {"A": (None, None), "B": (None, None)}, 20)
    assert calls == [20, "busy", 20, "quiet"] * 6
    assert rows == [("fit", {"A": (1.0, 4.0), "B": (5.0, 7.0)})]


def test_version():
    import fastbp
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith(f"fastbp {fastbp.__version__} (Python ")


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["gradcheck"], ["bench"],
                                     ["book-compare"]])
def test_help_shows_the_defaults_and_no_markup(command):
    out = run(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "``" not in out.stdout
    if command == ["train"]:
        text = " ".join(out.stdout.split())
        for default in ("(default: auto)", "(default: 50)", "(default: relu)", "(default: 0)",
                        "(default: kernels)", "(default: 100)", "(default: 0.1)",
                        "(default: float32)", "(default: 10000 on MNIST"):
            assert default in text, (default, out.stdout)
        assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.slow   # 3,000 steps, twice
def test_progress_uses_carriage_returns_only_on_a_terminal():
    """Between two rows a terminal shows the iteration reached, redrawn in place; a log gets the
    rows alone."""
    pty = pytest.importorskip("pty")
    args = ["train", "--dataset", "digits", "--iters", "3000", "--eval-every", "3000"]
    piped = run(*args)
    assert piped.returncode == 0 and "\r" not in piped.stdout + piped.stderr
    import select
    pid, fd = pty.fork()
    if pid == 0:   # the child: fastbp on a terminal
        os.execv(sys.executable, [sys.executable, "-m", "fastbp", *args])
    seen = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 600)
        try:
            chunk = os.read(fd, 4096) if ready else b""
        except OSError:   # the child is gone
            chunk = b""
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"of 3,000 iterations)\r" in seen and b"done: 3,000 iterations" in seen


def test_console_script_is_installed():
    exe = shutil.which("fastbp", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert exe, "the fastbp console script is missing: install with pip install -e '.[test]'"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "gradcheck" in out.stdout


# --- the seeds' scripts, unchanged apart from imports -------------------------------------

def run_script(name):
    """Run a seed script as it is, after seeding NumPy's global generator (the scripts don't).

    The seed matters for the gradient check: a ReLU input closer to 0 than the difference step
    h = 1e-4 makes the *numerical* gradient wrong there (the quotient straddles the kink), on the
    reference path as on the kernels; with seed 0 no input is that close (|x W1| >= 1.6e-4).
    """
    script = HERE / "seed_scripts" / name
    code = f"import numpy; numpy.random.seed(0); exec(compile(open({str(script)!r}, encoding='utf-8').read(), {str(script)!r}, 'exec'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_seed_gradient_check_script_runs_unchanged(fashion_mnist):
    out = run_script("gradient_check.py")
    assert out.returncode == 0, out.stderr
    diffs = dict(re.findall(r"^(W1|b1|W2|b2):(\S+)$", out.stdout, re.M))
    assert list(diffs) == ["W1", "b1", "W2", "b2"], out.stdout
    # the seeds print 3.9e-10, 2.6e-09, 5.3e-09, 1.4e-07: the same tiny magnitudes
    assert all(float(v) < 1e-6 for v in diffs.values()), out.stdout


@pytest.mark.slow
def test_seed_training_script_runs_unchanged_and_learns(fashion_mnist):
    out = run_script("train_neuralnet.py")
    assert out.returncode == 0, out.stderr
    rows = [tuple(map(float, line.split())) for line in out.stdout.split("\n") if line.strip()]
    assert len(rows) == 17, out.stdout  # one line per epoch, as in the seeds' table
    assert rows[0][1] < 0.3 and rows[-1][1] >= 0.85, out.stdout


# --- outputs: checked before the work, written whole or not at all, named as written -----------

def test_save_without_suffix_names_the_file_it_wrote_and_evaluate_finds_it(tmp_path):
    out = run("train", "--dataset", "digits", "--iters", "20", "--save", "model", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "saved: model.npz" in out.stdout.splitlines()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]   # no temporary files left
    for name in ("model", "model.npz"):
        ev = run("evaluate", name, cwd=tmp_path)
        assert ev.returncode == 0, ev.stderr
        assert ev.stdout.startswith("model.npz: TwoLayerNet 64-50-10 relu trained on digits")


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_plot_without_suffix_names_the_file_it_wrote(tmp_path):
    out = run("train", "--dataset", "digits", "--iters", "20", "--plot", "curves", cwd=tmp_path)
    if not have_matplotlib():
        assert out.returncode != 0 and "--plot needs matplotlib" in out.stderr, out.stderr
        assert "epoch" not in out.stdout and list(tmp_path.iterdir()) == []   # refused before training
        return
    assert out.returncode == 0, out.stderr
    assert "plot: curves.png" in out.stdout.splitlines()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


@pytest.mark.parametrize("option, target, message", [
    ("--save", "missing/net.npz", "--save: cannot write missing/net.npz: the folder {tmp}/missing does not exist"),
    ("--save", "afile/net.npz", "--save: cannot write afile/net.npz: the folder {tmp}/afile does not exist"),
    ("--save", "adir.npz", "--save: cannot write adir.npz: adir.npz is a folder"),
    ("--plot", "missing/curves.png", "--plot: cannot write missing/curves.png: the folder {tmp}/missing does not exist"),
    ("--plot", "curves.xyz", "--plot: cannot draw curves.xyz: matplotlib does not know the format .xyz; "
                             "use one of "),
])
def test_unwritable_outputs_are_refused_before_training(tmp_path, option, target, message):
    (tmp_path / "afile").write_text("a file, so nothing can be created under it")
    (tmp_path / "adir.npz").mkdir()
    out = run("train", "--dataset", "digits", "--iters", "20", option, target, cwd=tmp_path)
    if "matplotlib" in message and not have_matplotlib():
        message, code = "--plot needs matplotlib", 1
    else:
        code = 2
    assert out.returncode == code
    assert out.stderr.startswith("error: " + message.format(tmp=tmp_path)), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "epoch" not in out.stdout and "dataset" not in out.stdout   # nothing was trained


def saved_digits_net(path):
    from fastbp import TwoLayerNet, cli
    np.random.seed(0)
    net = TwoLayerNet(64, 5, 10, dtype=np.float32)
    cli.save(str(path), net, "digits", "relu")
    return path.read_bytes()


def interrupted_write(file, *args, **kwargs):
    (open(file, "wb") if isinstance(file, str) else file).write(b"half a file")
    raise KeyboardInterrupt


def test_an_interrupted_save_leaves_the_previous_file_as_it_was(tmp_path, monkeypatch):
    from fastbp import TwoLayerNet, cli
    path = tmp_path / "net.npz"
    before = saved_digits_net(path)
    monkeypatch.setattr(np, "savez", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        cli.save(str(path), TwoLayerNet(64, 5, 10), "digits", "relu")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]


def test_an_interrupted_plot_leaves_the_previous_file_as_it_was(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")   # (the .[plot] extra: nothing to draw without it)
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from fastbp import History, cli
    from fastbp.training import EpochRow
    path = tmp_path / "curves.png"
    path.write_bytes(b"the previous plot")
    history = History(rows=[EpochRow(1.0, 10, 0.5, 0.4, 1.0, 0.1)], loss=np.ones(10))
    monkeypatch.setattr(Figure, "savefig", lambda self, file, **kwargs: interrupted_write(file))
    with pytest.raises(KeyboardInterrupt):
        cli.plot(str(path), history, "digits")
    assert path.read_bytes() == b"the previous plot"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


# --- evaluate: a damaged or foreign file is one clear line ----------------------------------------

def damaged(tmp_path, how):
    good = saved_digits_net(tmp_path / "good.npz")
    path = tmp_path / "bad.npz"
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(good[:len(good) // 2])
    elif how == "corrupt bytes":
        middle = bytearray(good)
        for i in range(len(good) // 3, len(good) // 3 + 64):
            middle[i] ^= 0x5A
        path.write_bytes(bytes(middle))
    elif how == "no end of archive":
        path.write_bytes(good[:-22])
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "a .npy file":
        np.save(path.with_suffix(".npy"), np.ones(3))
        path.with_suffix(".npy").rename(path)
    elif how == "an object array":
        np.savez(path, meta=np.array([{"sizes": [64, 5, 10]}], dtype=object))
    elif how == "sizes of a huge net":
        meta = {"dataset": "digits", "activation": "relu", "dtype": "float32",
                "sizes": [10**6, 10**6, 10]}
        np.savez(path, meta=json.dumps(meta), W1=np.ones((2, 2), np.float32))
    elif how == "a text file":
        path.write_text("W1,b1\n1,2\n")
    elif how in ("meta without dataset", "an unknown dataset"):
        meta = {"activation": "relu", "dtype": "float32", "sizes": [64, 5, 10]}
        if how == "an unknown dataset":
            meta["dataset"] = "cifar"
        with np.load(tmp_path / "good.npz") as f:
            np.savez(path, **{k: f[k] for k in f.files if k != "meta"}, meta=json.dumps(meta))
    return path


@pytest.mark.parametrize("how", ["empty", "truncated", "corrupt bytes", "no end of archive", "random bytes",
                                 "a .npy file", "an object array", "sizes of a huge net", "a text file",
                                 "meta without dataset", "an unknown dataset"])
def test_evaluate_a_damaged_file_gives_one_clear_line(tmp_path, how):
    path = damaged(tmp_path, how)
    out = run("evaluate", str(path), env={"FASTBP_OFFLINE": "1"}, timeout=120)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith(f"error: {path}: not a net saved by `fastbp train --save` (")
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr


# --- interrupts and warnings: one line each -----------------------------------------------------

def test_ctrl_c_during_train_exits_130_with_one_line_and_saves_nothing(tmp_path):
    """A run of 10**12 iterations (its batches and losses used to be allocated at once: 16 TB),
    interrupted once training has begun."""
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", "train", "--dataset", "digits",
                             "--iters", str(10**12), "--save", "net.npz"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_a_terminal_sends_it)
    try:
        lines = []
        while not ROW.match(line := proc.stdout.readline()):
            assert line, proc.stderr.read()
            lines.append(line)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert re.fullmatch(r"interrupted after [\d,]+ of 1,000,000,000,000 iterations; nothing saved "
                        r"\(net.npz left as they were\)\n", err), err
    assert not (tmp_path / "net.npz").exists() and list(tmp_path.iterdir()) == []


def test_warnings_are_one_line_each():
    out = run("train", "--dataset", "digits", "--iters", "300", "--lr", "20")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"warning: fit: the loss ended at \d+\.\d{4}, no better than chance for 10 "
                        r"classes \(ln 10 = 2\.3026\): the net learnt nothing\. Try a smaller learning "
                        r"rate \(lr=20 now\), normalised input, or a smaller weight_init_std\n", out.stderr), out.stderr


# --- gradcheck ------------------------------------------------------------------------------------

def test_gradcheck_excludes_entries_at_a_relu_kink_and_says_so():
    """30 digits: some hidden inputs lie within h of 0, where the central difference is wrong and
    backprop right; that used to read FAIL with a relative error of 8e-2."""
    out = run("gradcheck", "--dataset", "digits", "--samples", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    kinks = re.findall(r"^(W1|b1|W2|b2): (\d+) entr(?:y|ies) within h of a ReLU kink, excluded: "
                       r"numerical estimate unreliable there$", out.stdout, re.M)
    assert {key for key, _ in kinks} == {"W1", "b1"}, out.stdout
    assert re.search(r"^OK: max relative error \S+ \(< 1e-6\)$", out.stdout, re.M), out.stdout


def test_gradcheck_refuses_more_samples_than_there_are():
    out = run("gradcheck", "--dataset", "digits", "--samples", "5000")
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: --samples: expected at most the number of training "
                                  "samples of digits (1500), got 5000")
