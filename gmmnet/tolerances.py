"""The stated tolerances: one table that the docs quote and the tests import.

Every accuracy figure gmmnet promises lives here once.  A test checks each row at its
value (``from gmmnet.tolerances import tol``); a page that states a figure quotes the row's
value, and docs/tolerances.md holds :func:`markdown_table` (a test keeps the page, the
quoting pages and this table in step).  Where a figure cannot be met, the row changes to
what is measured, and the docs say so: never loosen a row to make a test pass.

Errors are measured against scikit-learn (or the IR's float64 reference, gmmnet.linalg) on
the same rows; float32 graphs against the reference evaluated on the float32-rounded input.
"relative" log-likelihood error is max |Δ| / (1 + |reference|); responsibilities are
absolute; parameters (means, covariances) are relative to the largest entry of the reference.
"Standardized" data have features of unit scale; "raw" data have features of any scale
(means far from zero, condition numbers up to 1e10).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """One stated figure: its value, what exactly it bounds, and the pages that quote it."""

    value: float
    what: str
    quoted: tuple[str, ...] = ()


TOL: dict[str, Tolerance] = {
    # the IR itself, in float64 numpy (linalg's reference scoring) against sklearn
    "ir_ll": Tolerance(1e-11, "IR log-likelihood (gmmnet.linalg) vs sklearn score_samples, float64, relative"),
    "ir_resp": Tolerance(1e-11, "IR responsibilities (gmmnet.linalg) vs sklearn predict_proba, float64, absolute"),
    "ir_pipeline_ll": Tolerance(1e-10, "IR of a Pipeline (affine steps + mixture) vs Pipeline.score_samples, float64, "
                                       "relative, raw data (sklearn's own expanded diag form errs up to 2.6e-11 on raw "
                                       "breast_cancer, where the IR is within 1.2e-14 of a long-double reference)",
                                ("docs/converting.md",)),
    "ir_json": Tolerance(0.0, "IR → JSON → IR: every float64 array and number bit for bit", ("docs/ir.md",)),
    "ir_check": Tolerance(1e-6, "IR validation: eigenvector rows orthonormal (max |VVᵀ − I|) and weights summing "
                                "to 1 (|Σπ − 1|), absolute", ("docs/ir.md",)),
    "to_sklearn": Tolerance(1e-9, "IR → scikit-learn GaussianMixture (to_sklearn, to-gmm -o .pkl/.skops): "
                                  "score_samples vs the IR, relative", ("docs/converting.md",)),
    # graphs (and torch modules, pipeline steps, estimators) gmmnet writes, against sklearn or the IR
    "float64_ll": Tolerance(1e-10, "float64 graph or torch module log_likelihood, relative (standardized data)",
                            ("docs/onnx-graph.md", "docs/hierarchy.md", "docs/api.md")),
    "float64_resp": Tolerance(1e-10, "float64 graph or torch module responsibilities, absolute (standardized data)",
                              ("docs/onnx-graph.md", "docs/hierarchy.md", "docs/api.md")),
    "float64_raw_ll": Tolerance(1e-8, "float64 graph log_likelihood, relative (raw or ill-conditioned data)",
                                ("docs/onnx-graph.md",)),
    "float64_raw_resp": Tolerance(1e-8, "float64 graph responsibilities, absolute (raw or ill-conditioned data)"),
    "float32_ll": Tolerance(2e-6, "float32 graph (default compute) log_likelihood, relative (standardized data)",
                            ("docs/onnx-graph.md", "docs/hierarchy.md", "docs/performance.md")),
    "float32_resp": Tolerance(1e-6, "float32 graph responsibilities, absolute (any data): compute='float64' (the "
                                    "accurate opt-in) and deep graphs (hierarchies) with the default compute",
                              ("docs/onnx-graph.md", "docs/hierarchy.md", "docs/performance.md")),
    "default_resp": Tolerance(1e-5, "float32 graph of a single mixture, default compute and layout, "
                                    "responsibilities, absolute (any data): float32 arithmetic where predicted to "
                                    "meet this (skl2onnx's float32 graphs err 1e-6–4e-5 on the same models)",
                              ("docs/onnx-graph.md", "docs/performance.md")),
    "float32_raw_ll": Tolerance(1e-5, "float32 graph (default compute) log_likelihood, relative (raw data)",
                                ("docs/onnx-graph.md",)),
    "float32_pure_raw_resp": Tolerance(1e-5, "float32 arithmetic (compute='float32') responsibilities, absolute "
                                             "(raw data)", ("docs/onnx-graph.md",)),
    # a mixture behind an input transform z = A x + c (a Pipeline's scalers, PCA), folded into the first
    # layer: the graph on raw x against Pipeline.score_samples / predict_proba
    "pipeline_float32_ll": Tolerance(1e-5, "float32 graph (default compute) of a mixture behind an input transform, "
                                           "log_likelihood vs the Pipeline, relative (raw data)", ("docs/onnx-graph.md",)),
    "pipeline_float32_resp": Tolerance(1e-5, "float32 graph (default compute) of a mixture behind an input "
                                             "transform, responsibilities vs the Pipeline, absolute (raw data); "
                                             "float32 arithmetic where predicted within default_resp (measured "
                                             "up to 3.2e-6); compute='float64' keeps float32_resp",
                                       ("docs/onnx-graph.md",)),
    "pipeline_float64_ll": Tolerance(1e-9, "float64 graph of a mixture behind an input transform, log_likelihood vs "
                                           "the Pipeline, relative (raw data)", ("docs/onnx-graph.md",)),
    "pipeline_float64_resp": Tolerance(1e-9, "float64 graph of a mixture behind an input transform, "
                                             "responsibilities vs the Pipeline, absolute (raw data)",
                                       ("docs/onnx-graph.md",)),
    "float32_warn": Tolerance(1e-4, "float32_error_estimate above which to-onnx, inspect and to_onnx warn "
                                    "(PrecisionWarning)", ("docs/converting.md", "docs/plotting.md", "docs/cli.md")),
    "torch_float32": Tolerance(1e-5, "float32 torch module or pipeline step vs the float64 reference, relative "
                                     "(standardized data)", ("docs/api.md",)),
    "torch_params": Tolerance(1e-12, "torch blocks in float64: MahalanobisLinear ⇄ Component round trip (means, "
                                     "eigenvectors, eigenvalues) and distances vs gmmnet.linalg", ("docs/api.md",)),
    "label_tie": Tolerance(1e-6, "labels agree with the reference except where the top two log-joints tie "
                                 "within this, relative"),
    # reading back (to-gmm, from_onnx)
    "readback_float64": Tolerance(1e-8, "mixture read back from a float64 graph: means and covariances "
                                        "(relative), weights, score_samples (relative)", ("docs/recovery.md",)),
    "readback_float32": Tolerance(1e-4, "mixture read back from a float32 graph: means and covariances "
                                        "(relative), weights, score_samples (relative)", ("docs/recovery.md",)),
    "readback_exact": Tolerance(1e-9, "gmmnet's quadratic-layout graphs and deep graphs read back in float64: "
                                      "means, variances, weights, log-terms, relative",
                                ("docs/onnx-graph.md", "docs/hierarchy.md")),
    "readback_skl2onnx": Tolerance(1e-5, "skl2onnx's float32 GaussianMixture graph read back: means and "
                                         "covariances vs sklearn, relative", ("docs/recovery.md",)),
    "readback_skl2onnx_ll": Tolerance(1e-3, "skl2onnx's float32 graph read back: log-likelihood vs sklearn, "
                                            "relative (the float32 graph's own rounding)", ("docs/recovery.md",)),
    # calibrated recovery (gmmnet.recover.calibrate) on a planted mixture: the layer has the true
    # directions but wrong scales and means; 30,000 rows (sampling error, not arithmetic, sets these)
    "calibration_planted_eigenvalue": Tolerance(
        0.05, "calibrated recovery, planted mixture (30,000 rows): max |log λ̂/λ| over every eigenvalue and "
              "residual variance", ("docs/recovery.md",)),
    "calibration_planted_mean": Tolerance(
        0.05, "calibrated recovery, planted mixture (30,000 rows): mean error in σ (Mahalanobis under the true "
              "covariance)", ("docs/recovery.md",)),
    "calibration_planted_kl": Tolerance(
        0.01, "calibrated recovery with a full residual (residual='full'), planted rank-2 layer in d = 5 whose "
              "complement is not isotropic (30,000 rows): KL(true_k ‖ calibrated_k) per component, nats",
        ("docs/recovery.md",)),
}


def tol(name: str) -> float:
    """The value of row ``name`` (KeyError names the row if it does not exist)."""
    return TOL[name].value


def quote(value: float) -> str:
    """A row's value as the docs write it: ``1e-10``, ``2e-6``, ``0``."""
    if value == 0:
        return "0"
    mant, exp = f"{value:.2e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


def markdown_table() -> str:
    """The table as Markdown (docs/tolerances.md quotes it; a test keeps the two equal)."""
    rows = ["| name | value | what it bounds | quoted in |", "|---|---:|---|---|"]
    for k, v in TOL.items():
        pages = ", ".join(f"[{p.removeprefix('docs/')}]({p.removeprefix('docs/')})" for p in v.quoted) or "—"
        what = v.what.replace("|", "\\|")  # a literal bar inside a table cell
        rows.append(f"| `{k}` | {quote(v.value)} | {what} | {pages} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # the table for docs/tolerances.md
    print(markdown_table(), end="")
