"""The book's common/functions.py and common/util.py names: formulas, the forms of y and t the book
accepts, NaN passing through as in NumPy, and bad input refused by name."""
import numpy as np
import pytest

import fastbp
from fastbp import (cross_entropy_error, identity_function, relu, relu_grad, shuffle_dataset, sigmoid,
                    sigmoid_grad, smooth_curve, softmax, softmax_loss, step_function,
                    sum_squared_error, use_backend)

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 5)) * 3
T = RNG.integers(0, 5, 6)


def test_elementwise_functions():
    x = np.array([-2.0, -0.0, 0.0, 0.5, 3.0])
    assert identity_function(x) is x
    np.testing.assert_array_equal(step_function(x), [0, 0, 0, 1, 1])
    assert step_function(x).dtype.kind == "i"
    np.testing.assert_array_equal(relu(x), [0, 0, 0, 0.5, 3.0])
    np.testing.assert_array_equal(relu_grad(x), [0, 1, 1, 1, 1])   # the book counts 0 as active
    np.testing.assert_array_equal(relu(np.array([-3, 4])), [0, 4])  # integers stay integers
    np.testing.assert_allclose(sigmoid(X), 1 / (1 + np.exp(-X)), rtol=1e-15)
    np.testing.assert_allclose(sigmoid_grad(X), np.exp(-X) / (1 + np.exp(-X)) ** 2, rtol=1e-12)


@pytest.mark.parametrize("backend", ["kernels", "reference"])
def test_sigmoid_numbers_dtypes_and_extremes(backend):
    with use_backend(backend):
        assert isinstance(sigmoid(0.0), np.float64) and sigmoid(0.0) == 0.5
        assert sigmoid(np.float32(1.0)).dtype == np.float32
        assert sigmoid(np.array([1, 2])).dtype == np.float64      # integers become float64
        with np.errstate(over="raise", invalid="raise"):   # no overflow on the way to 0 and 1
            np.testing.assert_array_equal(sigmoid(np.array([-800.0, 800.0])), [0.0, 1.0])
        assert sigmoid(X.astype(np.float32)).shape == X.shape


def test_softmax_rows_any_rank():
    y = softmax(X)
    np.testing.assert_allclose(y, np.exp(X) / np.exp(X).sum(axis=1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(softmax(X[0]), y[0], rtol=1e-15)
    np.testing.assert_allclose(softmax(X.reshape(2, 3, 5)), y.reshape(2, 3, 5), rtol=1e-15)
    np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])  # no overflow
    assert softmax(1.5) == 1.0


def test_cross_entropy_error_is_the_books_formula_for_every_form_of_y_and_t():
    y = softmax(X)
    expected = -np.sum(np.log(y[np.arange(6), T] + 1e-7)) / 6
    assert cross_entropy_error(y, T) == expected
    assert cross_entropy_error(y, np.eye(5)[T]) == expected
    assert cross_entropy_error(y, T.astype(np.uint8)) == expected      # the book's label dtype
    one = -np.log(y[2, T[2]] + 1e-7)
    assert cross_entropy_error(y[2], T[2]) == one                      # 1-d y, index
    assert cross_entropy_error(y[2], np.eye(5)[T[2]]) == one           # 1-d y, one-hot
    assert softmax_loss(X, T) == expected
    y0 = np.array([[1.0, 0.0]])   # 1e-7 keeps log(0) away: the loss of a certain mistake is finite
    assert cross_entropy_error(y0, np.array([1])) == pytest.approx(-np.log(1e-7))


def test_cross_entropy_error_lets_nan_through():
    y = softmax(X)
    y[0] = np.nan
    assert np.isnan(cross_entropy_error(y, T))


def test_sum_squared_error():
    y, t = np.array([0.1, 0.05, 0.6, 0.0]), np.array([0, 0, 1, 0])
    assert sum_squared_error(y, t) == pytest.approx(0.5 * (0.01 + 0.0025 + 0.16))


def test_smooth_curve_is_a_normalised_kaiser_window_with_the_books_ends():
    x = RNG.random(40)
    s = smooth_curve(list(x))      # the book passes a list of losses
    assert s.shape == (40,)
    w = np.kaiser(11, 2)
    w = w / w.sum()
    for i in range(5, 35):         # away from the ends: the window's weighted mean
        assert s[i] == pytest.approx(np.dot(w, x[i - 5:i + 6]), rel=1e-12)
    left = np.concatenate([x[10:0:-1], x[:6]])          # mirrored without x[0]
    assert s[0] == pytest.approx(np.dot(w, left[5:16]), rel=1e-12)
    right = np.concatenate([x[-6:], x[::-1][:10]])       # mirrored with x[-1]
    assert s[-1] == pytest.approx(np.dot(w, right[:11]), rel=1e-12)
    np.testing.assert_allclose(smooth_curve(np.full(20, 3.0)), 3.0, rtol=1e-14)


def test_shuffle_dataset_keeps_pairs_and_follows_np_random():
    x = np.arange(40.0).reshape(10, 4)
    t = np.arange(10)
    np.random.seed(7)
    xs, ts = shuffle_dataset(x, t)
    np.testing.assert_array_equal(xs[:, 0] / 4, ts)
    assert sorted(ts) == list(range(10)) and not np.array_equal(ts, t)
    np.random.seed(7)
    np.testing.assert_array_equal(np.random.permutation(10), ts)
    images = np.arange(10 * 2 * 3 * 3.0).reshape(10, 1, 3, 6)   # 4-d images as the book's ch07
    xi, ti = shuffle_dataset(images, t)
    np.testing.assert_array_equal(xi[:, 0, 0, 0] / 18, ti)


@pytest.mark.parametrize("call, error, match", [
    (lambda: sigmoid("1.0"), TypeError, r"sigmoid: x: expected a number or a numpy array of numbers, got str"),
    (lambda: relu(np.array([True])), TypeError, r"relu: x: expected real numbers \(float or integer dtype\), got dtype bool"),
    (lambda: softmax(np.ones((2, 0))), ValueError, r"softmax: x: expected an array with at least one value"),
    (lambda: cross_entropy_error(np.ones((2, 3, 1)), np.zeros(2, int)), ValueError, r"cross_entropy_error: y: expected a 1-d or 2-d array"),
    (lambda: cross_entropy_error(softmax(X), T + 5), ValueError, r"cross_entropy_error: t: class indices must lie in \[0, 5\)"),
    (lambda: cross_entropy_error(softmax(X), T[:4]), ValueError, r"cross_entropy_error: t: expected 6 labels"),
    (lambda: cross_entropy_error(softmax(X), T.astype(float)), TypeError, r"integer dtype, got float64"),
    (lambda: cross_entropy_error(softmax(X), np.ones((6, 5))), ValueError, r"one-hot labels need exactly one 1"),
    (lambda: sum_squared_error(np.ones(3), np.ones(4)), ValueError, r"y and t must have the same shape, got \(3,\) and \(4,\)"),
    (lambda: smooth_curve(np.ones(10)), ValueError, r"smooth_curve: x: expected at least 11 values"),
    (lambda: smooth_curve(np.ones((20, 2))), ValueError, r"smooth_curve: x: expected a 1-d array"),
    (lambda: shuffle_dataset(np.ones((3, 2)), np.ones(4)), ValueError, r"same number of samples .* \(3, 2\) and \(4,\)"),
    (lambda: shuffle_dataset([1, 2], np.ones(2)), TypeError, r"shuffle_dataset: x: expected a numpy array, got list"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_names_are_exported_from_fastbp():
    import fastbp.functions
    import fastbp.util
    for module in (fastbp.functions, fastbp.util):
        for name in module.__all__:
            assert getattr(fastbp, name) is getattr(module, name) and name in fastbp.__all__
