"""The stated tolerances: one table that the docs quote and the tests import.

Every accuracy figure gmmnet promises lives here once.  A test checks each row at its
value; a page that states a figure quotes it from :func:`markdown_table` (or names the
row).  Where a figure cannot be met, the row changes to what is measured, and the docs
say so: never loosen a row to make a test pass.

Errors are measured against scikit-learn (or the IR's float64 reference) on the same
rows; float32 graphs against the reference evaluated on the float32-rounded input.
"relative" log-likelihood error is max |Δ| / (1 + |reference|); responsibilities are
absolute.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """One stated figure: its value and what exactly it bounds."""

    value: float
    what: str


TOL: dict[str, Tolerance] = {
    # the IR itself, in float64 numpy (linalg's reference scoring) against sklearn
    "ir_ll": Tolerance(1e-11, "IR log-likelihood vs sklearn score_samples, float64, relative (standardized data)"),
    "ir_resp": Tolerance(1e-11, "IR responsibilities vs sklearn predict_proba, float64, absolute (standardized data)"),
    # graphs gmmnet writes
    "float64_ll": Tolerance(1e-10, "float64 graph log_likelihood vs sklearn, relative (standardized data)"),
    "float64_resp": Tolerance(1e-10, "float64 graph responsibilities vs sklearn, absolute (standardized data)"),
    "float64_raw_ll": Tolerance(1e-8, "float64 graph log_likelihood vs sklearn, relative (raw or ill-conditioned data)"),
    "float32_ll": Tolerance(2e-6, "float32 graph (accurate compute) log_likelihood, relative (standardized data)"),
    "float32_resp": Tolerance(1e-6, "float32 graph (accurate compute) responsibilities, absolute (standardized data)"),
    "float32_raw_ll": Tolerance(1e-5, "float32 graph log_likelihood, relative (raw features spanning 1e-3..1e4)"),
    "float32_raw_resp": Tolerance(1e-6, "float32 graph (compute auto) responsibilities, absolute (raw features spanning "
                                        "1e-3..1e4)"),
    "float32_pure_raw_resp": Tolerance(1e-5, "float32 arithmetic (compute='float32') responsibilities, absolute (raw "
                                             "features spanning 1e-3..1e4)"),
    # a mixture behind an input transform z = A x + c (a Pipeline's scalers, PCA), folded into the first layer:
    # the graph on raw x against Pipeline.score_samples / predict_proba
    "pipeline_float32_ll": Tolerance(1e-5, "float32 graph of a mixture behind an input transform, log_likelihood, "
                                           "relative (raw features spanning 1e-3..1e4)"),
    "pipeline_float32_resp": Tolerance(1e-6, "float32 graph of a mixture behind an input transform, "
                                             "responsibilities, absolute (raw features spanning 1e-3..1e4)"),
    "pipeline_float64_ll": Tolerance(1e-9, "float64 graph of a mixture behind an input transform, log_likelihood, "
                                           "relative"),
    "pipeline_float64_resp": Tolerance(1e-9, "float64 graph of a mixture behind an input transform, "
                                             "responsibilities, absolute"),
    # reading back
    "readback_float64": Tolerance(1e-8, "mixture read back from a float64 graph: score_samples, relative"),
    "readback_float32": Tolerance(1e-4, "mixture read back from a float32 graph: score_samples, relative"),
    "to_sklearn": Tolerance(1e-9, "IR → sklearn GaussianMixture: score_samples, relative"),
}


def tol(name: str) -> float:
    """The value of row ``name`` (KeyError names the row if it does not exist)."""
    return TOL[name].value


def markdown_table() -> str:
    """The table as Markdown (docs/tolerances.md quotes it; a test keeps the two equal)."""
    rows = ["| name | value | what it bounds |", "|---|---:|---|"]
    rows += [f"| `{k}` | {v.value:g} | {v.what} |" for k, v in TOL.items()]
    return "\n".join(rows) + "\n"
