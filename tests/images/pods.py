"""Run what Kubernetes would run: a rendered overlay's containers, from the built image.

Each container of each workload runs in a buildah container of its own
(`buildah run --isolation chroot`, the host's network), as the pod's
``runAsUser``, with the command, args and environment the manifests give it
(ConfigMap and Secret references resolved), its emptyDir at ``/tmp`` and the
Services' names resolving to 127.0.0.1. What needs a cluster (probes as the
kubelet runs them, HPAs, NetworkPolicies, PodDisruptionBudgets) stays with the
rendered-manifest tests in tests/unit/test_k8s*.py (docs/images.md).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def render(overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / overlay)], check=True,
                         capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@dataclass(frozen=True)
class Container:
    """One container of one workload, as the manifests describe it."""

    kind: str
    workload: str
    spec: dict
    pod: dict

    @property
    def image(self) -> str:
        return self.spec["image"]

    def argv(self, entrypoint: list[str], cmd: list[str]) -> list[str]:
        """Kubernetes' rule: command replaces ENTRYPOINT, args replace CMD."""
        return list(self.spec.get("command") or entrypoint) + list(self.spec.get("args") or cmd)

    def user(self) -> str:
        context = {**self.pod.get("securityContext", {}), **self.spec.get("securityContext", {})}
        return f"{context['runAsUser']}:{context['runAsGroup']}"

    def env(self, config_maps: dict[str, dict], secrets: dict[str, dict]) -> dict[str, str]:
        """The environment the kubelet would give it: envFrom first, then env."""
        env: dict[str, str] = {}
        for source in self.spec.get("envFrom", []):
            if "configMapRef" in source:
                env.update(config_maps[source["configMapRef"]["name"]])
            else:
                env.update(secrets[source["secretRef"]["name"]])
        for var in self.spec.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            ref = var["valueFrom"]
            if "secretKeyRef" in ref:
                env[var["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
            else:
                key = ref["configMapKeyRef"]
                env[var["name"]] = config_maps[key["name"]][key["key"]]
        return env

    def ready_check(self) -> tuple[str, int, str] | None:
        """(``grpc`` | ``http``, port, service or path) of the readiness probe."""
        probe = self.spec.get("readinessProbe")
        if not probe:
            return None
        if "grpc" in probe:
            return "grpc", probe["grpc"]["port"], probe["grpc"].get("service", "")
        port = probe["httpGet"]["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in self.spec["ports"] if p.get("name") == port)
        return "http", port, probe["httpGet"]["path"]

    def startup_budget_s(self) -> float:
        probe = self.spec.get("startupProbe") or {}
        return probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


@dataclass
class Cluster:
    """A rendered overlay: its containers, ConfigMaps, Secrets and Service names."""

    containers: list[Container]
    config_maps: dict[str, dict]
    secrets: dict[str, dict]
    services: list[str]

    @classmethod
    def from_docs(cls, docs: list[dict]) -> Cluster:
        containers, config_maps, secrets, services = [], {}, {}, []
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "ConfigMap":
                config_maps[name] = dict(doc.get("data", {}))
            elif kind == "Secret":
                secrets[name] = {k: base64.b64decode(v).decode() for k, v in
                                 doc.get("data", {}).items()} | doc.get("stringData", {})
            elif kind == "Service":
                services.append(name)
            elif kind in WORKLOAD_KINDS:
                pod = doc["spec"]["template"]["spec"]
                for spec in pod.get("initContainers", []) + pod["containers"]:
                    containers.append(Container(kind, name, spec, pod))
        return cls(containers, config_maps, secrets, services)

    def of_image(self, repository: str) -> list[Container]:
        return [c for c in self.containers if c.image.split(":")[0] == repository]


@dataclass
class ImageProcess:
    """One container's process, running from the image under buildah."""

    name: str
    process: subprocess.Popen
    container_id: str
    log: Path
    upper_dir: Path | None = None
    exit_code: int | None = field(default=None)

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def main_process(self):
        """The container's first process (``mfr ...``), below buildah's own."""
        import psutil

        try:
            below = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        for candidate in below:  # buildah -> chroot-runtime -> chroot-exec -> the process
            try:
                if candidate.parent().cmdline()[:1] == ["buildah-chroot-exec"]:
                    return candidate
            except (psutil.Error, AttributeError):
                continue
        return None

    def stop(self, grace_s: float = 30) -> int | None:
        """SIGTERM to the container's first process, as the kubelet sends it (buildah
        itself would SIGKILL its child), then SIGKILL after the grace period."""
        if self.alive():
            main = self.main_process()
            if main is not None:
                main.send_signal(signal.SIGTERM)
            else:
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.exit_code = self.process.returncode
        return self.exit_code


def listening_ports(containers: list[Container]) -> set[int]:
    """The ports the containers listen on (their pods share the host's network here)."""
    ports = set()
    for container in containers:
        ports |= {p["containerPort"] for p in container.spec.get("ports", [])}
        ports |= {int(v["value"]) for v in container.spec.get("env", [])
                  if v["name"].endswith("_PORT") and "value" in v}
    return ports


def busy(ports: set[int]) -> dict[int, str]:
    """Which of ``ports`` another process already listens on, with its name."""
    import psutil

    held = {}
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports:
            try:
                held[conn.laddr.port] = " ".join(psutil.Process(conn.pid).cmdline()[:3])
            except (psutil.Error, TypeError):
                held[conn.laddr.port] = f"pid {conn.pid}"
    return held


def image_config(image: str) -> dict:
    import json

    out = subprocess.run(["buildah", "inspect", "--type", "image", image], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["OCIv1"]["config"]


def start(name: str, image: str, argv: list[str], env: dict[str, str], user: str,
          scratch: Path, hosts: Path, logs: Path, mounts: dict[Path, str] | None = None
          ) -> ImageProcess:
    """Start ``argv`` in a new buildah container of ``image`` (its own process group)."""
    container_id = subprocess.run(["buildah", "from", "--pull-never", "--name",
                                   f"mfr-test-{name}-{os.getpid()}", image], check=True,
                                  capture_output=True, text=True).stdout.strip()
    upper = _upper_dir(container_id)
    command = ["buildah", "run", "--isolation", "chroot", "--user", user,
               "--volume", f"{scratch}:/tmp", "--volume", f"{hosts}:/etc/hosts:ro"]
    for source, target in (mounts or {}).items():
        command += ["--volume", f"{source}:{target}:ro"]
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([*command, container_id, "--", *argv], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return ImageProcess(name, process, container_id, log, upper)


def run_to_end(name: str, image: str, argv: list[str], env: dict[str, str], user: str,
               scratch: Path, hosts: Path, logs: Path, mounts: dict[Path, str] | None = None,
               timeout_s: float = 120) -> ImageProcess:
    """A Job's container: started, then waited for."""
    job = start(name, image, argv, env, user, scratch, hosts, logs, mounts)
    deadline = time.monotonic() + timeout_s
    while job.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    job.stop(grace_s=5)
    return job


def remove(processes: list[ImageProcess]) -> None:
    for item in processes:
        subprocess.run(["buildah", "rm", item.container_id], capture_output=True, check=False)


def written_to_root(item: ImageProcess) -> list[str]:
    """Files the process wrote to the image's root filesystem (its container layer):
    under a read-only root filesystem every one of them would have failed. Folders
    are left out: buildah makes the mount points and the working directory there."""
    if item.upper_dir is None or not item.upper_dir.exists():
        return []
    buildah_own = {"etc/hosts", "etc/resolv.conf", "etc/hostname", "run/.containerenv"}
    found = []
    for path in item.upper_dir.rglob("*"):
        relative = str(path.relative_to(item.upper_dir))
        if not path.is_dir() and relative not in buildah_own:
            found.append(relative)
    return sorted(found)


def _upper_dir(container_id: str) -> Path | None:
    """The container's writable layer (overlay ``diff``), where root-filesystem writes land."""
    mount = subprocess.run(["buildah", "mount", container_id], capture_output=True, text=True,
                           check=False)
    subprocess.run(["buildah", "umount", container_id], capture_output=True, check=False)
    if mount.returncode != 0:
        return None
    merged = Path(mount.stdout.strip())
    return merged.parent / "diff" if merged.name == "merged" else None
