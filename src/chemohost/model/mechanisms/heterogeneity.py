"""Tumour heterogeneity: quiescent and cycling stem-like (CSC) cells that repopulate the tumour.

Quiescent CSC are recruited into division by PGE2 released from apoptotic neighbours (Kurtova 2015
Nature 517:209); cycling CSC self-renew (supported by IL-6 signalling), return to quiescence,
feed the bulk by differentiation, and are killed by chemotherapy less than bulk cells.  With
repeated cycles the cycling pool grows, so regrowth between cycles rises cycle after cycle;
celecoxib (COX-2 -> PGE2) attenuates it.
"""

from ..core import Flow, Module, Output, ParameterSpec, Species

MODULE = Module(
    name="heterogeneity",
    description="Quiescent/cycling stem-like cells, PGE2-driven repopulation, IL-6 support",
    species=(
        Species("csc_q", "cm**3", "csc_f0*tumour_w0", "quiescent stem-like cells"),
        Species("csc_c", "cm**3", "csc_f0*tumour_w0*csc_k_act/csc_k_quiesce", "cycling stem-like cells"),
    ),
    parameters=(
        ParameterSpec("csc_f0", "dimensionless", "quiescent CSC fraction of the initial tumour"),
        ParameterSpec("csc_k_act", "1/day", "baseline recruitment of quiescent CSC into division"),
        ParameterSpec("csc_a_pge2", "dimensionless", "fold increase of recruitment per unit PGE2 above baseline"),
        ParameterSpec("csc_k_quiesce", "1/day", "return of cycling CSC to quiescence"),
        ParameterSpec("csc_lambda", "1/day", "CSC self-renewal rate"),
        ParameterSpec("csc_a_il6", "dimensionless", "fold increase of CSC self-renewal at full IL-6 signal"),
        ParameterSpec("csc_k_diff", "1/day", "differentiation of cycling CSC into bulk tumour cells"),
        ParameterSpec("csc_resistance", "dimensionless", "CSC kill relative to bulk cycling cells"),
    ),
    outputs=(
        Output("csc_recruitment", "csc_k_act*(1 + csc_a_pge2*max(pge2 - 1, 0))", "1/day", ""),
        Output("tumour_total", "tumour_size + csc_q + csc_c", "cm**3", "bulk + stem-like tumour"),
        Output("tumour_rel", "tumour_total/(tumour_w0*(1 + csc_f0*(1 + csc_k_act/csc_k_quiesce)) + tumour_eps)",
               "dimensionless", "tumour burden relative to its pre-treatment value (adaptive-therapy rules; 0 in a "
               "tumour-free host)"),
        Output("csc_fraction", "(csc_q + csc_c)/(tumour_total + tumour_eps)", "dimensionless", ""),
    ),
    flows=(
        Flow("csc_activation", "csc_q", "csc_c", "csc_recruitment*csc_q", "PGE2 wound response"),
        Flow("csc_quiescence", "csc_c", "csc_q", "csc_k_quiesce*csc_c"),
        Flow("csc_self_renewal", None, "csc_c", "csc_lambda*(1 + csc_a_il6*il6_signal)*csc_c*tumour_growth_sat"),
        Flow("csc_differentiation", "csc_c", "tumour_x1", "csc_k_diff*csc_c", "repopulation of the bulk"),
        Flow("csc_chemo_kill", "csc_c", None, "csc_resistance*tumour_kill_rate*csc_c"),
    ),
    references=("Kurtova 2015 Nature 517:209", "D'Alterio 2020 Semin Cancer Biol 60:351"),
)
