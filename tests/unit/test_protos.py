"""The committed generated code must be what scripts/gen_protos.py makes now."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path):
    generated = _generator().generate(tmp_path)
    assert generated, "no proto files found"
    stale = []
    for path in generated:
        rel = path.relative_to(tmp_path)
        committed = ROOT / rel
        if not committed.exists() or committed.read_text() != path.read_text():
            stale.append(str(rel))
    assert not stale, f"stale generated code, run `python scripts/gen_protos.py`: {stale}"


def test_every_rpc_and_field_is_commented():
    uncommented = []
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            is_rpc = stripped.startswith("rpc ")
            is_field = re.match(r"^(optional |repeated )?[\w.<>, ]+ \w+ = \d+;", stripped)
            if (is_rpc or is_field) and not lines[number - 1].strip().startswith("//"):
                uncommented.append(f"{proto.relative_to(ROOT)}:{number + 1}: {stripped}")
    assert not uncommented, "\n".join(uncommented)


def test_packages_are_versioned_by_path():
    for proto in (ROOT / "protos").rglob("*.proto"):
        rel = proto.relative_to(ROOT / "protos").parent
        expected = ".".join(rel.parts)
        assert f"package {expected};" in proto.read_text(), proto
