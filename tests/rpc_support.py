"""A real gRPC server on 127.0.0.1 (a free port) serving the given servicers, for tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mfr.common.v1 import types_pb2
from mfr.rpc.server import GrpcServer

#: The JobStates of a job that has ended (the embedder's and the scorer's).
FINISHED = (types_pb2.JOB_STATE_DONE, types_pb2.JOB_STATE_FAILED,
            types_pb2.JOB_STATE_CANCELLED)
#: The service token of the test servers (``channel(address, SERVICE_TOKEN)`` to call them);
#: the same as ``MFR_SERVICE_TOKEN`` in the environment of tests' child processes.
SERVICE_TOKEN = "service-token-for-tests"


@contextmanager
def serving(*servicers: tuple[Callable, Any, str], name: str = "test", max_workers: int = 8,
            ready: bool = True, public_methods: frozenset[str] = frozenset()
            ) -> Iterator[GrpcServer]:
    """``with serving((add_XServicer_to_server, servicer, "mfr.x.v1.XService")) as server:``;
    the server is SERVING unless ``ready`` is False; its address is
    ``127.0.0.1:{server.port}``; calls need :data:`SERVICE_TOKEN`, but ``public_methods``."""
    server = GrpcServer(name, port=0, max_workers=max_workers, service_token=SERVICE_TOKEN,
                        public_methods=public_methods)
    for add_to_server, servicer, full_name in servicers:
        server.add(add_to_server, servicer, full_name)
    server.start()
    if ready:
        server.set_serving()
    try:
        yield server
    finally:
        server.stop(0)
