"""The tile grid and what a tile's work leaves behind.

The pair space of each universe is cut by a grid fixed by the data (the
universe's size and a constant tile size), never by the number of workers: a
pair belongs to exactly one tile whatever the split, and a tile is always
computed by the same code path. For an all-to-all universe only tiles on or
above the diagonal exist, and a diagonal tile keeps its strict upper
triangle.

A :class:`TilePartial` is a tile's result: the impostor candidates (pairs at
or above their protocols' floor) or the genuine pairs of a genuine tile, each
with its protocol bits and canonical score. It serialises to ``.npz`` bytes
for object storage; nothing in it depends on which worker made it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfr.errors import InvalidInput
from services.scorer.engine import npz

IMPOSTOR = "impostor"
GENUINE = "genuine"

#: Rows and columns per impostor tile. Chosen by measurement (docs/scoring.md):
#: a 16384-wide strip keeps BLAS and cuBLAS at full speed, a tile is about
#: 2.7e11 flops at D = 512 (seconds on a CPU, milliseconds on a GPU), and the
#: float32 scores of a whole tile (1 GiB) still fit a GPU comfortably.
TILE_SIZE = 16384

#: Genuine pairs per genuine tile (bounded memory: 2**20 pairs).
GENUINE_TILE_PAIRS = 1 << 20


@dataclass(frozen=True, order=True)
class Tile:
    """One unit of work. Impostor: block rows ``a`` x block columns ``b``.
    Genuine: pair ordinals ``[a, b)`` of the universe's genuine enumeration."""

    universe: int
    kind: str
    a: int
    b: int

    @property
    def key(self) -> str:
        return f"{self.universe}:{self.kind}:{self.a}:{self.b}"

    @classmethod
    def from_key(cls, key: str) -> Tile:
        universe, kind, a, b = key.split(":")
        return cls(int(universe), kind, int(a), int(b))


def block_bounds(block: int, size: int, tile_size: int) -> tuple[int, int]:
    return block * tile_size, min((block + 1) * tile_size, size)


def impostor_tiles(universe_index: int, n_rows: int, n_cols: int, symmetric: bool,
                   tile_size: int) -> list[Tile]:
    row_blocks = -(-n_rows // tile_size)
    col_blocks = -(-n_cols // tile_size)
    return [
        Tile(universe_index, IMPOSTOR, a, b)
        for a in range(row_blocks)
        for b in range(a if symmetric else 0, col_blocks)
    ]


def genuine_tiles(universe_index: int, total: int, per_tile: int = GENUINE_TILE_PAIRS) -> list[Tile]:
    return [
        Tile(universe_index, GENUINE, start, min(start + per_tile, total))
        for start in range(0, total, per_tile)
    ]


@dataclass(frozen=True)
class TilePartial:
    """The result of one tile. ``first``/``second`` are image indices (impostor
    candidates only; genuine partials leave them empty to save memory)."""

    plan_digest: str
    tile: Tile
    bits: np.ndarray  # int64 protocol masks (universe bit numbering)
    score: np.ndarray  # float64 canonical scores (-inf: a pair touching an invalid image)
    first: np.ndarray  # int64
    second: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def to_bytes(self) -> bytes:
        return npz.pack({"plan": self.plan_digest, "tile": self.tile.key}, bits=self.bits,
                        score=self.score, first=self.first, second=self.second)

    @classmethod
    def from_bytes(cls, data: bytes) -> TilePartial:
        meta, arrays = npz.unpack(data, "a tile partial", "partial_invalid")
        try:
            return cls(
                plan_digest=meta["plan"],
                tile=Tile.from_key(meta["tile"]),
                bits=arrays["bits"].astype(np.int64, copy=False),
                score=arrays["score"].astype(np.float64, copy=False),
                first=arrays["first"].astype(np.int64, copy=False),
                second=arrays["second"].astype(np.int64, copy=False),
            )
        except (KeyError, ValueError) as exc:
            raise InvalidInput(f"not a tile partial: {exc}", code="partial_invalid") from None
