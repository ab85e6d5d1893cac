"""The trial's endpoints in one registry: what each needs from the model and what it produces.

Each :class:`Endpoint` declares the model outputs it reads, the ``patients.parquet`` columns it
fills, the per-arm ``summary.json`` keys it fills and the report blocks (element ids in
``report.html``) that show it.  The trial reads this registry to know which outputs to record
(:func:`needed_outputs`) and checks them against the model when the trial file is loaded
(:func:`check_model`), so a model that cannot supply an endpoint is a clear error naming the file,
the field and the endpoint before anything is compiled.  Tests hold the registry to the files a
trial writes: every declared column, summary key and report block is present, and nothing
undeclared is (covariate columns come from the population sampler and are listed there).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ScenarioError


@dataclass(frozen=True)
class Endpoint:
    name: str
    description: str
    needs: tuple[str, ...] = ()  # model outputs (or species) read
    columns: tuple[str, ...] = ()  # patients.parquet columns
    summary: tuple[str, ...] = ()  # per-arm summary.json keys (paired design)
    report: tuple[str, ...] = ()  # element ids in report.html


#: candidate biomarkers recorded for every patient (study day 0 = first dose; sampled as blood is drawn)
MARKER_OUTPUTS = ("NLR", "ANC", "il1a_pgml", "il1b", "gcsf", "ldh_cum")
MARKER_DAYS = (0, 1, 2, 3, 8, 15)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("accounting", "patients run, failed (status column) and analysed per arm",
             columns=("patient", "arm", "status"), summary=("n", "n_run", "n_failed", "n_analysed"),
             report=("table-summary",)),
    Endpoint("tumour_response", "RECIST 1.1 at scans: sum of diameters from the tumour volume with measurement "
             "error, new lesions from metastatic burden, best overall response, scan-based waterfall",
             needs=("tumour_total", "met_burden"),
             columns=("sld0_mm", "tsr_w8", "best_response", "pd_day", "pd_previous_scan_day", "best_scan_change_pct",
                      "best_tumour_change_pct"),
             summary=("orr", "dcr"), report=("table-summary", "fig-waterfall")),
    Endpoint("progression_free_survival", "PFS dated at the progression scan (or death), with interval-censored "
             "bounds between the last scan without and the first scan with progression",
             needs=("tumour_total", "met_burden"),
             columns=("pfs_months", "pfs_event", "pfs_ic_lower_months", "pfs_ic_upper_months"),
             summary=("median_pfs_months", "median_pfs_ci_low", "median_pfs_ci_high", "median_pfs_interval_months",
                      "median_pfs_interval_ci_low", "median_pfs_interval_ci_high", "pfs_events", "hr_pfs_vs_control",
                      "logrank_p_pfs"),
             report=("fig-km-pfs", "table-summary")),
    Endpoint("overall_survival", "OS from a Weibull baseline hazard x tumour-size ratio at week 8, baseline size and "
             "time-varying NLR; paired effects (RMST, HR, individual differences) against the control arm",
             needs=("tumour_total", "NLR"), columns=("os_months", "os_event"),
             summary=("median_os_months", "median_os_ci_low", "median_os_ci_high", "os_12m", "os_events",
                      "hr_os_vs_control", "logrank_p"),
             report=("fig-km-os", "fig-paired", "table-paired")),
    Endpoint("neutropenia", "worst CTCAE v5 neutropenia grade from blood counts every lab_interval",
             needs=("ANC",), columns=("neutropenia_grade_max",), summary=("neutropenia_g3plus", "neutropenia_g4"),
             report=("table-summary", "fig-trajectories")),
    Endpoint("treatment_exposure", "doses given/held, cycle delays, relative dose intensity over the doses due on "
             "treatment, and why treatment ended (progression, toxicity, completed)",
             columns=("dose_intensity", "doses_given", "doses_held", "treatment_delay_days", "off_treatment"),
             summary=("dose_intensity_mean", "off_treatment_progression", "off_treatment_toxicity",
                      "treatment_delay_days_mean"),
             report=("table-summary",)),
    Endpoint("inflammation", "neutrophil-to-lymphocyte ratio at baseline and day 28; NLR and marrow (GMP) "
             "trajectories", needs=("NLR", "gmp_frequency"), columns=("nlr_baseline", "nlr_day28"),
             report=("fig-trajectories",)),
    Endpoint("candidate_markers", "blood measurements a clinician could take at baseline and early on treatment "
             "(days 1, 2, 3, 8, 15): NLR, ANC, serum IL-1alpha, IL-1beta, G-CSF and LDH released by lytic tumour "
             "death -- the candidate biomarkers of `chemohost biomarkers`",
             needs=MARKER_OUTPUTS,
             columns=tuple(f"mk_{o}_d{d}" for o in MARKER_OUTPUTS for d in MARKER_DAYS)),
)


def get_endpoint(name: str) -> Endpoint:
    for e in ENDPOINTS:
        if e.name == name:
            return e
    raise KeyError(f"unknown endpoint '{name}'; known: {', '.join(e.name for e in ENDPOINTS)}")


def needed_outputs(endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> list[str]:
    """Model outputs the endpoints read, in first-declared order (what the trial records)."""
    out: list[str] = []
    for e in endpoints:
        out += [o for o in e.needs if o not in out]
    return out


def declared(attr: str, endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> list[str]:
    """Union of one declared attribute ('columns', 'summary', 'report') in declaration order."""
    out: list[str] = []
    for e in endpoints:
        out += [x for x in getattr(e, attr) if x not in out]
    return out


def check_model(model, file: str, field: str = "model", endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> None:
    """Raise :class:`ScenarioError` (file, field) naming each endpoint whose outputs ``model`` lacks."""
    have = set(model.outputs) | set(model.species)
    gaps = [(e.name, [o for o in e.needs if o not in have]) for e in endpoints]
    gaps = [(n, miss) for n, miss in gaps if miss]
    if gaps:
        detail = "; ".join(f"{n} needs {', '.join(miss)}" for n, miss in gaps)
        raise ScenarioError(f"model '{model.name}' cannot supply the trial's endpoints ({detail}); use a model with "
                            "these outputs (host_response)", file=file, field=field)


__all__ = ["Endpoint", "ENDPOINTS", "MARKER_OUTPUTS", "MARKER_DAYS", "get_endpoint", "needed_outputs", "declared", "check_model"]
