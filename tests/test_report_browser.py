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


def test_fit_and_posterior_reports_in_chromium(browser, tmp_path):
    """`chemohost fit` and `chemohost trial --posterior` reports: no errors, local resources only, every
    figure decodes, the tables are filled."""
    import json as _json

    import numpy as np

    import test_fit as tf
    import test_posterior_trial as tpt
    from chemohost.calibration.fit import FitOptions, run_fit, write_fit
    from chemohost.cli import main

    pytest.importorskip("pypesto")
    pytest.importorskip("emcee")
    y = [10.0 * np.exp(-t) + 1.0 for t in tf.PK_TIMES_H]
    fit = run_fit(tf._pk_problem(tmp_path / "p", y, 0.2), FitOptions(starts=2, steps=60, walkers=8,
                                                                      prediction_draws=20))
    write_fit(fit, tmp_path / "fit")
    html = (tmp_path / "fit" / "report.html").read_text()
    page, errors, requests = _open(browser, html, tmp_path / "fit.html", tmp_path / "fit.png")
    try:
        assert errors == []
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        _check_figures(page, ["fig-fit", "fig-waterfall", "fig-profiles", "fig-posterior"])
        assert page.locator("#table-estimates tbody tr").count() == 2
        assert page.locator("#table-data tbody tr").count() == len(tf.PK_TIMES_H)
    finally:
        page.close()

    post = tpt._posterior(tmp_path / "post", {"il1r1_ec50": [1.5, 4.0, 12.0, 40.0],
                                              "gcsf_il1_emax": [30.0, 8.0, 3.0, 1.0]})
    spec = _json.loads(_json.dumps(tpt.tt.BASE))
    spec.update({"patients": 6, "follow_up": "12 month"})
    (tmp_path / "trial.yaml").write_text(_json.dumps(spec))
    assert main(["trial", str(tmp_path / "trial.yaml"), "--posterior", str(post), "--draws", "4",
                 "--out", str(tmp_path / "ppt")]) == 0
    html = (tmp_path / "ppt" / "report.html").read_text()
    page, errors, requests = _open(browser, html, tmp_path / "ppt.html", tmp_path / "ppt.png")
    try:
        assert errors == []
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        _check_figures(page, ["fig-forest", "fig-scatter"])
        assert page.locator("#table-effects tbody tr").count() == 1
        assert page.locator("#table-arms tbody tr").count() == 2
    finally:
        page.close()


def test_sensitivity_report_in_chromium(browser, tmp_path):
    import test_studies as ts
    from chemohost.cli import main

    f = ts._study(tmp_path)
    assert main(["sensitivity", str(f), "--out", str(tmp_path / "s")]) == 0
    html = (tmp_path / "s" / "report.html").read_text()
    page, errors, requests = _open(browser, html, tmp_path / "s.html", tmp_path / "s.png")
    try:
        assert errors == []
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        for t in ("table-blockade_ratio", "table-rmst_gain", "table-anc_nadir"):
            assert page.locator(f"#{t} tbody tr").count() == 3, t
        imgs = page.locator("figure img")
        assert imgs.count() == 6
        for k in range(imgs.count()):
            assert imgs.nth(k).evaluate("img => img.complete ? img.naturalWidth : 0") > 0
    finally:
        page.close()


def test_optimize_report_in_chromium(browser, tmp_path):
    import test_studies as ts
    from chemohost.cli import main

    f = ts._opt(tmp_path)
    assert main(["optimize", str(f), "--out", str(tmp_path / "o")]) == 0
    html = (tmp_path / "o" / "report.html").read_text()
    page, errors, requests = _open(browser, html, tmp_path / "o.html", tmp_path / "o.png")
    try:
        assert errors == []
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        assert page.locator("#table-best tbody tr").count() >= 1
        assert page.locator("#table-comparison tbody tr").count() == 1
        imgs = page.locator("figure img")
        assert imgs.count() >= 2
        for k in range(imgs.count()):
            assert imgs.nth(k).evaluate("img => img.complete ? img.naturalWidth : 0") > 0
    finally:
        page.close()


def test_phase1_report_in_chromium(browser, tmp_path):
    from chemohost.cli import main

    f = Path(__file__).resolve().parents[1] / "scenarios" / "study_phase1_design_only.yaml"
    assert main(["phase1", str(f), "--out", str(tmp_path / "p")]) == 0
    html = (tmp_path / "p" / "report.html").read_text()
    page, errors, requests = _open(browser, html, tmp_path / "p.html", tmp_path / "p.png")
    try:
        assert errors == []
        assert page.locator("#table-oc tbody tr").count() == 2
        assert page.locator("#table-doses tbody tr").count() == 5
        assert page.locator("figure img").first.evaluate("img => img.complete ? img.naturalWidth : 0") > 0
    finally:
        page.close()


def test_biomarkers_report_in_chromium(browser, tmp_path):
    import test_biomarkers as tb  # noqa: F401
    from chemohost.cli import main

    import json as _json

    import yaml as _yaml

    import test_trial as tt

    spec = _json.loads(_json.dumps(tt.BASE))
    spec.update(patients=60, follow_up="6 month", parameters={"il1r1_ec50": "3 pg/mL", "gcsf_il1_emax": 20})
    (tmp_path / "t.yaml").write_text(_yaml.safe_dump(spec))
    assert main(["trial", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "trial")]) == 0
    assert main(["biomarkers", str(tmp_path / "trial"), "--out", str(tmp_path / "b"), "--threshold", "q60",
                 "--replicates", "4", "--per-arm", "20"]) == 0
    html = (tmp_path / "b" / "report.html").read_text()
    page, errors, requests = _open(browser, html, tmp_path / "b.html", tmp_path / "b.png")
    try:
        assert errors == []
        assert page.locator("#table-benefit-models tbody tr").count() == 2
        assert page.locator("#table-benefit-markers tbody tr").count() >= 5
        imgs = page.locator("figure img")
        for k in range(imgs.count()):
            assert imgs.nth(k).evaluate("img => img.complete ? img.naturalWidth : 0") > 0
    finally:
        page.close()


def test_twin_report_in_chromium(browser, tmp_path):
    from chemohost.cli import main

    f = Path(__file__).resolve().parents[1] / "scenarios" / "patients" / "patient_il1_low.yaml"
    assert main(["twin", str(f), "--out", str(tmp_path / "t"), "--particles", "100"]) == 0
    html = (tmp_path / "t" / "report.html").read_text()
    page, errors, requests = _open(browser, html, tmp_path / "t.html", tmp_path / "t.png")
    try:
        assert errors == []
        assert page.locator("#table-actions tbody tr").count() == 7
        assert page.locator("#table-updates tbody tr").count() == 6
        assert page.locator("#table-voi tbody tr").count() >= 5
        imgs = page.locator("figure img")
        assert imgs.count() == 2
        for k in range(imgs.count()):
            assert imgs.nth(k).evaluate("img => img.complete ? img.naturalWidth : 0") > 0
    finally:
        page.close()
