"""The book's training step through the layers: TwoLayerNet(784, 50, 10), batch 100, one-hot labels.

``book_sgd_step`` is the loop body of the book's ch05 train_neuralnet.py: ``net.gradient`` (forward
and backward through Affine, Relu, Affine, SoftmaxWithLoss), the in-place SGD update of
``net.params``, then ``net.loss``. Both backends, both dtypes; the ratio reference / kernels is what
to read, as it includes the layers' Python and validation overhead that ``fit`` avoids.
"""
import fastbp

from . import common
from .common import BACKENDS, BATCH, DTYPES, LR


def book_sgd_step(net, x, t, lr=LR):
    grads = net.gradient(x, t)
    for key in ("W1", "b1", "W2", "b2"):
        net.params[key] -= lr * grads[key]
    return net.loss(x, t)


class TwoLayerNetStep:
    params = (BACKENDS, list(DTYPES))
    param_names = ["backend", "dtype"]
    repeat = (10, 100, 1.0)

    def setup(self, backend, dtype):
        self.previous = common.switch_backend(backend)
        self.net = common.make_net("784-50-10", dtype)
        self.x, self.t = common.mnist_onehot(BATCH, dtype)
        book_sgd_step(self.net, self.x, self.t)  # warms the JIT for every kernel the step uses

    def teardown(self, backend, dtype):
        fastbp.set_backend(self.previous)

    def time_book_sgd_step(self, backend, dtype):
        book_sgd_step(self.net, self.x, self.t)

    def time_gradient(self, backend, dtype):
        self.net.gradient(self.x, self.t)

    def time_loss(self, backend, dtype):
        self.net.loss(self.x, self.t)


class TwoLayerNetStepThreads:
    """The same step on the kernels backend, float64 (the book's), with fastbp's helper thread
    (2: a batch's gradient and loss by a team of two threads, fastbp/halves.py) and without (1:
    every part on the calling thread), on MNIST-like input and input half nonzero as
    Fashion-MNIST (the first layer on the nonzero lists) and dense input (by one-thread BLAS,
    kernels/net.py DENSE_SHARE). The results are the same; the time is what the helper buys."""
    params = ([1, 2], ["mnist-like", "half-nonzero", "dense"])
    param_names = ["threads", "input"]
    repeat = (10, 100, 1.0)

    def setup(self, threads, input):
        self.previous = common.switch_backend("kernels")
        fastbp.set_threads(threads)
        self.net = common.make_net("784-50-10", "float64")
        self.x, self.t = common.mnist_onehot(BATCH, "float64")
        if input == "dense":
            self.x = common.rng(2).random(self.x.shape)
        elif input == "half-nonzero":
            self.x = common.rng(2).random(self.x.shape) * (common.rng(3).random(self.x.shape) < 0.5)
        book_sgd_step(self.net, self.x, self.t)  # warms the JIT and starts the helper

    def teardown(self, threads, input):
        fastbp.set_threads(None)
        fastbp.set_backend(self.previous)

    def time_book_sgd_step(self, threads, input):
        book_sgd_step(self.net, self.x, self.t)
