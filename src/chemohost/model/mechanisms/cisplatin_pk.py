"""Cisplatin PK after Urien & Lokiec 2004 (Br J Clin Pharmacol 57:756; nlmixr2lib Urien_2004_cisplatin).

Unbound platinum: two compartments, CL = CL_cis·(BSA/1.62)^0.83·(CRCL/81)^0.36,
V1 = V1_cis·(BSA/1.62)^1.60.  Protein-bound platinum (mg/L) forms irreversibly in proportion to the
unbound elimination flux (fm/Vm · CL · Cu) and is eliminated slowly (CLm/Vm, t1/2 ≈ 50 h).
The dose covariate of fm/Vm ((Dose/BSA)/25)^-0.48 uses the parameter ``cis_dose_ref`` (mg/m2), the
nominal regimen dose; the plasma-protein term (Prot/70)^1.33 is fixed at 1 (typical protein).
Amounts are mg cisplatin.  The i.p. route (mouse experiments) uses a depot with first-order
absorption.
"""

from ..core import Drug, Flow, Module, Output, ParameterSpec, Route, Species

MODULE = Module(
    name="cisplatin_pk",
    description="Cisplatin unbound 2-cmt + irreversibly protein-bound platinum (Urien 2004)",
    species=(
        Species("cis_depot", "mg", 0, "cisplatin in absorption depot (i.p.)"),
        Species("cis_c", "mg", 0, "unbound cisplatin, central"),
        Species("cis_p", "mg", 0, "unbound cisplatin, peripheral"),
        Species("cis_bound", "mg/L", 0, "protein-bound platinum concentration"),
    ),
    parameters=(
        ParameterSpec("CL_cis", "L/day", "unbound clearance at BSA 1.62 m2, CRCL 81 mL/min"),
        ParameterSpec("V1_cis", "L", "unbound central volume at BSA 1.62 m2"),
        ParameterSpec("Q_cis", "L/day", "intercompartmental clearance"),
        ParameterSpec("V2_cis", "L", "peripheral volume"),
        ParameterSpec("cis_cl_bsa_exp", "dimensionless", "BSA exponent on CL"),
        ParameterSpec("cis_cl_crcl_exp", "dimensionless", "CRCL exponent on CL"),
        ParameterSpec("cis_v1_bsa_exp", "dimensionless", "BSA exponent on V1"),
        ParameterSpec("fmVm_cis", "1/L", "bound-platinum formation fraction / volume at 25 mg/m2"),
        ParameterSpec("fm_dose_exp", "dimensionless", "exponent of (dose/BSA)/25 on fm/Vm"),
        ParameterSpec("cis_dose_ref", "mg/m**2", "nominal cisplatin dose per m2 (fm/Vm covariate)"),
        ParameterSpec("k_cis_bound", "1/day", "bound-platinum elimination rate (CLm0/Vm)"),
        ParameterSpec("cis_wt_ref", "kg", "reference body weight of the tabulated values"),
        ParameterSpec("cis_wt_exp_cl", "dimensionless", "allometric weight exponent on clearances"),
        ParameterSpec("cis_wt_exp_v", "dimensionless", "allometric weight exponent on volumes"),
        ParameterSpec("ka_cis", "1/day", "first-order absorption from the i.p. depot"),
        ParameterSpec("F_cis_ip", "dimensionless", "i.p. bioavailability"),
        ParameterSpec("MW_cis", "g/mol", "cisplatin molar mass"),
    ),
    outputs=(
        Output("CLi_cis", "CL_cis*(BSA/1.62)**cis_cl_bsa_exp*(CRCL/81)**cis_cl_crcl_exp*(WT/cis_wt_ref)**cis_wt_exp_cl",
               "L/day", "individual unbound clearance"),
        Output("V1i_cis", "V1_cis*(BSA/1.62)**cis_v1_bsa_exp*(WT/cis_wt_ref)**cis_wt_exp_v", "L", ""),
        Output("Qi_cis", "Q_cis*(WT/cis_wt_ref)**cis_wt_exp_cl", "L/day", ""),
        Output("V2i_cis", "V2_cis*(WT/cis_wt_ref)**cis_wt_exp_v", "L", ""),
        Output("C_cis", "cis_c/V1i_cis", "mg/L", "unbound plasma cisplatin"),
        Output("C_cis_uM", "C_cis/MW_cis*1000", "umol/L", "unbound plasma cisplatin"),
    ),
    flows=(
        Flow("cis_absorption", "cis_depot", "cis_c", "ka_cis*cis_depot"),
        Flow("cis_elimination", "cis_c", None, "CLi_cis*C_cis", "renal elimination and binding of unbound Pt"),
        Flow("cis_distribution", "cis_c", "cis_p", "Qi_cis*C_cis"),
        Flow("cis_redistribution", "cis_p", "cis_c", "Qi_cis*cis_p/V2i_cis"),
        Flow("cis_binding", None, "cis_bound",
             "fmVm_cis*(cis_dose_ref/25)**fm_dose_exp*CLi_cis*C_cis", "irreversible protein binding"),
        Flow("cis_bound_elimination", "cis_bound", None, "k_cis_bound*cis_bound"),
    ),
    drugs=(
        Drug("cisplatin", 300.05,
             {"iv": Route("cis_c"), "ip": Route("cis_depot", "F_cis_ip")},
             mw_source="parameters.md (300.05 g/mol)"),
    ),
    references=("Urien S, Lokiec F. Br J Clin Pharmacol 2004;57:756 (via nlmixr2lib Urien_2004_cisplatin.R)",),
)
