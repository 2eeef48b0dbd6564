"""End-to-end ``fastbp.fit`` and start-up cost.

Fit: the seed protocol (batch 100, lr 0.1, seed 0, float32) for 200 iterations on MNIST-shaped
synthetic data (10 000 training rows, 2 000 test rows, so fit evaluates accuracy three times), for
the book's TwoLayerNet 784-50-10 and a larger MultiLayerNet 784-[256, 128]-10, on both backends.
Each sample trains a freshly initialised net (asv re-runs setup between samples).

FitThreads: the same fit (kernels, no test set) with and without fastbp's helper thread.

Import / FirstFit (``timeraw_``, each sample a fresh interpreter): importing numba (the baseline)
and fastbp, and importing fastbp plus a 1-iteration fit with Numba's on-disk cache filled (what
every run pays: import and cache loads) and empty (the first run after install
or after a kernel changed: the compile time).
"""
import functools
import shutil
import tempfile

import fastbp

from . import common
from .common import BACKENDS, BATCH, LR

ITERS = 200
NETS = ["784-50-10", "784-256-128-10"]
DTYPE = "float32"


@functools.lru_cache(maxsize=None)
def _warm_fit(backend, dtype):
    """One tiny fit: compiles (or loads from Numba's cache) sgd_steps and predict_labels for
    ``dtype``."""
    x, t = common.mnist_like(BATCH, dtype)
    with fastbp.use_backend(backend):
        fastbp.fit(common.make_net("784-50-10", dtype), x, t, iters=1, batch_size=BATCH, lr=LR)


class Fit:
    params = (BACKENDS, NETS)
    param_names = ["backend", "net"]

    def setup(self, backend, net):
        _warm_fit(backend, DTYPE)
        self.x, self.t = common.mnist_like(10_000, DTYPE, seed=0)
        self.x_test, self.t_test = common.mnist_like(2_000, DTYPE, seed=1)
        self.net = common.make_net(net, DTYPE)
        self.previous = common.switch_backend(backend)

    def teardown(self, backend, net):
        fastbp.set_backend(self.previous)

    def _fit(self):
        return fastbp.fit(self.net, self.x, self.t, self.x_test, self.t_test,
                          iters=ITERS, batch_size=BATCH, lr=LR, seed=0)

    def time_fit(self, backend, net):
        self._fit()

    def peakmem_fit(self, backend, net):
        self._fit()

    def track_us_per_iteration(self, backend, net):
        """Microseconds per SGD step from History.iterations_per_second (evaluation and the
        first call, which compiles or loads the kernels, excluded)."""
        history = self._fit()
        return 1e6 / history.iterations_per_second

    track_us_per_iteration.unit = "us/iteration"


# --- Start-up, in a fresh interpreter --------------------------------------------------------

# Untimed part of the child: the data (NumPy only, fastbp not imported yet).
_DATA = """
import numpy as np
r = np.random.default_rng(0)
x = np.where(r.random((200, 784)) < 0.19, r.random((200, 784)), 0.0).astype(np.float32)
t = r.integers(0, 10, 200)
"""
# Timed part: what a user's first training run pays before its first step is done.
_FIRST_FIT = """
import numpy as np
import fastbp
net = fastbp.TwoLayerNet(784, 50, 10, dtype=np.float32)
fastbp.fit(net, x, t, iters=1, batch_size=100, lr=0.1, seed=0)
"""
# Point Numba at an empty cache folder before it is imported: every kernel compiles.
_COLD_CACHE = """
import os, shutil
shutil.rmtree({folder!r}, ignore_errors=True)
os.environ["NUMBA_CACHE_DIR"] = {folder!r}
"""


class FitThreads:
    """Fit as above on the kernels backend (no evaluation) with fastbp's helper thread (2: the
    steps as a team of two threads, kernels/step.py team_steps_csr) and without (1). The weights
    are the same; the time is what the helper buys."""
    params = ([1, 2], NETS)
    param_names = ["threads", "net"]

    def setup(self, threads, net):
        _warm_fit("kernels", DTYPE)
        fastbp.set_threads(threads)
        self.x, self.t = common.mnist_like(10_000, DTYPE, seed=0)
        self.net = common.make_net(net, DTYPE)
        self.previous = common.switch_backend("kernels")

    def teardown(self, threads, net):
        fastbp.set_threads(None)
        fastbp.set_backend(self.previous)

    def time_fit(self, threads, net):
        fastbp.fit(self.net, self.x, self.t, iters=ITERS, batch_size=BATCH, lr=LR, seed=0)


class Import:
    def timeraw_import_numba(self):
        """Baseline: importing Numba alone; import fastbp minus this is fastbp's own import."""
        return "import numba"

    def timeraw_import_fastbp(self):
        return "import fastbp"


@functools.lru_cache(maxsize=None)
def _run_first_fit_once():
    exec(_DATA + _FIRST_FIT, {})


class FirstFit:
    def setup(self):
        # Run the benchmark's own code once here: fills Numba's on-disk cache for its signatures.
        _run_first_fit_once()
        self.cold_cache = tempfile.mkdtemp(prefix="fastbp-asv-cold-cache-")

    def teardown(self):
        shutil.rmtree(self.cold_cache, ignore_errors=True)

    def timeraw_first_fit_warm_cache(self):
        return _FIRST_FIT, _DATA

    def timeraw_first_fit_cold_cache(self):
        return _FIRST_FIT, _COLD_CACHE.format(folder=self.cold_cache) + _DATA
