"""Regenerates the figures docs/onnx-graph.md ("Input transforms") quotes: a mixture behind a Pipeline's
affine steps, folded into the first layer, against the Pipeline itself.

For every step type × covariance type on raw breast_cancer (30 features spanning 1e-3 to 1e4), a
3-component GaussianMixture behind the step; z = A x + c composed from the fitted step; the graph on raw x:

* ``auto``: the default float32 graph (``compute="auto"``), log-likelihood max|Δ|/(1+|ref|) and
  responsibilities max|Δ| against ``Pipeline.score_samples`` / ``predict_proba`` on the float32-rounded input;
* ``float64``: the float64 graph, the larger of the two errors;
* ``float32``: pure float32 arithmetic (``compute="float32"``), log-likelihood error.

Then the centring before the fold: synthetic raw data far from 0 (means ~1e4, feature scales spanning
cond 1e10) behind a StandardScaler, pure float32 arithmetic without centring and centred on the
preimages of the means.

Run: ``python examples/transform_fold_accuracy.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from gmmnet import linalg
from gmmnet.formats.onnx import run, to_onnx
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.ir import InputTransform

COV_TYPES = ("full", "tied", "diag", "spherical")
STEPS = {
    "StandardScaler": StandardScaler, "MinMaxScaler": MinMaxScaler, "MaxAbsScaler": MaxAbsScaler,
    "RobustScaler": RobustScaler, "PCA(10)": lambda: PCA(10, random_state=0),
    "PCA(10, whiten)": lambda: PCA(10, whiten=True, random_state=0), "TruncatedSVD(10)": lambda: TruncatedSVD(10, random_state=0),
}


def affine(step, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, c) of one fitted affine step."""
    if isinstance(step, StandardScaler):
        mean, scale = (step.mean_ if step.with_mean else np.zeros(d)), (step.scale_ if step.with_std else np.ones(d))
        return np.diag(1.0 / scale), -mean / scale
    if isinstance(step, MinMaxScaler):
        return np.diag(step.scale_), step.min_
    if isinstance(step, MaxAbsScaler):
        return np.diag(1.0 / step.scale_), np.zeros(d)
    if isinstance(step, RobustScaler):
        return np.diag(1.0 / step.scale_), -step.center_ / step.scale_
    if isinstance(step, PCA):
        A = step.components_ / (np.sqrt(step.explained_variance_)[:, None] if step.whiten else 1.0)
        return A, -A @ step.mean_
    return step.components_, np.zeros(step.components_.shape[0])  # TruncatedSVD


def folded(pipe, d: int):
    A, c = affine(pipe[0], d)
    return from_sklearn(pipe[-1]).model_copy(update={"input_transform": InputTransform(matrix=A, offset=c)})


def errors(model, pipe, x: np.ndarray, dtype: str) -> tuple[float, float]:
    xin = x.astype(dtype)
    xr = xin.astype(np.float64)
    got = run(model, xin)
    ref = pipe.score_samples(xr)
    return (float(np.max(np.abs(got["log_likelihood"] - ref) / (1 + np.abs(ref)))),
            float(np.max(np.abs(got["responsibilities"] - pipe.predict_proba(xr)))))


def far_data(seed: int = 10, d: int = 6, k: int = 3, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.5, d) * 1e4
    scales = 1e2 * np.exp(np.linspace(0, -0.5 * np.log(1e10), d))
    return np.concatenate([base + rng.standard_normal(d) * scales * 30 + rng.standard_normal((n, d)) * scales
                           for _ in range(k)])


def main() -> None:
    warnings.simplefilter("ignore")
    x = load_breast_cancer().data
    print("| step | covariance | auto: ll | auto: resp | float64 | pure float32: ll |")
    print("|---|---|---:|---:|---:|---:|")
    worst = {"auto_ll": 0.0, "auto_resp": 0.0, "f64": 0.0, "f32": 0.0}
    for name, make in STEPS.items():
        for ct in COV_TYPES:
            pipe = make_pipeline(make(), GaussianMixture(3, covariance_type=ct, random_state=0)).fit(x)
            mix = folded(pipe, x.shape[1])
            a_ll, a_resp = errors(to_onnx(mix), pipe, x, "float32")
            f64 = max(errors(to_onnx(mix, dtype="float64"), pipe, x, "float64"))
            f32, _ = errors(to_onnx(mix, compute="float32"), pipe, x, "float32")
            for key, v in zip(worst, (a_ll, a_resp, f64, f32)):
                worst[key] = max(worst[key], v)
            print(f"| {name} | {ct} | {a_ll:.1e} | {a_resp:.1e} | {f64:.1e} | {f32:.1e} |")
    print("\nworst: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))

    xf = far_data()
    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0)).fit(xf)
    mix = folded(pipe, xf.shape[1])
    xin = xf.astype(np.float32)
    ref = linalg.log_likelihood(from_sklearn(pipe[-1]), pipe[:-1].transform(xin.astype(np.float64)))
    print("\nfar-from-0 raw data behind a StandardScaler, pure float32 arithmetic, log-likelihood error:")
    for centering in ("none", "global", "component"):
        got = run(to_onnx(mix, compute="float32", centering=centering), xin)["log_likelihood"]
        print(f"  centering={centering}: {np.max(np.abs(got - ref) / (1 + np.abs(ref))):.1e}")


if __name__ == "__main__":
    main()
