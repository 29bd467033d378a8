"""numpy/BLAS backend: what CI runs and the reference the GPU must match.

A tile is processed in strips of ``ROW_CHUNK`` rows: one float32 GEMM per
strip into a reused buffer, the comparison with the lowest floor into a
reused boolean buffer, the rows with any hit, then a flat search of those rows
(or of the whole strip when most rows hit). docs/scoring.md has the
measurements behind each step. On a
diagonal tile each strip starts at its own diagonal, so the lower half of the
tile is never computed (only a ROW_CHUNK-square corner per strip is wasted).
The strip height is a constant of this backend, not of the split, so a pair is
always computed by the same products.
"""

from __future__ import annotations

import numpy as np

from services.scorer.engine.backends import ImpostorJob, candidate_filter, proof_filter
from services.scorer.engine.canonical import Embeddings, canonical_scores, fast_score_margin

ROW_CHUNK = 1024
# Below one hit row in SPARSE_ROWS, search only the hit rows of the mask; above,
# the whole mask (a flat search beats a 2-D np.nonzero fivefold).
SPARSE_ROWS = 2


def strips(job: ImpostorJob, height: int = ROW_CHUNK):
    """(start, stop, first column, width) of each strip of ``job``'s tile, positions local
    to the tile; a diagonal tile's strip starts at its own diagonal."""
    r0, r1 = job.row_span
    n_cols = job.col_span[1] - job.col_span[0]
    for start in range(0, r1 - r0, height):
        first_col = start if job.upper else 0
        if n_cols - first_col > 0:
            yield start, min(start + height, r1 - r0), first_col, n_cols - first_col


class CpuBackend:
    name = "cpu"
    precision = "fp32"  # the candidate search's arithmetic (backends/int8.py: "int8")
    precision_reason = "float32 GEMM"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads  # canonical re-scoring; None: the cores this process may use

    def fast_scores(self, emb: Embeddings, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return emb.unit[rows] @ emb.unit[cols].T

    def canonical(self, emb: Embeddings, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return canonical_scores(emb.unit, first, second, threads=self.threads)

    def impostor_candidates(
        self, emb: Embeddings, job: ImpostorJob
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r0, r1 = job.row_span
        c0, c1 = job.col_span
        row_block = emb.unit[job.rows[r0:r1]]
        col_block = row_block if (job.upper and (r0, r1) == (c0, c1)) else emb.unit[job.cols[c0:c1]]
        n_cols = c1 - c0
        buffer = np.empty(ROW_CHUNK * n_cols, dtype=np.float32)
        above_buffer = np.empty(ROW_CHUNK * n_cols, dtype=bool)
        found_r, found_c, found_v = [], [], []
        for start, stop, first_col, width in strips(job):
            scores = buffer[: (stop - start) * width].reshape(stop - start, width)
            np.matmul(row_block[start:stop], col_block[first_col:].T, out=scores)
            above = above_buffer[: scores.size].reshape(scores.shape)
            np.greater_equal(scores, job.floor_min, out=above)
            rows_hit = np.flatnonzero(above.any(axis=1))
            if rows_hit.size == 0:
                continue
            if rows_hit.size * SPARSE_ROWS < stop - start:
                flat = np.flatnonzero(above[rows_hit])
                rr, cc = np.divmod(flat, width)
                rr = rows_hit[rr]
            else:
                flat = np.flatnonzero(above)
                rr, cc = np.divmod(flat, width)
            found_v.append(scores[rr, cc])
            found_r.append(rr + (r0 + start))
            found_c.append(cc + (c0 + first_col))
        if not found_r:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty, np.empty(0, dtype=np.float64)
        r = np.concatenate(found_r).astype(np.int64)
        c = np.concatenate(found_c).astype(np.int64)
        keep, bits = candidate_filter(r, c, np.concatenate(found_v), job)
        first, second, bits = job.rows[r[keep]], job.cols[c[keep]], bits[keep]
        scores = self.canonical(emb, first, second)
        proof = proof_filter(bits, scores, job, fast_score_margin(emb.dim))
        return first[proof], second[proof], bits[proof], scores[proof]
