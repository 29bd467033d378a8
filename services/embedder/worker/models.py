"""A worker's loaded models: one confined process per model, the least recently used dropped.

A submission's model is fetched (its sha256 checked) and loaded once per worker,
not once per shard; ``MFR_EMBEDDER_CACHED_MODELS`` bounds how many stay loaded
(each is a process holding the model and its runtime).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from mfr.errors import Unavailable
from mfr.storage import ObjectStore
from services.embedder.worker.child import ChildSpec
from services.embedder.worker.sandbox import ModelProcess

GATE_WAIT_S = 120.0


class ModelCache:
    def __init__(self, store: ObjectStore, root: Path, size: int, threads: int,
                 memory_bytes: int, file_bytes: int, inputs: Path | None = None,
                 confined: bool = True, gate: Callable[[], bool] | None = None) -> None:
        self.store = store
        self.gate = gate  # the start-up confinement check: no model before it passes
        self.inputs = str(inputs) if inputs else ""  # the test sets its models read
        self.confined = confined
        self.root = Path(root)
        self.size = size
        self.threads = threads
        self.memory_bytes = memory_bytes
        self.file_bytes = file_bytes
        self._loaded: OrderedDict[tuple[str, str], tuple[ModelProcess, Path]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job: dict, runtime: str) -> ModelProcess:
        """The job's model, loaded on ``runtime`` (fetched and started on first use)."""
        key = (job["model_sha256"], runtime)
        if self.gate is not None and not self._confined():
            raise Unavailable("this worker's model processes are not confined: its "
                              "model-confinement check has not passed (see its log)",
                              code="sandbox_unavailable")
        with self._lock:
            held = self._loaded.get(key)
            if held is not None and held[0].alive:
                self._loaded.move_to_end(key)
                return held[0]
            self._drop(key)
            while len(self._loaded) >= self.size:
                self._drop(next(iter(self._loaded)))
            workdir = Path(tempfile.mkdtemp(prefix="model-", dir=self._dir()))
            model_path = workdir / "model.onnx"
            self.store.get_file(job["model_bucket"], job["model_key"], model_path,
                                expect_sha256=job["model_sha256"])
            # The model file and the features of one shard, with room to spare.
            file_bytes = model_path.stat().st_size + self.file_bytes
            spec = ChildSpec(str(model_path), runtime, self.threads, str(workdir),
                             self.memory_bytes, file_bytes, self.inputs, self.confined)
            try:
                process = ModelProcess(spec)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            self._loaded[key] = (process, workdir)
            return process

    def _confined(self) -> bool:
        """Whether the start-up check passed, waiting for it while it runs (a worker that
        just started takes its first shard before the check has had its few seconds)."""
        deadline = time.monotonic() + GATE_WAIT_S
        while not self.gate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def forget(self, job: dict, runtime: str) -> None:
        """Drop the job's model (it ran out of memory, or the job ended)."""
        with self._lock:
            self._drop((job["model_sha256"], runtime))

    def close(self) -> None:
        with self._lock:
            for key in list(self._loaded):
                self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        held = self._loaded.pop(key, None)
        if held is not None:
            process, workdir = held
            process.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def _dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root
