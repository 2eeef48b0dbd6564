"""What a run prints while it runs: fit(verbose=True), the compile notice, History's times and
plot, and lines that change in place only on a terminal."""
import io
import re
import threading
import types

import numpy as np
import pytest

from fastbp import History, TwoLayerNet, fit, progress, training
from fastbp.engine import TrainingSet
from fastbp.training import EpochRow


class Terminal(io.StringIO):
    def isatty(self):
        return True


def toy(n=300, d=10, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, np.argmax(x @ rng.standard_normal((d, c)), axis=1)


def small_net():
    np.random.seed(0)
    return TwoLayerNet(10, 16, 3, weight_init_std=0.1)


ROW = re.compile(r"^\s*\d+\.\d\d\s+\d+\s+\d\.\d{4}\s+(\d\.\d{4}|-)\s+\d+\.\d{4}\s+\d+\.\d\ds$")


def test_fit_is_quiet_by_default(capsys):
    x, t = toy()
    fit(small_net(), x, t, iters=40, batch_size=20)
    assert capsys.readouterr() == ("", "")


def test_fit_verbose_prints_the_table_and_the_times(capsys):
    x, t = toy()
    history = fit(small_net(), x, t, x[:50], t[:50], iters=40, batch_size=20, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == progress.HEADER   # (no compile notice: the kernels are compiled by now)
    rows = lines[1:-1]
    assert len(rows) == len(history.rows) == 4 and all(ROW.match(r) for r in rows), lines
    assert rows == [progress.format_row(r) for r in history.rows]
    assert re.fullmatch(r"done: 40 iterations in \d+\.\d\d s \(\d+\.\d\d s in SGD steps: [\d,]+ "
                        r"iterations/s, \d+ us/iteration; \d+\.\d\d s measuring accuracy; "
                        r"\d+\.\d\d s compiling or loading the kernels\); final train acc "
                        r"\d\.\d{4}, test acc \d\.\d{4}", lines[-1]), lines[-1]


def test_fit_verbose_must_be_a_bool():
    x, t = toy()
    with pytest.raises(TypeError, match="verbose: expected True or False, got str 'yes'"):
        fit(small_net(), x, t, iters=2, verbose="yes")


def test_the_first_call_is_timed_apart_from_the_steps(monkeypatch):
    """A clock that moves only in the steps: 100 s for compiling in the first call, 1 s per step.
    train_seconds must hold the 1 s steps after the first, compile_seconds the first call."""
    now = [0.0]
    calls = []
    real = TrainingSet.sgd_steps

    def steps(self, batches, *args):
        real(self, batches, *args)
        now[0] += len(batches) + (100.0 if not calls else 0.0)
        calls.append(len(batches))

    monkeypatch.setattr(TrainingSet, "sgd_steps", steps)
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    x, t = toy()
    history = fit(small_net(), x, t, iters=50, batch_size=20)
    assert calls[0] == 1 and sum(calls) == 50
    assert history.compile_seconds == 101.0
    assert history.train_seconds == 49.0
    assert history.iterations_per_second == 1.0
    assert history.eval_seconds == 0.0


def test_the_compile_notice_comes_while_the_first_call_is_slow(monkeypatch, capsys):
    noticed = threading.Event()
    real_steps, real_notice = TrainingSet.sgd_steps, progress.Table.compiling
    first = []

    def compiling(self):
        real_notice(self)
        noticed.set()

    def steps(self, *args):
        if not first:   # the first call "compiles" until the notice is out
            first.append(noticed.wait(60))
        real_steps(self, *args)

    monkeypatch.setattr(progress.Table, "compiling", compiling)
    monkeypatch.setattr(TrainingSet, "sgd_steps", steps)
    monkeypatch.setattr(training, "COMPILE_NOTICE_SECONDS", 0.05)
    x, t = toy()
    fit(small_net(), x, t, iters=20, batch_size=20, verbose=True)
    assert first == [True]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == progress.COMPILING and lines[1] == progress.HEADER
    assert progress.COMPILING.startswith("compiling kernels (once")


def test_no_compile_notice_when_the_first_call_is_quick(monkeypatch, capsys):
    monkeypatch.setattr(training, "COMPILE_NOTICE_SECONDS", 60)
    x, t = toy()
    fit(small_net(), x, t, iters=20, batch_size=20, verbose=True)
    assert progress.COMPILING not in capsys.readouterr().out


def test_after_says_nothing_once_cancelled():
    said = []
    with progress.after(0.01, lambda: said.append(1)) as timer:
        timer.cancel()
    threading.Event().wait(0.05)
    assert said == []
    with progress.after(0.01, None):   # no say: no thread at all
        pass


# --- \r only on a terminal ----------------------------------------------------------------------

def test_a_line_changes_in_place_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "_REDRAW_SECONDS", 0.0)
    log, tty = io.StringIO(), Terminal()
    for stream in (log, tty):
        line = progress.Line("downloading f: ", stream)
        line.show("1.0 of 9.9 MB")
        line.show("5.0 of 9.9 MB")
        line.end("9.9 MB, SHA-256 checked")
    assert log.getvalue() == "downloading f: 9.9 MB, SHA-256 checked\n"
    assert tty.getvalue().count("\r") == 4 and tty.getvalue().endswith("\n")   # drawn, 2 shown, end
    assert tty.getvalue().split("\r")[-1].rstrip() == "downloading f: 9.9 MB, SHA-256 checked"


def test_the_table_shows_the_iteration_between_rows_only_on_a_terminal():
    row = EpochRow(1.0, 10, 0.5, 0.4, 1.0, 0.1)
    log, tty = io.StringIO(), Terminal()
    for stream in (log, tty):
        table = progress.Table(stream)
        table.row(row)
        table.step(15, 100)
        table.row(row)
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == [progress.HEADER] + [progress.format_row(row)] * 2
    assert "(15 of 100 iterations)" in tty.getvalue()
    # on the terminal the in-place line is rubbed out and the row written over it
    shown = tty.getvalue().split("\n")[2].split("\r")
    assert shown[-1] == progress.format_row(row) and shown[-2].strip() == ""


# --- History.plot -----------------------------------------------------------------------------

def test_history_plot_returns_a_readable_figure():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x, t = toy()
    history = fit(small_net(), x, t, x[:50], t[:50], iters=620, batch_size=20, eval_every=15)
    fig = history.plot(title="toy")
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        loss_axes, acc_axes = fig.axes
        assert len(history.rows) > 30
        assert all(line.get_marker() in ("None", "", None) for line in acc_axes.lines)  # no markers
        low, high = acc_axes.get_ylim()
        late = [a for r, a in zip(history.rows, history.test_acc) if r.iteration >= 620 / 4]
        assert high == 1.0 and min(late) - 0.1 < low < min(late)   # zoomed to what was reached
        assert low > history.rows[0].test_acc   # the climb from chance enters from below
        assert len(loss_axes.lines) == 2   # the batch loss, faint, and its running mean
        fig.savefig(io.BytesIO(), format="png")
    finally:
        plt.close(fig)


def test_history_plot_of_a_short_run_has_markers():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    history = History(rows=[EpochRow(0.1, 1, 0.1, 0.1, 2.3, 0.1), EpochRow(1.0, 10, 0.8, 0.7, 1.0, 0.2)],
                      loss=np.linspace(2.3, 1.0, 10))
    fig = history.plot()
    try:
        assert all(line.get_marker() == "o" for line in fig.axes[1].lines)
        assert fig.axes[1].get_ylim()[0] < 0.1
    finally:
        plt.close(fig)


def test_history_plot_without_matplotlib_says_how_to_get_it(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    history = History(rows=[EpochRow(1.0, 10, 0.5, 0.4, 1.0, 0.1)], loss=np.ones(10))
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install 'fastbp\[plot\]'"):
        history.plot()
