"""fastbp.graph: the computational graph recorded from layer calls, read back from its DOT text."""
import re
import shutil
import sys
import threading
import weakref

import numpy as np
import pytest

from fastbp import (AddLayer, Affine, MulLayer, MultiLayerNet, MultiLayerNetExtend, Relu,
                    SoftmaxWithLoss, TwoLayerNet)
from fastbp import graph as fg
from fastbp.cli import main

# The book's chapter 5 (buy_apple_orange.py and its figure): what it prints and draws.
BOOK_PRICE = 715
BOOK_GRADIENTS = {"apple": 2.2, "apple num": 110, "orange": 3.3, "orange num": 165, "tax": 650}


def parse_dot(text):
    """(nodes, edges) of the DOT text fastbp writes: nodes {id: {attr: value}}, edges a list of
    (source label, target label, value text, gradient text or None), labels as drawn."""
    nodes, edges = {}, []
    for line in text.splitlines():
        line = line.strip()
        m = re.fullmatch(r"(\w+) \[(.*)\];", line)
        if m and "->" not in line:
            attrs = {k: a or b for k, a, b in
                     re.findall(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\w+))', m.group(2))}
            nodes[m.group(1)] = attrs
            continue
        m = re.fullmatch(r"(\w+) -> (\w+) \[label=<(.*)>\];", line)
        if m:
            label = m.group(3)
            g = re.search(r'<FONT COLOR="[^"]+">(.*)</FONT>$', label)
            value = label[:g.start()] if g else label
            value = re.sub(r"<BR/>$", "", value).replace("<BR/>", "\n")
            grad = g.group(1).replace("<BR/>", "\n") if g else None
            edges.append((m.group(1), m.group(2), value, grad))
    named = [(nodes[s].get("tooltip") or nodes[s]["label"], nodes[t].get("tooltip") or nodes[t]["label"],
              v, g) for s, t, v, g in edges]
    return nodes, named


def test_apple_graph_has_the_books_values_and_gradients():
    g = fg.apple()
    nodes, edges = parse_dot(g.dot())
    # four nodes drawn as the book's: x, x, +, x
    ops = sorted(a["label"] for a in nodes.values() if a.get("shape") == "circle")
    assert ops == sorted(["\u00d7", "\u00d7", "+", "\u00d7"])
    by_source = {s: (t, v, gr) for s, t, v, gr in edges}
    for name, grad in BOOK_GRADIENTS.items():
        assert float(by_source[name][2]) == pytest.approx(grad, rel=1e-12), name
    assert [float(by_source[n][1]) for n in ("apple", "apple num", "orange", "orange num", "tax")] \
        == [100, 2, 150, 3, 1.1]
    (out,) = [e for e in edges if e[1] == "price"]
    assert float(out[2]) == BOOK_PRICE and float(out[3]) == 1
    # the inner edges: 200, 450 into +, 650 into the tax node, each with 1.1 coming back
    inner = sorted((float(v), float(gr)) for s, t, v, gr in edges if s.startswith(("MulLayer", "AddLayer"))
                   and t != "price")
    assert inner == [(200, pytest.approx(1.1)), (450, pytest.approx(1.1)), (650, pytest.approx(1.1))]
    # the printed digits are the book's, not 715.0000000000001 or 110.00000000000001
    assert out[2] == "715" and by_source["apple num"][2] == "110" and by_source["orange"][2] == "3.3"


def test_recorded_numbers_are_what_the_layers_returned():
    mul, add = MulLayer(), AddLayer()
    with fg.record() as g:
        a = mul.forward(np.array([1.0, 2.0]), 3.0)
        out = add.forward(a, np.array([10.0, 20.0]))
        da, db = add.backward(np.array([1.0, -1.0]))
        dx, dy = mul.backward(da)
    assert [n.name for n in g.nodes] == ["MulLayer1", "AddLayer1"]
    np.testing.assert_array_equal(g.node("AddLayer1").output.data, out)
    assert g.node("AddLayer1").inputs[0].value is g.node("MulLayer1").output  # connected by identity
    np.testing.assert_array_equal(g.node("AddLayer1").inputs[0].grad, da)
    np.testing.assert_array_equal(g.node("MulLayer1").inputs[0].grad, dx)
    assert g.node("MulLayer1").inputs[1].grad == dy == 1 * 1 + -1 * 2   # a number gets a number


def test_two_layer_net_graph_nodes_shapes_and_edges():
    np.random.seed(1)
    net = TwoLayerNet(4, 3, 2)
    x, t = np.random.rand(2, 4), np.array([0, 1])
    with fg.record(net) as g:
        grads = net.gradient(x, t)
    assert [(n.name, n.kind) for n in g.nodes] == [
        ("Affine1", "Affine"), ("Relu1", "Relu"), ("Affine2", "Affine"),
        ("SoftmaxWithLoss", "SoftmaxWithLoss")]
    nodes, edges = parse_dot(g.dot())
    pairs = sorted((s, t) for s, t, _, _ in edges)
    assert pairs == sorted([("x", "Affine1"), ("W1", "Affine1"), ("b1", "Affine1"),
                            ("Affine1", "Relu1"), ("Relu1", "Affine2"), ("W2", "Affine2"),
                            ("b2", "Affine2"), ("Affine2", "SoftmaxWithLoss"),
                            ("t", "SoftmaxWithLoss"), ("SoftmaxWithLoss", "")])
    shapes = {(s, t): v.splitlines()[0] for s, t, v, _ in edges}
    assert shapes[("x", "Affine1")] == "(2, 4) float64"
    assert shapes[("W1", "Affine1")] == "(4, 3) float64"
    assert shapes[("Affine1", "Relu1")] == "(2, 3) float64"
    assert shapes[("Affine2", "SoftmaxWithLoss")] == "(2, 2) float64"
    assert shapes[("t", "SoftmaxWithLoss")] == "(2,) int64"
    grad_text = {(s, t): gr for s, t, _, gr in edges}
    assert grad_text[("t", "SoftmaxWithLoss")] is None          # labels get no gradient
    assert grad_text[("x", "Affine1")] is None                  # nothing below needs dx
    first = [float(v) for v in grad_text[("W1", "Affine1")].splitlines()[1].strip("[]. ").split()]
    np.testing.assert_allclose(first, grads["W1"].ravel()[:3], rtol=5e-3)
    # the Graph objects hold the full arrays: the gradients the net returned
    affine1 = g.node("Affine1")
    for edge, key in zip(affine1.inputs[1:], ("W1", "b1")):
        np.testing.assert_array_equal(edge.grad, grads[key])
    assert g.node("SoftmaxWithLoss").output.data == pytest.approx(net.loss(x, t))
    assert g.node("SoftmaxWithLoss").output.grad == 1


def test_extend_net_graph_has_batchnorm_and_dropout_with_their_parameters():
    np.random.seed(2)
    net = MultiLayerNetExtend(5, [4], 3, use_dropout=True, dropout_ration=0.2, use_batchnorm=True)
    with fg.record(net) as g:
        grads = net.gradient(np.random.rand(6, 5), np.arange(6) % 3)
    assert [n.kind for n in g.nodes] == ["Affine", "BatchNormalization", "Relu", "Dropout",
                                        "Affine", "SoftmaxWithLoss"]
    bn = g.node("BatchNorm1")
    assert [e.role for e in bn.inputs] == ["x", "gamma", "beta"]
    assert [e.value.name for e in bn.inputs[1:]] == ["gamma1", "beta1"]
    np.testing.assert_array_equal(bn.inputs[1].grad, grads["gamma1"])
    assert bn.inputs[0].value is g.node("Affine1").output


def test_sigmoid_and_tanh_nets_record_their_activations():
    for activation, kind in (("sigmoid", "Sigmoid"), ("tanh", "Tanh")):
        net = MultiLayerNet(3, [2, 2], 2, activation=activation)
        with fg.record(net) as g:
            net.gradient(np.ones((1, 3)), np.array([1]))
        assert [n.kind for n in g.nodes].count(kind) == 2
        assert g.node("Activation_function1").inputs[0].grad is not None


def test_a_net_goes_layer_by_layer_while_recording():
    """The nets' compiled fast paths must step aside while a graph is recorded (recording())."""
    np.random.seed(3)
    net = MultiLayerNet(4, [3, 3], 2)
    x = np.random.rand(5, 4)
    assert not fg.recording()
    with fg.record(net) as g:
        assert fg.recording()
        y = net.predict(x)
        net.loss(x, np.zeros(5, dtype=int))
    assert not fg.recording()
    assert [n.name for n in g.nodes[:5]] == ["Affine1", "Activation_function1", "Affine2",
                                            "Activation_function2", "Affine3"]
    np.testing.assert_array_equal(g.nodes[4].output.data, y)
    assert len(g.nodes) == 11   # predict's 5 nodes, loss's 5 and its SoftmaxWithLoss


def test_recording_off_leaves_no_trace_and_no_state():
    np.random.seed(4)
    net = TwoLayerNet(4, 3, 2)
    x, t = np.random.rand(2, 4), np.array([1, 0])
    net.gradient(x, t)
    before = {name: sorted(vars(layer)) for name, layer in net.layers.items()}
    with fg.record(net) as g:
        net.gradient(x, t)
    # the layers got no attribute from being recorded
    assert {name: sorted(vars(layer)) for name, layer in net.layers.items()} == before
    # a finished Graph holds copies only: the net, its layers and arrays can be freed
    ref, wref = weakref.ref(net.layers["Affine1"]), weakref.ref(net.params["W1"])
    n = len(g.nodes)
    net.gradient(x, t)            # outside the block: recorded nowhere
    assert len(g.nodes) == n
    del net
    assert ref() is None and wref() is None
    assert all(not isinstance(v, (Affine, Relu, SoftmaxWithLoss)) for v in vars(g).values())


def test_values_are_copies_taken_when_recorded():
    W, b = np.ones((2, 2)), np.zeros(2)
    layer = Affine(W, b)
    with fg.record({"W": W}) as g:
        layer.forward(np.ones((1, 2)))
    W -= 5   # an optimizer's in-place update
    assert (g.nodes[0].inputs[1].value.data == 1).all() and g.nodes[0].inputs[1].value.name == "W"


def test_recording_is_per_thread_and_nests():
    calls = []

    def other():
        calls.append(fg.recording())
        MulLayer().forward(2, 3)

    with fg.record() as outer:
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        MulLayer().forward(1, 2)
        with fg.record() as inner:
            AddLayer().forward(1, 2)
        MulLayer().forward(3, 4)
    assert calls == [False]
    assert [n.kind for n in outer.nodes] == ["MulLayer", "MulLayer"]
    assert [n.kind for n in inner.nodes] == ["AddLayer"]


def test_names_must_be_nets_or_dicts():
    with pytest.raises(TypeError, match="nets .* or dicts"):
        with fg.record(42):
            pass
    with pytest.raises(TypeError, match="str -> layer"):
        with fg.record({1: MulLayer()}):
            pass


def test_notebook_falls_back_to_dot_text_without_graphviz(monkeypatch):
    g = fg.apple()
    monkeypatch.setitem(sys.modules, "graphviz", None)   # import graphviz fails
    bundle = g._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert "digraph G" in bundle["text/plain"] and "pip install 'fastbp[graph]'" in bundle["text/plain"]
    with pytest.raises(fg.GraphvizMissing, match=r"fastbp\[graph\]"):
        g.save("x.svg")


def test_missing_dot_program_is_named(monkeypatch, tmp_path):
    pytest.importorskip("graphviz", reason="the graphviz extra (fastbp[graph]) is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))   # no dot on it
    with pytest.raises(fg.GraphvizMissing, match="dot program.*apt-get install graphviz"):
        fg.apple().pipe("svg")
    assert not list(tmp_path.iterdir())


needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot program is not installed (apt-get install graphviz)")


@needs_dot
def test_svg_and_notebook_drawing(tmp_path):
    pytest.importorskip("graphviz", reason="the graphviz extra (fastbp[graph]) is not installed")
    g = fg.apple()
    svg = g._repr_mimebundle_()["image/svg+xml"]
    assert svg.lstrip().startswith("<?xml") and "715" in svg and "650" in svg
    g.save(tmp_path / "apple.png")
    assert (tmp_path / "apple.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["apple.png"]   # no temporary left


def test_cli_graph_prints_and_writes_dot(tmp_path, capsys):
    assert main(["graph", "apple"]) == 0
    _, edges = parse_dot(capsys.readouterr().out)
    assert {float(gr) for s, _, _, gr in edges if s in BOOK_GRADIENTS} == {2.2, 110, 3.3, 165, 650}
    out = tmp_path / "two.dot"
    assert main(["graph", "twolayer", "-o", str(out)]) == 0
    _, edges = parse_dot(out.read_text())
    assert ("Affine2", "SoftmaxWithLoss") in {(s, t) for s, t, _, _ in edges}
    assert main(["graph", "apple", "-o", str(tmp_path / "no" / "a.dot")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["graph", "apple", "-o", str(tmp_path / "noext")]) == 2
