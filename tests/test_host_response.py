"""Host-response model: robustness at extremes, mass balance, genetic perturbations, validation."""

import json

import numpy as np
import pytest
import sympy as sp

import chemohost as ch
from chemohost.cli import main
from chemohost.engine.codegen import symbolic
from chemohost.model.perturbations import PERTURBATIONS, perturbation_overrides
from conftest import typical

MOUSE_CHEMO = [ch.Regimen("gemcitabine", 120, "weight", "ip", None, (1,), 7, 2),
               ch.Regimen("cisplatin", 6, "weight", "ip", None, (1,), 7, 2)]
HUMAN_CHEMO = [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 1),
               ch.Regimen("cisplatin", 70, "bsa", "iv", 1 / 24, (2,), 28, 1)]


def _with(names, p, **kw):
    p = p.copy()
    for k, v in kw.items():
        p[names.index(k)] = v
    return p


@pytest.mark.parametrize("species,regs,horizon", [("mouse", MOUSE_CHEMO, 14.0), ("human", HUMAN_CHEMO, 28.0)])
@pytest.mark.parametrize("case", ["zero_dose", "dose", "dose_x10", "no_tumour", "all_knockouts"])
def test_extremes_stay_finite_and_non_negative(species, regs, horizon, case):
    model, names, p = typical("host_response", species)
    if case == "zero_dose":
        regs = [ch.Regimen(r.drug, 0.0, r.basis, r.route, r.infusion, r.days, r.cycle_length, r.cycles, r.start) for r in regs]
    if case == "dose_x10":
        regs = [ch.Regimen(r.drug, 10 * r.dose, r.basis, r.route, r.infusion, r.days, r.cycle_length, r.cycles, r.start)
                for r in regs]
    if case == "no_tumour":
        p = _with(names, p, **perturbation_overrides(["tumour_free"], model.parameters))
    if case == "all_knockouts":
        ko = perturbation_overrides(["casp1_ko", "gsdmd_ko", "gsdme_ko", "il1a_ko", "il1r1_ko"], model.parameters)
        p = _with(names, p, **ko)
    r = ch.simulate(model, p[None], regs, np.linspace(0, horizon, 57), list(model.species))
    assert (r.status == 0).all()
    assert np.isfinite(r.values).all()
    assert (r.values >= 0).all()
    if case == "zero_dose":
        # untreated: marrow stays at its steady state except for the tumour's own IL-1 drive
        assert abs(r.output("hspc")[0, -1] - 1.0) < 0.05


def test_flows_conserve_mass_between_species():
    """Every flow joining two species removes from one exactly what it adds to the other, so the
    sum of a unit's species changes only through flows from or to outside the model."""
    model = ch.get_model("host_response")
    sm = symbolic(model)
    by_unit = {}
    for s in model.species.values():
        by_unit.setdefault(s.unit, []).append(s.name)
    for unit, members in by_unit.items():
        total = sum((sm.derivs[s] for s in members), sp.Integer(0))
        boundary = sp.Integer(0)
        for f in model.flows.values():
            src_in = f.source in members
            tgt_in = f.target in members
            if tgt_in and not src_in:
                boundary += sm.flow_rates[f.name]
            elif src_in and not tgt_in:
                boundary -= sm.flow_rates[f.name]
        assert sp.simplify(total - boundary) == 0, unit


def test_gasdermin_knockout_shifts_death_to_apoptosis():
    model, names, p = typical("host_response", "mouse")
    ko = _with(names, p, ko_gsdmd=0.0)
    t = np.linspace(0, 7, 57)
    outs = ["lytic_flux", "apoptotic_flux", "tumour_death_flux", "il1a_pgml"]
    wt = ch.simulate(model, p[None], MOUSE_CHEMO, t, outs).values[0]
    kd = ch.simulate(model, ko[None], MOUSE_CHEMO, t, outs).values[0]
    lytic = [np.trapezoid(x[:, 0], t) for x in (wt, kd)]
    kill = [np.trapezoid(x[:, 2], t) for x in (wt, kd)]
    assert lytic[1] < 0.3 * lytic[0]                       # lysis mostly gone (GSDME route remains)
    assert kill[1] == pytest.approx(kill[0], rel=0.2)      # total kill preserved (Wang 2017; Li 2023)
    assert kd[:, 3].max() < wt[:, 3].max()                 # less IL-1alpha released


def test_il1r1_knockout_removes_marrow_skew():
    model, names, p = typical("host_response", "mouse")
    t = np.linspace(0, 10, 41)
    wt = ch.simulate(model, p[None], MOUSE_CHEMO, t, ["gmp_frequency"]).output("gmp_frequency")[0]
    ko = ch.simulate(model, _with(names, p, ko_il1r1=0.0)[None], MOUSE_CHEMO, t, ["gmp_frequency"]).output("gmp_frequency")[0]
    assert wt.max() > 1.2 and ko.max() < wt.max() - 0.2


def test_recombinant_il1a_expands_gmp():
    # exogenous IL-1alpha is sufficient for progenitor expansion (Blood 1989 73:678: marked CFU-GM
    # stimulation 48 h after 0.5 ug i.p.) -- here 2 ug i.p. daily x3 in a tumour-free mouse
    model, names, p = typical("host_response", "mouse")
    p = _with(names, p, **perturbation_overrides(["tumour_free"], model.parameters))
    t = np.linspace(0, 5, 41)
    il1 = [ch.Regimen("il1a_recombinant", 0.002, "flat", "ip", None, (1, 2, 3), 7, 1)]
    base = ch.simulate(model, p[None], [], t, ["gmp_frequency", "il1a_pgml"]).values[0]
    dosed = ch.simulate(model, p[None], il1, t, ["gmp_frequency", "il1a_pgml"]).values[0]
    assert dosed[:, 1].max() > 10 * base[:, 1].max()
    assert dosed[np.searchsorted(t, 3.0), 0] > 1.1 * base[np.searchsorted(t, 3.0), 0]


def test_perturbation_table_matches_model():
    model = ch.get_model("host_response")
    for name in PERTURBATIONS:
        assert perturbation_overrides([name], model.parameters)


def test_scenario_perturbations_and_mouse_experiment(tmp_path):
    out = tmp_path / "run"
    assert main(["simulate", "scenarios/mouse_g69_gemcis_interventions.yaml", "--out", str(out)]) == 0
    import pandas as pd
    df = pd.read_parquet(out / "timecourses.parquet")
    assert set(df.arm.unique()) == {"vehicle", "chemo", "chemo + caspase-1 inhibitor", "chemo + anti-IL-1alpha"}
    final = df[df.time_days == df.time_days.max()].set_index("arm")["tumour_total"]
    assert final["chemo + anti-IL-1alpha"] < final["chemo"] < final["vehicle"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(open("scenarios/mouse_gsdmd_knockout_chemo.yaml").read().replace("gsdmd_ko", "gsdmd_knockout"))
    assert main(["simulate", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_validate_command_passes_and_writes_evidence(tmp_path, capsys):
    code = main(["validate", "--out", str(tmp_path / "val")])
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "val" / "validation.json").read_text())
    ids = {r["id"] for r in results}
    assert {"casp1_lytic_fraction", "il1a_serum_tumour_dependent", "gmp_expansion_and_rescue",
            "mdsc_dip_then_rebound", "nlr_rises_tracks_il1", "blockade_improves_tumour_control",
            "repopulation_rises_celecoxib", "human_neutrophil_kinetics"} <= ids
    for r in results:
        assert {"id", "statement", "source", "observed", "expected", "passed"} <= set(r)
        assert r["source"]
        assert (tmp_path / "val" / "figures" / f"{r['id']}.png").exists()
    # every check says whether it guards a calibration or tests a prediction; failures are only the
    # documented known gaps (reported as GAP, with their reason)
    assert {r["kind"] for r in results} == {"calibration", "validation"}
    failed = [r["id"] for r in results if not r["passed"] and not r["known_gap"]]
    assert code == 0 and not failed, (failed, printed)


def test_human_lymphocytes_are_not_emptied_cycle_after_cycle():
    """Adult lymphocyte supply is mostly peripheral (den Braber 2012 Immunity 36:288; bm_f_lymph_marrow):
    six gemcitabine cycles lower blood lymphocytes moderately instead of cumulatively, and the marrow-only
    supply (bm_f_lymph_marrow = 1, the former structure) empties them far more."""
    model, names, p = typical("host_response", "human")
    regs = [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8, 15), 28, 6)]
    t = np.arange(0.0, 169.0, 1.0)
    P = np.stack([p, _with(names, p, bm_f_lymph_marrow=1.0)])
    res = ch.simulate(model, P, regs, t, ["lymph", "NLR"], options=ch.SolverOptions(rtol=1e-6, atol=1e-10))
    lymph = res.output("lymph") / res.output("lymph")[:, :1]
    nlr = res.output("NLR") / res.output("NLR")[:, :1]
    assert lymph[0].min() > 0.5 and nlr[0, -1] < 2.0
    assert lymph[1].min() < 0.5 * lymph[0].min()
