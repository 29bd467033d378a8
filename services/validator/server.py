"""Wiring of the validator: settings, object store, validator, servicer.

Ready (health SERVING) once the latency reference is known (measured once per
machine in the background: building and timing IResNet-100 takes about half
a minute on a CPU, less on a GPU; instant when cached or pinned), the
object store answers and a model process started as every model's is reports
itself confined (``model-confinement``: mfr/sandbox).
"""

from __future__ import annotations

from mfr.challenge import load_challenge
from mfr.errors import GpuUnavailable
from mfr.gpu import CUDA, gpu_present
from mfr.health import Readiness
from mfr.rpc.process import Process, Warmup, serve
from mfr.sandbox.inspect import ConfinementCheck
from mfr.storage import ObjectStore
from mfr.validator.v1 import validator_pb2_grpc
from services.validator.config import ValidatorSettings
from services.validator.sandbox import PRELOAD
from services.validator.servicer import ValidatorServicer
from services.validator.validator import Validator

SERVICE_NAME = "mfr.validator.v1.ValidatorService"


def calibrate(validator: Validator) -> dict:
    scale = validator.latency_scale()
    return {"factor": scale.factor, "device": scale.device, "reference_ms": scale.reference_ms,
            "source": scale.source}


def build(settings: ValidatorSettings) -> Process:
    validator = Validator.create(
        settings.cache_dir, latency_factor=settings.latency_factor, options=settings.options()
    )
    store = ObjectStore.from_settings(settings)
    servicer = ValidatorServicer(validator, store, load_challenge(settings.challenge))
    calibration = Warmup("latency-calibration", lambda: calibrate(validator))
    calibration.ready()  # start measuring now
    limits = validator.options.limits
    check = ConfinementCheck(
        PRELOAD, limits.threads, "CUDAExecutionProvider" in limits.providers,
        allow_unconfined=not limits.confined)
    confinement = Warmup("model-confinement", check)
    confinement.ready()
    return Process(
        servicers=[(validator_pb2_grpc.add_ValidatorServiceServicer_to_server, servicer,
                    SERVICE_NAME)],
        ready=Readiness({calibration.name: calibration.ready, "s3": store.ready,
                         confinement.name: confinement.ready,
                         "gpu": lambda: _gpu_ready(limits.providers)}),
        conditions={confinement.name: check.confined},
    )


def _gpu_ready(providers: tuple[str, ...]) -> bool:
    """Told to validate on CUDA (MFR_VALIDATOR_PROVIDERS) without a GPU: not ready, says why."""
    if CUDA in providers and not gpu_present():
        raise GpuUnavailable("MFR_VALIDATOR_PROVIDERS names CUDAExecutionProvider, but there "
                             "is no usable GPU here")
    return True


def main() -> None:
    serve("validator", ValidatorSettings, build)
