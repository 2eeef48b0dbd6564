"""TwoLayerNet / MultiLayerNet: the book's surface, gradients proven by the numerical gradient,
and both backends giving the same nets."""
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import fastbp
from fastbp import (Affine, MultiLayerNet, Relu, Sigmoid, SoftmaxWithLoss, Tanh, TwoLayerNet,
                    gradient_check, numerical_gradient, use_backend)


def small_data(n=4, d=12, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), rng.integers(0, c, n)


def test_two_layer_net_has_the_books_surface():
    np.random.seed(0)
    net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    assert net.params["W1"].shape == (784, 50) and net.params["b2"].shape == (10,)
    assert all(p.dtype == np.float64 for p in net.params.values())
    assert 0.009 < net.params["W1"].std() < 0.011 and not net.params["b1"].any()
    assert isinstance(net.layers, OrderedDict) and list(net.layers) == ["Affine1", "Relu1", "Affine2"]
    assert net.layers["Affine1"].W is net.params["W1"] and net.layers["Affine2"].b is net.params["b2"]
    assert isinstance(net.lastLayer, SoftmaxWithLoss) and net.last_layer is net.lastLayer
    np.random.seed(0)
    same = TwoLayerNet(784, 50, 10)  # the book's init comes from np.random: seeding repeats it
    np.testing.assert_array_equal(same.params["W1"], net.params["W1"])
    assert TwoLayerNet(4, 3, 2, dtype=np.float32).params["W1"].dtype == np.float32


def test_predict_loss_accuracy_with_index_and_onehot_labels():
    x, t = small_data(n=20)
    net = TwoLayerNet(12, 6, 5, weight_init_std=0.5)
    y = net.predict(x)
    assert y.shape == (20, 5) and y.dtype == np.float64
    h = np.maximum(x @ net.params["W1"] + net.params["b1"], 0) @ net.params["W2"] + net.params["b2"]
    np.testing.assert_allclose(y, h, rtol=1e-6)  # x is float32: upcast, then float64 math
    assert net.loss(x, t) == pytest.approx(net.loss(x, np.eye(5)[t]), rel=1e-14)
    acc = net.accuracy(x, t)
    assert acc == np.mean(np.argmax(h, axis=1) == t) == net.accuracy(x, np.eye(5)[t])
    assert isinstance(acc, float)


@pytest.mark.parametrize("backend", ["kernels", "reference"])
@pytest.mark.parametrize("labels", ["index", "onehot"])
def test_two_layer_net_gradient_check(backend, labels):
    """What the seeds print: mean |backprop - numerical| tiny for every parameter."""
    x, t = small_data(n=3)
    if labels == "onehot":
        t = np.eye(5)[t]
    np.random.seed(1)
    net = TwoLayerNet(12, 8, 5, weight_init_std=0.3)
    with use_backend(backend):
        report = gradient_check(net, x, t)
    assert list(report) == ["W1", "b1", "W2", "b2"]
    for key, check in report.items():
        assert check.mean_abs_diff < 1e-8, (key, check)
        assert check.max_rel_error < 1e-6, (key, check)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_multi_layer_net_gradient_check(activation):
    x, t = small_data(n=4)
    np.random.seed(2)
    net = MultiLayerNet(12, [7, 6], 5, activation=activation)
    assert list(net.layers) == ["Affine1", "Activation_function1", "Affine2", "Activation_function2", "Affine3"]
    assert isinstance(net.layers["Activation_function2"], {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}[activation])
    for key, check in gradient_check(net, x, t).items():
        assert check.max_rel_error < 1e-6, (key, check)


def test_multi_layer_net_init_by_name():
    np.random.seed(3)
    he = MultiLayerNet(400, [300], 10, activation="relu")
    xavier = MultiLayerNet(400, [300], 10, activation="tanh", weight_init_std="auto")
    assert he.params["W1"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert he.params["W2"].std() == pytest.approx(np.sqrt(2 / 300), rel=0.05)
    assert xavier.params["W1"].std() == pytest.approx(np.sqrt(1 / 400), rel=0.02)
    # the book's default is He ('relu') whatever the activation; "auto" picks by activation
    for activation in ("sigmoid", "tanh"):
        book = MultiLayerNet(400, [300], 10, activation=activation)
        assert book.params["W1"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert MultiLayerNet(400, [300], 10, weight_init_std="auto").params["W1"].std() == \
        pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert MultiLayerNet(400, [30], 10, weight_init_std="Xavier").params["W1"].std() == \
        pytest.approx(np.sqrt(1 / 400), rel=0.05)
    assert MultiLayerNet(400, [30], 10, weight_init_std=0.01).params["W1"].std() == pytest.approx(0.01, rel=0.05)
    with pytest.raises(ValueError, match="weight_init_std: expected a number or one of"):
        MultiLayerNet(4, [3], 2, weight_init_std="glorot")
    with pytest.raises(ValueError, match="activation: expected one of"):
        MultiLayerNet(4, [3], 2, activation="gelu")


def test_gradient_is_the_same_on_both_backends():
    x, t = small_data(n=9)
    np.random.seed(4)
    net = MultiLayerNet(12, [10, 7], 5, activation="sigmoid", dtype=np.float32)
    got = net.gradient(x, t)
    with use_backend("reference"):
        ref = net.gradient(x, t)
    for key in ref:
        assert got[key].dtype == np.float32
        np.testing.assert_allclose(got[key], ref[key], rtol=2e-5, atol=2e-5 * np.abs(ref[key]).max())


def kinked_net():
    """A 4-5-3 TwoLayerNet and 3 samples where hidden unit 2's input for sample 0 is 3e-5: within
    h = 1e-4 of ReLU's kink, so shifting b1[2] or W1[i, 2] (for |x[0, i]| > 0.3) by +-h crosses it."""
    rng = np.random.default_rng(7)
    net = TwoLayerNet(4, 5, 3)
    for p in net.params.values():
        p[...] = rng.standard_normal(p.shape)
    x, t = rng.standard_normal((3, 4)), np.array([0, 2, 1])
    a = x @ net.params["W1"] + net.params["b1"]
    net.params["b1"][2] += 3e-5 - a[0, 2]
    return net, x, t


def test_gradient_check_names_entries_at_a_relu_kink_instead_of_failing():
    net, x, t = kinked_net()
    report = gradient_check(net, x, t)
    assert report["b1"].kinks == 1
    expected_w1 = int(np.sum(np.abs(x[0]) * 1e-4 > 3e-5))   # the W1[i, 2] whose shift crosses 0
    assert report["W1"].kinks == expected_w1 >= 1
    assert report["W2"].kinks == report["b2"].kinks == 0
    for key, check in report.items():
        assert check.max_rel_error < 1e-6, (key, check)     # backprop is exact everywhere
    # the excluded estimate really is off: the central difference straddles the kink
    numerical = net.numerical_gradient(x, t)["b1"][2]
    assert abs(numerical - net.gradient(x, t)["b1"][2]) > 1e-3 * abs(numerical)


def test_gradient_check_still_fails_a_wrong_gradient():
    """The kink rule excludes only entries a shift of +-h moves across 0; a real error shows."""
    net, x, t = kinked_net()
    right = net.gradient

    def slightly_wrong(x, t):
        grads = right(x, t)
        grads["W2"] = grads["W2"] * 1.0001
        grads["b1"] = grads["b1"] + 1e-4 * np.abs(grads["b1"]).max()
        return grads

    net.gradient = slightly_wrong
    report = gradient_check(net, x, t)
    assert report["W2"].max_rel_error > 5e-5 and report["b1"].max_rel_error > 5e-5, report
    assert report["W1"].max_rel_error < 1e-6


class Interrupt:
    """f that raises KeyboardInterrupt on its n-th call."""

    def __init__(self, n, f):
        self.n, self.f, self.calls = n, f, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.f(*args)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_numerical_gradient_restores_x_when_f_is_interrupted(n):
    x = np.array([[0.1, 0.2], [0.3, 0.4]])
    keep = x.copy()
    with pytest.raises(KeyboardInterrupt):
        numerical_gradient(Interrupt(n, lambda v: float(np.sum(v ** 2))), x)
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("n", [1, 2, 7, 60])
def test_gradient_check_interrupted_leaves_the_weights_as_they_were(n):
    net, x, t = kinked_net()
    keep = {k: v.copy() for k, v in net.params.items()}
    net.loss = Interrupt(n, net.loss)
    with pytest.raises(KeyboardInterrupt):
        gradient_check(net, x, t)
    for key in keep:
        np.testing.assert_array_equal(net.params[key], keep[key], err_msg=key)


def test_numerical_gradient_restores_x_and_handles_any_shape():
    x = np.arange(6.0).reshape(2, 3)
    keep = x.copy()
    g = numerical_gradient(lambda v: float(np.sum(v ** 3)), x)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_allclose(g, 3 * keep ** 2, rtol=1e-7, atol=1e-7)
    with pytest.raises(TypeError, match="x must be a float32 or float64 numpy array"):
        numerical_gradient(lambda v: 0.0, np.arange(3))


# The book's single-sample forms (chapters 4 and 5): one image x of shape (D,), its label as one
# one-hot row (C,) or one index; everything accepts them and gives the batch-of-one results.
SINGLE_LABELS = {"one-hot row": lambda c: np.eye(5)[c], "int": lambda c: c,
                 "np.int64": lambda c: np.int64(c), "0-d array": lambda c: np.array(c),
                 "uint8 one-hot row": lambda c: np.eye(5, dtype=np.uint8)[c]}


@pytest.mark.parametrize("label", list(SINGLE_LABELS))
@pytest.mark.parametrize("make", [
    lambda: TwoLayerNet(12, 6, 5, weight_init_std=0.5),
    lambda: MultiLayerNet(12, [7, 6], 5, activation="sigmoid"),
    lambda: MultiLayerNet(12, [7], 5, activation="tanh", dtype=np.float32),
], ids=["TwoLayerNet", "MultiLayerNet sigmoid", "MultiLayerNet tanh float32"])
def test_single_sample_forms_are_accepted_everywhere(make, label):
    x, t = small_data(n=1)
    np.random.seed(6)
    net = make()
    x1, t1 = x[0], SINGLE_LABELS[label](int(t[0]))
    assert x1.shape == (12,)
    y = net.predict(x1)
    assert y.shape == (5,)
    np.testing.assert_array_equal(y, net.predict(x)[0])
    assert net.loss(x1, t1) == net.loss(x, t)
    assert net.accuracy(x1, t1) == net.accuracy(x, t)
    grads, batch = net.gradient(x1, t1), net.gradient(x, t)
    numerical = net.numerical_gradient(x1, t1)
    for key in batch:
        assert grads[key].shape == batch[key].shape == numerical[key].shape == net.params[key].shape
        np.testing.assert_array_equal(grads[key], batch[key])
        # central differences of a float32 loss (~2, eps 1.2e-7) over 2h = 2e-4 carry ~1e-3
        slack = 5e-3 if net.dtype == np.float32 else 1e-7
        assert np.abs(numerical[key] - grads[key]).max() <= 1e-3 * np.abs(grads[key]).max() + slack, key


def test_softmax_with_loss_single_sample_as_in_chapter_4():
    """simpleNet: z = x @ W for x of shape (2,), then the loss against a one-hot t of shape (3,)."""
    W = np.array([[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]])
    x = np.array([0.6, 0.9])
    layer, batch = SoftmaxWithLoss(), SoftmaxWithLoss()
    loss = layer.forward(x @ W, np.array([0, 0, 1]))
    assert loss == batch.forward((x @ W)[None], np.array([2]))
    z = x @ W
    assert loss == pytest.approx(-np.log(np.exp(z[2]) / np.exp(z).sum()), rel=1e-13)
    assert loss == pytest.approx(0.92806853663411326, abs=1e-6)   # what the book prints (log(y + 1e-7))
    assert layer.y.shape == (3,) and layer.backward().shape == (3,)
    np.testing.assert_array_equal(layer.backward(), batch.backward()[0])
    with pytest.raises(ValueError, match=r"expected 1 labels \(one per sample in x\), got 2"):
        layer.forward(x @ W, np.array([0, 1]))


@pytest.mark.parametrize("call, error, match", [
    (lambda: TwoLayerNet(0, 5, 2), ValueError, r"input_size: expected a positive integer, got 0"),
    (lambda: TwoLayerNet(4.5, 5, 2), TypeError, r"input_size: expected a positive integer, got float"),
    (lambda: TwoLayerNet(4, 5, 2, weight_init_std=-1), ValueError, r"weight_init_std: expected a finite positive"),
    (lambda: TwoLayerNet(4, 5, 2, dtype=np.float16), TypeError, r"dtype: expected float32 or float64"),
    (lambda: TwoLayerNet(4, 5, 2).accuracy(np.ones((3, 4)), np.array([0, 1])), ValueError, r"accuracy: t: expected 3 labels"),
    (lambda: TwoLayerNet(4, 5, 2).loss(np.ones((3, 5)), np.array([0, 1, 1])), ValueError, r"x has 5 features"),
])
def test_net_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_first_affine_layer_skips_dx_but_keeps_dw():
    x, t = small_data(n=5)
    net = TwoLayerNet(12, 6, 5)
    grads = net.gradient(x, t)
    layer = net.layers["Affine1"]
    assert grads["W1"] is layer.dW and grads["b1"] is layer.db
    ref = Affine(net.params["W1"], net.params["b1"])
    ref.forward(x)
    ref.backward(net.layers["Relu1"].backward(net.layers["Affine2"].backward(net.lastLayer.backward())))
    np.testing.assert_allclose(grads["W1"], ref.dW, rtol=1e-12)


# --- weight decay, the book's loss, chapter 4's net -------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_weight_decay_in_loss_and_gradient(activation):
    x, t = small_data(n=5)
    np.random.seed(9)
    net = MultiLayerNet(12, [7, 6], 5, activation=activation, weight_decay_lambda=0.1)
    plain = MultiLayerNet(12, [7, 6], 5, activation=activation)
    for key in net.params:
        plain.params[key][...] = net.params[key]
    decay = sum(0.5 * 0.1 * np.sum(net.params[f"W{i}"] ** 2) for i in (1, 2, 3))
    assert net.loss(x, t) == pytest.approx(plain.loss(x, t) + decay, rel=1e-14)
    grads, plain_grads = net.gradient(x, t), plain.gradient(x, t)
    for key in grads:
        extra = 0.1 * net.params[key] if key.startswith("W") else 0
        np.testing.assert_allclose(grads[key], plain_grads[key] + extra, rtol=1e-13, atol=1e-16)
    for key, check in gradient_check(net, x, t).items():
        assert check.max_rel_error < 1e-6, (key, check)
    assert net.hidden_layer_num == 2 and net.weight_decay_lambda == 0.1


def test_fit_refuses_what_its_compiled_step_does_not_do():
    """Batch normalisation and dropout train with the book's loop or Trainer (weight decay fit does
    itself: tests/test_training.py)."""
    x, t = small_data(n=20)
    with pytest.raises(ValueError, match=r"fit: expected a net of Affine layers"):
        fastbp.fit(fastbp.MultiLayerNetExtend(12, [6], 5, use_batchnorm=True), x, t, iters=2, batch_size=5)


@pytest.mark.parametrize("value, error", [(-0.1, ValueError), (float("inf"), ValueError), ("0.1", TypeError)])
def test_weight_decay_lambda_is_checked(value, error):
    with pytest.raises(error, match=r"weight_decay_lambda: expected a"):
        MultiLayerNet(4, [3], 2, weight_decay_lambda=value)


@pytest.mark.parametrize("labels", ["index", "onehot"])
def test_the_books_loss_on_request_with_the_same_gradient(labels):
    rng = np.random.default_rng(10)
    x = rng.random((8, 12))
    t = rng.integers(0, 5, 8)
    t = np.eye(5)[t] if labels == "onehot" else t
    np.random.seed(10)
    net = MultiLayerNet(12, [6], 5, weight_init_std=3.0)   # confident, often wrong: the 1e-7 matters
    exact, exact_grads = net.loss(x, t), net.gradient(x, t)
    exact_grads = {k: g.copy() for k, g in exact_grads.items()}
    assert fastbp.get_loss() == "exact"
    with fastbp.use_loss("book"):
        book = net.loss(x, t)
        book_grads = net.gradient(x, t)
    assert fastbp.get_loss() == "exact"
    assert book == pytest.approx(fastbp.cross_entropy_error(fastbp.softmax(net.predict(x)), t), rel=1e-13)
    assert exact > book + 1e-3          # the book's 1e-7 caps -log y at 16.1 per sample
    for key in exact_grads:             # backprop is (y - t) / N either way
        np.testing.assert_array_equal(book_grads[key], exact_grads[key])
    with pytest.raises(ValueError, match=r"loss: expected one of \['exact', 'book'\], got 'numpy'"):
        fastbp.set_loss("numpy")


def test_fastbp_loss_environment_variable(tmp_path):
    code = "import fastbp; print(fastbp.get_loss())"
    env = {**os.environ, "FASTBP_LOSS": "book"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "book", out.stderr
    env["FASTBP_LOSS"] = "bok"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "FASTBP_LOSS: expected one of ['exact', 'book'], got 'bok'" in out.stderr


def test_chapter_4_net_is_the_books_sigmoid_net():
    from fastbp.ch04 import TwoLayerNet as Ch4Net
    rng = np.random.default_rng(11)
    x = rng.random((6, 12)).astype(np.float32)
    t = np.eye(5)[rng.integers(0, 5, 6)]
    np.random.seed(12)
    net = Ch4Net(input_size=12, hidden_size=8, output_size=5)
    np.random.seed(12)
    assert np.array_equal(net.params["W1"], 0.01 * np.random.randn(12, 8))   # the book's init
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    grads, numerical = net.gradient(x, t), net.numerical_gradient(x, t)
    for key in grads:   # the numerical gradient of the book's loss: equal up to its 1e-7 / y ~ 5e-7
        assert np.abs(grads[key] - numerical[key]).max() < 1e-6 * np.abs(grads[key]).max(), key
    for key in net.params:
        net.params[key][...] = rng.standard_normal(net.params[key].shape)
    W1, b1, W2, b2 = (net.params[k] for k in ("W1", "b1", "W2", "b2"))
    z1 = 1 / (1 + np.exp(-(x @ W1 + b1)))
    a2 = z1 @ W2 + b2
    y = np.exp(a2) / np.exp(a2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(net.predict(x), y, rtol=1e-12)              # probabilities
    assert net.loss(x, t) == pytest.approx(-np.mean(np.log(np.sum(y * t, axis=1) + 1e-7)), rel=1e-12)
    assert net.accuracy(x, t) == np.mean(np.argmax(y, axis=1) == np.argmax(t, axis=1))
    assert net.accuracy(x, np.argmax(t, axis=1)) == net.accuracy(x, t)     # indices work too
    grads = net.gradient(x, t)
    dy = (y - t) / 6                                                         # the book's hand-written chain
    da1 = z1 * (1 - z1) * (dy @ W2.T)
    np.testing.assert_allclose(grads["W2"], z1.T @ dy, rtol=1e-10)
    np.testing.assert_allclose(grads["W1"], x.T.astype(np.float64) @ da1, rtol=1e-10, atol=1e-14)
    net.params["W2"], net.params["b2"] = np.zeros((8, 5)), np.zeros(5)   # replaced arrays are seen, as in the book
    np.testing.assert_allclose(net.predict(x), 0.2)


@pytest.mark.parametrize("rows", [12, 100])   # (one thread; a team: nets.TEAM_ROWS)
def test_chapter_4_net_loss_is_a_compiled_call_of_the_books_loss(monkeypatch, rows):
    """ch04's loss runs as the nets' one compiled call, as its gradient does (through the layers
    it took 1.5-2x as long, and its loop was slower than the book's), and reports the book's
    log(y + 1e-7) whichever loss fastbp is set to; bad labels still get the book's error."""
    from fastbp import kernels, nets
    from fastbp.ch04 import TwoLayerNet as Ch4Net
    calls = []
    kernel, team = kernels.net_loss, nets._team_call
    monkeypatch.setattr(kernels, "net_loss", lambda *a: (calls.append("one thread"), kernel(*a))[1])
    monkeypatch.setattr(nets, "_team_call", lambda *a: (calls.append("team"), team(*a))[1])
    rng = np.random.default_rng(4)
    x = (rng.random((rows, 20)) * (rng.random((rows, 20)) < 0.3)).astype(np.float32)
    t = rng.integers(0, 3, rows)
    np.random.seed(3)
    net = Ch4Net(20, 6, 3, weight_init_std=1.0)
    net.params["W2"][:] *= 8   # confident, some wrong: the 1e-7 shows in the loss
    for setting in ("exact", "book"):
        with fastbp.use_loss(setting):
            y = net.predict(x)   # (the layers, one by one)
            book = -np.mean(np.log(y[np.arange(rows), t] + 1e-7))
            assert abs(book + np.mean(np.log(y[np.arange(rows), t]))) > 1e-9   # (the two differ)
            assert net.loss(x, t) == pytest.approx(book, rel=1e-12)
            assert net.loss(x, np.eye(3)[t]) == pytest.approx(book, rel=1e-12)
    assert calls == ["one thread" if rows < nets.TEAM_ROWS else "team"] * 4, calls
    with pytest.raises(ValueError, match="cross_entropy_error"):
        net.loss(x, np.full(rows, 3))


# --- the compiled whole-net calls against the layers one by one ----------------------------------

def _layer_state(net):
    """What the book's layers hold after a pass, as plain arrays (None where unset)."""
    state = {}
    for name, layer in [*net.layers.items(), ("last", net.last_layer)]:
        for attr in ("x", "dW", "db", "mask", "out", "y", "t", "loss"):
            value = getattr(layer, attr, None)
            if value is not None:
                state[f"{name}.{attr}"] = np.asarray(value)
    return state


@pytest.mark.parametrize("make", [
    lambda: TwoLayerNet(30, 8, 4),
    lambda: MultiLayerNet(30, [9, 7], 4, activation="tanh", dtype=np.float32),
])
@pytest.mark.parametrize("labels", ["index", "onehot"])
@pytest.mark.parametrize("density", [0.2, 0.7])
def test_compiled_calls_equal_the_layers(monkeypatch, make, labels, density):
    """Input as sparse as MNIST (the first layer on its nonzero lists) or denser (by BLAS,
    kernels/net.py DENSE_SHARE) takes one compiled call per method (counted); its results, and
    what it leaves in the layers, are the layers' own."""
    from fastbp import kernels, nets
    rng = np.random.default_rng(3)
    x = (rng.random((12, 30)) * (rng.random((12, 30)) < density)).astype(np.float32)
    t = rng.integers(0, 4, 12)
    t = np.eye(4)[t] if labels == "onehot" else t
    calls = []
    for name in ("net_scores", "net_loss", "net_gradient"):
        kernel = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])

    def run():
        np.random.seed(1)
        net = make()
        got = {"predict": net.predict(x), "loss": net.loss(x, t), "accuracy": net.accuracy(x, t)}
        got.update({f"grad {k}": v for k, v in net.gradient(x, t).items()})
        return got, _layer_state(net)
    float32 = make().params["W1"].dtype == np.float32
    fast, fast_state = run()
    assert calls.count("net_gradient") == 1 and calls.count("net_loss") >= 1, calls
    calls.clear()
    monkeypatch.setattr(nets._Net, "_plan", lambda self, x: None)   # the layers, one by one
    slow, slow_state = run()
    assert calls == [], calls
    assert fast.keys() == slow.keys() and fast_state.keys() == slow_state.keys()
    for key in [*slow, *slow_state]:
        a, b = (fast[key], slow[key]) if key in slow else (fast_state[key], slow_state[key])
        tol = 1e-5 if float32 else 1e-12   # (the loss is a Python float either way)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=key)


@pytest.mark.parametrize("rows", [12, 100])   # (one thread; a team: nets.TEAM_ROWS)
@pytest.mark.parametrize("density", [0.2, 0.7])
def test_gradients_are_plain_arrays_as_the_books(rows, density):
    """The book's gradients are np.dot's results: fresh C-contiguous arrays of the parameters'
    shapes (a user's update, or ravel / reshape, then works on them as on the book's)."""
    from fastbp import nets
    assert 12 < nets.TEAM_ROWS <= 100
    rng = np.random.default_rng(5)
    x = (rng.random((rows, 30)) * (rng.random((rows, 30)) < density)).astype(np.float32)
    net = TwoLayerNet(30, 50, 10)
    first = net.gradient(x, rng.integers(0, 10, rows))
    second = net.gradient(x, rng.integers(0, 10, rows))
    for key, p in net.params.items():
        for grads in (first, second):
            g = grads[key]
            assert g.shape == p.shape and g.dtype == p.dtype and g.flags.c_contiguous, key
        assert not np.shares_memory(first[key], second[key]), key


@pytest.mark.parametrize("loss", ["exact", "book"])
def test_compiled_numerical_gradient_is_the_central_difference_of_the_reported_loss(monkeypatch, loss):
    """numerical_gradient's one compiled call shifts every entry as the book does, of whichever
    loss the net reports (the book's log(y + 1e-7) under use_loss("book"))."""
    from fastbp import kernels
    calls = []
    kernel = kernels.net_numerical_gradient
    monkeypatch.setattr(kernels, "net_numerical_gradient", lambda *a: (calls.append(a[-1]), kernel(*a))[1])
    rng = np.random.default_rng(5)
    x = rng.random((3, 6)) * (rng.random((3, 6)) < 0.5)
    t = np.array([0, 2, 1])
    np.random.seed(2)
    net = TwoLayerNet(6, 4, 3, weight_init_std=1.0)
    net.params["W2"][:] *= 8   # confident, some wrong: log(y + 1e-7) and log y part
    with fastbp.use_loss(loss):
        got = net.numerical_gradient(x, t)
        assert calls == [loss == "book"]
        for key, p in net.params.items():
            want = np.empty_like(p)
            for i in np.ndindex(p.shape):
                keep = p[i]
                p[i] = keep + 1e-4
                above = net.loss(x, t)
                p[i] = keep - 1e-4
                below = net.loss(x, t)
                p[i] = keep
                want[i] = (above - below) / 2e-4
            np.testing.assert_allclose(got[key], want, rtol=1e-9, atol=1e-11, err_msg=key)
