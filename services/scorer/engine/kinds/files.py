"""The protocol files a challenge's listed kinds read, beside the test set's manifest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mfr.protocols import Protocol
from mfr.testset.protocol_files import (
    PairList,
    TemplateList,
    read_pairs,
    read_template_pairs,
    read_templates,
)

#: Kinds scored from listed pairs (here) rather than by the tiled all/cross engine.
LISTED_KINDS = ("pairs", "templates")


@dataclass(frozen=True)
class ProtocolFiles:
    """One protocol's parsed files: image pairs (``pairs``), or templates and template
    pairs (``templates``)."""

    pairs: PairList
    templates: TemplateList | None = None


def read_protocol_files(protocols: Iterable[Protocol], folder: str | Path,
                        image_index: Mapping[str, int]) -> dict[str, ProtocolFiles]:
    """Parse the files of every ``pairs``/``templates`` protocol; ``folder`` is the
    manifest's, ``image_index`` maps a manifest path to its row."""
    folder = Path(folder)
    files: dict[str, ProtocolFiles] = {}
    for protocol in protocols:
        if protocol.kind == "pairs":
            files[protocol.id] = ProtocolFiles(read_pairs(folder / protocol.pairs, image_index))
        elif protocol.kind == "templates":
            templates = read_templates(folder / protocol.templates, image_index)
            pairs = read_template_pairs(folder / protocol.pairs, templates.template_index)
            files[protocol.id] = ProtocolFiles(pairs, templates)
    return files
