"""Random IR mixtures and error measures for tests (importable as `from mixtures import random_mixture`)."""

from __future__ import annotations

import numpy as np

from gmmnet import linalg
from gmmnet.ir import Component, Mixture


def random_rotation(rng, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_mixture(rng, k: int, d: int, covariance_type: str = "full", scale: float = 1.0,
                   spread: float = 3.0, cond: float = 10.0) -> Mixture:
    """K components in d dims; eigenvalues log-uniform over `cond`, times scale**2."""
    means = rng.standard_normal((k, d)) * spread * scale
    weights = rng.dirichlet(np.ones(k) * 2.0)
    comps = []
    shared = None
    for j in range(k):
        if covariance_type in ("full", "tied"):
            if shared is None or covariance_type == "full":
                vals = scale**2 * np.exp(rng.uniform(0, np.log(cond), d))
                vecs = random_rotation(rng, d)
                cov = (vecs * vals) @ vecs.T
                shared = linalg.basis_from_covariance(cov)
            vecs_rows, vals = shared
        elif covariance_type == "diag":  # axis-aligned: no eigenvectors stored (IR 1.1)
            vecs_rows, vals = None, scale**2 * np.exp(rng.uniform(0, np.log(cond), d))
        else:
            vecs_rows, vals = None, np.full(d, scale**2 * np.exp(rng.uniform(0, np.log(cond))))
        comps.append(Component(mean=means[j], eigenvectors=vecs_rows, eigenvalues=vals, weight=float(weights[j])))
    return Mixture(n_features=d, covariance_type=covariance_type, components=comps)


def sample(rng, mixture: Mixture, n: int) -> np.ndarray:
    """Points drawn from the mixture."""
    labels = rng.choice(mixture.n_components, size=n, p=mixture.weights)
    out = np.empty((n, mixture.n_features))
    for i, lab in enumerate(labels):
        c = mixture.components[lab]
        z = rng.standard_normal(c.rank) * np.sqrt(c.eigenvalues)
        out[i] = c.mean + (z if c.axis_aligned else z @ c.eigenvectors)
    return out


def rel_err(got, ref) -> float:
    """max |got − ref| / (1 + |ref|): the log-likelihood error measure of the accuracy targets."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref) / (1.0 + np.abs(ref)))) if ref.size else 0.0
