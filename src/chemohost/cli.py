"""The ``chemohost`` command: parse arguments, call the API, print.  Errors -> message, exit 2."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .errors import ChemohostError


def _warn(obj) -> None:
    """Print what a loaded file accepted but a user should know (values outside plausible ranges)."""
    src = getattr(obj, "source", "")
    for field, msg in getattr(obj, "warnings", []) or []:
        print(f"chemohost: warning: {src}: field '{field}': {msg}", file=sys.stderr)


#: exit code when results were written but some patient simulations failed (0: every patient ran,
#: 2: bad input or nothing written)
EXIT_SOME_FAILED = 3


def _simulate(args) -> int:
    from .api import load_scenario, write_run
    from .outputs import open_output

    from .spec_types import MAX_PATIENTS, MAX_SEED

    if args.patients is not None and not 1 <= args.patients <= MAX_PATIENTS:
        raise ChemohostError(f"{args.scenario}: --patients must be >= 1 and <= {MAX_PATIENTS:,} (MAX_PATIENTS), "
                             f"got {args.patients}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise ChemohostError(f"{args.scenario}: --seed must be a whole number >= 0 and <= 2**63 - 1, got {args.seed}")
    sc = load_scenario(args.scenario)
    if args.patients is not None or args.seed is not None:
        sc = sc.with_patients(n=args.patients, seed=args.seed)
    _warn(sc)
    n = sc.spec.patients.n
    expected = sc.times().size * n * (len(sc.outputs) + 4) * 8 * len(sc.arms)
    with open_output(args.out, expected_bytes=expected):
        run = sc.simulate()
        failed = {arm: int((res.status != 0).sum()) for arm, res in run.arms.items()}
        dead = [a for a, k in failed.items() if k == n]
        if dead:
            raise ChemohostError(f"every patient of arm(s) {', '.join(dead)} failed in the solver "
                                 f"({_reasons(run.arms[dead[0]].status)}); nothing written. Check the doses, parameters "
                                 f"and solver settings in {args.scenario}")
        files = write_run(run, args.out)
    print(f"simulated {n} patient(s) x {len(run.arms)} arm(s) of '{sc.spec.name}' "
          f"({sc.model.name}, {sc.spec.species}) in {run.timings['simulate']:.2f} s "
          f"(compile/load {run.timings['compile_or_load']:.2f} s)")
    for arm, res in run.arms.items():
        line = f"  {arm}: {n - failed[arm]}/{n} ok"
        for name in run.scenario.outputs:
            v = res.output(name)
            if (res.status == 0).any():
                line += f"; {name} end median {float(_median(v[res.status == 0, -1])):.4g}"
        print(line)
    for name, path in files.items():
        print(f"  wrote {path}")
    n_failed = sum(failed.values())
    if n_failed:
        print(f"chemohost: warning: {n_failed} of {n * len(run.arms)} patient simulations failed (status in "
              f"timecourses.parquet); exit code {EXIT_SOME_FAILED}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def _reasons(status) -> str:
    import numpy as np

    from .engine.simulate import STATUS

    vals, counts = np.unique(status[status != 0], return_counts=True)
    return ", ".join(f"{STATUS.get(int(v), v)}: {c}" for v, c in zip(vals, counts))


def _median(x):
    import numpy as np
    return np.median(x)


def _trial(args) -> int:
    from .studies.trial import Trial, run_trial, write_trial

    design = getattr(args, "design", "paired")
    if design == "paired" and (args.replicates is not None or args.per_arm is not None or args.ns is not None):
        raise ChemohostError("--replicates, --per-arm and --ns belong to --design randomized")
    trial = Trial.load(args.scenario)
    _warn(trial)
    if args.device is not None:
        trial.spec.solver.device = args.device  # part of the spec: checkpoints and cluster workers see it
    if trial.spec.solver.device == "gpu":
        from .engine.gpu import check_gpu

        check_gpu()
    from .spec_types import MAX_PATIENTS, MAX_SEED

    if args.patients is not None and not 1 <= args.patients <= MAX_PATIENTS:
        raise ChemohostError(f"--patients must be >= 1 and <= {MAX_PATIENTS:,} (MAX_PATIENTS), got {args.patients}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise ChemohostError(f"--seed must be a whole number >= 0 and <= 2**63 - 1, got {args.seed}")
    if design == "randomized":
        if args.posterior is not None:
            raise ChemohostError("--posterior runs the paired design over posterior draws; drop --design randomized")
        return _trial_randomized(args, trial)
    if args.draws is not None and args.posterior is None:
        raise ChemohostError("--draws needs --posterior FIT_DIR (the --out folder of `chemohost fit`)")
    if args.posterior is not None:
        return _trial_posterior(args, trial)
    from .outputs import open_output

    from .outputs import PARTIAL
    from .studies.checkpoint import Checkpoint

    n = args.patients or trial.spec.patients
    from .studies.cluster import executor

    with open_output(args.out, expected_bytes=n * len(trial.arms) * 1500) as folder, \
            executor(args.workers, args.scheduler) as ex:
        partial = folder.path / PARTIAL
        res = run_trial(trial, patients=args.patients, seed=args.seed, progress=True,
                        checkpoint=lambda fp: Checkpoint(partial, fp, resume=args.resume, discard=args.force),
                        executor=ex)
        dead = [a for a, s in res.summary["arms"].items() if s["n_failed"] == s["n_run"]]
        if dead:
            shutil.rmtree(partial, ignore_errors=True)  # the run finished: nothing to resume
            raise ChemohostError(f"every patient of arm(s) {', '.join(dead)} failed in the solver; nothing written. "
                                 f"Check the arm's doses and parameters in {args.scenario}, or the solver settings")
        files = write_trial(res, args.out)
        shutil.rmtree(partial, ignore_errors=True)  # published: the checkpoints are no longer needed
    resumed = res.summary.get("resumed_chunks")
    print(f"trial '{trial.spec.name}': {len(res.patients)} patient-arms in {res.timings['simulate_and_endpoints']:.1f} s"
          + (f" ({resumed} chunk(s) read back from the interrupted run)" if resumed else ""))
    for arm, tg in res.summary.get("twin_guided", {}).items():
        print(f"  twin-guided '{arm}': decisions at day {tg['policy']['decision_day']:g}: "
              + ", ".join(f"{k} {v}" for k, v in tg["actions"].items())
              + f"; mean P(IL-1-driven) {tg['p_il1_driven_mean']:.2f}")
    for arm, s in res.summary["arms"].items():
        hr = s["hr_os_vs_control"]
        print(f"  {arm}: n={s['n']} ({s['n_failed']} failed) ORR {s['orr']:.2f} median PFS {s['median_pfs_months']:.2f} mo, median OS "
              f"{s['median_os_months']:.2f} mo, 12-mo OS {s['os_12m']:.2f}, G3+ neutropenia {s['neutropenia_g3plus']:.2f}, "
              f"HR {hr[0]:.2f}")
    for arm, pe in res.summary.get("paired", {}).items():
        if "hr" not in pe:
            continue
        r12, hr, ind = pe["rmst_diff_12"], pe["hr"], pe["individual"]
        print(f"  paired vs {res.summary['control']}: {arm}: RMST(12 mo) {r12['estimate']:+.2f} mo "
              f"(95% CI {r12['ci_low']:+.2f} to {r12['ci_high']:+.2f}), HR {hr['estimate']:.3f} "
              f"({hr['ci_low']:.3f}-{hr['ci_high']:.3f}), OS gain > 1 mo {100 * ind['frac_gain']:.1f}%, "
              f"loss > 1 mo {100 * ind['frac_loss']:.1f}% of {ind['n_pairs']} patients")
    for name, path in files.items():
        print(f"  wrote {path}")
    return _some_failed(sum(s["n_failed"] for s in res.summary["arms"].values()), len(res.patients))


def _some_failed(n_failed: int, total: int) -> int:
    if n_failed:
        print(f"chemohost: warning: {n_failed} of {total} patient simulations failed (rows with their status in "
              f"patients.parquet, left out of the statistics); exit code {EXIT_SOME_FAILED}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def _trial_posterior(args, trial) -> int:
    from .calibration.fit import load_posterior
    from .studies.posterior_trial import run_posterior_trial, write_posterior_trial

    if args.draws is None:
        raise ChemohostError("--posterior needs --draws K (posterior draws to run the trial over, e.g. 50)")
    from .outputs import open_output

    post = load_posterior(args.posterior)
    n = args.patients or trial.spec.patients
    from .outputs import PARTIAL
    from .studies.checkpoint import Checkpoint

    from .studies.cluster import executor

    with open_output(args.out, expected_bytes=args.draws * n * len(trial.arms) * 1500) as folder, \
            executor(args.workers, args.scheduler) as ex:
        partial = folder.path / PARTIAL
        res = run_posterior_trial(trial, post, args.draws, patients=args.patients, seed=args.seed, progress=True,
                                  checkpoint=lambda fp: Checkpoint(partial, fp, resume=args.resume, discard=args.force),
                                  executor=ex)
        files = write_posterior_trial(res, args.out)
        shutil.rmtree(partial, ignore_errors=True)
    s = res.summary
    print(f"trial '{trial.spec.name}' over {s['draws']} posterior draws of {', '.join(res.parameters)} "
          f"({s['patients_per_arm']} patients per arm per draw): {len(res.patients)} patient simulations in "
          f"{res.timings['simulate_and_endpoints']:.1f} s")
    for arm, e in s["effects"].items():
        r12, hr = e["rmst_diff_12"], e["hr"]
        att = e.get("attribution_rmst_diff_12") or {}
        top = att.get("ranked", [])[:2]
        drivers = ", ".join(f"{p} {_f(att['parameters'][p]['share'], '.2f')}" for p in top)
        if r12.get("median") is None:  # follow-up shorter than 12 months: the mean OS gain to the follow-up
            r12, what = e["mean_os_gain"], "mean OS gain to the follow-up"
        else:
            what = "RMST(12 mo) gain"
        print(f"  {arm} vs {s['control']}: {what} {_f(r12.get('median'), '+.2f')} mo (95% CrI "
              f"{_f(r12.get('q025'), '+.2f')} to {_f(r12.get('q975'), '+.2f')}), P(gain > 0) "
              f"{_f(r12.get('p_benefit'), '.2f')}; HR {_f(hr.get('median'), '.3f')} ({_f(hr.get('q025'), '.3f')}-"
              f"{_f(hr.get('q975'), '.3f')}); variance share: {drivers or 'n/a'}")
    for name, path in files.items():
        print(f"  wrote {path}")
    return _some_failed(res.summary.get("n_failed", 0), len(res.patients))


def _f(x, spec: str) -> str:
    """A number formatted, or 'n/a' when undefined (None/NaN)."""
    return "n/a" if x is None or x != x else format(x, spec)


def _export(args) -> int:
    from .api import load_scenario, parameter_vector
    from .engine.sbml import to_sbml
    from .model.registry import get_model
    from .protocol.dosing import dose_table
    from .protocol.event_table import PatientDoses

    doses = None
    if args.scenario:
        sc = load_scenario(args.scenario)
        if args.model and args.model != sc.model.name:
            raise ChemohostError(f"--model {args.model} differs from the scenario's model '{sc.model.name}'")
        model = sc.model
        values = dict(zip(sc.names, sc.typical))
        arm = args.arm or next(iter(sc.arms))
        if arm not in sc.arms:
            raise ChemohostError(f"--arm '{arm}' is not an arm of {args.scenario}; arms: {', '.join(sc.arms)}")
        doses = sc.arms[arm]
        if isinstance(doses, PatientDoses):
            if doses.n_patients != 1:
                raise ChemohostError(f"{args.scenario}: arm '{arm}' has per-patient doses for {doses.n_patients} "
                                     "patients (event_table); SBML export takes one dosing history: give a "
                                     "scenario whose event table has one patient")
            doses = dose_table(doses.single_dose_regimens(0))
        else:
            doses = dose_table(doses)
    else:
        if not args.model:
            raise ChemohostError("give --model NAME (or --scenario FILE)")
        model = get_model(args.model)
        names, typical, _ = parameter_vector(model, args.species)
        values = dict(zip(names, typical))
    from .outputs import check_out_path, write_file_atomically

    check_out_path(args.out, kind="file")  # before building the SBML
    out = write_file_atomically(args.out, to_sbml(model, values, doses))
    print(f"wrote {out} (SBML L3V2, model {model.name}, {len(model.species)} species, "
          f"{len(model.flows)} reactions{', doses as events' if doses else ''}); simulate it with an absolute "
          f"tolerance of 1e-30 (the file's notes say why)")
    return 0


def _export_petab(args) -> int:
    from .calibration import export_petab, load_problem

    if not str(args.problem).strip():
        raise ChemohostError("--problem: the input path is empty; give a calibration problem YAML file (see problems/)")

    prob = load_problem(args.problem)
    files = export_petab(prob, args.out, force=args.force)
    print(f"wrote PEtab v1 problem {Path(args.out) / 'problem.yaml'} ('{prob.spec.problem}', model {prob.model.name}, "
          f"{prob.spec.species}): {len(prob.rows)} measurement(s), {len(prob.conditions)} condition(s), "
          f"{len(prob.observables)} observable(s), {len(prob.estimates)} estimated parameter(s)")
    if prob.censored:
        print(f"  {len(prob.censored)} censored row(s) (not expressible in PEtab v1) kept in "
              f"{files['censored_measurements.tsv']}")
    if prob.skipped:
        print(f"  {prob.skipped} row(s) left out by the measurement sources' filters")
    for note in prob.notes:
        print(f"  note: {note}")
    return 0


def _fit(args) -> int:
    from .calibration.fit import FitOptions, run_fit, write_fit
    from .calibration.problem import load_problem

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise ChemohostError(f"--out {out} exists and is not an empty folder; choose a new folder or give --force")
    opts = FitOptions(starts=args.starts, seed=args.seed, max_iterations=args.max_iterations,
                      profile=not args.no_profile, sample=not args.no_sample, walkers=args.walkers, steps=args.steps)
    opts.check()
    from .outputs import open_output

    prob = load_problem(args.problem)
    with open_output(out):
        fit = run_fit(prob, opts, progress=True)
        files = write_fit(fit, out)
    d = fit.diagnostics
    print(f"fit '{prob.spec.problem}' ({prob.model.name}, {prob.spec.species}): {len(prob.rows)} measurement(s) + "
          f"{len(prob.censored)} censored, {len(fit.x_names)} parameter(s); best -log posterior {fit.f_best:.4g}, "
          f"{d['starts_reaching_best']}/{d['starts']} starts reached it; {fit.timings['total']:.1f} s")
    for r in fit.estimates.to_dict("records"):
        line = f"  {r['parameter']}: {r['estimate']:.4g} {r['unit']}"
        if r.get("profile_ci_low") is not None and r["profile_ci_low"] == r["profile_ci_low"]:
            line += f", 95% profile interval {r['profile_ci_low']:.4g}-{r['profile_ci_high']:.4g}"
        if "posterior_median" in r and r["posterior_median"] == r["posterior_median"]:
            line += (f", posterior median {r['posterior_median']:.4g} (95% CrI {r['posterior_q025']:.4g}-"
                     f"{r['posterior_q975']:.4g})")
        line += f"; identifiable: {r['identifiable']}"
        print(line)
    samp = d.get("sampling") or {}
    if samp.get("warning"):
        print(f"  warning: {samp['warning']}")
    for name, path in files.items():
        print(f"  wrote {path}")
    return 0


def _study(args) -> int:
    """Every study verb: load and check the file, run with checkpoints in OUT/.partial, publish."""
    import json

    from .outputs import PARTIAL, json_safe, open_output, write_atomically
    from .studies import optimize, phase1, sensitivity  # noqa: F401  (registers the study kinds)
    from .studies.checkpoint import Checkpoint
    from .studies.study import REGISTRY

    cls = REGISTRY[args.command]
    study = cls.load(args.study)
    _warn(study)
    post = None
    if getattr(args, "posterior", None):
        from .calibration.fit import load_posterior

        post = load_posterior(args.posterior)
    from .studies.cluster import executor

    cluster = args.workers is not None or args.scheduler is not None
    if cluster and getattr(study, "design_only", False):  # simulates nothing: no cluster to start or join
        print("note: a design-only study simulates no patients; --workers/--scheduler ignored", file=sys.stderr)
        cluster = False
    with open_output(args.out) as folder, executor(args.workers if cluster else None,
                                                   args.scheduler if cluster else None) as ex:
        partial = folder.path / PARTIAL
        kw = {"executor": ex} if cluster else {}
        res = study.run(progress=True, posterior=post,
                        checkpoint=lambda fp: Checkpoint(partial, fp, resume=args.resume, discard=args.force), **kw)

        def write(tmp: Path) -> None:
            study.write(res, tmp)
            from . import __version__

            man = {**study.fingerprint(), "file": study.source, "timings_s": res.timings, "notes": res.notes,
                   "posterior": str(post.folder) if post is not None else None, "chemohost_version": __version__}
            (tmp / "manifest.json").write_text(json.dumps(json_safe(man), indent=2, default=str))

        files = write_atomically(args.out, write)
        shutil.rmtree(partial, ignore_errors=True)
    print(f"{cls.kind} study '{study.spec.name}': " + ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items()))
    for line in study_lines(res):
        print(f"  {line}")
    for note in res.notes:
        print(f"  note: {note}")
    for name, path in files.items():
        print(f"  wrote {path}")
    return 0


def _biomarkers(args) -> int:
    import json

    from .outputs import json_safe, open_output, write_atomically
    from .studies.biomarkers import run_biomarkers, write_biomarkers
    from .units import to_internal

    if str(args.threshold).strip().startswith("q"):
        thr = str(args.threshold).strip()
    else:
        try:
            thr = to_internal(args.threshold, "day", "day") / 30.4375
        except ChemohostError as exc:
            raise ChemohostError(f"--threshold: {exc} (e.g. '1 month', or a percentile of the effects: 'q75')") \
                from None
    with open_output(args.out):
        res = run_biomarkers(args.trial_dir, args.benefit_arm, args.harm_arm, thr, seed=args.seed,
                             replicates=args.replicates, per_arm=args.per_arm, progress=True)

        def write(tmp: Path) -> None:
            write_biomarkers(res, tmp)
            from . import __version__

            (tmp / "manifest.json").write_text(json.dumps(json_safe({
                "trial_dir": str(args.trial_dir), "seed": args.seed, "threshold_months": thr,
                "replicates": args.replicates, "per_arm": args.per_arm, "chemohost_version": __version__,
                "timings_s": res.timings}), indent=2))

        files = write_atomically(args.out, write)
    s = res.summary
    for lab, e in s["labels"].items():
        line = f"{lab}: {e['positives']}/{e['n']} patients"
        if "models" in e:
            line += "; " + ", ".join(f"{m['model']} AUC {m['auc']:.3f} ({m['auc_ci'][0]:.3f}-{m['auc_ci'][1]:.3f})"
                                     for m in e["models"])
            t = e["top_markers"][0]
            line += f"; best single marker {t['marker']} AUC {t['auc']:.3f}"
        else:
            line += f"; {e.get('note', '')}"
        print(line)
    enr = s.get("enrichment") or {}
    if "all_comers" in enr:
        mp = enr.get("marker_positive") or {}
        print(f"enrichment by {enr['marker']}: N per arm for 80% power all comers "
              f"{_f(enr['all_comers'].get('n_interp_loglinear'), '.0f')}, marker-positive "
              f"{_f(mp.get('n_interp_loglinear'), '.0f')}")
    for n in res.notes:
        print(f"note: {n}")
    for name, path in files.items():
        print(f"  wrote {path}")
    return 0


def _twin(args) -> int:
    import json

    from .outputs import json_safe, open_output, write_atomically
    from .studies.patient_record import load_patient
    from .studies.twin import Twin, TwinOptions, write_twin

    rec = load_patient(args.patient)
    post = None
    if args.posterior:
        from .calibration.fit import load_posterior

        post = load_posterior(args.posterior)
    if args.particles < 50 or args.particles > 100_000:
        raise ChemohostError(f"--particles must be between 50 and 100,000, got {args.particles}")
    with open_output(args.out):
        tw = Twin(rec, TwinOptions(particles=args.particles, seed=args.seed, moves=args.moves,
                                   objective=args.objective, constraint_max=args.max_grade4), posterior=post)
        res = tw.run(progress=True)

        def write(tmp: Path) -> None:
            write_twin(res, tmp)
            from . import __version__

            (tmp / "manifest.json").write_text(json.dumps(json_safe({
                "patient_file": rec.source, "patient_sha256": rec.sha256, "particles": args.particles,
                "seed": args.seed, "moves": args.moves, "posterior": args.posterior,
                "chemohost_version": __version__, "timings_s": res.timings}), indent=2))

        files = write_atomically(args.out, write)
    r = res.recommendation
    print(f"twin '{rec.spec.patient}' at day {rec.now:g} ({len(rec.visit_days)} visits, {len(rec.observations)} "
          f"measurements): P(IL-1-driven host response) {res.history['p_il1_high'].iloc[-1]:.2f}")
    for a, v in r["by_action"].items():
        print(f"  {'*' if a == r['action'] else ' '} {a}: {r['objective']} {v['objective']:.3f} +/- {v['se']:.3f}, "
              f"{res.options.constraint} {v['constraint']:.3f}{'' if v['feasible'] else ' (violates)'}")
    print(f"  recommended: {r['action']}; most informative next measurement: {res.voi['measurement'].iloc[0]}")
    for name, path in files.items():
        print(f"  wrote {path}")
    return 0


def study_lines(res) -> list[str]:
    s = res.summary
    if res.study.kind == "sensitivity":
        key = s["index"]
        out = []
        for name, r in s["readouts"].items():
            top = r["ranking"][:3]
            out.append(f"{name}: " + ", ".join(f"{t['parameter']} {key} {_f(t[key], '.2f')}" for t in top)
                       + (f"; measure first: {', '.join(r['measure_first'])}" if r["measure_first"] else ""))
        return out
    if res.study.kind == "optimize":
        b, obj = s["best"], s["objective"]
        out = [f"best ({s['feasible_candidates']}/{s['trials']} feasible): blocker start {b['offset']:+g} d, every "
               f"{b['interval']:g} d for {b['duration']:g} d, dose {b['dose']}"
               + (f", chemotherapy '{b['schedule']}'" if "schedule" in b else "")
               + f"; {obj} {_f(b[obj], '.3f')}, grade-4 neutropenia {_f(b['grade4_neutropenia'], '.3f')}"]
        for r in s["best_vs_shipped"]:
            out.append(f"best minus '{r['regimen']}': {_f(r[f'best_minus_this_{obj}'], '+.3f')} "
                       f"(95% CI {_f(r['ci_low'], '+.3f')} to {_f(r['ci_high'], '+.3f')})")
        return out
    if res.study.kind == "phase1":
        out = ["true DLT rate per dose: " + ", ".join(f"{d} {p:.3f}" for d, p in zip(s["doses"], s["true_dlt"]))
               + f"; true MTD {s['true_mtd']}"]
        for r in s["operating_characteristics"]:
            sel = ", ".join(f"{d} {r[f'select_{i}']:.2f}" for i, d in enumerate(s["doses"]))
            out.append(f"{r['design']}: P(select) {sel}, none {r['select_none']:.2f}; P(correct) {r['p_correct']:.2f}; "
                       f"{r['patients_mean']:.1f} patients, {r['dlts_mean']:.1f} DLTs, "
                       f"{r['length_days_mean'] / 30.4375:.1f} months")
        return out
    return []


def _kind_of(path: Path) -> str:
    from .scenario import load_yaml_mapping

    data, _ = load_yaml_mapping(path, "input", "the fields of a scenario, trial, study, patient or problem file")
    if "study" in data:
        return "study"
    if "patient" in data and "visits" in data:
        return "patient"
    if "problem" in data and "measurements" in data:
        return "problem"
    if "control" in data or "follow_up" in data or ("arms" in data and "horizon" not in data):
        return "trial"
    return "scenario"


def _check(args) -> int:
    """Load and check a file completely (schema, model, units, physiology, sizes) without running it."""
    path = Path(args.file)
    kind = args.kind or _kind_of(path)
    if kind == "scenario":
        from .api import load_scenario

        sc = load_scenario(path)
        _warn(sc)
        print(f"ok: scenario '{sc.spec.name}' ({sc.model.name}, {sc.spec.species}): {len(sc.arms)} arm(s), "
              f"{sc.spec.patients.n} patient(s), {sc.times().size} output times x {len(sc.outputs)} outputs")
    elif kind == "trial":
        from .studies.trial import Trial

        t = Trial.load(path)
        _warn(t)
        print(f"ok: trial '{t.spec.name}' ({t.model.name}, {t.spec.species}): arms {', '.join(t.arms)}; control "
              f"{t.spec.control}; {t.spec.patients} patients per arm; follow-up {t.follow_up_days:g} days")
    elif kind == "study":
        from .studies import optimize, phase1, sensitivity  # noqa: F401  (registers the study kinds)
        from .studies.study import REGISTRY
        from .scenario import load_yaml_mapping

        data, _ = load_yaml_mapping(path, "study", "study, name, ...")
        cls = REGISTRY.get(str(data.get("study")))
        if cls is None:
            raise ChemohostError(f"{path}: field 'study': unknown study kind {data.get('study')!r}; allowed: "
                                 f"{', '.join(sorted(REGISTRY))}")
        st = cls.load(path)
        _warn(st)
        print(f"ok: {cls.kind} study '{st.spec.name}'")
    elif kind == "patient":
        from .studies.patient_record import load_patient

        rec = load_patient(path)
        print(f"ok: patient record '{rec.spec.patient}': {len(rec.observations)} measurement(s) on "
              f"{len(rec.visit_days)} visit day(s) up to day {rec.now:g}")
    else:
        from .calibration.problem import load_problem

        p = load_problem(path)
        print(f"ok: calibration problem '{p.spec.problem}' ({p.model.name}, {p.spec.species}): {len(p.rows)} "
              f"measurement(s) + {len(p.censored)} censored, {len(p.conditions)} condition(s), "
              f"{len(p.estimates)} estimated parameter(s)")
    return 0


def _schema(args) -> int:
    import json

    if args.kind == "scenario":
        from .scenario import ScenarioSpec as M
    elif args.kind == "trial":
        from .studies.trial_spec import TrialSpec as M
    else:
        from .calibration.problem import ProblemSpec as M
    schema = M.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"chemohost {args.kind} file"
    print(json.dumps(schema, indent=2))
    return 0


def _models(args) -> int:
    from .model.registry import MODELS, get_model

    for name in sorted(MODELS):
        print(get_model(name).describe())
    return 0


def _model_arg(name: str):
    """The model named by --model; an unknown name is an error naming the option."""
    from .model.registry import get_model

    try:
        return get_model(name)
    except ChemohostError as exc:
        raise ChemohostError(f"--model: {exc}") from None


def _params(args) -> int:
    from .model.params import parameter_table_markdown

    print(parameter_table_markdown(_model_arg(args.model), args.species))
    return 0


def _outputs(args) -> int:
    m = _model_arg(args.model)
    for s in m.species.values():
        print(f"{s.name:24s} species  [{s.unit}] {s.description}")
    for o in m.outputs.values():
        print(f"{o.name:24s} output   [{o.unit}] {o.description}")
    return 0


def _validate(args) -> int:
    from .evidence import framework

    results = framework.run_checks(args.only, args.out)
    print(framework.format_table(results))
    if not results:
        print(f"chemohost: note: no checks are registered (is {framework.CHECKS_MODULE} missing?)",
              file=sys.stderr)
    if args.out:
        out = Path(args.out)
        print(f"wrote {out / 'validation.json'} and {len(results)} figure(s) in {out / 'figures'}")
    return framework.exit_code(results)


def _diagram(args) -> int:
    from .report.diagram import diagram_stats, write_diagram

    model = _model_arg(args.model)
    path = write_diagram(model, args.out)
    st = diagram_stats(model)
    print(f"wrote {path} (model {model.name}: {st['modules']} modules, {st['species']} species, "
          f"{st['flows']} flows, {st['signals']} signals, {st['doses']} dosing routes)")
    return 0


def _trial_randomized(args, trial) -> int:
    from .studies.randomized import run_randomized, write_randomized

    if args.patients is not None:
        raise ChemohostError("--patients is the paired design's size; with --design randomized give --per-arm")
    if args.replicates is None or args.per_arm is None:
        raise ChemohostError("--design randomized needs --replicates R and --per-arm N (e.g. --replicates 200 "
                             "--per-arm 150)")
    ns = None
    if args.ns is not None:
        try:
            ns = [int(x) for x in args.ns.split(",") if x.strip()]
        except ValueError:
            raise ChemohostError(f"--ns must be comma-separated whole numbers (e.g. 50,100,150), got '{args.ns}'") from None
    from .outputs import open_output

    from .outputs import PARTIAL
    from .studies.checkpoint import Checkpoint

    from .studies.cluster import executor

    with open_output(args.out, expected_bytes=args.replicates * args.per_arm * len(trial.arms) * 1500) as folder, \
            executor(args.workers, args.scheduler) as ex:
        partial = folder.path / PARTIAL
        res = run_randomized(trial, args.replicates, args.per_arm, seed=args.seed, ns=ns, progress=True,
                             checkpoint=lambda fp: Checkpoint(partial, fp, resume=args.resume, discard=args.force),
                             executor=ex)
        dead = [a for a, s in res.summary["arms"].items() if s["n_analysed"] == 0]
        if dead:
            shutil.rmtree(partial, ignore_errors=True)
            raise ChemohostError(f"every patient of arm(s) {', '.join(dead)} failed in the solver; nothing written. "
                                 f"Check the arm's doses and parameters in {args.scenario}, or the solver settings")
        files = write_randomized(res, args.out)
        shutil.rmtree(partial, ignore_errors=True)
    rnd = res.summary["randomized"]
    print(f"trial '{trial.spec.name}' (randomized): {rnd['replicates']} replicates x {rnd['per_arm']} per arm, "
          f"{len(res.patients)} patient simulations in {res.timings['simulate_and_endpoints']:.1f} s")
    for arm, a in rnd["arms"].items():
        hq = a.get("hr_quantiles") or {}
        n80 = a.get("n_for_target")
        print(f"  {arm} vs {res.summary['control']} (OS): power {100 * a['power']:.1f}% "
              f"(95% CI {100 * a['power_ci'][0]:.1f}-{100 * a['power_ci'][1]:.1f}), two-sided rejection "
              f"{100 * a['rejection_rate_two_sided']:.1f}%, median HR {hq.get('p50', float('nan')):.3f} "
              f"(2.5-97.5%: {hq.get('p2.5', float('nan')):.3f}-{hq.get('p97.5', float('nan')):.3f}), N per arm for "
              f"{100 * rnd['target_power']:.0f}% power: {'not reached up to ' + str(rnd['ns'][-1]) if n80 is None else f'{n80:.0f}'}"
              f", Schoenfeld: {a['schoenfeld_n'] if a['schoenfeld_n'] is not None else 'n/a (pooled HR >= 1)'}")
    for name, path in files.items():
        print(f"  wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chemohost", description="Host response to chemotherapy: simulator")
    sub = p.add_subparsers(dest="command", required=True)
    for name, func, help_, file_help, n_help in (
            ("simulate", _simulate, "simulate a scenario YAML and write time courses",
             "scenario YAML file (see scenarios/)", "override the number of patients"),
            ("trial", _trial, "run an in-silico trial (arms x virtual patients)",
             "trial YAML file (see scenarios/trial_*.yaml)", "patients per arm (overrides the file)")):
        r = sub.add_parser(name, help=help_)
        r.add_argument("scenario", help=file_help)
        r.add_argument("--out", required=True, help="output folder")
        r.add_argument("--patients", type=int, help=n_help)
        r.add_argument("--seed", type=int, help="override the random seed")
        if name == "trial":
            r.add_argument("--design", choices=["paired", "randomized"], default="paired",
                           help="paired: every arm on the same patients (counterfactual effects, default); "
                                "randomized: replicate randomised trials with different patients per arm (power)")
            r.add_argument("--replicates", type=int, help="randomized design: number of replicate trials")
            r.add_argument("--per-arm", type=int, dest="per_arm", help="randomized design: patients per arm")
            r.add_argument("--resume", action="store_true",
                           help="continue an interrupted run in --out from its last finished chunk")
            r.add_argument("--force", action="store_true",
                           help="discard the checkpoints of an interrupted run in --out and start over")
            r.add_argument("--posterior", metavar="FIT_DIR",
                           help="run the paired trial over posterior draws of a `chemohost fit` output folder")
            r.add_argument("--draws", type=int, help="with --posterior: number of posterior draws (e.g. 50)")
            r.add_argument("--ns", help="randomized design: per-arm sizes of the power curve, e.g. 50,100,150 "
                                        "(nested subsets of the replicates; default: a grid up to --per-arm)")
            r.add_argument("--device", choices=["cpu", "gpu"],
                           help="gpu: run the patients on an NVIDIA GPU with the CUDA kernel generated from the same "
                                "model (one patient per thread); overrides the file's solver.device")
            r.add_argument("--workers", type=int, help="run the chunks on a Dask LocalCluster of N worker processes "
                                                       "on this machine (every trial design)")
            r.add_argument("--scheduler", metavar="ADDRESS",
                           help="run the chunks on a running Dask cluster, e.g. tcp://10.0.0.5:8786 (every trial "
                                "design; see README 'Running on a cluster')")
        r.set_defaults(func=func)
    e = sub.add_parser("export", help="export a model")
    esub = e.add_subparsers(dest="format", required=True)
    sb = esub.add_parser("sbml", help="SBML Level 3 Version 2")
    sb.add_argument("--model", help="model name (see `chemohost models`)")
    sb.add_argument("--species", default="human", choices=["human", "mouse"])
    sb.add_argument("--scenario", help="take parameters and doses (as SBML events) from this scenario")
    sb.add_argument("--arm", help="arm of the scenario whose doses to export (default: first)")
    sb.add_argument("--out", required=True, help="output .xml file")
    sb.set_defaults(func=_export)
    pt = esub.add_parser("petab", help="PEtab v1 calibration problem (SBML + tables) from a problem YAML")
    pt.add_argument("--problem", required=True, help="calibration problem YAML (see problems/)")
    pt.add_argument("--out", required=True, help="output folder (must be new or empty unless --force)")
    pt.add_argument("--force", action="store_true", help="replace an existing non-empty --out folder")
    pt.set_defaults(func=_export_petab)
    f = sub.add_parser("fit", help="fit a calibration problem (pyPESTO multi-start, profiles, emcee posterior)")
    f.add_argument("problem", help="calibration problem YAML (see problems/)")
    f.add_argument("--out", required=True, help="output folder (new or empty unless --force)")
    f.add_argument("--force", action="store_true", help="write into an existing non-empty --out folder")
    f.add_argument("--starts", type=int, default=20, help="multi-start local optimisations (default 20)")
    f.add_argument("--max-iterations", type=int, default=200, dest="max_iterations",
                   help="L-BFGS-B iterations per start (default 200)")
    f.add_argument("--steps", type=int, default=5000, help="MCMC steps per walker (default 5000)")
    f.add_argument("--walkers", type=int, help="MCMC walkers (default max(16, 4 x parameters))")
    f.add_argument("--seed", type=int, default=0, help="seed of start points and sampler (default 0)")
    f.add_argument("--no-profile", action="store_true", dest="no_profile", help="skip profile likelihoods")
    f.add_argument("--no-sample", action="store_true", dest="no_sample", help="skip posterior sampling")
    f.set_defaults(func=_fit)
    for verb, help_ in (("sensitivity", "global sensitivity analysis (SALib Sobol / Morris / FAST) of a study file"),
                        ("optimize", "optimise blocker timing/duration/dose and chemotherapy schedule (optuna)"),
                        ("phase1", "simulate dose escalation of the blocker (3+3, BOIN): operating characteristics")):
        st_ = sub.add_parser(verb, help=help_)
        st_.add_argument("study", help="study YAML file (see scenarios/study_*.yaml)")
        st_.add_argument("--out", required=True, help="output folder")
        st_.add_argument("--posterior", metavar="FIT_DIR", help="a `chemohost fit` output folder: sensitivity takes "
                                                                "ranges 'posterior' and the other estimated parameters "
                                                                "from it; optimize and phase1 give every virtual "
                                                                "patient its own posterior draw")
        st_.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
        st_.add_argument("--force", action="store_true", help="discard an interrupted run's checkpoints in --out")
        st_.add_argument("--workers", type=int, help="simulate on a Dask LocalCluster of N worker processes (sensitivity: "
                                                     "the chunks; optimize: each candidate's patients in blocks; "
                                                     "phase1: the dose pools)")
        st_.add_argument("--scheduler", metavar="ADDRESS", help="the same on a running Dask cluster, e.g. "
                                                                "tcp://10.0.0.5:8786")
        st_.set_defaults(func=_study)
    tw = sub.add_parser("twin", help="patient twin: posterior from the visits, forecasts under next actions, "
                                     "recommendation")
    tw.add_argument("patient", help="patient record YAML (see scenarios/patients/)")
    tw.add_argument("--out", required=True, help="output folder")
    tw.add_argument("--particles", type=int, default=1000, help="SMC particles (default 1000)")
    tw.add_argument("--moves", type=int, default=2, help="Metropolis moves per rejuvenation (default 2)")
    tw.add_argument("--seed", type=int, default=0)
    tw.add_argument("--objective", default="p_progression_free_next_scan",
                    choices=["p_progression_free_next_scan", "p_progression_free_6m"],
                    help="what the recommendation maximises")
    tw.add_argument("--max-grade4", type=float, default=0.10, dest="max_grade4",
                    help="constraint: P(grade 4 neutropenia in the next cycle) below this (default 0.10)")
    tw.add_argument("--posterior", metavar="FIT_DIR", help="couplings from a `chemohost fit` posterior instead of "
                                                           "their log-uniform priors")
    tw.set_defaults(func=_twin)
    bm = sub.add_parser("biomarkers", help="biomarkers of harm and benefit from a paired trial folder")
    bm.add_argument("trial_dir", help="--out folder of `chemohost trial` (paired design)")
    bm.add_argument("--out", required=True, help="output folder")
    bm.add_argument("--benefit-arm", dest="benefit_arm", help="arm whose paired effect defines benefit (default: the "
                                                             "first non-control arm)")
    bm.add_argument("--harm-arm", dest="harm_arm", help="counterfactual arm without the host response (default: the "
                                                       "benefit arm)")
    bm.add_argument("--threshold", default="1 month", help="individual OS effect that counts: a duration (default "
                                                           "'1 month') or a percentile of the effects, e.g. q75")
    bm.add_argument("--replicates", type=int, default=100, help="randomised replicate trials for the enrichment "
                                                                "design (default 100)")
    bm.add_argument("--per-arm", type=int, default=200, dest="per_arm", help="patients per arm simulated for it")
    bm.add_argument("--seed", type=int, default=0)
    bm.set_defaults(func=_biomarkers)
    c = sub.add_parser("check", help="check a scenario, trial or calibration problem file without running it")
    c.add_argument("file", help="YAML file")
    c.add_argument("--kind", choices=["scenario", "trial", "problem", "study", "patient"],
                   help="file kind (default: from its fields)")
    c.set_defaults(func=_check)
    sc_ = sub.add_parser("schema", help="print the JSON Schema of a file kind (for editors)")
    sc_.add_argument("kind", choices=["scenario", "trial", "problem"])
    sc_.set_defaults(func=_schema)
    m = sub.add_parser("models", help="list the named models")
    m.set_defaults(func=_models)
    pa = sub.add_parser("params", help="print a model's parameter table (markdown)")
    pa.add_argument("--model", required=True)
    pa.add_argument("--species", default="human", choices=["human", "mouse"])
    pa.set_defaults(func=_params)
    o = sub.add_parser("outputs", help="list a model's species and outputs")
    o.add_argument("--model", required=True)
    o.set_defaults(func=_outputs)
    v = sub.add_parser("validate", help="run the evidence checks (published facts); exit 1 if any fails")
    v.add_argument("--out", help="folder for validation.json and figures/<id>.png")
    v.add_argument("--only", nargs="+", action="extend", metavar="ID", help="run only these check ids")
    v.set_defaults(func=_validate)
    d = sub.add_parser("diagram", help="draw a model's structure as a self-contained SVG")
    d.add_argument("--model", required=True, help="model name (see `chemohost models`)")
    d.add_argument("--out", required=True, help="output .svg file")
    d.set_defaults(func=_diagram)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .report.parallel import requested_workers

        requested_workers()  # a bad CHEMOHOST_REPORT_WORKERS is refused before any work, not when the report is drawn
        return args.func(args)
    except ChemohostError as exc:
        lines = [ln if len(ln) <= 1000 else ln[:400] + f" ...<{len(ln) - 400:,} more characters>"
                 for ln in str(exc).splitlines()]  # a backstop: messages clip what they echo themselves
        print("chemohost: error: " + "\n".join(lines), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
