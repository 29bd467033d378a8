"""A participant's journey through the whole stack (real processes, real servers, real models).

One stack for the module (``mfr up``'s supervisor): a challenge whose window is
open at the injected time, a tiny synthetic test set, the gateway's clock read
from a file (``MFR_FAKE_CLOCK_FILE`` with ``MFR_ALLOW_FAKE_CLOCK=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.journey_support import challenge_toml

pytestmark = pytest.mark.e2e

NOW = datetime(2030, 3, 10, 15, 0, tzinfo=UTC)  # inside the window below
OPENS, CLOSES = NOW - timedelta(days=5), NOW + timedelta(days=10)


@dataclass
class Journey:
    """A running stack as a participant and an organiser reach it."""

    url: str
    admin_token: str
    clock_file: Path
    models: dict[str, Path]
    env: dict[str, str]
    ranker_addr: str
    service_token: str  # internal gRPC calls (the ranker's)
    logs: Path  # one file per process, as `mfr up` writes them

    def at(self, when: datetime) -> None:
        self.clock_file.write_text(when.isoformat())

    def client(self, token: str | None = None):
        from cli.client import GatewayClient

        return GatewayClient(self.url, token)

    def mfr(self, *args: str, token: str | None = None, check: bool = True):
        env = {**os.environ, **self.env, "MFR_GATEWAY": self.url}
        if token:
            env["MFR_TOKEN"] = token
        result = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, check=False,
                                capture_output=True, text=True, timeout=600)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result


@pytest.fixture(scope="module")
def journey(tmp_path_factory, baseline_models):
    from cli.client import zip_model
    from cli.stack.ports import free_port
    from cli.stack.supervisor import Stack, StackConfig
    from cli.stack.testsets import default_testset

    root = tmp_path_factory.mktemp("journey")
    challenge = root / "challenge.toml"
    challenge.write_text(challenge_toml(opens=OPENS, closes=CLOSES))
    clock_file = root / "now.txt"
    clock_file.write_text(NOW.isoformat())
    models = {name: zip_model(baseline_models / f"{name}.onnx", root / f"{name}.zip")
              for name in ("synth-lda-100", "synth-lda-400", "synth-random")}
    from mfr.onnxzoo.hostile import batch_trap, fp16_weights

    models["float16"] = zip_model(fp16_weights(), root / "float16.zip")
    models["batch-trap"] = zip_model(batch_trap(), root / "batch-trap.zip")
    # `mfr up --embedders 2 --scorers 2`: two workers of each kind share every submission.
    stack = Stack(StackConfig(state_dir=root / "state", gateway_port=free_port(),
                              challenge=challenge, testset=default_testset(0.001),
                              scorers=2, embedders=2,
                              extra_env={"MFR_ALLOW_FAKE_CLOCK": "1",
                                         "MFR_FAKE_CLOCK_FILE": str(clock_file),
                                         "MFR_DISPATCH_WORKERS": "2",
                                         # the trap hangs: give up on it in seconds, not 5 min
                                         "MFR_VALIDATOR_TIMEOUT_S": "30"}),
                  say=lambda line: None)
    try:
        addresses = stack.start()
        yield Journey(addresses["gateway"], stack.env["MFR_ADMIN_TOKEN"], clock_file, models,
                      {"MFR_CONFIG_DIR": str(root / "config")}, stack.env["MFR_RANKER_ADDR"],
                      stack.env["MFR_SERVICE_TOKEN"], root / "state" / "logs")
    finally:
        stack.stop()


def _wait_final(api, submission_id: str, timeout: float = 300) -> dict:
    return api.follow(submission_id, interval=0.5, timeout=timeout)


def test_the_participants_journey(journey):
    j = journey
    j.at(NOW)
    # Sign up through the CLI (the token is saved), hiding the organisation.
    signed = json.loads(j.mfr("signup", "--name", "Ada", "--organisation", "Secret Lab",
                              "--hide-organisation", "--json").stdout)
    ada = j.client(signed["token"])
    # Submit through the CLI and follow it to the end.
    result = j.mfr("submit", str(j.models["synth-lda-400"]), "--track", "A", "--json")
    good = json.loads(result.stdout)
    assert good["state"] == "scored", good
    # every protocol, in the challenge's order (not jsonb's)
    assert list(good["scores"]) == ["mask", "children", "african", "caucasian", "south-asian",
                                    "east-asian", "mr-all"]
    assert 0 <= good["ranking_score"] <= 1
    board = ada.leaderboard("A")
    entry = next(e for e in board["entries"] if e["submission_id"] == good["id"])
    assert entry["participant"] == "Ada" and entry["organisation"] is None
    assert "Secret Lab" not in json.dumps(board)
    page = ada.submission(good["id"])
    assert page["validation"]["ok"] and page["roc"]["mask"] is not None

    # A model the validator rejects shows its codes, and gives its slot back.
    rejected = ada.submit(j.models["float16"], "A")
    final = _wait_final(ada, rejected["id"])
    assert final["state"] == "rejected"
    assert "weight_dtype" in [e["code"] for e in final["errors"]]
    assert ada.quota()["used"] == 1

    # Two more make three today; the fourth is refused until the next day.
    weak = ada.submit(j.models["synth-lda-100"], "A")
    ada.submit(j.models["synth-random"], "A")
    refused = j.mfr("submit", str(j.models["synth-lda-100"]), "--track", "A", "--no-follow",
                    check=False)
    assert refused.returncode == 2 and "daily_limit" in refused.stderr
    tomorrow = datetime.combine(NOW.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert ada.quota()["resets_at"] == tomorrow.isoformat()
    j.at(tomorrow + timedelta(minutes=1))
    assert ada.quota()["remaining"] == 3
    late = ada.submit(j.models["synth-lda-100"], "A")
    for sid in (weak["id"], late["id"]):
        assert _wait_final(ada, sid)["state"] == "scored"

    # Set Public: the weaker one becomes the entry shown.
    ada.set_public(weak["id"])
    shown = [e["submission_id"] for e in ada.leaderboard("A")["entries"]
             if e["participant"] == "Ada"]
    assert shown == [weak["id"]]

    # Another participant cannot see Ada's private submissions.
    bob = j.client(j.client().signup("Bob", "Open Lab")["token"])
    from cli.client import GatewayError

    with pytest.raises(GatewayError) as err:
        bob.submission(good["id"])
    assert err.value.status == 404
    assert bob.submission(weak["id"])["participant"] == "Ada"  # the public entry is public

    # Organisers re-run a submission: it goes through the pipeline again, as run 2.
    j.mfr("admin", "--admin-token", j.admin_token, "rerun", good["id"])
    again = _wait_final(ada, good["id"])
    assert again["state"] == "scored" and again["run"] == 2
    assert again["scores"] == good["scores"]  # deterministic: same model, same test set

    # Outside the window: refused.
    j.at(CLOSES + timedelta(minutes=1))
    with pytest.raises(GatewayError) as err:
        bob.submit(j.models["synth-lda-100"], "A")
    assert err.value.status == 403 and err.value.code == "window_closed"
    j.at(OPENS - timedelta(minutes=1))
    with pytest.raises(GatewayError) as err:
        bob.submit(j.models["synth-lda-100"], "A")
    assert err.value.status == 403
    j.at(NOW)


def test_a_batch_size_trap_is_rejected_while_another_participant_is_scored(journey):
    """A model correct at the checker's batch sizes (1, 32) that hangs at the embedder's
    others: the validator runs those too and rejects it (timeout), without holding up the
    other participant, whose submission two embedder workers share."""
    j = journey
    j.at(NOW)
    trap = j.client(j.client().signup("Cy", "Trap Inc")["token"])
    good = j.client(j.client().signup("Dee", "Good Lab")["token"])
    trapped = trap.submit(j.models["batch-trap"], "A")
    fine = good.submit(j.models["synth-lda-400"], "A")
    scored = _wait_final(good, fine["id"])
    assert scored["state"] == "scored"
    assert scored["embedding"]["name"] == "onnxruntime-cpu"
    assert scored["embedding"]["batch_size"] == 32
    rejected = _wait_final(trap, trapped["id"])
    assert rejected["state"] == "rejected"
    assert [e["code"] for e in rejected["errors"]] == ["timeout"]
    assert "batch sizes the embedder uses" in rejected["errors"][0]["message"]


def test_ranker_grpc_mirrors_the_http_board(journey):
    from mfr.ranker.v1 import ranker_pb2, ranker_pb2_grpc
    from mfr.rpc.client import channel

    http_board = journey.client().leaderboard("A")
    with channel(journey.ranker_addr, journey.service_token) as ch:
        board = ranker_pb2_grpc.RankerServiceStub(ch).GetLeaderboard(
            ranker_pb2.GetLeaderboardRequest(track_id="A"), timeout=10)
    assert [e.submission_id for e in board.entries] == \
        [e["submission_id"] for e in http_board["entries"]]
    assert [e.organisation_hidden for e in board.entries] == \
        [e["organisation"] is None for e in http_board["entries"]]


# Where the trail of one submission must show, and a line of each that names what was done.
TRAIL = {"gateway": {"submission queued"}, "dispatcher": {"driving"}, "validator": {"rpc"},
         "embedder": {"job submitted"}, "embedder-worker-*": {"shard embedded", "features written"},
         "scorer": {"job submitted"}, "scorer-worker-*": {"job planned", "job done"}}


def test_one_request_id_follows_a_submission_through_every_process(journey):
    """What an operator does (docs/operations.md, "Following one submission"): take the
    upload's X-Request-Id and grep the stack's logs for it."""
    import httpx

    j = journey
    j.at(NOW)
    token = j.client().signup("Eve", "Trail Lab")["token"]
    request_id = f"e2e-trail-{os.getpid()}"
    model = j.models["synth-lda-100"]
    reply = httpx.post(f"{j.url}/v1/submissions", timeout=120, data={"track": "A"},
                       files={"file": (model.name, model.read_bytes(), "application/zip")},
                       headers={"Authorization": f"Bearer {token}", "X-Request-Id": request_id})
    assert reply.status_code == 202, reply.text
    assert reply.headers["X-Request-Id"] == request_id
    final = _wait_final(j.client(token), reply.json()["id"])
    assert final["state"] == "scored" and final["request_id"] == request_id
    for pattern, events in TRAIL.items():
        files = sorted(j.logs.glob(f"{pattern}.log"))
        assert files, f"no log file {pattern}.log in {sorted(p.name for p in j.logs.iterdir())}"
        grepped = [line for f in files for line in f.read_text(errors="replace").splitlines()
                   if request_id in line]
        assert grepped, f"{request_id} is in no line of {[f.name for f in files]}"
        structured = [json.loads(line) for line in grepped if line.startswith("{")]
        named = {e["event"] for e in structured if e.get("request_id") == request_id}
        assert events <= named, (pattern, named)
