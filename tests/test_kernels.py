"""Every kernel equals its NumPy twin, and every backward equals the numerical gradient.

The pairs come from ``fastbp.TWINS``; ``CASES`` must hold an input maker for each, so a kernel
added without a twin, or without a case here, fails ``test_every_twin_has_a_case``.
"""
import inspect
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp.kernels as kernels
import fastbp.reference as reference
from fastbp.kernels.step import plain_sgd
from fastbp import TWINS, numerical_gradient

# Kernel vs reference: the same formulas summed in a different order (BLAS blocking, fastmath
# reassociation). Each element must agree to ``rtol`` relative to itself or to the largest element
# of the result (a sum that cancels to a small value keeps the rounding error of its big terms).
TOL = {np.float64: 1e-10, np.float32: 2e-5}
DTYPES = [np.float64, np.float32]


def layout(a, kind):
    """The same values as ``a`` in memory laid out as C, strided (every other element) or F."""
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "F":
        return np.asfortranarray(a)
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    view = wide[..., ::2]
    assert not view.flags.c_contiguous or a.shape[-1] == 1
    return view


def labels(rng, n, c):
    return rng.integers(0, c, size=n).astype(np.int64)


def onehot(rng, n, c, dtype):
    return np.eye(c, dtype=dtype)[labels(rng, n, c)]


def net(rng, sizes, dtype):
    ws = tuple((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
               for a, b in zip(sizes, sizes[1:]))
    bs = tuple((0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:])
    return ws, bs


def update_case(rng, ws, bs, rule=None, decay=None):
    """A random update rule (kernels/step.py) for weights ws, biases bs: one of the book's six
    optimizers (or ``rule``) with random hyper-parameters and state, and weight decay half of the
    time (or ``decay``)."""
    from fastbp.kernels import step
    drawn = int(rng.integers(0, 6))
    rule = drawn if rule is None else rule
    drawn = float(rng.uniform(0, 0.1)) if rng.random() < 0.5 else 0.0
    decay = drawn if decay is None else decay
    a = {step.MOMENTUM: 0.9, step.NESTEROV: 0.9, step.RMSPROP: 0.99, step.ADAM: 0.9}.get(rule, 0.0)
    hyper = np.array([rng.uniform(0.01, 0.2), a, 0.999, decay, int(rng.integers(0, 5))])
    slots = (0, 1, 1, 1, 1, 2)[rule]
    w_state, b_state = [], []
    for slot in range(2):
        for W, b in zip(ws, bs):
            shape_w, shape_b = (W.shape, b.shape) if slot < slots else ((0, 0), (0,))
            w_state.append(np.abs(rng.standard_normal(shape_w)).astype(W.dtype) * 0.01)
            b_state.append(np.abs(rng.standard_normal(shape_b)).astype(W.dtype) * 0.01)
    return rule, hyper, tuple(w_state), tuple(b_state)


def _sgd_args(rng, n, d, h, dtype, kind):
    c = 3
    ws, bs = net(rng, [d, h, h + 1, c], dtype)
    x = layout(rng.standard_normal((n + 3, d)).astype(dtype), kind)
    return (x, labels(rng, n + 3, c), rng.integers(0, n + 3, size=(4, n)), ws, bs,
            int(rng.integers(0, 3)), update_case(rng, ws, bs), np.zeros(4))


def sparse_rows(rng, n, d, dtype, zeros=0.7):
    """x (n, d) with about ``zeros`` of its entries exactly 0, as MNIST-like input."""
    x = rng.standard_normal((n, d)).astype(dtype)
    x[rng.random((n, d)) < zeros] = 0
    return x


def any_rows(rng, n, d, dtype):
    """sparse_rows as sparse as MNIST, as Fashion-MNIST or dense (the nets' kernels take the
    first layer's products on the nonzero lists or by BLAS, by density)."""
    return sparse_rows(rng, n, d, dtype, zeros=float(rng.choice([0.8, 0.5, 0.0])))


def csr(rng, n, d, dtype):
    """The CSR triple of a sparse_rows batch (made by the reference, the obviously right twin)."""
    return reference.compress_rows(sparse_rows(rng, n, d, dtype))


def _maybe_broken_onehot(rng, n, c, dtype, kind):
    """One-hot rows, sometimes with a row that is not (two ones, a 0.5, or all zeros)."""
    t = onehot(rng, n, c, dtype)
    if rng.random() < 0.5:
        row = int(rng.integers(0, n))
        t[row] = [np.ones(c), np.full(c, 0.5), np.zeros(c)][int(rng.integers(0, 3))]
    return layout(t, kind)


def _sgd_csr_args(rng, n, d, h, dtype, kind):
    c = 3
    ws, bs = net(rng, [d, h, h + 1, c], dtype)
    return (*csr(rng, n + 3, d, dtype), labels(rng, n + 3, c), rng.integers(0, n + 3, size=(4, n)),
            ws, bs, int(rng.integers(0, 3)), update_case(rng, ws, bs), np.zeros(4))


def _optimizer_case(states, hyper):
    """Arguments of an optimizer kernel: params, grads and ``states`` state tuples of four 1-d
    arrays each (sizes from the drawn shape, as a two-layer net's flattened W1 b1 W2 b2), then the
    scalars ``hyper(rng)``. The layout kind does not apply: the optimizers take flat views."""
    def make(r, n, d, h, dt, k):
        sizes = [n * d, d, d * h, h]
        arrays = lambda scale=1.0: tuple((scale * r.standard_normal(s)).astype(dt) for s in sizes)  # noqa: E731
        state = [tuple(np.abs(a) for a in arrays(0.1)) for _ in range(states)]
        return (arrays(), arrays(), *state, *hyper(r))
    return make


OPTIMIZER_CASES = {
    "sgd_update": _optimizer_case(0, lambda r: (r.uniform(1e-3, 0.5),)),
    "momentum_update": _optimizer_case(1, lambda r: (r.uniform(1e-3, 0.5), r.uniform(0, 0.99))),
    "nesterov_update": _optimizer_case(1, lambda r: (r.uniform(1e-3, 0.5), r.uniform(0, 0.99))),
    "adagrad_update": _optimizer_case(1, lambda r: (r.uniform(1e-3, 1.5),)),
    "rmsprop_update": _optimizer_case(1, lambda r: (r.uniform(1e-3, 0.5), r.uniform(0.5, 0.999))),
    "adam_update": _optimizer_case(2, lambda r: (r.uniform(1e-4, 0.3), r.uniform(0.5, 0.99),
                                                 r.uniform(0.9, 0.9999), int(r.integers(1, 60)))),
}


def _batchnorm_backward_args(r, n, d, h, dt, k):
    x = r.standard_normal((n, d)).astype(dt)
    gamma = r.uniform(0.5, 2, d).astype(dt)
    _, xc, xn, std, _, _ = reference.batchnorm_forward(x, gamma, np.zeros(d, dt), np.zeros(d, dt),
                                                       np.ones(d, dt), 0.9)
    return layout(r.standard_normal((n, d)).astype(dt), k), gamma, layout(xc, k), layout(xn, k), std


def _batchnorm_args(r, n, d, dt, k):
    return (layout((2 * r.standard_normal((n, d)) + 1).astype(dt), k), r.uniform(0.5, 2, d).astype(dt),
            r.standard_normal(d).astype(dt), r.standard_normal(d).astype(dt),
            r.uniform(0.1, 2, d).astype(dt))


# name -> f(rng, n, d, h, dtype, layout kind) -> the kernel's arguments
CASES = {
    **OPTIMIZER_CASES,
    "dropout_forward": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), layout(r.random((n, d)), k), r.uniform(0, 1)),
    "dropout_backward": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), layout(r.random((n, d)) > 0.3, k)),
    "batchnorm_forward": lambda r, n, d, h, dt, k: (*_batchnorm_args(r, n, d, dt, k), r.uniform(0, 1)),
    "batchnorm_forward_inference": lambda r, n, d, h, dt, k: _batchnorm_args(r, n, d, dt, k),
    "batchnorm_backward": _batchnorm_backward_args,
    "affine_forward": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), layout(r.standard_normal((d, h)).astype(dt), k),
        r.standard_normal(h).astype(dt)),
    "affine_backward": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), layout(r.standard_normal((d, h)).astype(dt), k),
        layout(r.standard_normal((n, h)).astype(dt), k)),
    "affine_backward_params": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), layout(r.standard_normal((n, h)).astype(dt), k)),
    "relu_forward": lambda r, n, d, h, dt, k: (layout(r.standard_normal((n, d)).astype(dt), k),),
    "relu_backward": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), layout(r.standard_normal((n, d)) <= 0, k)),
    "sigmoid_forward": lambda r, n, d, h, dt, k: (layout(8 * r.standard_normal((n, d)).astype(dt), k),),
    "sigmoid_backward": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), layout(r.random((n, d)).astype(dt), k)),
    "tanh_forward": lambda r, n, d, h, dt, k: (layout(3 * r.standard_normal((n, d)).astype(dt), k),),
    "tanh_backward": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), layout(r.uniform(-1, 1, (n, d)).astype(dt), k)),
    "softmax_cross_entropy": lambda r, n, d, h, dt, k: (
        layout(4 * r.standard_normal((n, h + 1)).astype(dt), k), labels(r, n, h + 1)),
    "softmax_cross_entropy_backward": lambda r, n, d, h, dt, k: (
        layout(r.dirichlet(np.ones(h + 1), n).astype(dt), k), labels(r, n, h + 1)),
    "softmax_cross_entropy_onehot": lambda r, n, d, h, dt, k: (
        layout(4 * r.standard_normal((n, h + 1)).astype(dt), k), layout(onehot(r, n, h + 1, dt), k)),
    "softmax_cross_entropy_onehot_backward": lambda r, n, d, h, dt, k: (
        layout(r.dirichlet(np.ones(h + 1), n).astype(dt), k), layout(onehot(r, n, h + 1, dt), k)),
    "predict_labels": lambda r, n, d, h, dt, k: (
        layout(r.standard_normal((n, d)).astype(dt), k), *net(r, [d, h, 4], dt), int(r.integers(0, 3))),
    "sgd_steps": _sgd_args,
    "compress_rows": lambda r, n, d, h, dt, k: (layout(sparse_rows(r, n, d, dt), k),),
    "csr_affine_forward": lambda r, n, d, h, dt, k: (
        *csr(r, n, d, dt), layout(r.standard_normal((d, h)).astype(dt), k), r.standard_normal(h).astype(dt)),
    "csr_affine_backward_params": lambda r, n, d, h, dt, k: (
        *csr(r, n, d, dt), d, layout(r.standard_normal((n, h)).astype(dt), k)),
    "predict_labels_csr": lambda r, n, d, h, dt, k: (
        *csr(r, n, d, dt), *net(r, [d, h, 4], dt), int(r.integers(0, 3))),
    "sgd_steps_csr": _sgd_csr_args,
    "index_labels": lambda r, n, d, h, dt, k: (
        r.integers(-1 if r.random() < 0.3 else 0, h + 2, size=n), h + 1),
    "onehot_labels": lambda r, n, d, h, dt, k: (_maybe_broken_onehot(r, n, h + 1, dt, k),),
    "net_scores": lambda r, n, d, h, dt, k: (
        layout(any_rows(r, n, d, np.float32), k), *net(r, [d, h, 4], dt), int(r.integers(0, 3))),
    "net_loss": lambda r, n, d, h, dt, k: (
        layout(any_rows(r, n, d, dt), k), labels(r, n, 4), *net(r, [d, h, h + 1, 4], dt),
        int(r.integers(0, 3))),
    "net_gradient": lambda r, n, d, h, dt, k: (
        layout(any_rows(r, n, d, np.float32), k), labels(r, n, 4), *net(r, [d, h, h + 1, 4], dt),
        int(r.integers(0, 3))),
    "net_numerical_gradient": lambda r, n, d, h, dt, k: (
        layout(any_rows(r, n, d, np.float64), k), labels(r, n, 3), *net(r, [d, h, 3], np.float64),
        int(r.integers(0, 3)), 1e-4, bool(r.integers(0, 2))),
    "net_labels": lambda r, n, d, h, dt, k: (
        layout(sparse_rows(r, n, d, np.float32), k), *net(r, [d, h, 4], dt), int(r.integers(0, 3))),
}


def copy_args(args):
    """Copies of the arrays in args, at any depth of tuples (the update rule nests its state)."""
    def copy(v):
        if isinstance(v, tuple):
            return tuple(copy(a) for a in v)
        return v.copy() if isinstance(v, np.ndarray) else v
    return tuple(copy(v) for v in args)


def assert_same(ref, got, dtype, what):
    """Recursively compare results (arrays, tuples, lists, scalars) with the dtype's tolerance."""
    if ref is None:
        assert got is None, what
        return
    if isinstance(ref, (tuple, list)):
        assert len(ref) == len(got), what
        for i, (a, b) in enumerate(zip(ref, got)):
            assert_same(a, b, dtype, f"{what}[{i}]")
        return
    if isinstance(ref, np.ndarray):
        assert isinstance(got, np.ndarray), what
        assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
        if ref.dtype.kind == "f":
            assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != {ref.dtype}"
            scale = np.abs(ref).max() if ref.size else 0.0
            np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=what)
        else:
            np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype], err_msg=what)


def test_every_twin_has_a_case():
    assert set(kernels.__all__) == set(reference.__all__)
    assert set(CASES) == set(TWINS)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_twins_have_the_same_signature(name):
    ref, kern = TWINS[name]
    assert inspect.signature(ref) == inspect.signature(getattr(kern, "py_func", kern))
    assert (ref.__doc__ or "").strip(), f"reference.{name} needs a docstring with its formula"


def test_kernels_hard_code_no_numba_flags():
    """Numba options come from kernels/_config.py only (stumpy's rule)."""
    import pathlib
    for path in pathlib.Path(kernels.__file__).parent.glob("*.py"):
        if path.name != "_config.py":
            text = path.read_text()
            assert "njit" not in text and "fastmath" not in text and "numba.jit" not in text, path


@pytest.mark.parametrize("name", sorted(TWINS))
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 9), d=st.integers(1, 13), h=st.integers(1, 7),
       dtype=st.sampled_from(DTYPES), kind=st.sampled_from(["C", "strided", "F"]),
       seed=st.integers(0, 2**32 - 1))
def test_kernel_equals_reference(name, n, d, h, dtype, kind, seed):
    ref_fn, kern_fn = TWINS[name]
    args = CASES[name](np.random.default_rng(seed), n, d, h, dtype, kind)
    ref_args, kern_args = copy_args(args), copy_args(args)
    ref = ref_fn(*ref_args)
    got = kern_fn(*kern_args)
    if name == "net_numerical_gradient":
        # central differences carry each loss's rounding (~1e-16 of a loss ~1) over 2h = 2e-4:
        # ~1e-12 absolute in every entry, however small the gradient
        for ref_part, got_part in zip(ref[:2], got[:2]):
            for a, b in zip(ref_part, got_part):
                np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-10, err_msg=name)
        assert_same(ref[2:], got[2:], dtype, name)
    else:
        assert_same(ref, got, dtype, name)
    assert_same(ref_args, kern_args, dtype, f"{name} arguments after the call")  # in-place updates


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_at_the_seed_shapes(dtype):
    """Batch 100, 784 -> 50 -> 10: the shapes the seeds train at."""
    rng = np.random.default_rng(0)
    for name in TWINS:
        n, d, h = (100, 784, 50) if name.startswith(("affine", "relu", "sigmoid", "tanh")) else (100, 50, 9)
        args = CASES[name](rng, n, d, h, dtype, "C")
        ref_args, kern_args = copy_args(args), copy_args(args)
        assert_same(TWINS[name][0](*ref_args), TWINS[name][1](*kern_args), dtype, name)
        assert_same(ref_args, kern_args, dtype, name)


@pytest.mark.parametrize("name", sorted(OPTIMIZER_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_kernels_equal_their_twins_bit_for_bit(name, dtype):
    """Element-wise formulas compiled without fastmath: the same roundings as NumPy's, float32
    included, over many steps (the updated state feeds the next step)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    args = OPTIMIZER_CASES[name](rng, 30, 7, 5, dtype, "C")
    ref_args, kern_args = copy_args(args), copy_args(args)
    ref, kern = TWINS[name]
    for step in range(20):
        grads = tuple(rng.standard_normal(g.shape).astype(dtype) for g in args[1])
        ref(ref_args[0], grads, *ref_args[2:])
        kern(kern_args[0], grads, *kern_args[2:])
        for got, want in zip(kern_args, ref_args):
            if isinstance(want, tuple):
                for a, b in zip(got, want):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} step {step}")


# --- backward == numerical gradient (float64) -----------------------------------------------

def rel_error(a, b):
    """max |a - b| / max(max |a|, max |b|): one number for the whole gradient."""
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-300)


GRAD_TOL = 1e-6


@pytest.fixture(params=range(3))
def rng(request):
    return np.random.default_rng(100 + request.param)


@pytest.mark.parametrize("n", [1, 5])
def test_affine_backward_is_the_gradient(rng, n):
    x, W, b = rng.standard_normal((n, 7)), rng.standard_normal((7, 4)), rng.standard_normal(4)
    g = rng.standard_normal((n, 4))  # L = sum(affine_forward(x, W, b) * g), so dL/dout = g
    loss = lambda _: float(np.sum(kernels.affine_forward(x, W, b) * g))  # noqa: E731
    dx, dW, db = kernels.affine_backward(x, W, g)
    assert rel_error(dx, numerical_gradient(loss, x)) < GRAD_TOL
    assert rel_error(dW, numerical_gradient(loss, W)) < GRAD_TOL
    assert rel_error(db, numerical_gradient(loss, b)) < GRAD_TOL
    dW2, db2 = kernels.affine_backward_params(x, g)
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_backward_is_the_gradient(rng, name):
    forward, backward = getattr(kernels, f"{name}_forward"), getattr(kernels, f"{name}_backward")
    x = rng.standard_normal((6, 5)) * 3
    x[np.abs(x) < 1e-2] = 0.5  # keep away from ReLU's kink, where the difference quotient straddles it
    g = rng.standard_normal(x.shape)

    def out(v):
        y = forward(v)
        return y[0] if name == "relu" else y

    loss = lambda _: float(np.sum(out(x) * g))  # noqa: E731
    y = forward(x)
    dx = backward(g, y[1] if name == "relu" else y)
    assert rel_error(dx, numerical_gradient(loss, x)) < GRAD_TOL


@pytest.mark.parametrize("n", [1, 8])
def test_softmax_cross_entropy_backward_is_the_gradient(rng, n):
    x = rng.standard_normal((n, 10)) * 3
    t = labels(rng, n, 10)
    loss = lambda _: kernels.softmax_cross_entropy(x, t)[0]  # noqa: E731
    _, y = kernels.softmax_cross_entropy(x, t)
    assert rel_error(kernels.softmax_cross_entropy_backward(y, t), numerical_gradient(loss, x)) < GRAD_TOL

    t1 = np.eye(10)[t]
    loss1 = lambda _: kernels.softmax_cross_entropy_onehot(x, t1)[0]  # noqa: E731
    assert np.isclose(loss1(None), loss(None), rtol=1e-14)
    _, y1 = kernels.softmax_cross_entropy_onehot(x, t1)
    dx1 = kernels.softmax_cross_entropy_onehot_backward(y1, t1)
    assert rel_error(dx1, numerical_gradient(loss1, x)) < GRAD_TOL


@pytest.mark.parametrize("activation", [0, 1, 2])
def test_sgd_step_follows_the_gradient(rng, activation):
    """One step of sgd_steps moves every parameter by -lr times the numerical gradient of the loss."""
    x, t = rng.standard_normal((12, 6)), labels(rng, 12, 3)
    ws, bs = net(rng, [6, 5, 3], np.float64)
    batch = rng.integers(0, 12, size=(1, 7))
    params = list(ws) + list(bs)

    def loss(_):
        losses = np.zeros(1)
        w, b = tuple(a.copy() for a in ws), tuple(a.copy() for a in bs)
        kernels.sgd_steps(x, t, batch, w, b, activation, plain_sgd(1e-300, w, b), losses)
        return losses[0]  # lr ~ 0: the loss before the update, as a function of the parameters

    numeric = [numerical_gradient(loss, p) for p in params]
    before, loss_before = [p.copy() for p in params], loss(None)
    lr, losses = 0.5, np.zeros(1)
    kernels.sgd_steps(x, t, batch, ws, bs, activation, plain_sgd(lr, ws, bs), losses)
    assert losses[0] == loss_before
    for p, p0, g in zip(list(ws) + list(bs), before, numeric):
        assert rel_error((p0 - p) / lr, g) < GRAD_TOL


def test_dropout_backward_is_the_gradient(rng):
    x, g = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    rand = rng.random((6, 5))  # the draws fixed, the mask is a constant of x
    loss = lambda _: float(np.sum(kernels.dropout_forward(x, rand, 0.4)[0] * g))  # noqa: E731
    out, mask = kernels.dropout_forward(x, rand, 0.4)
    np.testing.assert_array_equal(mask, rand > 0.4)
    np.testing.assert_array_equal(out, x * mask)
    assert rel_error(kernels.dropout_backward(g, mask), numerical_gradient(loss, x)) < GRAD_TOL


@pytest.mark.parametrize("n", [3, 7])   # (with 2 rows the output is +-1 whatever x: dx ~ 0)
def test_batchnorm_backward_is_the_gradient_in_training_mode(rng, n):
    d = 4
    x, g = rng.standard_normal((n, d)) * 2 + 1, rng.standard_normal((n, d))
    gamma, beta = rng.uniform(0.5, 2, d), rng.standard_normal(d)
    mean, var = np.zeros(d), np.ones(d)
    loss = lambda _: float(np.sum(kernels.batchnorm_forward(x, gamma, beta, mean, var, 0.9)[0] * g))  # noqa: E731
    _, xc, xn, std, _, _ = kernels.batchnorm_forward(x, gamma, beta, mean, var, 0.9)
    dx, dgamma, dbeta = kernels.batchnorm_backward(g, gamma, xc, xn, std)
    assert rel_error(dx, numerical_gradient(loss, x)) < GRAD_TOL
    assert rel_error(dgamma, numerical_gradient(loss, gamma)) < GRAD_TOL
    assert rel_error(dbeta, numerical_gradient(loss, beta)) < GRAD_TOL


def test_batchnorm_statistics_and_running_averages():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((50, 3)) * [1.0, 5.0, 0.1] + [0.0, -3.0, 10.0]
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, -1.0])
    mean, var = np.full(3, 0.5), np.full(3, 2.0)
    out, xc, xn, std, new_mean, new_var = kernels.batchnorm_forward(x, gamma, beta, mean, var, 0.9)
    np.testing.assert_allclose(xn.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(xn.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(out, gamma * xn + beta, rtol=1e-14)
    np.testing.assert_allclose(new_mean, 0.9 * 0.5 + 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(new_var, 0.9 * 2.0 + 0.1 * x.var(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(mean, 0.5)  # the running averages come back new, as the book's
    test_out = kernels.batchnorm_forward_inference(x, gamma, beta, new_mean, new_var)
    np.testing.assert_allclose(test_out, gamma * (x - new_mean) / np.sqrt(new_var + 1e-6) + beta, rtol=1e-12)


def test_predict_labels_is_the_argmax_of_the_net():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5000, 6))  # more rows than one internal chunk
    ws, bs = net(rng, [6, 8, 4], np.float64)
    h = np.maximum(x @ ws[0] + bs[0], 0) @ ws[1] + bs[1]
    np.testing.assert_array_equal(kernels.predict_labels(x, ws, bs, 0), np.argmax(h, axis=1))


def test_csr_affine_backward_params_is_the_gradient(rng):
    indptr, columns, values = csr(rng, 5, 9, np.float64)
    x = reference._densify(indptr, columns, values, 9)
    W, b, g = rng.standard_normal((9, 4)), rng.standard_normal(4), rng.standard_normal((5, 4))
    loss = lambda _: float(np.sum(kernels.csr_affine_forward(indptr, columns, values, W, b) * g))  # noqa: E731
    dW, db = kernels.csr_affine_backward_params(indptr, columns, values, 9, g)
    assert rel_error(dW, numerical_gradient(loss, W)) < GRAD_TOL
    assert rel_error(db, numerical_gradient(loss, b)) < GRAD_TOL
    np.testing.assert_allclose(dW, x.T @ g, rtol=1e-12)


# --- slice tiles: the last slice of a row, whole registers below the next narrower tile ------

def _check_round_trips(dtype, size, ns, load, store):
    """For each n in ns, a compiled ``load`` then ``store`` (simd.load and store, or load_slice
    and store_slice) through a tile of ``size`` bytes (a constant of the function, as the tile
    loops' literals are) reads lanes < n and gives 0 above, and writes lanes < n and not one
    element more."""
    import numba
    from fastbp.kernels import _simd as simd

    @numba.njit
    def round_trip(src, offset, n, dst, loaded):
        tile = load(simd.zeros(src, size), src, offset, n)
        simd.store_full(loaded, 0, tile)
        store(dst, offset, n, tile)

    lanes = size // np.dtype(dtype).itemsize
    src = np.arange(1, lanes + 8, dtype=dtype)
    for n in ns:
        dst, loaded = np.full(lanes + 8, -1, dtype), np.full(lanes, -1, dtype)
        round_trip(src, 3, n, dst, loaded)
        live = min(n, lanes)
        np.testing.assert_array_equal(loaded, np.where(np.arange(lanes) < live, src[3:3 + lanes], 0))
        want = np.full(lanes + 8, -1, dtype)
        want[3:3 + live] = src[3:3 + live]
        np.testing.assert_array_equal(dst, want, err_msg=f"{size}-byte tile, n = {n}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_slice_tiles_move_exactly_the_lanes_below_n(dtype):
    """For every n a slice of each tile width can get (more than the next narrower tile's lanes,
    up to past its own), load_slice reads lanes < n and gives 0 above, store_slice writes lanes
    < n and not one element more: its registers below the narrower width move whole, the rest
    masked."""
    from fastbp.kernels import _simd as simd
    itemsize = np.dtype(dtype).itemsize
    for size in simd.TILE_SIZES:
        narrower = max([s for s in simd.TILE_SIZES if s < size], default=0) // itemsize
        _check_round_trips(dtype, size, range(narrower + 1, size // itemsize + 3), simd.load_slice,
                           simd.store_slice)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_tiles_move_exactly_the_lanes_below_n(dtype):
    """For every n from 0 to past the tile, simd.load reads lanes < n and gives 0 above, and
    simd.store writes lanes < n and not one element more, for every tile width the kernels use
    (the 16-byte tails included): without AVX-512, store writes each register whole, masked or
    not at all, by how many of its lanes are below n."""
    from fastbp.kernels import _simd as simd
    for size in (16,) + simd.TILE_SIZES:
        _check_round_trips(dtype, size, range(0, size // np.dtype(dtype).itemsize + 3), simd.load,
                           simd.store)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", [10, 50, 100, 256, 300])
def test_padded_weights_give_the_bits_of_plain_ones(h, dtype):
    """x @ W + b from W in padded rows (as fit's copies: rows read whole, padding and all) equals
    the product from W as a plain array to the last bit, with NaN in the padding: padding lanes
    never reach an output."""
    from fastbp.kernels import sparse
    from fastbp.kernels.step import _aligned_rows
    rng = np.random.default_rng(h)
    n, d = 7, 130
    x = sparse_rows(rng, n, d, dtype, zeros=0.6)
    W, b = rng.standard_normal((d, h)).astype(dtype), rng.standard_normal(h).astype(dtype)
    padded = _aligned_rows(d, h, W, zeroed=False)
    assert padded.shape[1] > h
    padded[:] = np.nan
    padded[:, :h] = W
    columns, values = np.empty(n * d, np.int32), np.empty(n * d, dtype)
    lo, hi = np.empty(n, np.int64), np.empty(n, np.int64)
    sparse._compress_rows_into(x, 0, n, columns, values, lo, hi)
    h_below = rng.standard_normal((n, h)).astype(dtype)
    for epilogue in (sparse.STORE, sparse.STORE_RELU, sparse.STORE_RELU_MASKED):
        want, got = np.empty((n, h), dtype), np.empty((n, h), dtype)
        sparse._rows_times(lo, hi, columns, values, W, h, b, h, want, h, epilogue, h_below)
        sparse._rows_times(lo, hi, columns, values, padded, padded.shape[1], b, h, got, h, epilogue,
                           h_below)
        np.testing.assert_array_equal(got, want)
        assert np.isfinite(got).all()


# --- the sparse training step at the book's sizes (widths past one tile, many nonzeros a row) ----

BOOK_NETS = [[784, 50, 10], [300, 120, 60, 4]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 7, 8, 15, 16, 17, 50, 63, 64, 65, 784])
def test_compression_stores_exactly_the_nonzeros_and_nothing_past_them(d, dtype):
    """Each row's nonzeros (NaN among them), in column order, packed one after the other, and
    not one element written past the last: the lists are views into larger buffers filled with
    a sentinel, which must survive (a compressing store of a whole register would overwrite it)."""
    from fastbp.kernels import sparse
    rng = np.random.default_rng(d)
    x = sparse_rows(rng, 9, d, dtype, zeros=0.6)
    x[0] = 0                       # an empty row
    x[1] = 1 + rng.random(d)       # a full one
    x[2, rng.integers(0, d)] = np.nan
    nnz = int(np.count_nonzero(x))
    sentinel = -7
    values, columns = np.full(nnz + 64, sentinel, dtype), np.full(nnz + 64, sentinel, np.int32)
    indptr = np.zeros(x.shape[0] + 1, np.int64)
    assert sparse._compress_into(x, indptr, columns[:nnz], values[:nnz]) == nnz
    want = reference.compress_rows(x)
    np.testing.assert_array_equal(indptr, want[0])
    np.testing.assert_array_equal(columns[:nnz], want[1])
    np.testing.assert_array_equal(values[:nnz], want[2])   # (NaN equals NaN here)
    assert (values[nnz:] == sentinel).all() and (columns[nnz:] == sentinel).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_both_forms_of_the_compressing_store_give_the_reference_lists(dtype, monkeypatch):
    """simd.compress stores in one of three forms, chosen by the CPU it compiles for (AVX-512's
    compressing store in registers on AMD's Zen, in memory elsewhere; on AVX2, which has none, a
    permutation from a table: kernels/_simd.py _compress_store, _compress_by_table), so a
    machine's default run tests only its own. Here sparse._compress_row compiles afresh in every
    form the CPU can run (LLVM's generic compressing store runs anywhere) and packs the same rows
    of 97 columns, 256-byte tile by tile (whole tiles, then a masked tail), exactly as the
    reference lists them, into lists of exactly their length, writing nothing past the last."""
    import numba
    from fastbp.kernels import _simd, sparse
    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: simd.compress runs as NumPy, in none of its compiled forms")
    forms = {"memory": (False, False)}   # (_COMPRESS_IN_REGISTERS, _COMPRESS_BY_TABLE)
    if _simd._AVX512 and "+avx512vl" in _simd._FEATURES:
        forms["registers"] = (True, False)
    if "+avx2" in _simd._FEATURES:
        forms["table"] = (False, True)
    rng = np.random.default_rng(5)
    x = sparse_rows(rng, 40, 97, dtype, zeros=0.6)
    x[0], x[1] = 0, 1 + rng.random(97)
    x[2, 50] = np.nan
    nnz = int(np.count_nonzero(x))
    want = reference.compress_rows(x)
    for form, (in_registers, by_table) in forms.items():
        monkeypatch.setattr(_simd, "_COMPRESS_IN_REGISTERS", in_registers)
        monkeypatch.setattr(_simd, "_COMPRESS_BY_TABLE", by_table)
        # fresh and uncached: compiled at its first call, in the form set now
        compress_row = numba.njit(sparse._compress_row.py_func)

        @numba.njit
        def rows(x, indptr, columns, values):
            tile = _simd.zeros(x, 256)
            for i in range(x.shape[0]):
                indptr[i + 1] = compress_row(tile, x, i, columns, values, indptr[i])
            return indptr[-1]

        values, columns = np.full(nnz + 64, -7, dtype), np.full(nnz + 64, -7, np.int32)
        indptr = np.zeros(x.shape[0] + 1, np.int64)
        assert rows(x, indptr, columns[:nnz], values[:nnz]) == nnz, form
        # (the form asked for is the form compiled)
        asm = compress_row.inspect_asm(compress_row.signatures[0])
        if _simd._AVX512 and not by_table:   # (a compress into memory or not)
            assert bool(re.search(r"compress\w*\s+%[xyz]mm\d+, [-\w]*\(", asm)) != in_registers
        assert (_simd._LANE_TABLE in asm) == by_table, form   # (the table form reads its table)
        np.testing.assert_array_equal(indptr, want[0])
        np.testing.assert_array_equal(columns[:nnz], want[1])
        np.testing.assert_array_equal(values[:nnz], want[2])
        assert (values[nnz:] == -7).all() and (columns[nnz:] == -7).all(), form


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 15, 16, 31, 32, 63, 64, 65, 784])
def test_nonzeros_and_nonfinite_entries_are_counted_in_whole_tiles_and_tails(d, dtype):
    """Each row's nonzeros (NaN and inf among them) and the batch's NaN/inf entries, wherever they
    fall: in a whole tile, in a row's masked tail, in its last element."""
    from fastbp.kernels import sparse
    rng = np.random.default_rng(d)
    x = sparse_rows(rng, 6, d, dtype, zeros=0.6)
    x[1] = 0
    x[2, -1] = np.nan
    x[3, 0] = np.inf
    x[4, rng.integers(0, d)] = -np.inf
    counts = np.full(6, -1, np.int64)
    assert sparse._count_nonzeros(x, counts) == 3
    np.testing.assert_array_equal(counts, np.count_nonzero(x, axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 63, 64, 65, 130, 784])
def test_chunked_lists_cut_each_row_where_its_chunks_begin(d, dtype):
    """Chunks c0:c1 of every row packed from k on, and table[j, r] where row r's nonzeros at
    columns (c0 + j) * CHUNK on begin (its end last): two chunk ranges compressed apart, each in
    a region of its own (as two threads do), list every nonzero of their columns."""
    from fastbp.kernels import sparse
    rng = np.random.default_rng(d)
    x = sparse_rows(rng, 7, d, dtype, zeros=0.6)
    x[3] = 0
    x[4, :min(d, sparse.CHUNK)] = 0          # a first chunk with nothing in it
    columns, values = np.full(7 * d, -1, np.int32), np.zeros(7 * d, dtype)
    whole = sparse.chunk_count(d)
    assert whole == -(-d // sparse.CHUNK)
    cut = whole // 2
    ranges = ((0, cut, 0), (cut, whole, 7 * cut * sparse.CHUNK))
    for c0, c1, k in ranges:
        table = np.full((c1 - c0 + 1, 7), -1, np.int64)
        end = sparse._compress_chunks(x, c0, c1, columns, values, table, k)
        assert table[0, 0] == k and end == table[-1, -1] == k + np.count_nonzero(
            x[:, c0 * sparse.CHUNK:c1 * sparse.CHUNK])
        for r in range(7):
            assert r == 0 or table[0, r] == table[-1, r - 1]
            for j in range(c1 - c0):
                k0, k1 = table[j, r], table[j + 1, r]
                c = c0 + j
                inside = np.flatnonzero(x[r, c * sparse.CHUNK:(c + 1) * sparse.CHUNK]) + c * sparse.CHUNK
                np.testing.assert_array_equal(columns[k0:k1], inside)
                np.testing.assert_array_equal(values[k0:k1], x[r, inside])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d,h", [(784, 50), (784, 10), (130, 256), (64, 300), (1, 50), (300, 20), (300, 40),
                                 (200, 100), (784, 49), (784, 54), (300, 18), (300, 36)])
def test_chunked_and_column_products_are_the_row_by_row_products_bit_for_bit(d, h, dtype):
    """X @ W + b chunk by chunk adds the same numbers in the same order as row by row, and X^T D
    from the lists regrouped by column as the in-place row updates into zeros: equal to the last
    bit, at every tile width (10 to 300 columns; at float64, 49 and 50 take the forward's
    three-tile split with a 16-byte tail and 54 with a 64-byte one, 18 the column sums' two-tile
    split with a 16-byte tail and 20 with a 64-byte one; at float32, 36 and 40 those of the
    column sums), from one chunk range's lists or two (as two threads would)."""
    from fastbp.kernels import sparse
    rng = np.random.default_rng(d + h)
    n = 9
    x = sparse_rows(rng, n, d, dtype, zeros=0.7)
    x[2] = 0
    W, b = rng.standard_normal((d, h)).astype(dtype), rng.standard_normal(h).astype(dtype)
    D = rng.standard_normal((n, h)).astype(dtype)
    columns, values = np.empty(n * d, np.int32), np.empty(n * d, dtype)
    whole = sparse.chunk_count(d)
    chunks = np.empty((whole + 1, n), np.int64)
    sparse._compress_chunks(x, 0, whole, columns, values, chunks, 0)
    lo, hi = chunks[0].copy(), chunks[-1].copy()
    for bias in (b, b[:0]):
        want, got = np.empty((n, h), dtype), np.full((n, h), np.nan, dtype)
        sparse._rows_times(lo, hi, columns, values, W, h, bias, h, want, h, sparse.STORE, want)
        sparse._chunked_times(chunks, columns, values, W, h, bias, got)
        np.testing.assert_array_equal(got, want)
        padded = np.full((d, h + 24), np.nan, dtype)   # (rows wider than the tiles: read whole)
        padded[:, :h] = W
        got[:] = np.nan
        sparse._chunked_times(chunks, columns, values, padded, h + 24, bias, got)
        np.testing.assert_array_equal(got, want)
    assert np.allclose(want, x.astype(np.float64) @ W, rtol=1e-4, atol=1e-4)
    want = np.zeros((d, h), dtype)
    sparse._add_outer(sparse.cut_table(lo, hi), columns, values, D, h, want, h, h, 1.0)
    assert np.allclose(want, x.T.astype(np.float64) @ D, rtol=1e-4, atol=1e-4)
    wide = []   # into rows that hold the last tile (stored whole), chunk by chunk and row by row
    for cuts in (chunks, sparse.cut_table(lo, hi)):
        padded = np.full((d, h + 24), 7.0, dtype)
        padded[:, :h] = 0
        sparse._add_outer(cuts, columns, values, D, h, padded, h + 24, h, 1.0)
        assert (padded[:, h:] == 7.0).all()   # (the padding gets + 0)
        wide.append(padded[:, :h])
    np.testing.assert_array_equal(wide[0], wide[1])
    # (to the masked tiles' result within rounding: the float flags may compile each differently)
    assert_same(want, wide[1], dtype, "X^T D into padded rows")
    cut = whole // 2
    for ranges in (((0, whole),), ((0, cut), (cut, whole))):   # (whole, and as two threads would)
        got = np.full((d, h), np.nan, dtype)
        rows, vals = np.full(n * d, -1, np.int32), np.full(n * d, np.nan, dtype)
        k = 3   # (the lists need not begin at 0)
        for c0, c1 in ranges:
            table = np.empty((c1 - c0 + 1, n), np.int64)
            k = sparse._compress_chunks(x, c0, c1, columns, values, table, k)
            p0, p1 = c0 * sparse.CHUNK, min(c1 * sparse.CHUNK, d)
            starts = np.empty(p1 - p0 + 2, np.int64)
            sparse._column_lists(table[0], table[-1], columns, values, p0, p1, starts, rows,
                                 vals, table[0, 0])
            for j in range(p1 - p0):   # each column's entries: its nonzeros, rows increasing
                inside = np.flatnonzero(x[:, p0 + j])
                np.testing.assert_array_equal(rows[starts[j]:starts[j + 1]], inside)
                np.testing.assert_array_equal(vals[starts[j]:starts[j + 1]], x[inside, p0 + j])
            assert starts[0] == table[0, 0] and starts[p1 - p0] == table[-1, -1]
            sparse._column_outer(starts, rows, vals, D, got, h, p0, 1.0, False)
        np.testing.assert_array_equal(got, want)
    # W += a X^T D into wider rows, from D in wider rows (fit's padded copies): the last range's
    padded = rng.standard_normal((d, h + 3)).astype(dtype)
    wide = np.hstack([D, np.full((n, 5), np.nan, dtype)])
    got = padded.copy()
    sparse._column_outer(starts, rows, vals, wide, got, h, p0, -0.5, True)
    np.testing.assert_allclose(got[p0:p1, :h], padded[p0:p1, :h] - 0.5 * want[p0:p1], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(got[:p0], padded[:p0])
    np.testing.assert_array_equal(got[p1:], padded[p1:])
    np.testing.assert_array_equal(got[:, h:], padded[:, h:])


def _csr_steps_against_dense(x, t, ws, bs, batches, activation, dtype, csr_steps):
    """The dense reference step and ``csr_steps`` (sgd_steps_csr's arguments) from the same
    weights on x's rows ``batches``: the same weights, biases and losses to the dtype's tolerance."""
    steps = batches.shape[0]
    dense = (tuple(w.copy() for w in ws), tuple(b.copy() for b in bs), np.zeros(steps))
    reference.sgd_steps(x, t, batches, *dense[:2], activation, plain_sgd(0.1, ws, bs), dense[2])
    got = (tuple(w.copy() for w in ws), tuple(b.copy() for b in bs), np.zeros(steps))
    csr_steps(*kernels.compress_rows(x), t, batches, *got[:2], activation, plain_sgd(0.1, ws, bs),
              got[2])
    assert_same(dense, got, dtype, "sgd_steps_csr")


@pytest.mark.parametrize("sizes", BOOK_NETS + [[784, 10], [130, 3]])
@pytest.mark.parametrize("activation", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_steps_csr_equals_the_dense_step_at_book_sizes(sizes, activation, dtype):
    """The compiled steps on the nonzero lists take the reference's steps: two- and three-layer
    nets, and one-layer ones (whose first layer is also the last: its finishing stage ends in
    the softmax)."""
    rng = np.random.default_rng(sum(sizes) + activation)
    x = sparse_rows(rng, 200, sizes[0], dtype, zeros=0.8)
    t = labels(rng, 200, sizes[-1])
    ws, bs = net(rng, sizes, dtype)
    batches = rng.integers(0, 200, size=(6, 40))
    _csr_steps_against_dense(x, t, ws, bs, batches, activation, dtype, kernels.sgd_steps_csr)


@pytest.mark.parametrize("rule", range(6))
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_steps_csr_with_rows_regrouped_equals_the_dense_step(rule, dtype):
    """Rows of W wider than step.ROW_UPDATES_UP_TO bytes take x.T @ d from x's nonzeros regrouped
    by column, each row summed once: with each update rule, with weight decay and without, the
    reference's weights, biases, the rule's state and the losses."""
    from fastbp.kernels import step
    wide = step.ROW_UPDATES_UP_TO // np.dtype(dtype).itemsize + 3
    for decay in (0.0, 0.05):
        rng = np.random.default_rng(rule)
        x = sparse_rows(rng, 50, 70, dtype, zeros=0.7)
        t = labels(rng, 50, 3)
        ws, bs = net(rng, [70, wide, 3], dtype)
        update = update_case(rng, ws, bs, rule, decay)
        batches = rng.integers(0, 50, size=(4, 20))

        def fresh():
            rule_, hyper, w_state, b_state = update
            return (tuple(w.copy() for w in ws), tuple(b.copy() for b in bs),
                    (rule_, hyper.copy(), tuple(a.copy() for a in w_state),
                     tuple(a.copy() for a in b_state)), np.zeros(4))
        want, got = fresh(), fresh()
        reference.sgd_steps(x, t, batches, *want[:2], reference.RELU, *want[2:])
        kernels.sgd_steps_csr(*kernels.compress_rows(x), t, batches, *got[:2], reference.RELU, *got[2:])
        assert_same(want, got, dtype, f"sgd_steps_csr rule {rule} decay {decay}")


@pytest.mark.parametrize("split", [0, 1, 63, 64, 65, 129, 130])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_steps_csr_cut_anywhere_equals_the_dense_step(split, dtype):
    """The first layer's two parts (each thread's rows of W) cut at any column, at either end
    too: their sums together are the dense step's."""
    from fastbp.kernels import _sync, step
    rng = np.random.default_rng(split)
    sizes = [130, 40, 6]
    x = sparse_rows(rng, 60, sizes[0], dtype, zeros=0.7)
    t = labels(rng, 60, sizes[-1])
    ws, bs = net(rng, sizes, dtype)
    batches = rng.integers(0, 60, size=(5, 20))

    def cut_at_split(*arguments):
        step.team_steps_csr(0, _sync.alone_sync(), *step.team_arguments_csr(*arguments, split))
    _csr_steps_against_dense(x, t, ws, bs, batches, reference.RELU, dtype, cut_at_split)


@pytest.mark.parametrize("dtype,h", [(np.float32, h) for h in (1, 5, 10, 16, 17, 32)]
                         + [(np.float64, h) for h in (1, 5, 10, 16)])
def test_a_narrow_layer_reads_its_input_densely_with_the_lists_numbers(h, dtype):
    """A layer whose row of W fits one tile (sparse._reads_dense: 10 class scores) reads a hidden
    layer's output as it is: X @ W + b and W += a X^T D over a range of X's columns (a thread's
    part), the same numbers as from X's nonzero lists, from plain and from padded rows of W
    (whose padding stays as it was), and no row of W outside the range touched."""
    from fastbp.kernels import sparse
    assert sparse._reads_dense(h, np.dtype(dtype).itemsize)   # (up to 128 bytes)
    assert not sparse._reads_dense(h + 17, 8) and not sparse._reads_dense(50, np.dtype(dtype).itemsize)
    rng = np.random.default_rng(h)
    n, d = 9, 50
    x = sparse_rows(rng, n, d, dtype, zeros=0.5)
    x[2] = 0
    W, b = rng.standard_normal((d, h)).astype(dtype), rng.standard_normal(h).astype(dtype)
    D = rng.standard_normal((n, h)).astype(dtype)
    indptr, columns, values = kernels.compress_rows(x)
    lo, hi = indptr[:-1], indptr[1:]
    padded = np.full((d, h + 24), np.nan, dtype)
    padded[:, :h] = W
    for bias in (b, b[:0]):
        want = np.empty((n, h), dtype)
        sparse._rows_times(lo, hi, columns, values, W, h, bias, h, want, h, sparse.STORE, want)
        for weights, stride in ((W, h), (padded, h + 24)):
            got = np.full((n, h), np.nan, dtype)
            sparse._dense_times(x, 0, d, weights, stride, bias, got)
            np.testing.assert_array_equal(got, want)
    part = np.full((n, h), np.nan, dtype)   # (two threads' parts: the columns below 20, the rest)
    sparse._dense_times(x, 20, d, W, h, b[:0], part)
    np.testing.assert_allclose(part, x[:, 20:].astype(np.float64) @ W[20:], rtol=1e-4, atol=1e-4)
    for rows in (1, 2, 3, 6):   # (blocks of 4 rows of x, and what is left)
        got = np.full((rows, h), np.nan, dtype)
        sparse._dense_times(x[-rows:], 0, d, W, h, b[:0], got)   # (want: the last, no bias)
        np.testing.assert_array_equal(got, want[-rows:])
    want = np.zeros((d, h), dtype)
    sparse._add_outer(sparse.cut_table(lo, hi), columns, values, D, h, want, h, h, -0.5)
    for k0, k1 in ((0, d), (7, 30), (3, 5)):   # (blocks of 4 rows of W, and what is left)
        got = np.zeros((d, h), dtype)
        sparse._dense_add_outer(x, k0, k1, D, got, h, -0.5)
        np.testing.assert_array_equal(got[k0:k1], want[k0:k1])
        assert not got[:k0].any() and not got[k1:].any()
        wide = np.full((d, h + 24), 7.0, dtype)
        wide[:, :h] = 0
        sparse._dense_add_outer(x, k0, k1, D, wide, h + 24, -0.5)
        np.testing.assert_array_equal(wide[:, :h], got)
        assert (wide[:, h:] == 7.0).all()   # (the padding gets + 0)
    assert np.allclose(want, -0.5 * x.T.astype(np.float64) @ D, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("split", [0, 1, 63, 64, 65, 129, 130])
def test_chunk_cuts_find_where_each_rows_list_reaches_each_cut(split):
    """first_cut_columns: every CHUNK-th column, the split and the width, once each, increasing;
    chunk_cuts: for every row asked of a CSR dataset (empty rows, rows all below or all from the
    split among them), the first of its entries at a column >= each cut, as np.searchsorted
    finds it (0 for rows not asked); the steps refuse cuts made for another dataset or split."""
    from fastbp.kernels import sparse, step
    rng = np.random.default_rng(split)
    x = sparse_rows(rng, 40, 130, np.float32, zeros=0.7)
    x[3] = 0
    x[5, 64:] = 0
    x[6, :65] = 0
    indptr, columns, values = sparse.compress_rows(x)
    cut_columns = step.first_cut_columns(split, 130)
    assert cut_columns.tolist() == sorted({0, sparse.CHUNK, 2 * sparse.CHUNK, split, 130})
    cuts = step.chunk_cuts(indptr, columns, cut_columns, np.arange(40))
    want = [lo + np.searchsorted(columns[lo:hi], cut_columns)
            for lo, hi in zip(indptr[:-1], indptr[1:])]
    np.testing.assert_array_equal(cuts, want)
    asked = np.array([6, 3, 6, 39])
    some = step.chunk_cuts(indptr, columns, cut_columns, asked)
    np.testing.assert_array_equal(some[asked], cuts[asked])
    assert not np.delete(some, asked, axis=0).any()
    ws, bs = net(rng, [130, 7, 3], np.float32)
    arguments = (indptr, columns, values, labels(rng, 40, 3), rng.integers(0, 40, (2, 8)), ws, bs,
                 reference.RELU, step.plain_sgd(0.1, ws, bs), np.zeros(2), split)
    for wrong in (cuts[1:], cuts[:, 1:]):
        with pytest.raises(ValueError, match="a row per row of the dataset and a column per"):
            step.team_arguments_csr(*arguments, cuts=wrong)


def test_ieee_updates_stay_ieee_when_a_fastmath_step_compiles_them_first(tmp_path):
    """Numba compiles a callee whose fastmath is unset with its first caller's flags and keeps
    that code: the optimizers' bit-exact updates must say fastmath=False, or compiling the
    (fastmath) training step first makes them contract into FMAs. Fresh interpreter and cache."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import numpy as np
        from fastbp import reference
        from fastbp.kernels import optimizers, step
        p, g, s = np.zeros(5), np.ones(5), np.zeros(5)
        step._apply_rule(step.SGD, np.array([0.1, 0, 0, 0, 0.]), 1, p, g, s, s)   # compiles first
        rng = np.random.default_rng(0)
        x, grad = rng.standard_normal(210), rng.standard_normal(210)
        a, b = x.copy(), x.copy()
        optimizers.sgd_update((a,), (grad,), 0.123456789)
        reference.sgd_update((b,), (grad,), 0.123456789)
        print("same" if (a == b).all() else f"{(a != b).sum()} entries differ")
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "same"
