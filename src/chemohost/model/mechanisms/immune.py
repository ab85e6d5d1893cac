"""Immune-tumour interaction: tumour PMN-MDSC, dendritic priming by dying cells, CD8 T cells with
MDSC suppression and PD-1 exhaustion; tumour-promoting neutrophils.

All immune states are relative to the untreated steady state (1).  Their effects on the tumour
are written as *modifiers around that steady state*, so an untreated tumour still grows at its
measured net rate (Simeoni lambda0) and every deviation comes from the host response:
* immune kill of cycling tumour cells: imm_k_kill·(T_eff - 1)·x1, with
  T_eff = CD8·(1 + imm_sup)/(1 + imm_sup·MDSC_tumour) x PD-1 factor;
* neutrophil-driven growth: imm_g_mdsc·lambda0·(MDSC_tumour - 1)·x1.
MDSC are recruited from blood (CXCR2; blocked by a CXCR2 antagonist); dendritic cells are
activated by immunogenic death (lytic > apoptotic); CD8 expansion follows DC priming and the
blood lymphocyte supply.
"""

from ..core import Flow, Module, Output, ParameterSpec, Species

MODULE = Module(
    name="immune",
    description="Tumour MDSC, dendritic priming, CD8 T cells, PD-1 exhaustion, neutrophil tumour promotion",
    species=(
        Species("mdsc_tumour", "dimensionless", 1, "PMN-MDSC in the tumour (relative)"),
        Species("dc_act", "dimensionless", 1, "activated dendritic cells (relative)"),
        Species("cd8", "dimensionless", 1, "tumour-infiltrating CD8 T cells (relative)"),
    ),
    parameters=(
        ParameterSpec("imm_k_mdsc", "1/day", "MDSC recruitment/turnover in the tumour"),
        ParameterSpec("cxcr2_ic50_uM", "umol/L", "CXCR2 antagonist IC50 for MDSC recruitment"),
        ParameterSpec("imm_k_dc", "1/day", "DC activation turnover"),
        ParameterSpec("imm_a_lytic", "day", "DC activation per unit lytic death rate per tumour volume"),
        ParameterSpec("imm_a_apo", "day", "DC activation per unit apoptotic death rate per tumour volume"),
        ParameterSpec("imm_k_t", "1/day", "CD8 T-cell turnover in the tumour"),
        ParameterSpec("imm_sup", "dimensionless", "MDSC suppression strength (at baseline MDSC)"),
        ParameterSpec("imm_f_exh", "dimensionless", "fraction of T-cell killing lost to PD-1 exhaustion"),
        ParameterSpec("pd1_kd_nM", "nmol/L", "anti-PD-1 binding constant"),
        ParameterSpec("imm_k_kill", "1/day", "tumour kill rate per unit change of effective T-cell killing"),
        ParameterSpec("imm_g_mdsc", "dimensionless", "tumour growth promotion per unit change of tumour MDSC"),
    ),
    outputs=(
        Output("cxcr2_block", "C_cxcr2i_uM/(C_cxcr2i_uM + cxcr2_ic50_uM)", "dimensionless", ""),
        Output("pd1_occupancy", "C_antipd1_nM/(C_antipd1_nM + pd1_kd_nM)", "dimensionless", ""),
        Output("t_effective",
               "cd8*(1 + imm_sup)/(1 + imm_sup*mdsc_tumour)*(1 - imm_f_exh*(1 - pd1_occupancy))/(1 - imm_f_exh)",
               "dimensionless", "effective CD8 killing relative to untreated"),
    ),
    flows=(
        Flow("mdsc_recruitment", None, "mdsc_tumour", "imm_k_mdsc*mdsc_rel*(1 - cxcr2_block)", "CXCR2-dependent"),
        Flow("mdsc_tumour_loss", "mdsc_tumour", None, "imm_k_mdsc*mdsc_tumour"),
        Flow("dc_activation", None, "dc_act",
             "imm_k_dc*(1 + (imm_a_lytic*lytic_flux + imm_a_apo*apoptotic_flux)/(tumour_size + tumour_eps))",
             "priming by immunogenic tumour death"),
        Flow("dc_loss", "dc_act", None, "imm_k_dc*dc_act"),
        Flow("cd8_expansion", None, "cd8", "imm_k_t*dc_act*lymph/bm_lymph0", "priming-driven expansion"),
        Flow("cd8_loss", "cd8", None, "imm_k_t*cd8"),
        Flow("immune_kill", "tumour_x1", None, "imm_k_kill*(t_effective - 1)*tumour_x1*tumour_growth_sat",
             "CD8 killing relative to untreated (negative = less kill)"),
        Flow("neutrophil_promotion", None, "tumour_x1", "imm_g_mdsc*tumour_lambda0*(mdsc_tumour - 1)*tumour_x1*tumour_growth_sat",
             "tumour-promoting neutrophils relative to untreated"),
    ),
    references=("Bruchard 2013 Nat Med", "Wang 2020 Front Bioeng Biotechnol 8:141 (QSP-IO MDSC)",
                "Lai 2018 (QSP-IO)", "Nat Commun 2026"),
)
