"""ONNX graph → :class:`~gmmnet.ir.Mixture`: :func:`from_onnx`, the reader users call.

The graph is walked into layers by :mod:`gmmnet.formats.onnx.walk` (by pattern, never by node
names), read over its input space (a folded preprocessing comes back as ``input_transform``),
inverted into Gaussians by :func:`gmmnet.recover.from_network` (or, for a rank-truncated head,
by :mod:`gmmnet.formats.onnx.read_deep`), and checked against the graph on probe points
(:mod:`gmmnet.formats.onnx.readback`).  The walk's names are re-exported here.
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import UnsupportedModelError
from ...recover import from_network
from . import read_deep, readback
from .walk import (BATCHNORM_NOTE, GraphReading, Layer, NetworkLayers, OpRule, declare, input_space, load_model,
                   read_graph, read_layers, reads, supported_ops)

__all__ = ["BATCHNORM_NOTE", "GraphReading", "Layer", "NetworkLayers", "OpRule", "declare", "from_onnx", "input_space",
           "load_model", "read_graph", "read_layers", "reads", "supported_ops"]


# ---------------------------------------------------------------------------
# graph → mixture


def from_onnx(model_or_path, *, data=None, groups=None, n_components: int | None = None, check: bool = True):
    """Recover a Gaussian mixture from an ONNX Abs/ReLU network.

    Parameters
    ----------
    model_or_path : onnx.ModelProto, path, bytes, or a :class:`~gmmnet.formats.onnx.walk.GraphReading`
        (a graph already walked, e.g. by :func:`~gmmnet.formats.onnx.read_deep.is_deep`; it is not reused after)
    data : array (n, n_features), optional
        Points the network was meant for: used to group neurons when the graph does not,
        to fill what the weights leave open (rank-deficient groups, single-ReLU shifts,
        weights of a headless network) and to compute the diagnostics.
    groups : int or list of index lists, optional
        Neuron grouping into components (an int g means consecutive groups of g neurons).
        Overrides the grouping the head shows.  Indices count the graph's neurons in the
        order the reader found them (``read_layers(m).W``).
    n_components : int, optional
        Number of components for automatic grouping on data.
    check : bool
        Compare the result with the graph on probe points (:mod:`gmmnet.formats.onnx.readback`)
        and refuse it beyond the read-back tolerance; the figures go to ``report["readback"]``.

    Returns
    -------
    (Mixture, report dict)
        A graph whose head is a rank-truncated mixture's (kept neurons plus an isotropic residual)
        comes back truncated (rank r, σ²).  A graph of a folded preprocessing comes back with its
        ``input_transform`` (see :func:`input_space`).
    """
    source = "onnx"
    if isinstance(model_or_path, (str, os.PathLike)):
        source = f"onnx:{os.path.basename(os.fspath(model_or_path))}"
    grouped = groups is not None or n_components is not None
    reading = input_space(read_graph(model_or_path), grouped=grouped)  # a GraphReading passes through
    mixture = report = None
    if not grouped and read_deep.is_truncated_mixture(reading):
        try:
            mixture, report = read_deep.from_reading(reading, data=data)
        except UnsupportedModelError as exc:
            if reading.net is None:
                raise
            reading.net.notes.append(f"the head mixes kept neurons and squared affine terms, but not as a truncated "
                                     f"Gaussian ({exc}); read as a full quadratic form")
    if mixture is None:
        if reading.net is None:
            raise reading.error
        mixture, report = from_network(reading.net, data=data, groups=groups, n_components=n_components, source=source)
    _note_log_constant(mixture, report)
    if BATCHNORM_NOTE in reading.notes:  # the torch reader lists its folded steps under the same key
        report["folded"] = [BATCHNORM_NOTE]
    if check:
        report["readback"] = readback.verify(reading, mixture, grouped=grouped)
    return mixture, report


def _note_log_constant(mixture, report: dict) -> None:
    """Say so when every component carries the same nonzero log_constant (what a folded preprocessing leaves)."""
    lc = mixture.log_constants
    if lc.size == 0 or np.ptp(lc) != 0 or lc[0] == 0.0:
        return
    report["log_constant"] = float(lc[0])
    space = "z (its input_transform)" if mixture.input_transform is not None else "the graph's inputs"
    report.setdefault("notes", []).append(
        f"every component carries log_constant {lc[0]:.6g}: the graph's scores are a normalized density over {space} "
        "plus this constant (a folded invertible preprocessing z = A x + c gives −log|det A|: the graph computes the "
        "density of z)")
