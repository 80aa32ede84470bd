"""The gmmnet command line: parse, call the library, print.  No math lives here."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .errors import EXIT_CODES, GmmnetError, PrecisionWarning, UsageError

EPILOG_EXIT_CODES = "exit codes:\n" + "\n".join(
    f"  {code:<3} {name}" for name, code in sorted(EXIT_CODES.items(), key=lambda kv: kv[1])
) + "\n  130 interrupted (Ctrl-C)\n  141 standard output closed early (e.g. piped into head)\n\nSee docs/cli.md for details."



# ---------------------------------------------------------------------------
# helpers


def _load_mixture(path: str, *, eigenvalue_floor: float | None = None, max_condition: float | None = None):
    """Any model file → IR document (Mixture or Hierarchy).

    With ``eigenvalue_floor``/``max_condition`` the eigenvalues are floored explicitly
    (:func:`gmmnet.linalg.regularize`); a sklearn model's singular components are floored
    before the IR validates them.
    """
    from . import io, linalg
    from .ir import Hierarchy, Mixture

    floor = {"eigenvalue_floor": eigenvalue_floor, "max_condition": max_condition}
    linalg.check_floor_options(**floor)
    obj = io.load_model(path)
    if isinstance(obj, (Mixture, Hierarchy)):
        doc = obj
    else:
        import onnx

        from .hierarchy import HierarchicalGaussianMixture

        if isinstance(obj, onnx.ModelProto):
            from .recover import from_onnx

            doc, _ = from_onnx(obj)
        elif isinstance(obj, HierarchicalGaussianMixture):
            doc = obj.to_ir()
        else:
            from .formats.sklearn import from_sklearn

            return from_sklearn(obj, **floor)
    if eigenvalue_floor is None and max_condition is None:
        return doc
    return linalg.regularize(doc, **floor)[0]


def _export_options():
    """The export options' choices and defaults (gmmnet.formats.onnx.options), for the to-onnx flags."""
    from .formats.onnx import options

    class _Choices:
        ACTIVATIONS, DTYPES, OUTPUTS, CENTERINGS = options.ACTIVATIONS, options.DTYPES, options.OUTPUTS, options.CENTERINGS
        COMPUTES, LAYOUTS, INTENSITIES, OUTPUT_NAMINGS = (options.COMPUTES, options.LAYOUTS, options.INTENSITIES,
                                                          options.OUTPUT_NAMINGS)

        @staticmethod
        def default(name):
            value = options.ExportOptions.model_fields[name].default
            return list(value) if isinstance(value, tuple) else value

    return _Choices


def _default_output(path: str, suffix: str) -> str:
    return str(Path(path).with_suffix(suffix))


def _parse_groups(text: str | None):
    """'4' → consecutive groups of 4 neurons; '0,1,2;3,4,5' → explicit groups."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        return [[int(i) for i in part.split(",") if i.strip()] for part in text.split(";") if part.strip()]
    except ValueError:
        raise UsageError(f"--groups must be a group size like '4' or index lists like '0,1;2,3', got {text!r}") from None


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)])


# ---------------------------------------------------------------------------
# commands


def cmd_to_onnx(args) -> int:
    from . import io
    from .formats.onnx import to_onnx
    from .formats.onnx.options import ExportOptions

    out = args.output or _default_output(args.model, ".onnx")
    options = ExportOptions(**{name: getattr(args, name) for name in ExportOptions.model_fields})
    mixture = _load_mixture(args.model, eigenvalue_floor=args.eigenvalue_floor, max_condition=args.max_condition)
    floored = mixture.provenance.extra.get("eigenvalues_floored")
    if floored is not None:
        print(f"gmmnet: note: raised {floored} eigenvalue(s) to the requested floor", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # the plan carries them: printed below
        model, plan = to_onnx(mixture, **options.model_dump(), return_plan=True)
    io.save_onnx(model, out, force=args.force, inputs=(args.model,))
    print(f"wrote {out}: {plan.summary()}, activation={args.activation}, dtype={args.dtype}, opset={args.opset}")
    for message in plan.warnings:
        print(f"gmmnet: warning: {message}", file=sys.stderr)
    if plan.float32_loss is not None and plan.float32_loss > 1e-4:
        print(f"gmmnet: warning: float32 may lose ~{plan.float32_loss:.1e} in log_likelihood; consider --dtype float64",
              file=sys.stderr)
    return 0


def cmd_to_gmm(args) -> int:
    from . import io
    from .recover import from_onnx

    out = args.output or _default_output(args.model, ".json")
    suffix = Path(out).suffix.lower()
    if suffix not in (".json", ".skops", ".pkl", ".pickle", ".joblib"):  # fail before the work
        raise UsageError(f"unknown output suffix {suffix or '(none)'!r}: use .json, .skops, .pkl or .joblib")
    inputs = tuple(p for p in (args.model, args.data) if p)
    if args.report and io.same_file(args.report, out):
        raise UsageError(f"--report {args.report} is the output file; choose another path")
    data = io.load_data(args.data) if args.data else None
    model = io.load_model(args.model)
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise UsageError(f"to-gmm reads an ONNX network; {args.model} is not one (use inspect or to-onnx)")
    from .formats.onnx.deep import is_deep

    if args.groups is None and is_deep(model):  # a hierarchy: one mixture per neuron level
        from .formats.onnx.deep import from_onnx as from_deep_onnx
        from .hierarchy import HierarchicalGaussianMixture

        mixture, report = from_deep_onnx(model, data=data)
        if suffix == ".json":
            io.save_ir(mixture, out, force=args.force, inputs=inputs)
        else:
            io.save_estimator(HierarchicalGaussianMixture.from_ir(mixture), out, force=args.force, inputs=inputs)
        if args.report:
            io.atomic_write(args.report, json.dumps(_finite_json(report), indent=2).encode(), force=args.force,
                            inputs=(*inputs, out))
        print(f"wrote {out}: hierarchy of {len(mixture.levels)} levels ("
              + ", ".join(f"{m.n_components} components over {m.n_features} features" for m in mixture.levels) + ")")
        for note in report.get("notes", []):
            print(f"note: {note}")
        return 0
    mixture, report = from_onnx(model, data=data, groups=_parse_groups(args.groups))
    if suffix == ".json":
        io.save_ir(mixture, out, force=args.force, inputs=inputs)
    elif suffix in (".skops", ".pkl", ".pickle", ".joblib"):
        from .formats.sklearn import to_sklearn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            io.save_estimator(to_sklearn(mixture), out, force=args.force, inputs=inputs)
    if args.report:
        io.atomic_write(args.report, json.dumps(report, indent=2, default=float).encode(), force=args.force,
                        inputs=(*inputs, out))
    print(f"wrote {out}: {mixture.n_components} components over {mixture.n_features} features")
    _print_diagnostics(report)
    return 0


def _print_diagnostics(report: dict) -> None:
    comps = report.get("components") if isinstance(report, dict) else None
    if not comps:
        return
    keys = [k for k in comps[0] if k != "index"]
    rows = [[str(c.get("index", i))] + [_fmt(c.get(k)) for k in keys] for i, c in enumerate(comps)]
    print(_table(rows, ["component", *keys]))


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _finite_json(obj):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite_json(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    return obj if obj is None or isinstance(obj, str) else str(obj)


#: float32 graphs whose estimated log-likelihood error exceeds this get a warning in `inspect`.
PRECISION_WARN = 1e-4


def inspect_summary(path: str, data_path: str | None = None) -> dict:
    """Machine-readable summary of any file gmmnet reads (what `inspect --json` prints).

    Keys: ``file``, ``kind`` (estimator/ir/onnx), ``class``; ``graph`` for ONNX (inputs, outputs,
    opset, node count, activation, input dtype, metadata); ``levels`` (one per mixture of a
    hierarchy) with per-component weight, neurons, eigenvalue range and condition number and
    the recovery ``diagnostics``; ``recovery`` for ONNX (how it was read back); ``precision``
    (float32 error estimate of level 0 and a warning when it exceeds :data:`PRECISION_WARN`).
    """
    from . import io
    from .ir import Hierarchy
    from .plot import as_document

    raw = io.load_model(path)
    data = io.load_data(data_path) if data_path else None
    summary: dict = {"file": str(path), "class": f"{type(raw).__module__}.{type(raw).__name__}"}
    import onnx
    from onnx import TensorProto

    is_onnx = isinstance(raw, onnx.ModelProto)
    summary["kind"] = "onnx" if is_onnx else ("ir" if Path(path).suffix.lower() == ".json" else "estimator")
    graph_dtype = None
    if is_onnx:
        g = raw.graph
        ops = [n.op_type for n in g.node]
        elem = g.input[0].type.tensor_type.elem_type if len(g.input) else 0
        graph_dtype = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}.get(elem, TensorProto.DataType.Name(elem).lower())
        summary["graph"] = {
            "inputs": [i.name for i in g.input],
            "outputs": [o.name for o in g.output],
            "opset": max((o.version for o in raw.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "nodes": len(ops),
            "activation": "+".join(a for a, op in (("abs", "Abs"), ("relu", "Relu")) if op in ops) or None,
            "dtype": graph_dtype,
            "producer": raw.producer_name or None,
            "metadata": {p.key: p.value for p in raw.metadata_props},
        }
    doc, report = as_document(raw, data=data)
    levels = doc.levels if isinstance(doc, Hierarchy) else [doc]
    summary["document"] = doc.kind
    summary["levels"] = []
    for m in levels:
        comps = []
        for k, c in enumerate(m.components):
            lam = c.eigenvalues
            comps.append({
                "index": k,
                "weight": c.weight,
                "neurons": c.rank,
                "eigenvalue_min": float(lam.min()),
                "eigenvalue_max": float(lam.max()),
                "condition_number": float(lam.max() / lam.min()),
                "log_constant": c.log_constant,
                "residual_variance": c.residual_variance,
            })
        summary["levels"].append({
            "n_components": m.n_components,
            "n_features": m.n_features,
            "n_neurons": sum(c.rank for c in m.components),
            "covariance_type": m.covariance_type,
            "source": m.provenance.source,
            "components": comps,
            "diagnostics": m.diagnostics,
        })
    if report is not None:
        keys = ("grouping", "exact", "low_confidence", "head", "n_levels", "neurons", "notes", "reader")
        summary["recovery"] = {k: report.get(k) for k in keys if k in report}
    summary["precision"] = _precision(levels[0], graph_dtype)
    return _finite_json(summary)


def _precision(mixture, graph_dtype: str | None) -> dict:
    from .formats.onnx import float32_error_estimate

    est = float(float32_error_estimate(mixture))
    warning = None
    if est > PRECISION_WARN and graph_dtype in (None, "float32"):
        what = "this float32 graph" if graph_dtype else "a float32 graph (the to-onnx default)"
        warning = (f"{what} may lose ~{est:.1e} in log_likelihood (> {PRECISION_WARN:g}); "
                   "use to-onnx --dtype float64")
    return {"float32_error_estimate": est, "threshold": PRECISION_WARN, "warning": warning}


def cmd_inspect(args) -> int:
    summary = inspect_summary(args.file, args.data)
    warning = summary["precision"]["warning"]
    if args.json:
        print(json.dumps(summary, indent=2, allow_nan=False))
        if warning:
            print(f"gmmnet: warning: {warning}", file=sys.stderr)
        return 0
    print(f"{summary['file']}: {summary['class']}")
    if "graph" in summary:
        g = summary["graph"]
        print(f"ONNX graph: inputs {', '.join(g['inputs'])} -> outputs {', '.join(g['outputs'])}; opset {g['opset']}, "
              f"{g['nodes']} nodes, activation {g['activation']}, dtype {g['dtype']}")
    if "recovery" in summary:
        r = summary["recovery"]
        if "n_levels" in r:  # a deep network, read back level by level
            print(f"read back: {r['n_levels']} levels of {r.get('neurons')} neurons")
        else:
            low = r.get("low_confidence")
            low = ", ".join(map(str, low)) if isinstance(low, list) and low else ("none" if isinstance(low, list) else low)
            print(f"read back: grouping {r.get('grouping')}, exact {r.get('exact')}, low-confidence components: {low}")
        for note in r.get("notes") or []:
            print(f"  note: {note}")
    for i, lvl in enumerate(summary["levels"]):
        title = f"level {i}: " if len(summary["levels"]) > 1 else ""
        print(f"\n{title}{lvl['n_components']} components, {lvl['n_features']} features, {lvl['n_neurons']} neurons, "
              f"covariance_type {lvl['covariance_type']}, source {lvl['source']}")
        rows = [[str(c["index"]), f"{c['weight']:.4f}", str(c["neurons"]), f"{c['eigenvalue_min']:.3g}",
                 f"{c['eigenvalue_max']:.3g}", f"{c['condition_number']:.3g}"] for c in lvl["components"]]
        print(_table(rows, ["component", "weight", "neurons", "eig min", "eig max", "condition"]))
        diag = (lvl.get("diagnostics") or {}).get("components")
        if diag:
            print("\nrecovery diagnostics (docs/recovery.md):")
            keys = ["exact", "low_confidence", "faithfulness_r2", "hyperplane_distance_sigma", "whitening_error"]
            rows = [[str(c.get("index", j))] + [_fmt(c.get(k)) for k in keys] + ["; ".join(c.get("reasons") or [])]
                    for j, c in enumerate(diag)]
            print(_table(rows, ["component", "exact", "low conf.", "R²", "hyperplane σ", "whitening err", "reasons"]))
    meta = summary.get("graph", {}).get("metadata") or {}
    print()
    if "compute" in meta:  # the graph's own arithmetic, as gmmnet wrote it
        line = f"this graph: layout {meta.get('layout', 'neurons')}, compute {meta['compute']}"
        if "predicted_error_log_likelihood" in meta:
            line += f", predicted log_likelihood error {float(meta['predicted_error_log_likelihood']):.2g}"
        print(line)
    p = summary["precision"]
    print(f"pure-float32 error estimate of this mixture (log_likelihood, neurons layout): {p['float32_error_estimate']:.2g}")
    if warning:
        print(f"gmmnet: warning: {warning}", file=sys.stderr)
    return 0


def cmd_schema(args) -> int:
    from . import io
    from .ir import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        io.atomic_write(args.output, text.encode(), force=args.force)
    else:
        sys.stdout.write(text)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    rows = run_demo(dataset=args.dataset, n_components=args.components, seed=args.seed)
    print(f"gmmnet demo: GaussianMixture on scikit-learn's {args.dataset} (standardized), "
          f"K={args.components}, checked on onnxruntime against sklearn")
    print(_table(
        [[r["covariance_type"], r["dtype"], r["activation"], str(r["components"]), str(r["neurons"]),
          f"{r['max_err_loglik']:.1e}", f"{r['max_err_resp']:.1e}", f"{100 * r['label_agreement']:.2f}%"] for r in rows],
        ["covariance", "dtype", "activation", "components", "neurons", "max err loglik", "max err resp", "labels agree"],
    ))
    bad = [r for r in rows if not r["ok"]]
    if bad:
        print(f"gmmnet: error: {len(bad)} configuration(s) exceeded the stated tolerance", file=sys.stderr)
        return 1
    print("all configurations within tolerance (float32: 2e-6 loglik, 1e-6 resp; float64: 1e-10)")
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_file

    size = None
    if args.size:
        try:
            size = tuple(float(v) for v in args.size.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2:
            raise UsageError(f"--size must look like 10x4.5 (inches), got {args.size!r}")
    info = plot_file(args.model, args.output, data_path=args.data, kind=args.kind, image_shape=args.image_shape,
                     size=size, dpi=args.dpi, force=args.force)
    print(f"wrote {info['output']}: {info['width_px']}x{info['height_px']} px ({args.kind})")
    return 0


# ---------------------------------------------------------------------------


def cmd_fit(args) -> int:
    import time

    from . import io
    from .hierarchy import fit_model, parse_levels

    parse_levels(args.levels)  # fail on a bad spec before loading anything
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".skops", ".pkl", ".pickle", ".joblib"):
        raise UsageError(f"unknown output suffix {suffix or '(none)'!r}: use .skops, .pkl or .joblib")
    if Path(args.output).exists() and not args.force:
        from .errors import OutputExistsError

        raise OutputExistsError(f"{args.output} exists; pass --force to overwrite")
    X = io.load_data(args.data)
    started = {}

    def progress(i, n, spec, n_features, est):
        what = f"level {i + 1}/{n}: {spec['n_components']} {spec['covariance_type']} components on {n_features} features"
        if spec["rank"] is not None:
            what += f", rank {spec['rank']}"
        if est is None:
            started[i] = time.perf_counter()
            print(f"gmmnet fit: {what} ...", file=sys.stderr, flush=True)
        else:
            state = "converged" if est.converged_ else "NOT converged"
            print(f"gmmnet fit: {what} done in {time.perf_counter() - started[i]:.2f} s "
                  f"({state}, {est.n_iter_} EM iterations)", file=sys.stderr, flush=True)

    params = {k: v for k, v in (("max_iter", args.max_iter), ("n_init", args.n_init), ("reg_covar", args.reg_covar))
              if v is not None}
    try:
        est = fit_model(X, args.levels, random_state=args.seed, progress=progress, **params)
    except ValueError as exc:  # scikit-learn's parameter validation
        if isinstance(exc, GmmnetError):
            raise
        raise UsageError(str(exc).splitlines()[0]) from None
    io.save_estimator(est, args.output, force=args.force, inputs=(args.data,))
    kind = type(est).__name__
    print(f"wrote {args.output}: {kind} ({args.levels}) on {X.shape[0]} rows x {X.shape[1]} features, "
          f"mean log-likelihood {est.score(X):.4f}")
    return 0


def cmd_score(args) -> int:
    from .score import score_to_file

    info = score_to_file(args.model, args.data, args.output, outputs=args.outputs, batch_size=args.batch_size,
                         threads=args.threads, force=args.force, progress=None if args.progress is None else args.progress)
    rate = info["rows"] / max(info["seconds"], 1e-9)
    n_bad = info["nonfinite_rows"]
    bad = f", {n_bad} row{'s' if n_bad != 1 else ''} with NaN/inf (NaN results, label -1)" if n_bad else ""
    print(f"wrote {info['output']}: {', '.join(info['outputs'])} for {info['rows']} rows in {info['seconds']:.2f} s "
          f"({rate:,.0f} rows/s, batch size {info['batch_size']}, {info['threads']} threads){bad}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gmmnet",
        description="Translate between Gaussian mixture models and Abs/ReLU neural networks (ONNX).",
        epilog=EPILOG_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"gmmnet {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--max-memory", metavar="SIZE",
                   help="refuse work estimated to need more memory than SIZE, e.g. 8G "
                        "(default: $GMMNET_MAX_MEMORY or 4G)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="fit a GMM on bundled data, convert it, check it against sklearn")
    d.add_argument("--dataset", default="wine", choices=("iris", "wine", "breast_cancer", "digits"),
                   help="scikit-learn bundled dataset (default: wine)")
    d.add_argument("--components", type=int, default=3, help="number of mixture components (default: 3)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("to-onnx", help="convert a fitted mixture (.pkl/.joblib/.skops/.json) to ONNX",
                       description="Convert a fitted GaussianMixture/BayesianGaussianMixture or an IR .json "
                                   "to an ONNX network: Linear neurons w = λ^-1/2 v, b = −wᵀμ, Abs, then a head. "
                                   "A HierarchicalGaussianMixture (or IR Hierarchy) becomes a deep network, one "
                                   "Linear→Abs per level (docs/hierarchy.md).")
    t.add_argument("model", help="fitted mixture: .pkl, .joblib, .skops (loaded safely) or IR .json")
    t.add_argument("-o", "--output", help="output .onnx (default: MODEL with .onnx)")
    _EO = _export_options()
    t.add_argument("--activation", choices=_EO.ACTIVATIONS, default=_EO.default("activation"),
                   help="abs, or relu with exact paired neurons |z| = relu(z)+relu(−z) (default: abs); "
                        "shifted_relu is the paper's intensity network relu(−z+δ), approximate (docs/hierarchy.md)")
    t.add_argument("--delta", type=float, default=_EO.default("delta"),
                   help="δ of --activation shifted_relu, in standard deviations (default: 3.0)")
    t.add_argument("--intensity", choices=_EO.INTENSITIES, default=_EO.default("intensity"),
                   help="turn the distances output a into exp(−a²), exp(−a) or relu(c − a) (paper §4.3)")
    t.add_argument("--intensity-c", type=float, default=_EO.default("intensity_c"),
                   help="c of --intensity triangle (default: 3.0)")
    t.add_argument("--dtype", choices=_EO.DTYPES, default=_EO.default("dtype"), help="graph precision (default: float32)")
    t.add_argument("--opset", type=int, default=_EO.default("opset"), help="ONNX opset, 13–21 (default: 17)")
    t.add_argument("--outputs", nargs="+", choices=_EO.OUTPUTS, metavar="NAME", default=_EO.default("outputs"),
                   help=f"outputs to include, any of {', '.join(_EO.OUTPUTS)} "
                        "(default: label responsibilities log_likelihood)")
    t.add_argument("--centering", choices=_EO.CENTERINGS, default=_EO.default("centering"),
                   help="how float32 graphs centre inputs before the product (default: auto, by conditioning)")
    t.add_argument("--compute", choices=_EO.COMPUTES, default=_EO.default("compute"),
                   help="arithmetic inside a float32 graph (input and outputs stay float32): auto = float64 where "
                        "float32 would miss the accuracy targets, else float32 (default: auto)")
    t.add_argument("--layout", choices=_EO.LAYOUTS, default=_EO.default("layout"),
                   help="neurons: the Abs network (default); quadratic: diag/spherical mixtures only, D² as one "
                        "expanded product in float64 inside, the fast layout (docs/onnx-graph.md#layouts)")
    t.add_argument("--level-outputs", action="store_true", default=_EO.default("level_outputs"),
                   help="hierarchies: also output level{i}_responsibilities for every level, which carries the "
                        "lower levels' component weights so that to-gmm gives the whole hierarchy back exactly")
    t.add_argument("--output-names", choices=_EO.OUTPUT_NAMINGS, default=_EO.default("output_names"),
                   help="gmmnet (default), or skl2onnx: input X and outputs label (N, 1), probabilities and "
                        "score_samples (N, 1), as skl2onnx names a GaussianMixture's, so that serving code "
                        "written for skl2onnx runs unchanged")
    t.add_argument("--eigenvalue-floor", type=float, metavar="VAR",
                   help="raise every eigenvalue (variance) below VAR to VAR; changes the model, off by default")
    t.add_argument("--max-condition", type=float, metavar="C",
                   help="raise each component's eigenvalues to at least λ_max/C (caps the condition number); "
                        "changes the model, off by default")
    t.add_argument("--force", action="store_true", help="overwrite an existing output")
    t.set_defaults(func=cmd_to_onnx)

    g = sub.add_parser("to-gmm", help="recover a Gaussian mixture from an ONNX network",
                       description="Recover Gaussians from an Abs/ReLU network: exact for gmmnet's graphs, "
                                   "approximate with diagnostics for trained ones.")
    g.add_argument("model", help="ONNX network (.onnx)")
    g.add_argument("-o", "--output", help="output .json (IR), .skops, .pkl or .joblib (default: MODEL with .json)")
    g.add_argument("--data", help="data (.npy or .csv) for grouping neurons, prototypes and diagnostics")
    g.add_argument("--groups", help="neuron groups: a group size ('4') or index lists ('0,1,2;3,4,5')")
    g.add_argument("--report", help="also write the diagnostics report as JSON here")
    g.add_argument("--force", action="store_true", help="overwrite existing outputs")
    g.set_defaults(func=cmd_to_gmm)

    i = sub.add_parser("inspect", help="summarize a mixture, hierarchy, IR or ONNX file",
                       description="Per component: weight, neurons, eigenvalue range and condition number; "
                                   "for ONNX the graph summary and how it was read back (with the recovery "
                                   "diagnostics); a warning when a float32 graph would lose more than "
                                   f"{PRECISION_WARN:g} in log_likelihood.")
    i.add_argument("file", help=".pkl, .joblib, .skops (mixtures or HierarchicalGaussianMixture), .json (IR) or .onnx")
    i.add_argument("--data", help="data (.npy or .csv) for reading back a trained ONNX network and its diagnostics")
    i.add_argument("--json", action="store_true", help="machine-readable JSON (strict: no NaN)")
    i.set_defaults(func=cmd_inspect)

    s = sub.add_parser("schema", help="print (or write) the JSON Schema of the IR")
    s.add_argument("-o", "--output", help="write here instead of stdout")
    s.add_argument("--force", action="store_true", help="overwrite an existing output")
    s.set_defaults(func=cmd_schema)
    pl = sub.add_parser("plot", help="draw a mixture: ellipses and neurons, image grids, spectra, diagnostics",
                        description="Draw any model gmmnet reads (mixture files, hierarchies, IR, gmmnet and "
                                    "trained ONNX networks) with matplotlib (pip install 'gmmnet[plot]'). "
                                    "ellipses: points, each component's 1σ/2σ ellipses and each neuron's "
                                    "hyperplane through the mean with its normal (top-2 principal plane above "
                                    "2-D); images: means and neuron weights as image grids; spectrum: "
                                    "eigenvalues per component; diagnostics: recovery diagnostics. auto: "
                                    "ellipses (or images with --image-shape), spectrum, and diagnostics when "
                                    "present. See docs/plotting.md.")
    pl.add_argument("model", help=".pkl, .joblib, .skops, .json (IR) or .onnx")
    pl.add_argument("-o", "--output", required=True, help="output figure: .png, .svg or .pdf")
    pl.add_argument("--data", help="data (.npy or .csv) to draw as points (and to read back ONNX networks with)")
    pl.add_argument("--image-shape", metavar="HxW", help="pixel grid of image data, e.g. 8x8 (H·W = n_features)")
    pl.add_argument("--kind", choices=("auto", "ellipses", "images", "spectrum", "diagnostics"), default="auto",
                    help="what to draw (default: auto)")
    pl.add_argument("--size", metavar="WxH", help="figure size in inches (default: 5x4.5 per panel)")
    pl.add_argument("--dpi", type=float, default=100, help="pixels per inch for .png (default: 100)")
    pl.add_argument("--force", action="store_true", help="overwrite an existing output")
    pl.set_defaults(func=cmd_plot)
    f = sub.add_parser("fit", help="fit a Gaussian mixture or a hierarchy of them on data",
                       description="Fit a GaussianMixture (one level) or a HierarchicalGaussianMixture (several "
                                   "levels, each fitted on the Abs features of the one below) and save it; then "
                                   "`gmmnet to-onnx` turns it into a network. Progress goes to stderr.",
                       epilog="level spec: comma-separated levels, bottom first, each K[:covariance_type][:r=R]\n"
                              "  e.g. '8:full,4:diag:r=3' = 8 full-covariance components on the data, then 4 diag\n"
                              "  components on their 8*d Abs features keeping the top 3 principal directions each.\n"
                              "  One level without r gives a plain sklearn GaussianMixture. See docs/hierarchy.md.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("data", help="training data: .npy (2-D) or .csv (numeric, optional header)")
    f.add_argument("--levels", required=True, help="level spec, e.g. '8:full,4:diag:r=3' (see below)")
    f.add_argument("-o", "--output", required=True, help="output model: .skops, .pkl or .joblib")
    f.add_argument("--seed", type=int, default=None, help="random_state of every level (default: none)")
    f.add_argument("--max-iter", type=int, default=None, help="EM iterations per level (default: 100)")
    f.add_argument("--n-init", type=int, default=None, help="initializations per level (default: 1)")
    f.add_argument("--reg-covar", type=float, default=None, help="covariance regularization (default: 1e-6)")
    f.add_argument("--force", action="store_true", help="overwrite an existing output")
    f.set_defaults(func=cmd_fit)
    sc = sub.add_parser("score", help="score data in chunks with an ONNX model, writing results incrementally",
                        description="Score DATA (.npy memory-mapped, .csv streamed, .parquet by record batches)\n"
                                    "with an ONNX model in bounded memory. Chunks of rows are scored on\n"
                                    "single-threaded onnxruntime sessions, several at once, and written as they\n"
                                    "come to a temporary file that replaces OUT when complete. Rows with NaN or\n"
                                    "inf give NaN (label: -1). A progress bar shows on a terminal. Results do\n"
                                    "not depend on --batch-size or --threads, bit for bit. See docs/scoring.md.",
                        epilog="OUT formats:\n"
                               "  .npy  one output (default log_likelihood, or the model's only output)\n"
                               "  .npz  one array per output, named after it (default: all outputs)\n"
                               "  .csv  a header, then one column per scalar output and NAME_j columns for\n"
                               "        per-component outputs (default: all outputs)",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sc.add_argument("model", help="ONNX model (.onnx), e.g. from gmmnet to-onnx")
    sc.add_argument("data", help="rows to score: .npy, .csv (numeric, optional header) or .parquet (numeric columns)")
    sc.add_argument("-o", "--output", required=True, help="results: .npy, .npz or .csv (see below)")
    sc.add_argument("--outputs", nargs="+", metavar="NAME", help="model outputs to write (default: see below)")
    sc.add_argument("--batch-size", type=int, metavar="N",
                    help="rows per chunk (default: about 1 MiB of activations per chunk, 128-65536 rows)")
    sc.add_argument("--threads", type=int, metavar="N", help="chunks scored at once (default: CPU count, at most 8)")
    sc.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="show a progress bar on stderr (default: only when stderr is a terminal)")
    sc.add_argument("--force", action="store_true", help="overwrite an existing output")
    sc.set_defaults(func=cmd_score)
    return p


def _closed_pipe() -> int:
    """stdout's reader went away (``gmmnet inspect x | head``): stop quietly, like other Unix tools."""
    import os

    try:  # later flushes (at exit) would raise again; send them nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return UsageError.exit_code
    try:  # the limit holds for this call only (main is also called in-process)
        if args.max_memory is not None:
            from .limits import parse_size, set_max_memory

            try:
                set_max_memory(parse_size(args.max_memory))
            except ValueError as exc:
                raise UsageError(f"--max-memory: {exc}") from None
        return args.func(args)
    except BrokenPipeError:
        return _closed_pipe()
    except GmmnetError as exc:
        if args.debug:
            raise
        print(f"gmmnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gmmnet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI promises one line, not a traceback
        if args.debug:
            raise
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            from .errors import InvalidModelError
            from .ir import format_validation_error

            print(f"gmmnet: error: invalid model: {format_validation_error(exc)}", file=sys.stderr)
            return InvalidModelError.exit_code
        print(f"gmmnet: error: internal error ({type(exc).__name__}: {exc}); rerun with --debug", file=sys.stderr)
        return 1
    finally:
        if args.max_memory is not None:
            from .limits import set_max_memory

            set_max_memory(None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
