"""Curves of a training run: ``History.plot()`` and ``fastbp train --plot``.

Readable for any length: the noisy batch loss is drawn faint under its running mean; markers
only when there are few evaluations; the accuracy axis spans what the run reached after its
first quarter (the climb from chance enters from below), so 0.95 and 0.98 look different.
"""
import numpy as np

_MARKERS_UP_TO = 30   # evaluation rows drawn with markers; more would blot the lines out


def _running_mean(values, width):
    """Mean of each ``width`` consecutive values, placed at the window's last index."""
    sums = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    return (sums[width:] - sums[:-width]) / width


def _accuracy_floor(rows, accuracies):
    """The bottom of the accuracy axis: the lowest accuracy after the first quarter of the run
    (all of it for short runs), less a margin of a tenth of what is left to 1."""
    late = [a for r, a in zip(rows, accuracies)
            if a is not None and (len(rows) <= 4 or r.iteration >= rows[-1].iteration / 4)]
    low = min(late)
    return max(0.0, low - max(0.1 * (1.0 - low), 0.005))


def plot_history(history, title=None):
    """Two panels: the batch loss per iteration, and train and test accuracy per epoch; returns
    the matplotlib Figure. Needs matplotlib (pip install 'fastbp[plot]')."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib, which is not installed: "
                          "pip install 'fastbp[plot]' (or pip install matplotlib)") from None
    if not history.rows or history.loss is None or len(history.loss) == 0:
        raise ValueError("history: nothing to plot, the run has no steps or no evaluation rows")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    steps = np.arange(1, len(history.loss) + 1)
    width = len(history.loss) // 50
    if width >= 2:
        left.plot(steps, history.loss, lw=0.5, alpha=0.3, color="C0", label="batch loss")
        left.plot(steps[width - 1:], _running_mean(history.loss, width), lw=1.5, color="C0",
                  label=f"mean of {width} steps")
        left.legend(loc="upper right", frameon=False, fontsize="small")
    else:
        left.plot(steps, history.loss, lw=1, color="C0")
    left.set(xlabel="iteration", ylabel="batch loss", title="loss", ylim=(0, None))
    left.grid(alpha=0.3)

    rows = history.rows
    epochs = [r.epoch for r in rows]
    marker = {"marker": "o", "markersize": 3} if len(rows) <= _MARKERS_UP_TO else {}
    right.plot(epochs, history.train_acc, color="C1", label="train", **marker)
    lowest = [_accuracy_floor(rows, history.train_acc)]
    if rows[0].test_acc is not None:
        right.plot(epochs, history.test_acc, color="C2", ls="--", label="test", **marker)
        lowest.append(_accuracy_floor(rows, history.test_acc))
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(min(lowest), 1.0))
    right.grid(alpha=0.3)
    right.legend(loc="lower right", frameon=False, fontsize="small")
    if title:
        fig.suptitle(title)
    return fig
