"""Regenerate the pictures in docs/img/ (README gallery and docs/math.md).

    python examples/gallery.py [OUTDIR]      # default: docs/img

Every picture is drawn by gmmnet.plot from models fitted here on seeded data; the neuron figure
(gallery_neuron.png) is drawn directly from gmmnet.linalg's neuron formula.  Takes ~10 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture

import gmmnet
from gmmnet import linalg, plot
from gmmnet.formats.onnx.read import from_onnx

DPI = 100


def blobs(seed: int = 0) -> np.ndarray:
    """Three elongated 2-D clusters."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(300, 2)) @ np.array([[2.0, 0.6], [0.0, 0.5]])
    b = rng.normal(size=(200, 2)) @ np.array([[0.5, 0.0], [0.4, 1.2]]) + [5.0, 3.0]
    c = rng.normal(size=(200, 2)) * 0.6 + [-1.0, 4.0]
    return np.vstack([a, b, c])


def ellipses(out: Path) -> None:
    x = blobs()
    gmm = GaussianMixture(3, random_state=0).fit(x)
    fig = plot.figure(gmmnet.from_sklearn(gmm), data=x, kind="ellipses", size=(6, 5), dpi=DPI,
                      title="GaussianMixture(3): 1σ/2σ ellipses; each neuron's hyperplane and normal")
    plot.save_figure(fig, out / "gallery_ellipses.png", force=True)


def digits(out: Path) -> None:
    x = load_digits().data
    gmm = GaussianMixture(6, covariance_type="full", reg_covar=0.1, random_state=0).fit(x)
    fig = plot.figure(gmmnet.from_sklearn(gmm), kind="images", image_shape="8x8", size=(7, 6), dpi=DPI)
    plot.save_figure(fig, out / "gallery_digits.png", force=True)


def recovery(out: Path) -> None:
    """A network 'trained' away from its data: perturbed neurons, read back with diagnostics."""
    x = blobs()
    gmm = GaussianMixture(3, random_state=0).fit(x)
    model = gmmnet.to_onnx(gmm, dtype="float64")
    # perturb the first Gemm's weights of component 2 (rows 4, 5), as if training had drifted
    import onnx.numpy_helper as nh

    rng = np.random.default_rng(1)
    for init in model.graph.initializer:
        arr = nh.to_array(init)
        if arr.ndim == 2 and arr.shape == (6, 2):
            arr = arr.copy()
            arr[4:] *= 1 + 0.8 * rng.standard_normal(arr[4:].shape)
            init.CopyFrom(nh.from_array(arr, init.name))
    mixture, _ = from_onnx(model, data=x)
    fig = plot.figure(mixture, data=x, kind="auto", size=(14, 4.5), dpi=DPI)
    plot.save_figure(fig, out / "gallery_recovery.png", force=True)


def neuron(out: Path) -> None:
    """One Linear+Abs neuron = the 1-D Mahalanobis distance along one principal component."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    mean = np.array([1.0, 0.5])
    cov = np.array([[2.0, 1.2], [1.2, 1.5]])
    vecs, vals = linalg.basis_from_covariance(cov)
    W, b = linalg.neurons(mean, vecs, vals)
    g = np.linspace(-4, 6, 300)
    gx, gy = np.meshgrid(g, g - 0.5)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fig = Figure(figsize=(10, 4.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 3)
    for i, ax in enumerate(axes[:2]):
        a = np.abs(pts @ W[i] + b[i]).reshape(gx.shape)
        im = ax.contourf(gx, gy, a, levels=np.arange(0, 6.5, 0.5), cmap="viridis", extend="max")
        ax.contour(gx, gy, a, levels=[1, 2, 3], colors="white", linewidths=0.8)
        along = vecs[1 - i]  # the hyperplane w_i·x + b_i = 0 runs along the other principal direction
        ax.plot(*np.stack([mean - 3 * along, mean + 3 * along]).T, color="red", lw=1.5)
        ax.annotate("", xy=mean + W[i] / np.dot(W[i], W[i]), xytext=mean,
                    arrowprops={"arrowstyle": "->", "color": "red", "lw": 1.5})
        ax.set_title(f"neuron {i}: |w{i}·x + b{i}|, w{i} = λ{i}^-½ v{i}\n(white: 1, 2, 3 σ along v{i}; red: hyperplane, normal)",
                     fontsize=8)
        ax.set_aspect("equal")
        fig.colorbar(im, ax=ax, shrink=0.7)
    ax = axes[2]
    d2 = np.sum((pts @ W.T + b) ** 2, axis=1).reshape(gx.shape)
    ax.contourf(gx, gy, np.sqrt(d2), levels=np.arange(0, 6.5, 0.5), cmap="viridis", extend="max")
    w_, h_, ang = plot.ellipse_axes(cov)
    for s in (1, 2, 3):
        ax.add_patch(Ellipse(mean, s * w_, s * h_, angle=ang, fill=False, color="white", lw=0.8))
    ax.set_title("the component: D = √(a0² + a1²)\n(white: Mahalanobis 1, 2, 3 σ ellipses)", fontsize=8)
    ax.set_aspect("equal")
    plot.save_figure(fig, out / "gallery_neuron.png", force=True)


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    for make in (neuron, ellipses, digits, recovery):
        make(out)
        print(f"{make.__name__}: done")


if __name__ == "__main__":
    main(sys.argv[1:])
