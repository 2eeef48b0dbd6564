"""Chapter 4's own two-layer net, for the book's ``ch04/train_neuralnet.py``::

    from fastbp.ch04 import TwoLayerNet      # instead of: from two_layer_net import TwoLayerNet

It differs from chapter 5's ``fastbp.TwoLayerNet`` as the book's two classes do: a sigmoid hidden
layer; ``predict`` returns the softmax probabilities; ``loss`` is the book's
``cross_entropy_error`` of them (with its 1e-7); the book writes ``gradient`` out by hand with
``sigmoid_grad``, which here is the same chain rule run by the layers:
dy = (y - t) / N, dW2 = z1.T dy, dz1 = dy W2.T, da1 = z1 (1 - z1) dz1, dW1 = x.T da1.
Like the book's, it reads ``params`` at every call, so replacing ``params['W1']`` is seen too.
"""
from collections import OrderedDict

import numpy as np

from . import _checks
from .functions import cross_entropy_error, softmax
from .gradcheck import numerical_gradient
from .layers import Affine, Sigmoid, SoftmaxWithLoss
from .nets import _Net, _sizes

__all__ = ["TwoLayerNet"]

KEYS = ("W1", "b1", "W2", "b2")


class TwoLayerNet(_Net):
    """input -> affine -> sigmoid -> affine -> softmax, the book's ch04 ``TwoLayerNet``."""

    _book_loss = True   # its compiled calls report the book's loss, as ``loss`` does

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, dtype=np.float64):
        _sizes(input_size=input_size, hidden_size=hidden_size, output_size=output_size)
        std = _checks.positive_float("weight_init_std", weight_init_std)
        dtype = _checks.float_dtype(dtype)
        self.params = {}
        self.params["W1"] = (std * np.random.randn(input_size, hidden_size)).astype(dtype, copy=False)
        self.params["b1"] = np.zeros(hidden_size, dtype)
        self.params["W2"] = (std * np.random.randn(hidden_size, output_size)).astype(dtype, copy=False)
        self.params["b2"] = np.zeros(output_size, dtype)
        self._layers = OrderedDict()
        self._layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self._layers["Sigmoid1"] = Sigmoid()
        self._layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss()

    @property
    def layers(self):
        """The layers, bound to the arrays ``params`` holds now (the book reads params each call)."""
        for i, name in ((1, "Affine1"), (2, "Affine2")):
            layer = self._layers[name]
            layer.W, layer.b = self.params[f"W{i}"], self.params[f"b{i}"]
        return self._layers

    def predict(self, x):
        """Softmax probabilities y (N, C)."""
        return softmax(self._run(x))

    def loss(self, x, t):
        """The book's cross_entropy_error(predict(x), t): -mean_n log(y[n, t_n] + 1e-7), by one
        compiled call (the forward pass and softmax, kernels/net.py) where it takes x and t, as
        ``gradient`` does; else by the layers, which refuse bad input."""
        compiled = self._compiled_loss(x, t, gradient=False)
        return cross_entropy_error(self.predict(x), t) if compiled is None else compiled[0]

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 - the book's idiom
        return {key: numerical_gradient(loss_W, self.params[key]) for key in KEYS}
