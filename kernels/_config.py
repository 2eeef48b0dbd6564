"""Numba settings shared by every kernel: one place for the flags, so no kernel hard-codes its own.

- ``FASTMATH`` allows reassociation (vectorised float reductions, ~25x on sums) and contraction
  (FMA) but not ``nnan``/``ninf``: NaN and Inf keep their IEEE behaviour, so a diverging run shows up
  as NaN instead of being optimised into nonsense.
- ``jit_ieee`` (no fastmath at all) is for element-wise formulas that must equal NumPy's bit for
  bit: the optimizers' updates, where a fused multiply-add or an approximate reciprocal square
  root would change the trajectory the book's code computes.
- ``error_model="numpy"``: division follows NumPy (inf/nan) instead of raising, which removes a
  branch per division.
- ``cache=True`` keeps compiled code on disk. Numba caches next to the source, else in a per-user
  folder; when neither is writable (read-only install and read-only home) it would refuse to import,
  so ``_cache_enabled`` points it at a temporary folder, or turns caching off as a last resort.
"""
import os
import tempfile
import warnings

import numba
from numba.core import caching

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
ERROR_MODEL = "numpy"


def _writable(path):
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _cache_enabled():
    if numba.config.CACHE_DIR:  # the user chose (NUMBA_CACHE_DIR)
        return True
    here = os.path.dirname(os.path.abspath(__file__))
    user_wide = caching.AppDirs(appname="numba", appauthor=False).user_cache_dir
    if _writable(os.path.join(here, "__pycache__")) or _writable(user_wide):
        return True
    fallback = os.path.join(tempfile.gettempdir(), f"fastbp-numba-cache-{getattr(os, 'getuid', lambda: 'user')()}")
    if _writable(fallback):
        numba.config.CACHE_DIR = fallback
        return True
    warnings.warn("fastbp: no writable folder for Numba's cache; kernels compile on every start. "
                  "Set NUMBA_CACHE_DIR to a writable folder to keep them.", RuntimeWarning)
    return False


CACHE = _cache_enabled()


def jit(fn=None, **extra):
    """``numba.njit`` with fastbp's flags: serial kernels."""
    options = dict(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, nogil=True, **extra)
    return numba.njit(**options) if fn is None else numba.njit(**options)(fn)


def jit_exact(fn):
    """``jit`` without reassociation, for formulas whose order of operations is the point
    (log s + (m - x) must not become (log s + m) - x). The flags stay on the instructions
    when such a function is inlined into a ``jit`` kernel."""
    return numba.njit(cache=CACHE, fastmath=FASTMATH - {"reassoc"}, error_model=ERROR_MODEL,
                      nogil=True)(fn)


def jit_ieee(fn):
    """``jit`` with plain IEEE arithmetic: every operation rounded as written, no FMA contraction,
    no reciprocal or approximate square root; for element-wise updates that must equal NumPy's."""
    return numba.njit(cache=CACHE, error_model=ERROR_MODEL, nogil=True)(fn)
