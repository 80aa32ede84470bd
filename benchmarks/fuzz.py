"""Long-running fuzz of gmmnet's model and data loaders (the test suite runs a 5,200-input slice).

    python benchmarks/fuzz.py                      # 60 s per format, seed 0
    python benchmarks/fuzz.py --seconds 600 --seed 7 --formats .pkl .skops

Same mutations and seeds as tests/test_io_fuzz.py.  Every mutated file must load or raise a
GmmnetError with a one-line message; anything else (another exception type, a payload's canary
file appearing, a loader writing files) stops the run and saves the input under --keep for
reproduction; so does an input whose load pushes memory more than MAX_GROWTH_MIB above where
it started (measured per input: tests/test_io_fuzz.py's PeakMemory).  Prints the outcome counts
and inputs per second for every format.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_io_fuzz as tf  # noqa: E402 - the mutators live with the test

from gmmnet import io as gio  # noqa: E402
from gmmnet.errors import GmmnetError  # noqa: E402

MODEL_FORMATS = list(tf.N_PER_FORMAT)
DATA_FORMATS = list(tf.N_PER_DATA_FORMAT)


def mutate(rng: random.Random, suffix: str, pool: list[bytes]) -> bytes:
    seed = rng.choice(pool)
    if suffix == ".skops" and rng.random() < 0.7:
        return tf._mutate_zip_member(rng, seed, pool)
    if suffix == ".json" and rng.random() < 0.4:
        return tf._mutate_json_tokens(rng, seed)
    return tf._mutate(rng, seed, pool)


def fuzz_format(suffix: str, pool: list[bytes], seconds: float, seed: int, work: Path, canary: Path,
                keep: Path) -> tuple[Counter, int, float]:
    rng = random.Random(f"gmmnet-fuzz{suffix}-{seed}")
    target = work / f"input{suffix}"
    outcomes: Counter = Counter()
    start = time.perf_counter()
    n = 0
    with tf.PeakMemory() as mem:
        while time.perf_counter() - start < seconds:
            data = mutate(rng, suffix, pool)
            target.write_bytes(data)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if suffix in DATA_FORMATS:
                    n_features = rng.choice((None, 1, 3))
                    result, growth = mem.measure(lambda: gio.load_data(target, n_features=n_features))
                else:
                    result, growth = mem.measure(lambda: gio.load_model(target))
            if isinstance(result, GmmnetError):
                outcome = type(result).__name__
                if not str(result) or "\n" in str(result):
                    return _fail(keep, suffix, n, data, f"message is not one line: {result!r}")
            elif isinstance(result, Exception):  # exactly what the fuzzer looks for
                return _fail(keep, suffix, n, data, f"{type(result).__name__}: {result}")
            else:
                outcome = "loaded"
            if growth > tf.MAX_GROWTH_MIB:
                return _fail(keep, suffix, n, data, f"memory grew by {growth} MiB (limit {tf.MAX_GROWTH_MIB})")
            if canary.exists():
                return _fail(keep, suffix, n, data, "a payload ran (canary file created)")
            extra = sorted(p.name for p in work.iterdir() if p != target)
            if extra:
                return _fail(keep, suffix, n, data, f"a loader wrote files: {extra}")
            outcomes[outcome] += 1
            n += 1
    return outcomes, n, time.perf_counter() - start


def _fail(keep: Path, suffix: str, n: int, data: bytes, why: str):
    keep.mkdir(parents=True, exist_ok=True)
    path = keep / f"failing-{n}{suffix}"
    path.write_bytes(data)
    print(f"FAIL {suffix} input #{n} (saved as {path}): {why}", file=sys.stderr)
    sys.exit(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="time per format (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="mutation seed (default 0)")
    ap.add_argument("--formats", nargs="+", default=MODEL_FORMATS + DATA_FORMATS,
                    choices=MODEL_FORMATS + DATA_FORMATS, help="formats to fuzz (default: all)")
    ap.add_argument("--keep", type=Path, default=Path("fuzz-failures"), help="where failing inputs are saved")
    args = ap.parse_args(argv)
    total = 0
    with tempfile.TemporaryDirectory(prefix="gmmnet-fuzz-") as tmp:
        tmp = Path(tmp)
        canary = tmp / "canary"
        counter = iter(range(10**6))
        model_seeds = tf.make_seeds(canary, lambda name: Path(tempfile.mkdtemp(prefix=f"{name}{next(counter)}-", dir=tmp)))
        data_seeds = tf._data_seeds()
        for suffix in args.formats:
            work = tmp / f"work{suffix}"
            work.mkdir()
            pool = model_seeds[suffix] if suffix in model_seeds else data_seeds[suffix]
            outcomes, n, elapsed = fuzz_format(suffix, pool, args.seconds, args.seed, work, canary, args.keep)
            total += n
            summary = ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
            print(f"{suffix:8s} {n:7d} inputs in {elapsed:6.1f} s ({n / elapsed:7.0f}/s): {summary}")
    print(f"ok: {total} mutated inputs, every one loaded or raised a one-line GmmnetError")
    return 0


if __name__ == "__main__":
    sys.exit(main())
