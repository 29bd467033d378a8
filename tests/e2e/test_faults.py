"""The fault tier: a running ``mfr up`` stack, hurt on purpose while it evaluates.

Every scenario submits the same model (from a new participant) and hurts the
stack at a chosen stage: SIGKILL of each kind of process (services, workers,
dispatcher, gateway, PostgreSQL, S3), SIGSTOP of a worker, a graceful stop of
the whole stack followed by a start on the same state. Each must end ``scored``
with exactly the numbers of the undisturbed run, and cost the participant one
slot of the daily limit, no more. Short leases and stall timeouts (below) keep
each recovery within seconds; `-m "not faults"` leaves the tier out locally.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from mfr.records.submissions import count_for_day
from tests.journey_support import challenge_toml

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

NOW = datetime(2030, 3, 10, 15, 0, tzinfo=UTC)
MODEL = "synth-lda-400"
FAST_RECOVERY = {
    "MFR_DISPATCH_LEASE_S": "6", "MFR_DISPATCH_POLL_S": "0.5",
    "MFR_DISPATCH_BACKOFF_BASE_S": "0.5", "MFR_DISPATCH_BACKOFF_MAX_S": "3",
    "MFR_DISPATCH_MAX_ATTEMPTS": "30",
    **{f"MFR_{kind}_{knob}": value for kind in ("EMBEDDER", "SCORER")
       for knob, value in (("HEARTBEAT_S", "1"), ("STALLED_S", "5"), ("REAP_EVERY_S", "1"),
                           ("POLL_S", "0.5"))},
    # Each shard waits before it is embedded, so that "mid-embedding" lasts long enough
    # to be hurt in; the features do not depend on it.
    "MFR_EMBEDDER_FAULT_SHARD_DELAY_S": "3",
    # A model that hangs in validation is stopped at this ceiling of its time budget: long
    # enough for another participant's whole evaluation (about 15 s here) to end first.
    "MFR_VALIDATOR_TIMEOUT_S": "45",
}


class Rig:
    """A stack that can be hurt and started again on the same state."""

    def __init__(self, root, baselines) -> None:
        from cli.client import zip_model
        from cli.stack.ports import free_port
        from cli.stack.supervisor import StackConfig
        from cli.stack.testsets import default_testset

        self.root = root
        challenge = root / "challenge.toml"
        challenge.write_text(challenge_toml(opens=NOW - timedelta(days=5),
                                            closes=NOW + timedelta(days=10)))
        clock = root / "now.txt"
        clock.write_text(NOW.isoformat())
        self.model = zip_model(baselines / f"{MODEL}.onnx", root / f"{MODEL}.zip")
        self.config = StackConfig(
            state_dir=root / "state", gateway_port=free_port(), challenge=challenge,
            testset=default_testset(0.001),
            extra_env={"MFR_ALLOW_FAKE_CLOCK": "1", "MFR_FAKE_CLOCK_FILE": str(clock),
                       **FAST_RECOVERY})
        self.said: list[str] = []
        self.stack = None
        self.stop_supervising = False

    def start(self) -> None:
        import threading

        from cli.stack.supervisor import Stack

        self.stack = Stack(self.config, say=self.said.append)
        addresses = self.stack.start()
        self.url = addresses["gateway"]
        self.stop_supervising = False
        self.supervisor = threading.Thread(target=self.stack.wait,
                                           args=(lambda: self.stop_supervising,), daemon=True)
        self.supervisor.start()

    def stop(self) -> None:
        self.stop_supervising = True
        self.supervisor.join(10)
        self.stack.stop()

    # --- hurting it ----------------------------------------------------------------
    def process(self, name: str):
        if name == "postgres":
            return self.stack.postgres.process
        if name == "s3":
            return self.stack.s3.process
        return next(c.process for c in self.stack.children if c.name == name)

    def kill(self, name: str, signum: int = signal.SIGKILL) -> int:
        assert self.supervisor.is_alive(), f"the supervisor gave up: {self.said[-8:]}"
        process = self.process(name)
        process.send_signal(signum)
        return process.pid

    def restarted(self, name: str, old_pid: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.process(name)
            if process.pid != old_pid and process.poll() is None:
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} was not restarted: {self.said[-5:]}")

    # --- a participant -------------------------------------------------------------
    def participant(self, name: str):
        from cli.client import GatewayClient, GatewayError

        deadline = time.monotonic() + 30
        while True:  # as a participant would: the gateway may be restarting
            try:
                return GatewayClient(self.url, GatewayClient(self.url).signup(name)["token"])
            except GatewayError as err:
                if err.code != "unreachable" or time.monotonic() > deadline:
                    raise AssertionError(f"{err}; supervisor: {self.said[-8:]}") from None
                time.sleep(0.5)

    def row(self, sid: str) -> dict | None:
        """The submission's row, straight from PostgreSQL (None while it is unreachable)."""
        try:
            with psycopg.connect(self.stack.env["MFR_DATABASE_URL"], connect_timeout=2,
                                 row_factory=dict_row) as conn:
                row = conn.execute(
                    "SELECT state, scores, error, error_code, retries, challenge_id, quota_day,"
                    " participant_id::text AS participant_id FROM submissions WHERE id = %s",
                    (sid,)).fetchone()
                row["quota_used"] = count_for_day(conn, row["challenge_id"],
                                                  row["participant_id"],
                                                  row["quota_day"])["counted"]
                return row
        except psycopg.OperationalError:
            return None

    def reach(self, sid: str, states: tuple[str, ...], timeout: float = 240) -> dict:
        """Wait for one of ``states``, or (for a pending one) any state after it."""
        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            row = self.row(sid) or row
            if row and (row["state"] in states or _past(row["state"], states)):
                return row
            if row and row["state"] in ("rejected", "failed", "cancelled"):
                break
            time.sleep(0.1)
        raise AssertionError(f"{sid} did not reach {states}: {row}; supervisor: {self.said[-8:]}")


def _past(state: str, states: tuple[str, ...]) -> bool:
    """Whether ``state`` comes after every one of ``states`` in the pipeline (a stage too
    short to be caught is hurt at the next one: the process is still killed)."""
    order = ("queued", "validating", "embedding", "scoring", "scored")
    return state in order and all(s in order[:-1] and order.index(state) > order.index(s)
                                  for s in states)


@pytest.fixture(scope="module")
def rig(tmp_path_factory, baseline_models):
    rig = Rig(tmp_path_factory.mktemp("faults"), baseline_models)
    rig.start()
    try:
        yield rig
    finally:
        rig.stop()


@pytest.fixture(scope="module")
def undisturbed(rig) -> dict:
    ann = rig.participant("Undisturbed")
    sid = ann.submit(rig.model, "A")["id"]
    return rig.reach(sid, ("scored",))["scores"]


def _evaluate_while(rig, who: str, hurts: list[tuple[str, str, int]]) -> str:
    """Submit, and at each (stage, process, signal) hurt that process once the submission
    is at that stage (SIGKILL: and see it restarted)."""
    sid = rig.participant(who).submit(rig.model, "A")["id"]
    for stage, name, signum in hurts:
        rig.reach(sid, (stage,))
        said = len(rig.said)
        pid = rig.kill(name, signum)
        if signum == signal.SIGKILL:
            rig.restarted(name, pid)
            assert any(line.startswith(f"{name} exited") for line in rig.said[said:])
    return sid


def _ends_like_the_undisturbed_run(rig, sid, undisturbed) -> None:
    final = rig.reach(sid, ("scored",), timeout=300)
    assert final["scores"] == undisturbed
    assert final["retries"] == 0  # recovered by resuming, not by starting over
    assert final["quota_used"] == 1  # one submission, one slot


@pytest.mark.parametrize("hurts", [
    pytest.param([("validating", "validator", signal.SIGKILL),
                  ("embedding", "embedder", signal.SIGKILL),
                  ("scoring", "scorer", signal.SIGKILL),
                  ("scoring", "ranker", signal.SIGKILL)], id="services"),
    pytest.param([("embedding", "embedder-worker-0", signal.SIGKILL),
                  ("scoring", "scorer-worker-0", signal.SIGKILL)], id="workers"),
    pytest.param([("embedding", "dispatcher", signal.SIGKILL),
                  ("scoring", "gateway", signal.SIGKILL)], id="dispatcher-and-gateway"),
    pytest.param([("embedding", "postgres", signal.SIGKILL)], id="postgres"),
    pytest.param([("embedding", "s3", signal.SIGKILL)], id="s3"),
])
def test_a_killed_process_is_restarted_and_the_submission_ends_exactly(rig, undisturbed,
                                                                       hurts):
    sid = _evaluate_while(rig, f"Killed {hurts[0][1]}", hurts)
    _ends_like_the_undisturbed_run(rig, sid, undisturbed)


def test_a_frozen_worker_is_worked_around(rig, undisturbed):
    sid = _evaluate_while(rig, "Frozen", [("embedding", "embedder-worker-0", signal.SIGSTOP)])
    time.sleep(8)  # past the stall timeout: its shard is handed back
    rig.kill("embedder-worker-0", signal.SIGCONT)
    _ends_like_the_undisturbed_run(rig, sid, undisturbed)


@pytest.mark.parametrize("stage", ["embedding", "scoring"])
def test_a_graceful_restart_of_the_stack_resumes(rig, undisturbed, stage):
    sid = rig.participant(f"Restarted while {stage}").submit(rig.model, "A")["id"]
    rig.reach(sid, (stage,))
    rig.stop()  # what SIGTERM or Ctrl-C of `mfr up` does
    said = len(rig.said)
    rig.start()  # `mfr up` again, on the same state directory
    _ends_like_the_undisturbed_run(rig, sid, undisturbed)
    assert not any("exited" in line for line in rig.said[said:]), rig.said[said:]


def test_a_hanging_model_holds_no_one_else_up(rig, undisturbed):
    """A model that never finishes, then a good one from another participant: the good one
    is scored while the hanging one is still being validated; that one is then rejected."""
    from cli.client import zip_model
    from mfr.onnxzoo.hostile import hang

    hanging = rig.participant("Hangs").submit(zip_model(hang(), rig.root / "hang.zip"), "A")
    rig.reach(hanging["id"], ("validating",))
    good = rig.participant("Waits for nobody").submit(rig.model, "A")["id"]
    assert rig.reach(good, ("scored",))["scores"] == undisturbed
    assert rig.row(hanging["id"])["state"] == "validating"
    rejected = rig.reach(hanging["id"], ("rejected",), timeout=120)
    assert rejected["error_code"] == "timeout"
    assert rejected["quota_used"] == 0  # rejected uploads cost no slot
