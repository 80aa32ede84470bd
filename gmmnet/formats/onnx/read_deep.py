"""Deep ONNX network → :class:`~gmmnet.ir.Hierarchy` (the reverse of :mod:`gmmnet.formats.onnx.deep`).

A deep graph (Linear→Abs→Linear→Abs→…→head, or with mirrored ReLU pairs) is read by pattern
(:mod:`gmmnet.formats.onnx.read`: one neuron level per Linear→Abs/ReLU) and rebuilt as one
mixture per neuron level.  Rank-truncated levels (K·r kept neurons plus the residual term
‖h − μ_k‖²/σ² in the head) come back with rank r and ``residual_variance`` σ², read from their
heads; a one-level truncated graph comes back as that truncated :class:`~gmmnet.ir.Mixture`.

Everything is read from the graph's structure, never from ``metadata_props`` or node names.
The result is the IR; callers that want an estimator build it
(``HierarchicalGaussianMixture.from_ir``).
"""

from __future__ import annotations

import numpy as np

from ... import linalg
from ...errors import UnsupportedModelError
from ...ir import Component, Hierarchy, Mixture, Provenance
from ...recover import NetworkLayers, from_network, mirrored_pairs
from ...versions import library_versions
from . import readback
from .walk import GraphReading, input_space, read_graph

__all__ = ["from_onnx", "is_deep", "is_truncated_mixture", "read_raw"]

#: Tolerance of the orthonormality of one component's neuron directions.
_ORTHO_TOL = {"float32": 1e-5, "float64": 1e-9}


def _groups_from_logits(M: np.ndarray, L: np.ndarray, level: int):
    """Groups and per-neuron scale √(−2M) of a lower level's head ``Σ M a² + c`` (no linear term)."""
    M = M.toarray() if hasattr(M, "toarray") else np.asarray(M, dtype=np.float64)
    L = L.toarray() if hasattr(L, "toarray") else np.asarray(L, dtype=np.float64)
    if np.any(np.abs(L) > 0):
        raise UnsupportedModelError(f"level {level}: its head adds a linear term (not a gmmnet mixture head)")
    if np.any(M > 0):
        raise UnsupportedModelError(
            f"level {level}: its head has squared neurons of both signs (a rank-truncated level); "
            "pass the ONNX model itself, not its NetworkLayers, to read it back"
        )
    groups = [list(np.flatnonzero(M[k] != 0)) for k in range(M.shape[0])]
    if any(not gr for gr in groups):
        raise UnsupportedModelError(f"level {level}: a component of its head uses no neurons")
    return groups, np.sqrt(-2.0 * M)


def _greedy_groups(W: np.ndarray, tol: float) -> list[list[int]]:
    """Consecutive neurons with mutually orthogonal directions, at most n_in per group (gmmnet's layout)."""
    groups: list[list[int]] = []
    cur: list[int] = []
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    for i in range(W.shape[0]):
        if cur and (len(cur) == W.shape[1] or np.max(np.abs(U[cur] @ U[i])) > tol):
            groups.append(cur)
            cur = []
        cur.append(i)
    groups.append(cur)
    return groups


def _component(Wk: np.ndarray, bk: np.ndarray, dtype: str, level: int, k: int):
    """(mean, eigenvectors, eigenvalues) of one component whose neuron rows are λ^-½ v (gmmnet layout)."""
    hint = (" (a hierarchy behind a folded scaler or whitening reads back only with its input_transform "
            "metadata)" if level == 0 else "")
    norms = np.linalg.norm(Wk, axis=1)
    V = Wk / norms[:, None]
    err = float(np.max(np.abs(V @ V.T - np.eye(V.shape[0]))))
    if err > _ORTHO_TOL[dtype]:
        raise UnsupportedModelError(
            f"level {level}, component {k}: neuron directions are not orthogonal (max |VVt - I| = {err:.1e}): "
            f"the level's features are not principal-axis distances of one Gaussian{hint}"
        )
    if V.shape[0] != V.shape[1]:
        raise UnsupportedModelError(
            f"level {level}, component {k}: {V.shape[0]} neurons for {V.shape[1]} inputs, a rank-truncated level "
            f"without its head (its residual variance is not in the graph): export with level{level}_responsibilities "
            f"(to-onnx --level-outputs) to read it back{hint}"
        )
    if err > 1e-12:  # float32 rows: the nearest orthonormal rows (polar factor)
        u, _, vh = np.linalg.svd(V)
        V = u @ vh
    ident = np.abs(V)
    if np.max(np.abs(ident - np.eye(V.shape[0]))) <= _ORTHO_TOL[dtype]:
        V = np.eye(V.shape[0])  # axis-aligned (diag/spherical): the IR wants the exact identity
        Wk = V * norms[:, None] * np.sign(np.diag(Wk @ V.T))[:, None]
    mean, *_ = np.linalg.lstsq(Wk, -bk, rcond=None)
    return mean, V, 1.0 / norms**2


#: Relative spread of the smallest eigenvalues read as one repeated residual variance σ².
_RESIDUAL_TOL = {"float32": 1e-4, "float64": 1e-9}


def _retruncate(comp, dtype: str):
    """A component read back at full rank whose smallest eigenvalue repeats (≥ 2 times) → kept rows + residual σ².

    Exact: a rank-truncated component *is* the full-rank Gaussian whose discarded eigenvalues all
    equal σ²; this gives it back its truncated form (K·r features instead of K·d).
    """
    mean, V, lam = comp[:3]
    order = np.argsort(-lam, kind="stable")
    V, lam = V[order], lam[order]
    s2 = float(lam.min())
    tail = lam <= s2 * (1.0 + _RESIDUAL_TOL[dtype])
    if tail.sum() < 2 or tail.all():
        return comp
    return mean, np.ascontiguousarray(V[~tail]), lam[~tail], float(np.mean(lam[tail]))


def _dense(a) -> np.ndarray:
    """``a`` (dense or sparse) as a dense float64 array."""
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a, dtype=np.float64)


def _needs_quadratic(raw: GraphReading, lv: int) -> bool:
    """True when level lv's head is a truncated one: coefficients of both signs, or residual (squared) neurons."""
    if lv not in raw.heads:
        return False
    M = raw.heads[lv][0]
    if hasattr(M, "tocsr"):  # sparse (K × K·d neurons): read its entries, never densified
        M = M.tocsr()
        used = np.unique(M.indices[M.data != 0])
        positive = bool(np.any(M.data > 0))
    else:
        M = np.asarray(M, dtype=np.float64)
        used = np.flatnonzero(np.any(M != 0, axis=0))
        positive = bool(np.any(M > 0))
    made = raw.explicit[lv][used]
    # squared affine values alone (skl2onnx's ReduceSumSquare(Gemm(X))) are the pattern path's business
    return bool(np.any(made) and (positive or not np.all(made)))


#: Relative tolerance of the checks on a level's quadratic form (pair folding, isotropic residual).
_QUAD_TOL = {"float32": 2e-3, "float64": 1e-8}


def _fold(A, g, col_map, col_scale, m_src: int, dtype: str, lv: int):
    """A quadratic form over the level below's graph activations → over its IR features.

    A ReLU pair (p, q) carries one feature f = (r_p + r_q)·scale with r_p·r_q = 0, so the form is a
    function of f alone when the pair's rows/columns agree (the diagonal A[p, q] never counts).
    """
    if col_map is None:
        return A, g
    P1 = np.array([idx[0] for idx in col_map])
    P2 = np.array([idx[-1] for idx in col_map])
    tol = _QUAD_TOL[dtype] * max(float(np.max(np.abs(A))), float(np.max(np.abs(g))), 1e-300)
    base = A[np.ix_(P1, P1)]
    off = ~np.eye(P1.size, dtype=bool)
    bad = max(float(np.max(np.abs(A[np.ix_(a, b)] - base)[off], initial=0.0))
              for a, b in ((P1, P2), (P2, P1), (P2, P2)))
    bad = max(bad, float(np.max(np.abs(A[P2, P2] - A[P1, P1]))), float(np.max(np.abs(g[P2] - g[P1]))))
    used = np.zeros(m_src, bool)
    used[P1] = used[P2] = True
    if np.any(~used):
        bad = max(bad, float(np.max(np.abs(A[~used]), initial=0.0)), float(np.max(np.abs(g[~used]), initial=0.0)))
    if bad > tol:
        raise UnsupportedModelError(
            f"level {lv}: its head is not a function of the level below's features (a ReLU pair's halves, or an "
            f"activation outside the features, enter it differently: {bad:.1e})")
    sc = np.asarray(col_scale, float)
    return base * np.outer(sc, sc), g[P1] * sc


def _quadratic_level(raw: GraphReading, lv: int, col_map, col_scale, dtype: str):
    """Components of a level whose head is a general quadratic form (a truncated level), exactly.

    Per component, the head's Σ M a² + L·s + c is collected as −½ fᵀPf + gᵀf + c0 over the IR
    features f of the level below (ReLU pairs folded).  The kept directions are the component's
    explicit neurons (Abs / paired ReLU rows), λ_i = 1/(v_iᵀPv_i); the rest of P must be (I − VᵀV)/σ²,
    1/σ² = (tr P − Σ 1/λ_i)/(d − r).  μ = P⁻¹g, and the logit's constant c0 + ½ μᵀg gives the weight.
    Returns (comps, consts, feats, fscale) like the pattern path.
    """
    layer = raw.layers[lv]
    M, L, c = raw.heads[lv]
    M, L, c = _dense(M), _dense(L), np.asarray(c, float)
    W, b = layer.W, layer.b
    acts = list(layer.activations)
    explicit = raw.explicit[lv]
    relus = [i for i, a in enumerate(acts) if a == "relu"]
    partner = {}
    for i, j in mirrored_pairs(W, b, relus):
        partner[i], partner[j] = j, i
    m_src = W.shape[1]
    tol = _QUAD_TOL[dtype]
    comps, consts, feats, fscale = [], [], [], []
    for k in range(M.shape[0]):
        used = np.flatnonzero(M[k])
        rows, coefs, kept = [], [], []
        for i in used:
            if acts[i] == "relu":
                j = partner.get(i)
                if j is None or M[k, j] == 0 or abs(M[k, j] - M[k, i]) > 1e-9 * abs(M[k, i]) + 1e-300:
                    raise UnsupportedModelError(
                        f"level {lv}, component {k}: a squared ReLU neuron without its mirrored partner at the same "
                        "coefficient (not a Gaussian)")
                if j < i:
                    continue  # the pair counts once, as z²
            rows.append(i)
            coefs.append(M[k, i])
            if explicit[i]:
                kept.append(i)
        R, s_, bb = W[rows], np.array(coefs), b[rows]
        A = (R.T * s_) @ R
        g = 2.0 * R.T @ (s_ * bb) + L[k]
        c0 = float(c[k] + np.sum(s_ * bb * bb))
        A, g = _fold(A, g, col_map, col_scale, m_src, dtype, lv)
        P = -2.0 * (A + A.T) / 2.0
        d = P.shape[0]
        if not kept:
            raise UnsupportedModelError(f"level {lv}, component {k}: its head uses no Abs/ReLU neuron of the level")
        # the kept rows over the IR features of the level below
        U = W[kept]
        if col_map is not None:
            U = np.stack([U[:, idx[0]] for idx in col_map], axis=1) * np.asarray(col_scale, float)
        nrm = np.linalg.norm(U, axis=1)
        V = U / nrm[:, None]
        err = float(np.max(np.abs(V @ V.T - np.eye(V.shape[0]))))
        if err > _ORTHO_TOL[dtype]:
            raise UnsupportedModelError(
                f"level {lv}, component {k}: neuron directions are not orthogonal (max |VVt - I| = {err:.1e})")
        if err > 1e-12:  # float32 rows: the nearest orthonormal rows
            u_, _, vh = np.linalg.svd(V, full_matrices=False)
            V = u_ @ vh
        try:
            mean = np.linalg.solve(P, g)
        except np.linalg.LinAlgError:
            raise UnsupportedModelError(f"level {lv}, component {k}: the head's quadratic form is singular") from None
        prec = np.einsum("ij,jk,ik->i", V, P, V)
        if np.any(prec <= 0):
            raise UnsupportedModelError(f"level {lv}, component {k}: the head's quadratic form is not a Gaussian's")
        lam = 1.0 / prec
        r = V.shape[0]
        scale_p = float(np.max(np.abs(P)))
        if r < d:
            inv_s2 = (float(np.trace(P)) - float(np.sum(prec))) / (d - r)
            if inv_s2 <= 0:
                raise UnsupportedModelError(f"level {lv}, component {k}: the residual variance is not positive")
            model_p = (V.T * prec) @ V + (np.eye(d) - V.T @ V) * inv_s2
            comp = (mean, V, lam, 1.0 / inv_s2)
        else:
            model_p = (V.T * prec) @ V
            comp = (mean, V, lam)
        misfit = float(np.max(np.abs(P - model_p)))
        if misfit > tol * scale_p:
            raise UnsupportedModelError(
                f"level {lv}, component {k}: the head's quadratic form is not {r} principal directions plus an "
                f"isotropic residual (misfit {misfit / scale_p:.1e})")
        # each kept neuron passes through μ (b = −w·μ), so its activation is the IR neuron times a scale
        Wk, bk = U, b[kept]
        miss = np.abs(Wk @ mean + bk)
        if np.any(miss > 1e3 * tol * (nrm * max(1.0, float(np.max(np.abs(mean)))) + np.abs(bk))):
            raise UnsupportedModelError(f"level {lv}, component {k}: a neuron's hyperplane misses the component mean")
        comps.append(comp)
        consts.append(c0 + 0.5 * float(mean @ g))
        for i, n_i, l_i in zip(kept, nrm, lam):
            feats.append([i] if acts[i] == "abs" else [i, partner[i]])
            fscale.append(float(n_i * np.sqrt(l_i)))  # graph activation = IR activation × ‖w‖·λ^½
    return comps, np.array(consts), feats, np.array(fscale)


def _mixture(comps, consts, level: int):
    """The IR Mixture of one level's components (mean, V, λ[, σ²]) and head constants (None: uniform weights)."""
    from scipy.special import logsumexp

    d = comps[0][0].size
    res = [c[3] if len(c) > 3 else None for c in comps]
    comps = [c[:3] for c in comps]
    norms = np.array([linalg.log_normalizer(lam, d, r) for (_, _, lam), r in zip(comps, res)])
    if consts is None:
        w = np.full(len(comps), 1.0 / len(comps))
        lc = np.zeros(len(comps))
    else:
        ell = np.asarray(consts, float) - norms
        lse = float(logsumexp(ell))
        w = np.exp(ell - lse)
        w = w / w.sum()
        lc = np.full(len(comps), lse if abs(lse) > 1e-12 else 0.0)
    components = [Component(mean=mu, eigenvectors=V, eigenvalues=lam, weight=float(w[k]), log_constant=float(lc[k]),
                            residual_variance=res[k])
                  for k, (mu, V, lam) in enumerate(comps)]
    ct = "full"
    if any(r is not None for r in res):
        # truncated: tied when every component has the same rows, eigenvalues and σ², else full
        # (the IR's diag/spherical need identity eigenvectors at full rank)
        if len(comps) > 1 and all(
                r is not None and V.shape == comps[0][1].shape and np.allclose(V, comps[0][1], rtol=0, atol=1e-9)
                and np.allclose(lam, comps[0][2], rtol=1e-9, atol=0) and abs(r - res[0]) <= 1e-9 * res[0]
                for (_, V, lam), r in zip(comps, res)):
            components = [c.model_copy(update={"eigenvectors": comps[0][1], "eigenvalues": comps[0][2],
                                               "residual_variance": res[0]}) for c in components]
            ct = "tied"
        comps = []
    eye = bool(comps) and all(np.array_equal(V, np.eye(d)) for _, V, _ in comps)
    if eye:
        ct = "spherical" if all(np.ptp(lam) <= 1e-9 * lam.max() for _, _, lam in comps) else "diag"
        if ct == "spherical":
            components = [c.model_copy(update={"eigenvalues": np.full(d, float(np.mean(c.eigenvalues)))})
                          for c in components]
    elif len(comps) > 1 and all(np.allclose(V, comps[0][1], rtol=0, atol=1e-9) and
                                np.allclose(lam, comps[0][2], rtol=1e-9, atol=0) for _, V, lam in comps):
        ct = "tied"
        components = [c.model_copy(update={"eigenvectors": comps[0][1], "eigenvalues": comps[0][2]}) for c in components]
    return Mixture(n_features=d, covariance_type=ct, components=components,
                   provenance=Provenance(source=f"gmmnet.formats.onnx.deep:onnx level {level}",
                                         extra={"weights": "from the level's head" if consts is not None
                                                else "uniform (not in the network)"}))


def is_truncated_mixture(reading: GraphReading) -> bool:
    """True for a one-level graph whose head mixes Abs/ReLU neurons with squared affine terms (or
    coefficients of both signs): a rank-truncated mixture's K·r kept neurons plus its residual ‖x − μ‖²/σ²."""
    return len(reading.layers) == 1 and _needs_quadratic(reading, 0)


def is_deep(model_or_path) -> bool:
    """True when the graph has more than one neuron level under a mixture head (a hierarchy)."""
    reading = model_or_path if isinstance(model_or_path, GraphReading) else read_graph(model_or_path)
    return bool(reading.heads) and max(reading.heads) > 0


def log_likelihood(doc, x) -> np.ndarray:
    """log p of rows x (the network's input) under a Mixture or Hierarchy, its input_transform applied.

    A hierarchy's is the top level's log-density at the features the lower levels give (their Abs
    distances), as :class:`gmmnet.hierarchy.HierarchicalGaussianMixture` scores.
    """
    top, x = readback.top_level(doc, x)
    return linalg.log_likelihood(top, x)


def from_onnx(model_or_path, *, data=None, check: bool = True):
    """Read a deep Abs / paired-ReLU network back as a :class:`~gmmnet.ir.Hierarchy`, level by level.

    The graph is read by pattern (:func:`gmmnet.formats.onnx.walk.read_graph`).  The top level's
    grouping and constants come from its mixture head.  A lower level's come from its own head
    when the graph has one (gmmnet writes it for ``level{i}_responsibilities``); otherwise its
    neurons are grouped as gmmnet lays them out (consecutive, mutually orthogonal directions)
    and its component weights, which the network does not use, are set uniform (noted in the
    report).  ReLU pairs are found with :func:`gmmnet.recover.mirrored_pairs`; the next level's
    columns for the two neurons of a pair must be equal (that is how the pairing is absorbed).

    Rank-truncated levels (any level, Abs or paired ReLU, with its head in the graph) are read from
    the head as it is: its quadratic form over the level below's features must be the kept
    directions (the component's own Abs / ReLU rows) plus an isotropic residual; they come back
    with rank r and ``residual_variance`` σ², exactly (``tied`` when all components share rows,
    eigenvalues and σ²).  A truncated lower level without its head raises
    :class:`~gmmnet.errors.UnsupportedModelError` (σ² is nowhere else in the graph).

    A one-level network goes to :func:`gmmnet.recover.from_network` and comes back as a
    :class:`~gmmnet.ir.Mixture`; a one-level truncated one is read here and comes back as the
    truncated Mixture.  The first level is read over z = A x + c where the graph is a folded
    preprocessing (:func:`gmmnet.formats.onnx.walk.input_space`); the result then carries that
    ``input_transform``.  The result is the IR: build an estimator with
    ``HierarchicalGaussianMixture.from_ir`` where one is wanted.

    Parameters
    ----------
    model_or_path : onnx.ModelProto, path, bytes, a :class:`~gmmnet.formats.onnx.walk.GraphReading`, or a :class:`gmmnet.recover.NetworkLayers`
    data : array (n, n_features), optional
        Rows of the network's input: their mean log-likelihood goes to the report.
    check : bool
        Compare the result with the graph on probe points (:mod:`gmmnet.formats.onnx.readback`).

    Returns
    -------
    (Hierarchy or Mixture, report dict)
    """
    if isinstance(model_or_path, NetworkLayers):
        return from_reading(None, net=model_or_path, data=data)
    reading = input_space(read_graph(model_or_path))
    doc, report = from_reading(reading, data=data)
    if check:
        report["readback"] = readback.verify(reading, doc)
    return doc, report


def from_reading(raw: GraphReading | None, *, net: NetworkLayers | None = None, data=None,
                 source: str = "onnx") -> tuple[Mixture | Hierarchy, dict]:
    """:func:`from_onnx` on a graph already read (``raw``), or on a bare :class:`NetworkLayers` (``net``)."""
    if raw is not None:
        net = raw.net
    top = max(raw.heads) if raw is not None and raw.heads else None
    top_quad = top is not None and _needs_quadratic(raw, top)  # a truncated top level: read its head as it is
    if not top_quad:
        if net is None:
            raise raw.error
        if len(net.layers) == 1:
            return from_network(net, data=data, source=source)
        if net.groups is None or net.head is None:
            raise UnsupportedModelError(
                f"the graph has {len(net.layers)} neuron levels but no mixture head on the top level")
        layers = list(net.layers)
    else:
        layers = list(raw.layers[: top + 1])
    dtype = raw.dtype if raw is not None else net.dtype
    lower_heads = dict(raw.heads if raw is not None else (getattr(net, "level_heads", {}) or {}))
    lower_heads.pop(top, None)
    notes = list(raw.notes if raw is not None else net.notes)
    n_lv = len(layers)
    levels = []
    col_map = None  # for each IR feature of the level below: its graph neuron indices
    col_scale = None
    for lv, layer in enumerate(layers):
        if raw is not None and lv in raw.heads and (lv == top and top_quad or lv != top and _needs_quadratic(raw, lv)):
            comps, consts, col_map, col_scale = _quadratic_level(raw, lv, col_map, col_scale, dtype)
            levels.append(_mixture(comps, consts, lv))
            if any(len(cm) > 3 for cm in comps):
                notes.append(f"level {lv}: rank-truncated; read from its head as kept directions + residual variance")
            continue
        W, b = layer.W.copy(), layer.b.copy()
        # the rows over IR features of the level below (the ReLU pairing is undone here)
        if col_map is not None:
            Wf = np.zeros((W.shape[0], len(col_map)))
            used = np.zeros(W.shape[1], bool)
            for f, idx in enumerate(col_map):
                cols = W[:, idx]
                ref = cols[:, 0]
                if np.max(np.abs(cols - ref[:, None])) > 1e-9 * max(1.0, float(np.max(np.abs(ref)))):
                    raise UnsupportedModelError(
                        f"level {lv}: the columns of a ReLU pair of level {lv - 1} differ: the pairing is not absorbed")
                Wf[:, f] = ref * col_scale[f]
                used[idx] = True
            if np.any(W[:, ~used]):
                raise UnsupportedModelError(f"level {lv}: uses activations of level {lv - 1} that belong to no component")
            W = Wf
        acts = list(layer.activations)
        if lv == n_lv - 1:
            groups, consts, scale = net.groups, net.head, np.ones(W.shape[0])
        elif lv in lower_heads:
            M, L, c = lower_heads[lv]
            groups, scale = _groups_from_logits(M, L, lv)
            consts = c
            scale_n = np.zeros(W.shape[0])
            for k, gr in enumerate(groups):
                scale_n[gr] = scale[k, gr]
            scale = scale_n
        else:
            groups, consts, scale = None, None, np.ones(W.shape[0])
        W = W * scale[:, None]
        b = b * scale
        relus = [i for i, a in enumerate(acts) if a == "relu"]
        partner = {}
        for i, j in mirrored_pairs(W, b, relus):
            partner[i], partner[j] = j, i
        single = [i for i in relus if i not in partner]
        if single:
            raise UnsupportedModelError(f"level {lv}: {len(single)} ReLU neurons have no mirrored partner")
        if groups is None:
            firsts = [i for i in range(W.shape[0]) if acts[i] == "abs" or i < partner[i]]
            gr_f = _greedy_groups(W[firsts], _ORTHO_TOL[dtype] * 10)
            groups = [[firsts[i] for i in gr] for gr in gr_f]
            notes.append(f"level {lv}: no head in the graph; neurons grouped by gmmnet's layout, weights set uniform")
        comps, feats, fscale = [], [], []
        for k, gr in enumerate(groups):
            rows = [i for i in gr if acts[i] == "abs" or i < partner[i]]
            comp = _component(W[rows], b[rows], dtype, lv, k)
            if lv == n_lv - 1 and all(layer.nodes[i] == "(quadratic form)" for i in rows if i < len(layer.nodes)):
                comp = _retruncate(comp, dtype)  # the reader re-expressed a truncated head as full-rank eigen-neurons
            comps.append(comp)
            for i in rows:
                feats.append([i] if acts[i] == "abs" else [i, partner[i]])
                fscale.append(1.0 / scale[i] if scale[i] else 0.0)
        levels.append(_mixture(comps, consts, lv))
        col_map, col_scale = feats, np.array(fscale)
    report = {"n_levels": n_lv, "dtype": dtype, "notes": notes,
              "neurons": ([int(np.sum(e)) for e in raw.explicit[:n_lv]] if raw is not None  # not the residual's
                          else [layer.n_neurons for layer in layers]),
              "lower_heads": sorted(int(k) for k in lower_heads),
              "reader": {"n_levels": n_lv, "head": "log_joint", "input_dtype": dtype, "notes": list(notes)}}
    transform = raw.input_transform if raw is not None else net.input_transform
    if n_lv == 1:  # a one-level truncated network: the Mixture itself
        doc = levels[0].model_copy(update={"input_transform": transform, "provenance": Provenance(
            source="gmmnet.formats.onnx.read_deep:onnx", versions=library_versions(),
            extra=levels[0].provenance.extra)})
    else:
        doc = Hierarchy(levels=levels, input_transform=transform, provenance=Provenance(
            source="gmmnet.formats.onnx.read_deep:onnx", versions=library_versions()))
    if data is not None:
        report["mean_log_likelihood"] = float(np.mean(log_likelihood(doc, data)))
    return doc, report
