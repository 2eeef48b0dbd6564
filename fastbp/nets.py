"""Nets built from the layers: the book's ch05 TwoLayerNet and its ch06 MultiLayerNet.

Both keep the book's surface: ``params`` (arrays the user's loop updates in place, the very arrays
the Affine layers read), ``layers`` (an OrderedDict), ``predict``, ``loss``, ``accuracy``,
``numerical_gradient`` and ``gradient``. float64 by default as in the book; ``dtype=np.float32``
halves memory traffic. Initial weights come from NumPy's global generator (``np.random.randn``),
like the book, so ``np.random.seed`` makes them reproducible.
"""
from collections import OrderedDict

import numpy as np

from . import _checks, reference
from .gradcheck import numerical_gradient
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss, Tanh

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}
ACTIVATION_CODES = {Relu: reference.RELU, Sigmoid: reference.SIGMOID, Tanh: reference.TANH}


class _Net:
    """What TwoLayerNet and MultiLayerNet share: everything but building the layers."""

    def _get_last_layer(self):
        return self._last_layer

    def _set_last_layer(self, layer):
        self._last_layer = layer

    # the book's TwoLayerNet says lastLayer, its MultiLayerNet last_layer: both name one layer
    lastLayer = last_layer = property(_get_last_layer, _set_last_layer)

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype

    def affine_layers(self):
        return [layer for layer in self.layers.values() if isinstance(layer, Affine)]

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        return self._last_layer.forward(y, t)

    def accuracy(self, x, t):
        y = self.predict(x)
        y = y.reshape(1, -1) if y.ndim == 1 else y
        kind, labels = _checks.as_labels("accuracy: t", t, y.shape[0], y.shape[1])
        if kind == "onehot":
            labels = np.argmax(labels, axis=1)
        return float(np.sum(np.argmax(y, axis=1) == labels) / y.shape[0])

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 - the book's idiom
        return {key: numerical_gradient(loss_W, param) for key, param in self.params.items()}

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self._last_layer.backward(1)
        layers = list(self.layers.values())
        for i in range(len(layers) - 1, -1, -1):
            if i == 0 and isinstance(layers[0], Affine):
                layers[0].backward(dout, need_dx=False)  # nothing below the first layer needs dx
            else:
                dout = layers[i].backward(dout)
        grads = {}
        for i, layer in enumerate(self.affine_layers(), start=1):
            grads[f"W{i}"], grads[f"b{i}"] = layer.dW, layer.db
        return grads

    def stack(self):
        """(weights, biases, activation code) for the compiled whole-net kernels used by ``fit``.

        The arrays are the ones the layers compute with (so updates land in ``params``). Only
        the shape every net here has is accepted: Affine, activation, Affine, ..., Affine, all
        activations of one kind, SoftmaxWithLoss on top.
        """
        layers = list(self.layers.values())
        kinds = {type(layer) for layer in layers[1::2]}
        plain = (all(isinstance(layer, Affine) for layer in layers[0::2]) and len(layers) % 2 == 1
                 and len(kinds) <= 1 and kinds <= set(ACTIVATION_CODES)
                 and isinstance(self._last_layer, SoftmaxWithLoss))
        if not plain:
            raise ValueError("fit: expected a net of Affine layers with one kind of activation "
                             "(Relu, Sigmoid or Tanh) between them and SoftmaxWithLoss on top, got "
                             f"layers {[type(layer).__name__ for layer in layers]}")
        affines = layers[0::2]
        for i, layer in enumerate(affines):
            W, b = layer._params()
            for name, p in (("W", W), ("b", b)):
                if not (p.flags.c_contiguous and p.flags.writeable):
                    raise ValueError(f"fit: layer {i + 1}'s {name} must be a writeable C-contiguous "
                                     f"array (fit updates it in place); got one that is not: use "
                                     f"np.ascontiguousarray and assign it to the layer and params")
            if W.dtype != affines[0].W.dtype or (i and W.shape[0] != affines[i - 1].W.shape[1]):
                raise ValueError(f"fit: layer {i + 1} has W {W.shape} {W.dtype}, which does not "
                                 f"follow layer {i} ({affines[i - 1].W.shape} {affines[i - 1].W.dtype})")
        code = ACTIVATION_CODES[kinds.pop()] if kinds else 0
        return tuple(layer.W for layer in affines), tuple(layer.b for layer in affines), code


def _sizes(**sizes):
    return {name: _checks.positive_int(name, value) for name, value in sizes.items()}


class TwoLayerNet(_Net):
    """input -> Affine1 -> Relu1 -> Affine2 -> softmax cross-entropy, as in the book's ch05."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, dtype=np.float64):
        _sizes(input_size=input_size, hidden_size=hidden_size, output_size=output_size)
        std = _checks.positive_float("weight_init_std", weight_init_std)
        dtype = _checks.float_dtype(dtype)
        self.params = {}
        self.params["W1"] = (std * np.random.randn(input_size, hidden_size)).astype(dtype)
        self.params["b1"] = np.zeros(hidden_size, dtype)
        self.params["W2"] = (std * np.random.randn(hidden_size, output_size)).astype(dtype)
        self.params["b2"] = np.zeros(output_size, dtype)

        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()


class MultiLayerNet(_Net):
    """Fully connected net of any depth, as in the book's ch06 ``MultiLayerNet``.

    ``weight_init_std``: a number, or "relu"/"he" (std sqrt(2/n_in)), or "sigmoid"/"xavier"
    (std sqrt(1/n_in)); the default picks He for relu and Xavier for sigmoid and tanh.
    Layers are named Affine1, Activation_function1, ..., AffineN like the book's.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std=None, dtype=np.float64):
        _sizes(input_size=input_size, output_size=output_size)
        if isinstance(hidden_size_list, (int, np.integer)):
            hidden_size_list = [hidden_size_list]
        if not isinstance(hidden_size_list, (list, tuple, np.ndarray)):
            raise TypeError(f"hidden_size_list: expected a list of positive integers such as "
                            f"[100, 50], got {_checks.describe(hidden_size_list)}")
        hidden = [_checks.positive_int("hidden_size_list", h) for h in hidden_size_list]
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if weight_init_std is None:
            weight_init_std = "relu" if activation == "relu" else "sigmoid"
        dtype = _checks.float_dtype(dtype)
        self.input_size, self.hidden_size_list, self.output_size = input_size, hidden, output_size
        self.activation = activation

        sizes = [input_size] + hidden + [output_size]
        self.params = {}
        for i in range(1, len(sizes)):
            std = _init_std(weight_init_std, sizes[i - 1])
            self.params[f"W{i}"] = (std * np.random.randn(sizes[i - 1], sizes[i])).astype(dtype)
            self.params[f"b{i}"] = np.zeros(sizes[i], dtype)

        self.layers = OrderedDict()
        last = len(sizes) - 1
        for i in range(1, last + 1):
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i < last:
                self.layers[f"Activation_function{i}"] = ACTIVATIONS[activation]()
        self.last_layer = SoftmaxWithLoss()


def _init_std(scale, fan_in):
    if isinstance(scale, str):
        name = scale.lower()
        if name in ("relu", "he"):
            return np.sqrt(2.0 / fan_in)
        if name in ("sigmoid", "xavier"):
            return np.sqrt(1.0 / fan_in)
        raise ValueError(f"weight_init_std: expected a number or one of 'relu', 'he', 'sigmoid', "
                         f"'xavier', got {scale!r}")
    return _checks.positive_float("weight_init_std", scale)
