"""Input validation shared by every public entry point.

Kernels trust their input (an out-of-range label is an out-of-bounds read in compiled code), so
the layers, nets, ``fit`` and the loaders check here first. Every message names the argument, what
was expected and what was received, and where it helps, how to fix it.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe(a):
    """A short description of a value for error messages: type, dtype and shape."""
    if isinstance(a, np.ndarray):
        return f"array of dtype {a.dtype} and shape {a.shape}"
    return f"{type(a).__name__} {a!r}" if np.isscalar(a) else type(a).__name__


def float_dtype(dtype, name="dtype"):
    """np.float32 or np.float64 as a np.dtype; anything else is a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dtype is None or dt not in FLOAT_DTYPES:  # np.dtype(None) is float64
        raise TypeError(f"{name}: expected float32 or float64, got {dtype!r}")
    return dt


def as_param(name, a):
    """A parameter array (weights, biases): float32/float64 ndarray, used as given, never copied."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a float32 or float64 numpy array, got {describe(a)}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    return a


def as_float_array(name, a, dtype, copy=False):
    """Data converted to ``dtype`` (C-contiguous). Integer and lower-precision float input is
    converted, as NumPy's promotion would in the book's code; bool, complex, object and
    strings are refused. ``dtype=None`` keeps float32/float64 and makes anything else float64.
    ``copy=True`` always gives a new array, one the caller can keep as validated.

    Values that are finite but beyond ``dtype``'s range (1e39 into float32) are refused by name
    rather than silently turned into inf."""
    if not isinstance(a, np.ndarray):
        if isinstance(a, (list, tuple)) or isinstance(a, numbers.Real):
            a = np.asarray(a)
        else:
            raise TypeError(f"{name}: expected a numpy array of numbers, got {describe(a)}")
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers (float or integer dtype), got dtype {a.dtype}")
    if dtype is None:
        dtype = a.dtype if a.dtype in FLOAT_DTYPES else np.float64
    dtype = np.dtype(dtype)
    if a.dtype.kind == "f" and a.dtype.itemsize > dtype.itemsize:
        with np.errstate(over="ignore"):
            out = np.array(a, dtype=dtype, order="C")
        overflowed = np.isinf(out) & np.isfinite(a)
        if overflowed.any():
            biggest = float(np.abs(a[overflowed]).max())
            raise ValueError(f"{name}: has values up to {biggest:.2g}, beyond {dtype}'s range "
                             f"(+-{float(np.finfo(dtype).max):.2g}); use dtype=float64 or normalise "
                             f"the data")
        return out
    return np.array(a, dtype=dtype, order="C") if copy else np.ascontiguousarray(a, dtype=dtype)


def check_ndim(name, a, ndims):
    if a.ndim not in ndims:
        want = " or ".join(f"{n}-d" for n in ndims)
        raise ValueError(f"{name}: expected a {want} array, got shape {a.shape}")


def check_nonempty(name, a):
    if a.size == 0 or a.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got an empty array of shape {a.shape}")


def check_finite(name, a, hint=""):
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(f"{name}: expected finite values, got {a[where]} at index {where}{hint}")


def as_labels(name, t, n, classes):
    """Labels for ``n`` samples and ``classes`` classes -> (kind, array), the array a private copy.

    Integer class indices of shape (n,) -> ("index", int64 array); one-hot rows of shape
    (n, classes) -> ("onehot", the array). The book tells them apart by ``t.size == y.size``;
    here each form is also checked: indices are integers in [0, classes), one-hot rows are 0/1
    with exactly one 1. A single sample (n == 1) may also come as one index (a scalar) or one
    one-hot row of shape (classes,), as in the book's chapter 4 and 5 examples.

    The labels are copied first and the copy is checked and returned, so compiled code that reads
    them later (``SoftmaxWithLoss.backward``, ``fit``) reads what was checked, whatever the caller
    does to ``t`` in between: an index changed to 10**9 would be an out-of-bounds access.
    """
    if not isinstance(t, np.ndarray) and not (isinstance(t, (list, tuple))
                                              or isinstance(t, numbers.Integral)):
        raise TypeError(f"{name}: expected a numpy array of labels, got {describe(t)}")
    t = np.array(t, copy=True, order="C")
    if t.ndim == 0:
        t = t.reshape(1)
    if n == 1 and t.shape == (classes,) and classes > 1:   # one one-hot row, for one sample
        t = t.reshape(1, classes)
    if t.ndim == 2 and t.shape[1] == classes and t.shape[0] == n and t.dtype.kind in "fiub":
        if t.dtype.kind == "f":
            check_finite(name, t)
        ok = ((t == 0) | (t == 1)).all(axis=1) & (t.sum(axis=1) == 1)
        if not ok.all():
            row = int(np.argmin(ok))
            raise ValueError(f"{name}: one-hot labels need exactly one 1 and zeros elsewhere in each "
                             f"row; row {row} is {t[row].tolist()}")
        return "onehot", t
    if t.ndim == 2:
        raise ValueError(f"{name}: expected class indices of shape ({n},) or one-hot labels of shape "
                         f"({n}, {classes}), got shape {t.shape}")
    if t.ndim != 1:
        raise ValueError(f"{name}: expected class indices of shape ({n},), got shape {t.shape}")
    if t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per sample in x), got {t.shape[0]}")
    if t.dtype.kind not in "iu":
        if t.dtype.kind == "f" and np.isfinite(t).all() and (t == np.round(t)).all():
            hint = "; convert with t.astype(int)"
        else:
            hint = ""
        raise TypeError(f"{name}: class indices must have an integer dtype, got {t.dtype}{hint}")
    if t.size and (t.min() < 0 or t.max() >= classes):
        bad = t[(t < 0) | (t >= classes)][0]
        raise ValueError(f"{name}: class indices must lie in [0, {classes}), got {bad}")
    return "index", t.astype(np.int64, copy=False)


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {describe(value)}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)


def positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive number, got {describe(value)}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite positive number, got {value}")
    return float(value)
