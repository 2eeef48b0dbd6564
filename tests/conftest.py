"""Shared fixtures. The data ones are session-scoped: treat their arrays as read-only."""
import pytest

from fastbp.datasets import DatasetNotFoundError, load_digits, load_fashion_mnist


@pytest.fixture(scope="session")
def fashion_mnist():
    """Real Fashion-MNIST, ``(x_train, t_train), (x_test, t_test)`` with the default options.

    Found through the normal search order (FASTBP_DATA, the per-user cache, Debian's folder, then a
    download into the cache where there is internet). Missing data fails the run instead of
    skipping, so a CI without data cannot pass.
    """
    try:
        return load_fashion_mnist()
    except DatasetNotFoundError as error:
        message = str(error)
    # Outside the except block, so the report shows the message once, without a chained traceback.
    pytest.fail("These tests need the real Fashion-MNIST and found none. Set "
                "FASTBP_DATA=../shared/datasets (or any folder holding fashion-mnist/ with the "
                "four IDX files) and run again.\n\n" + message, pytrace=False)


@pytest.fixture(scope="session")
def digits():
    """The shipped 8x8 digits, ``load_digits()`` with its defaults (1,500 train / 297 test)."""
    return load_digits()


def sigint_as_a_terminal_sends_it():
    """preexec_fn for a child that a test interrupts: SIGINT back to its default, which Python
    turns into KeyboardInterrupt. A shell starts background jobs with SIGINT ignored, and an
    ignored signal stays ignored across exec: run from such a job, the child would never see it."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
