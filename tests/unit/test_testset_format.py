"""The test-set format and the synthetic test set: structure, determinism, integrity."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from mfr.testset import format as testset_format
from mfr.testset.format import TestSet, TestSetWriter
from mfr.testset.synth import RACES, expected_counts, synth_testset

SCALE = 0.001


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> TestSet:
    return synth_testset(tmp_path_factory.mktemp("synth") / "ts", scale=SCALE, seed=3,
                         shard_size=200)


def test_synthetic_set_has_the_challenge_structure(small):
    manifest = small.manifest
    counts = expected_counts(SCALE)
    for tag, count in counts.items():
        assert int(manifest.tag_mask(tag).sum()) == count, tag
    assert small.info["tags"] == {t: counts[t] for t in sorted(counts)}
    # Mask: one masked and two non-masked images per identity, nothing else.
    per_identity = defaultdict(lambda: {"mask": 0, "nonmask": 0})
    for identity, tags in zip(manifest.identities, manifest.tags):
        for tag in tags & {"mask", "nonmask"}:
            per_identity[identity][tag] += 1
    assert per_identity and all(v == {"mask": 1, "nonmask": 2} for v in per_identity.values())
    # Every MR image is in exactly one race group; every all-to-all identity has genuine pairs.
    for tags in manifest.tags:
        if "mr" in tags:
            assert len(tags & set(RACES)) == 1
    for tag in ("children", "mr", *RACES):
        ids = np.array(manifest.identities)[manifest.tag_mask(tag)]
        _, per_id = np.unique(ids, return_counts=True)
        assert per_id.min() >= 2, tag
    # Identities never span parts (mask / children / MR).
    parts = defaultdict(set)
    for identity, tags in zip(manifest.identities, manifest.tags):
        part = "mask" if tags & {"mask", "nonmask"} else "children" if "children" in tags else "mr"
        parts[identity].add(part)
    assert all(len(p) == 1 for p in parts.values())


def test_shards_hold_the_images_in_manifest_order(small):
    assert [s.images for s in small.shards] == [200] * 9 + [2]
    assert sum(s.images for s in small.shards) == small.images == len(small.manifest)
    first = small.read_shard(0)
    assert first.dtype == np.uint8 and first.shape == (200, 112, 112, 3)
    np.testing.assert_array_equal(small.image(201), small.read_shard(1)[1])
    np.testing.assert_array_equal(small.open_shard(9), small.read_shard(9))
    # Masked images wear a mask over the lower face: flatter there than unmasked ones.
    masked = small.manifest.tag_mask("mask")
    images = np.stack([small.image(i) for i in np.flatnonzero(masked)])
    others = np.stack([small.image(i) for i in np.flatnonzero(small.manifest.tag_mask("nonmask"))])
    assert images[:, 80:100, 30:80].std(axis=(1, 2)).mean() < others[:, 80:100, 30:80].std(
        axis=(1, 2)).mean()


def test_synthesis_is_deterministic_per_seed(small, tmp_path):
    again = synth_testset(tmp_path / "again", scale=SCALE, seed=3, shard_size=200)
    other = synth_testset(tmp_path / "other", scale=SCALE, seed=4, shard_size=200)
    assert again.id == small.id
    assert other.id != small.id
    info = json.loads((small.root / "testset.json").read_text())
    assert info["id"] == testset_format.testset_id(info["manifest_sha256"], [s["sha256"] for s in info["shards"]])


def test_a_changed_shard_byte_is_caught_when_read(small, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small.root, copy)
    path = copy / small.shards[2].file
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    testset = TestSet(copy)
    testset.read_shard(1)  # the others still read
    with pytest.raises(testset_format.TestSetCorrupt, match="sha256"):
        testset.read_shard(2)
    with pytest.raises(testset_format.TestSetCorrupt):
        testset.verify()
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(testset_format.TestSetCorrupt, match="bytes"):
        TestSet(copy).read_shard(2)


def test_a_changed_manifest_is_caught(small, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small.root, copy)
    text = (copy / "manifest.csv").read_text().replace(small.manifest.identities[0], "someone", 1)
    (copy / "manifest.csv").write_text(text)
    with pytest.raises(testset_format.TestSetCorrupt, match="manifest"):
        _ = TestSet(copy).manifest


def test_a_tampered_id_is_refused(small, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small.root, copy)
    info = json.loads((copy / "testset.json").read_text())
    info["shards"][0]["sha256"] = "0" * 64
    (copy / "testset.json").write_text(json.dumps(info))
    with pytest.raises(testset_format.TestSetCorrupt, match="does not match"):
        TestSet(copy)


def test_writer_leaves_nothing_behind_when_it_fails(tmp_path):
    from mfr.manifest import Manifest

    with pytest.raises(RuntimeError), TestSetWriter(tmp_path / "ts", shard_size=4) as writer:
        writer.add(np.zeros((6, 112, 112, 3), dtype=np.uint8))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with TestSetWriter(tmp_path / "ts", shard_size=4) as writer:
        writer.add(np.zeros((6, 112, 112, 3), dtype=np.uint8))
        manifest = Manifest(tuple(f"{i}.png" for i in range(6)), ("a", "a", "b", "b", "c", "c"),
                            (frozenset(),) * 6)
        testset = writer.finish(manifest)
    assert [s.images for s in testset.shards] == [4, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ts"]
