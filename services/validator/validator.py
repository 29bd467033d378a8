"""Validation as a library: one upload in, one ValidationReport out.

The service process does what is safe on untrusted bytes (zip metadata,
sizes, hashes: mfr/modelcheck/archive.py); everything that parses or runs
the model happens in a confined child (services/validator/sandbox.py,
probe.py). The report lists every finding in the reference checker's order.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mfr.challenge import Track
from mfr.errors import Unavailable
from mfr.modelcheck.archive import MIB, ZipPolicy, open_upload
from mfr.modelcheck.report import ValidationReport
from services.validator.budget import BudgetPolicy, time_budget
from services.validator.latency import LatencyCalibrator, LatencyScale
from services.validator.probe import DYNAMIC_MODEL, LATENCY_RANK, LATENCY_RUNS
from services.validator.sandbox import Observer, Sandbox, SandboxLimits


@dataclass(frozen=True)
class ValidatorOptions:
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    zip_policy: ZipPolicy = field(default_factory=ZipPolicy)
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    # Validations running at once (each a child with the full limits, so this
    # bounds the machine's load); up to ``max_waiting`` more wait their turn,
    # further ones are refused at once (``validator_busy``, the caller retries)
    # rather than holding a server thread that health checks need.
    max_concurrent: int = 1
    max_waiting: int | None = None  # None: as many as max_concurrent
    work_root: Path | None = None

    @property
    def admitted(self) -> int:
        """Validations running or waiting at most."""
        waiting = self.max_concurrent if self.max_waiting is None else self.max_waiting
        return self.max_concurrent + waiting


class Validator:
    """Checks uploads against a track. Thread-safe; one child process per validation."""

    def __init__(
        self,
        calibrator: LatencyCalibrator,
        options: ValidatorOptions | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.options = options or ValidatorOptions()
        self.sandbox = Sandbox(self.options.limits, observer)
        self.calibrator = calibrator
        self._slots = threading.BoundedSemaphore(self.options.max_concurrent)
        self._admitted = threading.BoundedSemaphore(self.options.admitted)
        self._holder = threading.local()  # this thread holds an admission (admission())

    @classmethod
    def create(
        cls,
        cache_dir: Path,
        *,
        latency_factor: float | None = None,
        options: ValidatorOptions | None = None,
        observer: Observer | None = None,
    ) -> Validator:
        """A validator whose calibrator shares its sandbox limits (threads, providers)."""
        options = options or ValidatorOptions()
        calibrator = LatencyCalibrator(Sandbox(options.limits), cache_dir, pinned_factor=latency_factor)
        return cls(calibrator, options, observer)

    def latency_scale(self) -> LatencyScale:
        try:
            return self.calibrator.scale()
        except (RuntimeError, OSError) as exc:
            raise Unavailable(f"latency calibration failed: {exc}", code="calibration_failed") from exc

    def validate(self, upload: Path, track: Track, *, model_out: Path | None = None,
                 batch_sizes: tuple[int, ...] = ()) -> ValidationReport:
        """Check ``upload`` (.zip or .onnx) against ``track``.

        ``batch_sizes`` are the embedder's (the challenge's ``[embedding]``): the model
        must run at every one of them. When the model is accepted and ``model_out`` is
        given, the model as it will be evaluated (batch made dynamic where needed) is
        copied there.
        """
        scale = self.latency_scale()
        report = ValidationReport(
            track=track.id,
            device=scale.device,
            latency_factor=scale.factor,
            latency_limit_ms=scale.limit_ms(track.max_latency_ms),
        )
        with self.admission(), self._slots, tempfile.TemporaryDirectory(
            prefix="mfr-validate-", dir=self.options.work_root
        ) as tmp:
            # Absolute paths: the child works in an empty directory of its own.
            self._check(Path(upload).resolve(), Path(tmp).resolve(), track, scale, report,
                        model_out, tuple(batch_sizes))
        return report

    @contextmanager
    def admission(self) -> Iterator[None]:
        """A place among the validations running or waiting, or ``validator_busy`` at once.

        Callers that fetch the upload first (fetch.validate_stored) take it before the
        download, so a busy validator refuses without fetching anything; ``validate`` inside
        it does not take a second one.
        """
        if getattr(self._holder, "admitted", False):
            yield
            return
        if not self._admitted.acquire(blocking=False):
            raise Unavailable(
                f"the validator is busy ({self.options.max_concurrent} validations running, "
                "as many waiting); try again shortly", code="validator_busy")
        self._holder.admitted = True
        try:
            yield
        finally:
            self._holder.admitted = False
            self._admitted.release()

    def _check(self, upload: Path, workdir: Path, track: Track, scale: LatencyScale,
               report: ValidationReport, model_out: Path | None,
               batch_sizes: tuple[int, ...]) -> None:
        model = open_upload(upload, workdir, track.max_model_bytes, report,
                            self.options.zip_policy)
        if model is None:
            report.finish()
            return
        report.model_size_mb = model.size / MIB
        if model.size > track.max_model_bytes:
            report.add_error(
                "model_too_large",
                f"model.onnx is {model.size / MIB:.3f} MB; the track allows "
                f"{track.max_model_bytes / MIB:.3f} MB",
            )
            report.finish()
            return
        report.model_sha256 = _sha256(model.model_path)
        budget = time_budget(self.options.budget, report.latency_limit_ms, report.model_size_mb,
                             batch_sizes, self.options.limits.wall_seconds)
        result = self.sandbox.run(
            self.sandbox.job(model.model_path, workdir, track.max_feature_dim,
                             embed_batch_sizes=batch_sizes),
            budget,
        )
        report.errors.extend(result.errors)
        report.warnings.extend(result.warnings)
        facts = result.facts
        report.input_mean = facts.get("input_mean", report.input_mean)
        report.input_std = facts.get("input_std", report.input_std)
        report.feature_dim = facts.get("feature_dim", 0)
        if "latency_ms" in facts:
            report.latency_ms = facts["latency_ms"]
            if report.latency_ms > report.latency_limit_ms:
                report.add_error("latency", _latency_message(report, track, scale))
        report.finish()
        if report.ok and model_out is not None:
            evaluated = workdir / facts.get("evaluated_model", "")
            source = evaluated if facts.get("evaluated_model") == DYNAMIC_MODEL else model.model_path
            shutil.copyfile(source, model_out)


def _latency_message(report: ValidationReport, track: Track, scale: LatencyScale) -> str:
    here = (
        f"scaled by the pinned factor {scale.factor:.3f} ({scale.device})"
        if scale.source == "pinned"
        else f"scaled by {scale.factor:.3f} = IResNet-100 here {scale.reference_ms:.3f} ms "
        f"/ 7.031 ms on a V100 ({scale.device})"
    )
    return (
        f"the {_ordinal(LATENCY_RANK)} fastest of {LATENCY_RUNS} single-image runs took "
        f"{report.latency_ms:.3f} ms; the limit is {report.latency_limit_ms:.3f} ms here "
        f"({track.max_latency_ms:g} ms on a V100, {here})"
    )


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()
