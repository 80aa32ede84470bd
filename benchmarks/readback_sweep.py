"""Read-back sweep: skl2onnx float64 graphs of sklearn's RandomData fixture, read back by gmmnet and checked.

Two families, every covariance type, GaussianMixture with K = 3:

* ``features``: d = 6, every other feature scaled by 1, 1e2, 1e4, 1e5, 1e6 (features that differ
  in scale, issue 13 item 2), seeds 0 and 2;
* ``offsets``: d = 3, RandomData(scale=s): means up to s with unit variances, s = 1e2, 1e4, 1e6
  (skl2onnx's diag/spherical graphs compute x² − 2xμ + μ² and lose ε·(μ/σ)²).

For each graph: read (``gmmnet.formats.onnx.from_onnx``, which checks itself against the graph)
or refused, the error of the recovered mixture against sklearn's score_samples on the fixture's
rows, the read-back error against the graph on probe points, and the graph's own rounding where
it was measured.  docs/recovery.md quotes this table.

    python benchmarks/readback_sweep.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np


def rows():
    import skl2onnx
    from sklearn.mixture import GaussianMixture
    from sklearn.mixture.tests.test_gaussian_mixture import RandomData

    from gmmnet import linalg
    from gmmnet.errors import UnsupportedModelError
    from gmmnet.formats.onnx import from_onnx

    cases = [("features", seed, 6, scale, cov) for scale in (1.0, 1e2, 1e4, 1e5, 1e6) for seed in (0, 2)
             for cov in ("full", "tied", "diag", "spherical")]
    cases += [("offsets", 0, 3, scale, cov) for scale in (1e2, 1e4, 1e6) for cov in ("full", "tied", "diag", "spherical")]
    for family, seed, d, scale, cov in cases:
        if family == "features":
            x = RandomData(np.random.RandomState(seed), n_features=d, n_components=3).X[cov]
            x = x * np.where(np.arange(d) % 2 == 0, scale, 1.0)
        else:
            x = RandomData(np.random.RandomState(seed), n_features=d, n_components=3, scale=scale).X[cov]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gmm = GaussianMixture(3, covariance_type=cov, random_state=0).fit(x)
        model = skl2onnx.to_onnx(gmm, x.astype(np.float64), options={id(gmm): {"score_samples": True}})
        row = {"family": family, "seed": seed, "d": d, "scale": scale, "covariance_type": cov}
        try:
            rec, report = from_onnx(model)
        except UnsupportedModelError as exc:
            row.update(outcome="refused", why=str(exc))
            yield row
            continue
        ref = gmm.score_samples(x)
        err = float(np.max(np.abs(linalg.log_likelihood(rec, x) - ref) / (1.0 + np.abs(ref))))
        rb = report["readback"]
        row.update(outcome="read", error_vs_sklearn=err, readback_error=rb["max_error"],
                   graph_rounding=rb["graph_rounding"])
        yield row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the rows here as JSON")
    args = p.parse_args(argv)
    out = []
    print(f"{'family':9} {'seed':>4} {'scale':>7} {'cov':10} {'outcome':8} {'vs sklearn':>10} {'vs graph':>9} "
          f"{'graph rounding':>14}")
    for row in rows():
        out.append(row)
        if row["outcome"] == "read":
            gr = "-" if row["graph_rounding"] is None else f"{row['graph_rounding']:.1e}"
            print(f"{row['family']:9} {row['seed']:>4} {row['scale']:>7.0e} {row['covariance_type']:10} read     "
                  f"{row['error_vs_sklearn']:>10.1e} {row['readback_error']:>9.1e} {gr:>14}")
        else:
            print(f"{row['family']:9} {row['seed']:>4} {row['scale']:>7.0e} {row['covariance_type']:10} refused  "
                  f"{row['why']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
