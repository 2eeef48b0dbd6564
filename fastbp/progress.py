"""What a run prints while it runs: the table of ``fit(verbose=True)`` and ``fastbp train``, and
the progress line of a download.

A line that changes in place (``\\r``) is drawn only on a terminal: in a log or a pipe every
``\\r`` would leave its half-lines behind, so there a progress line is written once, when it ends.
"""
import sys
import threading
import time

HEADER = f"{'epoch':>6} {'iter':>6} {'train acc':>9} {'test acc':>9} {'loss':>8} {'elapsed':>8}"
COMPILING = "compiling kernels (once: later runs load them from Numba's cache)..."
_REDRAW_SECONDS = 0.1   # a line changing in place is redrawn at most this often


def is_terminal(file):
    """Whether ``file`` is an interactive terminal (False for files, pipes, notebooks' streams)."""
    try:
        return file.isatty()
    except (AttributeError, ValueError, OSError):   # no isatty, or a closed stream
        return False


def format_row(row):
    """One EpochRow as a line of the table under HEADER."""
    test = "-" if row.test_acc is None else f"{row.test_acc:.4f}"
    return (f"{row.epoch:6.2f} {row.iteration:6d} {row.train_acc:9.4f} {test:>9} "
            f"{row.loss:8.4f} {row.elapsed:7.2f}s")


def format_done(history, seconds):
    """The closing line: wall time, then where it went (steps, accuracy, compiling) and the result."""
    steps = len(history.loss)
    rate = (f"{history.iterations_per_second:,.0f} iterations/s, "
            f"{1e6 / history.iterations_per_second:.0f} us/iteration"
            if history.train_seconds > 0 else "too few to time")
    last = history.rows[-1] if history.rows else None
    result = "" if last is None else f"; final train acc {last.train_acc:.4f}" + (
        "" if last.test_acc is None else f", test acc {last.test_acc:.4f}")
    return (f"done: {steps:,} iterations in {seconds:.2f} s ({history.train_seconds:.2f} s in SGD "
            f"steps: {rate}; {history.eval_seconds:.2f} s measuring accuracy; "
            f"{history.compile_seconds:.2f} s compiling or loading the kernels){result}")


class Line:
    """One line of progress on ``file``: on a terminal it is drawn at once and redrawn in place
    by ``show``; elsewhere only ``end`` writes it, whole."""

    def __init__(self, text, file=None):
        self.text, self.file = text, sys.stderr if file is None else file
        self.terminal = is_terminal(self.file)
        self._width, self._drawn = 0, 0.0
        if self.terminal:
            self._draw("")

    def _draw(self, status, end=""):
        line = self.text + status
        pad = " " * max(0, self._width - len(line))   # rub out the end of a longer previous line
        self._width = len(line)
        print(("\r" if self.terminal else "") + line + pad, end=end, file=self.file, flush=True)

    def show(self, status):
        now = time.monotonic()
        if self.terminal and now - self._drawn >= _REDRAW_SECONDS:
            self._drawn = now
            self._draw(status)

    def end(self, status=""):
        self._draw(status, end="\n")


class Table:
    """The table of a training run, printed as ``fit`` goes: the header with the first row, a row
    per evaluation, a closing line; on a terminal also the iteration reached between rows."""

    def __init__(self, file=None):
        self.file = sys.stdout if file is None else file
        self._header = False
        self._status = None

    def _print(self, text):
        if self._status is not None:      # the in-place line gives way to the text
            print("\r" + " " * self._status + "\r", end="", file=self.file)
            self._status = None
        print(text, file=self.file, flush=True)

    def compiling(self):
        self._print(COMPILING)

    def step(self, done, iters):
        """Between rows: ``done`` of ``iters`` steps taken (shown on a terminal only)."""
        if is_terminal(self.file):
            text = f"{'':>6} {done:6d}   ({done:,} of {iters:,} iterations)"
            print("\r" + text, end="", file=self.file, flush=True)
            self._status = len(text)

    def row(self, row):
        if not self._header:
            self._print(HEADER)
            self._header = True
        self._print(format_row(row))

    def done(self, history, seconds):
        self._print(format_done(history, seconds))


class after:
    """``say()`` from another thread if the body of ``with after(seconds, say):`` (or the time
    until ``cancel()``) lasts longer than ``seconds``; never once the body is over. With ``say``
    None it does nothing (and starts no thread)."""

    def __init__(self, seconds, say):
        self._timer = None if say is None else threading.Timer(seconds, say)
        if self._timer is not None:
            self._timer.daemon = True

    def __enter__(self):
        if self._timer is not None:
            self._timer.start()
        return self

    def cancel(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()   # a say() already under way finishes before the caller goes on

    def __exit__(self, *exc):
        self.cancel()
