"""``mfr testset import --challenge``: protocol files are checked, stored and hashed into the id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import cli
from mfr.challenge import parse_challenge
from mfr.errors import InvalidInput
from mfr.testset import format as testset_format
from mfr.testset.format import TestSet, TestSetCorrupt
from mfr.testset.importer import import_testset

CHALLENGE = {
    "id": "ongoing-mini",
    "protocols": [
        {"id": "lfw", "kind": "pairs", "pairs": "lfw/pairs.csv", "metric": "accuracy",
         "folds": 10},
        {"id": "ijbc", "kind": "templates", "templates": "tpl.csv", "pairs": "tpairs.csv",
         "far": 1e-4},
        {"id": "1n", "kind": "identification", "gallery": "enrolled", "probe": "search",
         "fpir": 1e-3},
        {"id": "all", "kind": "all", "tag": "mr", "far": 1e-4},
    ],
}
IMAGES = 12  # 6 identities x 2 images: img/00.png (identity 0) ... img/11.png (identity 5)


def _tags(row: int) -> str:
    # Identities 0-2 enrolled by their first image; every second image is searched.
    return "mr;enrolled" if row % 2 == 0 and row < 6 else "mr;search" if row % 2 else "mr"


def _pairs_rows(folds: int = 10) -> list[str]:
    """Two pairs per fold: a genuine one (2i, 2i+1) and an impostor one."""
    rows = []
    for fold in range(1, folds + 1):
        person = (fold - 1) % 6
        rows.append(f"img/{2 * person:02d}.png,img/{2 * person + 1:02d}.png,1,{fold}")
        rows.append(f"img/{2 * person:02d}.png,img/{(2 * person + 2) % IMAGES:02d}.png,0,{fold}")
    return rows


@pytest.fixture
def source(tmp_path) -> Path:
    """A manifest, its images and the challenge's protocol files beside the manifest."""
    root = tmp_path / "src"
    rng = np.random.default_rng(0)
    lines = ["path,identity,tags"]
    for row in range(IMAGES):
        path = root / "img" / f"{row:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(path)
        lines.append(f"img/{row:02d}.png,{row // 2},{_tags(row)}")
    _write(root / "manifest.csv", lines)
    _write(root / "lfw/pairs.csv", ["first,second,same,fold", *_pairs_rows()])
    # Templates 10 and 11 of identity 0 share img/01.png; template 20 is identity 1.
    _write(root / "tpl.csv", ["path,template,media", "img/00.png,10,1", "img/01.png,10,2",
                              "img/01.png,11,2", "img/02.png,20,3", "img/03.png,20,3"])
    _write(root / "tpairs.csv", ["first,second,same", "10,11,1", "10,20,0", "11,20,0"])
    return root


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _import(source: Path, out: Path, challenge: dict | None = CHALLENGE) -> TestSet:
    return import_testset(source / "manifest.csv", source, out, shard_size=5,
                          challenge=parse_challenge(challenge) if challenge else None)


def _edit(path: Path, row: int, text: str) -> None:
    """Replace data row ``row`` (1 = first after the header)."""
    lines = path.read_text().splitlines()
    lines[row] = text
    _write(path, lines)


def test_protocol_files_are_stored_beside_the_manifest_and_hashed_into_the_id(source, tmp_path):
    testset = _import(source, tmp_path / "ts")
    names = ["lfw/pairs.csv", "tpairs.csv", "tpl.csv"]
    assert sorted(testset.protocol_files) == names
    for name in names:
        assert testset.protocol_file(name) == testset.root / name
        assert (testset.root / name).read_bytes() == (source / name).read_bytes()
    info = json.loads((testset.root / "testset.json").read_text())
    assert sorted(info["protocol_files"]) == names
    shards = [s["sha256"] for s in info["shards"]]
    assert testset.id == testset_format.testset_id(info["manifest_sha256"], shards,
                                                   info["protocol_files"])

    plain = _import(source, tmp_path / "plain", challenge=None)
    plain_info = json.loads((plain.root / "testset.json").read_text())
    assert "protocol_files" not in plain_info and plain.protocol_files == {}
    # Without protocol files the id is exactly the one the format always had.
    assert plain.id == testset_format.testset_id(plain_info["manifest_sha256"],
                                                 [s["sha256"] for s in plain_info["shards"]])
    assert plain.id != testset.id
    assert _import(source, tmp_path / "again").id == testset.id

    # One pair of the list changes (still valid): another test set, another id.
    _edit(source / "lfw/pairs.csv", 2, "img/00.png,img/04.png,0,1")
    changed = _import(source, tmp_path / "changed")
    assert changed.id != testset.id
    assert changed.protocol_files["tpl.csv"] == testset.protocol_files["tpl.csv"]


def test_a_challenge_without_protocol_files_keeps_the_plain_id(source, tmp_path):
    only_tags = {"id": "tags", "protocols": [CHALLENGE["protocols"][3]]}
    assert _import(source, tmp_path / "a", only_tags).id == \
        _import(source, tmp_path / "b", None).id


BAD_FILES = [
    # (file, data row, new text, code, what the message must say)
    ("lfw/pairs.csv", 3, "img/00.png,img/nope.png,1,2", "protocol_file_invalid",
     ["lfw/pairs.csv row 3", "unknown image path 'img/nope.png'"]),
    ("tpairs.csv", 2, "10,99,0", "protocol_file_invalid",
     ["tpairs.csv row 2", "unknown template id '99'"]),
    ("tpl.csv", 4, "img/missing.png,20,3", "protocol_file_invalid",
     ["tpl.csv row 4", "unknown image path 'img/missing.png'"]),
    ("lfw/pairs.csv", 2, "img/00.png,img/02.png,2,1", "protocol_file_invalid",
     ["lfw/pairs.csv row 2", "same must be 0 or 1, got '2'"]),
    ("lfw/pairs.csv", 5, "img/02.png,img/03.png,1,11", "challenge_invalid",
     ["protocol 'lfw'", "lfw/pairs.csv row 5", "fold 11 is outside 1..10", "folds = 10"]),
    ("manifest.csv", 5, "img/04.png,2,mr;enrolled;search", "manifest_invalid",
     ["row 5 (img/04.png)", "both the gallery tag 'enrolled' and the probe tag 'search'",
      "protocol '1n'"]),
]


def _nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no temporary folder left either


@pytest.mark.parametrize(("name", "row", "text", "code", "says"), BAD_FILES,
                         ids=[f"{b[0]}:{b[3]}:{b[1]}" for b in BAD_FILES])
def test_a_bad_protocol_file_is_named_with_its_row_and_nothing_is_written(
        source, tmp_path, name, row, text, code, says):
    _edit(source / name, row, text)
    with pytest.raises(InvalidInput) as caught:
        _import(source, tmp_path / "out")
    assert caught.value.code == code
    for part in says:
        assert part in caught.value.message
    _nothing_written(tmp_path)


def test_a_missing_file_names_its_protocol_and_file(source, tmp_path):
    (source / "tpl.csv").unlink()
    with pytest.raises(InvalidInput) as caught:
        _import(source, tmp_path / "out")
    assert caught.value.code == "protocol_file_missing"
    assert "protocol 'ijbc'" in caught.value.message and "'tpl.csv'" in caught.value.message
    _nothing_written(tmp_path)


def test_folds_must_divide_a_list_without_a_fold_column(source, tmp_path):
    rows = [r.rsplit(",", 1)[0] for r in _pairs_rows()]  # 20 pairs: 10 blocks of 2
    _write(source / "lfw/pairs.csv", ["first,second,same", *rows])
    assert len(_import(source, tmp_path / "ok").protocol_files) == 3
    _write(source / "lfw/pairs.csv", ["first,second,same", *rows[:-1]])
    with pytest.raises(InvalidInput) as caught:
        _import(source, tmp_path / "out")
    assert caught.value.code == "challenge_invalid"
    assert "protocol 'lfw'" in caught.value.message
    assert "folds = 10 does not divide the 19 pairs" in caught.value.message
    shutil.rmtree(tmp_path / "ok")
    _nothing_written(tmp_path)


def test_every_fold_of_a_fold_column_has_pairs(source, tmp_path):
    rows = _pairs_rows()
    rows[18:] = [r.rsplit(",", 1)[0] + ",9" for r in rows[18:]]  # fold 10's pairs into fold 9
    _write(source / "lfw/pairs.csv", ["first,second,same,fold", *rows])
    with pytest.raises(InvalidInput) as caught:
        _import(source, tmp_path / "out")
    assert caught.value.code == "challenge_invalid"
    assert caught.value.message == ("protocol 'lfw': protocol file "
                                    f"{source / 'lfw/pairs.csv'}: fold 10 has no pairs "
                                    "(folds = 10)")
    _nothing_written(tmp_path)


def test_an_existing_output_is_left_as_it_was_when_the_import_fails(source, tmp_path):
    first = _import(source, tmp_path / "out")
    before = {p: p.read_bytes() for p in first.root.rglob("*") if p.is_file()}
    _edit(source / "tpairs.csv", 1, "10,11,yes")
    with pytest.raises(InvalidInput):
        import_testset(source / "manifest.csv", source, tmp_path / "out", shard_size=5,
                       overwrite=True, challenge=parse_challenge(CHALLENGE))
    assert {p: p.read_bytes() for p in first.root.rglob("*") if p.is_file()} == before


def test_stored_protocol_files_are_checked_on_use(source, tmp_path):
    testset = _import(source, tmp_path / "ts")
    with pytest.raises(InvalidInput) as caught:
        testset.protocol_file("ijbc_pairs.csv")
    assert caught.value.code == "protocol_file_missing"
    assert "lfw/pairs.csv, tpairs.csv, tpl.csv" in caught.value.message
    (testset.root / "tpl.csv").write_text("path,template,media\nimg/00.png,10,1\n")
    with pytest.raises(TestSetCorrupt):
        TestSet(testset.root).protocol_file("tpl.csv")
    with pytest.raises(TestSetCorrupt):
        TestSet(testset.root).verify()


def test_a_hand_made_description_cannot_point_outside_the_test_set(source, tmp_path):
    testset = _import(source, tmp_path / "ts")
    info = json.loads((testset.root / "testset.json").read_text())
    info["protocol_files"] = {"../../etc/passwd": "0" * 64}
    shards = [s["sha256"] for s in info["shards"]]  # a consistent id: only the name is wrong
    info["id"] = testset_format.testset_id(info["manifest_sha256"], shards,
                                           info["protocol_files"])
    (testset.root / "testset.json").write_text(json.dumps(info))
    with pytest.raises(InvalidInput) as caught:
        TestSet(testset.root)
    assert caught.value.code == "testset_invalid" and "../../etc/passwd" in caught.value.message


def test_cli_import_with_a_challenge(source, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('id = "ongoing-mini"\n[[protocols]]\nid = "lfw"\nkind = "pairs"\n'
                    'pairs = "lfw/pairs.csv"\nmetric = "accuracy"\nfolds = 10\n')
    base = ["testset", "import", "--manifest", str(source / "manifest.csv"), "--images",
            str(source), "--challenge", str(toml), "--json"]
    ok = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "ts")])
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout)
    assert list(summary["protocol_files"]) == ["lfw/pairs.csv"]
    assert summary["source"]["challenge"] == "ongoing-mini"
    _edit(source / "lfw/pairs.csv", 1, "img/00.png,img/01.png,1,0")
    bad = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error[protocol_file_invalid]: ")
    assert "lfw/pairs.csv row 1: fold must be a positive integer, got '0'" in bad.stderr
    assert not (tmp_path / "bad").exists()
