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
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cli.stack.ports import free_port
from tests.unit.k8s_support import (
    QUEUE_AUTOSCALING,
    _external_metrics,
    _rendered_text,
    requires_kubectl,
)
from tests.worker_support import Workers

pytestmark = [pytest.mark.integration, requires_kubectl]

# Process kind (the Deployment's name, `mfr serve KIND`) -> its own settings.
PROCESSES: dict[str, dict[str, str]] = {
    "embedder": {},
    "scorer": {},
    "embedder-worker": {"MFR_EMBEDDER_RUNTIMES": "onnxruntime-cpu", "MFR_EMBEDDER_THREADS": "1"},
    "scorer-worker": {"MFR_SCORER_BACKEND": "cpu", "MFR_SCORER_THREADS": "1"},
}
START_TIMEOUT_S = 90


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


def test_every_metric_the_autoscalers_read_is_exported_by_the_processes_they_scale(
        service_env, tmp_path, tmp_path_factory) -> None:
    wanted = _hpa_metrics(tmp_path_factory.mktemp("kustomize"))
    assert wanted, "the queue-autoscaling rendering has no External metric"
    assert set(wanted) <= set(PROCESSES), f"start these processes too: {set(wanted) - set(PROCESSES)}"
    groups = {kind: Workers(service_env, tmp_path, kind, own_env)
              for kind, own_env in PROCESSES.items()}
    metrics_ports = {kind: free_port() for kind in PROCESSES}
    try:
        for kind, processes in groups.items():
            processes.start(kind, wait=False, MFR_METRICS_PORT=str(metrics_ports[kind]),
                            MFR_SHUTDOWN_GRACE_S="2")
        for kind, processes in groups.items():
            processes.wait_serving(kind, timeout=START_TIMEOUT_S)
        exported = {kind: _scrape(port) for kind, port in metrics_ports.items()}
    finally:
        for processes in groups.values():
            processes.stop_all()

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
