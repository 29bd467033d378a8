"""Wiring of a gRPC service: port, interceptors, health, reflection, metrics, shutdown.

Every call but health, reflection and the methods the server declares public
(``public_methods``: the ranker's reads) must carry the service token (mfr/rpc/auth.py).

Health follows grpc's health-checking example: every service starts
NOT_SERVING and is switched to SERVING only once its ``ready`` check passes
(model loaded, database reachable); on SIGTERM it enters graceful shutdown
(health NOT_SERVING first, so load balancers stop sending), then
``server.stop(grace)`` lets calls in flight finish.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge, start_http_server

from mfr.logs import get_logger
from mfr.rpc.auth import TokenGuard
from mfr.rpc.interceptors import ServiceInterceptor

log = get_logger("mfr.rpc.server")

UP = Gauge("mfr_service_up", "1 while the service reports SERVING", ["service"])

#: The health "service" that answers SERVING while the process runs, whatever its
#: dependencies do: Kubernetes' startup and liveness probes ask for it; readiness asks
#: for "" (overall) or a service's own name, which follow the dependencies.
LIVENESS = "liveness"

# Larger than the default 4 MB: reports and job results may be big-ish; bulk
# data (models, features) never travels over gRPC, only object references.
MESSAGE_LIMIT = 64 * 1024 * 1024


class GrpcServer:
    """A gRPC server with the platform's interceptor, health service and reflection."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0,
                 metrics_port: int = 0, max_workers: int = 8, *, service_token: str,
                 public_methods: Iterable[str] = ()) -> None:
        self.name = name
        self._guard = TokenGuard(service_token, public_methods)
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name),
            # The first is the outermost: a call refused for want of the service token is
            # logged, counted and mapped like any other failure.
            interceptors=[ServiceInterceptor(), self._guard],
            options=[
                ("grpc.max_send_message_length", MESSAGE_LIMIT),
                ("grpc.max_receive_message_length", MESSAGE_LIMIT),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self._service_names: list[str] = []
        self._stopped = threading.Event()

    def add(self, add_to_server: Callable[[Any, grpc.Server], None], servicer: Any,
            full_name: str) -> None:
        """Register a servicer, e.g. ``add(add_XServicer_to_server, XServicer(), "mfr.x.v1.XService")``."""
        add_to_server(servicer, self._server)
        self._service_names.append(full_name)

    def start(self) -> int:
        """Bind and start; health stays NOT_SERVING until :meth:`set_serving`. Returns the port."""
        self._check_public_methods()
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        for service in ["", *self._service_names]:
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        bound = self._server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise OSError(f"{self.name}: cannot bind {self.host}:{self.port}")
        self.port = bound
        self._server.start()
        if self.metrics_port:
            start_http_server(self.metrics_port, addr=self.host)
        log.info("listening", service=self.name, address=f"{self.host}:{self.port}",
                 metrics_port=self.metrics_port or None)
        return bound

    def _check_public_methods(self) -> None:
        """A public method must be a method of a service this server serves: a misspelt
        name would otherwise leave the method closed, or open one on a server not meant to."""
        pool = descriptor_pool.Default()
        for method in sorted(self._guard.public_methods):
            parts = method.split("/")  # "/pkg.Service/Method", as the interceptor sees it
            service, name = parts[1:] if len(parts) == 3 and not parts[0] else ("", "")
            if service not in self._service_names or \
                    name not in pool.FindServiceByName(service).methods_by_name:
                raise ValueError(f"{self.name}: public method {method} is not served here")

    def set_serving(self) -> None:
        for service in ["", *self._service_names]:
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        UP.labels(self.name).set(1)
        log.info("serving", service=self.name)

    def set_condition(self, name: str, holds: bool) -> None:
        """A named condition's answer (``Check(service=name)``), apart from readiness."""
        if not self._stopped.is_set():
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING if holds
                            else health_pb2.HealthCheckResponse.NOT_SERVING)

    def set_not_serving(self) -> None:
        """Not ready (a dependency is gone); :data:`LIVENESS` stays SERVING."""
        for service in ["", *self._service_names]:
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        UP.labels(self.name).set(0)

    def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: NOT_SERVING for every service, then let calls in flight finish."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        UP.labels(self.name).set(0)
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        log.info("stopped", service=self.name)
