"""Float32 accuracy by compute mode: the table in docs/onnx-graph.md, "Compute".

    python benchmarks/accuracy.py            # prints the markdown table (about a minute)

For every data set of tests/test_onnx_export.py (GaussianMixture, K = 3; 4 for scaled_d10,
abs activation) and covariance type: the measured error of a float32 graph with pure float32
arithmetic (``compute="float32"``) next to its prediction (``predicted_errors``), the choice of
``compute="auto"`` and its measured error, and skl2onnx's float32 model.  Errors:
log-likelihood max|Δ|/(1+|ref|), responsibilities max|Δ|; the reference is float64 on the
float32-rounded input (scikit-learn for standardized data, gmmnet.linalg for raw data).
"""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def main() -> int:
    import numpy as np

    import test_onnx_export as T  # the data sets and references the tests use
    from gmmnet.formats.onnx import run
    from gmmnet.formats.onnx.export import predicted_errors

    warnings.simplefilter("ignore")
    print("| data | cov | f32 ll | pred ll | f32 resp | pred resp | auto | auto ll | auto resp | skl2onnx ll | skl2onnx resp |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ["iris", "wine", "breast_cancer", "digits_pca", *T.RAW]:
        reference = "linalg" if name in T.RAW else "sklearn"
        for ct in T.COV_TYPES:
            _, mix = T.fitted(name, False, ct)
            x = T.dataset(name).astype(np.float32)
            ll_ref, resp_ref = T.references(name, False, ct, "float32", reference)
            row = [name, ct]
            pred = predicted_errors(mix, compute="float32")
            auto = predicted_errors(mix)["compute"]
            errs = {}
            for compute in ("float32", "auto"):
                out = run(T.exported(name, False, ct, "float32", "abs", compute), x)
                errs[compute] = (T.rel_err(out["log_likelihood"], ll_ref), T.abs_err(out["responsibilities"], resp_ref))
            sk = T.skl2onnx_errors(name, False, ct, reference)
            row += [f"{errs['float32'][0]:.1e}", f"{pred['log_likelihood']:.1e}", f"{errs['float32'][1]:.1e}",
                    f"{pred['responsibilities']:.1e}", auto, f"{errs['auto'][0]:.1e}", f"{errs['auto'][1]:.1e}",
                    f"{sk[0]:.1e}", f"{sk[1]:.1e}"]
            print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
