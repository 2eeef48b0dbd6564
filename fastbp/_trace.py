"""Whether a computational graph is being recorded (``fastbp.graph.record``).

Every layer call asks ``recorder.get()`` (one ContextVar read, ~15 ns) and reports to the Graph it
returns, if any; the nets ask ``recording()`` to take the layer-by-layer path while a graph is
recorded, so the graph is complete. No imports from fastbp: layers and nets import it freely.
A ContextVar rather than a module flag, so recording in one thread (or asyncio task) leaves
every other one untouched.
"""
import contextvars

# the fastbp.graph.Graph recording in this context, or None (the fast path)
recorder = contextvars.ContextVar("fastbp_graph_recorder", default=None)


def recording():
    """True inside ``with fastbp.graph.record():`` (in this thread or task)."""
    return recorder.get() is not None
