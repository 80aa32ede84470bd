"""Distributed scoring (gmmnet.distributed) on a local `distributed` cluster of 2 workers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import dask.dataframe as dd  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402

from gmmnet import distributed as gd  # noqa: E402
from gmmnet import from_sklearn  # noqa: E402
from gmmnet.errors import DataError  # noqa: E402
from gmmnet.formats.onnx import to_onnx  # noqa: E402
from gmmnet.score import ALIGN, score  # noqa: E402

ALL = ("label", "responsibilities", "log_likelihood", "distances", "mahalanobis")


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(loc=c, size=(700, 7)) for c in (-2.0, 0.0, 2.5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(5, covariance_type="full", random_state=0).fit(X)
    X[5, 1] = np.nan
    X[1000] = np.inf
    return {"X": X, "m32": to_onnx(from_sklearn(gm), outputs=ALL), "m64": to_onnx(from_sklearn(gm), dtype="float64")}


@pytest.fixture(scope="module")
def client():
    # two worker processes of one thread each (about 1 s to start on a quiet machine)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("model", ["m32", "m64"])
def test_dask_array_equals_single_process_bit_for_bit(setup, client, model):
    X = setup["X"]
    ref = score(setup[model], X)
    x = da.from_array(X, chunks=((37, 1000, 0, 663, 400), (3, 4)))  # ragged rows, an empty block, split columns
    counts = lambda: client.run(lambda: gd.SESSIONS_CREATED)  # noqa: E731  (per worker process)
    start = counts()
    lazy = gd.score_dask(setup[model], x)
    assert set(lazy) == set(ref)
    (out,) = dask.compute(lazy)
    for k in ref:
        assert same(out[k], ref[k]), k
    assert out["label"][1000] == -1 and np.isnan(out["log_likelihood"][5])
    # one session per worker: the cached scorer is built at most once per process, whatever the block count
    mid = counts()
    assert len(mid) == 2
    grew = [mid[w] - start[w] for w in mid]
    assert max(grew) <= 1 and sum(grew) >= 1, grew
    for _ in range(2):
        dask.compute(gd.score_array(setup[model], x, outputs=["log_likelihood"]))
    end = counts()
    grew = [end[w] - mid[w] for w in end]
    assert max(grew) <= 1 and sum(grew) >= 1, grew  # a new (model, outputs) pair: at most one more per worker


def test_dask_dataframe_equals_single_process_bit_for_bit(setup, client):
    X = setup["X"]
    cols = [f"f{i}" for i in range(7)]
    frame = pd.DataFrame(X, columns=cols, index=np.arange(len(X)) * 10)
    frame["text"] = "ignored"
    df = dd.from_pandas(frame, npartitions=7)
    res = gd.score_dataframe(setup["m32"], df, columns=cols).compute()
    ref = score(setup["m32"], X)
    assert list(res.index) == list(frame.index)
    assert same(res["label"].to_numpy(), ref["label"])
    assert same(res["log_likelihood"].to_numpy(), ref["log_likelihood"])
    assert same(res[[f"responsibilities_{j}" for j in range(5)]].to_numpy(), ref["responsibilities"])
    assert same(res[[f"distances_{j}" for j in range(35)]].to_numpy(), ref["distances"])
    with pytest.raises(DataError, match="8 feature columns; the model expects 7"):
        gd.score_dataframe(setup["m32"], df, columns=cols + ["text"])


def test_pandas_batches_for_spark(setup, tmp_path):
    import onnx

    X = setup["X"][: 20 * ALIGN]
    path = tmp_path / "m.onnx"
    onnx.save(setup["m32"], path)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(7)])
    batches = [frame.iloc[i:i + 5 * ALIGN] for i in range(0, len(frame), 5 * ALIGN)]
    parts = list(gd.score_pandas_batches(str(path), iter(batches), outputs=["label", "log_likelihood"]))
    got = pd.concat(parts)
    ref = score(str(path), X, outputs=["label", "log_likelihood"])
    assert same(got["log_likelihood"].to_numpy(), ref["log_likelihood"])
    assert same(got["label"].to_numpy(), ref["label"])
    assert gd.spark_schema(str(path), ["label", "log_likelihood"]) == "label bigint, log_likelihood float"
    assert gd.spark_schema(setup["m64"]).startswith("label bigint, responsibilities_0 double")
