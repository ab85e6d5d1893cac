"""Per-patient doses (event tables) in the engine and in scenarios.

* ``PatientDoses.from_regimens`` runs through the per-patient event path and must give exactly the
  results of the shared-schedule path, including cycle delays of the label delay rule.
* A ragged table (patients with different doses, infusions given by duration or by rate) gives each
  patient what simulating that patient alone under the equivalent regimen gives.
* ``event_table:`` in a scenario replays a CSV; a bad file or a patient mismatch is exit 2 with the
  file, row/field and what is allowed, and nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from chemohost.api import load_scenario
from chemohost.cli import main
from chemohost.engine.simulate import simulate
from chemohost.protocol.dosing import Regimen
from chemohost.protocol.event_table import PatientDoses, read_event_table

ROOT = Path(__file__).resolve().parents[1]
BASE_FILE = ROOT / "scenarios" / "gemcitabine_d1_8_15_q28_human.yaml"


def _scenario(n=30):
    sc = load_scenario(BASE_FILE).with_patients(n=n, variability=True)
    return sc, sc.compiled(), sc.parameter_matrix()


def test_from_regimens_matches_shared_schedule_with_delays():
    sc, cm, P = _scenario(40)
    # a dense weekly schedule with the delay rule so that some cycles are held or delayed
    regs = [Regimen(drug="gemcitabine", dose=1500.0, basis="bsa", route="iv", infusion=0.5 / 24, days=(1, 8, 15),
                    cycle_length=21.0, cycles=6, rule="gemcitabine_label_anc_delay")]
    t = np.arange(0, 141.0)
    a = simulate(cm, P, regs, t, ["ANC", "C_gem"])
    b = simulate(cm, P, PatientDoses.from_regimens(regs, len(P), drugs=sorted(cm.model.drugs)), t, ["ANC", "C_gem"])
    assert (a.dose_status != 1).any(), "the check needs some held/delayed doses"
    assert np.nanmax(a.dose_times - a.nominal_dose_times()) > 0, "the check needs a delayed cycle"
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.dose_factors, b.dose_factors)
    np.testing.assert_array_equal(a.dose_status, b.dose_status)
    np.testing.assert_array_equal(a.dose_times, b.dose_times)
    assert b.doses is None and b.patient_doses is not None


CSV = """patient,time,drug,amount,route,duration,rate
1,2 day,gemcitabine,800 mg/m2,iv,,1600 mg/m2/h
0,0 h,gemcitabine,1000 mg/m2,iv,30 min,
0,1 week,gemcitabine,1000 mg/m2,iv,30 min,
0,14 day,gemcitabine,1000 mg/m2,iv,30 min,
"""


def test_ragged_table_equals_each_patient_alone(tmp_path):
    sc, cm, P = _scenario(2)
    f = tmp_path / "doses.csv"
    f.write_text(CSV)
    doses = read_event_table(f, sorted(cm.model.drugs))
    assert list(doses.n_doses) == [3, 1]
    t = np.arange(0, 29.0, 0.25)
    res = simulate(cm, P, doses, t, ["C_gem", "ANC"])
    alone = [
        [Regimen(drug="gemcitabine", dose=1000.0, basis="bsa", route="iv", infusion=0.5 / 24, days=(1, 8, 15),
                 cycle_length=28.0, cycles=1)],
        [Regimen(drug="gemcitabine", dose=800.0, basis="bsa", route="iv", infusion=0.5 / 24, days=(1,),
                 cycle_length=28.0, cycles=1, start=2.0)],
    ]
    for i in range(2):
        ref = simulate(cm, P[i:i + 1], alone[i], t, ["C_gem", "ANC"])
        np.testing.assert_allclose(res.values[i], ref.values[0], rtol=1e-12, atol=0)
    assert np.isnan(res.dose_factors[1, 1:]).all() and (res.dose_status[0] == 1).all()
    # patient 1 got no dose before day 2, patient 0 did
    c = res.output("C_gem")
    assert c[1, t < 2].max() == 0 and c[0, t < 2].max() > 0


def _write_scenario(tmp_path, csv_text, n):
    (tmp_path / "doses.csv").write_text(csv_text)
    data = yaml.safe_load(BASE_FILE.read_text())
    del data["regimens"]
    data.update(horizon="28 day", output_interval="1 day", event_table="doses.csv",
                patients={"n": n, "variability": False})
    f = tmp_path / "replay.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def test_scenario_event_table_cli(tmp_path, capsys):
    f = _write_scenario(tmp_path, CSV, 2)
    out = tmp_path / "out"
    assert main(["simulate", str(f), "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["event_table_sha256"]) == 64
    # the same table through the API: doses of the file, not the base scenario's regimens
    sc = load_scenario(f)
    (arm,) = sc.arms.values()
    assert isinstance(arm, PatientDoses) and arm.n_patients == 2


@pytest.mark.parametrize("csv_text,n,fragments", [
    (CSV, 3, ["event_table", "patients 0..2", "no rows for patient(s) [2]"]),
    (CSV, 1, ["event_table", "ids >= 1: [1]"]),
    (CSV.replace("800 mg/m2", "800"), 2, ["doses.csv", "row 2", "column 'amount'", "'800'"]),
    (CSV.replace("1 week", "\"1,5 day\""), 2, ["doses.csv", "row 4", "column 'time'", "'1,5 day'"]),
    (CSV.replace("1 week", "1,5 day"), 2, ["doses.csv", "row 4", "8 values but the header has 7"]),
    (CSV.replace("0,0 h,gemcitabine,1000 mg/m2,iv,30 min,", "0,0 h,cisplatin,70 mg/m2,oral,,"), 2,
     ["event_table", "drug 'cisplatin' has no route 'oral'", "allowed: ip, iv"]),
    (CSV.replace("0,0 h,gemcitabine", "0,0 h,gemcitabin"), 2, ["row 3", "column 'drug'", "unknown drug"]),
])
def test_bad_event_table_is_exit_2(tmp_path, capsys, csv_text, n, fragments):
    f = _write_scenario(tmp_path, csv_text, n)
    out = tmp_path / "out"
    assert main(["simulate", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for frag in fragments:
        assert frag in err, (frag, err)
    assert "Traceback" not in err and not out.exists()


def test_event_table_excludes_regimens(tmp_path, capsys):
    f = _write_scenario(tmp_path, CSV, 2)
    data = yaml.safe_load(f.read_text())
    data["regimens"] = []
    f.write_text(yaml.safe_dump(data))
    assert main(["simulate", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "either 'event_table'" in capsys.readouterr().err


def test_sbml_export_of_one_patient_history(tmp_path, capsys):
    one = "\n".join(line for line in CSV.splitlines() if not line.startswith("1,")) + "\n"
    f = _write_scenario(tmp_path, one, 1)
    out = tmp_path / "m.xml"
    assert main(["export", "sbml", "--scenario", str(f), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("<event ") >= 6  # 3 infusions: a start and a stop each
    f2 = _write_scenario(tmp_path, CSV, 2)
    assert main(["export", "sbml", "--scenario", str(f2), "--out", str(tmp_path / "m2.xml")]) == 2
    assert "SBML export takes one dosing history" in capsys.readouterr().err
