"""Synthetic test sets: a stand-in for the hidden faces, with the built-in challenge's structure.

The generative model (docs/testsets.md has the long version):

* A fixed *world*, drawn once from ``WORLD_SEED`` and never from ``--seed``: a
  face template (skin, eyes, brows, mouth on a background), 64 smooth
  *identity* basis images and 16 smooth *expression* basis images (random
  8x8 control grids, upsampled, confined to the face), a mask texture, and
  per-group parameters. Because the world is fixed, models built for it (the
  baselines) work on every synthetic test set, whatever its seed.
* An identity is a latent vector ``z = m_g + s_g * N(0, I_64)`` around its
  group's mean ``m_g``; groups (the four MR race groups, and children) differ in
  mean, between-identity spread ``s_g``, within-identity spread ``w_g``, skin
  tone and contrast.
* An image of identity z: latent ``x = z + w_g * N(0, I_64)``, an expression
  ``e ~ N(0, I_16)``; pixels = template_g + contrast_g * (B_id x + B_expr e),
  then lighting (gain, offset, a linear gradient), a mask over the lower face
  for masked images (the identity signal there is gone), a pose shift of up
  to 3 pixels, sensor noise, rounding to uint8.

Nothing here is a claim about real faces: the group parameters are chosen so
that protocols differ in difficulty the way the seed's table does (East Asian
hardest, Caucasian easiest, children harder than adults, masked harder than
unmasked) and TARs at the challenge's FAR targets are neither 0 nor 1.

Deterministic: the same seed and scale give the same bytes (and test-set id)
with the same numpy build; float rounding in a different BLAS may flip a pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfr.manifest import Manifest
from mfr.testset.format import DEFAULT_SHARD_SIZE, TestSet, TestSetWriter
from mfr.testset.synth_protocols import add_protocol_parts
from mfr.testset.synth_world import (
    DEFAULT_SCALE,
    RACES,
    REAL_COUNTS,
    RENDER_CHUNK,
    SYNTH_VERSION,
    WORLD_SEED,
    Rows,
    world,
)


@dataclass(frozen=True)
class SetPlan:
    """Scaled counts of one part of the test set."""

    name: str
    images: int
    identities: int


def plan(scale: float = DEFAULT_SCALE) -> list[SetPlan]:
    """Counts at ``scale`` of the real ones; every part keeps genuine pairs."""
    if not 0 < scale <= 1:
        raise ValueError("scale must be in (0, 1]")
    plans = []
    for name, (images, ids) in REAL_COUNTS.items():
        n_ids = max(2, round(ids * scale))
        n_images = n_ids if name == "mask" else max(2 * n_ids, round(images * scale))
        plans.append(SetPlan(name, n_images, n_ids))
    return plans


def _images_per_identity(rng: np.random.Generator, images: int, ids: int) -> np.ndarray:
    """At least two images per identity, the rest spread at random (skewed, like real sets)."""
    weights = rng.gamma(1.0, 1.0, ids)
    extra = rng.multinomial(images - 2 * ids, weights / weights.sum())
    return 2 + extra


def _population_rows(rng: np.random.Generator, scale: float) -> Rows:
    w = world()
    rows = Rows([], [], [], [], [], [])
    plans = {p.name: p for p in plan(scale)}
    race_images = np.array([REAL_COUNTS[r][0] for r in RACES], dtype=float)

    # Mask: every identity has one masked and two non-masked images.
    mask = plans["mask"]
    groups = list(rng.choice(RACES, size=mask.identities, p=race_images / race_images.sum()))
    latents = w.sample_identities(rng, groups)
    entries = []
    for i in range(mask.identities):
        entries.append((f"m{i:05d}", "mask", latents[i], groups[i], True))
        entries += [(f"m{i:05d}", "nonmask", latents[i], groups[i], False)] * 2
    for k in rng.permutation(len(entries)):
        identity, tag, latent, group, masked = entries[k]
        rows.add(f"mask/{len(rows.paths):06d}.png", identity, {tag}, latent, group, masked)

    # Children, then the four MR race groups (all tagged "mr").
    parts = [("children", "children", {"children"}, plans["children"])]
    parts += [(race, race, {"mr", race}, plans[race]) for race in RACES]
    next_mr_id = 0
    for part, group, tags, part_plan in parts:
        counts = _images_per_identity(rng, part_plan.images, part_plan.identities)
        latents = w.sample_identities(rng, [group] * part_plan.identities)
        entries = []
        for i, count in enumerate(counts):
            if part == "children":
                identity = f"c{i:05d}"
            else:
                identity = f"r{next_mr_id:06d}"
                next_mr_id += 1
            entries += [(identity, latents[i])] * int(count)
        folder = "children" if part == "children" else "mr"
        for k in rng.permutation(len(entries)):
            identity, latent = entries[k]
            rows.add(f"{folder}/{len(rows.paths):06d}.png", identity, tags, latent, group, False)
    return rows


def synth_testset(out: str | Path, scale: float = DEFAULT_SCALE, seed: int = 0,
                  shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False,
                  protocols: bool = False) -> TestSet:
    """Build a synthetic test set with the built-in challenge's structure at ``scale``; with
    ``protocols``, also MFR-Ongoing's images and files (:mod:`mfr.testset.synth_protocols`)."""
    population_rng = np.random.default_rng([seed, SYNTH_VERSION, 0])
    render_rng = np.random.default_rng([seed, SYNTH_VERSION, 1])
    rows = _population_rows(population_rng, scale)
    built_in, files = len(rows.paths), {}
    if protocols:
        files = add_protocol_parts(rows, scale, seed, SYNTH_VERSION)
    w = world()
    latents, masked = np.stack(rows.latents), np.array(rows.masked)
    source = {"kind": "synth", "version": SYNTH_VERSION, "scale": scale, "seed": seed,
              "world_seed": WORLD_SEED, **({"protocols": True} if protocols else {})}
    with TestSetWriter(out, shard_size, source=source, overwrite=overwrite) as writer:
        # Built-in rows in the chunks they always had: their pixels ignore --protocols.
        for first, last in ((0, built_in), (built_in, len(latents))):
            for start in range(first, last, RENDER_CHUNK):
                stop = min(start + RENDER_CHUNK, last)
                writer.add(w.render(render_rng, latents[start:stop], rows.groups[start:stop],
                                    masked[start:stop]))
        for file_name, data in files.items():
            writer.add_protocol_file(file_name, data)
        manifest = Manifest(tuple(rows.paths), tuple(rows.identities), tuple(rows.tags))
        kind = "mfr-ongoing" if protocols else "iccv21-mfr"
        return writer.finish(manifest, name=f"synthetic {kind}, scale {scale:g}, seed {seed}")


def training_set(seed: int, identities: int, per_identity: int, mask_fraction: float = 0.0,
                 chunk: int = 2048) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Labelled images from the same world, disjoint from any test set (for baselines).

    Identities are drawn from the MR race groups and children in proportion to
    the real image counts; a fraction ``mask_fraction`` of the images wear a
    mask (mask augmentation). Yields chunks (uint8 images [m, 112, 112, 3],
    int64 labels [m], bool masked [m]), so a large training set never sits in
    memory whole. Identities are numbered in order, so the first j identities
    of a larger set are a smaller training set.
    """
    rng = np.random.default_rng([seed, SYNTH_VERSION, 2])
    names = (*RACES, "children")
    weights = np.array([REAL_COUNTS[g][0] for g in names], dtype=float)
    id_groups = list(rng.choice(names, size=identities, p=weights / weights.sum()))
    w = world()
    latents = w.sample_identities(rng, id_groups)
    labels = np.repeat(np.arange(identities), per_identity)
    masked = rng.random(len(labels)) < mask_fraction
    for start in range(0, len(labels), chunk):
        part = labels[start:start + chunk]
        images = w.render(rng, latents[part], [id_groups[i] for i in part],
                          masked[start:start + chunk])
        yield images, part, masked[start:start + chunk]


def expected_counts(scale: float = DEFAULT_SCALE) -> dict[str, int]:
    """Images per tag of a synthetic test set at ``scale`` (for docs and tests)."""
    counts = {p.name: p.images for p in plan(scale)}
    counts["nonmask"] = 2 * counts["mask"]  # mask: one image of every identity masked, two not
    return counts | {"mr": sum(counts[r] for r in RACES)}
