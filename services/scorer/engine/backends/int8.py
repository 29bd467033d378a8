"""int8 candidate search on the CPU: onnxruntime's ``MatMulInteger`` (VNNI/AMX kernels).

The impostor candidates of a tile are found with an integer GEMM of quantised
unit rows, ``q = round(a / s)`` with one scale ``s`` per Embeddings, and the
low-precision score ``s^2 Q`` (``Q`` the exact int32 product). A proven bound
``err`` on ``|s^2 Q - canonical|`` per tile (docs/scoring-int8.md) lowers each
floor so that the kept set contains every pair whose canonical score is
``>= floor + margin``; a float32 re-score and the float32 rule then leave what
the float32 path keeps, and the canonical scores what merge's proof uses: every
reported number is unchanged. Rows with a few huge components ("outliers", whose
rounding error would widen the bound) are scored by the float32 path.

The kernel must be exact: :func:`check_kernel` compares it with an int64
reference on adversarial operands when the backend is built; a kernel that
saturates (MLAS's ``vpmaddubsw`` path without VNNI) makes the backend fall
back to float32 and say why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from mfr.cpus import usable_cpus
from services.scorer.engine.backends import ImpostorJob, candidate_filter, proof_filter
from services.scorer.engine.backends.cpu import CpuBackend
from services.scorer.engine.canonical import Embeddings, fast_score_margin, in_parts

log = logging.getLogger(__name__)

LEVELS = 127  # |q| <= 127; A is fed as q + 128 (uint8, zero point 128), B as int8
# The scale covers every valid row's largest component (on ordinary embeddings no row is
# an outlier, so no pair takes the slower float32 route),
OUTLIER_PERCENTILE = 100.0
OUTLIER_MEDIAN_FACTOR = 2.0  # but never more than twice the median row's
NORM_ROWS = 512  # rows per float64 norm chunk (2 MB: stays in the core's cache)
# A block's int32 product, [COL_BLOCK, ROW_BLOCK] (1 MB), stays in the core's L2 cache for
# the comparison that follows it: 1.3-1.4e9 pairs/s on two threads here, against 1.0e9 for
# 1024-row strips of whole tiles on one two-threaded call (docs/scoring-int8.md).
ROW_BLOCK = 512
COL_BLOCK = 512
PAIR_CHUNK = 4096  # pairs per float32 re-scoring chunk
_EMPTY = np.empty(0, dtype=np.int64)
# Safety terms of the bound (docs/scoring-int8.md): relative, for float64 rounding in the
# norms and products (at most ~D * 2**-53 = 6e-14 at D = 512); absolute, for the
# canonical score's own float64 error (~1e-15) and the float64 s^2 Q (~1e-16).
REL_SLACK = 1e-9
ABS_SLACK = 1e-12
# The self-test's accumulation lengths are this and 4x this; longer rows are checked
# when they are first seen (Int8CpuBackend.quantised).
KERNEL_CHECK_DIM = 512

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (A uint8 [M,K], B int8 [K,N]) -> int32


def onnx_runner(threads: int) -> Runner:
    """``(A - 128) @ B`` by onnxruntime's MatMulInteger: A uint8, B int8, int32 out."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("A", TensorProto.UINT8, [None, None])
    b = helper.make_tensor_value_info("B", TensorProto.INT8, [None, None])
    y = helper.make_tensor_value_info("Y", TensorProto.INT32, [None, None])
    zero = helper.make_tensor("zero", TensorProto.UINT8, [], [128])
    node = helper.make_node("MatMulInteger", ["A", "B", "zero"], ["Y"])
    graph = helper.make_graph([node], "int8_scores", [a, b], [y], initializer=[zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])

    def run(a_u8: np.ndarray, b_i8: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.empty((a_u8.shape[0], b_i8.shape[1]), dtype=np.int32)
        binding = session.io_binding()
        binding.bind_cpu_input("A", np.ascontiguousarray(a_u8))
        binding.bind_cpu_input("B", np.ascontiguousarray(b_i8))
        binding.bind_output("Y", "cpu", 0, np.int32, out.shape, out.ctypes.data)
        session.run_with_iobinding(binding)
        return out

    return run


def check_kernel(run: Runner, dim: int) -> str | None:
    """None when ``run`` equals the int64 reference on adversarial operands, else why not.

    A all 255 (q = 127) against B all +127 and all -127 makes every pair sum of a
    16-bit ``u8 * s8`` kernel saturate; mixed extremes and random operands check
    the zero-point handling; D = dim and 4 dim check the accumulation length.
    """
    rng = np.random.default_rng(13)
    for depth in (dim, 4 * dim):
        a = np.empty((8, depth), dtype=np.uint8)
        a[0], a[1], a[2] = 255, 1, 128
        a[3] = np.where(np.arange(depth) % 2 == 0, 255, 1)
        a[4:] = rng.integers(1, 256, (4, depth), dtype=np.uint8)
        b = np.empty((depth, 8), dtype=np.int8)
        b[:, 0], b[:, 1] = 127, -127
        b[:, 2] = np.where(np.arange(depth) % 2 == 0, 127, -127)
        b[:, 3] = np.where(np.arange(depth) % 3 == 0, -127, 127)
        b[:, 4:] = rng.integers(-127, 128, (depth, 4), dtype=np.int8)
        want = (a.astype(np.int64) - 128) @ b.astype(np.int64)
        try:
            got = np.asarray(run(a, b))
        except Exception as exc:  # noqa: BLE001 - any failure means: do not use it
            return f"the int8 kernel failed its self-test: {exc}"
        if got.shape != want.shape or not np.array_equal(got.astype(np.int64), want):
            worst = int(np.max(np.abs(got.astype(np.int64) - want))) if got.shape == want.shape \
                else -1
            return (f"the int8 kernel is not exact at D = {depth} (largest error {worst}; "
                    "a saturating 16-bit kernel, no VNNI/AMX?)")
    return None


@dataclass(frozen=True)
class Quantised:
    """One Embeddings' int8 rows and the float64 norms the bound needs (upper bounds)."""

    scale: float  # s: a' = s q
    q: np.ndarray  # int8 [N, D]; zero for outlier and invalid rows
    outlier: np.ndarray  # bool [N]: valid rows scored by the float32 path
    norm_q: np.ndarray  # float64 [N] >= ||a'||
    norm_err: np.ndarray  # float64 [N] >= ||a - a'||
    norm_unit: np.ndarray  # float64 [N] >= ||a||


def quantise(emb: Embeddings, threads: int | None = None) -> Quantised:
    unit, count = emb.unit, emb.count
    largest = np.zeros(count, dtype=np.float32)

    def find_largest(first: int, last: int) -> None:
        for start in range(first, last, NORM_ROWS):  # no N x D temporary of |unit|
            stop = min(start + NORM_ROWS, last)
            if emb.dim:
                block = unit[start:stop]
                np.maximum(block.max(axis=1), -block.min(axis=1), out=largest[start:stop])

    in_parts(count, threads, find_largest)
    valid_largest = largest[emb.valid]
    top = 0.0
    if valid_largest.size:  # robust: more than 0.1% of rows with huge components cannot set it
        top = min(float(np.percentile(valid_largest, OUTLIER_PERCENTILE)),
                  OUTLIER_MEDIAN_FACTOR * float(np.median(valid_largest)))
    scale = top / LEVELS if top > 0 else 1.0
    outlier = emb.valid & (largest.astype(np.float64) > LEVELS * scale)
    q = np.empty(unit.shape, dtype=np.int8)
    norms = np.zeros((3, count), dtype=np.float64)

    def work(first: int, last: int) -> None:
        for start in range(first, last, NORM_ROWS):
            stop = min(start + NORM_ROWS, last)
            a = unit[start:stop].astype(np.float64)  # exact widening
            a[outlier[start:stop]] = 0.0
            norms[2, start:stop] = np.einsum("ij,ij->i", a, a)
            # Any integer choice of q is sound (the norms below are of the q chosen);
            # rounding to nearest keeps ||a - s q|| small.
            levels = np.multiply(a, 1.0 / scale)
            np.rint(levels, out=levels)
            np.clip(levels, -LEVELS, LEVELS, out=levels)
            q[start:stop] = levels
            norms[0, start:stop] = np.einsum("ij,ij->i", levels, levels)  # integers: exact
            np.multiply(levels, scale, out=levels)
            np.subtract(a, levels, out=a)  # a - fl(s q): within 2**-52 ||a|| of a - s q
            norms[1, start:stop] = np.einsum("ij,ij->i", a, a)

    in_parts(count, threads, work)  # rows are independent: no value depends on the split
    np.sqrt(norms, out=norms)
    norms[0] *= scale
    norms *= 1.0 + REL_SLACK  # float64 rounding of each norm, with room to spare
    return Quantised(scale, q, outlier, norms[0], norms[1], norms[2])


class Int8CpuBackend(CpuBackend):
    """The CPU backend with the int8 candidate search (same name: nothing reported changes)."""

    precision = "int8"
    precision_reason = "int8 kernel exact (self-test passed)"

    def __init__(self, threads: int | None, run: Runner) -> None:
        super().__init__(threads)
        self._run = run  # one kernel thread per call; the backend runs `workers` calls at once
        self.workers = threads or usable_cpus()
        self._cache: tuple[Embeddings, Quantised] | None = None
        self._long_checked: dict[int, str | None] = {}

    def quantised(self, emb: Embeddings) -> Quantised | None:
        """The int8 rows of ``emb`` (cached for the last Embeddings); None: use float32."""
        if emb.dim > 4 * KERNEL_CHECK_DIM and emb.dim not in self._long_checked:
            self._long_checked[emb.dim] = check_kernel(self._run, emb.dim)
            if self._long_checked[emb.dim]:
                log.warning("scorer precision int8 at D = %d: %s", emb.dim,
                            self._long_checked[emb.dim])
        if self._long_checked.get(emb.dim):
            return None
        if self._cache is None or self._cache[0] is not emb:
            self._cache = (emb, quantise(emb, self.workers))
        return self._cache[1]

    def impostor_candidates(
        self, emb: Embeddings, job: ImpostorJob
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        quant = self.quantised(emb) if np.isfinite(job.floor_min) else None
        if quant is None:  # a protocol keeping every pair (nothing to skip), or no exact kernel
            return super().impostor_candidates(emb, job)
        margin = fast_score_margin(emb.dim)
        r, c = _int8_hits(self._run, emb, quant, job, margin, self.workers)
        ro, co = _outlier_hits(emb, quant, job)
        r, c = np.concatenate([r, ro]), np.concatenate([c, co])
        first, second = job.rows[r], job.cols[c]
        bits = job.row_bits[r] & job.col_bits[c]
        scores = self.canonical(emb, first, second)
        proof = proof_filter(bits, scores, job, margin)  # exactly what the float32 path returns
        return first[proof], second[proof], bits[proof], scores[proof]


def pair_scores(unit: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """float32 scores of the pairs (first[p], second[p]): a fast path like the GEMM's (any
    summation order is within ``fast_score_margin``)."""
    out = np.empty(first.shape[0], dtype=np.float32)
    for start in range(0, first.shape[0], PAIR_CHUNK):
        stop = start + PAIR_CHUNK
        np.einsum("ij,ij->i", unit[first[start:stop]], unit[second[start:stop]],
                  out=out[start:stop])
    return out


def product_bound(quant: Quantised, rows: np.ndarray, cols: np.ndarray) -> float:
    """Proven bound on |float64(s^2 Q) - canonical| for the non-outlier pairs rows x cols:
    max ||a'|| max ||b - b'|| + max ||a - a'|| max ||b||, plus the slack terms."""
    row_ok, col_ok = ~quant.outlier[rows], ~quant.outlier[cols]
    err = (_masked_max(quant.norm_q[rows], row_ok) * _masked_max(quant.norm_err[cols], col_ok)
           + _masked_max(quant.norm_err[rows], row_ok) * _masked_max(quant.norm_unit[cols], col_ok))
    return err * (1.0 + REL_SLACK) + ABS_SLACK


def _int8_hits(run, emb: Embeddings, quant: Quantised, job: ImpostorJob, margin: float,
               workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Universe positions (r, c) of the non-outlier pairs the float32 rule keeps.

    The tile is cut into blocks of ROW_BLOCK rows x COL_BLOCK columns; ``workers`` threads
    take row blocks in turn (a diagonal tile's first blocks are the widest), each running
    one single-threaded product per block and comparing it while it is still in the
    core's cache. Each product is ``columns x rows`` (the columns as the kernel's uint8
    operand), so every block's operand is a contiguous slice: nothing is copied per block
    but the row block's transpose. The hits of a row block then pass, on the same thread,
    the candidate rule on ``s^2 Q`` with the floors lowered by the bound, and the float32
    rule on their float32 scores: what the float32 path keeps, a superset of what the
    proof needs (|fast - canonical| <= margin, any order), at a fraction of the canonical
    score's cost (the int8 bound lets in ~12x more pairs).
    """
    r0, r1 = job.row_span
    c0, c1 = job.col_span
    row_index, col_index = job.rows[r0:r1], job.cols[c0:c1]
    rows_q = quant.q[row_index]  # [n_rows, D] int8
    cols_u8 = quant.q[col_index].view(np.uint8)  # a gathered copy: [n_cols, D] q + 128
    cols_u8 ^= np.uint8(0x80)
    row_normal, col_normal = ~quant.outlier[row_index], ~quant.outlier[col_index]
    n_cols = c1 - c0
    square = quant.scale * quant.scale
    err = product_bound(quant, row_index, col_index)
    lowered = replace(job, floors=job.floors.astype(np.float64) - margin - err)  # per bit
    # One below the smallest integer that can pass: float64 rounding of s^2 Q cannot push
    # a passing Q under it.
    threshold = max(math.floor(float(lowered.floors[job.floors != np.inf].min()) / square) - 1,
                    -(2**31))

    def block_hits(start: int) -> tuple[np.ndarray, np.ndarray]:
        stop = min(start + ROW_BLOCK, r1 - r0)
        height = stop - start
        out = np.empty(COL_BLOCK * height, dtype=np.int32)  # reused by the row block's calls
        above_buffer = np.empty(COL_BLOCK * height, dtype=bool)
        rows_t = np.ascontiguousarray(rows_q[start:stop].T)  # [D, height] int8
        found = []
        for first in range(start if job.upper else 0, n_cols, COL_BLOCK):
            last = min(first + COL_BLOCK, n_cols)
            size = (last - first) * height
            product = run(cols_u8[first:last], rows_t, out[:size].reshape(last - first, height))
            above = above_buffer[:size]
            np.greater_equal(product.reshape(-1), threshold, out=above)
            flat = np.flatnonzero(above)
            if flat.size:
                cc, rr = np.divmod(flat, height)
                found.append((rr + start, cc + first, product.reshape(-1)[flat]))
        if not found:
            return _EMPTY, _EMPTY
        rr, cc, products = (np.concatenate(part) for part in zip(*found))
        keep = row_normal[rr] & col_normal[cc]  # tile-local positions
        rr, cc = rr[keep].astype(np.int64) + r0, cc[keep].astype(np.int64) + c0
        passed, _ = candidate_filter(rr, cc, square * products[keep].astype(np.float64), lowered)
        rr, cc = rr[passed], cc[passed]
        fast = pair_scores(emb.unit, job.rows[rr], job.cols[cc])
        passed, _ = candidate_filter(rr, cc, fast, job)
        return rr[passed], cc[passed]

    starts = range(0, r1 - r0, ROW_BLOCK)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(block_hits, starts))
    else:
        parts = [block_hits(start) for start in starts]
    return (np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.int64))


def _outlier_hits(emb: Embeddings, quant: Quantised, job: ImpostorJob
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs touching an outlier row or column: the float32 scores and floors (cpu.py's rule)."""
    r0, r1 = job.row_span
    c0, c1 = job.col_span
    row_out = np.flatnonzero(quant.outlier[job.rows[r0:r1]]) + r0
    col_out = np.flatnonzero(quant.outlier[job.cols[c0:c1]]) + c0
    found_r, found_c = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    all_cols = np.arange(c0, c1)
    normal_rows = np.setdiff1d(np.arange(r0, r1), row_out)
    for rows, cols in ((row_out, all_cols), (normal_rows, col_out)):
        if rows.size == 0 or cols.size == 0:
            continue
        scores = emb.unit[job.rows[rows]] @ emb.unit[job.cols[cols]].T
        hit_r, hit_c = np.nonzero(scores >= job.floor_min)
        values = scores[hit_r, hit_c]
        rr, cc = rows[hit_r].astype(np.int64), cols[hit_c].astype(np.int64)
        passed, _ = candidate_filter(rr, cc, values, job)
        found_r.append(rr[passed])
        found_c.append(cc[passed])
    return np.concatenate(found_r), np.concatenate(found_c)


def _masked_max(values: np.ndarray, mask: np.ndarray) -> float:
    chosen = values[mask]
    return float(chosen.max()) if chosen.size else 0.0


def cpu_backend(threads: int | None, precision: str) -> CpuBackend:
    """The CPU backend at ``precision`` (``auto``/``int8``: int8 when the kernel proves exact,
    else float32 with the reason in ``precision_reason``; ``fp32``: float32)."""
    if precision == "fp32":
        backend = CpuBackend(threads)
        backend.precision_reason = "float32 forced (MFR_SCORER_PRECISION=fp32)"
        return backend
    reason = None
    try:
        run = onnx_runner(1)  # single-threaded calls, run side by side (_int8_hits)
    except Exception as exc:  # noqa: BLE001 - no onnxruntime, or it cannot build the model
        reason = f"onnxruntime's MatMulInteger is not available: {exc}"
    else:
        reason = check_kernel(run, KERNEL_CHECK_DIM)
    if reason is None:
        return Int8CpuBackend(threads, run)
    backend = CpuBackend(threads)
    backend.precision_reason = f"float32: {reason}"
    log.warning("scorer precision %s: %s", precision, backend.precision_reason)
    return backend
