"""A real gRPC server on 127.0.0.1 (a free port) serving the given servicers, for tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mfr.rpc.server import GrpcServer


@contextmanager
def serving(*servicers: tuple[Callable, Any, str], name: str = "test", max_workers: int = 8,
            ready: bool = True) -> Iterator[GrpcServer]:
    """``with serving((add_XServicer_to_server, servicer, "mfr.x.v1.XService")) as server:``;
    the server is SERVING unless ``ready`` is False; its address is
    ``127.0.0.1:{server.port}``."""
    server = GrpcServer(name, port=0, max_workers=max_workers)
    for add_to_server, servicer, full_name in servicers:
        server.add(add_to_server, servicer, full_name)
    server.start()
    if ready:
        server.set_serving()
    try:
        yield server
    finally:
        server.stop(0)
