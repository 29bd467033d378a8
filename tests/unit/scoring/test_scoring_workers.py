"""Tiles shared among simulated workers: the results never depend on the split.

Each simulated worker gets the plan as bytes, normalises the features itself,
scores its share of the tiles with its own backend and ships partials as
bytes; the coordinator merges them in whatever order they arrive.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mfr.errors import Conflict, InvalidInput
from services.scorer.engine import make_plan, merge, normalise, run_rounds, score_tile
from services.scorer.engine.backends.cpu import CpuBackend
from services.scorer.engine.floors import FloorSettings
from services.scorer.engine.plan import ScoringPlan
from services.scorer.engine.tiles import IMPOSTOR, TilePartial

from .reference import MR_PROTOCOLS, brute_force, make_challenge, mr_like

SAMPLED = FloorSettings(expected_min=8, sample_min=2_000, sample_hits=8)


def distributed(features, workers: int, seed: int):
    """A pool of `workers` that each take every workers-th tile, plan and partials as bytes."""
    rng = np.random.default_rng(seed)

    def run(plan: ScoringPlan):
        plan_bytes = plan.to_bytes()
        partials = []
        for worker in range(workers):
            worker_plan = ScoringPlan.from_bytes(plan_bytes)
            worker_emb = normalise(features)
            backend = CpuBackend()
            for tile in worker_plan.tiles[worker::workers]:
                partials.append(score_tile(worker_plan, worker_emb, tile, backend).to_bytes())
        rng.shuffle(partials)  # arrival order is arbitrary
        return [TilePartial.from_bytes(data) for data in partials]

    return run


def results_as_json(results):
    return {pid: (r.tar, r.threshold, r.genuine, r.impostor, r.genuine_accepted,
                  r.impostors_accepted, r.roc) for pid, r in results.items()}


@pytest.mark.parametrize("force_retry", [False, True])
def test_one_two_and_five_workers_give_identical_results(force_retry):
    features, labels = mr_like(1000, 24, 20)
    features[[5, 6]] = np.nan
    challenge = make_challenge(MR_PROTOCOLS, {"mask": 0.25, "mr-all": 0.75})
    emb = normalise(features)
    plan = make_plan(emb, labels, challenge.protocols, CpuBackend(), tile_size=96,
                     floor_settings=SAMPLED)
    assert sum(t.kind == IMPOSTOR for t in plan.tiles) > 20
    if force_retry:
        plan = replace(plan, protocols={pid: replace(p, floor=0.9)
                                        for pid, p in plan.protocols.items()})
    outcomes = []
    for workers in (1, 2, 5):
        results, rounds, _ = run_rounds(plan, None, None, workers=distributed(features, workers,
                                                                              workers))
        outcomes.append((results_as_json(results), rounds))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert (outcomes[0][1] > 1) == force_retry
    want = brute_force(features, labels, challenge)["protocols"]
    for pid, (tar, threshold, *_rest) in outcomes[0][0].items():
        assert float(tar) == want[pid]["tar"]
        assert threshold == want[pid]["threshold"]


def test_a_tile_gives_the_same_bytes_whoever_scores_it():
    features, labels = mr_like(400, 16, 21)
    challenge = make_challenge(MR_PROTOCOLS)
    plan = make_plan(normalise(features), labels, challenge.protocols, CpuBackend(),
                     tile_size=64, floor_settings=SAMPLED)
    other = ScoringPlan.from_bytes(plan.to_bytes())
    assert other.digest == plan.digest
    for tile in plan.tiles[::7]:
        a = score_tile(plan, normalise(features), tile, CpuBackend()).to_bytes()
        b = score_tile(other, normalise(features), tile, CpuBackend()).to_bytes()
        assert a == b


def test_the_tile_grid_depends_on_the_data_only():
    features, labels = mr_like(500, 16, 22)
    challenge = make_challenge(MR_PROTOCOLS)
    one = make_plan(normalise(features), labels, challenge.protocols, CpuBackend(),
                    tile_size=64, floor_settings=SAMPLED)
    two = make_plan(normalise(features), labels, challenge.protocols, CpuBackend(),
                    tile_size=64, floor_settings=SAMPLED)
    assert one.tiles == two.tiles and one.digest == two.digest
    # Every pair of every universe is in exactly one impostor tile.
    for universe in one.universes:
        covered = sum(one.tile_pairs(t) for t in one.tiles
                      if t.kind == IMPOSTOR and t.universe == universe.index)
        assert covered == universe.pairs


def test_merge_refuses_missing_duplicated_or_foreign_partials():
    features, labels = mr_like(300, 16, 23)
    challenge = make_challenge(MR_PROTOCOLS)
    emb = normalise(features)
    plan = make_plan(emb, labels, challenge.protocols, CpuBackend(), tile_size=64,
                     floor_settings=SAMPLED)
    partials = [score_tile(plan, emb, t, CpuBackend()) for t in plan.tiles]
    with pytest.raises(Conflict) as error:
        merge(plan, partials[1:])
    assert error.value.code == "partials_incomplete"
    with pytest.raises(Conflict) as error:
        merge(plan, partials + partials[:1])
    assert error.value.code == "partial_duplicate"
    foreign = replace(partials[0], plan_digest="0" * 32)
    with pytest.raises(Conflict) as error:
        merge(plan, [foreign] + partials[1:])
    assert error.value.code == "partial_mismatch"
    with pytest.raises(InvalidInput):
        TilePartial.from_bytes(b"not an npz")
