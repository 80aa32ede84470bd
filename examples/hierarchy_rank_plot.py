"""Error and speed against rank for a digits-sized model, in the graph: writes docs/img/hierarchy_rank.png.

For each rank r the mixture is truncated (gmmnet.hierarchy.truncate), exported as a deep network
(gmmnet.formats.onnx.deep, centering="none": K·r neurons plus the residual ‖x − μ_k‖²/σ² from
one MatMul) and run on
onnxruntime (1 thread).  Errors are the graph's log-likelihood and labels against the *full*
model's; speed is the full-rank graph's time divided by the rank-r graph's, measured side by side
(median of repeats, interleaved), so machine noise cancels to first order.

Run:  python examples/hierarchy_rank_plot.py [--components 10] [--dims 64] [--out docs/img/hierarchy_rank.png]
Prints a markdown table (used in docs/hierarchy.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from gmmnet.formats.onnx import deep, session
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.hierarchy import truncate


def digits(dims: int) -> np.ndarray:
    x = load_digits().data
    x = PCA(n_components=dims, random_state=0).fit_transform(x)
    return StandardScaler().fit_transform(x)


def measure(mixture, x, ranks, repeats: int, dtype: str) -> list[dict]:
    opts = {"dtype": dtype, "outputs": ("label", "log_likelihood"), "centering": "none"}
    full_model = deep.to_onnx(mixture, **opts)
    sessions = {None: session(full_model, intra_op_num_threads=1)}
    for r in ranks:
        sessions[r] = session(deep.to_onnx(truncate(mixture, r), **opts), intra_op_num_threads=1)
    xin = x.astype(dtype)
    ref_label, ref_ll = sessions[None].run(None, {"X": xin})
    times = {k: [] for k in sessions}
    for _ in range(repeats):  # interleaved: drifts in machine load hit every rank alike
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"X": xin})
            times[k].append(time.perf_counter() - t)
    t_full = float(np.median(times[None]))
    rows = []
    for r in ranks:
        label, ll = sessions[r].run(None, {"X": xin})
        d = np.abs(ll.astype(np.float64) - ref_ll)
        rows.append({"rank": r, "max": float(d.max()), "mean": float(d.mean()),
                     "labels": float(np.mean(label == ref_label)), "speedup": t_full / float(np.median(times[r]))})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--dims", type=int, default=64, help="PCA dimensions of digits (64 = all pixels' span)")
    p.add_argument("--ranks", default="1,2,4,8,16,24,32,48,64")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", default="docs/img/hierarchy_rank.png")
    args = p.parse_args(argv)
    x = digits(args.dims)
    gm = GaussianMixture(args.components, covariance_type="full", random_state=0, reg_covar=1e-3).fit(x)
    ranks = [int(r) for r in args.ranks.split(",")]
    rows = measure(from_sklearn(gm), x, ranks, args.repeats, args.dtype)
    print(f"digits (n={x.shape[0]}), PCA to d={args.dims}, standardized; GaussianMixture K={args.components}, full, "
          f"reg_covar=1e-3, random_state=0; {args.dtype} graphs (centering none) on onnxruntime, 1 thread, median of {args.repeats}\n")
    print("| rank r | neurons K·r | max \\|Δ log p\\| | mean \\|Δ log p\\| | label agreement | speed-up vs r = d |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rank']} | {args.components * r['rank']} | {r['max']:.3g} | {r['mean']:.3g} | {r['labels']:.3f} "
              f"| {r['speedup']:.2f}× |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rk = [r["rank"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.semilogy(rk, [max(r["mean"], 1e-9) for r in rows], "o-", label="mean |Δ log p|")
    a1.semilogy(rk, [max(r["max"], 1e-9) for r in rows], "s--", label="max |Δ log p|")
    a1.set_xlabel("rank r (directions kept per component)")
    a1.set_ylabel("nats (vs the full model)")
    a1b = a1.twinx()
    a1b.plot(rk, [100 * r["labels"] for r in rows], "^:", color="tab:green", label="labels agree")
    a1b.set_ylabel("label agreement (%)", color="tab:green")
    a1.legend(loc="lower left")
    a1.set_title("error of the truncated graph")
    a2.plot(rk, [r["speedup"] for r in rows], "o-", color="tab:red")
    a2.axhline(1.0, color="gray", lw=0.8)
    a2.set_xlabel("rank r")
    a2.set_ylabel("speed-up vs r = d (×)")
    a2.set_title(f"onnxruntime, {x.shape[0]} rows, K={args.components}, d={args.dims}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
