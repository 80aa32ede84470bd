"""Rank-truncation error on digits: how far log p(x) and the labels move when each component keeps
only its top-r principal directions (the rest become one isotropic residual variance).

Run:  python examples/hierarchy_truncation.py [--components K] [--dims D] [--covariance-type full]
Prints a markdown table (used in docs/hierarchy.md).
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from gmmnet.formats.sklearn import from_sklearn
from gmmnet.hierarchy import truncation_error


def digits(dims: int = 32) -> np.ndarray:
    """load_digits, PCA to `dims` dimensions, standardized."""
    x = load_digits().data
    x = PCA(n_components=dims, random_state=0).fit_transform(x)
    return StandardScaler().fit_transform(x)


def table(rows: list[dict], k: int, d: int) -> str:
    lines = [
        "| rank r | layer width K·r | retained variance | max \\|Δ log p\\| | mean \\|Δ log p\\| | label agreement |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {k * min(r['rank'], d)} | {r['retained_variance']:.3f} | {r['max_abs_dloglik']:.3g} "
            f"| {r['mean_abs_dloglik']:.3g} | {r['label_agreement']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--dims", type=int, default=32)
    p.add_argument("--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"])
    p.add_argument("--ranks", default="1,2,4,8,12,16,24,32")
    args = p.parse_args(argv)
    x = digits(args.dims)
    gm = GaussianMixture(args.components, covariance_type=args.covariance_type, random_state=0).fit(x)
    ranks = [int(r) for r in args.ranks.split(",")]
    rows = truncation_error(from_sklearn(gm), x, ranks)
    ll = gm.score_samples(x)
    print(
        f"digits (n={x.shape[0]}), PCA to d={args.dims}, standardized; GaussianMixture K={args.components}, "
        f"{args.covariance_type}, random_state=0; mean log p(x) of the full model {ll.mean():.2f} nats\n"
    )
    print(table(rows, args.components, args.dims))


if __name__ == "__main__":
    main()
