"""A full validator refuses an upload in object storage before fetching a byte of it, and a
free one fetches, validates and stores it (real S3: the seaweedfs of the test servers)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mfr.challenge import load_challenge
from mfr.errors import Unavailable
from mfr.onnxzoo import build_tiny_model, save_model
from mfr.storage import ObjectRef, ObjectStore
from services.validator.fetch import validate_stored
from services.validator.sandbox import GIB, SandboxLimits
from services.validator.validator import Validator, ValidatorOptions

TRACK = load_challenge().track("A")


class CountingStore(ObjectStore):
    """The test's real store, counting the objects it was asked to stream."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store.client, store.buckets)
        self.fetched: list[str] = []

    def iter_chunks(self, bucket: str, key: str, *args, **kwargs):
        self.fetched.append(key)
        return super().iter_chunks(bucket, key, *args, **kwargs)


def test_a_busy_validator_refuses_before_the_download_and_a_free_one_validates(
        object_store: ObjectStore, tmp_path: Path):
    store = CountingStore(object_store)
    model = tmp_path / "tiny.onnx"
    save_model(build_tiny_model(), model)
    stored = store.put_file(store.buckets.models, "uploads/tiny.onnx", model)
    upload = ObjectRef(stored.bucket, stored.key, stored.sha256)
    validator = Validator.create(
        tmp_path / "cache", latency_factor=1000.0,
        options=ValidatorOptions(limits=SandboxLimits(memory_bytes=2 * GIB, wall_seconds=60.0,
                                                      threads=1),
                                 max_concurrent=1, max_waiting=0))

    holding, release = threading.Event(), threading.Event()

    def occupy() -> None:  # another caller's validation, in progress
        with validator.admission():
            holding.set()
            release.wait(30)

    other = threading.Thread(target=occupy)
    other.start()
    try:
        assert holding.wait(30)
        with pytest.raises(Unavailable) as busy:
            validate_stored(validator, store, upload, TRACK)
        assert busy.value.code == "validator_busy"
        assert store.fetched == []  # refused without fetching the upload
    finally:
        release.set()
        other.join(30)

    # Free again: one admission covers the download and the validation inside it (a
    # second one would be refused: this validator admits one at a time).
    extracted = ObjectRef(store.buckets.models, "evaluated/tiny.onnx")
    report, kept = validate_stored(validator, store, upload, TRACK, extracted)
    assert report.ok, report.errors
    assert store.fetched == ["uploads/tiny.onnx"]
    assert kept is not None and kept.key == "evaluated/tiny.onnx"
    assert "evaluated/tiny.onnx" in store.list_keys(store.buckets.models)
