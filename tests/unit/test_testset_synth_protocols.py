"""``mfr testset synth --protocols``: LFW-like pairs, IJB-C-like templates and a 1:N split that
the protocol-file readers accept, with the documented counts."""

from __future__ import annotations

import tomllib
from collections import Counter

import numpy as np
import pytest

from mfr.challenge import parse_challenge
from mfr.testset.format import TestSet
from mfr.testset.protocol_check import gather_protocol_files
from mfr.testset.protocol_files import read_pairs, read_template_pairs, read_templates
from mfr.testset.synth import synth_testset
from mfr.testset.synth_protocols import ONGOING_PROTOCOLS_TOML

SCALE = 0.001


@pytest.fixture(scope="module")
def ongoing(tmp_path_factory) -> TestSet:
    return synth_testset(tmp_path_factory.mktemp("ongoing") / "ts", scale=SCALE, seed=3,
                         shard_size=256, protocols=True)


@pytest.fixture(scope="module")
def index(ongoing) -> dict[str, int]:
    return {path: row for row, path in enumerate(ongoing.manifest.paths)}


def test_the_lfw_list_has_6000_pairs_in_10_folds_of_300_genuine_and_300_impostor(ongoing, index):
    pairs = read_pairs(ongoing.protocol_file("lfw_pairs.csv"), index)
    assert len(pairs) == 6000
    assert Counter(zip(pairs.fold.tolist(), pairs.same.tolist())) == {
        (fold, same): 300 for fold in range(1, 11) for same in (True, False)}
    identities = ongoing.manifest.identity_codes
    assert np.array_equal(identities[pairs.first] == identities[pairs.second], pairs.same)
    assert all(ongoing.manifest.paths[i].startswith("lfw/") for i in pairs.first)
    # Folds are identity-disjoint, like LFW's ten sets.
    fold_of = {}
    for i, fold in zip(np.concatenate([pairs.first, pairs.second]),
                       np.concatenate([pairs.fold, pairs.fold])):
        assert fold_of.setdefault(int(identities[i]), int(fold)) == fold
    # No pair is listed twice.
    assert len(set(zip(pairs.first.tolist(), pairs.second.tolist()))) == 6000
    # The block variant: the same pairs in the same order, folds as 10 blocks of 600.
    blocks = read_pairs(ongoing.protocol_file("lfw_pairs_blocks.csv"), index)
    assert blocks.fold is None
    assert np.array_equal(blocks.first, pairs.first) and np.array_equal(blocks.same, pairs.same)
    assert np.array_equal(pairs.fold, np.repeat(np.arange(1, 11), 600))


def test_the_ijbc_templates_pool_media_of_one_subject_and_pairs_cover_every_genuine_pair(
        ongoing, index):
    templates = read_templates(ongoing.protocol_file("ijbc_templates.csv"), index)
    pairs = read_template_pairs(ongoing.protocol_file("ijbc_pairs.csv"),
                                templates.template_index)
    identities = ongoing.manifest.identity_codes
    subject = {}
    for image, template in zip(templates.image, templates.template):
        assert ongoing.manifest.paths[image].startswith("ijbc/")
        assert subject.setdefault(int(template), int(identities[image])) == identities[image]
    subjects = set(subject.values())
    assert len(subjects) == 10  # max(10, round(3531 * 0.001))
    per_subject = Counter(subject.values())
    assert set(per_subject.values()) <= {2, 3}
    # Some images are in two templates; a template holds several media.
    assert len(templates.image) > len(set(templates.image.tolist()))
    assert max(Counter(zip(templates.template.tolist(), templates.media.tolist())).values()) > 1
    # Genuine pairs: every pair of one subject's templates, and only those.
    genuine = {(int(a), int(b)) for a, b, s in zip(pairs.first, pairs.second, pairs.same) if s}
    expected = {(a, b) for a in subject for b in subject if a < b and subject[a] == subject[b]}
    assert genuine == expected
    impostor = [(int(a), int(b)) for a, b, s in zip(pairs.first, pairs.second, pairs.same)
                if not s]
    assert all(subject[a] != subject[b] for a, b in impostor)
    # Few templates: every impostor pair is listed (fewer than 400 per genuine pair).
    count = len(subject)
    assert len(impostor) == count * (count - 1) // 2 - len(genuine) == len(set(impostor))


def test_the_1n_split_has_a_gallery_of_some_identities_and_mated_and_nonmated_probes(ongoing):
    manifest = ongoing.manifest
    gallery, probe = manifest.tag_mask("enrolled"), manifest.tag_mask("search")
    assert not (gallery & probe).any()
    assert (manifest.tag_mask("mr") | ~(gallery | probe)).all()  # only MR images
    identities = manifest.identity_codes
    mr = set(identities[manifest.tag_mask("mr")].tolist())
    enrolled = Counter(identities[gallery].tolist())
    assert set(enrolled.values()) == {1, 2} and 0.3 < len(enrolled) / len(mr) < 0.7
    searched = Counter(identities[probe].tolist())
    assert set(searched) == mr and set(searched.values()) <= {1, 2}
    mated = sum(n for identity, n in searched.items() if identity in enrolled)
    assert 0 < mated < probe.sum()


@pytest.mark.parametrize("name, genuine", [("cfp-fp", 350), ("agedb-30", 300)])
def test_cfp_fp_and_agedb_like_lists_are_10_folds_of_their_own_people(ongoing, index, name,
                                                                      genuine):
    pairs = read_pairs(ongoing.protocol_file(f"{name}_pairs.csv"), index)
    assert Counter(zip(pairs.fold.tolist(), pairs.same.tolist())) == {
        (fold, same): genuine for fold in range(1, 11) for same in (True, False)}
    identities = ongoing.manifest.identity_codes
    assert np.array_equal(identities[pairs.first] == identities[pairs.second], pairs.same)
    assert all(ongoing.manifest.paths[i].startswith(f"{name}/") for i in pairs.first)


def test_the_mfr_ongoing_fragment_reads_the_synthesised_files(ongoing):
    challenge = parse_challenge(tomllib.loads('id = "mfr-ongoing"\n' + ONGOING_PROTOCOLS_TOML))
    assert [(p.id, p.kind, p.files) for p in challenge.protocols] == [
        ("lfw", "pairs", ("lfw_pairs.csv",)),
        ("cfp-fp", "pairs", ("cfp-fp_pairs.csv",)),
        ("agedb-30", "pairs", ("agedb-30_pairs.csv",)),
        ("ijbc-1e-4", "templates", ("ijbc_pairs.csv", "ijbc_templates.csv")),
        ("ijbc-1e-5", "templates", ("ijbc_pairs.csv", "ijbc_templates.csv")),
        ("mr-1n", "identification", ()),
    ]
    files = gather_protocol_files(challenge, ongoing.manifest, ongoing.root)
    assert sorted(files) == ["agedb-30_pairs.csv", "cfp-fp_pairs.csv", "ijbc_pairs.csv",
                             "ijbc_templates.csv", "lfw_pairs.csv"]
    assert all(files[name] == (ongoing.root / name).read_bytes() for name in files)
    ongoing.verify()


def test_protocols_add_images_without_changing_the_built_in_ones(ongoing, tmp_path):
    plain = synth_testset(tmp_path / "plain", scale=SCALE, seed=3, shard_size=256)
    assert plain.protocol_files == {} and "enrolled" not in plain.info["tags"]
    built_in = plain.images
    assert ongoing.manifest.paths[:built_in] == plain.manifest.paths
    assert ongoing.manifest.identities[:built_in] == plain.manifest.identities
    whole = built_in // 256  # shards holding built-in images only
    assert whole >= 4
    assert [s.sha256 for s in ongoing.shards[:whole]] == [s.sha256 for s in plain.shards[:whole]]
    assert ongoing.info["tags"]["lfw"] > 2000 and ongoing.info["tags"]["ijbc"] > 0
    again = synth_testset(tmp_path / "again", scale=SCALE, seed=3, shard_size=256,
                          protocols=True)
    assert again.id == ongoing.id and again.protocol_files == ongoing.protocol_files
    other = synth_testset(tmp_path / "other", scale=SCALE, seed=4, shard_size=256,
                          protocols=True)
    assert other.protocol_files["lfw_pairs.csv"] != ongoing.protocol_files["lfw_pairs.csv"]


def test_lfw_pairs_shrink_below_scale_0001():
    from mfr.testset.synth_protocols import ijbc_subjects, lfw_genuine_per_fold

    assert lfw_genuine_per_fold(0.01) == lfw_genuine_per_fold(0.001) == 300
    assert lfw_genuine_per_fold(0.0001) == 30 and lfw_genuine_per_fold(0.00001) == 5
    assert ijbc_subjects(0.01) == 35 and ijbc_subjects(0.001) == 10


def test_the_docs_show_the_fragment_the_code_uses():
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "testsets.md").read_text("utf-8")
    assert f"```toml\n{ONGOING_PROTOCOLS_TOML}```" in docs

