"""The chapter 6 optimizers: the book's update formulas step for step, in place, on arrays and on
plain numbers, both backends, and bad input refused by name."""
import numpy as np
import pytest

import fastbp
from fastbp import (SGD, AdaGrad, Adam, Momentum, MultiLayerNet, Nesterov, RMSprop, TwoLayerNet,
                    use_backend)

# Each optimizer's update written out as formulas on one array, in the order the book's NumPy
# expressions evaluate them (float64: the compiled update must equal these bit for bit).


def formula_step(name, p, g, s, hp, t):
    """Return the new (p, state dict) after one step of optimizer ``name`` at step t (1, 2, ...)."""
    lr = hp["lr"]
    if name == "SGD":
        return p - lr * g, s
    if name == "Momentum":
        v = hp["momentum"] * s["v"] - lr * g
        return p + v, {"v": v}
    if name == "Nesterov":
        mom = hp["momentum"]
        p = p + (mom * mom) * s["v"]
        p = p - ((1 + mom) * lr) * g
        return p, {"v": s["v"] * mom - lr * g}
    if name == "AdaGrad":
        h = s["h"] + g * g
        return p - (lr * g) / (np.sqrt(h) + 1e-7), {"h": h}
    if name == "RMSprop":
        d = hp["decay_rate"]
        h = s["h"] * d
        h = h + ((1 - d) * g) * g
        return p - (lr * g) / (np.sqrt(h) + 1e-7), {"h": h}
    if name == "Adam":
        b1, b2 = hp["beta1"], hp["beta2"]
        lr_t = lr * np.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        m = s["m"] + (1 - b1) * (g - s["m"])
        v = s["v"] + (1 - b2) * (g * g - s["v"])
        return p - (lr_t * m) / (np.sqrt(v) + 1e-7), {"m": m, "v": v}
    raise AssertionError(name)


OPTIMIZERS = {
    "SGD": (SGD, {"lr": 0.01}, ()),
    "Momentum": (Momentum, {"lr": 0.01, "momentum": 0.9}, ("v",)),
    "Nesterov": (Nesterov, {"lr": 0.01, "momentum": 0.9}, ("v",)),
    "AdaGrad": (AdaGrad, {"lr": 0.01}, ("h",)),
    "RMSprop": (RMSprop, {"lr": 0.01, "decay_rate": 0.99}, ("h",)),
    "Adam": (Adam, {"lr": 0.001, "beta1": 0.9, "beta2": 0.999}, ("m", "v")),
}
OTHER_HYPER = {"SGD": {"lr": 0.3}, "Momentum": {"lr": 0.05, "momentum": 0.5},
               "Nesterov": {"lr": 0.2, "momentum": 0.7}, "AdaGrad": {"lr": 1.5},
               "RMSprop": {"lr": 0.1, "decay_rate": 0.9}, "Adam": {"lr": 0.3, "beta1": 0.8, "beta2": 0.99}}


def test_defaults_are_the_books():
    for name, (cls, defaults, state) in OPTIMIZERS.items():
        opt = cls()
        for key, value in defaults.items():
            assert getattr(opt, key) == value, (name, key)
        for key in state:
            assert getattr(opt, key) is None, (name, key)
    assert Adam().iter == 0


@pytest.mark.parametrize("backend", ["kernels", "reference"])
@pytest.mark.parametrize("hyper", ["defaults", "other"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_trajectory_equals_the_books_formulas_bit_for_bit(name, hyper, backend):
    cls, defaults, state_names = OPTIMIZERS[name]
    hp = defaults if hyper == "defaults" else OTHER_HYPER[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    shapes = {"W1": (7, 5), "b1": (5,), "W2": (5, 3), "b2": (3,), "s": ()}
    params = {k: rng.standard_normal(shape) for k, shape in shapes.items()}
    arrays = dict(params)                       # the very objects, to check the updates are in place
    expected = {k: p.copy() for k, p in params.items()}
    states = {k: {s: np.zeros(shape) for s in state_names} for k, shape in shapes.items()}
    opt = cls(**hp)
    with use_backend(backend):
        for t in range(1, 26):
            grads = {k: rng.standard_normal(shape) for k, shape in shapes.items()}
            opt.update(params, grads)
            for k in shapes:
                expected[k], states[k] = formula_step(name, expected[k], grads[k], states[k], hp, t)
                np.testing.assert_array_equal(params[k], expected[k], err_msg=f"{name} step {t} {k}")
                for s in state_names:
                    np.testing.assert_array_equal(getattr(opt, s)[k], states[k][s])
    assert all(params[k] is arrays[k] for k in shapes)
    if name == "Adam":
        assert opt.iter == 25


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_plain_number_parameters_as_in_optimizer_compare_naive(name):
    """The book optimises params['x'], params['y'] (Python floats) on f(x, y) = x^2 / 20 + y^2."""
    cls, _, state_names = OPTIMIZERS[name]
    hp = OTHER_HYPER[name]
    opt = cls(**hp)
    params = {"x": -7.0, "y": 2.0}
    expected = {k: np.float64(v) for k, v in params.items()}
    states = {k: {s: np.float64(0.0) for s in state_names} for k in params}
    history = []
    for t in range(1, 31):
        history.append((params["x"], params["y"]))
        grads = {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}
        exp_grads = {"x": expected["x"] / 10.0, "y": 2.0 * expected["y"]}
        opt.update(params, grads)
        for k in params:
            expected[k], states[k] = formula_step(name, expected[k], exp_grads[k], states[k], hp, t)
            assert isinstance(params[k], float) and params[k] == expected[k], (name, t, k)
    assert abs(params["x"]) < 7 and np.isfinite(history).all()


def test_float32_parameters_stay_float32_and_mixed_dtypes_update():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((4, 3)).astype(np.float32), "b": rng.standard_normal(3)}
    grads = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(3).astype(np.float32)}
    before = {k: p.copy() for k, p in params.items()}
    opt = Adam(lr=0.1)
    opt.update(params, grads)
    assert params["a"].dtype == np.float32 and params["b"].dtype == np.float64
    assert opt.m["a"].dtype == np.float32 and opt.v["b"].dtype == np.float64
    # first Adam step moves each element by ~lr * sign(g)
    for k in params:
        np.testing.assert_allclose(before[k] - params[k], 0.1 * np.sign(grads[k]), rtol=1e-3)


def test_non_contiguous_parameters_are_updated_in_place():
    base = np.arange(24.0).reshape(4, 6)
    params = {"W": base[:, ::2], "T": np.asfortranarray(np.ones((3, 2)))}
    grads = {"W": np.ones((4, 3)), "T": np.full((3, 2), 2.0)}
    keep = base.copy()
    Momentum(lr=0.5, momentum=0.0).update(params, grads)
    np.testing.assert_array_equal(base[:, ::2], keep[:, ::2] - 0.5)
    np.testing.assert_array_equal(base[:, 1::2], keep[:, 1::2])
    np.testing.assert_array_equal(params["T"], np.zeros((3, 2)))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_nets_layers_see_the_update(name):
    np.random.seed(0)
    net = MultiLayerNet(6, [5, 4], 3)
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    opt = OPTIMIZERS[name][0](**OTHER_HYPER[name])
    loss0 = net.loss(x, t)
    for _ in range(5):
        opt.update(net.params, net.gradient(x, t))
    assert net.layers["Affine1"].W is net.params["W1"]
    assert net.loss(x, t) < loss0


def test_backends_agree_in_float32():
    results = {}
    for backend in ("kernels", "reference"):
        rng = np.random.default_rng(3)
        params = {"W": rng.standard_normal((5, 4)).astype(np.float32)}
        opt = Adam(lr=0.01)
        with use_backend(backend):
            for _ in range(10):
                opt.update(params, {"W": rng.standard_normal((5, 4)).astype(np.float32)})
        results[backend] = params["W"]
    np.testing.assert_array_equal(results["kernels"], results["reference"])


def test_a_refused_update_changes_nothing():
    params = {"W": np.ones((2, 2)), "b": np.ones(2)}
    opt = Adam()
    with pytest.raises(ValueError, match=r"grads\['b'\]: expected the shape of params\['b'\] \(2,\), got \(3,\)"):
        opt.update(params, {"W": np.ones((2, 2)), "b": np.ones(3)})
    assert opt.iter == 0
    np.testing.assert_array_equal(params["W"], np.ones((2, 2)))


@pytest.mark.parametrize("call, error, match", [
    (lambda: SGD(lr=0), ValueError, r"lr: expected a finite positive number, got 0"),
    (lambda: SGD(lr="0.1"), TypeError, r"lr: expected a positive number, got str"),
    (lambda: Momentum(momentum=-0.1), ValueError, r"momentum: expected a finite number of at least 0.0, got -0.1"),
    (lambda: RMSprop(decay_rate=1.5), ValueError, r"decay_rate: .* at most 1.0, got 1.5"),
    (lambda: Adam(beta1=1.0), ValueError, r"beta1: .* below 1.0, got 1.0"),
    (lambda: Adam(beta2=float("nan")), ValueError, r"beta2: expected a finite number"),
    (lambda: SGD().update([1.0], {}), TypeError, r"params: expected a dict of parameter arrays, got list"),
    (lambda: SGD().update({"W": np.ones(2)}, {}), ValueError, r"grads: no gradient for parameter 'W'"),
    (lambda: SGD().update({"W": np.ones(2, int)}, {"W": np.ones(2)}), TypeError, r"params\['W'\]: expected a float32 or float64 array, got dtype int"),
    (lambda: SGD().update({"W": np.ones(2)}, {"W": np.ones(2, complex)}), TypeError, r"grads\['W'\]: expected real numbers"),
    (lambda: SGD().update({"W": "abc"}, {"W": 1.0}), TypeError, r"params\['W'\]: expected a float32 or float64 array or a number, got str"),
    (lambda: SGD().update({"W": np.ones((2, 3))}, {"W": np.ones(3)}), ValueError, r"expected the shape of params\['W'\] \(2, 3\), got \(3,\)"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_read_only_parameter_is_refused():
    W = np.ones(3)
    W.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['W'\]: the array is read-only"):
        SGD().update({"W": W}, {"W": np.ones(3)})


def test_state_of_a_replaced_parameter_of_another_shape_is_refused():
    opt = Momentum()
    opt.update({"W": np.ones(3)}, {"W": np.ones(3)})
    with pytest.raises(ValueError, match=r"Momentum.v\['W'\]: expected a writeable C-contiguous float64 array of shape \(4,\)"):
        opt.update({"W": np.ones(4)}, {"W": np.ones(4)})


def test_star_import_gives_the_books_names_and_np():
    namespace = {}
    exec("from fastbp.optimizers import *", namespace)
    for name in ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "np"):
        assert name in namespace
    assert namespace["np"] is np and fastbp.Adam is namespace["Adam"]


def test_two_layer_net_training_with_each_optimizer_learns():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 10))
    t = np.argmax(x @ rng.standard_normal((10, 3)), axis=1)
    for name, (cls, _, _) in OPTIMIZERS.items():
        np.random.seed(0)
        net = TwoLayerNet(10, 20, 3, weight_init_std=0.1)
        opt = cls(lr=0.1 if name != "Adam" else 0.01)
        for i in range(200):
            batch = np.random.choice(200, 20)
            opt.update(net.params, net.gradient(x[batch], t[batch]))
        assert net.accuracy(x, t) > 0.8, name
