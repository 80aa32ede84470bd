"""Pictures of a Gaussian mixture seen as a network (``gmmnet plot``).

Four kinds of panel, each drawn from the IR:

* ``ellipses`` — data points (coloured by their most responsible component), each component's
  1σ and 2σ ellipses and each neuron's hyperplane w·x + b = 0 as a line through the component
  mean, with its normal w drawn as an arrow to the point where the neuron outputs 1
  (μ + w/‖w‖², i.e. one standard deviation along the principal direction).  Data with more
  than two features is shown in its top-2 principal plane (of the data when given, else of the
  mixture's overall covariance); a neuron's line is then its hyperplane cut by the plane through
  μ parallel to the view, and only the two neurons per component that lie most in the view
  are drawn.
* ``images`` — for image data (``image_shape=(h, w)``): one row per component, its mean, then
  its neurons' weight vectors w_i = λ_i^-1/2 v_i as images (the template each neuron matches,
  largest variance first; red positive, blue negative).
* ``spectrum`` — each component's eigenvalues (variances along its neurons' directions),
  largest first, on a log scale; one panel per level of a hierarchy.
* ``diagnostics`` — the recovery diagnostics of a mixture read back from a network
  (docs/recovery.md): faithfulness R², hyperplane distance and whitening error per component
  with their thresholds; low-confidence components in red.

``kind="auto"`` puts side by side the ellipses (or the images when ``image_shape`` is given), the
spectrum, and the diagnostics when the mixture has them.

Weight shows as strength: a component's lines are fainter the lighter it is (opacity
0.25 + 0.75·√(π/π_max)), and components lighter than :data:`NEGLIGIBLE_WEIGHT` × the heaviest
(the surplus components a BayesianGaussianMixture switches off) are not drawn; the title says
how many were left out.  Components with identical spectra (every component of a ``tied``
mixture) share one spectrum line.  Titles wrap to their panel, and labels are placed so that no
two texts overlap and none leaves the figure.

matplotlib is imported lazily (``pip install 'gmmnet[plot]'``) and only through its
object-oriented API with the Agg canvas: no pyplot, no global backend change.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import linalg
from .errors import DataError, UsageError
from .ir import Hierarchy, Mixture

__all__ = [
    "FORMATS",
    "KINDS",
    "as_document",
    "figure",
    "load_document",
    "parse_image_shape",
    "plot_file",
    "projection",
    "save_figure",
]

KINDS = ("auto", "ellipses", "images", "spectrum", "diagnostics")
#: Output formats by file suffix.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: Largest number of data points drawn (a random subset beyond it, seeded).
MAX_POINTS = 5000
#: Neurons drawn per component in the ellipse view of data with more than two features.
NEURONS_PER_COMPONENT = 2
#: Components (rows) and neurons (columns) shown in the image grid.
MAX_IMAGE_ROWS = 10
MAX_IMAGE_NEURONS = 7
#: Size of one panel in inches.
PANEL_SIZE = (5.0, 4.5)
#: Components lighter than this fraction of the heaviest component are not drawn.
NEGLIGIBLE_WEIGHT = 1e-3
#: Largest canvas, in pixels per side (Agg's limit is 2**16).
MAX_PIXELS = 32768
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


# ---------------------------------------------------------------------------
# inputs


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("plotting needs matplotlib: pip install 'gmmnet[plot]'") from None
    return Figure


def as_document(obj: Any, *, data: np.ndarray | None = None) -> tuple[Mixture | Hierarchy, dict | None]:
    """Anything gmmnet loads → (IR document, recovery report or None).

    Accepts an IR :class:`~gmmnet.ir.Mixture` / :class:`~gmmnet.ir.Hierarchy`, a fitted
    scikit-learn mixture, a fitted :class:`~gmmnet.hierarchy.HierarchicalGaussianMixture`, or an
    ``onnx.ModelProto``: read back with :func:`gmmnet.formats.onnx.read.from_onnx` (``data`` is used
    for grouping and diagnostics), or, for a deep network with several neuron levels, as a
    :class:`~gmmnet.ir.Hierarchy` with :func:`gmmnet.formats.onnx.read_deep.from_onnx`.
    """
    if isinstance(obj, (Mixture, Hierarchy)):
        return obj, None
    if hasattr(obj, "to_ir") and callable(obj.to_ir):  # HierarchicalGaussianMixture
        return obj.to_ir(), None
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a core dependency
        onnx = None
    if onnx is not None and isinstance(obj, onnx.ModelProto):
        from .formats.onnx.read import from_onnx
        from .formats.onnx.read_deep import from_onnx as from_deep_onnx, is_deep
        from .formats.onnx.walk import read_graph

        reading = read_graph(obj)  # walked once, for is_deep and for the reader
        if is_deep(reading):  # a deep network: the whole hierarchy, level by level
            return from_deep_onnx(reading, data=data)
        return from_onnx(reading, data=data)
    from .formats.sklearn import from_sklearn

    return from_sklearn(obj), None


def load_document(path: str | os.PathLike, *, data: np.ndarray | None = None):
    """Load any model file gmmnet reads (:func:`gmmnet.io.load_model`) and return
    ``(document, report, raw)``: the IR, the recovery report (ONNX inputs) and the loaded object."""
    from . import io

    raw = io.load_model(path)
    doc, report = as_document(raw, data=data)
    return doc, report, raw


def parse_image_shape(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"8x8"`` (or ``(8, 8)``) → (height, width)."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = text.lower().replace("×", "x").split("x")
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise UsageError(f"image shape must look like 8x8 (height x width), got {text!r}") from None
    else:
        shape = tuple(int(p) for p in text)
    if len(shape) != 2 or min(shape) < 1:
        raise UsageError(f"image shape must be two positive integers like 8x8, got {text!r}")
    return shape  # type: ignore[return-value]


def _check_data(data, d: int) -> np.ndarray | None:
    if data is None:
        return None
    x = np.asarray(data, dtype=np.float64)
    if x.ndim == 1 and d == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2 or x.shape[1] != d:
        raise DataError(f"data has shape {x.shape}, expected (n, {d}) for this model")
    x = x[np.all(np.isfinite(x), axis=1)]
    if x.shape[0] > MAX_POINTS:
        x = x[np.random.default_rng(0).choice(x.shape[0], MAX_POINTS, replace=False)]
    return x


def _levels(doc: Mixture | Hierarchy) -> list[Mixture]:
    return list(doc.levels) if isinstance(doc, Hierarchy) else [doc]


def _color(k: int) -> str:
    return _COLORS[k % len(_COLORS)]


def _shown(mixture: Mixture) -> tuple[list[int], dict[int, float]]:
    """(components drawn, their opacity): negligible weights are left out, lighter ones fainter."""
    w = np.asarray(mixture.weights, dtype=np.float64)
    top = float(w.max()) if w.size and w.max() > 0 else 1.0
    keep = [k for k in range(w.size) if w[k] >= NEGLIGIBLE_WEIGHT * top]
    return keep, {k: 0.25 + 0.75 * math.sqrt(w[k] / top) for k in keep}


def _left_out(mixture: Mixture, keep: list[int]) -> str:
    n = mixture.n_components - len(keep)
    if not n:
        return ""
    return f"; {n} component{'s' if n > 1 else ''} below {NEGLIGIBLE_WEIGHT:g}× the top weight not drawn"


def _ranges(ks: Sequence[int]) -> str:
    """[0, 1, 2, 5] → '0–2, 5'."""
    out, ks = [], sorted(ks)
    i = 0
    while i < len(ks):
        j = i
        while j + 1 < len(ks) and ks[j + 1] == ks[j] + 1:
            j += 1
        out.append(str(ks[i]) if j == i else f"{ks[i]}–{ks[j]}" if j > i + 1 else f"{ks[i]}, {ks[j]}")
        i = j + 1
    return ", ".join(out)


# ---------------------------------------------------------------------------
# geometry (float64, no matplotlib)


def _component_covariance(c) -> np.ndarray:
    return linalg.covariance(c.eigenvectors, c.eigenvalues, c.residual_variance)


def mixture_covariance(mixture: Mixture) -> tuple[np.ndarray, np.ndarray]:
    """Overall mean and covariance of the mixture: Σ π_k (Σ_k + μ_k μ_kᵀ) − m mᵀ."""
    w = mixture.weights
    m = w @ mixture.means
    cov = np.zeros((mixture.n_features, mixture.n_features))
    for wk, c in zip(w, mixture.components):
        diff = c.mean - m
        cov += wk * (_component_covariance(c) + np.outer(diff, diff))
    return m, cov


def projection(mixture: Mixture, data: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The view plane: ``(origin, P)`` with P of shape (2, d) (orthonormal rows); 2-D views are the identity.

    For d > 2, P holds the top-2 principal directions of ``data`` when given, else of the
    mixture's overall covariance, and the origin is their mean.
    """
    d = mixture.n_features
    if d <= 2:
        return np.zeros(d), np.eye(d)[:2]
    if data is not None and data.shape[0] > 2:
        origin = data.mean(axis=0)
        cov = np.cov(data, rowvar=False)
    else:
        origin, cov = mixture_covariance(mixture)
    vals, vecs = np.linalg.eigh(cov)
    P = vecs[:, np.argsort(vals)[::-1][:2]].T
    # a deterministic sign: the largest entry of each direction positive
    P *= np.sign(P[np.arange(2), np.argmax(np.abs(P), axis=1)])[:, None]
    return origin, P


def ellipse_axes(cov2: np.ndarray) -> tuple[float, float, float]:
    """(width, height, angle in degrees) of the 1σ ellipse of a 2×2 covariance."""
    vals, vecs = np.linalg.eigh(cov2)
    vals = np.maximum(vals, 0.0)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
    return 2 * math.sqrt(vals[1]), 2 * math.sqrt(vals[0]), angle


def neuron_segments(c, origin: np.ndarray, P: np.ndarray, max_neurons: int | None = None):
    """Per neuron of component c, in view coordinates: (index, centre, line direction, half-length, normal arrow).

    The arrow is P w/‖w‖²: from the mean to the point where the neuron outputs 1.  The line is
    perpendicular to the projected normal; its half-length is 2σ of the component along it.
    Neurons are ordered by how much of their normal lies in the view plane.
    """
    W, _ = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
    cov2 = P @ _component_covariance(c) @ P.T
    centre = P @ (c.mean - origin)
    norms = np.linalg.norm(W, axis=1)
    inplane = np.linalg.norm(W @ P.T, axis=1) / np.maximum(norms, 1e-300)
    order = np.argsort(-inplane, kind="stable")
    if max_neurons is not None:
        order = order[:max_neurons]
    out = []
    for i in order:
        arrow = P @ W[i] / norms[i] ** 2
        n2 = P @ W[i]
        if np.linalg.norm(n2) < 1e-12 * norms[i]:
            continue  # normal perpendicular to the view: the hyperplane contains the whole view
        u = np.array([-n2[1], n2[0]]) / np.linalg.norm(n2)
        half = 2.0 * math.sqrt(max(float(u @ cov2 @ u), 0.0))
        out.append((int(i), centre, u, half, arrow))
    return out


# ---------------------------------------------------------------------------
# panels


def _draw_ellipses(fig, mixture: Mixture, data: np.ndarray | None, title: str | None = None) -> None:
    from matplotlib.patches import Ellipse

    ax = fig.add_subplot(1, 1, 1)
    d = mixture.n_features
    if d == 1:
        _draw_1d(ax, mixture, data)
        return
    origin, P = projection(mixture, data)
    keep, alpha = _shown(mixture)
    if data is not None:
        labels = np.argmax(linalg.log_joint(mixture, data), axis=1)
        pts = (data - origin) @ P.T
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=[_color(k) for k in labels], alpha=0.35, linewidths=0)
    max_neurons = None if d == 2 else NEURONS_PER_COMPONENT
    for k in keep:
        c = mixture.components[k]
        col, a = _color(k), alpha[k]
        cov2 = P @ _component_covariance(c) @ P.T
        centre = P @ (c.mean - origin)
        wdt, hgt, ang = ellipse_axes(cov2)
        for s, ls in ((1, "-"), (2, "--")):
            ax.add_patch(Ellipse(centre, s * wdt, s * hgt, angle=ang, fill=False, color=col, lw=1.5, ls=ls, alpha=a))
        for i, ctr, u, half, arrow in neuron_segments(c, origin, P, max_neurons):
            p0, p1 = ctr - half * u, ctr + half * u
            ax.plot([p0[0], p1[0]], [p0[1], p1[1]], color=col, lw=0.9, alpha=0.8 * a)
            ax.annotate("", xy=ctr + arrow, xytext=ctr,
                        arrowprops={"arrowstyle": "->", "color": col, "lw": 1.2, "alpha": a})
        ax.plot(*centre, marker="o", ms=4, color=col, mec="black", mew=0.5, alpha=a)
        ax.annotate(str(k), xy=centre, xytext=(3, 3), textcoords="offset points", fontsize=8, color="black",
                    gid="component-label")
        # make sure the 2σ ellipse is in view
        ext = 2 * math.sqrt(max(cov2[0, 0], 0)), 2 * math.sqrt(max(cov2[1, 1], 0))
        ax.update_datalim([centre - ext, centre + ext])
    ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")
    if d == 2:
        ax.set_xlabel("x0")
        ax.set_ylabel("x1")
    else:  # the view plane: top-2 principal directions of the data (or of the mixture)
        of = "data" if data is not None else "mixture"
        ax.set_xlabel(f"{of} principal axis 1 (of {d} features)")
        ax.set_ylabel(f"{of} principal axis 2")
    ax.set_title((title or f"{mixture.n_components} components: 1σ/2σ ellipses, neurons") + _left_out(mixture, keep),
                 fontsize=9)


def _draw_1d(ax, mixture: Mixture, data: np.ndarray | None) -> None:
    lo = min(c.mean[0] - 4 * math.sqrt(_component_covariance(c)[0, 0]) for c in mixture.components)
    hi = max(c.mean[0] + 4 * math.sqrt(_component_covariance(c)[0, 0]) for c in mixture.components)
    if data is not None:
        ax.hist(data[:, 0], bins=40, density=True, color="0.8")
        lo, hi = min(lo, data.min()), max(hi, data.max())
    x = np.linspace(lo, hi, 400)[:, None]
    lj = linalg.log_joint(mixture, x)
    for k in range(mixture.n_components):
        ax.plot(x[:, 0], np.exp(lj[:, k]), color=_color(k), label=f"component {k}")
        ax.axvline(mixture.components[k].mean[0], color=_color(k), lw=0.8, ls=":")
    ax.plot(x[:, 0], np.exp(linalg.log_likelihood(mixture, x)), color="black", lw=1, label="mixture")
    ax.set_xlabel("x0")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    ax.set_title("1-D mixture: each neuron's hyperplane is the dotted mean", fontsize=9)


def _draw_images(fig, mixture: Mixture, shape: tuple[int, int]) -> None:
    h, w = shape
    d = mixture.n_features
    if h * w != d:
        raise UsageError(f"image shape {h}x{w} has {h * w} pixels but the model has {d} features")
    keep, _ = _shown(mixture)
    order = sorted(keep, key=lambda k: -mixture.components[k].weight)[:MAX_IMAGE_ROWS]
    n_cols = 1 + min(MAX_IMAGE_NEURONS, max(c.rank for c in mixture.components))
    axes = fig.subplots(len(order), n_cols, squeeze=False)
    for row, k in enumerate(order):
        c = mixture.components[k]
        W, _ = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
        top = np.argsort(-c.eigenvalues, kind="stable")[: n_cols - 1]
        axes[row, 0].imshow(c.mean.reshape(h, w), cmap="gray_r")
        # horizontal, to the left of the row: rotated labels of short rows run into each other
        axes[row, 0].set_ylabel(f"{k}: π={c.weight:.2f}", fontsize=7, rotation=0, ha="right", va="center")
        for col in range(1, n_cols):
            ax = axes[row, col]
            if col - 1 < top.size:
                img = W[top[col - 1]].reshape(h, w)
                lim = float(np.max(np.abs(img))) or 1.0
                ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
                if row == 0:
                    ax.set_title(f"w{col - 1}", fontsize=7)
        if row == 0:
            axes[0, 0].set_title("mean", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    fig.suptitle("component means (row: component k, weight π) and neuron weights w0, w1, … "
                 "(largest variance first; red +, blue −)" + _left_out(mixture, keep), fontsize=9, gid="wrap")


def _spectrum_groups(mixture: Mixture, keep: list[int]) -> list[list[int]]:
    """Components whose spectra are identical (all of a tied mixture), as groups drawn once."""
    groups: list[list[int]] = []
    spectra: list[np.ndarray] = []
    for k in keep:
        c = mixture.components[k]
        lam = np.concatenate([np.sort(c.eigenvalues)[::-1], [c.residual_variance or 0.0]])
        for g, ref in zip(groups, spectra):
            if ref.shape == lam.shape and np.allclose(ref, lam, rtol=1e-9, atol=0):
                g.append(k)
                break
        else:
            groups.append([k])
            spectra.append(lam)
    return groups


def _draw_spectrum(fig, doc: Mixture | Hierarchy) -> None:
    from matplotlib.ticker import MaxNLocator

    levels = _levels(doc)
    axes = fig.subplots(1, len(levels), squeeze=False)[0]
    for li, (ax, m) in enumerate(zip(axes, levels)):
        keep, alpha = _shown(m)
        groups = _spectrum_groups(m, keep)
        for g in groups:
            c, k = m.components[g[0]], g[0]
            lam = np.sort(c.eigenvalues)[::-1]
            label = _ranges(g) if len(g) > 1 else str(k)
            ax.semilogy(np.arange(1, lam.size + 1), lam, marker="o", ms=2.5, lw=1, color=_color(k),
                        alpha=max(alpha[j] for j in g), label=label if len(groups) <= 10 else None)
            if c.residual_variance is not None:
                ax.axhline(c.residual_variance, color=_color(k), ls=":", lw=0.8, alpha=max(alpha[j] for j in g))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("neuron (principal direction)")
        if li == 0:
            ax.set_ylabel("eigenvalue λ (variance)")
        where = f"level {li}: " if len(levels) > 1 else ""
        shared = " (identical for all components)" if len(groups) == 1 and len(keep) > 1 else ""
        ax.set_title(f"{where}eigenvalue spectrum{shared}{_left_out(m, keep)}", fontsize=9)
        if len(groups) <= 10:
            ax.legend(title="component", fontsize=6, title_fontsize=6)


_DIAG_METRICS = (
    # key, threshold key (per component, else in diagnostics["thresholds"]), label, threshold is a minimum?
    ("faithfulness_r2", "faithfulness_r2_min", "faithfulness R² (should reach the mark)", True),
    ("hyperplane_distance_sigma", "hyperplane_distance_max", "hyperplane distance from the members' mean, σ (≤ mark)",
     False),
    ("whitening_error", "whitening_allowance", "whitening error ‖W Σ Wᵀ − I‖₂ (≤ mark)", False),
    ("hyperplane_residual_sigma", "hyperplane_residual_sigma_max", "hyperplane residual σ (≤ mark)", False),
)


def _draw_diagnostics(fig, diagnostics: dict) -> None:
    comps = list(diagnostics.get("components") or [])
    if not comps:
        raise UsageError("this mixture has no recovery diagnostics to plot")
    metrics = [m for m in _DIAG_METRICS[:3] if any(c.get(m[0]) is not None for c in comps)]
    if not metrics:  # no data was given to the recovery: only the hyperplanes' own residual is known
        metrics = [m for m in _DIAG_METRICS[3:] if any(c.get(m[0]) is not None for c in comps)]
    if not metrics:
        raise UsageError("the recovery diagnostics hold no numeric metrics to plot")
    axes = fig.subplots(len(metrics), 1, squeeze=False, sharex=True)[:, 0]
    idx = np.array([c.get("index", i) for i, c in enumerate(comps)])
    low = np.array([bool(c.get("low_confidence")) for c in comps])
    colors = np.where(low, "#d62728", "#2ca02c")
    for ax, (key, tkey, label, _) in zip(axes, metrics):
        vals = np.array([np.nan if c.get(key) is None else float(c[key]) for c in comps])
        ax.bar(np.arange(len(comps)), np.nan_to_num(vals), color=colors)
        th = np.array([np.nan if c.get(tkey) is None else float(c[tkey]) for c in comps])
        if np.all(np.isnan(th)) and tkey in (diagnostics.get("thresholds") or {}):
            th = np.full(len(comps), float(diagnostics["thresholds"][tkey]))
        ax.scatter(np.arange(len(comps)), th, marker="_", s=200, color="black", zorder=3)
        ax.set_title(label, fontsize=7)
        ax.tick_params(labelsize=7)
    if len(comps) <= 20:
        axes[-1].set_xticks(np.arange(len(comps)))
        axes[-1].set_xticklabels([str(i) for i in idx], fontsize=7)
    else:  # let matplotlib thin the ticks out; positions are the component indices
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: str(idx[int(v)]) if 0 <= v < len(idx) else ""))
    axes[-1].set_xlabel("component (red: low confidence; black mark: threshold)", fontsize=8)
    fig.suptitle("recovery diagnostics", fontsize=9, gid="wrap")


# ---------------------------------------------------------------------------
# public


def _panels(doc, kind: str, image_shape, diagnostics) -> list[str]:
    if kind == "auto":
        panels = ["images" if image_shape else "ellipses", "spectrum"]
        if diagnostics and diagnostics.get("components"):
            panels.append("diagnostics")
        return panels
    return [kind]


def figure(model: Any, *, data: np.ndarray | None = None, kind: str = "auto",
           image_shape: str | Sequence[int] | None = None, size: tuple[float, float] | None = None,
           dpi: float = 100, title: str | None = None):
    """Draw a mixture and return a ``matplotlib.figure.Figure`` (not attached to pyplot).

    Parameters
    ----------
    model : Mixture, Hierarchy, fitted estimator or onnx.ModelProto
        Anything :func:`as_document` accepts.  For a hierarchy the ellipse and image views show
        level 0 (over the inputs); the spectrum shows every level.
    data : array (n, n_features), optional
        Points to draw (at most :data:`MAX_POINTS`, a seeded subset beyond); for ONNX models also
        used by the recovery (grouping and diagnostics).
    kind : {"auto", "ellipses", "images", "spectrum", "diagnostics"}
    image_shape : "HxW" or (h, w), optional
        Needed for ``kind="images"``; with ``"auto"`` it replaces the ellipses by images.
    size : (width, height) in inches, optional
        Default: :data:`PANEL_SIZE` per panel, side by side.
    dpi : float
        Pixels per inch of raster output: a PNG is ``round(width·dpi) × round(height·dpi)`` pixels.
    """
    if kind not in KINDS:
        raise UsageError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    shape = parse_image_shape(image_shape)
    if kind == "images" and shape is None:
        raise UsageError("kind 'images' needs an image shape, e.g. --image-shape 8x8")
    if size is not None:
        _check_canvas(size, dpi)
    Figure = _matplotlib()
    raw_data = None if data is None else np.asarray(data, dtype=np.float64)
    doc, report = as_document(model, data=raw_data)
    base = _levels(doc)[0]
    diagnostics = base.diagnostics if isinstance(doc, Mixture) else None
    if kind == "diagnostics" and not diagnostics:
        raise UsageError("this mixture has no recovery diagnostics (they come from reading back an ONNX network)")
    x = _check_data(raw_data, base.n_features)
    panels = _panels(doc, kind, shape, diagnostics)
    if size is None:
        size = (PANEL_SIZE[0] * len(panels), PANEL_SIZE[1])
    w_in, h_in = _check_canvas(size, dpi)
    fig = Figure(figsize=(w_in, h_in), dpi=dpi, layout="constrained")
    subs = [fig] if len(panels) == 1 else list(fig.subfigures(1, len(panels)))
    with warnings.catch_warnings():  # matplotlib's layout notes (e.g. a panel too small to lay out) are noise here
        warnings.simplefilter("ignore", UserWarning)
        for sub, panel in zip(subs, panels):
            if panel == "ellipses":
                _draw_ellipses(sub, base, x, title if len(panels) == 1 else None)
            elif panel == "images":
                _draw_images(sub, base, shape)
            elif panel == "spectrum":
                _draw_spectrum(sub, doc)
            else:
                _draw_diagnostics(sub, diagnostics)
        if title and len(panels) > 1:
            fig.suptitle(title, gid="wrap")
        _tidy(fig)
    return fig


def _check_canvas(size, dpi: float) -> tuple[float, float]:
    """(width, height) in inches, refused before any drawing when out of range or too many pixels."""
    try:
        w_in, h_in = (float(v) for v in size)
    except (TypeError, ValueError):
        raise UsageError(f"figure size must be two numbers (inches), got {size!r}") from None
    if not (0 < w_in <= 100 and 0 < h_in <= 100) or not 10 <= dpi <= 1000:
        raise UsageError(f"figure size must be within (0, 100] inches and dpi within [10, 1000], got {size} at {dpi}")
    w_px, h_px = round(w_in * dpi), round(h_in * dpi)
    if max(w_px, h_px) > MAX_PIXELS:
        raise UsageError(f"a {w_in:g}x{h_in:g} inch figure at {dpi:g} dpi is {w_px}x{h_px} pixels; "
                         f"at most {MAX_PIXELS} per side: lower --size or --dpi")
    from .limits import check_bytes

    check_bytes(4.0 * w_px * h_px, f"a {w_px}x{h_px} pixel canvas")
    return w_in, h_in


#: Where a component's label may sit next to its mean (offset points), tried in order.
_LABEL_OFFSETS = ((3, 3), (3, -11), (-11, 3), (-11, -11), (3, 14), (3, -22), (-22, 3), (14, 3), (-11, 14), (14, -11))


def _tidy(fig) -> None:
    """Fit the texts to the figure: wrap titles and axis labels that are wider than their panel
    (and shrink them when a word alone is too wide), then move each component label to the
    first place next to its mean where it overlaps no other label."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    FigureCanvasAgg(fig)
    for _ in range(8):
        fig.draw_without_rendering()  # runs the constrained layout
        renderer = fig.canvas.get_renderer()
        # (text, the box it must fit): axis titles and labels their axes, suptitles their (sub)figure
        texts = [(t, ax.get_window_extent(renderer)) for ax in fig.get_axes() for t in (ax.title, ax.xaxis.label)]
        texts += [(ax.yaxis.label, ax.get_window_extent(renderer)) for ax in fig.get_axes()
                  if ax.yaxis.label.get_rotation() == 90]
        texts += [(t, t.figure.bbox) for t in fig.findobj(lambda a: isinstance(a, Text) and a.get_gid() == "wrap")]
        changed = False
        for t, holder in texts:
            text = t.get_text()
            if not text.strip() or not t.get_visible():
                continue
            box = t.get_window_extent(renderer)
            vertical = t.get_rotation() == 90
            room = holder.height if vertical else holder.width
            used = box.height if vertical else box.width
            if used <= 0.98 * room:
                continue
            flat = " ".join(text.split())
            width = max(8, int(max(len(line) for line in text.splitlines()) * room / used * 0.9))
            wrapped = textwrap.fill(flat, width, break_on_hyphens=False)
            if wrapped != text:
                t.set_text(wrapped)
            elif t.get_fontsize() > 5:
                t.set_fontsize(t.get_fontsize() - 1)
            else:
                continue
            changed = True
        if not changed:
            break
    renderer = fig.canvas.get_renderer()
    for ax in fig.get_axes():
        labels = [t for t in ax.texts if t.get_gid() == "component-label"]
        inside = ax.get_window_extent(renderer)
        placed: list = []
        for t in labels:
            for offset in _LABEL_OFFSETS:
                t.xyann = offset
                box = t.get_window_extent(renderer)
                if all(not box.overlaps(p) for p in placed) and inside.contains(box.x0, box.y0) \
                        and inside.contains(box.x1, box.y1):
                    break
            else:
                t.xyann = _LABEL_OFFSETS[0]
                box = t.get_window_extent(renderer)
            placed.append(box)


def save_figure(fig, path: str | os.PathLike, *, force: bool = False, inputs: Sequence = ()) -> None:
    """Write a figure atomically (:func:`gmmnet.io.atomic_write`); the format comes from the suffix."""
    from . import io

    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"unknown figure suffix {suffix or '(none)'!r}: use {', '.join(FORMATS)}")
    fmt = FORMATS[suffix]
    # svg/pdf embed a creation date unless told not to: keep output reproducible
    meta = {"Date": None} if fmt in ("svg", "pdf") else {"Software": None}
    with warnings.catch_warnings():  # matplotlib's layout notes are noise next to gmmnet's own messages
        warnings.simplefilter("ignore", UserWarning)
        io.atomic_write(path, lambda f: fig.savefig(f, format=fmt, metadata=meta), force=force, inputs=inputs)


def plot_file(model_path: str | os.PathLike, output: str | os.PathLike, *, data_path: str | os.PathLike | None = None,
              kind: str = "auto", image_shape: str | Sequence[int] | None = None,
              size: tuple[float, float] | None = None, dpi: float = 100, force: bool = False) -> dict:
    """Load a model file (and data file), draw it and write the figure; returns what was written."""
    from . import io

    if Path(os.fspath(output)).suffix.lower() not in FORMATS:  # fail before any work
        raise UsageError(f"unknown figure suffix {Path(os.fspath(output)).suffix or '(none)'!r}: use {', '.join(FORMATS)}")
    data = io.load_data(data_path) if data_path is not None else None
    model = io.load_model(model_path)
    fig = figure(model, data=data, kind=kind, image_shape=image_shape, size=size, dpi=dpi)
    inputs = [model_path] + ([data_path] if data_path is not None else [])
    save_figure(fig, output, force=force, inputs=inputs)
    w_in, h_in = fig.get_size_inches()
    return {"output": os.fspath(output), "format": FORMATS[Path(os.fspath(output)).suffix.lower()],
            "width_px": int(round(w_in * dpi)), "height_px": int(round(h_in * dpi))}
