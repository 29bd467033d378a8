"""The model's process: one participant model, loaded once, embedding shard after shard.

Runs only in a child of the model fork server, started by an embedder worker
(services/embedder/worker/sandbox.py) and confined before it starts
(:mod:`mfr.sandbox`: address space on CPU runtimes, file size, no core dumps, an
empty working directory, Landlock, seccomp). Requests come from the worker
over a pipe (pickled: the trusted direction); answers go back as small JSON
messages only, so a child subverted by a hostile model can lie about its own
features, never reach the worker. A crash, a hang or an out-of-memory death is
the child's alone: the worker reads it from the exit and the log.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

# Imported at module level on purpose: the fork server preloads this module, so every
# child starts with numpy and onnxruntime already imported.
import numpy as np
import onnxruntime  # noqa: F401

from mfr.errors import GpuUnavailable, MfrError
from mfr.sandbox.limits import MEMORY_HINTS
from mfr.testset.format import TestSet, TestSetCorrupt
from services.embedder.pipeline import Pipeline, non_finite_rows
from services.embedder.runtime import load_model_bytes, open_runtime

CHILD_LOG = "child.log"
MAX_TEXT = 600


@dataclass(frozen=True)
class ChildSpec:
    """What the child runs, and under which limits (pickled parent -> child)."""

    model_path: str
    runtime: str
    threads: int
    workdir: str
    memory_bytes: int
    file_bytes: int
    inputs: str = ""  # the folder of the test sets it reads (read-only)
    confined: bool = True  # False only with the organiser's opt-out


class _Channel:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, kind: str, **fields: object) -> None:
        self.conn.send_bytes(json.dumps({"kind": kind, **fields}).encode())

    def error(self, code: str, message: str) -> None:
        self.send("error", code=code, message=message[:MAX_TEXT])


def child_main(spec: ChildSpec, conn: Connection) -> None:
    """Entry point of the child: load the model, then embed shards until told to stop."""
    channel = _Channel(conn)
    try:
        runner = open_runtime(load_model_bytes(spec.model_path), spec.runtime, spec.threads)
    except GpuUnavailable as exc:  # the machine's, not the model's: said as such
        channel.error(exc.code, exc.message)
        return
    except Exception as exc:  # noqa: BLE001 - any other load failure is the model's
        channel.error(_code(exc, "load_failed"), f"the model cannot be loaded: {_short(exc)}")
        return
    channel.send("ready", **runner.info.as_dict())
    while True:
        request = conn.recv()
        if request is None:
            return
        try:
            channel.send("done", **embed_shard(runner, request))
        except TestSetCorrupt as exc:
            channel.error("testset_corrupt", exc.message)
        except MfrError as exc:
            channel.error(exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - the runtime's failure, in its words
            channel.error(_code(exc, "run_failed"),
                          f"the model fails on shard {request['shard']}: {_short(exc)}")


def embed_shard(runner, request: dict) -> dict:
    """One shard: read (checking its hash), batches of exactly ``batch`` images (the last one
    padded), the features written to ``out`` as float32 [rows, D]."""
    started = time.perf_counter()
    testset = TestSet(request["testset_root"])
    shard = request["shard"]
    result: dict = {}

    def keep(index: int, features: np.ndarray) -> None:
        result["features"] = features

    pipeline = Pipeline(_checked(runner), testset, request["mean"], request["std"],
                        request["batch"], pad_batches=True)
    pipeline.embed([shard], keep)
    features = result["features"]
    tmp = Path(request["out"]).with_suffix(".partial")
    with open(tmp, "wb") as handle:
        np.save(handle, features, allow_pickle=False)
    os.replace(tmp, request["out"])
    return {"rows": int(features.shape[0]), "feature_dim": int(features.shape[1]),
            "non_finite_rows": non_finite_rows(features),
            "seconds": round(time.perf_counter() - started, 3)}


class FeatureShape(MfrError):
    code = "feature_shape"


def _checked(runner):
    """``runner.run`` that insists on float [n, D] features for n images."""

    def run(batch: np.ndarray) -> np.ndarray:
        out = np.asarray(runner.run(batch))
        if out.ndim != 2 or out.shape[0] != len(batch) or out.dtype.kind not in "fiu":
            raise FeatureShape(f"a batch of {len(batch)} images gave features of shape "
                               f"{list(out.shape)} ({out.dtype}); expected [{len(batch)}, D]")
        return out

    return run


def _code(exc: BaseException, default: str) -> str:
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or any(hint in text for hint in MEMORY_HINTS):
        return "resource_limit"
    return default


def _short(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:400]
