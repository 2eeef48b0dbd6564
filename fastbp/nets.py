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

The fast path: a net that is a plain stack (Affine, one kind of activation, ..., Affine, then
SoftmaxWithLoss) with well-formed batch input runs ``predict``, ``loss``, ``gradient``,
``accuracy`` and ``numerical_gradient`` as one compiled call each (kernels/net.py), on the
nonzero lists of x (``gradient`` and ``loss`` on a batch of TEAM_ROWS or more by two threads,
the calling one and a helper: fastbp/halves.py), and leaves in the layers the state their own
forward and backward would (Affine.x, Relu.mask, SoftmaxWithLoss.y, dW, db, ...). Anything
else, and any input the fast path finds wrong (NaN in x, labels out of range), goes through the
layers one by one, which refuse bad input their way; so does everything on the reference
backend, and while a computational graph is recorded (fastbp.graph draws the layers' calls).
"""
import math
import numbers
import threading
import warnings
from collections import OrderedDict

import numpy as np

from . import _checks, _trace, halves, reference
from .backend import get_backend, ops
from .functions import _cross_entropy_of_rows
from .gradcheck import _observer as _kinks_observer
from .gradcheck import numerical_gradient
from .kernels.net import DENSE, WANTS_BLAS, net_team, team_arguments, team_results, team_workspace
from .layers import DIVERGED_HINT, Affine, Relu, Sigmoid, SoftmaxWithLoss, Tanh, net_reports
from .losses import get_loss
from .regularization import BatchNormalization, Dropout
from .threads import limited_blas

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}
ACTIVATION_CODES = {Relu: reference.RELU, Sigmoid: reference.SIGMOID, Tanh: reference.TANH}
TRAIN_FLG_LAYERS = (Dropout, BatchNormalization)  # forward(x, train_flg): training differs from testing
NUMERICAL_STEP = 1e-4   # the book's h
# The compiled calls take any density: the first layer's products on x's nonzero lists, or by
# BLAS for denser batches (kernels/net.py DENSE_SHARE). Their BLAS runs on one thread (see
# _Plan.run and run_team): the second core is the helper's (below); two-thread BLAS beside it
# would oversubscribe the cores, and on a machine whose other core is busy, two-thread BLAS waits for
# a parked thread and a product takes milliseconds (the book's loop through the layers, 784-50-10
# float64 on a 2-core Zen 4: ~720 us/iteration quiet, 2200-3700 with the other core busy).
# A batch of this many rows or more runs its compiled gradient and loss as a team of two threads:
# the calling thread and a helper thread (fastbp/halves.py, kernels/net.py net_team). Measured on
# a 2-core Zen 4 (784-50-10, float64 net, float32 MNIST-like x), us per gradient / loss call, one
# thread against the team: 16 rows 81 / 42 against 96 / 55, 32 rows 131 / 63 against 126 / 66,
# 48 rows 178 / 82 against 154 / 76, the book's 100 rows 326 / 150 against 249 / 110.
TEAM_ROWS = 40


class _Plan:
    """What one compiled call needs: x as (N, D) rows, the weights, biases and activation code;
    ``single`` when x was the book's single sample (D,) (then outputs lose their batch axis)."""

    __slots__ = ("x", "shape", "weights", "biases", "activation", "single")

    def __init__(self, x, shape, weights, biases, activation):
        self.x, self.shape, self.weights, self.biases, self.activation = x, shape, weights, biases, activation
        self.single = len(shape) == 1

    def run(self, kernel, *args):
        """ops().<kernel>(x, *args, weights, biases, activation), BLAS on one thread."""
        with limited_blas(1, cached=True):
            return getattr(ops(), kernel)(self.x, *args, self.weights, self.biases, self.activation)

    def run_team(self, labels, gradient):
        """run("net_gradient" (``gradient``) or "net_loss", labels), by a team of two threads
        (kernels/net.py net_team: the calling thread and the helper, fastbp/halves.py) when x has
        TEAM_ROWS rows or more: the same numbers, whichever thread computed what.

        BLAS is held at one thread only for a batch dense enough to use it: one as dense as the
        last batch of its shape on this thread (the workspace keeps that batch's facts), or one
        that net_team found so and stopped at (then it runs again)."""
        n = self.x.shape[0]
        if n < TEAM_ROWS:
            return self.run("net_gradient" if gradient else "net_loss", labels)
        x = np.ascontiguousarray(self.x)
        work = _workspace(x, self.weights)
        facts = work[1]
        limit = bool(facts[DENSE])
        arguments = team_arguments(x, labels, self.weights, self.biases, self.activation, gradient, work,
                                   limit)
        kind = (gradient, x.shape)   # (the book's loop: gradient then loss on one batch shape)
        loss, nonfinite = _team_call(arguments, limit, kind)
        if facts[WANTS_BLAS]:   # (denser than the last batch: it stopped before its first stage)
            arguments = (*arguments[:-1], True)
            loss, nonfinite = _team_call(arguments, True, None)   # (not a cycle of the loop)
        return team_results(arguments, loss, nonfinite)


def _team_call(arguments, limit, kind):
    """net_team(*arguments) by halves.team, with BLAS held at one thread if ``limit``."""
    if not limit:
        return halves.team(net_team, arguments, publishing=True, kind=kind)
    with limited_blas(1, cached=True):
        return halves.team(net_team, arguments, publishing=True, kind=kind)


_workspaces = threading.local()


def _workspace(x, weights):
    """net_team's scratch for x and the weights' shapes: the calling thread's last one when the
    shapes and dtypes are the same (the book's loop calls gradient and loss on batches of one
    size), else a new one. Per thread: two threads calling nets at once never share one."""
    key = (x.shape, x.dtype, weights[0].dtype, tuple(W.shape for W in weights))
    kept = getattr(_workspaces, "kept", None)
    if kept is None or kept[0] != key:
        kept = _workspaces.kept = (key, team_workspace(x, weights))
    return kept[1]


class _Net:
    """What the nets share: everything but building the layers."""

    weight_decay_lambda = 0  # L2 weight decay strength (MultiLayerNet's argument; 0: none)
    _book_loss = False       # report the book's log(y + 1e-7) loss whatever get_loss() says (ch04's net)
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
        plan = self._plan(x)
        if plan is not None:
            outputs, nonfinite = plan.run("net_scores")
            if not nonfinite:
                self._took(plan, outputs)
                scores = self._checked_output(outputs[-1])
                return scores[0] if plan.single else scores
        return self._run(x)

    def loss(self, x, t):
        return self._loss(x, t)

    def _plan(self, x):
        """A _Plan when one compiled call can do this net's work on x, else None (then the
        layers run one by one, and refuse bad input their way). None too while a graph is
        recorded (fastbp.graph): it draws the layers' calls, so they must run."""
        if (get_backend() != "kernels" or _trace.recording() or not isinstance(x, np.ndarray)
                or not x.ndim or not x.shape[0]):
            return None
        layers = tuple(self.layers.values())
        if len(layers) % 2 == 0 or not isinstance(self._last_layer, SoftmaxWithLoss):
            return None
        activation = type(layers[1]) if len(layers) > 1 else Relu
        if activation not in ACTIVATION_CODES:
            return None
        weights, biases = [], []
        for i, layer in enumerate(layers):
            if type(layer) is not (activation if i % 2 else Affine):
                return None
            if i % 2:
                continue
            W, b = layer.W, layer.b
            if not (isinstance(W, np.ndarray) and isinstance(b, np.ndarray) and W.ndim == 2
                    and W.dtype in _checks.FLOAT_DTYPES and b.dtype == W.dtype and b.shape == (W.shape[1],)
                    and W.flags.c_contiguous and b.flags.c_contiguous
                    and (not weights or (W.dtype == weights[0].dtype
                                         and W.shape[0] == weights[-1].shape[1]))):
                return None
            weights.append(W)
            biases.append(b)
        rows = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1) if x.ndim > 2 else x
        if rows.shape[1] != weights[0].shape[0]:
            return None
        if rows.dtype.kind not in "fiu" or (rows.dtype.kind == "f" and rows.dtype.itemsize > weights[0].itemsize):
            return None   # (float64 data into a float32 net: the layers check its range)
        if rows.dtype not in _checks.FLOAT_DTYPES:
            rows = rows.astype(weights[0].dtype)   # integers, float16: as the layers convert them
        return _Plan(rows, x.shape, tuple(weights), tuple(biases), ACTIVATION_CODES[activation])

    @staticmethod
    def _plan_labels(plan, t):
        """Class indices (a private int64 array) of well-formed labels t for the plan's rows:
        indices in range, or one-hot rows; else None (the layers then say what is wrong)."""
        if plan is None:
            return None
        if plan.single and isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            t = np.array([t])
        if not isinstance(t, np.ndarray):
            return None
        n, classes = plan.x.shape[0], plan.weights[-1].shape[1]
        if plan.single and t.ndim == 0:
            t = t.reshape(1)
        elif plan.single and t.shape == (classes,):
            t = t.reshape(1, classes)
        if t.ndim == 1 and t.shape[0] == n and t.dtype.kind in "iu":
            labels, bad = ops().index_labels(t, classes)
        elif t.ndim == 2 and t.shape == (n, classes) and t.dtype.kind in "fiu":
            labels, bad = ops().onehot_labels(t)
        else:
            return None
        return labels if bad < 0 else None

    def _took(self, plan, outputs, dWs=None, dbs=None):
        """Leave in the layers the state their own forward (and backward) would have left."""
        layers = tuple(self.layers.values())
        for i in range(0, len(layers), 2):
            k = i // 2
            inputs = plan.x if k == 0 else outputs[k - 1]
            layers[i]._ran(inputs, plan.shape if k == 0 else inputs.shape,
                           None if dWs is None else dWs[k], None if dbs is None else dbs[k])
            if i + 1 < len(layers):
                layers[i + 1]._ran(outputs[k])

    def _checked_output(self, out):
        if not self._warned and not np.isfinite(out).all():
            self._warn_diverged()
        return out

    def _compiled_loss(self, x, t, gradient):
        """(loss, grads dict or None) by one compiled call, or None when the layers must run."""
        plan = self._plan(x)
        labels = self._plan_labels(plan, t)
        if labels is None:
            return None
        if gradient:
            loss, y, outputs, dWs, dbs, nonfinite = plan.run_team(labels, gradient=True)
        else:
            (loss, y, outputs, nonfinite), dWs, dbs = plan.run_team(labels, gradient=False), None, None
        if nonfinite:
            return None
        if self._book_loss or get_loss() == "book":
            loss = _cross_entropy_of_rows(y, labels)
        self._took(plan, outputs, dWs, dbs)
        self._last_layer._ran(loss, y, t, labels, plan.single)
        if not (self._warned or math.isfinite(loss)):
            self._warn_diverged()
        if not gradient:
            return loss, None
        grads = {}
        lam = self.weight_decay_lambda
        for i, (dW, db) in enumerate(zip(dWs, dbs), start=1):
            grads[f"W{i}"] = dW + lam * plan.weights[i - 1] if lam else dW
            grads[f"b{i}"] = db
        return loss, grads

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
        compiled = self._compiled_loss(x, t, gradient=False)
        loss = self._run(x, t, train_flg) if compiled is None else compiled[0]
        return self._with_decay(loss)

    def _with_decay(self, loss):
        lam = self.weight_decay_lambda
        if lam:
            weight_decay = 0
            for key in self._param_keys():
                if key.startswith("W"):
                    weight_decay += 0.5 * lam * np.sum(self.params[key] ** 2)
            loss = loss + weight_decay
        return loss

    def accuracy(self, x, t):
        plan = self._plan(x)
        labels = self._plan_labels(plan, t)
        if labels is not None:
            predicted = ops().net_labels(plan.x, plan.weights, plan.biases, plan.activation)
            return float(np.sum(predicted == labels) / plan.x.shape[0])
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
        """The book's central differences of self.loss(x, t), one parameter entry at a time. For a
        plain net with no weight decay and loss not replaced (either loss, see set_loss), all in one
        compiled call, every shifted loss a whole forward pass (~50x faster than the book's)."""
        if "loss" not in vars(self) and type(self).loss is _Net.loss and not self.weight_decay_lambda:
            plan = self._plan(x)
            labels = self._plan_labels(plan, t)
            if labels is not None and not plan.run("net_scores")[1]:
                dWs, dbs, kWs, kbs = ops().net_numerical_gradient(
                    plan.x, labels, plan.weights, plan.biases, plan.activation, NUMERICAL_STEP,
                    get_loss() == "book")
                kinks = _kinks_observer.get()
                grads = {}
                for i, (dW, db) in enumerate(zip(dWs, dbs), start=1):
                    grads[f"W{i}"], grads[f"b{i}"] = dW, db
                    if kinks is not None:
                        kinks.add(plan.weights[i - 1], kWs[i - 1])
                        kinks.add(plan.biases[i - 1], kbs[i - 1])
                return grads
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 - the book's idiom
        return {key: numerical_gradient(loss_W, self.params[key]) for key in self._param_keys()}

    def gradient(self, x, t):
        compiled = self._compiled_loss(x, t, gradient=True)
        if compiled is not None:
            return compiled[1]
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
