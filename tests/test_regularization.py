"""Chapter 6's Dropout and BatchNormalization layers and MultiLayerNetExtend: the book's
attributes, training and test behaviour, gradients proven by the numerical gradient (in training
mode, with weight decay), the book's random stream, and bad input refused by name."""
import numpy as np
import pytest

from fastbp import (Affine, BatchNormalization, Dropout, MultiLayerNetExtend, Relu, gradient_check,
                    numerical_gradient, use_backend)


@pytest.fixture(params=["kernels", "reference"])
def backend(request):
    with use_backend(request.param):
        yield request.param


def rel_error(a, b):
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-300)


# --- Dropout --------------------------------------------------------------------------------------

def test_dropout_draws_its_mask_from_np_random_as_the_book(backend):
    x = np.random.default_rng(0).standard_normal((4, 6))
    layer = Dropout(0.3)
    assert layer.dropout_ratio == 0.3 and layer.mask is None
    np.random.seed(11)
    out = layer.forward(x)                 # train_flg=True by default
    np.random.seed(11)
    mask = np.random.rand(4, 6) > 0.3      # what the book's layer draws, in the same order
    np.testing.assert_array_equal(layer.mask, mask)
    np.testing.assert_array_equal(out, x * mask)
    dout = np.arange(24.0).reshape(4, 6)
    np.testing.assert_array_equal(layer.backward(dout), dout * mask)
    np.testing.assert_array_equal(layer.forward(x, train_flg=False), x * 0.7)
    np.testing.assert_array_equal(layer.mask, mask)   # test mode keeps the training mask


def test_dropout_keeps_dtype_and_shape_and_nan_as_numpy(backend):
    x = np.array([[-2.0, np.nan, 3.0]], dtype=np.float32)
    layer = Dropout(0.5)
    np.random.seed(0)
    out = layer.forward(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x * layer.mask)   # NaN * 0 is NaN, -2 * 0 is -0.0
    assert np.signbit(out[0, 0]) == np.signbit((x * layer.mask)[0, 0])
    assert layer.forward(x.reshape(1, 1, 3), train_flg=False).shape == (1, 1, 3)


def test_dropout_layer_backward_is_the_gradient_for_its_mask():
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    layer = Dropout(0.4)
    np.random.seed(3)
    layer.forward(x)
    mask = layer.mask
    loss = lambda _: float(np.sum(x * mask * g))  # noqa: E731 - the layer's output with its mask fixed
    assert rel_error(layer.backward(g), numerical_gradient(loss, x)) < 1e-7


# --- BatchNormalization -------------------------------------------------------------------------

def test_batchnorm_training_and_test_mode(backend):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 3)) * [1, 3, 0.5] + [0, 2, -1]
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 1.0])
    layer = BatchNormalization(gamma, beta)
    assert layer.momentum == 0.9 and layer.running_mean is None and layer.running_var is None
    out = layer.forward(x)
    xn = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-6)
    np.testing.assert_allclose(out, gamma * xn + beta, rtol=1e-12, atol=1e-12)
    assert layer.input_shape == (20, 3) and layer.batch_size == 20
    np.testing.assert_allclose(layer.xc, x - x.mean(axis=0), atol=1e-14)
    np.testing.assert_allclose(layer.xn, xn, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.std, np.sqrt(x.var(axis=0) + 1e-6), rtol=1e-14)
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.1 * x.var(axis=0), rtol=1e-12)
    test = layer.forward(x[:4], train_flg=False)
    expected = gamma * (x[:4] - layer.running_mean) / np.sqrt(layer.running_var + 1e-6) + beta
    np.testing.assert_allclose(test, expected, rtol=1e-12)
    assert layer.batch_size == 20       # test mode keeps the training state for backward
    gamma *= 2                          # an optimizer's in-place update is seen
    np.testing.assert_allclose(layer.forward(x)[:, 0], 2 * xn[:, 0] + beta[0], rtol=1e-12, atol=1e-12)


def test_batchnorm_images_and_float32_input(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)       # (N, C, H, W) as the book's ch07
    layer = BatchNormalization(np.ones(18), np.zeros(18))
    out = layer.forward(x)
    assert out.shape == x.shape and out.dtype == np.float64           # converted to gamma's dtype
    np.testing.assert_allclose(out.reshape(6, -1).mean(axis=0), 0, atol=1e-12)
    assert layer.backward(np.ones_like(out)).shape == x.shape


@pytest.mark.parametrize("n", [3, 10])
def test_batchnorm_layer_backward_is_the_gradient(n):
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal((n, 5)) + 1, rng.standard_normal((n, 5))
    gamma, beta = rng.uniform(0.5, 2, 5), rng.standard_normal(5)
    layer = BatchNormalization(gamma, beta)
    loss = lambda _: float(np.sum(BatchNormalization(gamma, beta).forward(x) * g))  # noqa: E731
    layer.forward(x)
    dx = layer.backward(g)
    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert rel_error(layer.dgamma, numerical_gradient(loss, gamma)) < 1e-6
    assert rel_error(layer.dbeta, numerical_gradient(loss, beta)) < 1e-6


@pytest.mark.parametrize("call, error, match", [
    (lambda: BatchNormalization([1.0], np.zeros(1)), TypeError, r"BatchNormalization: gamma: expected a float32 or float64 numpy array, got list"),
    (lambda: BatchNormalization(np.ones(3), np.zeros(2)), ValueError, r"expected gamma and beta of one shape"),
    (lambda: BatchNormalization(np.ones(3), np.zeros(3), momentum=2), ValueError, r"momentum: expected a number in \[0, 1\], got 2"),
    (lambda: BatchNormalization(np.ones(3), np.zeros(3)).forward(np.ones((4, 2))), ValueError, r"x has 2 features per sample \(shape \(4, 2\)\), but gamma has 3"),
    (lambda: BatchNormalization(np.ones(3), np.zeros(3)).forward(np.ones(3)), ValueError, r"x: expected a batch of shape \(N, D\)"),
    (lambda: BatchNormalization(np.ones(3), np.zeros(3)).forward(np.ones((0, 3))), ValueError, r"x: expected at least one sample"),
    (lambda: BatchNormalization(np.ones(3), np.zeros(3), running_mean=np.zeros(2)).forward(np.ones((2, 3))), ValueError, r"running_mean: expected shape \(3,\)"),
    (lambda: BatchNormalization(np.ones(3), np.zeros(3)).backward(np.ones((2, 3))), RuntimeError, r"call forward\(x, train_flg=True\) first"),
    (lambda: (lambda b: (b.forward(np.ones((2, 3))), b.backward(np.ones((3, 3)))))(BatchNormalization(np.ones(3), np.zeros(3))), ValueError, r"dout must have the shape"),
    (lambda: Dropout(1.5), ValueError, r"dropout_ratio: expected a number in \[0, 1\], got 1.5"),
    (lambda: Dropout("0.5"), TypeError, r"dropout_ratio: expected a number in \[0, 1\], got str"),
    (lambda: Dropout().backward(np.ones(3)), RuntimeError, r"Dropout.backward: call forward first"),
    (lambda: Dropout().forward(np.array(["a"])), TypeError, r"Dropout.forward: x: expected real numbers"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_batchnorm_backward_refuses_state_that_no_longer_fits():
    layer = BatchNormalization(np.ones(3), np.zeros(3))
    layer.forward(np.random.default_rng(0).standard_normal((4, 3)))
    layer.xc = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"BatchNormalization.backward: xc must be the float64 array of shape \(4, 3\)"):
        layer.backward(np.ones((4, 3)))


# --- MultiLayerNetExtend ------------------------------------------------------------------------

def small_data(n=6, d=12, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, c, n)


def test_extend_has_the_books_layers_params_and_defaults():
    np.random.seed(0)
    net = MultiLayerNetExtend(12, [7, 6], 4, use_dropout=True, dropout_ration=0.2, use_batchnorm=True)
    assert list(net.layers) == ["Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
                                "Affine2", "BatchNorm2", "Activation_function2", "Dropout2", "Affine3"]
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3", "gamma1", "beta1", "gamma2", "beta2"]
    assert net.layers["BatchNorm2"].gamma is net.params["gamma2"] and not net.params["beta1"].any()
    assert (net.params["gamma1"] == 1).all() and net.layers["Dropout1"].dropout_ratio == 0.2
    assert net.use_dropout and net.use_batchnorm and net.weight_decay_lambda == 0
    assert isinstance(net.layers["Activation_function1"], Relu)
    assert net.params["W1"].std() == pytest.approx(np.sqrt(2 / 12), rel=0.3)   # 'relu' (He) as the book
    plain = MultiLayerNetExtend(12, [7], 4)
    assert list(plain.layers) == ["Affine1", "Activation_function1", "Affine2"]
    assert list(plain.params) == ["W1", "b1", "W2", "b2"]


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("decay", [0, 0.1])
def test_extend_batchnorm_gradient_check_in_training_mode(activation, decay):
    x, t = small_data()
    np.random.seed(1)
    net = MultiLayerNetExtend(12, [7, 6], 4, activation=activation, weight_init_std=0.3,
                              weight_decay_lambda=decay, use_batchnorm=True)
    report = gradient_check(net, x, t)
    assert list(report) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    grads = net.gradient(x, t)
    for key, check in report.items():
        if key in ("b1", "b2"):   # a bias right before batch normalisation is subtracted out again
            assert np.abs(grads[key]).max() < 1e-12 and check.mean_abs_diff < 1e-12, (key, check)
        else:
            assert check.max_rel_error < 1e-6, (key, check)


@pytest.fixture
def fixed_draws(monkeypatch):
    """np.random.rand gives the same draws for the same shape: dropout masks stay fixed while the
    numerical gradient calls the loss again and again (the book's would draw new masks)."""
    rng, draws = np.random.default_rng(5), {}

    def rand(*shape):
        if shape not in draws:
            draws[shape] = rng.random(shape)
        return draws[shape].copy()
    monkeypatch.setattr(np.random, "rand", rand)


def test_extend_dropout_gradient_check_with_fixed_masks(fixed_draws):
    x, t = small_data()
    np.random.seed(2)
    net = MultiLayerNetExtend(12, [7, 7], 4, weight_init_std=0.5, use_dropout=True,
                              dropout_ration=0.3, use_batchnorm=True, weight_decay_lambda=0.05)
    for key, check in gradient_check(net, x, t).items():
        if key in ("b1", "b2"):   # zero: batch normalisation follows
            assert check.mean_abs_diff < 1e-12, (key, check)
        else:
            assert check.max_rel_error < 1e-6, (key, check)


def test_extend_train_flg_switches_dropout_and_batchnorm():
    x, t = small_data(n=8)
    np.random.seed(3)
    net = MultiLayerNetExtend(12, [7], 4, use_dropout=True, dropout_ration=0.5, use_batchnorm=True)
    np.testing.assert_array_equal(net.predict(x), net.predict(x, train_flg=False))   # test mode: deterministic
    np.random.seed(4)
    a = net.predict(x, train_flg=True)
    np.random.seed(4)
    np.testing.assert_array_equal(a, net.predict(x, train_flg=True))            # train mode: np.random's masks
    assert not np.allclose(a, net.predict(x))
    assert net.loss(x, t) == pytest.approx(net.loss(x, t, train_flg=False))
    assert 0 <= net.accuracy(x, t) <= 1


def test_extend_gradient_draws_the_masks_in_the_books_order():
    """gradient runs forward once in training mode: one np.random.rand per Dropout layer, in layer
    order, so np.random.seed reproduces the book's runs draw for draw."""
    x, t = small_data(n=5)
    np.random.seed(6)
    net = MultiLayerNetExtend(12, [7, 6], 4, use_dropout=True, dropout_ration=0.25)
    np.random.seed(7)
    net.gradient(x, t)
    next_draw = np.random.rand()
    np.random.seed(7)
    m1, m2 = np.random.rand(5, 7) > 0.25, np.random.rand(5, 6) > 0.25
    np.testing.assert_array_equal(net.layers["Dropout1"].mask, m1)
    np.testing.assert_array_equal(net.layers["Dropout2"].mask, m2)
    assert np.random.rand() == next_draw   # and nothing else was drawn


def test_extend_numerical_gradient_keys_follow_the_books_order():
    x, t = small_data(n=2, d=3, c=2)
    np.random.seed(8)
    net = MultiLayerNetExtend(3, [2], 2, use_batchnorm=True)
    assert list(net.numerical_gradient(x, t)) == ["W1", "b1", "gamma1", "beta1", "W2", "b2"]
    assert isinstance(net.layers["Affine1"], Affine)
