"""Early-phase dose escalation of the blocker added to chemotherapy: ``chemohost phase1 STUDY.yaml``.

Designs (cohorts of ``cohort_size``, a declared dose grid and maximum sample size):

* **3+3** (the rule-based design): 0/3 DLT -> escalate; 1/3 -> 3 more at the dose, escalate if 1/6;
  >= 2 DLTs at a dose -> it is too toxic: the MTD is the next lower dose once 6 patients there had
  <= 1 DLT (3 more are treated there if it had only 3); none if the lowest dose is too toxic; the
  highest dose is the MTD if escalation from it is allowed.
* **BOIN** (Liu & Yuan 2015, J R Stat Soc C 64:507): escalate when the observed DLT rate at the
  current dose is <= lambda_e, de-escalate when >= lambda_d, with
  lambda_e = log((1-phi1)/(1-phi)) / log(phi (1-phi1) / (phi1 (1-phi))),
  lambda_d = log((1-phi)/(1-phi2)) / log(phi2 (1-phi) / (phi (1-phi2))), phi1 = 0.6 phi,
  phi2 = 1.4 phi (the published defaults); a dose and those above it are eliminated when
  P(p > phi | data) > 0.95 under a Beta(1, 1) prior with >= 3 patients treated there; the trial stops
  when the lowest dose is eliminated or the sample size is reached; the MTD is the dose whose isotonic
  (pooled-adjacent-violators) estimate is closest to phi among the doses tried and not eliminated.

DLT probabilities come either from the model -- each dose level is simulated on a pool of virtual
patients of the base trial (cycle 1, the backbone arm plus the blocker at that dose); a patient has a
DLT if ANC stays below 0.5e9/L for more than ``neutropenia_days`` days within the DLT window, or, with
the stated probability, from the blocker's own adverse events (``blocker_dlt_rate`` per dose, each with
its source or 'assumed') -- and every simulated trial draws its patients from the pools; or, in
**design-only** mode (``true_dlt: [...]``), from declared true probabilities, so the implementation
can be checked against the literature's operating characteristics (tests).

Operating characteristics over ``trials`` simulated trials: probability of selecting each dose (and of
no MTD), patients and DLTs per dose, trial length (cohorts x DLT window), and the probability of
selecting the true MTD (the highest dose whose true DLT rate is <= the target).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from scipy import stats

from ..errors import ScenarioError
from ..scenario import RegimenSpec, _Strict, build_regimens, quantity_field
from ..spec_types import Quantity, count
from .study import BaseSetup, Study, StudyResult, StudySpec, register

#: virtual patients per cluster task when the dose pools are simulated on a Dask cluster
CLUSTER_CHUNK = 250


def boin_boundaries(target: float, phi1: float | None = None, phi2: float | None = None) -> tuple[float, float]:
    """(lambda_e, lambda_d) of BOIN (Liu & Yuan 2015) for target DLT rate ``target``."""
    phi1 = 0.6 * target if phi1 is None else phi1
    phi2 = 1.4 * target if phi2 is None else phi2
    le = math.log((1 - phi1) / (1 - target)) / math.log(target * (1 - phi1) / (phi1 * (1 - target)))
    ld = math.log((1 - target) / (1 - phi2)) / math.log(phi2 * (1 - target) / (target * (1 - phi2)))
    return le, ld


def boin_table(target: float, n_max: int = 12, cutoff: float = 0.95) -> pd.DataFrame:
    """The decision table of BOIN: for n = 1..n_max patients at a dose, escalate if DLTs <= e,
    de-escalate if >= d, eliminate if >= x (P(p > target | Beta(1 + y, 1 + n - y)) > cutoff, n >= 3)."""
    le, ld = boin_boundaries(target)
    rows = []
    for n in range(1, n_max + 1):
        esc = math.floor(le * n + 1e-12)
        de = math.ceil(ld * n - 1e-12)
        elim = next((y for y in range(n + 1) if n >= 3 and stats.beta.sf(target, 1 + y, 1 + n - y) > cutoff), None)
        rows.append({"n": n, "escalate_if_le": esc, "deescalate_if_ge": de, "eliminate_if_ge": elim})
    return pd.DataFrame(rows)


def _pava(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pooled-adjacent-violators: the non-decreasing fit of ``y`` with weights ``w``."""
    blocks = [[float(v), float(ww), 1] for v, ww in zip(y, w)]
    i = 0
    while i < len(blocks) - 1:
        if blocks[i][0] > blocks[i + 1][0] + 1e-15:
            v1, w1, c1 = blocks[i]
            v2, w2, c2 = blocks[i + 1]
            blocks[i] = [(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2]
            del blocks[i + 1]
            i = max(i - 1, 0)
        else:
            i += 1
    return np.concatenate([[b[0]] * b[2] for b in blocks])


def boin_select(n: np.ndarray, y: np.ndarray, target: float, eliminated_from: int) -> int:
    """The BOIN MTD (index) from patients ``n`` and DLTs ``y`` per dose; -1 for none."""
    tried = np.flatnonzero((n > 0) & (np.arange(n.size) < eliminated_from))
    if tried.size == 0:
        return -1
    est = (y[tried] + 0.05) / (n[tried] + 0.1)
    iso = _pava(est, n[tried].astype(float))
    diff = np.abs(iso - target)
    best = np.flatnonzero(np.isclose(diff, diff.min(), atol=1e-12))
    if best.size > 1:  # ties: the higher dose below the target, the lower one above it
        best = best[-1:] if iso[best[0]] < target else best[:1]
    return int(tried[best[0]])


_ELIM: dict[tuple[float, int], np.ndarray] = {}


def _elimination(target: float, max_n: int) -> np.ndarray:
    """elim[n] = fewest DLTs among n patients that eliminate a dose (max_n + 1 if none)."""
    key = (target, max_n)
    if key not in _ELIM:
        t = boin_table(target, max(max_n, 3))
        e = np.full(max_n + 1, max_n + 1)
        for _, r in t.iterrows():
            if r["eliminate_if_ge"] is not None and not pd.isna(r["eliminate_if_ge"]):
                e[int(r["n"])] = int(r["eliminate_if_ge"])
        _ELIM[key] = e
    return _ELIM[key]


def simulate_boin(draw, n_doses: int, target: float, cohort: int, max_n: int, rng) -> tuple:
    le, ld = boin_boundaries(target)
    elim_at = _elimination(target, max_n)
    n = np.zeros(n_doses, dtype=int)
    y = np.zeros(n_doses, dtype=int)
    d, elim, cohorts = 0, n_doses, 0
    while n.sum() < max_n:
        k = min(cohort, max_n - n.sum())
        dl = draw(d, k, rng)
        n[d] += k
        y[d] += dl
        cohorts += 1
        if y[d] >= elim_at[n[d]]:  # P(p > target | Beta(1 + y, 1 + n - y)) > 0.95, n >= 3
            elim = min(elim, d)
            if d == 0:
                return n, y, -1, cohorts
            d -= 1
            continue
        rate = y[d] / n[d]
        if rate <= le and d + 1 < elim:
            d += 1
        elif rate >= ld and d > 0:
            d -= 1
    return n, y, boin_select(n, y, target, elim), cohorts


def simulate_3p3(draw, n_doses: int, cohort: int, max_n: int, rng) -> tuple:
    n = np.zeros(n_doses, dtype=int)
    y = np.zeros(n_doses, dtype=int)
    d, cohorts = 0, 0

    def treat(dose, k=3):
        nonlocal cohorts
        dl = draw(dose, k, rng)
        n[dose] += k
        y[dose] += dl
        cohorts += 1

    while True:
        if n.sum() + 3 > max_n:
            return n, y, _3p3_mtd(n, y), cohorts
        treat(d)
        if n[d] == 3 and y[d] == 1:
            if n.sum() + 3 > max_n:
                return n, y, _3p3_mtd(n, y), cohorts
            treat(d)
        if y[d] <= 1 and (n[d] >= 6 or y[d] == 0):  # 0/3 or <= 1/6: escalate
            if d + 1 == n_doses:
                return n, y, d, cohorts
            d += 1
            continue
        # too toxic at d: the MTD is the highest lower dose with <= 1/6
        while d > 0:
            d -= 1
            if n[d] < 6:
                if n.sum() + 3 > max_n:
                    return n, y, _3p3_mtd(n, y), cohorts
                treat(d)
            if y[d] <= 1:
                return n, y, d, cohorts
        return n, y, -1, cohorts


def _3p3_mtd(n, y) -> int:
    ok = np.flatnonzero((n >= 3) & (y <= n / 6 + 1e-9))
    return int(ok[-1]) if ok.size else -1


class BlockerDose(_Strict):
    drug: str
    route: Literal["iv", "ip", "sc", "oral"] = "iv"
    infusion: Quantity | None = None
    days: list[int] = Field(default_factory=lambda: [1])
    times_of_day: list[Quantity] | None = None
    cycle_length: Quantity = "28 day"


class DLTSpec(_Strict):
    window: Quantity = "28 day"
    neutropenia_days: float = Field(7.0, ge=0, description="DLT if ANC < 0.5e9/L for more than this many days")
    blocker_dlt_rate: list[float] | None = Field(None, description="the blocker's own DLT probability per dose")
    blocker_dlt_source: str = "assumed: none (no DLT reported for the blocker alone)"


class Phase1Spec(StudySpec):
    study: Literal["phase1"]
    base: str | None = Field(None, description="base trial file (model mode)")
    arm: str | None = Field(None, description="the backbone arm of the base trial (model mode)")
    blocker: BlockerDose | None = None
    doses: list[Quantity] = Field(min_length=1, max_length=20)
    true_dlt: list[float] | None = Field(None, description="design-only mode: true DLT probability per dose")
    dlt: DLTSpec = Field(default_factory=DLTSpec)
    designs: list[Literal["3+3", "boin"]] = Field(default_factory=lambda: ["3+3", "boin"], min_length=1)
    target: float = Field(0.3, gt=0.05, lt=0.6)
    cohort_size: count(1, 12) = 3
    max_patients: count(3, 200) = 30
    trials: count(10, 1_000_000) = 1000
    pool: count(10, 100_000) = Field(1000, description="virtual patients simulated per dose (model mode)")
    cohort_days: Quantity = Field("28 day", description="time one cohort takes (accrual + DLT window)")


@register
class Phase1Study(Study):
    kind = "phase1"
    Spec = Phase1Spec

    def resolve(self) -> None:
        s, col, f = self.spec, self.collector, self.source
        self.design_only = s.true_dlt is not None
        if self.design_only:
            if len(s.true_dlt) != len(s.doses):
                col.add("true_dlt", f"give one probability per dose ({len(s.doses)}), got {len(s.true_dlt)}")
            if any(not 0 <= p <= 1 for p in s.true_dlt):
                col.add("true_dlt", "probabilities must lie in [0, 1]")
        else:
            if s.base is None or s.arm is None or s.blocker is None:
                col.add("base", "model mode needs 'base', 'arm' and 'blocker' (or give 'true_dlt' for design-only)")
                return
            self.base = BaseSetup.load(s.base, self.base_dir, f)
            trial = self.base.trial
            if s.arm not in trial.arms:
                col.add("arm", f"'{s.arm}' is not an arm of the base trial; arms: {', '.join(trial.arms)}")
            if s.blocker.drug not in trial.model.drugs:
                col.add("blocker.drug", f"unknown drug '{s.blocker.drug}'")
            if s.dlt.blocker_dlt_rate is not None and len(s.dlt.blocker_dlt_rate) != len(s.doses):
                col.add("dlt.blocker_dlt_rate", f"give one probability per dose ({len(s.doses)})")
            with col.check("dlt.window"):
                self.window = quantity_field(s.dlt.window, "day", f, "dlt.window")
                if not 0 < self.window <= trial.follow_up_days:
                    raise ScenarioError("must be > 0 and within the base trial's follow-up")
            if not col.lines:
                for i, d in enumerate(s.doses):
                    with col.check(f"doses[{i}]"):
                        self.regimens(d)
        with col.check("cohort_days"):
            self.cohort_days = quantity_field(s.cohort_days, "day", f, "cohort_days")

    def regimens(self, dose) -> list:
        b = self.spec.blocker
        spec = RegimenSpec(drug=b.drug, dose=dose, route=b.route, infusion=b.infusion, days=b.days,
                           times_of_day=b.times_of_day, cycle_length=b.cycle_length, cycles=1)
        return list(self.base.trial.arms[self.spec.arm]) + build_regimens([spec], self.base.trial.model.drugs,
                                                                          self.source, "blocker")

    def pools(self, progress: bool, ck, posterior=None, executor=None) -> tuple[list[np.ndarray], pd.DataFrame]:
        """Per dose: (pool,) DLT indicator of each virtual patient (neutropenia; blocker AEs drawn
        per patient with the stated probability, seeded).  ``executor``: where the pools are simulated (a
        cluster gets every dose's pool at once, in blocks of ``CLUSTER_CHUNK`` patients; default: here)."""
        from ..engine.simulate import SolverOptions
        from .cluster import InProcess, blocks, simulate_remote
        from .trial_runner import sample_trial_patients

        s, trial = self.spec, self.base.trial
        sv = trial.spec.solver
        opts = SolverOptions.from_fields(sv)
        _, P, _, _ = sample_trial_patients(trial, s.pool, s.seed)
        if posterior is not None:
            from .study import posterior_population

            P, _ = posterior_population(self.base, P, posterior, s.seed, self.source)
        grid = np.arange(0.0, self.window + 1e-9, 0.25)
        rng = np.random.default_rng([s.seed, 17])
        ae_u = rng.random(s.pool)
        parts_of = blocks(s.pool, s.pool if executor is None else CLUSTER_CHUNK)
        frames = {i: got[0] for i in range(len(s.doses)) if (got := ck.load(f"dose{i}")) is not None}
        items = [((i, c), (trial.model.name, sv.closed_form, P[c:e], self.regimens(dose), grid, ["ANC"], opts))
                 for i, dose in enumerate(s.doses) if i not in frames for c, e in parts_of]
        got: dict = {}
        for (i, c), res in (executor or InProcess()).map(simulate_remote, items):
            got.setdefault(i, {})[c] = res
            if len(got[i]) == len(parts_of):  # this dose's whole pool is in: one checkpoint
                parts = [got[i][c] for c in sorted(got[i])]
                below = np.concatenate([r.output("ANC") for r in parts]) < 0.5
                status = np.concatenate([r.status for r in parts])
                frames[i] = ck.save(f"dose{i}", pd.DataFrame({"ok": status == 0,
                                                              "g4_days": _longest_run(below) * 0.25}))
                del got[i]
        pools, rows = [], []
        for i, dose in enumerate(s.doses):
            frame = frames[i]
            neut = (frame["g4_days"].to_numpy(float) > s.dlt.neutropenia_days) & frame["ok"].to_numpy(bool)
            p_ae = s.dlt.blocker_dlt_rate[i] if s.dlt.blocker_dlt_rate else 0.0
            dlt = neut | (ae_u < p_ae)
            pools.append(dlt[frame["ok"].to_numpy(bool)])
            rows.append({"dose": str(dose), "pool": int(frame["ok"].sum()), "failed": int((~frame["ok"]).sum()),
                         "neutropenia_dlt": float(neut[frame["ok"].to_numpy(bool)].mean()),
                         "blocker_ae_dlt": float(p_ae), "true_dlt": float(pools[-1].mean())})
            if progress:
                print(f"  dose {dose}: DLT rate {rows[-1]['true_dlt']:.3f} in {rows[-1]['pool']} virtual patients",
                      file=sys.stderr, flush=True)
        return pools, pd.DataFrame(rows)

    def run(self, *, progress: bool = False, checkpoint=None, posterior=None, executor=None) -> StudyResult:
        """``executor``: where the model mode's dose pools are simulated (:mod:`chemohost.studies.cluster`;
        default here); the trial designs are then simulated here (cheap: counts drawn from the pools)."""
        from .checkpoint import Checkpoint

        s = self.spec
        if posterior is not None and self.design_only:
            raise ScenarioError("--posterior needs model mode (design-only mode takes declared DLT probabilities)",
                                file=self.source, field="--posterior")
        t0 = time.perf_counter()
        fp = self.fingerprint()
        if posterior is not None:
            fp["posterior"] = [str(posterior.folder), posterior.manifest.get("problem_sha256")]
        ck = checkpoint(fp) if checkpoint else Checkpoint(None, {})
        if self.design_only:
            true = np.asarray(s.true_dlt, dtype=float)
            doses = pd.DataFrame({"dose": [str(d) for d in s.doses], "true_dlt": true})

            def draw(d, k, rng):
                return int((rng.random(k) < true[d]).sum())
        else:
            pools, doses = self.pools(progress, ck, posterior, executor)
            true = doses["true_dlt"].to_numpy(float)

            def draw(d, k, rng):
                return int(pools[d][rng.integers(0, pools[d].size, size=k)].sum())
        t1 = time.perf_counter()
        ok = np.flatnonzero(true <= s.target + 1e-12)
        true_mtd = int(ok[-1]) if ok.size else -1
        D = len(s.doses)
        per, oc = [], []
        for design in s.designs:
            rng = np.random.default_rng([s.seed, 101 if design == "boin" else 33])
            sel = np.zeros(D + 1)
            npat = np.zeros(D)
            ndlt = np.zeros(D)
            length = []
            for t in range(s.trials):
                if design == "boin":
                    n, y, mtd, cohorts = simulate_boin(draw, D, s.target, s.cohort_size, s.max_patients, rng)
                else:
                    n, y, mtd, cohorts = simulate_3p3(draw, D, s.cohort_size, s.max_patients, rng)
                sel[mtd if mtd >= 0 else D] += 1
                npat += n
                ndlt += y
                length.append(cohorts * self.cohort_days)
                if t < 2000:
                    per.append({"design": design, "trial": t, "mtd": mtd, "patients": int(n.sum()),
                                "dlts": int(y.sum()), "cohorts": cohorts})
            T = s.trials
            pcs = sel[:D] / T
            oc.append({"design": design, "trials": T, **{f"select_{i}": pcs[i] for i in range(D)},
                       "select_none": sel[D] / T, **{f"patients_{i}": npat[i] / T for i in range(D)},
                       **{f"dlts_{i}": ndlt[i] / T for i in range(D)}, "patients_mean": npat.sum() / T,
                       "dlts_mean": ndlt.sum() / T, "length_days_mean": float(np.mean(length)),
                       "p_correct": (pcs[true_mtd] if true_mtd >= 0 else sel[D] / T),
                       "p_overdose_selected": float(pcs[true > s.target + 1e-12].sum())})
        t2 = time.perf_counter()
        ocf = pd.DataFrame(oc)
        le, ld = boin_boundaries(s.target)
        summary = {"mode": "design-only" if self.design_only else "model", "target": s.target,
                   "doses": [str(d) for d in s.doses], "true_dlt": true.tolist(),
                   "true_mtd": s.doses[true_mtd] if true_mtd >= 0 else None, "trials": s.trials,
                   "boin": {"lambda_e": le, "lambda_d": ld}, "operating_characteristics": ocf.to_dict("records")}
        if not self.design_only:
            summary["dlt_definition"] = (f"ANC < 0.5e9/L for more than {s.dlt.neutropenia_days:g} days within "
                                         f"{self.window:g} days, or a blocker adverse event "
                                         f"({s.dlt.blocker_dlt_source})")
        return StudyResult(self, {"doses": doses, "operating_characteristics": ocf, "trials": pd.DataFrame(per),
                                  "boin_table": boin_table(s.target)}, summary,
                           {"dlt_rates": t1 - t0, "simulate_trials": t2 - t1})

    def write(self, result: StudyResult, folder: Path) -> None:
        from ..outputs import json_safe
        from ..report.study_report import render_phase1

        for name, df in result.tables.items():
            df.to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "summary.json").write_text(json.dumps(json_safe(result.summary), indent=2, default=str))
        (folder / "report.html").write_text(render_phase1(result))


def _longest_run(mask: np.ndarray) -> np.ndarray:
    """(N,) length (in samples) of the longest run of True in each row."""
    best = np.zeros(mask.shape[0], dtype=int)
    cur = np.zeros(mask.shape[0], dtype=int)
    for j in range(mask.shape[1]):
        cur = np.where(mask[:, j], cur + 1, 0)
        best = np.maximum(best, cur)
    return best
