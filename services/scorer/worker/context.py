"""What the worker's steps (plan, tile, merge) share: database, queue, storage, inputs, backend."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from mfr.storage import ObjectStore
from services.scorer.config import ScorerTuning
from services.scorer.engine.backends import Backend
from services.scorer.inputs import JobInputs
from services.scorer.jobs import JobBook
from services.scorer.queue import Deferrer


@dataclass(frozen=True)
class WorkerContext:
    pool: ConnectionPool
    book: JobBook
    deferrer: Deferrer
    store: ObjectStore
    inputs: JobInputs
    backend: Backend
    settings: ScorerTuning
