"""Leaderboard, Set Public, privacy and the organisers' calls over HTTP, on real servers."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from tests.journey_support import (
    T0,
    ServerThread,
    add_participant,
    add_scored,
    add_submission,
    built_in_scores,
    gateway_app,
)

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"


@pytest.fixture
def world(db_pool, object_store):
    app, results, clock = gateway_app(db_pool, object_store, T0 + timedelta(days=1), ADMIN)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, results, db_pool, clock


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_leaderboard_json_hidden_organisation_and_baseline(world):
    client, results, pool, _ = world
    with pool.connection() as conn:
        ann, _ = add_participant(conn, "Ann", "Open Lab")
        bob, _ = add_participant(conn, "Bob", "Secret Corp", hidden=True)
        base, _ = add_participant(conn, "R50 baseline", "organisers", baseline=True)
    add_scored(pool, results, ann, (7, 10), (8, 10))
    add_scored(pool, results, bob, (9, 10), (9, 10), minutes=1)
    add_scored(pool, results, base, (5, 10), (5, 10), minutes=2)
    board = client.get("/v1/leaderboard/A").json()
    entries = board["entries"]
    assert [e["participant"] for e in entries] == ["Bob", "Ann", "R50 baseline"]
    assert [e["rank"] for e in entries] == [1, 2, 3]
    assert entries[0]["organisation"] is None and entries[1]["organisation"] == "Open Lab"
    assert [e["baseline"] for e in entries] == [False, False, True]
    assert entries[1]["ranking_score"] == pytest.approx(0.25 * 0.7 + 0.75 * 0.8)
    assert entries[1]["protocols"]["mask"] == pytest.approx(0.7)
    assert set(entries[1]["protocols"]) == {"mask", "children", "african", "caucasian",
                                            "south-asian", "east-asian", "mr-all"}
    for key in ("rank", "participant", "organisation", "submission_id", "ranking_score",
                "protocols", "model_size_mb", "latency_ms", "submitted_at"):
        assert key in entries[0]
    csv_text = client.get("/v1/leaderboard/A/export?format=csv").text
    assert "Secret Corp" not in csv_text and csv_text.count("\n") == 4
    assert client.get("/v1/leaderboard/B").json()["entries"] == []
    assert client.get("/v1/leaderboard/Z").status_code == 422


def test_set_public_picks_the_entry_and_only_a_scored_one(world):
    client, results, pool, _ = world
    with pool.connection() as conn:
        pid, token = add_participant(conn, "Cat")
        queued = add_submission(conn, pid, state="queued")
    best = add_scored(pool, results, pid, (9, 10), (9, 10))
    worse = add_scored(pool, results, pid, (2, 10), (2, 10), minutes=5)
    assert client.get("/v1/leaderboard/A").json()["entries"][0]["submission_id"] == best
    mine = {s["id"]: s for s in client.get("/v1/submissions", headers=auth(token)).json()["submissions"]}
    assert mine[best]["public"] and not mine[worse]["public"]
    refused = client.post(f"/v1/submissions/{queued}/public", headers=auth(token))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_scored"
    chosen = client.post(f"/v1/submissions/{worse}/public", headers=auth(token))
    assert chosen.status_code == 200 and chosen.json()["public"] is True
    assert client.get("/v1/leaderboard/A").json()["entries"][0]["submission_id"] == worse
    client.post(f"/v1/submissions/{best}/public", headers=auth(token))
    entries = client.get("/v1/leaderboard/A").json()["entries"]
    assert [e["submission_id"] for e in entries] == [best]


def test_another_participants_private_submission_is_404(world):
    client, results, pool, _ = world
    with pool.connection() as conn:
        owner, owner_token = add_participant(conn, "Owner")
        _, other_token = add_participant(conn, "Other")
    shown = add_scored(pool, results, owner, (9, 10), (9, 10))
    private = add_scored(pool, results, owner, (1, 10), (1, 10), minutes=3)
    for headers in (auth(other_token), {}):
        reply = client.get(f"/v1/submissions/{private}", headers=headers)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "submission_not_found"
        assert client.post(f"/v1/submissions/{private}/public", headers=auth(other_token)).status_code == 404
    assert client.get("/v1/submissions/not-a-uuid", headers=auth(other_token)).status_code == 404
    assert client.get("/v1/submissions", headers=auth(other_token)).json()["submissions"] == []
    # The public entry is public: scores and ROC, but no private fields.
    public = client.get(f"/v1/submissions/{shown}", headers=auth(other_token)).json()
    assert public["participant"] == "Owner" and public["roc"]["mask"]
    assert "errors" not in public and "public_chosen" not in public
    own = client.get(f"/v1/submissions/{private}", headers=auth(owner_token)).json()
    assert own["state"] == "scored" and own["public"] is False and own["events"]


def test_organisers_rerun_cancel_freeze_and_export(world):
    client, results, pool, _ = world
    with pool.connection() as conn:
        pid, token = add_participant(conn, "Dee", "Hidden Org", hidden=True)
        running = add_submission(conn, pid, state="embedding")
    done = add_scored(pool, results, pid, (6, 10), (6, 10))
    assert client.post(f"/v1/admin/submissions/{done}/rerun").status_code == 401
    assert client.post(f"/v1/admin/submissions/{done}/rerun", headers=auth(token)).status_code == 403
    admin = auth(ADMIN)
    reply = client.post(f"/v1/admin/submissions/{running}/rerun", headers=admin)
    assert reply.status_code == 409 and reply.json()["error"]["code"] == "still_pending"
    cancelled = client.post(f"/v1/admin/submissions/{running}/cancel", headers=admin).json()
    assert cancelled["state"] == "cancelled"
    assert client.post(f"/v1/admin/submissions/{running}/cancel", headers=admin).status_code == 409
    mine = client.get(f"/v1/submissions/{running}", headers=auth(token)).json()
    assert mine["errors"] == [{"code": "cancelled", "message": "cancelled by the organisers"}]
    export = client.get("/v1/admin/leaderboard/A/export?format=csv", headers=admin).text
    assert "Hidden Org" in export
    frozen = client.post("/v1/admin/leaderboard/A/freeze", headers=admin).json()
    assert frozen["frozen"] and [e["submission_id"] for e in frozen["entries"]] == [done]
    rerun = client.post(f"/v1/admin/submissions/{done}/rerun", headers=admin)
    assert rerun.status_code == 202 and rerun.json()["state"] == "queued" and rerun.json()["run"] == 2
    # Frozen: the re-run does not take the entry off the final board, and Set Public is refused.
    board = client.get("/v1/leaderboard/A").json()
    assert board["frozen"] and [e["submission_id"] for e in board["entries"]] == [done]
    with pool.connection() as conn:
        other = add_submission(conn, pid, state="scored", scores=built_in_scores((1, 2), (1, 2)),
                               ranking_exact="1/2")
    refused = client.post(f"/v1/submissions/{other}/public", headers=auth(token))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "board_frozen"
    assert client.delete("/v1/admin/leaderboard/A/freeze", headers=admin).json()["unfrozen"]
    queue = client.get("/v1/admin/submissions?state=queued", headers=admin).json()["submissions"]
    assert [s["id"] for s in queue] == [done]
    history = client.get(f"/v1/admin/submissions/{done}", headers=admin).json()["events"]
    assert [e["state"] for e in history] == ["scored", "queued"]


def test_hiding_the_organisation_later(world):
    client, results, pool, _ = world
    with pool.connection() as conn:
        pid, token = add_participant(conn, "Eli", "Visible Inc")
    add_scored(pool, results, pid, (5, 10), (5, 10))
    assert client.get("/v1/leaderboard/A").json()["entries"][0]["organisation"] == "Visible Inc"
    reply = client.patch("/v1/participants/me", headers=auth(token), json={"hide_organisation": True})
    assert reply.json()["hide_organisation"] is True
    assert client.get("/v1/leaderboard/A").json()["entries"][0]["organisation"] is None


def test_web_page_and_challenge_are_served(world):
    client, _, _, _ = world
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    challenge = client.get("/v1/challenge").json()
    assert [t["id"] for t in challenge["tracks"]] == ["A", "B"]
    assert challenge["weights"] == {"mask": 0.25, "mr-all": 0.75}
