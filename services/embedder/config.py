"""The embedder's settings (environment, prefix ``MFR_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mfr.settings import CacheSettings


class EmbedderSettings(CacheSettings):
    """``MFR_CACHE_DIR`` holds fetched test sets; ``MFR_TESTSET`` a local test set to serve."""

    testset: Path | None = None  # set by `mfr up`; uploaded at start-up, used in place
    embedder_device: Literal["auto", "cpu", "cuda"] = "auto"
    embedder_threads: int = Field(default=0, ge=0)  # 0: the physical cores available
    embedder_batch_size: int = Field(default=0, ge=0)  # 0: chosen by measurement per job
