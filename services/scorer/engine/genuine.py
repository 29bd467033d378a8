"""Genuine pairs, enumerated from identity groups in a fixed order.

Genuine pairs are few (MR-All: 4.7 million against 1.3e12 impostors), so they
are listed, not searched for, and every one is scored canonically. The list is
never materialised whole: a genuine tile is a range ``[start, stop)`` of pair
ordinals, and :func:`genuine_pairs` builds just that range, so the work can be
cut into tiles of bounded memory and handed to any worker.

Order: universe positions are sorted by (identity, position); the pairs of the
element at sorted index ``s`` come together, its partners in ascending sorted
index. For a cross universe the partners of a probe are the gallery images of
its identity, the image itself excluded (it is counted in the ordinals but
dropped from the range's output, so ranges stay fixed by the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from services.scorer.engine.universes import Universe


@dataclass(frozen=True)
class GenuineLayout:
    """Per sorted row element: partner count and where its pairs start."""

    row_order: np.ndarray  # sorted index -> row position
    col_order: np.ndarray  # sorted index -> col position
    partner_start: np.ndarray  # first partner's sorted col index
    partner_count: np.ndarray
    first_ordinal: np.ndarray  # ordinal of the element's first pair

    @cached_property
    def total(self) -> int:
        return int(self.partner_count.sum())


def genuine_layout(universe: Universe, identity: np.ndarray) -> GenuineLayout:
    row_identity = identity[universe.rows]
    row_order = np.argsort(row_identity, kind="stable")
    sorted_rows = row_identity[row_order]
    if universe.symmetric:
        col_order = row_order
        group_end = np.searchsorted(sorted_rows, sorted_rows, side="right")
        index = np.arange(len(sorted_rows), dtype=np.int64)
        partner_start = index + 1
        partner_count = group_end - index - 1
    else:
        col_identity = identity[universe.cols]
        col_order = np.argsort(col_identity, kind="stable")
        sorted_cols = col_identity[col_order]
        partner_start = np.searchsorted(sorted_cols, sorted_rows, side="left")
        partner_count = np.searchsorted(sorted_cols, sorted_rows, side="right") - partner_start
    partner_count = partner_count.astype(np.int64)
    first_ordinal = np.cumsum(partner_count) - partner_count
    return GenuineLayout(row_order, col_order, partner_start.astype(np.int64), partner_count,
                         first_ordinal)


def genuine_pairs(
    universe: Universe, layout: GenuineLayout, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column positions of the genuine pairs with ordinals in [start, stop)."""
    ends = layout.first_ordinal + layout.partner_count
    first = int(np.searchsorted(ends, start, side="right"))
    last = int(np.searchsorted(layout.first_ordinal, stop, side="left"))
    elements = np.arange(first, last, dtype=np.int64)
    counts = layout.partner_count[elements]
    source = np.repeat(elements, counts)
    offsets = np.arange(source.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    ordinal = layout.first_ordinal[source] + offsets
    keep = (ordinal >= start) & (ordinal < stop)
    source, offsets = source[keep], offsets[keep]
    row_pos = layout.row_order[source]
    col_pos = layout.col_order[layout.partner_start[source] + offsets]
    if universe.symmetric:
        row_pos, col_pos = np.minimum(row_pos, col_pos), np.maximum(row_pos, col_pos)
    else:
        not_self = universe.rows[row_pos] != universe.cols[col_pos]
        row_pos, col_pos = row_pos[not_self], col_pos[not_self]
    return row_pos, col_pos
