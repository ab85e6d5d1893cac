"""Cytokines of the host response: IL-1α, IL-1β, IL-6, G-CSF, tumour PGE2, and the receptor
signals they produce.

* IL-1α (amount in plasma/extracellular fluid, ng; concentration pg/mL): released by lytic tumour
  death (content per lysed volume), a small basal tumour secretion, host basal production;
  first-order clearance; optional recombinant IL-1α dosing (i.v. or i.p. depot).  Free IL-1α is
  reduced by the anti-IL-1α antibody (bermekimab, KD).
* IL-1β (pg/mL): host myeloid (MDSC) NLRP3/caspase-1 activation by gemcitabine (Bruchard 2013).
* IL-6 (pg/mL): basal, raised by cisplatin; signalling blocked by tocilizumab (IL-6R occupancy).
* G-CSF (pg/mL): Quartino 2014 turnover with neutrophil-mediated clearance; induced via IL-1R1
  (Ueda 2009, PMC3104996); exogenous filgrastim adds to it.
* PGE2 (relative to baseline, tumour): produced in proportion to apoptotic death per tumour volume
  (Kurtova 2015), COX-2 inhibited by celecoxib.
* IL-1R1 signal (0-1) = occupancy by IL-1α (+ IL-1β) x (1 - anakinra receptor occupancy) x IL-1R1
  expression (knockout = 0).
"""

from ..core import Drug, Flow, Module, Output, ParameterSpec, Route, Species

MODULE = Module(
    name="cytokines",
    description="IL-1α, IL-1β, IL-6, G-CSF, PGE2 and IL-1R1/IL-6R signals",
    species=(
        Species("il1a_depot", "ng", 0, "recombinant IL-1α in an i.p. depot"),
        Species("il1a", "ng", "il1a_V*il1a_base", "IL-1α in plasma/extracellular fluid (ng; /V in L = pg/mL)"),
        Species("il1b", "pg/mL", "il1b_base", "plasma IL-1β"),
        Species("il6", "pg/mL", "il6_base", "plasma IL-6"),
        Species("gcsf", "pg/mL", "gcsf_base", "plasma endogenous G-CSF"),
        Species("pge2", "dimensionless", 1, "tumour PGE2 relative to baseline"),
    ),
    parameters=(
        ParameterSpec("il1a_V", "L", "IL-1α distribution volume"),
        ParameterSpec("il1a_base", "pg/mL", "baseline plasma IL-1α without tumour"),
        ParameterSpec("il1a_k", "1/day", "IL-1α elimination rate"),
        ParameterSpec("il1a_per_cm3", "ng/cm**3", "IL-1α released per cm3 of lytic tumour death"),
        ParameterSpec("il1a_tumour_basal", "ng/cm**3/day", "basal IL-1α secretion by live tumour"),
        ParameterSpec("il1a_ka", "1/day", "absorption of recombinant IL-1α from the i.p. depot"),
        ParameterSpec("ko_il1a", "dimensionless", "tumour IL-1α expression (1 wild type, 0 knockout)"),
        ParameterSpec("ber_kd_nM", "nmol/L", "bermekimab-IL-1α dissociation constant"),
        ParameterSpec("il1b_base", "pg/mL", "baseline plasma IL-1β"),
        ParameterSpec("il1b_k", "1/day", "IL-1β elimination rate"),
        ParameterSpec("il1b_emax", "dimensionless", "maximal fold increase of IL-1β synthesis by gemcitabine-activated MDSC"),
        ParameterSpec("il1b_ec50", "umol/L", "dFdCTP for half-maximal MDSC inflammasome activation"),
        ParameterSpec("ko_casp1_host", "dimensionless", "host (myeloid) caspase-1 (1 wild type, 0 knockout)"),
        ParameterSpec("il6_base", "pg/mL", "baseline plasma IL-6"),
        ParameterSpec("il6_k", "1/day", "IL-6 elimination rate"),
        ParameterSpec("il6_emax_cis", "dimensionless", "maximal fold increase of IL-6 synthesis by cisplatin"),
        ParameterSpec("il6_ec50_cis", "umol/L", "bound platinum-independent: unbound cisplatin for half-max IL-6 induction"),
        ParameterSpec("il6_ec50", "pg/mL", "IL-6 for half-maximal IL-6R signal"),
        ParameterSpec("toc_kd_nM", "nmol/L", "tocilizumab-IL-6R dissociation constant"),
        ParameterSpec("gcsf_base", "pg/mL", "baseline plasma G-CSF"),
        ParameterSpec("gcsf_ke", "1/day", "renal G-CSF elimination"),
        ParameterSpec("gcsf_kanc", "1/((1e9/L)*day)", "neutrophil-mediated G-CSF elimination"),
        ParameterSpec("gcsf_il1_emax", "dimensionless", "maximal fold increase of G-CSF synthesis by IL-1R1 signal"),
        ParameterSpec("bm_anc0", "1e9/L", "baseline blood neutrophils"),
        ParameterSpec("pge2_k", "1/day", "PGE2 turnover"),
        ParameterSpec("pge2_a", "day", "PGE2 increase per unit apoptotic death rate per tumour volume"),
        ParameterSpec("cox2_ic50_uM", "umol/L", "celecoxib COX-2 IC50"),
        ParameterSpec("tumour_eps", "cm**3", "tiny volume guarding divisions by tumour size"),
        ParameterSpec("il1r1_ec50", "pg/mL", "IL-1 for half-maximal IL-1R1 signal"),
        ParameterSpec("il1b_weight", "dimensionless", "potency of IL-1β relative to IL-1α at IL-1R1"),
        ParameterSpec("ana_kss_nM", "nmol/L", "anakinra-IL-1R1 quasi-steady-state constant"),
        ParameterSpec("ko_il1r1", "dimensionless", "IL-1R1 expression (1 wild type, 0 knockout)"),
    ),
    outputs=(
        Output("il1a_pgml", "il1a/il1a_V", "pg/mL", "plasma IL-1α (ng/L = pg/mL)"),
        Output("il1a_free", "il1a_pgml*ber_kd_nM/(ber_kd_nM + C_bermekimab_nM)", "pg/mL",
               "IL-1α not neutralised by bermekimab"),
        Output("mdsc_inflammasome", "dfdctp/(dfdctp + il1b_ec50)", "dimensionless", "gemcitabine NLRP3 stimulus in MDSC"),
        Output("il6_signal", "il6/(il6 + il6_ec50)*toc_kd_nM/(toc_kd_nM + C_tocilizumab_nM)", "dimensionless",
               "IL-6R signal"),
        Output("gcsf_total", "gcsf + 1000*C_filgrastim_ngmL", "pg/mL", "endogenous + exogenous G-CSF"),
        Output("gcsf_rel", "gcsf_total/gcsf_base", "dimensionless", "G-CSF relative to baseline"),
        Output("cox2_inhibition", "C_celecoxib_uM/(C_celecoxib_uM + cox2_ic50_uM)", "dimensionless", ""),
        Output("il1_total", "il1a_free + il1b_weight*il1b", "pg/mL", "IL-1 agonist at IL-1R1"),
        Output("il1r1_signal",
               "ko_il1r1*il1_total/(il1_total + il1r1_ec50)*ana_kss_nM/(ana_kss_nM + C_anakinra_nM)",
               "dimensionless", "IL-1R1 signalling in the marrow niche"),
        Output("il1r1_signal0", "il1a_base/(il1a_base + il1r1_ec50)", "dimensionless",
               "IL-1R1 signal of a healthy host (reference for marrow skew)"),
        Output("il1r1_excess", "max(il1r1_signal - il1r1_signal0, 0)", "dimensionless", "IL-1R1 signal above healthy"),
    ),
    flows=(
        Flow("il1a_absorption", "il1a_depot", "il1a", "il1a_ka*il1a_depot", "recombinant IL-1α i.p. absorption"),
        Flow("il1a_lytic_release", None, "il1a", "ko_il1a*il1a_per_cm3*lytic_flux", "IL-1α from pyroptotic tumour cells"),
        Flow("il1a_tumour_secretion", None, "il1a", "ko_il1a*il1a_tumour_basal*tumour_size", "basal tumour IL-1α"),
        Flow("il1a_host_production", None, "il1a", "il1a_k*il1a_V*il1a_base", "host basal IL-1α"),
        Flow("il1a_clearance", "il1a", None, "il1a_k*il1a"),
        Flow("il1b_production", None, "il1b",
             "il1b_k*il1b_base*(1 + il1b_emax*mdsc_inflammasome*ko_casp1_host*(1 - casp1_inhibition)*mdsc_rel)",
             "host myeloid IL-1β (Bruchard 2013)"),
        Flow("il1b_clearance", "il1b", None, "il1b_k*il1b"),
        Flow("il6_production", None, "il6", "il6_k*il6_base*(1 + il6_emax_cis*C_cis_uM/(C_cis_uM + il6_ec50_cis))"),
        Flow("il6_clearance", "il6", None, "il6_k*il6"),
        Flow("gcsf_production", None, "gcsf", "(gcsf_ke + gcsf_kanc*bm_anc0)*gcsf_base*(1 + gcsf_il1_emax*il1r1_excess)",
             "G-CSF synthesis, induced via IL-1R1"),
        Flow("gcsf_clearance", "gcsf", None, "(gcsf_ke + gcsf_kanc*ANC)*gcsf", "renal + neutrophil-mediated"),
        Flow("pge2_production", None, "pge2",
             "pge2_k*(1 + pge2_a*apoptotic_flux/(tumour_size + tumour_eps))*(1 - cox2_inhibition)",
             "COX-2 PGE2 from apoptotic death"),
        Flow("pge2_clearance", "pge2", None, "pge2_k*pge2"),
    ),
    drugs=(
        Drug("il1a_recombinant", 18000.0, {"iv": Route("il1a", scale=1e6), "ip": Route("il1a_depot", scale=1e6)},
             mw_source="mature IL-1α ~18 kDa (UniProt P01583/P01582; from memory)"),
    ),
    references=("Quartino 2014 Pharm Res 31:3390", "Ait-Oudhia 2012 CPT:PSP 1:e5", "Bruchard 2013 Nat Med 19:57",
                "Kurtova 2015 Nature 517:209", "Jung 2023 Pharmaceutics 15:304"),
)
