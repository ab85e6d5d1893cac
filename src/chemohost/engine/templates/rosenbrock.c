/* chemohost solver template, C -- NOT compiled on its own.
 *
 * chemohost.engine.cbackend prepends the model's constants and kernels (rhs, jac_sp, jac_lin_sp, lu_sp,
 * solve_sp, output_one, init_state, derived, lin_matrix), translated from the generated numba module, and the
 * step kernels again in lane form (start_v: rhs, jac_sp and jac_lin_sp fused; rhs_v, lu_sp_v, solve_sp_v: LANES
 * patients side by side, arrays in lane layout [i * LANES + lane]), and compiles the whole text with the system C compiler into a
 * shared library (cached on disk).
 *
 * The solver is templates/rosenbrock.py (Rodas4 with closed-form linear PK, sparse LU with dense fallback, dense
 * output, dose events, dose-modification rules, restartable snapshots; see that file for the method and its
 * references), translated line by line, with one change of structure: each OpenMP thread integrates LANES
 * patients at once.  A lane's control flow (events, rules, step-size control, outputs, snapshots) runs on its own
 * (lane_run, suspended where it needs the step kernels); the kernels of a step's start and of a step attempt then
 * run for all lanes together, each lane with its own t and h, and each lane resumes with its own accept/reject.
 * A lane whose patient is done takes the next patient of the batch.
 *
 * LANES = 1 (backend "c"): the same operations in the same order as the numba engine, compiled without
 * floating-point contraction, so results agree with it to round-off (bit for bit in the tests).  LANES = 8
 * (backend "c-simd"): the lane loops vectorise (AVX-512: 8 doubles; glibc's vector exp and log, pow as
 * exp(b log|a|)), compiled with contraction; results differ from the scalar engine by round-off, or within the
 * integration tolerance where round-off tips a step's accept (tested).  Lanes compute independently: a
 * patient's result does not depend on the patients in the other lanes (tested).  An accepted step's
 * y := max(yn, 0) and PK values are applied in lane form in step_kernels (for LANES = 1: the scalar engine's
 * operations).
 */

#ifndef LANES
#define LANES 1
#endif

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

/* xl, dx: the lane's first element; entries LANES apart (lane layout) */
static void _modal(double tau, const double *c0, const double *dd, const double *lam, const double *V,
                   const int64_t *modes, int64_t n_modes, double *xl, double *dx, int with_rate, int64_t nl) {
    for (int64_t q = 0; q < N_NEEDED; q++) {
        xl[LIN_NEEDED[q] * LANES] = 0.0;
        if (with_rate) dx[q * LANES] = 0.0;
    }
    for (int64_t m = 0; m < n_modes; m++) {
        int64_t k = modes[m];
        double e = _exp(lam[k] * tau);
        double mk = e * c0[k] + _phi_e(lam[k], tau, e) * dd[k];
        double dk = e * (lam[k] * c0[k] + dd[k]);
        for (int64_t q = 0; q < N_NEEDED; q++) {
            int64_t i = LIN_NEEDED[q];
            xl[i * LANES] += V[i * nl + k] * mk;
            if (with_rate) dx[q * LANES] += V[i * nl + k] * dk;
        }
    }
    for (int64_t q = 0; q < N_NEEDED; q++) {
        int64_t i = LIN_NEEDED[q];
        if (xl[i * LANES] < 0.0) xl[i * LANES] = 0.0;
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

static void _dense_w(const double *Jv, double ig, double *M, int64_t n) {
    for (int64_t i = 0; i < n * n; i++) M[i] = 0.0;
    for (int64_t m = 0; m < N_JAC; m++) M[JROW[m] * n + JCOL[m]] = -Jv[m];
    for (int64_t i = 0; i < n; i++) M[i * n + i] += ig;
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

/* an array in lane layout: entry i of lane l */
#define AT(a, i, l) (a)[(i) * LANES + (l)]

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
    /* the batch's per-patient arrays (row i of patient i) */
    int64_t N, NP, nl, E, D1, NS, LF, LI;
    double *P;
    const double *V, *Vinv, *lam;
    const uint8_t *mode_needed;
    double *ev_time;
    int64_t *ev_kind, *ev_target;
    double *ev_amount;
    int64_t *ev_dose;
    const int64_t *n_ev, *dose_rule;
    int64_t *bio_index;
    double *res, *factors;
    int64_t *status, *stats;
    const int64_t *dose_group;
    const uint8_t *dose_cstart;
    const double *stop_time;
    double *dose_time;
    int8_t *dose_status;
    const double *snap_t;
    double *snap_f;
    int64_t *snap_i;
    const int64_t *start_snap;
} Shared;

/* a thread's LANES lanes: what the step kernels read and write, in lane layout */
typedef struct {
    double y[N_ODE1 * LANES], u[N_ODE1 * LANES], f0[N_ODE1 * LANES], dT[N_ODE1 * LANES], yn[N_ODE1 * LANES];
    double yo[N_ODE1 * LANES];  /* y before the step (dense output) */
    double k1[N_ODE1 * LANES], k2[N_ODE1 * LANES], k3[N_ODE1 * LANES], k4[N_ODE1 * LANES], k5[N_ODE1 * LANES];
    double k6[N_ODE1 * LANES];
    double xt[N_LIN1 * LANES], xe[N_LIN1 * LANES], xs[N_LIN1 * LANES];
    double dxt[N_NEEDED1 * LANES], dxe[N_NEEDED1 * LANES];
    double qd[N_DERIVED1 * LANES], Jv[N_JAC1 * LANES], JLv[N_JLIN1 * LANES], a[N_LU1 * LANES];
    double f0s[N_ODE1 * LANES], Jvs[N_JAC1 * LANES], JLvs[N_JLIN1 * LANES];  /* step-start kernels' output */
    double t[LANES], h[LANES], ig[LANES], ih[LANES], ts[LANES], err[LANES];
    int ok[LANES], neg[LANES], finite[LANES], jfin[LANES], acc[LANES];
    double pw[LANES];  /* err^-1/4 */
    /* each state's absolute error floor (atol or REL_FLOOR; a drug-driven state's follows rtol x its peak), and
     * 1 for the drug-driven states (those that start at zero) */
    double aw[N_ODE1 * LANES], drug[N_ODE1 * LANES];
    double js[LANES], jls[LANES];
    double *p;  /* (NP, LANES) */
#if LANES > 1
    /* the closed-form PK in lane form: each lane's modal coordinates (zero for modes it does not use), eigenvalues
     * and the eigenvector rows of the linear states the ODEs read */
    double c0v[N_LIN1 * LANES], ddv[N_LIN1 * LANES], lamv[N_LIN1 * LANES], Vn[N_NEEDED1 * N_LIN1 * LANES];
    double mk[LANES], dk[LANES], tau[LANES];
    uint8_t umode[N_LIN1];
#endif
} Work;

enum { NEED_NONE = 0, NEED_START = 1, NEED_STEP = 2 };
enum { PC_SEGMENT = 0, PC_START = 1, PC_STEP = 2 };

/* one lane: the patient it integrates and the solver's scalar state (the control flow of templates/rosenbrock.py's
 * simulate_one, suspended where it needs the step kernels) */
typedef struct {
    int pc, need;
    int64_t pat;
    /* that patient's rows */
    double *p;
    const double *V, *Vinv, *lam;
    const uint8_t *mode_needed;
    double *ev_time;
    int64_t *ev_kind, *ev_target;
    double *ev_amount;
    int64_t *ev_dose;
    int64_t n_ev;
    const int64_t *dose_rule;
    int64_t *bio_index;
    double *res, *factors;
    int64_t *stats;
    const int64_t *dose_group;
    const uint8_t *dose_cstart;
    double stop_time;
    double *dose_time;
    int8_t *dose_status;
    const double *snap_t;
    double *snap_f;
    int64_t *snap_i;
    /* solver state */
    double t, h, t0, t_next, target, t_end;
    int64_t k, j, steps, nrej, sn, k_seg, n_groups, n_g, n_modes, status;
    int first, have_xt, rejected, last, keep, dense, singular;
    double *rate;
    int64_t *n_delays;
    uint8_t *discontinued, *paused;
    double xl[N_LIN1], b[N_LIN1], c0[N_LIN1], dd[N_LIN1], xr[N_LIN1], xc[N_LIN1];
    double yc[N_ODE1], uc[N_ODE1], h1[N_ODE1], h2[N_ODE1];
    double qd[N_DERIVED1], Jc[N_JAC1], JLc[N_JLIN1];
    double h_event[3 * (N_ODE + N_LIN) + 1];
    int64_t modes[N_LIN1], piv[N_ODE1];
    double M[N_ODE1 * N_ODE1];
} Lane;

/* lane l's entries of a lane-layout array, contiguous */
static void _gather(const double *a, int64_t n, int l, double *out) {
    for (int64_t i = 0; i < n; i++) out[i] = AT(a, i, l);
}

static void _scatter(const double *v, int64_t n, int l, double *a) {
    for (int64_t i = 0; i < n; i++) AT(a, i, l) = v[i];
}

/* outputs at t from the lane's state y (lane layout) and linear states xl (contiguous) */
static void _record_state(Lane *L, int l, const Shared *S, double t, const double *y, const double *xl,
                          double *res_row) {
    _gather(y, N_ODE, l, L->yc);
    for (int64_t q = 0; q < S->K; q++) res_row[q] = output_one(S->out_sel[q], t, L->yc, (double *)xl, L->p);
}

static void _record(Lane *L, int l, const Shared *S, double t, const double *y, double *res_row) {
    _lin_eval(t - L->t0, L->c0, L->dd, L->lam, L->V, L->xr, S->nl);
    _record_state(L, l, S, t, y, L->xr, res_row);
}

/* the patient-row pointers and initial state of patient i in lane l */
static void lane_load(const Shared *S, Work *w, Lane *L, int l, int64_t i) {
    const int64_t n = N_ODE, nl = S->nl, E = S->E, D1 = S->D1, NS = S->NS;
    L->pat = i;
    L->p = S->P + i * S->NP;
    L->V = S->V + i * nl * nl;
    L->Vinv = S->Vinv + i * nl * nl;
    L->lam = S->lam + i * nl;
    L->mode_needed = S->mode_needed + i * nl;
    L->ev_time = S->ev_time + i * E;
    L->ev_kind = S->ev_kind + i * E;
    L->ev_target = S->ev_target + i * E;
    L->ev_amount = S->ev_amount + i * E;
    L->ev_dose = S->ev_dose + i * E;
    L->n_ev = S->n_ev[i];
    L->dose_rule = S->dose_rule + i * D1;
    L->bio_index = S->bio_index + i * E;
    L->res = S->res + i * S->n_t * S->K;
    L->factors = S->factors + i * D1;
    L->stats = S->stats + i * 2;
    L->dose_group = S->dose_group + i * D1;
    L->dose_cstart = S->dose_cstart + i * D1;
    L->stop_time = S->stop_time[i];
    L->dose_time = S->dose_time + i * D1;
    L->dose_status = S->dose_status + i * D1;
    L->snap_t = S->snap_t + i * NS;
    L->snap_f = S->snap_f + i * NS * S->LF;
    L->snap_i = S->snap_i + i * NS * S->LI;
    const int64_t n_e = E, n_d = D1, lf = S->LF, li = S->LI;
    for (int64_t q = 0; q < N_ODE1; q++) AT(w->y, q, l) = AT(w->u, q, l) = 0.0;
    for (int64_t q = 0; q < N_LIN1; q++) {
        L->xl[q] = L->b[q] = L->xr[q] = L->c0[q] = L->dd[q] = 0.0;
        AT(w->xt, q, l) = AT(w->xe, q, l) = AT(w->xs, q, l) = 0.0;
    }
    for (int64_t q = 0; q < N_NEEDED1; q++) AT(w->dxt, q, l) = AT(w->dxe, q, l) = 0.0;
    for (int64_t q = 0; q < N_JLIN1; q++) AT(w->JLv, q, l) = 0.0;
    for (int64_t q = 0; q < N_DERIVED1; q++) L->qd[q] = 0.0;
    for (int64_t q = 0; q < 3 * (N_ODE + N_LIN) + 1; q++) L->h_event[q] = 0.0;
    for (int64_t q = 0; q < N_ODE1; q++) L->yc[q] = 0.0;
    init_state(L->p, L->yc, L->xl);
    _scatter(L->yc, N_ODE1, l, w->y);
    for (int64_t q = 0; q < n; q++) {
        AT(w->drug, q, l) = L->yc[q] <= 0.0 ? 1.0 : 0.0;
        AT(w->aw, q, l) = L->yc[q] <= 0.0 ? S->atol : REL_FLOOR;
    }
    derived(L->p, L->qd);
    _scatter(L->qd, N_DERIVED1, l, w->qd);
    for (int64_t q = 0; q < S->NP; q++) AT(w->p, q, l) = L->p[q];
#if LANES > 1
    for (int64_t k = 0; k < N_LIN1; k++) AT(w->c0v, k, l) = AT(w->ddv, k, l) = AT(w->lamv, k, l) = 0.0;
    for (int64_t k = 0; k < nl; k++) {
        AT(w->lamv, k, l) = L->lam[k];
        for (int64_t q = 0; q < N_NEEDED; q++) AT(w->Vn, q * N_LIN1 + k, l) = L->V[LIN_NEEDED[q] * nl + k];
    }
#endif
    L->n_groups = 1;
    for (int64_t q = 0; q < n_d; q++)
        if (L->dose_group[q] + 1 > L->n_groups) L->n_groups = L->dose_group[q] + 1;
    /* indexed by dose (and saved per dose in snapshots): as many as doses or events, at least one */
    int64_t n_rate = n_e > n_d ? n_e : n_d;
    L->rate = (double *)calloc((size_t)(n_rate > 0 ? n_rate : 1), sizeof(double));
    L->n_delays = (int64_t *)calloc((size_t)L->n_groups, sizeof(int64_t));
    L->discontinued = (uint8_t *)calloc((size_t)L->n_groups, 1);
    L->paused = (uint8_t *)calloc((size_t)L->n_groups, 1);
    L->t_end = S->t_out[S->n_t - 1];
    L->t = 0.0;
    L->h = 0.0;
    L->k = L->j = L->steps = L->nrej = 0;
    L->n_g = (li - 4 - 4 * n_e - n_d) / 3;
    L->keep = lf >= 2 + 5 * (n + nl) + n + 3 * n_d + 2 * n_e && L->n_g >= L->n_groups;
    L->sn = 0;
    L->status = ST_OK;
    int64_t start_snap = S->start_snap[i];
    if (start_snap >= 0) {
        const double *sf = L->snap_f + start_snap * lf;
        const int64_t *si = L->snap_i + start_snap * li;
        L->t = sf[0];
        L->h = sf[1];
        int64_t o_ = 2;
        for (int64_t q = 0; q < n; q++) {
            AT(w->y, q, l) = sf[o_ + q];
            AT(w->u, q, l) = sf[o_ + n + nl + q];
        }
        for (int64_t q = 0; q < nl; q++) {
            L->xl[q] = sf[o_ + n + q];
            L->b[q] = sf[o_ + 2 * n + nl + q];
        }
        o_ += 2 * (n + nl);
        for (int64_t q = 0; q < 3 * (n + nl); q++) L->h_event[q] = sf[o_ + q];
        o_ += 3 * (n + nl);
        for (int64_t q = 0; q < n; q++) AT(w->aw, q, l) = sf[o_ + q];
        o_ += n;
        for (int64_t q = 0; q < n_d; q++) {
            L->rate[q] = sf[o_ + q];
            L->factors[q] = sf[o_ + n_d + 2 * n_e + q];
            L->dose_time[q] = sf[o_ + 2 * n_d + 2 * n_e + q];
            L->dose_status[q] = (int8_t)si[4 + 4 * n_e + q];
        }
        for (int64_t q = 0; q < n_e; q++) {
            L->ev_time[q] = sf[o_ + n_d + q];
            L->ev_amount[q] = sf[o_ + n_d + n_e + q];
            L->ev_kind[q] = si[4 + q];
            L->ev_target[q] = si[4 + n_e + q];
            L->ev_dose[q] = si[4 + 2 * n_e + q];
            L->bio_index[q] = si[4 + 3 * n_e + q];
        }
        for (int64_t g = 0; g < L->n_groups; g++) {
            L->n_delays[g] = si[4 + 4 * n_e + n_d + g];
            L->discontinued[g] = si[4 + 4 * n_e + n_d + L->n_g + g] != 0;
            L->paused[g] = si[4 + 4 * n_e + n_d + 2 * L->n_g + g] != 0;
        }
        L->k = si[0];
        L->j = si[1];
        L->steps = si[2];
        L->nrej = si[3];
        L->sn = start_snap + 1;
    }
    L->pc = PC_SEGMENT;
    L->need = NEED_NONE;
}

/* run lane l's control flow from where it stopped until it needs the step kernels (L->need = NEED_START: rhs and
 * Jacobians at the step's start; NEED_STEP: one Rodas4 step attempt of size h) or its patient is done (NEED_NONE,
 * L->pat = -1 after writing status and freeing) */
static void lane_run(const Shared *S, Work *w, Lane *L, int l) {
    const int64_t n = N_ODE, nl = S->nl, K = S->K, n_t = S->n_t, B = S->B;
    const double rtol = S->rtol;
    const double *t_out = S->t_out;
    const int64_t n_e = S->E, n_d = S->D1, n_snap = S->NS, lf = S->LF, li = S->LI;
    double *y = w->y + l, *u = w->u + l;  /* lane l's entries: [i * LANES] */
    double *p = L->p;
    int64_t *ev_kind = L->ev_kind, *ev_target = L->ev_target, *ev_dose = L->ev_dose;
    double *ev_time = L->ev_time, *ev_amount = L->ev_amount;
    const int64_t n_ev = L->n_ev;
    switch (L->pc) {
    case PC_START:
        goto after_start;
    case PC_STEP:
        goto after_step;
    default:
        break;
    }
segment:
    while (L->sn < n_snap && L->snap_t[L->sn] <= L->t + 1e-12 * _max1(fabs(L->t))) {
        if (!L->keep) {
            L->sn += 1;
            continue;
        }
        double *sf = L->snap_f + L->sn * lf;
        int64_t *si = L->snap_i + L->sn * li;
        sf[0] = L->t;
        sf[1] = L->h;
        int64_t o_ = 2;
        for (int64_t i = 0; i < n; i++) {
            sf[o_ + i] = y[i * LANES];
            sf[o_ + n + nl + i] = u[i * LANES];
        }
        for (int64_t i = 0; i < nl; i++) {
            sf[o_ + n + i] = L->xl[i];
            sf[o_ + 2 * n + nl + i] = L->b[i];
        }
        o_ += 2 * (n + nl);
        for (int64_t i = 0; i < 3 * (n + nl); i++) sf[o_ + i] = L->h_event[i];
        o_ += 3 * (n + nl);
        for (int64_t i = 0; i < n; i++) sf[o_ + i] = AT(w->aw, i, l);
        o_ += n;
        for (int64_t q = 0; q < n_d; q++) {
            sf[o_ + q] = L->rate[q];
            sf[o_ + n_d + 2 * n_e + q] = L->factors[q];
            sf[o_ + 2 * n_d + 2 * n_e + q] = L->dose_time[q];
            si[4 + 4 * n_e + q] = L->dose_status[q];
        }
        for (int64_t q = 0; q < n_e; q++) {
            sf[o_ + n_d + q] = ev_time[q];
            sf[o_ + n_d + n_e + q] = ev_amount[q];
            si[4 + q] = ev_kind[q];
            si[4 + n_e + q] = ev_target[q];
            si[4 + 2 * n_e + q] = ev_dose[q];
            si[4 + 3 * n_e + q] = L->bio_index[q];
        }
        for (int64_t g = 0; g < L->n_groups; g++) {
            si[4 + 4 * n_e + n_d + g] = L->n_delays[g];
            si[4 + 4 * n_e + n_d + L->n_g + g] = L->discontinued[g] ? 1 : 0;
            si[4 + 4 * n_e + n_d + 2 * L->n_g + g] = L->paused[g] ? 1 : 0;
        }
        si[0] = L->k;
        si[1] = L->j;
        si[2] = L->steps;
        si[3] = L->nrej;
        L->sn += 1;
    }
    /* 1. events at the current time (stops sorted before starts/boluses at equal times) */
    L->k_seg = L->k;
    while (L->k < n_ev && ev_time[L->k] <= L->t + 1e-12 * _max1(fabs(L->t))) {
        int64_t k = L->k;
        int64_t kind = ev_kind[k];
        int64_t dose = ev_dose[k];
        int64_t tgt = ev_target[k];
        double amt;
        if (kind == 2) {
            amt = -L->rate[dose];
            L->rate[dose] = 0.0;
        } else {
            int64_t g = L->dose_group[dose];
            if (L->discontinued[g] || ev_time[k] >= L->stop_time) {
                L->factors[dose] = 0.0;
                L->dose_status[dose] = L->discontinued[g] ? 4 : 3;
                if (L->dose_status[dose] == 3) L->dose_time[dose] = ev_time[k];
                L->k += 1;
                continue;
            }
            int64_t r = L->dose_rule[dose];
            if (r >= 0) {
                _gather(w->y, N_ODE, l, L->yc);
                double val = output_one(S->rule_output[r], L->t, L->yc, L->xl, p);
                if (L->dose_cstart[dose] && val < S->rule_delay_th[r]) {
                    if (L->n_delays[g] < S->rule_max_delays[r]) {
                        L->n_delays[g] += 1;
                        for (int64_t q = k; q < n_ev; q++) {
                            int64_t dq = ev_dose[q];
                            if (L->dose_group[dq] == g && (ev_kind[q] != 2 || L->dose_status[dq] == 0))
                                ev_time[q] += S->rule_delay_days[r];
                        }
                        _sort_events(k, n_ev, ev_time, ev_kind, ev_target, ev_amount, ev_dose, L->bio_index);
                        continue;
                    }
                    L->discontinued[g] = 1;
                    for (int64_t q = 0; q < n_d; q++)
                        if (L->dose_group[q] == g && L->dose_status[q] == 0) {
                            L->factors[q] = 0.0;
                            L->dose_status[q] = 4;
                        }
                    L->k += 1;
                    continue;
                }
                L->n_delays[g] = 0;
                int64_t rn = S->rule_n[r];
                double fac = S->rule_factors[r * (B + 1) + rn];
                for (int64_t q = 0; q < rn; q++)
                    if (val >= S->rule_thresholds[r * B + q]) {
                        fac = S->rule_factors[r * (B + 1) + q];
                        break;
                    }
                if (isfinite(S->rule_resume[r])) {
                    if (L->paused[g]) {
                        if (val >= S->rule_resume[r]) L->paused[g] = 0;
                        else fac = S->rule_factors[r * (B + 1) + rn];
                    } else if (val < S->rule_thresholds[r * B + rn - 1]) {
                        L->paused[g] = 1;
                    }
                }
                L->factors[dose] = fac;
            }
            double fa = L->factors[dose];
            L->dose_time[dose] = ev_time[k];
            L->dose_status[dose] = fa > 0.0 ? 1 : 2;
            int64_t bi = L->bio_index[k];
            if (bi >= 0) fa *= p[bi];
            if (kind == 0) {
                if (tgt < n) y[tgt * LANES] += ev_amount[k] * fa;
                else L->xl[tgt - n] += ev_amount[k] * fa;
                amt = 0.0;
            } else {
                amt = ev_amount[k] * fa;
                L->rate[dose] = amt;
            }
        }
        if (kind != 0) {
            if (tgt < n) {
                u[tgt * LANES] += amt;
                if (fabs(u[tgt * LANES]) < 1e-12 * (fabs(amt) + 1e-300)) u[tgt * LANES] = 0.0;
            } else {
                L->b[tgt - n] += amt;
                if (fabs(L->b[tgt - n]) < 1e-12 * (fabs(amt) + 1e-300)) L->b[tgt - n] = 0.0;
            }
        }
        L->k += 1;
    }
    L->t_next = L->k < n_ev ? ev_time[L->k] : L->t_end;
    if (L->t_next > L->t_end) L->t_next = L->t_end;
    if (L->sn < n_snap && L->snap_t[L->sn] < L->t_next) L->t_next = L->snap_t[L->sn];
    /* 2. modal coordinates of the linear sub-system for this segment */
    /* (column by column over the linear states that are not zero -- undosed drugs' are: the same sums, in the same
     * order, as row by row over all) */
    for (int64_t i = 0; i < nl; i++) L->c0[i] = L->dd[i] = 0.0;
    for (int64_t q = 0; q < nl; q++) {
        double xq = L->xl[q], bq = L->b[q];
        if (xq == 0.0 && bq == 0.0) continue;
        for (int64_t i = 0; i < nl; i++) {
            L->c0[i] += L->Vinv[i * nl + q] * xq;
            L->dd[i] += L->Vinv[i * nl + q] * bq;
        }
    }
    L->n_modes = 0;
    for (int64_t q = 0; q < nl; q++)
        if (L->mode_needed[q] && (L->c0[q] != 0.0 || L->dd[q] != 0.0)) L->modes[L->n_modes++] = q;
#if LANES > 1
    for (int64_t q = 0; q < nl; q++) AT(w->c0v, q, l) = AT(w->ddv, q, l) = 0.0;
    for (int64_t m = 0; m < L->n_modes; m++) {
        AT(w->c0v, L->modes[m], l) = L->c0[L->modes[m]];
        AT(w->ddv, L->modes[m], l) = L->dd[L->modes[m]];
    }
#endif
    L->t0 = L->t;
    /* 3. integrate the ODE states over [t, t_next] */
    if (L->h <= 0.0 || L->h > L->t_next - L->t) L->h = L->t_next - L->t;
    L->first = 1;
    L->have_xt = 0;
step:
    while (L->j < n_t && t_out[L->j] <= L->t + 1e-12 * _max1(fabs(L->t))) {
        _record(L, l, S, L->t, w->y, L->res + L->j * K);
        L->j += 1;
    }
    if (L->t >= L->t_next) goto segment_end;
    L->target = L->t_next;
    if ((n == 0 || !S->dense_output) && L->j < n_t && t_out[L->j] < L->target) L->target = t_out[L->j];
    if (n == 0 || L->target - L->t <= 1e-12 * _max1(fabs(L->t))) {
        L->t = L->target;
        L->have_xt = 0;
        goto step;
    }
    if (!L->have_xt) {
        _modal(L->t - L->t0, L->c0, L->dd, L->lam, L->V, L->modes, L->n_modes, w->xt + l, w->dxt + l, 1, nl);
        L->have_xt = 1;
    }
    L->pc = PC_START; /* rhs(t, y, xt, u, p, qd, f0), jac_sp, jac_lin_sp */
    L->need = NEED_START;
    return;
after_start:
    if (L->first) {
        double d0 = 0.0, d1 = 0.0;
        for (int64_t i = 0; i < n; i++) {
            double sc = AT(w->aw, i, l) + rtol * fabs(y[i * LANES]);
            d0 += (y[i * LANES] / sc) * (y[i * LANES] / sc);
            d1 += (AT(w->f0, i, l) / sc) * (AT(w->f0, i, l) / sc);
        }
        d0 = sqrt(d0 / n);
        d1 = sqrt(d1 / n);
        double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
        if (h0 < L->h) L->h = h0;
        for (int64_t q = L->k_seg; q < L->k; q++) {
            double he = L->h_event[3 * ev_target[q] + ev_kind[q]];
            if (he > 0.0 && he < L->h) L->h = he;
        }
        L->first = 0;
    }
    if (!w->jfin[l]) {  /* (step_start: the Jacobians' sums are finite, and dT) */
        for (int64_t i = 0; i < n; i++) L->yc[i] = y[i * LANES] > 1e-200 ? y[i * LANES] : 1e-200;
        _gather(w->xt, N_LIN1, l, L->xc);
        _gather(w->u, N_ODE1, l, L->uc);
        jac_sp(L->t, L->yc, L->xc, L->uc, p, L->qd, L->Jc);
        _scatter(L->Jc, N_JAC, l, w->Jv);
        if (L->n_modes > 0) {
            jac_lin_sp(L->t, L->yc, L->xc, L->uc, p, L->qd, L->JLc);
            _scatter(L->JLc, N_JLIN, l, w->JLv);
        }
        for (int64_t i = 0; i < n; i++) AT(w->dT, i, l) = 0.0;  /* dT again, from the recomputed JLv */
        if (L->n_modes > 0)
            for (int64_t m = 0; m < N_JLIN; m++)
                AT(w->dT, JLROW[m], l) += AT(w->JLv, m, l) * AT(w->dxt, JLCOL[m], l);
    }
    L->rejected = 0;
attempt:
    L->steps += 1;
    if (L->steps > S->max_steps) {
        L->status = ST_MAXSTEPS;
        goto done;
    }
    L->last = 0;
    if (L->t + L->h >= L->target - 1e-12 * _max1(fabs(L->target))) {
        L->h = L->target - L->t;
        L->last = 1;
    }
    if (L->h < 1e-14 * _max1(fabs(L->t))) {
        L->status = ST_STEPSIZE;
        goto done;
    }
    L->pc = PC_STEP; /* one Rodas4 step of size h: step_kernels */
    L->need = NEED_STEP;
    return;
after_step:
    if (L->singular || !w->finite[l] || !isfinite(w->err[l])) {
        L->h *= 0.25;
        L->nrej += 1;
        goto attempt;
    }
    {
        double err = w->err[l];
        double h = L->h, t = L->t;
        if (w->acc[l]) {  /* (err <= 1 and no negative state; step_kernels set y := max(yn, 0) and xt, dxt) */
            double t_new = L->last ? L->target : t + h;
            const double *yn = w->yn + l, *yo = w->yo + l;
            if (L->j < n_t && t_out[L->j] < t_new - 1e-12 * _max1(fabs(t_new))) {
                for (int64_t i = 0; i < n; i++) {
                    L->h1[i] = _H21 * AT(w->k1, i, l) + _H22 * AT(w->k2, i, l) + _H23 * AT(w->k3, i, l) +
                               _H24 * AT(w->k4, i, l) + _H25 * AT(w->k5, i, l);
                    L->h2[i] = _H31 * AT(w->k1, i, l) + _H32 * AT(w->k2, i, l) + _H33 * AT(w->k3, i, l) +
                               _H34 * AT(w->k4, i, l) + _H35 * AT(w->k5, i, l);
                }
                while (L->j < n_t && t_out[L->j] < t_new - 1e-12 * _max1(fabs(t_new))) {
                    double s_ = (t_out[L->j] - t) / h;
                    double s1 = 1.0 - s_;
                    for (int64_t i = 0; i < n; i++) {
                        double v = yo[i * LANES] + s_ * (yn[i * LANES] - yo[i * LANES] + s1 * (L->h1[i] + s_ * L->h2[i]));
                        AT(w->k6, i, l) = v > 0.0 ? v : 0.0;  /* (k6: free once the step is taken) */
                    }
                    _record(L, l, S, t_out[L->j], w->k6, L->res + L->j * K);
                    L->j += 1;
                }
            }
            L->t = t_new;
            double fac = err > 1e-10 ? 0.9 * w->pw[l] : 6.0;
            if (fac > 6.0) fac = 6.0;
            if (fac < 0.2) fac = 0.2;
            if (L->k > L->k_seg) {
                double fe = fac < 2.0 ? fac : 2.0;
                for (int64_t q = L->k_seg; q < L->k; q++) L->h_event[3 * ev_target[q] + ev_kind[q]] = h * fe;
                L->k_seg = L->k;
            }
            double h_next = h * fac;
            if (L->rejected && h_next > h) h_next = h;
            if (L->last) L->h = h_next > h ? h_next : h;
            else L->h = h_next;
            goto step;
        }
        L->nrej += 1;
        L->rejected = 1;
        if (w->neg[l]) {
            L->h *= 0.5;
        } else {
            double fac = 0.9 * w->pw[l];
            if (fac < 0.2) fac = 0.2;
            L->h *= fac;
        }
        goto attempt;
    }
segment_end:
    /* 4. advance the linear sub-system exactly to the end of the segment */
    _lin_eval(L->t_next - L->t0, L->c0, L->dd, L->lam, L->V, L->xl, nl);
    L->t = L->t_next;
    if (L->t >= L->t_end) {
        while (L->j < n_t) {
            _record_state(L, l, S, L->t, w->y, L->xl, L->res + L->j * K);
            L->j += 1;
        }
        goto done;
    }
    goto segment;
done:
    L->stats[0] = L->steps;
    L->stats[1] = L->nrej;
    S->status[L->pat] = L->status;
    free(L->rate);
    free(L->n_delays);
    free(L->discontinued);
    free(L->paused);
    L->pat = -1;
    L->need = NEED_NONE;
}

/* the step kernels at the start of a step, for the lanes that need them (others keep their values): f0, the
 * Jacobians, whether they are finite (sums: in the scalar engine's order for LANES = 1) and dT = JL dxt */
static void step_start(Work *w, const Lane *L) {
    for (int l = 0; l < LANES; l++) w->t[l] = L[l].t;
    /* the right-hand side and both Jacobians in one lane loop, whether or not a lane has modes: a lane's rhs and
     * Jacobian must not depend on which code its companions chose (the fused loop may round differently) */
    start_v(w->t, w->y, w->xt, w->u, w->p, w->qd, w->f0s, w->Jvs, w->JLvs);
    int any_modes = 0;
    for (int l = 0; l < LANES; l++)
        if (L[l].need == NEED_START && L[l].n_modes > 0) any_modes = 1;
    double *restrict js = w->js, *restrict jls = w->jls;
    const double *restrict Jvs = w->Jvs, *restrict JLvs = w->JLvs;
    for (int l = 0; l < LANES; l++) js[l] = jls[l] = 0.0;
#if LANES > 1
    {   /* (only whether the sums are finite is read: four partial sums instead of one chain of dependent adds) */
        double s1[LANES], s2[LANES], s3[LANES];
        for (int l = 0; l < LANES; l++) s1[l] = s2[l] = s3[l] = 0.0;
        int64_t m = 0;
        for (; m + 4 <= N_JAC; m += 4)
#pragma omp simd
            for (int l = 0; l < LANES; l++) {
                js[l] += AT(Jvs, m, l);
                s1[l] += AT(Jvs, m + 1, l);
                s2[l] += AT(Jvs, m + 2, l);
                s3[l] += AT(Jvs, m + 3, l);
            }
        for (; m < N_JAC; m++)
#pragma omp simd
            for (int l = 0; l < LANES; l++) js[l] += AT(Jvs, m, l);
#pragma omp simd
        for (int l = 0; l < LANES; l++) js[l] = (js[l] + s1[l]) + (s2[l] + s3[l]);
    }
#else
    for (int64_t m = 0; m < N_JAC; m++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) js[l] += AT(Jvs, m, l);
#endif
    if (any_modes)
        for (int64_t m = 0; m < N_JLIN; m++)
#pragma omp simd
            for (int l = 0; l < LANES; l++) jls[l] += AT(JLvs, m, l);
    int st[LANES], stm[LANES];  /* lanes starting a step; and those of them with modes */
    for (int l = 0; l < LANES; l++) {
        st[l] = L[l].need == NEED_START;
        stm[l] = st[l] && L[l].n_modes > 0;
        if (st[l]) w->jfin[l] = isfinite(js[l]) && (L[l].n_modes == 0 || isfinite(jls[l]));
    }
    double *restrict f0 = w->f0, *restrict Jv = w->Jv, *restrict JLv = w->JLv;
    const double *restrict f0s = w->f0s;
    for (int64_t i = 0; i < N_ODE; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) AT(f0, i, l) = st[l] ? AT(f0s, i, l) : AT(f0, i, l);
    for (int64_t m = 0; m < N_JAC; m++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) AT(Jv, m, l) = st[l] ? AT(Jvs, m, l) : AT(Jv, m, l);
    if (any_modes)
        for (int64_t m = 0; m < N_JLIN; m++)
#pragma omp simd
            for (int l = 0; l < LANES; l++) AT(JLv, m, l) = stm[l] ? AT(JLvs, m, l) : AT(JLv, m, l);
    /* dT = JL dxt for the lanes starting a step (others keep theirs) */
    double *restrict dT = w->dT;
    for (int64_t i = 0; i < N_ODE; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) AT(dT, i, l) = st[l] ? 0.0 : AT(dT, i, l);
    if (any_modes)
        for (int64_t m = 0; m < N_JLIN; m++)
#pragma omp simd
            for (int l = 0; l < LANES; l++)
            {
                double prod = AT(JLv, m, l) * AT(w->dxt, JLCOL[m], l);  /* (loaded for every lane: a vector loop) */
                AT(dT, JLROW[m], l) += stm[l] ? prod : 0.0;
            }
}

/* b := W^-1 b for every lane (lanes on the dense fallback: their LU, on b as it was before the sparse solve) */
static void lsolve(Work *w, Lane *L, double *b) {
    int any_dense = 0;
    for (int l = 0; l < LANES; l++)
        if (L[l].need == NEED_STEP && L[l].dense && !L[l].singular) {
            _gather(b, N_ODE, l, L[l].yc);
            any_dense = 1;
        }
    solve_sp_v(w->a, b);
    if (!any_dense) return;
    for (int l = 0; l < LANES; l++) {
        if (L[l].need != NEED_STEP || !L[l].dense || L[l].singular) continue;
        _solve(L[l].M, L[l].piv, L[l].yc, N_ODE);
        _scatter(L[l].yc, N_ODE, l, b);
    }
}

/* the lanes' modal PK at a stage time t + c h for the lanes taking a step */
static void stage_pk(Work *w, Lane *L, double c, double *xs, double *dx, int with_rate, int64_t nl) {
#if LANES == 1
    for (int l = 0; l < LANES; l++) {
        if (L[l].need != NEED_STEP) continue;
        w->ts[l] = L[l].t + c * L[l].h;
        _modal(w->ts[l] - L[l].t0, L[l].c0, L[l].dd, L[l].lam, L[l].V, L[l].modes, L[l].n_modes, xs + l, dx + l,
               with_rate, nl);
    }
#else
    /* all lanes at once over the modes any of them uses (a lane's unused modes have zero coordinates); values of
     * lanes not taking a step are computed and not read */
    double *restrict tau = w->tau, *restrict mk = w->mk, *restrict dk = w->dk;
    const double *restrict lamv = w->lamv, *restrict c0v = w->c0v, *restrict ddv = w->ddv, *restrict Vn = w->Vn;
    for (int l = 0; l < LANES; l++) {
        w->ts[l] = L[l].t + c * L[l].h;
        tau[l] = w->ts[l] - L[l].t0;
    }
    for (int64_t q = 0; q < N_NEEDED; q++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            AT(xs, LIN_NEEDED[q], l) = 0.0;
            if (with_rate) AT(dx, q, l) = 0.0;
        }
    for (int64_t k = 0; k < nl; k++) {
        if (!w->umode[k]) continue;
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            double lam = AT(lamv, k, l), x = lam * tau[l];
            /* (exp only on its normal range: glibc's vector exp runs scalar code for other lanes; e < 2^-1022 is 0) */
            double e = x < -708.0 ? 0.0 : exp(x > 709.0 ? 709.0 : x);
            e = x > 709.0 ? INFINITY : e;
            double phi = fabs(x) < 1e-3 ? tau[l] * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0)))) : (e - 1.0) / lam;
            /* only the lane's own modes: another lane's mode may overflow here (e = inf, and inf * 0 is NaN) */
            int use = AT(c0v, k, l) != 0.0 || AT(ddv, k, l) != 0.0;
            mk[l] = use ? e * AT(c0v, k, l) + phi * AT(ddv, k, l) : 0.0;
            dk[l] = use ? e * (lam * AT(c0v, k, l) + AT(ddv, k, l)) : 0.0;
        }
        for (int64_t q = 0; q < N_NEEDED; q++) {
            const int64_t i = LIN_NEEDED[q];
#pragma omp simd
            for (int l = 0; l < LANES; l++) AT(xs, i, l) += AT(Vn, q * N_LIN1 + k, l) * mk[l];
            if (with_rate)
#pragma omp simd
                for (int l = 0; l < LANES; l++) AT(dx, q, l) += AT(Vn, q * N_LIN1 + k, l) * dk[l];
        }
    }
    for (int64_t q = 0; q < N_NEEDED; q++)
#pragma omp simd
        for (int l = 0; l < LANES; l++)
            if (AT(xs, LIN_NEEDED[q], l) < 0.0) AT(xs, LIN_NEEDED[q], l) = 0.0;
#endif
}

/* one Rodas4 step attempt of each lane's size h (lanes not taking a step compute values nobody reads) */
static void step_kernels(const Shared *S, Work *w, Lane *L) {
    const int64_t n = N_ODE, nl = S->nl;
    for (int l = 0; l < LANES; l++) {
        w->h[l] = L[l].h;
        w->ig[l] = 1.0 / (L[l].h * _G);
        w->ok[l] = 0;
    }
    if (S->sparse_lu) lu_sp_v(w->Jv, w->ig, w->a, w->ok);
    for (int l = 0; l < LANES; l++) {
        if (L[l].need != NEED_STEP) continue;
        L[l].singular = 0;
        L[l].dense = !(S->sparse_lu && w->ok[l]);
        if (L[l].dense) {
            _gather(w->Jv, N_JAC, l, L[l].Jc);
            _dense_w(L[l].Jc, w->ig[l], L[l].M, n);
            if (!_lu(L[l].M, L[l].piv, n)) L[l].singular = 1;
        }
        w->ih[l] = 1.0 / L[l].h;
    }
#if LANES > 1
    for (int64_t k = 0; k < N_LIN1; k++) w->umode[k] = 0;
    for (int l = 0; l < LANES; l++)
        if (L[l].need == NEED_STEP)
            for (int64_t m = 0; m < L[l].n_modes; m++) w->umode[L[l].modes[m]] = 1;
#endif
    double *restrict y = w->y, *restrict yn = w->yn, *restrict dT = w->dT, *restrict f0 = w->f0;
    double *restrict k1 = w->k1, *restrict k2 = w->k2, *restrict k3 = w->k3, *restrict k4 = w->k4;
    double *restrict k5 = w->k5, *restrict k6 = w->k6;
    const double *h = w->h, *ih = w->ih;
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) AT(k1, i, l) = AT(f0, i, l) + h[l] * _D1 * AT(dT, i, l);
    lsolve(w, L, k1);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) AT(yn, i, l) = AT(y, i, l) + _A21 * AT(k1, i, l);
    stage_pk(w, L, _CC2, w->xs, w->dxe, 0, nl);
    rhs_v(w->ts, yn, w->xs, w->u, w->p, w->qd, k2);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) AT(k2, i, l) += h[l] * _D2 * AT(dT, i, l) + ih[l] * _C21 * AT(k1, i, l);
    lsolve(w, L, k2);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) AT(yn, i, l) = AT(y, i, l) + _A31 * AT(k1, i, l) + _A32 * AT(k2, i, l);
    stage_pk(w, L, _CC3, w->xs, w->dxe, 0, nl);
    rhs_v(w->ts, yn, w->xs, w->u, w->p, w->qd, k3);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++)
            AT(k3, i, l) += h[l] * _D3 * AT(dT, i, l) + ih[l] * (_C31 * AT(k1, i, l) + _C32 * AT(k2, i, l));
    lsolve(w, L, k3);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++)
            AT(yn, i, l) = AT(y, i, l) + _A41 * AT(k1, i, l) + _A42 * AT(k2, i, l) + _A43 * AT(k3, i, l);
    stage_pk(w, L, _CC4, w->xs, w->dxe, 0, nl);
    rhs_v(w->ts, yn, w->xs, w->u, w->p, w->qd, k4);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++)
            AT(k4, i, l) += h[l] * _D4 * AT(dT, i, l) +
                            ih[l] * (_C41 * AT(k1, i, l) + _C42 * AT(k2, i, l) + _C43 * AT(k3, i, l));
    lsolve(w, L, k4);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++)
            AT(yn, i, l) = AT(y, i, l) + _A51 * AT(k1, i, l) + _A52 * AT(k2, i, l) + _A53 * AT(k3, i, l) +
                           _A54 * AT(k4, i, l);
    stage_pk(w, L, 1.0, w->xe, w->dxe, 1, nl);
    for (int l = 0; l < LANES; l++) w->ts[l] = L[l].t + L[l].h;
    rhs_v(w->ts, yn, w->xe, w->u, w->p, w->qd, k5);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++)
            AT(k5, i, l) += ih[l] * (_C51 * AT(k1, i, l) + _C52 * AT(k2, i, l) + _C53 * AT(k3, i, l) +
                                     _C54 * AT(k4, i, l));
    lsolve(w, L, k5);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) AT(yn, i, l) += AT(k5, i, l);
    rhs_v(w->ts, yn, w->xe, w->u, w->p, w->qd, k6);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++)
            AT(k6, i, l) += ih[l] * (_C61 * AT(k1, i, l) + _C62 * AT(k2, i, l) + _C63 * AT(k3, i, l) +
                                     _C64 * AT(k4, i, l) + _C65 * AT(k5, i, l));
    lsolve(w, L, k6);
    double *restrict err = w->err;
    int *restrict neg = w->neg, *restrict fin = w->finite;
    for (int l = 0; l < LANES; l++) {
        err[l] = 0.0;
        neg[l] = 0;
        fin[l] = 1;
    }
    for (int64_t i = 0; i < n; i++) {
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            AT(yn, i, l) += AT(k6, i, l);
            double ay = fabs(AT(y, i, l)), ayn = fabs(AT(yn, i, l));
            double sc = AT(w->aw, i, l) + S->rtol * (ay > ayn ? ay : ayn);
            err[l] += (AT(k6, i, l) / sc) * (AT(k6, i, l) / sc);
            if (AT(yn, i, l) < -sc) neg[l] = 1;
            if (!isfinite(AT(yn, i, l))) fin[l] = 0;
        }
    }
    for (int l = 0; l < LANES; l++) err[l] = sqrt(err[l] / n);
    /* each lane's decision, and for the lanes that accept: y := max(yn, 0) (the old y kept for dense output) and
     * the PK values at the step's end */
    int *restrict acc = w->acc;
    double *restrict pw = w->pw, *restrict yo = w->yo;
    for (int l = 0; l < LANES; l++)
        acc[l] = L[l].need == NEED_STEP && !L[l].singular && fin[l] && isfinite(err[l]) && err[l] <= 1.0 && !neg[l];
#pragma omp simd
    for (int l = 0; l < LANES; l++) pw[l] = _vpow(err[l], -0.25);
    for (int64_t i = 0; i < n; i++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            double v = AT(yn, i, l) < 0.0 ? 0.0 : AT(yn, i, l);
            AT(yn, i, l) = v;
            AT(yo, i, l) = AT(y, i, l);
            AT(y, i, l) = acc[l] ? v : AT(y, i, l);
            /* a drug-driven state's error floor follows its peak: max(floor, rtol x y) */
            double fl = S->rtol * v;
            AT(w->aw, i, l) = acc[l] && AT(w->drug, i, l) != 0.0 && fl > AT(w->aw, i, l) ? fl : AT(w->aw, i, l);
        }
    double *restrict xt = w->xt, *restrict dxt = w->dxt;
    const double *restrict xe = w->xe, *restrict dxe = w->dxe;
    for (int64_t q = 0; q < N_NEEDED; q++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            AT(xt, LIN_NEEDED[q], l) = acc[l] ? AT(xe, LIN_NEEDED[q], l) : AT(xt, LIN_NEEDED[q], l);
            AT(dxt, q, l) = acc[l] ? AT(dxe, q, l) : AT(dxt, q, l);
        }
}

/* the next patient of the batch into lane l, run to its first need (patients that need no step are finished on the
 * way); the lane is left idle (pat = -1) when none are left */
static void lane_next(const Shared *S, Work *w, Lane *L, int l, int64_t *next) {
    for (;;) {
        int64_t i;
#pragma omp atomic capture
        i = (*next)++;
        if (i >= S->N) {
            L[l].pat = -1;
            L[l].need = NEED_NONE;
            return;
        }
        lane_load(S, w, &L[l], l, i);
        lane_run(S, w, &L[l], l);
        if (L[l].need != NEED_NONE) return;
    }
}

/* the batch: one call per arm chunk.  Each OpenMP thread integrates LANES patients side by side (one per lane; a
 * lane that finishes takes the next patient); each patient writes only its own rows */
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
                rule_max_delays, rule_resume, B, T, K, rtol, atol, max_steps, (int)dense_output, (int)sparse_lu,
                N, NP, nl_, E, D1, NS, LF, LI, P, V, Vinv, lam, mode_needed, ev_time, ev_kind, ev_target, ev_amount,
                ev_dose, n_ev, dose_rule, bio_index, res, factors, status, stats, dose_group, dose_cstart, stop_time,
                dose_time, dose_status, snap_t, snap_f, snap_i, start_snap};
    (void)R;
    int64_t next = 0;
    int64_t nth = threads > 0 ? threads : 1;
    if (nth > (N + LANES - 1) / LANES) nth = (N + LANES - 1) / LANES;  /* a thread per LANES patients at most */
    if (nth < 1) nth = 1;
#pragma omp parallel num_threads(nth)
    {
        Work *w = (Work *)calloc(1, sizeof(Work));
        Lane *L = (Lane *)calloc(LANES, sizeof(Lane));
        w->p = (double *)calloc((size_t)(NP > 0 ? NP : 1) * LANES, sizeof(double));
        for (int l = 0; l < LANES; l++) lane_next(&S, w, L, l, &next);
        for (;;) {
            int any_start = 0, any_step = 0;
            for (int l = 0; l < LANES; l++) {
                any_start |= L[l].need == NEED_START;
                any_step |= L[l].need == NEED_STEP;
            }
            if (!any_start && !any_step) break;
            if (any_start) {
                step_start(w, L);
                for (int l = 0; l < LANES; l++)
                    if (L[l].need == NEED_START) {
                        lane_run(&S, w, &L[l], l);
                        if (L[l].need == NEED_NONE) lane_next(&S, w, L, l, &next);
                    }
            }
            any_step = 0;
            for (int l = 0; l < LANES; l++) any_step |= L[l].need == NEED_STEP;
            if (any_step) {
                step_kernels(&S, w, L);
                for (int l = 0; l < LANES; l++)
                    if (L[l].need == NEED_STEP) {
                        lane_run(&S, w, &L[l], l);
                        if (L[l].need == NEED_NONE) lane_next(&S, w, L, l, &next);
                    }
            }
        }
        free(w->p);
        free(w);
        free(L);
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
