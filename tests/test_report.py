"""HTML trial report from a synthetic context (no simulation): sections, failures, NaN, escaping, designs."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from chemohost.report.trial_report import DASH, render, render_report

ARMS = ["gemcitabine", "gemcitabine + anti-IL-1alpha", "gemcitabine + caspase-1 inhibitor"]
NAN = float("nan")


def make_patients(arms, n=60, fail=None, seed=0):
    """One row per patient x arm; ``fail`` maps arm -> (number of failed patients, failure name)."""
    rng = np.random.default_rng(seed)
    rows = []
    for a_i, arm in enumerate(arms):
        k_fail, why = (fail or {}).get(arm, (0, "max_steps"))
        for p in range(n):
            if p < k_fail:
                rows.append(dict(patient=p, arm=arm, status=why, best_response="NE", best_scan_change_pct=NAN,
                                 pfs_months=NAN, pfs_event=False, os_months=NAN, os_event=False,
                                 neutropenia_grade_max=NAN, dose_intensity=NAN))
                continue
            os_m = float(min(rng.exponential(6 + 2 * a_i), 24.0))
            pfs_m = float(min(rng.exponential(2.5 + a_i), os_m))
            ch = float(np.clip(rng.normal(-5 - 5 * a_i, 25), -100, 120))
            no_scan = rng.random() < 0.05
            resp = "NE" if no_scan else ("CR" if ch <= -99 else "PR" if ch <= -30 else "PD" if ch >= 20 else "SD")
            rows.append(dict(patient=p, arm=arm, status="ok", best_response=resp,
                             best_scan_change_pct=NAN if no_scan else ch, pfs_months=pfs_m, pfs_event=pfs_m < 24,
                             os_months=os_m, os_event=os_m < 24,
                             neutropenia_grade_max=float(rng.integers(0, 5)), dose_intensity=float(rng.uniform(.7, 1))))
    df = pd.DataFrame(rows)
    df["arm"] = pd.Categorical(df["arm"], categories=arms)
    return df


def arm_summary(df, arm, control):
    g = df[df.arm == arm]
    ok = g[g.status == "ok"]
    n_ok = len(ok)
    frac = (lambda m: float(m.mean())) if n_ok else (lambda m: NAN)
    s = dict(n=float(len(g)), n_failed=float(len(g) - n_ok), n_analysed=float(n_ok),
             orr=frac(ok.best_response.isin(["CR", "PR"])), orr_ci=[0.01, 0.2],
             dcr=frac(ok.best_response.isin(["CR", "PR", "SD"])), dcr_ci=[0.3, 0.6],
             median_pfs_months=2.1, median_pfs_ci_low=1.8, median_pfs_ci_high=2.9, pfs_events=float(ok.pfs_event.sum()),
             median_os_months=6.3, median_os_ci_low=5.1, median_os_ci_high=NAN, os_events=float(ok.os_event.sum()),
             os_12m=0.21, neutropenia_g3plus=0.23, neutropenia_g3plus_ci=[0.12, 0.35], neutropenia_g4=0.1,
             dose_intensity_mean=0.93,
             hr_os_vs_control=[1.0, None, None] if arm == control else [0.84, 0.6, 1.17],
             logrank_p=None if arm == control else 0.31,
             hr_pfs_vs_control=[1.0, None, None] if arm == control else [0.9, 0.65, 1.25],
             logrank_p_pfs=None if arm == control else 0.52)
    if not n_ok:
        for k in list(s):
            if k not in ("n", "n_failed", "n_analysed"):
                s[k] = [NAN, NAN, NAN] if isinstance(s[k], list) else NAN
    return s


def paired_block(arm_i):
    rm = lambda tau, est: dict(estimate=est, ci_low=est - 0.4, ci_high=est + 0.5, rmst_ctrl=tau * .45,  # noqa: E731
                               rmst_arm=tau * .45 + est, tau=float(tau), beyond_follow_up=tau > 20)
    return dict(rmst_diff_12=rm(12, 0.3 * arm_i), rmst_diff_24=rm(24, 0.7 * arm_i),
                hr=dict(estimate=0.85, ci_low=0.7, ci_high=1.02, p=0.08),
                individual=dict(frac_gain=0.31, frac_loss=0.12, frac_unchanged=0.57, mean_delta=0.6,
                                quantiles=dict(p5=-1.5, p25=-0.1, p50=0.2, p75=1.1, p95=3.4),
                                threshold_months=1.0, horizon_months=24.0, n_pairs=60))


def samples_block(arms, k=8, days=120):
    t = np.arange(0.0, days + 1)
    rng = np.random.default_rng(1)
    out = {}
    for a_i, arm in enumerate(arms):
        dip = np.exp(-((t % 21) - 8) ** 2 / 12)
        anc = 4.5 - (2.5 + 0.3 * a_i) * dip[None, :] * rng.uniform(.6, 1.3, (k, 1))
        nlr = 2.5 + 2 * dip[None, :] * rng.uniform(.5, 1.5, (k, 1))
        gmp = 1 + 0.4 * dip[None, :] * rng.uniform(.5, 1.5, (k, 1))
        tum = np.exp(-t / 200)[None, :] * rng.uniform(50, 80, (k, 1))
        out[arm] = (t, {"NLR": nlr, "ANC": anc, "gmp_frequency": gmp, "tumour_total": tum})
    return out


def make_ctx(design="paired", arms=ARMS, fail=None, n=60):
    control = arms[0]
    df = make_patients(arms, n=n, fail=fail)
    summary = {"arms": {a: arm_summary(df, a, control) for a in arms}, "control": control, "seed": 7}
    ctx = dict(name="PDAC host-response trial", description="Gemcitabine with inflammasome blockade.",
               design=design, control=control, seed=7, arms=list(arms), version="0.1.0", patients=df,
               summary=summary, samples=samples_block(arms),
               cycles={a: [(0, 21), (28, 49), (56, 77)] for a in arms},
               methods=dict(model="chemohost QSP v1", indication={"name": "PDAC", "source": "MPACT (Von Hoff 2013)"},
                            calibrated=["ANC nadir -> MPACT G3+ neutropenia 38%"],
                            predictions=["OS benefit of IL-1 blockade"],
                            assumptions=["OS linked to tumour shrinkage at week 8 and NLR"],
                            endpoints=["scans every 8 weeks", "measurement error 10% CV", "RECIST 1.1",
                                       "PFS at scans", "OS from a linked hazard model"]),
               manifest={"chemohost_version": "0.1.0", "seed": 7, "nested": {"a": [1, 2]}})
    if design == "paired":
        rng = np.random.default_rng(3)
        summary["paired"] = {a: paired_block(i) for i, a in enumerate(arms) if a != control}
        ctx["paired_deltas"] = {a: rng.normal(0.5, 1.5, n) for a in arms if a != control}
    else:
        summary["randomized"] = {"replicates": 200, "per_arm": n, "arms": {
            a: dict(power=0.62, power_ci=[0.55, 0.69],
                    hr_quantiles={"p2.5": 0.6, "p25": 0.75, "p50": 0.82, "p75": 0.9, "p97.5": 1.1},
                    median_diff_quantiles={"p2.5": -0.5, "p25": 0.4, "p50": 0.9, "p75": 1.4, "p97.5": 2.3},
                    power_curve=[dict(n_per_arm=m, power=min(.98, .2 + m / 300), ci_low=max(0, .15 + m / 320),
                                      ci_high=min(1, .25 + m / 280)) for m in (50, 100, 150, 200, 300)],
                    n_for_target=180 if i == 1 else None, schoenfeld_n=171.4)
            for i, a in enumerate(arms) if a != control}}
    return ctx


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.tags = set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a)


def parse(html):
    p = _Ids()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def paired_html():
    return render_report(make_ctx("paired"))


def test_every_section_present(paired_html):
    p = parse(paired_html)
    for i in ("table-summary", "fig-km-os", "fig-km-pfs", "fig-paired", "table-paired", "fig-waterfall",
              "fig-trajectories", "section-methods", "details-manifest"):
        assert i in p.ids, i
    assert "fig-power" not in p.ids and "table-power" not in p.ids
    for img in p.imgs:
        assert img["src"].startswith("data:image/png;base64,") and len(img["src"]) > 1000
        assert img.get("alt")
    # self-contained: nothing fetched from elsewhere, no script needed
    assert "<script" not in paired_html and not re.search(r"""(src|href)=["']?(https?:)?//""", paired_html)
    assert "<details" in paired_html and "<summary>" in paired_html
    for s in ("PDAC host-response trial", "MPACT (Von Hoff 2013)", "RECIST 1.1", "paired", "0.1.0"):
        assert s in paired_html
    assert "warning-failures" not in p.ids


def _summary_row(html, arm_escaped):
    table = html.split('id="table-summary"')[1].split("</table>")[0]
    row = [r for r in table.split("<tr") if f'class="arm">{arm_escaped}' in r][0]
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def test_failed_patients_excluded_and_counted(monkeypatch):
    from lifelines import KaplanMeierFitter

    monkeypatch.setenv("CHEMOHOST_REPORT_WORKERS", "1")  # (the spy below sees the fits made in this process)

    fitted = []
    orig = KaplanMeierFitter.fit

    def spy(self, durations, event_observed=None, *a, **k):
        fitted.append((self._label, len(durations), bool(np.isfinite(np.asarray(durations, float)).all())))
        return orig(self, durations, event_observed, *a, **k)

    monkeypatch.setattr(KaplanMeierFitter, "fit", spy)
    arms = ARMS[:2]
    ctx = make_ctx("paired", arms=arms, fail={arms[1]: (7, "max_steps")}, n=40)
    html = render_report(ctx)
    p = parse(html)
    assert "warning-failures" in p.ids
    assert "7 of 40 patients failed" in html and "max_steps: 7" in html
    cells = _summary_row(html, arms[1])
    assert cells[1:4] == ["40", "7", "33"]
    # KM curves (OS and PFS) are fitted on the 33 analysed patients only, never on NaN endpoints
    assert sorted(n for lab, n, _ in fitted if arms[1] in lab) == [33, 33]
    assert all(finite for *_, finite in fitted)
    assert f"{arms[1]}: 33" in html  # the figure alt text quotes the analysed counts
    # counts from the patient table when the summary lacks them
    for k in ("n_failed", "n_analysed"):
        del ctx["summary"]["arms"][arms[1]][k]
    cells = _summary_row(render_report(ctx), arms[1])
    assert cells[1:4] == ["40", "7", "33"]


def test_nan_summary_values_render_as_dash():
    ctx = make_ctx("paired")
    for s in ctx["summary"]["arms"].values():
        for k, v in list(s.items()):
            if k in ("n",):
                continue
            s[k] = [NAN, None, NAN] if isinstance(v, list) else (None if k.startswith("median") else NAN)
    for p in ctx["summary"]["paired"].values():
        p["rmst_diff_24"] = {k: NAN for k in p["rmst_diff_24"]}
        p["hr"] = {"estimate": None, "ci_low": None, "ci_high": None, "p": NAN}
        p["individual"]["frac_gain"] = NAN
    html = render_report(ctx)
    cells = _summary_row(html, ARMS[1])
    assert cells.count(DASH) >= 12, cells
    assert "nan" not in " ".join(cells).lower() and "None" not in " ".join(cells)
    table = html.split('id="table-paired"')[1].split("</table>")[0]
    assert DASH in table and "nan" not in table.lower()


def test_arm_name_is_escaped():
    arms = ["ctrl", "<b>&"]
    html = render_report(make_ctx("paired", arms=arms, n=30))
    assert "<b>&" not in html
    assert "&lt;b&gt;&amp;" in html
    assert _summary_row(html, "&lt;b&gt;&amp;")[1] == "30"


def test_randomized_design_renders_power_not_paired():
    html = render_report(make_ctx("randomized"))
    p = parse(html)
    assert {"section-power", "table-power", "fig-power", "fig-hr-dist", "table-summary", "fig-km-os"} <= p.ids
    assert not {"section-paired", "fig-paired", "table-paired"} & p.ids
    table = html.split('id="table-power"')[1].split("</table>")[0]
    assert "62.0%<br><span class=\"ci\">(55.0–69.0)</span>" in table and "not reached" in table and "180" in table


def test_all_patients_failed_arm_renders_with_warning():
    arms = ARMS
    ctx = make_ctx("paired", arms=arms, fail={arms[2]: (60, "max_steps")})
    ctx["paired_deltas"][arms[2]] = np.full(60, np.nan)
    html = render_report(ctx)
    p = parse(html)
    assert "warning-failures" in p.ids
    assert f"Arm {arms[2]}: all 60 patients failed" in html.replace("&#39;", "'")
    cells = _summary_row(html, arms[2])
    assert cells[1:4] == ["60", "60", "0"]
    assert cells[4] == DASH
    assert {"fig-km-os", "fig-km-pfs", "fig-waterfall"} <= p.ids


def test_control_arm_all_failed_and_no_samples():
    ctx = make_ctx("randomized", arms=ARMS[:2], fail={ARMS[0]: (60, "max_steps")})
    ctx["samples"], ctx["cycles"], ctx["methods"] = {}, {}, {}
    html = render_report(ctx)
    assert "No time courses were kept" in html and "No methods description" in html


def test_old_render_wrapper():
    ctx = make_ctx("paired", arms=ARMS[:2], n=30)
    df = ctx["patients"].drop(columns=["best_scan_change_pct"])
    df["best_tumour_change_pct"] = -10.0
    df["status"] = 0
    html = render("old", "old caller", df, ctx["summary"], ctx["samples"], ctx["manifest"])
    p = parse(html)
    assert {"table-summary", "fig-km-os", "fig-waterfall", "fig-trajectories"} <= p.ids
    assert math.isfinite(len(html)) and "old caller" in html


def _square(x):
    return x * x


def _dies_in_a_worker(parent_pid, x):
    import os

    if os.getpid() != parent_pid:
        os._exit(3)
    return -x


def _fails(x):
    raise ValueError(f"figure {x} cannot be drawn")


def _hangs_in_a_worker(parent_pid, x):
    import os
    import time

    if os.getpid() != parent_pid:
        time.sleep(120)
    return x + 1


def test_figures_drawn_in_worker_processes_are_the_same_bytes(monkeypatch):
    """The report's figures are drawn side by side in forked workers: the HTML is byte-identical to drawing them
    one after the other in this process."""
    from chemohost.report import parallel

    ctx = make_ctx("paired")
    monkeypatch.setenv("CHEMOHOST_REPORT_WORKERS", "1")
    serial = render_report(ctx)
    monkeypatch.setenv("CHEMOHOST_REPORT_WORKERS", "3")
    assert parallel.figure_workers(5) == (3 if parallel.sys.platform.startswith("linux") else 1)
    assert render_report(ctx) == serial
    ctx = make_ctx("randomized")
    html = render_report(ctx)
    monkeypatch.setenv("CHEMOHOST_REPORT_WORKERS", "1")
    assert render_report(ctx) == html


def test_a_figure_whose_worker_fails_is_drawn_in_this_process(monkeypatch):
    import os

    from chemohost.errors import ChemohostError
    from chemohost.report.parallel import figure_workers, render_figures

    jobs = {"a": (_square, (3,)), "b": (_dies_in_a_worker, (os.getpid(), 5)), "c": (_square, (4,))}
    assert render_figures(jobs, workers=2) == {"a": 9, "b": -5, "c": 16}
    assert list(render_figures(jobs, workers=2)) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="figure 7 cannot be drawn"):  # raised from this process, as without workers
        render_figures({"a": (_square, (1,)), "x": (_fails, (7,))}, workers=2)
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("CHEMOHOST_REPORT_WORKERS", bad)
        with pytest.raises(ChemohostError, match="CHEMOHOST_REPORT_WORKERS.*whole number >= 1"):
            figure_workers(3)


def test_a_figure_whose_worker_hangs_is_drawn_in_this_process(monkeypatch):
    """A worker stuck past the timeout: its figure and the ones not yet collected are drawn here, the stuck
    worker is terminated (the call does not wait for it) and no worker process is left behind."""
    import multiprocessing
    import os
    import sys
    import time

    from chemohost.report import parallel

    if not sys.platform.startswith("linux"):
        pytest.skip("forked workers are Linux-only")
    monkeypatch.setattr(parallel, "TIMEOUT_S", 2.0)
    jobs = {"a": (_square, (3,)), "b": (_hangs_in_a_worker, (os.getpid(), 5)), "c": (_square, (4,))}
    t0 = time.monotonic()
    assert parallel.render_figures(jobs, workers=2) == {"a": 9, "b": 6, "c": 16}
    assert time.monotonic() - t0 < 60.0  # not the worker's 120 s
    time.sleep(0.5)
    assert not [c for c in multiprocessing.active_children() if c.is_alive()]
