"""Peak memory of `gmmnet score`, and the chunk-size sweep behind gmmnet.score.CHUNK_BYTES.

    python benchmarks/score_memory.py                 # 2M rows x 128 features, K=64 full: peak RSS
    python benchmarks/score_memory.py --sweep         # rows/s against chunk size, several model sizes
    python benchmarks/score_memory.py --rows 20000 --features 8 --components 4   # a quick run

The memory run writes a float32 .npy of the requested size (2M x 128 = 1 GiB) and a K-component
full-covariance GMM as float32 ONNX into a temporary folder (or --workdir), then runs
`gmmnet score MODEL DATA -o OUT.npy` in a child process and reads the child's peak resident set
size (VmHWM, which counts memory-mapped file pages too) as the child reports it at its end.  Results are
printed and, with --json, written as JSON.  Figures quoted in docs/scoring.md come from here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_model(n_features: int, n_components: int, seed: int = 0):
    """A fitted full-covariance GaussianMixture on synthetic clusters (few EM steps: only its shape matters)."""
    import warnings

    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    n = max(20 * n_components, 4 * n_features * 4)
    centers = rng.normal(scale=3.0, size=(n_components, n_features))
    X = centers[rng.integers(n_components, size=n)] + rng.normal(size=(n, n_features))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(n_components, covariance_type="full", max_iter=2, random_state=seed).fit(X), centers


def write_data(path: str, rows: int, n_features: int, centers: np.ndarray, seed: int = 1, block: int = 65536) -> None:
    """A float32 .npy written block by block (never the whole array in memory)."""
    from numpy.lib.format import open_memmap

    rng = np.random.default_rng(seed)
    out = open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, n_features))
    for i in range(0, rows, block):
        n = min(block, rows - i)
        out[i:i + n] = centers[rng.integers(len(centers), size=n)] + rng.normal(size=(n, n_features))
    out.flush()
    del out


_CHILD = """
import sys
from gmmnet.cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(f"VmHWM_KIB={hwm}")
sys.exit(rc)
"""
_BASELINE = """
import gmmnet.score, gmmnet.cli, onnxruntime, onnx, numpy
with open("/proc/self/status") as f:
    print("VmHWM_KIB=" + next(line.split()[1] for line in f if line.startswith("VmHWM:")))
"""


def peak_rss_of(code: str, argv: list[str]) -> tuple[int, float, str]:
    """Run ``python -c code argv``; return (its peak RSS in bytes, wall seconds, output).

    The peak is the child's own VmHWM, read by the child at its end: unlike wait4's ru_maxrss
    it does not count the pages of this (large) parent that the child shared before exec.
    """
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    out = res.stdout.decode()
    if res.returncode:
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(argv)}\n{out}")
    hwm = next(int(line.split("=")[1]) for line in out.splitlines() if line.startswith("VmHWM_KIB="))
    text = "\n".join(line for line in out.splitlines() if not line.startswith("VmHWM_KIB="))
    return hwm * 1024, wall, text


def memory_run(args) -> dict:
    import onnx

    from gmmnet import from_sklearn
    from gmmnet.formats.onnx import to_onnx

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        gm, centers = make_model(args.features, args.components)
        model_path = os.path.join(tmp, "model.onnx")
        onnx.save(to_onnx(from_sklearn(gm), dtype="float32"), model_path)
        data_path = os.path.join(tmp, "data.npy")
        t0 = time.perf_counter()
        write_data(data_path, args.rows, args.features, centers)
        gen = time.perf_counter() - t0
        out_path = os.path.join(tmp, "out.npy")
        cmd = ["score", model_path, data_path, "-o", out_path, "--no-progress"]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        # baseline: the interpreter with gmmnet, numpy and onnxruntime imported, nothing scored
        base_rss = peak_rss_of(_BASELINE, [])[0] if args.baseline else 0
        rss, wall, text = peak_rss_of(_CHILD, cmd)
        ll = np.load(out_path, mmap_mode="r")
        result = {
            "rows": args.rows, "features": args.features, "components": args.components,
            "neurons": args.components * args.features,
            "data_bytes": os.path.getsize(data_path), "data_seconds": round(gen, 1),
            "peak_rss_bytes": rss, "peak_rss_gib": round(rss / 2**30, 3),
            "baseline_rss_gib": round(base_rss / 2**30, 3),
            "seconds": round(wall, 1), "rows_per_second": round(args.rows / wall),
            "output_rows": int(ll.shape[0]), "output_finite": bool(np.isfinite(ll[:1000]).all()),
            "cli": text.strip(), "target_gib": 1.5, "cores": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
        }
        del ll
    return result


def sweep(args) -> dict:
    """rows/s against rows per chunk, one single-threaded session (cache effects not hidden by threading).

    Chunk sizes are measured interleaved, round after round, and the best round is kept: the
    machine is shared and noisy, and interleaving spreads the noise over all sizes alike.
    """
    from gmmnet import from_sklearn
    from gmmnet.formats.onnx import to_onnx
    from gmmnet.score import ALIGN, Scorer

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows_list = [int(v) for v in args.rows_list.split(",")]
    table = []
    for K, d in sizes:
        gm, centers = make_model(d, K)
        scorer = Scorer(to_onnx(from_sklearn(gm), dtype="float32").SerializeToString(),
                        outputs=["label", "responsibilities", "log_likelihood"])
        rng = np.random.default_rng(0)
        total = max(2 * max(rows_list), min(400_000, int(args.work / (K * d * d))))  # similar work for every size
        total = -(-total // ALIGN) * ALIGN
        X = (centers[rng.integers(K, size=total)] + rng.normal(size=(total, d))).astype(np.float32)
        best = {rows: float("inf") for rows in rows_list}
        for _ in range(args.repeats):
            for rows in rows_list:
                t0 = time.perf_counter()
                for i in range(0, total, rows):
                    scorer(X[i:i + rows], i)
                best[rows] = min(best[rows], time.perf_counter() - t0)
        top = max(total / t for t in best.values())
        for rows in rows_list:
            act_bytes = rows * K * d * 4
            rate = total / best[rows]
            table.append({"K": K, "d": d, "rows": rows, "activation_mb": round(act_bytes / 2**20, 3),
                          "rows_per_second": round(rate), "relative": round(rate / top, 3),
                          "default_rows": scorer.default_batch_size()})
            print(f"K={K:3d} d={d:4d} rows/chunk={rows:6d} activations={act_bytes / 2**20:8.2f} MB "
                  f"{rate:12,.0f} rows/s  {rate / top:6.1%} of best   (default rows: {scorer.default_batch_size()})",
                  flush=True)
    return {"sweep": table, "cores": os.cpu_count(), "threads_per_session": 1, "repeats": args.repeats}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--features", type=int, default=128)
    ap.add_argument("--components", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=None, help="passed to gmmnet score (default: its own)")
    ap.add_argument("--threads", type=int, default=None, help="passed to gmmnet score (default: its own)")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip measuring the bare interpreter's RSS (the test suite's smoke run)")
    ap.add_argument("--workdir", default=None, help="folder for the temporary data (default: system temp)")
    ap.add_argument("--sweep", action="store_true", help="measure rows/s against chunk size instead")
    ap.add_argument("--repeats", type=int, default=5, help="sweep: best of this many interleaved rounds")
    ap.add_argument("--sizes", default="8x16,32x64,64x128", help="sweep: KxD model sizes (default: %(default)s)")
    ap.add_argument("--rows-list", default="64,128,256,512,1024,4096,16384,65536",
                    help="sweep: rows per chunk to try (default: %(default)s)")
    ap.add_argument("--work", type=float, default=1e10, help="sweep: multiply-adds per measurement (sets rows)")
    ap.add_argument("--json", help="also write the results here as JSON")
    args = ap.parse_args(argv)
    result = sweep(args) if args.sweep else memory_run(args)
    if not args.sweep:
        print(json.dumps(result, indent=2))
        verdict = "within" if result["peak_rss_gib"] < result["target_gib"] else "OVER"
        print(f"peak RSS {result['peak_rss_gib']:.3f} GiB for {args.rows:,} x {args.features} rows, K={args.components}: "
              f"{verdict} the {result['target_gib']} GB target")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
