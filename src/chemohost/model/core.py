"""Model declaration: species, parameters, flows and outputs, grouped in mechanism modules.

A *module* declares one mechanism (one file under ``model/mechanisms``).  A *model* is a named
composition of modules.  Everything else (batched right-hand side, Jacobian, SBML, diagrams,
parameter tables) is derived from this one declaration.

Conventions
-----------
* Internal time unit: day.  Every rate expression is "species unit per day".
* A :class:`Flow` moves ``rate`` (species unit / day) from ``source`` to ``target``; either may be
  ``None`` (synthesis from / loss to outside the model).  Source and target must share a unit when
  both are given, so mass balance can be checked.
* An :class:`Output` is a named algebraic expression (an SBML assignment rule): concentrations,
  totals, drug effects.  Outputs may use other outputs (no cycles).
* Parameter *values* are not in code: a module lists :class:`ParameterSpec` (name, internal unit,
  meaning); values, bounds, variability and sources come from ``model/data/parameters.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ModelError
from .expr import check_name


@dataclass(frozen=True)
class Species:
    name: str
    unit: str
    initial: str | float = 0.0
    description: str = ""

    def __post_init__(self):
        check_name(self.name, "species")


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    unit: str
    description: str = ""

    def __post_init__(self):
        check_name(self.name, "parameter")


@dataclass(frozen=True)
class Flow:
    name: str
    source: str | None
    target: str | None
    rate: str
    description: str = ""

    def __post_init__(self):
        check_name(self.name, "flow")
        if self.source is None and self.target is None:
            raise ModelError(f"flow '{self.name}' has neither source nor target")


@dataclass(frozen=True)
class Output:
    name: str
    expr: str
    unit: str
    description: str = ""

    def __post_init__(self):
        check_name(self.name, "output")


@dataclass(frozen=True)
class Route:
    """Where a dose of a drug given by a route enters the model.

    ``target``: the species receiving the amount (mg).  ``bioavailability``: optional parameter
    name (fraction) multiplying the amount.  Routes 'iv' allow bolus and zero-order infusion;
    absorption routes ('ip', 'oral', 'sc') put the dose in a depot species drained by a first-order
    absorption flow declared in the module.
    """

    target: str
    bioavailability: str | None = None
    scale: float = 1.0  # target units per mg dosed (e.g. 1e6 for a species in ng)


@dataclass(frozen=True)
class Drug:
    name: str
    molecular_weight: float  # g/mol
    routes: dict[str, Route]
    mw_source: str = ""


@dataclass(frozen=True)
class Module:
    name: str
    description: str
    species: tuple[Species, ...] = ()
    parameters: tuple[ParameterSpec, ...] = ()
    flows: tuple[Flow, ...] = ()
    outputs: tuple[Output, ...] = ()
    drugs: tuple[Drug, ...] = ()
    references: tuple[str, ...] = ()


@dataclass
class Model:
    """A named composition of modules (see :func:`compose`)."""

    name: str
    description: str
    modules: tuple[Module, ...]
    species: dict[str, Species] = field(default_factory=dict)
    parameters: dict[str, ParameterSpec] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=dict)
    outputs: dict[str, Output] = field(default_factory=dict)
    drugs: dict[str, Drug] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # name -> module name

    @property
    def default_outputs(self) -> list[str]:
        return list(self.outputs)

    def describe(self) -> str:
        lines = [f"model {self.name}: {self.description}"]
        for m in self.modules:
            lines.append(f"  module {m.name}: {m.description}")
        lines.append(f"  {len(self.species)} species, {len(self.parameters)} parameters, "
                     f"{len(self.flows)} flows, {len(self.outputs)} outputs")
        return "\n".join(lines)


def compose(name: str, description: str, modules: list[Module] | tuple[Module, ...]) -> Model:
    """Merge modules into a model, checking that names are unique and references resolve.

    A parameter may be declared by several modules (shared covariates such as body-surface area)
    provided the unit is the same.  Species, flows, outputs and drugs must be unique.
    """
    model = Model(name=name, description=description, modules=tuple(modules))
    taken: dict[str, str] = {}

    def claim(kind: str, item_name: str, module: Module):
        if item_name in taken and taken[item_name] != f"parameter:{module.name}":
            raise ModelError(
                f"model '{name}': {kind} '{item_name}' of module '{module.name}' clashes with "
                f"{taken[item_name]}; rename one of them"
            )
        taken[item_name] = f"{kind} of module '{module.name}'"
        model.owner[item_name] = module.name

    for m in modules:
        for s in m.species:
            claim("species", s.name, m)
            model.species[s.name] = s
        for o in m.outputs:
            claim("output", o.name, m)
            model.outputs[o.name] = o
        for f in m.flows:
            if f.name in model.flows:
                raise ModelError(f"model '{name}': flow '{f.name}' declared twice (module '{m.name}')")
            model.flows[f.name] = f
        for d in m.drugs:
            if d.name in model.drugs:
                raise ModelError(f"model '{name}': drug '{d.name}' declared twice (module '{m.name}')")
            model.drugs[d.name] = d
    for m in modules:
        for p in m.parameters:
            if p.name in model.parameters:
                if model.parameters[p.name].unit != p.unit:
                    raise ModelError(
                        f"model '{name}': parameter '{p.name}' is declared with unit "
                        f"'{model.parameters[p.name].unit}' and '{p.unit}' (module '{m.name}')"
                    )
                continue
            if p.name in taken:
                raise ModelError(
                    f"model '{name}': parameter '{p.name}' of module '{m.name}' clashes with {taken[p.name]}"
                )
            model.parameters[p.name] = p
            model.owner.setdefault(p.name, m.name)
    # flows: endpoints exist, units agree
    for f in model.flows.values():
        for end in (f.source, f.target):
            if end is not None and end not in model.species:
                raise ModelError(
                    f"model '{name}': flow '{f.name}' refers to species '{end}', which no module declares"
                )
        if f.source and f.target:
            us, ut = model.species[f.source].unit, model.species[f.target].unit
            if us != ut:
                raise ModelError(
                    f"model '{name}': flow '{f.name}' moves {f.source} [{us}] into {f.target} [{ut}]; "
                    "a flow must join species of the same unit (use an outflow and a separate inflow)"
                )
    for d in model.drugs.values():
        for route, r in d.routes.items():
            if r.target not in model.species:
                raise ModelError(f"drug '{d.name}' route '{route}' targets unknown species '{r.target}'")
            if r.bioavailability and r.bioavailability not in model.parameters:
                raise ModelError(
                    f"drug '{d.name}' route '{route}' uses bioavailability parameter "
                    f"'{r.bioavailability}', which no module declares"
                )
    return model
