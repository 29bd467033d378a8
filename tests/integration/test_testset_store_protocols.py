"""A test set fetched by id from object storage (the suite's real S3 server, SeaweedFS) brings its protocol files."""

from __future__ import annotations

import pytest

from mfr.testset.format import TestSetCorrupt
from mfr.testset.store import fetch_testset, upload_testset
from mfr.testset.synth import synth_testset


@pytest.fixture(scope="module")
def ongoing(tmp_path_factory):
    return synth_testset(tmp_path_factory.mktemp("ongoing") / "ts", scale=0.00005, seed=2,
                         shard_size=128, protocols=True)


def test_a_fetched_test_set_has_its_protocol_files(object_store, ongoing, tmp_path):
    assert upload_testset(object_store, ongoing)
    keys = set(object_store.list_keys(object_store.buckets.testsets))
    assert {f"{ongoing.id}/{name}" for name in ongoing.protocol_files} <= keys

    # What a scorer does: the labels only (manifest and protocol files), no shard.
    copy = fetch_testset(object_store, ongoing.id, tmp_path / "cache", shards=())
    assert copy.root != ongoing.root and copy.protocol_files == ongoing.protocol_files
    for name in ongoing.protocol_files:
        assert copy.protocol_file(name).read_bytes() == (ongoing.root / name).read_bytes()
    assert not copy.shard_path(0).exists()
    again = fetch_testset(object_store, ongoing.id, tmp_path / "cache", shards=())  # cached
    assert again.protocol_file("lfw_pairs.csv") == copy.root / "lfw_pairs.csv"

    # Without the manifest (an embedder pod), no protocol file is fetched.
    shards_only = fetch_testset(object_store, ongoing.id, tmp_path / "pod", shards=[0],
                                manifest=False)
    assert not (shards_only.root / "lfw_pairs.csv").exists()
    with pytest.raises(TestSetCorrupt):
        shards_only.protocol_file("lfw_pairs.csv")


def test_a_tampered_stored_protocol_file_is_refused(object_store, ongoing, tmp_path):
    upload_testset(object_store, ongoing)
    bucket = object_store.buckets.testsets
    object_store.put_bytes(bucket, f"{ongoing.id}/ijbc_pairs.csv", b"first,second,same\n1,2,1\n")
    with pytest.raises(TestSetCorrupt) as caught:
        fetch_testset(object_store, ongoing.id, tmp_path / "cache", shards=())
    assert caught.value.code == "testset_corrupt"
    assert "protocol file 'ijbc_pairs.csv'" in caught.value.message
    assert not (tmp_path / "cache" / "testsets" / ongoing.id / "ijbc_pairs.csv").exists()
