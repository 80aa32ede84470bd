"""Seeded byte-mutation fuzzing of every model loader in gmmnet.io.

Each mutated file must either load or raise a GmmnetError subclass: never another exception
type, never a crash, never more than MAX_GROWTH_MIB of memory for one input (measured per
input, see PeakMemory), and never a side effect (the canary a payload would create stays
absent and the work folder holds only the files the test wrote).  Deterministic: a fixed seed per
format, so a failure names an exact reproducible input.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import warnings
import zipfile

import joblib
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from gmmnet import io as gio
from gmmnet.errors import GmmnetError
from gmmnet.formats.sklearn import from_sklearn

#: Mutated inputs per model format (total well over 2,000), and per data format (load_data).
N_PER_FORMAT = {".pkl": 1200, ".joblib": 1200, ".skops": 800, ".json": 1000, ".onnx": 1000}
N_PER_DATA_FORMAT = {".npy": 400, ".csv": 400}


class _Payload:
    """Pickles to a call of ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _onnx_seed() -> bytes:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    b = numpy_helper.from_array(np.ones(3, dtype=np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W", "B"], ["Y"], name="c0/gemm"), helper.make_node("Abs", ["Y"], ["Z"], name="c0/abs")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, 3])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="gmmnet", value="fuzz seed")
    return model.SerializeToString()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, list[bytes]]:
    return make_seeds(tmp_path_factory.getbasetemp() / "fuzz-canary", tmp_path_factory.mktemp)


def make_seeds(canary, mktemp) -> dict[str, list[bytes]]:
    """Valid files of every format (and payload-carrying ones) to mutate; ``mktemp(name)`` gives a fresh folder.

    Also used by benchmarks/fuzz.py for long runs.
    """
    import skops.io as sio

    from gmmnet.formats.sklearn import from_sklearn

    x = load_iris().data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(n_components=2, covariance_type="full", random_state=0).fit(x)
        bgm = BayesianGaussianMixture(n_components=2, covariance_type="diag", random_state=0, max_iter=50).fit(x)
        pipe = make_pipeline(StandardScaler(), PCA(3, whiten=True), GaussianMixture(2, random_state=0)).fit(x)
        refused = make_pipeline(Normalizer(), GaussianMixture(2, random_state=0)).fit(x)
    bgm.feature_names_in_ = np.array(["a", "b", "c", "d"], dtype=object)  # an object array (nested pickle in joblib)
    evil = GaussianMixture(n_components=2, random_state=0).fit(x)
    evil.means_ = _Payload(os.system, (f"touch {canary}",))

    def joblib_bytes(obj, compress=0):
        d = mktemp("seed")
        p = d / "m.joblib"
        joblib.dump(obj, p, compress=compress)
        return p.read_bytes()

    return {
        ".pkl": [pickle.dumps(gm, protocol=4), pickle.dumps(bgm, protocol=2), pickle.dumps(gm, protocol=5),
                 pickle.dumps(evil, protocol=4), pickle.dumps(pipe, protocol=4), pickle.dumps(refused, protocol=2)],
        ".joblib": [joblib_bytes(gm), joblib_bytes(bgm), joblib_bytes(gm, compress=3), joblib_bytes(evil),
                    joblib_bytes(pipe, compress=3), joblib_bytes(refused)],
        ".skops": [sio.dumps(gm), sio.dumps(bgm), sio.dumps(pipe), sio.dumps(refused)],
        ".json": [from_sklearn(gm).model_dump_json().encode(), from_sklearn(bgm).model_dump_json(indent=1).encode()],
        ".onnx": [_onnx_seed()],
    }


#: How far one mutated input may push memory above where its load started (the seeds load in a few MiB).
MAX_GROWTH_MIB = 256


def _status_mib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) // 1024


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset this process's peak RSS (VmHWM) to its current RSS
        return True
    except OSError:
        return False


class PeakMemory:
    """Memory growth of one load: how far its peak rose above the memory in use when it started.

    On Linux the process's peak RSS is reset before each load (/proc/self/clear_refs), so the
    figure counts every allocation, numpy's and C++ libraries' included; elsewhere tracemalloc's
    peak (Python and numpy allocations) stands in.  While measuring, the address space is
    limited to 4 GiB above its size at the start, so a blow-up fails as MemoryError instead of
    exhausting the machine.
    """

    def __enter__(self) -> PeakMemory:
        import resource

        self.linux = _can_reset_peak()
        self._limit = None
        if self.linux:
            self._limit = resource.getrlimit(resource.RLIMIT_AS)
            cap = _status_mib("VmSize") * 2**20 + (4 << 30)
            if self._limit[1] == resource.RLIM_INFINITY or cap < self._limit[1]:
                resource.setrlimit(resource.RLIMIT_AS, (cap, self._limit[1]))
        return self

    def __exit__(self, *exc) -> None:
        import resource

        if self._limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, self._limit)

    def measure(self, load):
        """Run ``load()``; return (its outcome: a value or the exception it raised, growth in MiB)."""
        import tracemalloc

        if self.linux:
            _can_reset_peak()
            before = _status_mib("VmRSS")
        else:
            tracemalloc.start()
        try:
            outcome = load()
        except Exception as exc:  # noqa: BLE001 - the caller sorts outcomes
            outcome = exc
        if self.linux:
            return outcome, _status_mib("VmHWM") - before
        peak = tracemalloc.get_traced_memory()[1] >> 20
        tracemalloc.stop()
        return outcome, peak


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(7)
        n = len(buf)
        if n == 0:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            continue
        if op == 0:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncation
            del buf[rng.randrange(n):]
        elif op == 2:  # insertion of random bytes
            i = rng.randrange(n + 1)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif op == 3:  # splicing with another seed (or itself)
            other = rng.choice(pool)
            i, j = rng.randrange(n + 1), rng.randrange(len(other) + 1)
            buf = buf[:i] + bytearray(other[j:])
        elif op == 4:  # interesting values
            i = rng.randrange(n)
            buf[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x01, ord("."), ord("/"), ord("R"), ord("b"), ord("c")))
        elif op == 5:  # delete a chunk
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, 64)]
        else:  # duplicate a chunk
            i = rng.randrange(n)
            chunk = buf[i:i + rng.randint(1, 64)]
            j = rng.randrange(n + 1)
            buf[j:j] = chunk
    return bytes(buf)


def _mutate_zip_member(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """Mutate one member of a zip archive (a .skops file) and re-zip, so the CRC still matches
    and the mutation reaches skops's schema and array readers, not just the zip layer."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    k = rng.randrange(len(members))
    if rng.random() < 0.6:  # prefer schema.json, where the types and structure live
        k = next((i for i, (info, _) in enumerate(members) if info.filename == "schema.json"), k)
    info, content = members[k]
    if info.filename == "schema.json" and rng.random() < 0.5:
        content = _mutate_json_tokens(rng, content)
    else:
        content = _mutate(rng, content, [content])
    members[k] = (info, content)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, content in members:
            zf.writestr(info.filename, content)
    return out.getvalue()


_TOKENS = [b'"ObjectNode"', b'"DictNode"', b'"ListNode"', b'"NdArrayNode"', b'"JsonNode"', b'"TupleNode"',
           b'"FunctionNode"', b'"TypeNode"', b'"builtins"', b'"numpy"', b'"posix"', b'"system"', b'"eval"',
           b'"dict"', b'"list"', b'"str"', b'"int"', b'null', b'true', b'0', b'-1', b'1e308', b'"__class__"',
           b'"__module__"', b'"__loader__"', b'"content"', b'[]', b'{}', b'"f8"', b'"O"']


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|null|true|false')


def _mutate_json_tokens(rng: random.Random, content: bytes) -> bytes:
    """Replace JSON strings/numbers/literals with other tokens: the JSON mostly stays valid."""
    for _ in range(rng.randint(1, 3)):
        spans = [m.span() for m in _JSON_TOKEN.finditer(content)]
        if not spans:
            break
        i, j = rng.choice(spans)
        content = content[:i] + rng.choice(_TOKENS) + content[j:]
    return content


def _load_as_cli(target):
    """What the CLI does with a pickle: its estimators as stand-ins, a mixture's converted to the IR,
    anything else materialized."""
    obj = gio.load_model(target, fitted_state=True)
    if gio.is_mixture_state(obj):
        return from_sklearn(obj)
    return gio.materialize(obj, target) if isinstance(obj, gio.FittedState) else obj


@pytest.mark.parametrize("suffix", list(N_PER_FORMAT))
def test_mutated_files_load_or_raise_gmmnet_errors(suffix, seeds, tmp_path, tmp_path_factory):
    rng = random.Random(f"gmmnet-fuzz{suffix}")
    pool = seeds[suffix]
    work = tmp_path / "work"
    work.mkdir()
    target = work / f"model{suffix}"
    canary = tmp_path_factory.getbasetemp() / "fuzz-canary"
    outcomes: dict[str, int] = {}
    worst = 0
    with PeakMemory() as mem:
        for i in range(N_PER_FORMAT[suffix]):
            seed = rng.choice(pool)
            if suffix == ".skops" and rng.random() < 0.7:
                data = _mutate_zip_member(rng, seed, pool)
            elif suffix == ".json" and rng.random() < 0.4:
                data = _mutate_json_tokens(rng, seed)
            else:
                data = _mutate(rng, seed, pool)
            target.write_bytes(data)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # odd inputs of a pickle take the CLI's road: stand-ins, converted or materialized
                load = _load_as_cli if suffix in (".pkl", ".joblib") and i % 2 else gio.load_model
                result, growth = mem.measure(lambda: load(target))
            worst = max(worst, growth)
            if isinstance(result, Exception) and not isinstance(result, GmmnetError) or growth > MAX_GROWTH_MIB:
                bad = work.parent / f"failing{suffix}"
                bad.write_bytes(data)
                what = f"raised {type(result).__name__}: {result}" if isinstance(result, Exception) else "loaded"
                pytest.fail(f"{suffix} input #{i} (saved as {bad}) {what}; memory grew by {growth} MiB")
            if isinstance(result, GmmnetError):
                outcome = type(result).__name__
                assert str(result) and "\n" not in str(result), f"{suffix} input #{i}: message must be one line: {result!r}"
            else:
                outcome = "loaded"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            assert not canary.exists(), f"{suffix} input #{i} ran a payload"
    assert sorted(p.name for p in work.iterdir()) == [target.name], "a loader wrote files"
    # the mutations reach past the first byte: both successes and several error kinds occur
    assert sum(outcomes.values()) == N_PER_FORMAT[suffix]
    assert len(outcomes) >= 2, outcomes


def test_memory_growth_of_one_load_is_seen():
    """The per-input measure sees one input's blow-up (ru_maxrss, the process's lifetime peak, cannot)."""
    with PeakMemory() as mem:
        _, small = mem.measure(lambda: np.zeros(1000).sum())
        _, big = mem.measure(lambda: np.ones(64 << 17).sum())  # 64 MiB, freed on return
    assert small < 16 and 60 <= big < 80


def test_fuzz_budget_is_at_least_2000():
    assert sum(N_PER_FORMAT.values()) >= 2000


def _data_seeds() -> dict[str, list[bytes]]:
    def npy(arr):
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    rng = np.random.default_rng(0)
    return {
        ".npy": [npy(rng.normal(size=(20, 3))), npy(np.arange(10, dtype=np.int32)), npy(np.zeros((2, 3), np.float32))],
        ".csv": [b"a,b,c\n1,2,3\n4.5,nan,-inf\n", b"# comment\n1,2,3\n\n3,4,5\n", b'"x","y","z"\n1e3, 2 ,-0.5\n'],
    }


@pytest.mark.parametrize("suffix", list(N_PER_DATA_FORMAT))
def test_mutated_data_files_load_or_raise_gmmnet_errors(suffix, tmp_path):
    rng = random.Random(f"gmmnet-fuzz-data{suffix}")
    pool = _data_seeds()[suffix]
    target = tmp_path / f"data{suffix}"
    outcomes: dict[str, int] = {}
    with PeakMemory() as mem:
        for i in range(N_PER_DATA_FORMAT[suffix]):
            data = _mutate(rng, rng.choice(pool), pool)
            target.write_bytes(data)
            n_features = rng.choice((None, 1, 3))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x, growth = mem.measure(lambda: gio.load_data(target, n_features=n_features))
            if isinstance(x, Exception) and not isinstance(x, GmmnetError) or growth > MAX_GROWTH_MIB:
                pytest.fail(f"{suffix} input #{i} {data[:200]!r}: {type(x).__name__}: {x}; memory grew by {growth} MiB")
            if isinstance(x, GmmnetError):
                outcome = type(x).__name__
                assert str(x) and "\n" not in str(x)
            else:
                assert x.dtype == np.float64 and x.ndim == 2 and x.size > 0
                outcome = "loaded"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert "loaded" in outcomes and len(outcomes) >= 2, outcomes


def test_long_run_script_smoke(tmp_path, capsys):
    """benchmarks/fuzz.py (the long run) works: a fraction of a second per format."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz.py"
    spec = importlib.util.spec_from_file_location("gmmnet_benchmarks_fuzz", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--seconds", "0.2", "--formats", ".json", ".onnx", ".csv", "--keep", str(tmp_path / "keep")]) == 0
    out = capsys.readouterr().out
    assert out.count(" inputs in ") == 3 and "ok: " in out
    assert not (tmp_path / "keep").exists()
