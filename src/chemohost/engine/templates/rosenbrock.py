# chemohost solver template -- NOT imported directly.
#
# chemohost.engine.codegen appends this text to the generated model module, after the
# model-specific functions rhs(), jac_sp(), jac_lin_sp(), lu_sp(), solve_sp(), outputs(),
# output_one(), init_state(), lin_matrix() and the constants N_ODE, N_LIN, N_OUT, JROW, JCOL, ...
# numba compiles the whole module and caches it on disk (cache=True), so a second run of the same
# model pays no compilation.
#
# Method: Rodas4 (Hairer & Wanner, Solving ODEs II, 1996; coefficients as in Hairer's RODAS code),
# a 4th-order L-stable Rosenbrock method with an embedded 3rd-order error estimate, using the
# model's analytic (sympy-derived) Jacobian.  The linear PK sub-system, when the model has one, is
# not integrated: it is evaluated in closed form (eigen-decomposition, sum of exponentials) inside
# each right-hand-side call, and advanced exactly across dose events.
#
# Linear algebra: W = I/(h gamma) - J is factorised by generated straight-line code on the
# Jacobian's known sparsity pattern (lu_sp/solve_sp: static Markowitz order, diagonal pivots,
# fill-in fixed at code generation).  Should an elimination term |l_ik| max|u_k.| exceed
# LU_GROWTH_MAX times the largest entry of row i of W (a row-wise bound on the backward error of
# the factorisation), or a pivot vanish, the step falls back to dense LU with partial pivoting.
# Outputs between steps come from Rodas4's continuous extension (Hairer's RODAS dense output, order
# 3), so the step size is set by the error control and dose events only, not by the output grid.
# Error weights: atol + rtol |y_i| for states that start at zero, rtol |y_i| (pure relative) for
# states with a positive baseline, which therefore also stay positive (a negative value is rejected).
# Step-size control: h <- h * clip(0.9 err^-1/4, 0.2, 6), no increase right after a rejection;
# after dose events, Hairer's starting heuristic, capped by the first step accepted after the
# previous event of the same kind (so repeated doses are not each rejected down to it).

_G = 0.25
_A21 = 1.544
_A31 = 0.9466785280815826
_A32 = 0.2557011698983284
_A41 = 3.314825187068521
_A42 = 2.896124015972201
_A43 = 0.9986419139977817
_A51 = 1.221224509226641
_A52 = 6.019134481288629
_A53 = 12.53708332932087
_A54 = -0.6878860361058950
_C21 = -5.6688
_C31 = -2.430093356833875
_C32 = -0.2063599157091915
_C41 = -0.1073529058151375
_C42 = -9.594562251023355
_C43 = -20.47028614809616
_C51 = 7.496443313967647
_C52 = -10.24680431464352
_C53 = -33.99990352819905
_C54 = 11.70890893206160
_C61 = 8.083246795921522
_C62 = -7.981132988064893
_C63 = -31.52159432874371
_C64 = 16.31930543123136
_C65 = -6.058818238834054
_CC2 = 0.386
_CC3 = 0.21
_CC4 = 0.63
_D1 = 0.25
_D2 = -0.1043
_D3 = 0.1035
_D4 = -0.03620000000000023
# dense output (Hairer's RODAS, METH=1): y(t + s h) = y0 + s (y1 - y0 + (1 - s) (H1 + s H2)),
# H1 = sum _H2i k_i, H2 = sum _H3i k_i
_H21 = 10.12623508344586
_H22 = -7.487995877610167
_H23 = -34.80091861555747
_H24 = -7.992771707568823
_H25 = 1.025137723295662
_H31 = -0.6762803392801253
_H32 = 6.087714651680015
_H33 = 16.43084320892478
_H34 = 24.76722511418386
_H35 = -6.594389125716872

LU_GROWTH_MAX = 100.0
REL_FLOOR = 1e-300  # error floor of states with a positive baseline: relative control down to underflow

ST_OK = 0
ST_MAXSTEPS = 1
ST_STEPSIZE = 2
ST_NONFINITE = 3


@nb.njit(cache=True, error_model="numpy")
def _exp(x):
    # exp without libm's underflow path (errno) for decayed modes: identical values
    if x < -746.0:
        return 0.0
    return math.exp(x)


@nb.njit(cache=True, error_model="numpy")
def _phi(lam, tau):
    x = lam * tau
    if abs(x) < 1e-8:
        return tau * (1.0 + 0.5 * x)
    return math.expm1(x) / lam


@nb.njit(cache=True, error_model="numpy")
def _phi_e(lam, tau, e):
    # (exp(lam tau) - 1) / lam from the already computed exponential; series where it cancels
    x = lam * tau
    if abs(x) < 1e-3:
        return tau * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0))))
    return (e - 1.0) / lam


@nb.njit(cache=True, error_model="numpy")
def _lin_eval(tau, c0, dd, lam, V, xl):
    # xl = V (exp(lam tau) c0 + phi(lam, tau) dd); non-negative by construction, clip round-off.
    # The modal values overwrite nothing: they are formed on the fly, one exp per mode.
    n = lam.shape[0]
    for i in range(n):
        xl[i] = 0.0
    for k in range(n):
        if c0[k] == 0.0 and dd[k] == 0.0:
            continue
        mk = _exp(lam[k] * tau) * c0[k] + _phi(lam[k], tau) * dd[k]
        if mk != 0.0:
            for i in range(n):
                xl[i] += V[i, k] * mk
    for i in range(n):
        if xl[i] < 0.0:
            xl[i] = 0.0


@nb.njit(cache=True, error_model="numpy")
def _modal(tau, c0, dd, lam, V, modes, n_modes, xl, dx, with_rate):
    # the linear states the integrated part reads (LIN_NEEDED) at tau from the active modes, and
    # (with_rate) their time derivatives -- one exp per mode for both
    for q in range(LIN_NEEDED.shape[0]):
        xl[LIN_NEEDED[q]] = 0.0
        if with_rate:
            dx[q] = 0.0
    for m in range(n_modes):
        k = modes[m]
        e = _exp(lam[k] * tau)
        mk = e * c0[k] + _phi_e(lam[k], tau, e) * dd[k]
        dk = e * (lam[k] * c0[k] + dd[k])
        for q in range(LIN_NEEDED.shape[0]):
            i = LIN_NEEDED[q]
            xl[i] += V[i, k] * mk
            if with_rate:
                dx[q] += V[i, k] * dk
    for q in range(LIN_NEEDED.shape[0]):
        i = LIN_NEEDED[q]
        if xl[i] < 0.0:
            xl[i] = 0.0


@nb.njit(cache=True, error_model="numpy")
def _lu(M, piv, n):
    for k in range(n):
        m = k
        big = abs(M[k, k])
        for i in range(k + 1, n):
            if abs(M[i, k]) > big:
                big = abs(M[i, k])
                m = i
        piv[k] = m
        if big == 0.0:
            return False
        if m != k:
            for j in range(n):
                tmp = M[k, j]
                M[k, j] = M[m, j]
                M[m, j] = tmp
        inv = 1.0 / M[k, k]
        for i in range(k + 1, n):
            M[i, k] *= inv
            f = M[i, k]
            if f != 0.0:
                for j in range(k + 1, n):
                    M[i, j] -= f * M[k, j]
    return True


@nb.njit(cache=True, error_model="numpy")
def _solve(M, piv, b, n):
    for k in range(n):
        m = piv[k]
        if m != k:
            tmp = b[k]
            b[k] = b[m]
            b[m] = tmp
    for i in range(n):
        acc = b[i]
        for j in range(i):
            acc -= M[i, j] * b[j]
        b[i] = acc
    for i in range(n - 1, -1, -1):
        acc = b[i]
        for j in range(i + 1, n):
            acc -= M[i, j] * b[j]
        b[i] = acc / M[i, i]


@nb.njit(cache=True, error_model="numpy")
def _record(t, y, t0, c0, dd, lam, V, p, xl, o, out_sel, res_row):
    _lin_eval(t - t0, c0, dd, lam, V, xl)
    for q in range(out_sel.shape[0]):
        res_row[q] = output_one(out_sel[q], t, y, xl, p)


@nb.njit(cache=True, error_model="numpy")
def _record_state(t, y, xl, p, o, out_sel, res_row):
    # outputs from the linear states themselves (not from modal coordinates)
    for q in range(out_sel.shape[0]):
        res_row[q] = output_one(out_sel[q], t, y, xl, p)


@nb.njit(cache=True, error_model="numpy")
def _unpack(v, rows, cols, M):
    M[:, :] = 0.0
    for m in range(rows.shape[0]):
        M[rows[m], cols[m]] = v[m]


@nb.njit(cache=True, error_model="numpy")
def jac(t, y, xl, u, p, qd, J):
    # dense Jacobian of the integrated states (the solver itself uses the packed jac_sp)
    Jv = np.zeros(N_JAC)
    jac_sp(t, y, xl, u, p, qd, Jv)
    _unpack(Jv, JROW, JCOL, J)


@nb.njit(cache=True, error_model="numpy")
def jac_lin(t, y, xl, u, p, qd, JL):
    # dense derivative of the right-hand side w.r.t. the linear states it reads (LIN_NEEDED)
    JLv = np.zeros(N_JLIN)
    jac_lin_sp(t, y, xl, u, p, qd, JLv)
    _unpack(JLv, JLROW, JLCOL, JL)


@nb.njit(cache=True, error_model="numpy")
def _dense_w(Jv, ig, M, n):
    for i in range(n):
        for q in range(n):
            M[i, q] = 0.0
    for m in range(JROW.shape[0]):
        M[JROW[m], JCOL[m]] = -Jv[m]
    for i in range(n):
        M[i, i] += ig


@nb.njit(cache=True, error_model="numpy")
def _sum(v):
    acc = 0.0
    for i in range(v.shape[0]):
        acc += v[i]
    return acc


@nb.njit(cache=True, error_model="numpy")
def _lsolve(dense, a, M, piv, b, n):
    if dense:
        _solve(M, piv, b, n)
    else:
        solve_sp(a, b)


@nb.njit(cache=True, error_model="numpy")
def _sort_events(k, n_ev, ev_time, ev_kind, ev_target, ev_amount, ev_dose, bio_index):
    # insertion sort of events k..n_ev-1 by (time, stop < bolus < start, dose): the order the
    # Python side builds, restored after a delay moved some of them
    for a_ in range(k + 1, n_ev):
        tq = ev_time[a_]
        kq = ev_kind[a_]
        oq = 0 if kq == 2 else (1 if kq == 0 else 2)
        dq = ev_dose[a_]
        gq = ev_target[a_]
        aq = ev_amount[a_]
        bq = bio_index[a_]
        c_ = a_ - 1
        while c_ >= k:
            kc = ev_kind[c_]
            oc = 0 if kc == 2 else (1 if kc == 0 else 2)
            if ev_time[c_] > tq or (ev_time[c_] == tq and (oc > oq or (oc == oq and ev_dose[c_] > dq))):
                ev_time[c_ + 1] = ev_time[c_]
                ev_kind[c_ + 1] = ev_kind[c_]
                ev_target[c_ + 1] = ev_target[c_]
                ev_amount[c_ + 1] = ev_amount[c_]
                ev_dose[c_ + 1] = ev_dose[c_]
                bio_index[c_ + 1] = bio_index[c_]
                c_ -= 1
            else:
                break
        ev_time[c_ + 1] = tq
        ev_kind[c_ + 1] = kq
        ev_target[c_ + 1] = gq
        ev_amount[c_ + 1] = aq
        ev_dose[c_ + 1] = dq
        bio_index[c_ + 1] = bq


@nb.njit(cache=True, error_model="numpy")
def simulate_one(p, V, Vinv, lam, mode_needed, ev_time, ev_kind, ev_target, ev_amount, ev_dose, n_ev,
                 dose_rule, rule_output, rule_thresholds, rule_factors, rule_n,
                 bio_index, t_out, out_sel, rtol, atol, max_steps, dense_output, sparse_lu, res, factors, stats,
                 dose_group, dose_cstart, rule_delay_th, rule_delay_days, rule_max_delays, stop_time,
                 dose_time, dose_status, rule_resume, snap_t, snap_f, snap_i, start_snap):
    # dense_output: outputs inside a step from the continuous extension (else every output time
    # ends a step); sparse_lu: W factorised on its sparsity pattern (else dense LU every step)
    # Dosing protocol: a dose whose rule has a cycle-start threshold (rule_delay_th) and that opens
    # a cycle (dose_cstart) is delayed, with every later dose of its regimen (dose_group), by
    # rule_delay_days while the rule's output is below that threshold, at most rule_max_delays
    # times; then the regimen is discontinued (unacceptable toxicity).  Doses due at or after
    # stop_time (e.g. progression) are not given.  dose_time: when each dose fell due (nan if
    # never); dose_status: 0 not reached, 1 given, 2 held by the rule, 3 stopped, 4 discontinued.
    # A rule with a finite rule_resume has hysteresis (adaptive therapy, Zhang 2017): once its output
    # falls below the lowest threshold the regimen pauses (doses held) until the output is back at or
    # above rule_resume.
    # Restartable snapshots: at each time of snap_t (ascending, inf = unused; every one ends a segment) the
    # whole solver state is saved, before that time's events, into snap_f[s] / snap_i[s] (layout below);
    # start_snap >= 0 restarts from snapshot start_snap instead of t = 0 (with this call's stop_time, rules
    # and outputs: rows of res before the snapshot must hold the earlier run's values).
    n = N_ODE
    nl = N_LIN
    y = np.zeros(n)
    xl = np.zeros(nl)
    init_state(p, y, xl)
    # absolute error floor per integrated state: pure relative control for states with a positive
    # baseline (cell populations, mediators), so a population that collapses by many orders of
    # magnitude, and what regrows from it, is tracked (with one atol for all, marrow progenitors below
    # atol were noise and a collapsed ANC came back ~1000x too high); for states that start at zero
    # (drug-driven: metabolites, occupancies, damage) atol (in the state's unit), raised to rtol x the
    # largest value the state has reached (each accepted step), so a drug-driven state is resolved to
    # rtol of its own peak -- not its rise from zero at every dose nor its decay tail down to atol
    # (absolute tolerances scaled by each state's largest value, as SimBiology does by default)
    aw = np.zeros(n)
    drug = np.zeros(n, dtype=np.int64)
    for i in range(n):
        drug[i] = 1 if y[i] <= 0.0 else 0
        aw[i] = atol if y[i] <= 0.0 else REL_FLOOR
    qd = np.zeros(N_DERIVED)   # parameter-only subexpressions, computed once per patient
    derived(p, qd)
    JLv = np.zeros(N_JLIN)
    # closed-form linear states read by the integrated part: at t (xt, rate dxt), at t + h (xe, dxe;
    # stages 5 and 6, and t of the next step) and at the other stage times (xs)
    xt = np.zeros(nl)
    xe = np.zeros(nl)
    xs = np.zeros(nl)
    dxt = np.zeros(LIN_NEEDED.shape[0])
    dxe = np.zeros(LIN_NEEDED.shape[0])
    xr = np.zeros(nl)        # all linear states at an output time
    u = np.zeros(n)          # zero-order input into ODE states (mg/day)
    b = np.zeros(nl)         # zero-order input into linear states
    c0 = np.zeros(nl)
    dd = np.zeros(nl)
    o = np.zeros(N_OUT)
    # Rosenbrock work arrays
    Jv = np.zeros(N_JAC)     # packed Jacobian (JROW, JCOL)
    a = np.zeros(N_LU)       # packed sparse LU factors of W
    M = np.zeros((n, n))     # dense W, only when the sparse elimination is unstable
    piv = np.zeros(n, dtype=np.int64)
    f0 = np.zeros(n)
    dT = np.zeros(n)
    k1 = np.zeros(n)
    k2 = np.zeros(n)
    k3 = np.zeros(n)
    k4 = np.zeros(n)
    k5 = np.zeros(n)
    k6 = np.zeros(n)
    yn = np.zeros(n)
    yi = np.zeros(n)         # dense-output state at an output time
    yj = np.zeros(n)
    h1 = np.zeros(n)         # dense-output coefficients of the last accepted step
    h2 = np.zeros(n)
    modes = np.zeros(nl, dtype=np.int64)
    # infusion rate started by each dose (to stop it exactly); indexed by dose, saved in snapshots per dose
    rate = np.zeros(max(ev_time.shape[0], factors.shape[0], 1))
    n_groups = 1
    for q in range(dose_group.shape[0]):
        if dose_group[q] + 1 > n_groups:
            n_groups = dose_group[q] + 1
    n_delays = np.zeros(n_groups, dtype=np.int64)
    discontinued = np.zeros(n_groups, dtype=np.bool_)
    paused = np.zeros(n_groups, dtype=np.bool_)
    n_t = t_out.shape[0]
    t_end = t_out[n_t - 1]
    t = 0.0
    k = 0
    j = 0
    h = 0.0
    steps = 0
    nrej = 0
    # first accepted step after each kind of event (target, kind), scaled by the controller's
    # proposal: the next event of the same kind starts from it instead of being rejected down to it
    h_event = np.zeros(3 * (n + nl))
    # snapshot layout. snap_f: t, h, y, xl, u, b, h_event, aw, rate (per dose), ev_time, ev_amount, factors,
    # dose_time; snap_i: k, j, steps, rejected, ev_kind, ev_target, ev_dose, bio_index, dose_status, then
    # n_delays, discontinued, paused (n_g entries each: the caller's count of dose groups)
    n_snap = snap_t.shape[0]
    n_e = ev_time.shape[0]
    n_d = factors.shape[0]
    n_g = (snap_i.shape[1] - 4 - 4 * n_e - n_d) // 3
    # snapshot arrays too short for the layout: the snapshot days are step boundaries only, nothing is saved
    keep = snap_f.shape[1] >= 2 + 5 * (n + nl) + n + 3 * n_d + 2 * n_e and n_g >= n_groups
    sn = 0
    if start_snap >= 0:
        sf = snap_f[start_snap]
        si = snap_i[start_snap]
        t = sf[0]
        h = sf[1]
        o_ = 2
        for i in range(n):
            y[i] = sf[o_ + i]
            u[i] = sf[o_ + n + nl + i]
        for i in range(nl):
            xl[i] = sf[o_ + n + i]
            b[i] = sf[o_ + 2 * n + nl + i]
        o_ += 2 * (n + nl)
        for i in range(3 * (n + nl)):
            h_event[i] = sf[o_ + i]
        o_ += 3 * (n + nl)
        for i in range(n):
            aw[i] = sf[o_ + i]
        o_ += n
        for q in range(n_d):
            rate[q] = sf[o_ + q]
            factors[q] = sf[o_ + n_d + 2 * n_e + q]
            dose_time[q] = sf[o_ + 2 * n_d + 2 * n_e + q]
            dose_status[q] = si[4 + 4 * n_e + q]
        for q in range(n_e):
            ev_time[q] = sf[o_ + n_d + q]
            ev_amount[q] = sf[o_ + n_d + n_e + q]
            ev_kind[q] = si[4 + q]
            ev_target[q] = si[4 + n_e + q]
            ev_dose[q] = si[4 + 2 * n_e + q]
            bio_index[q] = si[4 + 3 * n_e + q]
        for g in range(n_groups):
            n_delays[g] = si[4 + 4 * n_e + n_d + g]
            discontinued[g] = si[4 + 4 * n_e + n_d + n_g + g] != 0
            paused[g] = si[4 + 4 * n_e + n_d + 2 * n_g + g] != 0
        k = si[0]
        j = si[1]
        steps = si[2]
        nrej = si[3]
        sn = start_snap + 1
    while True:
        while sn < n_snap and snap_t[sn] <= t + 1e-12 * max(1.0, abs(t)):
            if not keep:
                sn += 1
                continue
            sf = snap_f[sn]
            si = snap_i[sn]
            sf[0] = t
            sf[1] = h
            o_ = 2
            for i in range(n):
                sf[o_ + i] = y[i]
                sf[o_ + n + nl + i] = u[i]
            for i in range(nl):
                sf[o_ + n + i] = xl[i]
                sf[o_ + 2 * n + nl + i] = b[i]
            o_ += 2 * (n + nl)
            for i in range(3 * (n + nl)):
                sf[o_ + i] = h_event[i]
            o_ += 3 * (n + nl)
            for i in range(n):
                sf[o_ + i] = aw[i]
            o_ += n
            for q in range(n_d):
                sf[o_ + q] = rate[q]
                sf[o_ + n_d + 2 * n_e + q] = factors[q]
                sf[o_ + 2 * n_d + 2 * n_e + q] = dose_time[q]
                si[4 + 4 * n_e + q] = dose_status[q]
            for q in range(n_e):
                sf[o_ + n_d + q] = ev_time[q]
                sf[o_ + n_d + n_e + q] = ev_amount[q]
                si[4 + q] = ev_kind[q]
                si[4 + n_e + q] = ev_target[q]
                si[4 + 2 * n_e + q] = ev_dose[q]
                si[4 + 3 * n_e + q] = bio_index[q]
            for g in range(n_groups):
                si[4 + 4 * n_e + n_d + g] = n_delays[g]
                si[4 + 4 * n_e + n_d + n_g + g] = 1 if discontinued[g] else 0
                si[4 + 4 * n_e + n_d + 2 * n_g + g] = 1 if paused[g] else 0
            si[0] = k
            si[1] = j
            si[2] = steps
            si[3] = nrej
            sn += 1
        # 1. events at the current time (stops sorted before starts/boluses at equal times)
        k_seg = k
        while k < n_ev and ev_time[k] <= t + 1e-12 * max(1.0, abs(t)):
            kind = ev_kind[k]
            dose = ev_dose[k]
            tgt = ev_target[k]
            if kind == 2:
                amt = -rate[dose]
                rate[dose] = 0.0
            else:
                g = dose_group[dose]
                if discontinued[g] or ev_time[k] >= stop_time:
                    # not given: the regimen was discontinued, or treatment stopped (progression)
                    factors[dose] = 0.0
                    dose_status[dose] = 4 if discontinued[g] else 3
                    if dose_status[dose] == 3:
                        dose_time[dose] = ev_time[k]
                    k += 1
                    continue
                r = dose_rule[dose]
                if r >= 0:
                    val = output_one(rule_output[r], t, y, xl, p)
                    if dose_cstart[dose] and val < rule_delay_th[r]:
                        if n_delays[g] < rule_max_delays[r]:
                            # delay this cycle and the rest of the regimen; re-check then
                            n_delays[g] += 1
                            for q in range(k, n_ev):
                                dq = ev_dose[q]
                                if dose_group[dq] == g and (ev_kind[q] != 2 or dose_status[dq] == 0):
                                    ev_time[q] += rule_delay_days[r]
                            _sort_events(k, n_ev, ev_time, ev_kind, ev_target, ev_amount, ev_dose, bio_index)
                            continue
                        discontinued[g] = True
                        for q in range(dose_group.shape[0]):
                            if dose_group[q] == g and dose_status[q] == 0:
                                factors[q] = 0.0
                                dose_status[q] = 4
                        k += 1
                        continue
                    n_delays[g] = 0
                    fac = rule_factors[r, rule_n[r]]
                    for q in range(rule_n[r]):
                        if val >= rule_thresholds[r, q]:
                            fac = rule_factors[r, q]
                            break
                    if math.isfinite(rule_resume[r]):
                        if paused[g]:
                            if val >= rule_resume[r]:
                                paused[g] = False
                            else:
                                fac = rule_factors[r, rule_n[r]]
                        elif val < rule_thresholds[r, rule_n[r] - 1]:
                            paused[g] = True
                    factors[dose] = fac
                fa = factors[dose]
                dose_time[dose] = ev_time[k]
                dose_status[dose] = 1 if fa > 0.0 else 2
                bi = bio_index[k]
                if bi >= 0:
                    fa *= p[bi]
                if kind == 0:
                    if tgt < n:
                        y[tgt] += ev_amount[k] * fa
                    else:
                        xl[tgt - n] += ev_amount[k] * fa
                    amt = 0.0
                else:
                    amt = ev_amount[k] * fa
                    rate[dose] = amt
            if kind != 0:
                if tgt < n:
                    u[tgt] += amt
                    if abs(u[tgt]) < 1e-12 * (abs(amt) + 1e-300):
                        u[tgt] = 0.0
                else:
                    b[tgt - n] += amt
                    if abs(b[tgt - n]) < 1e-12 * (abs(amt) + 1e-300):
                        b[tgt - n] = 0.0
            k += 1
        t_next = ev_time[k] if k < n_ev else t_end
        if t_next > t_end:
            t_next = t_end
        if sn < n_snap and snap_t[sn] < t_next:
            t_next = snap_t[sn]
        # 2. modal coordinates of the linear sub-system for this segment
        for i in range(nl):
            acc0 = 0.0
            accb = 0.0
            for q in range(nl):
                acc0 += Vinv[i, q] * xl[q]
                accb += Vinv[i, q] * b[q]
            c0[i] = acc0
            dd[i] = accb
        # modes that are non-zero in this segment and feed a linear state the ODE part reads
        n_modes = 0
        for q in range(nl):
            if mode_needed[q] and (c0[q] != 0.0 or dd[q] != 0.0):
                modes[n_modes] = q
                n_modes += 1
        t0 = t
        # 3. integrate the ODE states over [t, t_next]; outputs inside a step come from the
        #    continuous extension, outputs at a step's end (or at t_next) from the state itself
        if h <= 0.0 or h > t_next - t:
            h = t_next - t
        first = True
        have_xt = False
        while True:
            while j < n_t and t_out[j] <= t + 1e-12 * max(1.0, abs(t)):
                _record(t, y, t0, c0, dd, lam, V, p, xr, o, out_sel, res[j])
                j += 1
            if t >= t_next:
                break
            target = t_next
            if (n == 0 or not dense_output) and j < n_t and t_out[j] < target:
                target = t_out[j]
            if n == 0 or target - t <= 1e-12 * max(1.0, abs(t)):
                # nothing to integrate (closed-form states only: visit the output times), or an
                # output or event time within round-off
                t = target
                have_xt = False
                continue
            if not have_xt:
                _modal(t - t0, c0, dd, lam, V, modes, n_modes, xt, dxt, True)
                have_xt = True
            rhs(t, y, xt, u, p, qd, f0)
            if first:
                # Hairer's starting-step heuristic, once per segment (dynamics jump at events)
                d0 = 0.0
                d1 = 0.0
                for i in range(n):
                    sc = aw[i] + rtol * abs(y[i])
                    d0 += (y[i] / sc) ** 2
                    d1 += (f0[i] / sc) ** 2
                d0 = math.sqrt(d0 / n)
                d1 = math.sqrt(d1 / n)
                h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
                if h0 < h:
                    h = h0
                for q in range(k_seg, k):
                    he = h_event[3 * ev_target[q] + ev_kind[q]]
                    if he > 0.0 and he < h:
                        h = he
                first = False
            jac_sp(t, y, xt, u, p, qd, Jv)
            if n_modes > 0:
                jac_lin_sp(t, y, xt, u, p, qd, JLv)
            if not (math.isfinite(_sum(Jv)) and (n_modes == 0 or math.isfinite(_sum(JLv)))):
                # a state clipped to exactly 0 can make an analytic derivative 0/0 (d(x**a)/dx is
                # printed as a*x**a/x): evaluate the Jacobians a hair off zero instead
                for i in range(n):
                    yj[i] = y[i] if y[i] > 1e-200 else 1e-200
                jac_sp(t, yj, xt, u, p, qd, Jv)
                if n_modes > 0:
                    jac_lin_sp(t, yj, xt, u, p, qd, JLv)
            # df/dt: time enters only through the closed-form linear states (chain rule)
            for i in range(n):
                dT[i] = 0.0
            if n_modes > 0:
                for m in range(JLROW.shape[0]):
                    dT[JLROW[m]] += JLv[m] * dxt[JLCOL[m]]
            rejected = False
            while True:
                steps += 1
                if steps > max_steps:
                    stats[0] = steps
                    stats[1] = nrej
                    return ST_MAXSTEPS
                last = False
                if t + h >= target - 1e-12 * max(1.0, abs(target)):
                    h = target - t
                    last = True
                if h < 1e-14 * max(1.0, abs(t)):
                    stats[0] = steps
                    stats[1] = nrej
                    return ST_STEPSIZE
                ig = 1.0 / (h * _G)
                dense = not (sparse_lu and lu_sp(Jv, ig, a))
                if dense:
                    _dense_w(Jv, ig, M, n)
                    if not _lu(M, piv, n):
                        h *= 0.25
                        nrej += 1
                        continue
                ih = 1.0 / h
                for i in range(n):
                    k1[i] = f0[i] + h * _D1 * dT[i]
                _lsolve(dense, a, M, piv, k1, n)
                for i in range(n):
                    yn[i] = y[i] + _A21 * k1[i]
                _modal(t + _CC2 * h - t0, c0, dd, lam, V, modes, n_modes, xs, dxe, False)
                rhs(t + _CC2 * h, yn, xs, u, p, qd, k2)
                for i in range(n):
                    k2[i] += h * _D2 * dT[i] + ih * _C21 * k1[i]
                _lsolve(dense, a, M, piv, k2, n)
                for i in range(n):
                    yn[i] = y[i] + _A31 * k1[i] + _A32 * k2[i]
                _modal(t + _CC3 * h - t0, c0, dd, lam, V, modes, n_modes, xs, dxe, False)
                rhs(t + _CC3 * h, yn, xs, u, p, qd, k3)
                for i in range(n):
                    k3[i] += h * _D3 * dT[i] + ih * (_C31 * k1[i] + _C32 * k2[i])
                _lsolve(dense, a, M, piv, k3, n)
                for i in range(n):
                    yn[i] = y[i] + _A41 * k1[i] + _A42 * k2[i] + _A43 * k3[i]
                _modal(t + _CC4 * h - t0, c0, dd, lam, V, modes, n_modes, xs, dxe, False)
                rhs(t + _CC4 * h, yn, xs, u, p, qd, k4)
                for i in range(n):
                    k4[i] += h * _D4 * dT[i] + ih * (_C41 * k1[i] + _C42 * k2[i] + _C43 * k3[i])
                _lsolve(dense, a, M, piv, k4, n)
                for i in range(n):
                    yn[i] = y[i] + _A51 * k1[i] + _A52 * k2[i] + _A53 * k3[i] + _A54 * k4[i]
                _modal(t + h - t0, c0, dd, lam, V, modes, n_modes, xe, dxe, True)
                rhs(t + h, yn, xe, u, p, qd, k5)
                for i in range(n):
                    k5[i] += ih * (_C51 * k1[i] + _C52 * k2[i] + _C53 * k3[i] + _C54 * k4[i])
                _lsolve(dense, a, M, piv, k5, n)
                for i in range(n):
                    yn[i] += k5[i]
                rhs(t + h, yn, xe, u, p, qd, k6)
                for i in range(n):
                    k6[i] += ih * (_C61 * k1[i] + _C62 * k2[i] + _C63 * k3[i] + _C64 * k4[i] + _C65 * k5[i])
                _lsolve(dense, a, M, piv, k6, n)
                err = 0.0
                neg = False
                finite = True
                for i in range(n):
                    yn[i] += k6[i]
                    sc = aw[i] + rtol * max(abs(y[i]), abs(yn[i]))
                    err += (k6[i] / sc) ** 2
                    if yn[i] < -sc:
                        neg = True
                    if not math.isfinite(yn[i]):
                        finite = False
                err = math.sqrt(err / n)
                if not finite or not math.isfinite(err):
                    h *= 0.25
                    nrej += 1
                    continue
                if err <= 1.0 and not neg:
                    t_new = target if last else t + h
                    for i in range(n):
                        if yn[i] < 0.0:
                            yn[i] = 0.0
                    # output times inside the step: continuous extension (order 3)
                    if j < n_t and t_out[j] < t_new - 1e-12 * max(1.0, abs(t_new)):
                        for i in range(n):
                            h1[i] = _H21 * k1[i] + _H22 * k2[i] + _H23 * k3[i] + _H24 * k4[i] + _H25 * k5[i]
                            h2[i] = _H31 * k1[i] + _H32 * k2[i] + _H33 * k3[i] + _H34 * k4[i] + _H35 * k5[i]
                        while j < n_t and t_out[j] < t_new - 1e-12 * max(1.0, abs(t_new)):
                            s_ = (t_out[j] - t) / h
                            s1 = 1.0 - s_
                            for i in range(n):
                                v = y[i] + s_ * (yn[i] - y[i] + s1 * (h1[i] + s_ * h2[i]))
                                yi[i] = v if v > 0.0 else 0.0
                            _record(t_out[j], yi, t0, c0, dd, lam, V, p, xr, o, out_sel, res[j])
                            j += 1
                    t = t_new
                    for i in range(n):
                        y[i] = yn[i]
                        if drug[i] != 0 and rtol * y[i] > aw[i]:
                            aw[i] = rtol * y[i]  # a drug-driven state's floor follows its peak
                    # the linear states at the step's end are those at the next step's start
                    xt, xe = xe, xt
                    dxt, dxe = dxe, dxt
                    fac = 0.9 * err ** -0.25 if err > 1e-10 else 6.0
                    if fac > 6.0:
                        fac = 6.0
                    if fac < 0.2:
                        fac = 0.2
                    if k > k_seg:
                        # first step after this segment's events: remember it for the next ones
                        fe = fac if fac < 2.0 else 2.0
                        for q in range(k_seg, k):
                            h_event[3 * ev_target[q] + ev_kind[q]] = h * fe
                        k_seg = k
                    h_next = h * fac
                    if rejected and h_next > h:
                        h_next = h  # no increase right after a rejection (Hairer's RODAS)
                    if last:
                        # keep the controller's proposal for the next interval
                        h = max(h_next, h)
                    else:
                        h = h_next
                    break
                nrej += 1
                rejected = True
                if neg:
                    h *= 0.5
                else:
                    fac = 0.9 * err ** -0.25
                    if fac < 0.2:
                        fac = 0.2
                    h *= fac
        # 4. advance the linear sub-system exactly to the end of the segment
        _lin_eval(t_next - t0, c0, dd, lam, V, xl)
        t = t_next
        if t >= t_end:
            # events after the horizon are ignored
            while j < n_t:
                _record_state(t, y, xl, p, o, out_sel, res[j])
                j += 1
            break
    stats[0] = steps
    stats[1] = nrej
    return ST_OK


@nb.njit(cache=True, parallel=True, error_model="numpy")
def simulate_batch(P, V, Vinv, lam, mode_needed, ev_time, ev_kind, ev_target, ev_amount, ev_dose, n_ev,
                   dose_rule, rule_output, rule_thresholds, rule_factors, rule_n,
                   bio_index, t_out, out_sel, rtol, atol, max_steps, dense_output, sparse_lu, res, factors, status,
                   stats, dose_group, dose_cstart, rule_delay_th, rule_delay_days, rule_max_delays, stop_time,
                   dose_time, dose_status, rule_resume, snap_t, snap_f, snap_i, start_snap):
    for i in nb.prange(P.shape[0]):
        status[i] = simulate_one(P[i], V[i], Vinv[i], lam[i], mode_needed[i], ev_time[i], ev_kind[i], ev_target[i],
                                 ev_amount[i], ev_dose[i], n_ev[i], dose_rule[i], rule_output,
                                 rule_thresholds, rule_factors, rule_n, bio_index[i], t_out, out_sel,
                                 rtol, atol, max_steps, dense_output, sparse_lu, res[i], factors[i], stats[i],
                                 dose_group[i], dose_cstart[i], rule_delay_th, rule_delay_days, rule_max_delays,
                                 stop_time[i], dose_time[i], dose_status[i], rule_resume, snap_t[i], snap_f[i],
                                 snap_i[i], start_snap[i])


@nb.njit(cache=True, parallel=True, error_model="numpy")
def lin_matrices(P, A):
    for i in nb.prange(P.shape[0]):
        lin_matrix(P[i], A[i])
