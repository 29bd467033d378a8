"""Faults of distributed scoring, with real processes: nothing lost, nothing counted twice.

A worker SIGKILLed in the middle of a tile: the tile is handed back when the
worker's heartbeat lapses and the job ends with the offline number. A worker
asked to stop (SIGTERM) hands its tile back at once. A tile finished twice
counts once. A tile that always fails fails its job with a reason.
"""

from __future__ import annotations

import json
import signal
import tomllib
from threading import Event

import pytest

from mfr.challenge import parse_challenge
from mfr.common.v1 import types_pb2
from tests.worker_support import wait_for

from .test_scorer_service_support import (  # noqa: F401 - the fixtures are used by name
    CHALLENGE_TOML,
    TILE_SIZE,
    as_offline,
    job_scores_as_offline,
    offline_reference_fixture,
    queue_tasks,
    scoring_fixture,
    workers_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def running_tile(pool, job_id: str) -> dict | None:
    """The job's tile task a worker holds now, if any."""
    held = [t for t in queue_tasks(pool, job_id)
            if t["task_name"] == "scorer.tile" and t["status"] == "doing"]
    return held[0] if held else None


def tile_row(pool, job_id: str, ordinal: int) -> dict:
    with pool.connection() as conn:
        return conn.execute("SELECT * FROM scoring_tiles WHERE job_id = %s AND round = 1"
                            " AND ordinal = %s", (job_id, ordinal)).fetchone()


def test_a_worker_killed_mid_tile_loses_nothing(scoring):
    api, workers, pool = scoring["api"], scoring["workers"], scoring["pool"]
    workers.start("victim", MFR_SCORER_FAULT_TILE_DELAY_S="300")  # every tile takes 5 minutes
    api.submit("killed", scoring["features"], scoring["testset_id"])
    held = wait_for(lambda: running_tile(pool, "killed"), what="the victim to take a tile")
    workers.kill("victim")  # SIGKILL: no clean-up, its task stays "doing"
    workers.start_many(2, prefix="s")
    job, _ = api.wait("killed", timeout=90)
    assert job.state == types_pb2.JOB_STATE_DONE, job.error
    assert as_offline(api.result(job)) == scoring["offline"]
    assert job_scores_as_offline(job) == scoring["offline"]["protocols"]
    lost = tile_row(pool, "killed", held["args"]["ordinal"])
    assert lost["failures"] == 1 and "worker lost" in lost["last_error"]
    assert lost["done_by"] in ("s0", "s1")
    assert workers_of(pool, "killed") == {"s0", "s1"}


def test_a_tile_past_its_deadline_is_taken_back_while_its_worker_still_beats(scoring):
    """A tile stuck in a live worker (its heartbeat goes on, so no one sees it stalled) is
    abandoned at the task deadline, counted as a failure, and redone."""
    api, workers, pool = scoring["api"], scoring["workers"], scoring["pool"]
    stuck = workers.start("stuck", MFR_SCORER_FAULT_TILE_DELAY_S="300",
                          MFR_SCORER_TASK_DEADLINE_S="2", MFR_SCORER_ATTEMPTS="50")
    api.submit("deadline", scoring["features"], scoring["testset_id"])
    held = wait_for(lambda: running_tile(pool, "deadline"), what="a tile to be taken")
    ordinal = held["args"]["ordinal"]
    late = wait_for(lambda: (row := tile_row(pool, "deadline", ordinal))["failures"] and row,
                    timeout=30, what="the deadline to take the tile back")
    assert "deadline of 2 s" in late["last_error"] and stuck.poll() is None
    workers.stop_all()
    workers.start("healthy")
    job, _ = api.wait("deadline", timeout=90)
    assert job.state == types_pb2.JOB_STATE_DONE, job.error
    assert as_offline(api.result(job)) == scoring["offline"]


def test_sigterm_hands_the_running_tile_back_at_once(scoring):
    api, workers, pool = scoring["api"], scoring["workers"], scoring["pool"]
    leaving = workers.start("leaving", MFR_SCORER_FAULT_TILE_DELAY_S="300",
                            MFR_SHUTDOWN_GRACE_S="1")
    api.submit("restarted", scoring["features"], scoring["testset_id"])
    held = wait_for(lambda: running_tile(pool, "restarted"), what="a tile to be taken")
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=20) == 0
    back = next(t for t in queue_tasks(pool, "restarted") if t["id"] == held["id"])
    assert back["status"] == "todo" and back["attempts"] == 1  # handed back, not stalled
    assert tile_row(pool, "restarted", held["args"]["ordinal"])["failures"] == 0
    workers.start("next")
    job, _ = api.wait("restarted")
    assert job.state == types_pb2.JOB_STATE_DONE, job.error
    assert as_offline(api.result(job)) == scoring["offline"]


def test_a_tile_that_always_fails_fails_the_job_with_a_reason(scoring):
    from services.scorer.engine import ImageLabels, make_plan, normalise
    from services.scorer.engine.backends.cpu import CpuBackend

    data = scoring["data"]
    challenge = parse_challenge(tomllib.loads(CHALLENGE_TOML))
    plan = make_plan(normalise(data.features), ImageLabels.from_manifest(data.manifest),
                     challenge.protocols, CpuBackend(), tile_size=TILE_SIZE)
    broken = plan.tiles[5].key
    api, workers, pool = scoring["api"], scoring["workers"], scoring["pool"]
    workers.start_many(2, MFR_SCORER_FAULT_FAIL_TILE=broken, MFR_SCORER_ATTEMPTS="3")
    api.submit("doomed", scoring["features"], scoring["testset_id"])
    job, _ = api.wait("doomed", timeout=60)
    assert job.state == types_pb2.JOB_STATE_FAILED
    assert job.error_code == "tile_failed"
    assert f"tile {broken} (round 1) failed 3 times" in job.error
    assert "injected failure" in job.error and not job.scores
    assert tile_row(pool, "doomed", 5)["failures"] == 3
    # Nothing loops: a tile the other worker was scoring when the job failed ends, and then
    # no task of the job is left to run.
    tasks = wait_for(lambda: (ts := queue_tasks(pool, "doomed"))
                     and not [t for t in ts if t["status"] in ("todo", "doing")] and ts,
                     what="the job's tasks to settle")
    assert [t["status"] for t in tasks if t["args"].get("ordinal") == 5] == ["failed"]


def test_a_tile_finished_twice_counts_once(db_pool, object_store, tmp_path, offline_reference):
    """Two workers both past the 'already done?' check: the second completion is a no-op."""
    from services.scorer.config import ScorerTuning
    from services.scorer.control import JobControl
    from services.scorer.engine.backends import select_backend
    from services.scorer.inputs import JobInputs
    from services.scorer.jobs import JobBook, JobRequest
    from services.scorer.queue import Deferrer
    from services.scorer.worker.context import WorkerContext
    from services.scorer.worker.coordinator import Coordinator
    from services.scorer.worker.tilework import TileWork

    from .test_scorer_service_support import job_data, store_features, store_testset

    data = job_data()
    features = store_features(object_store, data.features)
    book, deferrer = JobBook(db_pool), Deferrer(db_pool)
    settings = ScorerTuning(scorer_tile_size=TILE_SIZE)
    inputs = JobInputs(object_store, tmp_path / "cache")
    backend = select_backend("cpu")
    context = WorkerContext(db_pool, book, deferrer, object_store, inputs, backend, settings)
    coordinator = Coordinator(context)
    tiles = TileWork(context, "here")
    service = JobControl(db_pool, book, deferrer, object_store.buckets.features)
    service.submit(JobRequest("twice", features.bucket, features.key, features.sha256,
                              store_testset(object_store, data, tmp_path), CHALLENGE_TOML))
    coordinator.plan_job(Event(), "twice")
    total = book.round("twice", 1)["tiles_total"]
    assert book.tiles_waiting() == total  # the autoscaling gauge
    outcomes = [tiles.score(Event(), "twice", 1, i) for i in range(total)]
    assert outcomes.count("round complete") == 1 and outcomes[-1] == "round complete"
    assert tiles.score(Event(), "twice", 1, 0) == "already done"
    first = book.tile("twice", 1, 0)
    with db_pool.connection() as conn:
        assert not book.complete_tile(conn, first, "late", "sha", 0.0, 0.0)
    done = book.round("twice", 1)
    assert done["tiles_done"] == done["tiles_total"] == total
    assert sum(t["task_name"] == "scorer.merge" for t in queue_tasks(db_pool, "twice")) == 1
    coordinator.merge_round(Event(), "twice", 1)
    coordinator.merge_round(Event(), "twice", 1)  # a merge run twice: the second does nothing
    view = service.get("twice")
    assert view.state == "done" and view.tiles_done == total
    assert book.tiles_waiting() == 0
    result = object_store.get_bytes(view.row["result_bucket"], view.row["result_key"])
    assert as_offline(json.loads(result)) == offline_reference
