"""Every (reference, kernel) pair of ``fastbp.TWINS``, timed on the same seeded inputs.

One table, ``common.KERNEL_CASES``, lists every kernel with its input maker and its group; the
``time_<name>`` methods below are generated from it, one per kernel, on the class of its group:

    Elementwise  relu/sigmoid/tanh/dropout/batchnorm forward and backward    batch 1, 100, 1000
                 on (batch, 50)
    SoftmaxCE    the four softmax cross-entropy kernels on (batch, 10)       batch 1, 100, 1000
    Affine       affine_forward/backward(_params), x (batch, 784), W (784, hidden)
    Net          predict_labels and sgd_steps (5 steps) of a 784-hidden-10 relu net, the whole-net
                 kernels the book's API calls (scores, loss, gradient, labels)
    Numerical    net_numerical_gradient of a 784-10-10 net on 3 samples, and the
                 optimizers' updates of its parameters

The import fails (so ``asv check`` fails) when the table and ``fastbp.TWINS`` disagree: a kernel
added without a benchmark is noticed at once, not silently left untimed. Compare the two backends
of one row as a ratio; absolute times drift on shared machines.
"""
import functools

from fastbp import TWINS

from . import common
from .common import BACKENDS, DTYPES, HIDDEN, KERNEL_CASES, N_CLASSES

if set(KERNEL_CASES) != set(TWINS):
    raise RuntimeError(
        "asv_bench/benchmarks/common.py KERNEL_CASES must cover exactly fastbp.TWINS; "
        f"missing {sorted(set(TWINS) - set(KERNEL_CASES))}, "
        f"unknown {sorted(set(KERNEL_CASES) - set(TWINS))}")

BATCHES = [1, 100, 1000]
SHAPES = ["100x50", "100x300", "1000x50"]   # batch x hidden, inputs 784


class _KernelGroup:
    """Base of the generated classes: each ``time_<name>`` method carries its own ``setup``
    (``_timer`` below), which builds that kernel's (memoised) arguments and calls the chosen
    backend's function once, so the timed calls hold only the call. Only the timed kernel is
    warmed: every benchmark runs in a process of its own, and on an empty Numba cache warming the
    whole group there compiled a dozen kernels (four minutes on a busy 2-core VM; CI failed on
    asv's timeout once)."""
    group = None
    # Each sample is one call after a (memoised, so cheap) setup; take many and keep the median.
    repeat = (10, 100, 1.0)

    @classmethod
    def size(cls, param):
        raise NotImplementedError


class _ByBatch(_KernelGroup):
    """Kernels on (batch, width) arrays, timed over BATCHES."""
    width = None
    params = (BACKENDS, list(DTYPES), BATCHES)
    param_names = ["backend", "dtype", "batch"]

    @classmethod
    def size(cls, batch):
        return batch, cls.width


class _ByShape(_KernelGroup):
    """Kernels of a 784-input layer, timed over the batch x hidden SHAPES."""
    params = (BACKENDS, list(DTYPES), SHAPES)
    param_names = ["backend", "dtype", "shape"]

    @classmethod
    def size(cls, shape):
        return common.parse_shape(shape)


class Elementwise(_ByBatch):
    group = "elementwise"
    width = HIDDEN


class SoftmaxCE(_ByBatch):
    group = "softmax"
    width = N_CLASSES


class Affine(_ByShape):
    group = "affine"


class Net(_ByShape):
    group = "net"


class Numerical(_KernelGroup):
    """The numerical gradient of a 784-10-10 net on the book's 3 samples (the NumPy twin takes
    two forward passes in Python per parameter: ~8,000 of them)."""
    group = "numerical"
    params = (BACKENDS, list(DTYPES), ["3x10"])
    param_names = ["backend", "dtype", "shape"]
    repeat = (1, 3, 30.0)
    number = 1

    @classmethod
    def size(cls, shape):
        return common.parse_shape(shape)


@functools.lru_cache(maxsize=None)
def _prepared(cls, name, backend, dtype, param):
    """(function, arguments) of kernel ``name`` on ``backend``, called once (JIT compilation or
    cache loading, never in a timing)."""
    function = TWINS[name][BACKENDS.index(backend)]   # TWINS[name] is (reference, kernel)
    arguments = common.kernel_args(name, *cls.size(param), dtype)
    function(*arguments)
    return function, arguments


_CALLS = {}   # kernel name -> (function, arguments) of this process's benchmark


def _timer(cls, name):
    def setup(backend, dtype, param):
        # (asv runs a method's own ``setup`` after its class's, given the parameters only, and
        # again before every sample: _prepared is memoised)
        _CALLS[name] = _prepared(cls, name, backend, dtype, param)

    def timer(self, backend, dtype, param):
        function, arguments = _CALLS[name]
        function(*arguments)
    timer.__name__ = timer.__qualname__ = f"time_{name}"
    timer.__doc__ = f"fastbp.TWINS[{name!r}] on the chosen backend."
    timer.setup = setup
    return timer


_CLASSES = {cls.group: cls for cls in (Elementwise, SoftmaxCE, Affine, Net, Numerical)}
for _name, (_group, _) in KERNEL_CASES.items():
    if _group not in _CLASSES:
        raise RuntimeError(f"KERNEL_CASES[{_name!r}]: no benchmark class for group {_group!r}")
    setattr(_CLASSES[_group], f"time_{_name}", _timer(_CLASSES[_group], _name))
