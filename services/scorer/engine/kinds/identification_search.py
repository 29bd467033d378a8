"""The best non-mate score of every probe, exactly, through a faiss top-k search.

faiss (``IndexFlatIP``: exhaustive float32 inner products, BLAS on a CPU,
cuBLAS on a GPU) returns each probe's k best gallery images by *fast* score.
A fast score errs from the canonical one by at most ``e =
fast_score_margin(D)`` (docs/scoring.md, "Fast path and margin"), whatever the
summation order, so, per probe, with ``f*`` the best fast score of a non-mate
image in the list and ``f_k`` the list's last (smallest) score:

- every image left out has fast score ``<= f_k``, so canonical ``<= f_k + e``;
- the best listed non-mate has canonical ``>= f* - e``.

When ``f_k + 2e < f*`` (or the list holds the whole gallery) no image left out
can be the best non-mate, and no listed non-mate with fast score ``< f* - 2e``
can be either: re-scoring canonically the listed non-mates with fast score
``>= f* - 2e`` gives the best non-mate score exactly. Probes the list does not
prove (mate images crowding the top, scores packed within ``2e``) are searched
again with four times the k, up to the whole gallery, where the proof always
holds. Every re-scored candidate is also checked against the bound: a search
that broke it (reduced-precision products) is an error, never a wrong number.
"""

from __future__ import annotations

import numpy as np

from mfr.errors import InvalidInput
from services.scorer.engine.canonical import Embeddings, canonical_scores, fast_score_margin

DEVICES = ("auto", "cpu", "gpu")
#: faiss's GPU k-selection returns at most this many results per query; a larger k
#: is served by an exhaustive numpy search (rare: only for probes k = 2048 did not prove).
GPU_MAX_K = 2048
# Gallery rows copied into the index per add(): bounds the temporary copy.
_ADD_ROWS = 1 << 16
# Result entries (probes x k) per search call: bounds the result arrays and their
# float64 working copies (about 40 bytes an entry in all).
_RESULT_ENTRIES = 1 << 22
# The first k is the largest identity's image count plus this; unproven probes
# are searched again with k times _GROWTH.
FIRST_EXTRA = 32
_GROWTH = 4


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InvalidInput("identification protocols need faiss (the cpu extra: faiss-cpu)",
                           code="backend_unavailable") from None
    return faiss


def faiss_gpus() -> int:
    """GPUs faiss can use (0 for faiss-cpu or without faiss)."""
    try:
        faiss = _faiss()
    except InvalidInput:
        return 0
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def resolve_device(device: str) -> str:
    """``cpu`` or ``gpu`` for ``auto``/``cpu``/``gpu`` (``auto``: a GPU when faiss has one)."""
    choice = (device or "auto").strip().lower()
    if choice not in DEVICES:
        raise InvalidInput(f"unknown identification device {choice!r} "
                           f"(choose from {', '.join(DEVICES)})", code="backend_unknown")
    gpus = faiss_gpus()
    if choice == "gpu" and not gpus:
        raise InvalidInput("the gpu device needs faiss with GPU support and a CUDA device",
                           code="backend_unavailable")
    return choice if choice != "auto" else ("gpu" if gpus else "cpu")


class GalleryIndex:
    """Exhaustive float32 inner-product search over some gallery rows of ``emb``."""

    def __init__(self, emb: Embeddings, images: np.ndarray, device: str) -> None:
        faiss = _faiss()
        self.images = images
        self.device = resolve_device(device)
        if self.device == "gpu":
            self._resources = faiss.StandardGpuResources()
            config = faiss.GpuIndexFlatConfig()
            config.useFloat16 = False  # float32 storage and products: the margin's premise
            index = faiss.GpuIndexFlatIP(self._resources, emb.dim, config)
            self.max_k = GPU_MAX_K
        else:
            index = faiss.IndexFlatIP(emb.dim)
            self.max_k = len(images)
        for start in range(0, len(images), _ADD_ROWS):
            index.add(np.ascontiguousarray(emb.unit[images[start:start + _ADD_ROWS]]))
        self._index = index
        self._unit = emb.unit

    def top(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(float32 scores, gallery positions), each ``[len(queries), k]``, best first."""
        if k <= self.max_k:
            return self._index.search(np.ascontiguousarray(queries), k)
        scores = queries @ self._unit[self.images].T  # float32 GEMM: within the same margin
        if k < scores.shape[1]:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        picked = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        return np.take_along_axis(picked, order, axis=1), np.take_along_axis(part, order, axis=1)


def best_nonmate_scores(emb: Embeddings, probes: np.ndarray, gallery: np.ndarray,
                        identity: np.ndarray, device: str = "auto") -> tuple[np.ndarray, int]:
    """(canonical best non-mate score per probe, candidates re-scored).

    ``probes`` and ``gallery`` are image indices of *valid* images; a non-mate is a
    gallery image whose identity differs from the probe's. ``-inf`` where a probe
    has no non-mate image.
    """
    best = np.full(len(probes), -np.inf)
    if len(probes) == 0 or len(gallery) == 0:
        return best, 0
    index = GalleryIndex(emb, gallery, device)
    per_identity = np.bincount(identity[gallery])
    k = min(len(gallery), int(per_identity.max()) + FIRST_EXTRA)
    pending = np.arange(len(probes))
    rescored = 0
    while pending.size:
        batch = max(1, _RESULT_ENTRIES // k)
        unproven = []
        for start in range(0, pending.size, batch):
            part = pending[start:start + batch]
            scores, positions = index.top(emb.unit[probes[part]], k)
            proven, count = _settle(emb, probes, gallery, identity, part, scores, positions,
                                    complete=k >= len(gallery), best=best)
            rescored += count
            unproven.append(part[~proven])
        pending = np.concatenate(unproven)
        k = min(len(gallery), k * _GROWTH)
    return best, rescored


def _settle(emb: Embeddings, probes: np.ndarray, gallery: np.ndarray, identity: np.ndarray,
            part: np.ndarray, scores: np.ndarray, positions: np.ndarray, *, complete: bool,
            best: np.ndarray) -> tuple[np.ndarray, int]:
    """Prove what the lists of the probes ``part`` can; fill ``best`` for those."""
    margin = fast_score_margin(emb.dim)
    fast = scores.astype(np.float64)
    nonmate = identity[gallery[positions]] != identity[probes[part]][:, None]
    top = np.where(nonmate, fast, -np.inf).max(axis=1)
    proven = np.ones(len(part), dtype=bool) if complete else fast[:, -1] + 2 * margin < top
    # top - 2 margin is -inf for a probe without a listed non-mate: nothing to re-score.
    near = nonmate & proven[:, None] & (fast >= (top - 2 * margin)[:, None])
    r, c = np.nonzero(near)
    first, second = probes[part[r]], gallery[positions[r, c]]
    canonical = canonical_scores(emb.unit, first, second)
    off = np.abs(canonical - fast[r, c]) > margin
    if off.any():
        raise RuntimeError(f"the search's float32 scores broke the fast-path bound {margin} "
                           f"(probe image {int(first[off][0])}): reduced-precision products?")
    np.maximum.at(best, part[r], canonical)
    return proven, int(r.size)
