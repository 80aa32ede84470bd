"""Spark's mapInPandas with gmmnet.distributed.score_pandas_batches, on a local[2] Spark session."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("pyspark")
pd = pytest.importorskip("pandas")
if shutil.which("java") is None:  # pragma: no cover - Spark needs a JVM
    pytest.skip("Spark needs java on PATH", allow_module_level=True)

import onnx  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402

from gmmnet import distributed as gd  # noqa: E402
from gmmnet import from_sklearn  # noqa: E402
from gmmnet.formats.onnx import to_onnx  # noqa: E402
from gmmnet.score import ALIGN, score  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::Warning:pyspark")  # pyspark's notes on pandas 3


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # executors run this interpreter (where gmmnet is installed)
    s = (SparkSession.builder.master("local[2]").appName("gmmnet-test")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2").getOrCreate())
    yield s
    s.stop()


def test_map_in_pandas_equals_single_process_bit_for_bit(spark, tmp_path):
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(loc=c, size=(10 * ALIGN, 6)) for c in (-2.0, 0.5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(4, covariance_type="full", random_state=0).fit(X)
    X[7, 2] = np.nan
    path = str(tmp_path / "m.onnx")
    onnx.save(to_onnx(from_sklearn(gm), outputs=("label", "responsibilities", "log_likelihood")), path)
    cols = [f"f{i}" for i in range(6)]
    sdf = spark.createDataFrame(pd.DataFrame(X, columns=cols), schema=", ".join(f"{c} double" for c in cols))
    assert sdf.rdd.getNumPartitions() == 2  # local[2]: two partitions of 640 rows, each starting at a multiple of ALIGN
    schema = gd.spark_schema(path)
    out = sdf.mapInPandas(functools.partial(gd.score_pandas_batches, path), schema).toPandas()
    ref = score(path, X)
    assert len(out) == len(X)
    assert np.array_equal(out["label"].to_numpy(), ref["label"])
    assert np.array_equal(out["log_likelihood"].to_numpy(), ref["log_likelihood"], equal_nan=True)
    resp = out[[f"responsibilities_{j}" for j in range(4)]].to_numpy()
    assert np.array_equal(resp, ref["responsibilities"], equal_nan=True)
    assert out["label"][7] == -1 and np.isnan(out["log_likelihood"][7])
