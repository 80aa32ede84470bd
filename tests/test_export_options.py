"""Export options (one pydantic model), the plan, the registry of exporters, and skl2onnx output names.

The keyword arguments of gmmnet.to_onnx / gmmnet.formats.onnx.to_onnx / plan_export and the
flags of `gmmnet to-onnx` are checked against ExportOptions' fields; the JSON Schema in schemas/
is checked against the model; the graphs written with ``output_names="skl2onnx"`` are checked
against a real skl2onnx graph of the same GaussianMixture.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import onnx
import pytest
from mixtures import random_mixture, rel_err, sample

import gmmnet
from gmmnet import cli, linalg
from gmmnet.errors import UsageError
from gmmnet.formats import onnx as gonnx
from gmmnet.formats.onnx import ExportOptions, plan_export, run, session, to_onnx
from gmmnet.formats.onnx import options as opts_mod
from gmmnet.formats.onnx import plan as plan_mod
from gmmnet.ir import Component, Hierarchy, Mixture

ROOT = Path(__file__).resolve().parents[1]
FIELDS = list(ExportOptions.model_fields)
#: Fields without a to-onnx flag (none today: every option is on the command line).
LIBRARY_ONLY: set[str] = set()
#: to-onnx flags that are not export options (files, model repairs).
CLI_ONLY = {"help", "model", "output", "eigenvalue_floor", "max_condition", "force"}


def _meta(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


# ---------------------------------------------------------------------------
# one model: signatures, flags, schema


@pytest.mark.parametrize("fn", [gmmnet.to_onnx, gonnx.to_onnx, plan_export], ids=lambda f: f.__module__ + "." + f.__name__)
def test_signatures_are_the_options(fn):
    params = inspect.signature(fn).parameters
    names = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    extra = {"return_plan"} if fn is not plan_export else set()
    assert set(names) == set(FIELDS) | extra, set(names) ^ (set(FIELDS) | extra)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # no **options
    for name in FIELDS:
        assert params[name].default == ExportOptions.model_fields[name].default, name
    for name in FIELDS:  # help() shows each one: it is named in the docstring of the documented entry points
        if fn is not plan_export:
            assert name in fn.__doc__, f"{fn.__name__} does not document {name}"


def _to_onnx_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices["to-onnx"]


def test_cli_flags_are_the_options():
    actions = {a.dest: a for a in _to_onnx_parser()._actions}
    assert set(actions) - CLI_ONLY == set(FIELDS) - LIBRARY_ONLY
    for name in set(FIELDS) - LIBRARY_ONLY:
        field, action = ExportOptions.model_fields[name], actions[name]
        default = field.default
        assert (list(default) if isinstance(default, tuple) else default) == action.default, name
        ann = field.annotation
        args = typing.get_args(ann)
        literal = [a for a in ([ann] + list(args)) if typing.get_origin(a) is typing.Literal]
        if literal:
            assert tuple(action.choices) == typing.get_args(literal[0]), name
        elif name == "outputs":
            assert tuple(action.choices) == opts_mod.OUTPUTS
        else:
            assert action.choices is None, name


def test_cli_defaults_make_the_default_options():
    args = cli.build_parser().parse_args(["to-onnx", "m.json"])
    assert ExportOptions(**{n: getattr(args, n) for n in FIELDS}) == ExportOptions()


def test_schema_file_is_current():
    on_disk = json.loads((ROOT / opts_mod.SCHEMA_FILE).read_text())
    assert on_disk == opts_mod.json_schema(), (
        "schemas/gmmnet-export-options.schema.json is stale: rewrite it with opts_mod.schema_text()")
    assert set(on_disk["properties"]) == set(FIELDS) and on_disk["additionalProperties"] is False


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"activation": "tanh"}, ["activation", "'abs', 'relu', 'shifted_relu'", "'tanh'"]),
        ({"dtype": "float16"}, ["dtype", "float16"]),
        ({"opset": 12}, ["opset", "13 to 21"]),
        ({"opset": True}, ["opset"]),
        ({"opset": "17"}, ["opset"]),
        ({"outputs": ("label", "probabilities")}, ["unknown output", "probabilities"]),
        ({"outputs": ()}, ["outputs", "at least one"]),
        ({"outputs": ("label", "label")}, ["outputs", "duplicates"]),
        ({"centering": "local"}, ["centering"]),
        ({"compute": "half"}, ["compute"]),
        ({"dtype": "float64", "compute": "float32"}, ["compute", "float64 graph"]),
        ({"layout": "expanded"}, ["layout must be one of"]),
        ({"layout": "quadratic", "compute": "mixed"}, ["layout='quadratic'", "compute"]),
        ({"layout": "quadratic", "centering": "component"}, ["layout='quadratic'", "centering"]),
        ({"delta": 0}, ["delta", "> 0"]),
        ({"delta": float("inf")}, ["delta"]),
        ({"intensity": "cauchy"}, ["intensity"]),
        ({"intensity_c": -1.0}, ["intensity_c"]),
        ({"level_outputs": "yes"}, ["level_outputs"]),
        ({"output_names": "onnxmltools"}, ["output_names", "skl2onnx"]),
    ],
)
def test_bad_values_are_one_usage_error(rng, kwargs, words):
    mix = random_mixture(rng, 2, 2)
    for call in (lambda: ExportOptions(**kwargs), lambda: gmmnet.to_onnx(mix, **kwargs), lambda: plan_export(mix, **kwargs)):
        with pytest.raises(UsageError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and all(w in msg for w in words), msg


def test_unknown_option():
    with pytest.raises(UsageError, match="unknown option 'dtyp'"):
        ExportOptions(dtyp="float64")
    with pytest.raises(TypeError):  # the explicit signatures: Python itself refuses an unknown keyword
        gmmnet.to_onnx(random_mixture(np.random.default_rng(0), 2, 2), dtyp="float64")


def test_cli_bad_option_is_one_line(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_text(random_mixture(np.random.default_rng(0), 2, 2).to_json())
    assert cli.main(["to-onnx", str(path), "--delta", "0", "--activation", "shifted_relu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "delta" in err and "\n" not in err


# ---------------------------------------------------------------------------
# the registry and the plan


def _truncated(rng, d=5, r=2, k=2):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    comps = [Component(mean=rng.standard_normal(d), eigenvectors=q.T[:r], eigenvalues=np.array([4.0, 2.0])[:r],
                       weight=1.0 / k, residual_variance=0.3) for _ in range(k)]
    return Mixture(n_features=d, covariance_type="full", components=comps)


def test_registry_chooses_by_model_and_options(rng):
    mix = random_mixture(rng, 2, 3, "diag")
    chosen = lambda m, **kw: plan_mod.choose_exporter(m, ExportOptions(**kw)).name  # noqa: E731
    assert [e.name for e in gonnx.exporters()] == ["classifier", "mixture", "deep"]
    assert chosen(mix) == "mixture" and chosen(mix, layout="quadratic") == "mixture"
    assert chosen(mix, activation="shifted_relu") == "deep"
    assert chosen(mix, intensity="gauss") == "deep"
    assert chosen(mix, outputs=("log_likelihood", "level0_distances")) == "deep"
    assert chosen(mix, level_outputs=True) == "mixture"  # a single mixture has no lower levels
    assert chosen(_truncated(rng)) == "deep"
    hier = Hierarchy(levels=[mix])
    assert chosen(hier) == "deep"
    with pytest.raises(UsageError, match="hierarchy"):
        chosen(hier, layout="quadratic")
    with pytest.raises(UsageError, match="shifted_relu"):
        chosen(mix, layout="quadratic", activation="shifted_relu")
    with pytest.raises(UsageError, match="Mixture.*Hierarchy.*got str"):
        chosen("a string")


def test_a_registered_exporter_is_asked_first(rng):
    """A new exporter is one registration: the registry, not the caller's keywords, decides."""
    mix = random_mixture(rng, 2, 3)
    seen = []
    flat = plan_mod.exporter("mixture")
    mine = plan_mod.Exporter(name="test-mine", takes=lambda m: isinstance(m, Mixture),
                             declines=lambda m, o: None if o.dtype == "float64" else "float32 is not mine",
                             plan=lambda m, o: seen.append("plan") or flat.plan(m, o),
                             build=flat.build, models="a test mixture", order=5)
    saved = list(plan_mod._REGISTRY)
    try:
        plan_mod.register_exporter(mine)
        assert to_onnx(mix, dtype="float64", return_plan=True)[1].exporter == "mixture" and seen == ["plan"]
        assert plan_export(mix).exporter == "mixture" and seen == ["plan"]  # declined: the next one writes it
    finally:
        plan_mod._REGISTRY[:] = saved


def test_plan_is_what_the_graph_says(rng):
    mix = random_mixture(rng, 3, 4, "full", scale=100.0, spread=30.0)
    model, plan = to_onnx(mix, outputs=("log_likelihood", "mahalanobis"), return_plan=True)
    meta = _meta(model)
    assert plan.exporter == "mixture" and plan.kind == "mixture" and plan.layout == meta["layout"] == "neurons"
    assert plan.compute == meta["compute"] and plan.compute_reason == meta["compute_reason"]
    assert plan.centering == meta["centering"] and plan.centering_reason == meta["centering_reason"]
    assert f"{plan.predicted['log_likelihood']:.3e}" == meta["predicted_error_log_likelihood"]
    assert f"{plan.error_estimate:.3e}" == meta["error_estimate"]
    assert plan.n_neurons == (12,) and plan.levels == ((3, 12),) and plan.n_features == 4
    assert plan.outputs == ("log_likelihood", "mahalanobis") == tuple(o.name for o in model.graph.output)
    assert plan.weight_bytes >= sum(i.raw_data.__len__() for i in model.graph.initializer)
    again = plan_export(mix, outputs=("log_likelihood", "mahalanobis"))
    assert again == plan  # the same choices, without building (state is not compared)


def test_plan_of_a_hierarchy_and_a_classifier(rng):
    from sklearn.datasets import load_iris

    from gmmnet.pipeline import GaussianMixtureClassifier

    lv0 = random_mixture(rng, 2, 3)
    lv1 = random_mixture(rng, 2, 6, "diag")
    model, plan = to_onnx(Hierarchy(levels=[lv0, lv1]), dtype="float64", activation="relu", level_outputs=True,
                          return_plan=True)
    assert plan.exporter == "deep" and plan.kind == "hierarchy" and plan.levels == ((2, 6), (2, 12))
    assert plan.n_neurons == (12, 24) and plan.summary() == "2 components, 6 neurons -> 2 components, 12 neurons (2 levels)"
    assert plan.outputs[-2:] == ("level0_responsibilities", "level1_responsibilities")
    assert [o.name for o in model.graph.output] == list(plan.outputs)
    x, y = load_iris(return_X_y=True)
    clf = GaussianMixtureClassifier(n_components=2, random_state=0).fit(x, y)
    model, plan = to_onnx(clf, return_plan=True)  # a classifier is reached by duck typing
    assert plan.exporter == "classifier" and plan.outputs == ("label", "probabilities")
    got = run(model, x)
    assert np.array_equal(got["label"], clf.predict(x))
    assert np.max(np.abs(got["probabilities"] - clf.predict_proba(x))) <= 1e-6


def test_cli_reports_from_the_plan(tmp_path, capsys):
    mix = random_mixture(np.random.default_rng(3), 3, 4, "diag")
    path = tmp_path / "m.json"
    path.write_text(mix.to_json())
    assert cli.main(["to-onnx", str(path), "-o", str(tmp_path / "q.onnx"), "--layout", "quadratic"]) == 0
    out = capsys.readouterr().out
    assert out == (f"wrote {tmp_path / 'q.onnx'}: {plan_export(mix, layout='quadratic').summary()}, activation=abs, "
                   "dtype=float32, opset=17\n")
    assert f"quadratic layout ({plan_export(mix, layout='quadratic').layer_dtype} inside)" in out
    assert cli.main(["to-onnx", str(path), "-o", str(tmp_path / "q64.onnx"), "--layout", "quadratic",
                     "--compute", "float64"]) == 0
    assert "quadratic layout (float64 inside)" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# imports point down: formats do not import the estimators


EXPORT_MODULES = ("__init__.py", "options.py", "plan.py", "graph.py", "fold.py", "export.py", "deep.py", "classifier.py")


def test_formats_do_not_import_estimators_or_the_package():
    upward = {"hierarchy", "pipeline", "nn", "cli", "score", "distributed", "plot", "demo"}
    for name in EXPORT_MODULES:
        path = ROOT / "gmmnet" / "formats" / "onnx" / name
        text = path.read_text().split("\ndef _groups_from_logits", 1)[0]  # deep.py: the export half
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 3:  # from ...x: gmmnet.x
                mods = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                for mod in mods:
                    assert mod not in upward, f"{path.name} imports gmmnet.{mod}"
                    assert mod != "__version__", f"{path.name} imports the gmmnet package itself"


def test_export_path_leaves_estimators_unimported(tmp_path):
    mix = random_mixture(np.random.default_rng(1), 2, 3)
    (tmp_path / "m.json").write_text(mix.to_json())
    code = (
        "import sys; import gmmnet.io as io; from gmmnet.formats.onnx import to_onnx\n"
        f"m = to_onnx(io.load_ir({str(tmp_path / 'm.json')!r}), activation='shifted_relu')\n"
        "bad = [n for n in ('gmmnet.hierarchy', 'gmmnet.pipeline', 'gmmnet.nn', 'gmmnet.cli') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------------------
# skl2onnx output names (issue 17)


def _gm(covariance_type="full", bayes=False):
    from sklearn.datasets import load_wine
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(load_wine().data)
    cls = BayesianGaussianMixture if bayes else GaussianMixture
    return cls(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=300).fit(x), x


def _io_spec(sess):
    shape = lambda s: [d if isinstance(d, int) else None for d in s]  # noqa: E731  (dynamic dims: any name)
    return ([(i.name, i.type, shape(i.shape)) for i in sess.get_inputs()],
            [(o.name, o.type, shape(o.shape)) for o in sess.get_outputs()])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_skl2onnx_names_match_a_real_skl2onnx_graph(dtype, covariance_type):
    skl2onnx = pytest.importorskip("skl2onnx")
    est, x = _gm(covariance_type)
    xin = x.astype(dtype)
    theirs = skl2onnx.to_onnx(est, xin[:1], target_opset=17,
                              options={id(est): {"score_samples": True}})
    ours = gmmnet.to_onnx(est, dtype=dtype, output_names="skl2onnx")
    s_theirs, s_ours = session(theirs), session(ours)
    assert _io_spec(s_ours) == _io_spec(s_theirs)
    got = dict(zip([o.name for o in s_ours.get_outputs()], s_ours.run(None, {"X": xin})))
    xr = xin.astype(np.float64)
    assert np.array_equal(got["label"], est.predict(xr)[:, None])
    assert rel_err(got["score_samples"], est.score_samples(xr)[:, None]) <= (2e-6 if dtype == "float32" else 1e-10)
    assert np.max(np.abs(got["probabilities"] - est.predict_proba(xr))) <= (1e-6 if dtype == "float32" else 1e-10)
    assert _meta(ours)["output_names"] == "skl2onnx"


def test_skl2onnx_names_for_other_outputs_and_graphs(rng, tmp_path, capsys):
    mix = random_mixture(rng, 3, 4, "diag")
    x = sample(rng, mix, 20)
    names = lambda m: [o.name for o in m.graph.output]  # noqa: E731
    m = to_onnx(mix, dtype="float64", output_names="skl2onnx", outputs=("log_likelihood", "distances", "label"))
    assert names(m) == ["score_samples", "distances", "label"]
    out = run(m, x)
    assert out["score_samples"].shape == (20, 1) and out["label"].shape == (20, 1)
    np.testing.assert_allclose(out["score_samples"][:, 0], linalg.log_likelihood(mix, x), rtol=1e-12)
    for kw in ({"layout": "quadratic"}, {"activation": "shifted_relu", "delta": 50.0}):
        m = to_onnx(mix, dtype="float64", output_names="skl2onnx", **kw)
        assert names(m) == ["label", "probabilities", "score_samples"]
        np.testing.assert_allclose(run(m, x)["probabilities"], linalg.responsibilities(mix, x), atol=1e-10)
    h = to_onnx(Hierarchy(levels=[mix, random_mixture(rng, 2, 12)]), output_names="skl2onnx",
                outputs=("responsibilities", "level0_responsibilities"))
    assert names(h) == ["probabilities", "level0_responsibilities"]
    path = tmp_path / "m.json"
    path.write_text(mix.to_json())
    assert cli.main(["to-onnx", str(path), "-o", str(tmp_path / "s.onnx"), "--output-names", "skl2onnx"]) == 0
    assert names(onnx.load(str(tmp_path / "s.onnx"))) == ["label", "probabilities", "score_samples"]
    assert names(to_onnx(mix)) == ["label", "responsibilities", "log_likelihood"]  # the default stays
