"""Test-set manifests (DESIGN.md section 7): ``path,identity,tags`` CSV, row = image index.

Identities are strings and compared as strings ("00017" is not "17"); the
scoring code works on dense integer identity codes derived from them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mfr.errors import InvalidInput

HEADER = ("path", "identity", "tags")


@dataclass(frozen=True)
class Manifest:
    paths: tuple[str, ...]
    identities: tuple[str, ...]
    tags: tuple[frozenset[str], ...]

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def identity_codes(self) -> np.ndarray:
        """int64 code per row; equal codes iff equal identity strings."""
        _, codes = np.unique(np.array(self.identities, dtype=object), return_inverse=True)
        return codes.astype(np.int64)

    def tag_mask(self, tag: str) -> np.ndarray:
        return np.fromiter((tag in t for t in self.tags), dtype=bool, count=len(self.tags))

    @cached_property
    def all_tags(self) -> frozenset[str]:
        return frozenset().union(*self.tags) if self.tags else frozenset()


def parse_tags(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(";") if t.strip())


def read_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest; errors name the row (1 = first data row)."""
    paths: list[str] = []
    identities: list[str] = []
    tags: list[frozenset[str]] = []
    # A test set has a handful of distinct tag lists: parse each once, and share the sets
    # (MR-All's 1.6 million rows would otherwise pay ~2 us each).
    parsed: dict[str, frozenset[str]] = {}
    try:
        handle = Path(path).open(newline="", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InvalidInput(f"cannot read manifest {path}: {exc.strerror}", code="manifest_invalid") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise InvalidInput(
                f"manifest {path}: header must be {','.join(HEADER)}, got {header}",
                code="manifest_invalid",
            )
        for row_number, row in enumerate(reader, start=1):
            if len(row) != 3:
                raise InvalidInput(
                    f"manifest {path} row {row_number}: expected 3 fields, got {len(row)}",
                    code="manifest_invalid",
                )
            image_path, identity, tag_text = row
            if not identity:
                raise InvalidInput(
                    f"manifest {path} row {row_number}: empty identity", code="manifest_invalid"
                )
            paths.append(image_path)
            identities.append(identity)
            tag_set = parsed.get(tag_text)
            if tag_set is None:
                tag_set = parsed[tag_text] = parse_tags(tag_text)
            tags.append(tag_set)
    if not paths:
        raise InvalidInput(f"manifest {path}: no rows", code="manifest_invalid")
    return Manifest(tuple(paths), tuple(identities), tuple(tags))


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for image_path, identity, tag_set in zip(manifest.paths, manifest.identities, manifest.tags):
            writer.writerow((image_path, identity, ";".join(sorted(tag_set))))
