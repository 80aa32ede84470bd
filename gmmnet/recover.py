"""Layers → Gaussian mixture: exact inversion of gmmnet-style layers, approximate recovery of trained ones.

This module works on plain arrays, never on a file format: a reader (the ONNX one is
:mod:`gmmnet.formats.onnx.read`, the torch one :mod:`gmmnet.formats.torch`) turns a network
into :class:`Layer` / :class:`NetworkLayers` and calls the functions here.

Entry points
------------
:func:`from_layers`   raw arrays ``W`` (n_neurons, n_features), ``b``, activation(s)
:func:`from_network`  a :class:`NetworkLayers` (what a reader found: levels, head, notes)

Both return ``(mixture, report)``.  The mixture's ``diagnostics`` holds the per-component
part of the report.  docs/recovery.md explains the method, every diagnostic and every
threshold below.

Exact part.  A group of Abs neurons (or mirrored ReLU pairs) whose weights have full rank
determines its Gaussian whatever rotation it learned: Σ⁻¹ = WᵀW and μ is the least-squares
point of its hyperplanes (:func:`gmmnet.linalg.gaussian_from_neurons`).  A mixture head's
constants c_k = log w_k + log-normalizer_k + log_constant_k cannot be split between the
weight and the log-constant without metadata, so the weights are exp(c_k − normalizer_k)
normalized, and the shared remainder goes to every log_constant: scores are identical.

Approximate part.  Grouping without structure (explicit groups, or clustering neuron
prototypes on data), rank-deficient groups (span from the weights, the rest from the data),
single ReLUs (a hyperplane shifted δ from the mean, paper eq. 10, δ from data), and
data diagnostics that flag components which are not a faithful Mahalanobis distance.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.special import logsumexp

from . import linalg
from .errors import DataError, InvalidModelError, UsageError
from .ir import Component, InputTransform, Mixture, Provenance
from .versions import library_versions

__all__ = ["THRESHOLDS", "Layer", "NetworkLayers", "from_layers", "from_network", "mirrored_pairs", "prototypes"]

#: Thresholds of the low-confidence flag (see docs/recovery.md).
THRESHOLDS = {
    # R² of network activations against the members' own 1-D Mahalanobis distances must reach
    # this minus the sampling allowance 12 / n_eff (an exact network on n_eff points loses ≈ 4 / n_eff)
    "faithfulness_r2_min": 0.9,
    "faithfulness_r2_sampling": 12.0,
    # |wᵀx̄ + b| / std(wᵀx) of the members: how far a hyperplane misses the members' mean,
    # at most this plus the sampling allowance 3 / sqrt(n_eff)
    "hyperplane_distance_sigma_max": 0.5,
    "hyperplane_distance_sampling": 3.0,
    # ‖cov(W x_members) − I‖₂ may exceed this base plus the sampling allowance 3·sqrt(r / n_eff)
    "whitening_error_base": 0.3,
    "whitening_error_sampling": 3.0,
    # fewer (responsibility-weighted) members than this times n_features: too few to judge
    "min_members_per_feature": 2.0,
    # |wᵀμ + b| / ‖w‖ (σ units) of an overcomplete group's hyperplanes that do not meet in one point
    "hyperplane_residual_sigma_max": 1e-3,
}

#: Relative tolerance for detecting mirrored ReLU pairs (w, b) and (−w, −b).
PAIR_TOL = 1e-6
#: Relative singular-value cut-off below which a group is rank-deficient.
RANK_RCOND = 1e-9
#: Largest |cosine| between the rows of a square block read directly as eigen-neurons (see _orthogonal_block).
ORTHO_TOL = {"float64": 1e-12, "float32": 1e-6}
#: Most numbers report["prototypes"] lists (n_neurons × n_features); larger layers get None and a note.
PROTOTYPES_MAX = 1_000_000
#: Slab half-width (in neuron units, i.e. σ) of the points that make a neuron's prototype.
PROTOTYPE_SLAB = 1.0

_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


# ---------------------------------------------------------------------------
# what a reader hands over


@dataclass
class Layer:
    """One level of neurons: rows ``W`` (float64, ``(n, n_in)``), biases ``b`` and activations.

    ``n_in`` is ``n_features`` for the first level, the previous level's neuron count after.
    ``activations[i]`` is ``"abs"`` or ``"relu"``; ``nodes[i]`` names what made neuron i (for
    an ONNX graph, the node).
    """

    W: np.ndarray
    b: np.ndarray
    activations: list[str]
    nodes: list[str] = field(default_factory=list)

    @property
    def activation(self) -> str:
        """``"abs"`` or ``"relu"`` when every neuron has it, else ``"mixed"``."""
        kinds = set(self.activations)
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def n_neurons(self) -> int:
        """Number of neurons (rows of ``W``)."""
        return int(self.W.shape[0])


@dataclass
class NetworkLayers:
    """What a reader found in a network.

    ``layers[-1]`` is the level the head (if any) scores.  When the network has a mixture head
    (``logit_k = −½ Σ_{i∈g_k} a_i² + c_k``), ``groups`` lists each component's neuron indices
    into ``layers[-1]`` and ``head`` holds the ``c_k``; the neurons were rescaled (and, for
    expanded quadratic forms, their biases completed) so that the head's coefficient is exactly
    −½.  Without a head both are None.  ``input_transform`` (z = A x + c) is set when the first
    level was read over z rather than over the network's input x (its rows are then over z).
    """

    layers: list[Layer]
    n_features: int
    groups: list[list[int]] | None = None
    head: np.ndarray | None = None
    head_kind: str | None = None  # "log_joint" | "squared_distance" | None
    dtype: str = "float32"
    input_name: str = "X"
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: heads of levels below the top, raw: level → (M, L, c) with logit_k = Σ_i M_ki a_i² + L_k·s + c_k
    #: (a hierarchy reader uses them to give lower levels back)
    level_heads: dict[int, tuple[Any, Any, np.ndarray]] = field(default_factory=dict)
    input_transform: InputTransform | None = None

    @property
    def W(self) -> np.ndarray:
        """The weights of the level the head scores (``layers[-1]``)."""
        return self.layers[-1].W

    @property
    def b(self) -> np.ndarray:
        """The biases of ``layers[-1]``."""
        return self.layers[-1].b

    @property
    def activation(self) -> str:
        """The activation of ``layers[-1]`` (see :attr:`Layer.activation`)."""
        return self.layers[-1].activation


# ---------------------------------------------------------------------------
# public API


def from_network(net: NetworkLayers, *, data=None, groups=None, n_components: int | None = None,
                 source: str = "network") -> tuple[Mixture, dict]:
    """Recover a Gaussian mixture from what a reader found (:class:`NetworkLayers`).

    The mixture is the head's level when the network has a mixture head, else the first level.

    Parameters
    ----------
    net : NetworkLayers
    data : array (n, n_features), optional
        Points the network was meant for (see :func:`from_layers`).  With ``net.input_transform``
        they are rows of the network's input x; the recovery sees z = A x + c.
    groups : int or list of index lists, optional
        Neuron grouping into components; overrides the head's grouping (its constants are then
        ignored).  Indices count the neurons of the level as the reader found them.
    n_components : int, optional
        Number of components for automatic grouping on data.
    source : str
        Where the layers came from, for the provenance (e.g. ``"onnx:model.onnx"``).

    Returns
    -------
    (Mixture, report dict)
        The mixture carries ``net.input_transform``; ``report["reader"]`` holds the reader's
        level count, head kind, dtype and notes.
    """
    # the head's level when there is a head; else the first level (the one on the input)
    layer = net.layers[-1] if net.groups is not None else net.layers[0]
    grouping = "explicit" if groups is not None else ("graph" if net.groups is not None else None)
    use_groups = groups if groups is not None else net.groups
    head = net.head if (groups is None and net.head is not None) else None
    if groups is not None and net.head is not None:
        notes = ["explicit groups override the head's grouping; head constants ignored"]
    else:
        notes = []
    t = net.input_transform if layer is net.layers[0] else None  # the first level is read over z = A x + c
    if data is not None and t is not None:
        x = np.asarray(data, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != t.n_inputs:
            raise DataError(f"data must have shape (n, {t.n_inputs}), got {x.shape}")
        data = t.apply(x)
    mixture, report = _recover(
        layer.W, layer.b, list(layer.activations), groups=use_groups, head=head, data=data,
        n_components=n_components, dtype=net.dtype, grouping=grouping, source=source,
    )
    if t is not None:
        mixture = mixture.model_copy(update={"input_transform": t})
    report["reader"] = {
        "n_levels": len(net.layers),
        "head": net.head_kind,
        "input_dtype": net.dtype,
        "notes": list(net.notes) + notes,
    }
    if len(net.layers) > 1:
        lvl = len(net.layers) - 1 if net.groups is not None else 0
        over = f"over the {layer.W.shape[1]} activations of the level below" if lvl else "over the input"
        report["notes"].append(f"the graph has {len(net.layers)} neuron levels; this mixture is level {lvl}, {over}")
    return mixture, report


def from_layers(W, b, *, activation: str | Sequence[str] = "abs", groups=None, data=None, head=None,
                n_components: int | None = None, dtype: str = "float64") -> tuple[Mixture, dict]:
    """Recover a Gaussian mixture from raw layer arrays.

    Parameters
    ----------
    W : array (n_neurons, n_features)
    b : array (n_neurons,)
    activation : "abs", "relu", or one of them per neuron
    groups : int or list of index lists, optional (see :func:`from_network`)
    data : array (n, n_features), optional
    head : array (K,), optional
        Constants c_k of a mixture head ``logit_k = −½ Σ_{i∈g_k} a_i² + c_k`` (needs groups).
    n_components : int, optional
    dtype : "float64" or "float32"
        Precision the weights were stored in (sets the tolerance of structure detection).
    """
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] == 0 or W.shape[1] == 0:
        raise InvalidModelError(f"W must be a non-empty (n_neurons, n_features) matrix, got shape {W.shape}")
    if b.shape != (W.shape[0],):
        raise InvalidModelError(f"b must have shape ({W.shape[0]},), got {b.shape}")
    acts = [activation] * W.shape[0] if isinstance(activation, str) else list(activation)
    if len(acts) != W.shape[0]:
        raise InvalidModelError(f"activation lists {len(acts)} entries for {W.shape[0]} neurons")
    if head is not None and groups is None:
        raise UsageError("head constants need groups: which neurons does each c_k belong to?")
    mixture, report = _recover(W, b, acts, groups=groups, head=None if head is None else np.asarray(head, float),
                               data=data, n_components=n_components, dtype=dtype,
                               grouping="explicit" if groups is not None else None, source="layers")
    return mixture, report


# ---------------------------------------------------------------------------
# building blocks


def mirrored_pairs(W: np.ndarray, b: np.ndarray, candidates: Sequence[int] | None = None,
                   tol: float = PAIR_TOL) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of neurons with (w_j, b_j) = −(w_i, b_i) within relative `tol`."""
    idx = np.arange(W.shape[0]) if candidates is None else np.asarray(list(candidates), dtype=int)
    if idx.size < 2:
        return []
    v = np.concatenate([W[idx], b[idx, None]], axis=1)
    norms = np.linalg.norm(v, axis=1)
    norms[norms == 0] = 1.0
    u = v / norms[:, None]
    cos = u @ u.T
    pairs, used = [], set()
    for a in range(len(idx)):
        if a in used:
            continue
        cands = np.flatnonzero(cos[a] < -1 + tol)
        for c in cands:
            if c in used or c == a:
                continue
            if np.linalg.norm(v[a] + v[c]) <= tol * max(norms[a], norms[c]):
                pairs.append((int(min(idx[a], idx[c])), int(max(idx[a], idx[c]))))
                used.update((a, c))
                break
    return sorted(pairs)


def prototypes(W: np.ndarray, b: np.ndarray, data: np.ndarray | None = None,
               weights: np.ndarray | None = None, slab: float = PROTOTYPE_SLAB) -> np.ndarray:
    """Each neuron's prototype point (paper §4.1).

    Without data: the point of its hyperplane closest to the origin, −b w/‖w‖².  With data:
    the mean of the points near its hyperplane, weighted by exp(−½ (wᵀx + b)²/slab²) times
    an optional membership weight per point and neuron (``weights``, shape (n, n_neurons)).
    """
    W = np.asarray(W, float)
    b = np.asarray(b, float)
    nrm2 = np.einsum("ij,ij->i", W, W)
    nrm2[nrm2 == 0] = 1.0
    base = -(b / nrm2)[:, None] * W
    if data is None:
        return base
    z = data @ W.T + b
    k = np.exp(-0.5 * (z / slab) ** 2)
    if weights is not None:
        k = k * weights
    tot = k.sum(axis=0)
    out = base.copy()
    ok = tot > 1e-12
    out[ok] = (k[:, ok].T @ data) / tot[ok, None]
    return out


def _parse_groups(groups, n: int) -> list[list[int]]:
    if isinstance(groups, (int, np.integer)) and not isinstance(groups, bool):
        g = int(groups)
        if g <= 0 or n % g:
            raise UsageError(f"group size {g} does not divide the {n} neurons")
        return [list(range(i, i + g)) for i in range(0, n, g)]
    try:
        out = [[int(i) for i in grp] for grp in groups]
    except TypeError:
        raise UsageError("groups must be a group size or a list of index lists") from None
    flat = [i for g in out for i in g]
    if not out or any(not g for g in out):
        raise UsageError("groups must be non-empty lists of neuron indices")
    bad = [i for i in flat if not 0 <= i < n]
    if bad:
        raise UsageError(f"group index {bad[0]} is out of range for {n} neurons")
    if len(set(flat)) != len(flat):
        raise UsageError("a neuron appears in more than one group")
    return out


def _check_data(data, d: int) -> np.ndarray | None:
    if data is None:
        return None
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != d:
        raise DataError(f"data must have shape (n, {d}), got {x.shape}")
    if x.shape[0] < 2:
        raise DataError("data needs at least 2 rows")
    if not np.all(np.isfinite(x)):
        raise DataError("data has non-finite values")
    return x


# ---------------------------------------------------------------------------
# the recovery


class _Group:
    """One component's neurons after ReLU pairing: abs rows (W, b) + single ReLU rows (U, β)."""

    def __init__(self, index: int, members: list[int], d: int):
        self.index = index
        self.members = members  # original neuron indices
        self.abs_W = np.zeros((0, d))  # one block (a component's d Abs neurons are not a Python loop)
        self.abs_b = np.zeros(0)
        self.abs_orig: list[list[int]] = []  # original neuron(s) behind each abs row
        self.relu_rows: list[tuple[np.ndarray, float]] = []
        self.relu_orig: list[int] = []
        self.n_pairs = 0
        self.delta = np.zeros(0)

    def neurons(self, delta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All rows as Abs neurons; single ReLUs shifted by δ (relu(uᵀx+β) → |uᵀx + β − δ|).

        Without single ReLUs these are the group's arrays (possibly views of the layer): read-only."""
        if not self.relu_rows:
            return self.abs_W, self.abs_b
        U = np.array([u for u, _ in self.relu_rows])
        beta = np.array([c for _, c in self.relu_rows])
        return np.concatenate([self.abs_W, U]), np.concatenate([self.abs_b, beta if delta is None else beta - delta])


#: ``report["density_check"]`` without data: the algebra may be exact, the density was not looked at.
UNCHECKED = "unchecked: no data"


def density_check(n_rows: int) -> str:
    """The report's ``density_check`` field: ``"unchecked: no data"`` or ``"checked on N rows"``.

    ``exact`` says the Gaussians reproduce the network's neurons (algebra); only data can say
    whether they describe anything (the diagnostics and the low-confidence flag).
    """
    return UNCHECKED if n_rows <= 0 else f"checked on {int(n_rows)} rows"


def _one_thread():
    """One BLAS/OpenMP thread while recovering with data.

    The products there are small (rows × features by features × neurons) and run tens of
    times; on a shared 2-core machine multi-threaded BLAS and k-means made them 5–20× slower
    (docs/recovery.md, "Speed").  threadpoolctl ships with scikit-learn.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


#: Up to this many features, a component's products (d × d) are too small for BLAS's own threads to pay.
SMALL_FEATURES = 1024


def small_products(n_components: int, d: int):
    """One BLAS thread (:func:`_one_thread`) for many components of at most :data:`SMALL_FEATURES`
    features, else a no-op: each component's products are small, and many of them on a shared
    machine made multi-threaded BLAS 3–7× slower (K = 256, d = 256, load average 2.8: the recovery
    3.0 s → 0.9 s, the read-back check 4.9 s → 0.7 s); one large component keeps the threads."""
    return _one_thread() if n_components > 1 and d <= SMALL_FEATURES else contextlib.nullcontext()


def _recover(W, b, acts, *, data, **kw):
    # with data: tens of passes of small products; without: one per component (more neurons than features)
    n, d = W.shape
    with _one_thread() if data is not None else small_products(2 if n > d else 1, d):
        return _recover_layers(W, b, acts, data=data, **kw)


def _recover_layers(W, b, acts, *, groups, head, data, n_components, dtype, grouping, source):
    b = np.asarray(b, dtype=np.float64)
    n, d = W.shape
    if not np.all(np.isfinite(W)) or not np.all(np.isfinite(b)):
        raise InvalidModelError("network weights have non-finite values")
    bad = sorted({a for a in acts if a not in ("abs", "relu")})
    if bad:
        raise InvalidModelError(f"unknown activation {bad[0]!r}: expected 'abs' or 'relu'")
    x = _check_data(data, d)
    notes: list[str] = []

    # 1. grouping
    if groups is not None:
        grp = _parse_groups(groups, n)
    elif x is not None and n > 1:
        grp = _auto_groups(W, b, acts, x, n_components)
        grouping = "data"
    elif n <= d or n_components == 1:
        grp = [list(range(n))]
        grouping = "single"
    else:
        raise UsageError(
            f"cannot tell which of the {n} neurons belong together: pass groups (a size or index lists) or data"
        )
    if head is not None and len(head) != len(grp):
        raise UsageError(f"head has {len(head)} constants for {len(grp)} groups")

    # 2. ReLU pairing inside each group; the Abs rows of a group are taken as one block
    is_relu = np.array([a == "relu" for a in acts], dtype=bool)
    gs: list[_Group] = []
    for k, members in enumerate(grp):
        g = _Group(k, members, d)
        idx = np.asarray(members, dtype=np.int64)
        relus = idx[is_relu[idx]].tolist()
        pairs = mirrored_pairs(W, b, relus)
        paired = {i for p in pairs for i in p}
        ab = idx[~is_relu[idx]]
        if ab.size and ab[-1] - ab[0] == ab.size - 1 and np.all(np.diff(ab) == 1):
            g.abs_W, g.abs_b = W[ab[0]:ab[-1] + 1], b[ab[0]:ab[-1] + 1]  # a block of the layer: a view, no copy
        else:
            g.abs_W, g.abs_b = W[ab], b[ab]
        g.abs_orig = [[i] for i in ab.tolist()]
        if pairs:
            i, j = np.array(pairs, dtype=np.int64).T
            g.abs_W = np.concatenate([g.abs_W, (W[i] - W[j]) / 2.0])
            g.abs_b = np.concatenate([g.abs_b, (b[i] - b[j]) / 2.0])
            g.abs_orig += [[int(p), int(q)] for p, q in pairs]
        for i in relus:
            if i not in paired:
                g.relu_rows.append((W[i], float(b[i])))
                g.relu_orig.append(i)
        g.n_pairs = len(pairs)
        g.delta = np.zeros(len(g.relu_rows))
        gs.append(g)

    # 3. components; with data, iterate memberships ↔ (δ, complements, weights)
    K = len(gs)
    logw = np.full(K, -np.log(K))
    resp = None
    comps = None
    if x is not None:
        # first memberships: each group's density within the span of its own neurons (single ReLUs
        # unshifted), so that rank-deficient groups do not start from the whole data's complement
        resp = _span_responsibilities(gs, x, head)
    n_iter = 1 if x is None else 20
    for _ in range(n_iter):
        comps = [_component(g, x, None if resp is None else resp[:, g.index], dtype) for g in gs]
        if x is None:
            break
        new = _responsibilities(comps, logw, head, x)
        if head is None:
            logw = np.log(np.maximum(new.mean(axis=0), 1e-300))
        if resp is not None and np.max(np.abs(new - resp)) < 1e-6:
            resp = new
            break
        resp = new
    mixture = _mixture_from(comps, logw, head, d)

    # 4. structure, provenance, diagnostics
    mixture = _detect_structure(mixture, comps, _EPS.get(dtype, _EPS["float64"]))
    if x is not None:
        resp = linalg.responsibilities(mixture, x)
    diags = [_diagnose(g, c, x, None if resp is None else resp[:, g.index], W, b, acts) for g, c in zip(gs, comps)]
    check = density_check(0 if x is None else x.shape[0])
    mixture = mixture.model_copy(update={
        "diagnostics": {"density_check": check, "components": diags, "thresholds": dict(THRESHOLDS)},
        "provenance": Provenance(
            source=f"gmmnet.recover:{source}", versions=library_versions(),
            extra={"grouping": str(grouping), "head": "yes" if head is not None else "no",
                   "data_rows": str(0 if x is None else x.shape[0])},
        ),
    })
    owner = np.full(n, -1)
    for k, members in enumerate(grp):
        owner[members] = k
    weights_pn = None if resp is None else np.where(owner[None, :] >= 0, resp[:, np.maximum(owner, 0)], 0.0)
    protos = prototypes(W, b, x, weights_pn)
    report = {
        "n_components": K,
        "n_features": d,
        "n_neurons": n,
        "grouping": grouping,
        "groups": [list(m) for m in grp],
        "head": head is not None,
        "exact": all(dg["exact"] for dg in diags),
        "density_check": check,
        "low_confidence": [dg["index"] for dg in diags if dg["low_confidence"]],
        "covariance_type": mixture.covariance_type,
        "components": diags,
        "prototypes": protos.tolist() if protos.size <= PROTOTYPES_MAX else None,
        "thresholds": dict(THRESHOLDS),
        "notes": notes,
    }
    if protos.size > PROTOTYPES_MAX:
        notes.append(f"prototypes not listed ({n} neurons × {d} features > {PROTOTYPES_MAX} numbers): "
                     "use gmmnet.recover.prototypes(W, b, data)")
    if x is not None:
        report["mean_log_likelihood"] = float(np.mean(linalg.log_likelihood(mixture, x)))
    return mixture, report


def _responsibilities(comps: list["_Comp"], logw: np.ndarray, head, x: np.ndarray) -> np.ndarray:
    """The memberships the mixture of ``comps`` gives (what linalg.responsibilities of it would), without the IR."""
    d = x.shape[1]
    if head is None:
        lw = logw
    else:  # c_k − ½‖Wμ + b‖² − normalizer_k: the weight and log-constant of _mixture_from, up to a shared constant
        lw = np.asarray(head, float) - np.array(
            [0.5 * c.residual_sq + linalg.log_normalizer(c.vals, d, c.residual) for c in comps])
    lj = linalg.fixed_direction_log_joint(
        x, [c.mean for c in comps], [c.vecs for c in comps], [c.vals for c in comps],
        [c.residual for c in comps], np.ones(len(comps))) + lw
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def _span_responsibilities(gs: list[_Group], x: np.ndarray, head) -> np.ndarray:
    score = np.empty((x.shape[0], len(gs)))
    for k, g in enumerate(gs):
        Wg, bg = g.neurons(None)
        a = x @ Wg.T + bg
        sv = np.linalg.svd(Wg, compute_uv=False)
        sv = sv[sv > RANK_RCOND * sv[0]]
        score[:, k] = -0.5 * np.sum(a * a, axis=1) + np.sum(np.log(sv)) - 0.5 * sv.size * linalg.LOG_2PI
        if head is not None:
            score[:, k] += head[k] - np.sum(np.log(sv)) + 0.5 * sv.size * linalg.LOG_2PI
    return np.exp(score - logsumexp(score, axis=1, keepdims=True))


class _Comp:
    """A recovered Gaussian plus what the diagnostics need."""

    def __init__(self, mean, vecs, vals, residual, W, b, rank, residual_sq, degenerate, source_of_complement):
        self.mean, self.vecs, self.vals, self.residual = mean, vecs, vals, residual
        self.W, self.b = W, b
        self.rank = rank
        self.residual_sq = residual_sq  # ‖Wμ + b‖²: hyperplanes that do not meet in one point
        self.degenerate = degenerate
        self.complement = source_of_complement


def _weighted_stats(x: np.ndarray, r: np.ndarray | None, cov: bool = True) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Membership-weighted mean, covariance (only when asked: it is the d×d part) and total weight."""
    r = np.ones(x.shape[0]) if r is None else r
    tot = float(r.sum())
    if tot <= 1e-12:
        return x.mean(axis=0), (np.cov(x.T, bias=True).reshape(x.shape[1], x.shape[1]) if cov else None), 0.0
    mean = (r @ x) / tot
    if not cov:
        return mean, None, tot
    diff = x - mean
    return mean, (diff * r[:, None]).T @ diff / tot, tot


def _component(g: _Group, x: np.ndarray | None, r: np.ndarray | None, dtype: str) -> _Comp:
    # single ReLUs: δ = members' mean pre-activation (the hyperplane through their mean)
    # (first pass: δ = 0, the ReLU hyperplanes as they are; they are near enough to sort the points)
    if g.relu_rows and x is not None and r is not None:
        U = np.array([u for u, _ in g.relu_rows])
        beta = np.array([c for _, c in g.relu_rows])
        mean_x, _, tot = _weighted_stats(x, r, cov=False)
        if tot > 0:
            g.delta = U @ mean_x + beta
    Wg, bg = g.neurons(g.delta if g.relu_rows else None)
    d = Wg.shape[1]
    fast = _orthogonal_block(Wg, bg, dtype)
    if fast is not None:
        mean, vecs, vals = fast
        resid = Wg @ mean + bg
        return _Comp(mean, vecs, vals, None, Wg, bg, d, float(resid @ resid), False, None)
    q, s, vh = np.linalg.svd(Wg, full_matrices=False)
    rank = linalg.neuron_rank(Wg, RANK_RCOND)  # columns equilibrated: a feature's units do not decide the rank
    if rank == 0:
        raise InvalidModelError(f"group {g.index} has only zero weight vectors")
    if rank == d:
        mean, vecs, vals = linalg.gaussian_from_neurons(Wg, bg, rcond=RANK_RCOND)
        resid = Wg @ mean + bg
        return _Comp(mean, vecs, vals, None, Wg, bg, d, float(resid @ resid), False, None)
    # rank-deficient: the span from the weights
    qr, sr, vr = q[:, :rank], s[:rank], vh[:rank]
    mean_span = -(vr.T @ ((qr.T @ bg) / sr))
    vecs, vals = linalg._sorted_desc(vr, 1.0 / sr**2)
    resid = Wg @ mean_span + bg
    if x is not None:
        # the complement (I − VᵀV) from the members, without forming d×d matrices
        mx, _, tot = _weighted_stats(x, r, cov=False)
        mean = mean_span + mx - vecs.T @ (vecs @ mx)
        diff = x - mean
        rr = np.ones(x.shape[0]) if r is None else r
        z = diff @ vecs.T
        rest = np.maximum(np.einsum("ij,ij->i", diff, diff) - np.einsum("ij,ij->i", z, z), 0.0)
        var = float(rr @ rest / max(rr.sum(), 1e-300)) / (d - rank)
        residual = max(var, 1e-12 * float(vals.max()))
        return _Comp(mean, vecs, vals, residual, Wg, bg, rank, float(resid @ resid), False, "data")
    # no data: the complement is unknown; keep it as wide as the widest known direction
    return _Comp(mean_span, vecs, vals, float(vals.max()), Wg, bg, rank, float(resid @ resid), True, "placeholder")


def _orthogonal_block(W: np.ndarray, b: np.ndarray, dtype: str):
    """(mean, eigenvector rows, eigenvalues) of a square block whose rows are already orthogonal, else None.

    gmmnet writes eigen-neurons w_i = λ_i^-½ v_i: then the Gaussian is read off the rows
    (λ_i = 1/‖w_i‖², v_i = w_i/‖w_i‖) with one d×d product instead of an SVD, which matters
    for large mixtures (K = 256, d = 256: 256 SVDs).  Rows must be orthogonal to within
    ORTHO_TOL of the graph's dtype (cosines); in float32 the rounded rows are re-orthonormalized
    by a QR step, which moves the covariance by about that cosine (≤ 1e-6 relative).
    """
    n, d = W.shape
    if n != d:
        return None
    G = W @ W.T
    nrm2 = np.diag(G).copy()
    if not np.all(nrm2 > 0):
        return None
    nrm = np.sqrt(nrm2)
    cos = G / np.outer(nrm, nrm)
    np.fill_diagonal(cos, 0.0)
    off = float(np.max(np.abs(cos))) if n > 1 else 0.0
    tol = ORTHO_TOL.get(dtype, ORTHO_TOL["float64"])
    if off > tol:
        return None
    vecs = W / nrm[:, None]
    if off > ORTHO_TOL["float64"]:
        q, r = np.linalg.qr(vecs.T)
        vecs = (q * np.sign(np.diag(r))).T
        try:
            mean = np.linalg.solve(W, -b)
        except np.linalg.LinAlgError:
            return None
    else:  # W⁻¹ = Wᵀ diag(1/‖w_i‖²) for orthogonal rows
        mean = -(W.T @ (b / nrm2))
    vecs, vals = linalg._sorted_desc(vecs, 1.0 / nrm2)
    return mean, vecs, vals


def _mixture_from(comps: list[_Comp], logw: np.ndarray, head, d: int) -> Mixture:
    norms = np.array([linalg.log_normalizer(c.vals, d, c.residual) for c in comps])
    if head is not None:
        # c_k = log w_k + normalizer_k + γ_k; hyperplanes that miss μ add −½‖Wμ+b‖² to the logit
        c = np.asarray(head, float) - 0.5 * np.array([c.residual_sq for c in comps])
        ell = c - norms
        lse = float(logsumexp(ell))
        w = np.exp(ell - lse)
        consts = np.full(len(comps), lse)
    else:
        w = np.exp(logw - logsumexp(logw))
        consts = np.zeros(len(comps))
    w = w / w.sum()
    components: list = [None] * len(comps)

    def component(k: int) -> None:
        c = comps[k]
        components[k] = Component(mean=c.mean, eigenvectors=c.vecs, eigenvalues=c.vals, weight=float(w[k]),
                                  log_constant=float(consts[k]), residual_variance=c.residual)

    with linalg.serial_blas():  # the IR's V Vᵀ checks on every core (see formats.sklearn._from_mixture)
        linalg.map_threads(component, range(len(comps)))
    return Mixture(n_features=d, covariance_type="full", components=components)


def _detect_structure(mixture: Mixture, comps: list[_Comp], eps: float) -> Mixture:
    """spherical / diag / tied when every recovered covariance shows it (tolerance 64·ε of the graph's dtype)."""
    tol = 64.0 * eps
    d = mixture.n_features
    cs = mixture.components
    if any(c.rank != d for c in cs):
        return mixture
    # one covariance at a time: a full mixture usually fails on the first (K·d³ work otherwise)
    lam = []
    diag_ok = True
    for c in cs:
        cov = linalg.covariance(c.eigenvectors, c.eigenvalues)
        sd = np.sqrt(np.diag(cov))
        off = np.abs(cov - np.diag(np.diag(cov))) / np.outer(sd, sd)
        if off.max() > tol:
            diag_ok = False
            break
        lam.append(np.diag(cov).copy())
    if diag_ok:
        sph = all(np.ptp(v) <= tol * v.max() for v in lam)
        new = []
        for c, v in zip(cs, lam):
            if sph:
                v = np.full(d, float(np.mean(v)))
            new.append(c.model_copy(update={"eigenvectors": np.eye(d), "eigenvalues": v}))
        return _rebuild(mixture, new, "spherical" if sph else "diag")
    # tied: equal spectra first (cheap), then equal precision matrices
    if len(cs) > 1 and all(np.max(np.abs(c.eigenvalues - cs[0].eigenvalues)) <= 1e3 * tol * cs[0].eigenvalues.max()
                           for c in cs[1:]):
        def prec(c):
            return (c.eigenvectors.T / c.eigenvalues) @ c.eigenvectors

        ref = prec(cs[0])
        if all(np.linalg.norm(prec(c) - ref) <= tol * np.linalg.norm(ref) * np.sqrt(d) for c in cs[1:]):
            new = [c.model_copy(update={"eigenvectors": cs[0].eigenvectors, "eigenvalues": cs[0].eigenvalues}) for c in cs]
            return _rebuild(mixture, new, "tied")
    return mixture


def _rebuild(mixture: Mixture, comps: list[Component], ct: str) -> Mixture:
    """Swap in structured components keeping every c_k (weights re-split against the new normalizers)."""
    d = mixture.n_features
    old = linalg.component_log_terms(mixture)
    norms = np.array([linalg.log_normalizer(c.eigenvalues, d) for c in comps])
    keep_consts = np.allclose(mixture.log_constants, 0.0)
    if keep_consts:
        new_comps = [c.model_copy(update={"weight": float(mixture.weights[k])}) for k, c in enumerate(comps)]
    else:
        ell = old - norms
        lse = float(logsumexp(ell))
        w = np.exp(ell - lse)
        w = w / w.sum()
        new_comps = [c.model_copy(update={"weight": float(w[k]), "log_constant": lse}) for k, c in enumerate(comps)]
    return Mixture(n_features=d, covariance_type=ct, components=new_comps)


# ---------------------------------------------------------------------------
# automatic grouping


def _abs_view(W, b, acts):
    """Neurons as Abs rows, mirrored ReLU pairs merged; returns rows, biases and original indices."""
    relus = [i for i, a in enumerate(acts) if a == "relu"]
    pairs = mirrored_pairs(W, b, relus)
    paired = {i for p in pairs for i in p}
    rows, bs, orig = [], [], []
    for i in range(W.shape[0]):
        if acts[i] == "abs" or (acts[i] == "relu" and i not in paired):
            rows.append(W[i]), bs.append(b[i]), orig.append([i])
    for i, j in pairs:
        rows.append((W[i] - W[j]) / 2), bs.append((b[i] - b[j]) / 2), orig.append([i, j])
    return np.array(rows), np.array(bs), orig


def _auto_groups(W, b, acts, x, n_components):
    """Group neurons by the data: hyperplanes of one Gaussian all pass through its mean.

    1. K = ``n_components``, else ⌊n_neurons / n_features⌋ (full-rank groups, as a GMM
       network has them).  Candidate means: k-means centres of the data.
    2. Each neuron goes to the centre closest to its hyperplane in its own units (σ for a
       whitening neuron): cost |wᵀc_k + b|.  The assignment is balanced (at most
       ⌈n/K⌉ neurons per group, solved exactly with the Hungarian algorithm).
    3. The groups' Gaussians give responsibilities; each centre moves to its members'
       mean (the membership-weighted prototype); repeat until the assignment is stable.
    Mirrored ReLU pairs move together; single ReLUs join by their own hyperplane.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    Wa, ba, orig = _abs_view(W, b, acts)
    m, d = Wa.shape
    K = int(n_components) if n_components else max(1, m // d)
    K = min(K, m)
    if K == 1:
        return [sorted(i for o in orig for i in o)]
    cap = -(-m // K)
    centres = KMeans(n_clusters=K, n_init=10, random_state=0).fit(x).cluster_centers_
    labels = None
    for _ in range(20):
        cost = np.abs(centres @ Wa.T + ba).T  # (m, K)
        rows, cols = linear_sum_assignment(np.repeat(cost, cap, axis=1))
        new = np.empty(m, dtype=int)
        new[rows] = cols // cap
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        ids = [k for k in range(K) if np.any(labels == k)]
        score = np.empty((x.shape[0], len(ids)))
        for c, k in enumerate(ids):
            sel = labels == k
            a = x @ Wa[sel].T + ba[sel]
            sv = np.linalg.svd(Wa[sel], compute_uv=False)
            score[:, c] = -0.5 * np.sum(a * a, axis=1) + np.sum(np.log(sv[sv > 0])) - 0.5 * sel.sum() * linalg.LOG_2PI
        resp = np.exp(score - logsumexp(score, axis=1, keepdims=True))
        for c, k in enumerate(ids):
            tot = resp[:, c].sum()
            if tot > 1e-9:
                centres[k] = resp[:, c] @ x / tot
    out = []
    for k in range(K):
        sel = np.flatnonzero(labels == k)
        if sel.size:
            out.append(sorted(i for j in sel for i in orig[j]))
    return out


# ---------------------------------------------------------------------------
# diagnostics


def _diagnose(g: _Group, c: _Comp, x, r, W, b, acts) -> dict[str, Any]:
    d = c.W.shape[1]
    kinds = []
    if any(len(o) == 1 for o in g.abs_orig):
        kinds.append("abs")
    if g.n_pairs:
        kinds.append("relu-pairs")
    if g.relu_rows:
        kinds.append("relu")
    sig = np.sqrt(np.maximum(c.residual_sq, 0.0) / max(c.W.shape[0], 1))
    reasons: list[str] = []
    exact = True
    if c.degenerate:
        reasons.append(f"rank {c.rank} < {d} and no data: the other {d - c.rank} directions are a placeholder")
        exact = False
    elif c.rank < d:
        exact = False
    if g.relu_rows:
        exact = False
        if x is None:
            reasons.append(f"{len(g.relu_rows)} single ReLU neuron(s) and no data: shift δ unknown, taken as 0")
    if sig > THRESHOLDS["hyperplane_residual_sigma_max"]:
        exact = False
        reasons.append(f"its hyperplanes miss a common point by {sig:.3g}σ (rms)")
    out: dict[str, Any] = {
        "index": g.index,
        "neurons": len(g.members),
        "activation": "+".join(kinds),
        "rank": c.rank,
        "exact": exact,
        "degenerate": c.degenerate,
        "hyperplane_residual_sigma": float(sig),
    }
    if g.relu_rows:
        # δ of each single ReLU: how far its hyperplane sits from the component mean, in σ along u
        U = np.array([u for u, _ in g.relu_rows])
        cov_c = linalg.covariance(c.vecs, c.vals, c.residual)
        sd_u = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", U, cov_c, U), 1e-300))
        out["relu_shift_sigma"] = [float(v) for v in g.delta / sd_u]
    if x is None:
        out.update({"members": None, "faithfulness_r2": None, "hyperplane_distance_sigma": None,
                    "whitening_error": None})
        out["low_confidence"] = bool(reasons)
        out["reasons"] = reasons
        return out
    rr = np.ones(x.shape[0]) if r is None else r
    mean, _, n_eff = _weighted_stats(x, rr, cov=False)
    out["members"] = float(n_eff)
    if n_eff < THRESHOLDS["min_members_per_feature"] * d:
        reasons.append(f"only {n_eff:.1f} members for {d} features")
    Wg, bg = c.W, c.b
    # everything in neuron coordinates (n × m), never d × d: the members' covariance C enters
    # only as W C Wᵀ, the covariance of their pre-activations
    wr = rr / n_eff if n_eff > 1e-12 else np.full(x.shape[0], 1.0 / x.shape[0])
    pre = (x - mean) @ Wg.T
    white = (pre * wr[:, None]).T @ pre
    sd = np.sqrt(np.maximum(np.diag(white), 1e-300))
    act = np.abs(pre + (Wg @ mean + bg))  # the network's activations (Abs view; single ReLUs shifted by δ)
    dist = np.abs(pre) / sd  # the members' own 1-D Mahalanobis distances along each neuron
    hyp = np.abs(Wg @ mean + bg) / sd
    wr = rr / max(rr.sum(), 1e-300)
    abar = wr @ act
    ss_res = float(np.sum(wr[:, None] * (act - dist) ** 2))
    ss_tot = float(np.sum(wr[:, None] * (act - abar) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    werr = float(np.linalg.norm(white - np.eye(white.shape[0]), 2))
    n_safe = max(n_eff, 1e-300)
    allow = THRESHOLDS["whitening_error_base"] + THRESHOLDS["whitening_error_sampling"] * np.sqrt(Wg.shape[0] / n_safe)
    r2_min = THRESHOLDS["faithfulness_r2_min"] - THRESHOLDS["faithfulness_r2_sampling"] / n_safe
    hyp_max = THRESHOLDS["hyperplane_distance_sigma_max"] + THRESHOLDS["hyperplane_distance_sampling"] / np.sqrt(n_safe)
    out.update({
        "faithfulness_r2": float(r2) if np.isfinite(r2) else None,
        "faithfulness_r2_min": float(r2_min),
        "hyperplane_distance_sigma": float(hyp.max()),
        "hyperplane_distance_max": float(hyp_max),
        "whitening_error": werr,
        "whitening_allowance": float(allow),
    })
    if not np.isfinite(r2) or r2 < r2_min:
        reasons.append(f"faithfulness R² {r2:.3g} < {r2_min:.3g}")
    if hyp.max() > hyp_max:
        reasons.append(f"a hyperplane misses the members' mean by {hyp.max():.3g}σ > {hyp_max:.3g}σ")
    if werr > allow:
        reasons.append(f"whitening error {werr:.3g} > {allow:.3g}")
    out["low_confidence"] = bool(reasons)
    out["reasons"] = reasons
    return out


# ---------------------------------------------------------------------------
# calibrated recovery: the layer's directions, the data's scales (docs/recovery.md, "Calibrated recovery")

__all__ += ["UNCHECKED", "calibrate", "density_check", "holdout_split"]

#: Fraction of the rows ``gmmnet to-gmm --calibrate`` holds out, and the seed of the split.
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0
#: Rows drawn from the calibrated mixture for the Monte Carlo KL between the two mixtures.
KL_SAMPLES = 4096


def holdout_split(n_rows: int, fraction: float = HOLDOUT_FRACTION, seed: int = HOLDOUT_SEED):
    """Row indices ``(train, held_out)``: a seeded permutation, ⌈fraction·n⌉ rows held out.

    Both parts keep at least 2 rows; ``fraction`` must lie in (0, 1).
    """
    if not (isinstance(fraction, (int, float)) and 0.0 < float(fraction) < 1.0):
        raise UsageError(f"held-out fraction must lie strictly between 0 and 1, got {fraction!r}")
    n_test = int(np.ceil(float(fraction) * n_rows))
    if n_rows - n_test < 2 or n_test < 2:
        raise DataError(f"{n_rows} rows cannot be split into training and held-out parts of at least 2 rows "
                        f"(held-out fraction {fraction:g})")
    perm = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _directions(c: Component, d: int) -> np.ndarray:
    """Dense direction rows (the identity for an axis-aligned component: only where d×d is needed anyway)."""
    return c.eigenvectors


def _normalized(mixture: Mixture) -> Mixture:
    """The same mixture with its log-constants folded into the weights: a normalized density."""
    lc = mixture.log_constants
    if np.all(lc == 0):
        return mixture
    lw = np.log(np.maximum(mixture.weights, 1e-300)) + lc
    w = np.exp(lw - logsumexp(lw))
    w = w / w.sum()
    comps = [c.model_copy(update={"weight": float(w[k]), "log_constant": 0.0}) for k, c in enumerate(mixture.components)]
    return mixture.model_copy(update={"components": comps})


def _sample_rows(mixture: Mixture, n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn from the mixture's density (component counts multinomial in the weights)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, mixture.weights)
    d = mixture.n_features
    blocks = []
    for c, m in zip(mixture.components, counts):
        if m == 0:
            continue
        v = _directions(c, d)
        x = c.mean + (rng.standard_normal((m, v.shape[0])) * np.sqrt(c.eigenvalues)) @ v
        if c.residual_variance is not None and v.shape[0] < d:
            e = rng.standard_normal((m, d)) * np.sqrt(c.residual_variance)
            x = x + e - (e @ v.T) @ v
        blocks.append(x)
    return np.concatenate(blocks)


def calibrate(mixture: Mixture, data, *, held_out=None, max_iter: int = 200, tol: float = 1e-6,
              reg_covar: float = 1e-6, kl_samples: int = KL_SAMPLES, seed: int = 0,
              residual: str = "full") -> tuple[Mixture, dict]:
    """Keep each component's principal directions, re-estimate everything else from data.

    A trained layer knows directions (its neurons' hyperplanes); the scale of each neuron is
    absorbed by the next layer, so the eigenvalues read from ‖w‖ say little.  This runs EM
    (:func:`gmmnet.linalg.fixed_direction_em`) with every component's eigenvectors V_k held
    fixed, re-estimating the variances along them, the means, the weights and, for a component
    of rank r_k < d, the d − r_k directions it lacks (``residual``).  It starts from
    ``mixture``'s memberships.

    Parameters
    ----------
    mixture : Mixture
        Typically the inverted mixture of :func:`from_layers` / ``from_onnx`` (with its
        log-constants folded into the weights, so that it is a normalized density).
    data : array (n, n_features)
        Rows to calibrate on (the training part; see :func:`holdout_split`).
    held_out : array (m, n_features), optional
        Rows to score both mixtures on; without them the held-out figures are None.
    max_iter, tol : EM stops when the mean log-likelihood per row gains less than ``tol`` nats.
    reg_covar : float > 0
        Added to every variance, like scikit-learn's ``reg_covar`` (keeps an emptied component defined).
    kl_samples : int
        Rows drawn from the calibrated mixture for the Monte Carlo KL between the mixtures (0: skip).
    seed : int
        Seed of those draws.
    residual : {"full", "isotropic"}
        How a component of rank r_k < d models the d − r_k directions its layer lacks.
        ``"full"`` (default): a free (d − r_k)×(d − r_k) covariance in the orthogonal complement
        of the layer's directions, whose eigenvectors become the component's other directions
        (the calibrated component has rank d; the layer's directions never move).
        ``"isotropic"``: one variance σ_k² (the component keeps rank r_k and a residual
        variance); fewer parameters, for components with fewer rows than missing directions.
        Full-rank components are the same either way.  docs/recovery.md §5 gives the figures
        behind the default.

    Returns
    -------
    (calibrated Mixture, report dict)
        The report (``report["calibration"]`` in the CLI; docs/recovery.md lists its fields)
        holds both mixtures' mean log-likelihood per row on ``data`` and ``held_out``, the same
        for one free full-covariance M-step from the calibrated memberships, the KL from the
        calibrated to the inverted mixture (closed form per component and Monte Carlo for the
        mixture), per component the angle each direction would move under that free step, the
        ``residual`` used and ``notes`` (a line per component whose full residual had no more
        rows than missing directions).
    """
    from .limits import check_bytes

    if getattr(mixture, "kind", "mixture") != "mixture":
        raise UsageError("calibrate takes one mixture; calibrate a hierarchy's levels one by one")
    d = mixture.n_features
    # a mixture behind an affine preprocessing z = A x + c (a Pipeline's) is calibrated on z, and keeps it
    tf = getattr(mixture, "input_transform", None)
    d_in = d if tf is None else tf.n_inputs
    x = _check_data(data, d_in)
    if x is None:
        raise UsageError("calibration needs data")
    xt = _check_data(held_out, d_in) if held_out is not None else None
    if tf is not None:
        x = tf.apply(x)
        xt = None if xt is None else tf.apply(xt)
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise UsageError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not (np.isfinite(reg_covar) and reg_covar > 0) or not (np.isfinite(tol) and tol > 0):
        raise UsageError(f"reg_covar and tol must be > 0 (got {reg_covar!r}, {tol!r})")
    if residual not in linalg.RESIDUAL_MODES:
        raise UsageError(f"residual must be one of {', '.join(linalg.RESIDUAL_MODES)}, got {residual!r}")
    K = mixture.n_components
    # the EM holds one (rows × features) difference at a time; the KL and the free step build d×d per component
    check_bytes(8.0 * (4 * x.shape[0] * d + x.shape[0] * K + 4 * d * d), "calibration", None)
    if residual == "full":  # a complement basis Q_k and its covariance C_k per component, held through the EM
        check_bytes(8.0 * (2 * K * d * d + x.shape[0] * d), "calibration with a full residual", None)
    inverted = _normalized(mixture)
    if tf is not None:
        inverted = inverted.model_copy(update={"input_transform": None})  # scored on z below
    comps = inverted.components
    dirs = [None if c.axis_aligned else c.eigenvectors for c in comps]
    with _one_thread():
        fit = linalg.fixed_direction_em(
            x, [c.mean for c in comps], dirs, [c.eigenvalues for c in comps],
            [c.residual_variance for c in comps], inverted.weights, max_iter=max_iter, tol=tol, reg=reg_covar,
            residual=residual)
        axis = mixture.covariance_type in ("diag", "spherical")
        new = []
        for k, c in enumerate(comps):
            vals, vecs, s2 = fit["variances"][k], dirs[k], fit["residuals"][k]
            if fit["complements"][k] is not None:  # full residual: the complement's eigenvectors join the layer's
                cvals, cvecs = np.linalg.eigh(s2)
                vecs = np.concatenate([vecs, cvecs.T @ fit["complements"][k]])
                vals, s2 = np.concatenate([vals, cvals]), None
            if vecs is not None and not axis:  # keep the IR's convention: eigenvalues descending, rows with them
                vecs, vals = linalg._sorted_desc(vecs, vals)
            if axis:  # diag stays diag: the axes in order
                vecs = None if c.axis_aligned else c.eigenvectors
            new.append(Component(
                mean=fit["means"][k], eigenvectors=vecs, eigenvalues=vals,
                weight=float(fit["weights"][k]), residual_variance=s2))
        calibrated = Mixture(n_features=d, covariance_type="diag" if axis else "full", components=new)
        report = _calibration_report(inverted, calibrated, fit, x, xt, [_directions(c, d) for c in comps],
                                     reg_covar, kl_samples, seed)
    report["residual"] = residual
    report["notes"] = _complement_notes(fit, x.shape[0], d, reg_covar)
    report["log_constants_folded"] = bool(np.any(mixture.log_constants != 0))
    extra = {"calibrated_from": mixture.provenance.source, "n_train": str(x.shape[0]),
             "n_held_out": str(0 if xt is None else xt.shape[0]), "iterations": str(fit["n_iter"]),
             "reg_covar": repr(float(reg_covar)), "residual": residual}
    calibrated = calibrated.model_copy(update={
        "input_transform": tf,
        "diagnostics": {"density_check": density_check(x.shape[0]), "calibration": report},
        "provenance": Provenance(source="gmmnet.recover:calibrate", versions=library_versions(), extra=extra),
    })
    return calibrated, report


def _complement_notes(fit, n: int, d: int, reg: float) -> list[str]:
    """A note per component whose full residual had no more rows (N_k) than directions to fill (d − r_k)."""
    notes = []
    for k, q in enumerate(fit["complements"]):
        n_k = float(fit["weights"][k]) * n
        if q is not None and n_k <= q.shape[0]:
            notes.append(f"component {k}: {n_k:.0f} rows for the {q.shape[0]} directions its layer lacks: the "
                         f"covariance there is singular but for reg_covar ({reg:g}); residual='isotropic' "
                         "(--residual isotropic) fits one variance instead")
    return notes


def _calibration_report(inverted, calibrated, fit, x, xt, dirs, reg, kl_samples, seed) -> dict:
    d = x.shape[1]
    resp = fit["responsibilities"]

    def ll(mix, rows):
        return None if rows is None else float(np.mean(linalg.log_likelihood(mix, rows)))

    # one free full-covariance M-step from the calibrated memberships: what the directions would do if let go
    nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    free_comps, angles = [], []
    for k in range(calibrated.n_components):
        mu = resp[:, k] @ x / nk[k]
        diff = x - mu
        cov = (diff * resp[:, k, None]).T @ diff / nk[k] + reg * np.eye(d)
        vecs, vals = linalg.basis_from_covariance(cov)
        free_comps.append(Component(mean=mu, eigenvectors=vecs, eigenvalues=vals, weight=float(nk[k] / nk.sum())))
        angles.append(linalg.direction_angles(dirs[k], cov))
    w = np.array([c.weight for c in free_comps])
    free_comps = [c.model_copy(update={"weight": float(c.weight / w.sum())}) for c in free_comps]
    free = Mixture(n_features=d, components=free_comps)

    per = []
    for k, (ci, cc) in enumerate(zip(inverted.components, calibrated.components)):
        # the calibrated variances in the inverted mixture's direction order (calibrate sorts them)
        lam_cal = fit["variances"][k]
        log_ratio = np.abs(np.log(lam_cal / ci.eigenvalues))
        cov_c = linalg.covariance(_directions(cc, d), cc.eigenvalues, cc.residual_variance)
        shift = cc.mean - ci.mean
        per.append({
            "index": k,
            "weight": {"inverted": ci.weight, "calibrated": cc.weight},
            "mean_shift_sigma": float(np.sqrt(max(shift @ np.linalg.solve(cov_c, shift), 0.0))),
            "max_abs_log_eigenvalue_ratio": float(log_ratio.max()),
            "residual_variance": {"inverted": ci.residual_variance, "calibrated": cc.residual_variance},
            "kl_calibrated_to_inverted": linalg.gaussian_kl(
                cc.mean, _directions(cc, d), cc.eigenvalues, cc.residual_variance,
                ci.mean, _directions(ci, d), ci.eigenvalues, ci.residual_variance),
            "free_step_angle_max_deg": float(angles[k].max()),
            "free_step_angle_median_deg": float(np.median(angles[k])),
            "free_step_angles_deg": [float(a) for a in angles[k]],
        })
    out = {
        "method": "EM with each component's principal directions held fixed",
        "n_train": int(x.shape[0]),
        "n_held_out": 0 if xt is None else int(xt.shape[0]),
        "iterations": int(fit["n_iter"]),
        "converged": bool(fit["converged"]),
        "reg_covar": float(reg),
        "log_likelihood": {  # mean per row, nats
            "inverted": {"train": ll(inverted, x), "held_out": ll(inverted, xt)},
            "calibrated": {"train": ll(calibrated, x), "held_out": ll(calibrated, xt)},
            "free_step": {"train": ll(free, x), "held_out": ll(free, xt)},
        },
        "kl": {"method": "closed form per component, KL(calibrated_k ‖ inverted_k); mixture: Monte Carlo",
               "components": [p["kl_calibrated_to_inverted"] for p in per]},
        "components": per,
    }
    if kl_samples:
        s = _sample_rows(calibrated, int(kl_samples), seed)
        diff = linalg.log_likelihood(calibrated, s) - linalg.log_likelihood(inverted, s)
        out["kl"]["mixture_monte_carlo"] = {"value": float(diff.mean()),
                                            "standard_error": float(diff.std(ddof=1) / np.sqrt(diff.size)),
                                            "samples": int(diff.size), "seed": int(seed)}
    return out
