"""Regenerates the exactness figures that docs/api.md quotes for the hybrid-pipeline APIs.

* ``to_torch`` vs the ONNX export of the same mixture (onnxruntime), float32 and float64,
  all outputs but ``label``: max |Δ| / (1 + |onnx|); labels compared exactly.
* ``classifier_to_onnx`` vs ``GaussianMixtureClassifier.predict_proba``: max |Δp|, float64 and float32.

Data: wine standardized, and the first 8 raw columns of breast cancer.  3-component fits (2 per
class for the classifier), all covariance types, Abs and ReLU.

Run: ``python examples/pipeline_exactness.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from gmmnet.formats.onnx import OUTPUTS, run, to_onnx
from gmmnet.formats.onnx.classifier import classifier_to_onnx
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.nn import to_torch
from gmmnet.pipeline import GaussianMixtureClassifier

COV_TYPES = ("full", "tied", "diag", "spherical")


def datasets():
    wx, wy = load_wine(return_X_y=True)
    bx, by = load_breast_cancer(return_X_y=True)
    return {"wine, standardized": (StandardScaler().fit_transform(wx), wy),
            "breast cancer, first 8 columns, raw": (bx[:, :8], by)}


def torch_vs_onnx(x: np.ndarray) -> dict:
    worst = {"float64": 0.0, "float32": 0.0}
    label_diff = {"float64": 0, "float32": 0}
    for ct in COV_TYPES:
        m = from_sklearn(GaussianMixture(3, covariance_type=ct, random_state=0, max_iter=200).fit(x))
        for act in ("abs", "relu"):
            for dt, tdt, ndt in (("float64", torch.float64, np.float64), ("float32", torch.float32, np.float32)):
                xd = x.astype(ndt)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # PrecisionWarning on raw float32 is expected here
                    got = run(to_onnx(m, activation=act, dtype=dt, outputs=OUTPUTS), xd)
                with torch.no_grad():
                    out = to_torch(m, activation=act, dtype=tdt)(torch.as_tensor(xd))._asdict()
                for name in OUTPUTS:
                    a, b = out[name].numpy(), np.asarray(got[name])
                    if name == "label":
                        label_diff[dt] += int(np.sum(a != b))
                        continue
                    b = b.astype(np.float64)
                    worst[dt] = max(worst[dt], float(np.max(np.abs(a - b) / (1 + np.abs(b)))))
    return {"worst": worst, "label_diff": label_diff}


def classifier_vs_proba(x: np.ndarray, y: np.ndarray) -> dict:
    worst = {"float64": 0.0, "float32": 0.0}
    label_diff = {"float64": 0, "float32": 0}
    for ct in COV_TYPES:
        clf = GaussianMixtureClassifier(n_components=2, covariance_type=ct, random_state=0).fit(x, y)
        p = clf.predict_proba(x)
        for act in ("abs", "relu"):
            for dt, ndt in (("float64", np.float64), ("float32", np.float32)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = run(classifier_to_onnx(clf, activation=act, dtype=dt), x.astype(ndt))
                worst[dt] = max(worst[dt], float(np.max(np.abs(res["probabilities"].astype(np.float64) - p))))
                label_diff[dt] += int(np.sum(res["label"] != clf.predict(x)))
    return {"worst": worst, "label_diff": label_diff}


def main() -> dict:
    torch.set_num_threads(1)
    rows = {}
    print("| data | to_torch vs ONNX, float64 | float32 | label mismatches (f64/f32) | "
          "classifier ONNX vs predict_proba, float64 | float32 | label mismatches (f64/f32) |")
    print("|---|---|---|---|---|---|---|")
    for name, (x, y) in datasets().items():
        t = torch_vs_onnx(x)
        c = classifier_vs_proba(x, y)
        rows[name] = {"torch": t, "classifier": c}
        print(f"| {name} | {t['worst']['float64']:.1e} | {t['worst']['float32']:.1e} | "
              f"{t['label_diff']['float64']}/{t['label_diff']['float32']} | {c['worst']['float64']:.1e} | "
              f"{c['worst']['float32']:.1e} | {c['label_diff']['float64']}/{c['label_diff']['float32']} |")
    return rows


if __name__ == "__main__":
    main()
