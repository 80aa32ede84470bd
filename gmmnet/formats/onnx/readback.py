"""Check what the reader recovered against the graph it came from, on probe points.

Before a recovered mixture (or hierarchy) is called exact, the graph itself is run (onnxruntime)
on probe points that span every feature's scale, and its *component scores* — the tensor its
head reduces, the logits ``log w_k + log N_k(x)`` (or squared distances D²_k) of every component
— are compared with the same scores of the recovered mixture.  Every output of a mixture head
(log-likelihood, responsibilities, label) is a function of those scores, so they are the strictest
thing to compare.

Probe points (in the mixture's coordinates, then mapped to the graph's input): each component's
mean, draws from it, points 3 standard deviations out along a coordinate axis and along a
principal direction; with an ``input_transform`` the points are mapped back through a right
inverse of A, plus a component the graph must ignore (its null space).  A float32 graph sees the
points rounded to float32, and the mixture is evaluated on the rounded points.

The error is max |Δ| / (1 + |graph|) over probes and components.  It must not exceed the
read-back tolerance of the graph's dtype (``gmmnet.tolerances``: ``readback_float64``,
``readback_float32``), except where the graph's own arithmetic is coarser than that (skl2onnx's
diag/spherical graphs compute x² − 2xμ + μ² and lose ε·x²/σ² on large features): for a single
mixture, whose scores are quadratic in x, the graph's rounding is measured on the same probes by
the fourth difference g(x+2δ) − 4g(x+δ) + 6g(x) − 4g(x−δ) + g(x−2δ), which is exactly zero for a
quadratic and so is rounding alone.  Its largest relative size (about 8 times the spread of the
graph's rounding, which also covers the rounding of the constants the graph stores, of the same
size) is then allowed, and the report says so.  Beyond that the reader refuses with
:class:`~gmmnet.errors.UnsupportedModelError`.
"""

from __future__ import annotations

import numpy as np

from ... import linalg
from ...errors import InputFileError, UnsupportedModelError
from ...ir import Hierarchy, Mixture
from ...recover import small_products
from ...tolerances import tol

__all__ = ["MAX_PROBES", "MIN_PROBES", "verify"]

#: Probe rows: at most this many, at least MIN_PROBES; the budget is about PROBE_WORK multiply-adds of
#: the graph's weights (rows × weights).
MAX_PROBES = 512
MIN_PROBES = 16
PROBE_WORK = 2e8
#: A component scoring this many nats below a row's best adds exactly nothing there (exp(−745) underflows in float64).
NEGLIGIBLE_NATS = 800.0


def _skip(why: str) -> dict:
    return {"checked": False, "why": why}


def verify(reading, doc, *, grouped: bool = False, seed: int = 0) -> dict:
    """Compare ``doc`` (what was recovered from ``reading``) with the graph; the report's ``readback`` part.

    Returns ``{"checked": False, "why": ...}`` where no comparison applies (explicit grouping, no
    mixture head, a mixture over a lower level's activations), else the figures.  Raises
    :class:`~gmmnet.errors.UnsupportedModelError` when the two disagree beyond the tolerance.
    """
    if grouped:
        return _skip("explicit grouping: the mixture is not the graph's own head")
    if not reading.heads:
        return _skip("the graph has no mixture head to compare with")
    top = max(reading.heads)
    levels = doc.levels if isinstance(doc, Hierarchy) else [doc]
    if len(levels) != top + 1:
        return _skip(f"the mixture is level {top} of the graph, over the activations of the level below")
    name = reading.logits.get(top)
    M = reading.heads[top][0]
    n_comp = M.shape[0]
    if name is None or levels[-1].n_components != n_comp:
        return _skip("the mixture's components are not the head's")
    kind = _kind(reading, top)
    dtype = reading.dtype
    limit = tol(f"readback_{dtype}")

    rng = np.random.default_rng(seed)
    n_rows = _budget(reading)
    z = _probes(levels[0], n_rows, rng)
    x = _inputs(z, doc.input_transform, rng)
    f = np.float32 if dtype == "float32" else np.float64
    xg = x.astype(f)
    try:
        run = _runner(reading.model, name, n_comp, getattr(reading, "serialized", None))
    except InputFileError as exc:
        return _skip(f"onnxruntime cannot run the graph with its scores as an output ({exc})")
    g = run(xg)
    with small_products(n_comp, max(lv.n_features for lv in levels)):  # one product per component
        m = _scores(doc, xg.astype(np.float64), kind)
    err = _error(g, m, kind)
    out = {"checked": True, "probes": int(x.shape[0]), "compared": "component scores "
           + ("(log w_k + log N_k)" if kind == "log_joint" else "(squared distances, up to a constant)"),
           "max_error": err, "tolerance": limit, "graph_rounding": None}
    if err <= limit:
        return out
    if isinstance(doc, Mixture) and kind == "log_joint":
        noise = _rounding(run, xg, f)
        out["graph_rounding"] = noise
        if err <= noise:
            out["note"] = (f"the graph's own {dtype} arithmetic is good to ~{noise:.1e} (relative) on these probes, "
                           f"coarser than the read-back tolerance {limit:g}; the mixture matches it to {err:.1e}")
            return out
        extra = f"; the graph's own rounding there is ~{noise:.1e}"
    else:
        extra = ""
    worst = int(np.argmax([_error(g[:, [k]], m[:, [k]], kind) for k in range(n_comp)]))
    c = levels[-1].components[worst]
    cond = float(c.eigenvalues.max() / c.eigenvalues.min())
    raise UnsupportedModelError(
        f"the recovered mixture does not reproduce the graph: its component scores differ by up to {err:.2e} "
        f"(relative) on {x.shape[0]} probe points, above the read-back tolerance {limit:g} (worst: component "
        f"{worst}, covariance condition number {cond:.1e}{extra})")


def _kind(reading, level: int) -> str:
    """'log_joint' or 'squared_distance' for a level's head (its curvature's sign, as the reader decides)."""
    net = reading.net
    if net is not None and net.head_kind is not None and level == len(net.layers) - 1:
        return net.head_kind
    M = reading.heads[level][0]
    M = M.toarray() if hasattr(M, "toarray") else np.asarray(M, dtype=np.float64)
    W = reading.layers[level].W
    return "log_joint" if float(np.sum(M @ np.sum(W**2, axis=1))) < 0 else "squared_distance"


def _budget(reading) -> int:
    """Probe rows so that rows × (weights the graph multiplies per row) stays near PROBE_WORK."""
    work = float(reading.n_features) + sum(float(layer.W.size) for layer in reading.layers)
    return int(np.clip(PROBE_WORK / max(work, 1.0), MIN_PROBES, MAX_PROBES))


def _axis_sd(c) -> np.ndarray:
    """Per-feature standard deviation of one component (diagonal of its covariance, no d×d matrix)."""
    lam = c.eigenvalues
    if c.axis_aligned:
        return np.sqrt(lam)
    V = c.eigenvectors
    var = (V * V).T @ lam
    if c.residual_variance is not None:
        var = var + c.residual_variance * np.maximum(1.0 - np.sum(V * V, axis=0), 0.0)
    return np.sqrt(np.maximum(var, 0.0))


def _draw(c, rng, n: int) -> np.ndarray:
    """n rows drawn from one component."""
    z = rng.standard_normal((n, c.rank)) * np.sqrt(c.eigenvalues)
    x = c.mean + (z if c.axis_aligned else z @ c.eigenvectors)
    if c.residual_variance is not None:
        e = rng.standard_normal((n, c.n_features)) * np.sqrt(c.residual_variance)
        x = x + e - (e @ c.eigenvectors.T) @ c.eigenvectors
    return x


def _probes(mix: Mixture, n_rows: int, rng) -> np.ndarray:
    """Probe rows in the mixture's coordinates: per component its mean, draws, and points 3σ out along
    a coordinate axis and along a principal direction; components taken round-robin up to ``n_rows``."""
    comps = mix.components
    d = mix.n_features
    per = max(6, -(-n_rows // len(comps)))
    blocks = []
    for k in rng.permutation(len(comps)):
        c = comps[k]
        sd = _axis_sd(c)
        rows = [c.mean[None, :], _draw(c, rng, per - 5)]
        for sign in (3.0, -3.0):
            j = int(rng.integers(d))
            e = np.zeros(d)
            e[j] = sign * sd[j]
            rows.append((c.mean + e)[None, :])
        for sign in (3.0, -3.0):
            i = int(rng.integers(c.rank))
            v = np.eye(1, d, i)[0] if c.axis_aligned else c.eigenvectors[i]
            rows.append((c.mean + sign * np.sqrt(c.eigenvalues[i]) * v)[None, :])
        blocks.append(np.concatenate(rows))
        if sum(b.shape[0] for b in blocks) >= n_rows:
            break
    return np.concatenate(blocks)[: max(n_rows, 1)]


def _inputs(z: np.ndarray, transform, rng) -> np.ndarray:
    """Rows of the graph's input x with A x + c = z (a right inverse of A), plus a null-space part."""
    if transform is None:
        return z

    A, c = transform.dense(), transform.offset
    R = linalg.right_inverse(A)
    x = (z - c) @ R.T
    if A.shape[0] < A.shape[1]:  # directions the graph must ignore: probe them too
        spread = np.std(x, axis=0) + np.abs(np.mean(x, axis=0)) * 1e-3
        spread[spread == 0] = 1.0
        n = rng.standard_normal(x.shape) * spread
        x = x + n - (n @ A.T) @ R.T
    return x


def _runner(model, name: str, n_comp: int, serialized: bytes | None = None):
    """A function rows → the graph's tensor ``name`` as (rows, K) float64 (the tensor made a graph output).

    ``serialized`` is the model's bytes when the caller has them; otherwise the model is serialized
    once.  A tensor that is not an output is added as one by appending a message that holds only
    that output to the bytes: protobuf merges it into the graph (its outputs are a repeated field),
    so a large model is neither copied nor serialized a second time.
    """
    import onnx

    from .runtime import session

    data = model.SerializeToString() if serialized is None else serialized
    outs = [o.name for o in model.graph.output]
    sess = None
    if name in outs:
        sess = session(data, intra_op_num_threads=1)
    else:
        err = None
        for elem in (onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT):  # its type is not declared anywhere
            extra = onnx.ModelProto()
            extra.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            try:
                sess = session(data + extra.SerializeToString(), intra_op_num_threads=1)
                break
            except InputFileError as exc:
                err = exc
        if sess is None:
            raise err
    inp = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        out = np.asarray(sess.run([name], {inp: x})[0], dtype=np.float64)
        if out.size != x.shape[0] * n_comp:
            raise UnsupportedModelError(f"the head's tensor {name!r} has shape {out.shape}, not (N, {n_comp})")
        return out.reshape(x.shape[0], n_comp)

    return run


def top_level(doc, x: np.ndarray) -> tuple[Mixture, np.ndarray]:
    """(top mixture, the rows it scores) for rows x of the graph's input: a hierarchy's input transform
    and its lower levels' Abs distances applied (a Mixture's own transform is applied by linalg)."""
    x = np.asarray(x, dtype=np.float64)
    if not isinstance(doc, Hierarchy):
        return doc, x
    if doc.input_transform is not None:
        x = doc.input_transform.apply(x)
    for m in doc.levels[:-1]:
        x = linalg.distances(m, x)
    return doc.levels[-1], x


def _scores(doc, x: np.ndarray, kind: str) -> np.ndarray:
    """The recovered component scores at rows x of the graph's input."""
    top, x = top_level(doc, x)
    return linalg.log_joint(top, x) if kind == "log_joint" else linalg.mahalanobis_sq(top, x)


def _error(g: np.ndarray, m: np.ndarray, kind: str) -> float:
    """max |g − m| / (1 + |g|); squared distances compared up to a per-component constant.

    A component of weight 0 in the mixture (score −inf) agrees with a graph whose score for it is
    :data:`NEGLIGIBLE_NATS` below the row's best (a finite constant such as the exporter's
    ``ABSENT_LOG_TERM``, or digamma log-weights of −5e7): exp of the gap is 0 in float64, so the
    component adds nothing to the likelihood or the responsibilities in either."""
    if kind == "log_joint":
        with np.errstate(invalid="ignore"):
            gap = np.max(g, axis=1, keepdims=True) - g
        g = np.where(np.isneginf(m) & (gap > NEGLIGIBLE_NATS), -np.inf, g)
    both = np.isfinite(g) & np.isfinite(m)
    if np.any(np.isfinite(g) != np.isfinite(m)) or np.any((~both) & (g != m)):
        return float("inf")
    if kind != "log_joint":
        g = g - np.mean(np.where(both, g, 0.0), axis=0)
        m = m - np.mean(np.where(both, m, 0.0), axis=0)
    rel = np.abs(g - m)[both] / (1.0 + np.abs(g[both]))
    return float(np.max(rel)) if rel.size else 0.0


def _rounding(run, x: np.ndarray, f) -> float:
    """The graph's own rounding on rows ``x``: the largest relative fourth difference of its scores.

    The steps δ are multiples of each entry's spacing in the graph's dtype, so x ± δ and x ± 2δ
    are exact and equally spaced: the difference of a quadratic is then exactly zero.
    """
    k = 2.0 ** (25 if f is np.float64 else 10)
    delta = (np.spacing(np.abs(x).astype(f)) * f(k)).astype(f)
    pts = [x + f(t) * delta for t in (-2, -1, 1, 2)]
    # rows where a step crosses an exponent boundary are not equally spaced: leave them out
    exact = np.all([np.all((p - x) == f(t) * delta, axis=1) for p, t in zip(pts, (-2, -1, 1, 2))], axis=0)
    if not np.any(exact):  # pragma: no cover - every row at a boundary
        return 0.0
    x = x[exact]
    gm2, gm1, g1, g2 = (run(p[exact]) for p in pts)
    g0 = run(x)
    fourth = np.abs(gm2 - 4.0 * gm1 + 6.0 * g0 - 4.0 * g1 + g2)
    ok = np.isfinite(fourth) & np.isfinite(g0)
    if not np.any(ok):
        return 0.0
    return float(np.max(fourth[ok] / (1.0 + np.abs(g0[ok]))))
