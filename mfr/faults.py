"""Whose fault a failed submission is: the model's, or the platform's.

A submission that ends ``failed`` carries a stable ``error_code``. The codes of
:data:`MODEL_FAULTS` mean the participant's model misbehaved where the validator
could not see it (it crashed, hung or answered with the wrong shape on the test
set): the submission keeps its quota slot, as a rejected-at-the-door model does
not. Every other code is the platform's (a lost worker, a dependency gone, a
job that kept failing on our side): the dispatcher retries the submission a
bounded number of times (``MFR_DISPATCH_PLATFORM_RETRIES``), and if it still
fails, its quota slot is given back. Unknown codes count as the platform's, so
a new failure mode never costs participants a slot by accident.
docs/participants.md lists both families; a unit test keeps them in step.
"""

from __future__ import annotations

#: Failures caused by the model itself, with what they tell the participant.
MODEL_FAULTS: dict[str, str] = {
    "run_failed": "the model crashed while embedding the test set",
    "embed_timeout": "the model took far longer than its measured latency allows",
    "resource_limit": "the model needed more memory than the track allows",
    "feature_shape": "the model's features changed shape between batches",
    "runtime_mismatch": "the model does not run the same way on the evaluation runtime",
}

#: Failures of the platform (documented; any code not in MODEL_FAULTS is treated so).
PLATFORM_FAULTS: dict[str, str] = {
    "unavailable": "a service stayed unreachable through every attempt",
    "shard_failed": "an embedding shard kept failing on our workers",
    "assemble_failed": "the features could not be written",
    "tile_failed": "a scoring tile kept failing on our workers",
    "plan_failed": "the scoring job could not be planned",
    "merge_failed": "a scoring round could not be merged",
    "embedding_cancelled": "the embedding job was cancelled by the platform",
    "scoring_cancelled": "the scoring job was cancelled by the platform",
    "internal": "an internal error of the platform",
}


def is_model_fault(code: str) -> bool:
    return code in MODEL_FAULTS

