"""1:N identification (DESIGN.md section 3.1): TPIR at an FPIR target.

Per probe p, two canonical scores decide everything: the *mate* score (the
best of p's own identity's gallery images, scored directly: an identity has few
images) and the best *non-mate* score (the best over every other gallery
identity, from the exact faiss search of identification_search.py). With them:

- non-mated probes (no gallery image of their identity) give the threshold:
  ``k = floor(fpir * N_nonmated)`` exactly, ``t`` = the (k+1)-th largest of their
  best scores (``-inf`` when ``k >= N_nonmated``);
- a mated probe is a *hit* when ``mate > best non-mate`` (strict: a tie is a
  miss) and ``mate > t``; ``rank1`` drops the second condition.

Invalid embeddings (NaN, zero norm) score ``-inf``: an invalid probe's mate and
non-mate scores are ``-inf`` (a miss; a non-mated one's best is ``-inf``), an
invalid gallery image never wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from mfr.errors import InvalidInput
from mfr.protocols import Protocol
from services.scorer.engine.canonical import Embeddings, canonical_scores
from services.scorer.engine.floors import threshold_rank
from services.scorer.engine.kinds.identification_search import best_nonmate_scores
from services.scorer.engine.universes import ImageLabels


@dataclass(frozen=True)
class IdentificationResult:
    protocol: Protocol
    tpir: Fraction  # hits / mated, exact: what ranks
    rank1: Fraction  # mated probes whose mate strictly beats every non-mate, over mated
    threshold: float  # canonical score; -inf when k >= N_nonmated
    mated: int
    nonmated: int
    hits: int
    nonmated_accepted: int
    candidates: int  # non-mate scores the search re-scored canonically

    @property
    def rate(self) -> Fraction:
        return self.tpir

    @property
    def fnir(self) -> Fraction:
        return 1 - self.tpir

    def to_json(self) -> dict:
        return {
            "tpir": float(self.tpir),
            "fnir": float(self.fnir),
            "rank1": float(self.rank1),
            "threshold": None if self.threshold == float("-inf") else float(self.threshold),
            "mated": self.mated,
            "nonmated": self.nonmated,
            "hits": self.hits,
            "nonmated_accepted": self.nonmated_accepted,
        }


def score_identification(emb: Embeddings, labels: ImageLabels, protocol: Protocol, *,
                         device: str = "auto") -> IdentificationResult:
    """Exact TPIR of one identification protocol; ``device`` picks faiss's (auto: GPU if any)."""
    probes, gallery = _probe_and_gallery(labels, protocol)
    identity = labels.identity
    mated = np.isin(identity[probes], identity[gallery])
    if not mated.any():
        raise _unscorable(protocol, f"no probe's identity has an image tagged {protocol.gallery!r}")
    valid_gallery = gallery[emb.valid[gallery]]
    valid = np.flatnonzero(emb.valid[probes])
    best = np.full(len(probes), -np.inf)
    mate = np.full(len(probes), -np.inf)
    best[valid], candidates = best_nonmate_scores(emb, probes[valid], valid_gallery, identity,
                                                  device)
    mate[valid] = mate_scores(emb, probes[valid], valid_gallery, identity)

    nonmated_best = best[~mated]
    k = threshold_rank(protocol.fpir, nonmated_best.size) - 1
    threshold = (float(np.sort(nonmated_best)[::-1][k]) if k < nonmated_best.size
                 else float("-inf"))
    first = mate[mated] > best[mated]
    hits = int((first & (mate[mated] > threshold)).sum())
    count = int(mated.sum())
    return IdentificationResult(
        protocol=protocol,
        tpir=Fraction(hits, count),
        rank1=Fraction(int(first.sum()), count),
        threshold=threshold,
        mated=count,
        nonmated=int(nonmated_best.size),
        hits=hits,
        nonmated_accepted=int((nonmated_best > threshold).sum()),
        candidates=candidates,
    )


def mate_scores(emb: Embeddings, probes: np.ndarray, gallery: np.ndarray,
                identity: np.ndarray) -> np.ndarray:
    """Canonical best score of each probe against its own identity's gallery images.

    Every (probe, same-identity gallery image) pair is scored; ``-inf`` for a
    probe with no such image. ``gallery`` holds valid images only.
    """
    order = np.argsort(identity[gallery], kind="stable")
    grouped = identity[gallery][order]
    wanted = identity[probes]
    start = np.searchsorted(grouped, wanted, side="left")
    counts = np.searchsorted(grouped, wanted, side="right") - start
    owner = np.repeat(np.arange(len(probes)), counts)
    within = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    images = gallery[order[np.repeat(start, counts) + within]]
    scores = canonical_scores(emb.unit, probes[owner], images)
    out = np.full(len(probes), -np.inf)
    np.maximum.at(out, owner, scores)
    return out


def _probe_and_gallery(labels: ImageLabels, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    probe_mask, gallery_mask = labels.tag_mask(protocol.probe), labels.tag_mask(protocol.gallery)
    both = np.flatnonzero(probe_mask & gallery_mask)
    if both.size:
        raise InvalidInput(
            f"protocol {protocol.id!r}: image row {int(both[0])} carries both the probe tag "
            f"{protocol.probe!r} and the gallery tag {protocol.gallery!r}"
            + (f" ({both.size} images do)" if both.size > 1 else ""),
            code="labels_invalid")
    for tag, mask in ((protocol.probe, probe_mask), (protocol.gallery, gallery_mask)):
        if not mask.any():
            raise _unscorable(protocol, f"no image is tagged {tag!r}")
    return np.flatnonzero(probe_mask), np.flatnonzero(gallery_mask)


def _unscorable(protocol: Protocol, why: str) -> InvalidInput:
    return InvalidInput(f"protocol {protocol.id!r} cannot be scored: {why}",
                        code="protocol_unscorable")
