"""SBML export: valid L3V2, and libRoadRunner (an independent CVODE engine) reproduces chemohost."""

import numpy as np
import pytest

import chemohost as ch
from conftest import typical

libsbml = pytest.importorskip("libsbml")
roadrunner = pytest.importorskip("roadrunner")
roadrunner.Logger.setLevel(roadrunner.Logger.LOG_ERROR)


def _validate(text):
    doc = libsbml.readSBMLFromString(text)
    doc.setConsistencyChecks(libsbml.LIBSBML_CAT_UNITS_CONSISTENCY, False)
    doc.checkConsistency()
    errs = [doc.getError(i).getMessage() for i in range(doc.getNumErrors())
            if doc.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR]
    assert not errs, errs
    return doc


def _max_rel_err(a, b):
    """Per species: max |a-b| / max(|b|, 1e-6 * max|b|) -- relative error, with values below a
    millionth of the species' own peak (or 1e-12 for species that stay at ~0) compared on that floor."""
    floor = np.maximum(1e-6 * np.abs(b).max(axis=0), 1e-12)
    return (np.abs(a - b) / np.maximum(np.abs(b), floor)).max(axis=0)


def _from(regimens) -> int:
    """First row to compare: a bolus due at t = 0 is given at t = 1e-9 day in the export (so that it fires after
    a peer sets the patient's parameters), so at t = 0 itself the peer reports the pre-dose state."""
    return 1 if any(r.infusion is None and r.start == 0 for r in regimens) else 0


def _roadrunner(text, times, species):
    rr = roadrunner.RoadRunner(text)
    rr.integrator.relative_tolerance = 1e-10
    rr.integrator.absolute_tolerance = 1e-14
    rr.integrator.maximum_num_steps = 100000
    rr.timeCourseSelections = ["time"] + species
    return np.array(rr.simulate(times=list(times)))[:, 1:]


@pytest.mark.parametrize("species,regimens", [
    ("human", [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8), 21, 2),
               ch.Regimen("cisplatin", 70, "bsa", "iv", 1 / 24, (1,), 21, 2, start=1 / 24)]),
    # mouse: i.p. boluses into absorption depots.  Doses are below the paper's 120 and 6 mg/kg, and
    # gemcitabine is given once: with the provisional mouse marrow parameters CVODE (which lets
    # states dip below zero) stops with CV_CONV_FAILURE at some later bolus times, while chemohost,
    # which keeps states non-negative, integrates them (see test_extreme_doses_* in test_engine).
    ("mouse", [ch.Regimen("gemcitabine", 20, "weight", "ip", None, (1,), 7, 1),
               ch.Regimen("cisplatin", 0.2, "weight", "ip", None, (1,), 7, 3)]),
])
def test_roadrunner_matches_chemohost(species, regimens):
    model, names, p = typical("chemo_core", species)
    table = ch.dose_table(regimens)
    text = ch.to_sbml(model, dict(zip(names, p)), table)
    doc = _validate(text)
    assert doc.getModel().getNumReactions() >= len(model.flows)
    assert doc.getModel().getNumEvents() >= table.n
    horizon = 42.0 if species == "human" else 21.0
    times = np.linspace(0, horizon, 337) + 0.0013  # avoid sampling exactly at event times
    times[0] = 0.0
    sp = list(model.species)
    ours = ch.simulate(model, p[None], regimens, times, sp, options=ch.SolverOptions(rtol=1e-10, atol=1e-14))
    theirs = _roadrunner(text, times, sp)
    k = _from(regimens)
    err = _max_rel_err(ours.values[0][k:], theirs[k:])
    used = np.abs(theirs).max(axis=0) > 0
    assert used.sum() >= 10
    worst = sp[int(np.argmax(err))]
    assert err.max() <= 1e-4, f"max relative error {err.max():.2e} on {worst}"


def test_outputs_and_parameters_exported():
    model, names, p = typical("chemo_core")
    doc = _validate(ch.to_sbml(model, dict(zip(names, p))))
    m = doc.getModel()
    ids = {m.getParameter(i).getId() for i in range(m.getNumParameters())}
    assert set(model.parameters) <= ids and set(model.outputs) <= ids
    assert m.getNumRules() == len(model.outputs)
    assert m.getParameter("CL_gem").getValue() == pytest.approx(3888.0)  # 2.7 L/min in L/day


def test_docetaxel_friberg_export_matches():
    model, names, p = typical("friberg_docetaxel")
    reg = [ch.Regimen("docetaxel", 180, "flat", "iv", 1 / 24, (1,), 21, 2)]
    text = ch.to_sbml(model, dict(zip(names, p)), ch.dose_table(reg))
    times = np.linspace(0, 42, 85) + 0.0013
    times[0] = 0.0
    sp = list(model.species)
    ours = ch.simulate(model, p[None], reg, times, sp, options=ch.SolverOptions(rtol=1e-10, atol=1e-14))
    assert _max_rel_err(ours.values[0], _roadrunner(text, times, sp)).max() <= 1e-4


@pytest.mark.parametrize("species,regimens,horizon", [
    ("human", [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8), 21, 1),
               ch.Regimen("cisplatin", 70, "bsa", "iv", 1 / 24, (1,), 21, 1, start=1 / 24),
               ch.Regimen("bermekimab", 7.5, "weight", "iv", 1 / 24, (1,), 21, 1)], 21.0),
    # (adding daily belnacasan boluses here makes CVODE stop with CV_CONV_FAILURE; chemohost runs it)
    ("mouse", [ch.Regimen("gemcitabine", 120, "weight", "ip", None, (1,), 7, 2),
               ch.Regimen("cisplatin", 6, "weight", "ip", None, (1,), 7, 2)], 14.0),
])
def test_full_host_response_model_matches_roadrunner(species, regimens, horizon):
    model, names, p = typical("host_response", species)
    table = ch.dose_table(regimens)
    text = ch.to_sbml(model, dict(zip(names, p)), table)
    _validate(text)
    times = np.linspace(0, horizon, 169) + 0.0013
    times[0] = 0.0
    sp = list(model.species)
    ours = ch.simulate(model, p[None], regimens, times, sp, options=ch.SolverOptions(rtol=1e-10, atol=1e-14))
    k = _from(regimens)
    err = _max_rel_err(ours.values[0][k:], _roadrunner(text, times, sp)[k:])
    assert err.max() <= 1e-4, f"max relative error {err.max():.2e} on {sp[int(np.argmax(err))]}"


def test_a_peers_usual_setup_gives_the_patients_first_dose():
    """libRoadRunner's usual pattern -- resetAll(), then the patient's parameters, then simulate -- gives the
    patient's dose from the first infusion on (a t = 0 dose fires during the simulation, not at reset), and
    every infusion switches off exactly (the stop subtracts what its start added), so the export matches
    chemohost for a BSA other than the file's (issue 13 item 3)."""
    model, names, p = typical("chemo_core", "human")
    regs = [ch.Regimen("gemcitabine", 1000, "bsa", "iv", 0.5 / 24, (1, 8), 21, 1)]
    text = ch.to_sbml(model, dict(zip(names, p)), ch.dose_table(regs))
    q = p.copy()
    q[names.index("BSA")] = p[names.index("BSA")] * 1.25
    times = np.linspace(0, 14, 281) + 0.0013
    times[0] = 0.0
    sp = list(model.species)
    ours = ch.simulate(model, q[None], regs, times, sp, options=ch.SolverOptions(rtol=1e-10, atol=1e-14))
    rr = roadrunner.RoadRunner(text)
    rr.integrator.relative_tolerance = 1e-10
    rr.integrator.absolute_tolerance = 1e-14
    rr.integrator.maximum_num_steps = 200000
    rr.resetAll()
    rr["BSA"] = float(q[names.index("BSA")])
    rr.timeCourseSelections = ["time"] + sp
    theirs = np.array(rr.simulate(times=list(times)))[:, 1:]
    assert _max_rel_err(ours.values[0], theirs).max() <= 1e-4
    rates = [k for k in rr.model.getGlobalParameterIds() if k.startswith("infusion_rate")]
    assert rates and all(rr[k] == 0.0 for k in rates)  # both infusions switched off
