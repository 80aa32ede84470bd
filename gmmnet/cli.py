"""The gmmnet command line: parse, call the library, print.  No math lives here."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .errors import EXIT_CODES, DataError, GmmnetError, PrecisionWarning, UsageError

EPILOG_EXIT_CODES = "exit codes:\n" + "\n".join(
    f"  {code:<3} {name}" for name, code in sorted(EXIT_CODES.items(), key=lambda kv: kv[1])
) + "\n  130 interrupted (Ctrl-C)\n  141 standard output closed early (e.g. piped into head)\n\nSee docs/cli.md for details."


#: Output suffixes each command writes (checked by :func:`_check_output` before any work).
MODEL_SUFFIXES = (".skops", ".pkl", ".pickle", ".joblib")
OUTPUT_SUFFIXES = {
    "to-onnx": (".onnx",),
    "to-gmm": (".json", *MODEL_SUFFIXES),
    "fit": MODEL_SUFFIXES,
    "plot": (".png", ".svg", ".pdf"),
    "score": (".npy", ".npz", ".csv"),
    "schema": (".json",),
}


# ---------------------------------------------------------------------------
# parsing: no abbreviations, one-line usage errors with a did-you-mean


class _Parser(argparse.ArgumentParser):
    """argparse that takes options only as spelled (no prefix guessing: ``--dty`` is not ``--dtype``)
    and reports a usage error as a :class:`UsageError` (one line, see :func:`main`)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse would print the usage block and exit
        raise UsageError(_usage_message(self, message))


def _did_you_mean(word: str, candidates) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _usage_message(parser: argparse.ArgumentParser, message: str) -> str:
    import re

    m = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)$", message)
    if m:
        choices = re.findall(r"'([^']*)'", m.group(2))
        if message.startswith("argument COMMAND:"):
            message = f"unknown command {m.group(1)!r}{_did_you_mean(m.group(1), choices)}"
        else:
            message = message.split(" (choose from")[0] + f"{_did_you_mean(m.group(1), choices)}; choose from {', '.join(choices)}"
    return f"{message}; see {parser.prog} --help"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _unrecognized(parser: argparse.ArgumentParser, command: str | None, extras: list[str]) -> UsageError:
    """The usage error for arguments no parser took, with the closest option of that command."""
    sub = _subparsers(parser).get(command) if command else None
    target = sub or parser
    word = extras[0]
    if word.startswith("-"):
        options = [o for p in (parser, sub) if p for a in p._actions for o in a.option_strings]
        name = word.split("=", 1)[0]
        text = f"unrecognized option {name}{_did_you_mean(name, options)}"
    else:
        text = f"unexpected argument {word!r}"
    return UsageError(f"{text}; see {target.prog} --help")


def _check_output(path, allowed: tuple[str, ...]) -> None:
    """Refuse an output path whose suffix the command cannot write, before any work is done."""
    if path is None:
        return
    suffix = Path(str(path)).suffix.lower()
    if suffix not in allowed:
        listed = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
        raise UsageError(f"{path}: unknown output suffix {suffix or '(none)'!r}; use {listed}")


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
    # a pickled mixture is read as its fitted attributes (importing scikit-learn costs seconds)
    obj = io.load_model(path, fitted_state=True)
    if isinstance(obj, io.FittedState) and not io.is_mixture_state(obj):
        obj = io.materialize(obj, path)  # a Pipeline: its steps are read as estimators
    if isinstance(obj, (Mixture, Hierarchy)):
        doc = obj
    elif io.is_mixture_state(obj) or not _is_onnx(obj):  # gmmnet's estimators convert through their to_ir()
        from .formats.sklearn import from_sklearn

        return from_sklearn(obj, **floor)
    else:
        from .formats.onnx.read import from_onnx

        doc, _ = from_onnx(obj)
    if eigenvalue_floor is None and max_condition is None:
        return doc
    return linalg.regularize(doc, **floor)[0]


def _is_onnx(obj) -> bool:
    import onnx

    return isinstance(obj, onnx.ModelProto)


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


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _console(stream=None):
    """A rich Console on ``stream`` (default: stdout as it is now): styled and fitted to the width
    on a terminal; plain text of unlimited width otherwise, so a pipe or a file gets one line per row."""
    from rich.console import Console

    stream = sys.stdout if stream is None else stream
    tty = _isatty(stream)
    return Console(file=stream, force_terminal=tty, no_color=not tty, highlight=False, emoji=False,
                   width=None if tty else 1_000_000, soft_wrap=not tty)


def _rich_table(rows: list[list], header: list[str], left: tuple[int, ...], wrap: tuple[int, ...]):
    from rich.box import Box
    from rich.table import Table
    from rich.text import Text

    rule = Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)  # "---  ---" under the header
    table = Table(box=rule, show_edge=False, pad_edge=False, header_style="bold", collapse_padding=True)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i in left else "right", overflow="fold", no_wrap=i not in wrap)
    for row in rows:
        table.add_row(*(Text(str(c)) for c in row))
    return table


def _plain(console, renderable) -> str:
    with console.capture() as captured:
        console.print(renderable)
    return "".join(line.rstrip() + "\n" for line in captured.get().splitlines())


def _print_table(rows: list[list], header: list[str], *, left: tuple[int, ...] = (0,), wrap: tuple[int, ...] = (),
                 fit: bool = True) -> None:
    """An aligned table (rich): header, a rule of dashes, one line per row; columns in ``left`` are
    left-aligned (the others, numbers, right-aligned).  On a terminal, with ``fit``, the columns
    in ``wrap`` (free text) fold so that the table fits its width; numbers are never cut.
    Elsewhere (or without ``fit``) every row is one line, however long."""
    table = _rich_table(rows, header, left, wrap)
    console = _console()
    if not console.is_terminal:
        sys.stdout.write(_plain(console, table))
        return
    if not fit:
        console.width = 1_000_000
    console.print(table)


def _table(rows: list[list], header: list[str]) -> str:
    """The same table as plain text, for a caller that prints it itself (prefer :func:`_print_table`)."""
    from io import StringIO

    return _plain(_console(StringIO()), _rich_table(rows, header, (0,), ())).rstrip("\n")


# ---------------------------------------------------------------------------
# commands


def cmd_to_onnx(args) -> int:
    _check_output(args.output, OUTPUT_SUFFIXES["to-onnx"])
    from . import io
    from .formats.onnx import to_onnx
    from .formats.onnx.options import ExportOptions
    from .tolerances import tol

    out = args.output or _default_output(args.model, ".onnx")
    options = ExportOptions(**{name: getattr(args, name) for name in ExportOptions.model_fields})
    mixture = _load_mixture(args.model, eigenvalue_floor=args.eigenvalue_floor, max_condition=args.max_condition)
    floored = mixture.provenance.extra.get("eigenvalues_floored")
    if floored is not None:
        print(f"gmmnet: note: raised {floored} eigenvalue(s) to the requested floor", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)  # the plan carries them: printed below
        model, plan = to_onnx(mixture, **options.model_dump(), return_plan=True)
    io.save_onnx(model, out, force=args.force, inputs=(args.model,), serialized=(plan.state or {}).get("serialized"))
    print(f"wrote {out}: {plan.summary()}, activation={args.activation}, dtype={args.dtype}, opset={args.opset}")
    for message in plan.warnings:
        print(f"gmmnet: warning: {message}", file=sys.stderr)
    if plan.float32_loss is not None and plan.float32_loss > tol("float32_warn"):
        print(f"gmmnet: warning: float32 may lose ~{plan.float32_loss:.1e} in log_likelihood; consider --dtype float64",
              file=sys.stderr)
    return 0


def cmd_to_gmm(args) -> int:
    from . import io
    from .formats.onnx.read import from_onnx
    from .recover import density_check

    out = args.output or _default_output(args.model, ".json")
    _check_output(out, OUTPUT_SUFFIXES["to-gmm"])
    suffix = Path(out).suffix.lower()
    if args.calibrate and not args.data:
        raise UsageError("--calibrate needs --data: the scales, means and weights are re-estimated from data")
    if args.residual is not None and not args.calibrate:
        raise UsageError("--residual says how --calibrate models the directions a layer lacks; pass --calibrate too")
    if args.n_components is not None and args.groups is not None:
        raise UsageError("--n-components is for automatic grouping; --groups already says which neurons belong together")
    if args.n_components is not None and args.n_components < 1:
        raise UsageError(f"--n-components must be >= 1, got {args.n_components}")
    inputs = tuple(p for p in (args.model, args.data) if p)
    if args.report and io.same_file(args.report, out):
        raise UsageError(f"--report {args.report} is the output file; choose another path")
    data = io.load_data(args.data, note=io.print_note) if args.data else None
    if Path(args.model).suffix.lower() in io.ONNX_SUFFIXES:  # the file's bytes too: no second serialization
        model, serialized = io.load_onnx(args.model, return_bytes=True)
    else:
        model, serialized = io.load_model(args.model), None
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise UsageError(f"to-gmm reads an ONNX network; {args.model} is not one (use inspect or to-onnx)")
    from .formats.onnx.read_deep import is_deep
    from .formats.onnx.walk import read_graph

    grouped = args.groups is not None or args.n_components is not None
    if not grouped:
        model = read_graph(model, serialized=serialized)  # walked once, for is_deep and for the reader
    if not grouped and is_deep(model):  # a hierarchy: one mixture per level
        if args.calibrate:
            raise UsageError(f"{args.model} is a hierarchy; --calibrate recovers one mixture (pass --groups to read "
                             "the first level as one)")
        from .formats.onnx.read_deep import from_onnx as from_deep_onnx
        from .pipeline import to_estimator

        mixture, report = from_deep_onnx(model, data=data)
        report.setdefault("density_check", density_check(0 if data is None else len(data)))
        if suffix == ".json":
            io.save_ir(mixture, out, force=args.force, inputs=inputs)
        else:
            io.save_estimator(to_estimator(mixture), out, force=args.force, inputs=inputs)
        if args.report:
            io.atomic_write(args.report, json.dumps(_finite_json(report), indent=2).encode(), force=args.force,
                            inputs=(*inputs, out))
        print(f"wrote {out}: hierarchy of {len(mixture.levels)} levels ("
              + ", ".join(f"{m.n_components} components over {m.n_features} features" for m in mixture.levels) + ")",
              file=_status_stream(args))
        for note in report.get("notes", []):
            print(f"note: {note}", file=_status_stream(args))
        _print_diagnostics(report, args)
        _print_density_check(report, args)
        return 0
    fit_rows, held_out = data, None
    if args.calibrate:
        from .recover import holdout_split

        train, test = holdout_split(len(data), args.holdout, args.seed)
        fit_rows, held_out = data[train], data[test]
    mixture, report = from_onnx(model, data=fit_rows, groups=_parse_groups(args.groups), n_components=args.n_components)
    inverted = mixture
    if args.calibrate:
        from .recover import calibrate

        residual = {} if args.residual is None else {"residual": args.residual}
        mixture, report["calibration"] = calibrate(inverted, fit_rows, held_out=held_out, seed=args.seed, **residual)
        report["calibration"]["holdout"] = {"fraction": args.holdout, "seed": args.seed}
    if suffix == ".json":
        io.save_ir(mixture, out, force=args.force, inputs=inputs)
    elif suffix in (".skops", ".pkl", ".pickle", ".joblib"):
        from .pipeline import to_estimator  # a GaussianMixture, or a Pipeline behind the graph's input transform

        io.save_estimator(to_estimator(mixture), out, force=args.force, inputs=inputs)
    if args.report:
        io.atomic_write(args.report, json.dumps(_finite_json(report), indent=2).encode(), force=args.force,
                        inputs=(*inputs, out))
    what = "calibrated mixture, " if args.calibrate else ""
    print(f"wrote {out}: {what}{mixture.n_components} components over {mixture.n_features} features",
          file=_status_stream(args))
    _print_diagnostics(report, args)
    if args.calibrate:
        _print_calibration(report["calibration"], _status_stream(args))
    _print_density_check(report, args)
    return 0


def _print_density_check(report: dict, args=None) -> None:
    """One line when nothing was checked against data (the issue: exact algebra is not a checked density)."""
    from .recover import UNCHECKED

    if report.get("density_check") == UNCHECKED:
        print("note: density not checked: no data. The Gaussians reproduce the network's neurons; whether they "
              "describe your data is unknown until you pass --data X.npy (docs/recovery.md)", file=_status_stream(args))


def _print_calibration(cal: dict, stream=None) -> None:
    ll = cal["log_likelihood"]
    rows = [[name, _fmt(ll[key]["train"]), _fmt(ll[key]["held_out"])]
            for name, key in (("inverted", "inverted"), ("calibrated", "calibrated"),
                              ("free full-covariance step", "free_step"))]
    print(f"calibration: {cal['iterations']} EM steps ({'converged' if cal['converged'] else 'not converged'}), "
          f"{cal['n_train']} training rows, {cal['n_held_out']} held out "
          f"(fraction {cal['holdout']['fraction']:g}, seed {cal['holdout']['seed']}), residual: {cal['residual']}",
          file=stream)
    print(_table(rows, ["mixture", "train ll/row", "held-out ll/row"]), file=stream)
    mc = cal["kl"].get("mixture_monte_carlo")
    if mc is not None:
        print(f"KL(calibrated ‖ inverted): {mc['value']:.4g} ± {mc['standard_error']:.2g} nats (Monte Carlo, "
              f"{mc['samples']} draws); per component, closed form: "
              + ", ".join(_fmt(v) for v in cal["kl"]["components"]), file=stream)
    print("largest angle a direction would move under a free full-covariance step (degrees): "
          + ", ".join(_fmt(c["free_step_angle_max_deg"]) for c in cal["components"]), file=stream)
    for note in cal.get("notes", []):
        print(f"note: {note}", file=stream)


def _status_stream(args):
    """Where a command's status lines go: stdout, or stderr when stdout carries --json."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


#: to-gmm's compact table: (report key, column) of the metrics with data, else without
_COMPACT_WITH_DATA = (("faithfulness_r2", "R²"), ("hyperplane_distance_sigma", "hyperplane σ"),
                      ("whitening_error", "whitening err"))
_COMPACT_NO_DATA = (("hyperplane_residual_sigma", "hyperplane residual σ"),)


#: to-gmm's compact table shows at most this many components (all low-confidence ones, whatever their number).
COMPACT_ROWS = 20


def _print_diagnostics(report: dict, args=None) -> None:
    """to-gmm's recovery report on stdout: ``--json`` the whole report; ``--wide`` every per-component
    key as a table; by default a compact table that fits a terminal (component, neurons, the
    diagnostics that were computed, and a status: exact, ok or low confidence with its reasons),
    of at most :data:`COMPACT_ROWS` components plus every low-confidence one."""
    if getattr(args, "json", False):
        print(json.dumps(_finite_json(report), indent=2, allow_nan=False))
        return
    comps = report.get("components") if isinstance(report, dict) else None
    if not comps:
        return
    if getattr(args, "wide", False):
        keys = [k for k in comps[0] if k != "index"]
        rows = [[str(c.get("index", i))] + [_fmt(c.get(k)) for k in keys] for i, c in enumerate(comps)]
        wrap = (len(keys),) if keys and keys[-1] == "reasons" else ()
        _print_table(rows, ["component", *keys], left=(0, *wrap), wrap=wrap, fit=False)
        return
    metrics = [m for m in _COMPACT_WITH_DATA if any(c.get(m[0]) is not None for c in comps)]
    metrics = metrics or [m for m in _COMPACT_NO_DATA if any(c.get(m[0]) is not None for c in comps)]
    rows = []
    for i, c in enumerate(comps):
        if c.get("low_confidence"):
            status = "LOW CONFIDENCE: " + ("; ".join(c.get("reasons") or []) or "see --wide")
        else:
            status = "exact" if c.get("exact") else "ok"
        rows.append([str(c.get("index", i)), _fmt(c.get("neurons")), *(_fmt(c.get(k)) for k, _ in metrics), status])
    # many components: every low-confidence one, then the first ones up to COMPACT_ROWS, and a count of the rest
    low = [i for i, c in enumerate(comps) if c.get("low_confidence")]
    rest = [i for i, c in enumerate(comps) if not c.get("low_confidence")]
    keep = max(COMPACT_ROWS - len(low), 0)
    shown = sorted(low + rest[:keep])
    _print_table([rows[i] for i in shown], ["component", "neurons", *(name for _, name in metrics), "status"],
                 left=(0, len(metrics) + 2), wrap=(len(metrics) + 2,))
    if len(shown) < len(rows):
        hidden = [rows[i][-1] for i in rest[keep:]]
        kinds = ", ".join(f"{hidden.count(k)} {k}" for k in ("exact", "ok") if hidden.count(k))
        print(f"... {len(hidden)} more components ({kinds}) not shown")
    print("(every diagnostic: --wide or --json; what they mean: docs/recovery.md)")


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (list, tuple)):
        return "; ".join(map(str, v))
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


#: A float32 graph gmmnet did not write (no metadata) gets a warning in `inspect` when a pure-float32
#: graph of its mixture is estimated to lose more than this in log_likelihood.
PRECISION_WARN = 1e-4


def inspect_summary(path: str, data_path: str | None = None) -> dict:
    """Machine-readable summary of any file gmmnet reads (what `inspect --json` prints).

    Keys: ``file``, ``kind`` (estimator/ir/onnx), ``class``; ``graph`` for ONNX (inputs, outputs,
    opset, node count, activation, input dtype, metadata); ``levels`` (one per mixture of a
    hierarchy) with per-component weight, neurons, eigenvalue range and condition number and
    the recovery ``diagnostics``; ``recovery`` for ONNX (how it was read back); ``precision``
    (see :func:`precision_summary`).
    """
    from . import io
    from .ir import Hierarchy
    from .plot import as_document

    raw = io.load_model(path)
    data = io.load_data(data_path, note=io.print_note) if data_path else None
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
            # gmmnet's Abs graphs square the pre-activations (|z|² = z²) and write Abs only for `distances`
            "activation": ("+".join(a for a, op in (("abs", "Abs"), ("relu", "Relu")) if op in ops)
                           or ({p.key: p.value for p in raw.metadata_props}.get("activation")
                               if raw.producer_name == "gmmnet" else None)),
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
    meta = summary["graph"]["metadata"] if is_onnx else None
    summary["precision"] = precision_summary(levels, graph_dtype=graph_dtype, metadata=meta)
    return _finite_json(summary)


def _targets() -> dict:
    """The accuracy gmmnet states for its default float32 graphs (gmmnet.tolerances)."""
    from .tolerances import tol

    return {"log_likelihood": tol("float32_ll"), "responsibilities": tol("default_resp")}


def graph_precision(metadata: dict | None, graph_dtype: str | None) -> dict | None:
    """The accuracy a graph gmmnet wrote states about itself, from its metadata (None for other graphs).

    Returns ``{"dtype", "compute", "layout", "basis", "log_likelihood", "responsibilities"}``:
    ``basis`` is ``"predicted"`` (a single mixture's ``predicted_error_*`` keys) or ``"measured"``
    (a deep graph's ``measured_float32_error_*``, when it computes in float32); a graph that
    computes in float64 (behind a float32 or float64 interface) has errors of float64 rounding,
    reported as 0 with basis ``"float64 compute"``.  Errors are None where the graph states none.
    """
    meta = metadata or {}
    if "compute" not in meta:
        return None
    out = {"dtype": graph_dtype, "compute": meta["compute"], "layout": meta.get("layout", "neurons"),
           "basis": None, "log_likelihood": None, "responsibilities": None}
    for basis, prefix in (("predicted", "predicted_error_"), ("measured", "measured_float32_error_")):
        if f"{prefix}log_likelihood" in meta:
            try:
                ll, resp = float(meta[f"{prefix}log_likelihood"]), float(meta.get(f"{prefix}responsibilities", "nan"))
            except ValueError:  # metadata is free text: a graph edited by hand may hold anything
                continue
            out.update(basis=basis, log_likelihood=ll, responsibilities=None if resp != resp else resp)
            break
    if out["basis"] is None and (meta["compute"] == "float64" or graph_dtype == "float64"):
        out.update(basis="float64 compute", log_likelihood=0.0, responsibilities=0.0)
    return out


def _misses(errors: dict, targets: dict) -> list[str]:
    return [f"{k} ~{errors[k]:.1e} > {targets[k]:g}" for k in ("log_likelihood", "responsibilities")
            if errors.get(k) is not None and errors[k] > targets[k]]


def precision_summary(levels, *, graph_dtype: str | None = None, metadata: dict | None = None) -> dict:
    """What ``inspect`` says about float32 accuracy, for the graph as built or the graph to-onnx would build.

    * An ONNX graph gmmnet wrote: its own compute mode and predicted (or measured) errors from
      its metadata (:func:`graph_precision`); a warning only when a graph that computes in
      float32 predicts a miss of gmmnet's float32 targets (:mod:`gmmnet.tolerances`).  Float64
      arithmetic is the most accurate gmmnet writes, so a graph computing in float64 gets none.
    * Another float32 graph (no gmmnet metadata): a warning when a pure-float32 graph of the
      mixture is estimated to lose more than :data:`PRECISION_WARN`.
    * A model file (a single mixture): what ``gmmnet to-onnx`` would write by default (float32,
      ``--compute auto``), from :func:`gmmnet.formats.onnx.predicted_errors`.

    Keys: ``float32_error_estimate`` (a pure-float32 neuron graph of level 0), ``graph``,
    ``to_onnx_default``, ``targets``, ``warning`` (None or one line).
    """
    from .formats.onnx import float32_error_estimate, predicted_errors

    base = levels[0]
    est = float(float32_error_estimate(base))
    graph = graph_precision(metadata, graph_dtype)
    targets = _targets()
    default = None
    warning = None
    if graph is not None:
        missed = _misses(graph, targets) if graph_dtype == "float32" and graph["compute"] != "float64" else []
        if missed:
            warning = (f"this graph (dtype {graph_dtype}, compute {graph['compute']}) is {graph['basis']} to miss "
                       f"gmmnet's targets: {', '.join(missed)}; rebuild it with to-onnx --compute auto or --dtype float64")
    elif graph_dtype is not None:  # a graph gmmnet did not write: only the mixture's own estimate is known
        if graph_dtype == "float32" and est > PRECISION_WARN:
            warning = (f"this float32 graph does not say how it computes; a pure-float32 graph of this mixture may "
                       f"lose ~{est:.1e} in log_likelihood; to-onnx writes one that meets {targets['log_likelihood']:g}")
    elif len(levels) == 1:
        pred = predicted_errors(base)
        default = {"dtype": "float32", **pred}
        missed = _misses(pred, targets) if pred["compute"] != "float64" else []
        if missed:
            warning = (f"to-onnx's default float32 graph (compute {pred['compute']}) is predicted to miss "
                       f"gmmnet's targets: {', '.join(missed)}; use to-onnx --dtype float64")
    return {"float32_error_estimate": est, "threshold": PRECISION_WARN, "graph": graph, "to_onnx_default": default,
            "targets": targets, "warning": warning}


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
        _print_table(rows, ["component", "weight", "neurons", "eig min", "eig max", "condition"])
        diag = (lvl.get("diagnostics") or {}).get("components")
        if diag:
            print("\nrecovery diagnostics (docs/recovery.md):")
            keys = ["exact", "low_confidence", "faithfulness_r2", "hyperplane_distance_sigma", "whitening_error"]
            rows = [[str(c.get("index", j))] + [_fmt(c.get(k)) for k in keys] + ["; ".join(c.get("reasons") or [])]
                    for j, c in enumerate(diag)]
            _print_table(rows, ["component", "exact", "low conf.", "R²", "hyperplane σ", "whitening err", "reasons"],
                         left=(0, 6), wrap=(6,))
    p = summary["precision"]
    print()
    if p["graph"]:  # the graph's own arithmetic, as gmmnet wrote it
        g = p["graph"]
        line = f"this graph: layout {g['layout']}, compute {g['compute']}"
        if g["basis"] in ("predicted", "measured"):
            line += f", {g['basis']} log_likelihood error {g['log_likelihood']:.2g}"
            if g["responsibilities"] is not None:
                line += f", responsibilities {g['responsibilities']:.2g}"
        print(line)
    if p["to_onnx_default"]:
        d = p["to_onnx_default"]
        print(f"to-onnx default (float32, --compute auto): compute {d['compute']}, predicted log_likelihood error "
              f"{d['log_likelihood']:.2g}, responsibilities {d['responsibilities']:.2g}")
    print(f"pure-float32 error estimate of this mixture (log_likelihood, neurons layout): {p['float32_error_estimate']:.2g}")
    if warning:
        print(f"gmmnet: warning: {warning}", file=sys.stderr)
    return 0


def cmd_schema(args) -> int:
    _check_output(args.output, OUTPUT_SUFFIXES["schema"])
    from . import io
    from .ir import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output:
        io.atomic_write(args.output, text.encode(), force=args.force)
    else:
        sys.stdout.write(text)
    return 0


def cmd_demo(args) -> int:
    from .demo import TOLERANCES, dataset_rows, run_demo

    n_rows = dataset_rows(args.dataset)
    _check_range("--components", args.components, 1, n_rows, f"the {args.dataset} data has {n_rows} rows")
    _check_range("--seed", args.seed, 0, 2**32 - 1)
    rows = run_demo(dataset=args.dataset, n_components=args.components, seed=args.seed)
    print(f"gmmnet demo: GaussianMixture on scikit-learn's {args.dataset} (standardized), "
          f"K={args.components}, checked on onnxruntime against sklearn")
    _print_table(
        [[r["covariance_type"], r["dtype"], r["activation"], str(r["components"]), str(r["neurons"]),
          f"{r['max_err_loglik']:.1e}", f"{r['max_err_resp']:.1e}", f"{100 * r['label_agreement']:.2f}%"] for r in rows],
        ["covariance", "dtype", "activation", "components", "neurons", "max err loglik", "max err resp", "labels agree"],
        left=(0, 1, 2),
    )
    bad = [r for r in rows if not r["ok"]]
    if bad:
        print(f"gmmnet: error: {len(bad)} configuration(s) exceeded the stated tolerance", file=sys.stderr)
        return 1
    (ll32, resp32), (ll64, resp64) = TOLERANCES["float32"], TOLERANCES["float64"]
    print(f"all configurations within tolerance (float32: {ll32:g} loglik, {resp32:g} resp; "
          f"float64: {ll64:g} loglik, {resp64:g} resp)")
    return 0


def cmd_plot(args) -> int:
    _check_output(args.output, OUTPUT_SUFFIXES["plot"])
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
    from . import io
    from .hierarchy import fit_model, parse_levels

    _check_output(args.output, OUTPUT_SUFFIXES["fit"])
    specs = parse_levels(args.levels)  # fail on a bad spec before loading anything
    _check_range("--seed", args.seed, 0, 2**32 - 1)
    _check_range("--max-iter", args.max_iter, 1)
    _check_range("--n-init", args.n_init, 1)
    _check_range("--reg-covar", args.reg_covar, 0.0)
    if Path(args.output).exists() and not args.force:
        from .errors import OutputExistsError

        raise OutputExistsError(f"{args.output} exists; pass --force to overwrite")
    X = io.load_data(args.data, note=io.print_note)
    _check_finite_rows(X, args.data)
    _check_ranks(specs, X.shape[1], args.levels)
    params = {k: v for k, v in (("max_iter", args.max_iter), ("n_init", args.n_init), ("reg_covar", args.reg_covar))
              if v is not None}
    try:
        with _FitProgress() as progress:
            est = fit_model(X, args.levels, random_state=args.seed, progress=progress, **params)
    except ValueError as exc:  # scikit-learn's parameter validation
        if isinstance(exc, GmmnetError):
            raise
        raise UsageError(_first_line(exc)) from None
    io.save_estimator(est, args.output, force=args.force, inputs=(args.data,))
    kind = type(est).__name__
    print(f"wrote {args.output}: {kind} ({args.levels}) on {X.shape[0]} rows x {X.shape[1]} features, "
          f"mean log-likelihood {est.score(X):.4f}")
    return 0


def _check_range(option: str, value, lo, hi=None, why: str = "") -> None:
    """UsageError unless lo <= value <= hi (``why`` says where the bounds come from)."""
    if value is None:
        return
    if value < lo or (hi is not None and value > hi):
        within = f"within {lo}..{hi}" if hi is not None else f">= {lo}"
        raise UsageError(f"{option} must be {within}{f' ({why})' if why else ''}, got {value}")


def _check_finite_rows(X: np.ndarray, source) -> None:
    """Fitting needs finite numbers: name the first rows (1-based) that hold NaN or infinity."""
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        first = ", ".join(str(i + 1) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        rows = "1 row holds" if bad.size == 1 else f"{bad.size} rows hold"
        raise DataError(f"{source}: {rows} NaN or infinity (row{'s' if bad.size > 1 else ''} {first}, counting "
                        "from 1); fit needs finite numbers: drop or impute those rows")


def _check_ranks(specs: list[dict], n_features: int, text: str) -> None:
    """r of each level against its input width: the data's features at level 0, the previous
    level's neurons (K·r, or K·d untruncated) above it."""
    d, below = n_features, "the data's features"
    for i, spec in enumerate(specs):
        r = spec["rank"]
        if r is not None and r > d:
            raise UsageError(f"--levels {text}: level {i} keeps r={r} directions per component but its input has only "
                             f"{d} features ({below}); use r <= {d}")
        k = spec["n_components"]
        d, below = k * (r if r is not None else d), f"the {k} components x {r if r is not None else d} neurons of level {i}"


class _FitProgress:
    """fit's progress on stderr: a rich bar over the levels with elapsed time on a terminal, one plain
    line per level start and end otherwise (logs, pipes, tests)."""

    def __init__(self):
        self.bar = None
        self.started: dict[int, float] = {}

    def __enter__(self):
        if _isatty(sys.stderr):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(file=sys.stderr), transient=True)
            self.bar.start()
            self.task = None
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False

    def __call__(self, i, n, spec, n_features, est):
        import time

        what = f"level {i + 1}/{n}: {spec['n_components']} {spec['covariance_type']} components on {n_features} features"
        if spec["rank"] is not None:
            what += f", rank {spec['rank']}"
        if est is None:
            self.started[i] = time.perf_counter()
            if self.bar is None:
                print(f"gmmnet fit: {what} ...", file=sys.stderr, flush=True)
            elif self.task is None:
                self.task = self.bar.add_task(what, total=n)
            else:
                self.bar.update(self.task, description=what)
            return
        state = "converged" if est.converged_ else "NOT converged"
        done = (f"gmmnet fit: {what} done in {time.perf_counter() - self.started[i]:.2f} s "
                f"({state}, {est.n_iter_} EM iterations)")
        if self.bar is None:
            print(done, file=sys.stderr, flush=True)
        else:
            self.bar.console.print(done, markup=False, highlight=False)
            self.bar.advance(self.task)


def cmd_score(args) -> int:
    _check_output(args.output, OUTPUT_SUFFIXES["score"])
    from .io import print_note
    from .score import score_to_file

    info = score_to_file(args.model, args.data, args.output, outputs=args.outputs, batch_size=args.batch_size,
                         threads=args.threads, force=args.force, progress=None if args.progress is None else args.progress,
                         note=print_note)
    rate = info["rows"] / max(info["seconds"], 1e-9)
    n_bad = info["nonfinite_rows"]
    bad = f", {n_bad} row{'s' if n_bad != 1 else ''} with NaN/inf (NaN results, label -1)" if n_bad else ""
    print(f"wrote {info['output']}: {', '.join(info['outputs'])} for {info['rows']} rows in {info['seconds']:.2f} s "
          f"({rate:,.0f} rows/s, batch size {info['batch_size']}, {info['threads']} threads){bad}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
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
                   help="arithmetic inside a float32 graph (input and outputs stay float32): auto = float32 where "
                        "its predicted errors meet the default targets, else float64 (default: auto); float64 = "
                        "the most accurate graph, 2-2.4x (full), 3-6x (tied) and 7-20x (diag, spherical) the default's time "
                        "(docs/performance.md)")
    t.add_argument("--layout", choices=_EO.LAYOUTS, default=_EO.default("layout"),
                   help="auto (default): quadratic for diag/spherical mixtures (Abs, compute auto/float32), else "
                        "neurons; neurons: the Abs network; quadratic: diag/spherical mixtures only, D² as one "
                        "expanded product about one centre (docs/onnx-graph.md#layouts)")
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
                                   "approximate with diagnostics for trained ones. Without --data the density is "
                                   "not checked (the report says 'unchecked: no data'); with --data the diagnostics "
                                   "check it, and --calibrate re-estimates scales, means and weights from the data "
                                   "with the layer's directions held fixed.")
    g.add_argument("model", help="ONNX network (.onnx)")
    g.add_argument("-o", "--output", help="output .json (IR), .skops, .pkl or .joblib (default: MODEL with .json)")
    g.add_argument("--data", help="data (.npy or .csv) for grouping neurons, prototypes and the diagnostics "
                                  "that check the density; without it the density is reported unchecked")
    g.add_argument("--groups", help="neuron groups: a group size ('4') or index lists ('0,1,2;3,4,5')")
    g.add_argument("--n-components", type=int, metavar="K",
                   help="number of components when grouping neurons on --data (default: neurons // features; "
                        "not used when the graph's head groups the neurons)")
    g.add_argument("--calibrate", action="store_true",
                   help="with --data: keep each component's directions from the layer and re-estimate the variances "
                        "along them, the means, the weights and the directions it lacks (--residual) by EM; writes the "
                        "calibrated mixture and reports both on held-out rows (docs/recovery.md, 'Calibrated recovery')")
    g.add_argument("--residual", choices=("full", "isotropic"),
                   help="--calibrate: how a component of rank r < d models the d − r directions its layer lacks: "
                        "'full' (default), a free covariance in the orthogonal complement of the layer's directions, "
                        "whose eigenvectors join them (rank d; the layer's directions never move), or 'isotropic', "
                        "one variance (the component keeps rank r) (docs/recovery.md, 'Calibrated recovery')")
    g.add_argument("--holdout", type=float, default=0.2, metavar="FRACTION",
                   help="--calibrate: fraction of the --data rows held out to score both mixtures (default: 0.2)")
    g.add_argument("--seed", type=int, default=0, help="--calibrate: seed of the held-out split and the KL draws (default: 0)")
    g.add_argument("--report", help="also write the diagnostics report as JSON here")
    g.add_argument("--force", action="store_true", help="overwrite existing outputs")
    shown = g.add_mutually_exclusive_group()
    shown.add_argument("--wide", action="store_true",
                       help="print every diagnostic of every component (a wide table; default: a compact one)")
    shown.add_argument("--json", action="store_true",
                       help="print the diagnostics report as JSON on stdout (status lines go to stderr)")
    g.set_defaults(func=cmd_to_gmm)

    i = sub.add_parser("inspect", help="summarize a mixture, hierarchy, IR or ONNX file",
                       description="Per component: weight, neurons, eigenvalue range and condition number; "
                                   "for ONNX the graph summary and how it was read back (with the recovery "
                                   "diagnostics); the accuracy of the graph as built (from its metadata) or of "
                                   "the graph to-onnx would build, with a warning when it misses gmmnet's targets.")
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
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise _unrecognized(parser, getattr(args, "command", None), extras)
        if not getattr(args, "func", None):
            raise UsageError(f"no command given; choose from {', '.join(_subparsers(parser))}; see gmmnet --help")
    except UsageError as exc:
        print(f"gmmnet: error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    caught: list = []
    try:  # the limit holds for this call only (main is also called in-process)
        if args.max_memory is not None:
            from .limits import parse_size, set_max_memory

            try:
                set_max_memory(parse_size(args.max_memory))
            except ValueError as exc:
                raise UsageError(f"--max-memory: {exc}") from None
        with warnings.catch_warnings(record=True) as caught:
            _quiet_warnings()
            code = args.func(args)
        if code == 0:  # a command that failed says so in its error line, alone
            _show_warnings(caught)
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except GmmnetError as exc:
        if args.debug:
            raise
        print(f"gmmnet: error: {_error_message(exc, args)}", file=sys.stderr)
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

            err = InvalidModelError(f"invalid model: {format_validation_error(exc)}")
            print(f"gmmnet: error: {_error_message(err, args)}", file=sys.stderr)
            return InvalidModelError.exit_code
        print(f"gmmnet: error: internal error ({type(exc).__name__}: {_first_line(exc)}); rerun with --debug",
              file=sys.stderr)
        return 1
    finally:
        if args.max_memory is not None:
            from .limits import set_max_memory

            set_max_memory(None)


# ---------------------------------------------------------------------------
# errors and warnings: one line each, naming the file they are about


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _names(message: str, path) -> bool:
    path = str(path)
    return path in message or Path(path).name in message


def _error_message(exc: GmmnetError, args) -> str:
    """The one-line text of an error: the file it is about first, when the message does not name it.

    A ``DataError`` is about the data file (``--data``, or fit's DATA); anything else raised
    while a command reads or converts its model is about the model file.  Usage errors and
    output errors are about options and outputs and already say which.
    """
    from .errors import OutputExistsError, OutputFileError

    message = _first_line(exc)
    if "belong together" in message:  # the reader needs a grouping: say how to give one with this command
        message = _grouping_hint(message, args)
    if isinstance(exc, (UsageError, OutputExistsError, OutputFileError)):
        return message
    model = getattr(args, "model", None) or getattr(args, "file", None)
    data = getattr(args, "data", None)
    subject = data if isinstance(exc, DataError) and data else (model or data)
    if subject is None or _names(message, subject) or (model and _names(message, model)) or (data and _names(message, data)):
        return message
    return f"{subject}: {message}"


def _grouping_hint(message: str, args) -> str:
    """A network whose neurons' grouping is unknown: the next step, with options this command has."""
    import re

    model = getattr(args, "model", None) or getattr(args, "file", None)
    what = re.sub(r"[:;,]?\s*pass groups.*$", "", message)
    if model and not _names(what, model):
        what = f"{model}: {what}"
    if args.command == "to-gmm":
        return f"{what}; pass --groups SIZE (or index lists like '0,1;2,3') or --data FILE"
    json_out = f"{Path(str(model)).stem}.json"
    step = f"run gmmnet to-gmm {model} --groups SIZE (or --data FILE) -o {json_out} first"
    if args.command == "to-onnx":
        return f"{what}; {step}, then gmmnet to-onnx {json_out}"
    return f"{what}; pass --data FILE, or {step}"


def _quiet_warnings() -> None:
    """Inside a command every warning is shown once (one line, see :func:`_show_warnings`) except
    numpy's floating-point RuntimeWarnings, noise next to gmmnet's own checks (which raise, or
    warn in gmmnet's words), and other libraries' deprecation notices."""
    warnings.simplefilter("default")
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _show_warnings(caught) -> None:
    """Warnings of a command that succeeded, one line each (an error drops them: the error says it)."""
    seen = set()
    for w in caught:
        text = _first_line(w.message)
        if text and text not in seen:
            seen.add(text)
            print(f"gmmnet: warning: {text}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
