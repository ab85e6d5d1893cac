"""PEtab v1 export of a calibration problem (``chemohost export petab --problem P.yaml --out DIR``).

What is written (all beside ``problem.yaml``, format_version 1):

* ``model.xml``: the one declaration through :func:`chemohost.engine.sbml.to_sbml`, every parameter at
  the problem's typical value, plus the dose events of every condition the measurements use;
* ``conditions.tsv``, ``observables.tsv``, ``measurements.tsv`` (times in days, values converted with
  pint to the model quantity's unit), ``parameters.tsv`` (the estimated parameters and estimated
  sigmas, scale, bounds, nominal value, priors);
* ``censored_measurements.tsv``: left/right-censored rows (PEtab v1 has no censoring), with their
  detection limit ``lloq`` in model units -- never silently dropped;
* ``measurement_sources.tsv``: for each PEtab measurement row its source row, original value, unit
  and conversion factor;
* ``chemohost_petab.json``: problem file and sha256, table hashes, model declaration key and code
  hash, chemohost version, condition -> indicator map, observable map, the censored rows, notes.

Doses: condition-gated events.  PEtab v1 has no dosing table, and conditions may differ in their
whole schedule (drugs, days, cycles), not only in an amount, so per-condition amount parameters
(one event list, amounts overridden in the condition table) would not be enough.  Each condition
``c`` gets a constant model parameter ``in_c`` (0 in the SBML), set to 1 in ``c``'s row of the
condition table and 0 in every other row; every dose event of ``c`` -- built by ``to_sbml`` itself
from the same :func:`~chemohost.protocol.dosing.dose_table` the engine uses, so per-m2/per-kg
amounts are ``dose*BSA`` / ``dose*WT`` -- has the trigger ``(time >= t_dose) && (in_c > 0.5)``.
Trigger semantics: ``initialValue = false``, ``persistent = true``; a trigger that is true at the
start (a dose at t = 0 in the active condition) is a false -> true transition, so the event fires
at t = 0; in other conditions the trigger is false for the whole simulation and never fires.
Infusions share one zero-order input per target compartment (``infusion_rate_<target>``, switched
by start/stop events); only one condition is active per simulation, so they never interfere.  The
input is written as a species that no reaction changes (not as the parameter ``to_sbml`` uses), so a
simulator's reset between runs (libRoadRunner ``reset()``, used by pyPESTO per condition) restores
it to 0 even when the previous run ended during an infusion (tested).
Dose-modification rules cannot be written as SBML events and are not exported (noted in the
sidecar; the doses are given as scheduled).
"""

from __future__ import annotations

import json
import math
import shutil
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

from .. import __version__
from ..engine.codegen import compile_model, declaration_key
from ..engine.sbml import checked_text, load_libsbml, to_sbml
from ..errors import ChemohostError, ExportError
from ..protocol.dosing import dose_table
from .problem import Problem, ProblemError, Row, load_problem

FILES = ("problem.yaml", "model.xml", "conditions.tsv", "observables.tsv", "measurements.tsv", "parameters.tsv",
         "censored_measurements.tsv", "measurement_sources.tsv", "chemohost_petab.json")


def _f(x: float) -> str:
    return repr(float(x))


def gated_sbml(problem: Problem) -> str:
    """SBML with every parameter at its typical value and condition-gated dose events."""
    libsbml = load_libsbml()
    model, values = problem.model, problem.values
    doc = libsbml.readSBMLFromString(to_sbml(model, values))
    m = doc.getModel()
    for cond in problem.conditions.values():
        p = m.createParameter()
        p.setId(cond.indicator)
        p.setName(f"1 in condition {cond.id}, 0 elsewhere (set by the PEtab condition table)")
        p.setConstant(True)
        p.setValue(0.0)
    for cond in problem.conditions.values():
        table = dose_table(cond.regimens)
        if not table.n:
            continue
        dc = libsbml.readSBMLFromString(to_sbml(model, values, table)).getModel()
        for k in range(dc.getNumParameters()):
            p = dc.getParameter(k)
            if m.getParameter(p.getId()) is None:
                m.addParameter(p)
        for k in range(dc.getNumReactions()):
            r = dc.getReaction(k)
            if m.getReaction(r.getId()) is None:
                m.addReaction(r)
        for k in range(dc.getNumEvents()):
            e = dc.getEvent(k).clone()
            e.setId(f"{cond.petab_id}__{e.getId()}")
            e.setName(f"condition {cond.id}: {e.getName() or dc.getEvent(k).getId()}")
            gate = libsbml.ASTNode(libsbml.AST_LOGICAL_AND)  # AST, not text: keeps every digit of the time
            gate.addChild(e.getTrigger().getMath().deepCopy())
            gate.addChild(libsbml.parseL3Formula(f"{cond.indicator} > 0.5"))
            if e.getTrigger().setMath(gate) != libsbml.LIBSBML_OPERATION_SUCCESS:
                raise ExportError(f"cannot gate dose event {e.getId()} by {cond.indicator}")
            if m.addEvent(e) != libsbml.LIBSBML_OPERATION_SUCCESS:
                raise ExportError(f"cannot add dose event {e.getId()}")
    _infusion_rates_as_species(m)
    return checked_text(doc)


def _infusion_rates_as_species(m) -> None:
    """Turn the event-switched ``infusion_rate_<target>`` parameters into species (no reaction
    changes them, so they are constant between events).  Simulators reset species, not changed
    global parameters, to their initial values between runs (libRoadRunner ``reset()``, which
    pyPESTO calls per condition): a parameter left 'on' by a run that ended during an infusion
    would leak into the next condition's run."""
    ids = [m.getParameter(k).getId() for k in range(m.getNumParameters())
           if m.getParameter(k).getId().startswith("infusion_rate_") and not m.getParameter(k).getConstant()]
    for pid in ids:
        m.removeParameter(pid)
        s = m.createSpecies()
        s.setId(pid)
        s.setName("zero-order infusion input (amount per day), switched by dose events")
        s.setCompartment("body")
        s.setHasOnlySubstanceUnits(True)
        s.setBoundaryCondition(False)
        s.setConstant(False)
        s.setInitialAmount(0.0)
        rx = m.getReaction("infusion_" + pid.removeprefix("infusion_rate_"))
        if rx is not None and rx.getModifier(pid) is None:
            rx.createModifier().setSpecies(pid)


def petab_tables(problem: Problem) -> dict[str, pd.DataFrame]:
    conds = list(problem.conditions.values())
    conditions = pd.DataFrame([{"conditionId": c.petab_id, "conditionName": c.description or c.id,
                                **{d.indicator: (1 if d is c else 0) for d in conds}} for c in conds])
    obs_rows = []
    for o in problem.observables.values():
        if o.sigma_kind == "fixed":
            noise = _f(o.sigma)
        elif o.sigma_kind == "estimate":
            noise = o.sigma_parameter.name
        else:
            noise = f"noiseParameter1_{o.petab_id}"
        obs_rows.append({"observableId": o.petab_id, "observableName": o.name, "observableFormula": o.formula,
                         "observableTransformation": o.transformation, "noiseFormula": noise,
                         "noiseDistribution": o.distribution})
    observables = pd.DataFrame(obs_rows)
    obs = problem.observables
    any_row_sigma = any(o.sigma_kind == "row" for o in obs.values())
    meas = []
    for r in problem.rows:
        d = {"observableId": obs[r.observable].petab_id,
             "simulationConditionId": problem.conditions[r.condition].petab_id,
             "measurement": r.value, "time": r.time}
        if any_row_sigma:
            d["noiseParameters"] = _f(r.sigma) if obs[r.observable].sigma_kind == "row" else ""
        meas.append(d)
    measurements = pd.DataFrame(meas)
    par = []
    has_prior = any(e.prior for e in problem.estimates.values())
    for e in problem.estimates.values():
        d = {"parameterId": e.name, "parameterName": f"{e.name} [{e.unit}]", "parameterScale": e.scale,
             "lowerBound": e.lower, "upperBound": e.upper, "nominalValue": e.nominal, "estimate": 1}
        if has_prior:
            d["objectivePriorType"] = e.prior[0] if e.prior else ""
            d["objectivePriorParameters"] = ";".join(_f(x) for x in e.prior[1]) if e.prior else ""
        par.append(d)
    parameters = pd.DataFrame(par, columns=["parameterId", "parameterName", "parameterScale", "lowerBound",
                                            "upperBound", "nominalValue", "estimate"]
                              + (["objectivePriorType", "objectivePriorParameters"] if has_prior else []))
    cens = pd.DataFrame([{"observableId": obs[r.observable].petab_id,
                          "simulationConditionId": problem.conditions[r.condition].petab_id,
                          "measurement": r.value, "time": r.time, "lloq": r.lloq, "censoring": r.censoring,
                          "source_row": r.where} for r in problem.censored],
                        columns=["observableId", "simulationConditionId", "measurement", "time", "lloq", "censoring",
                                 "source_row"])
    sources = pd.DataFrame([_source(k, r) for k, r in enumerate(problem.rows)])
    return {"conditions.tsv": conditions, "observables.tsv": observables, "measurements.tsv": measurements,
            "parameters.tsv": parameters, "censored_measurements.tsv": cens, "measurement_sources.tsv": sources}


def _source(k: int, r: Row) -> dict:
    raw = r.raw
    return {"petab_row": k, "source_row": r.where, "observable": r.observable, "condition": r.condition,
            "value": raw.get("value", ""), "unit": raw.get("unit", ""), "factor_to_model_unit": r.factor,
            "time": raw.get("time", ""), "time_unit": raw.get("time_unit", ""), "statistic": raw.get("statistic", ""),
            "source": raw.get("source", ""), "location": raw.get("location", "")}


def _code_hash(problem: Problem) -> str | None:
    try:
        return compile_model(problem.model).source_hash
    except Exception:  # pragma: no cover - the hash is informative only
        return None


def sidecar(problem: Problem) -> dict:
    versions = {}
    for pkg in ("petab", "python-libsbml", "pint", "pydantic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    obs = problem.observables
    return {
        "chemohost_version": __version__,
        "problem": problem.spec.problem,
        "problem_file": problem.source,
        "problem_sha256": problem.sha256,
        "model": problem.model.name,
        "species": problem.spec.species,
        "model_declaration_key": declaration_key(problem.model),
        "model_code_hash": _code_hash(problem),
        "petab_format_version": 1,
        "tables": problem.tables,
        "conditions": {c.id: {"conditionId": c.petab_id, "indicator": c.indicator, "description": c.description,
                              "doses": int(dose_table(c.regimens).n)} for c in problem.conditions.values()},
        "observables": {o.name: {"observableId": o.petab_id, "formula": o.formula, "unit": o.unit,
                                 "transformation": o.transformation, "distribution": o.distribution,
                                 "sigma": o.sigma_kind if o.sigma_kind != "fixed" else o.sigma}
                        for o in obs.values()},
        "estimated": list(problem.estimates),
        "n_measurements": len(problem.rows),
        "n_censored": len(problem.censored),
        "n_skipped_by_filters": problem.skipped,
        "censored": [{"observableId": obs[r.observable].petab_id, "condition": r.condition, "time_days": r.time,
                      "censoring": r.censoring, "lloq": None if math.isnan(r.lloq) else r.lloq,
                      "value": None if math.isnan(r.value) else r.value, "source_row": r.where}
                     for r in problem.censored],
        "notes": problem.notes,
        "packages": versions,
    }


def _check_out(out: Path, force: bool) -> None:
    from ..outputs import LOCK, MARKER, STAGING, check_out_path

    try:
        check_out_path(out)
    except ProblemError:
        raise
    except ChemohostError as exc:
        raise ProblemError(str(exc)) from None
    if out.is_dir() and not force:
        ours = {LOCK, MARKER}
        if any(p.name not in ours and not p.name.startswith(STAGING) for p in out.iterdir()):
            raise ProblemError(f"--out {out} exists and is not empty; choose a new folder or pass --force to replace it")


def export_petab(problem: Problem | str | Path, out: str | Path, force: bool = False) -> dict[str, Path]:
    """Write the PEtab v1 problem into folder ``out``; returns {file name: path}.

    The files are staged inside ``out`` and published with a completion marker
    (:mod:`chemohost.outputs`); an existing non-empty ``out`` is refused unless ``force`` (then its
    other contents are removed, so the folder holds exactly this problem)."""
    from ..outputs import LOCK, STAGING, write_atomically

    out = Path(out)
    _check_out(out, force)
    if not isinstance(problem, Problem):
        problem = load_problem(problem)
    sbml = gated_sbml(problem)
    tables = petab_tables(problem)
    meta = sidecar(problem)

    def write(tmp: Path) -> None:
        (tmp / "model.xml").write_text(sbml)
        for name, df in tables.items():
            df.to_csv(tmp / name, sep="\t", index=False)
        spec = {"format_version": 1, "parameter_file": "parameters.tsv",
                "problems": [{"sbml_files": ["model.xml"], "condition_files": ["conditions.tsv"],
                              "measurement_files": ["measurements.tsv"], "observable_files": ["observables.tsv"]}]}
        (tmp / "problem.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (tmp / "chemohost_petab.json").write_text(json.dumps(meta, indent=2, default=str))
        if force and out.is_dir():  # --force: the folder holds exactly this problem afterwards
            for p in out.iterdir():
                if p.name in FILES or p.name == LOCK or p.name.startswith(STAGING):
                    continue
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    try:
        write_atomically(out, write)
    except ProblemError:
        raise
    except ChemohostError as exc:
        raise ProblemError(str(exc)) from None
    return {name: out / name for name in FILES}
