"""Calibrate the human host-response model's trial-level parameters to published trial arms.

Deterministic (fixed seeds, common random numbers): every evaluation runs the *control arm* of a
shipped trial scenario through ``chemohost.studies.trial.run_trial`` on the same virtual patients.

Pancreatic (``scenarios/trial_pancreatic_il1_blockade.yaml``, gemcitabine arm, indication
``pancreatic_advanced``):
  bm_slope_gem (host_response.csv)  -> grade >= 3 neutropenia 27% (MPACT gemcitabine arm, Von Hoff 2013;
                                       weekly blood counts)
  tumour_k2_gem (typical)           -> typical patient 22.3% tumour-size inhibition vs untreated at the
                                       end of 6 cycles (Eur J Pharm Sci 2018;115:296)
  tumour_k2_gem CV                  -> ORR 5.4% (Burris 1997)
  met_k_seed (typical)              -> disease control rate 44.4% (PR 5.4% + SD 39%, Burris 1997): new lesions
  os.median_os_months, os.weibull_shape -> median OS 5.65 months and 12-month OS 18% (Burris 1997)
Bladder (``scenarios/trial_bladder_gc_il1_timing.yaml``, GC arm, indication ``bladder_advanced``):
  bm_slope_cis (host_response.csv)  -> grade 3/4 neutropenia 71% (von der Maase 2000)
  tumour_k2_cis (typical)           -> ORR 49% (von der Maase 2000)
  (median PFS 7.7 months is reported, not fitted: see docs/calibration.md)
  os.median_os_months               -> median OS 14.0 months (von der Maase 2005; S_OS(14 months) = 0.5)

Run:  python scripts/calibrate_trials.py [--patients 400] [--write]
``--write`` rewrites the calibrated values in src/chemohost/model/data/host_response.csv and
src/chemohost/studies/data/indications.csv (run scripts/render_parameter_docs.py afterwards).
Takes ~10-20 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from chemohost.api import parameter_vector
from chemohost.engine.codegen import compile_model
from chemohost.engine.simulate import SolverOptions, simulate
from chemohost.studies.survival import arm_summary, linked_os, survival_at
from chemohost.studies.trial import Trial, control_arm_data, os_exponentials, run_trial

ROOT = Path(__file__).resolve().parents[1]
HOST_CSV = ROOT / "src/chemohost/model/data/host_response.csv"
IND_CSV = ROOT / "src/chemohost/studies/data/indications.csv"
PANC = ROOT / "scenarios/trial_pancreatic_il1_blockade.yaml"
BLAD = ROOT / "scenarios/trial_bladder_gc_il1_timing.yaml"


class Arm:
    """The control arm of a trial scenario with adjustable typical values, CVs and OS link."""

    def __init__(self, path: Path, n: int):
        self.data, _ = control_arm_data(path)
        self.control = self.data["control"]
        self.data["keep_timecourses"] = n
        self.data["chunk_size"] = n
        self.n, self.path = n, path
        self.params: dict[str, float] = {}
        self.cvs: dict[str, float] = {}
        self.os: dict[str, float] = {}
        self.last = None

    def trial(self) -> Trial:
        d = copy.deepcopy(self.data)
        d.setdefault("parameters", {}).update(self.params)
        tr = Trial.from_dict(d, str(self.path))
        tr.indication.cvs.update(self.cvs)
        tr.indication.os_link = dataclasses.replace(tr.indication.os_link, **self.os)
        return tr

    def run(self) -> dict:
        tr = self.trial()
        self.last = (tr, run_trial(tr, patients=self.n))
        return self.last[1].summary["arms"][self.control]

    def pfs_at(self, months: float) -> float:
        """Kaplan-Meier progression-free probability at ``months`` in the last run."""
        df = self.last[1].patients
        return survival_at(df["pfs_months"], df["pfs_event"], months)

    def resurvive(self, **os_link) -> dict:
        """Redraw OS (and PFS-with-death) of the last run for other OS-link constants, no re-simulation."""
        tr, res = self.last
        osp = dataclasses.replace(tr.indication.os_link, **{**self.os, **os_link})
        times, kept = res.samples[self.control]
        df = res.patients.sort_values("patient").reset_index(drop=True)
        os_m, os_e = linked_os(osp, times, df["tsr_w8"].to_numpy(), df["sld0_mm"].to_numpy(), kept["NLR"],
                               os_exponentials(res.summary["seed"], self.n), follow_up_days=tr.follow_up_days)
        out = df.assign(os_months=os_m, os_event=os_e)
        s = arm_summary(out.rename(columns={"best_response": "bor", "neutropenia_grade_max": "max_neutropenia_grade"}))
        s["os_12m"] = survival_at(os_m, os_e, 12.0)  # also when nobody is followed to 12 months
        s["os_at_14m"] = survival_at(os_m, os_e, 14.0)
        return s


def solve(f, lo, hi, target, log=True, tol=0.01, name=""):
    """Root of f(x) = target on [lo, hi] (bisection in log space for rates that are step functions)."""
    g = (lambda u: f(math.exp(u)) - target) if log else (lambda x: f(x) - target)
    a, b = (math.log(lo), math.log(hi)) if log else (lo, hi)
    try:
        x = brentq(g, a, b, xtol=tol)
    except ValueError:
        fa, fb = g(a) + target, g(b) + target
        raise SystemExit(f"{name}: target {target} not bracketed on [{lo}, {hi}] (f = {fa:.3g} .. {fb:.3g})")
    x = math.exp(x) if log else x
    print(f"  {name} = {x:.5g}  -> {f(x):.4g} (target {target})", flush=True)
    return x


def typical_tgi(arm: Arm, k2: float, day: float = 168.0) -> float:
    """1 - V(treated)/V(untreated) at ``day`` for the typical patient of the indication."""
    tr = arm.trial()
    m = tr.model
    names, p, _ = parameter_vector(m, "human", {**tr.indication.parameters, **arm.params, "tumour_k2_gem": k2})
    cm = compile_model(m, True)
    regs = list(tr.arms.values())[0]
    t = np.array([0.0, day])
    opts = SolverOptions(rtol=1e-6, atol=1e-10)
    v1 = simulate(cm, p[None], regs, t, ["tumour_total"], options=opts).output("tumour_total")[0, -1]
    v0 = simulate(cm, p[None], [], t, ["tumour_total"], options=opts).output("tumour_total")[0, -1]
    return 1.0 - v1 / v0


def update_csv(path: Path, key_cols: tuple[str, str], values: dict[str, tuple[float | None, float | None, str]]):
    """Rewrite value (and cv_percent) of rows keyed by (col0, col1) in place, keeping comments."""
    lines = path.read_text().splitlines(keepends=True)
    header = next(ln for ln in lines if not ln.startswith("#")).strip().split(",")
    iv, ic, isrc = header.index("value"), header.index("cv_percent"), header.index("source")
    k0, k1 = header.index(key_cols[0]), header.index(key_cols[1])
    done = set()
    for i, ln in enumerate(lines):
        if ln.startswith("#"):
            continue
        cells = ln.rstrip("\n").split(",")
        key = (cells[k0], cells[k1])
        if key in values:
            v, cv, src = values[key]
            if v is not None:
                cells[iv] = f"{v:.6g}"
            if cv is not None:
                cells[ic] = f"{cv:.3g}"
            cells = cells[:isrc] + [src]
            lines[i] = ",".join(cells) + "\n"
            done.add(key)
    missing = set(values) - done
    if missing:
        raise SystemExit(f"{path.name}: rows not found: {sorted(missing)}")
    path.write_text("".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=400)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--only", choices=["pancreatic", "bladder"])
    ap.add_argument("--given", nargs="*", default=[], metavar="NAME=VALUE",
                    help="skip these solves (names as printed, e.g. bm_slope_gem=0.3434 tumour_k2_gem_cv=1.1)")
    a = ap.parse_args()
    given = {k: float(v) for k, v in (g.split("=", 1) for g in a.given)}

    def solve_or_given(key, *args, **kw):
        if key in given:
            print(f"  {key} = {given[key]:.5g} (given)", flush=True)
            return given[key]
        return solve(*args, **kw)
    n = a.patients
    host, ind = {}, {}
    slope_gem = None

    if a.only in (None, "pancreatic"):
        print(f"pancreatic, gemcitabine arm, {n} patients", flush=True)
        arm = Arm(PANC, n)

        def g3(s):
            arm.params["bm_slope_gem"] = s
            return arm.run()["neutropenia_g3plus"]

        slope_gem = solve_or_given("bm_slope_gem", g3, 0.05, 2.0, 0.27, name="bm_slope_gem [1/uM]")
        arm.params["bm_slope_gem"] = slope_gem
        k2 = solve_or_given("tumour_k2_gem", lambda k: typical_tgi(arm, k), 1e-5, 5e-3, 0.223, name="tumour_k2_gem [1/uM/day]")
        arm.params["tumour_k2_gem"] = k2

        def orr(cv):
            arm.cvs["tumour_k2_gem"] = cv
            return arm.run()["orr"]

        def dcr(k):
            arm.params["met_k_seed"] = k
            return arm.run()["dcr"]

        for _ in range(2):
            cv = solve_or_given("tumour_k2_gem_cv", orr, 0.2, 3.0, 0.054, name="tumour_k2_gem CV")
            arm.cvs["tumour_k2_gem"] = cv
            seed = solve_or_given("met_k_seed", dcr, 1e-6, 0.1, 0.444, name="met_k_seed [mL cm3/day] (DCR)")
            arm.params["met_k_seed"] = seed
        s = arm.run()
        shape = 1.2
        for _ in range(4):
            med = solve(lambda m: arm.resurvive(median_os_months=m, weibull_shape=shape)["median_os_months"],
                        0.5, 9.0, 5.65, tol=1e-3, name="os.median_os_months")
            shape = solve(lambda k: arm.resurvive(median_os_months=med, weibull_shape=k)["os_12m"],
                          1.0, 3.0, 0.18, log=False, tol=1e-3, name="os.weibull_shape")
        arm.os.update(median_os_months=med, weibull_shape=shape)
        s = arm.run()
        print("  pancreatic gemcitabine arm:", {k: round(v, 3) for k, v in s.items() if isinstance(v, float)})
        host[("bm_slope_gem", "human")] = (slope_gem, None, _src_host("grade >= 3 neutropenia 27% "
                                           "of the virtual gemcitabine arm with weekly counts (MPACT gemcitabine arm, "
                                           "Von Hoff 2013 NEJM 369:1691; PMC4631139 Table 3)"))
        c = "calibrated (scripts/calibrate_trials.py): "
        ind[("pancreatic_advanced", "tumour_k2_gem")] = (k2, 100 * cv, c + "typical value -> 22.3% tumour-size "
                                                        "inhibition vs untreated after 6 cycles (Eur J Pharm Sci 2018;115:296); "
                                                        "CV -> ORR 5.4% (Burris 1997 JCO 15:2403)")
        ind[("pancreatic_advanced", "met_k_seed")] = (seed, None, c + "disease control rate 44.4% (PR 5.4% + SD "
                                                     "39%; Burris 1997) through new lesions; CV assumed")
        ind[("pancreatic_advanced", "os.median_os_months")] = (med, None, c + "median OS 5.65 months of the virtual "
                                                              "gemcitabine arm (Burris 1997)")
        ind[("pancreatic_advanced", "os.weibull_shape")] = (shape, None, c + "12-month OS 18% of the virtual "
                                                           "gemcitabine arm (Burris 1997)")

    if a.only in (None, "bladder"):
        print(f"bladder, GC arm, {n} patients", flush=True)
        arm = Arm(BLAD, n)
        if slope_gem is not None:
            arm.params["bm_slope_gem"] = slope_gem
            arm.params["tumour_k2_gem"] = k2
            arm.cvs["tumour_k2_gem"] = cv
            ind[("bladder_advanced", "tumour_k2_gem")] = (k2, 100 * cv, "assumed equal to pancreatic_advanced "
                                                         "(calibrated there); bladder-specific gemcitabine sensitivity not found")

        def g34(s):
            arm.params["bm_slope_cis"] = s
            return arm.run()["neutropenia_g3plus"]

        try:
            slope_cis = solve_or_given("bm_slope_cis", g34, 0.01, 50.0, 0.71, name="bm_slope_cis [1/uM]")
            arm.params["bm_slope_cis"] = slope_cis
        except SystemExit as exc:
            # known gap (docs/calibration.md): on the marrow model, G-CSF feedback buffers the short unbound-
            # cisplatin exposure, so no slope reaches 71%; keep the table value and report the rate reached
            print(f"  GAP: {exc}; bm_slope_cis kept at its table value", flush=True)
            slope_cis = None
            arm.params.pop("bm_slope_cis", None)

        def orr(k):
            arm.params["tumour_k2_cis"] = k
            return arm.run()["orr"]

        k2c = solve_or_given("tumour_k2_cis", orr, 1e-4, 50.0, 0.49, name="tumour_k2_cis [1/uM/day]")
        arm.params["tumour_k2_cis"] = k2c

        # median PFS is reported, not fitted: with the stem-like fraction that gives ORR 49% responses
        # are short (regrowth from repopulating stem-like cells); a fraction small enough for PFS 7.7
        # months makes nearly everyone respond (csc_f0 0.0045: ORR 99%). See docs/calibration.md.
        arm.run()
        # KM median may lie beyond the 18-month follow-up while searching: calibrate S_OS(14 months) = 0.5
        med = solve(lambda m: arm.resurvive(median_os_months=m)["os_at_14m"], 2.0, 60.0, 0.5,
                    tol=1e-3, name="os.median_os_months (S_OS(14 mo))")
        arm.os["median_os_months"] = med
        s = arm.run()
        print("  bladder GC arm:", {k: round(v, 3) for k, v in s.items() if isinstance(v, float)})
        c = "calibrated (scripts/calibrate_trials.py): "
        if slope_cis is not None and "bm_slope_cis" not in given:
            host[("bm_slope_cis", "human")] = (slope_cis, None, _src_host("grade 3/4 neutropenia 71% of "
                                               "the virtual GC arm with weekly counts (von der Maase 2000 JCO 18:3068)"))
        ind[("bladder_advanced", "tumour_k2_cis")] = (k2c, None, c + "ORR 49% of the virtual GC arm (von der Maase "
                                                     "2000 JCO 18:3068); CV assumed")
        ind[("bladder_advanced", "os.median_os_months")] = (med, None, c + "median OS 14.0 months of the virtual "
                                                           "GC arm (von der Maase 2005)")
    if a.write:
        update_csv(HOST_CSV, ("name", "species"), host)
        update_csv(IND_CSV, ("indication", "name"), ind)
        print("written:", HOST_CSV.name, IND_CSV.name)


def _src_host(text: str) -> str:
    return f"calibrated (scripts/calibrate_trials.py): {text}"


if __name__ == "__main__":
    main()
