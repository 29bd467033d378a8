"""ValidatorService through an in-process gRPC server on port 0, uploads in a real S3 server.

The service answers the same report as the library (and so as ``mfr validate``)
for the corpus, stores the accepted model, maps request errors to status
codes, and keeps serving after a child process crashes.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import grpc
import onnx
import pytest
from google.protobuf import json_format

from mfr.challenge import load_challenge
from mfr.common.v1 import types_pb2
from mfr.onnxzoo import build_tiny_model, hostile
from mfr.onnxzoo.corpus import CASES, Case
from mfr.rpc.client import channel, health_status
from mfr.rpc.interceptors import error_code_of
from mfr.validator.v1 import validator_pb2, validator_pb2_grpc
from services.validator.budget import BudgetPolicy
from services.validator.sandbox import GIB, SandboxLimits
from services.validator.server import SERVICE_NAME
from services.validator.servicer import ValidatorServicer
from services.validator.validator import Validator, ValidatorOptions
from tests.rpc_support import SERVICE_TOKEN, serving

pytestmark = pytest.mark.integration

LIMITS = SandboxLimits(memory_bytes=int(1.5 * GIB), wall_seconds=4.0, threads=1)
FACTOR = 1000.0
# Every case the server's one configuration can serve (the latency case needs another factor).
SERVED = [c for c in CASES if c.latency_factor == FACTOR]


class Killer:
    """Observer that SIGSEGVs the child once, when it starts timing runs."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, stage: str, pid: int) -> None:
        if self.armed and stage == "latency":
            self.armed = False
            os.kill(pid, signal.SIGSEGV)


@pytest.fixture
def killer() -> Killer:
    return Killer()


@pytest.fixture
def validator(tmp_path: Path, killer: Killer) -> Validator:
    return Validator.create(tmp_path / "cache", latency_factor=FACTOR,
                            options=ValidatorOptions(limits=LIMITS), observer=killer)


@pytest.fixture
def server(validator: Validator, object_store):
    servicer = ValidatorServicer(validator, object_store, load_challenge())
    with serving((validator_pb2_grpc.add_ValidatorServiceServicer_to_server, servicer,
                  SERVICE_NAME), name="test-validator") as srv:
        yield srv


@pytest.fixture
def stub(server):
    with channel(f"127.0.0.1:{server.port}", SERVICE_TOKEN) as ch:
        yield validator_pb2_grpc.ValidatorServiceStub(ch)


def upload(store, name: str, data: bytes) -> types_pb2.ObjectRef:
    stored = store.put_bytes(store.buckets.models, f"uploads/{name}", data)
    return types_pb2.ObjectRef(bucket=stored.bucket, key=stored.key, sha256=stored.sha256)


def request(ref: types_pb2.ObjectRef, case: Case, **extra) -> validator_pb2.ValidateRequest:
    return validator_pb2.ValidateRequest(upload=ref, track_id=case.track,
                                         challenge_toml=case.challenge_toml or "", **extra)


def test_the_service_answers_the_library_report_for_the_corpus(stub, object_store, validator,
                                                               tmp_path: Path):
    for case in SERVED:
        data = case.build()
        ref = upload(object_store, f"{case.name}/{case.filename}", data)
        got = stub.Validate(request(ref, case)).report
        assert [e.code for e in got.errors] == list(case.errors), case.name
        assert [w.code for w in got.warnings] == list(case.warnings), case.name
        if case.wall_seconds or case.memory_gib:
            continue  # not worth running twice
        local = tmp_path / case.name / case.filename
        local.parent.mkdir()
        local.write_bytes(data)
        challenge = load_challenge() if not case.challenge_toml else None
        if challenge is None:
            path = tmp_path / case.name / "challenge.toml"
            path.write_text(case.challenge_toml, "utf-8")
            challenge = load_challenge(path)
        expected = validator.validate(local, challenge.track(case.track),
                                      batch_sizes=challenge.embedding.batch_sizes).to_json()
        # The report as the dispatcher keeps it (mfr/rpc/peers.py), in the library's names.
        served = json_format.MessageToDict(got, preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True)
        served["track"] = served.pop("track_id")
        latency = served.pop("latency_ms")  # a fresh measurement each time
        assert latency > 0 or not case.ok
        expected.pop("latency_ms")
        assert served == expected, case.name


def test_accepted_model_is_stored_as_evaluated(stub, object_store):
    case = next(c for c in CASES if c.name == "valid_fixed_batch")
    ref = upload(object_store, "fixed/model.onnx", case.build())
    wanted = types_pb2.ObjectRef(bucket=object_store.buckets.models, key="models/s1/model.onnx")
    response = stub.Validate(request(ref, case, extracted_model=wanted))
    assert response.report.ok
    assert (response.model.bucket, response.model.key) == (wanted.bucket, wanted.key)
    data = object_store.get_bytes(wanted.bucket, wanted.key)
    assert len(data) == response.model.size
    dim = onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param  # the batch made dynamic, as it was evaluated

    rejected = next(c for c in CASES if c.name == "feature_dim")
    ref = upload(object_store, "big/model.onnx", rejected.build())
    other = types_pb2.ObjectRef(bucket=wanted.bucket, key="models/s2/model.onnx")
    response = stub.Validate(request(ref, rejected, extracted_model=other))
    assert not response.report.ok and not response.HasField("model")
    assert not object_store.exists(other.bucket, other.key)


def test_a_crashed_child_does_not_take_the_service_down(stub, server, object_store, killer):
    case = CASES[0]
    ref = upload(object_store, "crash/model.onnx", case.build())
    killer.armed = True
    crashed = stub.Validate(request(ref, case)).report
    assert [e.code for e in crashed.errors] == ["run_failed"]
    assert "SIGSEGV" in crashed.errors[0].message
    assert health_status(f"127.0.0.1:{server.port}", SERVICE_NAME) == "SERVING"
    assert stub.Validate(request(ref, case)).report.ok


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda r: r.upload.MergeFrom(types_pb2.ObjectRef(sha256="0" * 64)),
         grpc.StatusCode.INVALID_ARGUMENT, "object_corrupt"),
        (lambda r: setattr(r.upload, "key", "uploads/nothing-here.zip"),
         grpc.StatusCode.NOT_FOUND, "object_not_found"),
        (lambda r: setattr(r, "track_id", "Z"), grpc.StatusCode.INVALID_ARGUMENT, "unknown_track"),
        (lambda r: setattr(r, "challenge_toml", "id = ["), grpc.StatusCode.INVALID_ARGUMENT,
         "challenge_invalid"),
        (lambda r: setattr(r.upload, "bucket", ""), grpc.StatusCode.INVALID_ARGUMENT,
         "invalid_request"),
    ],
)
def test_request_errors_map_to_status_codes(stub, object_store, mutate, status, code):
    ref = upload(object_store, "plain/model.onnx", build_tiny_model().SerializeToString())
    req = validator_pb2.ValidateRequest(upload=ref, track_id="A")
    mutate(req)
    with pytest.raises(grpc.RpcError) as err:
        stub.Validate(req)
    assert err.value.code() == status
    assert error_code_of(err.value) == code


class Running:
    """Observer: set once a validation's child starts its timed runs."""

    def __init__(self) -> None:
        self.timing = threading.Event()

    def __call__(self, stage: str, pid: int) -> None:
        if stage == "latency":
            self.timing.set()


def test_a_hanging_model_does_not_hold_up_the_next_participant(object_store, tmp_path: Path):
    # Two at once; the hanging model is stopped at its budget, here the 20 s wall limit.
    running = Running()
    options = ValidatorOptions(limits=SandboxLimits(memory_bytes=int(1.5 * GIB),
                                                    wall_seconds=20.0, threads=1),
                               budget=BudgetPolicy(floor_s=1.0), max_concurrent=2)
    validator = Validator.create(tmp_path / "cache", latency_factor=FACTOR, options=options,
                                 observer=running)
    servicer = ValidatorServicer(validator, object_store, load_challenge())
    hang = upload(object_store, "hang/model.onnx", hostile.hang())
    good = upload(object_store, "good/model.onnx", build_tiny_model().SerializeToString())
    with serving((validator_pb2_grpc.add_ValidatorServiceServicer_to_server, servicer,
                  SERVICE_NAME), name="test-validator") as srv, \
            channel(f"127.0.0.1:{srv.port}", SERVICE_TOKEN) as ch:
        stub = validator_pb2_grpc.ValidatorServiceStub(ch)
        hanging = stub.Validate.future(validator_pb2.ValidateRequest(upload=hang, track_id="A"))
        assert running.timing.wait(15), "the hanging model never started running"
        served = stub.Validate(validator_pb2.ValidateRequest(upload=good, track_id="A"))
        assert served.report.ok, served.report.errors
        assert not hanging.done()  # the good model did not wait for it
        assert health_status(f"127.0.0.1:{srv.port}", SERVICE_NAME) == "SERVING"
        stopped = hanging.result(timeout=60).report
    assert [e.code for e in stopped.errors] == ["timeout"]
    assert "capped at the validator's limit of 20 s" in stopped.errors[0].message
