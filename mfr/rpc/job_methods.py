"""What the job APIs (the embedder's and the scorer's) share: the states, and the read side
(GetJob, WatchJob, CancelJob).

A servicer with a ``control`` (get, watch, cancel) and a ``message(view)`` gets the three
methods from :class:`JobMethods` instead of spelling them again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mfr.common.v1 import types_pb2

#: A job row's state <-> the JobState of the protos (both APIs use mfr.common.v1.JobState).
STATE_OF = {"queued": types_pb2.JOB_STATE_QUEUED, "running": types_pb2.JOB_STATE_RUNNING,
            "done": types_pb2.JOB_STATE_DONE, "failed": types_pb2.JOB_STATE_FAILED,
            "cancelled": types_pb2.JOB_STATE_CANCELLED}
STATE_NAME = {value: name for name, value in STATE_OF.items()}


class JobMethods:
    control: Any

    def message(self, view: Any) -> Any:
        raise NotImplementedError

    def GetJob(self, request, context):
        return self.message(self.control.get(request.job_id))

    def WatchJob(self, request, context) -> Iterator:
        for view in self.control.watch(request.job_id, context.is_active):
            yield self.message(view)

    def CancelJob(self, request, context):
        return self.message(self.control.cancel(request.job_id))
