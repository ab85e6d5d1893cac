/* chemohost solver template, C -- NOT compiled on its own.
 *
 * chemohost.engine.cbackend prepends the model's constants and kernels (rhs, jac_sp, jac_lin_sp, lu_sp,
 * solve_sp, output_one, init_state, derived, lin_matrix), translated from the generated numba module, and
 * compiles the whole text with the system C compiler into a shared library (cached on disk).
 *
 * This is a line-by-line translation of templates/rosenbrock.py (Rodas4 with closed-form linear PK, sparse
 * LU with dense fallback, dense output, dose events, dose-modification rules, restartable snapshots): see
 * that file for the method and its references.  Same operations in the same order, compiled without
 * floating-point contraction, so results agree with the numba engine to round-off (tested).  Patients run
 * in an OpenMP loop (dynamic schedule: their costs differ).
 */

static const double _G = 0.25;
static const double _A21 = 1.544;
static const double _A31 = 0.9466785280815826;
static const double _A32 = 0.2557011698983284;
static const double _A41 = 3.314825187068521;
static const double _A42 = 2.896124015972201;
static const double _A43 = 0.9986419139977817;
static const double _A51 = 1.221224509226641;
static const double _A52 = 6.019134481288629;
static const double _A53 = 12.53708332932087;
static const double _A54 = -0.6878860361058950;
static const double _C21 = -5.6688;
static const double _C31 = -2.430093356833875;
static const double _C32 = -0.2063599157091915;
static const double _C41 = -0.1073529058151375;
static const double _C42 = -9.594562251023355;
static const double _C43 = -20.47028614809616;
static const double _C51 = 7.496443313967647;
static const double _C52 = -10.24680431464352;
static const double _C53 = -33.99990352819905;
static const double _C54 = 11.70890893206160;
static const double _C61 = 8.083246795921522;
static const double _C62 = -7.981132988064893;
static const double _C63 = -31.52159432874371;
static const double _C64 = 16.31930543123136;
static const double _C65 = -6.058818238834054;
static const double _CC2 = 0.386;
static const double _CC3 = 0.21;
static const double _CC4 = 0.63;
static const double _D1 = 0.25;
static const double _D2 = -0.1043;
static const double _D3 = 0.1035;
static const double _D4 = -0.03620000000000023;
static const double _H21 = 10.12623508344586;
static const double _H22 = -7.487995877610167;
static const double _H23 = -34.80091861555747;
static const double _H24 = -7.992771707568823;
static const double _H25 = 1.025137723295662;
static const double _H31 = -0.6762803392801253;
static const double _H32 = 6.087714651680015;
static const double _H33 = 16.43084320892478;
static const double _H34 = 24.76722511418386;
static const double _H35 = -6.594389125716872;

enum { ST_OK = 0, ST_MAXSTEPS = 1, ST_STEPSIZE = 2, ST_NONFINITE = 3 };

static double _exp(double x) {
    if (x < -746.0) return 0.0;
    return exp(x);
}

static double _phi(double lam, double tau) {
    double x = lam * tau;
    if (fabs(x) < 1e-8) return tau * (1.0 + 0.5 * x);
    return expm1(x) / lam;
}

static double _phi_e(double lam, double tau, double e) {
    double x = lam * tau;
    if (fabs(x) < 1e-3) return tau * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0))));
    return (e - 1.0) / lam;
}

/* V, Vinv: (nl, nl) row-major */
static void _lin_eval(double tau, const double *c0, const double *dd, const double *lam, const double *V,
                      double *xl, int64_t nl) {
    for (int64_t i = 0; i < nl; i++) xl[i] = 0.0;
    for (int64_t k = 0; k < nl; k++) {
        if (c0[k] == 0.0 && dd[k] == 0.0) continue;
        double mk = _exp(lam[k] * tau) * c0[k] + _phi(lam[k], tau) * dd[k];
        if (mk != 0.0)
            for (int64_t i = 0; i < nl; i++) xl[i] += V[i * nl + k] * mk;
    }
    for (int64_t i = 0; i < nl; i++)
        if (xl[i] < 0.0) xl[i] = 0.0;
}

static void _modal(double tau, const double *c0, const double *dd, const double *lam, const double *V,
                   const int64_t *modes, int64_t n_modes, double *xl, double *dx, int with_rate, int64_t nl) {
    for (int64_t q = 0; q < N_NEEDED; q++) {
        xl[LIN_NEEDED[q]] = 0.0;
        if (with_rate) dx[q] = 0.0;
    }
    for (int64_t m = 0; m < n_modes; m++) {
        int64_t k = modes[m];
        double e = _exp(lam[k] * tau);
        double mk = e * c0[k] + _phi_e(lam[k], tau, e) * dd[k];
        double dk = e * (lam[k] * c0[k] + dd[k]);
        for (int64_t q = 0; q < N_NEEDED; q++) {
            int64_t i = LIN_NEEDED[q];
            xl[i] += V[i * nl + k] * mk;
            if (with_rate) dx[q] += V[i * nl + k] * dk;
        }
    }
    for (int64_t q = 0; q < N_NEEDED; q++) {
        int64_t i = LIN_NEEDED[q];
        if (xl[i] < 0.0) xl[i] = 0.0;
    }
}

static int _lu(double *M, int64_t *piv, int64_t n) {
    for (int64_t k = 0; k < n; k++) {
        int64_t m = k;
        double big = fabs(M[k * n + k]);
        for (int64_t i = k + 1; i < n; i++)
            if (fabs(M[i * n + k]) > big) {
                big = fabs(M[i * n + k]);
                m = i;
            }
        piv[k] = m;
        if (big == 0.0) return 0;
        if (m != k)
            for (int64_t j = 0; j < n; j++) {
                double tmp = M[k * n + j];
                M[k * n + j] = M[m * n + j];
                M[m * n + j] = tmp;
            }
        double inv = 1.0 / M[k * n + k];
        for (int64_t i = k + 1; i < n; i++) {
            M[i * n + k] *= inv;
            double f = M[i * n + k];
            if (f != 0.0)
                for (int64_t j = k + 1; j < n; j++) M[i * n + j] -= f * M[k * n + j];
        }
    }
    return 1;
}

static void _solve(const double *M, const int64_t *piv, double *b, int64_t n) {
    for (int64_t k = 0; k < n; k++) {
        int64_t m = piv[k];
        if (m != k) {
            double tmp = b[k];
            b[k] = b[m];
            b[m] = tmp;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        double acc = b[i];
        for (int64_t j = 0; j < i; j++) acc -= M[i * n + j] * b[j];
        b[i] = acc;
    }
    for (int64_t i = n - 1; i >= 0; i--) {
        double acc = b[i];
        for (int64_t j = i + 1; j < n; j++) acc -= M[i * n + j] * b[j];
        b[i] = acc / M[i * n + i];
    }
}

static void _record(double t, double *y, double t0, const double *c0, const double *dd, const double *lam,
                    const double *V, double *p, double *xl, const int64_t *out_sel, int64_t K, double *res_row,
                    int64_t nl) {
    _lin_eval(t - t0, c0, dd, lam, V, xl, nl);
    for (int64_t q = 0; q < K; q++) res_row[q] = output_one(out_sel[q], t, y, xl, p);
}

static void _record_state(double t, double *y, double *xl, double *p, const int64_t *out_sel, int64_t K,
                          double *res_row) {
    for (int64_t q = 0; q < K; q++) res_row[q] = output_one(out_sel[q], t, y, xl, p);
}

static void _dense_w(const double *Jv, double ig, double *M, int64_t n) {
    for (int64_t i = 0; i < n * n; i++) M[i] = 0.0;
    for (int64_t m = 0; m < N_JAC; m++) M[JROW[m] * n + JCOL[m]] = -Jv[m];
    for (int64_t i = 0; i < n; i++) M[i * n + i] += ig;
}

static double _sum(const double *v, int64_t n) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) acc += v[i];
    return acc;
}

static void _lsolve(int dense, double *a, double *M, int64_t *piv, double *b, int64_t n) {
    if (dense) _solve(M, piv, b, n);
    else solve_sp(a, b);
}

static void _sort_events(int64_t k, int64_t n_ev, double *ev_time, int64_t *ev_kind, int64_t *ev_target,
                         double *ev_amount, int64_t *ev_dose, int64_t *bio_index) {
    for (int64_t a_ = k + 1; a_ < n_ev; a_++) {
        double tq = ev_time[a_];
        int64_t kq = ev_kind[a_];
        int64_t oq = kq == 2 ? 0 : (kq == 0 ? 1 : 2);
        int64_t dq = ev_dose[a_];
        int64_t gq = ev_target[a_];
        double aq = ev_amount[a_];
        int64_t bq = bio_index[a_];
        int64_t c_ = a_ - 1;
        while (c_ >= k) {
            int64_t kc = ev_kind[c_];
            int64_t oc = kc == 2 ? 0 : (kc == 0 ? 1 : 2);
            if (ev_time[c_] > tq || (ev_time[c_] == tq && (oc > oq || (oc == oq && ev_dose[c_] > dq)))) {
                ev_time[c_ + 1] = ev_time[c_];
                ev_kind[c_ + 1] = ev_kind[c_];
                ev_target[c_ + 1] = ev_target[c_];
                ev_amount[c_ + 1] = ev_amount[c_];
                ev_dose[c_ + 1] = ev_dose[c_];
                bio_index[c_ + 1] = bio_index[c_];
                c_ -= 1;
            } else {
                break;
            }
        }
        ev_time[c_ + 1] = tq;
        ev_kind[c_ + 1] = kq;
        ev_target[c_ + 1] = gq;
        ev_amount[c_ + 1] = aq;
        ev_dose[c_ + 1] = dq;
        bio_index[c_ + 1] = bq;
    }
}

static inline double _max1(double a) { return a > 1.0 ? a : 1.0; }  /* max(1.0, a) */

typedef struct {
    /* shared (all patients) */
    const int64_t *rule_output;
    const double *rule_thresholds;  /* (R, B) */
    const double *rule_factors;     /* (R, B + 1) */
    const int64_t *rule_n;
    const double *t_out;
    const int64_t *out_sel;
    const double *rule_delay_th;
    const double *rule_delay_days;
    const int64_t *rule_max_delays;
    const double *rule_resume;
    int64_t B, n_t, K;
    double rtol, atol;
    int64_t max_steps;
    int dense_output, sparse_lu;
} Shared;

/* one patient; arrays are that patient's rows.  Returns the status code. */
static int64_t simulate_one(const Shared *S, double *p, const double *V, const double *Vinv, const double *lam,
                            const uint8_t *mode_needed, double *ev_time, int64_t *ev_kind, int64_t *ev_target,
                            double *ev_amount, int64_t *ev_dose, int64_t n_ev, int64_t n_e, const int64_t *dose_rule,
                            int64_t *bio_index, double *res, double *factors, int64_t *stats,
                            const int64_t *dose_group, const uint8_t *dose_cstart, int64_t n_d, double stop_time,
                            double *dose_time, int8_t *dose_status, const double *snap_t, int64_t n_snap,
                            double *snap_f, int64_t lf, int64_t *snap_i, int64_t li, int64_t start_snap) {
    const int64_t n = N_ODE, nl = N_LIN, K = S->K, n_t = S->n_t, B = S->B;
    const double rtol = S->rtol, atol = S->atol;
    const double *t_out = S->t_out;
    int64_t status = ST_OK;
    double y[N_ODE1], xl[N_LIN1], aw[N_ODE1], qd[N_DERIVED1], JLv[N_JLIN1];
    double xt_[N_LIN1], xe_[N_LIN1], xs[N_LIN1], dxt_[N_NEEDED1], dxe_[N_NEEDED1], xr[N_LIN1];
    double u[N_ODE1], b[N_LIN1], c0[N_LIN1], dd[N_LIN1];
    double Jv[N_JAC1], a[N_LU1], M[N_ODE1 * N_ODE1];
    int64_t piv[N_ODE1], modes[N_LIN1];
    double f0[N_ODE1], dT[N_ODE1], k1[N_ODE1], k2[N_ODE1], k3[N_ODE1], k4[N_ODE1], k5[N_ODE1], k6[N_ODE1];
    double yn[N_ODE1], yi[N_ODE1], yj[N_ODE1], h1[N_ODE1], h2[N_ODE1];
    double h_event[3 * (N_ODE + N_LIN) + 1];
    double *xt = xt_, *xe = xe_, *dxt = dxt_, *dxe = dxe_;
    for (int64_t i = 0; i < N_ODE1; i++) y[i] = u[i] = 0.0;
    for (int64_t i = 0; i < N_LIN1; i++) xl[i] = b[i] = xt_[i] = xe_[i] = xs[i] = xr[i] = c0[i] = dd[i] = 0.0;
    for (int64_t i = 0; i < N_NEEDED1; i++) dxt_[i] = dxe_[i] = 0.0;
    for (int64_t i = 0; i < N_JLIN1; i++) JLv[i] = 0.0;
    for (int64_t i = 0; i < N_DERIVED1; i++) qd[i] = 0.0;
    for (int64_t i = 0; i < 3 * (N_ODE + N_LIN) + 1; i++) h_event[i] = 0.0;
    init_state(p, y, xl);
    for (int64_t i = 0; i < n; i++) aw[i] = y[i] <= 0.0 ? atol : REL_FLOOR;
    derived(p, qd);
    int64_t n_groups = 1;
    for (int64_t q = 0; q < n_d; q++)
        if (dose_group[q] + 1 > n_groups) n_groups = dose_group[q] + 1;
    /* indexed by dose (and saved per dose in snapshots): as many as doses or events, at least one */
    int64_t n_rate = n_e > n_d ? n_e : n_d;
    double *rate = (double *)calloc((size_t)(n_rate > 0 ? n_rate : 1), sizeof(double));
    int64_t *n_delays = (int64_t *)calloc((size_t)n_groups, sizeof(int64_t));
    uint8_t *discontinued = (uint8_t *)calloc((size_t)n_groups, 1);
    uint8_t *paused = (uint8_t *)calloc((size_t)n_groups, 1);
    double t_end = t_out[n_t - 1];
    double t = 0.0, h = 0.0;
    int64_t k = 0, j = 0, steps = 0, nrej = 0;
    int64_t n_g = (li - 4 - 4 * n_e - n_d) / 3;
    int keep = lf >= 2 + 5 * (n + nl) + 3 * n_d + 2 * n_e && n_g >= n_groups;
    int64_t sn = 0;
    if (start_snap >= 0) {
        const double *sf = snap_f + start_snap * lf;
        const int64_t *si = snap_i + start_snap * li;
        t = sf[0];
        h = sf[1];
        int64_t o_ = 2;
        for (int64_t i = 0; i < n; i++) {
            y[i] = sf[o_ + i];
            u[i] = sf[o_ + n + nl + i];
        }
        for (int64_t i = 0; i < nl; i++) {
            xl[i] = sf[o_ + n + i];
            b[i] = sf[o_ + 2 * n + nl + i];
        }
        o_ += 2 * (n + nl);
        for (int64_t i = 0; i < 3 * (n + nl); i++) h_event[i] = sf[o_ + i];
        o_ += 3 * (n + nl);
        for (int64_t q = 0; q < n_d; q++) {
            rate[q] = sf[o_ + q];
            factors[q] = sf[o_ + n_d + 2 * n_e + q];
            dose_time[q] = sf[o_ + 2 * n_d + 2 * n_e + q];
            dose_status[q] = (int8_t)si[4 + 4 * n_e + q];
        }
        for (int64_t q = 0; q < n_e; q++) {
            ev_time[q] = sf[o_ + n_d + q];
            ev_amount[q] = sf[o_ + n_d + n_e + q];
            ev_kind[q] = si[4 + q];
            ev_target[q] = si[4 + n_e + q];
            ev_dose[q] = si[4 + 2 * n_e + q];
            bio_index[q] = si[4 + 3 * n_e + q];
        }
        for (int64_t g = 0; g < n_groups; g++) {
            n_delays[g] = si[4 + 4 * n_e + n_d + g];
            discontinued[g] = si[4 + 4 * n_e + n_d + n_g + g] != 0;
            paused[g] = si[4 + 4 * n_e + n_d + 2 * n_g + g] != 0;
        }
        k = si[0];
        j = si[1];
        steps = si[2];
        nrej = si[3];
        sn = start_snap + 1;
    }
    for (;;) {
        while (sn < n_snap && snap_t[sn] <= t + 1e-12 * _max1(fabs(t))) {
            if (!keep) {
                sn += 1;
                continue;
            }
            double *sf = snap_f + sn * lf;
            int64_t *si = snap_i + sn * li;
            sf[0] = t;
            sf[1] = h;
            int64_t o_ = 2;
            for (int64_t i = 0; i < n; i++) {
                sf[o_ + i] = y[i];
                sf[o_ + n + nl + i] = u[i];
            }
            for (int64_t i = 0; i < nl; i++) {
                sf[o_ + n + i] = xl[i];
                sf[o_ + 2 * n + nl + i] = b[i];
            }
            o_ += 2 * (n + nl);
            for (int64_t i = 0; i < 3 * (n + nl); i++) sf[o_ + i] = h_event[i];
            o_ += 3 * (n + nl);
            for (int64_t q = 0; q < n_d; q++) {
                sf[o_ + q] = rate[q];
                sf[o_ + n_d + 2 * n_e + q] = factors[q];
                sf[o_ + 2 * n_d + 2 * n_e + q] = dose_time[q];
                si[4 + 4 * n_e + q] = dose_status[q];
            }
            for (int64_t q = 0; q < n_e; q++) {
                sf[o_ + n_d + q] = ev_time[q];
                sf[o_ + n_d + n_e + q] = ev_amount[q];
                si[4 + q] = ev_kind[q];
                si[4 + n_e + q] = ev_target[q];
                si[4 + 2 * n_e + q] = ev_dose[q];
                si[4 + 3 * n_e + q] = bio_index[q];
            }
            for (int64_t g = 0; g < n_groups; g++) {
                si[4 + 4 * n_e + n_d + g] = n_delays[g];
                si[4 + 4 * n_e + n_d + n_g + g] = discontinued[g] ? 1 : 0;
                si[4 + 4 * n_e + n_d + 2 * n_g + g] = paused[g] ? 1 : 0;
            }
            si[0] = k;
            si[1] = j;
            si[2] = steps;
            si[3] = nrej;
            sn += 1;
        }
        /* 1. events at the current time (stops sorted before starts/boluses at equal times) */
        int64_t k_seg = k;
        while (k < n_ev && ev_time[k] <= t + 1e-12 * _max1(fabs(t))) {
            int64_t kind = ev_kind[k];
            int64_t dose = ev_dose[k];
            int64_t tgt = ev_target[k];
            double amt;
            if (kind == 2) {
                amt = -rate[dose];
                rate[dose] = 0.0;
            } else {
                int64_t g = dose_group[dose];
                if (discontinued[g] || ev_time[k] >= stop_time) {
                    factors[dose] = 0.0;
                    dose_status[dose] = discontinued[g] ? 4 : 3;
                    if (dose_status[dose] == 3) dose_time[dose] = ev_time[k];
                    k += 1;
                    continue;
                }
                int64_t r = dose_rule[dose];
                if (r >= 0) {
                    double val = output_one(S->rule_output[r], t, y, xl, p);
                    if (dose_cstart[dose] && val < S->rule_delay_th[r]) {
                        if (n_delays[g] < S->rule_max_delays[r]) {
                            n_delays[g] += 1;
                            for (int64_t q = k; q < n_ev; q++) {
                                int64_t dq = ev_dose[q];
                                if (dose_group[dq] == g && (ev_kind[q] != 2 || dose_status[dq] == 0))
                                    ev_time[q] += S->rule_delay_days[r];
                            }
                            _sort_events(k, n_ev, ev_time, ev_kind, ev_target, ev_amount, ev_dose, bio_index);
                            continue;
                        }
                        discontinued[g] = 1;
                        for (int64_t q = 0; q < n_d; q++)
                            if (dose_group[q] == g && dose_status[q] == 0) {
                                factors[q] = 0.0;
                                dose_status[q] = 4;
                            }
                        k += 1;
                        continue;
                    }
                    n_delays[g] = 0;
                    int64_t rn = S->rule_n[r];
                    double fac = S->rule_factors[r * (B + 1) + rn];
                    for (int64_t q = 0; q < rn; q++)
                        if (val >= S->rule_thresholds[r * B + q]) {
                            fac = S->rule_factors[r * (B + 1) + q];
                            break;
                        }
                    if (isfinite(S->rule_resume[r])) {
                        if (paused[g]) {
                            if (val >= S->rule_resume[r]) paused[g] = 0;
                            else fac = S->rule_factors[r * (B + 1) + rn];
                        } else if (val < S->rule_thresholds[r * B + rn - 1]) {
                            paused[g] = 1;
                        }
                    }
                    factors[dose] = fac;
                }
                double fa = factors[dose];
                dose_time[dose] = ev_time[k];
                dose_status[dose] = fa > 0.0 ? 1 : 2;
                int64_t bi = bio_index[k];
                if (bi >= 0) fa *= p[bi];
                if (kind == 0) {
                    if (tgt < n) y[tgt] += ev_amount[k] * fa;
                    else xl[tgt - n] += ev_amount[k] * fa;
                    amt = 0.0;
                } else {
                    amt = ev_amount[k] * fa;
                    rate[dose] = amt;
                }
            }
            if (kind != 0) {
                if (tgt < n) {
                    u[tgt] += amt;
                    if (fabs(u[tgt]) < 1e-12 * (fabs(amt) + 1e-300)) u[tgt] = 0.0;
                } else {
                    b[tgt - n] += amt;
                    if (fabs(b[tgt - n]) < 1e-12 * (fabs(amt) + 1e-300)) b[tgt - n] = 0.0;
                }
            }
            k += 1;
        }
        double t_next = k < n_ev ? ev_time[k] : t_end;
        if (t_next > t_end) t_next = t_end;
        if (sn < n_snap && snap_t[sn] < t_next) t_next = snap_t[sn];
        /* 2. modal coordinates of the linear sub-system for this segment */
        for (int64_t i = 0; i < nl; i++) {
            double acc0 = 0.0, accb = 0.0;
            for (int64_t q = 0; q < nl; q++) {
                acc0 += Vinv[i * nl + q] * xl[q];
                accb += Vinv[i * nl + q] * b[q];
            }
            c0[i] = acc0;
            dd[i] = accb;
        }
        int64_t n_modes = 0;
        for (int64_t q = 0; q < nl; q++)
            if (mode_needed[q] && (c0[q] != 0.0 || dd[q] != 0.0)) modes[n_modes++] = q;
        double t0 = t;
        /* 3. integrate the ODE states over [t, t_next] */
        if (h <= 0.0 || h > t_next - t) h = t_next - t;
        int first = 1, have_xt = 0;
        for (;;) {
            while (j < n_t && t_out[j] <= t + 1e-12 * _max1(fabs(t))) {
                _record(t, y, t0, c0, dd, lam, V, p, xr, S->out_sel, K, res + j * K, nl);
                j += 1;
            }
            if (t >= t_next) break;
            double target = t_next;
            if ((n == 0 || !S->dense_output) && j < n_t && t_out[j] < target) target = t_out[j];
            if (n == 0 || target - t <= 1e-12 * _max1(fabs(t))) {
                t = target;
                have_xt = 0;
                continue;
            }
            if (!have_xt) {
                _modal(t - t0, c0, dd, lam, V, modes, n_modes, xt, dxt, 1, nl);
                have_xt = 1;
            }
            rhs(t, y, xt, u, p, qd, f0);
            if (first) {
                double d0 = 0.0, d1 = 0.0;
                for (int64_t i = 0; i < n; i++) {
                    double sc = aw[i] + rtol * fabs(y[i]);
                    d0 += (y[i] / sc) * (y[i] / sc);
                    d1 += (f0[i] / sc) * (f0[i] / sc);
                }
                d0 = sqrt(d0 / n);
                d1 = sqrt(d1 / n);
                double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
                if (h0 < h) h = h0;
                for (int64_t q = k_seg; q < k; q++) {
                    double he = h_event[3 * ev_target[q] + ev_kind[q]];
                    if (he > 0.0 && he < h) h = he;
                }
                first = 0;
            }
            jac_sp(t, y, xt, u, p, qd, Jv);
            if (n_modes > 0) jac_lin_sp(t, y, xt, u, p, qd, JLv);
            if (!(isfinite(_sum(Jv, N_JAC)) && (n_modes == 0 || isfinite(_sum(JLv, N_JLIN))))) {
                for (int64_t i = 0; i < n; i++) yj[i] = y[i] > 1e-200 ? y[i] : 1e-200;
                jac_sp(t, yj, xt, u, p, qd, Jv);
                if (n_modes > 0) jac_lin_sp(t, yj, xt, u, p, qd, JLv);
            }
            for (int64_t i = 0; i < n; i++) dT[i] = 0.0;
            if (n_modes > 0)
                for (int64_t m = 0; m < N_JLIN; m++) dT[JLROW[m]] += JLv[m] * dxt[JLCOL[m]];
            int rejected = 0;
            for (;;) {
                steps += 1;
                if (steps > S->max_steps) {
                    stats[0] = steps;
                    stats[1] = nrej;
                    status = ST_MAXSTEPS;
                    goto done;
                }
                int last = 0;
                if (t + h >= target - 1e-12 * _max1(fabs(target))) {
                    h = target - t;
                    last = 1;
                }
                if (h < 1e-14 * _max1(fabs(t))) {
                    stats[0] = steps;
                    stats[1] = nrej;
                    status = ST_STEPSIZE;
                    goto done;
                }
                double ig = 1.0 / (h * _G);
                int dense = !(S->sparse_lu && lu_sp(Jv, ig, a));
                if (dense) {
                    _dense_w(Jv, ig, M, n);
                    if (!_lu(M, piv, n)) {
                        h *= 0.25;
                        nrej += 1;
                        continue;
                    }
                }
                double ih = 1.0 / h;
                for (int64_t i = 0; i < n; i++) k1[i] = f0[i] + h * _D1 * dT[i];
                _lsolve(dense, a, M, piv, k1, n);
                for (int64_t i = 0; i < n; i++) yn[i] = y[i] + _A21 * k1[i];
                _modal(t + _CC2 * h - t0, c0, dd, lam, V, modes, n_modes, xs, dxe, 0, nl);
                rhs(t + _CC2 * h, yn, xs, u, p, qd, k2);
                for (int64_t i = 0; i < n; i++) k2[i] += h * _D2 * dT[i] + ih * _C21 * k1[i];
                _lsolve(dense, a, M, piv, k2, n);
                for (int64_t i = 0; i < n; i++) yn[i] = y[i] + _A31 * k1[i] + _A32 * k2[i];
                _modal(t + _CC3 * h - t0, c0, dd, lam, V, modes, n_modes, xs, dxe, 0, nl);
                rhs(t + _CC3 * h, yn, xs, u, p, qd, k3);
                for (int64_t i = 0; i < n; i++) k3[i] += h * _D3 * dT[i] + ih * (_C31 * k1[i] + _C32 * k2[i]);
                _lsolve(dense, a, M, piv, k3, n);
                for (int64_t i = 0; i < n; i++) yn[i] = y[i] + _A41 * k1[i] + _A42 * k2[i] + _A43 * k3[i];
                _modal(t + _CC4 * h - t0, c0, dd, lam, V, modes, n_modes, xs, dxe, 0, nl);
                rhs(t + _CC4 * h, yn, xs, u, p, qd, k4);
                for (int64_t i = 0; i < n; i++)
                    k4[i] += h * _D4 * dT[i] + ih * (_C41 * k1[i] + _C42 * k2[i] + _C43 * k3[i]);
                _lsolve(dense, a, M, piv, k4, n);
                for (int64_t i = 0; i < n; i++)
                    yn[i] = y[i] + _A51 * k1[i] + _A52 * k2[i] + _A53 * k3[i] + _A54 * k4[i];
                _modal(t + h - t0, c0, dd, lam, V, modes, n_modes, xe, dxe, 1, nl);
                rhs(t + h, yn, xe, u, p, qd, k5);
                for (int64_t i = 0; i < n; i++)
                    k5[i] += ih * (_C51 * k1[i] + _C52 * k2[i] + _C53 * k3[i] + _C54 * k4[i]);
                _lsolve(dense, a, M, piv, k5, n);
                for (int64_t i = 0; i < n; i++) yn[i] += k5[i];
                rhs(t + h, yn, xe, u, p, qd, k6);
                for (int64_t i = 0; i < n; i++)
                    k6[i] += ih * (_C61 * k1[i] + _C62 * k2[i] + _C63 * k3[i] + _C64 * k4[i] + _C65 * k5[i]);
                _lsolve(dense, a, M, piv, k6, n);
                double err = 0.0;
                int neg = 0, finite = 1;
                for (int64_t i = 0; i < n; i++) {
                    yn[i] += k6[i];
                    double ay = fabs(y[i]), ayn = fabs(yn[i]);
                    double sc = aw[i] + rtol * (ay > ayn ? ay : ayn);
                    err += (k6[i] / sc) * (k6[i] / sc);
                    if (yn[i] < -sc) neg = 1;
                    if (!isfinite(yn[i])) finite = 0;
                }
                err = sqrt(err / n);
                if (!finite || !isfinite(err)) {
                    h *= 0.25;
                    nrej += 1;
                    continue;
                }
                if (err <= 1.0 && !neg) {
                    double t_new = last ? target : t + h;
                    for (int64_t i = 0; i < n; i++)
                        if (yn[i] < 0.0) yn[i] = 0.0;
                    if (j < n_t && t_out[j] < t_new - 1e-12 * _max1(fabs(t_new))) {
                        for (int64_t i = 0; i < n; i++) {
                            h1[i] = _H21 * k1[i] + _H22 * k2[i] + _H23 * k3[i] + _H24 * k4[i] + _H25 * k5[i];
                            h2[i] = _H31 * k1[i] + _H32 * k2[i] + _H33 * k3[i] + _H34 * k4[i] + _H35 * k5[i];
                        }
                        while (j < n_t && t_out[j] < t_new - 1e-12 * _max1(fabs(t_new))) {
                            double s_ = (t_out[j] - t) / h;
                            double s1 = 1.0 - s_;
                            for (int64_t i = 0; i < n; i++) {
                                double v = y[i] + s_ * (yn[i] - y[i] + s1 * (h1[i] + s_ * h2[i]));
                                yi[i] = v > 0.0 ? v : 0.0;
                            }
                            _record(t_out[j], yi, t0, c0, dd, lam, V, p, xr, S->out_sel, K, res + j * K, nl);
                            j += 1;
                        }
                    }
                    t = t_new;
                    for (int64_t i = 0; i < n; i++) y[i] = yn[i];
                    double *sw = xt;
                    xt = xe;
                    xe = sw;
                    sw = dxt;
                    dxt = dxe;
                    dxe = sw;
                    double fac = err > 1e-10 ? 0.9 * pow(err, -0.25) : 6.0;
                    if (fac > 6.0) fac = 6.0;
                    if (fac < 0.2) fac = 0.2;
                    if (k > k_seg) {
                        double fe = fac < 2.0 ? fac : 2.0;
                        for (int64_t q = k_seg; q < k; q++) h_event[3 * ev_target[q] + ev_kind[q]] = h * fe;
                        k_seg = k;
                    }
                    double h_next = h * fac;
                    if (rejected && h_next > h) h_next = h;
                    if (last) h = h_next > h ? h_next : h;
                    else h = h_next;
                    break;
                }
                nrej += 1;
                rejected = 1;
                if (neg) {
                    h *= 0.5;
                } else {
                    double fac = 0.9 * pow(err, -0.25);
                    if (fac < 0.2) fac = 0.2;
                    h *= fac;
                }
            }
        }
        /* 4. advance the linear sub-system exactly to the end of the segment */
        _lin_eval(t_next - t0, c0, dd, lam, V, xl, nl);
        t = t_next;
        if (t >= t_end) {
            while (j < n_t) {
                _record_state(t, y, xl, p, S->out_sel, K, res + j * K);
                j += 1;
            }
            break;
        }
    }
    stats[0] = steps;
    stats[1] = nrej;
done:
    free(rate);
    free(n_delays);
    free(discontinued);
    free(paused);
    return status;
}

/* the batch: one call per arm chunk; patients in parallel (OpenMP), each writing only its own rows */
void simulate_batch(int64_t N, int64_t NP, int64_t nl_, int64_t E, int64_t D1, int64_t R, int64_t B, int64_t T,
                    int64_t K, int64_t NS, int64_t LF, int64_t LI, double *P, const double *V, const double *Vinv,
                    const double *lam, const uint8_t *mode_needed, double *ev_time, int64_t *ev_kind,
                    int64_t *ev_target, double *ev_amount, int64_t *ev_dose, const int64_t *n_ev,
                    const int64_t *dose_rule, const int64_t *rule_output, const double *rule_thresholds,
                    const double *rule_factors, const int64_t *rule_n, int64_t *bio_index, const double *t_out,
                    const int64_t *out_sel, double rtol, double atol, int64_t max_steps, int64_t dense_output,
                    int64_t sparse_lu, double *res, double *factors, int64_t *status, int64_t *stats,
                    const int64_t *dose_group, const uint8_t *dose_cstart, const double *rule_delay_th,
                    const double *rule_delay_days, const int64_t *rule_max_delays, const double *stop_time,
                    double *dose_time, int8_t *dose_status, const double *rule_resume, const double *snap_t,
                    double *snap_f, int64_t *snap_i, const int64_t *start_snap, int64_t threads) {
    Shared S = {rule_output, rule_thresholds, rule_factors, rule_n, t_out, out_sel, rule_delay_th, rule_delay_days,
                rule_max_delays, rule_resume, B, T, K, rtol, atol, max_steps, (int)dense_output, (int)sparse_lu};
    (void)R;
    int64_t i;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 0 ? threads : 1)
    for (i = 0; i < N; i++) {
        status[i] = simulate_one(&S, P + i * NP, V + i * nl_ * nl_, Vinv + i * nl_ * nl_, lam + i * nl_,
                                 mode_needed + i * nl_, ev_time + i * E, ev_kind + i * E, ev_target + i * E,
                                 ev_amount + i * E, ev_dose + i * E, n_ev[i], E, dose_rule + i * D1,
                                 bio_index + i * E, res + i * T * K, factors + i * D1, stats + i * 2,
                                 dose_group + i * D1, dose_cstart + i * D1, D1, stop_time[i], dose_time + i * D1,
                                 dose_status + i * D1, snap_t + i * NS, NS, snap_f + i * NS * LF, LF,
                                 snap_i + i * NS * LI, LI, start_snap[i]);
    }
}

void lin_matrices(int64_t N, int64_t NP, int64_t nl_, double *P, double *A, int64_t threads) {
    int64_t i;
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1)
    for (i = 0; i < N; i++) lin_matrix(P + i * NP, A + i * nl_ * nl_);
}

void init_states(int64_t N, int64_t NP, double *P, double *Y, double *XL) {
    for (int64_t i = 0; i < N; i++) init_state(P + i * NP, Y + i * N_ODE1, XL + i * N_LIN1);
}
