"""Object storage against the real S3 server: streaming, hashes, missing objects."""

from __future__ import annotations

import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mfr.errors import NotFound

pytestmark = pytest.mark.integration


class _Chunks(io.RawIOBase):
    """A stream of unknown length that never exists whole in memory: 1 MB pieces of
    changing bytes, handed out in whatever sizes the reader asks for."""

    def __init__(self, total: int, piece: int = 1 << 20) -> None:
        sizes = [piece] * (total // piece) + [total % piece]
        self.pieces = (bytes([i % 251]) * size for i, size in enumerate(sizes))
        self.left = b""
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.left:
            self.left = next(self.pieces, b"")
        data, self.left = self.left[:len(buffer)], self.left[len(buffer):]
        buffer[:len(data)] = data
        self.sha.update(data)
        return len(data)


def test_stream_round_trip_of_unknown_length(object_store, tmp_path):
    # 40 MB crosses the 16 MB multipart part size twice.
    source = _Chunks(40 * 1024 * 1024 + 123)
    stored = object_store.put_stream(object_store.buckets.models, "a/model.zip", source)
    assert stored.size == 40 * 1024 * 1024 + 123
    assert stored.sha256 == source.sha.hexdigest()
    got = object_store.get_file(object_store.buckets.models, "a/model.zip", tmp_path / "x",
                                expect_sha256=stored.sha256)
    assert got.sha256 == stored.sha256
    assert (tmp_path / "x").stat().st_size == stored.size


def test_hash_mismatch_is_refused_and_leaves_no_file(object_store, tmp_path):
    bucket = object_store.buckets.features
    object_store.put_bytes(bucket, "f.npy", b"features")
    with pytest.raises(NotFound) as err:
        object_store.get_file(bucket, "f.npy", tmp_path / "f.npy", expect_sha256="0" * 64)
    assert err.value.code == "object_corrupt"
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_one_object_fetched_to_one_path_by_many_threads_at_once(object_store, tmp_path):
    """Two calls of one service needing the same test set description fetch it together
    (the demo once lost a submission to a shared temporary name): each fetch succeeds, the
    file is whole, and no temporary is left."""
    bucket = object_store.buckets.testsets
    data = bytes(range(256)) * 20_000  # 5 MB: the fetches overlap
    stored = object_store.put_bytes(bucket, "t/testset.json", data)
    target = tmp_path / "testset.json"
    start = threading.Barrier(8)

    def fetch(_: int):
        start.wait()
        return object_store.get_file(bucket, "t/testset.json", target,
                                     expect_sha256=stored.sha256)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fetch, range(8)))
    assert {r.sha256 for r in results} == {stored.sha256}
    assert target.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["testset.json"]


def test_missing_object_is_not_found(object_store, tmp_path):
    with pytest.raises(NotFound) as err:
        object_store.get_bytes(object_store.buckets.results, "nope.json")
    assert err.value.code == "object_not_found"
    assert not object_store.exists(object_store.buckets.results, "nope.json")


def test_buckets_are_fresh_per_test(object_store):
    for bucket in object_store.buckets.all():
        assert object_store.list_keys(bucket) == []
