"""How many threads BLAS may use while fastbp trains: one deliberate knob.

fastbp's compiled kernels call BLAS (SciPy's OpenBLAS, through Numba) for the large products, and
NumPy brings a second OpenBLAS of its own. At MNIST sizes (a 100 x 784 by 784 x 50 product takes
~0.1 ms) each OpenBLAS thread pool spins between calls; two pools in one process, or one pool on a
machine whose other core is busy, oversubscribe two cores, and a product then takes milliseconds
instead of microseconds (measured: see the closing notes of the performance issue).

So ``fit`` runs with ``blas_threads()`` threads in both pools and restores the previous setting
afterwards. The default is 1; set ``FASTBP_BLAS_THREADS`` (or call ``set_blas_threads``) to use more
where a measurement on your machine (``fastbp bench``) shows they pay. The book-style layer path
leaves BLAS as configured by the process (``OPENBLAS_NUM_THREADS``, threadpoolctl).
"""
import contextlib
import os

from threadpoolctl import threadpool_limits

from . import _checks

_override = None


def blas_threads():
    """The BLAS thread count ``fit`` uses: set_blas_threads(n), else $FASTBP_BLAS_THREADS, else 1."""
    if _override is not None:
        return _override
    value = os.environ.get("FASTBP_BLAS_THREADS", "1")
    try:
        return _checks.positive_int("FASTBP_BLAS_THREADS", int(value))
    except ValueError:
        raise ValueError(f"FASTBP_BLAS_THREADS: expected a positive integer, got {value!r}") from None


def set_blas_threads(n):
    """Use ``n`` BLAS threads in ``fit`` from now on (None: back to $FASTBP_BLAS_THREADS or 1)."""
    global _override
    _override = None if n is None else _checks.positive_int("n", n)


@contextlib.contextmanager
def limited_blas(n=None):
    """Limit every BLAS in the process to ``n`` (default ``blas_threads()``) threads, then restore."""
    with threadpool_limits(limits=blas_threads() if n is None else n, user_api="blas"):
        yield
