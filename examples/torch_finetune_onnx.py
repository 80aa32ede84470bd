"""GMM → torch → fine-tune → ONNX → onnxruntime.

1. Fit a ``GaussianMixture`` with few EM iterations (a deliberately rough start) on standardized wine.
2. ``gmmnet.nn.to_torch``: the same mixture as a differentiable network (exact at the start).
3. Fine-tune the network by maximum likelihood (Adam on −log p(x)); the density head keeps it a
   normalized mixture while it trains.
4. ``mixture_from_module``: read the trained network back as a mixture (IR), export it with
   ``to_onnx`` and score held-out data with onnxruntime; the ONNX log-likelihood matches the
   fine-tuned torch module.

Run: ``python examples/torch_finetune_onnx.py [--epochs N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from gmmnet.formats.onnx import run, to_onnx
from gmmnet.formats.sklearn import from_sklearn
from gmmnet.nn import mixture_from_module, to_torch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=200, help="full-batch Adam steps (default 200)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the ONNX file (default: a temporary one)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="gmmnet-torch-"))
    out.mkdir(parents=True, exist_ok=True)

    X, _ = load_wine(return_X_y=True)
    X_tr, X_te = train_test_split(X, test_size=0.3, random_state=0)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(n_components=3, max_iter=2, reg_covar=1e-2, random_state=0).fit(X_tr)
    net = to_torch(from_sklearn(gm), device="auto")  # float64; the GPU when torch sees one
    x_tr = torch.as_tensor(X_tr, device=net.linear.weight.device)
    x_te = torch.as_tensor(X_te, device=net.linear.weight.device)
    with torch.no_grad():
        before = (-net(x_tr).log_likelihood.mean().item(), -net(x_te).log_likelihood.mean().item())
    print(f"start (2 EM steps): train NLL {before[0]:.3f}, test NLL {before[1]:.3f} "
          f"(sklearn score: {-gm.score(X_te):.3f})")

    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(args.epochs):
        opt.zero_grad()
        loss = -net(x_tr).log_likelihood.mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = (-net(x_tr).log_likelihood.mean().item(), -net(x_te).log_likelihood.mean().item())
        ll_torch = net(x_te).log_likelihood.cpu().numpy()
    print(f"after {args.epochs} Adam steps: train NLL {after[0]:.3f}, test NLL {after[1]:.3f}")

    mixture = mixture_from_module(net)  # the trained network as an IR mixture
    path = out / "finetuned.onnx"
    path.write_bytes(to_onnx(mixture, dtype="float64").SerializeToString())
    res = run(str(path), X_te)
    err64 = float(np.max(np.abs(res["log_likelihood"] - ll_torch)))
    res32 = run(to_onnx(mixture, dtype="float32"), X_te.astype(np.float32))
    err32 = float(np.max(np.abs(res32["log_likelihood"].astype(np.float64) - ll_torch) / (1 + np.abs(ll_torch))))
    print(f"onnxruntime on {path.name}: labels {res['label'][:8].tolist()}..., "
          f"max |ll_onnx − ll_torch| = {err64:.1e} (float64 graph), relative {err32:.1e} (float32 graph)")
    return {"before": before, "after": after, "err64": err64, "err32": err32, "onnx": path}


if __name__ == "__main__":
    main()
