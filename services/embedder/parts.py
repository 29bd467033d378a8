"""Where finished shards' features live while a job runs: a folder or object storage.

One ``.npy`` (float32 [rows of the shard, D]) per finished shard, written
atomically (a file is renamed into place; an S3 PUT is atomic), plus
``job.json`` naming what they were computed from (test set, model, input
normalisation). A restarted job, or another pod of the same job, sees which
shards are finished by listing; a ``job.json`` that names another model or
test set means the parts are stale and are discarded.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Protocol

import numpy as np

_SHARD = re.compile(r"shard-(\d{5})\.npy$")
JOB_FILE = "job.json"


def part_name(index: int) -> str:
    return f"shard-{index:05d}.npy"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class FeatureParts(Protocol):
    """Per-shard features of one job."""

    def read_job(self) -> dict | None: ...
    def write_job(self, job: dict) -> None: ...
    def finished(self) -> set[int]: ...
    def put(self, index: int, features: np.ndarray) -> None: ...
    def get(self, index: int) -> np.ndarray: ...
    def clear(self) -> None: ...


class LocalParts:
    """Parts in a folder (``mfr embed``'s ``OUT.parts/``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def read_job(self) -> dict | None:
        try:
            return json.loads((self.root / JOB_FILE).read_text("utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def write_job(self, job: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._atomic(JOB_FILE, json.dumps(job, indent=1).encode())

    def finished(self) -> set[int]:
        if not self.root.is_dir():
            return set()
        return {int(m.group(1)) for p in self.root.iterdir() if (m := _SHARD.match(p.name))}

    def put(self, index: int, features: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._atomic(part_name(index), npy_bytes(features))

    def get(self, index: int) -> np.ndarray:
        return np.load(self.root / part_name(index), allow_pickle=False)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _atomic(self, name: str, data: bytes) -> None:
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / name)


class ObjectParts:
    """Parts in the features bucket under ``parts/<job_id>/<testset_id>/`` (shared by pods)."""

    def __init__(self, store, job_id: str, testset_id: str) -> None:
        self.store = store
        self.bucket = store.buckets.features
        self.prefix = f"parts/{job_id}/{testset_id}/"

    def read_job(self) -> dict | None:
        if not self.store.exists(self.bucket, self.prefix + JOB_FILE):
            return None
        try:
            return json.loads(self.store.get_bytes(self.bucket, self.prefix + JOB_FILE))
        except json.JSONDecodeError:
            return None

    def write_job(self, job: dict) -> None:
        self.store.put_bytes(self.bucket, self.prefix + JOB_FILE, json.dumps(job).encode())

    def finished(self) -> set[int]:
        keys = self.store.list_keys(self.bucket, self.prefix)
        return {int(m.group(1)) for key in keys if (m := _SHARD.search(key))}

    def put(self, index: int, features: np.ndarray) -> None:
        self.store.put_bytes(self.bucket, self.prefix + part_name(index), npy_bytes(features))

    def put_file(self, index: int, path: Path):
        """Upload a part written to disk (a .npy file); returns the stored object."""
        return self.store.put_file(self.bucket, self.prefix + part_name(index), path)

    def get(self, index: int) -> np.ndarray:
        data = self.store.get_bytes(self.bucket, self.prefix + part_name(index))
        return np.load(io.BytesIO(data), allow_pickle=False)

    def clear(self) -> None:
        for key in self.store.list_keys(self.bucket, self.prefix):
            self.store.delete(self.bucket, key)
