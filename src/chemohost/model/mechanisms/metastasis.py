"""Metastasis: circulating tumour cells shed in proportion to tumour burden and chemotherapy-induced
permeability; seeding raised by neutrophil-dominant inflammation (NLR relative to baseline, a
pre-metastatic-niche proxy); metastatic burden grows and responds to chemotherapy like cycling
tumour cells (D'Alterio 2020; Deo 2024)."""

from ..core import Flow, Module, Output, ParameterSpec, Species

MODULE = Module(
    name="metastasis",
    description="CTC shedding, NLR-dependent seeding, metastatic burden",
    species=(
        Species("ctc", "1/mL", "met_k_shed*(tumour_w0*(1 + csc_f0 + csc_f0*csc_k_act/csc_k_quiesce))/met_k_ctc",
                "circulating tumour cells"),
        Species("met_burden", "cm**3", 0, "metastatic tumour burden"),
    ),
    parameters=(
        ParameterSpec("met_k_shed", "1/(mL*day*cm**3)", "CTC shedding per cm3 of tumour"),
        ParameterSpec("met_a_perm", "dimensionless", "fold increase of shedding at full chemotherapy stimulus"),
        ParameterSpec("met_k_ctc", "1/day", "CTC clearance from blood"),
        ParameterSpec("met_k_seed", "mL*cm**3/day", "metastatic volume seeded per CTC per day"),
        ParameterSpec("met_h_niche", "dimensionless", "exponent of NLR/NLR0 on seeding efficiency"),
        ParameterSpec("met_lambda", "1/day", "metastatic growth rate"),
    ),
    outputs=(
        Output("nlr0", "bm_anc0/bm_lymph0", "dimensionless", "baseline NLR"),
        Output("disease_total", "tumour_total + met_burden", "cm**3", "primary + metastatic burden"),
    ),
    flows=(
        Flow("ctc_shedding", None, "ctc", "met_k_shed*tumour_total*(1 + met_a_perm*dm_stim/(1 + dm_stim))",
             "intravasation"),
        Flow("ctc_clearance", "ctc", None, "met_k_ctc*ctc"),
        Flow("met_seeding", None, "met_burden", "met_k_seed*ctc*(NLR/nlr0)**met_h_niche", "niche-dependent seeding"),
        Flow("met_growth", None, "met_burden", "met_lambda*met_burden"),
        Flow("met_chemo_kill", "met_burden", None, "tumour_kill_rate*met_burden"),
    ),
    references=("D'Alterio 2020 Semin Cancer Biol 60:351", "Deo 2024 Clin Exp Metastasis 41:495"),
)
