"""The scorer service computes the other protocol kinds (pairs, templates, 1:N) exactly.

A synthetic MFR-Ongoing test set (``synth_testset(..., protocols=True)``: LFW-,
CFP-FP-, AgeDB-like pair lists, IJB-C-like templates, a 1:N split) is stored in
real S3, scored by 1 and 3 real worker processes against real PostgreSQL, and
every protocol's result, in the result JSON and in the Job message, equals
``mfr score --json --roc`` on the same files, field by field. A bad protocol
file ends the job ``failed`` with the reader's code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mfr.challenge import parse_challenge
from mfr.common.v1 import types_pb2
from mfr.manifest import Manifest
from mfr.ranking import wire
from mfr.testset.format import INFO_NAME, MANIFEST_NAME, TestSet, TestSetWriter
from mfr.testset.synth import synth_testset
from mfr.testset.synth_protocols import GALLERY_TAG, ONGOING_PROTOCOLS_TOML, PROBE_TAG
from tests.worker_support import Workers

from .test_scorer_service_support import (
    WORKER_ENV,
    start_api,
    store_features,
    workers_of,
)

pytestmark = pytest.mark.integration

# all/cross protocols around the MFR-Ongoing fragment (its kinds land between them),
# a TAR pair list and the LFW blocks variant: every kind, in an interleaved order.
CHALLENGE_TOML = """
id = "scorer-kinds-test"
title = "distributed scoring of every protocol kind"
[ranking]
weights = { mr-all = 0.4, lfw = 0.2, ijbc-1e-4 = 0.2, mr-1n = 0.1, lfw-tar = 0.1 }
[[protocols]]
id = "mr-all"
kind = "all"
tag = "mr"
far = 1e-3
""" + ONGOING_PROTOCOLS_TOML + """
[[protocols]]
id = "lfw-tar"
kind = "pairs"
pairs = "lfw_pairs.csv"
far = 1e-2

[[protocols]]
id = "lfw-blocks"
kind = "pairs"
pairs = "lfw_pairs_blocks.csv"
metric = "accuracy"

[[protocols]]
id = "ijbc-all"
kind = "all"
tag = "ijbc"
far = 1e-3
"""
CHALLENGE = parse_challenge(tomllib.loads(CHALLENGE_TOML))
# What the service adds to `mfr score --json`'s fields of a protocol.
SERVICE_ONLY = {"kind", "rate", "rate_exact", "tar_exact", "roc", "rounds", "candidates"}


def features_for(manifest: Manifest, dim: int = 24, seed: int = 11) -> np.ndarray:
    """Identity centres plus noise; some NaN rows (invalid) and exact duplicates (ties),
    outside the 1:N split (a copied image of another identity would be a perfect
    non-mate and leave no hit)."""
    rng = np.random.default_rng(seed)
    identity = manifest.identity_codes
    centres = rng.standard_normal((int(identity.max()) + 1, dim))
    features = (centres[identity] + 0.8 * rng.standard_normal((len(identity), dim)))
    features = features.astype(np.float32)
    features[rng.choice(len(identity), 5, replace=False)] = np.nan
    outside = [row for row, tags in enumerate(manifest.tags)
               if not tags & {GALLERY_TAG, PROBE_TAG}]
    copies = rng.choice(outside, 10, replace=False)
    features[copies[5:]] = features[copies[:5]]
    return features


def upload_labels(store, testset: TestSet) -> None:
    """What a scorer reads of a test set: testset.json, the manifest, the protocol files."""
    for name in (MANIFEST_NAME, *testset.protocol_files, INFO_NAME):
        store.put_file(store.buckets.testsets, f"{testset.id}/{name}", testset.root / name)


def offline(manifest: Path, features: Path, challenge: Path) -> dict:
    """``mfr score --json --roc``: the numbers the service must give."""
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "score", "--json", "--roc", "--backend", "cpu",
         "--challenge", str(challenge), "--manifest", str(manifest), "--features",
         str(features)], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def ongoing(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("kinds")
    testset = synth_testset(folder / "ts", scale=0.0003, seed=2, shard_size=8192,
                            protocols=True)
    features = features_for(testset.manifest)
    np.save(folder / "features.npy", features)
    (folder / "challenge.toml").write_text(CHALLENGE_TOML)
    reference = offline(testset.manifest_path, folder / "features.npy",
                        folder / "challenge.toml")
    return {"testset": testset, "features": features, "offline": reference}


def test_reference_covers_every_kind(ongoing):
    kinds = {p.kind for p in CHALLENGE.protocols}
    assert kinds == {"all", "pairs", "templates", "identification"}
    assert list(ongoing["offline"]["protocols"]) == [p.id for p in CHALLENGE.protocols]


def test_one_and_three_workers_equal_mfr_score_for_every_kind(
        ongoing, db_pool, object_store, service_env, tmp_path):
    upload_labels(object_store, ongoing["testset"])
    features = store_features(object_store, ongoing["features"])
    api = start_api(db_pool, object_store)
    workers = Workers(service_env, tmp_path / "workers", "scorer-worker", WORKER_ENV)
    reference = ongoing["offline"]
    try:
        for count in (1, 3):
            while len(workers.processes) < count:
                workers.start(f"w{len(workers.processes)}")
            job_id = f"kinds-{count}"
            api.submit(job_id, features, ongoing["testset"].id, challenge=CHALLENGE_TOML)
            job, seen = api.wait(job_id, timeout=180)
            assert job.state == types_pb2.JOB_STATE_DONE, job.error
            check_result_document(api.result(job), reference)
            check_job_message(job, reference)
            assert workers_of(db_pool, job_id) == {f"w{i}" for i in range(count)}
            assert job.progress.done == job.progress.total > 3
            done = [m.progress.done for m in seen]
            assert done == sorted(done)
    finally:
        workers.stop_all()
        api.close()


def check_result_document(result: dict, reference: dict) -> None:
    protocols = result["protocols"]
    assert list(protocols) == [p.id for p in CHALLENGE.protocols]  # the challenge's order
    for protocol in CHALLENGE.protocols:
        entry = protocols[protocol.id]
        fields = {k: v for k, v in entry.items() if k not in SERVICE_ONLY}
        assert fields == reference["protocols"][protocol.id], protocol.id
        assert (entry["kind"], entry["rate"]) == (protocol.kind, protocol.rate)
        exact = Fraction(entry["rate_exact"])
        assert float(exact) == reference["protocols"][protocol.id][protocol.rate]
        if protocol.rate == "tar":  # the exact ROC points too, listed TAR kinds included
            assert entry["roc"] == reference["roc"][protocol.id], protocol.id
            assert entry["tar_exact"] == entry["rate_exact"]
    assert set(reference["roc"]) == {p.id for p in CHALLENGE.protocols if p.rate == "tar"}
    assert result["ranking_score"] == reference["ranking_score"]
    ranking = CHALLENGE.ranking_score({pid: Fraction(e["rate_exact"])
                                       for pid, e in protocols.items()})
    assert result["ranking_exact"] == f"{ranking.numerator}/{ranking.denominator}"


def check_job_message(job, reference: dict) -> None:
    """The Job's scores: one typed result per protocol, the member its kind calls for,
    decoding to exactly ``mfr score --json``'s fields of the protocol."""
    members = {"tar": "tar", "accuracy": "accuracy", "tpir": "identification"}
    assert [s.protocol_id for s in job.scores] == [p.id for p in CHALLENGE.protocols]
    assert job.ranking_score == reference["ranking_score"]
    for score, protocol in zip(job.scores, CHALLENGE.protocols):
        expected = reference["protocols"][protocol.id]
        member = "templates" if protocol.kind == "templates" else members[protocol.rate]
        assert score.WhichOneof("result") == member, protocol.id
        decoded = wire.from_proto(score)
        kind_fields = {k: decoded[k] for k in expected}
        assert kind_fields == expected, protocol.id
        assert (score.kind, score.rate) == (protocol.kind, protocol.rate)
        assert float(Fraction(score.rate_exact)) == expected[protocol.rate]
        if protocol.rate == "tar":
            assert decoded["tar_exact"] == score.rate_exact
            assert decoded["roc"] == reference["roc"][protocol.id]


# --- protocol file errors --------------------------------------------------------------
BAD_FILES = {
    "unknown.csv": b"first,second,same\nimg/000000.png,img/nowhere.png,1\n",
    "seven.csv": b"first,second,same\n" + b"".join(
        f"img/{i:06d}.png,img/{i + 1:06d}.png,{i % 2}\n".encode() for i in range(7)),
}


def bad_challenge(pairs: str, metric: str = "tar") -> str:
    rate = 'metric = "accuracy"' if metric == "accuracy" else "far = 1e-2"
    return f"""
id = "bad-files"
[[protocols]]
id = "all"
kind = "all"
tag = "t"
far = 1e-2
[[protocols]]
id = "listed"
kind = "pairs"
pairs = "{pairs}"
{rate}
"""


def test_a_bad_protocol_file_fails_the_job_with_the_readers_code(
        db_pool, object_store, service_env, tmp_path):
    rng = np.random.default_rng(5)
    identity = np.repeat(np.arange(40), 5)
    manifest = Manifest(tuple(f"img/{i:06d}.png" for i in range(200)),
                        tuple(f"p{i}" for i in identity), (frozenset({"t"}),) * 200)
    with TestSetWriter(tmp_path / "testset", shard_size=200) as writer:
        writer.add(np.zeros((200, 112, 112, 3), dtype=np.uint8))
        for name, data in BAD_FILES.items():
            writer.add_protocol_file(name, data)
        testset = writer.finish(manifest, name="bad protocol files")
    upload_labels(object_store, testset)
    features = store_features(object_store, rng.standard_normal((200, 8)).astype(np.float32))
    api = start_api(db_pool, object_store)
    workers = Workers(service_env, tmp_path / "workers", "scorer-worker", WORKER_ENV)
    cases = {
        "unknown-path": (bad_challenge("unknown.csv"), "protocol_file_invalid"),
        # 7 pairs do not split into 10 folds: the accuracy reader's challenge error
        "folds": (bad_challenge("seven.csv", "accuracy"), "challenge_invalid"),
        "not-in-testset": (bad_challenge("absent.csv"), "protocol_file_missing"),
    }
    try:
        workers.start("w0")
        for job_id, (challenge, _code) in cases.items():
            api.submit(job_id, features, testset.id, challenge=challenge)
        for job_id, (_challenge, code) in cases.items():
            job, _ = api.wait(job_id)
            assert job.state == types_pb2.JOB_STATE_FAILED, job_id
            assert job.error_code == code, (job_id, job.error)
            assert not job.scores and not job.result.key
        with db_pool.connection() as conn:  # failed before any tile was planned
            rounds = conn.execute("SELECT count(*) AS n FROM scoring_rounds").fetchone()["n"]
        assert rounds == 0
    finally:
        workers.stop_all()
        api.close()
