"""`chemohost export petab`: a PEtab v1 problem that petablint accepts, whose SBML + condition
reproduce chemohost (libRoadRunner), loadable by pyPESTO; bad problems exit 2 with clear errors."""

import json
import math
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import chemohost as ch
from chemohost.calibration import load_problem
from chemohost.calibration.problem import ProblemSpec
from chemohost.cli import main

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("observable,species,condition,time,time_unit,value,unit,spread,spread_type,n,censoring,lloq,statistic,"
          "source,location,extraction,notes")
ROWS = [
    "ANC,human,gem_1000,0,day,4000,cells/uL,1000,sd,20,none,,mean,synthetic,,,",
    "ANC,human,gem_1000,7.5,day,3000,cells/uL,900,sd,20,none,,mean,synthetic,,,",
    "ANC,human,gem_1000,22,day,1500,cells/uL,600,sd,20,none,,mean,synthetic,,,",
    "ANC,human,gem_500,10,day,3500,cells/uL,600,sd,20,none,,mean,synthetic,,,",
    "ANC,human,gem_500,22,day,2500,cells/uL,600,sd,20,none,,mean,synthetic,,,",
    "dfdctp,human,gem_1000,2,h,20000,nmol/L,5000,sd,10,none,,mean,synthetic,,,",
    "dfdctp,human,gem_1000,24,h,9000,nmol/L,3000,sd,10,none,,mean,synthetic,,,",
    "dfdctp,human,gem_500,12,h,10000,nmol/L,3000,se,10,none,,mean,synthetic,,,",
    "dfdctp,human,gem_500,30,h,4,umol/L,1,se,10,none,,mean,synthetic,,,",
    "dfdctp,human,gem_500,300,h,,nmol/L,,,,left,50,mean,synthetic,,,",
]
CONDITIONS = {
    "gem_1000": {"species": "human", "description": "gemcitabine 1000 mg/m2 30-min d1,8,15 q28",
                 "regimens": [{"drug": "gemcitabine", "dose": "1000 mg/m2", "route": "iv", "infusion": "30 min",
                               "days": [1, 8, 15], "cycle_length": "28 day", "cycles": 2}]},
    "gem_500": {"species": "human", "description": "gemcitabine 500 mg/m2 30-min d1,8,15 q28",
                "regimens": [{"drug": "gemcitabine", "dose": "500 mg/m2", "route": "iv", "infusion": "30 min",
                              "days": [1, 8, 15], "cycle_length": "28 day", "cycles": 2}]},
}


def _problem(**changes):
    p = {"problem": "synthetic_gem", "model": "host_response", "species": "human",
         "parameters": {"BSA": "1.8 m2"},
         "measurements": [{"file": "meas.csv"}], "conditions": {"file": "conditions.yaml"},
         "observables": {"ANC": {"formula": "ANC", "noise": "lognormal", "sigma": 0.3},
                         "dfdctp": {"noise": "normal", "sigma": "2000 nmol/L"}},
         "estimate": {"bm_slope_gem": {"scale": "log10", "lower": 0.01, "upper": 10,
                                       "prior": {"type": "logNormal", "parameters": [-1.07, 0.5]}},
                      "CL_gem": {"scale": "log10", "lower": "1 L/min", "upper": "10 L/min",
                                 "prior": {"type": "parameterScaleNormal", "parameters": [3.59, 0.2]}}}}
    p.update(changes)
    return p


def _write(folder: Path, problem=None, rows=None, conditions=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meas.csv").write_text("\n".join([HEADER, *(ROWS if rows is None else rows)]) + "\n")
    (folder / "conditions.yaml").write_text(yaml.safe_dump(CONDITIONS if conditions is None else conditions))
    path = folder / "problem.yaml"
    path.write_text(yaml.safe_dump(_problem() if problem is None else problem, sort_keys=False))
    return path


def _petablint(yaml_file: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("petablint")
    cmd = [str(exe)] if exe.exists() else [shutil.which("petablint") or "petablint"]
    return subprocess.run([*cmd, "-v", str(yaml_file)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("petab")
    d = tmp_path_factory.mktemp("petab")
    path = _write(d / "in")
    assert main(["export", "petab", "--problem", str(path), "--out", str(d / "out")]) == 0
    return path, d / "out"


def test_petablint_accepts_the_export(exported):
    _, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["problem.yaml", "model.xml", "conditions.tsv", "observables.tsv", "measurements.tsv", "parameters.tsv",
         "censored_measurements.tsv", "measurement_sources.tsv", "chemohost_petab.json", "COMPLETE.json"])
    from chemohost.outputs import verify_output

    assert set(verify_output(out)["files"]) == {p.name for p in out.iterdir()} - {"COMPLETE.json"}
    res = _petablint(out / "problem.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "completed successfully" in res.stdout + res.stderr


def test_tables_units_and_sidecar(exported):
    path, out = exported
    cond = pd.read_csv(out / "conditions.tsv", sep="\t").set_index("conditionId")
    assert cond.loc["gem_1000", "in_gem_1000"] == 1 and cond.loc["gem_1000", "in_gem_500"] == 0
    assert cond.loc["gem_500", "in_gem_500"] == 1 and cond.loc["gem_500", "in_gem_1000"] == 0
    obs = pd.read_csv(out / "observables.tsv", sep="\t").set_index("observableId")
    assert obs.loc["obs_ANC", "observableTransformation"] == "log"
    assert obs.loc["obs_dfdctp", "observableTransformation"] == "lin"
    assert float(obs.loc["obs_dfdctp", "noiseFormula"]) == pytest.approx(2.0)  # 2000 nmol/L in umol/L
    m = pd.read_csv(out / "measurements.tsv", sep="\t")
    assert len(m) == 9  # the left-censored row is kept aside, not dropped
    anc = m[m.observableId == "obs_ANC"]
    assert anc.measurement.tolist() == pytest.approx([4.0, 3.0, 1.5, 3.5, 2.5])  # cells/uL -> 1e9/L
    dct = m[m.observableId == "obs_dfdctp"]
    assert dct.time.tolist() == pytest.approx([2 / 24, 1.0, 0.5, 1.25])  # h -> day
    assert dct.measurement.tolist() == pytest.approx([20.0, 9.0, 10.0, 4.0])  # nmol/L -> umol/L
    par = pd.read_csv(out / "parameters.tsv", sep="\t").set_index("parameterId")
    assert set(par.index) == {"bm_slope_gem", "CL_gem"}
    assert par.loc["CL_gem", "lowerBound"] == pytest.approx(1440.0)  # 1 L/min in L/day
    assert par.loc["CL_gem", "nominalValue"] == pytest.approx(3888.0)
    assert par.loc["bm_slope_gem", "objectivePriorType"] == "logNormal"
    assert par.loc["bm_slope_gem", "objectivePriorParameters"] == "-1.07;0.5"
    assert (par.parameterScale == "log10").all() and (par.estimate == 1).all()
    cens = pd.read_csv(out / "censored_measurements.tsv", sep="\t")
    assert len(cens) == 1 and cens.lloq[0] == pytest.approx(0.05) and cens.time[0] == pytest.approx(12.5)
    side = json.loads((out / "chemohost_petab.json").read_text())
    import hashlib
    assert side["problem_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert side["chemohost_version"] == ch.__version__ and side["model_code_hash"]
    assert side["n_censored"] == 1 and side["censored"][0]["censoring"] == "left"
    assert side["conditions"]["gem_1000"]["indicator"] == "in_gem_1000"
    assert side["conditions"]["gem_1000"]["doses"] == 6


def test_roadrunner_reproduces_chemohost_per_condition(exported):
    roadrunner = pytest.importorskip("roadrunner")
    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)
    path, out = exported
    prob = load_problem(path)
    sbml = (out / "model.xml").read_text()
    cond = pd.read_csv(out / "conditions.tsv", sep="\t").set_index("conditionId")
    meas = pd.read_csv(out / "measurements.tsv", sep="\t")
    p = np.array([prob.values[n] for n in prob.names])
    peak = {}
    for cid, c in prob.conditions.items():
        rr = roadrunner.RoadRunner(sbml)
        rr.integrator.relative_tolerance = 1e-10
        rr.integrator.absolute_tolerance = 1e-14
        rr.integrator.maximum_num_steps = 200000
        # PEtab: the condition's values replace the model's before the start (as pyPESTO does it)
        rr.setValues({col: float(v) for col, v in cond.loc[c.petab_id].items() if col != "conditionName"})
        rr.reset()
        t = np.unique(np.concatenate([[0.0], meas.time[meas.simulationConditionId == c.petab_id],
                                      [0.3, 3.0, 15.2, 40.0]]))
        rr.timeCourseSelections = ["time", "ANC", "dfdctp"]
        theirs = np.array(rr.simulate(times=list(t)))[:, 1:]
        ours = ch.simulate(prob.model, p[None], c.regimens, t, ["ANC", "dfdctp"],
                           options=ch.SolverOptions(rtol=1e-10, atol=1e-14)).values[0]
        floor = np.maximum(1e-6 * np.abs(ours).max(axis=0), 1e-12)
        err = (np.abs(theirs - ours) / np.maximum(np.abs(ours), floor)).max(axis=0)
        assert err.max() <= 1e-3, f"{cid}: relative error ANC {err[0]:.2e}, dfdctp {err[1]:.2e}"
        peak[cid] = theirs[:, 1].max()
        assert peak[cid] > 1.0  # this condition's doses were given
    assert peak["gem_500"] < 0.8 * peak["gem_1000"]  # ... and only this condition's (gated events)


def test_reset_after_a_run_that_ends_during_an_infusion(exported):
    """A run stopped mid-infusion must not leave the infusion on for the next run (reset per condition)."""
    roadrunner = pytest.importorskip("roadrunner")
    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)
    _, out = exported
    rr = roadrunner.RoadRunner((out / "model.xml").read_text())
    rr.timeCourseSelections = ["time", "dfdctp"]
    runs = []
    for cond, times in (("gem_1000", [0, 0.01, 0.5]), ("gem_1000", [0, 0.01]), ("gem_1000", [0, 0.01, 0.5]),
                        ("gem_500", [0, 0.01, 0.5])):
        rr.setValues({"in_gem_1000": float(cond == "gem_1000"), "in_gem_500": float(cond == "gem_500")})
        rr.reset()
        runs.append(np.array(rr.simulate(times=times))[:, 1])
    assert runs[2] == pytest.approx(runs[0], rel=1e-6)
    assert runs[3][-1] < 0.9 * runs[0][-1]


def test_pypesto_builds_a_finite_objective_with_roadrunner(exported):
    petab = pytest.importorskip("petab.v1")
    pypesto_petab = pytest.importorskip("pypesto.petab")
    roadrunner = pytest.importorskip("roadrunner")
    roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)
    _, out = exported
    problem = petab.Problem.from_yaml(str(out / "problem.yaml"))
    importer = pypesto_petab.PetabImporter(problem, simulator_type="roadrunner")
    pp = importer.create_problem()
    x = np.asarray(problem.x_nominal_free_scaled)
    assert pp.x_names == ["bm_slope_gem", "CL_gem"]
    fval = pp.objective(x)
    assert math.isfinite(fval)
    assert pp.objective(x + 0.2) != fval


def test_row_sigma_and_estimated_sigma(tmp_path):
    pytest.importorskip("petab")
    obs = {"ANC": {"formula": "neut + mdsc", "unit": "1e9/L", "noise": "normal",
                   "sigma": {"estimate": True, "lower": "0.01 1e9/L", "upper": "3 1e9/L", "scale": "log"}},
           "dfdctp": {"formula": "dfdctp", "noise": "lognormal", "sigma": {"spread": "se"}}}
    path = _write(tmp_path / "in", _problem(observables=obs))
    assert main(["export", "petab", "--problem", str(path), "--out", str(tmp_path / "out")]) == 0
    res = _petablint(tmp_path / "out" / "problem.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    o = pd.read_csv(tmp_path / "out" / "observables.tsv", sep="\t").set_index("observableId")
    assert o.loc["obs_ANC", "noiseFormula"] == "sigma_ANC"
    assert o.loc["obs_dfdctp", "noiseFormula"] == "noiseParameter1_obs_dfdctp"
    m = pd.read_csv(tmp_path / "out" / "measurements.tsv", sep="\t")
    d = m[m.observableId == "obs_dfdctp"]
    # se from sd/sqrt(n) (first two rows) or as given; then the log-normal sd sqrt(ln(1 + (s/m)^2))
    s = np.array([5000 / math.sqrt(10), 3000 / math.sqrt(10), 3000, 1000]) / np.array([20000, 9000, 10000, 4000])
    assert d.noiseParameters.tolist() == pytest.approx(np.sqrt(np.log1p(s ** 2)).tolist())
    par = pd.read_csv(tmp_path / "out" / "parameters.tsv", sep="\t").set_index("parameterId")
    assert par.loc["sigma_ANC", "parameterScale"] == "log" and par.loc["sigma_ANC", "upperBound"] == 3


def test_tables_and_conditions_from_chemohost_data(tmp_path, monkeypatch):
    """`{table: NAME}` and the default conditions go through chemohost.data's loaders."""
    rows = pd.DataFrame([dict(zip(HEADER.split(","), r.split(","))) for r in ROWS])
    for c in ("time", "value", "spread", "lloq"):  # as chemohost.data.load_table returns them
        rows[c] = pd.to_numeric(rows[c].replace("", np.nan))
    rows["n"] = pd.to_numeric(rows["n"].replace("", np.nan)).astype("Int64")
    fake = types.ModuleType("chemohost.data")
    fake.load_table = lambda name, path=None: rows if name == "synthetic" else (_ for _ in ()).throw(
        ch.ChemohostError(f"no table {name}"))
    fake.load_conditions = lambda: CONDITIONS
    monkeypatch.setitem(sys.modules, "chemohost.data", fake)
    monkeypatch.setattr(ch, "data", fake, raising=False)
    path = _write(tmp_path / "in", _problem(measurements=[{"table": "synthetic", "observables": ["ANC"]}],
                                            conditions=None))
    doc = yaml.safe_load(path.read_text())
    doc.pop("conditions")
    path.write_text(yaml.safe_dump(doc))
    prob = load_problem(path)
    assert len(prob.rows) == 5 and prob.skipped == 5 and not prob.censored
    assert [r.value for r in prob.rows] == pytest.approx([4.0, 3.0, 1.5, 3.5, 2.5])
    doc["measurements"] = [{"table": "synthetic", "observables": ["dfdctp"]}]
    doc["observables"]["dfdctp"]["sigma"] = {"spread": "sd"}
    path.write_text(yaml.safe_dump(doc))
    prob = load_problem(path)  # n (nullable Int64) is used to turn se into sd
    assert len(prob.rows) == 4 and len(prob.censored) == 1
    assert prob.rows[2].sigma == pytest.approx(3000 * math.sqrt(10) / 1000)
    assert prob.tables[0]["table"] == "synthetic"


def test_out_folder_refused_unless_force(exported, tmp_path, capsys):
    path, _ = exported
    out = tmp_path / "o"
    out.mkdir()
    (out / "stale.txt").write_text("x")
    assert main(["export", "petab", "--problem", str(path), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", "petab", "--problem", str(path), "--out", str(out), "--force"]) == 0
    assert not (out / "stale.txt").exists() and (out / "problem.yaml").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no staging leftovers


def _bad_rows(old, new):
    return [r.replace(old, new) if i == 0 else r for i, r in enumerate(ROWS)]


@pytest.mark.parametrize("problem,rows,expect", [
    (None, ["AUC_gem,human,gem_1000,1,day,30,mg*h/L,,,,none,,mean,synthetic,,,"],
     ["meas.csv line 2", "observable 'AUC_gem' is not mapped", "mapped in 'observables': ANC, dfdctp"]),
    (None, ["dfdctp,human,gem_1000,2,h,20,ng/mL,,,,none,,mean,synthetic,,,"],
     ["meas.csv line 2", "'ng/mL' does not convert", "umol/L"]),
    (None, _bad_rows("gem_1000", "gem_2000"),
     ["meas.csv line 2", "condition 'gem_2000' is not defined", "allowed: gem_1000, gem_500"]),
    (None, _bad_rows("day", "furlong"), ["meas.csv line 2", "'furlong' is not a time unit"]),
    (_problem(estimate={"bm_slope_gen": {"lower": 0.1, "upper": 1}}), None,
     ["field 'estimate.bm_slope_gen'", "not a parameter", "did you mean 'bm_slope_gem'"]),
    (_problem(estimate={"bm_slope_gem": {"lower": 10, "upper": 1}}), None,
     ["field 'estimate.bm_slope_gem.lower'", "must be below upper bound"]),
    (_problem(estimate={"bm_slope_gem": {"lower": 1, "upper": 10}}), None,
     ["field 'estimate.bm_slope_gem.nominal'", "outside"]),
    (_problem(estimate={"bm_slope_gem": {"prior": {"type": "gamma", "parameters": [1, 2]}}}), None,
     ["estimate.bm_slope_gem.prior.type"]),
    (_problem(measurements=[{"file": "nope.csv"}]), None,
     ["field 'measurements[0].file'", "measurement file not found", "nope.csv"]),
    (_problem(conditions={"file": "nope.yaml"}), None, ["field 'conditions.file'", "conditions file not found"]),
    (_problem(observables={"ANC": {"formula": "ANX", "noise": "normal", "sigma": 1}}), None,
     ["field 'observables.ANC.formula'", "ANX", "did you mean 'ANC'"]),
    (_problem(observables={"ANC": {"formula": "ANC", "noise": "normal", "sigma": "1 mg"}}), None,
     ["field 'observables.ANC.sigma'", "does not convert"]),
    (_problem(observable={"ANC": {}}), None, ["field 'observable' is not a known field", "allowed here"]),
    (_problem(observables={"ANC": {"noise": "lognormal", "sigma": 0.3}}), None,
     ["observable 'dfdctp' is not mapped"]),
])
def test_bad_inputs_exit_2(tmp_path, capsys, problem, rows, expect):
    path = _write(tmp_path, problem, rows)
    rc = main(["export", "petab", "--problem", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(path) in err
    for e in expect:
        assert e in err, err
    assert not (tmp_path / "out").exists()


def test_missing_problem_file_exits_2(tmp_path, capsys):
    rc = main(["export", "petab", "--problem", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "out")])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_shipped_problem_is_valid(tmp_path):
    """The shipped example parses; its full export needs chemohost.data's tables (skipped until then)."""
    path = ROOT / "problems" / "pancreatic_gemcitabine_human.yaml"
    spec = ProblemSpec.model_validate(yaml.safe_load(path.read_text()))
    model = ch.get_model(spec.model)
    assert set(spec.estimate) <= set(model.parameters)
    try:
        from chemohost.data import list_tables
    except ImportError:
        pytest.skip("chemohost.data (measurement tables) is not available yet")
    if "pdac_gem_blood_counts" not in list_tables():
        pytest.skip("measurement table pdac_gem_blood_counts is not shipped yet")
    prob = load_problem(path)
    assert prob.rows
    pytest.importorskip("petab")
    assert main(["export", "petab", "--problem", str(path), "--out", str(tmp_path / "out")]) == 0
    res = _petablint(tmp_path / "out" / "problem.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
