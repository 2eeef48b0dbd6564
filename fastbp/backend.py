"""Which implementation the layers, nets and ``fit`` run on: the compiled kernels or their twins.

``TWINS`` is the one table of (reference, kernel) pairs, by name; the tests compare every pair and
the benchmarks time every pair from it. ``use_backend("reference")`` runs everything on plain
NumPy instead, so the two paths can be compared end to end::

    with fastbp.use_backend("reference"):
        grads = net.gradient(x, t)
"""
import contextlib
import contextvars

from . import kernels, reference

BACKENDS = {"kernels": kernels, "reference": reference}

# A kernel without its twin (or the reverse) fails here, at import, and in tests/test_kernels.py.
TWINS = {name: (getattr(reference, name), getattr(kernels, name)) for name in kernels.__all__}

_current = contextvars.ContextVar("fastbp_backend", default="kernels")


def _checked(name):
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)}, got {name!r}")
    return name


def ops():
    """The module whose functions the layers call now: fastbp.kernels or fastbp.reference."""
    return BACKENDS[_current.get()]


def get_backend():
    """The name of the current backend, "kernels" (default) or "reference"."""
    return _current.get()


def set_backend(name):
    """Switch the backend for the rest of this thread / context."""
    _current.set(_checked(name))


@contextlib.contextmanager
def use_backend(name):
    """Run the body on the named backend, then switch back."""
    token = _current.set(_checked(name))
    try:
        yield
    finally:
        _current.reset(token)
