"""``kind = "templates"`` (IJB-C style): image features pooled into templates (DESIGN.md 3.1).

Media feature = float64 mean of its valid images' unit embeddings, summed in the
templates file's row order (an image listed twice counts twice); template
feature = float64 sum of its media features in order of the media's first row
in the file, then the canonical normalisation (``normalise`` reads float64
exactly). A media without a valid image contributes nothing; a template without
a valid image has a zero feature, which the normalisation marks invalid (-inf),
as it does a template whose media features happen to cancel.

Sums are sequential in a fixed order, vectorised across groups: step j adds the
j-th member of every group at once (no two members of one step share a group),
so the bits never depend on chunking or threads. Templates are pooled in chunks
to keep the float64 media sums small (IJB-C: ~470k rows, 23k templates).
"""

from __future__ import annotations

import numpy as np

from mfr.protocols import Protocol
from mfr.testset.protocol_files import PairList, TemplateList
from services.scorer.engine.canonical import Embeddings, normalise
from services.scorer.engine.kinds.listed import listed_scores, tar_at_far
from services.scorer.engine.merge import ProtocolResult

_TEMPLATES_PER_CHUNK = 2048


def sequential_sums(group: np.ndarray, groups: int, vectors) -> np.ndarray:
    """float64 [groups, D]: per group, the sum of its members' vectors, added one at a time
    in member order. ``group[m]``: member m's group; ``vectors(members)``: float64 rows."""
    order = np.argsort(group, kind="stable")  # each group's members, in member order
    counts = np.bincount(group, minlength=groups)
    starts = np.cumsum(counts) - counts
    position = np.empty(group.shape[0], dtype=np.int64)
    position[order] = np.arange(group.shape[0]) - starts[group[order]]
    by_step = np.argsort(position, kind="stable")
    bounds = np.searchsorted(position[by_step], np.arange(int(counts.max(initial=0)) + 1))
    sums = None
    for j in range(bounds.shape[0] - 1):
        members = by_step[bounds[j]:bounds[j + 1]]
        rows = vectors(members)
        if sums is None:
            sums = np.zeros((groups, rows.shape[1]), dtype=np.float64)
        sums[group[members]] += rows
    return sums


def _pool_chunk(emb: Embeddings, templates: TemplateList, rows: np.ndarray,
                template: np.ndarray, count: int) -> np.ndarray:
    """float64 [count, D] template sums of one chunk; ``rows`` in file order, ``template``
    their chunk-local template codes."""
    out = np.zeros((count, emb.dim), dtype=np.float64)
    key = template * np.int64(len(templates.media_ids)) + templates.media[rows]
    _, first, media = np.unique(key, return_index=True, return_inverse=True)
    media = media.reshape(-1)
    valid = emb.valid[templates.image[rows]]
    if not valid.any():
        return out
    sizes = np.bincount(media[valid], minlength=first.shape[0])
    images = templates.image[rows[valid]]
    sums = sequential_sums(media[valid], first.shape[0],
                           lambda m: emb.unit[images[m]].astype(np.float64))
    means = sums / np.maximum(sizes, 1)[:, None]
    # Media with a valid image, in order of their first row; each adds to its template.
    used = np.flatnonzero(sizes > 0)
    used = used[np.argsort(first[used], kind="stable")]
    owner = template[first[used]]
    pooled = sequential_sums(owner, count, lambda m: means[used[m]])
    out[: pooled.shape[0]] = pooled
    return out


def template_features(emb: Embeddings, templates: TemplateList) -> Embeddings:
    """Canonically normalised template features, row = template code."""
    total = len(templates.template_ids)
    unit = np.zeros((total, emb.dim), dtype=np.float32)
    valid = np.zeros(total, dtype=bool)
    order = np.argsort(templates.template, kind="stable")  # file order within a template
    bounds = np.searchsorted(templates.template[order], np.arange(0, total + 1))
    for start in range(0, total, _TEMPLATES_PER_CHUNK):
        stop = min(start + _TEMPLATES_PER_CHUNK, total)
        rows = order[bounds[start]:bounds[stop]]
        pooled = _pool_chunk(emb, templates, rows, templates.template[rows] - start,
                             stop - start)
        part = normalise(pooled)
        unit[start:stop], valid[start:stop] = part.unit, part.valid
    return Embeddings(unit=unit, valid=valid)


def score_templates(emb: Embeddings, templates: TemplateList, pairs: PairList,
                    protocol: Protocol, backend=None) -> ProtocolResult:
    """TAR@FAR of section 3 over the listed template pairs (``pairs`` of template codes)."""
    features = template_features(emb, templates)
    scores = listed_scores(features, pairs.first, pairs.second, backend)
    return tar_at_far(protocol, scores, pairs.same)
