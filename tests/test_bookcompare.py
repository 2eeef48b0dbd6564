"""fastbp book-compare, on a small stand-in for the book's checkout written here (the tests need
neither the book's code nor the internet): the import rewriting, the loop cuts, the comparison of
printed numbers and figures, and a whole run on both sides."""
import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastbp import bookcompare
from fastbp.bookcompare import compare, compare_figures, compare_text, rewrite_imports, set_constants


def test_imports_are_pointed_at_fastbp():
    text = textwrap.dedent("""\
        import sys, os
        sys.path.append(os.pardir)
        import numpy as np
        from common.optimizer import *
        from common.multi_layer_net_extend import MultiLayerNetExtend
        from dataset.mnist import load_mnist
        from two_layer_net import TwoLayerNet
            from common.functions import softmax, cross_entropy_error
        x = "from common.util import smooth_curve"   # not an import line: left alone
        """)
    ch04 = rewrite_imports(text, "ch04")
    assert "from fastbp.optimizers import *" in ch04
    assert "from fastbp import MultiLayerNetExtend" in ch04
    assert "from fastbp import load_mnist" in ch04
    assert "from fastbp.ch04 import TwoLayerNet" in ch04
    assert "    from fastbp.functions import softmax, cross_entropy_error" in ch04
    assert 'x = "from common.util import smooth_curve"' in ch04
    assert "import numpy as np" in ch04 and "sys.path.append(os.pardir)" in ch04
    assert "from fastbp import TwoLayerNet" in rewrite_imports(text, "ch05")


def test_loop_lengths_are_set_as_assignments_and_keywords():
    text = "max_epochs = 201\ntrainer = Trainer(net, epochs=301, mini_batch_size=100)\nmax_epochs_x = 3\n"
    out = set_constants(text, {"max_epochs": 5, "epochs": 7}, "x.py")
    assert out == "max_epochs = 5\ntrainer = Trainer(net, epochs=7, mini_batch_size=100)\nmax_epochs_x = 3\n"
    with pytest.raises(ValueError, match=r"x.py: no 'iters_num = <number>' to set"):
        set_constants(text, {"iters_num": 10}, "x.py")


def test_printed_numbers_are_compared_within_tolerance():
    assert compare_text("a 1.5\n", "a 1.5\n", 1e-6, 1e-6) == "equal (1 numbers)"
    assert compare_text("W1:1.2e-10\nloss 2.3025851\n", "W1:3.4e-10\nloss 2.3025852\n", 1e-6, 1e-6) \
        .startswith("close: 2 numbers within tolerance")  # (the 1 of W1 is a name)
    assert compare_text("acc 0.91\n", "acc 0.92\n", 1e-6, 1e-6).startswith("differ: 1 of 1 numbers beyond")
    assert compare_text("[[ 1.5  -2.25]]\n", "[[ 1.5000001 -2.25]]\n", 1e-6, 1e-6).startswith("close")
    assert compare_text("epoch:1\n", "epoch:1\nmore\n", 1e-6, 1e-6) == "differ: 1 lines vs 2"
    assert compare_text("train loss:nan\n", "train loss:nan\n", 1e-6, 1e-6) == "equal (1 numbers)"
    assert compare_text("a: 1\n", "b: 1\n", 1e-6, 1e-6).startswith("differ: line 1 has other text")


def test_figures_are_compared_by_their_data():
    assert compare_figures([], [], 1e-6, 1e-6) == "-"
    assert compare_figures([[[1.0, 2.0]]], [[[1.0, 2.0]]], 1e-6, 1e-6) == "equal (1 curves, 2 points)"
    assert compare_figures([[[1.0, 2.0]]], [[[1.0, 2.0 + 1e-9]]], 1e-6, 1e-6).startswith("close")
    assert compare_figures([[[1.0, 2.0]]], [[[1.0, 2.5]]], 1e-6, 1e-6).startswith("differ: 1 of 2 points")
    assert compare_figures([[[1.0, 2.0]]], [[[1.0]]], 1e-6, 1e-6).startswith("differ")


# --- a whole run on a stand-in checkout -----------------------------------------------------------

FAKE = {
    "common/__init__.py": "",
    "common/optimizer.py": """
        import numpy as np

        class SGD:
            def __init__(self, lr=0.01):
                self.lr = lr

            def update(self, params, grads):
                for key in params:
                    params[key] -= self.lr * grads[key]
        """,
    "common/functions.py": """
        import numpy as np

        def softmax(x):
            e = np.exp(x - np.max(x, axis=-1, keepdims=True))
            return e / np.sum(e, axis=-1, keepdims=True)
        """,
    "dataset/__init__.py": "",
    "dataset/mnist.py": """
        import os, pickle
        import numpy as np

        def load_mnist(normalize=True, flatten=True, one_hot_label=False):
            with open(os.path.join(os.path.dirname(__file__), "mnist.pkl"), "rb") as f:
                d = pickle.load(f)
            x, xt = (d[k].astype(np.float32) / 255.0 for k in ("train_img", "test_img"))
            return (x, d["train_label"]), (xt, d["test_label"])
        """,
    "ch04/probabilities.py": """
        import sys, os
        sys.path.append(os.pardir)
        import numpy as np
        from common.functions import softmax
        print(softmax(np.random.randn(2, 3)))
        """,
    "ch05/layer_naive.py": """
        class MulLayer:
            def forward(self, x, y):
                self.x, self.y = x, y
                return x * y

            def backward(self, dout):
                return dout * self.y, dout * self.x
        """,
    "ch05/buy.py": """
        from layer_naive import *
        layer = MulLayer()
        print("price:", layer.forward(100, 1.1), "grads:", layer.backward(1))
        """,
    "ch05/still_on_common.py": """
        import sys, os
        sys.path.append(os.pardir)
        import common.functions   # a form the rewriting does not know: must fail on the fastbp side
        print("ran")
        """,
    "ch06/sgd.py": """
        import sys, os
        sys.path.append(os.pardir)
        from dataset.mnist import load_mnist
        from common.optimizer import *
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            plt = None
        (x, t), _ = load_mnist()
        w = {"W": np.random.randn(784, 3) * 0.01}   # np comes with the star import, as in the book
        opt = SGD(lr=0.5)
        losses = []
        for i in range(15):
            batch = np.random.choice(len(x), 8)
            y = x[batch] @ w["W"]
            losses.append(float(np.mean(y ** 2)))
            opt.update(w, {"W": x[batch].T @ (2 * y / y.size)})
            print("step", i, losses[-1])
        if plt is not None:
            plt.plot(losses)
            plt.show()
        """,
}


@pytest.fixture
def fake_book(tmp_path):
    root = tmp_path / "book"
    for name, text in FAKE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def images(n=60):
    rng = np.random.default_rng(0)
    make = lambda k: rng.integers(0, 256, (k, 784)).astype(np.uint8)  # noqa: E731
    return {"train_img": make(n), "train_label": rng.integers(0, 10, n).astype(np.uint8),
            "test_img": make(20), "test_label": rng.integers(0, 10, 20).astype(np.uint8)}


def test_a_whole_run_on_both_sides(fake_book):
    lines = []
    cut = {"ch06/sgd.py": {"lr": 0.25}}   # --set / --quick: the same change in both copies
    results = {r.script: r for r in compare(fake_book, images=images(), constants=cut, say=lines.append)}
    assert sorted(results) == ["ch04/probabilities.py", "ch05/buy.py", "ch05/still_on_common.py",
                               "ch06/sgd.py"]   # layer_naive.py is a module the rewriting replaces
    for script in ("ch04/probabilities.py", "ch05/buy.py", "ch06/sgd.py"):
        r = results[script]
        assert r.ok, (script, r.printed, r.book.stderr, r.fastbp.stderr)
        assert r.book.stdout == r.fastbp.stdout and r.printed.startswith("equal"), (script, r.printed)
        assert r.book.seconds > 0 and r.fastbp.seconds > 0
    assert results["ch06/sgd.py"].book.stdout.count("step") == 15
    broken = results["ch05/still_on_common.py"]
    assert broken.book.returncode == 0 and broken.fastbp.returncode != 0 and not broken.ok
    assert "No module named 'common'" in broken.fastbp.stderr   # common/ is gone from the fastbp copy
    assert "FAILED: fastbp" in bookcompare.format_row(broken)
    sgd = results["ch06/sgd.py"]
    if importlib.util.find_spec("matplotlib") is not None:   # (the plot extra)
        assert sgd.book.figures == sgd.fastbp.figures and len(sgd.book.figures[0][0]) == 15
        assert sgd.figures == "equal (1 curves, 15 points)"
    else:
        assert sgd.book.figures == sgd.fastbp.figures == [] and sgd.figures == "-"
    with pytest.raises(ValueError, match=r"scripts: not among the checkout's chapter 4-6 scripts: \['ch06/nope.py'\]"):
        compare(fake_book, ["ch06/nope.py"], images=images(), say=lines.append)
    with pytest.raises(ValueError, match=r"ch06/sgd.py: no 'epochs = <number>' to set"):
        compare(fake_book, ["ch06/sgd.py"], constants={"ch06/sgd.py": {"epochs": 3}}, images=images(),
                say=lines.append)


def test_the_command_line(tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "fastbp", "book-compare", *args],  # noqa: E731
                                       capture_output=True, text=True)
    assert run("--help").returncode == 0
    out = run(str(tmp_path), "--set", "nonsense")
    assert out.returncode == 2 and "error: --set: expected SCRIPT:NAME=NUMBER" in out.stderr
    out = run(str(tmp_path), "--dataset", "fashion-mnist")
    assert out.returncode == 2 and "error: book: expected a checkout of the book's code" in out.stderr
