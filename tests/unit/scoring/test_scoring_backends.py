"""Backends agree to the bit: the torch path (on CUDA when present, else torch's CPU
device) gives the CPU's JSON and the CPU's canonical scores. Skipped without torch."""

from __future__ import annotations

import numpy as np
import pytest

from services.scorer.engine import score
from services.scorer.engine.backends import select_backend
from services.scorer.engine.backends.cpu import CpuBackend
from services.scorer.engine.canonical import normalise
from services.scorer.engine.floors import FloorSettings

from .reference import MR_PROTOCOLS, brute_force, make_challenge, mr_like

torch = pytest.importorskip("torch")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SAMPLED = FloorSettings(expected_min=8, sample_min=2_000, sample_hits=8)


@pytest.fixture(params=DEVICES)
def torch_backend(request):
    from services.scorer.engine.backends.gpu import TorchBackend

    return TorchBackend(request.param)


def test_canonical_scores_are_bit_identical(torch_backend):
    rng = np.random.default_rng(40)
    for dim in (5, 128, 512):
        raw = rng.standard_normal((300, dim)).astype(np.float32)
        raw[:10] *= 1e-20  # tiny values: exercises the subnormal flush
        emb = normalise(raw)
        first, second = rng.integers(0, 300, 20_000), rng.integers(0, 300, 20_000)
        cpu = CpuBackend().canonical(emb, first, second)
        other = torch_backend.canonical(emb, first, second)
        assert cpu.view(np.int64).tolist() == other.view(np.int64).tolist()


@pytest.mark.parametrize("sparse", [False, True])
def test_same_json_as_the_cpu(torch_backend, sparse):
    features, labels = mr_like(900, 32, 41, sparse=sparse)
    features[[1, 2]] = np.nan
    challenge = make_challenge(MR_PROTOCOLS, {"mask": 0.25, "mr-all": 0.75})
    cpu = score(features, labels, challenge, backend=CpuBackend(), tile_size=128,
                floor_settings=SAMPLED)
    other = score(features, labels, challenge, backend=torch_backend, tile_size=128,
                  floor_settings=SAMPLED)
    assert other.to_json(roc=True) == cpu.to_json(roc=True)
    assert cpu.to_json() == brute_force(features, labels, challenge)


def test_auto_picks_the_gpu_only_when_cuda_is_there(monkeypatch):
    monkeypatch.delenv("MFR_SCORER_BACKEND", raising=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert select_backend().name == expected
    assert select_backend("cpu").name == "cpu"
