"""scikit-learn pipelines with gmmnet's estimators, and a generative classifier served by onnxruntime.

1. ``StandardScaler → MahalanobisFeatures → LogisticRegression``: a linear classifier on the
   Abs-PC distances of a Gaussian mixture (the first layer of gmmnet's network), compared with
   the same classifier on the standardized inputs.
2. The same transformer on a subset of columns inside a ``ColumnTransformer``.
3. ``GaussianMixtureClassifier`` exported with ``classifier_to_onnx`` and scored by onnxruntime
   (``label`` and ``probabilities``), checked against its own ``predict_proba``.

Run: ``python examples/pipeline_sklearn.py [--out DIR]`` (writes DIR/gmm_classifier.onnx).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gmmnet.formats.onnx import run
from gmmnet.formats.onnx.classifier import classifier_to_onnx
from gmmnet.pipeline import GaussianMixtureClassifier, MahalanobisFeatures


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for the ONNX file (default: a temporary one)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="gmmnet-pipeline-"))
    out.mkdir(parents=True, exist_ok=True)

    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)

    # 1. distances to the mixture's components as features for a linear model
    features = make_pipeline(StandardScaler(), MahalanobisFeatures(n_components=2, covariance_type="full",
                                                                   reg_covar=1e-3, random_state=0),
                             LogisticRegression(max_iter=5000))
    plain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    acc_features = features.fit(X_tr, y_tr).score(X_te, y_te)
    acc_plain = plain.fit(X_tr, y_tr).score(X_te, y_te)
    names = features[1].get_feature_names_out()
    print(f"logistic regression on {len(names)} Mahalanobis features ({names[0]}, {names[1]}, ...): "
          f"test accuracy {acc_features:.3f}; on the {X.shape[1]} standardized inputs: {acc_plain:.3f}")

    # 2. the transformer on the "mean ..." columns only, the other columns passed through scaled
    mean_cols = [c for c in X.columns if c.startswith("mean ")]
    other = [c for c in X.columns if c not in mean_cols]
    ct = ColumnTransformer([
        ("gmm", make_pipeline(StandardScaler(), MahalanobisFeatures(n_components=2, random_state=0)), mean_cols),
        ("rest", StandardScaler(), other),
    ])
    mixed = make_pipeline(ct, LogisticRegression(max_iter=5000)).fit(X_tr, y_tr)
    out_names = mixed[0].get_feature_names_out()
    print(f"ColumnTransformer: {len(out_names)} features, e.g. {out_names[0]}, {out_names[-1]}; "
          f"test accuracy {mixed.score(X_te, y_te):.3f}")

    # 3. a generative classifier exported as an ONNX classifier
    scaler = StandardScaler().fit(X_tr)
    xs_tr, xs_te = scaler.transform(X_tr), scaler.transform(X_te)
    labels_tr = np.where(y_tr.to_numpy() == 1, "benign", "malignant")  # string classes
    clf = GaussianMixtureClassifier(n_components=2, reg_covar=1e-3, random_state=0).fit(xs_tr, labels_tr)
    path = out / "gmm_classifier.onnx"
    path.write_bytes(classifier_to_onnx(clf, dtype="float32").SerializeToString())
    res = run(str(path), xs_te.astype(np.float32))
    err = float(np.max(np.abs(res["probabilities"].astype(np.float64) - clf.predict_proba(xs_te))))
    agree = float(np.mean(res["label"].astype(str) == clf.predict(xs_te)))
    acc_gen = float(np.mean(res["label"].astype(str) == np.where(y_te.to_numpy() == 1, "benign", "malignant")))
    print(f"GaussianMixtureClassifier → {path.name}: onnxruntime labels {res['label'][:3].tolist()}..., "
          f"max |p_onnx − predict_proba| = {err:.1e} (float32), label agreement {agree:.3f}, "
          f"test accuracy {acc_gen:.3f}")
    return {"acc_features": acc_features, "acc_plain": acc_plain, "prob_error": err, "label_agreement": agree,
            "onnx": path}


if __name__ == "__main__":
    main()
