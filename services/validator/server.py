"""Wiring of the validator: settings, object store, validator, servicer.

Ready (health SERVING) once the latency reference is known (measured once per
machine in the background: building and timing IResNet-100 takes about half
a minute on a CPU, less on a GPU; instant when cached or pinned) and the
object store answers.
"""

from __future__ import annotations

import os
import threading

from mfr.challenge import load_challenge
from mfr.logs import get_logger
from mfr.rpc.service import ServiceParts, serve
from mfr.settings import ServiceSettings
from mfr.storage import ObjectStore
from mfr.validator.v1 import validator_pb2_grpc
from services.validator.config import ValidatorSettings
from services.validator.servicer import ValidatorServicer
from services.validator.validator import Validator

log = get_logger("services.validator")
SERVICE_NAME = "mfr.validator.v1.ValidatorService"


class Calibration:
    """Runs the latency calibration off the start-up path; retried when it fails."""

    def __init__(self, validator: Validator) -> None:
        self.validator = validator
        self.done = threading.Event()
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        try:
            scale = self.validator.latency_scale()
        except Exception as exc:  # noqa: BLE001 - reported by ready() and retried
            self.error = str(exc)
            log.warning("latency calibration failed", reason=self.error)
            return
        log.info("latency calibrated", factor=scale.factor, device=scale.device,
                 reference_ms=scale.reference_ms, source=scale.source)
        self.done.set()

    def ready(self) -> bool:
        with self._lock:
            if not self.done.is_set() and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="latency-calibration",
                                                daemon=True)
                self._thread.start()
        return self.done.is_set()


def build(settings: ServiceSettings) -> ServiceParts:
    config = ValidatorSettings()
    validator = Validator.create(
        config.cache_dir, latency_factor=config.latency_factor, options=config.options()
    )
    store = ObjectStore.from_settings()
    challenge_path = os.environ.get("MFR_CHALLENGE")  # what `mfr up --challenge` serves
    servicer = ValidatorServicer(validator, store, load_challenge(challenge_path))
    calibration = Calibration(validator)
    calibration.ready()  # start measuring now
    return ServiceParts(
        servicers=[(validator_pb2_grpc.add_ValidatorServiceServicer_to_server, servicer,
                    SERVICE_NAME)],
        ready=lambda: calibration.ready() and store.ready(),
    )


def main() -> None:
    serve("validator", build)
