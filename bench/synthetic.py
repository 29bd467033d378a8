"""Synthetic MR-style test data for the scoring benchmarks (not for scoring quality).

Identities are random unit centres; each race adds a shared offset (so
impostors of one race look more alike than across races, as in real data);
an image is its centre plus isotropic noise. Race sizes follow the MR test
set (DESIGN.md section 2): African, Caucasian, South Asian, East Asian.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

RACES = ("african", "caucasian", "south-asian", "east-asian")
RACE_IMAGES = (298_010, 697_245, 237_080, 391_970)
IMAGES_PER_IDENTITY = 1_624_305 / 242_143

MR_CHALLENGE_TOML = """
id = "bench-mr"
title = "MR-All and its four race subsets"
[ranking]
weights = { mr-all = 1.0 }
[[protocols]]
id = "mr-all"
kind = "all"
tag = "mr"
far = 1e-6
""" + "".join(
    f'[[protocols]]\nid = "{race}"\nkind = "all"\ntag = "{race}"\nfar = 1e-6\n' for race in RACES
)


def mr_dataset(count: int, dim: int, seed: int = 0, noise: float = 1.5, race_offset: float = 0.35):
    """(features float32 [count, dim], identity int64 [count], race index int64 [count])."""
    rng = np.random.default_rng(seed)
    identities = max(1, round(count / IMAGES_PER_IDENTITY))
    share = np.array(RACE_IMAGES, dtype=np.float64) / sum(RACE_IMAGES)
    identity_race = rng.choice(len(RACES), size=identities, p=share)
    identity = np.sort(rng.integers(0, identities, size=count))
    race_means = rng.standard_normal((len(RACES), dim)).astype(np.float32)
    race_means *= race_offset / np.linalg.norm(race_means, axis=1, keepdims=True)
    centres = rng.standard_normal((identities, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres += race_means[identity_race]
    features = rng.standard_normal((count, dim), dtype=np.float32)
    # Image quality varies: a per-image noise scale spreads the genuine scores.
    features *= (noise / np.sqrt(dim)) * np.exp(0.25 * rng.standard_normal((count, 1))).astype(
        np.float32)
    features += centres[identity]
    return features, identity.astype(np.int64), identity_race[identity].astype(np.int64)


def write_mr_files(directory: Path, count: int, dim: int, seed: int = 0) -> dict[str, Path]:
    """Manifest, features and challenge files for ``mfr score``."""
    directory.mkdir(parents=True, exist_ok=True)
    features, identity, race = mr_dataset(count, dim, seed)
    paths = {
        "manifest": directory / "manifest.csv",
        "features": directory / "features.npy",
        "challenge": directory / "challenge.toml",
    }
    with open(paths["manifest"], "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "identity", "tags"))
        for row in range(count):
            writer.writerow((f"mr/{row:07d}.jpg", f"{identity[row]:06d}",
                             f"mr;{RACES[race[row]]}"))
    np.save(paths["features"], features)
    paths["challenge"].write_text(MR_CHALLENGE_TOML)
    return paths


def add_size_options(parser, count: int, repeats: int = 3, repeats_help: str = "") -> None:
    """The options every scoring benchmark takes: images, feature dimension, repetitions."""
    parser.add_argument("--count", type=int, default=count, help="images of the synthetic MR set")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension")
    parser.add_argument("--repeats", type=int, default=repeats, help=repeats_help or None)
