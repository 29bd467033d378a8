"""Brute force for the listed kinds (DESIGN.md section 3.1): loops and sorts.

Shares only the canonical score and normalisation with the engine (tested on their
own in test_scoring_canonical.py).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from services.scorer.engine.canonical import canonical_scores, normalise


def tied_features(count: int, dim: int, seed: int) -> np.ndarray:
    """Sparse rows (scores tie exactly), some NaN, inf and zero rows, some duplicates."""
    rng = np.random.default_rng(seed)
    features = np.zeros((count, dim), dtype=np.float32)
    for row in range(count):
        features[row, rng.choice(dim, size=rng.integers(1, 4), replace=False)] = 1.0
    features *= rng.choice([0.5, 1.0, 3.0], size=(count, 1)).astype(np.float32)
    features[rng.choice(count, 3, replace=False)] = 0.0
    features[rng.choice(count, 2, replace=False), 0] = np.nan
    features[rng.choice(count, 1), 1] = np.inf
    return features


def pair_scores(unit, valid, first, second) -> np.ndarray:
    scores = canonical_scores(unit, np.asarray(first), np.asarray(second))
    scores[~(valid[first] & valid[second])] = -np.inf
    return scores


def tar_reference(scores, same, far: Fraction) -> dict:
    genuine = [s for s, g in zip(scores, same, strict=True) if g]
    impostor = sorted((s for s, g in zip(scores, same, strict=True) if not g), reverse=True)
    k = math.floor(far * len(impostor))
    t = impostor[k]
    accepted = sum(s > t for s in genuine)
    return {"tar": float(Fraction(accepted, len(genuine))), "far": float(far),
            "threshold": None if t == -math.inf else float(t), "genuine": len(genuine),
            "impostor": len(impostor), "genuine_accepted": accepted,
            "impostors_accepted": sum(s > t for s in impostor)}


def accuracy_reference(scores, same, fold, folds: int) -> tuple[Fraction, dict]:
    accuracies, thresholds = [], []
    for f in range(1, folds + 1):
        train = [(s, g) for s, g, h in zip(scores, same, fold, strict=True) if h != f]
        test = [(s, g) for s, g, h in zip(scores, same, fold, strict=True) if h == f]
        best, best_t = -1, None
        for t in sorted({s for s, _ in train if math.isfinite(s)}) + [math.inf]:
            correct = sum((s >= t) == g for s, g in train)
            if correct > best:  # ascending: the first maximum is the smallest t
                best, best_t = correct, t
        accuracies.append(Fraction(sum((s >= best_t) == g for s, g in test), len(test)))
        thresholds.append(best_t)
    mean = sum(accuracies) / folds
    std = float(np.std(np.array([float(a) for a in accuracies])))
    return mean, {"accuracy": float(mean), "accuracy_std": std,
                  "fold_accuracies": [float(a) for a in accuracies],
                  "thresholds": [None if t == math.inf else t for t in thresholds],
                  "pairs": len(scores)}


def template_reference(features, rows, template_of, media_of) -> tuple[np.ndarray, np.ndarray]:
    """Template features by loops: rows are (image, template, media) in file order."""
    emb = normalise(features)
    order, media = [], {}
    for image, template, medium in zip(rows, template_of, media_of, strict=True):
        if template not in order:
            order.append(template)
        media.setdefault(template, {}).setdefault(medium, []).append(image)
    pooled = np.zeros((len(order), features.shape[1]))
    for t, template in enumerate(order):
        total = np.zeros(features.shape[1])
        for images in media[template].values():  # dicts keep first-appearance order
            good = [i for i in images if emb.valid[i]]
            if not good:
                continue
            acc = np.zeros(features.shape[1])
            for i in good:
                acc = acc + emb.unit[i].astype(np.float64)
            total = total + acc / len(good)
        pooled[t] = total
    out = normalise(pooled)
    return out.unit, out.valid


def run_mfr_score(challenge, manifest, features, *extra: str):
    """``mfr score`` in-process on the given files (the CLI end of the listed kinds)."""
    from click.testing import CliRunner

    from cli.main import cli

    return CliRunner().invoke(cli, ["score", "--challenge", str(challenge), "--manifest",
                                    str(manifest), "--features", str(features), *extra])
