"""The layout rules of docs/architecture.md that import-linter cannot see.

(The import layers themselves are import-linter's contracts in pyproject.toml,
run by ``make test``.) Here: one owner per table, states defined once, and
files and functions small enough to read in one sitting.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mfr", "services", "gateway", "cli")
GENERATED = re.compile(r"^mfr/[a-z]+/v1/")
# table -> the only modules with SQL on it (migrations aside).
OWNERS = {
    "participants": "mfr/records/", "submissions": "mfr/records/",
    "submission_events": "mfr/records/", "leaderboard_snapshots": "mfr/records/",
    "scoring_jobs": "services/scorer/jobs.py", "scoring_rounds": "services/scorer/jobs.py",
    "scoring_tiles": "services/scorer/jobs.py",
    "embedding_jobs": "services/embedder/jobs.py", "embedding_shards": "services/embedder/jobs.py",
    "procrastinate_jobs": "mfr/taskqueue.py",
}


def _tracked(suffix: str) -> list[str]:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", f"*{suffix}"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in files if not GENERATED.match(f) and (ROOT / f).exists()]


def _source(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    return {f: (ROOT / f).read_text() for f in _tracked(".py") if f.startswith(packages)}


def test_only_the_owner_of_a_table_has_sql_on_it():
    trespass = []
    for path, text in _source().items():
        for table, owner in OWNERS.items():
            sql = rf"\b(FROM|INTO|UPDATE|JOIN|TABLE)\s+{table}\b"
            if re.search(sql, text) and not path.startswith(owner):
                trespass.append(f"{path}: {table}")
    assert trespass == []


def test_submission_states_are_defined_once():
    spelled = [path for path, text in _source().items()
               if re.search(r'"queued",\s*"validating"', text)
               and path != "mfr/records/states.py"]
    assert spelled == []


def test_no_file_over_400_lines_and_no_function_over_80():
    long_files, long_functions = [], []
    for path in _tracked(".py") + _tracked(".md"):
        text = (ROOT / path).read_text()
        if text.count("\n") > 400:
            long_files.append(path)
        if not path.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(text)):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{path}:{node.lineno} {node.name}")
    assert long_files == [] and long_functions == []
