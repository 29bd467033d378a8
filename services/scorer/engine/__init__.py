"""The scoring engine's public API: exact rates for every protocol of a challenge.

One process (``mfr score``)::

    files = read_protocol_files(protocols, manifest_folder, image_index)  # pairs, templates
    report = score(features, labels, challenge, files=files)

A distributed scorer does the same steps itself, in any number of workers::

    emb = normalise(features)                        # every worker, same bits
    plan = make_plan(emb, labels, protocols, backend) # coordinator; plan.to_bytes()
    part = score_tile(plan, emb, tile, backend)       # any worker, any tile; part.to_bytes()
    outcome = merge(plan, partials)                   # coordinator, all tiles of the round
    # outcome.results: proven protocols; outcome.retry: next round's plan, or None

Results do not depend on the backend, on how tiles are shared, or on the
order partials arrive (docs/scoring.md). The plan covers the ``all`` and
``cross`` protocols; ``pairs`` and ``templates`` (:func:`score_listed`) score
their listed pairs directly, and ``identification`` has its own module.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from mfr.challenge import Challenge, Protocol
from mfr.errors import InvalidInput
from services.scorer.engine.backends import Backend, select_backend
from services.scorer.engine.canonical import Embeddings, normalise
from services.scorer.engine.floors import DEFAULT_FLOORS, FloorSettings
from services.scorer.engine.genuine import genuine_pairs
from services.scorer.engine.kinds.accuracy import AccuracyResult
from services.scorer.engine.kinds.files import LISTED_KINDS, ProtocolFiles, read_protocol_files
from services.scorer.engine.kinds.pairs import score_pairs
from services.scorer.engine.kinds.templates import score_templates
from services.scorer.engine.merge import MergeOutcome, ProtocolResult, RocPoint, merge
from services.scorer.engine.plan import ScoringPlan, make_plan
from services.scorer.engine.tiles import GENUINE, TILE_SIZE, Tile, TilePartial
from services.scorer.engine.universes import ImageLabels, select_protocols

__all__ = [
    "LISTED_KINDS", "AccuracyResult", "Embeddings", "ImageLabels", "MergeOutcome",
    "ProtocolFiles", "ProtocolResult", "RocPoint", "ScoreReport", "ScoringPlan", "Tile",
    "TilePartial", "check_features", "make_plan", "merge", "normalise", "protocol_json",
    "rate_of", "read_protocol_files", "result_json", "roc_json", "run_rounds", "score",
    "score_listed", "score_tile", "select_backend",
]

#: What a protocol's result is: TAR fields (all, cross, pairs/tar, templates), accuracy
#: fields (pairs/accuracy), or the identification kind's result (``tpir`` ...).
Result = ProtocolResult | AccuracyResult
#: Kinds the tiled plan scores (make_plan); the others are scored here, once.
PLANNED_KINDS = ("all", "cross")

#: progress(done_pairs, total_pairs, round): called after each tile.
Progress = Callable[[int, int, int], None]


def check_features(features: np.ndarray, image_count: int) -> None:
    """Features must be float32 [N, D] with one row per manifest image."""
    if not isinstance(features, np.ndarray):
        raise InvalidInput("features must be a numpy array", code="features_invalid")
    if features.dtype != np.float32:
        raise InvalidInput(f"features must be float32, got {features.dtype}",
                           code="features_invalid")
    if features.ndim != 2 or features.shape[1] < 1:
        raise InvalidInput(f"features must be a 2-D [N, D] array, got shape {features.shape}",
                           code="features_invalid")
    if features.shape[0] != image_count:
        raise InvalidInput(
            f"features have {features.shape[0]} rows but the manifest has {image_count} images",
            code="features_invalid",
        )


def score_tile(plan: ScoringPlan, emb: Embeddings, tile: Tile, backend: Backend) -> TilePartial:
    """Do one tile's work: its impostor candidates, or its genuine pairs, canonically scored."""
    universe = plan.universes[tile.universe]
    if tile.kind == GENUINE:
        rows, cols = genuine_pairs(universe, plan.genuine_layout(universe), tile.a, tile.b)
        first, second = universe.rows[rows], universe.cols[cols]
        bits = universe.row_bits[rows] & universe.col_bits[cols]
        keep = bits != 0
        first, second, bits = first[keep], second[keep], bits[keep]
        both_valid = plan.valid[first] & plan.valid[second]
        scores = np.full(first.shape[0], -np.inf)
        scores[both_valid] = backend.canonical(emb, first[both_valid], second[both_valid])
        empty = np.empty(0, dtype=np.int64)
        return TilePartial(plan.digest, tile, bits, scores, empty, empty)
    first, second, bits, scores = backend.impostor_candidates(emb, plan.impostor_job(tile))
    return TilePartial(plan.digest, tile, bits, scores, first, second)


@dataclass
class ScoreReport:
    challenge: Challenge
    results: dict[str, Result]
    backend: str
    rounds: int
    pairs: int  # impostor-tile pairs computed, all rounds
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ranking_score(self) -> Fraction | None:
        return self.challenge.ranking_score({pid: rate_of(r) for pid, r in self.results.items()})

    def to_json(self, *, roc: bool = False) -> dict:
        """The DESIGN.md section 7 document; ``roc`` adds a top-level "roc" key (TAR kinds)."""
        doc: dict = {"protocols": {pid: result_json(r) for pid, r in self.results.items()}}
        ranking = self.ranking_score
        if ranking is not None:
            doc["ranking_score"] = float(ranking)
        if roc:
            doc["roc"] = {pid: [roc_json(p) for p in r.roc] for pid, r in self.results.items()
                          if isinstance(r, ProtocolResult)}
        return doc


def rate_of(result) -> Fraction:
    """The exact rate a protocol ranks by: its ``tar``, ``accuracy`` or ``tpir``."""
    return Fraction(getattr(result, result.protocol.rate))


def result_json(result) -> dict:
    """A protocol's fields by kind (DESIGN.md section 3.1)."""
    return protocol_json(result) if isinstance(result, ProtocolResult) else result.to_json()


def threshold_json(value: float) -> float | None:
    """Thresholds are float64 canonical scores; -inf (accept every finite score) is null."""
    return None if value == float("-inf") else float(value)


def protocol_json(result: ProtocolResult) -> dict:
    return {
        "tar": float(result.tar),
        "far": float(result.far),
        "threshold": threshold_json(result.threshold),
        "genuine": result.genuine,
        "impostor": result.impostor,
        "genuine_accepted": result.genuine_accepted,
        "impostors_accepted": result.impostors_accepted,
    }


def roc_json(point: RocPoint) -> dict:
    return {"far": float(point.far), "tar": float(point.tar),
            "threshold": threshold_json(point.threshold), "exact": point.exact}


def run_rounds(plan: ScoringPlan, emb: Embeddings | None, backend: Backend | None,
               progress: Progress | None = None,
               workers: Callable[[ScoringPlan], Iterable[TilePartial]] | None = None,
               ) -> tuple[dict[str, ProtocolResult], int, int]:
    """Score every round until each protocol is proven; returns (results, rounds, pairs).

    ``workers(plan)``, when given, returns the partials of every tile of a
    round from wherever it likes (the tests simulate a pool with it); else the
    tiles run here on ``backend``.
    """
    results: dict[str, ProtocolResult] = {}
    pairs = 0
    current: ScoringPlan | None = plan
    while current is not None:
        if workers is not None:
            partials = list(workers(current))
        else:
            total = sum(current.tile_pairs(t) for t in current.tiles if t.kind != GENUINE)
            done = 0
            partials = []
            for tile in current.tiles:
                partials.append(score_tile(current, emb, tile, backend))
                if tile.kind != GENUINE:
                    done += current.tile_pairs(tile)
                    if progress is not None:
                        progress(done, total, current.round)
        pairs += sum(current.tile_pairs(t) for t in current.tiles if t.kind != GENUINE)
        outcome = merge(current, partials)
        results.update(outcome.results)
        last_round = current.round
        current = outcome.retry
    ordered = {pid: results[pid] for pid in plan.protocols}
    return ordered, last_round, pairs


def score_listed(emb: Embeddings, labels: ImageLabels, protocols: Iterable[Protocol],
                 files: Mapping[str, ProtocolFiles], backend: Backend | None = None,
                 ) -> dict[str, Result]:
    """The protocols the plan does not cover: ``pairs`` and ``templates`` from their parsed
    files (canonical scores of exactly the listed pairs), and ``identification``."""
    results: dict = {}
    for protocol in protocols:
        if protocol.kind in PLANNED_KINDS:
            continue
        if protocol.kind == "identification":
            results[protocol.id] = _identification(emb, labels, protocol)
            continue
        parsed = files.get(protocol.id)
        if parsed is None:
            raise InvalidInput(f"protocol {protocol.id!r}: its files "
                               f"({', '.join(protocol.files)}) were not read",
                               code="protocol_files_missing")
        if protocol.kind == "pairs":
            results[protocol.id] = score_pairs(emb, parsed.pairs, protocol, backend)
        else:
            results[protocol.id] = score_templates(emb, parsed.templates, parsed.pairs,
                                                   protocol, backend)
    return results


def _identification(emb: Embeddings, labels: ImageLabels, protocol: Protocol):
    # Its own module (FAISS search); absent in a build without it.
    if importlib.util.find_spec("services.scorer.engine.kinds.identification") is None:
        raise InvalidInput(f"protocol {protocol.id!r}: kind 'identification' is not supported "
                           "by this scorer", code="unsupported_kind")
    from services.scorer.engine.kinds.identification import score_identification

    return score_identification(emb, labels, protocol)


def score(
    features: np.ndarray,
    labels: ImageLabels,
    challenge: Challenge,
    *,
    protocols: list[str] | None = None,
    files: Mapping[str, ProtocolFiles] | None = None,
    backend: Backend | str | None = None,
    progress: Progress | None = None,
    tile_size: int = TILE_SIZE,
    floor_settings: FloorSettings = DEFAULT_FLOORS,
) -> ScoreReport:
    """Exact rates (DESIGN.md sections 3, 3.1) of every protocol (or the named ones).

    ``files``: the parsed protocol files of the ``pairs``/``templates`` protocols
    (:func:`read_protocol_files`).
    """
    check_features(features, labels.count)
    if backend is None or isinstance(backend, str):
        backend = select_backend(backend)
    chosen = select_protocols(challenge, protocols)
    planned = tuple(p for p in chosen if p.kind in PLANNED_KINDS)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    emb = normalise(features)
    seconds["normalise"] = time.perf_counter() - clock
    results: dict = {}
    rounds = pairs = 0
    if planned:
        clock = time.perf_counter()
        plan = make_plan(emb, labels, planned, backend, tile_size=tile_size,
                         floor_settings=floor_settings)
        seconds["plan"] = time.perf_counter() - clock
        clock = time.perf_counter()
        results, rounds, pairs = run_rounds(plan, emb, backend, progress)
        seconds["tiles"] = time.perf_counter() - clock
    if len(planned) < len(chosen):
        clock = time.perf_counter()
        results.update(score_listed(emb, labels, chosen, files or {}, backend))
        seconds["listed"] = time.perf_counter() - clock
    ordered = {p.id: results[p.id] for p in chosen}
    return ScoreReport(challenge, ordered, backend.name, rounds, pairs, seconds)
