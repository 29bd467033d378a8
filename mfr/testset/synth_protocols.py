"""MFR-Ongoing's protocol files for a synthetic test set (``mfr testset synth --protocols``).

From the same generative model as the rest of the synthetic set (docs/testsets.md):

* **LFW-like** (folder ``lfw/``, tag ``lfw``): 10 identity-disjoint folds, each
  with 300 genuine and 300 impostor pairs (fewer below scale 0.001), as
  ``lfw_pairs.csv`` (``first,second,same,fold``) and the same pairs in the same
  order as ``lfw_pairs_blocks.csv`` (``first,second,same``: LFW's consecutive
  blocks, 300 genuine then 300 impostor pairs per fold);
* **IJB-C-like** (folder ``ijbc/``, tag ``ijbc``): subjects with several media (a
  still, or 2-6 video frames), two or three templates per subject made of their
  media (for a third of the subjects the second template shares a media with
  the first, so some images are in two templates): ``ijbc_templates.csv``
  (``path,template,media``) and ``ijbc_pairs.csv`` (``first,second,same``:
  every genuine template pair, impostor pairs up to 400 per genuine one);
* **1:N**: MR identities, half of them enrolled with one image (a third of those
  with four or more images: two) tagged ``enrolled``, and up to two other images
  of every MR identity, enrolled or not, tagged ``search``.

Deterministic by seed (its own random stream); the images of the built-in parts are
those of the test set without ``--protocols``.
"""

from __future__ import annotations

import itertools

import numpy as np

from mfr.testset.synth_world import RACES, REAL_COUNTS, Rows, world

LFW_FOLDS = 10
LFW_GENUINE = 300  # genuine (and impostor) pairs per fold, as in LFW's view 2
IJBC_SUBJECTS = 3531  # the real IJB-C's
IMPOSTORS_PER_GENUINE = 400  # IJB-C 1:1 has about 800; enough for FAR 1e-5 at scale 1
LFW_PAIRS, LFW_BLOCKS = "lfw_pairs.csv", "lfw_pairs_blocks.csv"
IJBC_TEMPLATES, IJBC_PAIRS = "ijbc_templates.csv", "ijbc_pairs.csv"
GALLERY_TAG, PROBE_TAG = "enrolled", "search"
#: Two more 10-fold verification sets beside LFW, as MFR-Ongoing has: genuine pairs per
#: fold (CFP-FP: 350 of its 700 frontal-profile pairs; AgeDB-30: 300 of 600).
VERIFICATION_SETS = {"cfp-fp": 350, "agedb-30": 300}

#: The protocols of the built-in MFR-Ongoing challenge that read these files.
ONGOING_PROTOCOLS_TOML = f"""\
[[protocols]]
id = "lfw"
title = "LFW (10-fold accuracy)"
kind = "pairs"
pairs = "{LFW_PAIRS}"          # first,second,same,fold
metric = "accuracy"
folds = 10

[[protocols]]
id = "cfp-fp"
title = "CFP-FP (10-fold accuracy)"
kind = "pairs"
pairs = "cfp-fp_pairs.csv"
metric = "accuracy"
folds = 10

[[protocols]]
id = "agedb-30"
title = "AgeDB-30 (10-fold accuracy)"
kind = "pairs"
pairs = "agedb-30_pairs.csv"
metric = "accuracy"
folds = 10

[[protocols]]
id = "ijbc-1e-4"
title = "IJB-C TAR@FAR=1e-4"
kind = "templates"
templates = "{IJBC_TEMPLATES}"
pairs = "{IJBC_PAIRS}"
far = 1e-4

[[protocols]]
id = "ijbc-1e-5"
title = "IJB-C TAR@FAR=1e-5"
kind = "templates"
templates = "{IJBC_TEMPLATES}"
pairs = "{IJBC_PAIRS}"
far = 1e-5

[[protocols]]
id = "mr-1n"
title = "MR 1:N (TPIR@FPIR=1e-3)"
kind = "identification"
gallery = "{GALLERY_TAG}"
probe = "{PROBE_TAG}"
fpir = 1e-3
"""


def lfw_genuine_per_fold(scale: float, per_fold: int = LFW_GENUINE) -> int:
    """Genuine (and impostor) pairs per fold: all of them from scale 0.001 up."""
    return min(per_fold, max(5, round(per_fold * 1000 * scale)))


def ijbc_subjects(scale: float) -> int:
    return max(10, round(IJBC_SUBJECTS * scale))


def _race_groups(rng: np.random.Generator, count: int) -> list[str]:
    weights = np.array([REAL_COUNTS[r][0] for r in RACES], dtype=float)
    return [str(g) for g in rng.choice(RACES, size=count, p=weights / weights.sum())]


def _place(rng: np.random.Generator, rows: Rows, folder: str, tag: str,
           entries: list[tuple[str, np.ndarray, str]]) -> list[str]:
    """Append ``(identity, latent, group)`` images in a random order; each entry's path."""
    paths = [""] * len(entries)
    for k in rng.permutation(len(entries)):
        identity, latent, group = entries[k]
        paths[k] = f"{folder}/{len(rows.paths):06d}.png"
        rows.add(paths[k], identity, {tag}, latent, group, False)
    return paths


def _csv(header: str, lines: list[str]) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode("utf-8")


def _lfw_fold(rng: np.random.Generator, genuine: int) -> list[int]:
    """Image counts of one fold's identities: enough genuine pairs, then single images."""
    counts: list[int] = []
    while sum(c * (c - 1) // 2 for c in counts) < genuine:
        counts.append(2 + int(rng.poisson(1.5)))
    counts += [1] * max(2, len(counts) // 2)
    while (sum(counts) ** 2 - sum(c * c for c in counts)) // 2 < genuine:  # impostor pairs
        counts.append(1)
    return counts


def _lfw(rng: np.random.Generator, rows: Rows, scale: float, name: str = "lfw",
         per_fold: int = LFW_GENUINE) -> dict[str, bytes]:
    """A 10-fold verification set of its own people (``name``: LFW, or the CFP-FP-like and
    AgeDB-30-like sets, which differ in their pairs per fold)."""
    genuine = lfw_genuine_per_fold(scale, per_fold)
    folds = [_lfw_fold(rng, genuine) for _ in range(LFW_FOLDS)]
    people = [c for fold in folds for c in fold]
    groups = _race_groups(rng, len(people))
    latents = world().sample_identities(rng, groups)
    entries, owner = [], []  # per image: (identity, latent, group) and its person
    for person, count in enumerate(people):
        entries += [(f"{name[0]}{person:05d}", latents[person], groups[person])] * count
        owner += [person] * count
    owner_array = np.array(owner)
    chosen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    first_person = 0
    for fold in folds:
        images = np.flatnonzero((owner_array >= first_person)
                                & (owner_array < first_person + len(fold)))
        first_person += len(fold)
        a, b = np.triu_indices(len(images), 1)
        a, b = images[a], images[b]
        same = owner_array[a] == owner_array[b]
        for wanted in (same, ~same):  # 300 genuine, then 300 impostor pairs
            pick = np.sort(rng.choice(int(wanted.sum()), genuine, replace=False))
            chosen.append((a[wanted][pick], b[wanted][pick], same[wanted][pick]))
    paths = _place(rng, rows, name, name, entries)
    folded, blocks = [], []
    for block, (first, second, same) in enumerate(chosen):
        for i, j, s in zip(first, second, same):
            blocks.append(f"{paths[i]},{paths[j]},{int(s)}")
            folded.append(f"{blocks[-1]},{block // 2 + 1}")
    if name != "lfw":
        return {f"{name}_pairs.csv": _csv("first,second,same,fold", folded)}
    return {LFW_PAIRS: _csv("first,second,same,fold", folded),
            LFW_BLOCKS: _csv("first,second,same", blocks)}


def _impostors(rng: np.random.Generator, subject: np.ndarray, limit: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Template pairs ``a < b`` of different subjects: all, or ``limit`` distinct ones."""
    count = len(subject)
    if count * (count - 1) // 2 <= 4 * limit:
        a, b = np.triu_indices(count, 1)
        keep = subject[a] != subject[b]
        a, b = a[keep], b[keep]
        if len(a) > limit:
            pick = np.sort(rng.choice(len(a), limit, replace=False))
            a, b = a[pick], b[pick]
        return a, b
    codes = np.empty(0, dtype=np.int64)  # a * count + b, sorted and distinct
    while len(codes) < limit:
        x, y = rng.integers(0, count, (2, 2 * limit))
        lo, hi = np.minimum(x, y), np.maximum(x, y)
        codes = np.unique(np.concatenate([codes, (lo * count + hi)[subject[lo] != subject[hi]]]))
    codes = codes[np.sort(rng.choice(len(codes), limit, replace=False))]
    return codes // count, codes % count


def _subject_media(rng: np.random.Generator) -> list[int]:
    """Images per media of one subject: stills (one image) and videos (2-6 frames)."""
    media = 2 + int(rng.poisson(2))
    return [1 if rng.random() < 0.6 else int(rng.integers(2, 7)) for _ in range(media)]


def _ijbc(rng: np.random.Generator, rows: Rows, scale: float) -> dict[str, bytes]:
    subjects = ijbc_subjects(scale)
    groups = _race_groups(rng, subjects)
    latents = world().sample_identities(rng, groups)
    entries: list[tuple[str, np.ndarray, str]] = []
    media_images: list[list[int]] = []  # media id - 1 -> image entries
    templates: list[list[int]] = []  # template id - 1 -> media ids - 1
    template_subject: list[int] = []
    for s in range(subjects):
        first_media = len(media_images)
        for frames in _subject_media(rng):
            media_images.append(list(range(len(entries), len(entries) + frames)))
            entries += [(f"j{s:05d}", latents[s], groups[s])] * frames
        media = np.arange(first_media, len(media_images))
        parts = [list(p) for p in np.array_split(media, 3 if len(media) >= 5 else 2)]
        if rng.random() < 1 / 3:  # the second template also holds the first's last media
            parts[1].insert(0, parts[0][-1])
        templates += parts
        template_subject += [s] * len(parts)
    paths = _place(rng, rows, "ijbc", "ijbc", entries)
    listed = [f"{paths[image]},{t + 1},{m + 1}" for t, media in enumerate(templates)
              for m in media for image in media_images[m]]
    subject = np.array(template_subject)
    genuine = [(a, b) for a, b in itertools.combinations(range(len(templates)), 2)
               if subject[a] == subject[b]]
    impostor_a, impostor_b = _impostors(rng, subject, IMPOSTORS_PER_GENUINE * len(genuine))
    pairs = sorted([(a, b, 1) for a, b in genuine]
                   + [(int(a), int(b), 0) for a, b in zip(impostor_a, impostor_b)])
    return {IJBC_TEMPLATES: _csv("path,template,media", listed),
            IJBC_PAIRS: _csv("first,second,same", [f"{a + 1},{b + 1},{s}" for a, b, s in pairs])}


def _one_to_n(rng: np.random.Generator, rows: Rows) -> None:
    """Tag MR images: a gallery of half the identities, probes of every identity."""
    by_identity: dict[str, list[int]] = {}
    for row, (identity, tags) in enumerate(zip(rows.identities, rows.tags)):
        if "mr" in tags:
            by_identity.setdefault(identity, []).append(row)
    for identity in sorted(by_identity):
        images = by_identity[identity]  # rows are shuffled: the first ones are any
        gallery = 0
        if rng.random() < 0.5:
            gallery = 2 if len(images) >= 4 and rng.random() < 1 / 3 else 1
        for row in images[:gallery]:
            rows.tags[row] = rows.tags[row] | {GALLERY_TAG}
        for row in images[gallery:gallery + 2]:
            rows.tags[row] = rows.tags[row] | {PROBE_TAG}


def add_protocol_parts(rows: Rows, scale: float, seed: int, version: int) -> dict[str, bytes]:
    """Append the LFW-like and IJB-C-like images to ``rows``, tag the 1:N split, and return
    the protocol files (name -> bytes)."""
    rng = np.random.default_rng([seed, version, 3])
    _one_to_n(rng, rows)
    files = _lfw(rng, rows, scale)
    for name, per_fold in VERIFICATION_SETS.items():
        files.update(_lfw(rng, rows, scale, name, per_fold))
    files.update(_ijbc(rng, rows, scale))
    return files
