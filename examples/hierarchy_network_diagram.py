"""Draw the hierarchy → deep network mapping: writes docs/img/hierarchy_network.png.

A small 2-level hierarchy (2 components on 2 inputs, then 2 components on their 4 Abs features)
drawn as the network gmmnet exports: Linear (neurons w = λ^-½ v, b = −w·μ_k) → Abs, grouped by
component, → Linear → Abs → mixture head.  Only matplotlib; the numbers shown are read from a
real fitted model.

Run:  python examples/hierarchy_network_diagram.py [--out docs/img/hierarchy_network.png]
"""

from __future__ import annotations

import argparse

import numpy as np

from gmmnet.hierarchy import HierarchicalGaussianMixture


def fitted() -> HierarchicalGaussianMixture:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal([-2, 0], [1.0, 0.4], size=(200, 2)), rng.normal([2, 1], [0.5, 1.2], size=(200, 2))])
    return HierarchicalGaussianMixture("2:full,2:diag", random_state=0).fit(x)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/img/hierarchy_network.png")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    h = fitted()
    lv0, lv1 = h.levels_
    colors = ["tab:blue", "tab:orange"]
    fig, ax = plt.subplots(figsize=(11, 5.2))
    ax.set_xlim(-0.6, 10.4)
    ax.set_ylim(-0.9, 5.0)
    ax.axis("off")

    def node(x, y, text, color="white", edge="black", w=0.9, h_=0.42, fs=8):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h_ / 2), w, h_, boxstyle="round,pad=0.03", fc=color, ec=edge, lw=1))
        ax.text(x, y, text, ha="center", va="center", fontsize=fs)

    def edge(x0, y0, x1, y1, color="gray", lw=0.6):
        ax.plot([x0 + 0.45, x1 - 0.45], [y0, y1], color=color, lw=lw, zorder=0)

    inputs = [(0, 2.8), (0, 1.4)]
    for i, (x, y) in enumerate(inputs):
        node(x, y, f"x{i}")
    # level 0: K=2 components × 2 directions → 4 neurons
    l0 = [(2.2, 4.1 - 0.95 * j) for j in range(4)]
    for j, (x, y) in enumerate(l0):
        k, i = divmod(j, 2)
        c = lv0.components[k]
        node(x, y, f"c{k}/pc{i}\nλ={c.eigenvalues[i]:.2f}", color=colors[k], fs=7)
        for xi, yi in inputs:
            edge(xi, yi, x, y, color=colors[k])
        node(x + 1.2, y, "|·|", w=0.5)
        edge(x, y, x + 1.2, y, color="black")
    ax.text(2.8, 4.75, "level 0: Linear (w = λ^-½ v, b = −w·μ_k) → Abs\n"
                      "a = distance from μ_k along v, in σ", ha="center", fontsize=8)
    # level 1: 2 diag components over the 4 features → 8 neurons
    l1 = [(5.6, 4.35 - 0.62 * j) for j in range(8)]
    for j, (x, y) in enumerate(l1):
        k, i = divmod(j, 4)
        node(x, y, f"c{k}/pc{i}", color=colors[k], fs=7, h_=0.36)
        x0, y0 = l0[i]  # diag: neuron i of a component reads feature i only (w = λ^-½ e_i)
        edge(x0 + 1.2, y0, x, y, color=colors[k], lw=0.6)
        node(x + 1.15, y, "|·|", w=0.5, h_=0.36)
        edge(x, y, x + 1.15, y, color="black")
    ax.text(6.2, 4.75, "level 1: GMM on level 0's Abs features\n(diag: each neuron reads one feature)",
            ha="center", fontsize=8)
    # head
    for k in range(2):
        y = 3.2 - 1.6 * k
        node(8.5, y, f"D²_{k} = Σ a²\nL_{k} = −½D²+c_{k}", color=colors[k], w=1.35, h_=0.62, fs=7)
        for j, (x, yy) in enumerate(l1):
            if j // 4 == k:
                edge(x + 1.15, yy, 8.5 - 0.25, y, color=colors[k], lw=0.5)
    node(9.9, 2.4, "logsumexp\nsoftmax\nargmax", w=0.9, h_=0.8, fs=7)
    for k in range(2):
        edge(8.5 + 0.25, 3.2 - 1.6 * k, 9.9, 2.4, color="black")
    ax.text(5.0, -0.6,
            f"fitted: level 0 = {lv0.n_components} full components on 2 inputs (weights "
            f"{', '.join(f'{w:.2f}' for w in lv0.weights)}); level 1 = {lv1.n_components} diag components on "
            f"{lv1.n_features} features. ReLU export: each neuron becomes the pair [w; −w], the next Linear "
            "takes the columns [U, U].", ha="center", fontsize=7.5, wrap=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
