"""Docetaxel three-compartment PK (Bruno et al. 1996, J Pharmacokinet Biopharm 24:153), the PK that
drove Friberg et al. 2002's docetaxel myelosuppression fit (values via radivot/myelo
inst/doc/fribergPars02.R).  Used to reproduce Friberg 2002 and as a contrast drug."""

from ..core import Drug, Flow, Module, Output, ParameterSpec, Route, Species

MODULE = Module(
    name="docetaxel_pk",
    description="Docetaxel 3-cmt PK (Bruno 1996)",
    species=(
        Species("dtx_c", "mg", 0, "docetaxel, central"),
        Species("dtx_p1", "mg", 0, "docetaxel, shallow peripheral"),
        Species("dtx_p2", "mg", 0, "docetaxel, deep peripheral"),
    ),
    parameters=(
        ParameterSpec("CL_dtx", "L/day", "docetaxel clearance"),
        ParameterSpec("V1_dtx", "L", "central volume"),
        ParameterSpec("k12_dtx", "1/day", "central -> shallow"),
        ParameterSpec("k21_dtx", "1/day", "shallow -> central"),
        ParameterSpec("k13_dtx", "1/day", "central -> deep"),
        ParameterSpec("k31_dtx", "1/day", "deep -> central"),
        ParameterSpec("MW_dtx", "g/mol", "docetaxel molar mass"),
    ),
    outputs=(
        Output("C_dtx", "dtx_c/V1_dtx", "mg/L", "plasma docetaxel"),
        Output("C_dtx_uM", "C_dtx/MW_dtx*1000", "umol/L", "plasma docetaxel"),
    ),
    flows=(
        Flow("dtx_elimination", "dtx_c", None, "CL_dtx*C_dtx"),
        Flow("dtx_to_p1", "dtx_c", "dtx_p1", "k12_dtx*dtx_c"),
        Flow("dtx_from_p1", "dtx_p1", "dtx_c", "k21_dtx*dtx_p1"),
        Flow("dtx_to_p2", "dtx_c", "dtx_p2", "k13_dtx*dtx_c"),
        Flow("dtx_from_p2", "dtx_p2", "dtx_c", "k31_dtx*dtx_p2"),
    ),
    drugs=(Drug("docetaxel", 807.9, {"iv": Route("dtx_c")}, mw_source="0.808 mg/umol (radivot/myelo README)"),),
    references=("Bruno R et al. J Pharmacokinet Biopharm 1996;24:153",),
)
