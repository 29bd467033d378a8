"""The common ``main`` of every gRPC service process.

A service module provides ``build(settings) -> ServiceParts``; this module does
the rest the same way for all of them: settings from the environment, logs,
server, readiness polling, SIGTERM handling, clean-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mfr.logs import configure_logging
from mfr.rpc.server import GrpcServer, run_service
from mfr.settings import GRPC_PORTS, METRICS_PORTS, ServiceSettings


@dataclass
class ServiceParts:
    """What a service contributes: servicers, a readiness check, clean-up."""

    servicers: list[tuple[Callable, Any, str]]  # (add_X_to_server, servicer, full service name)
    ready: Callable[[], bool] | None = None
    on_stop: Callable[[], None] | None = None
    extra: dict = field(default_factory=dict)


def service_settings(name: str) -> ServiceSettings:
    """Settings from the environment, with this service's default ports."""
    settings = ServiceSettings()
    if "MFR_GRPC_PORT" not in os.environ:
        settings.grpc_port = GRPC_PORTS[name]
    if "MFR_METRICS_PORT" not in os.environ:
        settings.metrics_port = METRICS_PORTS[name]
    return settings


def serve(name: str, build: Callable[[ServiceSettings], ServiceParts]) -> None:
    from pydantic import ValidationError

    from mfr.logs import get_logger
    from mfr.settings import config_problem

    try:
        settings = service_settings(name)
        configure_logging(settings.log_format, settings.log_level, service=name)
        parts = build(settings)
    except ValidationError as exc:  # a missing secret stops start-up, naming the variable
        configure_logging("console")
        get_logger(name).error("configuration invalid", problem=config_problem(exc))
        raise SystemExit(2) from None
    server = GrpcServer(name, settings.host, settings.grpc_port, settings.metrics_port,
                        settings.max_workers)
    for add_to_server, servicer, full_name in parts.servicers:
        server.add(add_to_server, servicer, full_name)
    run_service(server, ready=parts.ready, grace=settings.shutdown_grace_s, on_stop=parts.on_stop)
