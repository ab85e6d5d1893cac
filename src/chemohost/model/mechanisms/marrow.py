"""Bone marrow: HSPC -> GMP / MDP / CLP branches -> blood neutrophils (incl. PMN-MDSC), monocytes,
lymphocytes; IL-1R1-driven division and lineage skew; chemotherapy kills proliferating cells.

Units: marrow pools relative to a healthy steady state (1); blood counts in 1e9/L.
* HSPC divide at k_hspc·(1 + a_div·S)·(G/G0)^g_h, where S is the IL-1R1 signal above a healthy
  host's (Pietras 2016: IL-1 accelerates HSC division; PMC3104996: via G-CSF).  Self-renewal has
  homeostatic feedback (1/HSPC)^γh and is eroded by an exhaustion state that builds up under
  chronic IL-1 and reverses on withdrawal (Pietras 2016).
* Output fractions: MDP and CLP fall with S (skew away from monocyte/DC and lymphoid output;
  Nat Commun 2026 Fig. 4, NKI Cancer Cell 2025), GMP takes the rest.
* Neutrophils: GMP -> 3 maturation transits -> blood; marrow transit time and blood half-life from
  deuterium labelling (Blood 2016;127:3431: 5.8 d and 19 h); G-CSF speeds maturation (Quartino
  2014).  A polarisation state sets the PMN-MDSC share of released neutrophils; it follows the
  IL-1R1 signal over days.  Gemcitabine kills circulating MDSC directly (Le 2009 Int
  Immunopharmacol: 24-48 h depletion), before the skewed rebound.
* Chemotherapy kills proliferating HSPC, GMP, MDP, CLP (Friberg-type linear effect of dFdCTP and
  unbound cisplatin; the mostly quiescent HSPC pool with a lower relative sensitivity) and
  circulating lymphocytes.
* Lymphocyte supply: only a share (bm_f_lymph_marrow) depends on marrow CLP output; the rest is
  peripheral homeostatic division (den Braber 2012 Immunity 36:288: in adult humans most naive
  T-cell production is peripheral, in mice mostly thymic), so chemotherapy lowers human
  lymphocytes moderately rather than cumulatively emptying the blood.
"""

from ..core import Flow, Module, Output, ParameterSpec, Species

S = "il1r1_excess"
GREL = "gcsf_rel"
KD = f"(bm_k_hspc*(1 + bm_a_div*{S})*{GREL}**bm_g_hspc)"
E = "(bm_slope_gem*dfdctp + bm_slope_cis*C_cis_uM)"
FB = "((1 + bm_fb_eps)/(hspc + bm_fb_eps))**bm_gamma_h"
KTR = f"(3/bm_t_transit*{GREL}**bm_g_mat)"

MODULE = Module(
    name="marrow",
    description="HSPC/GMP/MDP/CLP marrow with IL-1R1 skew, neutrophils, PMN-MDSC, monocytes, lymphocytes",
    species=(
        Species("hspc", "dimensionless", 1, "haematopoietic stem/progenitor cells (relative)"),
        Species("hsc_exh", "dimensionless", 0, "IL-1-induced erosion of HSC self-renewal (0-1)"),
        Species("gmp", "dimensionless", 1, "granulocyte-monocyte progenitors (relative)"),
        Species("mdp", "dimensionless", 1, "monocyte-dendritic progenitors (relative)"),
        Species("clp", "dimensionless", 1, "common lymphoid progenitors (relative)"),
        Species("nt1", "1e9/L", "bm_k_circ*bm_anc0*bm_t_transit/3", "maturing neutrophils, stage 1"),
        Species("nt2", "1e9/L", "bm_k_circ*bm_anc0*bm_t_transit/3", "maturing neutrophils, stage 2"),
        Species("nt3", "1e9/L", "bm_k_circ*bm_anc0*bm_t_transit/3", "maturing neutrophils, stage 3"),
        Species("neut", "1e9/L", "bm_anc0*(1 - bm_pol0)", "blood neutrophils (conventional)"),
        Species("mdsc", "1e9/L", "bm_anc0*bm_pol0", "blood PMN-MDSC (immunosuppressive neutrophils)"),
        Species("mdsc_pol", "dimensionless", "bm_pol0", "PMN-MDSC share of newly released neutrophils"),
        Species("mono", "1e9/L", "bm_mono0", "blood monocytes"),
        Species("lymph", "1e9/L", "bm_lymph0", "blood lymphocytes"),
    ),
    parameters=(
        ParameterSpec("bm_k_hspc", "1/day", "HSPC division rate at steady state"),
        ParameterSpec("bm_a_div", "dimensionless", "maximal IL-1R1 acceleration of HSPC division"),
        ParameterSpec("bm_g_hspc", "dimensionless", "G-CSF exponent on HSPC division"),
        ParameterSpec("bm_gamma_h", "dimensionless", "homeostatic feedback exponent on HSPC self-renewal"),
        ParameterSpec("bm_fb_eps", "dimensionless", "HSPC level (relative) below which the feedback saturates"),
        ParameterSpec("bm_sens_hspc", "dimensionless", "chemotherapy sensitivity of HSPC relative to committed progenitors"),
        ParameterSpec("bm_c_exh", "dimensionless", "maximal loss of self-renewal from exhaustion"),
        ParameterSpec("bm_k_exh_on", "1/day", "exhaustion build-up rate at full IL-1R1 signal"),
        ParameterSpec("bm_k_exh_off", "1/day", "exhaustion reversal rate"),
        ParameterSpec("bm_p_mdp0", "dimensionless", "MDP share of HSPC output at steady state"),
        ParameterSpec("bm_p_clp0", "dimensionless", "CLP share of HSPC output at steady state"),
        ParameterSpec("bm_skew_m", "dimensionless", "fractional fall of the MDP share at full IL-1R1 signal"),
        ParameterSpec("bm_skew_l", "dimensionless", "fractional fall of the CLP share at full IL-1R1 signal"),
        ParameterSpec("bm_k_gmp", "1/day", "GMP turnover"),
        ParameterSpec("bm_k_mdp", "1/day", "MDP turnover"),
        ParameterSpec("bm_k_clp", "1/day", "CLP turnover"),
        ParameterSpec("bm_g_gmp", "dimensionless", "G-CSF exponent on GMP proliferation"),
        ParameterSpec("bm_t_transit", "day", "post-mitotic neutrophil maturation time"),
        ParameterSpec("bm_g_mat", "dimensionless", "G-CSF exponent on maturation speed (Quartino beta)"),
        ParameterSpec("bm_k_circ", "1/day", "blood neutrophil removal rate"),
        ParameterSpec("bm_anc0", "1e9/L", "baseline blood neutrophils"),
        ParameterSpec("bm_pol0", "dimensionless", "baseline PMN-MDSC share of neutrophils"),
        ParameterSpec("bm_pol_max", "dimensionless", "PMN-MDSC share at full IL-1R1 signal"),
        ParameterSpec("bm_k_pol", "1/day", "rate at which the PMN-MDSC share follows the IL-1R1 signal"),
        ParameterSpec("bm_k_mdsc_gem", "1/day", "maximal direct killing of circulating MDSC by gemcitabine"),
        ParameterSpec("bm_ec50_mdsc_gem", "umol/L", "dFdCTP for half-maximal MDSC killing"),
        ParameterSpec("bm_mono0", "1e9/L", "baseline blood monocytes"),
        ParameterSpec("bm_k_mono", "1/day", "blood monocyte removal rate"),
        ParameterSpec("bm_lymph0", "1e9/L", "baseline blood lymphocytes"),
        ParameterSpec("bm_k_lymph", "1/day", "blood lymphocyte turnover"),
        ParameterSpec("bm_f_lymph_marrow", "dimensionless", "share of lymphocyte supply that depends on marrow CLP output"),
        ParameterSpec("bm_slope_gem", "1/(umol/L)", "kill of proliferating marrow cells per uM dFdCTP"),
        ParameterSpec("bm_slope_cis", "1/(umol/L)", "kill of proliferating marrow cells per uM unbound cisplatin"),
        ParameterSpec("bm_lymph_kill", "dimensionless", "relative sensitivity of blood lymphocytes to chemotherapy"),
    ),
    outputs=(
        Output("bm_kill", E, "dimensionless", "fractional kill of proliferating marrow cells"),
        Output("hspc_division", KD, "1/day", "HSPC division rate"),
        Output("p_mdp", f"bm_p_mdp0*(1 - bm_skew_m*{S})", "dimensionless", "MDP share of HSPC output"),
        Output("p_clp", f"bm_p_clp0*(1 - bm_skew_l*{S})", "dimensionless", "CLP share of HSPC output"),
        Output("p_gmp", "1 - p_mdp - p_clp", "dimensionless", "GMP share of HSPC output"),
        Output("hspc_output", f"{KD}*hspc/bm_k_hspc", "dimensionless", "HSPC differentiation flux (relative)"),
        Output("ANC", "neut + mdsc", "1e9/L", "absolute neutrophil count"),
        Output("mdsc0", "bm_anc0*bm_pol0", "1e9/L", "baseline PMN-MDSC"),
        Output("mdsc_rel", "mdsc/mdsc0", "dimensionless", "PMN-MDSC relative to baseline"),
        Output("NLR", "ANC/lymph", "dimensionless", "neutrophil-to-lymphocyte ratio"),
        Output("nlr_rel", "ANC/lymph/(bm_anc0/bm_lymph0)", "dimensionless",
               "NLR relative to the patient's pre-treatment value (the monitored quantity of NLR-triggered rules)"),
        Output("gmp_frequency", "gmp/(gmp + mdp + clp + hspc + 1e-12)*4", "dimensionless",
               "GMP share of marrow progenitors relative to healthy (1 = healthy; 0 once the marrow is empty)"),
    ),
    flows=(
        Flow("hspc_self_renewal", None, "hspc", f"{KD}*hspc*{FB}*(1 - bm_c_exh*hsc_exh)", "self-renewing divisions"),
        Flow("hspc_differentiation", "hspc", None, f"{KD}*hspc", "differentiating divisions (to GMP/MDP/CLP)"),
        Flow("hspc_chemo_kill", "hspc", None, f"{KD}*hspc*{FB}*bm_sens_hspc*bm_kill", "chemotherapy kill"),
        Flow("exhaustion_gain", None, "hsc_exh", f"bm_k_exh_on*{S}*(1 - hsc_exh)", "chronic IL-1 exposure"),
        Flow("exhaustion_loss", "hsc_exh", None, "bm_k_exh_off*hsc_exh", "recovery on IL-1 withdrawal"),
        Flow("gmp_production", None, "gmp", f"bm_k_gmp*hspc_output*p_gmp/(1 - bm_p_mdp0 - bm_p_clp0)*{GREL}**bm_g_gmp"),
        Flow("gmp_maturation", "gmp", None, "bm_k_gmp*gmp", "GMP commit to neutrophil maturation"),
        Flow("gmp_chemo_kill", "gmp", None, "bm_k_gmp*gmp*bm_kill"),
        Flow("mdp_production", None, "mdp", "bm_k_mdp*hspc_output*p_mdp/bm_p_mdp0"),
        Flow("mdp_maturation", "mdp", None, "bm_k_mdp*mdp"),
        Flow("mdp_chemo_kill", "mdp", None, "bm_k_mdp*mdp*bm_kill"),
        Flow("clp_production", None, "clp", "bm_k_clp*hspc_output*p_clp/bm_p_clp0"),
        Flow("clp_maturation", "clp", None, "bm_k_clp*clp"),
        Flow("clp_chemo_kill", "clp", None, "bm_k_clp*clp*bm_kill"),
        Flow("neutrophil_commitment", None, "nt1", f"bm_k_circ*bm_anc0*gmp*{GREL}**bm_g_gmp", "neutrophil precursors from GMP"),
        Flow("nt_transit1", "nt1", "nt2", f"{KTR}*nt1"),
        Flow("nt_transit2", "nt2", "nt3", f"{KTR}*nt2"),
        Flow("release_conventional", "nt3", "neut", f"{KTR}*nt3*(1 - mdsc_pol)", "release to blood"),
        Flow("release_mdsc", "nt3", "mdsc", f"{KTR}*nt3*mdsc_pol", "release of PMN-MDSC"),
        Flow("neut_removal", "neut", None, "bm_k_circ*neut"),
        Flow("mdsc_removal", "mdsc", None, "bm_k_circ*mdsc"),
        Flow("mdsc_gem_kill", "mdsc", None, "bm_k_mdsc_gem*dfdctp/(dfdctp + bm_ec50_mdsc_gem)*mdsc",
             "direct gemcitabine cytotoxicity to MDSC"),
        Flow("polarisation_up", None, "mdsc_pol", f"bm_k_pol*(bm_pol0 + (bm_pol_max - bm_pol0)*{S})"),
        Flow("polarisation_down", "mdsc_pol", None, "bm_k_pol*mdsc_pol"),
        Flow("monocyte_release", None, "mono", "bm_k_mono*bm_mono0*mdp"),
        Flow("monocyte_removal", "mono", None, "bm_k_mono*mono"),
        Flow("lymphocyte_production", None, "lymph", "bm_k_lymph*bm_lymph0*(bm_f_lymph_marrow*clp + 1 - bm_f_lymph_marrow)",
             "marrow (CLP-derived) plus peripheral homeostatic supply"),
        Flow("lymphocyte_removal", "lymph", None, "bm_k_lymph*lymph"),
        Flow("lymphocyte_chemo_kill", "lymph", None, "bm_k_lymph*bm_lymph_kill*bm_kill*lymph", "lymphodepletion"),
    ),
    references=("Pietras 2016 Nat Cell Biol 18:607", "Ueda 2009 J Immunol 182:6477", "Blood 2016;127:3431",
                "Quartino 2014 Pharm Res 31:3390", "Friberg 2002 J Clin Oncol 20:4713", "Le 2009 Int Immunopharmacol 9:900"),
)
