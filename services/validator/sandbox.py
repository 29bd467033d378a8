"""Runs services/validator/probe.py in a child process and survives whatever it does.

The child is forked from the model fork server (:mod:`mfr.sandbox`: exec'd with
an allow-listed environment, numpy, onnx and onnxruntime preloaded; a fresh child
per model, started in milliseconds, never a fork of the service) and confined
before it reads the model: no descriptor but its channel, an address-space and a
file-size limit, no core dumps, Landlock (it opens only the model, its scratch
folder and the code it runs) and a seccomp filter (no sockets, no exec). The
parent enforces the wall-time limit with SIGKILL. Messages from the child are size-capped JSON, checked against the
known codes: a child subverted by a hostile model can lie about its own
model, not reach the service.

A child that dies is turned into a finding by what it was doing: killed by
the wall clock -> ``timeout``; killed by the kernel (SIGKILL) or aborted out of
memory -> ``resource_limit``; any other crash -> ``load_failed`` while
parsing/loading, ``run_failed`` while running.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from mfr.cpus import usable_cpus
from mfr.errors import GpuUnavailable
from mfr.modelcheck.report import ERROR_CODES, WARNING_CODES, Finding
from mfr.sandbox import Child, Confinement, fork_server
from mfr.sandbox.limits import describe_exit, log_tail, out_of_memory, raise_if_unconfined
from services.validator.budget import TimeBudget
from services.validator.probe import CHILD_LOG, ProbeJob, child_main

GIB = 1024**3
MAX_MESSAGE_BYTES = 64 * 1024
_FACTS = {
    "input_mean": float,
    "input_std": float,
    "latency_ms": float,
    "feature_dim": int,
    "evaluated_model": str,
}
STAGES = {
    "start": "starting the checker",
    "parse": "parsing the model",
    "analyse": "analysing the graph",
    "load": "loading the model in onnxruntime",
    "latency": "timing 50 single-image runs",
    "batch": "running a batch of 32 images",
    "consistency": "comparing batch features with one-by-one runs",
    "embedder_batches": "running the batch sizes the embedder uses",
}
_LOADING = {"start", "parse", "analyse", "load"}

Observer = Callable[[str, int], None]  # (stage, child pid)
PRELOAD = ("services.validator.probe",)


# The cores one validation gets when the machine has plenty: enough for a
# stable latency figure, few enough that several validations run at once.
THREADS_PER_VALIDATION = 4
MAX_AUTO_CONCURRENCY = 8  # each child may take MFR_VALIDATOR_MEMORY_MB


def default_concurrency() -> int:
    """Validations at once: the usable CPUs // 4, at least 2 (a hanging model must not
    hold the only slot), at most 8."""
    return max(2, min(MAX_AUTO_CONCURRENCY, usable_cpus() // THREADS_PER_VALIDATION))


def default_threads(concurrency: int = 1) -> int:
    """onnxruntime intra-op threads: the usable CPUs shared by ``concurrency`` validations
    (no oversubscription while they all run), at least 1, at most 8."""
    return max(1, min(usable_cpus() // max(1, concurrency), 8))


@dataclass(frozen=True)
class SandboxLimits:
    """What one validation may use. Participants' latency is measured with ``threads``."""

    memory_bytes: int = 6 * GIB
    # The hard wall limit of one child: the ceiling of every validation's time budget.
    wall_seconds: float = 900.0
    threads: int = field(default_factory=default_threads)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    # False only with the organiser's opt-out (MFR_ALLOW_UNCONFINED_MODELS): a child that
    # cannot install its seccomp filter then runs the model anyway.
    confined: bool = True


@dataclass
class ProbeResult:
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    completed: bool = False
    stage: str = "start"
    no_gpu: str = ""  # the CUDA provider did not load: the machine's failure, not the model's


class Sandbox:
    """Runs probe jobs in confined child processes, one child per job."""

    def __init__(self, limits: SandboxLimits | None = None, observer: Observer | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.observer = observer

    def job(self, model_path: Path, workdir: Path, max_feature_dim: int, **extra: object) -> ProbeJob:
        size = model_path.stat().st_size if model_path.exists() else 0
        return ProbeJob(
            model_path=str(model_path),
            workdir=str(workdir),
            max_feature_dim=max_feature_dim,
            threads=self.limits.threads,
            providers=self.limits.providers,
            memory_bytes=self.limits.memory_bytes,
            # The dynamic-batch copy of the model, the log, nothing more.
            file_bytes=size + 64 * 1024 * 1024,
            **extra,
        )

    def confinement(self, job: ProbeJob) -> Confinement:
        """What the child of ``job`` may touch: its model, its scratch folder."""
        return Confinement(job.workdir, CHILD_LOG, job.memory_bytes, job.file_bytes,
                           gpu="CUDAExecutionProvider" in job.providers,
                           read=(job.model_path,), required=self.limits.confined)

    def start(self, job: ProbeJob, target: Callable = child_main,
              args: tuple | None = None) -> tuple[Child, Connection]:
        """The child of ``job``, confined, running ``target(*args, channel)``: the probe,
        or (tests) anything that must run exactly where a model does."""
        return fork_server(*PRELOAD, threads=self.limits.threads).start(
            target, (job,) if args is None else args, self.confinement(job))

    def run(self, job: ProbeJob, budget: TimeBudget | None = None) -> ProbeResult:
        """Run ``job``; the child is killed after ``budget`` (else the wall limit)."""
        process, receiver = self.start(job)
        result = ProbeResult()
        wall = budget.seconds if budget else self.limits.wall_seconds
        deadline = time.monotonic() + wall
        timed_out = killed = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if not receiver.poll(min(left, 1.0)):
                    if not process.is_alive() and not receiver.poll(0):
                        break
                    continue
                try:
                    raw = receiver.recv_bytes(MAX_MESSAGE_BYTES)
                except (EOFError, OSError):
                    break
                if self._absorb(raw, result, process.pid):
                    break
        finally:
            if not timed_out:
                process.join(5)  # the pipe closes a moment before the exit is reaped
            if process.is_alive():
                process.kill()
                killed = True
            process.join(10)
            receiver.close()
        if result.no_gpu:
            raise GpuUnavailable(result.no_gpu)
        if not result.completed:
            exitcode = None if killed and not timed_out else process.exitcode
            raise_if_unconfined(exitcode, log_tail(Path(job.workdir) / CHILD_LOG))
            self._explain(result, exitcode, timed_out, Path(job.workdir), job, budget)
        return result

    def _absorb(self, raw: bytes, result: ProbeResult, pid: int | None) -> bool:
        """Take one message into ``result``; True when the child says it is done."""
        try:
            message = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(message, dict):
            return False
        kind = message.get("kind")
        if kind == "done":
            result.completed = True
            return True
        if kind == "platform" and message.get("code") == GpuUnavailable.code:
            result.no_gpu = str(message.get("message", "no usable GPU"))[:1000]
            return True
        if kind == "stage" and message.get("stage") in STAGES:
            result.stage = message["stage"]
            if self.observer and pid:
                self.observer(result.stage, pid)
        elif kind == "finding":
            code, text = message.get("code"), str(message.get("message", ""))[:1000]
            if message.get("level") == "warning" and code in WARNING_CODES:
                result.warnings.append(Finding(code, text))
            elif code in ERROR_CODES:
                result.errors.append(Finding(code, text))
        elif kind == "facts":
            for key, kind_of in _FACTS.items():
                if key in message:
                    try:
                        result.facts[key] = kind_of(message[key])
                    except (TypeError, ValueError):
                        pass
        return False

    def _explain(self, result: ProbeResult, exitcode: int | None, timed_out: bool,
                 workdir: Path, job: ProbeJob, budget: TimeBudget | None) -> None:
        doing = STAGES[result.stage]
        if timed_out and budget:
            result.errors.append(Finding(
                "timeout",
                f"validation did not finish within its time budget of {budget.seconds:.1f} s "
                f"(stopped while {doing}); the budget is {budget.derivation()}; "
                "the model is too slow or hangs",
            ))  # fmt: skip
            return
        if timed_out:
            result.errors.append(Finding(
                "timeout",
                f"validation did not finish within {self.limits.wall_seconds:g} s "
                f"(stopped while {doing}); the model is too slow or hangs",
            ))  # fmt: skip
            return
        how = describe_exit(exitcode)
        if out_of_memory(exitcode, log_tail(workdir / CHILD_LOG)):
            result.errors.append(Finding(
                "resource_limit",
                f"the model exhausted the validator's memory limit of "
                f"{job.memory_bytes / GIB:.1f} GB while {doing} (the checker {how})",
            ))  # fmt: skip
            return
        code = "load_failed" if result.stage in _LOADING else "run_failed"
        result.errors.append(Finding(code, f"onnxruntime crashed while {doing} (the checker {how})"))
