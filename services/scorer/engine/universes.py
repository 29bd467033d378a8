"""Universes: the pair spaces that one pass computes, and the exact pair counts.

A *universe* is either the all-to-all set of one "all" protocol, which also
serves every other "all" protocol whose images lie inside it (MR-All carries
the four race protocols), or the probe x gallery rectangle of a cross
protocol (shared by other cross protocols whose probe and gallery sets lie
inside it). Each image of a universe carries a protocol bitmask; a pair
belongs to the protocols ``row_bits[r] & col_bits[c]``.

Pair counts are exact integers from identity histograms, known before any
score is computed:

- all, n images: ``n (n - 1) / 2`` unordered pairs; genuine
  ``sum_id c (c - 1) / 2``.
- cross, probe set P, gallery set G: every ordered (probe, gallery) pair of
  two different images: ``|P| |G| - |P & G|``; genuine
  ``sum_id p_id g_id - |P & G|``. An image with both tags is a probe and a
  gallery image; only the pair of the image with itself is dropped.

Impostor = pairs - genuine. "Valid" counts are the same sums over valid
(finite, non-zero) images: impostor pairs outside them score -inf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mfr.challenge import Challenge, Protocol
from mfr.errors import InvalidInput
from mfr.manifest import Manifest

MAX_PROTOCOLS_PER_UNIVERSE = 63  # bits of an int64 mask, sign bit unused


@dataclass(frozen=True)
class ImageLabels:
    """What scoring needs from a test set: identities and tag membership.

    ``identity`` may hold strings or integers; it is replaced by dense int64
    codes (0 .. identities - 1), equal iff the given values are equal, so
    "00017" and "17" stay two people.
    """

    identity: np.ndarray  # int64 [N] dense codes after construction
    tags: Mapping[str, np.ndarray] = field(default_factory=dict)  # tag -> bool [N]

    def __post_init__(self) -> None:
        values = np.asarray(self.identity)
        if values.ndim != 1:
            raise InvalidInput("identities must be one per image", code="labels_invalid")
        _, codes = np.unique(values, return_inverse=True)
        object.__setattr__(self, "identity", codes.astype(np.int64).reshape(-1))
        tags = {}
        for tag, mask in self.tags.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != values.shape:
                raise InvalidInput(f"tag {tag!r}: {mask.shape[0] if mask.ndim else 0} flags "
                                   f"for {values.shape[0]} images", code="labels_invalid")
            tags[tag] = mask
        object.__setattr__(self, "tags", tags)

    @property
    def count(self) -> int:
        return int(self.identity.shape[0])

    def tag_mask(self, tag: str) -> np.ndarray:
        mask = self.tags.get(tag)
        return np.zeros(self.count, dtype=bool) if mask is None else mask

    @classmethod
    def from_manifest(cls, manifest: Manifest, tags: set[str] | None = None) -> ImageLabels:
        wanted = manifest.all_tags if tags is None else tags
        return cls(
            identity=manifest.identity_codes,  # already dense codes of the strings
            tags={tag: manifest.tag_mask(tag) for tag in sorted(wanted)},
        )


@dataclass(frozen=True)
class PairCounts:
    """Exact pair counts of one protocol (Python ints: no overflow)."""

    pairs: int
    genuine: int
    valid_pairs: int
    valid_genuine: int

    @property
    def impostor(self) -> int:
        return self.pairs - self.genuine

    @property
    def valid_impostor(self) -> int:
        return self.valid_pairs - self.valid_genuine


@dataclass
class Universe:
    """One pass's pair space. Positions index ``rows``/``cols`` (sorted image indices)."""

    index: int
    kind: str  # "all" | "cross"
    protocol_ids: tuple[str, ...]  # bit b of a mask is protocol_ids[b]
    rows: np.ndarray  # int64 image indices, ascending
    cols: np.ndarray  # the same array object for "all"
    row_bits: np.ndarray  # int64 membership masks per row position
    col_bits: np.ndarray

    @property
    def symmetric(self) -> bool:
        return self.kind == "all"

    @property
    def pairs(self) -> int:
        n_rows, n_cols = len(self.rows), len(self.cols)
        if self.symmetric:
            return n_rows * (n_rows - 1) // 2
        return n_rows * n_cols  # self pairs included here; they are genuine, never impostor

    def bit(self, protocol_id: str) -> int:
        return self.protocol_ids.index(protocol_id)


def protocol_sets(protocol: Protocol, labels: ImageLabels) -> tuple[np.ndarray, np.ndarray]:
    """(row set, column set) as bool masks over images."""
    if protocol.kind == "all":
        members = labels.tag_mask(protocol.tag)
        return members, members
    return labels.tag_mask(protocol.probe), labels.tag_mask(protocol.gallery)


def count_pairs(protocol: Protocol, labels: ImageLabels, valid: np.ndarray) -> PairCounts:
    rows, cols = protocol_sets(protocol, labels)
    return PairCounts(
        *_counts(protocol.kind, rows, cols, labels.identity),
        *_counts(protocol.kind, rows & valid, cols & valid, labels.identity),
    )


def _counts(kind: str, rows: np.ndarray, cols: np.ndarray, identity: np.ndarray) -> tuple[int, int]:
    size = int(identity.max()) + 1 if identity.size else 0
    if kind == "all":
        n = int(rows.sum())
        per_identity = np.bincount(identity[rows], minlength=size).astype(np.int64)
        genuine = int((per_identity * (per_identity - 1) // 2).sum())
        return n * (n - 1) // 2, genuine
    both = int((rows & cols).sum())
    probe = np.bincount(identity[rows], minlength=size).astype(np.int64)
    gallery = np.bincount(identity[cols], minlength=size).astype(np.int64)
    pairs = int(rows.sum()) * int(cols.sum()) - both
    return pairs, int((probe * gallery).sum()) - both


def check_scorable(protocol: Protocol, labels: ImageLabels, counts: PairCounts) -> None:
    """A protocol without genuine or impostor pairs has no TAR@FAR: say why."""
    rows, cols = protocol_sets(protocol, labels)
    if protocol.kind == "all":
        where = f"images tagged {protocol.tag!r}"
        if not rows.any():
            raise _unscorable(protocol, f"no image is tagged {protocol.tag!r}")
    else:
        where = f"probe {protocol.probe!r} x gallery {protocol.gallery!r} pairs"
        if not rows.any() or not cols.any():
            missing = protocol.probe if not rows.any() else protocol.gallery
            raise _unscorable(protocol, f"no image is tagged {missing!r}")
    if counts.genuine == 0:
        raise _unscorable(protocol, f"no genuine pair (same identity) among the {where}")
    if counts.impostor == 0:
        raise _unscorable(protocol, f"no impostor pair (different identities) among the {where}")


def _unscorable(protocol: Protocol, why: str) -> InvalidInput:
    return InvalidInput(
        f"protocol {protocol.id!r} cannot be scored: {why}", code="protocol_unscorable"
    )


def build_universes(protocols: tuple[Protocol, ...], labels: ImageLabels) -> list[Universe]:
    """Group protocols into as few passes as containment allows (deterministic).

    Larger sets are placed first, so a set joins the first universe that
    contains it; ties keep the challenge's protocol order.
    """
    sets = {p.id: protocol_sets(p, labels) for p in protocols}
    order = sorted(
        protocols, key=lambda p: -int(sets[p.id][0].sum()) * int(sets[p.id][1].sum())
    )
    groups: list[tuple[str, np.ndarray, np.ndarray, list[Protocol]]] = []
    for protocol in order:
        rows, cols = sets[protocol.id]
        for kind, g_rows, g_cols, members in groups:
            if (
                kind == protocol.kind
                and len(members) < MAX_PROTOCOLS_PER_UNIVERSE
                and not (rows & ~g_rows).any()
                and not (cols & ~g_cols).any()
            ):
                members.append(protocol)
                break
        else:
            groups.append((protocol.kind, rows, cols, [protocol]))
    universes = []
    for index, (kind, g_rows, g_cols, members) in enumerate(groups):
        row_images = np.flatnonzero(g_rows).astype(np.int64)
        col_images = row_images if kind == "all" else np.flatnonzero(g_cols).astype(np.int64)
        row_bits = np.zeros(len(row_images), dtype=np.int64)
        col_bits = row_bits if kind == "all" else np.zeros(len(col_images), dtype=np.int64)
        for bit, protocol in enumerate(members):
            rows, cols = sets[protocol.id]
            row_bits[rows[row_images]] |= np.int64(1) << bit
            if kind != "all":
                col_bits[cols[col_images]] |= np.int64(1) << bit
        universes.append(
            Universe(
                index=index,
                kind=kind,
                protocol_ids=tuple(p.id for p in members),
                rows=row_images,
                cols=col_images,
                row_bits=row_bits,
                col_bits=col_bits,
            )
        )
    return universes


def select_protocols(challenge: Challenge, wanted: list[str] | None) -> tuple[Protocol, ...]:
    if not wanted:
        return challenge.protocols
    return tuple(challenge.protocol(pid) for pid in dict.fromkeys(wanted))
