"""torch backend: cuBLAS float32 GEMMs and the canonical score on a GPU.

Imported lazily (torch is an optional extra). TF32 is switched off: the fast
path's error margin is the float32 one (services/scorer/engine/canonical.py). The
canonical score is computed on the device by the very operations of the
numpy definition (exact float64 products, the fixed pairwise tree of float64
additions, each a separate correctly rounded IEEE operation), so its bits are
the CPU's; tests/unit/test_scoring_backends.py checks it on whatever device
is present.

Tiles are processed as one GEMM when off the diagonal and in strips of
``DIAGONAL_STRIP`` rows on it (each strip from its own diagonal, so the lower
half is never computed); candidates are found and filtered on the device and
only they travel back. The same class runs on torch's CPU device, which is
how CI without a GPU exercises this code when torch is installed.
"""

from __future__ import annotations

import numpy as np

from services.scorer.engine.backends import ImpostorJob
from services.scorer.engine.canonical import Embeddings, tree_width

DIAGONAL_STRIP = 4096
CANONICAL_PAIRS = 1 << 16


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _strict_float32(torch) -> None:
    """No TF32 anywhere: float32 products must be IEEE float32 products."""
    torch.set_float32_matmul_precision("highest")
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except (AttributeError, RuntimeError):  # newer torch: the precision setting above rules
        pass


class TorchBackend:
    precision = "fp32"  # the int8 search is CPU-only (docs/scoring.md)
    precision_reason = "float32 GEMM (the GPU backend has no int8 path)"

    def __init__(self, device: str = "cuda") -> None:
        import torch

        _strict_float32(torch)
        self._torch = torch
        self.device = torch.device(device)
        self.name = "gpu" if self.device.type == "cuda" else f"torch-{self.device.type}"
        self._uploads: dict[int, tuple[np.ndarray, object]] = {}

    # Uploads are cached by array identity; the cache holds the array, so an
    # id is never reused while its tensor is alive. New embeddings (another
    # submission) empty the cache, so a long-lived worker holds one set only.
    def _unit(self, emb: Embeddings):
        cached = self._uploads.get(id(emb.unit))
        if cached is None or cached[0] is not emb.unit:
            self._uploads.clear()
        return self._on_device(emb.unit)

    def _on_device(self, array: np.ndarray):
        entry = self._uploads.get(id(array))
        if entry is None or entry[0] is not array:
            entry = (array, self._torch.from_numpy(np.ascontiguousarray(array)).to(self.device))
            self._uploads[id(array)] = entry
        return entry[1]

    def _index(self, array: np.ndarray):
        return self._torch.from_numpy(np.asarray(array, dtype=np.int64)).to(self.device)

    def fast_scores(self, emb: Embeddings, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        unit = self._unit(emb)
        scores = unit[self._index(rows)] @ unit[self._index(cols)].T
        return scores.cpu().numpy()

    def canonical(self, emb: Embeddings, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        unit = self._unit(emb)
        first_t, second_t = self._index(first), self._index(second)
        return self._canonical(unit, first_t, second_t).cpu().numpy()

    def _canonical(self, unit, first, second):
        torch = self._torch
        dim = unit.shape[1]
        width = tree_width(dim)
        parts = []
        for start in range(0, first.shape[0], CANONICAL_PAIRS):
            a = unit[first[start:start + CANONICAL_PAIRS]].to(torch.float64)
            b = unit[second[start:start + CANONICAL_PAIRS]].to(torch.float64)
            x = a * b  # exact: float32 x float32 fits float64
            if width != dim:
                x = torch.nn.functional.pad(x, (0, width - dim))
            while x.shape[1] > 1:
                half = x.shape[1] // 2
                x = x[:, :half] + x[:, half:]
            parts.append(x[:, 0])
        if not parts:
            return torch.empty(0, dtype=torch.float64, device=self.device)
        return torch.cat(parts)

    def impostor_candidates(
        self, emb: Embeddings, job: ImpostorJob
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        torch = self._torch
        unit = self._unit(emb)
        rows_u, cols_u = self._on_device(job.rows), self._on_device(job.cols)
        row_bits_u, col_bits_u = self._on_device(job.row_bits), self._on_device(job.col_bits)
        identity = self._on_device(job.identity)
        (r0, r1), (c0, c1) = job.row_span, job.col_span
        row_images, col_images = rows_u[r0:r1], cols_u[c0:c1]
        row_block = unit[row_images]
        col_block = row_block if job.upper else unit[col_images]
        floor_min = float(job.floor_min)
        strip = DIAGONAL_STRIP if job.upper else r1 - r0
        found_r, found_c, found_v = [], [], []
        for start in range(0, r1 - r0, strip):
            stop = min(start + strip, r1 - r0)
            first_col = start if job.upper else 0
            scores = row_block[start:stop] @ col_block[first_col:].T
            hit_rows = torch.nonzero(scores.amax(dim=1) >= floor_min).squeeze(1)
            if hit_rows.numel() == 0:
                continue
            hits = scores[hit_rows]
            rr, cc = torch.nonzero(hits >= floor_min, as_tuple=True)
            found_v.append(hits[rr, cc])
            found_r.append(hit_rows[rr] + start)
            found_c.append(cc + first_col)
            del scores, hits
        if not found_r:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty, np.empty(0, dtype=np.float64)
        r, c, values = torch.cat(found_r), torch.cat(found_c), torch.cat(found_v)
        bits = row_bits_u[r0:r1][r] & col_bits_u[c0:c1][c]
        first, second = row_images[r], col_images[c]
        keep = (bits != 0) & (identity[first] != identity[second])
        if job.upper:
            keep &= c > r
        above = torch.zeros_like(keep)
        for bit in np.flatnonzero(job.floors != np.inf):
            above |= ((bits >> int(bit)) & 1).bool() & (values >= float(job.floors[bit]))
        keep &= above
        first, second, bits = first[keep], second[keep], bits[keep]
        scores = self._canonical(unit, first, second)
        return (first.cpu().numpy(), second.cpu().numpy(), bits.cpu().numpy(),
                scores.cpu().numpy())
