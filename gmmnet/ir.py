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
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from .errors import InvalidModelError
from .limits import serial_blas

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
# Errors: an invalid model reaches API callers as a GmmnetError


class IRValidationError(InvalidModelError, ValidationError):
    """An invalid IR model or document.

    A :class:`gmmnet.errors.InvalidModelError` (CLI exit code 7) that is also pydantic's
    ``ValidationError`` (and so a ``ValueError``): callers that catch either keep working, and
    ``errors()`` lists every failing field.  ``str()`` is one line naming the first one, e.g.
    ``components.2.eigenvalues: eigenvalues must be > 0 (min -1): the covariance is singular``.
    """

    def __str__(self) -> str:
        return format_validation_error(self)


def _as_ir_error(exc: ValidationError) -> IRValidationError:
    if isinstance(exc, IRValidationError):
        return exc
    return IRValidationError.from_exception_data(exc.title, exc.errors(include_url=False))


# ---------------------------------------------------------------------------
# Models


class _Base(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=False)

    # Every way in raises IRValidationError (a GmmnetError), not pydantic's bare ValidationError.
    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _as_ir_error(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, **kw: Any):
        try:
            return super().model_validate(obj, **kw)
        except ValidationError as exc:
            raise _as_ir_error(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kw: Any):
        try:
            return super().model_validate_json(json_data, **kw)
        except ValidationError as exc:
            raise _as_ir_error(exc) from None


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
    # set once the checks below pass: a mixture built from validated components does not repeat
    # them (pydantic re-runs "after" validators on model instances); model_copy with new arrays clears it
    _checked: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _check(self) -> "Component":
        if self.__pydantic_private__ and self.__pydantic_private__.get("_checked"):
            return self
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
            if v.shape[0] < d and self.residual_variance is None:
                raise ValueError("residual_variance is required when fewer than n_features eigenvectors are kept")
            gram_err = _orthonormality_error(v)
            if gram_err > ORTHONORMAL_TOL:
                raise ValueError(f"eigenvectors are not orthonormal rows (max |VVᵀ−I| = {gram_err:.3g} > {ORTHONORMAL_TOL})")
        self._checked = True
        return self

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> "Component":
        # "eigenvectors" is the field's public name; without this an update to it would be dropped
        if update and "eigenvectors" in update:
            update = dict(update)
            update["stored_eigenvectors"] = update.pop("eigenvectors")
        out = super().model_copy(update=update, deep=deep)
        if update and set(update) & {"mean", "stored_eigenvectors", "eigenvalues", "log_constant", "residual_variance"}:
            out._checked = False  # unvalidated numbers: a mixture built from this copy checks them
        return out

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


def _orthonormality_error(v: np.ndarray) -> float:
    """max |V Vᵀ − I| (one symmetric product, single-threaded: K of them run in a loop)."""
    with serial_blas():
        gram = v @ v.T
    gram[np.diag_indices_from(gram)] -= 1.0
    return float(np.max(np.abs(gram)))


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
    A diagonal A (scalers only) is stored as its diagonal, ``scale`` (then k = d_in), so that a
    scaler in front of a wide diag mixture never costs d² numbers; otherwise ``matrix`` holds A.
    """

    matrix: Array | None = Field(default=None, description="A, shape (k, n_inputs); null when A is diagonal (see scale).")
    scale: Array | None = Field(default=None, description="diag(A), shape (k,), when A is diagonal (matrix null).")
    offset: Array = Field(description="c, shape (k,).")
    steps: list[TransformStep] = Field(default_factory=list, description="The steps A and c were composed from.")

    @model_validator(mode="after")
    def _check(self) -> "InputTransform":
        a, s, c = self.matrix, self.scale, self.offset
        if (a is None) == (s is None):
            raise ValueError("give exactly one of matrix (A) and scale (a diagonal A)")
        if a is not None:
            if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
                raise ValueError(f"matrix must be a non-empty 2-D array (k, n_inputs), got shape {a.shape}")
            _finite("matrix", a)
        else:
            if s.ndim != 1 or s.size < 1:
                raise ValueError(f"scale must be a non-empty vector, got shape {s.shape}")
            _finite("scale", s)
        k = a.shape[0] if a is not None else s.size
        if c.shape != (k,):
            raise ValueError(f"offset must have shape ({k},), got {c.shape}")
        _finite("offset", c)
        return self

    @property
    def diagonal(self) -> bool:
        """True when A is diagonal (stored as :attr:`scale`)."""
        return self.matrix is None

    @property
    def n_inputs(self) -> int:
        return int(self.scale.size if self.matrix is None else self.matrix.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.offset.size)

    def dense(self) -> np.ndarray:
        """A as a dense (k, n_inputs) array (k² numbers for a diagonal A: mind large k)."""
        return np.diag(self.scale) if self.matrix is None else self.matrix

    def apply(self, x: np.ndarray) -> np.ndarray:
        """z = x Aᵀ + c for rows x (float64)."""
        x = np.asarray(x, dtype=np.float64)
        if self.matrix is None:
            return x * self.scale + self.offset
        return x @ self.matrix.T + self.offset


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
        total = math.fsum(c.weight for c in self.components)
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
            v0 = c0.stored_eigenvectors
            for k, c in enumerate(self.components[1:], start=1):
                v = c.stored_eigenvectors
                same = (v is None and v0 is None) or (
                    v is not None and v0 is not None and (v is v0 or np.array_equal(v, v0)))
                if not (same and np.array_equal(c.eigenvalues, c0.eigenvalues)):
                    raise ValueError(f"components[{k}] differs from components[0] in covariance for covariance_type='tied'")
                if v is not None and v is not v0:
                    c.stored_eigenvectors = v0  # identical: share one array (checked and kept once)
        return self

    # numpy views -----------------------------------------------------------
    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def n_inputs(self) -> int:
        """Width of the model's input x: the transform's n_inputs, else n_features."""
        t = self.input_transform
        return self.n_features if t is None else t.n_inputs

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

    @property
    def n_inputs(self) -> int:
        """Width of the model's input x: the transform's n_inputs, else level 0's n_features."""
        t = self.input_transform
        return self.levels[0].n_features if t is None else t.n_inputs

    def to_json(self, **kw: Any) -> str:
        return self.model_dump_json(**kw)


Document = Annotated[Union[Mixture, Hierarchy], Field(discriminator="kind")]
_DOCUMENT = TypeAdapter(Document)


def from_json(text: str | bytes) -> Mixture | Hierarchy:
    """Parse and validate an IR document.

    Raises
    ------
    IRValidationError
        An :class:`~gmmnet.errors.InvalidModelError` (also pydantic's ``ValidationError``) whose
        message names the first failing field; ``errors()[0]["type"] == "json_invalid"`` when the
        text is not JSON at all.
    """
    try:
        return _DOCUMENT.validate_json(text)
    except ValidationError as exc:
        raise _as_ir_error(exc) from None


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
    if not loc:  # a model-level check: name the model unless it is a whole document
        title = getattr(exc, "title", "")
        loc = "document" if title in ("Mixture", "Hierarchy") or title.startswith("tagged-union") else (title.lower() or "document")
    return f"{loc}: {msg}{more}"
