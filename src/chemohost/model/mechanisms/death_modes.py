"""Death modes of drug-damaged tumour cells: apoptosis vs lytic pyroptosis.

Drug-damaged cells die at the Simeoni death flux (``tumour_death_flux``, cm3/day).  A fraction dies
lytically (pyroptosis), the rest by apoptosis:

* caspase-1 activation in cancer cells, ``casp1_act`` (0-1), rises with drug exposure over
  hours-days (Nat Commun 2026 Fig. 1f) and decays when exposure stops;
* canonical route: caspase-1 cleaves GSDMD -> lytic fraction ``dm_f_gsdmd``·casp1·GSDMD, blocked
  by a caspase-1 inhibitor (VRT-043198, active metabolite of belnacasan; a covalent reversible
  inhibitor, so target occupancy is a state that outlasts plasma exposure) or by caspase-1 knockout;
* residual route: with caspase-1 blocked or absent, caspase-8 -> GSDME keeps a fraction
  ``dm_f_c8`` of that lysis ("incomplete pyroptosis", iScience 2020);
* caspase-3 -> GSDME converts a constant fraction ``dm_f_gsdme`` of apoptosis to lysis
  (Wang 2017 Nature; Li 2023 Cancer Lett).
Knocking out a gasdermin or inhibiting caspase-1 shifts death to apoptosis without changing total
kill.  Lytic death releases IL-1α (maturation needs GSDMD pores or lysis; Tsuchiya 2021) and LDH;
apoptotic death releases PGE2 (Kurtova 2015).  Genetic perturbations are expression parameters
(1 = wild type, 0 = knockout).
"""

from ..core import Flow, Module, Output, ParameterSpec, Species

MODULE = Module(
    name="death_modes",
    description="Apoptosis vs caspase-1/gasdermin pyroptosis of drug-damaged tumour cells",
    species=(
        Species("casp1_act", "dimensionless", 0, "fraction of cancer cells with active caspase-1"),
        Species("ldh_cum", "U", 0, "cumulative LDH released by lytic death (assay readout)"),
        Species("casp1_occ", "dimensionless", 0, "fraction of caspase-1 occupied by VRT-043198 (covalent reversible)"),
    ),
    parameters=(
        ParameterSpec("dm_k_casp1_on", "1/day", "caspase-1 activation rate at full drug stimulus"),
        ParameterSpec("dm_k_casp1_off", "1/day", "caspase-1 deactivation rate"),
        ParameterSpec("dm_ec50_casp1_gem", "umol/L", "intracellular dFdCTP giving half-maximal caspase-1 stimulus"),
        ParameterSpec("dm_ec50_casp1_cis", "umol/L", "unbound cisplatin giving half-maximal caspase-1 stimulus"),
        ParameterSpec("dm_emax_casp1_cis", "dimensionless", "maximal caspase-1 stimulus by cisplatin relative to gemcitabine"),
        ParameterSpec("dm_kon_vrt", "1/((umol/L)*day)", "VRT-043198 binding rate to caspase-1 in cells"),
        ParameterSpec("dm_koff_vrt", "1/day", "VRT-043198 release rate from caspase-1"),
        ParameterSpec("dm_f_gsdmd", "dimensionless", "lytic fraction of dying cells with fully active caspase-1 and GSDMD"),
        ParameterSpec("dm_f_c8", "dimensionless", "fraction of blocked caspase-1-driven lysis kept by caspase-8/GSDME"),
        ParameterSpec("dm_f_gsdme", "dimensionless", "caspase-3/GSDME lytic fraction independent of caspase-1"),
        ParameterSpec("ko_casp1", "dimensionless", "caspase-1 expression (1 wild type, 0 knockout)"),
        ParameterSpec("ko_gsdmd", "dimensionless", "GSDMD expression (1 wild type, 0 knockout)"),
        ParameterSpec("ko_gsdme", "dimensionless", "GSDME expression (1 wild type, 0 knockout)"),
        ParameterSpec("dm_ldh_per_cm3", "U/cm**3", "LDH released per cm3 of lysed tumour"),
        ParameterSpec("C_vrt_uM_ext", "umol/L", "fixed exogenous VRT-043198 (in vitro experiments; 0 in vivo)"),
    ),
    outputs=(
        Output("dm_stim", "dfdctp/(dfdctp + dm_ec50_casp1_gem) + dm_emax_casp1_cis*C_cis_uM/(C_cis_uM + dm_ec50_casp1_cis)",
               "dimensionless", "drug stimulus of caspase-1 activation"),
        Output("casp1_inhibition", "casp1_occ", "dimensionless", "fractional caspase-1 inhibition by VRT-043198"),
        Output("casp1_active_eff", "ko_casp1*casp1_act*(1 - casp1_inhibition)", "dimensionless",
               "caspase-1 activity available to cleave GSDMD"),
        Output("lytic_fraction",
               "dm_f_gsdmd*casp1_active_eff*ko_gsdmd + dm_f_c8*dm_f_gsdmd*casp1_act*(1 - ko_casp1*(1 - casp1_inhibition))*ko_gsdme"
               " + dm_f_gsdme*ko_gsdme",
               "dimensionless", "fraction of dying tumour cells that die lytically"),
        Output("lytic_flux", "lytic_fraction*tumour_death_flux", "cm**3/day", "lytic (pyroptotic) tumour death"),
        Output("apoptotic_flux", "(1 - lytic_fraction)*tumour_death_flux", "cm**3/day", "apoptotic tumour death"),
        Output("ldh_release", "dm_ldh_per_cm3*lytic_flux", "U/day", "LDH release rate"),
    ),
    flows=(
        Flow("casp1_activation", None, "casp1_act", "dm_k_casp1_on*dm_stim/(1 + dm_stim)*(1 - casp1_act)",
             "drug-induced inflammasome/caspase-1 activation"),
        Flow("casp1_deactivation", "casp1_act", None, "dm_k_casp1_off*casp1_act"),
        Flow("ldh_accumulation", None, "ldh_cum", "ldh_release", "LDH released into medium/serum (cumulative)"),
        Flow("vrt_binding", None, "casp1_occ", "dm_kon_vrt*(C_vrt_uM + C_vrt_uM_ext)*(1 - casp1_occ)",
             "inhibitor binding (covalent reversible)"),
        Flow("vrt_release", "casp1_occ", None, "dm_koff_vrt*casp1_occ"),
    ),
    references=("Nat Commun 2026 doi 10.1038/s41467-026-71471-3 Fig. 1", "Wang 2017 Nature 547:99",
                "Tsuchiya 2021 Cell Rep", "iScience 2020 PMC7200307", "Kurtova 2015 Nature 517:209"),
)
