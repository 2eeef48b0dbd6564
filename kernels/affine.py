"""Affine kernels: out = x @ W + b and its gradients. Matmuls go to BLAS through ``np.dot``."""
import numpy as np

from ._config import jit


@jit
def affine_forward(x, W, b):
    """out = x @ W + b.   x (N, D), W (D, H), b (H,) -> (N, H)"""
    out = np.dot(np.ascontiguousarray(x), np.ascontiguousarray(W))
    n, h = out.shape
    for i in range(n):
        for j in range(h):
            out[i, j] += b[j]
    return out


@jit
def affine_backward(x, W, dout):
    """dx = dout @ W.T, dW = x.T @ dout, db = sum_n dout.   -> (dx (N, D), dW (D, H), db (H,))"""
    dout = np.ascontiguousarray(dout)
    dW, db = affine_backward_params(x, dout)
    dx = np.dot(dout, np.ascontiguousarray(W).T)
    return dx, dW, db


@jit
def affine_backward_params(x, dout):
    """affine_backward without dx (a first layer never needs it).   -> (dW (D, H), db (H,))"""
    dout = np.ascontiguousarray(dout)
    dW = np.dot(np.ascontiguousarray(x).T, dout)
    n, h = dout.shape
    db = np.zeros(h, dout.dtype)
    for i in range(n):
        for j in range(h):
            db[j] += dout[i, j]
    return dW, db
