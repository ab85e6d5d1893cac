"""The monitoring-driven patient twin: ``chemohost twin PATIENT.yaml --out DIR``.

A posterior over one patient's parameters given the population prior, updated visit by visit, then
forecasts under candidate next actions, a recommendation and the value of the next measurement.

**Method: sequential Monte Carlo over the batch engine** (the particles are the batch).  Why SMC and
not MCMC: the record grows visit by visit and each update must reuse the last one; the engine
evaluates 1,000-2,000 particles in one compiled call (seconds), while a chain would need thousands of
sequential single-patient simulations per update; and the forecasts need samples of the whole
parameter vector, which the particle cloud is.  Algorithm (a resample-move particle filter, Chopin
2002; Del Moral, Doucet & Jasra 2006):

1. Prior: the virtual population of the indication (covariate distributions and log-normal IIV, the
   patient's known covariates fixed) plus the host-response couplings the data cannot pin across the
   population (``il1r1_ec50``, ``gcsf_il1_emax``: log-uniform over their ranges, or draws of a fit's
   posterior with ``--posterior``).  For the moves below the prior is used as a multivariate normal on
   the log scale fitted to 4,000 prior draws (the particles are drawn from the same).
2. For each visit in time order the weights are multiplied by the likelihood of its measurements
   (log-normal errors with the assay/biological CVs of :data:`patient_record.OBSERVABLES`; values
   below the assay's detection limit as CDF terms).  When the effective sample size falls below half,
   particles are resampled (systematic) and moved by ``moves`` random-walk Metropolis steps (proposal
   scaled to the particle covariance, 2.38^2/d times a tuning factor) targeting the posterior of the
   visits so far: rejuvenation, so the cloud does not collapse.
3. Forecasts: every particle is simulated from day 0 with the dosing given so far and each candidate
   next action (continue; reduce the chemotherapy dose one level, -20%; delay one week; add the IL-1alpha
   antibody now; add the caspase-1 inhibitor now; switch gemcitabine to fixed dose rate; stop
   chemotherapy): ANC nadir and P(grade >= 3 / 4 neutropenia) in the next 28 days, NLR at the next
   visit, sum of diameters and P(progression) at the next scan, P(progression-free) at 6 months
   (RECIST on the simulated true size: +20% and +5 mm over the nadir, or a new lesion).
4. Recommendation: the action maximising the declared objective (default P(progression-free at the next
   restaging scan); P(progression-free at 6 months) with ``--objective``) among those meeting the constraint (default P(grade 4 neutropenia next cycle) < 10%); each
   action's expected value comes with its Monte-Carlo standard error and 90% interval.
5. Value of information: for each candidate measurement at the next visit, the expected reduction of
   the posterior variance of the objective under the recommended action (preposterior analysis on the
   particles: simulated measurements reweight the cloud; no new simulation).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from ..errors import ScenarioError
from .patient_record import OBSERVABLES, PatientRecord

ACTIONS = ("continue", "reduce_dose", "delay_1w", "add_il1a_antibody", "add_caspase1_inhibitor", "switch_fdr",
           "stop_chemotherapy")
COUPLINGS = {"il1r1_ec50": (1.2, 50.0), "gcsf_il1_emax": (0.5, 50.0)}
SCAN_DAYS = 56.0  # every 8 weeks, as the trials assess
MAX_TEMPER_STEPS = 50  # tempering steps per visit before the rest of its likelihood is taken at once
HORIZON = 182.0  # 6 months from now


@dataclass
class TwinOptions:
    particles: int = 1000
    moves: int = 2
    seed: int = 0
    objective: str = "p_progression_free_next_scan"
    constraint: str = "p_grade4_next_cycle"
    constraint_max: float = 0.10
    actions: tuple = ACTIONS
    #: an action other than 'continue' is recommended only if its expected objective beats continuing by at
    #: least this much (a treatment threshold: the gain that justifies an extra drug); 0 = pure argmax
    min_gain: float = 0.0


@dataclass
class TwinResult:
    record: PatientRecord
    options: TwinOptions
    particles: pd.DataFrame  # final posterior (names, weight)
    history: pd.DataFrame  # per visit: ESS, resampled, acceptance, P(IL-1 high), posterior quantiles
    fitted: pd.DataFrame  # time courses: observable, day, q05/q50/q95 of the posterior
    forecasts: pd.DataFrame  # action x quantity: mean, se, q05, q95
    recommendation: dict
    voi: pd.DataFrame
    timings: dict
    notes: list = field(default_factory=list)


class Twin:
    def __init__(self, record: PatientRecord, options: TwinOptions | None = None, posterior=None):
        from ..api import parameter_vector
        from ..engine.codegen import compile_model
        from ..engine.simulate import SolverOptions
        from .indications import load_indication

        self.rec = record
        self.opt = options or TwinOptions()
        o = self.opt
        if o.particles < 50:
            raise ScenarioError(f"--particles must be >= 50, got {o.particles}")
        spec = record.spec
        self.model = record.model
        self.ind = load_indication(spec.indication, self.model.parameters) if spec.indication else None
        params = dict(self.ind.parameters) if self.ind else {}
        self.names, self.typical, _ = parameter_vector(self.model, spec.species, params)
        self.cm = compile_model(self.model, True)
        self.solver = SolverOptions(rtol=1e-5, atol=1e-9)
        self.posterior = posterior
        self.rng = np.random.default_rng([o.seed, 11])
        self.given_events: list | None = None  # the doses actually given before now (overrides the record)
        self._prior()

    def for_patient(self, record: PatientRecord, known: dict[str, float], seed: int,
                    given_events: list | None = None) -> "Twin":
        """A twin for another patient of the same model, indication and schedule, reusing this prior
        conditioned on the patient's known parameters ``known`` (e.g. BSA, WT, CRCL; internal units):
        Gaussian conditioning of the log-scale prior, those parameters then fixed.  No new population
        sample (the twin-guided trial builds one per virtual patient)."""
        import copy

        tw = copy.copy(self)
        tw.rec = record
        tw.opt = replace(self.opt, seed=seed)
        tw.rng = np.random.default_rng([seed, 11])
        tw.given_events = given_events
        free = self.free.tolist()
        cidx = [free.index(self.names.index(k)) for k in known if self.names.index(k) in free]
        tw.fixed = self.fixed.copy()
        for k, v in known.items():
            tw.fixed[self.names.index(k)] = v
        if cidx:
            ridx = [i for i in range(len(free)) if i not in cidx]
            xc = np.array([math.log(known[self.names[free[i]]]) for i in cidx])
            S = self.cov
            K = S[np.ix_(ridx, cidx)] @ np.linalg.inv(S[np.ix_(cidx, cidx)])
            tw.mu = self.mu[ridx] + K @ (xc - self.mu[cidx])
            tw.cov = S[np.ix_(ridx, ridx)] - K @ S[np.ix_(cidx, ridx)]
            tw.cov = 0.5 * (tw.cov + tw.cov.T) + 1e-10 * np.eye(len(ridx))
            tw.cov_inv = np.linalg.inv(tw.cov)
            tw.free = self.free[ridx]
            tw.bounds = {ridx.index(k): b for k, b in self.bounds.items() if k in ridx}
        return tw

    # -- prior -------------------------------------------------------------------------------------
    def _population(self, n: int, seed: int) -> np.ndarray:
        from ..population.virtual import sample_population

        spec = self.rec.spec
        if spec.species != "human":
            from ..api import parameter_vector, sample_patients

            names, typical, cvs = parameter_vector(self.model, spec.species,
                                                   {**(self.ind.parameters if self.ind else {}), **spec.covariates})
            return sample_patients(typical, cvs, n, seed, True)
        _, P, _ = sample_population(self.model, spec.species, None, n, seed,
                                    parameters=self.ind.parameters if self.ind else None,
                                    cv_overrides=self.ind.cvs if self.ind else None, fixed=spec.covariates or None)
        return P

    def _prior(self) -> None:
        P = self._population(4000, self.opt.seed + 1)
        cj = [self.names.index(c) for c in COUPLINGS]
        if self.posterior is not None:
            d = self.posterior.draws
            k = self.rng.integers(0, len(d), P.shape[0])
            for c in COUPLINGS:
                if c in d:
                    P[:, self.names.index(c)] = d[c].to_numpy(float)[k]
        else:
            for c, (lo, hi) in COUPLINGS.items():
                P[:, self.names.index(c)] = np.exp(self.rng.uniform(math.log(lo), math.log(hi), P.shape[0]))
        logP = np.log(np.maximum(P, 1e-300))
        var = logP.std(axis=0) > 1e-9
        var &= (P > 0).all(axis=0)
        self.free = np.flatnonzero(var)  # the parameters that differ between particles (log scale)
        self.fixed = P[0].copy()
        X = logP[:, self.free]
        self.mu = X.mean(axis=0)
        self.cov = np.cov(X.T) + 1e-10 * np.eye(X.shape[1])
        self.cov_inv = np.linalg.inv(self.cov)
        self.bounds = {self.free.tolist().index(j): (math.log(lo), math.log(hi))
                       for j, (lo, hi) in zip(cj, COUPLINGS.values()) if j in self.free}

    def log_prior(self, X: np.ndarray) -> np.ndarray:
        d = X - self.mu
        lp = -0.5 * np.einsum("ij,jk,ik->i", d, self.cov_inv, d)
        for k, (lo, hi) in self.bounds.items():
            lp = np.where((X[:, k] < lo) | (X[:, k] > hi), -np.inf, lp)
        return lp

    def params(self, X: np.ndarray) -> np.ndarray:
        P = np.repeat(self.fixed[None, :], X.shape[0], axis=0)
        P[:, self.free] = np.exp(X)
        return P

    # -- dosing ------------------------------------------------------------------------------------
    def history_events(self) -> list:
        """Single-dose regimens of what was given before 'now' (the given CSV, or the plan)."""
        from ..protocol.dosing import dose_table

        now = self.rec.now
        if self.given_events is not None:
            return [r for r in self.given_events if r.start < now - 1e-9]
        if self.rec.given is not None:
            return [r for r in self.rec.given.single_dose_regimens(0) if r.start < now - 1e-9]
        return [r for r in _events(self.rec.regimens, dose_table) if r.start < now - 1e-9]

    def action_events(self, action: str) -> list:
        """History + the planned future modified by ``action``."""
        from ..protocol.dosing import Regimen, dose_table, parse_dose

        now = self.rec.now
        future = [r for r in _events(self.rec.regimens, dose_table) if r.start >= now - 1e-9]
        chemo = {"gemcitabine", "cisplatin", "docetaxel"}
        if action == "reduce_dose":
            future = [replace(r, dose=r.dose * 0.8) if r.drug in chemo else r for r in future]
        elif action == "delay_1w":
            future = [replace(r, start=r.start + 7.0) if r.drug in chemo else r for r in future]
        elif action == "stop_chemotherapy":
            future = [r for r in future if r.drug not in chemo]
        elif action == "switch_fdr":
            v, basis = parse_dose("1500 mg/m2")
            future = [replace(r, dose=v, basis=basis, infusion=150.0 / 1440.0) if r.drug == "gemcitabine" else r
                      for r in future]
        elif action == "add_il1a_antibody":
            v, basis = parse_dose("7.5 mg/kg")
            future += [Regimen(drug="bermekimab", dose=v, basis=basis, route="iv", infusion=1 / 24, days=(1,),
                               cycle_length=14.0, cycles=13, start=now, label="bermekimab")]
        elif action == "add_caspase1_inhibitor":
            v, basis = parse_dose("900 mg")
            future += [Regimen(drug="belnacasan", dose=v, basis=basis, route="oral", days=(1,), cycle_length=1.0,
                               cycles=int(HORIZON), start=now, times_of_day=(0.0, 1 / 3, 2 / 3),
                               label="belnacasan")]
        return self.history_events() + future

    # -- likelihood --------------------------------------------------------------------------------
    def simulate(self, X: np.ndarray, events: list, times: np.ndarray, outputs: list[str]):
        """The particles through the engine; identical particles (resampling duplicates them) run once."""
        from ..engine.simulate import simulate

        regs = events if events else []
        U, inv = np.unique(X, axis=0, return_inverse=True)
        if U.shape[0] > 0.9 * X.shape[0]:
            return simulate(self.cm, self.params(X), regs, times, outputs, options=self.solver)
        return _Rows(simulate(self.cm, self.params(U), regs, times, outputs, options=self.solver), inv.reshape(-1))

    def _quantities(self, res, names):
        out = {}
        for key in names:
            q = OBSERVABLES[key][0]
            if q == "SLD":
                from .endpoints import sum_of_diameters

                out[key] = sum_of_diameters(res.output("tumour_total"))
            else:
                out[key] = res.output(q)
        return out

    def _outputs_for(self, keys) -> list[str]:
        outs = set()
        for k in keys:
            q = OBSERVABLES[k][0]
            outs.add("tumour_total" if q == "SLD" else q)
        return sorted(outs)

    def loglik(self, X: np.ndarray, obs: list, split: int | None = None):
        """(N,) log-likelihood of observations ``obs`` for particles ``X``; with ``split`` the pair
        (log-likelihood of ``obs[:split]``, of ``obs[split:]``) from the same simulation."""
        if not obs:
            return np.zeros(X.shape[0])
        days = np.unique([o.day for o in obs])
        keys = sorted({o.observable for o in obs})
        res = self.simulate(X, self.history_events(), np.unique(np.r_[0.0, days]), self._outputs_for(keys))
        qs = self._quantities(res, keys)
        t = res.times
        ll = np.zeros(X.shape[0])
        ll_first = None
        for n_o, o in enumerate(obs):
            if split is not None and n_o == split:
                ll_first, ll = ll, np.zeros(X.shape[0])
            j = int(np.searchsorted(t, o.day))
            h = qs[o.observable][:, j]
            sig = OBSERVABLES[o.observable][3]
            if OBSERVABLES[o.observable][2] == "detection":  # new lesion seen (1) or not (0) on a scan
                from scipy.stats import norm

                from .scans import ScanModel

                thr = ScanModel(interval_days=SCAN_DAYS).new_lesion_threshold_cm3
                known = qs[o.observable][:, 0] >= thr
                p = np.where(known, 0.0, norm.cdf(np.log(np.maximum(h, 1e-12) / thr) / sig))
                p = np.clip(p, 1e-9, 1 - 1e-9)
                ll += np.log(p) if o.value > 0.5 else np.log1p(-p)
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                mu = np.log(np.maximum(h, 1e-300))
            if o.censored:
                ll += special.log_ndtr((math.log(o.lloq) - mu) / sig)
            else:
                y = math.log(max(o.value, 1e-12))
                ll += -0.5 * ((y - mu) / sig) ** 2 - math.log(sig)
        ll[res.status != 0] = -np.inf
        if split is not None:
            if ll_first is None:
                ll_first, ll = ll, np.zeros(X.shape[0])
            ll_first[res.status != 0] = -np.inf
            return ll_first, ll
        return ll

    # -- SMC ---------------------------------------------------------------------------------------
    def run(self, progress: bool = False) -> TwinResult:
        t0 = time.perf_counter()
        X, w = self._filter(progress)
        t1 = time.perf_counter()
        P = self.params(X)
        particles = pd.DataFrame(P[:, self.free], columns=[self.names[j] for j in self.free])
        particles["weight"] = w
        fitted = self._fitted(X, w)
        fc, per = self._forecasts(X, w, progress)
        t2 = time.perf_counter()
        rec = self._recommend(fc)
        voi = self._voi(X, w, per, rec["action"])
        return TwinResult(self.rec, self.opt, particles, pd.DataFrame(self._hist), fitted, fc, rec, voi,
                          {"update": t1 - t0, "forecast": t2 - t1, "value_of_information": time.perf_counter() - t2})

    def _filter(self, progress: bool = False):
        """The SMC pass over the visits; returns the final particles (log scale) and weights.

        Each visit's likelihood is brought in by adaptive tempering (Jasra et al. 2011, Scand J Stat
        38:1): the exponent rises from 0 to 1 in steps chosen so that the effective sample size of each
        step stays at half the particles; after each step the cloud is resampled and moved (random-walk
        Metropolis targeting the tempered posterior).  A very informative visit (a raised ANC on day 8)
        thus never collapses the cloud onto a few particles, which made the predictive intervals too
        narrow."""
        o = self.opt
        N = o.particles
        L = np.linalg.cholesky(self.cov)
        X = self.mu + self.rng.standard_normal((N, self.mu.size)) @ L.T
        for k, (lo, hi) in self.bounds.items():
            X[:, k] = self.rng.uniform(lo, hi, N)
        logw = np.zeros(N)
        seen: list = []
        hist = []
        days = self.rec.visit_days
        for v, day in enumerate(days):
            new = [ob for ob in self.rec.observations if ob.day == day]
            ll_new = self.loglik(X, new)
            phi, steps, accs, ess0 = 0.0, 0, [], None
            while phi < 1.0:
                # the step that keeps ESS >= N/2; after MAX_TEMPER_STEPS the rest of the visit at once (its
                # likelihood is always brought in whole, even if the ESS then drops)
                room = 1.0 - phi
                delta = room if steps + 1 >= MAX_TEMPER_STEPS else _temper_step(logw, ll_new, room, N / 2)
                logw = logw + delta * np.where(np.isfinite(ll_new), ll_new, -np.inf)
                phi = 1.0 if delta >= room else phi + delta
                w = _normalise(logw)
                ess = 1.0 / np.sum(w ** 2)
                ess0 = ess if ess0 is None else min(ess0, ess)
                steps += 1
                if ess < N / 2 or phi < 1.0 or v == len(days) - 1:
                    idx = _systematic(w, self.rng)
                    X, logw, ll_new = X[idx], np.zeros(N), ll_new[idx]
                    accs.append(self._move(X, seen, o.moves, new, phi, ll_new))
            seen += new
            w = _normalise(logw)
            P = self.params(X)
            row = {"visit": v + 1, "day": day, "n_measurements": len(new), "ess_before_resampling": float(ess0),
                   "tempering_steps": steps, "resampled": bool(accs),
                   "move_acceptance": float(np.mean(accs)) if accs else float("nan"),
                   "p_il1_high": float(np.sum(w * self._il1_high(P)))}
            for c in COUPLINGS:
                j = self.names.index(c)
                row[f"{c}_median"] = float(_wquant(P[:, j], w, 0.5))
            hist.append(row)
            if progress:
                print(f"  visit {v + 1} (day {day:g}): {len(new)} measurement(s), {steps} tempering step(s), "
                      f"lowest ESS {ess0:.0f}/{N}, P(IL-1-driven) {row['p_il1_high']:.2f}", file=sys.stderr, flush=True)
        self._hist = hist
        return X, _normalise(logw)

    def _move(self, X: np.ndarray, obs: list, moves: int, new: list | None = None, phi: float = 1.0,
              ll_new: np.ndarray | None = None) -> float:
        """Random-walk Metropolis moves of every particle (in place) targeting prior x likelihood of ``obs``
        x likelihood of ``new`` to the power ``phi``; ``ll_new`` (the particles' log-likelihood of ``new``)
        is updated in place.  Returns the acceptance rate."""
        d = X.shape[1]
        new = new or []
        C = np.cov(X.T) + 1e-8 * np.eye(d)
        L = np.linalg.cholesky(C * (2.38 ** 2 / d) * 0.25)
        lo, ln = self._loglik2(X, obs, new)
        if ll_new is None:
            ll_new = ln
        else:
            ll_new[:] = ln
        cur = self.log_prior(X) + lo + phi * np.where(np.isfinite(ln), ln, -np.inf)
        acc = 0
        for _ in range(moves):
            Y = X + self.rng.standard_normal(X.shape) @ L.T
            lp = self.log_prior(Y)
            ok = np.isfinite(lp)
            cand = np.full(X.shape[0], -np.inf)
            cand_new = np.full(X.shape[0], -np.inf)
            if ok.any():
                a_, b_ = self._loglik2(Y[ok], obs, new)
                cand_new[ok] = b_
                cand[ok] = lp[ok] + a_ + phi * np.where(np.isfinite(b_), b_, -np.inf)
            a = np.log(self.rng.random(X.shape[0])) < cand - cur
            X[a] = Y[a]
            cur[a] = cand[a]
            ll_new[a] = cand_new[a]
            acc += int(a.sum())
        return acc / max(moves * X.shape[0], 1)

    def _loglik2(self, X: np.ndarray, old: list, new: list) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihoods of two sets of observations from one simulation of the particles."""
        if not new:
            return self.loglik(X, old), np.zeros(X.shape[0])
        if not old:
            return np.zeros(X.shape[0]), self.loglik(X, new)
        return self.loglik(X, old + new, split=len(old))

    def _il1_high(self, P: np.ndarray) -> np.ndarray:
        """Indicator of an IL-1-driven host response: coupling strength ln(gcsf_il1_emax / il1r1_ec50) above
        the prior median (the two parameters that drive the blockade effect in the sensitivity study)."""
        s = np.log(P[:, self.names.index("gcsf_il1_emax")]) - np.log(P[:, self.names.index("il1r1_ec50")])
        ref = 0.5 * (math.log(COUPLINGS["gcsf_il1_emax"][0] * COUPLINGS["gcsf_il1_emax"][1])
                     - math.log(COUPLINGS["il1r1_ec50"][0] * COUPLINGS["il1r1_ec50"][1]))
        return (s > ref).astype(float)

    def _fitted(self, X, w) -> pd.DataFrame:
        keys = sorted({o.observable for o in self.rec.observations if OBSERVABLES[o.observable][2] == "log"})
        t = np.arange(0.0, self.rec.now + 1e-9, 1.0)
        res = self.simulate(X, self.history_events(), t, self._outputs_for(keys))
        qs = self._quantities(res, keys)
        rows = []
        for k in keys:
            y = qs[k]
            for j, day in enumerate(t):
                rows.append({"observable": k, "day": day, "q05": _wquant(y[:, j], w, 0.05),
                             "q50": _wquant(y[:, j], w, 0.5), "q95": _wquant(y[:, j], w, 0.95)})
        return pd.DataFrame(rows)

    def _forecasts(self, X, w, progress):
        now = self.rec.now
        t = np.unique(np.r_[np.arange(0.0, now + HORIZON + 1e-9, 1.0), now + HORIZON])
        nxt = now + 7.0
        scans = [now + SCAN_DAYS * k for k in (1, 2, 3)]
        rows, per = [], {}
        for a in self.opt.actions:
            res = self.simulate(X, self.action_events(a), t, ["ANC", "NLR", "tumour_total", "met_burden"])
            ok = res.status == 0
            anc = res.output("ANC")
            win = (t >= now) & (t <= now + 28)
            nadir = anc[:, win].min(axis=1)
            from scipy.stats import norm

            from .endpoints import sum_of_diameters
            from .scans import ScanModel

            sm = ScanModel(interval_days=SCAN_DAYS)
            sld = sum_of_diameters(res.output("tumour_total"))
            past = t <= now + 1e-9
            nad = sld[:, past].min(axis=1)
            met = res.output("met_burden")
            known = met[:, 0] >= sm.new_lesion_threshold_cm3  # lesions visible at baseline are not new
            # RECIST at each scan as a radiologist sees it: size progression (+20% and +5 mm over the nadir)
            # through the scan's measurement error, or a new lesion through the per-scan detection threshold
            # (the trial's scan model); P(progression-free) is the product over scans of the survival
            p_free = np.ones(X.shape[0])
            p_first = None
            for sd in scans:
                j = int(np.searchsorted(t, sd))
                thr = np.maximum(1.2 * nad, nad + 5.0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    p_size = norm.cdf(np.log(sld[:, j] / thr) / OBSERVABLES["SLD"][3])
                    p_new = np.where(known, 0.0, norm.cdf(np.log(np.maximum(met[:, j], 1e-12)
                                                                 / sm.new_lesion_threshold_cm3) / sm.new_lesion_sd))
                p_scan = 1.0 - (1.0 - p_size) * (1.0 - p_new)
                p_free = p_free * (1.0 - p_scan)
                if p_first is None:
                    p_first = 1.0 - p_free.copy()
                nad = np.minimum(nad, sld[:, j])
            jn = int(np.searchsorted(t, nxt))
            js = int(np.searchsorted(t, scans[0]))
            q = {"anc_nadir_next_cycle": nadir, "p_grade3_next_cycle": (nadir < 1.0).astype(float),
                 "p_grade4_next_cycle": (nadir < 0.5).astype(float), "nlr_next_visit": res.output("NLR")[:, jn],
                 "sld_next_scan": sld[:, js], "p_progression_next_scan": p_first,
                 "p_progression_free_next_scan": 1.0 - p_first, "p_progression_free_6m": p_free}
            per[a] = q
            ww = np.where(ok, w, 0.0)
            ww = ww / ww.sum()
            ess = 1.0 / np.sum(ww ** 2)
            for name, v in q.items():
                m = float(np.sum(ww * v))
                sd_ = float(np.sqrt(max(np.sum(ww * (v - m) ** 2), 0.0)))
                rows.append({"action": a, "quantity": name, "mean": m, "se": sd_ / math.sqrt(ess),
                             "q05": _wquant(v, ww, 0.05), "q95": _wquant(v, ww, 0.95), "failed": int((~ok).sum())})
            if progress:
                pf = rows[-1]["mean"]
                print(f"  forecast '{a}': P(progression-free 6 mo) {pf:.2f}, next scan "
                      f"{float(np.sum(ww * q['p_progression_free_next_scan'])):.2f}", file=sys.stderr, flush=True)
        return pd.DataFrame(rows), per

    def _recommend(self, fc: pd.DataFrame) -> dict:
        o = self.opt
        piv = fc.pivot(index="action", columns="quantity", values="mean")
        se = fc.pivot(index="action", columns="quantity", values="se")
        ok = piv[o.constraint] < o.constraint_max
        cand = piv[ok] if ok.any() else piv
        best = cand[o.objective].idxmax()
        if (o.min_gain > 0 and best != "continue" and "continue" in cand.index
                and cand.loc[best, o.objective] - cand.loc["continue", o.objective] < o.min_gain):
            best = "continue"  # the gain does not reach the treatment threshold
        return {"action": best, "objective": o.objective, "constraint": f"{o.constraint} < {o.constraint_max:g}",
                "min_gain": o.min_gain,
                "constraint_met": bool(ok.any()), "expected": float(piv.loc[best, o.objective]),
                "se": float(se.loc[best, o.objective]),
                "by_action": {a: {"objective": float(piv.loc[a, o.objective]), "se": float(se.loc[a, o.objective]),
                                  "constraint": float(piv.loc[a, o.constraint]), "feasible": bool(ok[a])}
                              for a in piv.index}}

    def _voi(self, X, w, per, action) -> pd.DataFrame:
        """Expected reduction of the posterior variance of the objective (recommended action) from each
        candidate measurement at the next visit (day now + 7), on the particles (no new simulation)."""
        o = self.opt
        target = per[action][o.objective]
        m0 = np.sum(w * target)
        v0 = float(np.sum(w * (target - m0) ** 2))
        now = self.rec.now
        keys = [k for k in OBSERVABLES if k != "tumour_volume" and OBSERVABLES[k][2] == "log"]
        res = self.simulate(X, self.action_events(action), np.unique(np.r_[np.arange(0, now + 7.01, 1.0)]),
                            self._outputs_for(keys))
        qs = self._quantities(res, keys)
        rows = []
        M = min(200, X.shape[0])
        idx = self.rng.choice(X.shape[0], size=M, p=w)
        for k in keys:
            h = qs[k][:, -1]
            sig = OBSERVABLES[k][3]
            mu = np.log(np.maximum(h, 1e-300))
            y = mu[idx] + sig * self.rng.standard_normal(M)  # pseudo-measurements from the predictive
            ll = -0.5 * ((y[None, :] - mu[:, None]) / sig) ** 2  # (N, M)
            lw = np.log(np.maximum(w, 1e-300))[:, None] + ll
            pw = np.exp(lw - lw.max(axis=0, keepdims=True))
            pw /= pw.sum(axis=0, keepdims=True)
            pm = (pw * target[:, None]).sum(axis=0)
            pv = (pw * (target[:, None] - pm[None, :]) ** 2).sum(axis=0)
            rows.append({"measurement": k, "day": now + 7.0, "prior_variance": v0, "expected_posterior_variance":
                         float(pv.mean()), "expected_reduction": float(v0 - pv.mean()),
                         "relative_reduction": float((v0 - pv.mean()) / v0) if v0 > 0 else 0.0})
        return pd.DataFrame(rows).sort_values("expected_reduction", ascending=False).reset_index(drop=True)


def simulated_measurements(res, i: int, days: list, visit_days, il1a_days, sld: np.ndarray, rng) -> list:
    """Patient ``i``'s monitoring read off a simulation ``res`` on ``days`` with the record's noise model:
    ANC, lymphocytes and G-CSF on ``visit_days``, serum IL-1alpha on ``il1a_days`` (reported censored below
    IL1A_REPORTED_BELOW), the sum of diameters ``sld`` at baseline; log-normal errors with the CVs of
    OBSERVABLES, drawn from ``rng`` in that order.  Used by validate_twin and the twin-guided trial arms."""
    from .patient_record import IL1A_REPORTED_BELOW, Observation

    obs = []
    for d in visit_days:
        j = days.index(d)
        for key, q in (("ANC", "ANC"), ("lymphocytes", "lymph"), ("G_CSF", "gcsf")):
            v = float(res.output(q)[i, j]) * math.exp(OBSERVABLES[key][3] * rng.standard_normal())
            obs.append(Observation(d, key, v))
    for d in il1a_days:
        v = float(res.output("il1a_pgml")[i, days.index(d)]) * math.exp(OBSERVABLES["IL1a"][3] * rng.standard_normal())
        obs.append(Observation(d, "IL1a", float("nan"), IL1A_REPORTED_BELOW) if v < IL1A_REPORTED_BELOW
                   else Observation(d, "IL1a", v))
    obs.append(Observation(0.0, "SLD", float(sld[i, 0]) * math.exp(OBSERVABLES["SLD"][3] * rng.standard_normal())))
    obs.sort(key=lambda o: (o.day, o.observable))
    return obs


def synthetic_record(truth: dict, regimens_yaml: list, visits: dict, now: float, seed: int, *, indication=None,
                     covariates=None, patient="synthetic", model_name="host_response") -> tuple[dict, dict]:
    """A patient record (as YAML data) simulated from known parameters ``truth`` (parameter -> value in
    internal units, on top of the indication's typical patient): ``visits`` maps observable -> days;
    measurements get the record's noise (log-normal, CVs of OBSERVABLES); IL-1alpha below the clinical
    EIA limit of 3.9 pg/mL is written as censored.  Returns ``(record data, the truth used)``."""
    from ..api import parameter_vector
    from ..engine.simulate import simulate
    from ..model.registry import get_model
    from ..scenario import RegimenSpec, build_regimens
    from .endpoints import sum_of_diameters
    from .indications import load_indication
    from .patient_record import IL1A_REPORTED_BELOW

    model = get_model(model_name)
    ind = load_indication(indication, model.parameters) if indication else None
    params = {**(ind.parameters if ind else {}), **(covariates or {})}
    names, typical, _ = parameter_vector(model, "human", params)
    P = typical.copy()
    for k, v in truth.items():
        P[names.index(k)] = v
    regs = build_regimens([RegimenSpec.model_validate(r) for r in regimens_yaml], model.drugs, "<synthetic>",
                          "regimens")
    days = sorted({d for ds in visits.values() for d in ds} | {0.0, now})
    res = simulate(model, P[None, :], regs, np.array(days, dtype=float), None)  # every species and output
    rng = np.random.default_rng(seed)
    rows = []
    for key, ds in visits.items():
        q, unit, _, sig, _ = OBSERVABLES[key]
        for d in ds:
            j = days.index(d)
            v = float(sum_of_diameters(res.output("tumour_total"))[0, j]) if q == "SLD" else float(res.output(q)[0, j])
            if unit == "binary":  # a new lesion seen through the scan model's noisy threshold
                base0 = float(res.output(q)[0, 0])
                seen = base0 < 0.52 and v > 0.52 * math.exp(sig * rng.standard_normal())
                rows.append({"day": d, key: "yes" if seen else "no"})
                continue
            y = v * math.exp(sig * rng.standard_normal())
            if key == "IL1a" and y < IL1A_REPORTED_BELOW:
                val = f"<{IL1A_REPORTED_BELOW:g} pg/mL"
            else:
                val = f"{y:.4g} {unit if unit != 'dimensionless' else ''}".strip()
            rows.append({"day": d, key: val})
    visits_out = {}
    for r in rows:
        visits_out.setdefault(r["day"], {"day": r["day"]}).update({k: v for k, v in r.items() if k != "day"})
    data = {"patient": patient, "model": model_name, "species": "human", "indication": indication,
            "covariates": covariates or {}, "regimens": regimens_yaml, "now": f"{now:g} day",
            "visits": [visits_out[d] for d in sorted(visits_out)]}
    if indication is None:
        data.pop("indication")
    return data, {k: float(v) for k, v in truth.items()}


def _events(regimens, dose_table) -> list:
    """A schedule as single-dose regimens (one per administration, no rule)."""
    from ..protocol.dosing import Regimen

    tab = dose_table(list(regimens))
    out = []
    for k in range(tab.n):
        r = regimens[tab.regimen[k]]
        out.append(Regimen(drug=r.drug, dose=r.dose, basis=r.basis, route=r.route,
                           infusion=(tab.duration[k] if tab.duration[k] > 0 else None), days=(1,), cycle_length=1.0,
                           cycles=1, start=float(tab.time[k]), label=r.label))
    return out


def _temper_step(logw: np.ndarray, ll: np.ndarray, room: float, target: float) -> float:
    """Largest exponent increment (<= ``room``) of the likelihood ``ll`` that keeps the effective sample
    size of the reweighted particles at ``target`` or more (bisection; the whole ``room`` if it does)."""
    ll = np.where(np.isfinite(ll), ll, -1e300)

    def ess(delta):
        lw = logw + delta * ll
        lw = lw - lw.max()
        w = np.exp(lw)
        return w.sum() ** 2 / max(np.sum(w ** 2), 1e-300)

    if ess(room) >= target:
        return room
    lo, hi = 0.0, room
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if ess(mid) >= target:
            lo = mid
        else:
            hi = mid
    return max(lo, 1e-6 * room)


class _Rows:
    """A simulation of the distinct particles, read as one row per particle."""

    def __init__(self, res, inv: np.ndarray):
        self.times, self.status, self._res, self._inv = res.times, res.status[inv], res, inv

    def output(self, name: str) -> np.ndarray:
        return self._res.output(name)[self._inv]


def _normalise(logw: np.ndarray) -> np.ndarray:
    m = np.max(logw[np.isfinite(logw)]) if np.isfinite(logw).any() else 0.0
    w = np.exp(np.where(np.isfinite(logw), logw - m, -np.inf))
    s = w.sum()
    if not s > 0:
        raise ScenarioError("every particle is incompatible with the measurements (a value far outside what the "
                            "model can produce?); check the record's units and values")
    return w / s


def _systematic(w: np.ndarray, rng) -> np.ndarray:
    n = w.size
    u = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(w), u), n - 1)


def _wquant(x: np.ndarray, w: np.ndarray, q: float) -> float:
    o = np.argsort(x)
    c = np.cumsum(w[o])
    return float(x[o][min(np.searchsorted(c, q * c[-1]), x.size - 1)])


def write_twin(res: TwinResult, folder: Path) -> None:
    from ..outputs import json_safe
    from ..report.study_report import render_twin

    res.particles.to_parquet(folder / "posterior.parquet", index=False)
    res.history.to_parquet(folder / "updates.parquet", index=False)
    res.fitted.to_parquet(folder / "fitted.parquet", index=False)
    res.forecasts.to_parquet(folder / "forecasts.parquet", index=False)
    res.voi.to_parquet(folder / "value_of_information.parquet", index=False)
    summary = {"patient": res.record.spec.patient, "now_day": res.record.now, "visits": len(res.record.visit_days),
               "particles": res.options.particles, "recommendation": res.recommendation,
               "p_il1_driven": float(res.history["p_il1_high"].iloc[-1]),
               "updates": res.history.to_dict("records"), "timings_s": res.timings, "notes": res.notes}
    (folder / "summary.json").write_text(json.dumps(json_safe(summary), indent=2, default=str))
    (folder / "report.html").write_text(render_twin(res))


# -- proof that it works (synthetic patients with known truth) -------------------------------------------
def validate_twin(record: PatientRecord, n_patients: int = 20, particles: int = 400, seed: int = 0,
                  visit_days=(0.0, 8.0, 15.0, 22.0, 28.0), progress: bool = False, moves: int = 2) -> dict:
    """Synthetic patients drawn from the twin's own prior (truth known), measured like ``record`` (ANC,
    lymphocytes, G-CSF on ``visit_days``, IL-1alpha on days 0 and 3, SLD at baseline):

    * next-visit forecast error of ANC (and NLR) by the number of visits assimilated, and the coverage of
      the nominal 90% predictive interval (measurement noise included);
    * P(IL-1-driven host response) after the last visit for patients whose truth is IL-1-driven or not;
    * the recommended action against the fixed protocol ('continue'), judged on the *true* parameters:
      the mean difference of the objective with a bootstrap 95% CI.
    """
    base = Twin(record, TwinOptions(particles=particles, seed=seed, moves=2))
    rng = np.random.default_rng([seed, 3])
    L = np.linalg.cholesky(base.cov)
    truths = base.mu + rng.standard_normal((n_patients, base.mu.size)) @ L.T
    for k, (lo, hi) in base.bounds.items():
        truths[:, k] = rng.uniform(lo, hi, n_patients)
    days = sorted(set(float(d) for d in visit_days) | {3.0})
    res = base.simulate(truths, base.history_events(), np.array(days), ["ANC", "lymph", "gcsf", "il1a_pgml", "NLR",
                                                                        "tumour_total"])
    from .endpoints import sum_of_diameters

    sld = sum_of_diameters(res.output("tumour_total"))
    errs, rec_rows, cls_rows = [], [], []
    for i in range(n_patients):
        obs = simulated_measurements(res, i, days, visit_days, (0.0, 3.0), sld, rng)
        truth_P = base.params(truths[i:i + 1])
        il1_true = bool(base._il1_high(truth_P)[0])
        for k in range(1, len(visit_days)):
            known = [o for o in obs if o.day <= visit_days[k - 1] + 1e-9]
            rec_k = replace(record, observations=known, now=float(visit_days[k - 1]))
            tw = Twin(rec_k, TwinOptions(particles=particles, seed=seed + 100 * i + k, moves=moves))
            X, w = tw._filter()
            nxt = visit_days[k]
            # the forecast carries the doses planned between now and the next visit (as the truth does)
            planned = [r for r in tw.action_events("continue") if r.start < nxt - 1e-9]
            pr = tw.simulate(X, planned, np.array([0.0, nxt]), ["ANC", "NLR"])
            for key, q, col in (("ANC", "ANC", "ANC"), ("NLR", "NLR", "NLR")):
                sig = OBSERVABLES[key][3]
                pred = pr.output(q)[:, 1] * np.exp(sig * rng.standard_normal(X.shape[0]))
                j = days.index(nxt)
                true = float(res.output(q)[i, j])
                meas = true * math.exp(sig * rng.standard_normal())
                lo, med, hi = (_wquant(pred, w, p) for p in (0.05, 0.5, 0.95))
                errs.append({"patient": i, "visits_assimilated": k, "quantity": col, "abs_log_error":
                             abs(math.log(med / true)), "inside_90": bool(lo <= meas <= hi)})
            if k == len(visit_days) - 1:
                cls_rows.append({"patient": i, "il1_driven_truth": il1_true,
                                 "p_il1_driven": float(np.sum(w * tw._il1_high(tw.params(X))))})
                # recommendation vs continue, judged on the truth
                rec_t = replace(record, observations=obs, now=float(visit_days[-1]))
                tw2 = Twin(rec_t, TwinOptions(particles=particles, seed=seed + 7 * i, moves=moves))
                X2, w2 = tw2._filter()
                fc, per = tw2._forecasts(X2, w2, False)
                r = tw2._recommend(fc)
                tf, _ = tw2._forecasts(truths[i:i + 1], np.ones(1), False)
                tv = tf.pivot(index="action", columns="quantity", values="mean")[tw2.opt.objective]
                rec_rows.append({"patient": i, "recommended": r["action"], "true_objective_recommended":
                                 float(tv[r["action"]]), "true_objective_continue": float(tv["continue"])})
        if progress:
            print(f"  synthetic patient {i + 1}/{n_patients}", file=sys.stderr, flush=True)
    e = pd.DataFrame(errs)
    table = e.groupby(["quantity", "visits_assimilated"]).agg(median_abs_log_error=("abs_log_error", "median"),
                                                              coverage_90=("inside_90", "mean"),
                                                              n=("inside_90", "size")).reset_index()
    rr = pd.DataFrame(rec_rows)
    d = (rr["true_objective_recommended"] - rr["true_objective_continue"]).to_numpy()
    bs = [rng.choice(d, d.size).mean() for _ in range(1000)]
    cls = pd.DataFrame(cls_rows)
    return {"forecast": table, "errors": e, "recommendation": rr, "classification": cls,
            "recommended_minus_fixed": {"mean": float(d.mean()), "ci": [float(np.quantile(bs, 0.025)),
                                                                         float(np.quantile(bs, 0.975))]}}
