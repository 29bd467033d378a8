"""How long one validation may take: derived from the track, not a flat limit.

A model within the track's rules costs at most: loading it (parsing, the static
analysis, the dynamic-batch copy, the onnxruntime session), then every image
the probe runs (services/validator/probe.py) at the latency limit each. The
budget is that cost times a safety factor, between a floor (a tiny model on a
fast machine still gets time for a hiccup) and the sandbox's wall limit
(``MFR_VALIDATOR_TIMEOUT_S``, the ceiling). A model that hangs is stopped at
its budget, not minutes later, so its slot is free for the next upload.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.validator.probe import CONSISTENCY_ROWS, LATENCY_RUNS, NAN_BATCH


@dataclass(frozen=True)
class BudgetPolicy:
    """The constants of the formula (docs/validation.md, "Time budget")."""

    safety: float = 3.0
    floor_s: float = 30.0
    # Loading: measured 1.2 s for IResNet-100 (249 MB) on 2 cores; a CUDA context
    # alone takes several seconds, hence the fixed part.
    load_s: float = 10.0
    load_s_per_mb: float = 0.05


@dataclass(frozen=True)
class TimeBudget:
    seconds: float
    load_s: float  # the loading allowance, before the safety factor
    images: int  # images the probe runs, each allowed the latency limit
    limit_ms: float
    policy: BudgetPolicy
    model_mb: float
    clamp: str = ""  # "", "floor" or "ceiling"

    def derivation(self) -> str:
        """The formula with this validation's numbers, for the ``timeout`` message."""
        raw = (
            f"{self.policy.safety:g} x (loading {self.policy.load_s:g} s + "
            f"{self.policy.load_s_per_mb:g} s/MB x {self.model_mb:.1f} MB + {self.images} images "
            f"x the latency limit {self.limit_ms:.3f} ms)"
        )
        if self.clamp == "floor":
            return f"{raw}, raised to the floor of {self.seconds:g} s"
        if self.clamp == "ceiling":
            return f"{raw}, capped at the validator's limit of {self.seconds:g} s"
        return raw


def images_run(batch_sizes: tuple[int, ...]) -> int:
    """Images the probe runs: the single-image timed runs, the batch of 32, the one-by-one
    runs of the consistency check, one batch at each other size the embedder uses."""
    others = sum(size for size in set(batch_sizes) if size not in (1, NAN_BATCH))
    return LATENCY_RUNS + NAN_BATCH + len(CONSISTENCY_ROWS) + others


def time_budget(policy: BudgetPolicy, limit_ms: float, model_mb: float,
                batch_sizes: tuple[int, ...], ceiling_s: float) -> TimeBudget:
    load_s = policy.load_s + policy.load_s_per_mb * model_mb
    images = images_run(batch_sizes)
    seconds = policy.safety * (load_s + images * limit_ms / 1000.0)
    clamp = ""
    if seconds < policy.floor_s:
        seconds, clamp = policy.floor_s, "floor"
    if seconds > ceiling_s:
        seconds, clamp = ceiling_s, "ceiling"
    return TimeBudget(seconds, load_s, images, limit_ms, policy, model_mb, clamp)
