"""Run gmmnet graphs (or any single-input ONNX model) on onnxruntime's CPU provider."""

from __future__ import annotations

import os

import numpy as np

from ...errors import DataError, InputFileError

__all__ = ["measured_errors", "ort_errors", "run", "session"]

_NP = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def ort_errors() -> tuple[type, ...]:
    """The exception types onnxruntime raises (its own Fail, InvalidGraph, ... and RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception)) + (RuntimeError,)


def session(model, source: str | None = None, **options):
    """An ``onnxruntime.InferenceSession`` on the CPU provider.

    ``model`` is an ``onnx.ModelProto``, serialized bytes, a path, or an existing session
    (returned as is); ``source`` names it in messages (default: the path, or "model").
    Keyword ``options`` set attributes of ``onnxruntime.SessionOptions`` (e.g.
    ``intra_op_num_threads=1``).  onnxruntime's own log lines are silenced below errors
    (``log_severity_level=3``): gmmnet reports problems as one-line errors instead.
    """
    import onnxruntime as ort

    if isinstance(model, ort.InferenceSession):
        return model
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: no warning lines around gmmnet's own messages
    for key, value in options.items():
        setattr(so, key, value)
    if isinstance(model, (bytes, bytearray)):
        data = bytes(model)
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise InputFileError(f"{path}: no such file")
        data = path
        source = source or path
    else:
        try:
            data = model.SerializeToString()
        except AttributeError:
            raise InputFileError(f"expected an ONNX model, bytes or a path, got {type(model).__name__}") from None
    try:
        return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    except ort_errors() as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputFileError(f"{source or 'model'}: onnxruntime cannot load it ({type(exc).__name__}: {first[:200]})") from None


def run(model, X, outputs=None) -> dict[str, np.ndarray]:
    """Run ``model`` on ``X`` (cast to the model's input dtype); returns ``{output name: array}``.

    ``outputs`` picks a subset of the graph outputs (default: all of them).
    """
    sess = session(model)
    inp = sess.get_inputs()[0]
    dtype = _NP.get(inp.type)
    if dtype is None:
        raise DataError(f"model input {inp.name!r} has type {inp.type}; expected float or double")
    x = np.asarray(X)
    if x.ndim != 2:
        raise DataError(f"X must be 2-D (n_samples, n_features), got shape {x.shape}")
    n_feat = inp.shape[1] if len(inp.shape) == 2 else None
    if isinstance(n_feat, int) and x.shape[1] != n_feat:
        raise DataError(f"X has {x.shape[1]} features, the model expects {n_feat}")
    try:
        x = np.ascontiguousarray(x, dtype=dtype)
    except (TypeError, ValueError):
        raise DataError("X must hold numbers") from None
    names = [o.name for o in sess.get_outputs()]
    if outputs is not None:
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        missing = [o for o in outputs if o not in names]
        if missing:
            raise DataError(f"the model has no output {missing[0]!r} (it has {', '.join(names)})")
        names = outputs
    values = sess.run(names, {inp.name: x})
    return dict(zip(names, values))


def measured_errors(candidate, reference, X) -> dict[str, float]:
    """Worst errors of ``candidate`` against ``reference`` on the rows ``X`` (both run on onnxruntime).

    Returns ``{"log_likelihood": max |Δ|/(1+|ref|), "responsibilities": max |Δ|}`` over the
    outputs both graphs have (rows whose reference is not finite are skipped).  Used by
    ``compute="auto"``: the reference is the same model computed in float64.
    """
    names = [n for n in ("log_likelihood", "responsibilities")
             if n in {o.name for o in candidate.graph.output} and n in {o.name for o in reference.graph.output}]
    got, ref = run(candidate, X, names), run(reference, X, names)
    out = {}
    for n in names:
        r = ref[n].astype(np.float64)
        g = got[n].astype(np.float64)
        ok = np.all(np.isfinite(r.reshape(r.shape[0], -1)), axis=1)
        if not np.any(ok):
            out[n] = 0.0
            continue
        diff = np.abs(g[ok] - r[ok])
        if n == "log_likelihood":
            diff = diff / (1.0 + np.abs(r[ok]))
        worst = float(np.max(diff)) if diff.size else 0.0
        out[n] = worst if np.isfinite(worst) else float("inf")
    return out
