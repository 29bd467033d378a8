"""Protocol files (DESIGN.md section 3.1): parsed exactly, every problem named with its row."""

from __future__ import annotations

import numpy as np
import pytest

from mfr.errors import InvalidInput
from mfr.testset import protocol_files
from mfr.testset.protocol_files import read_pairs, read_template_pairs, read_templates

INDEX = {"a.jpg": 0, "b.jpg": 1, "c.jpg": 2, "d/e.png": 3}


def write(tmp_path, text, name="p.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_pairs_in_file_order_with_duplicates_and_folds(tmp_path):
    path = write(tmp_path, "first,second,same,fold\na.jpg,b.jpg,1,1\nd/e.png,c.jpg,0,3\n"
                           "a.jpg,b.jpg,1,2\n")
    pairs = read_pairs(path, INDEX)
    assert pairs.first.tolist() == [0, 3, 0] and pairs.second.tolist() == [1, 2, 1]
    assert pairs.same.tolist() == [True, False, True] and pairs.fold.tolist() == [1, 3, 2]
    assert read_pairs(write(tmp_path, "first,second,same\nc.jpg,a.jpg,0\n"), INDEX).fold is None


def test_large_lists_are_parsed_in_chunks_the_same(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 4, (1000, 2))
    same = rng.integers(0, 2, 1000)
    names = list(INDEX)
    text = "first,second,same\n" + "".join(f"{names[a]},{names[b]},{s}\n"
                                          for (a, b), s in zip(rows, same, strict=True))
    monkeypatch.setattr(protocol_files, "_CHUNK", 7)
    pairs = read_pairs(write(tmp_path, text), INDEX)
    assert pairs.first.tolist() == rows[:, 0].tolist()
    assert pairs.second.tolist() == rows[:, 1].tolist()
    assert pairs.same.tolist() == (same == 1).tolist()


def test_templates_codes_follow_first_appearance(tmp_path):
    path = write(tmp_path, "path,template,media\nb.jpg,T9,m2\na.jpg,T1,m1\nb.jpg,T1,m2\n"
                           "c.jpg,T9,m1\n")
    templates = read_templates(path, INDEX)
    assert templates.image.tolist() == [1, 0, 1, 2]
    assert templates.template_ids == ("T9", "T1") and templates.template.tolist() == [0, 1, 1, 0]
    assert templates.media_ids == ("m2", "m1") and templates.media.tolist() == [0, 1, 0, 1]
    pairs = read_template_pairs(write(tmp_path, "first,second,same\nT1,T9,0\nT9,T9,1\n",
                                      "tp.csv"), templates.template_index)
    assert pairs.first.tolist() == [1, 0] and pairs.second.tolist() == [0, 0]


@pytest.mark.parametrize(("text", "reason"), [
    ("", "header must be"),
    ("first,second\na.jpg,b.jpg\n", "header must be"),
    ("first,second,same\n", "no rows"),
    ("first,second,same\na.jpg,b.jpg,1\na.jpg,x.jpg,0\n", "row 2: unknown image path 'x.jpg'"),
    ("first,second,same\na.jpg,b.jpg,2\n", "row 1: same must be 0 or 1, got '2'"),
    ("first,second,same\na.jpg,b.jpg,yes\n", "row 1: same must be 0 or 1"),
    ("first,second,same\na.jpg,b.jpg,1,1\n", "row 1: expected 3 fields, got 4"),
    ("first,second,same,fold\na.jpg,b.jpg,1,1\nb.jpg,c.jpg,1,0\n",
     "row 2: fold must be a positive integer, got '0'"),
    ("first,second,same,fold\na.jpg,b.jpg,1,-1\n", "row 1: fold must be a positive integer"),
    ("first,second,same,fold\na.jpg,b.jpg,1,1.5\n", "row 1: fold must be a positive integer"),
])
def test_pair_list_problems_name_file_row_and_reason(tmp_path, text, reason):
    path = write(tmp_path, text)
    with pytest.raises(InvalidInput) as err:
        read_pairs(path, INDEX)
    assert err.value.code == "protocol_file_invalid"
    assert str(path) in err.value.message and reason in err.value.message


@pytest.mark.parametrize(("text", "reason"), [
    ("path,template\na.jpg,T1\n", "header must be"),
    ("path,template,media\na.jpg,T1,m\nzz.jpg,T1,m\n", "row 2: unknown image path"),
    ("path,template,media\na.jpg,,m\n", "row 1: empty template id"),
])
def test_templates_problems(tmp_path, text, reason):
    with pytest.raises(InvalidInput) as err:
        read_templates(write(tmp_path, text), INDEX)
    assert err.value.code == "protocol_file_invalid" and reason in err.value.message


def test_unknown_template_id_and_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match="row 2: unknown template id 'T3'") as err:
        read_template_pairs(write(tmp_path, "first,second,same\nT1,T2,1\nT3,T1,0\n"),
                            {"T1": 0, "T2": 1})
    assert err.value.code == "protocol_file_invalid"
    with pytest.raises(InvalidInput, match="cannot read") as err:
        read_pairs(tmp_path / "absent.csv", INDEX)
    assert err.value.code == "protocol_file_invalid"
