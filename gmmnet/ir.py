"""The intermediate representation (IR): every conversion passes through these models.

A :class:`Component` is one Gaussian stored the way the network uses it: its mean,
the principal directions of its covariance as orthonormal rows, and the variances
along them (eigenvalues).  A :class:`Mixture` is a weighted set of components over
``n_features`` inputs; a :class:`Hierarchy` is a stack of mixtures, each over the
previous level's Abs features.

Arrays are stored losslessly: ``{"dtype": "<f8", "shape": [...], "base64": ...}``
holds the little-endian IEEE-754 bytes, so float64 round-trips bit for bit.
"""

from __future__ import annotations

import base64
import math
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

SCHEMA_VERSION = "1.1"
#: Versions this code reads: 1.0 lacks input transforms and stores diag/spherical directions as
#: identity matrices (normalized to null on reading).
READABLE_VERSIONS = ("1.0", "1.1")

#: Largest allowed |V Vᵀ − I| entry for eigenvector rows.
ORTHONORMAL_TOL = 1e-6
#: Largest allowed |Σ weights − 1|.
WEIGHT_SUM_TOL = 1e-6

CovarianceType = Literal["full", "tied", "diag", "spherical"]


# ---------------------------------------------------------------------------
# Lossless float64 arrays


def _to_array(value: Any) -> np.ndarray:
    if isinstance(value, dict):
        try:
            dtype, shape, data = value["dtype"], value["shape"], value["base64"]
        except KeyError as exc:
            raise ValueError(f"array object needs dtype, shape and base64 (missing {exc})") from None
        if dtype != "<f8":
            raise ValueError(f"array dtype must be '<f8', got {dtype!r}")
        if not isinstance(data, str):
            raise ValueError("array base64 must be a string")
        try:
            raw = base64.b64decode(data.encode("ascii"), validate=True)
        except Exception:
            raise ValueError("array base64 is not valid base64") from None
        # bool is an int subclass and float('1.5') would truncate: only true integers are shapes
        if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
            raise ValueError(f"array shape must be a list of integers, got {shape!r:.60}")
        shape = tuple(shape)
        if len(shape) > 32:
            raise ValueError(f"array shape has {len(shape)} dimensions (at most 32)")
        if any(s < 0 for s in shape):
            raise ValueError(f"array shape {list(shape)} has a negative size")
        if len(raw) != 8 * math.prod(shape):
            raise ValueError(f"array of shape {shape} needs {8 * math.prod(shape)} bytes, got {len(raw)}")
        return np.frombuffer(raw, dtype="<f8").reshape(shape).astype(np.float64)
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("expected an array of numbers") from None
    return arr


def _from_array(arr: np.ndarray) -> dict:
    arr = np.ascontiguousarray(arr, dtype="<f8")
    return {
        "dtype": "<f8",
        "shape": list(arr.shape),
        "base64": base64.b64encode(arr.tobytes()).decode("ascii"),
    }


_ARRAY_SCHEMA = {
    "type": "object",
    "description": "float64 array: little-endian IEEE-754 bytes, base64-encoded, C order.",
    "properties": {
        "dtype": {"const": "<f8"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "base64": {"type": "string"},
    },
    "required": ["dtype", "shape", "base64"],
}

Array = Annotated[
    np.ndarray,
    BeforeValidator(_to_array),
    PlainSerializer(_from_array, when_used="json"),
    WithJsonSchema(_ARRAY_SCHEMA),
]


def _finite(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values")


# ---------------------------------------------------------------------------
# Models


class _Base(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=False)


class Component(_Base):
    """One Gaussian: N(mean, Vᵀ diag(eigenvalues) V) with V = eigenvectors (rows).

    Its neurons are w_i = eigenvalues[i]^-1/2 · eigenvectors[i], b_i = −w_iᵀ mean.
    ``log_constant`` is added to log(weight) + log N(x) for sources whose
    per-component term is not a normalized Gaussian (e.g. BayesianGaussianMixture).
    When fewer than n_features directions are kept (rank truncation),
    ``residual_variance`` is the isotropic variance of the discarded subspace.

    An axis-aligned component (diag/spherical) stores no directions (``null`` in JSON): its
    directions are the coordinate axes in order, and no d×d identity is ever stored.
    :attr:`eigenvectors` builds one on demand; code that may meet large d checks
    :attr:`axis_aligned` first.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=False,
                              populate_by_name=True, serialize_by_alias=True)

    mean: Array = Field(description="Mean, shape (n_features,).")
    stored_eigenvectors: Array | None = Field(
        default=None, alias="eigenvectors",
        description="Principal directions as orthonormal rows, shape (r, n_features); null for an "
                    "axis-aligned component (the coordinate axes, r = n_features).",
    )
    eigenvalues: Array = Field(description="Variance along each direction, shape (r,), all > 0.")
    weight: float = Field(ge=0.0, le=1.0, description="Mixture weight.")
    log_constant: float = Field(default=0.0, description="Exact extra log-term of this component.")
    residual_variance: float | None = Field(
        default=None, gt=0.0, description="Isotropic variance of the discarded directions when r < n_features."
    )

    @model_validator(mode="after")
    def _check(self) -> "Component":
        m, v, lam = self.mean, self.stored_eigenvectors, self.eigenvalues
        if m.ndim != 1 or m.size == 0:
            raise ValueError(f"mean must be a non-empty vector, got shape {m.shape}")
        d = m.size
        if v is None:
            if lam.shape != (d,):
                raise ValueError(f"eigenvalues must have shape ({d},) for an axis-aligned component, got {lam.shape}")
            if self.residual_variance is not None:
                raise ValueError("an axis-aligned component keeps every direction: residual_variance must be null")
        else:
            if v.ndim != 2 or v.shape[1] != d or not 1 <= v.shape[0] <= d:
                raise ValueError(f"eigenvectors must have shape (r, {d}) with 1 <= r <= {d}, got {v.shape}")
            if lam.shape != (v.shape[0],):
                raise ValueError(f"eigenvalues must have shape ({v.shape[0]},), got {lam.shape}")
        for name, arr in (("mean", m), ("eigenvectors", v), ("eigenvalues", lam)):
            if arr is not None:
                _finite(name, arr)
        if not math.isfinite(self.log_constant):
            raise ValueError("log_constant must be finite")
        if np.any(lam <= 0):
            raise ValueError(f"eigenvalues must be > 0 (min {lam.min():.3g}): the covariance is singular")
        if v is not None:
            gram_err = np.max(np.abs(v @ v.T - np.eye(v.shape[0])))
            if gram_err > ORTHONORMAL_TOL:
                raise ValueError(f"eigenvectors are not orthonormal rows (max |VVᵀ−I| = {gram_err:.3g} > {ORTHONORMAL_TOL})")
            if v.shape[0] < d and self.residual_variance is None:
                raise ValueError("residual_variance is required when fewer than n_features eigenvectors are kept")
        return self

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> "Component":
        # "eigenvectors" is the field's public name; without this an update to it would be dropped
        if update and "eigenvectors" in update:
            update = dict(update)
            update["stored_eigenvectors"] = update.pop("eigenvectors")
        return super().model_copy(update=update, deep=deep)

    @property
    def axis_aligned(self) -> bool:
        """True when the directions are the coordinate axes (nothing stored)."""
        return self.stored_eigenvectors is None

    @property
    def eigenvectors(self) -> np.ndarray:
        """The directions as dense rows, shape (r, n_features); an identity is built for an
        axis-aligned component (d² numbers: check :attr:`axis_aligned` where d may be large)."""
        if self.stored_eigenvectors is None:
            return np.eye(self.mean.size)
        return self.stored_eigenvectors

    @property
    def n_features(self) -> int:
        return int(self.mean.size)

    @property
    def rank(self) -> int:
        return int(self.eigenvalues.size)


def _is_identity(v: np.ndarray) -> bool:
    """V is the d×d identity (checked without building one)."""
    return v.ndim == 2 and v.shape[0] == v.shape[1] and np.count_nonzero(v) == v.shape[0] and bool(np.all(np.diagonal(v) == 1.0))


class TransformStep(_Base):
    """One preprocessing step a transform was composed from (for provenance and `inspect`)."""

    name: str = Field(description="The step's name in its pipeline, e.g. 'standardscaler'.")
    cls: str = Field(description="Its class, e.g. 'sklearn.preprocessing.StandardScaler'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Its JSON-representable parameters.")


class InputTransform(_Base):
    """The affine preprocessing a mixture lives behind: z = A x + c (A is k×d_in).

    The mixture (its n_features = k) is over z; the graph's input is x.  Composed from a
    scikit-learn Pipeline's affine steps (scalers, PCA, TruncatedSVD); see docs/converting.md.
    """

    matrix: Array = Field(description="A, shape (n_components_out k, n_inputs d_in).")
    offset: Array = Field(description="c, shape (k,).")
    steps: list[TransformStep] = Field(default_factory=list, description="The steps A and c were composed from.")

    @model_validator(mode="after")
    def _check(self) -> "InputTransform":
        a, c = self.matrix, self.offset
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"matrix must be a non-empty 2-D array (k, n_inputs), got shape {a.shape}")
        if c.shape != (a.shape[0],):
            raise ValueError(f"offset must have shape ({a.shape[0]},), got {c.shape}")
        _finite("matrix", a)
        _finite("offset", c)
        return self

    @property
    def n_inputs(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.matrix.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """z = x Aᵀ + c for rows x (float64)."""
        return np.asarray(x, dtype=np.float64) @ self.matrix.T + self.offset


def _check_version(version: str) -> None:
    if version not in READABLE_VERSIONS:
        raise ValueError(f"schema_version {version!r} is not one this gmmnet reads ({', '.join(READABLE_VERSIONS)})")


def _check_transform(t: InputTransform | None, n_features: int, where: str) -> None:
    if t is not None and t.n_outputs != n_features:
        raise ValueError(f"input_transform.matrix has {t.n_outputs} rows, expected {n_features} ({where})")


class Provenance(_Base):
    """Where a mixture came from."""

    source: str = Field(description="Source class or format, e.g. 'sklearn.mixture.GaussianMixture'.")
    versions: dict[str, str] = Field(default_factory=dict, description="Library versions at conversion.")
    extra: dict[str, str] = Field(default_factory=dict, description="Free-form notes (e.g. recovery settings).")


class Mixture(_Base):
    """A Gaussian mixture in the IR: log p(x) = logsumexp_k(log w_k + log N_k(x) + c_k)."""

    schema_version: str = Field(default=SCHEMA_VERSION)
    kind: Literal["mixture"] = "mixture"
    n_features: int = Field(ge=1)
    covariance_type: CovarianceType = Field(
        default="full",
        description="Structure shared by all components; diag/spherical are axis-aligned, tied share one covariance.",
    )
    components: list[Component] = Field(min_length=1)
    input_transform: InputTransform | None = Field(
        default=None, description="z = A x + c: the affine preprocessing the mixture lives behind (null: none)."
    )
    provenance: Provenance = Field(default_factory=lambda: Provenance(source="unknown"))
    diagnostics: dict[str, Any] | None = Field(
        default=None, description="Recovery diagnostics (set when the mixture was recovered from a trained network)."
    )

    @model_validator(mode="after")
    def _check(self) -> "Mixture":
        _check_version(self.schema_version)
        d = self.n_features
        _check_transform(self.input_transform, d, "the mixture's n_features")
        for k, c in enumerate(self.components):
            if c.n_features != d:
                raise ValueError(f"components[{k}].mean has {c.n_features} features, expected n_features={d}")
        total = sum(c.weight for c in self.components)
        if abs(total - 1.0) > WEIGHT_SUM_TOL:
            raise ValueError(f"component weights sum to {total!r}, expected 1 (tolerance {WEIGHT_SUM_TOL})")
        ct = self.covariance_type
        if ct in ("diag", "spherical"):
            for k, c in enumerate(self.components):
                if not c.axis_aligned:
                    if c.rank != d or not _is_identity(c.stored_eigenvectors):
                        raise ValueError(f"components[{k}].eigenvectors must be the identity (or null) for covariance_type={ct!r}")
                    c.stored_eigenvectors = None  # schema 1.0 stored the identity: keep none
                if ct == "spherical" and np.ptp(c.eigenvalues) != 0:
                    raise ValueError(f"components[{k}].eigenvalues must be equal for covariance_type='spherical'")
        if ct == "tied":
            c0 = self.components[0]
            for k, c in enumerate(self.components[1:], start=1):
                same = (c.axis_aligned and c0.axis_aligned) or (
                    not c.axis_aligned and not c0.axis_aligned
                    and np.array_equal(c.stored_eigenvectors, c0.stored_eigenvectors))
                if not (same and np.array_equal(c.eigenvalues, c0.eigenvalues)):
                    raise ValueError(f"components[{k}] differs from components[0] in covariance for covariance_type='tied'")
        return self

    # numpy views -----------------------------------------------------------
    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def weights(self) -> np.ndarray:
        return np.array([c.weight for c in self.components])

    @property
    def means(self) -> np.ndarray:
        return np.stack([c.mean for c in self.components])

    @property
    def log_constants(self) -> np.ndarray:
        return np.array([c.log_constant for c in self.components])

    def to_json(self, **kw: Any) -> str:
        return self.model_dump_json(**kw)


class Hierarchy(_Base):
    """A stack of mixtures: level 0 over the inputs, level ℓ+1 over the Abs features of level ℓ."""

    schema_version: str = Field(default=SCHEMA_VERSION)
    kind: Literal["hierarchy"] = "hierarchy"
    levels: list[Mixture] = Field(min_length=1)
    input_transform: InputTransform | None = Field(
        default=None, description="z = A x + c in front of level 0 (null: none); levels carry none of their own."
    )
    provenance: Provenance = Field(default_factory=lambda: Provenance(source="unknown"))

    @model_validator(mode="after")
    def _check(self) -> "Hierarchy":
        _check_version(self.schema_version)
        _check_transform(self.input_transform, self.levels[0].n_features, "levels[0].n_features")
        if any(m.input_transform is not None for m in self.levels):
            raise ValueError("a hierarchy's levels carry no input_transform of their own (set it on the hierarchy)")
        for i in range(1, len(self.levels)):
            prev = self.levels[i - 1]
            n_prev = sum(c.rank for c in prev.components)
            if self.levels[i].n_features != n_prev:
                raise ValueError(
                    f"levels[{i}].n_features is {self.levels[i].n_features}, "
                    f"expected {n_prev} (the neurons of levels[{i - 1}])"
                )
        return self

    def to_json(self, **kw: Any) -> str:
        return self.model_dump_json(**kw)


Document = Annotated[Union[Mixture, Hierarchy], Field(discriminator="kind")]
_DOCUMENT = TypeAdapter(Document)


def from_json(text: str | bytes) -> Mixture | Hierarchy:
    """Parse and validate an IR document (raises pydantic.ValidationError)."""
    return _DOCUMENT.validate_json(text)


def json_schema() -> dict:
    """The JSON Schema of an IR document (written to schemas/gmmnet-ir.schema.json)."""
    schema = _DOCUMENT.json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"gmmnet IR {SCHEMA_VERSION}"
    return schema


def format_validation_error(exc: ValidationError) -> str:
    """One line naming the first failing field, e.g. ``components.2.eigenvalues: ...``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("mixture", "hierarchy"))
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc or 'document'}: {msg}{more}"
