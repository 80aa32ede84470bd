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
) + "\n  130 interrupted\n\nSee docs/cli.md for details."

OUTPUT_CHOICES = ("label", "responsibilities", "log_likelihood", "distances", "mahalanobis")


# ---------------------------------------------------------------------------
# helpers


def _load_mixture(path: str):
    """Any model file → IR document (Mixture or Hierarchy) plus a short description of the source."""
    from . import io
    from .ir import Hierarchy, Mixture

    obj = io.load_model(path)
    if isinstance(obj, (Mixture, Hierarchy)):
        return obj
    import onnx

    if isinstance(obj, onnx.ModelProto):
        from .recover import from_onnx

        mixture, _ = from_onnx(obj)
        return mixture
    from .formats.sklearn import from_sklearn

    return from_sklearn(obj)


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
    from .formats.onnx import float32_error_estimate, to_onnx

    out = args.output or _default_output(args.model, ".onnx")
    mixture = _load_mixture(args.model)
    outputs = tuple(args.outputs) if args.outputs else ("label", "responsibilities", "log_likelihood")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrecisionWarning)
        model = to_onnx(
            mixture, activation=args.activation, dtype=args.dtype, opset=args.opset, outputs=outputs, centering=args.centering
        )
    io.save_onnx(model, out, force=args.force, inputs=(args.model,))
    n_neurons = sum(c.rank for c in mixture.components) if mixture.kind == "mixture" else None
    print(f"wrote {out}: {mixture.n_components} components, {n_neurons} neurons, "
          f"activation={args.activation}, dtype={args.dtype}, opset={args.opset}")
    for w in caught:
        print(f"gmmnet: warning: {w.message}", file=sys.stderr)
    if args.dtype == "float32" and mixture.kind == "mixture":
        est = float32_error_estimate(mixture, "component")
        if est > 1e-4:
            print(f"gmmnet: warning: float32 may lose ~{est:.1e} in log_likelihood; consider --dtype float64", file=sys.stderr)
    return 0


def cmd_to_gmm(args) -> int:
    from . import io
    from .recover import from_onnx

    out = args.output or _default_output(args.model, ".json")
    data = io.load_data(args.data) if args.data else None
    model = io.load_model(args.model)
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise UsageError(f"to-gmm reads an ONNX network; {args.model} is not one (use inspect or to-onnx)")
    mixture, report = from_onnx(model, data=data, groups=_parse_groups(args.groups))
    suffix = Path(out).suffix.lower()
    if suffix == ".json":
        io.save_ir(mixture, out, force=args.force, inputs=(args.model,))
    elif suffix in (".skops", ".pkl", ".pickle", ".joblib"):
        from .formats.sklearn import to_sklearn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            io.save_estimator(to_sklearn(mixture), out, force=args.force, inputs=(args.model,))
    else:
        raise UsageError(f"unknown output suffix {suffix!r}: use .json, .skops, .pkl or .joblib")
    if args.report:
        io.atomic_write(args.report, json.dumps(report, indent=2, default=float).encode(), force=args.force, inputs=(args.model,))
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


def inspect_summary(path: str) -> dict:
    """Machine-readable summary of any file gmmnet reads (used by `inspect --json`)."""
    from . import io
    from .ir import Hierarchy, Mixture

    obj = io.load_model(path)
    summary: dict = {"file": path}
    import onnx

    if isinstance(obj, onnx.ModelProto):
        g = obj.graph
        ops = [n.op_type for n in g.node]
        summary["graph"] = {
            "inputs": [i.name for i in g.input],
            "outputs": [o.name for o in g.output],
            "opset": max((o.version for o in obj.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "nodes": len(ops),
            "activation": "abs" if "Abs" in ops else ("relu" if "Relu" in ops else None),
            "metadata": {p.key: p.value for p in obj.metadata_props},
        }
    mixture = _load_mixture(path) if not isinstance(obj, (Mixture, Hierarchy)) else obj
    levels = mixture.levels if isinstance(mixture, Hierarchy) else [mixture]
    summary["levels"] = []
    for m in levels:
        comps = []
        for k, c in enumerate(m.components):
            comps.append({
                "index": k,
                "weight": c.weight,
                "neurons": c.rank,
                "eigenvalue_min": float(c.eigenvalues.min()),
                "eigenvalue_max": float(c.eigenvalues.max()),
                "condition_number": float(c.eigenvalues.max() / c.eigenvalues.min()),
                "log_constant": c.log_constant,
            })
        summary["levels"].append({
            "n_components": m.n_components,
            "n_features": m.n_features,
            "covariance_type": m.covariance_type,
            "source": m.provenance.source,
            "components": comps,
            "diagnostics": m.diagnostics,
        })
    return summary


def cmd_inspect(args) -> int:
    summary = inspect_summary(args.file)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    if "graph" in summary:
        g = summary["graph"]
        print(f"ONNX graph: inputs {g['inputs']} -> outputs {g['outputs']}; opset {g['opset']}, "
              f"{g['nodes']} nodes, activation {g['activation']}")
    for i, lvl in enumerate(summary["levels"]):
        title = f"level {i}: " if len(summary["levels"]) > 1 else ""
        print(f"{title}{lvl['n_components']} components, {lvl['n_features']} features, "
              f"covariance_type {lvl['covariance_type']}, source {lvl['source']}")
        rows = [[str(c["index"]), f"{c['weight']:.4f}", str(c["neurons"]), f"{c['eigenvalue_min']:.3g}",
                 f"{c['eigenvalue_max']:.3g}", f"{c['condition_number']:.3g}"] for c in lvl["components"]]
        print(_table(rows, ["component", "weight", "neurons", "eig min", "eig max", "condition"]))
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


# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gmmnet",
        description="Translate between Gaussian mixture models and Abs/ReLU neural networks (ONNX).",
        epilog=EPILOG_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"gmmnet {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="fit a GMM on bundled data, convert it, check it against sklearn")
    d.add_argument("--dataset", default="wine", choices=("iris", "wine", "breast_cancer", "digits"),
                   help="scikit-learn bundled dataset (default: wine)")
    d.add_argument("--components", type=int, default=3, help="number of mixture components (default: 3)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("to-onnx", help="convert a fitted mixture (.pkl/.joblib/.skops/.json) to ONNX",
                       description="Convert a fitted GaussianMixture/BayesianGaussianMixture or an IR .json "
                                   "to an ONNX network: Linear neurons w = λ^-1/2 v, b = −wᵀμ, Abs, then a head.")
    t.add_argument("model", help="fitted mixture: .pkl, .joblib, .skops (loaded safely) or IR .json")
    t.add_argument("-o", "--output", help="output .onnx (default: MODEL with .onnx)")
    t.add_argument("--activation", choices=("abs", "relu"), default="abs",
                   help="abs, or relu with exact paired neurons |z| = relu(z)+relu(−z) (default: abs)")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="graph precision (default: float32)")
    t.add_argument("--opset", type=int, default=17, help="ONNX opset, 13–21 (default: 17)")
    t.add_argument("--outputs", nargs="+", choices=OUTPUT_CHOICES, metavar="NAME",
                   help=f"outputs to include, any of {', '.join(OUTPUT_CHOICES)} "
                        "(default: label responsibilities log_likelihood)")
    t.add_argument("--centering", choices=("auto", "none", "global", "component"), default="auto",
                   help="how float32 graphs centre inputs before the product (default: auto, by conditioning)")
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

    i = sub.add_parser("inspect", help="summarize a mixture, IR or ONNX file")
    i.add_argument("file", help=".pkl, .joblib, .skops, .json or .onnx")
    i.add_argument("--json", action="store_true", help="machine-readable JSON")
    i.set_defaults(func=cmd_inspect)

    s = sub.add_parser("schema", help="print (or write) the JSON Schema of the IR")
    s.add_argument("-o", "--output", help="write here instead of stdout")
    s.add_argument("--force", action="store_true", help="overwrite an existing output")
    s.set_defaults(func=cmd_schema)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return UsageError.exit_code
    try:
        return args.func(args)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
