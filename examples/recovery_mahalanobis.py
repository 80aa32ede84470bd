"""Study: does a trained Linear(d→d)+Abs layer give back the Gaussian whose Mahalanobis distance it fits?

For d = 2, 10, 50 and several seeds: draw a Gaussian N(μ, Σ) (eigenvalues log-uniform over a
condition number of 10, random rotation, mean ~ N(0, 9 I)), sample training points from it, and
train ``a = |W x + b|`` (torch, Adam, full batch, default nn.Linear init) so that ‖a‖ fits the true
Mahalanobis distance √((x−μ)ᵀΣ⁻¹(x−μ)).  Some runs get very few steps on purpose (under-trained).
Each layer is then read back with :func:`gmmnet.recover.from_layers` (one group of d Abs neurons,
held-out data for the diagnostics), and we measure KL(true ‖ recovered) against the network's
relative training loss mean((‖a‖ − D)²) / mean(D²), together with the low-confidence flag.

Run:  python examples/recovery_mahalanobis.py [--quick] [--out docs/img/recovery_mahalanobis.png]
Prints a markdown table (used in docs/recovery.md) and writes the plot.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gmmnet import linalg
from gmmnet.recover import from_layers

DIMS = (2, 10, 50)
SEEDS = (0, 1, 2)
STEPS = (0, 10, 30, 100, 300, 1000, 3000)


def kl_gauss(mu0, cov0, mu1, cov1) -> float:
    """KL(N0 ‖ N1) in nats."""
    d = mu0.size
    l1 = np.linalg.cholesky(cov1)
    inv1 = np.linalg.inv(cov1)
    diff = mu1 - mu0
    logdet1 = 2 * np.sum(np.log(np.diag(l1)))
    logdet0 = np.linalg.slogdet(cov0)[1]
    return 0.5 * float(np.trace(inv1 @ cov0) + diff @ inv1 @ diff - d + logdet1 - logdet0)


def true_gaussian(rng, d: int):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))
    lam = np.exp(rng.uniform(0, np.log(10.0), d))
    return 3.0 * rng.standard_normal(d), (q * lam) @ q.T


def train(x, target, d: int, checkpoints, seed: int, lr: float = 0.02):
    """Adam on mean((‖|Wx+b|‖ − D)²); yields (steps, W, b, relative loss) at each checkpoint."""
    import torch

    torch.manual_seed(seed)
    lin = torch.nn.Linear(d, d).double()
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    norm = float(np.mean(target**2))
    done = 0
    for steps in sorted(checkpoints):
        for _ in range(steps - done):
            opt.zero_grad()
            loss = torch.mean((lin(xt).abs().norm(dim=1) - tt) ** 2)
            loss.backward()
            opt.step()
        done = steps
        with torch.no_grad():
            final = float(torch.mean((lin(xt).abs().norm(dim=1) - tt) ** 2)) / norm
        yield steps, lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy(), final


def run(dims, seeds, steps_list, n_train: int, n_test: int) -> list[dict]:
    rows = []
    for d in dims:
        for seed in seeds:
            rng = np.random.default_rng(1000 * d + seed)
            mu, cov = true_gaussian(rng, d)
            chol = np.linalg.cholesky(cov)
            x = mu + rng.standard_normal((n_train, d)) @ chol.T
            x_test = mu + rng.standard_normal((n_test, d)) @ chol.T
            inv = np.linalg.inv(cov)
            target = np.sqrt(np.einsum("ij,jk,ik->i", x - mu, inv, x - mu))
            for steps, W, b, loss in train(x, target, d, steps_list, seed):
                row = {"d": d, "seed": seed, "steps": steps, "loss": loss}
                try:
                    mix, rep = from_layers(W, b, groups=[list(range(d))], data=x_test)
                except Exception as exc:  # a singular layer (rank < d with too little data) is a finding too
                    row.update(kl=float("nan"), flagged=True, r2=float("nan"), werr=float("nan"),
                               reasons=f"{type(exc).__name__}: {exc}")
                    rows.append(row)
                    continue
                c = mix.components[0]
                cov_rec = linalg.covariance(c.eigenvectors, c.eigenvalues, c.residual_variance)
                comp = rep["components"][0]
                row.update(
                    kl=kl_gauss(mu, cov, c.mean, cov_rec),
                    flagged=bool(comp["low_confidence"]),
                    r2=comp["faithfulness_r2"],
                    werr=comp["whitening_error"],
                    hyp=comp["hyperplane_distance_sigma"],
                    reasons="; ".join(comp["reasons"]),
                )
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| d | seed | steps | rel. training loss | KL(true ‖ recovered) | faithfulness R² | whitening error | flagged |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['seed']} | {r['steps']} | {r['loss']:.2e} | {r['kl']:.3g} | {r['r2']:.3f} "
            f"| {r['werr']:.3g} | {'yes' if r['flagged'] else 'no'} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Per (d, steps): median KL and how many seeds were flagged."""
    out = ["| d | steps | median rel. loss | median KL | flagged |", "|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["d"], r["steps"]) for r in rows})
    for d, s in keys:
        sel = [r for r in rows if r["d"] == d and r["steps"] == s]
        out.append(
            f"| {d} | {s} | {np.median([r['loss'] for r in sel]):.2e} | {np.median([r['kl'] for r in sel]):.3g} "
            f"| {sum(r['flagged'] for r in sel)}/{len(sel)} |"
        )
    return "\n".join(out)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = {2: "o", 10: "s", 50: "^"}
    for d in sorted({r["d"] for r in rows}):
        for flagged, color in ((False, "tab:blue"), (True, "tab:red")):
            sel = [r for r in rows if r["d"] == d and r["flagged"] == flagged and np.isfinite(r["kl"])]
            if sel:
                ax.scatter([r["loss"] for r in sel], [max(r["kl"], 1e-6) for r in sel], marker=markers.get(d, "o"),
                           facecolors=color if flagged else "none", edgecolors=color,
                           label=f"d={d}, {'flagged' if flagged else 'not flagged'}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("relative training loss  mean((‖a‖ − D)²) / mean(D²)")
    ax.set_ylabel("KL(true ‖ recovered)  [nats], clipped at 1e-6")
    ax.set_title("Linear(d→d)+Abs fitted to a Mahalanobis distance")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny run (d=10, one seed, 0 and 2000 steps) for the tests")
    p.add_argument("--out", default="docs/img/recovery_mahalanobis.png", help="plot path ('' for none)")
    p.add_argument("--full-table", action="store_true", help="also print every run")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.quick:
        rows = run((10,), (0,), (0, 2000), n_train=300, n_test=300)
    else:
        rows = run(DIMS, SEEDS, STEPS, n_train=2000, n_test=2000)
    print(f"{len(rows)} runs in {time.perf_counter() - t0:.0f} s\n")
    print(summary(rows))
    if args.full_table or args.quick:
        print()
        print(table(rows))
    if args.out:
        plot(rows, args.out)
        print(f"\nwrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
