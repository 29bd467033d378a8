"""The scoring plan: universes, exact counts, floors and the tile list of one round.

A plan is everything a worker needs besides the embeddings: it is built once
(by the coordinator, or by ``mfr score``), serialised with :meth:`to_bytes`,
and each tile of :attr:`ScoringPlan.tiles` can then be scored anywhere by
``services.scorer.engine.score_tile``. Its digest ties partial results to it.

Round 1 searches every protocol. When merge cannot prove a floor, it returns a
plan for the next round in which only the unproven protocols are searched,
with lower floors; the universes and counts are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property

import numpy as np

from mfr.challenge import Protocol
from mfr.errors import InvalidInput
from services.scorer.engine import npz
from services.scorer.engine.backends import ImpostorJob
from services.scorer.engine.canonical import Embeddings, fast_score_margin
from services.scorer.engine.floors import (
    DEFAULT_FLOORS,
    SEARCH_DONE,
    FloorSettings,
    choose_floor,
    threshold_rank,
)
from services.scorer.engine.genuine import GenuineLayout, genuine_layout
from services.scorer.engine.tiles import (
    GENUINE_TILE_PAIRS,
    IMPOSTOR,
    TILE_SIZE,
    Tile,
    block_bounds,
    genuine_tiles,
    impostor_tiles,
)
from services.scorer.engine.universes import (
    ImageLabels,
    PairCounts,
    Universe,
    build_universes,
    check_scorable,
    count_pairs,
)


@dataclass(frozen=True)
class ProtocolPlan:
    protocol: Protocol
    universe: int
    bit: int
    counts: PairCounts
    floor: float  # float32 value; -inf keeps every pair; +inf: not searched this round
    expected: int
    sample_size: int = 0
    sample_top: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    roc_estimates: dict[Fraction, float] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        """k + 1: the threshold is the rank-th largest impostor score."""
        return threshold_rank(self.protocol.far, self.counts.impostor)

    @property
    def searched(self) -> bool:
        return self.floor != SEARCH_DONE


@dataclass(frozen=True)
class ScoringPlan:
    round: int
    count: int  # images
    dim: int
    margin: float  # bound on |fast - canonical|
    tile_size: int
    identity: np.ndarray  # int64 [N]
    valid: np.ndarray  # bool [N]
    universes: tuple[Universe, ...]
    protocols: dict[str, ProtocolPlan]  # in the order results are reported
    tiles: tuple[Tile, ...]

    @cached_property
    def digest(self) -> str:
        """Identifies this plan (and round): partials carry it, merge checks it."""
        sha = hashlib.sha256(self._meta_json().encode())
        for array in self._arrays().values():
            sha.update(np.ascontiguousarray(array).tobytes())
        return sha.hexdigest()[:32]

    def searched_protocols(self, universe: Universe) -> list[ProtocolPlan]:
        return [self.protocols[pid] for pid in universe.protocol_ids
                if pid in self.protocols and self.protocols[pid].searched]

    def floors(self, universe: Universe) -> np.ndarray:
        floors = np.full(len(universe.protocol_ids), np.inf, dtype=np.float32)
        for plan in self.searched_protocols(universe):
            floors[plan.bit] = plan.floor
        return floors

    @cached_property
    def _candidate_bits(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for universe in self.universes:
            active = np.int64(0)
            for plan in self.searched_protocols(universe):
                active |= np.int64(1) << plan.bit
            rows = np.where(self.valid[universe.rows], universe.row_bits & active, 0)
            cols = rows if universe.symmetric else np.where(
                self.valid[universe.cols], universe.col_bits & active, 0)
            out[universe.index] = (rows, cols)
        return out

    def impostor_job(self, tile: Tile) -> ImpostorJob:
        universe = self.universes[tile.universe]
        row_bits, col_bits = self._candidate_bits[universe.index]
        floors = self.floors(universe)
        return ImpostorJob(
            rows=universe.rows,
            cols=universe.cols,
            row_bits=row_bits,
            col_bits=col_bits,
            identity=self.identity,
            row_span=block_bounds(tile.a, len(universe.rows), self.tile_size),
            col_span=block_bounds(tile.b, len(universe.cols), self.tile_size),
            upper=universe.symmetric and tile.a == tile.b,
            floors=floors,
            floor_min=np.float32(floors.min()),
        )

    def genuine_layout(self, universe: Universe) -> GenuineLayout:
        cache = self.__dict__.setdefault("_layouts", {})
        if universe.index not in cache:
            cache[universe.index] = genuine_layout(universe, self.identity)
        return cache[universe.index]

    def tile_pairs(self, tile: Tile) -> int:
        """Pairs a tile covers (impostor tiles: every pair of the rectangle or triangle)."""
        if tile.kind != IMPOSTOR:
            return tile.b - tile.a
        job = self.impostor_job(tile)
        rows = job.row_span[1] - job.row_span[0]
        if job.upper:
            return rows * (rows - 1) // 2
        return rows * (job.col_span[1] - job.col_span[0])

    # -- next round -------------------------------------------------------

    def next_round(self, floors: dict[str, tuple[float, int]]) -> ScoringPlan:
        """The plan that searches only ``floors``' protocols, at the given floors."""
        protocols = {
            pid: (replace(p, floor=floors[pid][0], expected=floors[pid][1]) if pid in floors
                  else replace(p, floor=SEARCH_DONE))
            for pid, p in self.protocols.items()
        }
        plan = replace(self, round=self.round + 1, protocols=protocols, tiles=())
        return replace(plan, tiles=_tiles(plan))

    # -- serialisation ----------------------------------------------------

    def _meta_json(self) -> str:
        return json.dumps({
            "round": self.round, "count": self.count, "dim": self.dim, "margin": self.margin,
            "tile_size": self.tile_size,
            "universes": [{"index": u.index, "kind": u.kind, "protocols": list(u.protocol_ids)}
                          for u in self.universes],
            "protocols": [_protocol_meta(p) for p in self.protocols.values()],
            "tiles": [t.key for t in self.tiles],
        }, sort_keys=True)

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"identity": self.identity, "valid": self.valid}
        for u in self.universes:
            arrays[f"u{u.index}_rows"] = u.rows
            arrays[f"u{u.index}_row_bits"] = u.row_bits
            if not u.symmetric:
                arrays[f"u{u.index}_cols"] = u.cols
                arrays[f"u{u.index}_col_bits"] = u.col_bits
        for pid, p in self.protocols.items():
            arrays[f"p_{pid}_sample_top"] = p.sample_top
        return arrays

    def to_bytes(self) -> bytes:
        return npz.pack(self._meta_json(), **self._arrays())

    @classmethod
    def from_bytes(cls, data: bytes) -> ScoringPlan:
        meta, arrays = npz.unpack(data, "a scoring plan", "plan_invalid")
        universes = []
        for u in meta["universes"]:
            i = u["index"]
            rows, row_bits = arrays[f"u{i}_rows"], arrays[f"u{i}_row_bits"]
            symmetric = u["kind"] == "all"
            universes.append(Universe(
                index=i, kind=u["kind"], protocol_ids=tuple(u["protocols"]),
                rows=rows, cols=rows if symmetric else arrays[f"u{i}_cols"],
                row_bits=row_bits, col_bits=row_bits if symmetric else arrays[f"u{i}_col_bits"],
            ))
        protocols = {}
        for p in meta["protocols"]:
            protocols[p["id"]] = ProtocolPlan(
                protocol=Protocol(id=p["id"], kind=p["kind"], far=Fraction(p["far"]),
                                  tag=p["tag"], probe=p["probe"], gallery=p["gallery"],
                                  title=p["title"]),
                universe=p["universe"], bit=p["bit"], counts=PairCounts(*p["counts"]),
                floor=float(p["floor"]), expected=p["expected"], sample_size=p["sample_size"],
                sample_top=arrays[f"p_{p['id']}_sample_top"],
                roc_estimates={Fraction(k): float(v) for k, v in p["roc_estimates"]},
            )
        return cls(
            round=meta["round"], count=meta["count"], dim=meta["dim"], margin=meta["margin"],
            tile_size=meta["tile_size"], identity=arrays["identity"], valid=arrays["valid"],
            universes=tuple(universes), protocols=protocols,
            tiles=tuple(Tile.from_key(k) for k in meta["tiles"]),
        )


def _protocol_meta(p: ProtocolPlan) -> dict:
    pr = p.protocol
    return {
        "id": pr.id, "kind": pr.kind, "far": str(pr.far), "tag": pr.tag, "probe": pr.probe,
        "gallery": pr.gallery, "title": pr.title, "universe": p.universe, "bit": p.bit,
        "counts": [p.counts.pairs, p.counts.genuine, p.counts.valid_pairs,
                   p.counts.valid_genuine],
        "floor": repr(p.floor), "expected": p.expected, "sample_size": p.sample_size,
        "roc_estimates": [[str(k), repr(v)] for k, v in p.roc_estimates.items()],
    }


def _tiles(plan: ScoringPlan) -> tuple[Tile, ...]:
    tiles: list[Tile] = []
    for universe in plan.universes:
        if not plan.searched_protocols(universe):
            continue
        tiles += genuine_tiles(universe.index, plan.genuine_layout(universe).total,
                               GENUINE_TILE_PAIRS)
        tiles += impostor_tiles(universe.index, len(universe.rows), len(universe.cols),
                                universe.symmetric, plan.tile_size)
    return tuple(tiles)


def make_plan(
    emb: Embeddings,
    labels: ImageLabels,
    protocols: tuple[Protocol, ...],
    backend,
    *,
    tile_size: int = TILE_SIZE,
    floor_settings: FloorSettings = DEFAULT_FLOORS,
) -> ScoringPlan:
    """Round 1: check every protocol is scorable, group them, pick floors, list tiles.

    Only ``all`` and ``cross`` protocols are planned; the other kinds (listed pairs,
    identification) are scored outside the tiles and are skipped here.
    """
    protocols = tuple(p for p in protocols if p.kind in ("all", "cross"))
    if labels.count != emb.count:
        raise InvalidInput(
            f"{emb.count} feature rows for {labels.count} images", code="features_invalid"
        )
    counts = {}
    for protocol in protocols:
        counts[protocol.id] = count_pairs(protocol, labels, emb.valid)
        check_scorable(protocol, labels, counts[protocol.id])
    universes = tuple(build_universes(protocols, labels))
    where = {pid: (u.index, u.bit(pid)) for u in universes for pid in u.protocol_ids}
    plans = {}
    for protocol in protocols:
        index, bit = where[protocol.id]
        c = counts[protocol.id]
        choice = choose_floor(backend, emb, labels.identity, universes[index], bit, protocol.far,
                              c.impostor, c.valid_impostor, 1, floor_settings)
        plans[protocol.id] = ProtocolPlan(
            protocol=protocol, universe=index, bit=bit, counts=c, floor=choice.floor,
            expected=choice.expected, sample_size=choice.sample_size,
            sample_top=choice.sample_top, roc_estimates=choice.roc_estimates,
        )
    plan = ScoringPlan(
        round=1, count=emb.count, dim=emb.dim, margin=fast_score_margin(emb.dim),
        tile_size=tile_size, identity=labels.identity.astype(np.int64, copy=False),
        valid=emb.valid, universes=universes, protocols=plans, tiles=(),
    )
    return replace(plan, tiles=_tiles(plan))
