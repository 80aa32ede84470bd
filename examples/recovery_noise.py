"""Study: the recovery diagnostics against weight noise, and automatic grouping on random mixtures.

1. Noise: three well-separated 3-D Gaussians (equal weights, 1500 points) per seed, 5 seeds;
   their exact whitening neurons, rotated per block, perturbed as W·(1 + ε·N(0,1)) and
   b + ε·N(0,1)·‖w‖, read back with explicit groups and the data.  Medians over the 15
   components of faithfulness R², whitening error and hyperplane distance, and how many are flagged.
2. Grouping: random mixtures (K 2–8, d 2–10, means N(0, s²) with s in [6, 10], eigenvalues
   log-uniform in [1, 10] times a scale in [1, 3.2]²), exact neurons in random order, grouped
   from 150·K sampled points; counts the cases whose groups come back exactly.

Run:  python examples/recovery_noise.py [--quick]     (prints the two tables of docs/recovery.md)
"""

from __future__ import annotations

import argparse

import numpy as np

from gmmnet import linalg
from gmmnet.ir import Component, Mixture
from gmmnet.recover import from_layers

NOISE = (0.0, 0.05, 0.1, 0.2, 0.3, 0.6)


def rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def mixture(rng, k, d, spread, scale=1.0, equal=False):
    comps = []
    w = np.full(k, 1.0 / k) if equal else rng.dirichlet(2 * np.ones(k))
    for j in range(k):
        lam = np.sort(scale**2 * np.exp(rng.uniform(0, np.log(10.0), d)))[::-1]
        comps.append(Component(mean=spread * rng.standard_normal(d), eigenvectors=rotation(rng, d), eigenvalues=lam,
                               weight=float(w[j])))
    return Mixture(n_features=d, covariance_type="full", components=comps)


def sample(rng, mix, n):
    labels = rng.choice(mix.n_components, size=n, p=mix.weights)
    out = np.empty((n, mix.n_features))
    for k, c in enumerate(mix.components):
        sel = labels == k
        out[sel] = c.mean + (rng.standard_normal((sel.sum(), c.rank)) * np.sqrt(c.eigenvalues)) @ c.eigenvectors
    return out


def neurons(rng, mix):
    Ws, bs = [], []
    for c in mix.components:
        W, b = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
        R = rotation(rng, mix.n_features)
        Ws.append(R @ W)
        bs.append(R @ b)
    return np.concatenate(Ws), np.concatenate(bs)


def noise_table(seeds) -> str:
    rows = {eps: [] for eps in (*NOISE, "random")}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        mix = mixture(rng, 3, 3, spread=8.0, equal=True)
        W, b = neurons(rng, mix)
        x = sample(rng, mix, 1500)
        E, e = rng.standard_normal(W.shape), rng.standard_normal(b.shape)
        for eps in rows:
            if eps == "random":
                Wn, bn = rng.standard_normal(W.shape), rng.standard_normal(b.shape)
            else:
                Wn, bn = W * (1 + eps * E), b + eps * e * np.linalg.norm(W, axis=1)
            _, rep = from_layers(Wn, bn, groups=3, data=x)
            rows[eps] += rep["components"]
    lines = ["| ε | faithfulness R² | whitening error | hyperplane distance (σ) | flagged |", "|---|---:|---:|---:|---:|"]
    for eps, comps in rows.items():
        med = lambda key: float(np.median([c[key] for c in comps]))  # noqa: E731
        label = "random W, b" if eps == "random" else ("0 (exact)" if eps == 0 else f"{eps:g}")
        lines.append(f"| {label} | {med('faithfulness_r2'):.3f} | {med('whitening_error'):.3g} "
                     f"| {med('hyperplane_distance_sigma'):.2f} | {sum(c['low_confidence'] for c in comps)}/{len(comps)} |")
    return "\n".join(lines)


def grouping_table(n_cases: int) -> str:
    rng = np.random.default_rng(2024)
    ok, misses = 0, []
    for _ in range(n_cases):
        k, d = int(rng.integers(2, 9)), int(rng.integers(2, 11))
        mix = mixture(rng, k, d, spread=float(rng.uniform(6, 10)), scale=float(rng.uniform(1, 3.2)))
        W, b = neurons(rng, mix)
        x = sample(rng, mix, 150 * k)
        perm = rng.permutation(W.shape[0])
        _, rep = from_layers(W[perm], b[perm], data=x, n_components=k)
        truth = sorted(sorted(np.flatnonzero(perm // d == j).tolist()) for j in range(k))
        if sorted(rep["groups"]) == truth:
            ok += 1
        else:
            misses.append(f"K={k}, d={d}")
    return f"automatic grouping: {ok} of {n_cases} random cases grouped exactly" + (
        f"; missed: {', '.join(misses)}" if misses else "")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    print(noise_table(range(1 if args.quick else 5)))
    print()
    print(grouping_table(4 if args.quick else 42))


if __name__ == "__main__":
    main()
