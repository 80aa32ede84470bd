"""Conversion time of a large full-covariance mixture (issue 15): sklearn → IR → ONNX / sklearn.

Builds a fitted ``GaussianMixture`` (K components over d features, random covariances with
condition numbers up to ``--cond``) without running EM, then times, in one process:

* ``from_sklearn`` (eigen-bases of K precisions, IR validation),
* the IR's JSON round trip (``to_json`` + ``ir.from_json``),
* ``to_sklearn`` (covariances and stable precision factors),
* ``to_onnx`` (float32 and the default compute),

reporting wall and CPU seconds.  ``--load N`` runs N busy processes beside it, to see whether
the conversion collapses on a loaded machine (BLAS thread contention did: 33 s for 256 SVDs).

Run: ``python benchmarks/conversion_speed.py [--K 256 --d 256 --cond 1e3 --load 0]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np


def _spin() -> None:  # pragma: no cover - a CPU hog for --load
    while True:
        pass


def fitted_mixture(K: int, d: int, cond: float, seed: int = 0):
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    gm = GaussianMixture(K, covariance_type="full")
    q, _ = np.linalg.qr(rng.standard_normal((K, d, d)))
    lam = np.exp(rng.uniform(0, np.log(cond), (K, d)))
    covs = (q * lam[:, None, :]) @ np.swapaxes(q, 1, 2)
    covs = (covs + np.swapaxes(covs, 1, 2)) / 2
    gm.weights_ = rng.dirichlet(np.ones(K))
    gm.means_ = rng.standard_normal((K, d)) * 3
    gm.covariances_ = covs
    gm.precisions_cholesky_ = np.swapaxes(np.linalg.inv(np.linalg.cholesky(covs)), 1, 2)
    gm.precisions_ = gm.precisions_cholesky_ @ np.swapaxes(gm.precisions_cholesky_, 1, 2)
    gm.converged_, gm.n_iter_, gm.n_features_in_ = True, 0, d
    return gm


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall": round(time.perf_counter() - w, 3), "cpu": round(time.process_time() - c, 3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--cond", type=float, default=1e3, help="largest condition number of a covariance")
    ap.add_argument("--load", type=int, default=0, help="busy processes to run beside the conversion")
    ap.add_argument("--no-onnx", action="store_true", help="skip to_onnx")
    args = ap.parse_args(argv)

    from gmmnet import ir
    from gmmnet.formats.sklearn import from_sklearn, to_sklearn

    gm = fitted_mixture(args.K, args.d, args.cond)
    hogs = [mp.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for h in hogs:
        h.start()
    try:
        res = {"K": args.K, "d": args.d, "cond": args.cond, "load": args.load}
        m, res["from_sklearn"] = timed(lambda: from_sklearn(gm))
        text, res["to_json"] = timed(m.to_json)
        _, res["from_json"] = timed(lambda: ir.from_json(text))
        _, res["to_sklearn"] = timed(lambda: to_sklearn(m))
        if not args.no_onnx:
            from gmmnet.formats.onnx import to_onnx

            for compute in ("float32", None):
                kw = {} if compute is None else {"compute": compute}
                _, res[f"to_onnx_{compute or 'default'}"] = timed(lambda: to_onnx(m, **kw))
    finally:
        for h in hogs:
            h.terminate()
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
