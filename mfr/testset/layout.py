"""Names inside a test-set folder (docs/testsets.md): the format's own files, shard
names, and which names a protocol file may take."""

from __future__ import annotations

MANIFEST_NAME = "manifest.csv"
INFO_NAME = "testset.json"
SHARD_DIR = "shards"
SOURCES_NAME = "sources.sha256"
RESERVED_NAMES = (MANIFEST_NAME, INFO_NAME, SOURCES_NAME)


def shard_name(index: int) -> str:
    return f"{SHARD_DIR}/shard-{index:05d}.npy"


def protocol_file_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a protocol file of a test set, or None when it can.

    Names are relative POSIX paths inside the test-set folder that do not clash with
    the format's own files; they come from challenges and from stored ``testset.json``
    files, so a name must never lead a download outside the folder.
    """
    if not isinstance(name, str) or not name:
        return "must be a non-empty path"
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        return "must be a relative path inside the test set (no '..', '.', '//' or '\\')"
    if any(not ch.isprintable() for ch in name):
        return "must not contain control characters"
    if name in RESERVED_NAMES or parts[0] == SHARD_DIR:
        return f"clashes with the test set's own files ({', '.join(RESERVED_NAMES)}, {SHARD_DIR}/)"
    return None
