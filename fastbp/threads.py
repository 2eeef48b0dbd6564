"""How many threads fastbp uses: its own (``get_threads``) and BLAS's (``blas_threads``).

fastbp's kernels run on the calling thread, and on a helper thread in two cases: the nets'
compiled ``gradient`` and ``loss`` on a batch of the book's size, and ``fit``'s steps on sparse
data, run as a team of the two threads, each stage cut in two parts (fastbp/halves.py).
``get_threads()`` is 2 by default (1 on a one-core machine); set ``FASTBP_THREADS=1`` or call
``set_threads(1)`` to keep everything on the calling thread. The numbers are the same either
way: the parts are fixed, only who computes them changes.

fastbp's compiled kernels call BLAS (SciPy's OpenBLAS, through Numba) for the large products, and
NumPy brings a second OpenBLAS of its own. At MNIST sizes (a 100 x 784 by 784 x 50 product takes
~0.1 ms) each OpenBLAS thread pool spins between calls; two pools in one process, or one pool on a
machine whose other core is busy, oversubscribe two cores, and a product then takes milliseconds
instead of microseconds (measured: see the closing notes of the performance issue).

So ``fit`` runs with ``blas_threads()`` threads in both pools and restores the previous setting
afterwards. The default is 1; set ``FASTBP_BLAS_THREADS`` (or call ``set_blas_threads``) to use more
where a measurement on your machine (``fastbp bench``) shows they pay. The nets' compiled calls
(``predict``, ``loss``, ``gradient`` of a plain net) hold every BLAS at one thread while they run
BLAS (their second core is the helper's) and restore it on return; ``loss`` and ``gradient`` on a
batch too sparse for BLAS leave it as it is (holding it costs ~5 us a call). The layers one by
one (nets with batch normalisation or dropout, single layers) leave BLAS as configured by the
process (``OPENBLAS_NUM_THREADS``, threadpoolctl).

The BLAS setting is one per process, so runs that overlap (``fit`` in two threads) share it: the
first to start sets the limit, the last to finish restores what was there before, and runs that
start while the limit is held train with it. fastbp sets the count itself from whichever thread
runs first or last: threadpoolctl (3.8) lets only the first Python thread that limited OpenBLAS
change it again, so a limit or a restore asked from another thread would silently do nothing.
"""
import contextlib
import os
import threading
import time

from threadpoolctl import ThreadpoolController

from . import _checks

_override = None
_threads = None


def available_cores():
    """The cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def get_threads():
    """Threads fastbp's own calls may use, 1 or 2: set_threads(n), else $FASTBP_THREADS, else 2
    (1 where this process may run on one core only)."""
    if _threads is not None:
        return _threads
    value = os.environ.get("FASTBP_THREADS")
    if value is None:
        return min(2, available_cores())
    try:
        return min(2, _checks.positive_int("FASTBP_THREADS", int(value)))
    except ValueError:
        raise ValueError(f"FASTBP_THREADS: expected a positive integer (1 or 2), got {value!r}") from None


def set_threads(n):
    """Let fastbp's own calls use ``n`` threads from now on (1: the calling thread only; more than
    2 counts as 2; None: back to $FASTBP_THREADS or the default). Results do not depend on it."""
    global _threads, _looked
    _threads = None if n is None else min(2, _checks.positive_int("n", n))
    _looked = _NOT_LOOKED


LOOK_EVERY = 0.1   # seconds
_NOT_LOOKED = (float("-inf"), None)
_looked = _NOT_LOOKED   # (time.monotonic() when threads_now() last asked get_threads(), its answer)


def threads_now():
    """get_threads(), asked again at most every LOOK_EVERY seconds (set_threads applies at once):
    reading $FASTBP_THREADS and the CPU affinity takes ~1.5 us, and the nets' calls, ~0.1 ms
    apart in the book's loop, ask on every call."""
    global _looked
    now = time.monotonic()
    when, threads = _looked
    if now - when > LOOK_EVERY:
        threads = get_threads()
        _looked = (now, threads)
    return threads


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


_lock = threading.Lock()
_holders = 0      # limited_blas bodies running now, in any thread
_saved = []       # (BLAS library controller, its thread count before the first body)
_known = None     # the BLAS libraries found by the first limited_blas(cached=True)


def _set_threads(library, n):
    # threadpoolctl >= 3.8 ignores a set from any Python thread but the one controlling OpenBLAS;
    # fastbp's holders agree among themselves (the lock below), so it sets the count directly
    getattr(library, "_real_set_num_threads", library.set_num_threads)(n)


def _libraries(cached):
    """The process's BLAS libraries: looked up now (~ms), or once for all (``cached``: ~us)."""
    global _known
    if cached and _known is not None:
        return _known
    libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    if cached:
        _known = libraries
    return libraries


@contextlib.contextmanager
def limited_blas(n=None, cached=False):
    """Limit every BLAS in the process to ``n`` (default ``blas_threads()``) threads, then restore.

    Re-entrant and thread-safe: while any body runs, in any thread, the limit stays; the first
    body sets it (one that starts while it is held runs with it) and the last to leave restores
    the counts from before the first. ``cached``: the libraries found the first time such a
    body ran (for calls of microseconds; a library loaded later is not limited)."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            limit = blas_threads() if n is None else n
            _saved = [(library, library.num_threads) for library in _libraries(cached)]
            for library, _ in _saved:
                _set_threads(library, limit)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                for library, count in _saved:
                    _set_threads(library, count)
                _saved = []
