"""A protocol's score on the wire: the one module that writes and reads ``ProtocolScore``.

A score has one form in the code and in PostgreSQL, a flat dict (DESIGN.md 3.1):
``kind``, ``rate``, ``rate_exact`` and the kind's fields, plus ``tar_exact`` and
``roc`` for the TAR kinds. On the wire it is a ``ProtocolScore`` whose ``result``
oneof holds the kind's typed result (``tar``, ``templates``, ``accuracy`` or
``identification``). The scorer encodes its job's scores with :func:`to_proto`, the
dispatcher decodes them with :func:`from_proto` and records them (checked once more
by :func:`mfr.ranking.scores.normalise_scores`), the ranker encodes what is stored.

JSON has no infinity, so a stored threshold of ``None`` is the infinity its kind
means (-inf: a TAR or 1:N threshold that accepts every finite score; +inf: an
accuracy fold that rejects every pair); protobuf carries the infinity itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mfr.common.v1 import types_pb2
from mfr.errors import InvalidInput
from mfr.ranking.scores import IDENTIFICATION_FIELDS, SCORE_FIELDS

# Thresholds and the optional FPIR travel by themselves (infinities, presence).
_TAR_VALUES = tuple(f for f in SCORE_FIELDS if f != "threshold")
_IDENTIFICATION_VALUES = tuple(f for f in IDENTIFICATION_FIELDS if f not in ("threshold", "fpir"))


def result_case(kind: str, rate: str) -> str:
    """Which member of the ``result`` oneof a protocol of this kind and rate sends."""
    if kind == "identification":
        return "identification"
    if rate == "accuracy":
        return "accuracy"
    return "templates" if kind == "templates" else "tar"


def _infinite(value: float | None, sign: float) -> float:
    return sign * math.inf if value is None else float(value)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def to_proto(protocol_id: str, score: Mapping) -> types_pb2.ProtocolScore:
    """The wire form of a stored score (rows stored before the kinds: TAR, no ``kind``)."""
    kind, rate = score.get("kind") or "", score.get("rate") or "tar"
    message = types_pb2.ProtocolScore(
        protocol_id=protocol_id, kind=kind, rate=rate,
        rate_exact=score.get("rate_exact") or score.get("tar_exact") or "")
    case = result_case(kind, rate)
    if case == "accuracy":
        message.accuracy.CopyFrom(types_pb2.AccuracyResult(
            accuracy=score["accuracy"], accuracy_std=score["accuracy_std"],
            fold_accuracies=score["fold_accuracies"], pairs=score["pairs"],
            thresholds=[_infinite(t, +1) for t in score["thresholds"]]))
    elif case == "identification":
        result = types_pb2.IdentificationResult(
            **{k: score[k] for k in _IDENTIFICATION_VALUES},
            threshold=_infinite(score["threshold"], -1))
        if score.get("fpir") is not None:
            result.fpir = score["fpir"]
        message.identification.CopyFrom(result)
    else:
        getattr(message, case).CopyFrom(types_pb2.TarResult(
            **{k: score[k] for k in _TAR_VALUES},
            threshold=_infinite(score["threshold"], -1),
            tar_exact=score.get("tar_exact") or f"{score['genuine_accepted']}/{score['genuine']}",
            roc=[types_pb2.RocPoint(far=p["far"], tar=p["tar"], exact=p["exact"],
                                    threshold=_infinite(p["threshold"], -1))
                 for p in score.get("roc") or ()]))
    return message


def from_proto(message: types_pb2.ProtocolScore) -> dict:
    """The stored form of a wire score; ``scores_invalid`` when its result is missing or is
    not the one its kind calls for. Values are checked by ``normalise_scores``."""
    case = message.WhichOneof("result")
    expected = result_case(message.kind, message.rate or "tar")
    if case != expected:
        raise InvalidInput(f"score of protocol {message.protocol_id!r}: a {message.kind or 'TAR'} "
                           f"protocol sends a {expected!r} result, got {case or 'none'}",
                           code="scores_invalid")
    head = {"kind": message.kind, "rate": message.rate or "tar", "rate_exact": message.rate_exact}
    result = getattr(message, case)
    if case == "accuracy":
        return {**head, "accuracy": result.accuracy, "accuracy_std": result.accuracy_std,
                "fold_accuracies": list(result.fold_accuracies), "pairs": result.pairs,
                "thresholds": [_finite(t) for t in result.thresholds]}
    if case == "identification":
        fields = {k: getattr(result, k) for k in _IDENTIFICATION_VALUES}
        return {**head, **fields, "threshold": _finite(result.threshold),
                "fpir": result.fpir if result.HasField("fpir") else None}
    fields = {k: getattr(result, k) for k in _TAR_VALUES}
    return {**head, **fields, "threshold": _finite(result.threshold),
            "tar_exact": result.tar_exact,
            "roc": [{"far": p.far, "tar": p.tar, "threshold": _finite(p.threshold),
                     "exact": p.exact} for p in result.roc]}
