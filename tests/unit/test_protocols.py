"""Protocol tables of a challenge TOML: the five kinds, and a clear error for each bad field."""

from __future__ import annotations

from fractions import Fraction

import pytest

from mfr.errors import InvalidInput
from mfr.protocols import parse_protocol


def test_each_kind_reads_its_fields():
    lfw = parse_protocol({"id": "lfw", "kind": "pairs", "pairs": "lfw.csv",
                          "metric": "accuracy"})
    assert (lfw.rate, lfw.folds, lfw.far, lfw.files) == ("accuracy", 10, None, ("lfw.csv",))
    listed = parse_protocol({"id": "p", "kind": "pairs", "pairs": "p.csv", "far": 1e-3})
    assert (listed.rate, listed.far) == ("tar", Fraction(1, 1000))
    ijbc = parse_protocol({"id": "ijbc", "kind": "templates", "templates": "t.csv",
                           "pairs": "tp.csv", "far": 1e-5})
    assert (ijbc.rate, ijbc.files, ijbc.far) == ("tar", ("tp.csv", "t.csv"), Fraction(1, 10**5))
    search = parse_protocol({"id": "1n", "kind": "identification", "gallery": "enrolled",
                             "probe": "search", "fpir": 1e-3})
    assert (search.rate, search.fpir, search.far, search.files) == (
        "tpir", Fraction(1, 1000), None, ())
    old = parse_protocol({"id": "mask", "kind": "cross", "probe": "mask", "gallery": "nonmask",
                          "far": 1e-4})
    assert (old.rate, old.far_text) == ("tar", "0.0001")


@pytest.mark.parametrize("table, field", [
    ({"kind": "templates3"}, "kind must be one of all, cross, pairs, templates, identification"),
    ({"kind": "pairs", "pairs": "p.csv", "metric": "auc"}, "metric must be one of tar, accuracy"),
    ({"kind": "pairs", "pairs": "p.csv", "far": 0}, "far must be in (0, 1)"),
    ({"kind": "pairs", "pairs": "p.csv", "far": 1.0}, "far must be in (0, 1)"),
    ({"kind": "pairs", "pairs": "p.csv"}, "'pairs' needs far"),
    ({"kind": "pairs", "far": 1e-3}, "'pairs' needs pairs"),
    ({"kind": "pairs", "pairs": "../outside.csv", "far": 1e-3}, "pairs must be a path inside"),
    ({"kind": "pairs", "pairs": "p.csv", "metric": "accuracy", "folds": 1}, "folds must be"),
    ({"kind": "pairs", "pairs": "p.csv", "metric": "accuracy", "folds": 2.5}, "folds must be"),
    ({"kind": "templates", "pairs": "p.csv", "far": 1e-4}, "'templates' needs templates"),
    ({"kind": "identification", "gallery": "g", "probe": "p", "fpir": 2}, "fpir must be in"),
    ({"kind": "identification", "gallery": "g", "probe": "p", "fpir": "x"}, "expected a number"),
    ({"kind": "identification", "gallery": "g", "fpir": 1e-3}, "needs probe tag"),
    ({"kind": "identification", "gallery": "g", "probe": "g", "fpir": 1e-3}, "different tags"),
    ({"kind": "all", "far": 1e-6}, "needs tag"),
])
def test_a_bad_field_is_challenge_invalid_naming_the_protocol_and_the_field(table, field):
    with pytest.raises(InvalidInput) as err:
        parse_protocol({"id": "bad-one", **table})
    assert err.value.code == "challenge_invalid"
    assert err.value.message.startswith("protocol 'bad-one': ")
    assert field in err.value.message, err.value.message


def test_the_built_in_mfr_ongoing_challenge_is_iccv21_plus_the_successors_protocols():
    from importlib import resources

    from cli.stack.testsets import needs_protocol_files
    from mfr.challenge import load_challenge
    from mfr.testset.synth_protocols import ONGOING_PROTOCOLS_TOML

    text = resources.files("mfr.builtin").joinpath("mfr-ongoing.toml").read_text("utf-8")
    assert text.endswith(ONGOING_PROTOCOLS_TOML)  # the synthetic files' protocols, verbatim
    ongoing, iccv = load_challenge("mfr-ongoing"), load_challenge("iccv21-mfr")
    assert ongoing.protocols[:7] == iccv.protocols and ongoing.tracks == iccv.tracks
    assert [(p.id, p.rate) for p in ongoing.protocols[7:]] == [
        ("lfw", "accuracy"), ("cfp-fp", "accuracy"), ("agedb-30", "accuracy"),
        ("ijbc-1e-4", "tar"), ("ijbc-1e-5", "tar"), ("mr-1n", "tpir")]
    assert ongoing.closes is None  # ongoing: always open
    assert needs_protocol_files("mfr-ongoing") and not needs_protocol_files(None)


@pytest.mark.parametrize("pid", ["rank", "submitted_at"])
def test_a_protocol_id_that_is_a_leaderboard_export_column_is_refused(pid):
    """The CSV export has a column per protocol id beside its own: a protocol called "rank"
    would make two "rank" columns."""
    import tomllib
    from importlib import resources

    from mfr.challenge import parse_challenge

    data = tomllib.loads(resources.files("mfr.builtin").joinpath("iccv21-mfr.toml")
                         .read_text("utf-8"))
    weights = data["ranking"]["weights"]

    def rename(old: str, new: str) -> None:
        data["protocols"][0]["id"] = new
        data["ranking"]["weights"] = {new if k == old else k: v for k, v in weights.items()}

    first = data["protocols"][0]["id"]
    rename(first, pid)
    with pytest.raises(InvalidInput) as err:
        parse_challenge(data, "test")
    assert err.value.code == "challenge_invalid" and repr(pid) in str(err.value)
    rename(first, f"{pid}-2")  # anything else is fine
    assert parse_challenge(data, "test").protocols[0].id == f"{pid}-2"
