"""Nets built from the layers: the book's ch05 TwoLayerNet and its ch06 MultiLayerNet and
MultiLayerNetExtend.

All keep the book's surface: ``params`` (arrays the user's loop updates in place, the very arrays
the layers read), ``layers`` (an OrderedDict), ``predict``, ``loss``, ``accuracy``,
``numerical_gradient`` and ``gradient``. float64 by default as in the book; ``dtype=np.float32``
halves memory traffic. Initial weights come from NumPy's global generator (``np.random.randn``),
like the book, so ``np.random.seed`` makes them reproducible.

Input data with NaN or Inf is refused; NaN or Inf that training produces (weights that blew up)
is not: the net warns once (RuntimeWarning) and computes on as NumPy would, as the book's code
does. Telling the two apart costs nothing while all is finite: x @ W1 + b1 is finite exactly when
x is (for finite W1, b1), so x itself is inspected only when the first layer's output is not.
"""
import numbers
import warnings
from collections import OrderedDict

import numpy as np

from . import _checks, reference
from .gradcheck import numerical_gradient
from .layers import DIVERGED_HINT, Affine, Relu, Sigmoid, SoftmaxWithLoss, Tanh, net_reports
from .regularization import BatchNormalization, Dropout

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}
ACTIVATION_CODES = {Relu: reference.RELU, Sigmoid: reference.SIGMOID, Tanh: reference.TANH}
TRAIN_FLG_LAYERS = (Dropout, BatchNormalization)  # forward(x, train_flg): training differs from testing


class _Net:
    """What the nets share: everything but building the layers."""

    weight_decay_lambda = 0  # L2 weight decay strength (MultiLayerNet's argument; 0: none)
    _warned = False          # set when the net has reported NaN/Inf from training (once)

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
        return self._run(x)

    def loss(self, x, t):
        return self._loss(x, t)

    def _run(self, x, t=None, train_flg=False):
        """The layers' output for x, or with labels t the last layer's loss. The layers stay quiet
        about NaN/Inf meanwhile (``net_reports``): here bad input is refused and divergence is
        reported once."""
        token = net_reports.set(True)
        try:
            layers = iter(self.layers.values())
            h = next(layers).forward(x)
            if not np.isfinite(h).all():
                self._input_or_divergence(x)
            for layer in layers:
                h = layer.forward(h, train_flg) if isinstance(layer, TRAIN_FLG_LAYERS) else layer.forward(h)
            if t is not None:
                h = self._last_layer.forward(h, t)
        finally:
            net_reports.reset(token)
        if not self._warned and not np.isfinite(h).all():
            self._warn_diverged()
        return h

    def _input_or_divergence(self, x):
        """The first layer's output has NaN/Inf: refuse x if it is to blame, else warn."""
        x = np.asarray(x)
        if x.dtype.kind == "f":
            _checks.check_finite(f"{type(self).__name__}: x", x)
        self._warn_diverged()

    def _warn_diverged(self):
        if self._warned:
            return
        self._warned = True
        warnings.warn(f"{type(self).__name__}: NaN or Inf in the output although the input x is "
                      f"finite: the weights overflowed; {DIVERGED_HINT}. Computing on with "
                      "NaN/Inf, as NumPy would.", RuntimeWarning, stacklevel=3)

    def _loss(self, x, t, train_flg=False):
        """Cross-entropy of the output, plus 0.5 * lambda * sum of W^2 over the weights (the book's
        weight decay, summed in its order) when weight_decay_lambda is not 0."""
        loss = self._run(x, t, train_flg)
        lam = self.weight_decay_lambda
        if lam:
            weight_decay = 0
            for key in self._param_keys():
                if key.startswith("W"):
                    weight_decay += 0.5 * lam * np.sum(self.params[key] ** 2)
            loss = loss + weight_decay
        return loss

    def accuracy(self, x, t):
        y = self.predict(x)
        y = y.reshape(1, -1) if y.ndim == 1 else y
        kind, labels = _checks.as_labels("accuracy: t", t, y.shape[0], y.shape[1])
        if kind == "onehot":
            labels = np.argmax(labels, axis=1)
        return float(np.sum(np.argmax(y, axis=1) == labels) / y.shape[0])

    def _param_keys(self):
        """The keys of the gradient, in the book's order: W1 b1 (gamma1 beta1) W2 b2 ..."""
        keys = []
        affine = batchnorm = 0
        for layer in self.layers.values():
            if isinstance(layer, Affine):
                affine += 1
                keys += [f"W{affine}", f"b{affine}"]
            elif isinstance(layer, BatchNormalization):
                batchnorm += 1
                keys += [f"gamma{batchnorm}", f"beta{batchnorm}"]
        return keys

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 - the book's idiom
        return {key: numerical_gradient(loss_W, self.params[key]) for key in self._param_keys()}

    def gradient(self, x, t):
        self._loss(x, t, train_flg=True)
        dout = self._last_layer.backward(1)
        layers = list(self.layers.values())
        for i in range(len(layers) - 1, -1, -1):
            if i == 0 and isinstance(layers[0], Affine):
                layers[0].backward(dout, need_dx=False)  # nothing below the first layer needs dx
            else:
                dout = layers[i].backward(dout)
        grads = {}
        lam = self.weight_decay_lambda
        affine = batchnorm = 0
        for layer in layers:
            if isinstance(layer, Affine):
                affine += 1
                grads[f"W{affine}"] = layer.dW + lam * layer.W if lam else layer.dW
                grads[f"b{affine}"] = layer.db
            elif isinstance(layer, BatchNormalization):
                batchnorm += 1
                grads[f"gamma{batchnorm}"], grads[f"beta{batchnorm}"] = layer.dgamma, layer.dbeta
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
        self.params["W1"] = (std * np.random.randn(input_size, hidden_size)).astype(dtype, copy=False)
        self.params["b1"] = np.zeros(hidden_size, dtype)
        self.params["W2"] = (std * np.random.randn(hidden_size, output_size)).astype(dtype, copy=False)
        self.params["b2"] = np.zeros(output_size, dtype)

        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()


class MultiLayerNet(_Net):
    """Fully connected net of any depth, as in the book's ch06 ``MultiLayerNet``.

    ``weight_init_std``: a number, or "relu"/"he" (std sqrt(2/n_in)), or "sigmoid"/"xavier"
    (std sqrt(1/n_in)), or "auto" (He for relu, Xavier for sigmoid and tanh). The default is the
    book's, "relu", whatever the activation; for sigmoid and tanh nets "auto" is the better choice.
    ``weight_decay_lambda``: L2 weight decay, 0.5 * lambda * sum W^2 added to the loss and
    lambda * W to each weight's gradient, as the book's. Layers are named Affine1,
    Activation_function1, ..., AffineN like the book's.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, dtype=np.float64):
        self._build(input_size, hidden_size_list, output_size, activation, weight_init_std,
                    weight_decay_lambda, dtype)

    def _build(self, input_size, hidden_size_list, output_size, activation, weight_init_std,
               weight_decay_lambda, dtype, batchnorm=False, dropout_ratio=None):
        _sizes(input_size=input_size, output_size=output_size)
        if isinstance(hidden_size_list, (int, np.integer)):
            hidden_size_list = [hidden_size_list]
        if not isinstance(hidden_size_list, (list, tuple, np.ndarray)):
            raise TypeError(f"hidden_size_list: expected a list of positive integers such as "
                            f"[100, 50], got {_checks.describe(hidden_size_list)}")
        hidden = [_checks.positive_int("hidden_size_list", h) for h in hidden_size_list]
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        dtype = _checks.float_dtype(dtype)
        self.input_size, self.hidden_size_list, self.output_size = input_size, hidden, output_size
        self.hidden_layer_num = len(hidden)
        self.activation = activation
        self.weight_decay_lambda = _decay(weight_decay_lambda)

        sizes = [input_size] + hidden + [output_size]
        self.params = {}
        for i in range(1, len(sizes)):
            std = _init_std(weight_init_std, sizes[i - 1], activation)
            self.params[f"W{i}"] = (std * np.random.randn(sizes[i - 1], sizes[i])).astype(dtype, copy=False)
            self.params[f"b{i}"] = np.zeros(sizes[i], dtype)

        self.layers = OrderedDict()
        last = len(sizes) - 1
        for i in range(1, last + 1):
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i == last:
                break
            if batchnorm:
                self.params[f"gamma{i}"] = np.ones(sizes[i], dtype)
                self.params[f"beta{i}"] = np.zeros(sizes[i], dtype)
                self.layers[f"BatchNorm{i}"] = BatchNormalization(self.params[f"gamma{i}"],
                                                                  self.params[f"beta{i}"])
            self.layers[f"Activation_function{i}"] = ACTIVATIONS[activation]()
            if dropout_ratio is not None:
                self.layers[f"Dropout{i}"] = Dropout(dropout_ratio)
        self.last_layer = SoftmaxWithLoss()


class MultiLayerNetExtend(MultiLayerNet):
    """The book's ch06 ``MultiLayerNetExtend``: MultiLayerNet with optional batch normalisation
    after each hidden Affine layer and dropout after each hidden activation.

    Layers: Affine1, [BatchNorm1], Activation_function1, [Dropout1], ..., AffineN; with
    ``use_batchnorm`` the params hold gamma1, beta1, ... besides W1, b1, ... (the gradients list
    them in the book's order, W1 b1 gamma1 beta1 W2 ...). ``predict`` and ``loss`` take
    ``train_flg`` (default False: test mode); ``gradient`` and ``numerical_gradient`` run in
    training mode, as the book's. ``dropout_ration`` is the book's spelling.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, dtype=np.float64):
        self.use_dropout, self.use_batchnorm = bool(use_dropout), bool(use_batchnorm)
        self._build(input_size, hidden_size_list, output_size, activation, weight_init_std,
                    weight_decay_lambda, dtype, batchnorm=self.use_batchnorm,
                    dropout_ratio=dropout_ration if self.use_dropout else None)

    def predict(self, x, train_flg=False):
        return self._run(x, train_flg=train_flg)

    def loss(self, x, t, train_flg=False):
        return self._loss(x, t, train_flg)

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t, train_flg=True)  # noqa: E731 - the book's, in training mode
        return {key: numerical_gradient(loss_W, self.params[key]) for key in self._param_keys()}


def _decay(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"weight_decay_lambda: expected a number >= 0, got {_checks.describe(value)}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"weight_decay_lambda: expected a finite number >= 0, got {value}")
    return value


def _init_std(scale, fan_in, activation):
    if isinstance(scale, str):
        name = scale.lower()
        if name == "auto":
            name = "relu" if activation == "relu" else "sigmoid"
        if name in ("relu", "he"):
            return np.sqrt(2.0 / fan_in)
        if name in ("sigmoid", "xavier"):
            return np.sqrt(1.0 / fan_in)
        raise ValueError(f"weight_init_std: expected a number or one of 'relu', 'he', 'sigmoid', "
                         f"'xavier', 'auto', got {scale!r}")
    return _checks.positive_float("weight_init_std", scale)
