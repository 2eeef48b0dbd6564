"""Which loss value ``SoftmaxWithLoss`` (and so every net's ``loss``) reports: fastbp's exact
cross-entropy, or the book's, which adds 1e-7 inside the log. One switch, read at every forward:
``set_loss``, ``use_loss`` (a context), or the environment variable FASTBP_LOSS, which reaches a
book script without editing it::

    FASTBP_LOSS=book python train_neuralnet.py

``fastbp.cross_entropy_error`` is always the book's formula; ``fit`` reports the exact loss.
"""
import contextlib
import contextvars
import os

LOSSES = ("exact", "book")


def _loss_from_environment():
    value = os.environ.get("FASTBP_LOSS") or "exact"
    if value not in LOSSES:
        raise ValueError(f"FASTBP_LOSS: expected one of {list(LOSSES)}, got {value!r}")
    return value


_loss = contextvars.ContextVar("fastbp_loss", default=_loss_from_environment())


def _checked_loss(kind):
    if kind not in LOSSES:
        raise ValueError(f"loss: expected one of {list(LOSSES)}, got {kind!r}")
    return kind


def get_loss():
    """The loss SoftmaxWithLoss reports: "exact" (default) or "book"; see ``set_loss``."""
    return _loss.get()


def set_loss(kind):
    """Choose the loss value SoftmaxWithLoss (and so every net's ``loss``) reports:

    - "exact" (the default): L = -mean_n log softmax(x_n)[t_n], computed without rounding it away;
    - "book": L = -mean_n log(softmax(x_n)[t_n] + 1e-7), the book's ``cross_entropy_error``, to
      get its printed numbers. Lower than the exact loss by ~1e-7 per sample when the true class is
      likely, by up to ~7 per sample when its probability is below 1e-7.

    The gradient is (y - t) / N either way. The environment variable FASTBP_LOSS sets the default
    (so a book script runs with the book's numbers without editing it: FASTBP_LOSS=book python ...).
    """
    _loss.set(_checked_loss(kind))


@contextlib.contextmanager
def use_loss(kind):
    """Report the ``kind`` loss in the body, then switch back (see ``set_loss``)."""
    token = _loss.set(_checked_loss(kind))
    try:
        yield
    finally:
        _loss.reset(token)
