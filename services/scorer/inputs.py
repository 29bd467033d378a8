"""What a scoring job reads, fetched once per worker: features, labels, protocol files, plans.

Features are downloaded once per job into the cache directory, checked, and
normalised (the engine's canonical normalisation: every worker gets the same
bits); the normalised matrix stays in memory for the job's later tiles and the
download is removed. Plans are fetched per round. Keys in the results bucket
are deterministic (job, round, tile), so a tile scored twice writes the same
object, and anyone can find a job's pieces:

    scoring/<job>/round-<r>/plan-<digest>.npz
    scoring/<job>/round-<r>/tile-<ordinal>.npz
    scoring/<job>/listed.json       the pairs, templates and identification results
    scoring/<job>/result.json

A plan's key carries its digest: a plan step run twice (a worker thought lost
was only slow) on another backend may choose other floors, hence another
plan; only the one whose round was recorded is ever read (its key is in
scoring_rounds), the other is an orphan, never a silent replacement.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from mfr.challenge import Challenge, challenge_from_text
from mfr.errors import InvalidInput, NotFound
from mfr.storage import ObjectStore
from mfr.testset.format import TestSet
from mfr.testset.store import fetch_testset
from services.scorer.engine import (
    LISTED_KINDS,
    Embeddings,
    ImageLabels,
    ProtocolFiles,
    ScoringPlan,
    check_features,
    normalise,
    read_protocol_files,
)


def plan_key(job_id: str, plan: ScoringPlan) -> str:
    return f"scoring/{job_id}/round-{plan.round}/plan-{plan.digest}.npz"


def partial_key(job_id: str, round_number: int, ordinal: int) -> str:
    return f"scoring/{job_id}/round-{round_number}/tile-{ordinal:06d}.npz"


def result_key(job_id: str) -> str:
    return f"scoring/{job_id}/result.json"


def listed_key(job_id: str) -> str:
    return f"scoring/{job_id}/listed.json"


def job_challenge(job: dict) -> Challenge:
    """The job's challenge: its TOML, or the built-in one when empty."""
    return challenge_from_text(job["challenge_toml"], f"of job {job['id']}")


class JobInputs:
    """A worker's cache of normalised features (the last few jobs) and round plans."""

    def __init__(self, store: ObjectStore, cache_root: Path, cached_jobs: int = 2,
                 threads: int | None = None) -> None:
        self.store = store
        self.cache_root = Path(cache_root)
        self.cached_jobs = cached_jobs
        self.threads = threads  # of the normalisation; None: the cores this process may use
        self._embeddings: OrderedDict[str, Embeddings] = OrderedDict()
        self._plans: OrderedDict[str, ScoringPlan] = OrderedDict()
        self._lock = threading.Lock()

    # --- features ---------------------------------------------------------------------
    def embeddings(self, job: dict, image_count: int) -> Embeddings:
        """The job's normalised features (downloaded, checked against the test set's
        ``image_count`` and normalised on first use)."""
        with self._lock:
            cached = self._embeddings.get(job["id"])
            if cached is not None:
                self._embeddings.move_to_end(job["id"])
                return cached
            features_file = self._download_features(job)
            try:
                features = _load_features(features_file)
                check_features(features, image_count)
                emb = normalise(features, threads=self.threads)
                del features
            finally:
                features_file.unlink(missing_ok=True)
            self._embeddings[job["id"]] = emb
            while len(self._embeddings) > self.cached_jobs:
                self._embeddings.popitem(last=False)
            return emb

    def _download_features(self, job: dict) -> Path:
        folder = self.cache_root / "features"
        folder.mkdir(parents=True, exist_ok=True)
        # Unique per process: several workers may share one cache directory.
        path = folder / f"{job['id']}.{os.getpid()}.npy"
        try:
            self.store.get_file(job["features_bucket"], job["features_key"], path,
                                expect_sha256=job["features_sha256"] or None)
        except NotFound as exc:
            code = "features_corrupt" if exc.code == "object_corrupt" else "features_not_found"
            raise NotFound(f"features {job['features_bucket']}/{job['features_key']}: "
                           f"{exc.message}", code=code) from None
        return path

    # --- labels and protocol files -----------------------------------------------------
    def labels(self, testset_id: str, challenge: Challenge) -> ImageLabels:
        """Identities and the challenge's tags from the test set's manifest (no images)."""
        return self.labels_and_files(testset_id, challenge)[0]

    def labels_and_files(self, testset_id: str, challenge: Challenge
                         ) -> tuple[ImageLabels, dict[str, ProtocolFiles]]:
        """The labels, and the parsed files of the challenge's ``pairs``/``templates``
        protocols (read beside the manifest, each checked against the test set's recorded
        sha256): a bad file is ``protocol_file_invalid`` (or the test set's code)."""
        testset = self._testset(testset_id)
        manifest = testset.manifest
        tags = {t for p in challenge.protocols for t in (p.tag, p.probe, p.gallery) if t}
        labels = ImageLabels.from_manifest(manifest, tags)
        listed = [p for p in challenge.protocols if p.kind in LISTED_KINDS]
        if not listed:
            return labels, {}
        for protocol in listed:
            for name in protocol.files:
                testset.protocol_file(name)  # present in this test set, and intact
        index = {path: row for row, path in enumerate(manifest.paths)}
        return labels, read_protocol_files(listed, testset.root, index)

    def _testset(self, testset_id: str) -> TestSet:
        """The test set's manifest and protocol files (no shard), fetched into the cache."""
        try:
            testset = fetch_testset(self.store, testset_id, self.cache_root, shards=())
            _ = testset.manifest  # read (and checked) here, once
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInput(f"test set {testset_id}: {exc}", code="testset_invalid") from None
        return testset

    # --- listed results -------------------------------------------------------------
    def store_listed(self, job_id: str, scores: dict[str, dict]) -> None:
        """The job's pairs/templates/identification scores, until the final merge joins
        them (the key is the job's: a plan step run twice writes the same scores)."""
        data = json.dumps(scores).encode()
        self.store.put_bytes(self.store.buckets.results, listed_key(job_id), data)

    def listed(self, job_id: str) -> dict[str, dict]:
        return json.loads(self.store.get_bytes(self.store.buckets.results, listed_key(job_id)))

    # --- plans ------------------------------------------------------------------------
    def plan(self, key: str) -> ScoringPlan:
        """The plan stored at ``key`` (the one its round recorded), fetched once."""
        with self._lock:
            cached = self._plans.get(key)
            if cached is None:
                cached = ScoringPlan.from_bytes(self.store.get_bytes(self.store.buckets.results,
                                                                     key))
                self._remember(key, cached)
            self._plans.move_to_end(key)
            return cached

    def store_plan(self, job_id: str, plan: ScoringPlan) -> str:
        """Upload a new plan (kept in the cache too); returns its key."""
        key = plan_key(job_id, plan)
        self.store.put_bytes(self.store.buckets.results, key, plan.to_bytes())
        with self._lock:
            self._remember(key, plan)
        return key

    def _remember(self, key: str, plan: ScoringPlan) -> None:
        self._plans[key] = plan
        while len(self._plans) > 2 * self.cached_jobs:
            self._plans.popitem(last=False)


def _load_features(path: Path) -> np.ndarray:
    try:
        # mmap: normalisation reads the matrix once, in chunks, never copying it whole.
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"features are not a .npy array: {exc}",
                           code="features_invalid") from None
