"""Pharmacokinetics of the host-response interventions, human and mouse.

One :class:`Module` per intervention (``ALL`` lists them).  Every module is linear (first-order
absorption depots, one or two linear compartments), so the engine solves it in closed form, except
tocilizumab, whose source model (Frey 2010) has a parallel Michaelis-Menten elimination that matters
at clinical doses.  Values, bounds and sources are in ``model/data/interventions.csv``; parameter
and species names carry a short drug tag (``bel_``, ``ber_``, ``ana_``, ``cel_``, ``toc_``,
``azd_``, ``apd_``, ``fil_``).

Common structure (tag ``T``)::

    T_depot_<route> --ka_<route>--> T_c <--Q--> T_p          (T_p only for two compartments)
                                     |
                                     CL (+ Vmax*C/(Km+C) for tocilizumab)

* A dose by an absorption route ('oral', 'ip', 'sc') enters ``T_depot_<route>`` multiplied by
  ``T_F_<route>``; 'iv' doses (bolus or zero-order infusion) enter ``T_c`` directly.
* Body size: ``CLi = T_CL*(WT/T_wt_ref)**T_wt_exp_cl``, volumes with ``T_wt_exp_v`` (one
  compartment) or ``T_wt_exp_v1``/``T_wt_exp_q``/``T_wt_exp_v2``.  Human rows hold the source's
  reference values and exponents; mouse rows either hold mouse data for a 25 g animal
  (``T_wt_ref`` = 0.025 kg) or the human values with allometric exponents (``T_wt_ref`` = the
  human reference), as the table says.
* Amounts are mg; concentrations are converted with the molar masses declared on each ``Drug``.

Drugs
-----
belnacasan (``bel_``)
    VX-765, oral/i.p. prodrug converted by esterases to the caspase-1 inhibitor VRT-043198.  The
    depot holds VX-765 (mg); absorption with conversion delivers VRT-043198 to one compartment,
    tracked in mg VX-765 *molar equivalents* (``bel_F_<route>`` = molar fraction of the dose
    appearing as VRT-043198), so ``C_vrt_uM`` = C/509.0 g/mol.  No human or mouse PK was found
    (parameters.md 6.3): every value is a labelled assumption.
bermekimab (``ber_``)
    MABp1, True Human anti-IL-1alpha IgG1.  Human: only Cmax ~80 ug/mL after 3.75 mg/kg i.v. and a
    preliminary t1/2 "about 3 days" are published (AACR 2011 abstract A211), so one compartment
    (``ber_Q`` = 0).  Mouse: generic human IgG1 in mice (the Frey 2010 tocilizumab linear
    parameters scaled allometrically; assumption).
anakinra (``ana_``)
    Recombinant IL-1Ra (17.3 kDa), one compartment with first-order s.c. absorption (Yang 2001
    structure); i.v. clearance from Yang 2003, renal fraction of clearance ``ana_f_renal`` on
    CRCL/``ana_crcl_ref`` (ESRD CL/F 42.7 vs 170 mL/min, Yang 2003).  The s.c. terminal
    half-life is absorption-limited (flip-flop).  Mouse: allometric scaling (assumption).
celecoxib (``cel_``)
    Two compartments with first-order absorption, apparent (CL/F) parameters from the Celebrex
    label (no i.v. formulation); calibrated to the label's Cmax 705 ng/mL and tmax 2.8 h with CL/F
    27.7 L/h and Vss/F 429 L.  Matching that peak needs a small central volume, which leaves a slow
    terminal phase (~33 h, longer than the ~11 h "effective" t1/2 of the label; the label notes that
    slow dissolution makes the terminal t1/2 variable).  The less than proportional exposure above
    200 mg (solubility) is not modelled.  Mouse: allometric scaling (assumption).
tocilizumab (``toc_``)
    Frey 2010 (J Clin Pharmacol 50:754, nlmixr2lib): two compartments, linear CL on BSA, and a
    parallel Michaelis-Menten elimination (Vmax, Km) from the central compartment.  **The MM term
    is kept because the source requires it** (it carries a material part of elimination at
    concentrations reached with 4-8 mg/kg); it makes this module's two species nonlinear
    (integrated numerically).  Mouse: tocilizumab does not bind mouse IL-6R, so Vmax = 0 and the
    linear part is scaled allometrically (assumption).
cxcr2_antagonist (``azd_``)
    AZD5069 (AstraZeneca, oral CXCR2 antagonist; Cullberg 2018 Drugs R D 18:149).  Two
    compartments: initial t1/2 4 h, terminal 11 h, tmax ~2 h; CL = the 0.36 mL/min/kg human
    prediction of the AZD5069/AZD4721 DMD paper (observed CL/F not found).  Twice-daily
    accumulation comes out ~1.27-fold (reported ~1.1-fold).  Mouse: rat PK from the
    same DMD table (Vss 0.32 L/kg, i.v. t1/2 1.0 h, oral t1/2 2.5 h, F 31%), one compartment.
anti_pd1 (``apd_``)
    Human: nivolumab, linear part of Bajaj 2017 (CPT:PSP 6:58, DDMODEL00000284 via nlmixr2lib) at
    the reference covariates (female, eGFR 90, ECOG 0, non-Asian; 80 kg with the published WT
    exponents on CL and V1).  The time-varying clearance (Emax -0.295 at T50 1410 h) is omitted:
    it depends on time since the first dose and would break the closed-form solution; omitting it
    over-predicts late clearance by up to ~25%.  Mouse: rat anti-mouse PD-1 IgG2a (RMP1-14-like),
    one compartment with t1/2 22.3 h measured in tumour-bearing mice (Pharmaceutics 2020;12:595)
    and a plasma-like central volume (assumption); i.p. route.  The single molar mass (nivolumab
    146 kDa) is used for both species (RMP1-14 ~150 kDa, 3% off).
filgrastim (``fil_``)
    r-met-HuG-CSF, one compartment (V 150 mL/kg, t1/2 3.5 h; EU SmPC, which states first-order
    elimination and dose-linear concentrations), s.c. absorption rate from Scholz 2012 (Theor Biol
    Med Model 9:32).  Neutrophil (receptor)-mediated clearance is *not* modelled: in neutropenic
    patients clearance is lower and concentrations higher than predicted here.  Mouse: allometric
    scaling (assumption).
"""

from __future__ import annotations

from ..core import Drug, Flow, Module, Output, ParameterSpec, Route, Species

ABSORPTION_ROUTES = ("oral", "ip", "sc")

# molar masses (g/mol)
MW_VX765 = 509.0  # belnacasan C24H33ClN4O6 (PubChem via BenchChem product page)
MW_BERMEKIMAB = 150_000.0  # IgG1, nominal
MW_ANAKINRA = 17_300.0  # Kineret label (17.3 kDa)
MW_CELECOXIB = 381.37  # C17H14F3N3O2S
MW_TOCILIZUMAB = 148_000.0  # Actemra label (~148 kDa), from memory
MW_AZD5069 = 476.5  # C18H22F2N4O5S2, from memory
MW_NIVOLUMAB = 146_000.0  # Opdivo label (146 kDa), from memory
MW_FILGRASTIM = 18_800.0  # Neupogen label (18,800 Da)


def _pk_module(
    tag: str,
    drug: str,
    mw: float,
    mw_source: str,
    description: str,
    *,
    routes: tuple[str, ...],
    two_cmt: bool,
    conc_name: str,
    conc_expr: str,
    conc_unit: str,
    conc_description: str,
    cl_factor: str = "",
    extra_parameters: tuple[ParameterSpec, ...] = (),
    extra_outputs: tuple[Output, ...] = (),
    extra_flows: tuple[Flow, ...] = (),
    references: tuple[str, ...] = (),
) -> Module:
    """Build a one- or two-compartment PK module with one first-order depot per absorption route.

    ``cl_factor``: extra multiplicative factor on the individual clearance (an expression over
    parameters, e.g. a renal-function term).  ``conc_expr`` may use ``{tag}_C`` (mg/L).
    """
    T = tag
    depots = [r for r in routes if r in ABSORPTION_ROUTES]
    species = [Species(f"{T}_depot_{r}", "mg", 0, f"{drug} in the {r} absorption depot") for r in depots]
    species.append(Species(f"{T}_c", "mg", 0, f"{drug}, central compartment"))
    params = [
        ParameterSpec(f"{T}_CL", "L/day", f"{drug} clearance at the reference weight"),
        ParameterSpec(f"{T}_wt_ref", "kg", "reference body weight of the tabulated values"),
        ParameterSpec(f"{T}_wt_exp_cl", "dimensionless", "body-weight exponent on clearance"),
    ]
    wcl = f"(WT/{T}_wt_ref)**{T}_wt_exp_cl"
    clf = f"*{cl_factor}" if cl_factor else ""
    outputs = [Output(f"{T}_CLi", f"{T}_CL*{wcl}{clf}", "L/day", f"individual {drug} clearance")]
    if two_cmt:
        species.append(Species(f"{T}_p", "mg", 0, f"{drug}, peripheral compartment"))
        params += [
            ParameterSpec(f"{T}_V1", "L", f"{drug} central volume at the reference weight"),
            ParameterSpec(f"{T}_Q", "L/day", "intercompartmental clearance"),
            ParameterSpec(f"{T}_V2", "L", "peripheral volume"),
            ParameterSpec(f"{T}_wt_exp_v1", "dimensionless", "body-weight exponent on V1"),
            ParameterSpec(f"{T}_wt_exp_q", "dimensionless", "body-weight exponent on Q"),
            ParameterSpec(f"{T}_wt_exp_v2", "dimensionless", "body-weight exponent on V2"),
        ]
        outputs += [
            Output(f"{T}_V1i", f"{T}_V1*(WT/{T}_wt_ref)**{T}_wt_exp_v1", "L", "individual central volume"),
            Output(f"{T}_Qi", f"{T}_Q*(WT/{T}_wt_ref)**{T}_wt_exp_q", "L/day", "individual Q"),
            Output(f"{T}_V2i", f"{T}_V2*(WT/{T}_wt_ref)**{T}_wt_exp_v2", "L", "individual peripheral volume"),
        ]
    else:
        params += [
            ParameterSpec(f"{T}_V1", "L", f"{drug} volume of distribution at the reference weight"),
            ParameterSpec(f"{T}_wt_exp_v1", "dimensionless", "body-weight exponent on the volume"),
        ]
        outputs.append(Output(f"{T}_V1i", f"{T}_V1*(WT/{T}_wt_ref)**{T}_wt_exp_v1", "L", "individual volume"))
    outputs.append(Output(f"{T}_C", f"{T}_c/{T}_V1i", "mg/L", f"plasma {drug}"))
    outputs += list(extra_outputs)
    outputs.append(Output(conc_name, conc_expr, conc_unit, conc_description))
    flows = []
    drug_routes: dict[str, Route] = {}
    for r in depots:
        params += [
            ParameterSpec(f"{T}_ka_{r}", "1/day", f"first-order absorption rate, {r}"),
            ParameterSpec(f"{T}_F_{r}", "dimensionless", f"bioavailability, {r}"),
        ]
        flows.append(Flow(f"{T}_absorption_{r}", f"{T}_depot_{r}", f"{T}_c", f"{T}_ka_{r}*{T}_depot_{r}",
                          f"first-order absorption ({r})"))
        drug_routes[r] = Route(f"{T}_depot_{r}", f"{T}_F_{r}")
    if "iv" in routes:
        drug_routes["iv"] = Route(f"{T}_c")
    flows.append(Flow(f"{T}_elimination", f"{T}_c", None, f"{T}_CLi*{T}_C", "linear elimination"))
    if two_cmt:
        flows += [
            Flow(f"{T}_distribution", f"{T}_c", f"{T}_p", f"{T}_Qi*{T}_C"),
            Flow(f"{T}_redistribution", f"{T}_p", f"{T}_c", f"{T}_Qi*{T}_p/{T}_V2i"),
        ]
    flows += list(extra_flows)
    params += list(extra_parameters)
    # keep the declared order stable: routes as given
    drug_routes = {r: drug_routes[r] for r in routes}
    return Module(
        name=f"{drug}_pk",
        description=description,
        species=tuple(species),
        parameters=tuple(params),
        flows=tuple(flows),
        outputs=tuple(outputs),
        drugs=(Drug(drug, mw, drug_routes, mw_source=mw_source),),
        references=references,
    )


BELNACASAN = _pk_module(
    "bel", "belnacasan", MW_VX765, "PubChem C24H33ClN4O6 509.0 g/mol (BenchChem product page)",
    "VX-765 depot -> VRT-043198 one compartment (assumed PK; molar equivalents)",
    routes=("oral", "ip"), two_cmt=False,
    conc_name="C_vrt_uM", conc_expr=f"bel_C/{MW_VX765}*1000", conc_unit="umol/L",
    conc_description="plasma VRT-043198 (active caspase-1 inhibitor), molar equivalents of VX-765",
    references=("parameters.md 6.3 (no human or mouse PK found)",),
)

BERMEKIMAB = _pk_module(
    "ber", "bermekimab", MW_BERMEKIMAB, "IgG1, nominal ~150 kDa",
    "Bermekimab (MABp1, anti-IL-1alpha IgG1): human 1-cmt (AACR 2011 A211); mouse generic IgG1 2-cmt",
    routes=("iv", "ip"), two_cmt=True,
    conc_name="C_bermekimab_nM", conc_expr=f"ber_C/{MW_BERMEKIMAB}*1e6", conc_unit="nmol/L",
    conc_description="plasma bermekimab",
    references=("AACR-NCI-EORTC 2011 abstract A211 (Mol Cancer Ther 10(11 Suppl):A211)",
                "Hong 2014 Lancet Oncol 15:656; Hickish 2017 Lancet Oncol 18:192"),
)

ANAKINRA = _pk_module(
    "ana", "anakinra", MW_ANAKINRA, "Kineret label (17.3 kDa)",
    "Anakinra one compartment, first-order s.c./i.p. absorption, weight and renal covariates",
    routes=("sc", "ip", "iv"), two_cmt=False,
    cl_factor="(1 - ana_f_renal + ana_f_renal*CRCL/ana_crcl_ref)",
    extra_parameters=(
        ParameterSpec("ana_f_renal", "dimensionless", "renal fraction of clearance at CRCL = ana_crcl_ref"),
        ParameterSpec("ana_crcl_ref", "mL/min", "reference creatinine clearance of ana_CL"),
    ),
    conc_name="C_anakinra_nM", conc_expr=f"ana_C/{MW_ANAKINRA}*1e6", conc_unit="nmol/L",
    conc_description="plasma anakinra",
    references=("Yang BB et al. Clin Pharmacol Ther 2003;74:85", "Yang et al. ARD 2001;60(Suppl 1) FRI0036",
                "PMC6662383 (body weight/BMI study)"),
)

CELECOXIB = _pk_module(
    "cel", "celecoxib", MW_CELECOXIB, "C17H14F3N3O2S 381.37 g/mol",
    "Celecoxib two compartments, first-order oral/i.p. absorption (apparent CL/F, label)",
    routes=("oral", "ip"), two_cmt=True,
    conc_name="C_celecoxib_uM", conc_expr=f"cel_C/{MW_CELECOXIB}*1000", conc_unit="umol/L",
    conc_description="plasma celecoxib",
    references=("Celebrex US label, Clinical Pharmacology Table 1 (200 mg fasted, n=36)",),
)

TOCILIZUMAB = _pk_module(
    "toc", "tocilizumab", MW_TOCILIZUMAB, "Actemra label ~148 kDa (from memory)",
    "Tocilizumab two compartments, linear + Michaelis-Menten elimination (Frey 2010)",
    routes=("iv",), two_cmt=True,
    cl_factor="(BSA/toc_bsa_ref)**toc_cl_bsa_exp",
    extra_parameters=(
        ParameterSpec("toc_bsa_ref", "m**2", "reference BSA of the linear clearance"),
        ParameterSpec("toc_cl_bsa_exp", "dimensionless", "BSA exponent on linear clearance"),
        ParameterSpec("toc_Vmax", "mg/day", "maximum Michaelis-Menten elimination rate"),
        ParameterSpec("toc_Km", "mg/L", "Michaelis-Menten constant"),
        ParameterSpec("toc_crcl_ref", "mL/min", "reference creatinine clearance of Vmax"),
        ParameterSpec("toc_vm_crcl_exp", "dimensionless", "CRCL exponent on Vmax"),
    ),
    extra_outputs=(
        Output("toc_Vmaxi", "toc_Vmax*(CRCL/toc_crcl_ref)**toc_vm_crcl_exp", "mg/day", "individual Vmax"),
    ),
    extra_flows=(
        Flow("toc_mm_elimination", "toc_c", None, "toc_Vmaxi*toc_C/(toc_Km + toc_C)",
             "saturable (IL-6R-mediated) elimination; Frey 2010"),
    ),
    conc_name="C_tocilizumab_nM", conc_expr=f"toc_C/{MW_TOCILIZUMAB}*1e6", conc_unit="nmol/L",
    conc_description="plasma tocilizumab",
    references=("Frey N, Grange S, Woodworth T. J Clin Pharmacol 2010;50:754 (nlmixr2lib Frey_2010_tocilizumab.R)",),
)

CXCR2_ANTAGONIST = _pk_module(
    "azd", "cxcr2_antagonist", MW_AZD5069, "AZD5069 C18H22F2N4O5S2 (from memory)",
    "CXCR2 antagonist AZD5069: two compartments, first-order oral absorption",
    routes=("oral",), two_cmt=True,
    conc_name="C_cxcr2i_uM", conc_expr=f"azd_C/{MW_AZD5069}*1000", conc_unit="umol/L",
    conc_description="plasma AZD5069 (total)",
    references=("Cullberg M et al. Drugs R D 2018;18:149 (PMID 29856004)",
                "DMD (aspetjournals) AZD5069/AZD4721 table: preclinical data and predicted human PK"),
)

ANTI_PD1 = _pk_module(
    "apd", "anti_pd1", MW_NIVOLUMAB, "nivolumab 146 kDa (Opdivo label, from memory)",
    "Anti-PD-1: nivolumab linear 2-cmt (Bajaj 2017) in humans; RMP1-14-like rat IgG in mice",
    routes=("iv", "ip"), two_cmt=True,
    conc_name="C_antipd1_nM", conc_expr=f"apd_C/{MW_NIVOLUMAB}*1e6", conc_unit="nmol/L",
    conc_description="plasma anti-PD-1 antibody",
    references=("Bajaj G et al. CPT Pharmacometrics Syst Pharmacol 2017;6:58 (DDMODEL00000284, nlmixr2lib)",
                "Pharmaceutics 2020;12:595 (anti-PD-1 plasma t1/2 22.3 h in tumour-bearing mice)"),
)

FILGRASTIM = _pk_module(
    "fil", "filgrastim", MW_FILGRASTIM, "Neupogen label (18,800 Da)",
    "Filgrastim one compartment (linear), first-order s.c. absorption",
    routes=("sc", "iv"), two_cmt=False,
    conc_name="C_filgrastim_ngmL", conc_expr="fil_C*1000", conc_unit="ng/mL",
    conc_description="serum filgrastim",
    references=("Filgrastim EU SmPC 5.2 (Grastofil/Neutromax): V 150 mL/kg, t1/2 3.5 h, CL ~0.6 mL/min/kg",
                "Neupogen US label 12.3 (s.c. 3.45 ug/kg -> Cmax 4 ng/mL)",
                "Scholz M et al. Theor Biol Med Model 2012;9:32 Table 3 (k_sc 0.161 /h)"),
)

ALL = (BELNACASAN, BERMEKIMAB, ANAKINRA, CELECOXIB, TOCILIZUMAB, CXCR2_ANTAGONIST, ANTI_PD1, FILGRASTIM)
