"""Peak memory of loading a compressed joblib model, measured in a child process.

    python benchmarks/load_memory.py                  # a 1000 MiB stream (within the 1 GiB cap)
    python benchmarks/load_memory.py --mib 128 --tree /path/to/other/checkout

Writes a zlib-compressed joblib file of a fitted-looking spherical GaussianMixture whose
means_ hold --mib MiB of zeros (the file itself is about 1 MB), then loads it with
gmmnet.io.load_model in a child process and reports the child's resident memory before the
load (VmRSS, after importing what loading imports) and its peak after it (VmHWM): the growth
is what loading cost.  With --tree the
child imports gmmnet from that checkout instead (to compare two versions side by side).
Figures quoted in docs/security.md come from here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import sys
import joblib, sklearn.mixture  # what loading imports: measured apart from the load itself
from gmmnet import io
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) * 1024
before = status("VmRSS")
model = io.load_model(sys.argv[1])
print(before, status("VmHWM"), model.means_.nbytes)
"""


def write_model(path: str, mib: int) -> int:
    """A joblib zlib file whose stream holds ``mib`` MiB of array data; returns the file's size."""
    import joblib
    from sklearn.mixture import GaussianMixture

    d = (mib << 20) // 8
    gm = GaussianMixture(1, covariance_type="spherical")
    gm.weights_ = np.ones(1)
    gm.means_ = np.zeros((1, d))
    gm.covariances_ = np.ones(1)
    gm.precisions_cholesky_ = np.ones(1)
    gm.precisions_ = np.ones(1)
    gm.converged_, gm.n_iter_, gm.lower_bound_, gm.n_features_in_ = True, 1, 0.0, d
    joblib.dump(gm, path, compress=3)
    return os.path.getsize(path)


def measure(path: str, tree: Path = ROOT) -> dict:
    """Load ``path`` in a child process importing gmmnet from ``tree``; its memory before and at peak."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    res = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True, text=True, env=env, cwd=tree)
    if res.returncode:
        raise RuntimeError(f"loading failed: {res.stderr.strip().splitlines()[-1]}")
    before, peak, nbytes = map(int, res.stdout.split())
    return {"rss_before": before, "peak": peak, "growth": peak - before, "array_bytes": nbytes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1000, help="MiB of array data in the stream (default 1000)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout whose gmmnet the child imports")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.joblib")
        size = write_model(path, args.mib)
        r = measure(path, args.tree) | {"file_bytes": size, "tree": str(args.tree)}
    mib = 1 << 20
    print(f"{size / mib:.1f} MiB file, {r['array_bytes'] / mib:.0f} MiB of arrays: resident {r['rss_before'] / mib:.0f} MiB "
          f"before the load, peak {r['peak'] / mib:.0f} MiB, growth {r['growth'] / mib:.0f} MiB "
          f"({r['growth'] / r['array_bytes']:.2f}x the arrays)")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
