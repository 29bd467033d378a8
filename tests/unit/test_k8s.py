"""The Kubernetes manifests render, validate, and keep the platform's rules.

Each rendering (tests/unit/k8s_support.py) is validated, one kubernetes-validate
``--strict`` call per rendering, against the Kubernetes versions there. The
other tests check what a schema cannot: probes, requests and limits, the
security context, one ServiceAccount per workload, grace periods longer than
the servers' own, GPUs where they belong, where the data stores live.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.k8s_support import (
    CLUSTER_SCOPED_KINDS,
    GATEWAY_PORT,
    GPU_RENDERINGS,
    GPU_WORKLOADS,
    GRPC_HEALTH_PORTS,
    HPA_SCALED,
    K8S,
    KUBERNETES_VERSIONS,
    METRICS_PORTS,
    NAMESPACE,
    PRODUCTION_RENDERINGS,
    QUEUE_AUTOSCALING,
    RENDERINGS,
    SERVER_GRACE_S,
    WORKLOAD_KINDS,
    _containers,
    _env,
    _external_metrics,
    _named,
    _of_kind,
    _pod_spec,
    _rendered_text,
    _selects,
    requires_kubectl,
)

# --- rendering and schema validation -------------------------------------------------------

@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_rendering_validates_strictly(name: str, scratch: Path) -> None:
    validator = pytest.importorskip(
        "kubernetes_validate.utils",
        reason="kubernetes-validate is not installed (pip install -e .[dev])")
    shipped = {v.rsplit(".", 1)[0] for v in validator.all_versions()}
    missing = [v for v in KUBERNETES_VERSIONS if v not in shipped]
    assert not missing, (f"kubernetes-validate ships no schemas for Kubernetes {missing}: "
                         "upgrade it (pip install -U kubernetes-validate)")
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    for version in KUBERNETES_VERSIONS:
        command += ["-k", version]
    # Once per version (-k repeats per file), so each rendering is its own file.
    rendered = scratch / f"{re.sub(r'[^a-z0-9]+', '-', name)}.yaml"
    rendered.write_text(_rendered_text(name, scratch))
    done = subprocess.run(command + [str(rendered)],
                          check=False, capture_output=True, text=True, timeout=120)
    # --quiet leaves errors and warnings; a warning means a kind without a schema.
    report = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not report, f"{name} does not validate:\n{report}"


def test_every_namespaced_resource_is_in_the_mfr_namespace(rendering) -> None:
    _, docs = rendering
    stray = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
             if d["kind"] not in CLUSTER_SCOPED_KINDS
             and d["metadata"].get("namespace") != NAMESPACE]
    assert not stray
    # Cluster-scoped objects (the namespace, the gvisor RuntimeClass) have none.
    assert not [d for d in docs
                if d["kind"] in CLUSTER_SCOPED_KINDS and "namespace" in d["metadata"]]


# --- workloads -----------------------------------------------------------------------------

def test_platform_workloads_are_all_there(rendering) -> None:
    _, docs = rendering
    deployments = _named(docs, "Deployment")
    assert set(deployments) == set(GRPC_HEALTH_PORTS) | {"gateway"}
    jobs = _named(docs, "Job")
    assert jobs["migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "migrate"]
    for workload, deployment in deployments.items():
        assert _pod_spec(deployment)["containers"][0]["args"] == ["serve", workload]


def test_every_container_has_requests_limits_and_a_locked_down_security_context(rendering) -> None:
    name, docs = rendering
    for workload in _of_kind(docs, *WORKLOAD_KINDS):
        pod = _pod_spec(workload)
        pod_security = pod.get("securityContext", {})
        for container in _containers(workload):
            where = f"{name}: {workload['kind']}/{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where}: {bound}"
            security = container.get("securityContext", {})
            effective = {**pod_security, **security}
            assert effective.get("runAsNonRoot") is True, where
            assert effective.get("runAsUser", 1) != 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in security.get("capabilities", {}).get("drop", []), where
            assert not security.get("capabilities", {}).get("add"), where
            assert effective.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            # Writable scratch is an emptyDir, never the image's filesystem.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], where


def test_long_running_workloads_have_startup_readiness_and_liveness_probes(rendering) -> None:
    name, docs = rendering
    for workload in _of_kind(docs, "Deployment", "StatefulSet"):
        for container in _pod_spec(workload)["containers"]:
            where = f"{name}: {workload['metadata']['name']}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{where}: no {probe}"
            startup = container["startupProbe"]
            # Sized for loading, not for a warm process: at least two minutes.
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, where

    deployments = _named(docs, "Deployment")
    for workload, port in GRPC_HEALTH_PORTS.items():
        container = _pod_spec(deployments[workload])["containers"][0]
        assert int(_env(container, docs)["MFR_GRPC_PORT"]) == port
        assert port in {p["containerPort"] for p in container["ports"]}
        # Native gRPC health checking: readiness asks for the overall status (""), which
        # follows PostgreSQL and S3; startup and liveness for "liveness", SERVING while
        # the process runs (an outage of a dependency restarts nothing).
        for probe, service in (("startupProbe", "liveness"), ("readinessProbe", ""),
                               ("livenessProbe", "liveness")):
            assert container[probe].get("grpc") == {"port": port, "service": service}, (
                f"{name}: {workload} {probe}")
    gateway = _pod_spec(deployments["gateway"])["containers"][0]
    for probe, path in (("startupProbe", "/livez"), ("readinessProbe", "/healthz"),
                        ("livenessProbe", "/livez")):
        assert gateway[probe]["httpGet"]["path"] == path
    assert int(_env(gateway, docs)["MFR_GATEWAY_PORT"]) == GATEWAY_PORT


def test_every_grpc_process_exports_metrics_on_its_port_and_says_so(rendering) -> None:
    name, docs = rendering
    deployments = _named(docs, "Deployment")
    for workload, port in METRICS_PORTS.items():
        template = deployments[workload]["spec"]["template"]
        container = template["spec"]["containers"][0]
        assert int(_env(container, docs)["MFR_METRICS_PORT"]) == port, f"{name}: {workload}"
        assert {"name": "metrics", "containerPort": port} in container["ports"], workload
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", workload
        assert annotations["prometheus.io/port"] == str(port), workload


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (binary suffixes, as the manifests write them)."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    suffix = quantity[-2:]
    return int(quantity[:-2]) * units[suffix] if suffix in units else int(quantity)


def test_the_model_process_limits_fit_inside_the_embedder_workers_memory_limit(
        rendering) -> None:
    name, docs = rendering
    container = _pod_spec(_named(docs, "Deployment")["embedder-worker"])["containers"][0]
    env = _env(container, docs)
    limit = _bytes(container["resources"]["limits"]["memory"])
    models = int(env.get("MFR_EMBEDDER_CACHED_MODELS", 2))
    # Every cached model is a process that may reach the address-space limit, and the
    # worker itself needs room: all of them within the container's limit.
    assert models * int(env["MFR_EMBEDDER_MEMORY_MB"]) * (1 << 20) < limit, name
    assert env["MFR_CACHE_DIR"].startswith("/tmp/")


def test_every_workload_has_its_own_service_account(rendering) -> None:
    _, docs = rendering
    accounts = _named(docs, "ServiceAccount")
    users: dict[str, str] = {}
    for workload in _of_kind(docs, *WORKLOAD_KINDS):
        pod = _pod_spec(workload)
        account = pod.get("serviceAccountName", "default")
        workload_name = workload["metadata"]["name"]
        assert account != "default" and account in accounts, workload_name
        assert account not in users, f"{workload_name} shares {account} with {users.get(account)}"
        users[account] = workload_name
        # No workload talks to the Kubernetes API.
        assert pod.get("automountServiceAccountToken") is False, workload_name


def test_termination_grace_outlasts_the_servers_own_grace(rendering) -> None:
    _, docs = rendering
    for workload in _of_kind(docs, *WORKLOAD_KINDS):
        pod = _pod_spec(workload)
        period = pod.get("terminationGracePeriodSeconds", 30)
        assert period > SERVER_GRACE_S, workload["metadata"]["name"]
        for container in pod["containers"]:
            grace = float(_env(container, docs).get("MFR_SHUTDOWN_GRACE_S", 0))
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
            assert period > grace + pre_stop.get("seconds", 0), workload["metadata"]["name"]
    for workload in HPA_SCALED:
        worker = _pod_spec(_named(docs, "Deployment")[workload])
        assert 60 <= worker["terminationGracePeriodSeconds"] <= 120, workload


# --- scaling and disruption ----------------------------------------------------------------

def test_queue_workers_autoscale_and_deployments_have_disruption_budgets(rendering) -> None:
    _, docs = rendering
    deployments = _named(docs, "Deployment")
    autoscalers = _named(docs, "HorizontalPodAutoscaler")
    assert set(autoscalers) == HPA_SCALED
    for target, hpa in autoscalers.items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": target}
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu"
                   for m in hpa["spec"]["metrics"])
        # The HPA owns the replica count; a spec.replicas would reset it on every apply.
        assert "replicas" not in deployments[target]["spec"], target
    for workload in set(deployments) - HPA_SCALED:
        # The APIs (embedder, scorer) and the other services: a fixed count.
        assert deployments[workload]["spec"]["replicas"] >= 1, workload
    budgets = _of_kind(docs, "PodDisruptionBudget")
    for workload, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(_selects(b["spec"]["selector"], labels) for b in budgets), workload


@requires_kubectl
def test_queue_autoscaling_reads_the_queue_depth_gauges(render) -> None:
    external = _external_metrics(render(QUEUE_AUTOSCALING))
    assert external == {"embedder-worker": {"mfr_embedder_queue_shards"},
                        "scorer-worker": {"mfr_scorer_queue_tiles"}}
    # prometheus-adapter serves exactly the names the HPAs read, each from the gauge
    # of the same name (tests/integration/test_metrics_names.py: the processes export it).
    values = yaml.safe_load(
        (K8S / "components" / "queue-autoscaling" / "prometheus-adapter-values.yaml").read_text())
    rules = values["rules"]["external"]
    served = {rule["name"]["as"] for rule in rules}
    assert served == set().union(*external.values())
    for rule in rules:
        assert rule["seriesQuery"].startswith(rule["name"]["as"] + "{"), rule["seriesQuery"]
    # The base HPAs need no metrics adapter.
    assert all(m["type"] == "Resource"
               for hpa in _of_kind(render("base"), "HorizontalPodAutoscaler")
               for m in hpa["spec"]["metrics"])


# --- GPUs, data stores, services -----------------------------------------------------------

def test_gpus_go_to_the_embedder_and_scorer_workers_only_with_the_gpu_components(
        rendering) -> None:
    name, docs = rendering
    deployments = _named(docs, "Deployment")
    for workload, deployment in deployments.items():
        pod = _pod_spec(deployment)
        container = pod["containers"][0]
        resources = container["resources"]
        if name in GPU_RENDERINGS and workload in GPU_WORKLOADS:
            assert resources["requests"].get("nvidia.com/gpu") == 1, workload
            assert resources["limits"].get("nvidia.com/gpu") == 1, workload
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
                pod["tolerations"])
            assert "mfr-platform-gpu:" in container["image"]
        else:
            assert "nvidia.com/gpu" not in resources.get("limits", {}), workload
            assert "nvidia.com/gpu" not in resources.get("requests", {}), workload
            assert "mfr-platform-gpu" not in container["image"], workload


def test_images_are_pinned(rendering) -> None:
    _, docs = rendering
    for workload in _of_kind(docs, *WORKLOAD_KINDS):
        for container in _containers(workload):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", image


SEAWEEDFS_IMAGE = "chrislusf/seaweedfs:"  # the official image


def _is_minio_image(image: str) -> bool:
    """MinIO's community server or its `mc` client (both archived in April 2026)."""
    repository = image.rpartition(":")[0] if ":" in image.rsplit("/", 1)[-1] else image
    return "minio" in repository or repository.rsplit("/", 1)[-1] == "mc"


@requires_kubectl
def test_dev_runs_seaweedfs_and_postgresql_on_persistent_volumes(render) -> None:
    docs = render("dev")
    stores = _named(docs, "StatefulSet")
    assert set(stores) == {"seaweedfs", "postgres"}
    assert stores["postgres"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "postgres:17")
    seaweedfs = _pod_spec(stores["seaweedfs"])["containers"][0]
    tag = seaweedfs["image"].removeprefix(SEAWEEDFS_IMAGE)
    assert seaweedfs["image"].startswith(SEAWEEDFS_IMAGE) and tag and tag != "latest", (
        seaweedfs["image"])
    for store in stores.values():
        assert store["spec"]["volumeClaimTemplates"], store["metadata"]["name"]
    # SeaweedFS keeps everything on its claim, S3 on 8333 behind the Service the
    # platform's mfr-s3 endpoint names, and its S3 config built from that Secret.
    assert {"name": "data", "mountPath": "/data"} in seaweedfs["volumeMounts"]
    script = " ".join(seaweedfs["command"] + seaweedfs["args"])
    assert "weed" in script and " server " in script and "-s3 " in script
    assert "-dir=/data" in script and "-s3.config=" in script
    assert "-master.telemetry=false" in script
    keys = {v["valueFrom"]["secretKeyRef"]["key"] for v in seaweedfs["env"]
            if "secretKeyRef" in v.get("valueFrom", {})}
    assert keys == {"access-key", "secret-key"}
    (s3,) = [s for s in _of_kind(docs, "Secret") if s["metadata"]["name"].startswith("mfr-s3")]
    endpoint = base64.b64decode(s3["data"]["endpoint"]).decode()
    host, _, port = endpoint.partition(":")
    service = _named(docs, "Service")[host]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert {"name": "s3", "containerPort": int(port)} in seaweedfs["ports"]
    # The buckets Job: the same image (weed shell), every bucket the platform uses.
    job = _named(docs, "Job")["buckets"]
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["ttlSecondsAfterFinished"] > 0
    (container,) = _pod_spec(job)["containers"]
    assert container["image"] == seaweedfs["image"]
    script = container["args"][0]
    assert "weed shell" in script and "s3.bucket.create" in script
    assert "models testsets features results" in script


def test_no_rendering_runs_minio_or_its_client(rendering) -> None:
    name, docs = rendering
    images = [c["image"] for w in _of_kind(docs, *WORKLOAD_KINDS) for c in _containers(w)]
    assert not [i for i in images if _is_minio_image(i)], name


@requires_kubectl
@pytest.mark.parametrize("name", sorted(PRODUCTION_RENDERINGS))
def test_production_uses_external_data_stores_and_generates_no_secrets(
        name: str, render) -> None:
    docs = render(name)
    assert not _of_kind(docs, "StatefulSet", "PersistentVolumeClaim")
    images = [c["image"] for w in _of_kind(docs, *WORKLOAD_KINDS) for c in _containers(w)]
    assert not [i for i in images if i.startswith((SEAWEEDFS_IMAGE, "postgres"))]
    # Secrets are the organiser's (created out of band), never rendered.
    assert not _of_kind(docs, "Secret")


def test_services_reach_pods_on_declared_ports(rendering) -> None:
    _, docs = rendering
    templates = [w["spec"]["template"] for w in _of_kind(docs, "Deployment", "StatefulSet")]
    for service in _of_kind(docs, "Service"):
        matched = [t for t in templates
                   if _selects({"matchLabels": service["spec"]["selector"]}, t["metadata"]["labels"])]
        assert len(matched) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in matched[0]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, service["metadata"]["name"]
