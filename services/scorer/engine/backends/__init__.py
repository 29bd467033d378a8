"""Compute backends: where the fast float32 products and the canonical scores run.

A backend does three things, and nothing else: score a block of pairs fast
(for the floor sample), find the impostor candidates of a tile, and compute
canonical scores. ``cpu`` is numpy/BLAS and always available; ``gpu`` is torch
on CUDA, imported only when asked for or when a GPU is present, so the CPU
path never needs torch.

Selection by name (``auto``, ``cpu``, ``gpu``; processes read it from
``MFR_SCORER_BACKEND``): ``auto`` is ``gpu`` when torch is installed and sees a CUDA
device, ``cpu`` otherwise. ``auto`` looks for NVIDIA device files before it
imports torch, so a CPU machine does not pay torch's import time.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mfr.errors import InvalidInput
from services.scorer.engine.canonical import Embeddings

BACKEND_NAMES = ("auto", "cpu", "gpu")
#: Candidate-search precision (MFR_SCORER_PRECISION): ``auto`` is int8 on the CPU when
#: its integer kernel proves exact (backends/int8.py), float32 otherwise and on the GPU.
PRECISION_NAMES = ("auto", "int8", "fp32")


@dataclass(frozen=True)
class ImpostorJob:
    """A rectangle of a universe and the rules that make a pair a candidate.

    ``row_bits``/``col_bits`` are the universe's candidate masks: membership
    restricted to protocols still being searched, zero for invalid images.
    A pair (r, c) is a candidate when ``bits = row_bits[r] & col_bits[c]`` is
    non-zero, the identities differ, (upper tiles) ``c > r``, and its fast
    score is ``>= floors[b]`` for some bit b of ``bits``.
    """

    rows: np.ndarray  # universe row image indices (whole universe)
    cols: np.ndarray
    row_bits: np.ndarray  # int64, whole universe
    col_bits: np.ndarray
    identity: np.ndarray  # int64 per image (global)
    row_span: tuple[int, int]
    col_span: tuple[int, int]
    upper: bool  # diagonal tile of an all-to-all universe: keep c > r only
    floors: np.ndarray  # float32 per bit; +inf for protocols not searched
    floor_min: np.float32


class Backend(Protocol):
    name: str

    def fast_scores(self, emb: Embeddings, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 scores [len(rows), len(cols)] of unit rows (fast path)."""

    def canonical(self, emb: Embeddings, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Canonical float64 scores of image pairs (services.scorer.engine.canonical)."""

    def impostor_candidates(
        self, emb: Embeddings, job: ImpostorJob
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(first, second, bits, canonical score) of the job's candidates:
        image indices (int64), masks (int64), float64 scores."""


def select_backend(name: str | None = None, threads: int | None = None,
                   precision: str | None = None) -> Backend:
    """The backend called ``name`` (default ``auto``); ``threads`` bounds the CPU's work;
    ``precision`` (default ``auto``) the CPU's candidate search (``precision`` and
    ``precision_reason`` on the backend say what was chosen and why)."""
    choice = (name or "auto").strip().lower()
    if choice not in BACKEND_NAMES:
        raise InvalidInput(
            f"unknown scorer backend {choice!r} (choose from {', '.join(BACKEND_NAMES)})",
            code="backend_unknown",
        )
    wanted = (precision or "auto").strip().lower()
    if wanted not in PRECISION_NAMES:
        raise InvalidInput(
            f"unknown scorer precision {wanted!r} (choose from {', '.join(PRECISION_NAMES)})",
            code="precision_unknown",
        )
    if choice == "auto":
        choice = "gpu" if _gpu_present() else "cpu"
    if choice == "cpu":
        from services.scorer.engine.backends.int8 import cpu_backend

        return cpu_backend(threads, wanted)
    from services.scorer.engine.backends.gpu import TorchBackend, gpu_available

    if not gpu_available():
        raise InvalidInput("the gpu backend needs torch and a CUDA device", code="backend_unavailable")
    return TorchBackend("cuda")


def _gpu_present() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    if not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/proc/driver/nvidia")):
        return False
    from services.scorer.engine.backends.gpu import gpu_available

    return gpu_available()


def candidate_filter(
    r: np.ndarray, c: np.ndarray, values: np.ndarray, job: ImpostorJob
) -> tuple[np.ndarray, np.ndarray]:
    """numpy form of the candidate rule on hits (r, c universe positions).

    Returns (keep mask, bits). Shared by the CPU backend and the tests.
    """
    bits = job.row_bits[r] & job.col_bits[c]
    keep = bits != 0
    keep &= job.identity[job.rows[r]] != job.identity[job.cols[c]]
    if job.upper:
        keep &= c > r
    above = np.zeros(keep.shape, dtype=bool)
    for bit in np.flatnonzero(job.floors != np.inf):  # +inf: protocol not searched
        above |= ((bits >> bit) & 1).astype(bool) & (values >= job.floors[bit])
    return keep & above, bits


def proof_filter(bits: np.ndarray, scores: np.ndarray, job: ImpostorJob, margin: float
                 ) -> np.ndarray:
    """Mask of the candidates merge's proof can use: canonical ``>= floor + margin`` for a
    bit of theirs (``-inf`` floors keep every pair).

    Every backend and precision finds all of these (the margin bounds the fast path's
    error). Merge keeps exactly these per protocol whatever it is handed (so retry floors
    and ROC points are identical, docs/scoring-int8.md); dropping the rest here only
    keeps the partials small.
    """
    keep = np.zeros(scores.shape, dtype=bool)
    for bit in np.flatnonzero(job.floors != np.inf):
        keep |= ((bits >> bit) & 1).astype(bool) & (scores >= float(job.floors[bit]) + margin)
    return keep
