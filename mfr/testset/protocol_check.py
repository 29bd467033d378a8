"""A challenge's protocol files, gathered and checked for a test-set import (DESIGN.md 3.1).

The files sit beside the manifest under the names the challenge gives them. Each is
parsed by :mod:`mfr.testset.protocol_files` (the one parser: unknown paths or template
ids, bad ``same`` or ``fold`` values, each named by file and row), then checked
against what the challenge says about it:

* a ``pairs`` protocol with ``metric = "accuracy"``: fold values within
  ``1..folds`` and every fold non-empty; without a fold column, ``folds`` divides
  the number of pairs (LFW's consecutive blocks);
* an ``identification`` protocol: no manifest row carries both its gallery and its
  probe tag.

Everything is checked before anything is written, so a rejected import leaves no
trace. The bytes returned are the ones that were checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mfr.challenge import Challenge, Protocol
from mfr.errors import InvalidInput
from mfr.manifest import Manifest
from mfr.testset.layout import protocol_file_name_problem
from mfr.testset.protocol_files import PairList, read_pairs, read_template_pairs, read_templates


def _challenge_invalid(protocol: Protocol, message: str) -> InvalidInput:
    return InvalidInput(f"protocol {protocol.id!r}: {message}", code="challenge_invalid")


def check_folds(protocol: Protocol, pairs: PairList, where: str) -> None:
    """An accuracy protocol's folds: values in 1..folds and none empty, or equal blocks."""
    folds = protocol.folds
    if pairs.fold is None:
        if len(pairs) % folds:
            raise _challenge_invalid(protocol, f"folds = {folds} does not divide the "
                                               f"{len(pairs)} pairs of {where} (no fold "
                                               "column: folds are consecutive equal blocks)")
        return
    outside = np.flatnonzero(pairs.fold > folds)
    if outside.size:
        row = int(outside[0]) + 1
        raise _challenge_invalid(protocol, f"{where} row {row}: fold {int(pairs.fold[row - 1])} "
                                           f"is outside 1..{folds} (folds = {folds})")
    counts = np.bincount(pairs.fold, minlength=folds + 1)[1:]
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise _challenge_invalid(protocol, f"{where}: fold {int(empty[0]) + 1} has no pairs "
                                           f"(folds = {folds})")


def check_split(protocol: Protocol, manifest: Manifest, manifest_name: str) -> None:
    """An identification protocol's gallery and probe are disjoint sets of images."""
    both = np.flatnonzero(manifest.tag_mask(protocol.gallery) & manifest.tag_mask(protocol.probe))
    if both.size:
        row = int(both[0]) + 1
        raise InvalidInput(
            f"manifest {manifest_name} row {row} ({manifest.paths[row - 1]}): carries both the "
            f"gallery tag {protocol.gallery!r} and the probe tag {protocol.probe!r} of "
            f"protocol {protocol.id!r} ({both.size} such image(s)); an image is either "
            "enrolled or searched", code="manifest_invalid")


def _read(protocol: Protocol, folder: Path, name: str, cache: dict[str, bytes]) -> Path:
    problem = protocol_file_name_problem(name)
    if problem:
        raise _challenge_invalid(protocol, f"file {name!r} {problem}")
    path = folder / name
    if name not in cache:
        try:
            cache[name] = path.read_bytes()
        except FileNotFoundError:
            raise InvalidInput(f"protocol {protocol.id!r}: file {name!r} is not beside the "
                               f"manifest ({path} does not exist)",
                               code="protocol_file_missing") from None
        except OSError as exc:
            raise InvalidInput(f"protocol {protocol.id!r}: cannot read {path}: {exc.strerror}",
                               code="protocol_file_missing") from None
    return path


def gather_protocol_files(challenge: Challenge, manifest: Manifest, folder: str | Path,
                          manifest_name: str = "manifest.csv") -> dict[str, bytes]:
    """Name -> bytes of every file the challenge's protocols name, read from ``folder``
    (the manifest's folder) and checked; raises the first problem found."""
    folder = Path(folder)
    image_index = {path: row for row, path in enumerate(manifest.paths)}
    files: dict[str, bytes] = {}
    parsed: dict[tuple[str, ...], PairList] = {}  # protocols may share files (ijbc-1e-4, -1e-5)
    for protocol in challenge.protocols:
        if protocol.kind == "identification":
            check_split(protocol, manifest, manifest_name)
        paths = [_read(protocol, folder, name, files) for name in protocol.files]
        key = (protocol.kind, *protocol.files)
        if protocol.kind == "pairs":
            if key not in parsed:
                parsed[key] = read_pairs(paths[0], image_index)
            if protocol.metric == "accuracy":
                check_folds(protocol, parsed[key], f"protocol file {paths[0]}")
        elif protocol.kind == "templates" and key not in parsed:
            templates = read_templates(folder / protocol.templates, image_index)
            parsed[key] = read_template_pairs(folder / protocol.pairs, templates.template_index)
    return files
