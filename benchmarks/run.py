"""Speed and accuracy of gmmnet's ONNX graphs and the prototype graphs, side by side with skl2onnx.

    python benchmarks/run.py             # every size, type and section (about 20-40 minutes on 2 busy cores)
    python benchmarks/run.py --quick     # tiny sizes: checks that the script runs (a minute)
    python benchmarks/run.py --sections datasets,conversion   # a subset of the sections

Everything is measured in one run, with interleaved repeats: each round runs every candidate
once (in a rotated order), and the figures are medians over the rounds (--repeats ≥ 5) of each
candidate's time and of its ratio to skl2onnx *in the same round*, with the spread of that
ratio (quartiles, min–max).  Two timings per candidate:

- ``wall``: wall-clock time of one ``session.run`` on --threads onnxruntime threads (the issue's
  setting; noisy when other processes share the cores);
- ``cpu``: process CPU time of one ``session.run`` on one onnxruntime thread (no spinning
  threads, so it measures the work done and is steadier on a shared machine).

Models: for each (K, d, N) and covariance type, a GaussianMixture with *overlapping* components
(most rows have no responsibility above 0.99; the fractions are reported) and, at the first size,
a BayesianGaussianMixture of every type (one M-step from the overlapping mixture's
responsibilities).  The IR given to the graph builders is ``gmmnet.from_sklearn(estimator)``.

Candidates (all fetch label, responsibilities and log_likelihood; skl2onnx its label,
probabilities and score_samples; sklearn is ``score_samples``):

- ``skl2onnx``: skl2onnx's float32 model (target opset 17);
- ``gmmnet`` (**the default**, marked in the tables): ``gmmnet.formats.onnx.to_onnx(mixture)`` with
  default options; ``gmmnet_f32``: with ``compute="float32"``; ``gmmnet_f64``: with
  ``compute="float64"`` (the accurate opt-in: the neuron network in float64);
- with ``--prototypes``, ``proto:<label>``: the research prototypes of benchmarks/prototypes.py
  (``CANDIDATES``).

Errors are against scikit-learn in float64 evaluated on the float32-rounded input:
log-likelihood max|Δ|/(1+|ref|) and responsibilities max|Δ| over all rows.

Other sections: accuracy on real data sets (iris, wine, breast_cancer, digits; standardized
and raw; GaussianMixture and BayesianGaussianMixture), onnxruntime profiles (time per operator
type) and the operators left after onnxruntime's optimizations for skl2onnx and each default
prototype, and the conversion of a K=256, d=256 full model to ONNX and back (library and
CLI, with a cProfile summary of where the time goes).  ``--sections ...,ranks`` adds the
rank-truncation curve of today's exporter.

Writes --json (default benchmarks/results.json) and the markdown tables into --doc (default
docs/performance.md) between ``<!-- benchmark:start -->`` and ``<!-- benchmark:end -->``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
import warnings

SIZES = [(32, 64, 50_000), (8, 16, 100_000), (64, 128, 20_000)]
QUICK_SIZES = [(3, 4, 2_000), (4, 8, 1_000)]
COV_TYPES = ("full", "tied", "diag", "spherical")
SECTIONS = ("sizes", "profiles", "datasets", "conversion")
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; timings mean little)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime and BLAS threads of the wall timing (default 2)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds per measurement (>= 5, default 7)")
    ap.add_argument("--json", default=None, help="results file (default benchmarks/results.json)")
    ap.add_argument("--doc", default=None, help="markdown file to update between the markers (default docs/performance.md)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)} (default: all), plus 'ranks' for the "
                    "rank-truncation curve of today's exporter")
    ap.add_argument("--resume", action="store_true", help="keep the cases already in --json (an interrupted run)")
    ap.add_argument("--sizes", default=None, help="K,d,N;K,d,N... instead of the default sizes")
    ap.add_argument("--prototypes", action="store_true",
                    help="also time the research prototypes of benchmarks/prototypes.py (sizes and datasets sections)")
    args = ap.parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv)
                 if not a.startswith(("--json", "--doc")) and not a.endswith((".json", ".md"))]
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(args.sections) - set(SECTIONS) - {"ranks"}
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}, ranks")
    if args.repeats < 5:
        ap.error("--repeats must be at least 5 (medians of >= 5 interleaved rounds)")
    return args


# ---------------------------------------------------------------------------
# models and data


def overlapping_mixture(rng, K: int, d: int, ct: str, sep: float = 3.0, cond: float = 10.0, jitter: float = 0.2,
                        tilt: float = 0.15):
    """K components whose responsibilities are mostly not 0/1.

    A base covariance Σ0 (eigenvalues log-uniform over ``cond``, random rotation); means drawn from
    N(0, Σ0) scaled so that two means are about ``sep`` standard deviations apart; full: each
    component rotates Σ0 slightly (a random rotation of angle ~``tilt``) and jitters its
    eigenvalues by exp(N(0, jitter)); tied: Σ0; diag: per-feature variances jittered around one
    base; spherical: one variance per component exp(N(0, jitter)).
    """
    import numpy as np
    from scipy.linalg import expm

    from gmmnet.ir import Component, Mixture

    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))
    lam0 = np.exp(rng.uniform(0, np.log(cond), d))
    base = np.exp(rng.uniform(0, np.log(cond), d))  # diag: per-feature variances
    weights = rng.dirichlet(np.full(K, 5.0))
    s = sep / np.sqrt(2 * d)
    comps = []
    for k in range(K):
        z = rng.standard_normal(d) * s
        if ct == "full":
            a = rng.standard_normal((d, d)) * tilt / np.sqrt(d)
            V = (expm(a - a.T) @ q).T
            lam = lam0 * np.exp(rng.normal(0, jitter, d))
            mean = (q * np.sqrt(lam0)) @ z
        elif ct == "tied":
            V, lam, mean = q.T, lam0, (q * np.sqrt(lam0)) @ z
        elif ct == "diag":
            V, lam, mean = np.eye(d), base * np.exp(rng.normal(0, jitter, d)), np.sqrt(base) * z
        else:
            V, lam, mean = np.eye(d), np.full(d, np.exp(rng.normal(0, jitter))), z
        if ct in ("full", "tied"):
            order = np.argsort(-lam)
            V, lam = np.ascontiguousarray(V[order]), lam[order]
        comps.append(Component(mean=mean, eigenvectors=V, eigenvalues=lam, weight=float(weights[k])))
    return Mixture(n_features=d, covariance_type=ct, components=comps)


def sample(rng, mix, n: int):
    """n float32 rows drawn from the mixture (components chosen by weight)."""
    import numpy as np

    labels = rng.choice(mix.n_components, size=n, p=mix.weights)
    out = np.empty((n, mix.n_features))
    for k, c in enumerate(mix.components):
        idx = np.flatnonzero(labels == k)
        z = rng.standard_normal((idx.size, c.rank)) * np.sqrt(c.eigenvalues)
        out[idx] = c.mean + z @ c.eigenvectors
    return out.astype(np.float32)


def bayesian_from(mix, X):
    """A BayesianGaussianMixture after one M-step from ``mix``'s responsibilities on X (its private
    ``_initialize``: fitting K=32, d=64 by EM takes minutes on a busy machine)."""
    import numpy as np
    from sklearn.mixture import BayesianGaussianMixture

    from gmmnet import linalg

    X = np.asarray(X, np.float64)
    est = BayesianGaussianMixture(n_components=mix.n_components, covariance_type=mix.covariance_type, random_state=0)
    est._check_parameters(X)
    est._initialize(X, linalg.responsibilities(mix, X))
    est._set_parameters(est._get_parameters())
    est.converged_, est.n_iter_, est.lower_bound_, est.n_features_in_ = True, 0, -np.inf, X.shape[1]
    return est


def skl2onnx_model(est, x):
    import numpy as np
    import skl2onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skl2onnx.to_onnx(est, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3},
                                options={id(est): {"score_samples": True}})


def gmmnet_model(mix, **kw):
    from gmmnet.formats.onnx.export import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(mix, **kw)


def meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


# ---------------------------------------------------------------------------
# sessions and timing


def ort_session(model, threads: int, **extra):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    for key, value in extra.items():
        setattr(so, key, value)
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


DEFAULT_OUTS = ["label", "responsibilities", "log_likelihood"]
SKL2ONNX_OUTS = ["label", "probabilities", "score_samples"]


def runner(sess, x, outs):
    name = sess.get_inputs()[0].name
    return lambda: sess.run(outs, {name: x})


def interleaved(fns: dict, repeats: int, clock) -> dict:
    """{name: [seconds per round]}: each round runs every function once, in a rotated order."""
    names = list(fns)
    for f in fns.values():  # warm-up: first-run allocations, lazy initialisation
        f()
    times = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = clock()
            fns[k]()
            times[k].append(clock() - t)
    return times


def summarize(times: dict, base: str = "skl2onnx") -> dict:
    """Median time per candidate and the median, quartiles and range of its per-round ratio to ``base``."""
    import numpy as np

    b = np.asarray(times[base])
    out = {}
    for k, v in times.items():
        v = np.asarray(v)
        r = v / b
        out[k] = {"median": float(np.median(v)), "ratio": float(np.median(r)),
                  "ratio_q25": float(np.percentile(r, 25)), "ratio_q75": float(np.percentile(r, 75)),
                  "ratio_min": float(r.min()), "ratio_max": float(r.max())}
    return out


# ---------------------------------------------------------------------------
# the main comparison


def _errors(outs, ll_ref, resp_ref, gap):
    import numpy as np

    label, resp, ll = outs
    ll = np.asarray(ll, np.float64).ravel()
    label = np.asarray(label).ravel()  # skl2onnx's label is [N, 1]
    lab_ref = np.argmax(resp_ref, axis=1)
    return {"log_likelihood": float(np.max(np.abs(ll - ll_ref) / (1 + np.abs(ll_ref)))),
            "responsibilities": float(np.max(np.abs(np.asarray(resp, np.float64) - resp_ref))),
            "label_mismatches": int(np.sum((label != lab_ref) & (gap > 1e-6)))}


def overlap_stats(resp_ref) -> tuple[dict, object]:
    """Fractions of rows with max responsibility < 0.99 / 0.9, and of rows whose two largest
    log-joints are within g nats (the rows a float64 recomputation of near ties would redo)."""
    import numpy as np

    top = np.sort(resp_ref, axis=1)[:, -2:] if resp_ref.shape[1] > 1 else np.hstack([np.zeros_like(resp_ref), resp_ref])
    with np.errstate(divide="ignore"):
        gap = np.log(top[:, 1]) - np.log(top[:, 0])
    stats = {"max_resp_below_0.99": float(np.mean(resp_ref.max(1) < 0.99)),
             "max_resp_below_0.9": float(np.mean(resp_ref.max(1) < 0.9))}
    for g in (1, 3, 5, 10):
        stats[f"top2_gap_below_{g}"] = float(np.mean(gap < g))
    return stats, gap


def bench_case(K, d, N, ct, source, args) -> dict:
    import numpy as np

    import prototypes as P
    from gmmnet import from_sklearn
    from gmmnet.formats.sklearn import to_sklearn

    rng = np.random.default_rng([K, d, N, COV_TYPES.index(ct), source == "BGM"])  # each case on its own seed
    truth = overlapping_mixture(rng, K, d, ct)
    X = sample(rng, truth, N)
    xr = X.astype(np.float64)
    if source == "BGM":
        est = bayesian_from(truth, xr[:20_000])
    else:
        est = to_sklearn(truth)
    mix = from_sklearn(est)
    ll_ref, resp_ref = est.score_samples(xr), est.predict_proba(xr)
    overlap, gap = overlap_stats(resp_ref)

    build_s = {}
    t = time.perf_counter()
    models = {"skl2onnx": skl2onnx_model(est, X)}
    build_s["skl2onnx"] = time.perf_counter() - t
    for key, kw in (("gmmnet", {}), ("gmmnet_f32", {"compute": "float32"}), ("gmmnet_f64", {"compute": "float64"})):
        t = time.perf_counter()
        models[key] = gmmnet_model(mix, **kw)
        build_s[key] = time.perf_counter() - t
    if args.prototypes:
        for label in P.CANDIDATES[ct]:
            t = time.perf_counter()
            models[f"proto:{label}"] = P.build(label, mix)
            build_s[f"proto:{label}"] = time.perf_counter() - t
    default = "gmmnet"

    outs = {k: (SKL2ONNX_OUTS if k == "skl2onnx" else DEFAULT_OUTS) for k in models}
    timing, errors = {}, {}
    for mode, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        # one mode's sessions at a time: each keeps its activations (up to GBs at K·d = 8192) in its arena
        sessions = {k: ort_session(m, args.threads if mode == "wall" else 1) for k, m in models.items()}
        if mode == "wall":
            errors = {k: _errors(s.run(outs[k], {s.get_inputs()[0].name: X}), ll_ref, resp_ref, gap)
                      for k, s in sessions.items()}
        fns = {k: runner(s, X, outs[k]) for k, s in sessions.items()}
        if mode == "wall":
            fns["sklearn"] = lambda: est.score_samples(X)
        timing[mode] = summarize(interleaved(fns, args.repeats, clock))
        del sessions, fns
        gc.collect()
    return {"K": K, "d": d, "N": N, "covariance_type": ct, "source": source, "overlap": overlap,
            "default": default, "gmmnet_compute": meta(models["gmmnet"]).get("compute"),
            "gmmnet_layout": meta(models["gmmnet"]).get("layout"),
            "proto_docs": {k: m.doc_string for k, m in models.items() if k.startswith("proto:")},
            "build_seconds": build_s, "errors": errors, "timing": timing}


# ---------------------------------------------------------------------------
# real data sets


def datasets(quick: bool) -> dict:
    from sklearn import datasets as skd
    from sklearn.preprocessing import StandardScaler

    loaders = {"iris": skd.load_iris}
    if not quick:
        loaders.update(wine=skd.load_wine, breast_cancer=skd.load_breast_cancer, digits=skd.load_digits)
    out = {}
    for name, load in loaders.items():
        raw = load().data
        out[f"{name}"] = StandardScaler().fit_transform(raw)
        out[f"{name}_raw"] = raw
    return out


def bench_datasets(args) -> list[dict]:
    """Errors of every candidate on real data (K = 3; 10 for digits), against scikit-learn in float64
    on standardized data and against gmmnet.linalg (centred float64) on raw data, where
    scikit-learn's own float64 expanded diag/spherical form cancels (as tests/test_onnx_export.py)."""
    import numpy as np
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    import prototypes as P
    from gmmnet import from_sklearn, linalg

    rows = []
    for name, data in datasets(args.quick).items():
        x32 = data.astype(np.float32)
        xr = x32.astype(np.float64)
        k = 10 if name.startswith("digits") else 3
        for ct in COV_TYPES:
            for cls in (GaussianMixture, BayesianGaussianMixture):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est = cls(n_components=k, covariance_type=ct, random_state=0, max_iter=200).fit(data)
                mix = from_sklearn(est)
                if name.endswith("_raw"):
                    ll_ref, resp_ref = linalg.log_likelihood(mix, xr), linalg.responsibilities(mix, xr)
                else:
                    ll_ref, resp_ref = est.score_samples(xr), est.predict_proba(xr)
                _, gap = overlap_stats(resp_ref)
                models = {"skl2onnx": skl2onnx_model(est, x32), "gmmnet": gmmnet_model(mix),
                          "gmmnet_f32": gmmnet_model(mix, compute="float32"),
                          "gmmnet_f64": gmmnet_model(mix, compute="float64")}
                if args.prototypes:
                    for label in P.CANDIDATES[ct]:
                        models[f"proto:{label}"] = P.build(label, mix)
                m0 = meta(models["gmmnet"])
                row = {"data": name, "covariance_type": ct, "source": "BGM" if cls is BayesianGaussianMixture else "GMM",
                       "K": k, "default": "gmmnet", "errors": {},
                       "default_doc": f"{m0.get('layout')}: {m0.get('compute')}, centering {m0.get('centering')}"}
                for key, m in models.items():
                    s = ort_session(m, 1)
                    row["errors"][key] = _errors(s.run(SKL2ONNX_OUTS if key == "skl2onnx" else DEFAULT_OUTS,
                                                       {s.get_inputs()[0].name: x32}), ll_ref, resp_ref, gap)
                rows.append(row)
                print(f"  {name:18s} {ct:9s} {row['source']}: default ll {row['errors'][row['default']]['log_likelihood']:.1e} "
                      f"resp {row['errors'][row['default']]['responsibilities']:.1e} | skl2onnx ll "
                      f"{row['errors']['skl2onnx']['log_likelihood']:.1e} resp {row['errors']['skl2onnx']['responsibilities']:.1e}",
                      flush=True)
    return rows


# ---------------------------------------------------------------------------
# onnxruntime: profile and optimized graph


def ort_profile(model, x, outs, threads: int, runs: int, outdir: str, tag: str) -> dict:
    """Kernel time per operator type (onnxruntime profiling, Scan bodies included) and the operators
    of the graph after onnxruntime's optimizations (SessionOptions.optimized_model_filepath)."""
    import onnx

    opt_path = os.path.join(outdir, f"{tag}_optimized.onnx")
    s = ort_session(model, threads, enable_profiling=True, optimized_model_filepath=opt_path,
                    profile_file_prefix=os.path.join(outdir, f"{tag}_profile"))
    f = runner(s, x, outs)
    for _ in range(runs + 1):
        f()
    with open(s.end_profiling()) as fh:
        events = json.load(fh)
    body_nodes = {n.name for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH
                  for n in a.g.node}
    per_op: dict[str, float] = {}
    scan = body = 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op, sec = e["args"]["op_name"], e["dur"] * 1e-6 / (runs + 1)
            if op == "Scan":  # its time includes its body's kernels, which are listed on their own too
                scan += sec
                continue
            body += sec if e["name"][: -len("_kernel_time")] in body_nodes else 0.0
            per_op[op] = per_op.get(op, 0.0) + sec
    total = sum(per_op.values())

    def ops(graph) -> list[str]:
        names = []
        for n in graph.node:
            names.append(n.op_type + (f" ({n.domain})" if n.domain else ""))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    names += [f"  {op}" for op in ops(a.g)]
        return names

    optimized = onnx.load(opt_path, load_external_data=False)
    return {"seconds_per_op_type": dict(sorted(per_op.items(), key=lambda kv: -kv[1])),
            "share_per_op_type": {k: v / total for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])},
            "scan_overhead_seconds": scan - body if scan else None, "total_seconds": total,
            "graph_ops": ops(model.graph), "optimized_ops": ops(optimized.graph)}


def bench_profiles(args, outdir) -> dict:
    """Profiles of skl2onnx's graph and of gmmnet's default graph of each type at the first size."""
    import numpy as np

    import prototypes as P
    from gmmnet import from_sklearn
    from gmmnet.formats.sklearn import to_sklearn

    K, d, N = args.sizes[0]
    out = {}
    for ct in COV_TYPES:
        rng = np.random.default_rng([K, d, N, COV_TYPES.index(ct), False])  # the models of the GMM cases
        truth = overlapping_mixture(rng, K, d, ct)
        X = sample(rng, truth, N)
        est = to_sklearn(truth)
        mix = from_sklearn(est)
        res = {}
        default = gmmnet_model(mix)
        for key, model, outs in (("skl2onnx", skl2onnx_model(est, X), SKL2ONNX_OUTS),
                                 ("default", default, DEFAULT_OUTS)):
            res[key] = {f"threads_{t}": ort_profile(model, X, outs, t, args.repeats, outdir, f"{ct}_{key}_{t}")
                        for t in (1, args.threads)}
        m0 = meta(default)
        res["default_doc"] = f"{m0.get('layout')}: {m0.get('compute')}, centering {m0.get('centering')}"
        out[ct] = res
    out["size"] = [K, d, N]
    return out


# ---------------------------------------------------------------------------
# conversion


def _cprofile(fn, top: int = 14) -> tuple[float, list[dict]]:
    """(wall seconds, the top functions by cumulative time) of fn() under cProfile."""
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - t
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in st.stats.items():
        rows.append({"function": f"{os.path.basename(os.path.dirname(file))}/{os.path.basename(file)}:{line}({func})",
                     "calls": nc, "cumulative": ct, "own": tt})
    rows.sort(key=lambda r: -r["cumulative"])
    keep = [r for r in rows if "gmmnet" in r["function"] or "linalg" in r["function"] or "pydantic" in r["function"]
            or "onnx" in r["function"] or "numpy" in r["function"]]
    return wall, keep[:top]


#: Runs of each CLI conversion (the median is reported): one fresh process each.
CLI_RUNS = 3


def bench_conversion(args, rng) -> dict:
    """K=256, d=256 full: library steps and the CLI in both directions, with numpy's BLAS on 1 thread and
    on --threads threads (threadpoolctl; the CLI through OPENBLAS_NUM_THREADS), and a cProfile of the
    library steps on 1 BLAS thread.  Each CLI command runs CLI_RUNS times (median, min and max), and
    once more beside as many busy processes as there are cores."""
    import joblib
    import numpy as np
    from threadpoolctl import threadpool_limits

    from gmmnet import from_sklearn
    from gmmnet.formats.onnx import from_onnx
    from gmmnet.formats.sklearn import to_sklearn

    K = d = 16 if args.quick else 256
    est = to_sklearn(overlapping_mixture(rng, K, d, "full"))
    res = {"K": K, "d": d, "library": {}, "profile": {}, "cli": {}}
    blas = sorted({1, args.threads})

    def timed(key, fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        res["library"][key] = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c}
        return out

    # warm-up on a small model: the first call in a process also pays onnx's lazy imports (~0.5 s),
    # which would land on whichever step is timed first
    small = to_sklearn(overlapping_mixture(rng, 2, 3, "full"))
    from_onnx(gmmnet_model(from_sklearn(small)))
    for b in blas:
        with threadpool_limits(limits=b, user_api="blas"):
            mix = timed(f"from_sklearn (BLAS {b})", lambda: from_sklearn(est))
            model = timed(f"to_onnx, default (BLAS {b})", lambda: gmmnet_model(mix))
            timed(f"to_onnx, compute float64 (BLAS {b})", lambda: gmmnet_model(mix, compute="float64"))
            timed(f"from_onnx (BLAS {b})", lambda: from_onnx(model))
    with threadpool_limits(limits=1, user_api="blas"):
        for key, fn in (("from_sklearn + to_onnx", lambda: gmmnet_model(from_sklearn(est))),
                        ("from_onnx", lambda: from_onnx(model))):
            wall, top = _cprofile(fn)
            res["profile"][key] = {"wall": wall, "top": top}
    with tempfile.TemporaryDirectory() as tmp:
        src, onnx_path, back = (os.path.join(tmp, n) for n in ("model.joblib", "model.onnx", "back.json"))
        joblib.dump(est, src)
        script = os.path.join(os.path.dirname(sys.executable), "gmmnet")  # the console script, as a user runs it
        gmmnet_cmd = [script] if os.path.exists(script) else [sys.executable, "-c",
                                                               "import sys; from gmmnet.cli import main; sys.exit(main())"]
        # as an installed package runs: bytecode written once (pip compiles it at install time), here
        # by an untimed round on the small model
        base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        base_env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])
        small_src = os.path.join(tmp, "small.joblib")
        joblib.dump(small, small_src)
        for cmd in (["to-onnx", small_src, "-o", onnx_path, "--force"], ["to-gmm", onnx_path, "-o", back, "--force"]):
            subprocess.run([*gmmnet_cmd, *cmd], capture_output=True, env=base_env, check=True)
        commands = (("to-onnx", ["to-onnx", src, "-o", onnx_path, "--force"]),
                    ("to-gmm", ["to-gmm", onnx_path, "-o", back, "--force"]))

        def cli(label: str, cmd: list[str], env: dict, runs: int = CLI_RUNS) -> None:
            walls, proc = [], None
            for _ in range(runs):
                t = time.perf_counter()
                proc = subprocess.run([*gmmnet_cmd, *cmd], capture_output=True, text=True, env=env)
                walls.append(time.perf_counter() - t)
            res["cli"][label] = {"wall": float(np.median(walls)), "min": min(walls), "max": max(walls), "runs": runs,
                                 "returncode": proc.returncode, "stderr": proc.stderr[-300:]}

        for b in blas:
            env = dict(base_env, OPENBLAS_NUM_THREADS=str(b), OMP_NUM_THREADS=str(b), MKL_NUM_THREADS=str(b))
            for key, cmd in commands:
                cli(f"{key} (BLAS {b})", cmd, env)
        # under load: as many busy processes as cores beside the command (no collapse: about 2x at most)
        n_busy = os.cpu_count() or 1
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_busy)]
        try:
            for key, cmd in commands:
                cli(f"{key} (default threads, {n_busy} busy processes)", cmd, base_env, runs=1)
        finally:
            for p in busy:
                p.kill()
                p.wait()
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import gmmnet.cli"], capture_output=True, env=env)
        res["cli"]["python + import gmmnet.cli"] = {"wall": time.perf_counter() - t, "returncode": 0}
    return res


def bench_ranks(args, rng) -> list[dict]:
    """Full mixtures truncated to rank r: the completed graph (d neurons per component) against the
    K·r-neuron graph gmmnet.to_onnx writes for a truncated mixture (today's exporter)."""
    import numpy as np

    from gmmnet import linalg
    from gmmnet.formats.onnx import to_onnx as dispatch
    from gmmnet.ir import Component, Mixture

    K, d, N = (4, 8, 2_000) if args.quick else (32, 64, 50_000)
    out = []
    for r in ([1, d // 2, d] if args.quick else [4, 16, 32, 48, 64]):
        full = overlapping_mixture(rng, K, d, "full")
        comps = [Component(mean=c.mean, eigenvectors=c.eigenvectors[:r], eigenvalues=c.eigenvalues[:r], weight=c.weight,
                           residual_variance=float(c.eigenvalues[r:].mean()) if r < d else None) for c in full.components]
        mix = Mixture(n_features=d, covariance_type="full", components=comps)
        X = linalg.sample(mix, N).astype(np.float32)
        ref = linalg.log_likelihood(mix, X.astype(np.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graphs = {"completed": gmmnet_model(mix, outputs=("log_likelihood",), compute="float32"),
                      "kr_float32": dispatch(mix, outputs=("log_likelihood",), compute="float32"),
                      "kr_auto": dispatch(mix, outputs=("log_likelihood",))}
        sess = {k: ort_session(g, args.threads) for k, g in graphs.items()}
        times = interleaved({k: runner(s, X, ["log_likelihood"]) for k, s in sess.items()}, args.repeats,
                            time.perf_counter)
        row = {"K": K, "d": d, "N": N, "rank": r, "compute_auto": meta(graphs["kr_auto"]).get("compute", "?"),
               "seconds": {k: float(np.median(v)) for k, v in times.items()}, "log_likelihood_error": {}}
        for k, s in sess.items():
            got = s.run(None, {"X": X})[0].astype(np.float64)
            row["log_likelihood_error"][k] = float(np.max(np.abs(got - ref) / (1 + np.abs(ref))))
        out.append(row)
    return out


# ---------------------------------------------------------------------------
# report


def environment(args) -> dict:
    import numpy
    import onnx
    import onnxruntime
    import sklearn

    import gmmnet

    try:
        import skl2onnx
        sk2 = skl2onnx.__version__
    except ImportError:  # pragma: no cover - skl2onnx is a benchmark dependency
        sk2 = None
    return {
        "cpu_count": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": args.threads, "repeats": args.repeats, "quick": args.quick,
        "command": " ".join(["python benchmarks/run.py", *getattr(args, "argv", [])]),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "machine": platform.machine(), "platform": platform.platform(), "python": platform.python_version(),
        "versions": {"gmmnet": gmmnet.__version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "skl2onnx": sk2},
    }


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}"


def _ratio(t: dict) -> str:
    return f"{t['ratio']:.2f} ({t['ratio_q25']:.2f}–{t['ratio_q75']:.2f})"


def _label(key: str, default: str) -> str:
    return f"**{key}** (default)" if key == default else key


def markdown(res: dict) -> str:
    env = res["environment"]
    v = env["versions"]
    load = env["load_average_start"][0], env["load_average_end"][0]
    lines = [
        f"Generated by `{env.get('command') or 'python benchmarks/run.py'}` on {env['cores_usable']} usable "
        f"cores, {env['repeats']} interleaved rounds; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end. "
        f"{env['platform']}, Python {env['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "Ratios are to skl2onnx in the same round: median (quartiles) over the rounds. `wall` = wall clock of one "
        f"`session.run` on {env['threads']} threads; `cpu` = CPU time on 1 thread (steadier on a shared machine). "
        "All graphs fetch label, responsibilities and log-likelihood. Errors against scikit-learn float64 on the "
        "float32-rounded input: log-likelihood max|Δ|/(1+|ref|), responsibilities max|Δ|. `overlap` = share of rows "
        "whose largest responsibility is below 0.99.",
        "",
    ]
    for case in res["sizes"]:
        t, e = case["timing"], case["errors"]
        sk = t["wall"]["skl2onnx"]["median"]
        lines += [f"**{case['source']} {case['covariance_type']}, K={case['K']}, d={case['d']}, N={case['N']}** "
                  f"(overlap {case['overlap']['max_resp_below_0.99']:.0%}; skl2onnx {_ms(sk)} ms wall, "
                  f"sklearn {_ms(t['wall']['sklearn']['median'])} ms; the default graph: layout "
                  f"{case.get('gmmnet_layout')}, compute {case['gmmnet_compute']})",
                  "", "| graph | wall ratio | cpu ratio | ll error | resp error | label mismatches |",
                  "|---|---|---|---|---|---|"]
        for key in e:
            lines.append(f"| {_label(key, case['default'])} | {_ratio(t['wall'][key])} | {_ratio(t['cpu'][key])} "
                         f"| {e[key]['log_likelihood']:.1e} | {e[key]['responsibilities']:.1e} "
                         f"| {e[key]['label_mismatches']} |")
        lines.append("")
    lines += [] if not res["sizes"] else ["Near ties (first size, GaussianMixture): share of rows whose two largest log-joints are within g nats "
              "(a float64 recomputation of near-tie rows would redo these):", "",
              "| type | g < 1 | g < 3 | g < 5 | g < 10 |", "|---|---|---|---|---|"]
    for case in res["sizes"]:
        if (case["K"], case["d"], case["N"]) == tuple(res["environment"]["sizes"][0]) and case["source"] == "GMM":
            o = case["overlap"]
            lines.append(f"| {case['covariance_type']} | " + " | ".join(f"{o[f'top2_gap_below_{g}']:.0%}"
                                                                          for g in (1, 3, 5, 10)) + " |")
    if res.get("datasets"):
        lines += ["", "Real data sets (K = 3, digits 10; standardized: vs scikit-learn, `_raw`: vs gmmnet.linalg): "
                  "the default graph against skl2onnx and the accurate opt-in (`compute=\"float64\"`), worst of "
                  "GaussianMixture and BayesianGaussianMixture:", "",
                  "| data | cov | default ll | default resp | skl2onnx ll | skl2onnx resp | float64 ll | float64 resp "
                  "| default's choice |", "|---|---|---|---|---|---|---|---|---|"]
        by = {}
        for r in res["datasets"]:
            by.setdefault((r["data"], r["covariance_type"]), []).append(r)
        for (name, ct), rs in by.items():
            def worst(key, what, rs=rs):
                return max(r["errors"][key][what] for r in rs)
            d0 = rs[0]["default"]
            lines.append(f"| {name} | {ct} | {worst(d0, 'log_likelihood'):.1e} | {worst(d0, 'responsibilities'):.1e} "
                         f"| {worst('skl2onnx', 'log_likelihood'):.1e} | {worst('skl2onnx', 'responsibilities'):.1e} "
                         f"| {worst('gmmnet_f64', 'log_likelihood'):.1e} | {worst('gmmnet_f64', 'responsibilities'):.1e} "
                         f"| " + "; ".join(sorted({r['default_doc'] for r in rs})) + " |")
    c = res.get("conversion")
    if c:
        lines += ["", f"Conversion of a K={c['K']}, d={c['d']} full GaussianMixture (seconds):", "",
                  "| step | wall | CPU |", "|---|---|---|"]
        for key, val in c["library"].items():
            lines.append(f"| library: {key} | {val['wall']:.2f} | {val['cpu']:.2f} |")
        for key, val in c["cli"].items():
            spread = f" ({val['min']:.2f}–{val['max']:.2f}, median of {val['runs']})" if val.get("runs", 1) > 1 else ""
            lines.append(f"| CLI: `gmmnet {key}` | {val['wall']:.2f}{spread} | – |" if key.startswith("to-")
                         else f"| {key} | {val['wall']:.2f} | – |")
        for key, val in c["profile"].items():
            lines += ["", f"cProfile of {key} ({val['wall']:.2f} s under the profiler), by cumulative time:", "",
                      "| function | calls | cumulative s | own s |", "|---|---|---|---|"]
            lines += [f"| `{r['function']}` | {r['calls']} | {r['cumulative']:.2f} | {r['own']:.2f} |" for r in val["top"]]
    p = res.get("profiles")
    if p:
        K, d, N = p["size"]
        lines += ["", f"onnxruntime profiles at K={K}, d={d}, N={N} (share of kernel time per operator type; "
                  "1 thread / " f"{env['threads']} threads):", ""]
        for ct in COV_TYPES:
            for key in ("skl2onnx", "default"):
                one, two = p[ct][key]["threads_1"], p[ct][key][f"threads_{env['threads']}"]
                shares = ", ".join(f"{op} {one['share_per_op_type'][op]:.0%}/{two['share_per_op_type'].get(op, 0):.0%}"
                                   for op in list(one["share_per_op_type"])[:7])
                scan = one.get("scan_overhead_seconds")
                lines.append(f"- {ct} {key} ({_ms(one['total_seconds'])} ms of kernels on 1 thread"
                             + (f", Scan's own overhead {_ms(scan)} ms" if scan is not None else "") + f"): {shares}")
            lines.append(f"  - default as written: {' → '.join(p[ct]['default']['threads_1']['graph_ops'])}")
            lines.append(f"  - after onnxruntime's optimizations: "
                         f"{' → '.join(p[ct]['default']['threads_1']['optimized_ops'])}")
    if res.get("ranks"):
        lines += ["", "Rank truncation (today's exporter; ms and log-likelihood error):", "",
                  "| K | d | N | rank | completed | K·r float32 | K·r auto | err completed | err K·r float32 | err K·r auto |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["ranks"]:
            t, e = r["seconds"], r["log_likelihood_error"]
            lines.append(f"| {r['K']} | {r['d']} | {r['N']} | {r['rank']} | {_ms(t['completed'])} | {_ms(t['kr_float32'])} "
                         f"| {_ms(t['kr_auto'])} ({r['compute_auto']}) | {e['completed']:.1e} | {e['kr_float32']:.1e} "
                         f"| {e['kr_auto']:.1e} |")
    return "\n".join(lines)


def write_doc(path: str, table: str) -> None:
    block = f"{START}\n{table}\n{END}"
    text = open(path).read() if os.path.exists(path) else "# Performance\n\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = _parse(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))  # before numpy loads its BLAS
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    import numpy as np

    if args.sizes:
        args.sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes.split(";")]
    else:
        args.sizes = QUICK_SIZES if args.quick else SIZES
    json_path = args.json or os.path.join(HERE, "results.json")
    doc_path = args.doc or os.path.join(os.path.dirname(HERE), "docs", "performance.md")
    rng = np.random.default_rng(0)
    res = {"environment": {**environment(args), "sizes": [list(s) for s in args.sizes]}, "sizes": []}
    if args.resume and os.path.exists(json_path):  # keep what an interrupted run measured
        with open(json_path) as f:
            old = json.load(f)
        res = {**old, "environment": {**res["environment"], "resumed_from_load_average": old["environment"].get(
            "load_average_start")}}
    done = {(r["K"], r["d"], r["N"], r["covariance_type"], r["source"]) for r in res["sizes"]}

    def save():
        with open(json_path + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(json_path + ".tmp", json_path)

    for i, (K, d, N) in enumerate(args.sizes if "sizes" in args.sections else []):
        for source in (("GMM", "BGM") if i == 0 else ("GMM",)):
            for ct in COV_TYPES:
                if (K, d, N, ct, source) in done:
                    continue
                case = bench_case(K, d, N, ct, source, args)
                res["sizes"].append(case)
                save()
                w, e = case["timing"]["wall"], case["errors"]
                dflt = case["default"]
                print(f"{source} K={K:3d} d={d:3d} N={N:6d} {ct:9s} overlap {case['overlap']['max_resp_below_0.99']:.0%} | "
                      f"default {dflt}: wall {_ratio(w[dflt])} cpu {_ratio(case['timing']['cpu'][dflt])} "
                      f"ll {e[dflt]['log_likelihood']:.1e} resp {e[dflt]['responsibilities']:.1e} | skl2onnx "
                      f"ll {e['skl2onnx']['log_likelihood']:.1e} resp {e['skl2onnx']['responsibilities']:.1e} | "
                      f"accurate (compute float64) {_ratio(w['gmmnet_f64'])}", flush=True)
    if "profiles" in args.sections:
        with tempfile.TemporaryDirectory() as tmp:
            res["profiles"] = bench_profiles(args, tmp)
        print("profiles done", flush=True)
    if "datasets" in args.sections:
        res["datasets"] = bench_datasets(args)
    if "conversion" in args.sections:
        res["conversion"] = bench_conversion(args, rng)
        print("conversion:", json.dumps({**res["conversion"]["library"], **res["conversion"]["cli"]}), flush=True)
    if "ranks" in args.sections:
        res["ranks"] = bench_ranks(args, rng)
    res["environment"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    save()
    write_doc(doc_path, markdown(res))
    print(f"wrote {json_path} and {doc_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
