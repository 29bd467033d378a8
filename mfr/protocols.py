"""A challenge's protocols (DESIGN.md sections 3 and 3.1, TOML in section 7).

Five kinds, each a way of choosing pairs (or searches) and a rate:

* ``all``: unordered pairs i < j among the images carrying ``tag``;
* ``cross``: every (probe, gallery) pair, by the ``probe`` and ``gallery`` tags;
* ``pairs``: the pairs a CSV file lists (``pairs``), rate ``tar`` at ``far`` or
  ``accuracy`` over ``folds`` folds;
* ``templates``: IJB-C style, image features pooled into templates (``templates``
  file) compared by a pair list of template ids (``pairs`` file), TAR at ``far``;
* ``identification``: 1:N searches of ``probe`` images in a ``gallery``, TPIR at
  ``fpir``.

File names are relative to the test set's manifest folder. Everything that can be
checked without the files is checked here, with ``challenge_invalid`` naming the
protocol and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from mfr.errors import InvalidInput

KINDS = ("all", "cross", "pairs", "templates", "identification")
METRICS = ("tar", "accuracy")


@dataclass(frozen=True)
class Protocol:
    id: str
    kind: str
    far: Fraction | None = None  # TAR kinds: all, cross, pairs (tar), templates
    tag: str | None = None
    probe: str | None = None
    gallery: str | None = None
    title: str = ""
    pairs: str | None = None  # file: pairs and templates kinds
    templates: str | None = None  # file: templates kind
    metric: str = "tar"  # pairs kind: "tar" or "accuracy"
    folds: int = 10  # pairs kind with metric "accuracy"
    fpir: Fraction | None = None  # identification kind

    @property
    def far_text(self) -> str:
        return fraction_text(self.far) if self.far is not None else ""

    @property
    def rate(self) -> str:
        """What ranks a submission on this protocol: ``tar``, ``accuracy`` or ``tpir``."""
        if self.kind == "identification":
            return "tpir"
        return "accuracy" if self.kind == "pairs" and self.metric == "accuracy" else "tar"

    @property
    def files(self) -> tuple[str, ...]:
        """The protocol files this protocol reads (relative to the manifest's folder)."""
        return tuple(name for name in (self.pairs, self.templates) if name)


def fraction_text(value: Fraction) -> str:
    return repr(float(value)) if value.denominator != 1 else str(value.numerator)


def exact(value: object, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(f"{what}: expected a number, got {value!r}", code="challenge_invalid")
    # repr() of a TOML float is the shortest decimal that reads back the same,
    # i.e. what the organiser wrote: 1e-06 -> Fraction(1, 1000000).
    try:
        return Fraction(repr(value) if isinstance(value, float) else value)
    except ValueError:
        raise InvalidInput(f"{what}: expected a number, got {value!r}",
                           code="challenge_invalid") from None


def _invalid(pid: object, message: str) -> InvalidInput:
    return InvalidInput(f"protocol {pid!r}: {message}", code="challenge_invalid")


def _rate_target(p: dict, field: str) -> Fraction:
    if field not in p:
        raise _invalid(p["id"], f"'{p['kind']}' needs {field}")
    value = exact(p[field], f"protocol {p['id']!r}: {field}")
    if not 0 < value < 1:
        raise _invalid(p["id"], f"{field} must be in (0, 1), got {p[field]!r}")
    return value


def _file(p: dict, field: str) -> str:
    name = p.get(field)
    if not isinstance(name, str) or not name.strip():
        raise _invalid(p["id"], f"'{p['kind']}' needs {field} (a file beside the manifest)")
    if name.startswith("/") or ".." in name.split("/"):
        raise _invalid(p["id"], f"{field} must be a path inside the test set, got {name!r}")
    return name


def _tags(p: dict, *names: str) -> None:
    missing = [name for name in names if not p.get(name)]
    if missing:
        raise _invalid(p["id"], f"'{p['kind']}' needs {' and '.join(missing)} "
                                f"tag{'s' if len(missing) > 1 else ''}")


def parse_protocol(p: dict) -> Protocol:
    """One ``[[protocols]]`` table; KeyError for a missing id or kind (the caller's message)."""
    pid, kind = p["id"], p["kind"]
    common = {"id": str(pid), "kind": kind, "title": str(p.get("title", pid))}
    if kind == "all":
        _tags(p, "tag")
        return Protocol(**common, far=_rate_target(p, "far"), tag=p["tag"])
    if kind == "cross":
        _tags(p, "probe", "gallery")
        return Protocol(**common, far=_rate_target(p, "far"), probe=p["probe"],
                        gallery=p["gallery"])
    if kind == "pairs":
        metric = p.get("metric", "tar")
        if metric not in METRICS:
            raise _invalid(pid, f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if metric == "tar":
            return Protocol(**common, far=_rate_target(p, "far"), pairs=_file(p, "pairs"))
        folds = p.get("folds", 10)
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise _invalid(pid, f"folds must be an integer of at least 2, got {folds!r}")
        return Protocol(**common, metric="accuracy", folds=folds, pairs=_file(p, "pairs"))
    if kind == "templates":
        return Protocol(**common, far=_rate_target(p, "far"), pairs=_file(p, "pairs"),
                        templates=_file(p, "templates"))
    if kind == "identification":
        _tags(p, "probe", "gallery")
        if p["probe"] == p["gallery"]:
            raise _invalid(pid, "probe and gallery must be different tags")
        return Protocol(**common, fpir=_rate_target(p, "fpir"), probe=p["probe"],
                        gallery=p["gallery"])
    raise _invalid(pid, f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
