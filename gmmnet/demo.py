"""`gmmnet demo`: fit, convert, and check a GMM on data that ships with scikit-learn."""

from __future__ import annotations

import numpy as np

from .errors import UsageError
from .tolerances import tol

#: (log_likelihood, responsibilities) targets on standardized data, from gmmnet.tolerances
TOLERANCES = {"float32": (tol("float32_ll"), tol("float32_resp")), "float64": (tol("float64_ll"), tol("float64_resp"))}
DATASETS = {"iris": 150, "wine": 178, "breast_cancer": 569, "digits": 1797}  # rows of scikit-learn's bundled data
CONFIGS = (("float32", "abs"), ("float64", "abs"), ("float32", "relu"))
HIERARCHY_TOP = "2:diag"


def dataset_rows(name: str) -> int:
    """Rows of a bundled dataset (UsageError for an unknown name)."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str) -> np.ndarray:
    dataset_rows(name)
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    loader = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
    }[name]
    x = loader().data.astype(np.float64)
    if name == "digits":
        # constant pixels make singular covariances; keep 16 principal axes
        from sklearn.decomposition import PCA

        x = PCA(n_components=16, random_state=0).fit_transform(x)
    return StandardScaler().fit_transform(x)


def agreement(log_joint_ref: np.ndarray, label_ref: np.ndarray, label: np.ndarray, tie: float = 1e-6) -> float:
    """Fraction of rows whose labels agree, counting rows whose top two log-terms tie within `tie` as agreeing."""
    top2 = np.sort(log_joint_ref, axis=1)[:, -2:] if log_joint_ref.shape[1] > 1 else None
    tied = (top2[:, 1] - top2[:, 0] <= tie) if top2 is not None else np.zeros(len(label), bool)
    return float(np.mean((label == label_ref) | tied))


def run_demo(dataset: str = "wine", n_components: int = 3, seed: int = 0) -> list[dict]:
    from sklearn.mixture import GaussianMixture

    from . import linalg
    from .formats.onnx import run, to_onnx
    from .formats.sklearn import from_sklearn

    x = load_dataset(dataset)
    if not 1 <= n_components <= x.shape[0]:
        raise UsageError(f"n_components must be within 1..{x.shape[0]} (the rows of {dataset}), got {n_components}")
    rows = []
    for ct in ("full", "tied", "diag", "spherical"):
        gmm = GaussianMixture(n_components=n_components, covariance_type=ct, random_state=seed).fit(x)
        mixture = from_sklearn(gmm)
        for dtype, activation in CONFIGS:
            model = to_onnx(mixture, dtype=dtype, activation=activation)
            xin = x.astype(dtype)
            got = run(model, xin)
            xref = xin.astype(np.float64)  # measure the graph, not the rounding of its input
            ref_ll, ref_resp, ref_label = gmm.score_samples(xref), gmm.predict_proba(xref), gmm.predict(xref)
            err_ll = float(np.max(np.abs(got["log_likelihood"] - ref_ll) / (1 + np.abs(ref_ll))))
            err_resp = float(np.max(np.abs(got["responsibilities"] - ref_resp)))
            agree = agreement(linalg.log_joint(mixture, xref), ref_label, got["label"])
            tol_ll, tol_resp = TOLERANCES[dtype]
            rows.append({
                "covariance_type": ct,
                "dtype": dtype,
                "activation": activation,
                "components": mixture.n_components,
                "neurons": sum(c.rank for c in mixture.components) * (2 if activation == "relu" else 1),
                "max_err_loglik": err_ll,
                "max_err_resp": err_resp,
                "label_agreement": agree,
                "ok": err_ll <= tol_ll and err_resp <= tol_resp and agree == 1.0,
            })
    rows += run_hierarchy_demo(x, n_components, seed)
    return rows


def run_hierarchy_demo(x: np.ndarray, n_components: int = 3, seed: int = 0) -> list[dict]:
    """Rows for a 2-level hierarchy (K full components, then 2 diag ones on their Abs features) as a deep network."""
    from . import linalg
    from .formats.onnx import run, to_onnx
    from .hierarchy import HierarchicalGaussianMixture

    spec = f"{n_components}:full,{HIERARCHY_TOP}"
    hgm = HierarchicalGaussianMixture(spec, random_state=seed).fit(x)
    top = hgm.levels_[-1]
    rows = []
    for dtype, activation in CONFIGS:
        got = run(to_onnx(hgm.to_ir(), dtype=dtype, activation=activation), x.astype(dtype))
        xref = x.astype(dtype).astype(np.float64)
        ref_ll = hgm.score_samples(xref)
        err_ll = float(np.max(np.abs(got["log_likelihood"] - ref_ll) / (1 + np.abs(ref_ll))))
        err_resp = float(np.max(np.abs(got["responsibilities"] - hgm.predict_proba(xref))))
        agree = agreement(linalg.log_joint(top, hgm._features(xref, 1)), hgm.predict(xref), got["label"])
        tol_ll, tol_resp = TOLERANCES[dtype]  # deep graphs' compute="auto" meets the same targets
        neurons = [sum(c.rank for c in m.components) * (2 if activation == "relu" else 1) for m in hgm.levels_]
        rows.append({
            "covariance_type": f"hierarchy {spec}",
            "dtype": dtype,
            "activation": activation,
            "components": "+".join(str(m.n_components) for m in hgm.levels_),
            "neurons": "+".join(str(n) for n in neurons),
            "max_err_loglik": err_ll,
            "max_err_resp": err_resp,
            "label_agreement": agree,
            "ok": err_ll <= tol_ll and err_resp <= tol_resp and agree == 1.0,
        })
    return rows
