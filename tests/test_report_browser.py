"""The HTML trial report opened in headless Chromium (Playwright): no console/page errors, figures decode."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chemohost.report.trial_report import render_report
from test_report import make_ctx

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, html: str, path: Path, shot: Path):
    path.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    page.screenshot(path=str(shot), full_page=True)
    return page, errors, requests


def _check_figures(page, ids):
    for fid in ids:
        assert page.locator(f"#{fid}").count() == 1, fid
        w = page.eval_on_selector(f"#{fid} img", "img => img.complete ? img.naturalWidth : 0")
        assert w > 0, fid
        assert page.eval_on_selector(f"#{fid} img", "img => img.alt.length") > 20, fid


@pytest.mark.parametrize("design", ["paired", "randomized"])
def test_report_in_chromium(browser, tmp_path, design):
    fail = {"gemcitabine + caspase-1 inhibitor": (5, "max_steps")} if design == "paired" else None
    ctx = make_ctx(design, fail=fail)
    shot = tmp_path / f"report_{design}.png"
    page, errors, requests = _open(browser, render_report(ctx), tmp_path / "report.html", shot)
    try:
        assert errors == []
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        figs = ["fig-km-os", "fig-km-pfs", "fig-waterfall", "fig-trajectories"]
        tables = ["table-summary"]
        if design == "paired":
            figs.append("fig-paired")
            tables.append("table-paired")
            assert page.locator("#warning-failures").is_visible()
        else:
            figs += ["fig-power", "fig-hr-dist"]
            tables.append("table-power")
            assert page.locator("#section-paired").count() == 0
        _check_figures(page, figs)
        for t in tables:
            assert page.locator(f"#{t} tbody tr").count() >= 2, t
        assert page.locator("#section-methods").is_visible()
        assert not page.locator("#details-manifest pre").is_visible()  # collapsed
        page.click("#details-manifest summary")
        assert page.locator("#details-manifest pre").is_visible()
        assert shot.stat().st_size > 10_000
    finally:
        page.close()
