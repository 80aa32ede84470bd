"""Regenerates the figures of docs/converting.md, "Pipelines": affine preprocessing + a mixture ⇄ IR.

On raw breast_cancer (30 features spanning 1e-3 to 1e3), for each pipeline below:

* ``ir``: the IR (``gmmnet.from_sklearn(pipe)``, an input transform z = A x + c plus the mixture)
  scored by gmmnet's float64 reference against ``Pipeline.score_samples``: max |Δ| / (1 + |ref|);
* ``resp``: its responsibilities against ``predict_proba``, max |Δ|;
* ``back``: ``gmmnet.pipeline.to_estimator(ir)`` (a Pipeline of AffineTransform and
  GaussianMixture) against the original pipeline on raw rows;
* ``onnx64`` / ``onnx32`` (with ``--onnx``): the ONNX graph (``gmmnet.to_onnx``, float64 and
  float32) against the pipeline (float32 on the float32-rounded input);
* ``log|det A|``: the constant between the pipeline's density (over z) and a density over the
  raw inputs, for square transforms.

Run: ``python examples/pipeline_convert.py [--onnx] [--json]`` (prints a Markdown table, or JSON).
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

import gmmnet
from gmmnet import linalg
from gmmnet.errors import GmmnetError
from gmmnet.pipeline import to_estimator


def pipelines():
    """(label, unfitted pipeline) of the worked examples."""
    return [
        ("StandardScaler → GaussianMixture(full)", make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0))),
        ("RobustScaler → GaussianMixture(diag)",
         make_pipeline(RobustScaler(), GaussianMixture(3, covariance_type="diag", random_state=0))),
        ("MinMaxScaler → BayesianGaussianMixture(tied)",
         make_pipeline(MinMaxScaler(), BayesianGaussianMixture(n_components=3, covariance_type="tied", random_state=0))),
        ("StandardScaler → PCA(8, whiten) → GaussianMixture(full)",
         make_pipeline(StandardScaler(), PCA(8, whiten=True), GaussianMixture(3, random_state=0))),
        ("PCA(10) → GaussianMixture(spherical)",
         make_pipeline(PCA(10), GaussianMixture(3, covariance_type="spherical", random_state=0))),
    ]


def rel(got, ref) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref) / (1 + np.abs(ref))))


def measure(label: str, pipe, X, onnx: bool = False) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BGM: "not converged"
        pipe.fit(X)
    ref = pipe.score_samples(X)
    m = gmmnet.from_sklearn(pipe)
    t = m.input_transform
    row = {
        "pipeline": label,
        "transform": f"{'diagonal' if t.diagonal else 'dense'} {t.n_outputs}×{t.n_inputs}",
        "ir": rel(linalg.log_likelihood(m, X), ref),
        "resp": float(np.max(np.abs(linalg.responsibilities(m, X) - pipe.predict_proba(X)))),
        "back": rel(to_estimator(m).score_samples(X), ref),
    }
    try:
        row["log_abs_det"] = linalg.log_abs_det(t)
    except GmmnetError:  # PCA with fewer components than features: no inverse
        row["log_abs_det"] = None
    for dtype, name in (("float64", "onnx64"), ("float32", "onnx32")) if onnx else ():
        try:
            graph = gmmnet.to_onnx(pipe, dtype=dtype)
        except GmmnetError as exc:  # an exporter without input transforms refuses cleanly
            row[name] = f"refused: {exc}"
            continue
        from gmmnet.formats.onnx import run

        width = graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value
        if width != X.shape[1]:  # an exporter that predates input transforms writes the graph over z
            row[name] = f"refused: the graph takes {width} features, not the {X.shape[1]} raw ones"
            continue
        xin = X.astype(dtype)
        row[name] = rel(run(graph, xin)["log_likelihood"], pipe.score_samples(xin.astype(np.float64)))
    return row


def markdown(rows: list[dict]) -> str:
    def fmt(v):
        if v is None:
            return "—"
        if isinstance(v, str):
            return "not yet" if v.startswith("refused") else v
        return f"{v:.1e}"

    onnx = "onnx64" in rows[0]
    head = "| pipeline | transform | IR vs pipeline | responsibilities | back to sklearn |"
    rule = "|---|---|---:|---:|---:|"
    if onnx:
        head, rule = head + " ONNX float64 | ONNX float32 |", rule + "---:|---:|"
    out = [head + " log\\|det A\\| |", rule + "---:|"]
    for r in rows:
        logdet = "—" if r["log_abs_det"] is None else f"{r['log_abs_det']:.3f}"
        cells = [r["pipeline"], r["transform"], fmt(r["ir"]), fmt(r["resp"]), fmt(r["back"])]
        if onnx:
            cells += [fmt(r["onnx64"]), fmt(r["onnx32"])]
        out.append("| " + " | ".join(cells + [logdet]) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    ap.add_argument("--onnx", action="store_true", help="also export each pipeline to ONNX and measure the graph")
    args = ap.parse_args(argv)
    X = load_breast_cancer().data
    rows = [measure(label, pipe, X, onnx=args.onnx) for label, pipe in pipelines()]
    print(json.dumps(rows, indent=1) if args.json else markdown(rows), end="")
    return rows


if __name__ == "__main__":
    main()
