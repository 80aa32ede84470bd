"""Initialize an MLP from data, train it, recover its Gaussians, and plot them.

1. ``gmmnet.nn.init_from_data`` fits a 3-component GaussianMixture on 2-D data and writes its
   whitening neurons into the first ``nn.Linear`` (6 Abs neurons: 2 per component).
2. ``Linear → Abs → Linear`` is trained as a classifier (cross-entropy), with or without the
   orthogonality penalty (paper §3.4) on each component's block of neurons.
3. The trained first layer is read back as a Gaussian mixture with
   ``gmmnet.formats.torch.from_torch`` (``gmmnet.recover`` underneath; the same recovery that
   ``gmmnet to-gmm`` runs on an ONNX file), and the initial and recovered 2σ ellipses are drawn.

Run: ``python examples/init_recover_plot.py [--steps N] [--penalty L] [--out FILE.png]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_blobs
from torch import nn

from gmmnet import linalg
from gmmnet.formats.torch import from_torch
from gmmnet.nn import Abs, init_from_data, neuron_groups, orthogonality_penalty


def ellipse(mean, eigenvectors, eigenvalues, n_sigma=2.0, n=100):
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1) * n_sigma
    return mean + (circle * np.sqrt(eigenvalues)) @ eigenvectors


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="full-batch Adam steps (default 300)")
    ap.add_argument("--penalty", type=float, default=0.1, help="orthogonality penalty weight λ (default 0.1)")
    ap.add_argument("--out", type=Path, default=None, help="PNG to write (default: in a temporary folder)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="gmmnet-recover-")) / "init_recover.png"
    out.parent.mkdir(parents=True, exist_ok=True)

    X, y = make_blobs(n_samples=600, centers=[[-4, 0], [0, 3], [4, -1]], cluster_std=1.0, random_state=0)
    X = X @ np.array([[1.0, 0.6], [0.0, 0.7]])  # anisotropic clusters
    torch.manual_seed(0)
    first, mixture0 = init_from_data(X, 3, random_state=0, dtype=torch.float64)
    model = nn.Sequential(first, Abs(), nn.Linear(first.out_features, 3, dtype=torch.float64))
    groups = neuron_groups(mixture0)
    x, t = torch.as_tensor(X), torch.as_tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(args.steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), t)
        if args.penalty:
            loss = loss + args.penalty * orthogonality_penalty(first, groups)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == t).double().mean())
    print(f"trained {args.steps} steps (λ = {args.penalty:g}): training accuracy {acc:.3f}, "
          f"penalty {orthogonality_penalty(first, groups).item():.2e}")

    recovered, report = from_torch(model, groups=groups, data=X)
    for k, (c0, c1) in enumerate(zip(mixture0.components, recovered.components)):
        cos = np.abs(np.sum(c0.eigenvectors * c1.eigenvectors, axis=1))
        print(f"component {k}: mean moved {np.linalg.norm(c1.mean - c0.mean):.2f}, "
              f"|cos| of principal directions init→trained {np.round(cos, 3).tolist()}, "
              f"std devs {np.round(np.sqrt(c0.eigenvalues), 2).tolist()} → {np.round(np.sqrt(c1.eigenvalues), 2).tolist()}")
    # each recovered Gaussian gives the squared Mahalanobis distance its block of trained neurons computes
    with torch.no_grad():
        acts = np.abs(first(x).numpy())
    d2_net = np.stack([np.sum(acts[:, g] ** 2, axis=1) for g in groups], axis=1)
    d2 = linalg.mahalanobis_sq(recovered, X)
    err = float(np.max(np.abs(d2 - d2_net) / (1.0 + d2_net)))
    print(f"max relative |D²_recovered − D²_network| = {err:.1e}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(X[:, 0], X[:, 1], c=y, s=6, cmap="tab10", alpha=0.5)
    for k, (c0, c1) in enumerate(zip(mixture0.components, recovered.components)):
        e0 = ellipse(c0.mean, c0.eigenvectors, c0.eigenvalues)
        e1 = ellipse(c1.mean, c1.eigenvectors, c1.eigenvalues)
        ax.plot(e0[:, 0], e0[:, 1], "k--", lw=1, label="GMM at init (2σ)" if k == 0 else None)
        ax.plot(e1[:, 0], e1[:, 1], "r-", lw=1.5, label="recovered after training (2σ)" if k == 0 else None)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"first layer read as Gaussians (λ = {args.penalty:g}, accuracy {acc:.2f})")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"plot: {out}")
    return {"accuracy": acc, "activation_error": err, "plot": out, "report": report, "mixture": recovered}


if __name__ == "__main__":
    main()
