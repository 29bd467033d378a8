"""Hardware-normalised latency (DESIGN.md section 5).

The seed's limits (10 ms, 20 ms) are for a V100. Once per machine the
validator measures a reference network whose V100 latency the seed gives
(IResNet-100, 7.031 ms, built by mfr.onnxzoo with random weights) exactly as
it measures a submission (same child process, same threads, 6th fastest of
50 single-image runs), and scales every limit by
``factor = reference_time_here / 7.031 ms``. The measurement is cached on
disk, keyed by everything that changes it (reference network, device,
onnxruntime version, execution providers, threads); an organiser can pin
the factor instead (``MFR_LATENCY_FACTOR``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import onnx
import onnxruntime as ort

from mfr.onnxzoo.iresnet import V100_LATENCY_MS, build_iresnet
from services.validator.sandbox import Sandbox

CACHE_FILE = "latency-reference.json"


@dataclass(frozen=True)
class ReferenceNetwork:
    """A network of known V100 latency; ``build`` must be picklable (it runs in the child)."""

    name: str
    v100_ms: float
    build: Callable[[], onnx.ModelProto]


IRESNET100 = ReferenceNetwork("iresnet100-seed0", V100_LATENCY_MS[100], partial(build_iresnet, 100))


@dataclass(frozen=True)
class LatencyScale:
    factor: float
    device: str
    reference_ms: float  # the reference network's latency here; 0 when pinned
    source: str  # "pinned", "cached" or "measured"

    def limit_ms(self, v100_limit_ms: float) -> float:
        return v100_limit_ms * self.factor


class LatencyCalibrator:
    """Gives the factor: pinned, from the cache, or measured once (under a file lock)."""

    def __init__(
        self,
        sandbox: Sandbox,
        cache_dir: Path,
        *,
        pinned_factor: float | None = None,
        reference: ReferenceNetwork = IRESNET100,
        on_measure: Callable[[str], None] | None = None,
    ) -> None:
        if pinned_factor is not None and not pinned_factor > 0:
            raise ValueError(f"latency factor must be positive, got {pinned_factor}")
        self.sandbox = sandbox
        self.cache_dir = Path(cache_dir)
        self.pinned_factor = pinned_factor
        self.reference = reference
        self.on_measure = on_measure
        self._scale: LatencyScale | None = None

    def device(self) -> str:
        limits = self.sandbox.limits
        provider = limits.providers[0] if limits.providers else "CPUExecutionProvider"
        if provider == "CUDAExecutionProvider":
            what = f"GPU {_gpu_name()}"
        else:
            what = f"CPU {_cpu_name()}, {limits.threads} threads"
        return f"{what} (onnxruntime {ort.__version__}, {provider})"

    def cache_key(self) -> str:
        limits = self.sandbox.limits
        identity = {
            "reference": self.reference.name,
            "device": self.device(),
            "onnxruntime": ort.__version__,
            "providers": list(limits.providers),
            "threads": limits.threads,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def scale(self) -> LatencyScale:
        if self._scale is None:
            self._scale = self._resolve()
        return self._scale

    def _resolve(self) -> LatencyScale:
        device = self.device()
        if self.pinned_factor is not None:
            return LatencyScale(self.pinned_factor, device, 0.0, "pinned")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        key = self.cache_key()
        with open(self.cache_dir / (CACHE_FILE + ".lock"), "w") as lock:
            # One measurement per machine even when several validators start together.
            fcntl.flock(lock, fcntl.LOCK_EX)
            cache = _read_json(self.cache_dir / CACHE_FILE)
            entry = cache.get(key)
            if isinstance(entry, dict) and float(entry.get("reference_ms", 0)) > 0:
                ms = float(entry["reference_ms"])
                return LatencyScale(ms / self.reference.v100_ms, device, ms, "cached")
            if self.on_measure:
                self.on_measure(f"measuring the latency reference ({self.reference.name}) "
                                f"once for this machine: {device}")
            ms = self._measure()
            cache[key] = {
                "reference": self.reference.name,
                "reference_ms": ms,
                "v100_ms": self.reference.v100_ms,
                "device": device,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            _write_json(self.cache_dir / CACHE_FILE, cache)
        return LatencyScale(ms / self.reference.v100_ms, device, ms, "measured")

    def _measure(self) -> float:
        workdir = Path(tempfile.mkdtemp(prefix="mfr-latency-"))
        try:
            job = self.sandbox.job(
                workdir / "reference.onnx", workdir, 0, mode="benchmark",
                reference=self.reference.build,
            )  # fmt: skip
            result = self.sandbox.run(job)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        ms = result.facts.get("latency_ms")
        if not result.completed or not ms:
            why = "; ".join(f.message for f in result.errors) or "no measurement"
            raise RuntimeError(f"cannot measure the latency reference {self.reference.name}: {why}")
        return float(ms)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), "utf-8")
    tmp.replace(path)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "CUDA device"
