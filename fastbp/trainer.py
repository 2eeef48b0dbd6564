"""The book's chapter 6 ``Trainer``: mini-batch training of any of its nets with a named optimizer,
accuracy once per epoch, printing as the book's does.

Each step draws the batch with ``np.random.choice(train_size, mini_batch_size)`` (with
replacement, as the book), takes ``network.gradient``, lets the optimizer update
``network.params`` and records ``network.loss`` on the batch. An epoch is
``train_size / mini_batch_size`` steps (not rounded, as the book: with 300 samples and batches of
100, every third step).
"""
import numbers

import numpy as np

from . import _checks
from .optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

__all__ = ["Trainer"]

# The book's names, lower case; "rmsprpo" is how earlier printings of the book spelled it.
OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad,
              "rmsprop": RMSprop, "rmsprpo": RMSprop, "adam": Adam}


def _optimizer(optimizer, optimizer_param):
    if callable(getattr(optimizer, "update", None)) and not isinstance(optimizer, str):
        return optimizer  # an optimizer object, e.g. Adam(lr=1e-3)
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        names = sorted(set(OPTIMIZERS) - {"rmsprpo"})
        raise ValueError(f"optimizer: expected one of {names} (any case) or an object with an "
                         f"update(params, grads) method, got {optimizer!r}")
    if not isinstance(optimizer_param, dict):
        raise TypeError(f"optimizer_param: expected a dict such as {{'lr': 0.01}}, got "
                        f"{_checks.describe(optimizer_param)}")
    cls = OPTIMIZERS[optimizer.lower()]
    try:
        return cls(**optimizer_param)
    except TypeError as error:
        if "unexpected keyword" not in str(error):
            raise
        raise TypeError(f"optimizer_param: {cls.__name__} takes "
                        f"{', '.join(cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount])}, "
                        f"got {sorted(optimizer_param)}") from None


def _pair(name_x, x, name_t, t):
    for name, a in ((name_x, x), (name_t, t)):
        if not hasattr(a, "shape") or not hasattr(a, "__getitem__") or len(a.shape) == 0:
            raise TypeError(f"{name}: expected a numpy array with one sample per row, got "
                            f"{_checks.describe(a)}")
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"{name_x} and {name_t}: expected one label per sample, got "
                         f"{x.shape[0]} samples and {t.shape[0]} labels")
    _checks.check_nonempty(name_x, x)


class Trainer:
    """Train ``network`` for ``epochs`` epochs of mini-batches (the book's ``common/trainer.py``).

    ``optimizer`` is a name of the book's ('SGD', 'Momentum', 'Nesterov', 'AdaGrad', 'RMSprop',
    'Adam', any case) built with ``optimizer_param`` (default ``{'lr': 0.01}``, the book's), or an
    optimizer object. ``evaluate_sample_num_per_epoch``: measure the per-epoch accuracies on the
    first that many samples only (the final test accuracy always uses all of x_test).
    Attributes as the book's: ``train_loss_list`` (every step), ``train_acc_list`` and
    ``test_acc_list`` (every epoch), ``current_iter``, ``current_epoch``, ``max_iter``, ...
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None,
                 verbose=True):
        for method in ("gradient", "loss", "accuracy"):
            if not callable(getattr(network, method, None)) or not hasattr(network, "params"):
                raise TypeError(f"network: expected a net with params, gradient, loss and accuracy "
                                f"(e.g. MultiLayerNet), got {type(network).__name__}")
        _pair("x_train", x_train, "t_train", t_train)
        _pair("x_test", x_test, "t_test", t_test)
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Real) or not epochs > 0:
            raise ValueError(f"epochs: expected a positive number, got {epochs!r}")
        self.network = network
        self.verbose = verbose
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = epochs
        self.batch_size = _checks.positive_int("mini_batch_size", mini_batch_size)
        if evaluate_sample_num_per_epoch is not None:
            _checks.positive_int("evaluate_sample_num_per_epoch", evaluate_sample_num_per_epoch)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = _optimizer(optimizer, {"lr": 0.01} if optimizer_param is None else optimizer_param)

        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []

    def train_step(self):
        """One mini-batch step; at the start of each epoch, the accuracies."""
        batch_mask = np.random.choice(self.train_size, self.batch_size)
        x_batch, t_batch = self.x_train[batch_mask], self.t_train[batch_mask]
        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)
        loss = self.network.loss(x_batch, t_batch)
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:" + str(loss))

        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            x_train, t_train, x_test, t_test = self.x_train, self.t_train, self.x_test, self.t_test
            n = self.evaluate_sample_num_per_epoch
            if n is not None:
                x_train, t_train, x_test, t_test = x_train[:n], t_train[:n], x_test[:n], t_test[:n]
            train_acc = self.network.accuracy(x_train, t_train)
            test_acc = self.network.accuracy(x_test, t_test)
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)
            if self.verbose:
                print(f"=== epoch:{self.current_epoch}, train acc:{train_acc}, test acc:{test_acc} ===")
        self.current_iter += 1

    def train(self):
        """All ``max_iter`` steps, then the accuracy on the whole test set."""
        for _ in range(self.max_iter):
            self.train_step()
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print(f"test acc:{test_acc}")
