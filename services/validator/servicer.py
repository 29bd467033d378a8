"""ValidatorService: protobuf <-> the validator's core (services/validator/fetch.py) only."""

from __future__ import annotations

import grpc

from mfr.challenge import Challenge, challenge_from_text
from mfr.common.v1 import types_pb2
from mfr.modelcheck.report import ValidationReport
from mfr.storage import ObjectRef, ObjectStore
from mfr.validator.v1 import validator_pb2, validator_pb2_grpc
from services.validator.fetch import validate_stored
from services.validator.validator import Validator


def report_to_proto(report: ValidationReport) -> types_pb2.ValidationReport:
    return types_pb2.ValidationReport(
        ok=report.ok,
        errors=[types_pb2.Finding(code=f.code, message=f.message) for f in report.errors],
        warnings=[types_pb2.Finding(code=f.code, message=f.message) for f in report.warnings],
        feature_dim=report.feature_dim,
        model_size_mb=report.model_size_mb,
        latency_ms=report.latency_ms,
        latency_limit_ms=report.latency_limit_ms,
        input_mean=report.input_mean,
        input_std=report.input_std,
        device=report.device,
        latency_factor=report.latency_factor,
        track_id=report.track,
        model_sha256=report.model_sha256,
    )


class ValidatorServicer(validator_pb2_grpc.ValidatorServiceServicer):
    def __init__(self, validator: Validator, store: ObjectStore, default_challenge: Challenge) -> None:
        self.validator = validator
        self.store = store
        self.default_challenge = default_challenge

    def Validate(
        self, request: validator_pb2.ValidateRequest, context: grpc.ServicerContext
    ) -> validator_pb2.ValidateResponse:
        challenge = self._challenge(request.challenge_toml)
        track = challenge.track(request.track_id)
        upload = ObjectRef(request.upload.bucket, request.upload.key, request.upload.sha256)
        wanted = request.extracted_model
        extracted = ObjectRef(wanted.bucket, wanted.key) if wanted.key else None
        report, stored = validate_stored(self.validator, self.store, upload, track, extracted,
                                         challenge.embedding.batch_sizes)
        response = validator_pb2.ValidateResponse(report=report_to_proto(report))
        if stored is not None:
            response.model.CopyFrom(types_pb2.ObjectRef(
                bucket=stored.bucket, key=stored.key, sha256=stored.sha256, size=stored.size
            ))  # fmt: skip
        return response

    def _challenge(self, toml_text: str) -> Challenge:
        return challenge_from_text(toml_text, "challenge_toml", self.default_challenge)
