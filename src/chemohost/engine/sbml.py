"""SBML Level 3 Version 2 export of a declared model, with dosing as SBML events.

* compartment ``body`` (size 1, dimensionless): species are amounts (``hasOnlySubstanceUnits``),
  so a reaction's rate is the species' rate of change in its own unit per day;
* each :class:`~chemohost.model.core.Flow` is an irreversible reaction (source -> target, other
  species read by the rate are modifiers);
* each :class:`~chemohost.model.core.Output` is a parameter with an assignment rule;
* parameters are constant global parameters at the chosen values;
* doses are events: a bolus adds ``amount·F`` to its target; an infusion switches a zero-order
  input reaction on and off.  Amounts per m2 / per kg are written as ``dose·BSA`` / ``dose·WT`` so
  the same file serves any patient whose BSA/WT parameters are set.
Time unit: day.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import ExportError
from ..model.core import Model
from ..model.expr import parse
from ..protocol.dosing import DoseTable
from .codegen import fold_pairs

# libsbml and sympy are imported on the first export, not at every start of chemohost (0.5 s together)
libsbml = None


def load_libsbml():
    """The libsbml module, imported on first use (ExportError if it is not installed)."""
    global libsbml
    if libsbml is None:
        try:
            import libsbml as _libsbml
        except ImportError:  # pragma: no cover - declared dependency
            raise ExportError("python-libsbml is not installed; pip install python-libsbml") from None
        libsbml = _libsbml
    return libsbml


@functools.cache
def _printer():
    """The SBML infix printer (one instance; sympy imported on the first export)."""
    import sympy as sp

    class _L3Printer(sp.printing.str.StrPrinter):
        def _print_Pow(self, expr, rational=False):
            b, e = expr.as_base_exp()
            if e == sp.Rational(1, 2):
                return f"sqrt({self._print(b)})"
            if e == -1:
                return f"(1/({self._print(b)}))"
            return f"pow({self._print(b)}, {self._print(e)})"

        def _print_exp(self, expr):
            return f"exp({self._print(expr.args[0])})"

        def _print_log(self, expr):
            return f"ln({self._print(expr.args[0])})"

        def _print_Abs(self, expr):
            return f"abs({self._print(expr.args[0])})"

        def _print_Max(self, expr):
            return fold_pairs([self._print(x) for x in expr.args], "piecewise({0}, {0} >= {1}, {1})")

        def _print_Min(self, expr):
            return fold_pairs([self._print(x) for x in expr.args], "piecewise({0}, {0} <= {1}, {1})")

        def _print_Float(self, expr):
            return repr(float(expr))

        def _print_Exp1(self, expr):
            return "exponentiale"

    return _L3Printer()


def _math(text, sym, where):
    expr = parse(text, sym, where)
    formula = _printer().doprint(expr)
    ast = libsbml.parseL3Formula(formula)
    if ast is None:
        raise ExportError(f"{where}: cannot express '{text}' in SBML ({libsbml.getLastParseL3Error()})")
    return ast, {str(s) for s in expr.free_symbols}


def _check(code, what):
    if code != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise ExportError(f"SBML export failed while {what}: {libsbml.OperationReturnValue_toString(code)}")


def to_sbml(model: Model, values: dict[str, float], doses: DoseTable | None = None,
            dose_factors: np.ndarray | None = None) -> str:
    """SBML L3V2 text for ``model`` with parameter ``values`` (internal units) and ``doses``."""
    import sympy as sp

    load_libsbml()
    missing = sorted(set(model.parameters) - set(values))
    if missing:
        raise ExportError(f"no values for parameters {missing}")
    doc = libsbml.SBMLDocument(3, 2)
    m = doc.createModel()
    m.setId(model.name)
    m.setName(model.description)
    _check(m.setNotes(SOLVER_NOTE), "writing the model's notes")

    c = m.createCompartment()
    c.setId("body")
    c.setConstant(True)
    c.setSize(1.0)
    c.setSpatialDimensions(3)
    sym = {n: sp.Symbol(n, real=True) for n in [*model.species, *model.parameters, *model.outputs]}
    held = held_at_zero(model, doses) if doses is not None and doses.n else set()
    for s in model.species.values():
        sp_ = m.createSpecies()
        sp_.setId(s.name)
        sp_.setCompartment("body")
        sp_.setHasOnlySubstanceUnits(True)
        sp_.setBoundaryCondition(s.name in held)
        sp_.setConstant(s.name in held)
        if s.name in held:
            sp_.setInitialAmount(0.0)
            sp_.setName(f"{s.description} (no dose reaches it: held at 0)".lstrip())
            continue
        if isinstance(s.initial, (int, float)):
            sp_.setInitialAmount(float(s.initial))
        else:
            sp_.setInitialAmount(0.0)
            ia = m.createInitialAssignment()
            ia.setSymbol(s.name)
            ast, _ = _math(s.initial, sym, f"initial value of {s.name}")
            _check(ia.setMath(ast), f"setting the initial value of {s.name}")
        if s.description:
            sp_.setName(s.description)
    for name, spec in model.parameters.items():
        p = m.createParameter()
        p.setId(name)
        p.setConstant(True)
        p.setValue(float(values[name]))
        p.setName(f"{spec.description} [{spec.unit}]")
    for o in model.outputs.values():
        p = m.createParameter()
        p.setId(o.name)
        p.setConstant(False)
        p.setValue(0.0)
        p.setName(f"{o.description} [{o.unit}]")
        r = m.createAssignmentRule()
        r.setVariable(o.name)
        ast, _ = _math(o.expr, sym, f"output {o.name}")
        _check(r.setMath(ast), f"setting output {o.name}")
    for f in model.flows.values():
        rx = m.createReaction()
        rx.setId(f.name)
        rx.setReversible(False)
        if f.description:
            rx.setName(f.description)
        if f.source:
            sr = rx.createReactant()
            sr.setSpecies(f.source)
            sr.setStoichiometry(1.0)
            sr.setConstant(True)
        if f.target:
            sr = rx.createProduct()
            sr.setSpecies(f.target)
            sr.setStoichiometry(1.0)
            sr.setConstant(True)
        ast, names = _math(f.rate, sym, f"flow {f.name}")
        for sname in sorted(names & set(model.species) - {f.source, f.target}):
            mr = rx.createModifier()
            mr.setSpecies(sname)
        kl = rx.createKineticLaw()
        _check(kl.setMath(ast), f"setting the rate of flow {f.name}")
    if doses is not None and doses.n:
        _add_doses(m, model, doses, dose_factors)
    return checked_text(doc)


def held_at_zero(model: Model, doses: DoseTable) -> set[str]:
    """Species that stay exactly zero under ``doses`` whatever the parameter values: they start at 0, no dose
    lands in them, and every flow into or out of them is identically 0 while they all are 0 (the largest such
    set, found by removing species until it closes).  A flow counts as zero only if sympy proves it zero with
    the parameters left free -- the exported parameters stay settable (a peer sets each patient's), so a hold
    that relied on a parameter's exported value (0 now, 5 later) would silently be wrong; a doubt keeps the
    species an ODE state.  Zero is then an invariant of the ODE for any parameters, so holding them constant
    at 0 is exact.

    Why: libRoadRunner (2.10; sys-bio/roadrunner#1349) re-derives CVODE's absolute tolerance of each
    state from the state's *current* value whenever it restarts the integrator, which it does after
    every event.  An undosed drug's states, exactly 0 in theory, pick up round-off (1e-60 .. 1e-314)
    in the first steps; after a few dose events their tolerances underflow and CVODE stops
    (CV_TOO_MUCH_ACC, CV_CONV_FAILURE or CV_ILL_INPUT) -- the failure of every patient of the pancreatic
    trial with libRoadRunner's default solver.  Constant species are not integrated, so they cannot."""
    import sympy as sp

    from .codegen import symbolic

    sm = symbolic(model)  # rates and initial values with the outputs expanded, parameters free
    dosed = {_dose_route(model, doses, d).target for d in range(doses.n)}
    held = {s for s, e in sm.initial.items() if s not in dosed and e.is_zero is True}
    while True:
        zero = {sm.sym[n]: sp.Integer(0) for n in held}
        leaving = {n for f in model.flows.values() for n in (f.source, f.target)
                   if n in held and sm.flow_rates[f.name].xreplace(zero).is_zero is not True}
        if not leaving:
            return held
        held -= leaving


def _dose_route(model: Model, doses: DoseTable, d: int):
    """The :class:`Route` dose ``d`` enters the model by (ExportError if the model cannot receive it)."""
    drug = model.drugs.get(doses.drug[d])
    if drug is None or doses.route[d] not in drug.routes:
        raise ExportError(f"model '{model.name}' cannot receive {doses.drug[d]} by route {doses.route[d]}")
    return drug.routes[doses.route[d]]


def checked_text(doc) -> str:
    """``doc`` as SBML text, re-read and checked (unit consistency aside): an invalid document raises
    :class:`ExportError` with libSBML's first messages instead of being written."""
    load_libsbml()
    text = libsbml.writeSBMLToString(doc)
    check = libsbml.readSBMLFromString(text)
    check.setConsistencyChecks(libsbml.LIBSBML_CAT_UNITS_CONSISTENCY, False)
    check.checkConsistency()
    errors = [check.getError(i) for i in range(check.getNumErrors())
              if check.getError(i).getSeverity() >= libsbml.LIBSBML_SEV_ERROR]
    if errors:
        raise ExportError("exported SBML is invalid: " + "; ".join(e.getMessage().strip() for e in errors[:5]))
    return text


def _add_doses(m, model: Model, doses: DoseTable, factors):
    infusion_targets = {}
    for d in range(doses.n):
        route = _dose_route(model, doses, d)
        reg = doses.regimens[doses.regimen[d]]
        scale = {"flat": "", "bsa": " * BSA", "weight": " * WT"}[reg.basis]
        fac = 1.0 if factors is None else float(factors[d])
        amount = f"{reg.dose * route.scale!r}{scale} * {fac!r}" + (f" * {route.bioavailability}" if route.bioavailability else "")
        t0 = float(doses.time[d])
        if doses.duration[d] > 0:
            tgt = route.target
            if tgt not in infusion_targets:
                rate = f"infusion_rate_{tgt}"
                p = m.createParameter()
                p.setId(rate)
                p.setConstant(False)
                p.setValue(0.0)
                rx = m.createReaction()
                rx.setId(f"infusion_{tgt}")
                rx.setReversible(False)
                pr = rx.createProduct()
                pr.setSpecies(tgt)
                pr.setStoichiometry(1.0)
                pr.setConstant(True)
                kl = rx.createKineticLaw()
                kl.setMath(libsbml.parseL3Formula(rate))
                infusion_targets[tgt] = rate
            rate = infusion_targets[tgt]
            dur = float(doses.duration[d])
            # the stop subtracts the rate this dose's start added (its own parameter), so the infusion
            # switches off exactly even if BSA/WT changed in between (e.g. set after the start fired)
            own = f"dose{d}_rate"
            p = m.createParameter()
            p.setId(own)
            p.setConstant(False)
            p.setValue(0.0)
            p.setName(f"infusion rate of dose {d} ({doses.drug[d]}), set when it starts")
            _event(m, f"dose{d}_start", t0, [(rate, f"{rate} + ({amount}) / {dur!r}"), (own, f"({amount}) / {dur!r}")])
            _event(m, f"dose{d}_stop", t0 + dur, [(rate, f"{rate} - {own}"), (own, "0")])
        else:
            _event(m, f"dose{d}", t0, [(route.target, f"{route.target} + {amount}")])


#: the model's SBML notes: how to simulate it (SBML has no place for solver settings)
SOLVER_NOTE = (
    '<body xmlns="http://www.w3.org/1999/xhtml"><p>Exported by chemohost. Time in days; species are amounts '
    "in a unit compartment. Simulate with an absolute tolerance of 1e-30 (libRoadRunner: "
    "integrator.absolute_tolerance = 1e-30; COPASI: the time course method's Absolute Tolerance): under "
    "intensive dosing, states with a positive baseline (e.g. marrow progenitors) can fall many orders of "
    "magnitude below the usual 1e-12 and regrow; a tolerance above them lets them cross zero. chemohost "
    "controls the error of such states relative to their value.</p></body>")

#: doses due at t = 0 trigger at this time instead (days): an SBML event whose trigger holds at t = 0 fires
#: when a simulator initialises the model (libRoadRunner's resetAll()), i.e. before a user sets the patient's
#: BSA/WT, so the first dose would use the file's typical covariates; 1e-9 day (86 us) later it fires during
#: the simulation, with the parameters the user set
FIRST_DOSE_TIME = 1e-9


def _event(m, eid, time, assignments):
    e = m.createEvent()
    e.setId(eid)
    e.setUseValuesFromTriggerTime(True)
    tr = e.createTrigger()
    tr.setInitialValue(False)
    tr.setPersistent(True)
    tr.setMath(libsbml.parseL3Formula(f"time >= {max(time, FIRST_DOSE_TIME)!r}"))
    for variable, formula in assignments:
        ea = e.createEventAssignment()
        ea.setVariable(variable)
        ea.setMath(libsbml.parseL3Formula(formula))
