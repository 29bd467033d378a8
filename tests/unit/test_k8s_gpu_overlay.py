"""The GPU path tells the truth: with the GPU components the platform embeds on the GPU.

The embedder API queues a submission's shards on the queue of the runtime the served
challenge names (``[embedding] runtime``); an embedder worker drains the queues of the
runtimes in ``MFR_EMBEDDER_RUNTIMES``. So GPUs are used only if, in every rendering with
components/gpu-embedder (overlays/gpu among them), the served challenge names a GPU
runtime and the workers that hold a GPU drain exactly that runtime's queue. And GPUs go
to the embedder and scorer workers, on the GPU image, and to nothing else; renderings
without the GPU components keep a CPU runtime.
"""

from __future__ import annotations

import tomllib

import pytest
import yaml

from mfr.challenge import RUNTIMES, challenge_from_text, served_challenge
from tests.unit.k8s_support import (
    GPU_RENDERINGS,
    K8S,
    RENDERINGS,
    WORKLOAD_KINDS,
    _env,
    _named,
    _of_kind,
    _pod_spec,
    requires_kubectl,
)

# components/gpu-embedder's choice: onnxruntime, the reference runtime, on CUDA.
GPU_RUNTIME = "onnxruntime-cuda"
GPU_RUNTIMES = {r for r in RUNTIMES if r.endswith("-cuda")}
CPU_RUNTIMES = {r for r in RUNTIMES if r.endswith("-cpu")}
GPU_IMAGE = "mfr-platform-gpu"
GPU_SERVERS = {"embedder-worker", "scorer-worker"}  # `mfr serve X` that may hold a GPU
GPU_COMPONENTS = {"gpu-embedder", "gpu-scorer"}
CPU_RENDERINGS = sorted(set(RENDERINGS) - GPU_RENDERINGS)


def _served(deployment: dict, docs: list[dict]) -> str:
    """The TOML text of the challenge a Deployment serves: the file MFR_CHALLENGE names,
    read from the ConfigMap mounted there, or a built-in one (no MFR_CHALLENGE, or a
    built-in challenge's name)."""
    container = _pod_spec(deployment)["containers"][0]
    path = _env(container, docs).get("MFR_CHALLENGE")
    if path is None or "/" not in path:
        return served_challenge(path)[1]
    directory, file = path.rsplit("/", 1)
    (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
    volumes = {v["name"]: v for v in _pod_spec(deployment).get("volumes", [])}
    config_map = _named(docs, "ConfigMap")[volumes[mount["name"]]["configMap"]["name"]]
    return config_map["data"][file]


def _served_text(name: str, docs: list[dict]) -> str:
    """The challenge every Deployment serves: one and the same (the dispatcher sends it
    with each job, the validator and the ranker read it too)."""
    texts = {workload: _served(d, docs) for workload, d in _named(docs, "Deployment").items()}
    assert len(set(texts.values())) == 1, f"{name}: Deployments serve different challenges"
    return texts["dispatcher"]


def _served_runtime(name: str, docs: list[dict]) -> str:
    text = _served_text(name, docs)
    # The platform's own parser: a runtime it does not know fails here.
    return challenge_from_text(text, f"{name}: served challenge").embedding.runtime


def _pod_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    """(workload name, container) of every container of every workload, init ones too."""
    assert not _of_kind(docs, "DaemonSet", "CronJob", "ReplicaSet", "Pod")
    return [(w["metadata"]["name"], c) for w in _of_kind(docs, *WORKLOAD_KINDS)
            for c in _pod_spec(w).get("initContainers", []) + _pod_spec(w)["containers"]]


def _server(container: dict) -> str | None:
    """X of `mfr serve X`, or None for any other command."""
    args = container.get("args", [])
    return args[1] if len(args) >= 2 and args[0] == "serve" else None


def _gpus(container: dict) -> dict[str, object]:
    """The GPU resources (nvidia.com/gpu, MIG slices) a container requests or is limited to."""
    resources = container.get("resources", {})
    return {f"{part}.{key}": value for part in ("requests", "limits")
            for key, value in resources.get(part, {}).items() if key.startswith("nvidia.com/")}


def _repository(image: str) -> str:
    """registry.example.org/mfr/mfr-platform-gpu:0.1.0 -> mfr-platform-gpu"""
    return image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


def _drained(container: dict, docs: list[dict]) -> set[str]:
    """The runtimes whose shard queues an embedder worker drains. "auto" (the default) is
    what the machine can run (services/embedder/runtime.py, runtimes_here): onnxruntime-cpu
    everywhere, a CUDA runtime only where a GPU is found; so "auto" counts for the CPU
    queue only, and a GPU runtime must be named."""
    value = _env(container, docs).get("MFR_EMBEDDER_RUNTIMES", "auto")
    if value == "auto":
        return {"onnxruntime-cpu"}
    return {runtime.strip() for runtime in value.split(",") if runtime.strip()}


# --- which renderings have GPUs ------------------------------------------------------------

def test_the_gpu_renderings_are_those_with_the_gpu_components() -> None:
    overlay = yaml.safe_load((K8S / "overlays" / "gpu" / "kustomization.yaml").read_text())
    assert {c.rsplit("/", 1)[-1] for c in overlay["components"]} == GPU_COMPONENTS
    with_gpus = {name for name, (directory, components) in RENDERINGS.items()
                 if directory == "overlays/gpu" or GPU_COMPONENTS & set(components)}
    assert with_gpus == GPU_RENDERINGS
    assert "gpu" in GPU_RENDERINGS
    # gpu-embedder is what serves the GPU runtime: the checks below expect it in each
    # (gpu-scorer alone would leave a CPU runtime, and these renderings would need sorting).
    assert all(directory == "overlays/gpu" or "gpu-embedder" in components
               for name, (directory, components) in RENDERINGS.items() if name in GPU_RENDERINGS)


# --- the served challenge's runtime --------------------------------------------------------

@requires_kubectl
@pytest.mark.parametrize("name", sorted(GPU_RENDERINGS))
def test_with_the_gpu_components_the_served_challenge_names_the_gpu_runtime(
        name: str, render) -> None:
    runtime = _served_runtime(name, render(name))
    assert runtime in GPU_RUNTIMES, f"{name}: shards would go to the {runtime} queue"
    assert runtime == GPU_RUNTIME


@requires_kubectl
@pytest.mark.parametrize("name", sorted(GPU_RENDERINGS))
def test_the_gpu_challenge_is_the_builtin_one_but_for_its_runtime(name: str, render) -> None:
    served = tomllib.loads(_served_text(name, render(name)))
    builtin = tomllib.loads(served_challenge(None)[1])
    assert served.pop("embedding") == {"runtime": GPU_RUNTIME}
    assert "embedding" not in builtin, "the built-in challenge now sets [embedding]: align"
    assert served == builtin


@requires_kubectl
@pytest.mark.parametrize("name", CPU_RENDERINGS)
def test_without_the_gpu_components_the_served_challenge_names_a_cpu_runtime(
        name: str, render) -> None:
    assert _served_runtime(name, render(name)) in CPU_RUNTIMES, name


# --- who holds a GPU, and what it drains ---------------------------------------------------

def test_only_embedder_and_scorer_workers_on_the_gpu_image_request_gpus(rendering) -> None:
    name, docs = rendering
    holders = [(workload, c) for workload, c in _pod_containers(docs) if _gpus(c)]
    for workload, container in holders:
        assert _server(container) in GPU_SERVERS, f"{name}: {workload} requests a GPU"
        assert _repository(container["image"]) == GPU_IMAGE, f"{name}: {workload}"
        assert _gpus(container)["limits.nvidia.com/gpu"] == 1, f"{name}: {workload}"
    embedders = [w for w, c in holders if _server(c) == "embedder-worker"]
    if name in GPU_RENDERINGS:
        assert embedders, f"{name}: no embedder worker requests a GPU"
    else:
        assert not holders, f"{name}: {[w for w, _ in holders]} request GPUs"


def test_the_served_runtime_is_drained_by_workers_that_can_run_it(rendering) -> None:
    name, docs = rendering
    runtime = _served_runtime(name, docs)
    embedders = [(w, c) for w, c in _pod_containers(docs) if _server(c) == "embedder-worker"]
    assert any(runtime in _drained(c, docs) for _, c in embedders), (
        f"{name}: no embedder worker drains the {runtime} queue: submissions would wait forever")
    for workload, container in embedders:
        drained = _drained(container, docs)
        if _gpus(container):
            # Exactly the served GPU runtime: no CPU shards on a GPU node.
            assert drained == {runtime}, f"{name}: {workload} drains {sorted(drained)}"
        else:
            # A worker without a GPU is never ready for a CUDA runtime.
            assert not drained & GPU_RUNTIMES, f"{name}: {workload} drains {sorted(drained)}"
