"""The Kubernetes manifests render, validate, and keep the platform's rules.

Every overlay, and each combination of overlay and components that
docs/operations.md tells organisers to use, is rendered with ``kubectl
kustomize`` and validated, one kubernetes-validate ``--strict`` call per
rendering, against the Kubernetes versions below. The other tests check what
a schema cannot: probes, requests and limits, the security context, one
ServiceAccount per workload, grace periods longer than the servers' own,
GPUs where they belong, where the data stores live, and NetworkPolicies that
start from deny-all and open only the flows of docs/architecture.md.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
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
}
GPU_RENDERINGS = {"gpu", "production+gpu+queue-autoscaling"}
PRODUCTION_RENDERINGS = {name for name in RENDERINGS if name.startswith("production")}
CHALLENGE_RENDERINGS = {"production+challenge"}
POLICY_RENDERINGS = {"production", "dev+network-policy+queue-autoscaling",
                     "production+gpu+queue-autoscaling", "production+challenge"}

# The platform's workloads: gRPC health port (probes) or the gateway's HTTP port.
GRPC_HEALTH_PORTS = {"validator": 50051, "embedder": 50052, "scorer": 50053,
                     "ranker": 50054, "scorer-worker": 50055, "dispatcher": 50056}
GATEWAY_PORT = 8000
HPA_SCALED = {"embedder", "scorer-worker"}
GPU_WORKLOADS = {"embedder", "scorer-worker"}
SERVER_GRACE_S = 30  # MFR_SHUTDOWN_GRACE_S default

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}

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
    if not components:
        return _kustomize(K8S / directory)
    # Kustomize refuses absolute paths to other kustomizations: compose the
    # combination in a scratch directory with relative ones.
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


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kustomize")


@pytest.fixture(scope="module")
def render(scratch: Path):
    def render(name: str) -> list[dict]:
        return [doc for doc in yaml.safe_load_all(_rendered_text(name, scratch)) if doc]
    return render


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


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_every_namespaced_resource_is_in_the_mfr_namespace(name: str, render) -> None:
    docs = render(name)
    stray = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
             if d["kind"] != "Namespace" and d["metadata"].get("namespace") != NAMESPACE]
    assert not stray


# --- workloads -----------------------------------------------------------------------------

@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_platform_workloads_are_all_there(name: str, render) -> None:
    docs = render(name)
    deployments = _named(docs, "Deployment")
    assert set(deployments) == set(GRPC_HEALTH_PORTS) | {"gateway"}
    jobs = _named(docs, "Job")
    assert jobs["migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "migrate"]
    for workload, deployment in deployments.items():
        assert _pod_spec(deployment)["containers"][0]["args"] == ["serve", workload]


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_every_container_has_requests_limits_and_a_locked_down_security_context(
        name: str, render) -> None:
    for workload in _of_kind(render(name), *WORKLOAD_KINDS):
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


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_long_running_workloads_have_startup_readiness_and_liveness_probes(
        name: str, render) -> None:
    docs = render(name)
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
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            # Native gRPC health checking, overall status ("").
            assert container[probe].get("grpc") == {"port": port, "service": ""}, (
                f"{name}: {workload} {probe}")
    gateway = _pod_spec(deployments["gateway"])["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"]["path"] == "/healthz"
    assert int(_env(gateway, docs)["MFR_GATEWAY_PORT"]) == GATEWAY_PORT


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_every_workload_has_its_own_service_account(name: str, render) -> None:
    docs = render(name)
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


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_termination_grace_outlasts_the_servers_own_grace(name: str, render) -> None:
    docs = render(name)
    for workload in _of_kind(docs, *WORKLOAD_KINDS):
        pod = _pod_spec(workload)
        period = pod.get("terminationGracePeriodSeconds", 30)
        assert period > SERVER_GRACE_S, workload["metadata"]["name"]
        for container in pod["containers"]:
            grace = float(_env(container, docs).get("MFR_SHUTDOWN_GRACE_S", 0))
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
            assert period > grace + pre_stop.get("seconds", 0), workload["metadata"]["name"]
    worker = _pod_spec(_named(docs, "Deployment")["scorer-worker"])
    assert 60 <= worker["terminationGracePeriodSeconds"] <= 120


# --- scaling and disruption ----------------------------------------------------------------

@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_embedder_and_scorer_workers_autoscale_and_deployments_have_disruption_budgets(
        name: str, render) -> None:
    docs = render(name)
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
    budgets = _of_kind(docs, "PodDisruptionBudget")
    for workload, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(_selects(b["spec"]["selector"], labels) for b in budgets), workload


@requires_kubectl
def test_queue_autoscaling_reads_the_queue_depth_gauges(render) -> None:
    autoscalers = _named(render("dev+network-policy+queue-autoscaling"), "HorizontalPodAutoscaler")
    external = {target: {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]
                         if m["type"] == "External"}
                for target, hpa in autoscalers.items()}
    assert external == {"embedder": {"mfr_embedder_queue_shards"},
                        "scorer-worker": {"mfr_scorer_queue_tiles"}}
    # The base HPAs need no metrics adapter.
    assert all(m["type"] == "Resource"
               for hpa in _of_kind(render("base"), "HorizontalPodAutoscaler")
               for m in hpa["spec"]["metrics"])


# --- GPUs, data stores, services -----------------------------------------------------------

@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_gpus_go_to_the_embedder_and_scorer_workers_only_with_the_gpu_components(
        name: str, render) -> None:
    deployments = _named(render(name), "Deployment")
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


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_images_are_pinned(name: str, render) -> None:
    for workload in _of_kind(render(name), *WORKLOAD_KINDS):
        for container in _containers(workload):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", image


@requires_kubectl
def test_dev_runs_minio_and_postgresql_on_persistent_volumes(render) -> None:
    docs = render("dev")
    stores = _named(docs, "StatefulSet")
    assert set(stores) == {"minio", "postgres"}
    assert stores["postgres"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "postgres:17")
    assert stores["minio"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "quay.io/minio/minio:")
    for store in stores.values():
        assert store["spec"]["volumeClaimTemplates"], store["metadata"]["name"]
    assert "buckets" in _named(docs, "Job")


@requires_kubectl
@pytest.mark.parametrize("name", sorted(PRODUCTION_RENDERINGS))
def test_production_uses_external_data_stores_and_generates_no_secrets(
        name: str, render) -> None:
    docs = render(name)
    assert not _of_kind(docs, "StatefulSet", "PersistentVolumeClaim")
    images = [c["image"] for w in _of_kind(docs, *WORKLOAD_KINDS) for c in _containers(w)]
    assert not [i for i in images if "minio" in i or i.startswith("postgres")]
    # Secrets are the organiser's (created out of band), never rendered.
    assert not _of_kind(docs, "Secret")


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_services_reach_pods_on_declared_ports(name: str, render) -> None:
    docs = render(name)
    templates = [w["spec"]["template"] for w in _of_kind(docs, "Deployment", "StatefulSet")]
    for service in _of_kind(docs, "Service"):
        matched = [t for t in templates
                   if _selects({"matchLabels": service["spec"]["selector"]}, t["metadata"]["labels"])]
        assert len(matched) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in matched[0]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, service["metadata"]["name"]


# --- network policies ----------------------------------------------------------------------

def test_network_policy_component_starts_with_deny_all() -> None:
    component = K8S / "components" / "network-policy"
    first = yaml.safe_load((component / "kustomization.yaml").read_text())["resources"][0]
    policies = list(yaml.safe_load_all((component / first).read_text()))
    assert len(policies) == 1
    policy = policies[0]
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


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


@requires_kubectl
@pytest.mark.parametrize("name", sorted(POLICY_RENDERINGS))
def test_network_policies_open_only_the_architectures_flows(name: str, render) -> None:
    docs = render(name)
    policies = _of_kind(docs, "NetworkPolicy")
    deny_all = [p for p in policies
                if p["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}]
    assert len(deny_all) == 1
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
            for w in _of_kind(docs, "Deployment")}

    def callers(workload: str, port: int) -> set[str]:
        """Platform workloads (or "anyone", "ranker-client") allowed to connect."""
        allowed = set()
        for peer in _ingress_sources(policies, pods[workload], port):
            if not peer:
                allowed.add("anyone")
            elif "namespaceSelector" in peer:
                if peer.get("podSelector", {}).get("matchLabels") == {"mfr.io/ranker-client": "true"}:
                    allowed.add("ranker-client")
                else:
                    allowed.add("other-namespace")
            else:
                allowed |= {n for n, labels in pods.items() if _selects(peer["podSelector"], labels)}
        return allowed

    assert callers("gateway", GATEWAY_PORT) == {"anyone"}
    for workload in ("validator", "embedder", "scorer"):
        assert callers(workload, GRPC_HEALTH_PORTS[workload]) == {"gateway", "dispatcher"}
    assert callers("ranker", GRPC_HEALTH_PORTS["ranker"]) == {
        "gateway", "dispatcher", "ranker-client"}
    for workload in ("scorer-worker", "dispatcher"):
        assert callers(workload, GRPC_HEALTH_PORTS[workload]) == set()


# --- container images ----------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_run_as_non_root_without_build_tools(dockerfile: str) -> None:
    text = (REPO / dockerfile).read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) >= 2, "multi-stage build"
    runtime = stages[-1]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert re.search(r"^USER 10001", runtime, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["mfr"]' in runtime
    assert "WORKDIR /app" in runtime
    assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|-dev\b", runtime)


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_every_deployment_reads_the_served_challenge_only_with_the_challenge_component(
        name: str, render) -> None:
    docs = render(name)
    config_maps = _named(docs, "ConfigMap")
    challenge_maps = [n for n in config_maps if n.startswith("mfr-challenge")]
    for workload, deployment in _named(docs, "Deployment").items():
        container = _pod_spec(deployment)["containers"][0]
        served = _env(container, docs).get("MFR_CHALLENGE")
        if name not in CHALLENGE_RENDERINGS:
            assert served is None, workload
            continue
        assert served == "/etc/mfr/challenge/challenge.toml", workload
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["challenge"]["mountPath"] == "/etc/mfr/challenge"
        volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
        assert volumes["challenge"]["configMap"]["name"] in challenge_maps
    if name in CHALLENGE_RENDERINGS:
        (generated,) = challenge_maps
        assert 'id = "mfr-ongoing"' in config_maps[generated]["data"]["challenge.toml"]


@requires_kubectl
@pytest.mark.parametrize("name", RENDERINGS)
def test_the_dispatcher_is_told_which_test_set_to_use(name: str, render) -> None:
    docs = render(name)
    dispatcher = _named(docs, "Deployment")["dispatcher"]
    assert "MFR_TESTSET_ID" in _env(_pod_spec(dispatcher)["containers"][0], docs)
