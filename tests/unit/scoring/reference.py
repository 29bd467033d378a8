"""Brute force: every pair scored canonically, every impostor score sorted.

The reference the engine must equal to the last bit. It shares only the
definition of the canonical score with the engine (tested on its own in
test_scoring_canonical.py); the selection is a plain sort of all scores.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from mfr.challenge import Challenge, parse_challenge
from services.scorer.engine import ImageLabels
from services.scorer.engine.canonical import canonical_scores, normalise


def all_pairs(kind: str, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if kind == "all":
        members = np.flatnonzero(rows)
        a, b = np.triu_indices(members.size, 1)
        return members[a], members[b]
    probe, gallery = np.flatnonzero(rows), np.flatnonzero(cols)
    p, g = np.repeat(probe, gallery.size), np.tile(gallery, probe.size)
    keep = p != g
    return p[keep], g[keep]


def brute_force(features: np.ndarray, labels: ImageLabels, challenge: Challenge) -> dict:
    """The contract JSON (DESIGN.md section 7), computed the slow way."""
    emb = normalise(features)
    out = {}
    tars = {}
    for protocol in challenge.protocols:
        if protocol.kind == "all":
            rows = cols = labels.tag_mask(protocol.tag)
        else:
            rows, cols = labels.tag_mask(protocol.probe), labels.tag_mask(protocol.gallery)
        first, second = all_pairs(protocol.kind, rows, cols)
        scores = canonical_scores(emb.unit, first, second)
        scores[~(emb.valid[first] & emb.valid[second])] = -np.inf
        same = labels.identity[first] == labels.identity[second]
        genuine, impostor = scores[same], np.sort(scores[~same])[::-1]
        k = math.floor(protocol.far * impostor.size)
        threshold = float(impostor[k])
        accepted = int((genuine > threshold).sum())
        tars[protocol.id] = Fraction(accepted, genuine.size)
        out[protocol.id] = {
            "tar": float(tars[protocol.id]),
            "far": float(protocol.far),
            "threshold": None if threshold == -np.inf else threshold,
            "genuine": int(genuine.size),
            "impostor": int(impostor.size),
            "genuine_accepted": accepted,
            "impostors_accepted": int((impostor > threshold).sum()),
        }
    doc = {"protocols": out}
    ranking = challenge.ranking_score(tars)
    if ranking is not None:
        doc["ranking_score"] = float(ranking)
    return doc


def make_challenge(protocols: list[dict], weights: dict | None = None) -> Challenge:
    data = {"id": "test", "protocols": protocols}
    if weights:
        data["ranking"] = {"weights": weights}
    return parse_challenge(data)


def mr_like(count: int, dim: int, seed: int, identities: int | None = None,
            sparse: bool = False) -> tuple[np.ndarray, ImageLabels]:
    """Random test data: identities, race-like tags r0..r3 under "mr", mask/nonmask tags.

    ``sparse``: every embedding is a sum of two to four basis vectors, so
    scores take a handful of values and tie exactly, whatever the summation
    order.
    """
    rng = np.random.default_rng(seed)
    identities = identities or max(2, count // 4)
    identity = rng.integers(0, identities, count).astype(np.int64)
    if sparse:
        # 2, 3 or 4 of the `dim` basis vectors: scores are overlaps over
        # sqrt(k1 k2), sums of at most four equal exact products.
        features = np.zeros((count, dim), dtype=np.float32)
        for row in range(count):
            features[row, rng.choice(dim, size=rng.integers(2, 5), replace=False)] = 1.0
        features *= rng.choice([0.5, 1.0, 3.0], size=(count, 1)).astype(np.float32)
    else:
        centres = rng.standard_normal((identities, dim)).astype(np.float32)
        features = centres[identity] + 1.3 * rng.standard_normal((count, dim)).astype(np.float32)
    race = rng.integers(0, 4, count)
    masked = rng.random(count) < 0.3
    tags = {"mr": rng.random(count) < 0.9}
    for r in range(4):
        tags[f"r{r}"] = tags["mr"] & (race == r)
    tags["mask"] = masked
    tags["nonmask"] = ~masked | (rng.random(count) < 0.1)  # some images carry both tags
    return features, ImageLabels(identity, tags)


MR_PROTOCOLS = [
    {"id": "mr-all", "kind": "all", "tag": "mr", "far": 1e-3},
    *({"id": f"race{r}", "kind": "all", "tag": f"r{r}", "far": 1e-2} for r in range(4)),
    {"id": "mask", "kind": "cross", "probe": "mask", "gallery": "nonmask", "far": 1e-3},
]
