"""The BLAS thread setting is one per process: fits that overlap in threads share it, and the
process gets back what it had when the last one ends."""
import os
import subprocess
import sys
import textwrap
import threading

from threadpoolctl import threadpool_info, threadpool_limits

from fastbp.threads import limited_blas


def blas_counts():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


OVERLAP_SCRIPT = textwrap.dedent("""
    import threading
    import numpy as np
    from threadpoolctl import threadpool_info
    from fastbp import TwoLayerNet, blas_threads, fit

    def blas_counts():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    rng = np.random.default_rng(0)
    x = rng.random((1000, 200), dtype=np.float32)
    t = np.argmax(x @ rng.standard_normal((200, 10)).astype(np.float32), axis=1)

    def train(seed, iters, callback=None):
        np.random.seed(seed)
        net = TwoLayerNet(200, 50, 10, dtype=np.float32)
        fit(net, x, t, iters=iters, batch_size=100, seed=seed, eval_every=10, callback=callback)
        return net.params

    before = blas_counts()
    sequential = {"A": train(1, 40), "B": train(2, 120)}
    a_started, b_started, a_done = threading.Event(), threading.Event(), threading.Event()
    seen_by_b, results, waits = [], {}, []

    def a_callback(row):
        if row.iteration == 1:
            a_started.set()
            waits.append(b_started.wait(60))

    def b_callback(row):
        if row.iteration == 1:
            b_started.set()
            waits.append(a_done.wait(60))
        else:
            seen_by_b.append(blas_counts())

    def run_a():
        try:
            results["A"] = train(1, 40, a_callback)
        finally:
            a_done.set()

    def run_b():
        waits.append(a_started.wait(60))
        results["B"] = train(2, 120, b_callback)

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    print("overlapped as planned:", waits == [True, True, True])
    print("BLAS threads before:", before, "after:", blas_counts())
    print("B, after A ended, always saw", blas_threads(), "threads:",
          len(seen_by_b) == 12 and all(c == [blas_threads()] * len(before) for c in seen_by_b))
    print("weights as when run one after the other:",
          all(np.array_equal(results[n][k], sequential[n][k]) for n in "AB" for k in results[n]))
""")


def test_overlapping_fits_share_the_limit_and_restore_the_original_setting():
    """A starts, B starts while A trains, A ends while B trains on. Before, A's end restored the
    process's 2 threads under B (whose weights then came from 2-thread sums) and B's end left the
    process at 1 thread. In a fresh interpreter with OPENBLAS_NUM_THREADS=2, so that nothing has
    limited BLAS through threadpoolctl yet."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    env.pop("FASTBP_BLAS_THREADS", None)
    out = subprocess.run([sys.executable, "-c", OVERLAP_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "overlapped as planned: True",
        "BLAS threads before: [2, 2] after: [2, 2]",
        "B, after A ended, always saw 1 threads: True",
        "weights as when run one after the other: True",
    ], out.stdout


def test_limited_blas_nests_and_restores():
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_counts()
        with limited_blas(1):
            assert set(blas_counts()) == {1}
            with limited_blas(1):
                assert set(blas_counts()) == {1}
            assert set(blas_counts()) == {1}       # the outer body still holds it
        assert blas_counts() == before


def test_fit_in_a_thread_is_limited_though_another_thread_holds_threadpoolctl():
    """threadpoolctl (3.8) lets only the first thread that limited OpenBLAS change it: a fit in a
    worker thread, while the main thread holds a threadpool_limits, must still get its count."""
    seen = []

    def worker():
        with limited_blas(1):
            seen.append(blas_counts())

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_counts()
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(60)
        assert blas_counts() == before
    assert seen == [[1] * len(before)]
