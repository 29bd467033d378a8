"""The web page for a challenge with accuracy and 1:N protocols, in a real headless browser."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from tests.e2e.test_web_leaderboard import ARGS, CHROMIUM
from tests.journey_support import (
    T0,
    FakeClock,
    ServerThread,
    add_participant,
    add_submission,
    built_in_scores,
)
from tests.kinds_support import accuracy_result, identification_result, kinds_challenge

pytestmark = pytest.mark.e2e
LFW = [597, 598, 596, 599, 595, 597, 600, 594, 598, 593]


@pytest.fixture
def site(db_pool, object_store):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/test-prereqs.sh` (as root)")
    from gateway.app import create_app
    from tests.journey_support import record_result

    challenge = kinds_challenge()
    clock = FakeClock(T0 + timedelta(days=2))
    ids = {}
    with db_pool.connection() as conn:
        for minutes, (name, lfw, hits) in enumerate([("Ann", LFW, 7), ("Bob", [600] * 10, 9)]):
            pid, _ = add_participant(conn, name, "Lab")
            sid = add_submission(conn, pid, created_at=T0 + timedelta(minutes=minutes))
            record_result(db_pool, challenge, sid, {
                **built_in_scores((9, 10), (5, 10)), "lfw": accuracy_result(lfw),
                "mr-1n": identification_result(hits, 9)})
            ids[name] = sid
    app = create_app(db_pool, object_store, challenge, clock=clock, admin_token="x")
    with ServerThread(app) as server:
        yield server.url, ids


def test_columns_name_their_rate_and_the_submission_shows_folds_and_1n(site):
    from playwright.sync_api import sync_playwright

    url, _ = site
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(url + "/#/track/A")
            page.wait_for_selector("body[data-ready='1'] #leaderboard tbody tr[data-submission]")
            headers = [h.strip(" ▲▼") for h in page.locator("#leaderboard thead th").all_inner_texts()]
            assert "Mask (TAR)" in headers and "LFW (10-fold accuracy) (accuracy)" in headers
            assert "MR 1:N (TPIR@FPIR=1e-3) (TPIR)" in headers
            lfw_col = headers.index("LFW (10-fold accuracy) (accuracy)")
            tpir_col = headers.index("MR 1:N (TPIR@FPIR=1e-3) (TPIR)")
            names = page.locator("#leaderboard tbody tr td:nth-child(2) a").all_inner_texts()
            assert names == ["Bob", "Ann"]
            ann = page.locator("#leaderboard tbody tr").nth(1).locator("td").all_inner_texts()
            assert ann[lfw_col] == "99.450" and ann[tpir_col] == "77.778"  # 5967/6000, 7/9
            assert ann[headers.index("CFP-FP (10-fold accuracy) (accuracy)")] == ""  # not scored

            page.click("#leaderboard a:has-text('Ann')")
            page.wait_for_selector("#submission [data-testid=accuracy-lfw]")
            folds = page.locator("[data-testid=accuracy-lfw] tbody tr")
            accuracies = folds.nth(0).locator("td").all_inner_texts()
            thresholds = folds.nth(1).locator("td").all_inner_texts()
            assert accuracies[:3] == ["99.500", "99.667", "99.333"] and accuracies[6] == "100.000"
            assert thresholds[0] == "0.210000" and thresholds[-1] == "+∞"
            row = page.locator("[data-testid=identification] tr[data-protocol='mr-1n'] td")
            assert row.all_inner_texts() == ["77.778", "22.222", "77.778", "1e-3", "0.437500",
                                             "7 / 9", "2 / 2000"]
            # The TAR protocols keep their table and their ROC/DET curves (7 of them).
            assert page.locator("[data-testid=roc-plot] polyline").count() == 7
            tar_rows = page.locator("table.scores:not(.folds):not([data-testid]) tbody tr")
            assert tar_rows.count() == 7
        finally:
            browser.close()
