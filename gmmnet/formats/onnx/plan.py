"""Export as plan → build → annotate, and the registry of exporters.

An exporter declares the models it takes and the options it writes (as skl2onnx's
``register_converter`` does); :func:`choose_exporter` asks the registry which one writes a model
with given :class:`~gmmnet.formats.onnx.options.ExportOptions`.  Its ``plan`` makes every
choice first (layout, compute, centering, predicted errors, the size of the weights, checked
against the memory limit before anything large is built) and returns an :class:`ExportPlan`;
its ``build`` writes the graph from the plan and annotates it (doc strings, metadata).  The
command line reports from the plan.

Exporters (asked in this order): ``classifier`` (a fitted GaussianMixtureClassifier, by duck
typing), ``mixture`` (:mod:`gmmnet.formats.onnx.export`, a single :class:`~gmmnet.ir.Mixture`) and
``deep`` (:mod:`gmmnet.formats.onnx.deep`, a :class:`~gmmnet.ir.Hierarchy`, or a Mixture with the
deep exporter's options).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ...errors import UnsupportedModelError, UsageError
from .options import ExportOptions

__all__ = ["ExportPlan", "Exporter", "choose_exporter", "exporters", "register_exporter"]

#: ONNX models are protobuf messages, which cannot exceed 2 GiB.
PROTOBUF_LIMIT = 2**31


@dataclass(frozen=True)
class ExportPlan:
    """Every choice of one export, made before the graph is built.

    ``predicted`` holds the log-likelihood (max |Δ|/(1+|ref|)) and responsibilities (max |Δ|)
    errors the layout is predicted to have (the deep exporter's ``compute="auto"``: measured
    against float64 arithmetic).  ``warnings`` are the PrecisionWarnings :func:`to_onnx` issues.
    ``float32_loss`` is the pure-float32 error estimate of a single mixture centred per
    component when its graph computes in float32 (None otherwise).
    """

    exporter: str
    options: ExportOptions
    kind: str  # "mixture", "hierarchy" or "classifier"
    layout: str  # the exporter's layout table entry: "neurons", "quadratic", "deep"
    outputs: tuple[str, ...]  # the graph's output names, in order
    compute: str
    compute_reason: str
    centering: str
    centering_reason: str
    layer_dtype: str
    head_dtype: str
    predicted: dict[str, float]
    error_estimate: float | None
    levels: tuple[tuple[int, int], ...]  # per level: (components, principal directions kept)
    n_neurons: tuple[int, ...]  # per level, as written (ReLU pairs count twice)
    n_features: int  # width of the graph input
    weight_bytes: int  # the graph's initializers, estimated from the model before building
    warnings: tuple[str, ...] = ()
    float32_loss: float | None = None
    input_transform: bool = False
    state: Any = field(default=None, repr=False, compare=False)  # the exporter's own: model, prepared arrays

    def summary(self) -> str:
        """One line: the network's shape, e.g. ``3 components, 39 neurons -> 2 components, 78 neurons (2 levels)``."""
        if self.layout == "quadratic":
            shape = f"{self.levels[0][0]} components, quadratic layout ({self.layer_dtype} inside)"
        else:
            shape = " -> ".join(f"{k} components, {n} neurons" for k, n in self.levels)
        return shape + (f" ({len(self.levels)} levels)" if len(self.levels) > 1 else "")


@dataclass(frozen=True)
class Exporter:
    """One entry of the registry.

    ``takes(model)``: the model types it writes.  ``declines(model, options)``: why it does not
    write these options for this model (None when it does).  ``plan(model, options)`` →
    :class:`ExportPlan`; ``build(plan)`` → ``onnx.ModelProto``, annotated and checked.
    """

    name: str
    takes: Callable[[Any], bool]
    declines: Callable[[Any, ExportOptions], str | None]
    plan: Callable[[Any, ExportOptions], ExportPlan]
    build: Callable[[ExportPlan], Any]
    models: str  # what it takes, in words (for error messages)
    order: int = 50  # lower is asked first: the specific exporters before the general ones


_REGISTRY: list[Exporter] = []
#: The exporters that ship with gmmnet: each module registers itself when imported.
_BUILTIN = ("export", "deep", "classifier")


def _builtin() -> list[Exporter]:
    """The registry, with gmmnet's own exporters imported (and so registered) on first use."""
    import importlib

    for name in _BUILTIN:
        importlib.import_module(f"{__package__}.{name}")
    return _REGISTRY


def register_exporter(exporter: Exporter) -> Exporter:
    """Add ``exporter`` to the registry (replacing one of the same name); lower ``order`` is asked first."""
    _REGISTRY[:] = [e for e in _REGISTRY if e.name != exporter.name] + [exporter]
    _REGISTRY.sort(key=lambda e: e.order)
    return exporter


def exporters() -> tuple[Exporter, ...]:
    """The registered exporters, in the order they are asked."""
    return tuple(_builtin())


def takes(model) -> bool:
    """True when some exporter takes ``model`` as it is (an IR document or a classifier)."""
    return any(e.takes(model) for e in _builtin())


def choose_exporter(model, options: ExportOptions) -> Exporter:
    """The first exporter that takes ``model`` and does not decline ``options``.

    Raises UsageError naming what was asked: the model's type when no exporter takes it, else the
    reason the last exporter that takes it gave.
    """
    candidates = [e for e in _builtin() if e.takes(model)]
    if not candidates:
        names = "; ".join(e.models for e in _REGISTRY)
        raise UsageError(f"to_onnx expects {names}, got {type(model).__name__}")
    reason = None
    for e in candidates:
        reason = e.declines(model, options)
        if reason is None:
            return e
    raise UsageError(reason)


def exporter(name: str) -> Exporter:
    """The registered exporter called ``name``."""
    for e in _builtin():
        if e.name == name:
            return e
    raise KeyError(name)


def check_weight_bytes(n_bytes: float, working: float, what: str) -> None:
    """Refuse a graph whose initializers (``n_bytes``) ONNX cannot hold or whose construction
    (``working`` bytes, the float64 derivation and its copies) exceeds the memory limit."""
    from ...limits import check_bytes, format_bytes

    check_bytes(working, f"exporting {what}")
    if n_bytes >= PROTOBUF_LIMIT:
        raise UnsupportedModelError(
            f"{what}: the graph's weights would take {format_bytes(n_bytes)}, above ONNX's 2 GiB limit on a model")


def rename_outputs(model, naming: str) -> None:
    """Give the graph skl2onnx's output names and shapes (``naming="skl2onnx"``); "gmmnet" leaves it as built.

    skl2onnx writes a GaussianMixture with ``score_samples`` on as ``label`` (N, 1) int64,
    ``probabilities`` (N, K) and ``score_samples`` (N, 1); gmmnet's ``label`` and
    ``log_likelihood`` are (N,), so each gets an Unsqueeze.
    """
    if naming == "gmmnet":
        return
    import onnx
    from onnx import helper

    graph = model.graph
    names = {"label": "label", "responsibilities": "probabilities", "log_likelihood": "score_samples"}
    widen = {"label", "log_likelihood"}
    outs = list(graph.output)
    inner = {o.name: (f"output/{o.name}" if o.name in widen else names.get(o.name, o.name)) for o in outs}
    for node in graph.node:
        node.output[:] = [inner.get(o, o) for o in node.output]
        node.input[:] = [inner.get(i, i) for i in node.input]
    del graph.output[:]
    for o in outs:
        new = names.get(o.name, o.name)
        t = o.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        if o.name in widen:
            axes = f"axes/{o.name}_column"
            graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), axes))
            graph.node.append(helper.make_node("Unsqueeze", [inner[o.name], axes], [new], name=f"output/{new}",
                                               doc_string=f"{o.name} as a column (N, 1), as skl2onnx writes it"))
            dims = dims + [1]
        vi = helper.make_tensor_value_info(new, t.elem_type, dims)
        vi.doc_string = o.doc_string + ("" if new == o.name else f" (gmmnet's {o.name})")
        graph.output.append(vi)
