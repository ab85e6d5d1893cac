"""Virtual patient populations: covariates, inter-individual variability and plausible-patient selection.

Three steps, usable separately:

1. :class:`PopulationSpec` -- covariate distributions of an advanced pancreatic / bladder cancer cohort
   (every number documented with a source or ``assumed: ...``; override any field from a dict, e.g. the
   ``population:`` block of a trial YAML, with :meth:`PopulationSpec.from_dict`).
2. :func:`sample_population` -- draws covariates, maps them onto the model's covariate parameters
   (``BSA``, ``WT``, ``CRCL``, ``bm_anc0``, ``bm_lymph0``, ``tumour_w0``, ``ko_casp1``, ``ko_gsdmd``,
   ``ko_gsdme``; only those the model has) and applies log-normal IIV (CVs of the parameter table) to every
   *other* parameter.  All random numbers of a call come from one ``(n, K)`` standard-normal matrix of
   ``numpy.random.PCG64(seed)``; row ``i`` is patient ``i``, so patient ``i`` is the same for any ``n >= i+1``
   and any later chunking of the simulation.
3. :func:`select_virtual_population` -- Allen, Rieger & Musante 2016 (CPT:PSP 5:140) acceptance-rejection:
   keep candidate ``i`` with probability ``min(1, f_target(x_i) / (c * f_candidates(x_i)))`` so that the
   kept covariates (or model outputs, any column) follow target distributions without weighting.
   :func:`plausible` gives the physiological-bounds mask applied before it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ChemohostError
from ..model.core import Model
from ..model.params import lognormal_sd


class PopulationError(ChemohostError):
    """A population specification, target or selection is impossible."""


# Which covariate column feeds which model parameter (only those present in a model are used).
COVARIATE_PARAMETERS: dict[str, str] = {
    "BSA": "bsa_m2",
    "WT": "weight_kg",
    "CRCL": "crcl_ml_min",
    "bm_anc0": "anc0",
    "bm_lymph0": "lymph0",
    "tumour_w0": "tumour_cm3",
    "ko_casp1": "casp1_expr",
    "ko_gsdmd": "gsdmd_expr",
    "ko_gsdme": "gsdme_expr",
}
# Expression covariates multiply the typical value (so a scenario knockout, typical 0, stays 0).
EXPRESSION_PARAMETERS = ("ko_casp1", "ko_gsdmd", "ko_gsdme")

# Columns of the (n, K) normal matrix: covariates first (16 reserved so that adding a covariate later does
# not move the IIV columns), then one column per model parameter.
_Z = {"sex": 0, "age": 1, "height": 2, "weight": 3, "scr": 4, "anc": 5, "lymph": 6, "tumour": 7,
      "casp1": 8, "gsdmd": 9, "gsdme": 10}
N_COVARIATE_COLUMNS = 16


@dataclass
class PopulationSpec:
    """Covariate distributions of a virtual advanced-cancer cohort (human).

    Each field's comment gives its source.  "assumed" marks a value chosen for this project without a
    cited measurement; change it with :meth:`from_dict` / :meth:`with_overrides`.
    """

    # --- sex ------------------------------------------------------------------------------------------
    frac_female: float = 0.45  # assumed: ~45% women in advanced pancreatic trials (task brief; MPACT/Burris-like)
    # --- age: normal truncated to [age_min, age_max] ----------------------------------------------------
    age_mean: float = 65.0  # assumed: median age ~63-65 y in advanced pancreatic/bladder trials (task brief)
    age_sd: float = 9.0  # assumed (task brief)
    age_min: float = 40.0  # assumed: truncation (task brief)
    age_max: float = 85.0  # assumed: truncation (task brief)
    # --- height: normal by sex (for Mosteller BSA) -------------------------------------------------------
    height_mean_male_cm: float = 175.0  # assumed: typical adult male height (NHANES-like, from memory, unverified)
    height_mean_female_cm: float = 162.0  # assumed: typical adult female height (NHANES-like, from memory, unverified)
    height_sd_cm: float = 7.0  # assumed: adult height SD ~6.5-7.5 cm (from memory, unverified)
    # --- weight: log-normal by sex (given as arithmetic mean and CV), truncated ---------------------------
    weight_mean_male_kg: float = 80.0  # assumed (task brief)
    weight_mean_female_kg: float = 67.0  # assumed (task brief)
    weight_cv: float = 0.18  # assumed (task brief)
    weight_min_kg: float = 40.0  # parameter-table bounds of WT (parameters.csv)
    weight_max_kg: float = 150.0  # parameter-table bounds of WT (parameters.csv)
    rho_height_weight: float = 0.45  # assumed: adult height-weight correlation ~0.4-0.5 (from memory, unverified)
    # BSA = Mosteller: sqrt(height_cm * weight_kg / 3600) (Mosteller 1987 NEJM 317:1098); gives ~1.97 / 1.74 m2
    # --- serum creatinine: log-normal by sex (median, CV), truncated; CrCL by Cockcroft-Gault -------------
    scr_median_male_mg_dl: float = 0.95  # assumed: typical adult male SCr (from memory, unverified)
    scr_median_female_mg_dl: float = 0.75  # assumed: typical adult female SCr (from memory, unverified)
    scr_cv: float = 0.25  # assumed
    scr_min_mg_dl: float = 0.4  # assumed: physiological floor
    scr_max_mg_dl: float = 2.0  # assumed: eligibility (SCr <= ~1.5-2x ULN in chemo trials)
    # CrCL [mL/min] = (140 - age) * WT / (72 * SCr) * (0.85 if female)  (Cockcroft & Gault 1976 Nephron 16:31);
    # WT = actual body weight; population mean ~84 mL/min vs CRCL reference 83 (Jiang 2008, parameters.csv)
    crcl_cap_ml_min: float = 150.0  # assumed: cap at the CRCL table upper bound (common popPK practice)
    # --- baseline blood counts: bivariate log-normal (medians, CVs, correlation of logs) -----------------
    anc_median: float = 4.9  # assumed: near Friberg 2002 typical baseline 5.05e9/L (parameters: bm_anc0)
    anc_cv: float = 0.38  # assumed: close to Friberg CV 34% (bm_anc0 row), widened for cancer cohorts
    lymph_median: float = 1.6  # assumed: cancer patients' lymphocytes below healthy ~2e9/L (bm_lymph0 row 1.8)
    lymph_cv: float = 0.45  # assumed: wider than the bm_lymph0 table CV 30% to reach the NLR spread below
    rho_anc_lymph: float = -0.3  # assumed: inflammation raises ANC and lowers lymphocytes (negative)
    # -> NLR log-normal, median 4.9/1.6 = 3.06, SD(log) 0.64: P(NLR>3) ~0.49, >4 ~0.34, >5 ~0.22, i.e. ~38%
    #    "high NLR" at the study cut-offs 2-5 (Oh 2018 PMC6011084: 37.9%; parameters.md 9); healthy adults
    #    mean 1.65 (Forget 2017, parameters.md 4.3) lie in the lower tail.
    # --- baseline tumour volume: log-normal (median, SD of log), truncated -------------------------------
    tumour_median_cm3: float = 20.0  # assumed: tumour_w0 row (~3.4 cm sphere, measurable advanced pancreatic)
    tumour_sd_log: float = 0.8  # assumed: diameters ~2-6 cm (central 95% ~4-95 cm3)
    tumour_min_cm3: float = 2.0  # parameter-table bounds of tumour_w0 (parameters.csv)
    tumour_max_cm3: float = 500.0  # parameter-table bounds of tumour_w0 (parameters.csv)
    # --- tumour pyroptosis machinery expression (0 = absent, 1 = wild-type level): Beta(a, b) ------------
    casp1_a: float = 4.0  # assumed: mostly expressed, mean 0.67
    casp1_b: float = 2.0  # assumed
    gsdmd_a: float = 4.0  # assumed: mostly expressed, mean 0.67
    gsdmd_b: float = 2.0  # assumed
    gsdme_a: float = 2.0  # assumed: mean 0.5, broad (GSDME often silenced by promoter methylation in tumours;
    gsdme_b: float = 2.0  #          from memory, unverified)

    # ----------------------------------------------------------------------------------------------------
    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def bad(name, why):
            raise PopulationError(f"population.{name}: {why} (got {getattr(self, name)!r})")

        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(f.name, "must be a finite number")
        if not 0 <= self.frac_female <= 1:
            bad("frac_female", "must lie in [0, 1]")
        for name in ("age_sd", "height_sd_cm", "weight_mean_male_kg", "weight_mean_female_kg", "weight_cv",
                     "height_mean_male_cm", "height_mean_female_cm", "scr_median_male_mg_dl",
                     "scr_median_female_mg_dl", "scr_cv", "anc_median", "anc_cv", "lymph_median", "lymph_cv",
                     "tumour_median_cm3", "tumour_sd_log", "casp1_a", "casp1_b", "gsdmd_a", "gsdmd_b",
                     "gsdme_a", "gsdme_b", "scr_min_mg_dl", "crcl_cap_ml_min", "tumour_min_cm3", "weight_min_kg"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for lo, hi in (("age_min", "age_max"), ("weight_min_kg", "weight_max_kg"),
                       ("scr_min_mg_dl", "scr_max_mg_dl"), ("tumour_min_cm3", "tumour_max_cm3")):
            if not getattr(self, lo) < getattr(self, hi):
                raise PopulationError(f"population.{lo} must be < population.{hi}")
        if self.age_max >= 140:
            bad("age_max", "Cockcroft-Gault needs age < 140")
        for name in ("rho_height_weight", "rho_anc_lymph"):
            if not -1 < getattr(self, name) < 1:
                bad(name, "must lie in (-1, 1)")

    @classmethod
    def from_dict(cls, data: dict | None) -> "PopulationSpec":
        """Spec from a dict of field overrides (e.g. the trial YAML's ``population:``); unknown keys raise."""
        return cls().with_overrides(data or {})

    def with_overrides(self, data: dict) -> "PopulationSpec":
        if not isinstance(data, dict):
            raise PopulationError(f"population: expected a mapping of field -> number, got {type(data).__name__}")
        allowed = [f.name for f in fields(self)]
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise PopulationError(f"population.{key}: unknown field{hint}; allowed: {', '.join(allowed)}")
        try:
            vals = {k: float(v) for k, v in data.items()}
        except (TypeError, ValueError) as exc:
            raise PopulationError(f"population: all fields must be numbers ({exc})") from None
        return replace(self, **vals)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------------
def _truncated_normal(z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map standard normals to a standard normal truncated to [lo, hi] by inverse CDF (one draw each)."""
    a, b = stats.norm.cdf(lo), stats.norm.cdf(hi)
    u = a + stats.norm.cdf(z) * (b - a)
    return stats.norm.ppf(np.clip(u, 1e-300, 1 - 1e-16))


def cockcroft_gault(age: np.ndarray, weight_kg: np.ndarray, scr_mg_dl: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Creatinine clearance [mL/min], Cockcroft & Gault 1976: (140-age)*WT/(72*SCr), x0.85 for women."""
    age, weight_kg, scr_mg_dl = (np.asarray(x, dtype=float) for x in (age, weight_kg, scr_mg_dl))
    return (140.0 - age) * weight_kg / (72.0 * scr_mg_dl) * np.where(np.asarray(female, dtype=bool), 0.85, 1.0)


def mosteller_bsa(height_cm: np.ndarray, weight_kg: np.ndarray) -> np.ndarray:
    """Body-surface area [m2], Mosteller 1987: sqrt(height_cm * weight_kg / 3600)."""
    return np.sqrt(np.asarray(height_cm, dtype=float) * np.asarray(weight_kg, dtype=float) / 3600.0)


def covariates_from_normals(spec: PopulationSpec, Z: np.ndarray) -> pd.DataFrame:
    """Covariate table from standard normals ``Z`` (n, >= 11 columns; layout ``_Z``)."""
    n = Z.shape[0]
    female = stats.norm.cdf(Z[:, _Z["sex"]]) < spec.frac_female
    age = spec.age_mean + spec.age_sd * _truncated_normal(
        Z[:, _Z["age"]], (spec.age_min - spec.age_mean) / spec.age_sd, (spec.age_max - spec.age_mean) / spec.age_sd)

    zh = Z[:, _Z["height"]]
    height = np.where(female, spec.height_mean_female_cm, spec.height_mean_male_cm) + spec.height_sd_cm * zh

    r = spec.rho_height_weight
    zw = r * zh + math.sqrt(1 - r * r) * Z[:, _Z["weight"]]
    s_w = lognormal_sd(spec.weight_cv)
    mu_w = np.log(np.where(female, spec.weight_mean_female_kg, spec.weight_mean_male_kg)) - s_w * s_w / 2
    zw = _truncated_normal(zw, (np.log(spec.weight_min_kg) - mu_w) / s_w, (np.log(spec.weight_max_kg) - mu_w) / s_w)
    weight = np.exp(mu_w + s_w * zw)
    bsa = mosteller_bsa(height, weight)

    s_c = lognormal_sd(spec.scr_cv)
    mu_c = np.log(np.where(female, spec.scr_median_female_mg_dl, spec.scr_median_male_mg_dl))
    zc = _truncated_normal(Z[:, _Z["scr"]], (np.log(spec.scr_min_mg_dl) - mu_c) / s_c,
                           (np.log(spec.scr_max_mg_dl) - mu_c) / s_c)
    scr = np.exp(mu_c + s_c * zc)
    crcl = np.minimum(cockcroft_gault(age, weight, scr, female), spec.crcl_cap_ml_min)

    r = spec.rho_anc_lymph
    za = Z[:, _Z["anc"]]
    zl = r * za + math.sqrt(1 - r * r) * Z[:, _Z["lymph"]]
    anc = spec.anc_median * np.exp(lognormal_sd(spec.anc_cv) * za)
    lymph = spec.lymph_median * np.exp(lognormal_sd(spec.lymph_cv) * zl)

    mu_t, s_t = np.log(spec.tumour_median_cm3), spec.tumour_sd_log
    zt = _truncated_normal(Z[:, _Z["tumour"]], (np.log(spec.tumour_min_cm3) - mu_t) / s_t,
                           (np.log(spec.tumour_max_cm3) - mu_t) / s_t)
    tumour = np.exp(mu_t + s_t * zt)

    def beta(col, a, b):
        return stats.beta.ppf(stats.norm.cdf(Z[:, _Z[col]]), a, b)

    return pd.DataFrame({
        "patient": np.arange(n),
        "sex": pd.Categorical(np.where(female, "F", "M"), categories=["F", "M"]),
        "female": female,
        "age": age,
        "height_cm": height,
        "weight_kg": weight,
        "bsa_m2": bsa,
        "scr_mg_dl": scr,
        "crcl_ml_min": crcl,
        "anc0": anc,
        "lymph0": lymph,
        "nlr0": anc / lymph,
        "tumour_cm3": tumour,
        "casp1_expr": beta("casp1", spec.casp1_a, spec.casp1_b),
        "gsdmd_expr": beta("gsdmd", spec.gsdmd_a, spec.gsdmd_b),
        "gsdme_expr": beta("gsdme", spec.gsdme_a, spec.gsdme_b),
    })


def sample_population(model: Model, species: str = "human", spec: PopulationSpec | dict | None = None,
                      n: int = 100, seed: int = 0, *, parameters: dict | None = None,
                      fixed: dict[str, float] | None = None,
                      variability: bool = True, cv_overrides: dict[str, float] | None = None) -> tuple[list[str], np.ndarray, pd.DataFrame]:
    """Virtual patients: ``(names, P, covariates)``.

    * ``names``/``P`` (n, len(names)): model parameters in internal units, ready for ``simulate``.
    * Covariate parameters present in the model (:data:`COVARIATE_PARAMETERS`) take the patient's covariate;
      the expression parameters ``ko_casp1/ko_gsdmd/ko_gsdme`` are ``typical * expression`` (a knockout,
      typical 0, stays 0).  No IIV is applied to covariate parameters.
    * Every other parameter with a CV in the table gets log-normal IIV ``typical * exp(omega * eta)``
      (``omega = sqrt(log(1 + CV^2))``) when ``variability``.
    * ``parameters``: typical-value overrides as for :func:`chemohost.api.parameter_vector`.
    * ``cv_overrides``: parameter -> CV (fraction) replacing the table's (e.g. an indication's IIV).
    * ``fixed``: parameter -> value (internal unit, or '70 kg' strings) held equal in every patient: neither
      covariate-mapped nor given IIV (e.g. a scenario's ``patients.covariates``).
    * Deterministic for ``seed``; row ``i`` depends only on ``seed`` and ``i`` (and the model's parameter
      count), so any chunking of the patients afterwards gives the same patients.
    """
    from ..api import parameter_vector  # late import: api imports much of the package

    if species != "human":
        raise PopulationError(f"virtual-population covariates are defined for species 'human', not '{species}'; "
                              "for mouse cohorts use chemohost.api.sample_patients (IIV only)")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise PopulationError(f"number of patients must be an integer >= 1, got {n!r}")
    if spec is None:
        spec = PopulationSpec()
    elif isinstance(spec, dict):
        spec = PopulationSpec.from_dict(spec)
    elif not isinstance(spec, PopulationSpec):
        raise PopulationError(f"spec must be a PopulationSpec or dict, got {type(spec).__name__}")
    spec.validate()

    names, typical, cvs = parameter_vector(model, species, parameters)
    for k, c in (cv_overrides or {}).items():
        if k not in names:
            raise PopulationError(f"cv override for '{k}': not a parameter of model '{model.name}'")
        if not (np.isfinite(c) and c >= 0):
            raise PopulationError(f"cv override for '{k}' must be a finite number >= 0, got {c!r}")
        cvs[names.index(k)] = c
    fixed = dict(fixed or {})
    if fixed:
        fnames, fvals, _ = parameter_vector(model, species, fixed, where="fixed")
        for k in fixed:
            typical[names.index(k)] = fvals[fnames.index(k)]

    rng = np.random.Generator(np.random.PCG64(seed))
    Z = rng.standard_normal((int(n), N_COVARIATE_COLUMNS + len(names)))
    cov = covariates_from_normals(spec, Z[:, :N_COVARIATE_COLUMNS])

    P = np.repeat(typical[None, :], int(n), axis=0)
    covariate_params = [p for p in COVARIATE_PARAMETERS if p in names and p not in fixed]
    if variability:
        omega = np.array([lognormal_sd(c) if c and c > 0 else 0.0 for c in cvs])
        for p in list(covariate_params) + list(fixed):
            omega[names.index(p)] = 0.0
        P = P * np.exp(Z[:, N_COVARIATE_COLUMNS:] * omega[None, :])
    for p in covariate_params:
        j = names.index(p)
        col = cov[COVARIATE_PARAMETERS[p]].to_numpy(dtype=float)
        P[:, j] = typical[j] * col if p in EXPRESSION_PARAMETERS else col
    return names, P, cov


# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetDistribution:
    """A target marginal distribution for plausible-patient selection.

    Build with :meth:`lognormal` (median, sd of log), :meth:`normal`, :meth:`uniform` or :meth:`empirical`
    (observed values; Gaussian KDE).  ``log`` marks that densities are compared on the log scale.
    """

    kind: str
    params: tuple
    log: bool = False

    @classmethod
    def lognormal(cls, median: float, sd_log: float) -> "TargetDistribution":
        if not (median > 0 and sd_log > 0):
            raise PopulationError(f"lognormal target needs median > 0 and sd_log > 0, got {median}, {sd_log}")
        return cls("lognormal", (float(median), float(sd_log)), log=True)

    @classmethod
    def normal(cls, mean: float, sd: float) -> "TargetDistribution":
        if not sd > 0:
            raise PopulationError(f"normal target needs sd > 0, got {sd}")
        return cls("normal", (float(mean), float(sd)))

    @classmethod
    def uniform(cls, lo: float, hi: float) -> "TargetDistribution":
        if not hi > lo:
            raise PopulationError(f"uniform target needs lo < hi, got {lo}, {hi}")
        return cls("uniform", (float(lo), float(hi)))

    @classmethod
    def empirical(cls, values, log: bool = False) -> "TargetDistribution":
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if log:
            if np.any(v <= 0):
                raise PopulationError("empirical log-scale target needs positive values")
            v = np.log(v)
        if v.size < 5 or np.std(v) == 0:
            raise PopulationError("empirical target needs at least 5 distinct finite values")
        return cls("empirical", tuple(v.tolist()), log=log)

    @classmethod
    def from_dict(cls, d: dict) -> "TargetDistribution":
        """``{'lognormal': {'median': 3, 'sd_log': 0.5}}`` or ``{'kind': 'normal', 'mean': .., 'sd': ..}``."""
        d = dict(d)
        if "kind" in d:
            kind = d.pop("kind")
            args = d
        elif len(d) == 1:
            kind, args = next(iter(d.items()))
        else:
            raise PopulationError(f"target: give 'kind' and its parameters, got {d!r}")
        makers = {"lognormal": cls.lognormal, "normal": cls.normal, "uniform": cls.uniform,
                  "empirical": cls.empirical}
        if kind not in makers:
            raise PopulationError(f"target kind '{kind}' unknown; allowed: {', '.join(makers)}")
        try:
            return makers[kind](**args)
        except TypeError as exc:
            raise PopulationError(f"target '{kind}': {exc}") from None

    # -- scipy views on the transformed scale (log x when ``log``) ------------------------------------
    def _t_dist(self):
        if self.kind == "lognormal":
            return stats.norm(math.log(self.params[0]), self.params[1])
        if self.kind == "normal":
            return stats.norm(*self.params)
        if self.kind == "uniform":
            return stats.uniform(self.params[0], self.params[1] - self.params[0])
        return None

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if not self.log:
            return x
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)

    def pdf_t(self, y: np.ndarray) -> np.ndarray:
        """Density on the transformed scale."""
        d = self._t_dist()
        if d is not None:
            return d.pdf(y)
        return stats.gaussian_kde(np.asarray(self.params)).evaluate(np.atleast_1d(y))

    def cdf(self, x) -> np.ndarray:
        """CDF on the original scale (for KS tests)."""
        y = self.transform(np.asarray(x, dtype=float))
        d = self._t_dist()
        if d is not None:
            return d.cdf(y)
        kde = stats.gaussian_kde(np.asarray(self.params))
        return np.array([kde.integrate_box_1d(-np.inf, v) for v in np.atleast_1d(y)])

    def mass_between_t(self, lo: float, hi: float) -> float:
        d = self._t_dist()
        if d is not None:
            return float(d.cdf(hi) - d.cdf(lo))
        kde = stats.gaussian_kde(np.asarray(self.params))
        return float(kde.integrate_box_1d(lo, hi))

    def describe(self) -> str:
        if self.kind == "empirical":
            return f"empirical ({len(self.params)} values{', log scale' if self.log else ''})"
        names = {"lognormal": ("median", "sd_log"), "normal": ("mean", "sd"), "uniform": ("lo", "hi")}[self.kind]
        return f"{self.kind}(" + ", ".join(f"{k}={v:g}" for k, v in zip(names, self.params)) + ")"


def plausible(candidates_df: pd.DataFrame, bounds: dict[str, tuple[float | None, float | None]]) -> np.ndarray:
    """Boolean mask of rows with every ``bounds`` column inside ``[lo, hi]`` (None = open); NaN -> False."""
    mask = np.ones(len(candidates_df), dtype=bool)
    for col, lohi in bounds.items():
        if col not in candidates_df.columns:
            close = difflib.get_close_matches(col, list(candidates_df.columns), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise PopulationError(f"bounds: column '{col}' is not in the candidates{hint}")
        try:
            lo, hi = lohi
        except (TypeError, ValueError):
            raise PopulationError(f"bounds['{col}']: expected (lo, hi), got {lohi!r}") from None
        x = candidates_df[col].to_numpy(dtype=float)
        ok = np.isfinite(x)
        if lo is not None:
            ok &= x >= lo
        if hi is not None:
            ok &= x <= hi
        mask &= ok
    return mask


def select_virtual_population(candidates_df: pd.DataFrame, targets: dict[str, TargetDistribution],
                              n: int | None = None, seed: int = 0, *, min_coverage: float = 0.9,
                              min_bin_count: int = 20, bins: int | None = None,
                              mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Plausible-patient selection by acceptance-rejection (Allen, Rieger & Musante 2016).

    The candidates' density of the target columns is estimated by a histogram (joint, on each target's
    scale); candidate ``i`` is accepted with probability ``min(1, w_i / c)``, ``w = f_target / f_candidates``
    (targets combine as independent marginals), ``c`` = the largest ``w`` over bins holding at least
    ``min_bin_count`` candidates.  Returns ``(selected_indices, acceptance_rate)``: positional indices into
    ``candidates_df`` (sorted), and accepted / considered candidates.  With ``n``, a random ``n`` of the
    accepted are returned (error if fewer were accepted); ``n=None`` returns all accepted.
    ``mask`` (e.g. from :func:`plausible`) restricts the candidates considered.

    Raises :class:`PopulationError` naming the target when a column is missing, or when less than
    ``min_coverage`` of a target's probability lies within the candidates' range (no or too few
    candidates can satisfy it), or when too few candidates are accepted.
    """
    if not targets:
        raise PopulationError("select_virtual_population: give at least one target column")
    N = len(candidates_df)
    consider = np.ones(N, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
    if consider.shape != (N,):
        raise PopulationError(f"mask must have one entry per candidate ({N}), got shape {consider.shape}")
    targets = {col: (t if isinstance(t, TargetDistribution) else TargetDistribution.from_dict(t))
               for col, t in targets.items()}
    Y = []
    for col, tgt in targets.items():
        if col not in candidates_df.columns:
            close = difflib.get_close_matches(col, list(candidates_df.columns), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise PopulationError(f"target '{col}': no such column in the candidates{hint}")
        y = tgt.transform(candidates_df[col].to_numpy(dtype=float))
        consider &= np.isfinite(y)
        Y.append(y)
    considered = int(consider.sum())
    if considered == 0:
        raise PopulationError(f"target(s) {', '.join(repr(c) for c in targets)}: no candidate has finite "
                              "(and, for log-scale targets, positive) values within the mask")
    Y = np.column_stack(Y)[consider]
    for k, (col, tgt) in enumerate(targets.items()):
        lo, hi = float(Y[:, k].min()), float(Y[:, k].max())
        mass = tgt.mass_between_t(lo, hi)
        if mass < min_coverage:
            rlo, rhi = (math.exp(lo), math.exp(hi)) if tgt.log else (lo, hi)
            raise PopulationError(
                f"target '{col}' {tgt.describe()}: only {100 * mass:.1f}% of its probability lies within the "
                f"candidates' range [{rlo:.4g}, {rhi:.4g}] (need {100 * min_coverage:.0f}%); no selection of these "
                "candidates can match it -- widen the candidate population or change the target")

    d = Y.shape[1]
    nb = bins or int(np.clip(round(considered ** (1.0 / (d + 2)) * 1.5), 5, 60))
    edges = [np.linspace(*np.quantile(Y[:, k], [0.0, 1.0]), nb + 1) for k in range(d)]
    counts, _ = np.histogramdd(Y, bins=edges)
    idx = tuple(np.clip(np.searchsorted(edges[k], Y[:, k], side="right") - 1, 0, nb - 1) for k in range(d))
    vol = np.prod([e[1] - e[0] for e in edges])
    f_cand = counts[idx] / (considered * vol)
    f_tgt = np.ones(considered)
    for k, tgt in enumerate(targets.values()):
        f_tgt *= tgt.pdf_t(Y[:, k])
    w = f_tgt / f_cand
    dense = counts[idx] >= min_bin_count
    c = float(w[dense].max()) if dense.any() and w[dense].max() > 0 else float(w.max())
    if not c > 0:
        raise PopulationError(f"targets {', '.join(repr(k) for k in targets)}: no candidate has positive target "
                              "density (targets outside the candidates' support)")
    rng = np.random.Generator(np.random.PCG64(seed))
    u = rng.random(considered)
    accepted = np.flatnonzero(consider)[u < np.minimum(1.0, w / c)]
    rate = accepted.size / considered
    if accepted.size == 0:
        raise PopulationError(f"targets {', '.join(repr(k) for k in targets)}: no candidate accepted")
    if n is not None:
        if n < 1:
            raise PopulationError(f"n must be >= 1, got {n}")
        if accepted.size < n:
            need = int(math.ceil(n / rate * 1.1))
            raise PopulationError(
                f"targets {', '.join(repr(k) for k in targets)}: only {accepted.size} of {considered} candidates "
                f"accepted (acceptance rate {rate:.3f}); need {n} -- sample about {need} candidates")
        accepted = np.sort(rng.choice(accepted, size=n, replace=False))
    return accepted, float(rate)
