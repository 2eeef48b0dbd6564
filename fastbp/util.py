"""The book's ``common/util.py`` helpers that its chapter 6 uses: ``smooth_curve`` for plotting
loss curves and ``shuffle_dataset`` for splitting off validation data."""
import numpy as np

from . import _checks

__all__ = ["smooth_curve", "shuffle_dataset"]

SMOOTH_WINDOW = 11    # the book's window length and Kaiser beta
SMOOTH_BETA = 2


def smooth_curve(x):
    """x (a list or 1-d array of at least 11 values, e.g. a loss per iteration) smoothed by a
    normalised Kaiser window (length 11, beta 2), same length as x.

    Like the book, the ends are extended before convolving: on the left by x[10], ..., x[1]
    (mirrored without the first value), on the right by x[-1], ..., x[-10] (mirrored with it).
    """
    x = _checks.as_float_array("smooth_curve: x", x, None)
    _checks.check_ndim("smooth_curve: x", x, (1,))
    n, k = x.shape[0], SMOOTH_WINDOW
    if n < k:
        raise ValueError(f"smooth_curve: x: expected at least {k} values (the smoothing window), got {n}")
    extended = np.concatenate([x[k - 1:0:-1], x, x[:-k:-1]])
    window = np.kaiser(k, SMOOTH_BETA)
    smooth = np.convolve(window / window.sum(), extended, mode="valid")
    half = k // 2
    return smooth[half:len(smooth) - half]


def shuffle_dataset(x, t):
    """(x, t) with their samples (first axis) in the same random order, drawn from NumPy's global
    generator (``np.random.permutation``) as the book does, so ``np.random.seed`` repeats it."""
    if not isinstance(x, np.ndarray) or not isinstance(t, np.ndarray):
        bad, value = ("x", x) if not isinstance(x, np.ndarray) else ("t", t)
        raise TypeError(f"shuffle_dataset: {bad}: expected a numpy array, got {_checks.describe(value)}")
    if x.ndim == 0 or t.ndim == 0 or x.shape[0] != t.shape[0]:
        raise ValueError(f"shuffle_dataset: x and t must hold the same number of samples along their "
                         f"first axis, got shapes {x.shape} and {t.shape}")
    permutation = np.random.permutation(x.shape[0])
    return x[permutation], t[permutation]
