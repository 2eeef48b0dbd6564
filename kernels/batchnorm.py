"""Batch normalisation (the book's 6.3, arXiv:1502.03167) over the rows of x (N, D).

Training mode normalises each column by the batch's mean and variance and updates the running
averages used in test mode; backward is the book's chain through xc and std. Column sums run over
the rows in float64, one row at a time (contiguous, so the loops over D vectorise).
"""
import numpy as np

from ._config import jit

EPS = 1e-6  # the book's 10e-7, added to the variance under the square root


@jit
def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum):
    """Training mode: mu = mean_n x;  xc = x - mu;  var = mean_n xc^2;  std = sqrt(var + 1e-6);
    xn = xc / std;  out = gamma * xn + beta;  running_mean' = momentum * running_mean
    + (1 - momentum) * mu, running_var' likewise with var.
    x (N, D), the others (D,) -> (out, xc, xn, std, running_mean', running_var')"""
    x = np.ascontiguousarray(x)
    n, d = x.shape
    mu = np.zeros(d, np.float64)
    for i in range(n):
        for j in range(d):
            mu[j] += x[i, j]
    for j in range(d):
        mu[j] /= n
    xc = np.empty_like(x)
    var = np.zeros(d, np.float64)
    for i in range(n):
        for j in range(d):
            c = x[i, j] - mu[j]
            xc[i, j] = c
            var[j] += c * c
    std = np.empty(d, x.dtype)
    new_mean = np.empty(d, running_mean.dtype)
    new_var = np.empty(d, running_var.dtype)
    for j in range(d):
        var[j] /= n
        std[j] = np.sqrt(var[j] + EPS)
        new_mean[j] = momentum * running_mean[j] + (1 - momentum) * mu[j]
        new_var[j] = momentum * running_var[j] + (1 - momentum) * var[j]
    xn = np.empty_like(x)
    out = np.empty_like(x)
    for i in range(n):
        for j in range(d):
            v = xc[i, j] / std[j]
            xn[i, j] = v
            out[i, j] = gamma[j] * v + beta[j]
    return out, xc, xn, std, new_mean, new_var


@jit
def batchnorm_forward_inference(x, gamma, beta, running_mean, running_var):
    """Test mode: out = gamma * (x - running_mean) / sqrt(running_var + 1e-6) + beta."""
    x = np.ascontiguousarray(x)
    n, d = x.shape
    std = np.empty(d, np.float64)
    for j in range(d):
        std[j] = np.sqrt(running_var[j] + EPS)
    out = np.empty_like(x)
    for i in range(n):
        for j in range(d):
            out[i, j] = gamma[j] * ((x[i, j] - running_mean[j]) / std[j]) + beta[j]
    return out


@jit
def batchnorm_backward(dout, gamma, xc, xn, std):
    """dbeta = sum_n dout;  dgamma = sum_n xn * dout;  dxn = gamma * dout;
    dvar = -0.5 * sum_n(dxn * xc) / std^3;  dxc = dxn / std + (2 / N) * xc * dvar;
    dx = dxc - mean_n dxc.   dout, xc, xn (N, D), gamma, std (D,) -> (dx, dgamma, dbeta)

    In float64 throughout (only the results take dout's dtype): for small batches dx is a small
    difference of large terms, and float32 intermediates would leave little of it."""
    dout, xc, xn = np.ascontiguousarray(dout), np.ascontiguousarray(xc), np.ascontiguousarray(xn)
    n, d = dout.shape
    gamma64, std64 = gamma.astype(np.float64), std.astype(np.float64)
    dbeta = np.zeros(d, np.float64)
    dgamma = np.zeros(d, np.float64)
    dxn_xc = np.zeros(d, np.float64)
    for i in range(n):
        for j in range(d):
            g = np.float64(dout[i, j])
            dbeta[j] += g
            dgamma[j] += xn[i, j] * g
            dxn_xc[j] += gamma64[j] * g * xc[i, j]
    dvar = np.empty(d, np.float64)
    for j in range(d):
        dvar[j] = -0.5 * dxn_xc[j] / (std64[j] * std64[j] * std64[j])
    # dxc is computed twice (cheap) instead of being kept in an (N, D) float64 scratch array.
    dmu = np.zeros(d, np.float64)
    for i in range(n):
        for j in range(d):
            dmu[j] += gamma64[j] * dout[i, j] / std64[j] + (2.0 / n) * xc[i, j] * dvar[j]
    dx = np.empty_like(dout)
    for i in range(n):
        for j in range(d):
            dx[i, j] = gamma64[j] * dout[i, j] / std64[j] + (2.0 / n) * xc[i, j] * dvar[j] - dmu[j] / n
    return dx, dgamma.astype(dout.dtype), dbeta.astype(dout.dtype)
