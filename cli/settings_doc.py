"""The environment variables of every process, read off its settings class (pydantic fields:
the name, the type and its bounds, the default, the docstring as the meaning).

``mfr config`` prints them; docs/configuration.md is :func:`markdown`'s text, and a unit
test keeps the two equal.
"""

from __future__ import annotations

import importlib
import json
import types
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import annotated_types
from pydantic import SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

REGENERATE = ".venv/bin/mfr config --markdown > docs/configuration.md"


@dataclass(frozen=True)
class Process:
    name: str  # what `mfr config NAME` takes
    command: str
    settings: str  # "module:Class"
    about: str

    def settings_class(self) -> type:
        module, attr = self.settings.split(":")
        return getattr(importlib.import_module(module), attr)


# Every process, in the order `mfr config` lists them: `mfr serve`'s, then the CLI's own.
PROCESSES: tuple[Process, ...] = (
    Process("validator", "mfr serve validator", "services.validator.config:ValidatorSettings",
            "checks uploaded models and stores the accepted ones (gRPC)"),
    Process("embedder", "mfr serve embedder", "services.embedder.config:EmbedderSettings",
            "records embedding jobs and queues their shards (gRPC)"),
    Process("embedder-worker", "mfr serve embedder-worker",
            "services.embedder.config:EmbedderWorkerSettings",
            "runs the models on the test-set shards (queue worker)"),
    Process("scorer", "mfr serve scorer", "services.scorer.config:ScorerSettings",
            "records scoring jobs and queues their steps (gRPC)"),
    Process("scorer-worker", "mfr serve scorer-worker",
            "services.scorer.config:ScorerWorkerSettings",
            "computes the exact scores, tile by tile (queue worker)"),
    Process("ranker", "mfr serve ranker", "services.ranker.config:RankerSettings",
            "reads for external tools: public ones need no token (gRPC)"),
    Process("dispatcher", "mfr serve dispatcher", "services.dispatcher.config:DispatcherSettings",
            "drives each submission through validation, embedding and scoring"),
    Process("gateway", "mfr serve gateway", "gateway.config:GatewaySettings",
            "the HTTP API and the web page"),
    Process("up", "mfr up", "cli.settings:UpSettings",
            "the whole platform on this machine; its processes read their own variables too"),
    Process("demo", "mfr demo", "cli.settings:StackSettings",
            "a scaled-down challenge end to end, on a stack like `mfr up`'s"),
    Process("client", "mfr signup, submit, status, leaderboard, quota, admin",
            "cli.settings:ClientSettings", "the participants' and organisers' commands"),
    Process("validate", "mfr validate", "services.validator.config:ModelCheckSettings",
            "checks a model on this machine, as the validator does"),
    Process("testset", "mfr testset ... --upload", "mfr.settings:StorageSettings",
            "uploads a test set to the test-set bucket"),
    Process("db", "mfr db migrate, snapshot", "mfr.settings:DatabaseSettings",
            "schema migrations"),
)


def process(name: str) -> Process:
    return next(p for p in PROCESSES if p.name == name)


@dataclass(frozen=True)
class Variable:
    name: str  # MFR_...
    type: str  # "int >= 1", "secret", "path"...
    shown: str  # the default as people read it: "2", "required", "unset"...
    default: object  # as JSON (None: required, unset or secret)
    secret: bool
    required: bool
    meaning: str

    def to_json(self) -> dict:
        document = asdict(self)
        document.pop("shown")
        return document


def variables(settings: type) -> list[Variable]:
    """The variables a settings class reads, by name."""
    prefix = settings.model_config.get("env_prefix", "")
    found = []
    for name, info in settings.model_fields.items():
        secret = _base(info.annotation) in (SecretStr, SecretBytes)
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        found.append(Variable(
            name=(prefix + name).upper(), type=_type(info, secret),
            shown=_shown(default, required, secret),
            default=None if secret else to_jsonable_python(default),
            secret=secret, required=required, meaning=_meaning(settings, name)))
    return sorted(found, key=lambda v: v.name)


def _base(annotation: object) -> object:
    """``X`` of ``X | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", Path: "path",
              SecretStr: "secret", SecretBytes: "secret", dict: "JSON object"}
BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", ">="),
          (annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "<="))


def _type(info: FieldInfo, secret: bool) -> str:
    base, metadata = _base(info.annotation), list(info.metadata)
    if typing.get_origin(base) is typing.Annotated:  # PositiveInt | None
        base, *inner = typing.get_args(base)
        metadata += inner
    name = TYPE_NAMES.get(typing.get_origin(base) or base, getattr(base, "__name__", str(base)))
    bounds = []
    for item in metadata:
        for kind, attribute, sign in BOUNDS:
            if isinstance(item, kind):
                bounds.append(f"{sign} {getattr(item, attribute)}")
        if isinstance(item, annotated_types.MinLen):
            bounds.append(f"{item.min_length}+ characters" if secret else
                          f"length >= {item.min_length}")
    return " ".join([name, ", ".join(bounds)]).strip()


def _shown(default: object, required: bool, secret: bool) -> str:
    if required:
        return "required (secret)" if secret else "required"
    if secret:
        return "unset (secret)" if default is None else "(secret)"
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, Path):  # ~/.cache/mfr, not this machine's home
        try:
            return str("~" / default.relative_to(Path.home()))
        except ValueError:
            return str(default)
    if isinstance(default, dict | list):
        return json.dumps(default)
    return str(default) if default != "" else '""'


def _meaning(settings: type, name: str) -> str:
    """The field's docstring, or the one of the class it overrides (a port's default)."""
    for klass in settings.__mro__:
        info = (getattr(klass, "__pydantic_fields__", None) or {}).get(name)
        if info is not None and info.description:
            return " ".join(info.description.replace("``", "`").split())
    return ""


@dataclass(frozen=True)
class Combined:
    """One variable across the processes that read it."""

    name: str
    type: str
    shown: str
    read_by: list[str]
    meaning: str

    @property
    def readers(self) -> str:
        """``read_by`` in words: "every `mfr serve` process" where it is read by them all."""
        serve = [p.name for p in PROCESSES if p.command.startswith("mfr serve")]
        grpc = [name for name in serve if name != "gateway"]
        for group, words in ((serve, "every `mfr serve` process"),
                             (grpc, "every `mfr serve` process but the gateway")):
            if set(group) <= set(self.read_by):
                rest = [name for name in self.read_by if name not in group]
                return ", ".join([words, *rest])
        return ", ".join(self.read_by)


def combined() -> list[Combined]:
    """Every variable once, with the processes that read it; where a default or a meaning
    differs between them, the most common one first, then the others by process."""
    by_name: dict[str, list[tuple[str, Variable]]] = {}
    for entry in PROCESSES:
        for variable in variables(entry.settings_class()):
            by_name.setdefault(variable.name, []).append((entry.name, variable))
    rows = []
    for name in sorted(by_name):
        readers = by_name[name]
        rows.append(Combined(
            name=name, type=_merged((p, v.type) for p, v in readers),
            shown=_merged((p, v.shown) for p, v in readers),
            read_by=[p for p, _ in readers],
            meaning=_merged(((p, v.meaning) for p, v in readers), sentences=True)))
    return rows


def _merged(values: Iterable[tuple[str, str]], sentences: bool = False) -> str:
    groups: dict[str, list[str]] = {}
    for process_name, value in values:
        groups.setdefault(value, []).append(process_name)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    if len(ordered) == 1:
        return ordered[0][0]
    first, *others = ordered
    parts = [first[0]] if len(first[1]) > 1 else [f"{', '.join(first[1])}: {first[0]}"]
    parts += [f"{', '.join(names)}: {value}" for value, names in others]
    return (" " if sentences else "; ").join(parts)


def markdown() -> str:
    """docs/configuration.md."""
    lines = [
        "# Configuration: every environment variable",
        "",
        f"<!-- Generated from the settings classes: do not edit; run `{REGENERATE}`. -->",
        "",
        "Each process reads its settings from `MFR_*` environment variables, once, at start",
        "(one pydantic-settings class per process; a field's docstring is its meaning). An",
        "empty variable counts as unset. Secrets have no default: a process that needs one",
        "stops at start-up with `error[config_invalid]: MFR_X is not set`. The same tables,",
        "for one process: `mfr config PROCESS` (`--json` for programs).",
        "",
        "## Processes",
        "",
        "| process | command | settings class | what it is |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{p.name}` | `{p.command}` | `{p.settings.replace(':', '.')}` | {p.about} |"
              for p in PROCESSES]
    lines += ["", "## Variables", "",
              "Where a default or a meaning differs between processes, the most common comes",
              "first, then the others with the processes they belong to.", "",
              "| variable | type | default | read by | meaning |", "|---|---|---|---|---|"]
    lines += [f"| `{row.name}` | {_cell(row.type)} | {_cell(row.shown)} | "
              f"{_cell(row.readers)} | {_cell(row.meaning)} |" for row in combined()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
