"""Benchmark: a large GMM → ONNX (gmmnet's exporter) → gmmnet.formats.onnx.read.from_onnx, timed.

Default K = 256 components of full covariance in d = 256 (65 536 neurons).  Prints wall and
CPU seconds of reading the graph and of the whole recovery, and the recovery's relative error
on means and covariances.  CPU seconds are the better figure on a shared machine.

Run:  python examples/recovery_benchmark.py [--components 256] [--dims 256] [--dtype float32]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from gmmnet import linalg
from gmmnet.formats.onnx import to_onnx
from gmmnet.formats.onnx.read import from_onnx, read_layers
from gmmnet.ir import Component, Mixture


def random_full_mixture(rng, k: int, d: int) -> Mixture:
    comps = []
    for _ in range(k):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))
        lam = np.exp(rng.uniform(0, np.log(10.0), d))
        order = np.argsort(-lam)
        comps.append(Component(mean=3.0 * rng.standard_normal(d), eigenvectors=q.T[order], eigenvalues=lam[order],
                               weight=1.0 / k))
    return Mixture(n_features=d, covariance_type="full", components=comps)


def timed(f):
    t, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--components", type=int, default=256)
    p.add_argument("--dims", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    mix = random_full_mixture(rng, args.components, args.dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(mix, dtype=args.dtype)
    del model.metadata_props[:]
    best = {}
    for _ in range(args.repeat):
        _, w_read, c_read = timed(lambda: read_layers(model))
        (rec, rep), w_all, c_all = timed(lambda: from_onnx(model))
        for key, v in (("read_wall", w_read), ("read_cpu", c_read), ("from_onnx_wall", w_all), ("from_onnx_cpu", c_all)):
            best[key] = min(best.get(key, np.inf), v)
    covs = lambda m: np.stack([linalg.covariance(c.eigenvectors, c.eigenvalues) for c in m.components])  # noqa: E731
    err_mean = float(np.max(np.abs(rec.means - mix.means)) / np.max(np.abs(mix.means)))
    cr, cm = covs(rec), covs(mix)
    err_cov = float(np.max(np.abs(cr - cm)) / np.max(np.abs(cm)))
    print(f"K={args.components} d={args.dims} {args.dtype} graph, {args.components * args.dims} neurons "
          f"(best of {args.repeat})")
    print(f"read_layers: {best['read_wall']:.2f} s wall, {best['read_cpu']:.2f} s CPU")
    print(f"from_onnx:   {best['from_onnx_wall']:.2f} s wall, {best['from_onnx_cpu']:.2f} s CPU")
    print(f"relative error: means {err_mean:.1e}, covariances {err_cov:.1e}; exact={rep['exact']}")
    return {**best, "err_mean": err_mean, "err_cov": err_cov, "exact": rep["exact"]}


if __name__ == "__main__":
    main()
