"""NetworkPolicies start from deny-all and open only the flows of docs/architecture.md;
images run as non-root; every workload reads what the stack serves."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.unit.k8s_support import (
    DATABASE_USERS,
    GATEWAY_PORT,
    GRPC_HEALTH_PORTS,
    HPA_SCALED,
    K8S,
    METRICS_PORTS,
    POLICY_RENDERINGS,
    REPO,
    SERVED_CHALLENGES,
    _containers,
    _env,
    _ingress_sources,
    _named,
    _of_kind,
    _pod_spec,
    _selects,
    requires_kubectl,
)

# --- network policies ----------------------------------------------------------------------

def test_network_policy_component_starts_with_deny_all() -> None:
    component = K8S / "components" / "network-policy"
    first = yaml.safe_load((component / "kustomization.yaml").read_text())["resources"][0]
    policies = list(yaml.safe_load_all((component / first).read_text()))
    assert len(policies) == 1
    policy = policies[0]
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


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
                elif peer["namespaceSelector"] == MONITORING and "podSelector" not in peer:
                    allowed.add("monitoring")
                else:
                    allowed.add("other-namespace")
            else:
                allowed |= {n for n, labels in pods.items() if _selects(peer["podSelector"], labels)}
        return allowed

    assert callers("gateway", GATEWAY_PORT) == {"anyone"}
    for workload in ("validator", "embedder", "scorer"):
        assert callers(workload, GRPC_HEALTH_PORTS[workload]) == {"gateway", "dispatcher"}
    # The dispatcher records results itself: it has no business with the ranker.
    assert callers("ranker", GRPC_HEALTH_PORTS["ranker"]) == {"gateway", "ranker-client"}
    # Prometheus, from the monitoring namespace, scrapes every process's metrics port.
    for workload, port in METRICS_PORTS.items():
        assert callers(workload, port) == {"monitoring"}, f"{name}: {workload}"
    # The queue workers and the dispatcher accept nothing else, on any port they declare.
    for workload in HPA_SCALED | {"dispatcher"}:
        container = _pod_spec(_named(docs, "Deployment")[workload])["containers"][0]
        for port in {p["containerPort"] for p in container["ports"]} - {METRICS_PORTS[workload]}:
            assert callers(workload, port) == set(), f"{name}: {workload} on {port}"


MONITORING = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}

NO_DATABASE = {"validator"}  # it reads and writes S3 only
S3_USERS = {"validator", "embedder", "embedder-worker", "scorer", "scorer-worker", "gateway",
            "dispatcher"}


def _egress_ports(policies: list[dict], pod_labels: dict[str, str]) -> set[int]:
    ports: set[int] = set()
    for policy in policies:
        spec = policy["spec"]
        if "Egress" in spec.get("policyTypes", []) and _selects(spec["podSelector"], pod_labels):
            for rule in spec.get("egress", []):
                ports |= {p["port"] for p in rule.get("ports", [])}
    return ports


@requires_kubectl
@pytest.mark.parametrize("name", sorted(POLICY_RENDERINGS))
def test_only_the_workloads_that_use_the_database_get_its_secret_and_its_port(
        name: str, render) -> None:
    docs = render(name)
    policies = _of_kind(docs, "NetworkPolicy")
    deployments = _named(docs, "Deployment")
    assert set(deployments) == DATABASE_USERS | NO_DATABASE
    for workload, deployment in deployments.items():
        # Generated secrets carry a content hash (mfr-database-d9tmfh9cg5): compare the name.
        secrets = {re.sub(r"-[a-z0-9]{10}$", "", v["valueFrom"]["secretKeyRef"]["name"])
                   for c in _containers(deployment)
                   for v in c.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})}
        ports = _egress_ports(policies, deployment["spec"]["template"]["metadata"]["labels"])
        if workload in NO_DATABASE:
            assert "mfr-database" not in secrets and 5432 not in ports, workload
        else:
            assert "mfr-database" in secrets and 5432 in ports, workload
        if workload in S3_USERS:
            assert "mfr-s3" in secrets and {8333, 443} <= ports, f"{workload} needs S3"


@requires_kubectl
def test_dev_seaweedfs_serves_s3_to_mfr_pods_and_its_grpc_to_the_buckets_job_only(
        render) -> None:
    docs = render("dev+network-policy+queue-autoscaling")
    policies = _of_kind(docs, "NetworkPolicy")
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
            for w in _of_kind(docs, "Deployment", "StatefulSet", "Job")}

    def callers(port: int) -> set[str]:
        allowed: set[str] = set()
        for peer in _ingress_sources(policies, pods["seaweedfs"], port):
            assert set(peer) == {"podSelector"}, f"{port}: {peer}"  # this namespace's pods only
            allowed |= {n for n, labels in pods.items() if _selects(peer["podSelector"], labels)}
        return allowed

    assert S3_USERS <= callers(8333)
    # The master's and the filer's gRPC have no authentication: the buckets Job only;
    # the HTTP ports serve the process itself (and the kubelet's probes).
    for port in (19333, 18888):
        assert callers(port) == {"buckets"}, port
    for port in (9333, 8080, 8888):
        assert callers(port) == set(), port
    assert {19333, 18888} <= _egress_ports(policies, pods["buckets"])


def test_every_grpc_process_gets_the_service_token_and_the_gateway_does_not(rendering) -> None:
    name, docs = rendering
    secrets = _named(docs, "Secret")  # dev generates them; production creates them out of band
    for workload, deployment in _named(docs, "Deployment").items():
        env = {v["name"]: v for c in _containers(deployment) for v in c.get("env", [])}
        if workload not in GRPC_HEALTH_PORTS:
            # The gateway, facing the internet, calls no service: it does not hold the token.
            assert "MFR_SERVICE_TOKEN" not in env, f"{name}: {workload}"
            continue
        reference = env["MFR_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert re.sub(r"-[a-z0-9]{10}$", "", reference["name"]) == "mfr-service", workload
        assert reference["key"] == "token", workload
        if secrets:
            assert "token" in secrets[reference["name"]]["data"], f"{name}: {workload}"


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


def test_every_deployment_reads_the_served_challenge_only_with_a_challenge_component(
        rendering) -> None:
    name, docs = rendering
    config_maps = _named(docs, "ConfigMap")
    challenge_maps = [n for n in config_maps if n.startswith("mfr-challenge")]
    for workload, deployment in _named(docs, "Deployment").items():
        container = _pod_spec(deployment)["containers"][0]
        served = _env(container, docs).get("MFR_CHALLENGE")
        if name not in SERVED_CHALLENGES:
            assert served is None, workload
            continue
        assert served == "/etc/mfr/challenge/challenge.toml", workload
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["challenge"]["mountPath"] == "/etc/mfr/challenge"
        volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
        assert volumes["challenge"]["configMap"]["name"] in challenge_maps
    if name in SERVED_CHALLENGES:
        (generated,) = challenge_maps
        served_id = SERVED_CHALLENGES[name]
        assert f'id = "{served_id}"' in config_maps[generated]["data"]["challenge.toml"]
    else:
        assert not challenge_maps


def test_the_dispatcher_is_told_which_test_set_to_use(rendering) -> None:
    _, docs = rendering
    dispatcher = _named(docs, "Deployment")["dispatcher"]
    assert "MFR_TESTSET_ID" in _env(_pod_spec(dispatcher)["containers"][0], docs)
