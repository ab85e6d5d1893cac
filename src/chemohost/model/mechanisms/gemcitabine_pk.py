"""Gemcitabine PK: parent and dFdU two-compartment models, absorption depot, intracellular dFdCTP.

Structure of Jiang et al. 2008 (Br J Clin Pharmacol 65:326, Table 3): all gemcitabine clearance
forms dFdU (apparent dFdU parameters, amounts in mg gemcitabine-equivalents).  Covariates: dFdU
CL = CL_dfdu·(1 + dfdu_cl_crcl·CRCL/70), V1_dfdu·(BSA/1.73)^dfdu_v1_bsa_exp.  Body-weight
exponents scale the (per-animal) mouse values; they are 0 in humans (Jiang did not retain weight).

The active triphosphate dFdCTP (umol/L, intracellular, PBMC reference) is formed by saturable
(Michaelis-Menten) phosphorylation of plasma gemcitabine, ``k_tp_vmax*C/(C + k_tp_km)``, and
eliminated first-order (label t1/2 1.7-19.4 h).  Grunewald 1991 (Cancer Chemother Pharmacol
27:258): accumulation in mononuclear cells is maximal once plasma gemcitabine reaches ~15-20 uM
(10-15 uM in vitro), so a longer infusion at a lower rate forms more dFdCTP from the same dose --
the basis of fixed-dose-rate (10 mg/m2/min) gemcitabine (Tempero 2003 J Clin Oncol 21:3402).

Routes: iv (bolus or zero-order infusion into the central compartment); ip, sc and oral (bolus into
the depot, first-order absorption ka_gem, bioavailability F).
"""

from ..core import Drug, Flow, Module, Output, ParameterSpec, Route, Species

WSCALE_CL = "(WT/gem_wt_ref)**gem_wt_exp"

MODULE = Module(
    name="gemcitabine_pk",
    description="Gemcitabine 2-cmt PK + dFdU 2-cmt + depot + intracellular dFdCTP",
    species=(
        Species("gem_depot", "mg", 0, "gemcitabine in absorption depot (i.p./s.c./oral)"),
        Species("gem_c", "mg", 0, "gemcitabine, central compartment"),
        Species("gem_p", "mg", 0, "gemcitabine, peripheral compartment"),
        Species("dfdu_c", "mg", 0, "dFdU (gem-equivalents), central"),
        Species("dfdu_p", "mg", 0, "dFdU (gem-equivalents), peripheral"),
        Species("dfdctp", "umol/L", 0, "intracellular dFdCTP (active triphosphate)"),
    ),
    parameters=(
        ParameterSpec("CL_gem", "L/day", "gemcitabine clearance (to dFdU)"),
        ParameterSpec("V1_gem", "L", "gemcitabine central volume"),
        ParameterSpec("Q_gem", "L/day", "gemcitabine intercompartmental clearance"),
        ParameterSpec("V2_gem", "L", "gemcitabine peripheral volume"),
        ParameterSpec("CL_dfdu", "L/day", "dFdU apparent clearance at CRCL=0"),
        ParameterSpec("dfdu_cl_crcl", "dimensionless", "dFdU CL slope on CRCL/70"),
        ParameterSpec("V1_dfdu", "L", "dFdU apparent central volume at BSA 1.73 m2"),
        ParameterSpec("dfdu_v1_bsa_exp", "dimensionless", "exponent of BSA/1.73 on V1_dfdu"),
        ParameterSpec("Q_dfdu", "L/day", "dFdU intercompartmental clearance"),
        ParameterSpec("V2_dfdu", "L", "dFdU peripheral volume"),
        ParameterSpec("gem_wt_ref", "kg", "reference body weight of the tabulated PK values"),
        ParameterSpec("gem_wt_exp", "dimensionless", "body-weight exponent on clearances and volumes"),
        ParameterSpec("ka_gem", "1/day", "first-order absorption rate from the depot"),
        ParameterSpec("F_gem_ip", "dimensionless", "bioavailability, intraperitoneal/subcutaneous"),
        ParameterSpec("F_gem_oral", "dimensionless", "bioavailability, oral"),
        ParameterSpec("k_tp_vmax", "umol/L/day", "maximal dFdCTP formation rate (saturating plasma gemcitabine)"),
        ParameterSpec("k_tp_km", "umol/L", "plasma gemcitabine for half-maximal dFdCTP formation"),
        ParameterSpec("k_tp_out", "1/day", "dFdCTP elimination rate constant"),
        ParameterSpec("MW_gem", "g/mol", "gemcitabine molar mass (free base)"),
    ),
    outputs=(
        Output("wscale_gem", "(WT/gem_wt_ref)**gem_wt_exp", "dimensionless", "body-weight scale factor"),
        Output("CLi_gem", "CL_gem*wscale_gem", "L/day", "individual gemcitabine clearance"),
        Output("V1i_gem", "V1_gem*wscale_gem", "L", "individual gemcitabine central volume"),
        Output("Qi_gem", "Q_gem*wscale_gem", "L/day", "individual intercompartmental clearance"),
        Output("V2i_gem", "V2_gem*wscale_gem", "L", "individual peripheral volume"),
        Output("CLi_dfdu", "CL_dfdu*(1 + dfdu_cl_crcl*CRCL/70)*wscale_gem", "L/day", "individual dFdU clearance"),
        Output("V1i_dfdu", "V1_dfdu*(BSA/1.73)**dfdu_v1_bsa_exp*wscale_gem", "L", "individual dFdU central volume"),
        Output("Qi_dfdu", "Q_dfdu*wscale_gem", "L/day", ""),
        Output("V2i_dfdu", "V2_dfdu*wscale_gem", "L", ""),
        Output("C_gem", "gem_c/V1i_gem", "mg/L", "plasma gemcitabine"),
        Output("C_gem_uM", "C_gem/MW_gem*1000", "umol/L", "plasma gemcitabine"),
        Output("C_dfdu", "dfdu_c/V1i_dfdu", "mg/L", "plasma dFdU (gem-equivalents)"),
        Output("C_dfdu_uM", "C_dfdu/MW_gem*1000", "umol/L", "plasma dFdU"),
    ),
    flows=(
        Flow("gem_absorption", "gem_depot", "gem_c", "ka_gem*gem_depot", "first-order absorption"),
        Flow("gem_to_dfdu", "gem_c", "dfdu_c", "CLi_gem*C_gem", "deamination by cytidine deaminase"),
        Flow("gem_distribution", "gem_c", "gem_p", "Qi_gem*C_gem"),
        Flow("gem_redistribution", "gem_p", "gem_c", "Qi_gem*gem_p/V2i_gem"),
        Flow("dfdu_elimination", "dfdu_c", None, "CLi_dfdu*C_dfdu", "renal elimination of dFdU"),
        Flow("dfdu_distribution", "dfdu_c", "dfdu_p", "Qi_dfdu*C_dfdu"),
        Flow("dfdu_redistribution", "dfdu_p", "dfdu_c", "Qi_dfdu*dfdu_p/V2i_dfdu"),
        Flow("dfdctp_formation", None, "dfdctp", "k_tp_vmax*C_gem_uM/(C_gem_uM + k_tp_km)",
             "saturable phosphorylation (dCK) in cells"),
        Flow("dfdctp_elimination", "dfdctp", None, "k_tp_out*dfdctp"),
    ),
    drugs=(
        Drug(
            "gemcitabine", 263.2,
            {
                "iv": Route("gem_c"),
                "ip": Route("gem_depot", "F_gem_ip"),
                "sc": Route("gem_depot", "F_gem_ip"),
                "oral": Route("gem_depot", "F_gem_oral"),
            },
            mw_source="parameters.md (free base 263.2 g/mol)",
        ),
    ),
    references=("Jiang X et al. Br J Clin Pharmacol 2008;65:326 (PMC2291243, Table 3)",
                "Biochem Pharmacol 2020;180:114127 (PMC7606647, Table 3) mouse PK"),
)
