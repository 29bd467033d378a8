"""Test sets in object storage: ``<testset_id>/...`` in the test-set bucket.

Layout mirrors the folder (``testset.json``, ``manifest.csv``, extra files,
protocol files, ``shards/shard-00000.npy``...). ``testset.json`` is uploaded last, so its
presence means the upload is complete. Services fetch into a local cache
(``<cache>/testsets/<id>/``), verifying every file's sha256 on the way;
a pod fetches only the shards it embeds.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mfr.errors import InvalidInput, NotFound
from mfr.logs import get_logger
from mfr.testset.format import INFO_NAME, MANIFEST_NAME, SHARD_DIR, TestSet, TestSetCorrupt

log = get_logger("mfr.testset")


def _key(testset_id: str, name: str) -> str:
    return f"{testset_id}/{name}"


def upload_testset(store, testset: TestSet) -> bool:
    """Upload ``testset`` unless it is there already; True when something was uploaded."""
    bucket = store.buckets.testsets
    if store.exists(bucket, _key(testset.id, INFO_NAME)):
        return False
    testset.verify()  # never publish a corrupt copy
    for shard in testset.shards:
        store.put_file(bucket, _key(testset.id, shard.file), testset.root / shard.file)
    for name in (MANIFEST_NAME, *testset.info.get("files", {}), *testset.protocol_files):
        store.put_file(bucket, _key(testset.id, name), testset.root / name)
    store.put_file(bucket, _key(testset.id, INFO_NAME), testset.root / INFO_NAME)
    log.info("test set uploaded", testset_id=testset.id, images=testset.images,
             shards=len(testset.shards))
    return True


def stored_testset(store, testset_id: str, cache_dir: str | Path) -> TestSet:
    """A local copy of a stored test set's description (``testset.json``) alone: shard
    counts and sizes, no images."""
    bucket = store.buckets.testsets
    root = Path(cache_dir) / "testsets" / testset_id
    (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    if not (root / INFO_NAME).exists():
        if not store.exists(bucket, _key(testset_id, INFO_NAME)):
            raise NotFound(f"test set {testset_id} is not in object storage",
                           code="testset_not_found")
        _download(store, bucket, _key(testset_id, INFO_NAME), root / INFO_NAME, None)
    testset = TestSet(root)  # checks that the id matches the recorded hashes
    if testset.id != testset_id:
        raise NotFound(f"stored test set {testset_id} describes itself as {testset.id}",
                       code="testset_corrupt")
    return testset


def fetch_testset(store, testset_id: str, cache_dir: str | Path,
                  shards: Iterable[int] | None = None, manifest: bool = True) -> TestSet:
    """A local copy of a stored test set with ``shards`` (default: all) and, unless
    ``manifest`` is False, the manifest and the protocol files
    (:meth:`TestSet.protocol_file`). A shard missing from storage or not matching its
    recorded hash is ``TestSetCorrupt`` naming the shard."""
    bucket = store.buckets.testsets
    testset = stored_testset(store, testset_id, cache_dir)
    root = testset.root
    if manifest:  # the labels: the manifest and the protocol files, all small
        _ensure(store, bucket, testset_id, MANIFEST_NAME, root, testset.info["manifest_sha256"])
        for name, sha256 in testset.protocol_files.items():
            try:
                _ensure(store, bucket, testset_id, name, root, sha256)
            except NotFound as exc:  # missing, or not what the test set recorded
                raise TestSetCorrupt(f"protocol file {name!r} of test set {testset_id}: "
                                     f"{exc.message}") from None
    wanted = range(len(testset.shards)) if shards is None else sorted(set(shards))
    bad = [i for i in wanted if not 0 <= i < len(testset.shards)]
    if bad:
        raise InvalidInput(f"shard {bad[0]} does not exist (test set {testset_id} has "
                           f"{len(testset.shards)} shards)", code="shard_invalid")
    for index in wanted:
        shard = testset.shards[index]
        try:
            _ensure(store, bucket, testset_id, shard.file, root, shard.sha256, shard.bytes)
        except NotFound as exc:  # missing, or not what the test set recorded
            raise TestSetCorrupt(f"shard {index} of test set {testset_id}: {exc.message}") \
                from None
    return testset


def _ensure(store, bucket: str, testset_id: str, name: str, root: Path, sha256: str,
            size: int | None = None) -> None:
    path = root / name
    if path.exists() and (size is None or path.stat().st_size == size):
        return  # complete (downloads land under a temporary name); hashes are checked on read
    _download(store, bucket, _key(testset_id, name), path, sha256)


def _download(store, bucket: str, key: str, path: Path, sha256: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # get_file writes a unique temporary name and renames it: two threads, or two pods
    # sharing a cache volume, may fetch the same file at once.
    store.get_file(bucket, key, path, expect_sha256=sha256)


def testset_summary(testset: TestSet) -> dict:
    """What ``mfr testset`` commands print with ``--json``."""
    info = testset.info
    return {"id": testset.id, "path": str(testset.root), "name": info.get("name", ""),
            "images": testset.images, "identities": info.get("identities"),
            "shards": len(testset.shards), "shard_size": testset.shard_size,
            "tags": info.get("tags", {}), "source": info.get("source", {}),
            "protocol_files": dict(testset.protocol_files)}
