"""The empirical study of issue 7: GMM-initialized vs default-initialized MLPs, and the orthogonality penalty.

One command regenerates the tables and figures of docs/results.md::

    python examples/study.py                 # full run (~10 minutes on 2 cores)
    python examples/study.py --quick         # smoke run (seconds): wine only, 2 seeds, few epochs

Protocol (every number in docs/results.md comes from here):

* Data: scikit-learn's bundled digits, wine and breast_cancer.  For each seed, a stratified
  75/25 train/test split; StandardScaler fitted on the training part.
* Network: Linear(d, H) → Abs or ReLU → Linear(H, n_classes), float32, Adam (lr 1e-3),
  mini-batches of 32, cross-entropy.  The hidden layer has the width the mixture needs:
  H = K·r for Abs and 2·K·r for ReLU (K components, r principal directions kept per component).
* GMM init: ``GaussianMixture(K, full)`` on the standardized training inputs, truncated to the
  top r directions per component (:func:`gmmnet.hierarchy.truncate`), written into the first
  Linear with :func:`gmmnet.nn.init_linear_from_mixture` (Abs: rows λ^-½ v; ReLU: the exact pair
  [W; −W]).  The second Linear keeps PyTorch's default init.  Its wall-clock includes the fit.
* Default init: PyTorch's ``nn.Linear`` default (Kaiming-uniform, a=√5) for both layers, same width.
* Epochs to target: the first epoch whose test accuracy reaches the dataset's target; seconds
  to target = training time up to that epoch (evaluation excluded) plus, for GMM init, the
  mixture fit.
* Orthogonality: the loss adds ``λ · orthogonality_penalty(W, groups)`` (paper §3.4) over the
  blocks of r rows of the first layer (the components' blocks; for ReLU the + and − halves are
  separate blocks).  Reported: mean over neurons of |cos| between the neuron's direction and the
  nearest eigenvector of the GMM fitted on that split (all components' eigenvectors are
  candidates, for both inits, so the two are comparable), the chance level of that number for
  random directions, and the mean within-block |cos| between neurons (0 = orthogonal blocks,
  readable as Gaussians).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: name → (K components, r directions kept, target test accuracy, epochs)
DATASETS = {
    "digits": (10, 16, 0.95, 30),
    "wine": (3, 13, 0.95, 60),
    "breast_cancer": (4, 15, 0.95, 40),
}
INITS = ("gmm", "default")
ACTS = ("abs", "relu")
PENALTY = 0.01  # λ for the orthogonality penalty
LR = 1e-3
BATCH = 32
REG_COVAR = 1e-3  # standardized inputs: a floor of 1e-3 variance per direction


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int


def load_split(name: str, seed: int) -> Split:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    sc = StandardScaler().fit(xtr)
    return Split(sc.transform(xtr), ytr, sc.transform(xte), yte, int(len(np.unique(y))))


def fit_mixture(x: np.ndarray, k: int, seed: int):
    """(full-rank IR mixture, seconds) of a full-covariance GaussianMixture on x."""
    from sklearn.mixture import GaussianMixture

    from gmmnet.formats.sklearn import from_sklearn

    t0 = time.perf_counter()
    gm = GaussianMixture(n_components=k, covariance_type="full", reg_covar=REG_COVAR, random_state=seed).fit(x)
    m = from_sklearn(gm)
    return m, time.perf_counter() - t0


def eigen_directions(mixture) -> np.ndarray:
    """All components' eigenvectors as rows, (K·d, d)."""
    return np.concatenate([c.eigenvectors for c in mixture.components])


def cos_to_pcs(weight: np.ndarray, eig: np.ndarray) -> float:
    """Mean over rows of max |cos| to the candidate eigenvectors."""
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    return float(np.mean(np.max(np.abs(w @ eig.T), axis=1)))


def block_cos(weight: np.ndarray, groups) -> float:
    """Mean |cos| between distinct neurons of the same block."""
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    vals = []
    for g in groups:
        gram = np.abs(w[g] @ w[g].T)
        vals.append(gram[~np.eye(len(g), dtype=bool)])
    return float(np.mean(np.concatenate(vals)))


def chance_cos(eig: np.ndarray, n: int, rng) -> float:
    """The same cos-to-PCs number for n random (isotropic) directions."""
    return cos_to_pcs(rng.standard_normal((n, eig.shape[1])), eig)


def run_one(split: Split, mixture, fit_s: float, *, k: int, r: int, init: str, act: str, penalty: float,
            epochs: int, seed: int, eig: np.ndarray) -> dict:
    import torch
    from torch import nn

    from gmmnet.hierarchy import truncate
    from gmmnet.nn import Abs, init_linear_from_mixture, neuron_groups, orthogonality_penalty

    torch.manual_seed(seed)
    d = split.x_train.shape[1]
    h = k * r * (2 if act == "relu" else 1)
    t_init = time.perf_counter()
    first = nn.Linear(d, h)
    if init == "gmm":
        init_linear_from_mixture(first, truncate(mixture, r), activation=act)
    init_s = time.perf_counter() - t_init + (fit_s if init == "gmm" else 0.0)
    model = nn.Sequential(first, Abs() if act == "abs" else nn.ReLU(), nn.Linear(h, split.n_classes))
    groups = neuron_groups([r] * k, act)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    xtr = torch.as_tensor(split.x_train, dtype=torch.float32)
    ytr = torch.as_tensor(split.y_train, dtype=torch.long)
    xte = torch.as_tensor(split.x_test, dtype=torch.float32)
    yte = np.asarray(split.y_test)
    gen = torch.Generator().manual_seed(seed)

    def evaluate():
        with torch.no_grad():
            acc = float(np.mean(model(xte).argmax(1).numpy() == yte))
        w = first.weight.detach().double().numpy()
        return acc, cos_to_pcs(w, eig), block_cos(w, groups)

    acc, cpc, bc = evaluate()
    curve, cos_curve, block_curve, times = [acc], [cpc], [bc], [init_s]
    train_s = init_s
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), BATCH):
            idx = perm[i:i + BATCH]
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            if penalty:
                loss = loss + penalty * orthogonality_penalty(first.weight, groups)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s += time.perf_counter() - t0
        acc, cpc, bc = evaluate()
        curve.append(acc)
        cos_curve.append(cpc)
        block_curve.append(bc)
        times.append(train_s)
    return {"acc": curve, "cos_pc": cos_curve, "block_cos": block_curve, "seconds": times}


def first_reach(curve, target):
    for e, a in enumerate(curve):
        if a >= target:
            return e
    return None


def run_study(datasets: dict, seeds: list[int], *, epoch_scale: float = 1.0, log=print) -> dict:
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    results = {"config": {"penalty": PENALTY, "lr": LR, "batch": BATCH, "reg_covar": REG_COVAR,
                          "seeds": seeds, "datasets": {}}, "runs": []}
    for name, (k, r, target, epochs) in datasets.items():
        epochs = max(1, int(round(epochs * epoch_scale)))
        results["config"]["datasets"][name] = {"K": k, "r": r, "target": target, "epochs": epochs}
        for seed in seeds:
            split = load_split(name, seed)
            mixture, fit_s = fit_mixture(split.x_train, k, seed)
            eig = eigen_directions(mixture)
            chance = chance_cos(eig, 2000, rng)
            for init in INITS:
                for act in ACTS:
                    for pen in (0.0, PENALTY):
                        t0 = time.perf_counter()
                        out = run_one(split, mixture, fit_s, k=k, r=r, init=init, act=act, penalty=pen,
                                      epochs=epochs, seed=seed, eig=eig)
                        out.update(dataset=name, seed=seed, init=init, act=act, penalty=pen, chance_cos=chance,
                                   fit_seconds=fit_s)
                        results["runs"].append(out)
                        log(f"{name:13s} seed {seed} {init:7s} {act:4s} λ={pen:<5g} final acc {out['acc'][-1]:.3f} "
                            f"cos→PC {out['cos_pc'][-1]:.2f} ({time.perf_counter() - t0:.1f}s)")
    return results


# ---------------------------------------------------------------------------
# tables and figures


def _ms(values, fmt="{:.3f}"):
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "–"
    return (fmt + " ± " + fmt).format(v.mean(), v.std(ddof=1) if v.size > 1 else 0.0)


def _select(runs, **kw):
    return [r for r in runs if all(r[k] == v for k, v in kw.items())]


def tables(results: dict) -> str:
    runs = results["runs"]
    cfg = results["config"]
    lines = ["### Convergence and accuracy (no penalty)", "",
             "| dataset | target | init | act | epochs to target (reached) | seconds to target | of which init | "
             "final test acc | best test acc |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, dc in cfg["datasets"].items():
        for act in ACTS:
            for init in INITS:
                sel = _select(runs, dataset=name, init=init, act=act, penalty=0.0)
                reach = [first_reach(r["acc"], dc["target"]) for r in sel]
                ep = [e for e in reach if e is not None]
                secs = [r["seconds"][e] for r, e in zip(sel, reach) if e is not None]
                lines.append(
                    f"| {name} | {dc['target']:.2f} | {init} | {act} | {_ms(ep, '{:.1f}')} ({len(ep)}/{len(sel)}) | "
                    f"{_ms(secs, '{:.2f}')} | {np.mean([r['seconds'][0] for r in sel]):.2f} | "
                    f"{_ms([r['acc'][-1] for r in sel])} | "
                    f"{_ms([max(r['acc']) for r in sel])} |")
    lines += ["", f"### Orthogonality penalty (λ = {cfg['penalty']:g})", "",
              "| dataset | init | act | λ | mean abs cos to nearest PC, start → end | chance | "
              "within-block abs cos at end | final test acc |",
              "|---|---|---|---|---|---|---|---|"]
    for name in cfg["datasets"]:
        for init in INITS:
            for act in ACTS:
                for pen in (0.0, cfg["penalty"]):
                    sel = _select(runs, dataset=name, init=init, act=act, penalty=pen)
                    lines.append(
                        f"| {name} | {init} | {act} | {pen:g} | {np.mean([r['cos_pc'][0] for r in sel]):.2f} → "
                        f"{_ms([r['cos_pc'][-1] for r in sel], '{:.2f}')} | {np.mean([r['chance_cos'] for r in sel]):.2f} | "
                        f"{_ms([r['block_cos'][-1] for r in sel], '{:.3f}')} | {_ms([r['acc'][-1] for r in sel])} |")
    return "\n".join(lines)


def plots(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    names = list(results["config"]["datasets"])
    style = {("gmm", "abs"): ("C0", "-"), ("gmm", "relu"): ("C1", "-"),
             ("default", "abs"): ("C0", "--"), ("default", "relu"): ("C1", "--")}
    paths = []
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for (init, act), (color, ls) in style.items():
            sel = _select(runs, dataset=name, init=init, act=act, penalty=0.0)
            a = np.array([r["acc"] for r in sel])
            m, s = a.mean(0), a.std(0)
            ep = np.arange(len(m))
            ax.plot(ep, m, color=color, ls=ls, label=f"{init} init, {act}")
            ax.fill_between(ep, m - s, m + s, color=color, alpha=0.12)
        ax.axhline(results["config"]["datasets"][name]["target"], color="gray", lw=0.8, ls=":")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylim(0.0, 1.0)
    axes[0][0].set_ylabel("test accuracy (mean ± sd over seeds)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    p = out_dir / "study_curves.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for init, ls in (("gmm", "-"), ("default", "--")):
            for pen, color in ((0.0, "C2"), (results["config"]["penalty"], "C3")):
                sel = _select(runs, dataset=name, init=init, act="abs", penalty=pen)
                c = np.array([r["cos_pc"] for r in sel]).mean(0)
                ax.plot(np.arange(len(c)), c, color=color, ls=ls, label=f"{init} init, λ={pen:g}")
        chance = np.mean([r["chance_cos"] for r in _select(runs, dataset=name)])
        ax.axhline(chance, color="gray", lw=0.8, ls=":", label="random directions")
        ax.set_title(f"{name} (Abs)")
        ax.set_xlabel("epoch")
        ax.set_ylim(0.0, 1.02)
    axes[0][0].set_ylabel("mean |cos| to nearest PC")
    axes[0][-1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    p = out_dir / "study_orthogonality.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: wine only, 2 seeds, a fifth of the epochs")
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img",
                    help="folder for study_curves.png and study_orthogonality.png (default docs/img)")
    ap.add_argument("--json", type=Path, default=None, help="also write every learning curve to this JSON file")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="redraw the tables and figures from a JSON file written by --json (no training)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        print(tables(results))
        print(f"figures: {', '.join(str(p) for p in plots(results, args.out))}")
        return 0
    if args.quick:
        datasets, seeds, scale = {"wine": DATASETS["wine"]}, [0, 1], 0.2
    else:
        datasets, seeds, scale = DATASETS, list(range(args.seeds)), 1.0
    results = run_study(datasets, seeds, epoch_scale=scale)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = plots(results, args.out)
    if args.json:
        args.json.write_text(json.dumps(results))
    print()
    print(tables(results))
    print()
    print(f"figures: {', '.join(str(p) for p in paths)}")
    print(f"total wall-clock {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
