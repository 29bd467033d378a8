"""Challenge definitions (DESIGN.md section 7): tracks, protocols, weights, limits.

A challenge is read from TOML. FAR targets are kept as exact fractions of their
decimal text (``1e-6`` is exactly 1/1,000,000), so ``k = floor(far * N_imp)``
is computed in integer arithmetic and never suffers float rounding.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mfr.errors import InvalidInput
from mfr.protocols import Protocol, exact, parse_protocol

__all__ = ["Challenge", "Embedding", "Protocol", "Track", "load_challenge", "parse_challenge"]

BUILTIN_CHALLENGE = "iccv21-mfr.toml"
#: Challenges that come with the package, by name (``--challenge mfr-ongoing``).
BUILTIN_CHALLENGES = {"iccv21-mfr": BUILTIN_CHALLENGE, "mfr-ongoing": "mfr-ongoing.toml"}
#: The leaderboard export's own columns (mfr/ranking/board.py), around one column per
#: protocol id: a protocol id may not be one of them.
BOARD_COLUMNS_BEFORE = ("rank", "participant", "organisation", "organisation_hidden",
                        "baseline", "submission_id", "ranking_score", "ranking_exact")
BOARD_COLUMNS_AFTER = ("model_size_mb", "latency_ms", "submitted_at")


@dataclass(frozen=True)
class Track:
    id: str
    max_feature_dim: int
    max_latency_ms: float
    max_model_mb: float
    training_set: str = ""

    @property
    def max_model_bytes(self) -> int:
        # The reference checker compares megabytes of 1024*1024 bytes.
        return int(self.max_model_mb * 1024 * 1024)


RUNTIMES = ("onnxruntime-cpu", "onnxruntime-cuda", "torch-cuda", "torch-cpu")


@dataclass(frozen=True)
class Embedding:
    """How every submission of the challenge is embedded (``[embedding]`` in the TOML).

    One runtime for the whole challenge, so a leaderboard never mixes runtimes.
    Every batch the embedder runs has ``batch_size`` images (a short last batch is
    padded); after running out of memory a shard is retried at half the size, down
    to 1. Those sizes, :attr:`batch_sizes`, are the ones the validator runs.
    """

    runtime: str = "onnxruntime-cpu"
    batch_size: int = 32

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        sizes, size = [], self.batch_size
        while size >= 1:
            sizes.append(size)
            size //= 2
        return tuple(sizes)


@dataclass(frozen=True)
class Challenge:
    id: str
    title: str
    tracks: tuple[Track, ...]
    protocols: tuple[Protocol, ...]
    weights: dict[str, Fraction] = field(default_factory=dict)
    daily_submission_limit: int = 3
    #: Uploads validation may reject per participant and day (they cost no slot).
    daily_rejected_limit: int = 10
    opens: datetime | None = None
    closes: datetime | None = None
    timezone: str = "UTC"
    source: str = ""
    embedding: Embedding = field(default_factory=Embedding)

    def track(self, track_id: str) -> Track:
        for track in self.tracks:
            if track.id == track_id:
                return track
        known = ", ".join(t.id for t in self.tracks)
        raise InvalidInput(f"unknown track {track_id!r} (known: {known})", code="unknown_track")

    def protocol(self, protocol_id: str) -> Protocol:
        for protocol in self.protocols:
            if protocol.id == protocol_id:
                return protocol
        raise InvalidInput(f"unknown protocol {protocol_id!r}", code="unknown_protocol")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def ranking_score(self, rates: dict[str, Fraction]) -> Fraction | None:
        """Exact weighted sum of the protocols' rates (each protocol's ``rate``: its TAR,
        accuracy or TPIR), or None when a weighted protocol is missing."""
        if not self.weights or any(pid not in rates for pid in self.weights):
            return None
        return sum((w * Fraction(rates[pid]) for pid, w in self.weights.items()), Fraction(0))


def _utc(value: object, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what}: expected a date-time, got {value!r}", code="challenge_invalid")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _embedding(table: dict) -> Embedding:
    runtime = table.get("runtime", Embedding.runtime)
    if runtime not in RUNTIMES:
        raise InvalidInput(f"embedding.runtime must be one of {', '.join(RUNTIMES)}, "
                           f"got {runtime!r}", code="challenge_invalid")
    size = table.get("batch_size", Embedding.batch_size)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1024 \
            or size & (size - 1):
        raise InvalidInput(f"embedding.batch_size must be a power of two from 1 to 1024, "
                           f"got {size!r}", code="challenge_invalid")
    return Embedding(runtime, size)


def parse_challenge(data: dict, source: str = "") -> Challenge:
    """Build a Challenge from parsed TOML, checking what scoring relies on."""
    try:
        tracks = tuple(
            Track(
                id=str(t["id"]),
                max_feature_dim=int(t["max_feature_dim"]),
                max_latency_ms=float(t["max_latency_ms"]),
                max_model_mb=float(t["max_model_mb"]),
                training_set=str(t.get("training_set", "")),
            )
            for t in data.get("tracks", [])
        )
        protocols = [parse_protocol(p) for p in data.get("protocols", [])]
        weights = {
            str(k): exact(v, f"ranking weight {k!r}")
            for k, v in data.get("ranking", {}).get("weights", {}).items()
        }
        challenge = Challenge(
            id=str(data["id"]),
            title=str(data.get("title", data["id"])),
            tracks=tracks,
            protocols=tuple(protocols),
            weights=weights,
            daily_submission_limit=int(data.get("daily_submission_limit", 3)),
            daily_rejected_limit=int(data.get("daily_rejected_limit", 10)),
            opens=_utc(data.get("opens"), "opens"),
            closes=_utc(data.get("closes"), "closes"),
            timezone=str(data.get("timezone", "UTC")),
            source=source,
            embedding=_embedding(data.get("embedding", {})),
        )
    except KeyError as exc:
        raise InvalidInput(f"challenge {source}: missing key {exc}", code="challenge_invalid") from None
    if challenge.daily_rejected_limit < 1:
        raise InvalidInput("challenge: daily_rejected_limit must be at least 1",
                           code="challenge_invalid")
    ids = [p.id for p in challenge.protocols]
    if len(set(ids)) != len(ids):
        raise InvalidInput("challenge: protocol ids must be unique", code="challenge_invalid")
    taken = sorted(set(ids) & set(BOARD_COLUMNS_BEFORE + BOARD_COLUMNS_AFTER))
    if taken:
        raise InvalidInput(f"challenge: protocol id {taken[0]!r} is a column of the leaderboard "
                           "export; choose another", code="challenge_invalid")
    for pid in challenge.weights:
        if pid not in ids:
            raise InvalidInput(f"ranking weight for unknown protocol {pid!r}", code="challenge_invalid")
    try:
        ZoneInfo(challenge.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown timezone {challenge.timezone!r}", code="challenge_invalid") from None
    return challenge


def is_builtin(path: str | Path | None) -> bool:
    """A built-in challenge's name (and no file of that name here)."""
    return path is not None and str(path) in BUILTIN_CHALLENGES and not Path(path).exists()


def served_challenge(path: str | Path | None = None) -> tuple[Challenge, str]:
    """The challenge and its TOML text (the validator and the scorer get the text over gRPC);
    ``path`` may name a built-in challenge (:data:`BUILTIN_CHALLENGES`); without one, the
    built-in ICCV21-MFR challenge."""
    if path is None or is_builtin(path):
        name = BUILTIN_CHALLENGES[str(path)] if path is not None else BUILTIN_CHALLENGE
        text = resources.files("mfr.builtin").joinpath(name).read_text("utf-8")
        source = f"builtin:{name}"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read challenge {path}: {exc.strerror}",
                               code="challenge_invalid") from None
        source = str(path)
    return _parse_text(text, source), text


def challenge_from_text(text: str, source: str, default: Challenge | None = None) -> Challenge:
    """A challenge sent as TOML text (in a request, or stored with a job); empty text means
    ``default``, else the built-in challenge."""
    if not text.strip():
        return default or load_challenge()
    return _parse_text(text, source)


def _parse_text(text: str, source: str) -> Challenge:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"challenge {source}: {exc}", code="challenge_invalid") from None
    return parse_challenge(data, source)


def load_challenge(path: str | Path | None = None) -> Challenge:
    """Read a challenge TOML; without a path, the built-in ICCV21-MFR challenge."""
    return served_challenge(path)[0]
