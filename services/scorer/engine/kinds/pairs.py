"""``kind = "pairs"``: a listed pair list, TAR@FAR or k-fold accuracy (DESIGN.md 3.1)."""

from __future__ import annotations

from mfr.protocols import Protocol
from mfr.testset.protocol_files import PairList
from services.scorer.engine.canonical import Embeddings
from services.scorer.engine.kinds.accuracy import AccuracyResult, accuracy
from services.scorer.engine.kinds.listed import listed_scores, tar_at_far
from services.scorer.engine.merge import ProtocolResult


def score_pairs(emb: Embeddings, pairs: PairList, protocol: Protocol,
                backend=None) -> ProtocolResult | AccuracyResult:
    """The listed pairs scored canonically; the list's ``same`` decides genuine or impostor
    (identities play no part), every row counts, duplicates included."""
    scores = listed_scores(emb, pairs.first, pairs.second, backend)
    if protocol.metric == "accuracy":
        return accuracy(protocol, scores, pairs.same, pairs.fold)
    return tar_at_far(protocol, scores, pairs.same)
