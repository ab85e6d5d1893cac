"""Issue 8 (first slice): strict quantities, paired random streams, failed patients as rows."""

import json

import numpy as np
import pandas as pd
import pytest

from chemohost.errors import ChemohostError, ScenarioError
from chemohost.protocol.dosing import parse_dose
from chemohost.studies.trial import Trial, os_exponentials, patient_stream, run_trial
from chemohost.units import parse_quantity, to_internal

from test_trial import BASE, _trial

BAD = ["1,000 mg/m2", "1 000 mg/m2", "1,5 h", "1.000.000 mg", "1.000 mg/m2", "1000 mg 2", "1'000 mg",
       "1_000 mg", "1\u202f000 mg", "12 000 mg", "1000 mg/m2,", "mg"]


@pytest.mark.parametrize("text", BAD)
def test_ambiguous_quantities_are_rejected_not_misread(text):
    with pytest.raises(ChemohostError, match="cannot read the quantity|unknown unit"):
        parse_quantity(text, "day")


@pytest.mark.parametrize("text,unit,expected", [
    ("1000 mg/m2", "mg/m**2", 1000.0), ("1.5 h", "day", 1.5 / 24), ("30 min", "day", 30 / 1440),
    ("0.5 1/day", "1/day", 0.5), ("3.5 1e9/L", "1e9/L", 3.5), ("5 cm3", "cm**3", 5.0),
    ("2.500 mg", "mg", 2.5), ("1e-3 1/(uM*day)", "1/(uM*day)", 1e-3), ("12 month", "day", 365.25)])
def test_plain_quantities_still_read(text, unit, expected):
    assert to_internal(text, unit) == pytest.approx(expected, rel=1e-12)


def test_thousands_separator_dose_fails_with_file_and_field():
    for field, value in (("dose", "1,000 mg/m2"), ("dose", "1 000 mg/m2"), ("infusion", "1,5 h")):
        d = json.loads(json.dumps(BASE))
        d["arms"]["gem"][0][field] = value
        with pytest.raises(ScenarioError) as e:
            Trial.from_dict(d, "mini.yaml")
        msg = str(e.value)
        assert "mini.yaml" in msg and f"arms.gem[0].{field}" in msg and "thousands" in msg
    with pytest.raises(ChemohostError):
        parse_dose("1,000 mg/m2")
    with pytest.raises(ScenarioError, match="follow_up"):
        _trial(follow_up="1,5 month")
    with pytest.raises(ScenarioError, match="parameters"):
        _trial(parameters={"bm_slope_gem": "0,3 1/uM"})


def test_patient_streams_keyed_by_patient_and_endpoint_only():
    a = os_exponentials(3, 10)
    b = os_exponentials(3, 4, patient_ids=[7, 8, 9, 0])
    assert np.array_equal(a[[7, 8, 9, 0]], b)  # independent of n, order and arm
    assert not np.array_equal(a, os_exponentials(4, 10))
    u = patient_stream(3, "os", [1, 2], 5)
    assert u.shape == (2, 5) and np.all((u >= 0) & (u < 1))


def test_patient_streams_kept_for_reuse_are_the_streams_themselves(monkeypatch):
    """Recent draws are kept (a trial asks for the same patients' streams in every arm): a repeated call returns
    the same values as deriving them anew, a caller that changes what it got does not change a later call, and
    the kept draws stay within their byte bound."""
    from chemohost.studies import streams

    def fresh(seed, code, ids, size):
        return np.array([np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(code, i))))
                         .random(size) for i in ids])

    ids = np.arange(100, 140)
    first = patient_stream(11, "scan_error", ids, 7)
    np.testing.assert_array_equal(first, fresh(11, streams.STREAMS["scan_error"], ids, 7))
    first[:] = -1.0
    again = patient_stream(11, "scan_error", ids, 7)
    np.testing.assert_array_equal(again, fresh(11, streams.STREAMS["scan_error"], ids, 7))
    # another endpoint, seed, size or set of patients is another stream
    assert not np.array_equal(patient_stream(11, "new_lesion", ids, 7), again)
    assert not np.array_equal(patient_stream(12, "scan_error", ids, 7), again)
    np.testing.assert_array_equal(patient_stream(11, "scan_error", ids[::-1], 7), again[::-1])
    monkeypatch.setattr(streams._recent, "max_bytes", 3 * ids.size * 7 * 8)
    for seed in range(20, 30):
        patient_stream(seed, "os", ids, 7)
    kept = streams._recent
    assert kept.bytes <= kept.max_bytes and len(kept.entries) <= 3
    assert kept.bytes == sum(a.nbytes for arrays, _ in kept.entries.values() for a in arrays)
    assert patient_stream(11, "os", [], 7).shape == (0, 7)


def test_identical_arm_gives_zero_individual_effects_and_hr_one():
    d = json.loads(json.dumps(BASE))
    d["arms"] = {"gem": d["arms"]["gem"], "gem again": d["arms"]["gem"]}
    res = run_trial(Trial.from_dict(d, "mini.yaml"), patients=16)
    p = res.patients
    a, b = (p[p.arm == k].set_index("patient").sort_index() for k in ("gem", "gem again"))
    np.testing.assert_array_equal(a["os_months"].to_numpy(), b["os_months"].to_numpy())
    np.testing.assert_array_equal(a["pfs_months"].to_numpy(), b["pfs_months"].to_numpy())
    hr = res.summary["arms"]["gem again"]["hr_os_vs_control"][0]
    assert hr == pytest.approx(1.0, abs=1e-9)


def test_swapping_arm_order_leaves_every_patient_unchanged():
    d = json.loads(json.dumps(BASE))
    d["arms"] = dict(reversed(list(d["arms"].items())))
    a = run_trial(_trial(), patients=10).patients
    b = run_trial(Trial.from_dict(d, "mini.yaml"), patients=10).patients
    cols = ["os_months", "os_event", "pfs_months", "best_response", "neutropenia_grade_max"]
    for arm in BASE["arms"]:
        x = a[a.arm == arm].set_index("patient")[cols].sort_index()
        y = b[b.arm == arm].set_index("patient")[cols].sort_index()
        pd.testing.assert_frame_equal(x, y)


def test_failed_patient_is_a_row_not_a_crash():
    from chemohost.engine.codegen import compile_model
    from chemohost.engine.simulate import simulate
    from chemohost.population.virtual import sample_population

    tr = _trial()
    names, P, _ = sample_population(tr.model, "human", {}, 5, 1)
    cm = compile_model(tr.model)
    regs = tr.arms["gem"]
    times = np.arange(0.0, 30.0)
    alone = simulate(cm, P[[0, 2, 3, 4]], regs, times, ["ANC"])
    P2 = P.copy()
    P2[1, names.index("BSA")] = np.nan
    P2[1, 0] = np.inf
    res = simulate(cm, P2, regs, times, ["ANC"])
    assert res.status[1] != 0 and np.all(res.status[[0, 2, 3, 4]] == 0)
    np.testing.assert_allclose(res.output("ANC")[[0, 2, 3, 4]], alone.output("ANC"), rtol=1e-12)
    assert np.isnan(res.output("ANC")[1]).all()


def test_km_rmst_matches_lifelines_with_ties_and_censoring():
    from lifelines import KaplanMeierFitter
    from lifelines.utils import restricted_mean_survival_time

    from chemohost.studies.survival import km_rmst

    rng = np.random.default_rng(1)
    T = np.round(rng.exponential(6, 80))  # many ties
    E = rng.random(80) < 0.6
    for tau in (2.0, 6.0, 12.0, 50.0):
        ref = restricted_mean_survival_time(KaplanMeierFitter().fit(T, E), t=tau)
        assert km_rmst(T, E, np.ones((1, 80), dtype=np.int64), [tau])[0, 0] == pytest.approx(ref, rel=1e-10)


def test_bootstrap_rmst_by_copy_counts_equals_resampled_rows():
    """The paired bootstrap takes each replicate's draws as copy counts (one sort per arm); each replicate's
    RMST must be that of the resampled rows (ties, censoring, patients drawn several times or never)."""
    from chemohost.studies.survival import km_rmst, paired_rmst

    rng = np.random.default_rng(4)
    n = 60
    T = np.round(rng.exponential(6, n))  # many ties, some at 0
    E = rng.random(n) < 0.6
    idx = rng.integers(0, n, size=(300, n))
    W = np.zeros((300, n), dtype=np.int64)
    for b in range(300):
        np.add.at(W[b], idx[b], 1)
    one = np.ones((1, n), dtype=np.int64)
    for tau in (3.0, 8.0, 40.0):
        by_rows = np.array([km_rmst(T[i], E[i], one, [tau])[0, 0] for i in idx])  # each replicate's rows, sorted
        by_counts = km_rmst(T, E, W, [tau])[0]
        np.testing.assert_allclose(by_counts, by_rows, rtol=1e-12, atol=1e-12)
        assert np.ptp(by_rows) > 0.1  # the replicates differ: the comparison is not between constants
    # the paired bootstrap of the difference, in blocks: the same replicates
    T2 = T + rng.integers(0, 3, n)
    rc, ra, boot = paired_rmst(T, E, T2, E, idx, [8.0])
    ref = [km_rmst(T2[i], E[i], one, [8.0])[0, 0] - km_rmst(T[i], E[i], one, [8.0])[0, 0] for i in idx]
    np.testing.assert_allclose(boot[0], ref, rtol=1e-12, atol=1e-12)
    assert ra[0] - rc[0] > 0


def test_paired_effects_known_difference_and_identical_arms():
    from chemohost.studies.survival import paired_effects

    rng = np.random.default_rng(2)
    e = rng.standard_exponential(3000)  # the same luck in both arms
    lam_c, lam_a, tau = 1 / 6, 1 / 8, 12.0
    tc, ta = np.minimum(e / lam_c, 24), np.minimum(e / lam_a, 24)
    r = paired_effects(tc, tc < 24, ta, ta < 24, follow_up=24, n_boot=400)
    true = (1 - np.exp(-tau * lam_a)) / lam_a - (1 - np.exp(-tau * lam_c)) / lam_c
    d = r["rmst_diff_12"]
    assert d["ci_low"] < true < d["ci_high"] and d["ci_high"] - d["ci_low"] < 0.2
    assert r["hr"]["estimate"] == pytest.approx(0.75, abs=0.03)  # robust-variance Cox on stacked pairs
    assert r["individual"]["frac_loss"] == 0.0 and r["individual"]["frac_gain"] > 0.5
    same = paired_effects(tc, tc < 24, tc, tc < 24, follow_up=24, n_boot=50)
    assert same["hr"]["estimate"] == 1.0 and same["individual"]["frac_gain"] == 0.0
    assert same["rmst_diff_12"]["estimate"] == 0.0 and same["rmst_diff_12"]["ci_high"] == 0.0
    nan = paired_effects(np.r_[tc[:10], np.nan], np.r_[tc[:10] < 24, False], np.r_[ta[:10], 1.0],
                         np.r_[ta[:10] < 24, True], n_boot=20)
    assert nan["n_pairs"] == 10 and nan["n_excluded"] == 1


def test_trial_summary_reports_paired_effects_and_failures():
    d = json.loads(json.dumps(BASE))
    d["arms"]["gem again"] = d["arms"]["gem"]
    res = run_trial(Trial.from_dict(d, "mini.yaml"), patients=12)
    s = res.summary
    assert s["design"] == "paired" and set(s["paired"]) == {"gem + anti-IL-1a", "gem again"}
    same = s["paired"]["gem again"]
    assert same["hr"]["estimate"] == 1.0 and same["individual"]["frac_unchanged"] == 1.0
    for arm, a in s["arms"].items():
        assert a["n_run"] == 12 and a["n_failed"] == 0 and a["n_analysed"] == 12
        assert 0 <= a["pfs_events"] <= 12 and 0 <= a["os_events"] <= 12 and len(a["hr_pfs_vs_control"]) == 3
    assert s["arms"]["gem again"]["hr_pfs_vs_control"][0] == pytest.approx(1.0, abs=1e-9)
    assert set(res.patients["status"].astype(str)) == {"ok"}


def test_model_without_trial_outputs_fails_at_load_naming_the_field():
    with pytest.raises(ScenarioError, match=r"field 'model'|model.*lacks") as e:
        _trial(model="chemo_core")
    assert "mini.yaml" in str(e.value) and "met_burden" in str(e.value)


def test_negative_parameter_is_rejected_at_load():
    with pytest.raises(ScenarioError, match="cannot be negative") as e:
        _trial(parameters={"CL_gem": "-2 L/min"})
    assert "parameters.CL_gem" in str(e.value)


def test_waterfall_uses_scans_up_to_progression():
    p = run_trial(_trial(follow_up="6 month"), patients=16).patients
    v = p["best_scan_change_pct"].to_numpy(float)
    assert np.isfinite(v).all()
    prog = p["best_response"].astype(str) == "PD"
    # a patient whose best response is progression cannot have a scan at or below -30%
    assert (v[prog.to_numpy()] > -30).all()
    # the daily nadir is never worse than the best scan
    assert (p["best_tumour_change_pct"].to_numpy(float) <= v + 1e-9).all()


def test_arm_where_every_patient_fails_exits_2_and_writes_nothing(tmp_path, capsys):
    import yaml

    from chemohost.cli import main

    d = json.loads(json.dumps(BASE))
    d["solver"] = {"max_steps": 3}  # no patient can finish: every arm fails in the solver
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    assert main(["trial", str(path), "--out", str(out), "--patients", "4"]) == 2
    err = capsys.readouterr().err
    assert "every patient of arm(s)" in err and "failed" in err and str(path) in err
    assert not out.exists()
