"""The metric names the autoscalers read are names the running processes export.

k8s/components/queue-autoscaling has HorizontalPodAutoscalers read External metrics
(served by prometheus-adapter from the Prometheus series of the same name). A renamed
gauge would not fail any render or schema check: the HPAs would just report
FailedGetExternalMetric and never scale on the queue. So the queue-autoscaling rendering
is read for the names, and the real processes (the embedder and scorer APIs, and the
workers the HPAs scale) are started against the real PostgreSQL and S3 and scraped.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cli.stack.ports import free_port
from mfr.rpc.client import wait_serving
from tests.unit.k8s_support import (
    QUEUE_AUTOSCALING,
    _external_metrics,
    _rendered_text,
    requires_kubectl,
)

pytestmark = [pytest.mark.integration, requires_kubectl]

# Process kind (the Deployment's name, `mfr serve KIND`) -> command and its own settings.
PROCESSES: dict[str, tuple[list[str], dict[str, str]]] = {
    "embedder": ([sys.executable, "-m", "services.embedder"], {}),
    "scorer": ([sys.executable, "-m", "services.scorer"], {}),
    "embedder-worker": ([sys.executable, "-m", "cli.main", "serve", "embedder-worker"],
                        {"MFR_EMBEDDER_RUNTIMES": "onnxruntime-cpu",
                         "MFR_EMBEDDER_THREADS": "1"}),
    "scorer-worker": ([sys.executable, "-m", "cli.main", "serve", "scorer-worker"],
                      {"MFR_SCORER_BACKEND": "cpu", "MFR_SCORER_THREADS": "1"}),
}
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20


def _hpa_metrics(scratch: Path) -> dict[str, set[str]]:
    """HPA target (a Deployment, named as its process kind) -> External metric names."""
    docs = [d for d in yaml.safe_load_all(_rendered_text(QUEUE_AUTOSCALING, scratch)) if d]
    return _external_metrics(docs)


def _scrape(port: int) -> dict[str, float]:
    """Sample name -> value (the last one of a name), from the Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {sample.name: sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def _wait_all_serving(processes: dict[str, subprocess.Popen], grpc_ports: dict[str, int],
                      logs: Path) -> None:
    for kind, process in processes.items():
        try:
            wait_serving(f"127.0.0.1:{grpc_ports[kind]}", timeout=START_TIMEOUT_S)
        except TimeoutError as exc:
            log = (logs / f"{kind}.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{kind} (exit {process.poll()}): {exc}\n{log}") from None


def test_every_metric_the_autoscalers_read_is_exported_by_the_processes_they_scale(
        service_env, tmp_path, tmp_path_factory) -> None:
    wanted = _hpa_metrics(tmp_path_factory.mktemp("kustomize"))
    assert wanted, "the queue-autoscaling rendering has no External metric"
    assert set(wanted) <= set(PROCESSES), f"start these processes too: {set(wanted) - set(PROCESSES)}"
    processes: dict[str, subprocess.Popen] = {}
    grpc_ports: dict[str, int] = {}
    metrics_ports: dict[str, int] = {}
    try:
        for kind, (command, own_env) in PROCESSES.items():
            grpc_ports[kind], metrics_ports[kind] = free_port(), free_port()
            env = {**os.environ, **service_env, **own_env, "MFR_SHUTDOWN_GRACE_S": "2",
                   "MFR_GRPC_PORT": str(grpc_ports[kind]),
                   "MFR_METRICS_PORT": str(metrics_ports[kind]),
                   "MFR_CACHE_DIR": str(tmp_path / "cache" / kind)}
            with open(tmp_path / f"{kind}.log", "wb") as log:
                processes[kind] = subprocess.Popen(command, env=env, stdout=log,
                                                   stderr=subprocess.STDOUT)
        _wait_all_serving(processes, grpc_ports, tmp_path)
        exported = {kind: _scrape(port) for kind, port in metrics_ports.items()}
    finally:
        _stop(processes)

    everywhere = set().union(*exported.values())
    for target, names in wanted.items():
        assert names <= everywhere, f"no process exports {names - everywhere}"
        # The pods the HPA scales report their own queue: the metric does not depend on
        # another Deployment being scraped.
        assert names <= set(exported[target]), f"{target} does not export {names}"
        for name in names:
            # A number, not NaN (NaN: the process could not read the queue's depth).
            assert math.isfinite(exported[target][name]), (target, name)
    assert "mfr_embedder_queue_shards" in exported["embedder-worker"]
    assert "mfr_embedder_queue_shards" in exported["embedder"]
    assert "mfr_scorer_queue_tiles" in exported["scorer"]
