"""The pods that run participants' ONNX models: nothing to steal, nowhere to send it.

The validator and the embedder workers (CPU, and GPU with components/gpu-embedder)
run a submitted model in a child process. In every rendering their pods are locked
down (seccomp, non-root, no service-account token, read-only root filesystem, no
capabilities, writable paths on emptyDirs only); components/gvisor puts exactly these
pods under gVisor, on top of every overlay; and the validator, which has no database,
can reach PostgreSQL neither by its egress nor through PostgreSQL's ingress.
"""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.unit.k8s_support import (
    DATABASE_USERS,
    GPU_RENDERINGS,
    GVISOR_RENDERINGS,
    K8S,
    NAMESPACE,
    POLICY_RENDERINGS,
    REPO,
    WORKLOAD_KINDS,
    _composed_text,
    _containers,
    _env,
    _ingress_sources,
    _named,
    _of_kind,
    _pod_spec,
    _selects,
    requires_kubectl,
)

# What `mfr serve` runs a participant's model in: the validator, the embedder workers.
MODEL_SERVERS = {"validator", "embedder-worker"}
IMAGE_USER = 10001  # USER in Dockerfile and Dockerfile.gpu
DOCKERFILES = {"mfr-platform": "Dockerfile", "mfr-platform-gpu": "Dockerfile.gpu"}
# Where the processes write: each must lie on a writable emptyDir.
WRITABLE_ENV = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "MFR_CACHE_DIR")
OVERLAYS = ("base", "overlays/dev", "overlays/gpu", "overlays/production")
GPU_OVERLAYS = {"overlays/gpu"}
POSTGRES_PORT = 5432
# DNS, and S3 (the dev SeaweedFS on 8333, an external endpoint on 443): nothing else.
VALIDATOR_EGRESS_PORTS = {53, 443, 8333}
ALL_WORKLOAD_KINDS = (*WORKLOAD_KINDS, "DaemonSet", "CronJob", "ReplicaSet", "Pod")


def _docs(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _template(workload: dict) -> dict:
    """The pod template of any workload kind (a CronJob's one level deeper, a Pod itself)."""
    if workload["kind"] == "Pod":
        return workload
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]
    return workload["spec"]["template"]


def _model_pods(name: str, docs: list[dict]) -> dict[str, dict]:
    """The workloads whose container runs `serve validator` or `serve embedder-worker`,
    by name; both must be there (an empty list would pass every check vacuously)."""
    found: dict[str, dict] = {}
    servers: set[str] = set()
    for workload in _of_kind(docs, *ALL_WORKLOAD_KINDS):
        spec = _template(workload)["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            args = container.get("args", [])
            if len(args) >= 2 and args[0] == "serve" and args[1] in MODEL_SERVERS:
                found[workload["metadata"]["name"]] = workload
                servers.add(args[1])
    assert servers == MODEL_SERVERS, f"{name}: model servers found: {sorted(servers)}"
    if name in GPU_RENDERINGS:
        # The GPU embedder worker (components/gpu-embedder) is among them.
        assert any(_repository(c["image"]) == "mfr-platform-gpu"
                   for c in _containers(found["embedder-worker"])), name
    return found


def _repository(image: str) -> str:
    """registry.example.org/mfr/mfr-platform-gpu:0.1.0 -> mfr-platform-gpu"""
    last = image.rsplit("/", 1)[-1]
    return last.split("@", 1)[0].split(":", 1)[0]


@functools.cache
def _image_env(dockerfile: str) -> dict[str, str]:
    """The ENV of the Dockerfile's runtime (last) stage."""
    runtime = re.split(r"^FROM ", (REPO / dockerfile).read_text(), flags=re.MULTILINE)[-1]
    env: dict[str, str] = {}
    for line in re.sub(r"\\\n", " ", runtime).splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:], comments=True):
                key, _, value = item.partition("=")
                env[key] = value
    assert "HOME" in env and "TMPDIR" in env, f"{dockerfile}: no HOME/TMPDIR in ENV"
    return env


def _assert_locked_down(where: str, workload: dict) -> None:
    pod = _template(workload)["spec"]
    security = pod.get("securityContext", {})
    assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, where
    assert security.get("runAsNonRoot") is True, where
    assert security.get("runAsUser", IMAGE_USER) == IMAGE_USER, where
    assert pod.get("automountServiceAccountToken") is False, where
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), f"{where}: {host}"
    for container in pod.get("initContainers", []) + pod["containers"]:
        inside = f"{where}/{container['name']}"
        own = container.get("securityContext", {})
        assert own.get("readOnlyRootFilesystem") is True, inside
        assert own.get("allowPrivilegeEscalation") is False, inside
        assert own.get("capabilities", {}).get("drop") == ["ALL"], inside
        assert not own.get("capabilities", {}).get("add"), inside
        assert not own.get("privileged"), inside
        # A container may not undo the pod's settings.
        assert own.get("seccompProfile", {"type": "RuntimeDefault"}) == {
            "type": "RuntimeDefault"}, inside
        assert own.get("runAsNonRoot", True) is True, inside
        assert own.get("runAsUser", IMAGE_USER) == IMAGE_USER, inside


# --- item 1: the pods' own lockdown ---------------------------------------------------------

def test_the_model_pods_are_locked_down(rendering) -> None:
    name, docs = rendering
    for workload_name, workload in _model_pods(name, docs).items():
        _assert_locked_down(f"{name}: {workload['kind']}/{workload_name}", workload)
        account = _named(docs, "ServiceAccount")[_pod_spec(workload)["serviceAccountName"]]
        assert account.get("automountServiceAccountToken") is False, workload_name


def test_the_model_pods_write_only_to_empty_dirs(rendering) -> None:
    name, docs = rendering
    for workload_name, workload in _model_pods(name, docs).items():
        pod = _template(workload)["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        # Nothing of the node's, no claim outliving the pod: emptyDirs, ConfigMaps, Secrets.
        for volume in volumes.values():
            assert not {"hostPath", "persistentVolumeClaim"} & set(volume), (
                f"{name}: {workload_name}: volume {volume['name']}")
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name}: {workload_name}/{container['name']}"
            writable = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])
                        if "emptyDir" in volumes[m["name"]] and not m.get("readOnly")]
            assert "/tmp" in writable, f"{where}: no emptyDir at /tmp"
            # The image's environment, then mfr-config and the container's own.
            env = {**_image_env(DOCKERFILES[_repository(container["image"])]),
                   **_env(container, docs)}
            for variable in WRITABLE_ENV:
                path = env.get(variable)
                assert path and any(path == m or path.startswith(m + "/") for m in writable), (
                    f"{where}: {variable}={path!r} is not on a writable emptyDir {writable}")


# --- item 2: components/gvisor ----------------------------------------------------------------

def _assert_gvisor_on_exactly_the_model_pods(name: str, docs: list[dict],
                                             enabled: bool) -> None:
    models = _model_pods(name, docs)
    for workload in _of_kind(docs, *ALL_WORKLOAD_KINDS):
        workload_name = workload["metadata"]["name"]
        expected = "gvisor" if enabled and workload_name in models else None
        assert _template(workload)["spec"].get("runtimeClassName") == expected, (
            f"{name}: {workload['kind']}/{workload_name}")
    classes = _of_kind(docs, "RuntimeClass")
    if not enabled:
        assert not classes, name
        return
    assert [(c["metadata"]["name"], c["handler"]) for c in classes] == [("gvisor", "runsc")], name
    assert "namespace" not in classes[0]["metadata"], "RuntimeClass is cluster-scoped"


def test_no_rendering_sets_a_runtime_class_unless_it_adds_the_gvisor_component(
        rendering) -> None:
    name, docs = rendering
    _assert_gvisor_on_exactly_the_model_pods(name, docs, enabled=name in GVISOR_RENDERINGS)


@requires_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gvisor_component_runs_exactly_the_model_pods_under_gvisor(
        overlay: str, scratch: Path) -> None:
    name = f"{overlay}+gvisor"
    docs = _docs(_composed_text(overlay, ("gvisor",), scratch))
    _assert_gvisor_on_exactly_the_model_pods(name, docs, enabled=True)
    models = _model_pods(name, docs)
    if overlay in GPU_OVERLAYS:
        assert any(_repository(c["image"]) == "mfr-platform-gpu"
                   for c in _containers(models["embedder-worker"])), name
    # The component changes the runtime only: the lockdown is the overlay's, unchanged.
    for workload_name, workload in models.items():
        _assert_locked_down(f"{name}: {workload_name}", workload)
    plain = {(d["kind"], d["metadata"]["name"]) for d in _docs(_composed_text(overlay, (), scratch))}
    added = {(d["kind"], d["metadata"]["name"]) for d in docs} - plain
    assert added == {("RuntimeClass", "gvisor")}, name


def test_the_gvisor_component_says_how_to_enable_it_and_what_it_changes() -> None:
    text = (K8S / "components" / "gvisor" / "kustomization.yaml").read_text()
    assert "- ../../components/gvisor" in text  # an overlay's components: entry
    assert "runsc" in text and "Landlock" in text and "seccomp" in text
    for overlay in ("dev", "gpu", "production"):
        kustomization = yaml.safe_load(
            (K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert not any(c.rstrip("/").endswith("gvisor")
                       for c in kustomization.get("components", [])), overlay


# --- item 3: the validator and PostgreSQL --------------------------------------------------

def test_the_validator_has_no_database(rendering) -> None:
    name, docs = rendering
    config_maps = _named(docs, "ConfigMap")
    validator = _named(docs, "Deployment")["validator"]
    for container in _containers(validator):
        names = {v["name"] for v in container.get("env", [])}
        names |= set(_env(container, docs))
        assert "MFR_DATABASE_URL" not in names, name
        secrets = {v["valueFrom"]["secretKeyRef"]["name"] for v in container.get("env", [])
                   if "secretKeyRef" in v.get("valueFrom", {})}
        secrets |= {s["secretRef"]["name"] for s in container.get("envFrom", [])
                    if "secretRef" in s}
        assert not [s for s in secrets if s.startswith("mfr-database")], name
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                data = config_maps[source["configMapRef"]["name"]].get("data", {})
                assert not [k for k in data if "DATABASE" in k], name


def _egress_rules(policies: list[dict], pod_labels: dict[str, str]) -> list[dict]:
    return [rule for policy in policies
            if "Egress" in policy["spec"].get("policyTypes", [])
            and _selects(policy["spec"]["podSelector"], pod_labels)
            for rule in policy["spec"].get("egress", [])]


def _admits(peer: dict, pod_labels: dict[str, str]) -> bool:
    """Whether an ingress peer admits a pod of this namespace ({} admits anyone)."""
    if "ipBlock" in peer:
        return True  # a CIDR may cover the pod network: count it as admitting
    namespace = peer.get("namespaceSelector")
    if namespace is not None and not _selects(
            namespace, {"kubernetes.io/metadata.name": NAMESPACE}):
        return False
    return _selects(peer.get("podSelector", {}), pod_labels)


@requires_kubectl
@pytest.mark.parametrize("name", sorted(POLICY_RENDERINGS))
def test_the_validator_cannot_reach_postgresql(name: str, render) -> None:
    docs = render(name)
    policies = _of_kind(docs, "NetworkPolicy")
    assert [p for p in policies
            if p["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}], name
    labels = {w["metadata"]["name"]: _template(w)["metadata"]["labels"]
              for w in _of_kind(docs, *ALL_WORKLOAD_KINDS)}
    validator = labels["validator"]

    # Egress: DNS and S3 only, each rule on named ports (none open to every port).
    rules = _egress_rules(policies, validator)
    assert rules, name
    ports: set[int] = set()
    for rule in rules:
        assert rule.get("ports"), f"{name}: a validator egress rule open on every port"
        for port in rule["ports"]:
            ports |= set(range(port["port"], port.get("endPort", port["port"]) + 1))
    assert POSTGRES_PORT not in ports, name
    assert ports == VALIDATOR_EGRESS_PORTS, f"{name}: validator egress on {sorted(ports)}"

    # Ingress: PostgreSQL (dev's StatefulSet; the same labels for one run beside the
    # platform in production) admits its users, never the validator.
    postgres = labels.get("postgres", {"app.kubernetes.io/name": "postgres",
                                       "app.kubernetes.io/part-of": "mfr"})
    assert [p for p in policies if "Ingress" in p["spec"].get("policyTypes", [])
            and p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], postgres)], (
        f"{name}: no ingress policy of PostgreSQL's own")
    peers = _ingress_sources(policies, postgres, POSTGRES_PORT)
    assert not [p for p in peers if _admits(p, validator)], f"{name}: {peers}"
    for user in DATABASE_USERS | {"migrate"}:
        assert any(_admits(p, labels[user]) for p in peers), f"{name}: {user}"
        assert POSTGRES_PORT in {p["port"] for r in _egress_rules(policies, labels[user])
                                 for p in r.get("ports", [])}, f"{name}: {user}"
