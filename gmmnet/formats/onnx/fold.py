"""An input transform z = A x + c folded into the first layer of a graph (docs/onnx-graph.md, "Input transforms").

A neuron (w, b) on z is the neuron (Aᵀw, b + wᵀc) on x: one Linear+Abs still, now in raw units.
The exporters centre before they fold, in z-space: with a preimage μ' of each centre μ
(A μ' + c = μ, by least squares), ``w·(z − μ) = (Aᵀw)·(x − μ') − w·r`` where r = μ − c − A μ' is
the residual (zero when μ lies in the range of A, as it does for every scaler and PCA).  So a
float32 graph subtracts μ' (split in high and low parts) from the raw input before the product,
as it does without a transform, and keeps what centering won.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...errors import InvalidModelError
from ...limits import check_bytes

__all__ = ["Fold"]

#: A residual ‖r‖ at most this fraction of ‖μ − c‖ + ‖A‖‖μ'‖ is the rounding of the preimage, not a real offset.
RESIDUAL_RTOL = 1e-12


@dataclass(frozen=True)
class Fold:
    """z = A x + c as the exporters use it: A (k, d_in), c (k,), and A's diagonal when A is one."""

    A: np.ndarray
    c: np.ndarray
    diagonal: np.ndarray | None  # (d_in,) when A is square, diagonal, with no zero on the diagonal
    transform: object  # the IR's InputTransform (for the metadata)

    @classmethod
    def of(cls, transform) -> "Fold | None":
        if transform is None:
            return None
        if transform.matrix is None:  # the exporters fold a dense A; a scaler's is stored as its diagonal
            k = transform.n_outputs
            check_bytes(8.0 * k * k, f"the input transform as a dense {k} × {k} matrix")
        A = np.asarray(transform.dense(), dtype=np.float64)
        c = np.asarray(transform.offset, dtype=np.float64)
        diag = None
        if A.shape[0] == A.shape[1]:
            dg = np.diagonal(A)
            if np.count_nonzero(A) == np.count_nonzero(dg) and np.all(dg != 0):
                diag = dg.copy()
        return cls(A=A, c=c, diagonal=diag, transform=transform)

    @property
    def n_inputs(self) -> int:
        return int(self.A.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.A.shape[0])

    def preimage(self, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(μ', r): centres on x (K, d_in) with A μ' + c = μ − r, and the residuals r (K, k), zero where negligible."""
        diff = np.atleast_2d(means) - self.c
        if self.diagonal is not None:
            return diff / self.diagonal, np.zeros_like(diff)
        sol, *_ = np.linalg.lstsq(self.A, diff.T, rcond=None)
        pre = np.ascontiguousarray(sol.T)
        res = diff - pre @ self.A.T
        scale = np.linalg.norm(diff, axis=1) + np.linalg.norm(self.A, 2) * np.linalg.norm(pre, axis=1)
        res[np.linalg.norm(res, axis=1) <= RESIDUAL_RTOL * scale] = 0.0
        return pre, res

    @cached_property
    def pinv(self) -> np.ndarray:
        """A⁺, shape (d_in, k)."""
        return np.linalg.pinv(self.A)

    def coordinate_std(self, eigenvectors: np.ndarray | None, eigenvalues: np.ndarray) -> np.ndarray:
        """√diag(A⁺ Σ A⁺ᵀ): the spread of one Gaussian along each raw feature (for the error estimates)."""
        if self.diagonal is not None and eigenvectors is None:
            return np.sqrt(eigenvalues) / np.abs(self.diagonal)
        pinv = self.pinv
        B = pinv * np.sqrt(eigenvalues)[None, :] if eigenvectors is None else (pinv @ eigenvectors.T) * np.sqrt(eigenvalues)
        return np.sqrt(np.einsum("ji,ji->j", B, B))

    def metadata(self) -> str:
        """The transform as IR JSON (A, c and the steps), for ``metadata_props["input_transform"]``."""
        return self.transform.model_dump_json()


def check_folded(arrays: dict[str, np.ndarray], dtype: str) -> None:
    """InvalidModelError unless the folded weights and centres fit ``dtype``."""
    hi = float(np.finfo(np.dtype(dtype)).max)
    for name, a in arrays.items():
        if a is not None and a.size and not np.max(np.abs(a)) <= hi:
            raise InvalidModelError(
                f"the input transform folded into the first layer gives {name} of size {np.max(np.abs(a)):.3g}, "
                f"outside the {dtype} range" + (" (use --dtype float64 or --compute float64)" if dtype != "float64" else ""))
