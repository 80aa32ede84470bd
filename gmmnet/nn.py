"""torch building blocks for hybrid GMM / neural-network models.

A Gaussian mixture is one ``nn.Linear`` of whitening neurons (rows ``w_i = λ_i^-1/2 v_i``,
bias ``b_i = −w_iᵀμ``), an Abs (or the exact ReLU pair ``|z| = relu(z) + relu(−z)``), and a
head ``log p(x) = logsumexp_k(−½ D_k² + c_k)``.  This module gives that network as a
differentiable :class:`MixtureNetwork` (:func:`to_torch`, :func:`mixture_from_module`), a
Linear whose rows stay an explicit scaled rotation (:class:`MahalanobisLinear`, paper §4.6),
initializers that put a mixture's neurons into any ``nn.Linear`` (:func:`init_linear_from_mixture`,
:func:`init_from_data`), and the §3.4 orthogonality regularizer (:func:`orthogonality_penalty`).

torch is needed here and only here: ``import gmmnet`` never imports this module.
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("gmmnet.nn needs torch: pip install 'gmmnet[torch]'") from _exc

import numbers
from typing import NamedTuple

import numpy as np

from . import linalg
from .errors import InvalidModelError, UnsupportedModelError
from .ir import Component, Mixture, Provenance
from .limits import check_bytes
from .pipeline import InvalidDataError, InvalidParameterError
from .versions import library_versions

__all__ = [
    "Abs",
    "MahalanobisLinear",
    "MixtureNetwork",
    "MixtureOutput",
    "ShapeError",
    "init_from_data",
    "init_linear_from_mixture",
    "mixture_from_module",
    "neuron_groups",
    "orthogonality_penalty",
    "resolve_device",
    "to_torch",
]

# Note (issue 16): these choices are declared again by the ONNX exporter; import them from
# gmmnet.formats.onnx.options once its ExportOptions model lands, instead of repeating them here.
ACTIVATIONS = ("abs", "relu")
INIT_ACTIVATIONS = ("abs", "relu", "shifted_relu")
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

#: Relative tolerance under which a read-back mixture keeps a diag/spherical/tied structure.
_STRUCTURE_RTOL = 1e-9
#: Largest |V̂V̂ᵀ − I| for which MahalanobisLinear.to_component keeps its rows as the eigenvectors.
_ORTHO_TOL = 1e-10


class ShapeError(InvalidModelError, ValueError):
    """A module or array whose shape does not fit the mixture (also a ``ValueError``)."""


class MixtureOutput(NamedTuple):
    """The outputs of :class:`MixtureNetwork`, named as in gmmnet's ONNX export.

    Attributes
    ----------
    label : Tensor, int64, shape (N,)
        argmax_k of the log-joint.
    responsibilities : Tensor, shape (N, K)
        Posterior probability of each component.
    log_likelihood : Tensor, shape (N,)
        log p(x).
    distances : Tensor, shape (N, K·d)
        Abs activations ``|w_i x + b_i|``, component-major (component k, principal component i).
    mahalanobis : Tensor, shape (N, K)
        Mahalanobis distance D_k (not squared).
    """

    label: torch.Tensor
    responsibilities: torch.Tensor
    log_likelihood: torch.Tensor
    distances: torch.Tensor
    mahalanobis: torch.Tensor


# ---------------------------------------------------------------------------
# helpers


def _as_mixture(model) -> Mixture:
    if not isinstance(model, Mixture):
        if getattr(model, "kind", None) == "hierarchy":
            raise UnsupportedModelError("gmmnet.nn takes a single Mixture, not a Hierarchy")
        from .formats.sklearn import from_sklearn

        model = from_sklearn(model)
        if not isinstance(model, Mixture):
            raise UnsupportedModelError("gmmnet.nn takes a single Mixture, not a Hierarchy")
    if model.input_transform is not None:
        raise UnsupportedModelError(
            "gmmnet.nn takes a mixture without an input transform (a pipeline's affine steps); "
            "gmmnet.linalg.raw_view gives the mixture over the raw inputs when the transform is invertible")
    return model


def _check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise InvalidParameterError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _np64(t) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy().copy()


def _stacked_neurons(mixture: Mixture) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of all components' neurons, component-major, float64 (dense: Σ_k r_k × d numbers)."""
    rows = sum(c.rank for c in mixture.components)
    check_bytes(2 * 8.0 * rows * mixture.n_features, f"a dense layer of {rows} neurons over {mixture.n_features} inputs")
    ws, bs = [], []
    for c in mixture.components:
        w, b = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
        ws.append(w)
        bs.append(b)
    return np.concatenate(ws), np.concatenate(bs)


def _provenance(source: str, **extra: str) -> Provenance:
    versions = library_versions()
    versions["torch"] = torch.__version__
    return Provenance(source=source, versions=versions, extra=extra)


def resolve_device(device=None):
    """The device gmmnet.nn puts new tensors on.

    ``"auto"`` is CUDA when ``torch.cuda.is_available()``, else the CPU; ``None`` leaves the
    choice to torch (its default device, normally the CPU); anything else is passed to
    ``torch.device``.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return None if device is None else torch.device(device)


class Abs(nn.Module):
    """The elementwise absolute value as a module, for ``nn.Sequential(Linear, Abs(), ...)``.

    gmmnet's readers (:func:`gmmnet.formats.torch.from_torch`, ``gmmnet to-gmm``) recognise it
    as the Abs activation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


# ---------------------------------------------------------------------------
# MixtureNetwork


class MixtureNetwork(nn.Module):
    """A Gaussian mixture as a differentiable network: Linear → Abs (or ReLU pair) → head.

    Usually built with :func:`to_torch`.  ``linear`` holds all ``K·d`` neurons
    (``2·K·d`` rows ``[W; −W]`` for ``activation="relu"``), component-major.  The head adds
    the per-component log-terms ``c_k`` (:meth:`component_log_terms`) to ``−½ D_k²``.

    Parameters
    ----------
    n_features : int
        Input dimension d.
    n_components : int
        Number of components K; each owns d neurons (a full-rank square block).
    activation : {"abs", "relu"}
        ``"relu"`` uses the exact pair ``|z| = relu(z) + relu(−z)``.
    normalize : bool, default=True
        If True the head stays a normalized density while training: ``log_weights`` is a
        trainable parameter (normalized with log-softmax) and the log-normalizer is
        computed from the neuron blocks, ``log|det W_k| − (d/2) log 2π``.  Fine-tuning the
        negative log-likelihood is then maximum likelihood.  If False, ``log_terms`` is a
        fixed buffer holding ``c_k`` exactly as :func:`gmmnet.linalg.component_log_terms`.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Of the source mixture; :func:`mixture_from_module` keeps it while the weights still
        have that structure.
    dtype, device
        Of the parameters; ``device="auto"`` takes the GPU when torch sees one.

    Attributes
    ----------
    linear : nn.Linear
    log_weights : Tensor, shape (K,)
        log π_k (a parameter when ``normalize``, else a buffer).
    log_constants : Tensor, shape (K,)
        Buffer of the IR's extra per-component log-terms (``log_constant``).
    log_terms : Tensor, shape (K,)
        Buffer, only when ``normalize=False``.
    """

    def __init__(self, n_features: int, n_components: int, *, activation: str = "abs", normalize: bool = True,
                 covariance_type: str = "full", dtype=torch.float64, device=None):
        super().__init__()
        _check_choice("activation", activation, ACTIVATIONS)
        self.n_features = int(n_features)
        self.n_components = int(n_components)
        self.activation = activation
        self.normalize = bool(normalize)
        #: covariance type of the source mixture; mixture_from_module keeps it while the weights allow.
        self.covariance_type = _check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
        n = self.n_neurons
        fk = {"dtype": dtype, "device": resolve_device(device)}
        self.linear = nn.Linear(self.n_features, 2 * n if activation == "relu" else n, **fk)
        log_w = torch.full((self.n_components,), -float(np.log(self.n_components)), **fk)
        if self.normalize:
            self.log_weights = nn.Parameter(log_w)
        else:
            self.register_buffer("log_weights", log_w)
            self.register_buffer("log_terms", torch.zeros(self.n_components, **fk))
        self.register_buffer("log_constants", torch.zeros(self.n_components, **fk))

    @property
    def n_neurons(self) -> int:
        """K·d, the number of Abs neurons (half the Linear's rows for ``relu``)."""
        return self.n_features * self.n_components

    def extra_repr(self) -> str:
        return (f"n_features={self.n_features}, n_components={self.n_components}, "
                f"activation={self.activation!r}, normalize={self.normalize}")

    # the Gaussian view of the Linear -------------------------------------
    def neuron_weight(self) -> torch.Tensor:
        """The Abs-equivalent rows W, shape (K·d, d); for relu the average ``(W⁺ − W⁻)/2``."""
        w = self.linear.weight
        if self.activation == "relu":
            n = self.n_neurons
            return (w[:n] - w[n:]) / 2
        return w

    def neuron_bias(self) -> torch.Tensor:
        """The Abs-equivalent biases b, shape (K·d,); for relu ``(b⁺ − b⁻)/2``."""
        b = self.linear.bias
        if self.activation == "relu":
            n = self.n_neurons
            return (b[:n] - b[n:]) / 2
        return b

    def neuron_groups(self) -> list[list[int]]:
        """Row indices of the Linear per component (and per sign for relu); see :func:`neuron_groups`."""
        return neuron_groups([self.n_features] * self.n_components, self.activation)

    def component_log_terms(self) -> torch.Tensor:
        """c_k = log π_k + log-normalizer_k + log_constant_k, shape (K,)."""
        if not self.normalize:
            return self.log_terms
        d = self.n_features
        blocks = self.neuron_weight().reshape(self.n_components, d, d)
        logdet = torch.linalg.slogdet(blocks)[1]
        return torch.log_softmax(self.log_weights, dim=0) + logdet - 0.5 * d * linalg.LOG_2PI + self.log_constants

    # forward ---------------------------------------------------------------
    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The distances |W x + b|, shape (..., K·d) (ReLU pairs summed)."""
        z = self.linear(x)
        if self.activation == "abs":
            return torch.abs(z)
        r = torch.relu(z)
        n = self.n_neurons
        return r[..., :n] + r[..., n:]

    def _distances(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.activations(self._input(x))
        d2 = (a * a).reshape(*a.shape[:-1], self.n_components, self.n_features).sum(-1)
        return a, d2

    def log_joint(self, x) -> torch.Tensor:
        """−½ D_k² + c_k = log π_k + log N_k(x) + log_constant_k, shape (..., K)."""
        return -0.5 * self._distances(x)[1] + self.component_log_terms()

    def _input(self, x) -> torch.Tensor:
        w = self.linear.weight
        x = torch.as_tensor(x)
        if x.shape[-1] != self.n_features:
            raise ShapeError(f"X has {x.shape[-1]} features, the network expects {self.n_features}")
        return x.to(dtype=w.dtype, device=w.device)

    def forward(self, x) -> MixtureOutput:
        """All outputs for a batch ``x`` of shape (N, d) (any leading batch shape works)."""
        a, d2 = self._distances(x)
        lj = -0.5 * d2 + self.component_log_terms()
        ll = torch.logsumexp(lj, dim=-1)
        return MixtureOutput(
            label=torch.argmax(lj, dim=-1),
            responsibilities=torch.softmax(lj, dim=-1),
            log_likelihood=ll,
            distances=a,
            mahalanobis=torch.sqrt(d2),
        )

    def to_mixture(self) -> Mixture:
        """The IR mixture this network computes (see :func:`mixture_from_module`)."""
        return mixture_from_module(self)


def to_torch(mixture, *, activation: str = "abs", dtype=torch.float64, device=None, normalize: bool = True) -> MixtureNetwork:
    """A :class:`MixtureNetwork` computing the mixture exactly.

    Parameters
    ----------
    mixture : gmmnet.ir.Mixture or fitted sklearn GaussianMixture / BayesianGaussianMixture
        Every component must keep all d principal directions.
    activation : {"abs", "relu"}
    dtype : torch.dtype, default=torch.float64
        Everything is derived in float64 and cast once.
    device : torch.device, str or "auto", optional
        ``"auto"`` takes the GPU when torch sees one (see :func:`resolve_device`); None keeps
        torch's default device.
    normalize : bool, default=True
        See :class:`MixtureNetwork`.  Both heads give the same outputs at construction.

    Returns
    -------
    MixtureNetwork

    Raises
    ------
    UnsupportedModelError
        For rank-truncated components (``residual_variance``): their residual term is not an
        Abs neuron yet.
    """
    m = _as_mixture(mixture)
    _check_choice("activation", activation, ACTIVATIONS)
    device = resolve_device(device)
    d = m.n_features
    for k, c in enumerate(m.components):
        if c.rank != d or c.residual_variance is not None:
            raise UnsupportedModelError(
                f"component {k} keeps {c.rank} of {d} directions (rank-truncated); "
                "to_torch needs full-rank components for now"
            )
    rows = m.n_components * d * (2 if activation == "relu" else 1)  # the network's Linear is dense
    check_bytes(8.0 * rows * d * 3, f"a network of {rows} neurons over {d} inputs")
    net = MixtureNetwork(d, m.n_components, activation=activation, normalize=normalize,
                         covariance_type=m.covariance_type, dtype=dtype, device=device)
    init_linear_from_mixture(net.linear, m, activation=activation)
    with np.errstate(divide="ignore"):
        log_w = np.log(m.weights)
    fk = {"dtype": dtype, "device": device}
    with torch.no_grad():
        net.log_weights.copy_(torch.as_tensor(log_w, **fk))
        net.log_constants.copy_(torch.as_tensor(m.log_constants, **fk))
        if not normalize:
            net.log_terms.copy_(torch.as_tensor(linalg.component_log_terms(m), **fk))
    return net


# ---------------------------------------------------------------------------
# module → mixture


def _structured(comps: list[dict], d: int, covariance_type: str) -> tuple[str, list[dict]]:
    """Restore a diag/spherical/tied structure when the read-back numbers still have it."""

    def precision(c):
        return (c["eigenvectors"].T / c["eigenvalues"]) @ c["eigenvectors"]

    if covariance_type in ("diag", "spherical"):
        out = []
        for c in comps:
            p = precision(c)
            diag = np.diag(p)
            off = p - np.diag(diag)
            if np.any(np.abs(off) > _STRUCTURE_RTOL * np.sqrt(np.outer(diag, diag))):
                break
            lam = 1.0 / diag
            out.append({**c, "eigenvectors": None, "eigenvalues": lam})  # axis-aligned: no identity stored
        else:
            if covariance_type == "diag":
                return "diag", out
            if all(np.ptp(c["eigenvalues"]) <= _STRUCTURE_RTOL * c["eigenvalues"].max() for c in out):
                return "spherical", [{**c, "eigenvalues": np.full(d, c["eigenvalues"].mean())} for c in out]
            return "diag", out
    if covariance_type == "tied":
        p0 = precision(comps[0])
        if all(np.max(np.abs(precision(c) - p0)) <= _STRUCTURE_RTOL * np.max(np.abs(p0)) for c in comps[1:]):
            return "tied", [{**c, "eigenvectors": comps[0]["eigenvectors"], "eigenvalues": comps[0]["eigenvalues"]}
                            for c in comps]
    return "full", comps


def _mixture_from_blocks(w: np.ndarray, b: np.ndarray, n_components: int, log_weights: np.ndarray,
                         log_constants: np.ndarray, *, covariance_type: str, source: str,
                         fixed_log_terms: np.ndarray | None = None, diagnostics=None, **extra) -> Mixture:
    d = w.shape[1]
    if w.shape[0] != n_components * d:
        raise ShapeError(f"{w.shape[0]} neurons do not make {n_components} square blocks of {d} rows")
    comps = []
    for k in range(n_components):
        sl = slice(k * d, (k + 1) * d)
        mean, vecs, vals = linalg.gaussian_from_neurons(w[sl], b[sl])
        norms = np.linalg.norm(w[sl], axis=1)
        rows = w[sl] / norms[:, None]
        if np.max(np.abs(rows @ rows.T - np.eye(d))) <= _ORTHO_TOL:
            # already a whitening rotation: keep its rows (signs and order) so torch → IR → torch is exact
            vecs, vals = linalg._sorted_desc(rows, 1.0 / norms**2)
        comps.append({"mean": mean, "eigenvectors": vecs, "eigenvalues": vals})
    ct, comps = _structured(comps, d, covariance_type)
    lw = log_weights - np.logaddexp.reduce(log_weights)
    weights = np.exp(lw)
    weights = weights / weights.sum()
    if fixed_log_terms is not None:
        norm = np.array([linalg.log_normalizer(c["eigenvalues"], d) for c in comps])
        with np.errstate(invalid="ignore"):
            log_constants = np.where(np.isfinite(lw), fixed_log_terms - lw - norm, 0.0)
    return Mixture(
        n_features=d,
        covariance_type=ct,
        components=[Component(**c, weight=float(weights[k]), log_constant=float(log_constants[k]))
                    for k, c in enumerate(comps)],
        provenance=_provenance(source, **extra),
        diagnostics=diagnostics,
    )


def mixture_from_module(module, *, n_components: int | None = None, activation: str = "abs",
                        weights=None, delta=None) -> Mixture:
    """Read a module's neurons back into an IR mixture (the inverse of :func:`to_torch`).

    Each component's block of d neurons gives Σ⁻¹ = WᵀW and μ (the least-squares point of its
    hyperplanes) via :func:`gmmnet.linalg.gaussian_from_neurons`, so any rotation a training
    run gave the rows within a block is harmless.

    Parameters
    ----------
    module : MixtureNetwork, MahalanobisLinear or nn.Linear
        A :class:`MixtureNetwork` knows its grouping, weights and log-constants.  A
        :class:`MahalanobisLinear` is one component.  A plain ``nn.Linear`` is read as
        component-major square blocks of d rows (``[W; −W]`` for relu, ``−W`` with bias
        ``−b + δ`` for shifted_relu).
    n_components : int, optional
        Only for ``nn.Linear``; inferred from its rows when omitted.
    activation : {"abs", "relu", "shifted_relu"}
        Only for ``nn.Linear``.
    weights : array-like, optional
        Only for ``nn.Linear``: mixture weights (uniform when omitted).
    delta : float or array-like, optional
        Only for ``nn.Linear`` with ``activation="shifted_relu"``: the shift δ used at init.

    Returns
    -------
    gmmnet.ir.Mixture
        Keeps the network's diag/spherical/tied covariance type while the weights still have
        that structure (to a relative 1e-9), else ``full``.  For relu networks
        ``diagnostics["relu_pair_asymmetry"]`` is max |W⁺ + W⁻| (0 unless training untied
        the pairs; the Gaussian is read from their average).

    Raises
    ------
    InvalidModelError
        A neuron block is rank-deficient (its Gaussian is not determined).
    """
    if isinstance(module, MixtureNetwork):
        w = _np64(module.neuron_weight())
        b = _np64(module.neuron_bias())
        diagnostics = None
        if module.activation == "relu":
            n = module.n_neurons
            full_w, full_b = _np64(module.linear.weight), _np64(module.linear.bias)
            asym = max(np.max(np.abs(full_w[:n] + full_w[n:])), np.max(np.abs(full_b[:n] + full_b[n:])))
            diagnostics = {"relu_pair_asymmetry": float(asym)}
        lw = _np64(module.log_weights)
        return _mixture_from_blocks(
            w, b, module.n_components, lw, _np64(module.log_constants),
            covariance_type=module.covariance_type, source="gmmnet.nn.MixtureNetwork",
            fixed_log_terms=None if module.normalize else _np64(module.log_terms),
            diagnostics=diagnostics, activation=module.activation,
        )
    if isinstance(module, MahalanobisLinear):
        comp = module.to_component()
        return Mixture(n_features=comp.n_features, components=[comp],
                       provenance=_provenance("gmmnet.nn.MahalanobisLinear"))
    if isinstance(module, nn.Linear):
        _check_choice("activation", activation, INIT_ACTIVATIONS)
        W = _np64(module.weight)
        if module.bias is None:
            raise ShapeError("the Linear has no bias: its hyperplanes cannot be placed")
        B = _np64(module.bias)
        d = W.shape[1]
        if activation == "relu":
            n = W.shape[0] // 2
            if W.shape[0] % 2:
                raise ShapeError(f"a relu-pair Linear needs an even number of rows, got {W.shape[0]}")
            W, B = (W[:n] - W[n:]) / 2, (B[:n] - B[n:]) / 2
        elif activation == "shifted_relu":
            if delta is None:
                raise InvalidParameterError("activation='shifted_relu' needs the delta used at initialization")
            W, B = -W, -(B - np.broadcast_to(np.asarray(delta, dtype=np.float64), B.shape))
        if n_components is None:
            if W.shape[0] % d:
                raise ShapeError(f"{W.shape[0]} neurons are not square blocks of {d}; pass n_components")
            n_components = W.shape[0] // d
        if weights is None:
            lw = np.full(n_components, -np.log(n_components))
        else:
            wts = np.asarray(weights, dtype=np.float64)
            if wts.shape != (n_components,):
                raise ShapeError(f"weights must have shape ({n_components},), got {wts.shape}")
            with np.errstate(divide="ignore"):
                lw = np.log(wts / wts.sum())
        return _mixture_from_blocks(W, B, n_components, lw, np.zeros(n_components), covariance_type="full",
                                    source="torch.nn.Linear", activation=activation)
    raise UnsupportedModelError(
        f"mixture_from_module reads MixtureNetwork, MahalanobisLinear or nn.Linear, got {type(module).__name__}"
    )


# ---------------------------------------------------------------------------
# MahalanobisLinear


class MahalanobisLinear(nn.Module):
    """y = s ⊙ V̂ (x − μ): unit-norm directions, positive scales, one centre (paper §4.6).

    ``V̂`` is the row-normalized ``direction`` parameter (unconstrained), ``s = exp(log_scale)``,
    ``μ = center``.  For a Gaussian component, V̂ are its eigenvectors, s = λ^-1/2 and μ its
    mean; Abs of the output is then the component's per-direction Mahalanobis distances.  The
    product is computed in the centred form, which float32 prefers over ``W x + b``.

    Parameters
    ----------
    in_features, out_features : int
    dtype, device : optional
        ``device="auto"`` takes the GPU when torch sees one.

    Attributes
    ----------
    direction : Parameter, shape (out_features, in_features)
    log_scale : Parameter, shape (out_features,)
    center : Parameter, shape (in_features,)
    """

    def __init__(self, in_features: int, out_features: int, *, dtype=None, device=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        fk = {"dtype": dtype, "device": resolve_device(device)}
        self.direction = nn.Parameter(torch.empty(self.out_features, self.in_features, **fk))
        self.log_scale = nn.Parameter(torch.empty(self.out_features, **fk))
        self.center = nn.Parameter(torch.empty(self.in_features, **fk))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthonormal random directions, unit scales, centre at the origin."""
        nn.init.orthogonal_(self.direction)
        nn.init.zeros_(self.log_scale)
        nn.init.zeros_(self.center)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    @property
    def directions(self) -> torch.Tensor:
        """V̂: the unit-norm rows."""
        return self.direction / torch.linalg.vector_norm(self.direction, dim=1, keepdim=True)

    @property
    def scale(self) -> torch.Tensor:
        """s = exp(log_scale) > 0."""
        return torch.exp(self.log_scale)

    @property
    def weight(self) -> torch.Tensor:
        """The equivalent ``nn.Linear`` weight diag(s) V̂."""
        return self.scale[:, None] * self.directions

    @property
    def bias(self) -> torch.Tensor:
        """The equivalent ``nn.Linear`` bias −diag(s) V̂ μ."""
        return -(self.weight @ self.center)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.center) @ self.directions.T) * self.scale

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` with the same output (a copy; not tied)."""
        lin = nn.Linear(self.in_features, self.out_features, dtype=self.direction.dtype, device=self.direction.device)
        with torch.no_grad():
            lin.weight.copy_(self.weight)
            lin.bias.copy_(self.bias)
        return lin

    @classmethod
    def from_component(cls, component: Component, *, dtype=torch.float64, device=None) -> "MahalanobisLinear":
        """The neurons of one IR component: V̂ = eigenvectors, s = λ^-1/2, μ = mean.

        A rank-truncated component gives its r kept neurons (its residual variance is not
        carried; pass it back to :meth:`to_component`).
        """
        r, d = component.eigenvectors.shape
        mod = cls(d, r, dtype=dtype, device=device)
        fk = {"dtype": mod.direction.dtype, "device": mod.direction.device}
        with torch.no_grad():
            mod.direction.copy_(torch.as_tensor(component.eigenvectors, **fk))
            mod.log_scale.copy_(torch.as_tensor(-0.5 * np.log(component.eigenvalues), **fk))
            mod.center.copy_(torch.as_tensor(component.mean, **fk))
        return mod

    def to_component(self, *, weight: float = 1.0, log_constant: float = 0.0,
                     residual_variance: float | None = None) -> Component:
        """The IR component of these neurons.

        While the rows are orthonormal (to 1e-10) they are the eigenvectors as they stand
        (order and signs kept: lossless after :meth:`from_component`), with λ = s⁻² and the mean
        μ.  Otherwise the Gaussian is read from the equivalent Linear with
        :func:`gmmnet.linalg.gaussian_from_neurons` (then ``out_features`` must equal
        ``in_features``).

        Raises
        ------
        UnsupportedModelError
            Fewer rows than features and no ``residual_variance`` given, or more rows than features.
        InvalidModelError
            A non-orthonormal, rank-deficient square block.
        """
        v = _np64(self.direction)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        r, d = v.shape
        if r > d:
            raise UnsupportedModelError(f"{r} neurons over {d} features are not one Gaussian's principal directions")
        if r < d and residual_variance is None:
            raise UnsupportedModelError(
                f"{r} of {d} directions: a rank-truncated component needs residual_variance"
            )
        mean = _np64(self.center)
        if np.max(np.abs(v @ v.T - np.eye(r))) <= _ORTHO_TOL:
            lam = np.exp(-2.0 * _np64(self.log_scale))
            vecs = v
        else:
            if r < d:
                raise UnsupportedModelError("a rank-truncated block must keep orthonormal rows")
            w = np.exp(_np64(self.log_scale))[:, None] * v
            _, vecs, lam = linalg.gaussian_from_neurons(w, -(w @ mean))
        return Component(mean=mean, eigenvectors=vecs, eigenvalues=lam, weight=weight,
                         log_constant=log_constant, residual_variance=residual_variance)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, rtol: float = 1e-8) -> "MahalanobisLinear":
        """Decompose an ``nn.Linear``: s = row norms, V̂ = rows / s, μ solves W μ = −b.

        Raises
        ------
        InvalidModelError
            A zero row (no direction).
        UnsupportedModelError
            No bias, or (more rows than inputs) the hyperplanes share no common point, so the
            bias is not −Wμ for any μ (relative residual above ``rtol``).
        """
        if linear.bias is None:
            raise UnsupportedModelError("the Linear has no bias: use a bias-free model or add one")
        W, b = _np64(linear.weight), _np64(linear.bias)
        s = np.linalg.norm(W, axis=1)
        if np.any(s == 0) or not np.all(np.isfinite(W)):
            raise InvalidModelError("a row of the Linear is zero or non-finite: it has no direction")
        mu, *_ = np.linalg.lstsq(W, -b, rcond=None)
        resid = np.linalg.norm(W @ mu + b)
        if resid > rtol * max(np.linalg.norm(b), np.linalg.norm(W, 2) * np.linalg.norm(mu), 1e-300):
            raise UnsupportedModelError(
                f"the Linear's hyperplanes do not meet in one point (residual {resid:.3g}); "
                "its bias is not −Wμ for any centre μ"
            )
        w = linear.weight
        mod = cls(W.shape[1], W.shape[0], dtype=w.dtype, device=w.device)
        fk = {"dtype": w.dtype, "device": w.device}
        with torch.no_grad():
            mod.direction.copy_(torch.as_tensor(W / s[:, None], **fk))
            mod.log_scale.copy_(torch.as_tensor(np.log(s), **fk))
            mod.center.copy_(torch.as_tensor(mu, **fk))
        return mod


# ---------------------------------------------------------------------------
# initialization


def _expected_rows(mixture: Mixture, activation: str) -> int:
    n = sum(c.rank for c in mixture.components)
    return 2 * n if activation == "relu" else n


def init_linear_from_mixture(linear: nn.Linear, mixture, activation: str = "abs", delta=None) -> nn.Linear:
    """Fill an ``nn.Linear`` with the mixture's neurons (in place; returns it).

    Parameters
    ----------
    linear : nn.Linear
        ``in_features = d``; ``out_features`` = Σ_k r_k (abs, shifted_relu) or 2 Σ_k r_k (relu).
        Rank-truncated components contribute their r_k kept neurons.
    mixture : gmmnet.ir.Mixture or fitted sklearn mixture
    activation : {"abs", "relu", "shifted_relu"}
        ``abs``: rows W, bias b.  ``relu``: rows [W; −W], biases [b; −b] (exact:
        relu(z) + relu(−z) = |z|).  ``shifted_relu``: rows −W, bias −b + δ, so that
        relu(out) = relu(−(wᵀx + b) + δ) (paper eq. 10).
    delta : float or array-like of shape (Σ r_k,), required for ``shifted_relu``
        The shift δ in standard deviations.

    Raises
    ------
    ShapeError
        ``linear`` does not have the shape the mixture needs, or no bias.
    """
    m = _as_mixture(mixture)
    _check_choice("activation", activation, INIT_ACTIVATIONS)
    rows = _expected_rows(m, activation)
    if not isinstance(linear, nn.Linear):
        raise ShapeError(f"expected an nn.Linear, got {type(linear).__name__}")
    if linear.bias is None:
        raise ShapeError("the Linear needs a bias (bias=True) to hold b = −Wμ")
    if (linear.out_features, linear.in_features) != (rows, m.n_features):
        raise ShapeError(
            f"the Linear is {linear.in_features}→{linear.out_features}; this mixture with "
            f"activation={activation!r} needs {m.n_features}→{rows}"
        )
    W, b = _stacked_neurons(m)
    if activation == "relu":
        W, b = np.concatenate([W, -W]), np.concatenate([b, -b])
    elif activation == "shifted_relu":
        if delta is None:
            raise InvalidParameterError("activation='shifted_relu' needs delta (the shift in standard deviations, paper eq. 10)")
        dl = np.asarray(delta, dtype=np.float64)
        if dl.ndim > 1 or (dl.ndim == 1 and dl.shape != b.shape):
            raise ShapeError(f"delta must be a scalar or have shape {b.shape}, got {dl.shape}")
        W, b = -W, -b + dl
    fk = {"dtype": linear.weight.dtype, "device": linear.weight.device}
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(W, **fk))
        linear.bias.copy_(torch.as_tensor(b, **fk))
    return linear


def _kmeans_mixture(x: np.ndarray, n_components: int, covariance_type: str, reg_covar: float,
                    random_state) -> Mixture:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_components, n_init=1, random_state=random_state).fit(x)
    n, d = x.shape
    labels = km.labels_
    present = [k for k in range(n_components) if np.any(labels == k)]
    means = np.stack([x[labels == k].mean(axis=0) for k in present])
    counts = np.array([np.sum(labels == k) for k in present], dtype=np.float64)
    diffs = [x[labels == k] - means[j] for j, k in enumerate(present)]
    if covariance_type == "tied":
        cov = sum(df.T @ df for df in diffs) / n + reg_covar * np.eye(d)
        vecs, vals = linalg.basis_from_covariance(cov)
        bases = [(vecs, vals)] * len(present)
    elif covariance_type == "full":
        bases = [linalg.basis_from_covariance(df.T @ df / len(df) + reg_covar * np.eye(d)) for df in diffs]
    elif covariance_type == "diag":  # axis-aligned: no d×d identity
        bases = [(None, np.mean(df * df, axis=0) + reg_covar) for df in diffs]
    else:
        bases = [(None, np.full(d, np.mean(df * df) + reg_covar)) for df in diffs]
    weights = counts / counts.sum()
    comps = [Component(mean=means[j], eigenvectors=v, eigenvalues=lam, weight=float(weights[j]))
             for j, (v, lam) in enumerate(bases)]
    return Mixture(n_features=d, covariance_type=covariance_type, components=comps,
                   provenance=_provenance("gmmnet.nn.init_from_data", method="kmeans"))


def init_from_data(X, n_components: int, *, method: str = "gmm", covariance_type: str = "full",
                   rank: int | None = None, activation: str = "abs", delta=None, random_state=None,
                   reg_covar: float = 1e-6, dtype=None, device=None) -> tuple[nn.Linear, Mixture]:
    """A new ``nn.Linear`` initialized with the neurons of a mixture fitted on ``X``.

    Clusters ``X`` (``GaussianMixture`` or ``KMeans``), takes each cluster's covariance of the
    requested type, its eigen-basis (PCA per cluster), optionally keeps the top ``rank``
    directions per component, and fills the Linear with :func:`init_linear_from_mixture`.

    Parameters
    ----------
    X : array-like or Tensor of shape (n_samples, n_features)
    n_components : int
    method : {"gmm", "kmeans"}
        ``gmm`` fits ``sklearn.mixture.GaussianMixture``; ``kmeans`` fits ``KMeans`` (one
        k-means++ start) and uses the clusters' sample covariances (+ ``reg_covar``) and
        sizes as weights.
    covariance_type : {"full", "tied", "diag", "spherical"}
    rank : int, optional
        Keep the top-``rank`` principal directions per component (the rest becomes an
        isotropic residual variance in the returned mixture, see
        :func:`gmmnet.hierarchy.truncate`); the Linear has K·rank neurons.
    activation : {"abs", "relu", "shifted_relu"}
    delta : float or array-like, optional
        For ``shifted_relu``.
    random_state : int, RandomState or None
    reg_covar : float, default=1e-6
        Added to the covariance diagonals.
    dtype, device : optional
        Of the new Linear (torch's default dtype when omitted); ``device="auto"`` takes the GPU
        when torch sees one.

    Returns
    -------
    linear : nn.Linear
    mixture : gmmnet.ir.Mixture
        Its neurons are exactly the Linear's Abs view: ``|linear(x)|`` equals
        ``linalg.distances(mixture, x)`` (up to the Linear's dtype).
    """
    _check_choice("method", method, ("gmm", "kmeans"))
    _check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    _check_choice("activation", activation, INIT_ACTIVATIONS)
    if isinstance(n_components, (bool, np.bool_)) or not isinstance(n_components, numbers.Integral) or n_components < 1:
        raise InvalidParameterError(f"n_components must be an integer >= 1, got {n_components!r}")
    if torch.is_tensor(X):
        X = X.detach().cpu().to(torch.float64).numpy()
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ShapeError(f"X must be a 2-D array with at least one row, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InvalidDataError("X has non-finite values")
    if method == "gmm":
        from sklearn.mixture import GaussianMixture

        from .formats.sklearn import from_sklearn

        gm = GaussianMixture(n_components=n_components, covariance_type=covariance_type, reg_covar=reg_covar,
                             random_state=random_state).fit(x)
        m = from_sklearn(gm)
    else:
        m = _kmeans_mixture(x, n_components, covariance_type, reg_covar, random_state)
    if rank is not None:
        from .hierarchy import truncate

        m = truncate(m, rank)
    linear = nn.Linear(m.n_features, _expected_rows(m, activation), dtype=dtype, device=resolve_device(device))
    init_linear_from_mixture(linear, m, activation=activation, delta=delta)
    return linear, m


# ---------------------------------------------------------------------------
# orthogonality regularizer


def neuron_groups(ranks, activation: str = "abs") -> list[list[int]]:
    """Row indices of each component's neurons in a gmmnet-initialized Linear.

    Parameters
    ----------
    ranks : Mixture, MixtureNetwork or sequence of int
        Neurons per component.
    activation : {"abs", "relu", "shifted_relu"}
        For ``relu`` (rows ``[W; −W]``) the positive and the negative rows of a component are
        two groups (2K in all), so that each group is a rotation at initialization.

    Returns
    -------
    list of list of int
    """
    if isinstance(ranks, MixtureNetwork):
        return ranks.neuron_groups()
    if isinstance(ranks, Mixture):
        ranks = [c.rank for c in ranks.components]
    _check_choice("activation", activation, INIT_ACTIVATIONS)
    ranks = [int(r) for r in ranks]
    starts = np.concatenate([[0], np.cumsum(ranks)])
    groups = [list(range(starts[k], starts[k + 1])) for k in range(len(ranks))]
    if activation == "relu":
        n = int(starts[-1])
        groups = groups + [[n + i for i in g] for g in groups]
    return groups


def _resolve_groups(groups, n_rows: int) -> list[list[int]]:
    if isinstance(groups, numbers.Integral) and not isinstance(groups, bool):
        size = int(groups)
        if size < 1 or n_rows % size:
            raise ShapeError(f"{n_rows} rows do not split into groups of {size}")
        return [list(range(s, s + size)) for s in range(0, n_rows, size)]
    groups = list(groups)
    if groups and all(isinstance(g, numbers.Integral) and not isinstance(g, bool) for g in groups):
        sizes = [int(g) for g in groups]
        if sum(sizes) != n_rows or min(sizes) < 1:
            raise ShapeError(f"group sizes {sizes} do not add up to the {n_rows} rows")
        return neuron_groups(sizes)
    out = [[int(i) for i in g] for g in groups]
    if any(not g for g in out) or any(i < 0 or i >= n_rows for g in out for i in g):
        raise ShapeError(f"group indices must be non-empty and within [0, {n_rows})")
    return out


def orthogonality_penalty(weight, groups) -> torch.Tensor:
    """Σ_k ‖Ŵ_k Ŵ_kᵀ − I‖_F² over the row-normalized neuron blocks Ŵ_k (paper §3.4).

    Zero when every component's directions are orthogonal (as gmmnet initializes them);
    differentiable, so add ``λ · orthogonality_penalty(...)`` to a training loss to keep a
    layer readable as a Gaussian mixture.

    Parameters
    ----------
    weight : Tensor of shape (out_features, in_features), or a module with ``.weight``
    groups : int, sequence of int, or sequence of index sequences
        An int: consecutive blocks of that size.  Ints: consecutive block sizes summing to
        ``out_features``.  Index sequences: the rows of each group (see :func:`neuron_groups`).

    Returns
    -------
    Tensor
        A scalar of the weight's dtype.
    """
    if isinstance(weight, nn.Module):
        weight = weight.weight
    if weight.ndim != 2:
        raise ShapeError(f"weight must be 2-D, got shape {tuple(weight.shape)}")
    idx = _resolve_groups(groups, weight.shape[0])
    w_hat = weight / torch.linalg.vector_norm(weight, dim=1, keepdim=True)
    total = weight.new_zeros(())
    for g in idx:
        wg = w_hat[g]
        gram = wg @ wg.T
        total = total + torch.sum((gram - torch.eye(len(g), dtype=weight.dtype, device=weight.device)) ** 2)
    return total
