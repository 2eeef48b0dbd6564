"""The computational graph a forward and backward pass went through, drawn with its numbers, as the
book's chapter 5 draws the apple example: each forward value on its edge, the gradient that came
back along it beneath, in red.

    with fastbp.graph.record() as g:            # or record(net) to name layers and parameters
        loss = net.loss(x, t)
        net.gradient(x, t)
    g                                           # a notebook shows it inline (SVG)
    print(g.dot())                              # Graphviz DOT text, no dependency
    g.save("net.svg")                           # .dot always; .svg .png .pdf with fastbp[graph]

Recording is opt-in and per thread (a ContextVar, fastbp/_trace.py): every layer call
(``MulLayer AddLayer Relu Sigmoid Tanh Affine SoftmaxWithLoss Dropout BatchNormalization``)
reports to the Graph being recorded, if any, after it computed: forward gives the node, its
inputs and its output; backward the gradient reaching its output (``dout``) and the one it sends
back along each input edge. A node's input is the output of the node that returned that very
object (identity, not equality), else an input from outside (a leaf: data, labels, weights, a
number). Values and gradients are copied when recorded, so later in-place updates (an
optimizer's ``W -= lr * dW``) do not change the drawing. With recording off, a layer call pays
one ContextVar read and the nets run as they do (``recording()`` tells them to go layer by layer
while a graph is recorded, so no node is skipped).

What is not a layer call is not in the graph: the weight-decay term a net adds to its loss,
NumPy arithmetic between layer calls (an input so computed is a leaf).
"""
import contextlib
import html
import numbers
import os

import numpy as np

from . import _io
from ._trace import recorder, recording

__all__ = ["record", "recording", "Graph", "Node", "Value", "Edge", "GraphvizMissing"]

SYMBOLS = {"MulLayer": "\u00d7", "AddLayer": "+"}   # drawn as the book's round nodes
GRADIENT_COLOR = "#d62728"                           # the book prints gradients in red
SHOWN = 3                                            # numbers shown of an array


class GraphvizMissing(RuntimeError):
    """SVG/PNG were asked for but the ``graphviz`` package or Graphviz's ``dot`` program is missing."""


class Value:
    """A number or array the graph carries: a node's output, or an input from outside (a leaf).

    ``data`` is a copy taken when it was recorded; ``grad`` is dL/d(value) as it reached the node
    that produced it (its backward's ``dout``), None until then and for leaves."""

    def __init__(self, data, name, producer):
        self.data, self.name, self.producer = data, name, producer
        self.grad = None
        self.consumers = []   # the edges that carry it into nodes

    def __repr__(self):
        return f"Value({self.name or 'unnamed'}: {summary(self.data)})"


class Edge:
    """``value`` going into ``target`` as its input ``role`` ("x", "y", "W", "b", "t", ...);
    ``grad`` is what target's backward sent back along it (None before backward, and for inputs
    that get no gradient, such as the labels)."""

    def __init__(self, value, target, role):
        self.value, self.target, self.role = value, target, role
        self.grad = None

    def __repr__(self):
        return f"Edge({self.value.name or self.role} -> {self.target.name})"


class Node:
    """One layer call: ``kind`` is the layer's class, ``inputs`` its in-edges in argument order,
    ``output`` the Value it returned."""

    def __init__(self, name, kind, inputs, output):
        self.name, self.kind, self.inputs, self.output = name, kind, inputs, output

    def __repr__(self):
        return f"Node({self.name}: {self.kind})"


class Graph:
    """The nodes recorded by ``record()``, in the order they ran, and their values.

    ``dot()`` gives Graphviz DOT text; ``pipe(fmt)``/``save(path)`` draw SVG, PNG or PDF through
    the ``graphviz`` package (``pip install 'fastbp[graph]'``, and Graphviz's ``dot`` program);
    a notebook shows it as SVG, or as DOT text when that cannot be drawn."""

    def __init__(self, names=()):
        self.nodes = []
        self.leaves = []          # inputs from outside, in the order first seen
        self._names = {}          # id(object) -> name, for layers, arrays and numbers
        self._keep = []           # the named objects, alive while recording so ids stay theirs
        self._produced = {}       # id(output object) -> (object, Value), while recording
        self._array_leaves = {}   # id(array) -> (array, Value): one leaf per input array
        self._node_of = {}        # id(layer) -> (layer, its latest Node), for backward
        self._counts = {}
        for source in names:
            self._take_names(source)

    # -- naming ------------------------------------------------------------------------------
    def _take_names(self, source):
        if isinstance(source, dict):
            for name, obj in source.items():
                if not isinstance(name, str):
                    raise TypeError(f"names: expected a dict of str -> layer, array or number, got "
                                    f"a key {name!r}")
                self._names.setdefault(id(obj), name)
                self._keep.append(obj)
            return
        layers = getattr(source, "layers", None)
        if not isinstance(layers, dict):
            raise TypeError(f"record: expected nets (with a layers dict) or dicts of names, got "
                            f"{type(source).__name__}")
        self._take_names(dict(layers))
        last = getattr(source, "last_layer", None) or getattr(source, "lastLayer", None)
        if last is not None:
            self._take_names({type(last).__name__: last})
        self._take_names(dict(getattr(source, "params", {})))

    def _node_name(self, layer):
        name = self._names.get(id(layer))
        if name is None:
            kind = type(layer).__name__
            self._counts[kind] = self._counts.get(kind, 0) + 1
            name = f"{kind}{self._counts[kind]}"
        return name

    # -- what the layers call ----------------------------------------------------------------
    def forward(self, layer, inputs, out):
        """A layer computed ``out`` from ``inputs`` (role -> the object it was given)."""
        node = Node(self._node_name(layer), type(layer).__name__, [], None)
        for role, obj in inputs.items():
            value = self._value_of(obj, role)
            edge = Edge(value, node, role)
            value.consumers.append(edge)
            node.inputs.append(edge)
        node.output = Value(_snapshot(out), self._names.get(id(out)), node)
        self._produced[id(out)] = (out, node.output)
        self._node_of[id(layer)] = (layer, node)
        self.nodes.append(node)

    def backward(self, layer, dout, grads):
        """The layer's backward got ``dout`` and sent ``grads`` back (one per input, in order;
        None where it sends none). Attached to the layer's latest forward."""
        entry = self._node_of.get(id(layer))
        if entry is None:   # its forward ran before recording started
            return
        node = entry[1]
        node.output.grad = _snapshot(dout)
        for edge, grad in zip(node.inputs, grads):
            edge.grad = None if grad is None else _snapshot(grad)

    def _value_of(self, obj, role):
        produced = self._produced.get(id(obj))
        if produced is not None and produced[0] is obj:
            return produced[1]
        if isinstance(obj, np.ndarray):   # one array fed to two nodes is one leaf
            known = self._array_leaves.get(id(obj))
            if known is not None and known[0] is obj:
                return known[1]
        value = Value(_snapshot(obj), self._names.get(id(obj), role), None)
        if isinstance(obj, np.ndarray):
            self._array_leaves[id(obj)] = (obj, value)
        self.leaves.append(value)
        return value

    def _close(self):
        """Drop every reference to the caller's objects: a finished Graph holds only copies."""
        self._names, self._keep, self._produced, self._array_leaves, self._node_of = {}, [], {}, {}, {}

    # -- looking at it -----------------------------------------------------------------------
    def node(self, name):
        """The last node called ``name``."""
        for node in reversed(self.nodes):
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r}; the nodes are {[n.name for n in self.nodes]}")

    def outputs(self):
        """The values no recorded node took as input: the graph's results (a loss, scores)."""
        return [node.output for node in self.nodes if not node.output.consumers]

    def dot(self, title=None):
        """Graphviz DOT text: one box (or the book's round node for x and +) per layer call, one
        edge per value with the value on it and, after backward, the gradient beneath in red;
        inputs from outside start from their name, results end at theirs."""
        ids = {}

        def ident(obj, prefix):
            return ids.setdefault(id(obj), f"{prefix}{len(ids)}")

        lines = ["digraph G {", "  rankdir=LR;",
                 '  node [fontname="Helvetica", fontsize=11];',
                 '  edge [fontname="Helvetica", fontsize=10, arrowsize=0.7];']
        if title:
            lines.append(f"  label={_quote(title)}; labelloc=t;")
        for leaf in self.leaves:
            lines.append(f"  {ident(leaf, 'in')} [shape=plaintext, label={_quote(leaf.name)}];")
        for node in self.nodes:
            symbol = SYMBOLS.get(node.kind)
            if symbol is not None:
                label = symbol
                shape = "circle"
            else:
                label = node.name if node.name.startswith(node.kind) else f"{node.name}\n{node.kind}"
                shape = "box"
            lines.append(f"  {ident(node, 'n')} [shape={shape}, label={_quote(label)}, "
                         f"tooltip={_quote(node.name)}];")
        for node in self.nodes:
            for edge in node.inputs:
                value = edge.value
                source = ident(value if value.producer is None else value.producer,
                               "in" if value.producer is None else "n")
                lines.append(f"  {source} -> {ident(node, 'n')} "
                             f"[label={_edge_label(value.data, edge.grad)}];")
        for value in self.outputs():
            sink = f"out{len(ids)}"
            ids[id(sink)] = sink
            lines.append(f"  {sink} [shape=plaintext, label={_quote(value.name or '')}];")
            lines.append(f"  {ident(value.producer, 'n')} -> {sink} "
                         f"[label={_edge_label(value.data, value.grad)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def pipe(self, fmt="svg"):
        """The drawing as bytes in ``fmt`` (svg, png, pdf, ...), through the graphviz package."""
        try:
            import graphviz
        except ImportError:
            raise GraphvizMissing("drawing SVG/PNG needs the graphviz Python package: pip install "
                                  "'fastbp[graph]' (and Graphviz's dot program); g.dot() and "
                                  ".dot files need nothing") from None
        try:
            return graphviz.Source(self.dot()).pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            raise GraphvizMissing("drawing SVG/PNG needs Graphviz's dot program, which is not on "
                                  "PATH: apt-get install graphviz (Debian/Ubuntu), brew install "
                                  "graphviz (macOS), conda install graphviz; or save a .dot file "
                                  "and draw it elsewhere") from None

    def save(self, path):
        """Write the graph to ``path``: .dot or .gv as DOT text, any other suffix (.svg .png .pdf)
        drawn by Graphviz in that format; written whole or not at all. Returns ``path``."""
        fmt = os.path.splitext(os.fspath(path))[1][1:].lower()
        if not fmt:
            raise ValueError(f"path: expected a file name ending in .dot, .svg, .png or .pdf, got "
                             f"{os.fspath(path)!r}")
        data = self.dot().encode() if fmt in ("dot", "gv") else self.pipe(fmt)
        with _io.atomic_write(path) as f:
            f.write(data)
        return path

    def _repr_mimebundle_(self, include=None, exclude=None):
        """A notebook shows the SVG drawing, or the DOT text where it cannot be drawn."""
        bundle = {"text/plain": repr(self), "text/vnd.graphviz": self.dot()}
        try:
            bundle["image/svg+xml"] = self.pipe("svg").decode()
        except GraphvizMissing as missing:
            bundle["text/plain"] = f"{self!r}\n({missing})\n{self.dot()}"
        return bundle

    def __repr__(self):
        names = ", ".join(node.name for node in self.nodes[:8])
        more = ", ..." if len(self.nodes) > 8 else ""
        return f"<Graph of {len(self.nodes)} nodes: {names}{more}>"


@contextlib.contextmanager
def record(*names):
    """Record the layer calls made in the body (this thread) into a Graph, yielded.

    ``names``: nets, whose layer keys (Affine1, Relu1, ...) name their nodes and whose params keys
    (W1, b1, ...) name their weights, and dicts of name -> layer, array or number (e.g. the
    apple example's ``{"apple": apple, "mul_apple": mul_apple_layer}``), matched by identity.
    Unnamed nodes are named by class and count (MulLayer1), unnamed inputs by their role (x, t).
    Nested ``record`` blocks record into the innermost only."""
    graph = Graph(names)
    token = recorder.set(graph)
    try:
        yield graph
    finally:
        recorder.reset(token)
        graph._close()


def _snapshot(v):
    if isinstance(v, np.ndarray):
        return v.copy()
    return v


def _number(v, digits=6):
    """A number as the book prints it: 715, 2.2, 110 (not 715.0000000000001)."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return str(int(v))
    return format(float(v), f".{digits}g")


def summary(v):
    """A number as is; an array as its shape and dtype, then its first few numbers."""
    if isinstance(v, np.ndarray) and v.ndim > 0:
        flat = v.ravel()
        shown = " ".join(_number(x, 3) for x in flat[:SHOWN])
        return f"{v.shape} {v.dtype}\n[{shown}{' ...' if flat.size > SHOWN else ''}]"
    if isinstance(v, (numbers.Number, np.generic, np.ndarray)):
        return _number(v[()] if isinstance(v, np.ndarray) else v)
    return type(v).__name__


def _html(text):
    return "<BR/>".join(html.escape(line, quote=False) for line in text.split("\n"))


def _edge_label(value, grad):
    """The value, and beneath it the gradient in red (when backward has given one)."""
    label = _html(summary(value))
    if grad is not None:
        label += f'<BR/><FONT COLOR="{GRADIENT_COLOR}">{_html(summary(grad))}</FONT>'
    return f"<{label}>"


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# -- the examples `fastbp graph` draws --------------------------------------------------------------
def apple():
    """The book's chapter 5 shopping graph (2 apples at 100, 3 oranges at 150, tax 1.1), forward
    and backward: 715 on the output edge; gradients 2.2, 110, 3.3, 165 and 650 at its inputs."""
    from .layers import AddLayer, MulLayer
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple_layer, mul_orange_layer = MulLayer(), MulLayer()
    add_apple_orange_layer, mul_tax_layer = AddLayer(), MulLayer()
    names = {"apple": apple, "apple num": apple_num, "orange": orange, "orange num": orange_num,
             "tax": tax}
    with record(names) as graph:
        apple_price = mul_apple_layer.forward(apple, apple_num)
        orange_price = mul_orange_layer.forward(orange, orange_num)
        all_price = add_apple_orange_layer.forward(apple_price, orange_price)
        mul_tax_layer.forward(all_price, tax)
        dall_price, _ = mul_tax_layer.backward(1)
        dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
        mul_orange_layer.backward(dorange_price)
        mul_apple_layer.backward(dapple_price)
    graph.outputs()[0].name = "price"
    return graph


def two_layer(samples=2, input_size=4, hidden_size=3, output_size=2, seed=0):
    """A TwoLayerNet's ``gradient`` on a few random samples: Affine1, Relu1, Affine2 and
    SoftmaxWithLoss with their weights, values and gradients."""
    from .nets import TwoLayerNet
    rng = np.random.default_rng(seed)
    with _seeded(seed):
        net = TwoLayerNet(input_size, hidden_size, output_size, weight_init_std=0.5)
    x = rng.random((samples, input_size))
    t = rng.integers(0, output_size, samples)
    with record(net) as graph:
        net.gradient(x, t)
    graph.outputs()[0].name = "loss"
    return graph


@contextlib.contextmanager
def _seeded(seed):
    """np.random seeded for the body (the nets draw from it), and put back as it was."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


EXAMPLES = {"apple": apple, "twolayer": two_layer}


def command(args):
    if args.output is not None and (problem := _io.write_problem(args.output)) is not None:
        raise ValueError(f"--output: cannot write {args.output}: {problem}")
    graph = EXAMPLES[args.example]()
    if args.output is None:
        print(graph.dot(), end="")
        return 0
    graph.save(args.output)   # a missing Graphviz is a GraphvizMissing, printed as one line
    print(f"wrote {args.output}")
    return 0


def add_command(subparsers):
    """The ``graph`` subcommand of ``fastbp``."""
    c = subparsers.add_parser("graph", help="draw a computational graph with its values and "
                                            "gradients (the book's apple example, a TwoLayerNet)")
    c.add_argument("example", choices=sorted(EXAMPLES),
                   help="apple: the book's chapter 5 shopping graph; twolayer: a TwoLayerNet's "
                        "gradient on 2 samples")
    c.add_argument("-o", "--output", metavar="FILE",
                   help="write FILE.dot (text), or FILE.svg / .png / .pdf (needs fastbp[graph] "
                        "and Graphviz's dot); default: print the DOT text")
    c.set_defaults(run=command)
    return c
