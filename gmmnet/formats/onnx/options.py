"""The export options: one pydantic model, every knob typed, defaulted, documented and validated once.

:class:`ExportOptions` is what :func:`gmmnet.to_onnx`, :func:`gmmnet.formats.onnx.to_onnx`,
:func:`gmmnet.formats.onnx.plan_export` and ``gmmnet to-onnx`` take.  Their keyword arguments
and the command's flags are the model's fields (tests check both against it), and the JSON
Schema in ``schemas/gmmnet-export-options.schema.json`` is written from it.

A bad value raises :class:`gmmnet.errors.UsageError` with one line that names the option.
What depends on the model as well (``layout="quadratic"`` on a full mixture, a level output a
hierarchy does not have) is checked when the export is planned.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...errors import UsageError

__all__ = [
    "ACTIVATIONS",
    "CENTERINGS",
    "COMPUTES",
    "DEFAULT_OUTPUTS",
    "DTYPES",
    "EXACT_ACTIVATIONS",
    "INTENSITIES",
    "LAYOUTS",
    "LEVEL_OUTPUT_KINDS",
    "MAX_OPSET",
    "MIN_OPSET",
    "OUTPUTS",
    "OUTPUT_NAMINGS",
    "QUADRATIC_CENTERINGS",
    "ExportOptions",
    "json_schema",
    "level_outputs",
]

Activation = Literal["abs", "relu", "shifted_relu"]
Dtype = Literal["float32", "float64"]
Output = Literal["label", "responsibilities", "log_likelihood", "distances", "mahalanobis"]
Centering = Literal["auto", "none", "global", "component"]
Compute = Literal["auto", "float32", "mixed", "float64"]
Layout = Literal["auto", "neurons", "quadratic"]
Intensity = Literal["gauss", "laplace", "triangle"]
OutputNaming = Literal["gmmnet", "skl2onnx"]

ACTIVATIONS: tuple[str, ...] = get_args(Activation)
#: The activations whose graphs are exact (``shifted_relu`` is the paper's approximate intensity network).
EXACT_ACTIVATIONS = ("abs", "relu")
DTYPES: tuple[str, ...] = get_args(Dtype)
#: Every output of a single-mixture graph (a graph has the requested ones, in the order requested).
OUTPUTS: tuple[str, ...] = get_args(Output)
DEFAULT_OUTPUTS = ("label", "responsibilities", "log_likelihood")
CENTERINGS: tuple[str, ...] = get_args(Centering)
COMPUTES: tuple[str, ...] = get_args(Compute)
LAYOUTS: tuple[str, ...] = get_args(Layout)
#: The quadratic layout subtracts one centre (or none) before its products.
QUADRATIC_CENTERINGS = ("auto", "none", "global")
INTENSITIES: tuple[str, ...] = get_args(Intensity)
OUTPUT_NAMINGS: tuple[str, ...] = get_args(OutputNaming)
#: Per-level outputs of a deep graph: ``level{i}_{kind}``.
LEVEL_OUTPUT_KINDS = ("responsibilities", "distances")
MIN_OPSET = 13
MAX_OPSET = 21
_LEVEL_OUTPUT = re.compile(r"level(\d+)_(responsibilities|distances)")


def level_outputs(n_levels: int, kinds=("responsibilities",)) -> tuple[str, ...]:
    """Names of per-level outputs, e.g. ``level_outputs(3)`` → ``("level0_responsibilities", …)``."""
    return tuple(f"level{i}_{k}" for i in range(n_levels) for k in kinds)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class ExportOptions(BaseModel):
    """How a mixture, a hierarchy or a classifier is written as an ONNX graph.

    ``ExportOptions(**kwargs)`` validates every value and raises
    :class:`gmmnet.errors.UsageError` (one line naming the option) for a bad one.
    docs/onnx-graph.md describes the graphs each option gives.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    activation: Activation = Field(
        "abs",
        description="'abs': |w.x + b|, exact; 'relu': the pair relu(z) + relu(-z) = |z| per neuron, exact; "
                    "'shifted_relu': the paper's intensity network relu(-(w.x + b) + delta), exact only where "
                    "every pre-activation is <= delta (written by the deep exporter).")
    dtype: Dtype = Field("float32", description="Element type of the input, the initializers and the float outputs.")
    opset: int = Field(17, description=f"Default-domain ONNX opset, {MIN_OPSET} to {MAX_OPSET}; ir_version is the "
                                       "smallest that supports it.",
                       json_schema_extra={"minimum": MIN_OPSET, "maximum": MAX_OPSET})
    outputs: tuple[str, ...] = Field(
        DEFAULT_OUTPUTS,
        description="Outputs, in this order: any of label, responsibilities, log_likelihood, distances, "
                    "mahalanobis, and for deep graphs level{i}_responsibilities / level{i}_distances.",
        json_schema_extra={"minItems": 1, "uniqueItems": True, "items": {"anyOf": [
            {"enum": list(OUTPUTS)}, {"type": "string", "pattern": "^" + _LEVEL_OUTPUT.pattern + "$"}]}})
    centering: Centering = Field(
        "auto",
        description="How the input is centred before the neuron product (matters in float32 arithmetic on raw "
                    "features): 'none', 'global' (the mixture's mean), 'component' (each component's mean, split "
                    "in float32 high and low parts), or 'auto' (the cheapest whose estimated error is close to "
                    "the best). diag/spherical neuron graphs are always centred per component.")
    compute: Compute = Field(
        "auto",
        description="Arithmetic inside a float32 graph, whose input and outputs stay float32: 'float32'; "
                    "'mixed' (float32 neurons, float64 head); 'float64' (the input is cast to double first: the "
                    "most accurate graph, about 1.5-2x slower); 'auto' (float32 where its predicted errors meet "
                    "the default targets, else float64). A float64 graph computes in float64.")
    layout: Layout = Field(
        "auto",
        description="'neurons': the Abs (or ReLU) network; 'quadratic' (diag/spherical mixtures, and a diagonal "
                    "input transform at most): D^2 as one expanded product about one centre (float32, or float64 "
                    "inside where float32 would cancel); 'auto': quadratic for diag/spherical mixtures with Abs "
                    "neurons and compute auto/float32 (unless predicted inaccurate), else neurons.")
    delta: float = Field(3.0, description="delta of activation='shifted_relu', in standard deviations.",
                         json_schema_extra={"exclusiveMinimum": 0})
    intensity: Intensity | None = Field(
        None, description="Turn every distances output a into exp(-a^2) ('gauss'), exp(-a) ('laplace') or "
                          "relu(intensity_c - a) ('triangle'), the paper's intensity heads (deep exporter).")
    intensity_c: float = Field(3.0, description="c of intensity='triangle'.", json_schema_extra={"exclusiveMinimum": 0})
    level_outputs: bool = Field(
        False, description="Hierarchies: also output level{i}_responsibilities for every level (they carry the "
                           "lower levels' weights, so that reading the graph back gives every level); no effect "
                           "on a single mixture.")
    output_names: OutputNaming = Field(
        "gmmnet",
        description="'gmmnet': input X, outputs named as requested; 'skl2onnx': the names and shapes skl2onnx "
                    "gives a GaussianMixture with score_samples on (label (N, 1) int64, probabilities, "
                    "score_samples (N, 1)), so that serving code written for skl2onnx runs unchanged.")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise UsageError(_one_line(exc, data)) from None

    @field_validator("opset", mode="before")
    @classmethod
    def _opset(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not MIN_OPSET <= int(value) <= MAX_OPSET:
            raise ValueError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {value!r}")
        return int(value)

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = (value,)
        try:
            value = tuple(value)
        except TypeError:
            raise ValueError(f"outputs must be a sequence of names from {', '.join(OUTPUTS)}") from None
        unknown = [o for o in value if not (isinstance(o, str) and (o in OUTPUTS or _LEVEL_OUTPUT.fullmatch(o)))]
        if unknown:
            raise ValueError(f"unknown output {unknown[0]!r}; choose from {', '.join(OUTPUTS)} "
                             "(deep graphs also level{i}_responsibilities, level{i}_distances)")
        if not value:
            raise ValueError(f"outputs must name at least one of {', '.join(OUTPUTS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"outputs has duplicates: {list(value)}")
        return value

    @field_validator("delta", "intensity_c", mode="before")
    @classmethod
    def _positive(cls, value: Any, info) -> float:
        return _positive(info.field_name, value)

    @field_validator("level_outputs", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"level_outputs must be True or False, got {value!r}")
        return bool(value)

    @model_validator(mode="after")
    def _together(self) -> "ExportOptions":
        if self.dtype == "float64" and self.compute not in ("auto", "float64"):
            raise ValueError(f"compute={self.compute!r} needs dtype='float32'; a float64 graph computes in float64")
        if self.layout == "quadratic":
            if self.compute == "mixed":
                raise ValueError("layout='quadratic' computes in one arithmetic; compute must be 'auto', 'float32' "
                                 "or 'float64', got 'mixed'")
            if self.centering not in QUADRATIC_CENTERINGS:
                raise ValueError(f"layout='quadratic' centres on one point; centering must be one of "
                                 f"{QUADRATIC_CENTERINGS}, got {self.centering!r}")
        return self

    # what the exporters ask -------------------------------------------------
    @property
    def level_output_indices(self) -> set[int]:
        """The levels named by ``level{i}_…`` outputs."""
        return {int(m.group(1)) for o in self.outputs if (m := _LEVEL_OUTPUT.fullmatch(o))}

    @property
    def needs_deep(self) -> bool:
        """Options only the deep exporter writes: shifted_relu, intensity heads, per-level outputs."""
        return self.activation == "shifted_relu" or self.intensity is not None or bool(self.level_output_indices)

    def replace(self, **changes: Any) -> "ExportOptions":
        """A copy with ``changes``, validated again."""
        return ExportOptions(**{**self.model_dump(), **changes})


def _one_line(exc: ValidationError, data: dict) -> str:
    """The first error as one line that names the option, e.g. ``activation must be one of 'abs', … got 'tanh'``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    name = loc[0] if loc else "options"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown option {name!r}; options are {', '.join(ExportOptions.model_fields)}"
    if kind in ("literal_error", "enum"):
        choices = ", ".join(repr(c) for c in _choices(name))
        return f"{name} must be one of {choices}, got {data.get(name)!r}"
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    return msg if name in msg or not loc else f"{name}: {msg}"


def _choices(name: str) -> tuple:
    ann = ExportOptions.model_fields[name].annotation
    args = get_args(ann)
    if args and get_args(args[0]):  # Optional[Literal[...]]
        return get_args(args[0]) + (None,)
    return args


#: Where the options' JSON Schema is kept (a test checks it is current).
SCHEMA_FILE = "schemas/gmmnet-export-options.schema.json"


def json_schema() -> dict:
    """The JSON Schema of :class:`ExportOptions` (kept in schemas/gmmnet-export-options.schema.json)."""
    schema = ExportOptions.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "gmmnet export options"
    return schema


def schema_text() -> str:
    """The schema file's text: ``python -c "from gmmnet.formats.onnx.options import schema_text;
    print(schema_text(), end='')" > schemas/gmmnet-export-options.schema.json`` rewrites it."""
    import json

    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
