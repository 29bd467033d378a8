"""The worker's side of a model's process: start it, hand it shards, bound it in time.

A model runs in a child of the model fork server (:mod:`mfr.sandbox`: exec'd with
an allow-listed environment, numpy and onnxruntime preloaded; never a fork of the
worker), confined as the validator's children are: it opens only its model, its
test sets and its scratch folder, and makes no socket. Every shard has
a deadline (derived from the model's validated latency): a child past it is
killed and the shard fails with ``embed_timeout``; a cancelled job kills it
within a second. The child's answers are size-capped JSON. Its death is read
from the exit and the log: out of memory (:class:`OutOfMemory`, the caller
retries at half the batch size) or a crash (:class:`ModelFault`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from mfr.errors import GpuUnavailable, MfrError
from mfr.sandbox import Child, Confinement, fork_server
from mfr.sandbox.limits import describe_exit, log_tail, out_of_memory, raise_if_unconfined
from mfr.testset.format import TestSetCorrupt
from services.embedder.worker.child import CHILD_LOG, ChildSpec, child_main

MAX_MESSAGE_BYTES = 64 * 1024
PRELOAD = ("services.embedder.worker.child",)
LOAD_TIMEOUT_S = 600.0
# Codes that are the model's doing: retrying on another worker gives the same answer.
MODEL_CODES = {"load_failed", "run_failed", "feature_shape", "embed_timeout"}


class ModelFault(MfrError):
    """The model failed in a way another attempt would repeat: the job fails at once."""


class OutOfMemory(MfrError):
    """The model's process ran out of memory at this batch size."""

    code = "resource_limit"


class Stopped(MfrError):
    """The caller stopped waiting (job cancelled, worker stopping): the child was killed."""

    code = "stopped"


def start(spec: ChildSpec, target: Callable = child_main,
          args: tuple | None = None) -> tuple[Child, Connection]:
    """The model's process for ``spec``, confined, running ``target(*args, channel)``: the
    model's loop, or (tests) anything that must run exactly where a model does."""
    confinement = Confinement(spec.workdir, CHILD_LOG, spec.memory_bytes, spec.file_bytes,
                              gpu=not spec.runtime.endswith("-cpu"),
                              read=(spec.inputs,) if spec.inputs else (),
                              required=spec.confined)
    return fork_server(*PRELOAD, threads=spec.threads).start(
        target, (spec,) if args is None else args, confinement)


class ModelProcess:
    """One loaded model in its confined child; ``embed`` one shard at a time."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process, self.receiver = start(spec)
        ready = self._next(time.monotonic() + LOAD_TIMEOUT_S, lambda: False, "loading the model")
        if ready["kind"] != "ready":
            self.close()
            if ready.get("code") == GpuUnavailable.code:
                raise GpuUnavailable(str(ready.get("message", "no usable GPU")))
            raise ModelFault(ready.get("message", "the model cannot be loaded"),
                             code=ready.get("code", "load_failed"))
        self.runtime = {k: str(ready.get(k, "")) for k in
                        ("name", "version", "device", "fallback_reason")}

    def embed(self, request: dict, deadline_s: float, should_stop: Callable[[], bool]) -> dict:
        """The child's summary of one shard (its features are in ``request["out"]``)."""
        try:
            self.receiver.send(request)
            answer = self._next(time.monotonic() + deadline_s, should_stop,
                                f"embedding shard {request['shard']}", deadline_s)
        except BaseException:
            # Whatever stopped the wait (a database error in should_stop included), the child
            # may still be at work on this shard: its late answer must never reach the next call.
            self.close()
            raise
        if answer["kind"] == "done":
            return answer
        code, message = answer.get("code", "run_failed"), answer.get("message", "")
        if code == "resource_limit":
            self.close()  # a process that hit its memory limit is not worth keeping
            raise OutOfMemory(message)
        if code == "testset_corrupt":
            raise TestSetCorrupt(message)
        raise ModelFault(message, code=code if code in MODEL_CODES else "run_failed")

    def _next(self, deadline: float, should_stop: Callable[[], bool], doing: str,
              deadline_s: float | None = None) -> dict:
        """The child's next message; kills it on the deadline or when asked to stop."""
        while True:
            if should_stop():
                self.close()
                raise Stopped(f"stopped while {doing}")
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                limit = f" within {deadline_s:.0f} s" if deadline_s else ""
                raise ModelFault(f"the model did not finish {doing}{limit}: it is too slow on "
                                 "these images or hangs", code="embed_timeout")
            if self.receiver.poll(min(left, 1.0)):
                try:
                    message = json.loads(self.receiver.recv_bytes(MAX_MESSAGE_BYTES))
                except (EOFError, OSError):
                    self._died(doing)
                except ValueError:
                    continue  # not JSON: ignored, as the validator does
                if isinstance(message, dict) and message.get("kind") in ("ready", "done",
                                                                          "error"):
                    return message
            elif not self.process.is_alive():
                self._died(doing)

    def _died(self, doing: str) -> None:
        self.process.join(5)
        exitcode = self.process.exitcode
        tail = log_tail(Path(self.spec.workdir) / CHILD_LOG)
        self.close()
        raise_if_unconfined(exitcode, tail)
        if out_of_memory(exitcode, tail):
            raise OutOfMemory(f"the model's process ran out of memory while {doing} "
                              f"(it {describe_exit(exitcode)})")
        raise ModelFault(f"the model's process crashed while {doing} "
                         f"(it {describe_exit(exitcode)})", code="run_failed")

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.receiver.send(None)
            except (OSError, ValueError):
                pass
            self.process.join(0.5)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)
        self.receiver.close()
