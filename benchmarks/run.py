"""Speed of gmmnet's ONNX graphs against sklearn, skl2onnx and a bare numpy matrix product.

    python benchmarks/run.py             # the issue's sizes, every covariance type (minutes)
    python benchmarks/run.py --quick     # tiny sizes: checks that the script runs (seconds)

Everything is measured side by side in one run, as the median of --repeats runs (≥ 5) after
one warm-up, on --threads threads (onnxruntime intra-op threads; numpy's BLAS threads are set
to the same number before numpy loads).  For each (K, d, N) and covariance type:

- ``sklearn``: ``GaussianMixture.score_samples`` (float64 inside, as scikit-learn computes);
- ``skl2onnx``: skl2onnx's float32 model on onnxruntime, fetching ``score_samples`` only;
- ``gmmnet``: gmmnet's float32 graph with ``outputs=("log_likelihood",)``, pure float32
  arithmetic (``compute="float32"``, the speed configuration);
- ``gmmnet_auto``: the same with ``compute="auto"`` (float64 arithmetic where the predicted
  float32 error misses the accuracy targets; the choice is recorded);
- ``gmmnet_chunked``: the ``compute="float32"`` graph through ``gmmnet.score.score`` (the library's
  runner: chunks of about 1 MiB of activations, one single-threaded session per thread);
- ``gmmnet_quadratic`` (diag/spherical): ``layout="quadratic"``, float64 inside;
- ``numpy``: ``X @ W.T`` with W of shape (K·d, d) in float32, the neuron layer's product alone;
- errors: log_likelihood max|Δ|/(1+|ref|) on all rows and responsibilities max|Δ| on the first
  20,000, against float64 (``gmmnet.linalg``);
- ``distances``: the default outputs from a graph that also has ``distances`` against a graph
  without it (same outputs fetched): does having the output cost anything when unused?

Plus a rank-truncation curve (full, K=32, d=64, N=50k, ranks r ≤ d: the completed graph against
the K·r-neuron graph), the K=256, d=256
conversion to ONNX and back (gmmnet.formats.onnx.read.from_onnx), and an onnxruntime profile of the
(32, 64, 50k) full graph (time per operator type, and the graph after onnxruntime's
optimizations, saved with SessionOptions.optimized_model_filepath).

Writes --json (default benchmarks/results.json) and the markdown tables into --doc (default
docs/performance.md) between ``<!-- benchmark:start -->`` and ``<!-- benchmark:end -->``, so a
rerun replaces them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings

SIZES = [(8, 16, 100_000), (32, 64, 50_000), (64, 128, 20_000)]
QUICK_SIZES = [(3, 4, 2_000), (4, 8, 1_000)]
COV_TYPES = ("full", "tied", "diag", "spherical")
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; timings mean little)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime and BLAS threads (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement, median reported (>= 5)")
    ap.add_argument("--json", default=None, help="results file (default benchmarks/results.json)")
    ap.add_argument("--doc", default=None, help="markdown file to update between the markers (default docs/performance.md)")
    ap.add_argument("--no-conversion", action="store_true", help="skip the K=256, d=256 conversion timing")
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error("--repeats must be at least 5 (medians of >= 5 runs)")
    return args


# ---------------------------------------------------------------------------
# models and data


def random_mixture(rng, K: int, d: int, ct: str, rank: int | None = None, cond: float = 10.0):
    """K components in d features: means spread over ~3σ, eigenvalues log-uniform over ``cond``."""
    import numpy as np

    from gmmnet.ir import Component, Mixture

    comps, shared = [], None
    weights = rng.dirichlet(np.full(K, 5.0))
    for k in range(K):
        mean = rng.standard_normal(d) * 3.0
        if ct in ("full", "tied"):
            if shared is None or ct == "full":
                q, r = np.linalg.qr(rng.standard_normal((d, d)))
                q = q * np.sign(np.diag(r))
                lam = np.sort(np.exp(rng.uniform(0, np.log(cond), d)))[::-1]
                shared = (q.T, lam)
            vecs, lam = shared
        elif ct == "diag":
            vecs, lam = np.eye(d), np.exp(rng.uniform(0, np.log(cond), d))
        else:
            vecs, lam = np.eye(d), np.full(d, np.exp(rng.uniform(0, np.log(cond))))
        kw = {}
        if rank is not None and rank < d:
            kw["residual_variance"] = float(lam[rank:].mean())
            vecs, lam = vecs[:rank], lam[:rank]
        comps.append(Component(mean=mean, eigenvectors=vecs, eigenvalues=lam, weight=float(weights[k]), **kw))
    return Mixture(n_features=d, covariance_type=ct, components=comps)


def sample(rng, mix, n: int):
    """n float32 rows drawn from the mixture (truncated components: kept directions only)."""
    import numpy as np

    labels = rng.choice(mix.n_components, size=n, p=mix.weights)
    out = np.empty((n, mix.n_features))
    for k, c in enumerate(mix.components):
        idx = np.flatnonzero(labels == k)
        z = rng.standard_normal((idx.size, c.rank)) * np.sqrt(c.eigenvalues)
        out[idx] = c.mean + z @ c.eigenvectors
    return out.astype(np.float32)


# ---------------------------------------------------------------------------
# timing


def median_time(fn, repeats: int) -> float:
    import numpy as np

    fn()  # warm-up: first-run allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def ort_session(model, threads: int, **extra):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    for key, value in extra.items():
        setattr(so, key, value)
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


def skl2onnx_model(est, x):
    import numpy as np
    import skl2onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skl2onnx.to_onnx(est, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3},
                                options={id(est): {"score_samples": True}})


def gmmnet_model(mix, **kw):
    from gmmnet.errors import PrecisionWarning
    from gmmnet.formats.onnx.export import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        return to_onnx(mix, **kw)


def meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def bench_size(K, d, N, ct, args, rng) -> dict:
    import numpy as np

    from gmmnet import linalg
    from gmmnet.formats.sklearn import to_sklearn
    from gmmnet.score import Scorer, score

    mix = random_mixture(rng, K, d, ct)
    X = sample(rng, mix, N)
    est = to_sklearn(mix)
    W = rng.standard_normal((K * d, d)).astype(np.float32)
    threads, reps = args.threads, args.repeats

    g32 = gmmnet_model(mix, outputs=("log_likelihood",), compute="float32")
    gauto = gmmnet_model(mix, outputs=("log_likelihood",))
    s32, sauto = ort_session(g32, threads), ort_session(gauto, threads)
    sk = ort_session(skl2onnx_model(est, X), threads)
    sk_in = sk.get_inputs()[0].name
    dflt = ort_session(gmmnet_model(mix, compute="float32"), threads)
    withd = ort_session(gmmnet_model(mix, compute="float32", outputs=("label", "responsibilities", "log_likelihood",
                                                                      "distances")), threads)
    default_outs = ["label", "responsibilities", "log_likelihood"]

    quad = ct in ("diag", "spherical")
    if quad:  # the opt-in layout without a neuron layer (float64 inside)
        sq = ort_session(gmmnet_model(mix, outputs=("log_likelihood",), layout="quadratic"), threads)
    scorer = Scorer(g32)  # gmmnet.score's runner: cache-sized chunks, single-threaded sessions

    t = {
        "sklearn": median_time(lambda: est.score_samples(X), reps),
        "skl2onnx": median_time(lambda: sk.run(["score_samples"], {sk_in: X}), reps),
        "gmmnet": median_time(lambda: s32.run(None, {"X": X}), reps),
        "gmmnet_auto": median_time(lambda: sauto.run(None, {"X": X}), reps),
        "numpy": median_time(lambda: X @ W.T, reps),
        "default_outputs": median_time(lambda: dflt.run(default_outs, {"X": X}), reps),
        "default_outputs_distances_in_graph": median_time(lambda: withd.run(default_outs, {"X": X}), reps),
        "gmmnet_chunked": median_time(lambda: score(scorer, X, threads=threads), reps),
    }
    if quad:
        t["gmmnet_quadratic"] = median_time(lambda: sq.run(None, {"X": X}), reps)
    # accuracy on the same rows (log-likelihood max|Δ|/(1+|ref|), float64 reference on the float32 input)
    ref = linalg.log_likelihood(mix, X.astype(np.float64))
    err = lambda got: float(np.max(np.abs(np.asarray(got, np.float64).ravel() - ref) / (1 + np.abs(ref))))  # noqa: E731
    errors = {
        "gmmnet": err(s32.run(None, {"X": X})[0]),
        "gmmnet_auto": err(sauto.run(None, {"X": X})[0]),
        "skl2onnx": err(sk.run(["score_samples"], {sk_in: X})[0]),
    }
    if quad:
        errors["gmmnet_quadratic"] = err(sq.run(None, {"X": X})[0])
    # responsibilities max|Δ| on the first rows (the core issue's second accuracy target, 1e-6)
    Xr = X[:20_000]
    rref = linalg.responsibilities(mix, Xr.astype(np.float64))
    rerr = lambda got: float(np.max(np.abs(np.asarray(got, np.float64) - rref)))  # noqa: E731
    resp = {"gmmnet": rerr(ort_session(gmmnet_model(mix, outputs=("responsibilities",), compute="float32"), threads)
                           .run(None, {"X": Xr})[0]),
            "gmmnet_auto": rerr(ort_session(gmmnet_model(mix, outputs=("responsibilities",)), threads)
                                .run(None, {"X": Xr})[0]),
            "skl2onnx": rerr(sk.run(["probabilities"], {sk_in: Xr})[0])}
    if quad:
        resp["gmmnet_quadratic"] = rerr(ort_session(gmmnet_model(mix, outputs=("responsibilities",), layout="quadratic"),
                                                    threads).run(None, {"X": Xr})[0])
    return {
        "K": K, "d": d, "N": N, "covariance_type": ct, "seconds": t,
        "compute_auto": meta(gauto)["compute"], "log_likelihood_error": errors, "responsibilities_error": resp,
        "ratios": {
            "gmmnet/skl2onnx": t["gmmnet"] / t["skl2onnx"],
            "gmmnet/sklearn": t["gmmnet"] / t["sklearn"],
            "gmmnet/numpy": t["gmmnet"] / t["numpy"],
            "gmmnet_auto/skl2onnx": t["gmmnet_auto"] / t["skl2onnx"],
            "distances_in_graph/without": t["default_outputs_distances_in_graph"] / t["default_outputs"],
            "gmmnet_chunked/skl2onnx": t["gmmnet_chunked"] / t["skl2onnx"],
            "gmmnet_chunked/sklearn": t["gmmnet_chunked"] / t["sklearn"],
            "gmmnet_chunked/numpy": t["gmmnet_chunked"] / t["numpy"],
            **({"gmmnet_quadratic/skl2onnx": t["gmmnet_quadratic"] / t["skl2onnx"]} if quad else {}),
        },
    }


def bench_ranks(args, rng) -> list[dict]:
    """Full mixtures truncated to rank r: the completed graph (d neurons per component) against the
    K·r-neuron graph gmmnet.to_onnx writes for a truncated mixture (float32 and the default auto)."""
    import numpy as np

    from gmmnet import linalg
    from gmmnet.formats.onnx import to_onnx as dispatch

    K, d, N = (4, 8, 2_000) if args.quick else (32, 64, 50_000)
    ranks = [1, d // 2, d] if args.quick else [4, 16, 32, 48, 64]
    out = []
    for r in ranks:
        mix = random_mixture(rng, K, d, "full", rank=r)
        X = sample(rng, mix, N)
        ref = linalg.log_likelihood(mix, X.astype(np.float64))
        row = {"K": K, "d": d, "N": N, "rank": r, "seconds": {}, "log_likelihood_error": {}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graphs = {"completed": gmmnet_model(mix, outputs=("log_likelihood",), compute="float32"),
                      "kr_float32": dispatch(mix, outputs=("log_likelihood",), compute="float32"),
                      "kr_auto": dispatch(mix, outputs=("log_likelihood",))}
        row["compute_auto"] = meta(graphs["kr_auto"]).get("compute", "?")
        for name, g in graphs.items():
            s = ort_session(g, args.threads)
            row["seconds"][name] = median_time(lambda: s.run(None, {"X": X}), args.repeats)
            got = s.run(None, {"X": X})[0].astype(np.float64)
            row["log_likelihood_error"][name] = float(np.max(np.abs(got - ref) / (1 + np.abs(ref))))
        out.append(row)
    return out


def bench_conversion(args, rng) -> dict:
    from gmmnet.formats.onnx.read import from_onnx

    K = d = 16 if args.quick else 256
    mix = random_mixture(rng, K, d, "full")
    res = {"K": K, "d": d}
    for compute in ("float32", "auto"):
        w, c = time.perf_counter(), time.process_time()
        model = gmmnet_model(mix, compute=compute)
        res[f"to_onnx_{compute}"] = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c,
                                     "compute": meta(model)["compute"]}
    w, c = time.perf_counter(), time.process_time()
    from_onnx(model)
    res["from_onnx"] = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c}
    return res


def profile(args, rng, outdir) -> dict:
    """Time per operator type (onnxruntime profiling) and the node list after ORT's optimizations."""
    import numpy as np
    import onnx

    K, d, N = (4, 8, 2_000) if args.quick else (32, 64, 50_000)
    mix = random_mixture(rng, K, d, "full")
    X = sample(rng, mix, N)
    model = gmmnet_model(mix, outputs=("log_likelihood",), compute="float32")
    opt_path = os.path.join(outdir, "gmmnet_optimized.onnx")
    s = ort_session(model, args.threads, enable_profiling=True, optimized_model_filepath=opt_path,
                    profile_file_prefix=os.path.join(outdir, "ort_profile"))
    for _ in range(args.repeats + 1):
        s.run(None, {"X": X})
    prof = s.end_profiling()
    with open(prof) as f:
        events = json.load(f)
    per_op: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op.setdefault(e["args"]["op_name"], []).append(e["dur"] * 1e-6)
    runs = args.repeats + 1
    per_run = {op: sum(v) / runs for op, v in per_op.items()}
    total = sum(per_run.values())
    optimized = onnx.load(opt_path, load_external_data=False)
    return {
        "K": K, "d": d, "N": N,
        "seconds_per_op_type": dict(sorted(per_run.items(), key=lambda kv: -kv[1])),
        "share_per_op_type": {op: v / total for op, v in sorted(per_run.items(), key=lambda kv: -kv[1])},
        "graph_nodes": [n.op_type for n in model.graph.node],
        "optimized_nodes": [f"{n.op_type}" + (f" ({n.domain})" if n.domain else "") for n in optimized.graph.node],
        "numpy_matmul": median_time(lambda: X @ np.ones((K * d, d), np.float32).T, args.repeats),
    }


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
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "machine": platform.machine(), "platform": platform.platform(), "python": platform.python_version(),
        "versions": {"gmmnet": gmmnet.__version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "skl2onnx": sk2},
    }


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}"


def markdown(res: dict) -> str:
    env = res["environment"]
    v = env["versions"]
    lines = [
        f"Generated by `python benchmarks/run.py{' --quick' if env['quick'] else ''}` on "
        f"{env['cores_usable']} usable cores ({env['cpu_count']} reported), {env['threads']} threads, "
        f"median of {env['repeats']} runs; load average {env['load_average_start'][0]:.1f} at the start, "
        f"{env['load_average_end'][0]:.1f} at the end. {env['platform']}, Python {env['python']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "Times in ms (float32 input, log_likelihood only). `gmmnet` = one `session.run` of the graph with "
        "`compute=\"float32\"`; `score()` = the same graph through `gmmnet.score.score` (chunks of about 1 MiB of "
        "activations on single-threaded sessions, one per thread); `auto` = the default `compute=\"auto\"` (its "
        "choice in brackets); `quadratic` = `layout=\"quadratic\"` (diag/spherical only, float64 inside).",
        "",
        "| K | d | N | cov | sklearn | skl2onnx | numpy X@Wᵀ | gmmnet | score() | auto | quadratic "
        "| gmmnet/skl2onnx | gmmnet/sklearn | gmmnet/numpy | score()/skl2onnx | score()/sklearn | score()/numpy "
        "| auto/skl2onnx | quadratic/skl2onnx |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["sizes"]:
        t, q = r["seconds"], r["ratios"]
        quad = "gmmnet_quadratic" in t
        lines.append(
            f"| {r['K']} | {r['d']} | {r['N']} | {r['covariance_type']} | {_ms(t['sklearn'])} | {_ms(t['skl2onnx'])} "
            f"| {_ms(t['numpy'])} | {_ms(t['gmmnet'])} | {_ms(t['gmmnet_chunked'])} "
            f"| {_ms(t['gmmnet_auto'])} ({r['compute_auto']}) | {_ms(t['gmmnet_quadratic']) if quad else '–'} "
            f"| {q['gmmnet/skl2onnx']:.2f} | {q['gmmnet/sklearn']:.2f} | {q['gmmnet/numpy']:.2f} "
            f"| {q['gmmnet_chunked/skl2onnx']:.2f} | {q['gmmnet_chunked/sklearn']:.2f} | {q['gmmnet_chunked/numpy']:.2f} "
            f"| {q['gmmnet_auto/skl2onnx']:.2f} | {q['gmmnet_quadratic/skl2onnx'] if quad else float('nan'):.2f} |"
            .replace("| nan |", "| – |"))
    lines += ["", "Accuracy on the same rows against float64: log_likelihood max|Δ|/(1+|ref|) (all rows) and "
              "responsibilities max|Δ| (first 20,000 rows). The core issue's float32 targets are 2e-6 and 1e-6.", "",
              "| K | d | N | cov | ll gmmnet | ll auto | ll quadratic | ll skl2onnx | resp gmmnet | resp auto "
              "| resp quadratic | resp skl2onnx |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["sizes"]:
        e, rr = r["log_likelihood_error"], r["responsibilities_error"]
        f = lambda dct, k: f"{dct[k]:.1e}" if k in dct else "–"  # noqa: E731
        lines.append(f"| {r['K']} | {r['d']} | {r['N']} | {r['covariance_type']} | {f(e, 'gmmnet')} | {f(e, 'gmmnet_auto')} "
                     f"| {f(e, 'gmmnet_quadratic')} | {f(e, 'skl2onnx')} | {f(rr, 'gmmnet')} | {f(rr, 'gmmnet_auto')} "
                     f"| {f(rr, 'gmmnet_quadratic')} | {f(rr, 'skl2onnx')} |")
    lines += ["", "`distances` in the graph but not fetched (default outputs fetched in both):", "",
              "| K | d | N | cov | without | with | ratio |", "|---|---|---|---|---|---|---|"]
    for r in res["sizes"]:
        t = r["seconds"]
        lines.append(f"| {r['K']} | {r['d']} | {r['N']} | {r['covariance_type']} | {_ms(t['default_outputs'])} "
                     f"| {_ms(t['default_outputs_distances_in_graph'])} | {r['ratios']['distances_in_graph/without']:.2f} |")
    lines += ["", "Rank truncation (full mixtures truncated to rank r, isotropic residual): `completed` = the "
              "single-mixture exporter, which completes each component to d neurons; `K·r` = what `gmmnet.to_onnx` "
              "writes for a truncated mixture (K·r neurons and the residual term ‖x − μ_k‖²/σ², one-level deep graph), "
              "with `compute=\"float32\"` and with the default `auto` (its choice in brackets). ms, and "
              "log_likelihood max|Δ|/(1+|ref|):", "",
              "| K | d | N | rank | completed | K·r float32 | K·r auto | err completed | err K·r float32 | err K·r auto |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["ranks"]:
        t, e = r["seconds"], r["log_likelihood_error"]
        lines.append(f"| {r['K']} | {r['d']} | {r['N']} | {r['rank']} | {_ms(t['completed'])} | {_ms(t['kr_float32'])} "
                     f"| {_ms(t['kr_auto'])} ({r['compute_auto']}) | {e['completed']:.1e} | {e['kr_float32']:.1e} "
                     f"| {e['kr_auto']:.1e} |")
    c = res.get("conversion")
    if c:
        lines += ["", f"Conversion of a K={c['K']}, d={c['d']} full GMM (seconds, wall / CPU):", "",
                  "| step | wall | CPU |", "|---|---|---|"]
        for key in ("to_onnx_float32", "to_onnx_auto", "from_onnx"):
            label = key + (f" (compute {c[key]['compute']})" if "compute" in c[key] else "")
            lines.append(f"| {label} | {c[key]['wall']:.2f} | {c[key]['cpu']:.2f} |")
    p = res["profile"]
    lines += ["", f"onnxruntime profile of the full graph, K={p['K']}, d={p['d']}, N={p['N']} "
                  f"(log_likelihood only, compute float32; numpy X@Wᵀ {_ms(p['numpy_matmul'])} ms):", "",
              "| operator | ms per run | share |", "|---|---|---|"]
    for op, sec in p["seconds_per_op_type"].items():
        lines.append(f"| {op} | {_ms(sec)} | {p['share_per_op_type'][op]:.0%} |")
    lines += ["", f"Graph as written: {' → '.join(p['graph_nodes'])}.", "",
              f"After onnxruntime's optimizations: {' → '.join(p['optimized_nodes'])}."]
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

    here = os.path.dirname(os.path.abspath(__file__))
    json_path = args.json or os.path.join(here, "results.json")
    doc_path = args.doc or os.path.join(os.path.dirname(here), "docs", "performance.md")
    rng = np.random.default_rng(0)
    res = {"environment": environment(args), "sizes": []}
    for K, d, N in (QUICK_SIZES if args.quick else SIZES):
        for ct in COV_TYPES:
            r = bench_size(K, d, N, ct, args, rng)
            res["sizes"].append(r)
            t, q = r["seconds"], r["ratios"]
            print(f"K={K:3d} d={d:3d} N={N:6d} {ct:9s} sklearn {_ms(t['sklearn']):>8} skl2onnx {_ms(t['skl2onnx']):>8} "
                  f"gmmnet {_ms(t['gmmnet']):>8} auto[{r['compute_auto']}] {_ms(t['gmmnet_auto']):>8} "
                  f"numpy {_ms(t['numpy']):>8} ms | /skl2onnx {q['gmmnet/skl2onnx']:.2f} /sklearn "
                  f"{q['gmmnet/sklearn']:.2f} /numpy {q['gmmnet/numpy']:.2f}", flush=True)
    res["ranks"] = bench_ranks(args, rng)
    for r in res["ranks"]:
        print(f"rank {r['rank']:3d} of d={r['d']}: " + ", ".join(f"{k} {_ms(v)} ms" for k, v in r["seconds"].items()),
              flush=True)
    if not args.no_conversion:
        res["conversion"] = bench_conversion(args, rng)
        print("conversion:", json.dumps(res["conversion"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        res["profile"] = profile(args, rng, tmp)
    print("profile:", json.dumps(res["profile"]["share_per_op_type"]), flush=True)
    res["environment"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    with open(json_path, "w") as f:
        json.dump(res, f, indent=1)
    table = markdown(res)
    write_doc(doc_path, table)
    print(f"wrote {json_path} and {doc_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
