"""Rendering the Kubernetes manifests for the k8s tests, and reading rendered documents.

Every overlay, each combination of overlay and components that
docs/operations.md tells organisers to use, and one with the optional gvisor
component, is rendered with ``kubectl kustomize`` (once per test session).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
NAMESPACE = "mfr"

# Validated against the newest Kubernetes release and the oldest one still
# supported upstream (the schemas ship inside kubernetes-validate).
KUBERNETES_VERSIONS = ("1.35", "1.37")

# name -> (kustomization directory under k8s/, extra components)
RENDERINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "base": ("base", ()),
    "dev": ("overlays/dev", ()),
    "gpu": ("overlays/gpu", ()),
    "production": ("overlays/production", ()),
    "dev+network-policy+queue-autoscaling": (
        "overlays/dev", ("network-policy", "queue-autoscaling")),
    "production+gpu+queue-autoscaling": (
        "overlays/production", ("gpu-embedder", "gpu-scorer", "queue-autoscaling")),
    "production+challenge": ("overlays/production", ("challenge",)),
    # Optional (no overlay enables it): gVisor for the pods that run models.
    "production+gpu+gvisor": (
        "overlays/production", ("gpu-embedder", "gpu-scorer", "gvisor")),
}
GPU_RENDERINGS = {"gpu", "production+gpu+queue-autoscaling", "production+gpu+gvisor"}
PRODUCTION_RENDERINGS = {name for name in RENDERINGS if name.startswith("production")}
CHALLENGE_RENDERINGS = {"production+challenge"}
POLICY_RENDERINGS = {"production", "dev+network-policy+queue-autoscaling",
                     "production+gpu+queue-autoscaling", "production+challenge",
                     "production+gpu+gvisor"}
GVISOR_RENDERINGS = {"production+gpu+gvisor"}
# Renderings that serve a challenge file (ConfigMap mfr-challenge, read through
# MFR_CHALLENGE by every Deployment), by the id in it: components/challenge's example,
# and components/gpu-embedder's built-in challenge on a GPU runtime. The others serve the
# built-in challenge (no MFR_CHALLENGE).
SERVED_CHALLENGES = {**{name: "mfr-ongoing" for name in CHALLENGE_RENDERINGS},
                     **{name: "iccv21-mfr" for name in GPU_RENDERINGS}}

# The platform's workloads: gRPC health port (probes) or the gateway's HTTP port.
GRPC_HEALTH_PORTS = {"validator": 50051, "embedder": 50052, "scorer": 50053,
                     "ranker": 50054, "scorer-worker": 50055, "dispatcher": 50056,
                     "embedder-worker": 50057}
METRICS_PORTS = {"validator": 9101, "embedder": 9102, "scorer": 9103, "ranker": 9104,
                 "scorer-worker": 9105, "dispatcher": 9106, "embedder-worker": 9107}
GATEWAY_PORT = 8000
# The queue workers: the HPAs own their replica count, the GPU components give them GPUs,
# and they accept no connection but metrics scraping.
HPA_SCALED = {"embedder-worker", "scorer-worker"}
GPU_WORKLOADS = {"embedder-worker", "scorer-worker"}
QUEUE_AUTOSCALING = "dev+network-policy+queue-autoscaling"
# The Deployments that connect to PostgreSQL (the migrate Job does too).
DATABASE_USERS = {"embedder", "embedder-worker", "scorer", "scorer-worker", "ranker", "gateway",
                  "dispatcher"}
SERVER_GRACE_S = 30  # MFR_SHUTDOWN_GRACE_S default

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}
CLUSTER_SCOPED_KINDS = {"Namespace", "RuntimeClass"}

requires_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl (with its built-in kustomize) is not installed: the manifests cannot be rendered",
)


def _kustomize(directory: Path) -> str:
    done = subprocess.run(["kubectl", "kustomize", str(directory)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return done.stdout


@functools.cache
def _rendered_text(name: str, scratch: Path) -> str:
    directory, components = RENDERINGS[name]
    return _composed_text(directory, components, scratch)


@functools.cache
def _composed_text(directory: str, components: tuple[str, ...], scratch: Path) -> str:
    """A kustomization directory under k8s/ with extra components, rendered."""
    if not components:
        return _kustomize(K8S / directory)
    # Kustomize refuses absolute paths to other kustomizations: compose the
    # combination in a scratch directory with relative ones.
    name = "+".join((directory, *components))
    root = scratch / re.sub(r"[^a-z0-9]+", "-", name)
    root.mkdir(parents=True, exist_ok=True)
    composed = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": [os.path.relpath(K8S / directory, root)],
        "components": [os.path.relpath(K8S / "components" / c, root) for c in components],
    }
    (root / "kustomization.yaml").write_text(yaml.safe_dump(composed))
    return _kustomize(root)


# --- helpers over rendered documents -----------------------------------------------------

def _of_kind(docs: list[dict], *kinds: str) -> list[dict]:
    return [d for d in docs if d["kind"] in kinds]


def _named(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _containers(workload: dict) -> list[dict]:
    spec = _pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def _env(container: dict, docs: list[dict]) -> dict[str, str]:
    """The container's literal environment: ConfigMaps from envFrom, then env values."""
    config_maps = _named(docs, "ConfigMap")
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(config_maps[source["configMapRef"]["name"]].get("data", {}))
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
    return values


def _external_metrics(docs: list[dict]) -> dict[str, set[str]]:
    """HPA target -> the External metric names it reads."""
    return {hpa["spec"]["scaleTargetRef"]["name"]:
            {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]
             if m["type"] == "External"}
            for hpa in _of_kind(docs, "HorizontalPodAutoscaler")}


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) applied to labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _ingress_sources(policies: list[dict], pod_labels: dict[str, str], port: int) -> list[dict]:
    """The `from` peers allowed to reach a pod on a port ([{}] means anyone)."""
    sources: list[dict] = []
    for policy in policies:
        spec = policy["spec"]
        if "Ingress" not in spec.get("policyTypes", []) or not _selects(spec["podSelector"], pod_labels):
            continue
        for rule in spec.get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p["port"] <= port <= p.get("endPort", p["port"]) for p in ports):
                continue
            sources += rule.get("from", [{}])
    return sources
