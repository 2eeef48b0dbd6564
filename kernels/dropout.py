"""Dropout (the book's 6.4.3): keep each unit where a uniform draw exceeds the ratio.

The draws come from the caller (the layer takes them from ``np.random.rand`` as the book does, so
``np.random.seed`` repeats a run); the kernel turns them into the mask and applies it. The product
x * mask is a multiplication, not a select, so -0.0 and NaN come out as NumPy's ``x * mask``.
"""
import numpy as np

from ._config import jit


@jit
def dropout_forward(x, rand, dropout_ratio):
    """Training mode: mask = rand > dropout_ratio;  out = x * mask.   -> (out, mask)"""
    xc, rc = np.ascontiguousarray(x), np.ascontiguousarray(rand)
    out = np.empty_like(xc)
    mask = np.empty(xc.shape, np.bool_)
    xf, rf, of, mf = xc.reshape(-1), rc.reshape(-1), out.reshape(-1), mask.reshape(-1)
    for i in range(xf.size):
        keep = rf[i] > dropout_ratio
        mf[i] = keep
        of[i] = xf[i] * (1 if keep else 0)
    return out, mask


@jit
def dropout_backward(dout, mask):
    """dx = dout * mask."""
    dc, mc = np.ascontiguousarray(dout), np.ascontiguousarray(mask)
    dx = np.empty_like(dc)
    df, mf, xf = dc.reshape(-1), mc.reshape(-1), dx.reshape(-1)
    for i in range(df.size):
        xf[i] = df[i] * (1 if mf[i] else 0)
    return dx
