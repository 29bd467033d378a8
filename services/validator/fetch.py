"""Validating an upload that lives in object storage, and storing the accepted model.

The service's core step, without gRPC: download (streamed, size-capped,
sha256-checked) into a private temporary directory, validate, and when the
model is accepted and the caller asks for it, upload model.onnx as it will be
evaluated (its batch dimension made dynamic where the checker did so).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from mfr.challenge import Track
from mfr.errors import InvalidInput
from mfr.modelcheck.archive import MIB
from mfr.modelcheck.report import ValidationReport
from mfr.storage import ObjectRef, ObjectStore, StoredObject
from services.validator.validator import Validator


def upload_cap(track: Track, other_bytes: int) -> int:
    """Largest upload worth fetching: a zip of a model at the limit, plus the files allowed beside it."""
    limit = track.max_model_bytes
    return limit + limit // 1000 + other_bytes + MIB


def validate_stored(
    validator: Validator,
    store: ObjectStore,
    upload: ObjectRef,
    track: Track,
    extracted: ObjectRef | None = None,
    batch_sizes: tuple[int, ...] = (),
) -> tuple[ValidationReport, StoredObject | None]:
    if not upload.bucket or not upload.key:
        raise InvalidInput("upload: bucket and key are required", code="invalid_request")
    cap = upload_cap(track, validator.options.zip_policy.max_other_bytes)
    # Admitted before the download: a busy validator refuses without fetching a byte.
    with validator.admission(), tempfile.TemporaryDirectory(
            prefix="mfr-upload-", dir=validator.options.work_root) as tmp:
        # Keep the uploaded kind visible to the validator (.zip or .onnx); the
        # name itself is ours, never the participant's.
        suffix = Path(upload.key).suffix.lower()
        path = Path(tmp) / ("upload" + (suffix if suffix in (".zip", ".onnx") else ""))
        size = _download(store, upload, path, cap)
        if size is None:
            scale = validator.latency_scale()
            report = ValidationReport(
                track=track.id, device=scale.device, latency_factor=scale.factor,
                latency_limit_ms=scale.limit_ms(track.max_latency_ms),
            )  # fmt: skip
            report.add_error(
                "model_too_large",
                f"the upload is over {cap / MIB:.1f} MB; the track allows "
                f"{track.max_model_bytes / MIB:.3f} MB models",
            )
            return report.finish(), None
        model_out = Path(tmp) / "evaluated.onnx" if extracted and extracted.key else None
        report = validator.validate(path, track, model_out=model_out, batch_sizes=batch_sizes)
        stored = None
        if report.ok and model_out is not None and extracted is not None:
            stored = store.put_file(extracted.bucket or upload.bucket, extracted.key, model_out)
        return report, stored


def _download(store: ObjectStore, ref: ObjectRef, path: Path, cap: int) -> int | None:
    """Stream the object to ``path``; None when it exceeds ``cap`` bytes."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as out:
        for chunk in store.iter_chunks(ref.bucket, ref.key):
            size += len(chunk)
            if size > cap:
                return None
            digest.update(chunk)
            out.write(chunk)
    if ref.sha256 and digest.hexdigest() != ref.sha256.lower():
        raise InvalidInput(
            f"object {ref.bucket}/{ref.key}: sha256 {digest.hexdigest()[:12]}… differs from "
            f"the request's {ref.sha256[:12]}…",
            code="object_corrupt",
        )
    return size
