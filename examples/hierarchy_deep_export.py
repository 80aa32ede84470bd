"""Deep export and read-back on digits: the precision table of docs/hierarchy.md.

For a few hierarchies fitted on digits (PCA to 16, standardized), export Abs and paired-ReLU
graphs in float64 and float32, run them on onnxruntime and compare with the estimator's own
score_samples / predict_proba / predict (float32: on the float32-rounded input, so the table
measures the graph, not the rounding of X).  Then read each float64 graph (with per-level heads)
back with gmmnet.formats.onnx.read_deep.from_onnx and compare the recovered hierarchy's scores.

Run:  python examples/hierarchy_deep_export.py
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from gmmnet.formats.onnx import deep, read_deep, run, to_onnx
from gmmnet.hierarchy import HierarchicalGaussianMixture

SPECS = ("4:full,3:diag", "3:full,2:diag,2:tied", "4:full:r=4,3:full:r=6")


def main() -> None:
    x = StandardScaler().fit_transform(PCA(n_components=16, random_state=0).fit_transform(load_digits().data))
    print("digits (n=1797), PCA to 16, standardized; random_state=0\n")
    print("| hierarchy | activation | dtype | compute | max rel. err log p | max err resp | labels "
          "| read back: max rel. err log p |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for spec in SPECS:
        h = HierarchicalGaussianMixture(spec, random_state=0).fit(x)
        n = len(h.levels_)
        for activation in ("abs", "relu"):
            # float32 twice: the default compute="auto" (its choice is printed) and pure float32 arithmetic
            for dtype, compute in (("float64", "auto"), ("float32", "auto"), ("float32", "float32")):
                m = to_onnx(h, activation=activation, dtype=dtype, compute=compute,
                            outputs=("label", "responsibilities", "log_likelihood") + deep.level_outputs(n))
                chosen = {p.key: p.value for p in m.metadata_props}["compute"]
                label = f"{compute} → {chosen}" if compute == "auto" else compute
                xin = x.astype(dtype)
                xr = xin.astype(np.float64)
                got = run(m, xin)
                ll = h.score_samples(xr)
                e_ll = np.max(np.abs(got["log_likelihood"] - ll) / (1 + np.abs(ll)))
                e_r = np.max(np.abs(got["responsibilities"] - h.predict_proba(xr)))
                lab = np.mean(got["label"] == h.predict(xr))
                back = "–"
                try:
                    ir, _ = read_deep.from_onnx(m)
                    b = HierarchicalGaussianMixture.from_ir(ir).score_samples(xr)
                    back = f"{np.max(np.abs(b - ll) / (1 + np.abs(ll))):.1e}"
                except Exception as exc:  # truncated levels are not read back
                    back = f"not supported ({type(exc).__name__})"
                print(f"| {spec} | {activation} | {dtype} | {label} | {e_ll:.1e} | {e_r:.1e} | {lab:.3f} | {back} |")


if __name__ == "__main__":
    main()
