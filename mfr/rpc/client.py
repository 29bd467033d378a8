"""Client side: channels to the other services, and waiting for their health."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mfr.rpc.auth import with_service_token
from mfr.rpc.server import MESSAGE_LIMIT


def channel(address: str, service_token: str | None = None) -> grpc.Channel:
    """A channel to a service; its calls carry ``service_token`` (``MFR_SERVICE_TOKEN``),
    without which a service answers nothing but health checks and reflection."""
    plain = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
        ],
    )
    return plain if service_token is None else with_service_token(plain, service_token)


def health_status(address: str, service: str = "", timeout: float = 1.0) -> str:
    """``SERVING``, ``NOT_SERVING``, ... or ``UNREACHABLE`` (health needs no token)."""
    with channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_serving(address: str, timeout: float = 30.0, service: str = "") -> None:
    deadline = time.monotonic() + timeout
    status = "UNREACHABLE"
    while time.monotonic() < deadline:
        status = health_status(address, service)
        if status == "SERVING":
            return
        time.sleep(0.1)
    raise TimeoutError(f"{address} not SERVING after {timeout:.0f}s (last: {status})")
