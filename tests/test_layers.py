"""The book's layers: the seeds' examples, the drop-in behaviour, both backends, bad input."""
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import AddLayer, Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss, Tanh, use_backend
from fastbp.gradcheck import numerical_gradient


def test_apple_orange_example_matches_the_seed_digit_for_digit():
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()
    price = mul_tax.forward(add.forward(mul_apple.forward(apple, apple_num),
                                        mul_orange.forward(orange, orange_num)), tax)
    d_all, d_tax = mul_tax.backward(1)
    d_apple_price, d_orange_price = add.backward(d_all)
    d_orange, d_orange_num = mul_orange.backward(d_orange_price)
    d_apple, d_apple_num = mul_apple.backward(d_apple_price)
    # what seed 000 prints, as Python prints it
    assert (str(price), str(d_apple), str(d_apple_num), str(d_orange), str(d_orange_num), str(d_tax)) == \
        ("715.0000000000001", "2.2", "110.00000000000001", "3.3000000000000003", "165.0", "650")
    # and the rounded values of seed 002
    assert (int(price), d_apple, int(d_apple_num), int(d_orange_num), d_tax) == (715, 2.2, 110, 165, 650)
    assert round(d_orange, 10) == 3.3


def test_mul_layer_on_vectors_is_the_hadamard_node():
    x, y = np.array([1.0, 3.0, 2.0]), np.array([4.0, 5.0, 3.0])
    layer = MulLayer()
    np.testing.assert_array_equal(layer.forward(x, y), [4.0, 15.0, 6.0])
    g = np.array([1.0, 10.0, 100.0])
    dx, dy = layer.backward(g)
    np.testing.assert_array_equal(dx, g * y)
    np.testing.assert_array_equal(dy, g * x)


def test_broadcast_nodes_return_gradients_in_each_inputs_shape():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal(3)  # y broadcast over rows, like a bias
    for layer, dfdx, dfdy in [(MulLayer(), lambda: y, lambda: x), (AddLayer(), lambda: 1, lambda: 1)]:
        out = layer.forward(x, y)
        g = rng.standard_normal(out.shape)
        dx, dy = layer.backward(g)
        assert dx.shape == x.shape and dy.shape == y.shape
        np.testing.assert_allclose(dx, g * dfdx())
        np.testing.assert_allclose(dy, (g * dfdy()).sum(axis=0))
    col = rng.standard_normal((4, 1))
    m = MulLayer()
    m.forward(x, col)
    assert m.backward(np.ones((4, 3)))[1].shape == (4, 1)


# What PyTorch gives, reasoned out (torch is not a dependency): for out = x * y with x a 0-d tensor
# (requires_grad) and y of shape S, out.backward(g) leaves x.grad = (g * y).sum(), a 0-d tensor,
# and y.grad = g * x of shape S; for y of shape (3,) broadcast against (4, 3), y.grad is
# (g * x).sum(0), shape (3,); for x + y, the same with the local derivative 1. A Python number
# here gets a Python number, the sum.

@pytest.mark.parametrize("scalar", [2.5, 3, np.float64(2.5)], ids=["float", "int", "np.float64"])
@pytest.mark.parametrize("side", ["x", "y"])
def test_a_scalar_times_an_array_gets_the_sum_as_its_gradient(scalar, side):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 3))
    layer = MulLayer()
    out = layer.forward(scalar, a) if side == "x" else layer.forward(a, scalar)
    np.testing.assert_array_equal(out, scalar * a)
    d_first, d_second = layer.backward(g)
    d_scalar, d_array = (d_first, d_second) if side == "x" else (d_second, d_first)
    assert np.ndim(d_scalar) == 0 and not isinstance(d_scalar, np.ndarray)
    assert type(d_scalar) is (type(scalar) if isinstance(scalar, np.generic) else float)
    assert d_scalar == pytest.approx((g * a).sum(), rel=1e-14)
    np.testing.assert_array_equal(d_array, g * scalar)
    add = AddLayer()
    add.forward(scalar, a) if side == "x" else add.forward(a, scalar)
    d_first, d_second = add.backward(g)
    d_scalar, d_array = (d_first, d_second) if side == "x" else (d_second, d_first)
    assert np.ndim(d_scalar) == 0 and not isinstance(d_scalar, np.ndarray)
    assert d_scalar == pytest.approx(g.sum(), rel=1e-14)
    np.testing.assert_array_equal(d_array, g)


def test_a_0d_array_gets_a_0d_array_gradient():
    x, y = np.array(2.0), np.arange(6.0).reshape(2, 3)
    layer = MulLayer()
    layer.forward(x, y)
    dx, dy = layer.backward(np.ones((2, 3)))
    assert isinstance(dx, np.ndarray) and dx.shape == () and dx == 15.0
    np.testing.assert_array_equal(dy, np.full((2, 3), 2.0))


def test_lists_multiply_and_add_element_wise_like_arrays():
    mul, add = MulLayer(), AddLayer()
    np.testing.assert_array_equal(mul.forward([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), [4.0, 10.0, 18.0])
    dx, dy = mul.backward([1.0, 1.0, 10.0])
    np.testing.assert_array_equal(dx, [4.0, 5.0, 60.0])
    np.testing.assert_array_equal(dy, [1.0, 2.0, 30.0])
    np.testing.assert_array_equal(mul.forward([1, 2], 3), [3, 6])        # not [1, 2, 1, 2, 1, 2]
    dx, d3 = mul.backward(1)
    np.testing.assert_array_equal(dx, [3, 3])
    assert d3 == 3 and type(d3) is int
    np.testing.assert_array_equal(add.forward([1.0, 2.0], [3.0, 4.0]), [4.0, 6.0])   # not [1, 2, 3, 4]
    dx, dy = add.backward(np.array([0.5, 2.0]))
    np.testing.assert_array_equal(dx, [0.5, 2.0])
    np.testing.assert_array_equal(dy, [0.5, 2.0])
    np.testing.assert_array_equal(add.forward((1.0, 2.0), 10.0), [11.0, 12.0])
    dx, d10 = add.backward([1.0, 1.0])
    assert isinstance(dx, np.ndarray) and d10 == 2.0 and type(d10) is float


def test_upstream_of_the_wrong_shape_is_refused_by_name():
    layer = MulLayer()
    layer.forward(np.ones((2, 3)), 2.0)
    with pytest.raises(ValueError, match=r"MulLayer.backward: dout must have the shape of forward's "
                                         r"output \(2, 3\) \(or broadcast to it\), got \(4,\)"):
        layer.backward(np.ones(4))
    add = AddLayer()
    with pytest.raises(RuntimeError, match="AddLayer.backward: call forward first"):
        add.backward(1.0)


@pytest.fixture(params=["kernels", "reference"])
def backend(request):
    with use_backend(request.param):
        yield request.param


def test_relu_mask_and_gradient(backend):
    x = np.array([[1.0, -0.5], [-2.0, 3.0]])
    layer = Relu()
    np.testing.assert_array_equal(layer.forward(x), [[1.0, 0.0], [0.0, 3.0]])
    np.testing.assert_array_equal(layer.mask, [[False, True], [True, False]])
    np.testing.assert_array_equal(layer.backward(np.full((2, 2), 7.0)), [[7.0, 0.0], [0.0, 7.0]])


@pytest.mark.parametrize("cls, f, df", [
    (Sigmoid, lambda x: 1 / (1 + np.exp(-x)), lambda y: y * (1 - y)),
    (Tanh, np.tanh, lambda y: 1 - y * y)])
def test_sigmoid_and_tanh(backend, cls, f, df):
    x = np.linspace(-5, 5, 12).reshape(3, 4)
    layer = cls()
    y = layer.forward(x)
    np.testing.assert_allclose(y, f(x), rtol=1e-14)
    np.testing.assert_allclose(layer.out, y)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), df(y), rtol=1e-12)  # FMA: 1 - y*y cancels


def test_affine_keeps_the_callers_arrays_and_sees_in_place_updates(backend):
    W, b = np.ones((3, 2)), np.zeros(2)
    layer = Affine(W, b)
    assert layer.W is W and layer.b is b
    x = np.ones((1, 3))
    np.testing.assert_array_equal(layer.forward(x), [[3.0, 3.0]])
    W -= 1.0  # the user's SGD loop: params[key] -= lr * grad
    b += 5.0
    np.testing.assert_array_equal(layer.forward(x), [[5.0, 5.0]])


def test_affine_upcasts_input_to_the_weights_dtype_and_never_casts_weights(backend):
    W, b = np.full((4, 2), 0.1), np.zeros(2)
    out = Affine(W, b).forward(np.ones((2, 4), dtype=np.float32))  # the book's loader gives float32
    assert out.dtype == np.float64 and W.dtype == np.float64
    W32, b32 = W.astype(np.float32), b.astype(np.float32)
    layer = Affine(W32, b32)
    assert layer.forward(np.ones((2, 4), dtype=np.float64)).dtype == np.float32
    assert layer.forward(np.ones((2, 4), dtype=np.uint8)).dtype == np.float32


def test_affine_flattens_nd_input_and_restores_dx_shape(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 1, 2, 3))
    W, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    layer = Affine(W, b)
    out = layer.forward(x)
    np.testing.assert_allclose(out, x.reshape(5, 6) @ W + b, rtol=1e-12)
    dout = rng.standard_normal((5, 4))
    dx = layer.backward(dout)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, (dout @ W.T).reshape(x.shape), rtol=1e-12)
    np.testing.assert_allclose(layer.dW, x.reshape(5, 6).T @ dout, rtol=1e-12)
    np.testing.assert_allclose(layer.db, dout.sum(axis=0), rtol=1e-12)
    assert layer.backward(dout, need_dx=False) is None
    one = layer.forward(x[0].ravel())  # a single 1-d sample gives a 1-d output
    assert one.shape == (4,) and layer.backward(np.ones(4)).shape == (6,)


def test_softmax_with_loss_index_and_onehot_labels_agree(backend):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 10))
    t = rng.integers(0, 10, 6)
    a, b = SoftmaxWithLoss(), SoftmaxWithLoss()
    la, lb = a.forward(x, t), b.forward(x, np.eye(10)[t])
    assert la == pytest.approx(lb, rel=1e-14)
    assert a.loss == la and a.t is t
    y = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a.y, y, rtol=1e-13)
    assert la == pytest.approx(-np.mean(np.log(y[np.arange(6), t])), rel=1e-12)
    np.testing.assert_allclose(a.backward(), (y - np.eye(10)[t]) / 6, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(a.backward(dout=5), a.backward())  # the book ignores dout
    np.testing.assert_allclose(b.backward(), a.backward(), rtol=1e-12, atol=1e-16)
    loss = lambda _: SoftmaxWithLoss().forward(x, t)  # noqa: E731
    g = numerical_gradient(loss, x)
    assert np.abs(a.backward() - g).max() / np.abs(g).max() < 1e-6


def test_layers_give_the_same_results_on_both_backends():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    W, b = rng.standard_normal((5, 4)), rng.standard_normal(4)
    t = rng.integers(0, 4, 7)
    results = {}
    for name in ("kernels", "reference"):
        with use_backend(name):
            aff, act, last = Affine(W, b), Tanh(), SoftmaxWithLoss()
            loss = last.forward(act.forward(aff.forward(x)), t)
            dx = aff.backward(act.backward(last.backward()))
            results[name] = (loss, dx, aff.dW, aff.db)
    for got, ref in zip(results["kernels"], results["reference"]):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)


def test_backend_switch():
    assert fastbp.get_backend() == "kernels"
    with use_backend("reference"):
        assert fastbp.get_backend() == "reference"
    assert fastbp.get_backend() == "kernels"
    with pytest.raises(ValueError, match="backend: expected one of"):
        with use_backend("cuda"):
            pass


# --- bad input: each one a clear ValueError / TypeError naming the argument -------------------

def _affine():
    return Affine(np.ones((3, 2)), np.zeros(2))


@pytest.mark.parametrize("call, error, match", [
    (lambda: _affine().forward(np.ones((2, 4))), ValueError, r"x has 4 features .* W expects 3"),
    (lambda: _affine().forward(np.ones((0, 3))), ValueError, r"x: expected at least one sample"),
    (lambda: _affine().forward(np.ones((2, 3), dtype=bool)), TypeError, r"x: expected real numbers .* bool"),
    (lambda: _affine().forward(np.array([["a", "b", "c"]])), TypeError, r"x: expected real numbers"),
    (lambda: _affine().forward(np.array([[1, None, 2]], dtype=object)), TypeError, r"dtype object"),
    (lambda: _affine().forward("x"), TypeError, r"x: expected a numpy array of numbers, got str"),
    (lambda: Affine(np.ones((3, 2), dtype=np.int64), np.zeros(2)), TypeError, r"W: expected dtype float32 or float64"),
    (lambda: Affine([[1.0]], np.zeros(1)), TypeError, r"W: expected a float32 or float64 numpy array, got list"),
    (lambda: Affine(np.ones((3, 2)), np.zeros(3)).forward(np.ones((1, 3))), ValueError, r"b of shape \(H,\)"),
    (lambda: _affine().backward(np.ones((1, 2))), RuntimeError, r"call forward first"),
    (lambda: Relu().backward(np.ones(2)), RuntimeError, r"call forward first"),
    (lambda: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([0, 3])), ValueError, r"t: class indices must lie in \[0, 3\), got 3"),
    (lambda: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([0, -1])), ValueError, r"got -1"),
    (lambda: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([0.0, 1.0])), TypeError, r"integer dtype, got float64; convert"),
    (lambda: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([0, 1, 2])), ValueError, r"expected 2 labels .* got 3"),
    (lambda: SoftmaxWithLoss().forward(np.ones((2, 3)), np.eye(4)[:2]), ValueError, r"one-hot labels of shape \(2, 3\), got shape \(2, 4\)"),
    (lambda: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([[1, 1, 0], [0, 0, 1]])), ValueError, r"row 0 is \[1, 1, 0\]"),
    (lambda: SoftmaxWithLoss().forward(np.ones((2, 3)), np.array([[0.5, 0.5, 0], [0, 0, 1]])), ValueError, r"exactly one 1"),
    (lambda: SoftmaxWithLoss().forward(np.ones((2, 3, 1)), np.array([0, 1])), ValueError, r"expected a 1-d or 2-d array"),
])
def test_bad_input_is_refused_clearly(backend, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_backward_checks_dout_shape(backend):
    layer = _affine()
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dout must have the shape of forward's output \(2, 2\), got \(3, 2\)"):
        layer.backward(np.ones((3, 2)))
    relu = Relu()
    relu.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Relu.backward: dout must have the shape"):
        relu.backward(np.ones((3, 2)))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy twins' own
def test_nan_and_inf_go_through_layers_as_in_numpy_with_one_warning(backend):
    """A diverging run is not stopped: the layer computes as NumPy (the book) would and warns once."""
    W = np.ones((3, 2))
    layer = Affine(W, np.zeros(2))
    W[1, 1] = np.nan
    with pytest.warns(RuntimeWarning, match=r"Affine.forward: x @ W \+ b has NaN or Inf values .*"
                                            r"training diverged\? Lower the learning rate"):
        out = layer.forward(np.ones((1, 3)))
    np.testing.assert_array_equal(out, [[3.0, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # once per layer: no second warning
        out = layer.forward(np.array([[1.0, np.inf, 1.0]]))
        dx = layer.backward(np.ones((1, 2)))
    np.testing.assert_array_equal(out, [[np.inf, np.nan]])
    assert np.isnan(dx[0, 1]) and np.isinf(layer.dW[1]).all()

    last = SoftmaxWithLoss()
    with pytest.warns(RuntimeWarning, match=r"SoftmaxWithLoss.forward: the loss is NaN or Inf"):
        loss = last.forward(np.array([[np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]]), np.array([0, 2]))
    assert np.isnan(loss) and np.isnan(last.y[0]).all() and np.isfinite(last.y[1]).all()
    assert np.isnan(last.backward()[0]).all()
    with pytest.raises(ValueError, match=r"t: class indices must lie in"):   # labels stay checked
        last.forward(np.full((1, 3), np.nan), np.array([3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SoftmaxWithLoss().forward(np.array([[0.0, -np.inf]]), np.array([0])) == 0.0
