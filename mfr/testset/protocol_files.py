"""Protocol files (DESIGN.md section 3.1): the one place that parses them.

Three CSVs, each with a header, beside the test set's manifest:

* pair lists ``first,second,same[,fold]`` of manifest paths (:func:`read_pairs`);
* templates ``path,template,media`` (:func:`read_templates`);
* template pair lists ``first,second,same`` of template ids (:func:`read_template_pairs`).

Every problem raises :class:`InvalidInput` with code ``protocol_file_invalid`` and a
message naming the file, the row (1 = first data row) and the reason. Rows are parsed
by the csv module in chunks and checked column-wise with numpy, so a list of 15
million IJB-C template pairs costs its int64 arrays, not a Python object per row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mfr.errors import InvalidInput

__all__ = [
    "CODE", "PAIRS_HEADER", "TEMPLATES_HEADER", "TEMPLATE_PAIRS_HEADER", "PairList",
    "TemplateList", "read_pairs", "read_template_pairs", "read_templates",
]

CODE = "protocol_file_invalid"
PAIRS_HEADER = ("first", "second", "same")  # optional fourth column: fold
TEMPLATES_HEADER = ("path", "template", "media")
TEMPLATE_PAIRS_HEADER = ("first", "second", "same")
_CHUNK = 1 << 18  # rows parsed per numpy pass


@dataclass(frozen=True)
class PairList:
    """Listed pairs in file order, duplicates kept: row indices (images or templates)."""

    first: np.ndarray  # int64 [P]
    second: np.ndarray  # int64 [P]
    same: np.ndarray  # bool [P]: 1 genuine, 0 impostor, as listed
    fold: np.ndarray | None = None  # int64 [P] (>= 1) when the file has a fold column

    def __len__(self) -> int:
        return int(self.first.shape[0])


@dataclass(frozen=True)
class TemplateList:
    """The rows of a templates file, in file order, as dense codes.

    Template codes number the template ids in order of first appearance
    (``template_ids[code]``); media codes likewise number the media ids. A media
    id names a group of images *within* a template; an image (path) may be listed
    in several templates.
    """

    image: np.ndarray  # int64 [R] manifest row of each file row
    template: np.ndarray  # int64 [R] template code
    media: np.ndarray  # int64 [R] media code
    template_ids: tuple[str, ...]
    media_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @cached_property
    def template_index(self) -> dict[str, int]:
        """Template id -> template code (what :func:`read_template_pairs` needs)."""
        return {tid: code for code, tid in enumerate(self.template_ids)}


def _fail(path: Path, row: int | None, reason: str) -> InvalidInput:
    where = f"protocol file {path}" + (f" row {row}" if row is not None else "")
    return InvalidInput(f"{where}: {reason}", code=CODE)


def _chunks(path: Path, headers: tuple[tuple[str, ...], ...]
            ) -> Iterator[tuple[tuple[str, ...], int, list[list[str]]]]:
    """(header, first row number, rows) per chunk; checks the header and field counts."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise _fail(path, None, f"cannot read it: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            names = tuple(h.strip() for h in header) if header else None
            if names not in headers:
                wanted = " or ".join(",".join(h) for h in headers)
                raise _fail(path, None, f"header must be {wanted}, got "
                                        f"{','.join(header) if header else 'nothing'}")
            width, start, rows = len(names), 1, []
            for row in reader:
                if len(row) != width:
                    raise _fail(path, start + len(rows),
                                f"expected {width} fields, got {len(row)}")
                rows.append(row)
                if len(rows) == _CHUNK:
                    yield names, start, rows
                    start, rows = start + len(rows), []
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _fail(path, None, f"not a UTF-8 CSV: {exc}") from None
        if start == 1 and not rows:
            raise _fail(path, None, "no rows")
        if rows:
            yield names, start, rows


def _lookup(path: Path, start: int, column: list[str], index: Mapping[str, int],
            what: str) -> np.ndarray:
    """Row indices of the column's values; each distinct value is looked up once."""
    values, inverse = np.unique(np.asarray(column, dtype=object), return_inverse=True)
    codes = np.empty(values.shape[0], dtype=np.int64)
    for position, value in enumerate(values):
        code = index.get(value)
        if code is None:
            row = start + int(np.flatnonzero(inverse == position)[0])
            raise _fail(path, row, f"unknown {what} {value!r}")
        codes[position] = code
    return codes[inverse.reshape(-1)]


def _same(path: Path, start: int, column: list[str]) -> np.ndarray:
    values = np.char.strip(np.asarray(column, dtype=str))
    ok = (values == "0") | (values == "1")
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise _fail(path, start + bad, f"same must be 0 or 1, got {column[bad]!r}")
    return values == "1"


def _folds(path: Path, start: int, column: list[str]) -> np.ndarray:
    values = np.char.strip(np.asarray(column, dtype=str))
    ok = np.char.isdigit(values) & (np.char.str_len(values) <= 9)
    folds = np.zeros(values.shape[0], dtype=np.int64)
    folds[ok] = values[ok].astype(np.int64)
    ok &= folds >= 1
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise _fail(path, start + bad, f"fold must be a positive integer, got {column[bad]!r}")
    return folds


def _pair_list(path: str | Path, index: Mapping[str, int], what: str,
               headers: tuple[tuple[str, ...], ...]) -> PairList:
    path = Path(path)
    first, second, same, fold = [], [], [], []
    for names, start, rows in _chunks(path, headers):
        columns = list(zip(*rows, strict=True))
        first.append(_lookup(path, start, columns[0], index, what))
        second.append(_lookup(path, start, columns[1], index, what))
        same.append(_same(path, start, columns[2]))
        if len(names) == 4:
            fold.append(_folds(path, start, columns[3]))
    return PairList(np.concatenate(first), np.concatenate(second), np.concatenate(same),
                    np.concatenate(fold) if fold else None)


def read_pairs(path: str | Path, image_index: Mapping[str, int]) -> PairList:
    """A pair list ``first,second,same[,fold]``; ``image_index``: manifest path -> row."""
    return _pair_list(path, image_index, "image path", (PAIRS_HEADER, (*PAIRS_HEADER, "fold")))


def read_template_pairs(path: str | Path, template_ids: Mapping[str, int]) -> PairList:
    """A template pair list ``first,second,same``; ``template_ids``: id -> template code
    (:attr:`TemplateList.template_index`)."""
    return _pair_list(path, template_ids, "template id", (TEMPLATE_PAIRS_HEADER,))


def read_templates(path: str | Path, image_index: Mapping[str, int]) -> TemplateList:
    """A templates file ``path,template,media``; ``image_index``: manifest path -> row."""
    path = Path(path)
    images, templates, media = [], [], []
    for _, start, rows in _chunks(path, (TEMPLATES_HEADER,)):
        columns = list(zip(*rows, strict=True))
        images.append(_lookup(path, start, columns[0], image_index, "image path"))
        for column, out, what in ((columns[1], templates, "template"),
                                  (columns[2], media, "media")):
            values = np.asarray(column, dtype=object)
            empty = np.flatnonzero(values == "")
            if empty.size:
                raise _fail(path, start + int(empty[0]), f"empty {what} id")
            out.append(values)
    template_ids, template = _first_appearance(np.concatenate(templates))
    media_ids, media_codes = _first_appearance(np.concatenate(media))
    return TemplateList(np.concatenate(images), template, media_codes, template_ids, media_ids)


def _first_appearance(values: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Distinct values in order of first appearance, and each row's code among them."""
    distinct, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(order.shape[0], dtype=np.int64)
    rank[order] = np.arange(order.shape[0])
    return tuple(str(v) for v in distinct[order]), rank[inverse.reshape(-1)]
