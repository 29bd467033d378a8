"""``kind = "templates"`` (IJB-C style): pooling in float64 in the stated order, exactly."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from mfr.manifest import Manifest, write_manifest
from mfr.testset.protocol_files import PairList, read_templates
from services.scorer.engine import ImageLabels, normalise, protocol_json, score
from services.scorer.engine.backends.cpu import CpuBackend
from services.scorer.engine.kinds import templates as templates_module
from services.scorer.engine.kinds.files import ProtocolFiles
from services.scorer.engine.kinds.templates import score_templates, template_features

from .listed_reference import pair_scores, run_mfr_score, tar_reference, template_reference
from .reference import make_challenge


def random_set(seed: int, images: int = 150, dim: int = 6):
    """Features (NaN, zero rows), and templates rows (image, template, media) in file order:
    images in several templates, duplicated rows, a template without a valid image."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((images, dim)).astype(np.float32)
    features[rng.choice(images, 20, replace=False)] = 0.0
    features[rng.choice(images, 10, replace=False), 2] = np.nan
    invalid = np.flatnonzero(~normalise(features).valid)
    rows = []
    for template in range(40):
        for medium in range(rng.integers(1, 5)):
            for _ in range(rng.integers(1, 6)):
                rows.append((int(rng.integers(0, images)), f"T{template}", f"m{medium}"))
    rows += [(int(i), "Tdead", f"m{j % 2}") for j, i in enumerate(invalid[:4])]
    rows.append((rows[0][0], "T39", "m0"))  # rows[0]'s image in a second template
    rows.append(rows[3])  # a duplicated row
    order = rng.permutation(len(rows))  # templates interleaved in the file
    return features, [rows[i] for i in order]


def write_templates(path, paths, rows):
    path.write_text("path,template,media\n" + "".join(f"{paths[i]},{t},{m}\n"
                                                    for i, t, m in rows))


def parsed(tmp_path, rows, images):
    paths = [f"img/{i}.png" for i in range(images)]
    write_templates(tmp_path / "t.csv", paths, rows)
    return read_templates(tmp_path / "t.csv", {p: i for i, p in enumerate(paths)})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_template_features_equal_the_loops(tmp_path, monkeypatch, seed):
    features, rows = random_set(seed)
    templates = parsed(tmp_path, rows, features.shape[0])
    unit, valid = template_reference(features, [r[0] for r in rows], [r[1] for r in rows],
                                     [r[2] for r in rows])
    got = template_features(normalise(features), templates)
    assert np.array_equal(got.unit, unit) and np.array_equal(got.valid, valid)
    assert not got.valid[templates.template_index["Tdead"]]
    monkeypatch.setattr(templates_module, "_TEMPLATES_PER_CHUNK", 3)
    chunked = template_features(normalise(features), templates)
    assert np.array_equal(chunked.unit, unit) and np.array_equal(chunked.valid, valid)


@pytest.mark.parametrize("media", [("m", "m", "m"), ("m1", "m2", "m3")])
def test_summation_order_is_the_file_row_order(tmp_path, media):
    # Unit rows a, b, c whose float64 sum depends on the order: (1 + 2**-60) - 1 = 0,
    # (1 - 1) + 2**-60 = 2**-60; as images of one media or as three media.
    features = np.array([[1, 0], [2.0**-60, 1], [-1, 0]], dtype=np.float32)
    rows = [(i, "T", m) for i, m in enumerate(media)]
    swapped = [rows[0], rows[2], rows[1]]
    forward = template_features(normalise(features), parsed(tmp_path, rows, 3))
    other = template_features(normalise(features), parsed(tmp_path, swapped, 3))
    assert forward.unit.tolist() == [[0.0, 1.0]] and other.unit[0, 0] == np.float32(2.0**-60)
    for got, order in ((forward, rows), (other, swapped)):
        unit, _ = template_reference(features, [r[0] for r in order], ["T"] * 3,
                                     [r[2] for r in order])
        assert np.array_equal(got.unit, unit)


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("far", [0.01, 0.2])
def test_tar_over_template_pairs_equals_brute_force(tmp_path, seed, far):
    features, rows = random_set(seed)
    templates = parsed(tmp_path, rows, features.shape[0])
    rng = np.random.default_rng(seed)
    count = len(templates.template_ids)
    first, second = rng.integers(0, count, 800), rng.integers(0, count, 800)
    first[:30] = templates.template_index["Tdead"]
    first[30:40], second[30:40] = first[40], second[40]  # duplicated pairs
    pairs = PairList(first, second, rng.random(800) < 0.3)
    protocol = make_challenge([{"id": "ijbc", "kind": "templates", "templates": "t.csv",
                                "pairs": "p.csv", "far": far}]).protocols[0]
    result = score_templates(normalise(features), templates, pairs, protocol)
    unit, valid = template_reference(features, [r[0] for r in rows], [r[1] for r in rows],
                                     [r[2] for r in rows])
    scores = pair_scores(unit, valid, first, second)
    assert protocol_json(result) == tar_reference(scores.tolist(), pairs.same.tolist(),
                                                  protocol.far)
    threaded = score_templates(normalise(features), templates, pairs, protocol,
                               CpuBackend(threads=3))
    assert threaded == result


def test_cli_scores_templates_from_the_manifest_folder(tmp_path):
    features, rows = random_set(6, images=80)
    paths = [f"img/{i}.png" for i in range(80)]
    write_manifest(tmp_path / "m.csv", Manifest(tuple(paths), tuple("x" for _ in paths),
                                                tuple(frozenset() for _ in paths)))
    write_templates(tmp_path / "t.csv", paths, rows)
    names = sorted({t for _, t, _ in rows})
    rng = np.random.default_rng(6)
    listed = [(names[a], names[b], int(rng.random() < 0.3))
              for a, b in rng.integers(0, len(names), (300, 2))]
    (tmp_path / "tp.csv").write_text("first,second,same\n" + "".join(
        f"{a},{b},{s}\n" for a, b, s in listed))
    np.save(tmp_path / "f.npy", features)
    (tmp_path / "c.toml").write_text(
        'id = "t"\n[ranking]\nweights = { ijbc = 1 }\n[[protocols]]\nid = "ijbc"\n'
        'kind = "templates"\ntemplates = "t.csv"\npairs = "tp.csv"\nfar = 0.1\n')
    result = run_mfr_score(tmp_path / "c.toml", tmp_path / "m.csv", tmp_path / "f.npy",
                           "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    unit, valid = template_reference(features, [r[0] for r in rows], [r[1] for r in rows],
                                     [r[2] for r in rows])
    order = list(dict.fromkeys(t for _, t, _ in rows))
    first = np.array([order.index(a) for a, _, _ in listed])
    second = np.array([order.index(b) for _, b, _ in listed])
    scores = pair_scores(unit, valid, first, second).tolist()
    expected = tar_reference(scores, [s == 1 for _, _, s in listed], Fraction(1, 10))
    assert doc == {"protocols": {"ijbc": expected}, "ranking_score": expected["tar"]}


def test_score_without_the_files_says_so():
    challenge = make_challenge([{"id": "ijbc", "kind": "templates", "templates": "t.csv",
                                 "pairs": "p.csv", "far": 0.1}])
    from mfr.errors import InvalidInput
    with pytest.raises(InvalidInput) as err:
        score(np.ones((3, 2), np.float32), ImageLabels(np.arange(3)), challenge, files={})
    assert err.value.code == "protocol_files_missing"
    files = {"ijbc": ProtocolFiles(PairList(np.array([0]), np.array([0]), np.array([True])))}
    assert files["ijbc"].templates is None
