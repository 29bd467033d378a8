"""`make test` names its tiers' folders (two pytest runs): a new folder must be named too."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_folder_is_run_by_make_test_or_make_test_images():
    folders = {p.name for p in (ROOT / "tests").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    makefile = (ROOT / "Makefile").read_text()
    recipes = [re.search(rf"(?ms)^{target}:.*?(?=^\S|\Z)", makefile).group(0)
               for target in ("test", "test-images")]
    named = set(re.findall(r"tests/(\w+)", "".join(recipes)))
    assert folders == named == {"unit", "integration", "e2e", "images"}
