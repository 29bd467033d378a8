"""The embedder's settings (environment, prefix ``MFR_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mfr.settings import (
    GRPC_PORTS,
    METRICS_PORTS,
    CacheSettings,
    ServiceSettings,
    StorageSettings,
    TestSetSettings,
)


class EmbedderSettings(ServiceSettings, StorageSettings, TestSetSettings, CacheSettings):
    """``MFR_CACHE_DIR`` holds fetched test sets and models; ``MFR_TESTSET`` is a local test
    set to publish at start-up and use in place (``mfr up``). No database."""

    grpc_port: int = GRPC_PORTS["embedder"]
    metrics_port: int = METRICS_PORTS["embedder"]
    embedder_device: Literal["auto", "cpu", "cuda"] = "auto"
    embedder_threads: int = Field(default=0, ge=0)  # 0: the physical cores available
    embedder_batch_size: int = Field(default=0, ge=0)  # 0: chosen by measurement per job
