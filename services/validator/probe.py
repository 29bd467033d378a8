"""The sandboxed half of validation: parse, load and run an untrusted model.

This module runs only in a child process started by services/validator/sandbox.py,
confined before it starts (:mod:`mfr.sandbox`: a memory limit (RLIMIT_AS), a
file-size limit, no core dumps, Landlock, seccomp) and killed at its wall time. It reports back over a pipe with small JSON messages (never
pickle: a child subverted by a hostile model must not be able to run code in
the service), one per finding or fact, as soon as each is known, so that the
parent still has everything found before a crash, an OOM or a hang.

The steps and their order follow the reference checker (InsightFace
``onnx_helper.py``, ``ArcFaceORT.check``): static rules on the protobuf,
onnxruntime load, then 50 single-image runs (latency = 6th fastest), a batch
of 32 (NaN/Inf), the feature's shape and dimension. Added for this platform:
a batch-consistency test (rows of the batch against one-by-one runs).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

# Imported at module level on purpose: the fork server preloads this module,
# so every child starts with numpy, onnx and onnxruntime already imported.
import numpy as np
import onnx
import onnxruntime as ort

from mfr.gpu import CUDA, CUDA_OPTIONS
from mfr.modelcheck import rules
from mfr.modelcheck.report import Finding
from services.validator import batch_analysis

LATENCY_RUNS = 50
LATENCY_RANK = 6  # the reference checker reports the 6th fastest run
NAN_BATCH = 32
CONSISTENCY_ROWS = (0, 1, 2, NAN_BATCH - 1)
CONSISTENCY_RTOL = 1e-4
MAX_MESSAGE_CHARS = 600
DYNAMIC_MODEL = "model.dynamic.onnx"
CHILD_LOG = "child.log"
_MEMORY_HINTS = ("bad_alloc", "failed to allocate", "out of memory", "cannot allocate")


@dataclass(frozen=True)
class ProbeJob:
    """What the child is asked to do (pickled parent -> child: trusted direction)."""

    model_path: str
    workdir: str
    max_feature_dim: int
    threads: int
    providers: tuple[str, ...]
    memory_bytes: int
    file_bytes: int
    mode: str = "validate"  # or "benchmark": latency only, for the trusted reference network
    # The batch sizes the embedder will run (the challenge's [embedding]): all are tried.
    embed_batch_sizes: tuple[int, ...] = ()
    seed: int = 0
    # "benchmark" mode: builds the (trusted) reference network in the child.
    reference: Callable[[], onnx.ModelProto] | None = None


class Channel:
    """JSON messages to the parent, and the stage we are in (for crash attribution)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, kind: str, **fields: object) -> None:
        self.conn.send_bytes(json.dumps({"kind": kind, **fields}).encode())

    def stage(self, name: str) -> None:
        self.send("stage", stage=name, pid=os.getpid())

    def finding(self, finding: Finding, level: str = "error") -> None:
        self.send("finding", level=level, code=finding.code, message=finding.message[:MAX_MESSAGE_CHARS])

    def error(self, code: str, message: str) -> None:
        self.finding(Finding(code, message))

    def facts(self, **facts: object) -> None:
        self.send("facts", **facts)


def child_main(job: ProbeJob, conn: Connection) -> None:
    """Entry point of the child process."""
    channel = Channel(conn)
    _quiet()
    try:
        if job.mode == "benchmark":
            _benchmark(job, channel)
        else:
            _validate(job, channel)
        channel.send("done")
    except MemoryError:
        channel.error("resource_limit", f"the model needs more than the validator's "
                      f"{job.memory_bytes / 2**30:.1f} GB memory limit")
        channel.send("done")
    finally:
        conn.close()


def _quiet() -> None:
    # The child's stdout/stderr (ours and onnxruntime's C++ side) are already a file
    # (mfr.sandbox) the parent reads back to tell an out-of-memory abort from a crash.
    ort.set_default_logger_severity(3)


class NoGpu(Exception):
    """The CUDA provider was asked for and did not load: the machine's failure."""


def _session(model: bytes | str, job: ProbeJob) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = job.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers: list = list(job.providers)
    if providers and providers[0] == CUDA:
        options.use_deterministic_compute = True
        providers[0] = (CUDA, CUDA_OPTIONS)  # strict float32, as the embedder runs it
    session = ort.InferenceSession(model, options, providers=providers)
    if providers and job.providers[0] == CUDA and session.get_providers()[0] != CUDA:
        # Never time a GPU-calibrated latency on the CPU: onnxruntime fell back silently.
        raise NoGpu(f"the CUDA provider of onnxruntime {ort.__version__} did not load "
                    f"(the session runs on {session.get_providers()[0]}): no usable GPU")
    return session


def _validate(job: ProbeJob, channel: Channel) -> None:
    channel.stage("parse")
    path = Path(job.model_path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the model's
        channel.error("load_failed", f"the file is not an ONNX model: {_short(exc)}")
        return
    blocked = rules.check_external_data(model) + rules.check_domains(model)
    for finding in blocked:
        channel.finding(finding)
    interface, feedable = rules.check_interface(model)
    for finding in interface:
        channel.finding(finding)
    (mean, std), warning = rules.detect_normalisation(model.graph)
    channel.facts(input_mean=mean, input_std=std)
    if warning:
        channel.finding(warning, "warning")
    for finding in rules.check_weight_dtypes(model):
        channel.finding(finding)
    channel.stage("analyse")
    try:
        for finding in batch_analysis.find_implicit_batch(model):
            channel.finding(finding)
    except Exception as exc:  # noqa: BLE001 - a gap in the analysis must not reject a model
        print(f"implicit-batch analysis skipped: {exc!r}", file=sys.stderr)
    if blocked:
        return  # never hand onnxruntime a model that reads files or needs foreign ops

    channel.stage("load")
    fixed = rules.make_batch_dynamic(model)
    if fixed:
        channel.finding(fixed, "warning")
        data: bytes | str = model.SerializeToString()
        dynamic = Path(job.workdir) / DYNAMIC_MODEL
        dynamic.write_bytes(data)
        channel.facts(evaluated_model=DYNAMIC_MODEL)
    else:
        data = path.read_bytes()
    input_name = rules.real_inputs(model.graph)[0].name if feedable else ""
    del model
    gc.collect()
    try:
        session = _session(data, job)
    except NoGpu as exc:
        channel.send("platform", code="gpu_unavailable", message=str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        channel.error(*_failure("load_failed", "onnxruntime cannot load the model", exc, job))
        return
    del data
    if not feedable:
        return
    _run_checks(session, input_name, mean, std, job, channel)


def _run_checks(
    session: ort.InferenceSession,
    input_name: str,
    mean: float,
    std: float,
    job: ProbeJob,
    channel: Channel,
) -> None:
    rng = np.random.default_rng(job.seed)
    images = rng.integers(0, 256, size=(NAN_BATCH, 112, 112, 3), dtype=np.uint8)  # RGB
    blob = ((images.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy()

    channel.stage("latency")
    try:
        single, latency_ms = _latency(session, input_name, blob[:1])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        channel.error(*_failure("run_failed", "the model fails on a single image", exc, job))
        return
    channel.facts(latency_ms=latency_ms)

    channel.stage("batch")
    try:
        batch = session.run(None, {input_name: blob})[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        channel.error(*_failure(
            "run_failed",
            f"the model fails on a batch of {NAN_BATCH} images (the reference checker runs one)",
            exc, job,
        ))  # fmt: skip
        return
    single, batch = np.asarray(single), np.asarray(batch)
    numeric = single.dtype.kind in "fiuc" and batch.dtype.kind in "fiuc"
    if numeric and not np.isfinite(batch).all():
        bad = int(np.count_nonzero(~np.isfinite(batch)))
        channel.error("non_finite_output", f"the features of a batch of {NAN_BATCH} random images "
                      f"contain {bad} NaN/Inf values; all must be finite")
    shape_ok = (
        numeric and single.ndim == 2 and single.shape[0] == 1 and single.shape[1] > 0
        and batch.shape == (NAN_BATCH, single.shape[1])
    )  # fmt: skip
    if not shape_ok:
        channel.error("feature_shape", f"the feature must be 2-D [batch, dim]: one image gave "
                      f"{_dims(single)} ({single.dtype}), a batch of {NAN_BATCH} gave {_dims(batch)}")
    if numeric and single.ndim >= 2:
        dim = int(single.shape[1])
        channel.facts(feature_dim=dim)
        if dim > job.max_feature_dim:
            channel.error("feature_dim", f"the feature has {dim} dimensions; the track allows "
                          f"at most {job.max_feature_dim}")
    if not shape_ok or not np.isfinite(batch).all():
        return

    channel.stage("consistency")
    try:
        _consistency(session, input_name, blob, batch, channel)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        channel.error(*_failure("run_failed", "the model fails on a single image", exc, job))
        return
    _embedder_batches(session, input_name, blob, job, channel)


def _embedder_batches(session, input_name: str, blob: np.ndarray, job: ProbeJob,
                      channel: Channel) -> None:
    """Run the model at every batch size the embedder will use (1 and 32 are done): a model
    that works at the checker's sizes and hangs or fails at another is caught here, by the
    wall-time limit or the error, not later on the embedder."""
    channel.stage("embedder_batches")
    for size in job.embed_batch_sizes:
        if size in (1, NAN_BATCH):
            continue
        images = np.resize(blob, (size, *blob.shape[1:]))
        try:
            out = np.asarray(session.run(None, {input_name: images})[0])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
            channel.error(*_failure("run_failed", f"the model fails on a batch of {size} images "
                                    "(a size the embedder uses)", exc, job))
            return
        if out.ndim != 2 or out.shape[0] != size or not np.isfinite(out).all():
            channel.error("feature_shape" if out.ndim != 2 or out.shape[0] != size
                          else "non_finite_output",
                          f"a batch of {size} images (a size the embedder uses) gives features "
                          f"of shape {_dims(out)}{'' if np.isfinite(out).all() else ' with NaN/Inf'}")
            return


def _latency(session: ort.InferenceSession, input_name: str, one: np.ndarray) -> tuple[object, float]:
    costs = []
    out = None
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        out = session.run(None, {input_name: one})[0]
        costs.append(time.perf_counter() - start)
    return out, sorted(costs)[LATENCY_RANK - 1] * 1000.0


def _consistency(session, input_name, blob, batch, channel) -> None:
    worst_row, worst = 0, 0.0
    for row in CONSISTENCY_ROWS:
        alone = np.asarray(session.run(None, {input_name: blob[row : row + 1]})[0])[0]
        scale = max(float(np.max(np.abs(alone))), 1e-6)
        rel = float(np.max(np.abs(batch[row] - alone))) / scale
        if rel > worst:
            worst_row, worst = row, rel
    if worst > CONSISTENCY_RTOL:
        channel.error(
            "batch_inconsistent",
            f"image {worst_row} of a batch of {NAN_BATCH} gets a feature {worst:.2e} (relative) "
            f"away from the one it gets alone; at most {CONSISTENCY_RTOL:.0e}: a feature must not "
            "depend on the other images of the batch",
        )


def _benchmark(job: ProbeJob, channel: Channel) -> None:
    """Latency of a trusted model (the reference network), measured like a submission's."""
    channel.stage("load")
    model = job.reference()
    input_name = rules.real_inputs(model.graph)[0].name
    data = model.SerializeToString()
    del model
    session = _session(data, job)
    del data
    channel.stage("latency")
    blob = np.random.default_rng(job.seed).standard_normal((1, 3, 112, 112)).astype(np.float32)
    _, latency_ms = _latency(session, input_name, blob)
    channel.facts(latency_ms=latency_ms)


def _failure(code: str, what: str, exc: BaseException, job: ProbeJob) -> tuple[str, str]:
    text = _short(exc)
    if isinstance(exc, MemoryError) or any(h in text.lower() for h in _MEMORY_HINTS):
        return "resource_limit", (
            f"{what}: it needs more than the validator's {job.memory_bytes / 2**30:.1f} GB "
            f"memory limit ({text})"
        )
    return code, f"{what}: {text}"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]


def _dims(array: np.ndarray) -> str:
    return "[" + ", ".join(str(d) for d in array.shape) + "]"
