"""The web leaderboard in a real headless browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from psycopg.types.json import Jsonb

from tests.journey_support import (
    T0,
    ServerThread,
    add_participant,
    add_submission,
    built_in_scores,
    gateway_app,
    record_result,
)

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "leaderboard.png"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


@pytest.fixture
def site(db_pool, object_store):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/test-prereqs.sh` (as root) to "
                    "install Debian's chromium for the browser test")
    app, challenge, _ = gateway_app(db_pool, object_store, T0 + timedelta(days=2), "x")
    rows = [("Ann", "Open Lab", False, False, (7, 10), (80, 100)),
            ("Bob", "Secret Corp", True, False, (9, 10), (75, 100)),
            ("R50 (MS1MV3)", "organisers", False, True, (64, 100), (81, 100)),
            ("Cat", "Uni", False, False, (3, 10), (50, 100))]
    ids = {}
    with db_pool.connection() as conn:
        for minutes, (name, org, hidden, baseline, mask, mr) in enumerate(rows):
            pid, token = add_participant(conn, name, org, hidden=hidden, baseline=baseline)
            sid = add_submission(conn, pid, created_at=T0 + timedelta(minutes=minutes))
            conn.execute("UPDATE submissions SET validation = %s, embedding = %s WHERE id = %s",
                         (Jsonb({"ok": True, "errors": [], "warnings": [], "feature_dim": 512,
                                 "model_size_mb": 91.658, "latency_ms": 1.856,
                                 "latency_limit_ms": 10.0, "device": "CPU (test)",
                                 "input_mean": 127.5, "input_std": 127.5}),
                          Jsonb({"name": "onnxruntime-cpu", "version": "onnxruntime 1.32.0",
                                 "device": "CPU, 2 threads", "batch_size": 32}), sid))
            conn.commit()
            record_result(db_pool, challenge, sid, built_in_scores(mask, mr),
                          model_size_mb=91.658 + minutes, latency_ms=1.856 + minutes)
            ids[name] = (sid, token, pid)
        rejected = add_submission(conn, ids["Cat"][2], state="rejected")
        conn.execute("UPDATE submissions SET validation = %s WHERE id = %s", (Jsonb({
            "ok": False, "errors": [{"code": "weight_dtype", "message": "float16 initializer"}],
            "warnings": []}), rejected))
        conn.commit()
    with ServerThread(app) as server:
        yield server.url, ids, rejected


def test_leaderboard_page_in_a_real_browser(site, tmp_path):
    from playwright.sync_api import sync_playwright

    url, ids, rejected = site
    assert httpx.get(url + "/").status_code == 200
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 640})
            page.goto(url + "/#/track/A")
            page.wait_for_selector("body[data-ready='1'] #leaderboard tbody tr[data-submission]")
            tabs = page.locator("#tabs a[data-track]").all_inner_texts()
            assert [t.split("\n")[0].split("MS1M")[0].split("Glint")[0].strip() for t in tabs] == \
                ["Track A", "Track B"]
            headers = [h.strip(" ▲▼") for h in page.locator("#leaderboard thead th").all_inner_texts()]
            assert headers == ["#", "Participant", "Organisation", "Mask", "Children", "African",
                               "Caucasian", "South Asian", "East Asian", "MR-All", "Score",
                               "Size (MB)", "Latency (ms)", "Submitted"]
            names = page.locator("#leaderboard tbody tr td:nth-child(2) a").all_inner_texts()
            # 0.25 Mask + 0.75 MR-All: Bob 0.7875, Ann 0.775, R50 0.7675, Cat 0.45
            assert names == ["Bob", "Ann", "R50 (MS1MV3)", "Cat"]
            third = page.locator("#leaderboard tbody tr").nth(2).locator("td").all_inner_texts()
            assert third[3] == "64.000" and third[9] == "81.000" and third[10] == "76.750"
            assert page.locator("[data-testid=baseline-badge]").count() == 1
            bob = page.locator("tr", has_text="Bob").locator("td").all_inner_texts()
            assert bob[2] == "hidden"
            # Sort by Mask (descending first), then again for ascending.
            page.click("#leaderboard th[data-key='p:mask']")
            assert page.locator("#leaderboard tbody tr td:nth-child(2) a").all_inner_texts()[0] == "Bob"
            page.click("#leaderboard th[data-key='p:mask']")
            assert page.locator("#leaderboard tbody tr td:nth-child(2) a").all_inner_texts()[0] == "Cat"
            page.click("#leaderboard th[data-key='rank']")
            page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
            # The docs' picture only when asked (`make docs-images`): a test run leaves the
            # working tree as it found it.
            if os.environ.get("MFR_UPDATE_DOCS_IMAGES"):
                DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tmp_path / "leaderboard.png", DOCS_SCREENSHOT)

            # The submission page: scores, ROC and DET plots, validation report.
            page.click("#leaderboard a:has-text('Ann')")
            page.wait_for_selector("#submission [data-testid=roc-plot] polyline")
            assert page.locator("[data-testid=roc-plot] polyline").count() == 7
            assert page.locator("[data-testid=det-plot] polyline").count() == 7
            assert "512" in page.locator("[data-testid=validation]").inner_text()
            embedded = page.locator("[data-testid=embedding]").inner_text()
            assert "onnxruntime-cpu" in embedded and "CPU, 2 threads" in embedded
            page.screenshot(path=str(tmp_path / "submission.png"), full_page=True)

            # Signed in: my submissions, with the rejected one's validation codes.
            page.fill("#token", ids["Cat"][1])
            page.click("#signin-button")
            page.wait_for_selector("#who:has-text('signed in as Cat')")
            page.goto(url + "/#/mine")
            page.wait_for_selector(f"#mine tr[data-submission='{rejected}']")
            row = page.locator(f"#mine tr[data-submission='{rejected}']").inner_text()
            assert "rejected" in row and "weight_dtype" in row
            page.goto(url + f"/#/submission/{rejected}")
            page.wait_for_selector("#submission[data-state='rejected']")
            assert "float16 initializer" in page.locator("[data-testid=validation]").inner_text()
            page.goto(url + f"/#/submission/{ids['Ann'][0]}")  # a public entry, still visible
            page.wait_for_selector("#submission")
        finally:
            browser.close()
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000
