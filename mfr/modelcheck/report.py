"""The validator's verdict: findings with stable codes, in the reference checker's order.

Codes are a public contract (participants, the gateway and tests match on
them); messages are for people and say what was found and what the limit is.
``ERROR_CODES`` lists every rejection code in the order the reference checker
(InsightFace ``onnx_helper.py``) meets the conditions, with this platform's
extra safety checks placed where they gate the next step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# code -> one-line meaning (docs/validation.md shows the same table).
ERROR_CODES: dict[str, str] = {
    "zip_invalid": "the upload is not a readable zip archive",
    "zip_unsafe": "path traversal, absolute path, symlink, or a compression bomb",
    "zip_no_model": "no .onnx file at the top level of the zip",
    "zip_multiple_models": "more than one .onnx file at the top level of the zip",
    "model_too_large": "model.onnx is larger than the track allows",
    "external_data": "the model references external data files",
    "custom_domain": "an operator outside the standard ONNX domains",
    "load_failed": "the model does not parse or does not load in onnxruntime",
    "input_count": "the model does not have exactly one input",
    "input_rank": "the input is not rank 4",
    "output_count": "the model does not have exactly one output",
    "graph_too_small": "the graph has fewer than 8 nodes",
    "input_size": "the input is not [batch, 3, 112, 112]",
    "input_type": "the input is not float32",
    "weight_dtype": "a weight with an element size under 4 bytes (e.g. float16)",
    "implicit_batch": "the graph mixes or multiplies samples along the batch axis",
    "run_failed": "onnxruntime failed while running the model",
    "non_finite_output": "NaN or Inf in the features of a batch of 32",
    "feature_shape": "the feature is not a 2-D [batch, dim] tensor",
    "feature_dim": "the feature dimension exceeds the track's limit",
    "batch_inconsistent": "features of a batch differ from one-by-one runs",
    "latency": "the latency exceeds the track's (hardware-scaled) limit",
    "timeout": "validation ran past its wall-time limit",
    "resource_limit": "the model exceeded the validator's memory limit",
}

WARNING_CODES: dict[str, str] = {
    "fixed_batch": "a fixed batch dimension was made dynamic, as the reference checker does",
    "normalisation_mismatch": "Sub/Mul operators near the input, but node names the checker ignores",
    "extra_files": "files besides the model in the zip were ignored",
}

_ORDER = {code: rank for rank, code in enumerate(ERROR_CODES)}


@dataclass(frozen=True)
class Finding:
    code: str
    message: str


@dataclass
class ValidationReport:
    """What ``mfr validate --json`` prints and ``ValidationReport`` (protobuf) carries."""

    ok: bool = False
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    feature_dim: int = 0
    model_size_mb: float = 0.0
    latency_ms: float = 0.0
    latency_limit_ms: float = 0.0
    input_mean: float = 127.5
    input_std: float = 127.5
    device: str = ""
    latency_factor: float = 0.0
    track: str = ""
    model_sha256: str = ""

    def add_error(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.errors.append(Finding(code, message))

    def add_warning(self, code: str, message: str) -> None:
        if code not in WARNING_CODES:
            raise ValueError(f"unknown warning code {code!r}")
        self.warnings.append(Finding(code, message))

    def finish(self) -> ValidationReport:
        """Sort errors into the reference checker's order (stable) and set ``ok``."""
        self.errors.sort(key=lambda f: _ORDER[f.code])
        self.ok = not self.errors
        return self

    @property
    def error_codes(self) -> list[str]:
        return [f.code for f in self.errors]

    def to_json(self) -> dict:
        """The JSON document of DESIGN.md section 7 (plus device, factor, track, sha256)."""
        doc = asdict(self)
        order = ["ok", "errors", "warnings", "feature_dim", "model_size_mb", "latency_ms",
                 "latency_limit_ms", "input_mean", "input_std", "device", "latency_factor",
                 "track", "model_sha256"]
        return {key: doc[key] for key in order}
