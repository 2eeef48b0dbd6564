"""How ``fit`` runs its steps: the layout of the training data and the update rule.

``TrainingSet`` holds fit's private copy of the data in the layout its steps are fastest on: the
nonzero lists of each row (CSR) when at most ``SPARSE_MAX_DENSITY`` of the entries are nonzero, as
MNIST's 19 %, else the dense rows. Compressing takes one pass over the data (~0.1 s for MNIST) and
then no step gathers its batch: it reads the rows' nonzeros where they are. The choice depends on
the data only, so the same data and seed give the same weights on any machine.
"""
import numpy as np

from . import halves, optimizers
from .backend import get_backend, ops
from .kernels import step

# The sparse layout wins below this share of nonzeros. Measured, fit's float32 step in us on a
# 2-core Zen 5 (best of 3 fits of 400 steps each way, quiet), sparse / dense: 784-50-10 92 / 187
# at MNIST-like 19 %, 116 / 184 at 27 %, 136 / 182 at 35 %, 188 / 188 at Fashion-MNIST's 49 %,
# 320 / 182 at 100 %; 784-256-128-10 463 / 877, 537 / 884, 620 / 880, 764 / 880 and 1294 / 884.
# The dense step's time does not depend on the data; the sparse one's grows with the nonzeros.
SPARSE_MAX_DENSITY = 0.5


class TrainingSet:
    """x (N, D) float and labels t (N,) int64, already checked, in the layout fit trains on.

    x is copied (dense) or compressed (sparse): what the steps read is fastbp's own, whatever the
    caller does to the arrays passed in."""

    def __init__(self, x, t):
        self.rows = x.shape[0]
        self.t = np.array(t, dtype=np.int64, copy=True)
        self.density = int(np.count_nonzero(x)) / max(x.size, 1)
        # the reference backend is the layer-by-layer NumPy oracle: it trains on the dense rows
        self.sparse = self.density <= SPARSE_MAX_DENSITY and get_backend() == "kernels"
        if self.sparse:
            self.indptr, self.columns, self.values = ops().compress_rows(x)
            self.first_split = step.halfway_column(self.columns, x.shape[1])
            self.first_cuts = step.chunk_cuts(
                self.indptr, self.columns, step.first_cut_columns(self.first_split, x.shape[1]),
                np.arange(self.rows))
        else:
            self.x = np.array(x, copy=True)

    def sgd_steps(self, batches, weights, biases, activation, update, losses):
        """One training step per row of batches, as kernels.sgd_steps (in place); on the nonzero
        lists by a team of two threads when fastbp runs two (fastbp/halves.py)."""
        if self.sparse:
            halves.team(step.team_steps_csr, step.team_arguments_csr(
                self.indptr, self.columns, self.values, self.t, batches, weights, biases,
                activation, update, losses, self.first_split, cuts=self.first_cuts))
        else:
            ops().sgd_steps(self.x, self.t, batches, weights, biases, activation, update, losses)

    def predict_labels(self, start, stop, weights, biases, activation):
        """The net's class for rows start:stop."""
        if self.sparse:
            return ops().predict_labels_csr(self.indptr[start:stop + 1], self.columns, self.values,
                                            weights, biases, activation)
        return ops().predict_labels(self.x[start:stop], weights, biases, activation)

    def hits(self, start, stop, weights, biases, activation):
        """How many of rows start:stop the net classifies right."""
        labels = self.predict_labels(start, stop, weights, biases, activation)
        return int(np.count_nonzero(labels == self.t[start:stop]))


# The book's optimizers as the compiled steps' update rules (exact classes: Nesterov is a Momentum).
RULES = {optimizers.SGD: step.SGD, optimizers.Momentum: step.MOMENTUM,
         optimizers.Nesterov: step.NESTEROV, optimizers.AdaGrad: step.ADAGRAD,
         optimizers.RMSprop: step.RMSPROP, optimizers.Adam: step.ADAM}


def update_rule(optimizer, weights, biases, weight_decay):
    """The kernels' update tuple (rule, hyper, w_state, b_state) for one of the book's optimizers
    training weights W1.. and biases b1.. (a net's params), with its own state arrays (created as
    its update() would, zeros, when it has none yet): the compiled steps update them in place, so
    the optimizer holds the state of the training afterwards. Adam's ``iter`` is the caller's
    to advance by the steps taken."""
    rule = RULES[type(optimizer)]
    a = getattr(optimizer, "momentum", getattr(optimizer, "decay_rate", getattr(optimizer, "beta1", 0.0)))
    hyper = np.array([optimizer.lr, a, getattr(optimizer, "beta2", 0.0), weight_decay,
                      getattr(optimizer, "iter", 0)], dtype=np.float64)
    layers = len(weights)
    names = optimizer.state + (None,) * (2 - len(optimizer.state))   # two slots, as the kernels take
    w_state, b_state = [], []
    for name in names:
        for i, (W, b) in enumerate(zip(weights, biases), start=1):
            if name is None:
                w_state.append(np.empty((0, 0), W.dtype))
                b_state.append(np.empty(0, W.dtype))
            else:
                w_state.append(optimizer._state(name, f"W{i}", W, W.dtype))
                b_state.append(optimizer._state(name, f"b{i}", b, b.dtype))
    assert len(w_state) == 2 * layers
    return rule, hyper, tuple(w_state), tuple(b_state)
