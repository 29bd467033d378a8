"""A challenge with every protocol kind, and the scorer's results for its new kinds.

The built-in challenge (all, cross) plus MFR-Ongoing's protocols (pairs with
accuracy, templates, identification), weighted over three different rates.
"""

from __future__ import annotations

import re
from fractions import Fraction
from importlib import resources

from mfr.challenge import Challenge, challenge_from_text
from mfr.testset.synth_protocols import ONGOING_PROTOCOLS_TOML

WEIGHTS = {"mask": Fraction(1, 4), "mr-all": Fraction(1, 4), "lfw": Fraction(1, 4),
           "mr-1n": Fraction(1, 4)}


def kinds_challenge() -> Challenge:
    text = resources.files("mfr.builtin").joinpath("iccv21-mfr.toml").read_text("utf-8")
    text = re.sub(r"(?m)^weights = .*$",
                  "weights = { mask = 0.25, mr-all = 0.25, lfw = 0.25, mr-1n = 0.25 }", text)
    return challenge_from_text(text + "\n" + ONGOING_PROTOCOLS_TOML, "test:kinds")


def accuracy_result(correct_per_fold: list[int], per_fold: int = 600) -> dict:
    """What the scorer reports for LFW: fold accuracies ``correct / per_fold``."""
    folds = [Fraction(c, per_fold) for c in correct_per_fold]
    mean = sum(folds, Fraction(0)) / len(folds)
    std = float(sum(((a - mean) ** 2 for a in folds), Fraction(0)) / len(folds)) ** 0.5
    return {"kind": "pairs", "rate": "accuracy", "rate_exact": f"{mean.numerator}/{mean.denominator}",
            "accuracy": float(mean), "accuracy_std": std,
            "fold_accuracies": [float(a) for a in folds],
            "thresholds": [0.21 + 0.001 * i for i in range(len(folds) - 1)] + [None],
            "pairs": per_fold * len(folds)}


def identification_result(hits: int, mated: int, rank1_hits: int | None = None,
                          nonmated: int = 2000, accepted: int = 2) -> dict:
    rank1 = Fraction(hits if rank1_hits is None else rank1_hits, mated)
    return {"kind": "identification", "rate": "tpir", "rate_exact": f"{hits}/{mated}",
            "tpir": hits / mated, "fnir": 1 - hits / mated, "rank1": float(rank1),
            "threshold": 0.4375, "mated": mated, "nonmated": nonmated, "hits": hits,
            "nonmated_accepted": accepted}

