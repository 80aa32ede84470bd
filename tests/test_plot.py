"""gmmnet plot: the geometry is right, and every input kind renders a valid image of the stated size."""

from __future__ import annotations

import os
import struct
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import onnx.numpy_helper as nh  # noqa: E402
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture  # noqa: E402

import gmmnet  # noqa: E402
from gmmnet import io, linalg, plot  # noqa: E402
from gmmnet.cli import main  # noqa: E402
from gmmnet.errors import DataError, UsageError  # noqa: E402
from gmmnet.hierarchy import HierarchicalGaussianMixture  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the file decodes completely."""
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, "not a PNG"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND"
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decodes every pixel: a truncated or corrupt file raises
        assert im.size == (w, h)
    return w, h


def blobs(seed=0, n=150):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 2)) @ np.array([[2.0, 0.6], [0.0, 0.5]])
    b = rng.normal(size=(n, 2)) * 0.6 + [4.0, 3.0]
    return np.vstack([a, b])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One file of every kind gmmnet reads."""
    d = tmp_path_factory.mktemp("plot")
    x = blobs()
    np.save(d / "x2.npy", x)
    gmm = GaussianMixture(2, random_state=0).fit(x)
    io.save_estimator(gmm, d / "g2.skops")
    io.save_estimator(BayesianGaussianMixture(n_components=3, random_state=0).fit(x), d / "b2.pkl")
    io.save_ir(gmmnet.from_sklearn(gmm), d / "g2.json")
    model = gmmnet.to_onnx(gmm, activation="relu", dtype="float64")
    io.save_onnx(model, d / "g2.onnx")
    # a 'trained' network: the two neurons of component 1 drifted (scaled by 2 and 0.5)
    model = gmmnet.to_onnx(gmm, dtype="float64")
    for init in model.graph.initializer:
        if init.name == "layer0/c1/W":  # component 1's neurons (rows (w, b) over [x, 1], one Gemm per component)
            init.CopyFrom(nh.from_array(nh.to_array(init) * np.array([[2.0], [0.5]]), init.name))
    io.save_onnx(model, d / "trained.onnx")
    xi = np.random.default_rng(1).normal(size=(120, 16)) + np.repeat([[0.0] * 16, [3.0] * 16], 60, axis=0)
    np.save(d / "img.npy", xi)
    io.save_estimator(GaussianMixture(2, random_state=0).fit(xi), d / "img.joblib")
    h = HierarchicalGaussianMixture("2:full,2:diag", random_state=0).fit(x)
    io.save_estimator(h, d / "h.pkl")
    io.save_ir(h.to_ir(), d / "h.json")
    io.save_onnx(gmmnet.to_onnx(h.to_ir()), d / "h.onnx")  # a deep network: read back as a hierarchy
    return d


def run_cli(*args) -> int:
    return main([str(a) for a in args])


# ---------------------------------------------------------------------------
# geometry


def test_neuron_arrow_tips_output_one_and_lines_lie_on_hyperplanes():
    x = blobs()
    m = gmmnet.from_sklearn(GaussianMixture(2, random_state=0).fit(x))
    origin, P = plot.projection(m)
    assert np.array_equal(P, np.eye(2))
    for c in m.components:
        W, b = linalg.neurons(c.mean, c.eigenvectors, c.eigenvalues)
        segs = plot.neuron_segments(c, origin, P)
        assert sorted(s[0] for s in segs) == [0, 1]
        for i, centre, u, half, arrow in segs:
            assert np.allclose(centre, c.mean, atol=1e-12)
            assert abs(np.abs(W[i] @ (c.mean + arrow) + b[i]) - 1.0) < 1e-12  # the tip: exactly 1σ
            assert abs(W[i] @ u) < 1e-12 * np.linalg.norm(W[i])  # the line runs inside the hyperplane
            # half-length: 2σ of the component along the line
            sd = np.sqrt(u @ linalg.covariance(c.eigenvectors, c.eigenvalues) @ u)
            assert half == pytest.approx(2 * sd, rel=1e-12)


def test_projection_of_high_dimensional_data_is_its_top_principal_plane():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 5)) * [5.0, 3.0, 1.0, 0.5, 0.1] + 7.0
    m = gmmnet.from_sklearn(GaussianMixture(2, random_state=0).fit(x))
    origin, P = plot.projection(m, x)
    assert np.allclose(P @ P.T, np.eye(2), atol=1e-12)
    assert np.allclose(origin, x.mean(axis=0))
    cov = np.cov(x, rowvar=False)
    top = np.sort(np.linalg.eigvalsh(cov))[::-1][:2]
    assert np.allclose(np.diag(P @ cov @ P.T), top, rtol=1e-10)
    # without data: the mixture's own overall covariance (exact formula)
    o2, P2 = plot.projection(m)
    mean, mcov = plot.mixture_covariance(m)
    assert np.allclose(o2, mean)
    assert np.allclose(np.diag(P2 @ mcov @ P2.T), np.sort(np.linalg.eigvalsh(mcov))[::-1][:2], rtol=1e-10)
    # the overall covariance of a mixture matches a large sample from it within sampling error
    gm = GaussianMixture(2, random_state=0).fit(x)
    sample, _ = gm.sample(200_000)
    assert np.allclose(mcov, np.cov(sample, rowvar=False), atol=0.05 * np.abs(mcov).max())


def test_ellipse_axes_match_the_covariance():
    cov = np.array([[3.0, 1.0], [1.0, 2.0]])
    w, h, ang = plot.ellipse_axes(cov)
    vals = np.sort(np.linalg.eigvalsh(cov))[::-1]
    assert (w / 2) ** 2 == pytest.approx(vals[0], rel=1e-12) and (h / 2) ** 2 == pytest.approx(vals[1], rel=1e-12)
    v = np.array([np.cos(np.radians(ang)), np.sin(np.radians(ang))])
    assert v @ cov @ v == pytest.approx(vals[0], rel=1e-12)


# ---------------------------------------------------------------------------
# rendering every input kind


@pytest.mark.parametrize("name, extra, panels", [
    ("g2.skops", ["--data", "x2.npy"], 2),
    ("b2.pkl", [], 2),
    ("g2.json", ["--data", "x2.npy"], 2),
    ("g2.onnx", [], 3),                        # read back: exact, with diagnostics
    ("trained.onnx", ["--data", "x2.npy"], 3),
    ("img.joblib", ["--image-shape", "4x4"], 2),
    ("h.pkl", ["--data", "x2.npy"], 2),
    ("h.json", [], 2),
    ("h.onnx", ["--data", "x2.npy"], 2),
])
def test_plot_every_input_kind_writes_a_png_of_the_stated_size(files, name, extra, panels, capsys):
    out = files / f"{name}.png"
    extra = [str(files / e) if e.endswith(".npy") else e for e in extra]
    assert run_cli("plot", files / name, "-o", out, "--force", *extra) == 0
    assert png_size(out) == (500 * panels, 450)
    assert f"{500 * panels}x450 px" in capsys.readouterr().out


@pytest.mark.parametrize("kind, extra", [
    ("ellipses", ["--data", "img.npy"]),
    ("images", ["--image-shape", "4x4"]),
    ("spectrum", []),
])
def test_each_kind_and_size_and_dpi(files, kind, extra):
    out = files / f"kind_{kind}.png"
    extra = [str(files / e) if e.endswith(".npy") else e for e in extra]
    assert run_cli("plot", files / "img.joblib", "--kind", kind, "--size", "4x3", "--dpi", "50",
                   "-o", out, "--force", *extra) == 0
    assert png_size(out) == (200, 150)


def test_diagnostics_panel_flags_the_drifted_component(files):
    data = np.load(files / "x2.npy")
    fig = plot.figure(io.load_model(files / "trained.onnx"), data=data, kind="diagnostics")
    titles = [ax.get_title() for ax in fig.axes]
    assert any("faithfulness" in t for t in titles) and any("whitening" in t for t in titles)
    mixture, _ = plot.as_document(io.load_model(files / "trained.onnx"), data=data)
    low = [c["low_confidence"] for c in mixture.diagnostics["components"]]
    bars = fig.axes[0].patches
    assert len(bars) == len(low) and any(low) and not all(low)
    red = [tuple(round(v, 3) for v in p.get_facecolor()[:3]) == (0.839, 0.153, 0.157) for p in bars]
    assert red == low


def test_svg_output_is_well_formed_with_the_stated_size(files):
    out = files / "g2.svg"
    assert run_cli("plot", files / "g2.skops", "--kind", "spectrum", "--size", "4x3", "-o", out, "--force") == 0
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    assert (root.get("width"), root.get("height")) == ("288pt", "216pt")  # 72 pt per inch


@pytest.mark.parametrize("name", ["h.pkl", "h.onnx"])
def test_hierarchy_spectrum_has_one_panel_per_level(files, name):
    fig = plot.figure(io.load_model(files / name), kind="spectrum")
    titles = [" ".join(ax.get_title().split()) for ax in fig.axes]  # titles wrap to their panel
    assert titles == ["level 0: eigenvalue spectrum", "level 1: eigenvalue spectrum"]


def test_one_dimensional_mixture_plots(tmp_path):
    x = np.concatenate([np.random.default_rng(0).normal(0, 1, 200), np.random.default_rng(1).normal(5, 1, 200)])
    m = gmmnet.from_sklearn(GaussianMixture(2, random_state=0).fit(x[:, None]))
    fig = plot.figure(m, data=x[:, None], kind="ellipses", size=(3, 2), dpi=50)
    plot.save_figure(fig, tmp_path / "one.png")
    assert png_size(tmp_path / "one.png") == (150, 100)


# ---------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("args, code, text", [
    (["--kind", "images"], 2, "needs an image shape"),
    (["--image-shape", "3x5"], 2, "has 15 pixels but the model has 16 features"),
    (["--image-shape", "4by4"], 2, "image shape must look like 8x8"),
    (["--kind", "diagnostics"], 2, "no recovery diagnostics"),
    (["--data", "x2.npy"], 8, "expected (n, 16)"),
    (["--size", "4"], 2, "--size must look like"),
])
def test_plot_errors_are_one_line(files, args, code, text, capsys):
    args = [str(files / a) if a.endswith(".npy") else a for a in args]
    out = files / "err.png"
    assert run_cli("plot", files / "img.joblib", "-o", out, *args) == code
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1
    assert not out.exists()


def test_existing_output_needs_force_and_bad_suffix_is_refused(files, capsys):
    out = files / "exists.png"
    out.write_bytes(b"keep")
    assert run_cli("plot", files / "g2.skops", "-o", out) == 9
    assert out.read_bytes() == b"keep"
    assert run_cli("plot", files / "g2.skops", "-o", files / "fig.jpg") == 2
    assert "fig.jpg: unknown output suffix '.jpg'; use .png, .svg or .pdf" in capsys.readouterr().err
    assert not [p for p in os.listdir(files) if p.endswith(".tmp")]  # atomic writes leave nothing behind


def test_data_of_the_wrong_width_is_a_data_error(files):
    m = gmmnet.from_sklearn(GaussianMixture(2, random_state=0).fit(blobs()))
    with pytest.raises(DataError, match="expected \\(n, 2\\)"):
        plot.figure(m, data=np.zeros((5, 3)))


def test_missing_matplotlib_is_a_clear_usage_error(monkeypatch):
    m = gmmnet.from_sklearn(GaussianMixture(2, random_state=0).fit(blobs()))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(UsageError, match=r"pip install 'gmmnet\[plot\]'"):
        plot.figure(m)


def test_import_gmmnet_plot_does_not_import_matplotlib():
    import subprocess

    code = "import sys, gmmnet.plot, gmmnet.cli; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------
# legibility: no two texts overlap, none leaves the canvas (issue 17, "Pictures")


def drawn_texts(fig) -> list:
    """(text, window extent) of every text matplotlib draws when the figure is rendered."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    FigureCanvasAgg(fig)
    drawn, original = [], Text.draw

    def spy(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return original(self, renderer)

    Text.draw = spy  # Annotation.draw and tick labels go through Text.draw too
    try:
        fig.canvas.draw()
    finally:
        Text.draw = original
    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in drawn]


def assert_legible(fig) -> int:
    texts = drawn_texts(fig)
    canvas = fig.bbox
    for text, box in texts:  # half a pixel of slack for rounding
        assert box.x0 >= canvas.x0 - 0.5 and box.y0 >= canvas.y0 - 0.5, f"{text!r} leaves the canvas: {box}"
        assert box.x1 <= canvas.x1 + 0.5 and box.y1 <= canvas.y1 + 0.5, f"{text!r} leaves the canvas: {box}"
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            dx = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            dy = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            assert dx <= 0.5 or dy <= 0.5, f"{a!r} and {b!r} overlap"
    return len(texts)


def _blobs3(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(300, 2)) @ np.array([[2.0, 0.6], [0.0, 0.5]])
    b = rng.normal(size=(200, 2)) @ np.array([[0.5, 0.0], [0.4, 1.2]]) + [5.0, 3.0]
    c = rng.normal(size=(200, 2)) * 0.6 + [-1.0, 4.0]
    return np.vstack([a, b, c])


def _figure_cases():
    from sklearn.datasets import load_digits, load_wine

    wine, digits, x2 = load_wine().data, load_digits().data[:600], _blobs3()
    rng = np.random.default_rng(0)  # a narrow and a wide component about one mean: their labels must move apart
    close = np.vstack([rng.normal(size=(300, 2)) * 0.3, rng.normal(size=(300, 2)) * 3, rng.normal(size=(200, 2)) + 8])
    return {
        "ellipses 2-D": lambda: plot.figure(GaussianMixture(3, random_state=0).fit(close), data=close, kind="ellipses"),
        "ellipses 13-D": lambda: plot.figure(GaussianMixture(4, random_state=0).fit(wine), data=wine, kind="ellipses"),
        "images": lambda: plot.figure(GaussianMixture(6, reg_covar=0.1, random_state=0).fit(digits), kind="images",
                                      image_shape="8x8"),
        "spectrum full": lambda: plot.figure(GaussianMixture(10, reg_covar=0.1, random_state=0).fit(digits),
                                             kind="spectrum"),
        "spectrum tied": lambda: plot.figure(GaussianMixture(4, covariance_type="tied", random_state=0).fit(wine),
                                             kind="spectrum"),
        "spectrum diag": lambda: plot.figure(GaussianMixture(5, covariance_type="diag", random_state=0).fit(wine),
                                             kind="spectrum"),
        "hierarchy": lambda: plot.figure(HierarchicalGaussianMixture("3:full,4:diag", random_state=0).fit(wine),
                                         data=wine),
        "small auto": lambda: plot.figure(GaussianMixture(4, random_state=0).fit(wine), data=wine, size=(4, 3)),
    }


@pytest.mark.parametrize("case", list(_figure_cases()))
def test_figures_have_no_overlapping_or_clipped_text(case):
    fig = _figure_cases()[case]()
    assert assert_legible(fig) >= 5


def test_diagnostics_figure_is_legible(files):
    data = np.load(files / "x2.npy")
    fig = plot.figure(io.load_model(files / "trained.onnx"), data=data, kind="auto")
    assert len(fig.subfigs) == 3
    assert assert_legible(fig) >= 10


def test_tied_spectrum_is_one_line_for_all_components():
    from sklearn.datasets import load_wine

    gm = GaussianMixture(4, covariance_type="tied", random_state=0).fit(load_wine().data)
    ax = plot.figure(gm, kind="spectrum").axes[0]
    assert len(ax.get_lines()) == 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0–3"]
    assert "identical for all components" in ax.get_title()


def test_light_components_are_faded_and_negligible_ones_left_out():
    x = _blobs3()
    bgm = BayesianGaussianMixture(n_components=8, weight_concentration_prior=1e-3, random_state=0, max_iter=500).fit(x)
    w = bgm.weights_
    top = w.max()
    drawn = [k for k in range(8) if w[k] >= plot.NEGLIGIBLE_WEIGHT * top]
    assert 0 < len(drawn) < 8  # the fit switched components off
    fig = plot.figure(bgm, data=x, kind="ellipses")
    ax = fig.axes[0]
    labels = sorted(int(t.get_text()) for t in ax.texts if t.get_gid() == "component-label")
    assert labels == drawn
    assert f"{8 - len(drawn)} components below {plot.NEGLIGIBLE_WEIGHT:g}× the top weight not drawn" in " ".join(
        ax.get_title().split())
    alphas = {}
    for p in ax.patches:  # 1σ and 2σ ellipses, coloured by component
        alphas.setdefault(p.get_edgecolor()[:3], set()).add(round(p.get_alpha(), 6))
    expected = {round(0.25 + 0.75 * np.sqrt(w[k] / top), 6) for k in drawn}
    assert {a for s in alphas.values() for a in s} == expected
    assert min(expected) < 0.5 and max(expected) == 1.0  # the lightest drawn component is visibly fainter


def test_a_canvas_too_large_is_refused_before_drawing(files, capsys):
    out = files / "huge.png"
    assert run_cli("plot", files / "g2.skops", "-o", out, "--size", "100x100", "--dpi", "1000") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "100000x100000 pixels" in err and "at most" in err
    assert not out.exists()
