/*
 * Coulomb integrals of AO pairs at grid points by McMurchie-Davidson:
 *
 *     nu_bd(C) = int chi_b(r) chi_d(r) v_omega(|r - C|) dr,
 *     v_0 = 1/r,  v_omega = erf(omega r)/r,
 *
 * for every shell pair, every grid point and every omega in one pass (see
 * hermite.py for the plan these functions read).  Each primitive pair's
 * Gaussian product is expanded in Hermite Gaussians once (the plan's matrix
 * M: AO pair x Hermite index, contraction and spherical transformation folded
 * in); at a point C its integral is M R(C), with R the Hermite Coulomb
 * integrals
 *
 *     R^(n)_000 = pref (-2 mu)^n F_n(mu |P - C|^2),
 *     R^(n)_{t+1,u,v} = t R^(n+1)_{t-1,u,v} + X_PC R^(n+1)_{t,u,v}  (and in y, z),
 *
 * where for omega = 0 mu = p and pref = 2 pi / p, and for omega > 0
 * mu = p omega^2 / (p + omega^2) and pref = 2 pi / p sqrt(mu / p): the
 * attenuated operator is the same expansion with a softer exponent, so both
 * omegas share M.  All loops run over a block of grid points innermost, so
 * they vectorise.  The Boys function F_n comes from a table (step 0.1,
 * eighth-order Taylor) up to T = 36 and from its asymptotic form beyond
 * (error e^-T relative, below 3e-16).
 *
 * The result is written in the chunked lower-triangle layout of _kernels.c
 * (rows b(b+1)/2 + d, b >= d; one chunk of points after another).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define GC_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GC_CLONES
#endif

/* Largest total angular momentum of a shell pair (l_b + l_d), i.e. up to i functions. */
#define GC_LMAX 12
#define GC_TAYLOR 8
#define GC_TMAX 36.0
#define GC_NT 361                       /* table rows: T = 0, 0.1, ..., 36 */
#define GC_NCOL (GC_LMAX + GC_TAYLOR + 1)
/* Grid points per inner block. */
#define GC_SUB 64
/* Hermite indices (t, u, v) with t + u + v <= GC_LMAX. */
#define GC_NHMAX ((GC_LMAX + 1) * (GC_LMAX + 2) * (GC_LMAX + 3) / 6)

static double boys_table[GC_NT * GC_NCOL];
static double exp_table[GC_NT];
/* Hermite recursion, index h (ordered by t + u + v, then t, u descending):
 * direction (0, 1, 2), index with that component lowered by one, by two, and
 * the factor (component - 1) of the latter. */
static int herm_dir[GC_NHMAX], herm_m1[GC_NHMAX], herm_m2[GC_NHMAX], herm_c[GC_NHMAX];
/* The index of h with one direction raised by one (for h of degree below GC_LMAX). */
static int herm_up[3][GC_NHMAX];
static int initialised = 0;

static int herm_index(int t, int u, int v)
{
    int n = t + u + v;
    int before = n * (n + 1) * (n + 2) / 6;  /* indices of lower degree */
    /* within degree n: t from n down, u from n - t down */
    int k = 0;
    for (int tt = n; tt > t; tt--)
        k += n - tt + 1;
    return before + k + (n - t - u);
}

/* F_n(T) for n = 0 .. GC_NCOL - 1: the series of the highest order (all
 * terms positive), then downward recursion (stable). */
static void boys_exact(double t, double *f)
{
    int nmax = GC_NCOL - 1;
    double et = exp(-t);
    double term = 1.0 / (2 * nmax + 1), sum = term;
    for (int k = 1; k < 2000; k++) {
        term *= 2.0 * t / (2 * nmax + 2 * k + 1);
        sum += term;
        if (term < 1e-18 * sum)
            break;
    }
    f[nmax] = et * sum;
    for (int n = nmax; n > 0; n--)
        f[n - 1] = (2.0 * t * f[n] + et) / (2 * n - 1);
}

void dm21_gc_init(void)
{
    if (initialised)
        return;
    for (int i = 0; i < GC_NT; i++) {
        boys_exact(0.1 * i, boys_table + i * GC_NCOL);
        exp_table[i] = exp(-0.1 * i);
    }
    for (int n = 0; n <= GC_LMAX; n++)
        for (int t = n; t >= 0; t--)
            for (int u = n - t; u >= 0; u--) {
                int v = n - t - u;
                int h = herm_index(t, u, v);
                if (n == 0) {
                    herm_dir[h] = -1, herm_m1[h] = herm_m2[h] = herm_c[h] = 0;
                } else if (t > 0) {
                    herm_dir[h] = 0, herm_m1[h] = herm_index(t - 1, u, v);
                    herm_c[h] = t - 1, herm_m2[h] = t > 1 ? herm_index(t - 2, u, v) : 0;
                } else if (u > 0) {
                    herm_dir[h] = 1, herm_m1[h] = herm_index(t, u - 1, v);
                    herm_c[h] = u - 1, herm_m2[h] = u > 1 ? herm_index(t, u - 2, v) : 0;
                } else {
                    herm_dir[h] = 2, herm_m1[h] = herm_index(t, u, v - 1);
                    herm_c[h] = v - 1, herm_m2[h] = v > 1 ? herm_index(t, u, v - 2) : 0;
                }
                if (n < GC_LMAX) {
                    herm_up[0][h] = herm_index(t + 1, u, v);
                    herm_up[1][h] = herm_index(t, u + 1, v);
                    herm_up[2][h] = herm_index(t, u, v + 1);
                }
            }
    initialised = 1;
}

/* The plan's Hermite index of (t, u, v), for hermite.py to check its ordering. */
int dm21_gc_herm_index(int t, int u, int v) { return herm_index(t, u, v); }
int dm21_gc_lmax(void) { return GC_LMAX; }

/* R^(0)_h for h < nh(L) at n points (rows of GC_SUB), for one primitive pair
 * and one operator: f, ra and rb are scratch of L + 5 and nh(L) rows. */
static inline __attribute__((always_inline)) void hermite_r(int L, double mu, double pref, const double *restrict xpc,
                             const double *restrict ypc, const double *restrict zpc,
                             ptrdiff_t n, double *restrict f, double *restrict ra,
                             double *restrict rb, double *restrict *out)
{
    double *restrict fl = f + (ptrdiff_t)L * GC_SUB;
    double *restrict et = f + (ptrdiff_t)(L + 1) * GC_SUB;  /* e^-T */
    double *restrict tt = f + (ptrdiff_t)(L + 2) * GC_SUB;  /* 2T */
    double *restrict dd = f + (ptrdiff_t)(L + 3) * GC_SUB;  /* table abscissa - T */
    double *restrict asym = f + (ptrdiff_t)(L + 4) * GC_SUB;
    double cl = 0.886226925452758014;  /* sqrt(pi) / 2 (2L - 1)!! / 2^L */
    for (int k = 1; k <= L; k++)
        cl *= (2 * k - 1) * 0.5;
    /* T, then F_L and e^-T in passes that vectorise (but for the table reads:
     * AVX2 gathers measured twice as slow as scalar reads on this project's
     * VM).  Grid points come in spatial order, so a block of them is often
     * all near P (the table only) or all far (the asymptotic form only). */
    double tmin = 1e300, tmax = 0.0;
    for (ptrdiff_t g = 0; g < n; g++) {
        double t = mu * (xpc[g] * xpc[g] + ypc[g] * ypc[g] + zpc[g] * zpc[g]);
        tt[g] = 2.0 * t;
        tmin = fmin(tmin, t);
        tmax = fmax(tmax, t);
    }
    int any_near = tmin < GC_TMAX, any_far = tmax >= GC_TMAX;
    if (any_far) {
        for (ptrdiff_t g = 0; g < n; g++) {
            double inv = 1.0 / fmax(0.5 * tt[g], GC_TMAX);
            asym[g] = cl * sqrt(inv);
            dd[g] = inv;
        }
        for (int k = 0; k < L; k++)
            for (ptrdiff_t g = 0; g < n; g++)
                asym[g] *= dd[g];
        if (!any_near)
            for (ptrdiff_t g = 0; g < n; g++) {
                fl[g] = asym[g];
                et[g] = 0.0;
            }
    }
    if (any_near) {
        int idx[GC_SUB];
        for (ptrdiff_t g = 0; g < n; g++) {
            double tc = fmin(0.5 * tt[g], GC_TMAX);
            int i = (int)(tc * 10.0 + 0.5);
            idx[g] = i;
            dd[g] = 0.1 * i - tc;
        }
        const double *row = boys_table + L;
        for (ptrdiff_t g = 0; g < n; g++) {
            int r = idx[g] * GC_NCOL;
            double d = dd[g];
            double s = row[r + 7];
            s = row[r + 6] + d * (1.0 / 7) * s;
            s = row[r + 5] + d * (1.0 / 6) * s;
            s = row[r + 4] + d * (1.0 / 5) * s;
            s = row[r + 3] + d * (1.0 / 4) * s;
            s = row[r + 2] + d * (1.0 / 3) * s;
            s = row[r + 1] + d * (1.0 / 2) * s;
            fl[g] = row[r + 0] + d * s;
        }
        if (L > 0)  /* e^-T for the downward recursion */
            for (ptrdiff_t g = 0; g < n; g++) {
                double d = dd[g];
                double e = 1.0 + d * (1.0 / 7);
                e = 1.0 + d * (1.0 / 6) * e;
                e = 1.0 + d * (1.0 / 5) * e;
                e = 1.0 + d * (1.0 / 4) * e;
                e = 1.0 + d * (1.0 / 3) * e;
                e = 1.0 + d * (1.0 / 2) * e;
                e = 1.0 + d * e;
                et[g] = exp_table[idx[g]] * e;
            }
        if (any_far)
            for (ptrdiff_t g = 0; g < n; g++) {
                double near = (double)(tt[g] < 2.0 * GC_TMAX);  /* 1 or 0: a select without a branch */
                fl[g] = near * fl[g] + (1.0 - near) * asym[g];
                et[g] = near * et[g];
            }
    }
    for (int m = L; m > 0; m--) {
        double *restrict fm = f + (ptrdiff_t)(m - 1) * GC_SUB;
        const double *restrict fp = f + (ptrdiff_t)m * GC_SUB;
        double c = 1.0 / (2 * m - 1);
        for (ptrdiff_t g = 0; g < n; g++)
            fm[g] = (tt[g] * fp[g] + et[g]) * c;
    }
    /* level L down to 0; level m holds R^(m)_h, h < nh(L - m) */
    double scale = pref;  /* pref (-2 mu)^m at level m */
    for (int m = 0; m < L; m++)
        scale *= -2.0 * mu;
    double *restrict cur = ra, *restrict prev = rb;
    for (int m = L; m >= 0; m--) {
        const double *restrict fm = f + (ptrdiff_t)m * GC_SUB;
        for (ptrdiff_t g = 0; g < n; g++)
            cur[g] = scale * fm[g];
        int deg = L - m;
        int nh = (deg + 1) * (deg + 2) * (deg + 3) / 6;
        for (int h = 1; h < nh; h++) {
            int dir = herm_dir[h];
            const double *restrict x = dir == 0 ? xpc : dir == 1 ? ypc : zpc;
            const double *restrict p1 = prev + (ptrdiff_t)herm_m1[h] * GC_SUB;
            double *restrict dst = cur + (ptrdiff_t)h * GC_SUB;
            int c = herm_c[h];
            if (c) {
                const double *restrict p2 = prev + (ptrdiff_t)herm_m2[h] * GC_SUB;
                for (ptrdiff_t g = 0; g < n; g++)
                    dst[g] = c * p2[g] + x[g] * p1[g];
            } else {
                for (ptrdiff_t g = 0; g < n; g++)
                    dst[g] = x[g] * p1[g];
            }
        }
        double *swap = cur;
        cur = prev;
        prev = swap;
        if (m > 0)
            scale /= -2.0 * mu;
    }
    *out = prev;
}

/* The plan read by the functions below.  pairs: npairs rows of GC_ROW int64:
 * i0, j0 (first AO of each shell), di, dj (AOs), L (the order of M: l_i + l_j;
 * the force kernel computes Hermite integrals of order L + 1), nk (primitive pairs), k0
 * (first primitive pair), m0 (offset of its first M in mmat), nset (M sets
 * per primitive pair: 1 for nu; 1 or 4 in the force plan, see
 * dm21_gc_ip_force).  prim: 4 doubles per primitive pair: P (bohr), p.
 * mmat: for each primitive pair, nset sets of di*dj rows (i major) of nh(L)
 * Hermite coefficients.  omegas: nomega range-separation parameters (0: 1/r). */
#define GC_ROW 9
typedef struct {
    const int64_t *pairs;
    ptrdiff_t npairs;
    const double *prim, *mmat, *omegas;
    int nomega;
} gc_plan;

/* Per-thread scratch: coordinates relative to P, Boys values, two levels of
 * the Hermite recursion, acc (nomega x di dj x GC_SUB) for one shell pair and,
 * for the force kernel, z (di dj x nh(L + 1)). */
typedef struct {
    double *xpc, *ypc, *zpc, *f, *ra, *rb, *acc, *z;
    double *mem;
} gc_scratch;

/* The scratch for the plan's shell pairs, with Hermite integrals up to order
 * l_b + l_d + extra_order (1 for the force kernel, which also gets z). */
static int scratch_alloc(const gc_plan *plan, gc_scratch *w, int extra_order)
{
    int lmax = 0, dmax = 0, nabmax = 0;
    for (ptrdiff_t q = 0; q < plan->npairs; q++) {
        const int64_t *pq = plan->pairs + GC_ROW * q;
        lmax = pq[4] > lmax ? (int)pq[4] : lmax;
        dmax = pq[2] * pq[3] * pq[8] > dmax ? (int)(pq[2] * pq[3] * pq[8]) : dmax;
        nabmax = pq[2] * pq[3] > nabmax ? (int)(pq[2] * pq[3]) : nabmax;
    }
    lmax += extra_order;
    if (lmax > GC_LMAX)
        return 2;
    ptrdiff_t nhmax = (lmax + 1) * (lmax + 2) * (lmax + 3) / 6;
    ptrdiff_t nz = extra_order ? (ptrdiff_t)nabmax * nhmax : 0;
    w->mem = malloc(sizeof(double) * (GC_SUB * (size_t)(3 + (lmax + 5) + 2 * nhmax
                                                        + (ptrdiff_t)plan->nomega * dmax)
                                      + (size_t)nz));
    if (w->mem == NULL)
        return 1;
    w->xpc = w->mem, w->ypc = w->xpc + GC_SUB, w->zpc = w->ypc + GC_SUB;
    w->f = w->zpc + GC_SUB;
    w->ra = w->f + (ptrdiff_t)(lmax + 5) * GC_SUB;
    w->rb = w->ra + nhmax * GC_SUB;
    w->acc = w->rb + nhmax * GC_SUB;
    w->z = w->acc + (ptrdiff_t)plan->nomega * dmax * GC_SUB;
    return 0;
}

/* C - P of n points cg (3 doubles each) for the primitive pair at P = pk[0..2]. */
static inline __attribute__((always_inline)) void
relative_points(const double *pk, const double *restrict cg, ptrdiff_t n, double *restrict xpc,
                double *restrict ypc, double *restrict zpc)
{
    for (ptrdiff_t g = 0; g < n; g++) {
        xpc[g] = pk[0] - cg[3 * g];
        ypc[g] = pk[1] - cg[3 * g + 1];
        zpc[g] = pk[2] - cg[3 * g + 2];
    }
}

/* The exponent mu and prefactor of R for a product of exponent p and range omega. */
static inline void operator_params(double p, double omega, double *mu, double *pref)
{
    double om2 = omega * omega;
    *mu = om2 > 0 ? p * om2 / (p + om2) : p;
    *pref = 6.283185307179586477 / p;
    if (om2 > 0)
        *pref *= sqrt(*mu / p);
}

/* w->acc[om][i dj + j][g] = M R at the n <= GC_SUB points cg (3 doubles each)
 * for shell pair pq of nu's plan, every omega: nu of AO pair (i0 + i, j0 + j). */
static inline __attribute__((always_inline)) void
pair_block(const gc_plan *plan, const int64_t *pq, const double *restrict cg, ptrdiff_t n,
           gc_scratch *w)
{
    ptrdiff_t di = pq[2], dj = pq[3];
    int L = (int)pq[4];
    ptrdiff_t nk = pq[5], k0 = pq[6], m0 = pq[7];
    ptrdiff_t nab = di * dj * pq[8];  /* rows of all sets */
    int nh = (L + 1) * (L + 2) * (L + 3) / 6;
    double *restrict xpc = w->xpc, *restrict ypc = w->ypc, *restrict zpc = w->zpc;
    memset(w->acc, 0, sizeof(double) * GC_SUB * plan->nomega * nab);
    for (ptrdiff_t k = 0; k < nk; k++) {
        const double *pk = plan->prim + 4 * (k0 + k);
        const double *mk = plan->mmat + m0 + k * nab * nh;
        relative_points(pk, cg, n, xpc, ypc, zpc);
        for (int om = 0; om < plan->nomega; om++) {
            double mu, pref, *r0;
            operator_params(pk[3], plan->omegas[om], &mu, &pref);
            hermite_r(L, mu, pref, xpc, ypc, zpc, n, w->f, w->ra, w->rb, &r0);
            double *aw = w->acc + (ptrdiff_t)om * nab * GC_SUB;
            for (ptrdiff_t ab = 0; ab < nab; ab++) {
                double *restrict dst = aw + ab * GC_SUB;
                const double *mab = mk + ab * nh;
                for (int h = 0; h < nh; h++) {
                    double m = mab[h];
                    if (m == 0.0)
                        continue;
                    const double *restrict src = r0 + (ptrdiff_t)h * GC_SUB;
                    for (ptrdiff_t g = 0; g < n; g++)
                        dst[g] += m * src[g];
                }
            }
        }
    }
}

/*
 * nu of every AO pair b >= d at the points of the chunks g0 <= c0 < g1 of
 * coords ((ng, 3) bohr), written to packed: nomega arrays of npair * ng one
 * after the other (npair = nao (nao + 1) / 2) in the chunked layout.
 * Returns nonzero if the scratch could not be allocated.
 */
#define GC_FILL(NAME, TYPE)                                                                \
GC_CLONES                                                                                  \
int NAME(const int64_t *pairs, ptrdiff_t npairs, const double *prim, const double *mmat,   \
         const double *omegas, int nomega, const double *coords, ptrdiff_t ng,             \
         ptrdiff_t nao, TYPE *packed, ptrdiff_t chunk, ptrdiff_t g0, ptrdiff_t g1)          \
{                                                                                          \
    gc_plan plan = {pairs, npairs, prim, mmat, omegas, nomega};                            \
    gc_scratch w;                                                                          \
    int status = scratch_alloc(&plan, &w, 0);                                              \
    if (status)                                                                            \
        return status;                                                                     \
    ptrdiff_t npair = nao * (nao + 1) / 2;                                                 \
    for (ptrdiff_t c0 = g0; c0 < g1; c0 += chunk) {                                        \
        ptrdiff_t len = c0 + chunk < ng ? chunk : ng - c0;                                 \
        for (ptrdiff_t s0 = 0; s0 < len; s0 += GC_SUB) {                                   \
            ptrdiff_t n = s0 + GC_SUB < len ? GC_SUB : len - s0;                           \
            for (ptrdiff_t q = 0; q < npairs; q++) {                                       \
                const int64_t *pq = pairs + GC_ROW * q;                                    \
                ptrdiff_t i0 = pq[0], j0 = pq[1], di = pq[2], dj = pq[3];                  \
                pair_block(&plan, pq, coords + 3 * (c0 + s0), n, &w);                      \
                for (int om = 0; om < nomega; om++) {                                      \
                    TYPE *base = packed + (ptrdiff_t)om * npair * ng + npair * c0 + s0;    \
                    const double *aw = w.acc + (ptrdiff_t)om * di * dj * GC_SUB;           \
                    for (ptrdiff_t i = 0; i < di; i++)                                     \
                        for (ptrdiff_t j = 0; j < dj; j++) {                               \
                            ptrdiff_t b = i0 + i, d = j0 + j;                              \
                            if (d > b)                                                     \
                                continue;                                                  \
                            const double *restrict src = aw + (i * dj + j) * GC_SUB;       \
                            TYPE *restrict dst = base + (b * (b + 1) / 2 + d) * len;       \
                            for (ptrdiff_t g = 0; g < n; g++)                              \
                                dst[g] = (TYPE)src[g];                                     \
                        }                                                                  \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    free(w.mem);                                                                           \
    return 0;                                                                              \
}

GC_FILL(dm21_gc_fill_f32, float)
GC_FILL(dm21_gc_fill_f64, double)

/* The scratch of a contracting entry point, and its output rows (nrows of ng
 * points) zeroed at g0 .. g1 - 1. */
static int contraction_begin(const gc_plan *plan, gc_scratch *w, double *out, ptrdiff_t nrows,
                             ptrdiff_t ng, ptrdiff_t g0, ptrdiff_t g1)
{
    int status = scratch_alloc(plan, w, 0);
    if (status)
        return status;
    for (ptrdiff_t r = 0; r < nrows; r++)
        memset(out + r * ng + g0, 0, sizeof(double) * (size_t)(g1 - g0));
    return 0;
}

/* The density screening of the contracting kernels.  emax[b] = max over the spins and
 * the n points from s0 of |e[s][b][g]| (e: (nspin, nao, ng)); a shell pair's largest
 * over its AOs b in i0 .. i0 + di - 1 is then shell_max(emax, i0, di). */
static void ao_emax(const double *e, ptrdiff_t nspin, ptrdiff_t nao, ptrdiff_t ng,
                    ptrdiff_t s0, ptrdiff_t n, double *emax)
{
    for (ptrdiff_t b = 0; b < nao; b++) {
        double m = 0.0;
        for (ptrdiff_t s = 0; s < nspin; s++) {
            const double *restrict eb = e + (s * nao + b) * ng + s0;
            for (ptrdiff_t g = 0; g < n; g++)
                m = fmax(m, fabs(eb[g]));
        }
        emax[b] = m;
    }
}

static inline double shell_max(const double *emax, ptrdiff_t i0, ptrdiff_t di)
{
    double m = 0.0;
    for (ptrdiff_t i = 0; i < di; i++)
        m = fmax(m, emax[i0 + i]);
    return m;
}

/*
 * F[om][s][b][g] = sum_d nu_bd(g) e[s][d][g] at the points g0 <= g < g1 of
 * coords ((ng, 3) bohr), for every omega, without storing nu: each shell
 * pair's integrals for GC_SUB points are contracted while in cache.
 * e: (nspin, nao, ng); f: (nomega, nspin, nao, ng), overwritten in g0:g1.
 * screen > 0: a shell pair is left out of a block of GC_SUB points when bound[q]
 * (hermite.py: |nu| <= bound[q] everywhere) times the largest |e| of its AOs there is
 * below screen, so that no term it would add to F exceeds screen.  stats (or NULL):
 * stats[0] and stats[1] receive the shell-pair blocks computed and left out.
 * Returns nonzero if the scratch could not be allocated.
 */
GC_CLONES
int dm21_gc_features(const int64_t *pairs, ptrdiff_t npairs, const double *prim,
                     const double *mmat, const double *omegas, int nomega,
                     const double *coords, ptrdiff_t ng, ptrdiff_t nao, ptrdiff_t nspin,
                     const double *e, double *f, ptrdiff_t g0, ptrdiff_t g1,
                     const double *bound, double screen, int64_t *stats)
{
    gc_plan plan = {pairs, npairs, prim, mmat, omegas, nomega};
    gc_scratch w;
    int status = contraction_begin(&plan, &w, f, nomega * nspin * nao, ng, g0, g1);
    if (status)
        return status;
    double *emax = screen > 0.0 ? malloc(sizeof(double) * (size_t)nao) : NULL;
    if (screen > 0.0 && emax == NULL) {
        free(w.mem);
        return 1;
    }
    int64_t computed = 0, skipped = 0;
    for (ptrdiff_t s0 = g0; s0 < g1; s0 += GC_SUB) {
        ptrdiff_t n = s0 + GC_SUB < g1 ? GC_SUB : g1 - s0;
        if (emax)
            ao_emax(e, nspin, nao, ng, s0, n, emax);
        for (ptrdiff_t q = 0; q < npairs; q++) {
            const int64_t *pq = pairs + GC_ROW * q;
            ptrdiff_t i0 = pq[0], j0 = pq[1], di = pq[2], dj = pq[3];
            /* every term the pair adds to F at these points is below screen */
            if (emax && bound[q] * fmax(shell_max(emax, i0, di), shell_max(emax, j0, dj)) < screen) {
                skipped++;
                continue;
            }
            computed++;
            pair_block(&plan, pq, coords + 3 * s0, n, &w);
            for (int om = 0; om < nomega; om++)
                for (ptrdiff_t s = 0; s < nspin; s++) {
                    const double *es = e + s * nao * ng + s0;
                    double *fs = f + (om * nspin + s) * nao * ng + s0;
                    for (ptrdiff_t i = 0; i < di; i++)
                        for (ptrdiff_t j = 0; j < dj; j++) {
                            ptrdiff_t b = i0 + i, d = j0 + j;
                            if (d > b)
                                continue;
                            const double *restrict nu = w.acc + ((ptrdiff_t)om * di * dj
                                                                 + i * dj + j) * GC_SUB;
                            const double *restrict eb = es + b * ng, *restrict ed = es + d * ng;
                            double *restrict fb = fs + b * ng, *restrict fd = fs + d * ng;
                            if (d < b) {
                                for (ptrdiff_t g = 0; g < n; g++) {
                                    fb[g] += nu[g] * ed[g];
                                    fd[g] += nu[g] * eb[g];
                                }
                            } else {
                                for (ptrdiff_t g = 0; g < n; g++)
                                    fb[g] += nu[g] * eb[g];
                            }
                        }
                }
        }
    }
    if (stats) {
        stats[0] += computed;
        stats[1] += skipped;
    }
    free(emax);
    free(w.mem);
    return 0;
}

typedef double gc_v4 __attribute__((vector_size(32), aligned(8)));

/* z[a nhz + h] = sum_{g < n} w[a][g] r[h][g] for a < na, h < nhz (w and r in rows of
 * GC_SUB): tiles of 2 x 4 dot products, four points per vector. */
static inline __attribute__((always_inline)) void
dot_rows(const double *w, ptrdiff_t na, const double *r, int nhz, ptrdiff_t n, double *z)
{
    ptrdiff_t n4 = n & ~(ptrdiff_t)3;
    for (ptrdiff_t a = 0; a < na; a += 2) {
        const double *w0 = w + a * GC_SUB, *w1 = a + 1 < na ? w0 + GC_SUB : w0;
        for (int h = 0; h < nhz; h += 4) {
            const double *r0 = r + (ptrdiff_t)h * GC_SUB;
            const double *r1 = h + 1 < nhz ? r0 + GC_SUB : r0;
            const double *r2 = h + 2 < nhz ? r0 + 2 * GC_SUB : r0;
            const double *r3 = h + 3 < nhz ? r0 + 3 * GC_SUB : r0;
            gc_v4 a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0};
            gc_v4 a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0};
            for (ptrdiff_t g = 0; g < n4; g += 4) {
                gc_v4 x0 = *(const gc_v4 *)(w0 + g), x1 = *(const gc_v4 *)(w1 + g);
                gc_v4 y0 = *(const gc_v4 *)(r0 + g), y1 = *(const gc_v4 *)(r1 + g);
                gc_v4 y2 = *(const gc_v4 *)(r2 + g), y3 = *(const gc_v4 *)(r3 + g);
                a00 += x0 * y0, a01 += x0 * y1, a02 += x0 * y2, a03 += x0 * y3;
                a10 += x1 * y0, a11 += x1 * y1, a12 += x1 * y2, a13 += x1 * y3;
            }
            double s[2][4] = {
                {a00[0] + a00[1] + a00[2] + a00[3], a01[0] + a01[1] + a01[2] + a01[3],
                 a02[0] + a02[1] + a02[2] + a02[3], a03[0] + a03[1] + a03[2] + a03[3]},
                {a10[0] + a10[1] + a10[2] + a10[3], a11[0] + a11[1] + a11[2] + a11[3],
                 a12[0] + a12[1] + a12[2] + a12[3], a13[0] + a13[1] + a13[2] + a13[3]}};
            for (ptrdiff_t g = n4; g < n; g++) {
                s[0][0] += w0[g] * r0[g], s[0][1] += w0[g] * r1[g];
                s[0][2] += w0[g] * r2[g], s[0][3] += w0[g] * r3[g];
                s[1][0] += w1[g] * r0[g], s[1][1] += w1[g] * r1[g];
                s[1][2] += w1[g] * r2[g], s[1][3] += w1[g] * r3[g];
            }
            for (int i = 0; i < 2 && a + i < na; i++)
                for (int j = 0; j < 4 && h + j < nhz; j++)
                    z[(a + i) * nhz + h + j] = s[i][j];
        }
    }
}

/*
 * The exchange features' part of the nuclear gradient, contracted to forces:
 *
 *     dE/dR_A += -sum_g sum_{b,d} W_bd(g) d nu_bd(g)/dR_A (moving the AOs on A),
 *     W^om_bd(g) = sum_s c[om][s][g] e[s][b][g] e[s][d][g],
 *
 * from the force plan (hermite.py): per shell pair the atoms of its two shells,
 * per primitive pair the product's M (order L, set 0; halved for a pair of one
 * shell) and, for shells on two atoms, the derivatives of M with respect to
 * Q = A - B at fixed P (sets 1..3, also of order L), and ratio a/p.  With
 * A = P + (b/p) Q and B = P - (a/p) Q,
 *
 *     d/dA = (a/p) d/dP + d/dQ,   d/dB = (b/p) d/dP - d/dQ,
 *
 * and d/dP of M R(P - C) is M R with an index raised by one.  So one set of
 * Hermite integrals R of order L + 1 serves both, and only their sums over
 * the points with W are needed: Z_ab,h = sum_g W_ab(g) R_h(g) (dot products),
 * then d/dP = sum M_ab,h Z_ab,h+1x and d/dQ = sum dM/dQ_ab,h Z_ab,h (scalars).
 * own (ng) int64 or NULL: the atom each point belongs to (negative: none); if
 * given, that atom also receives minus the sum over all atoms at the point
 * (the grid response: the point moves with its atom), from the runs of equal
 * own within each block of GC_SUB points (put the points in order of own).
 * e: (nspin, nao, ng); c: (nomega, nspin, ng); force: (natm, 3), added to.
 * screen > 0: a shell pair is left out of a block of GC_SUB points when bound[q]
 * (hermite.py's force-plan bound) times sum_g |W| there (at most the largest sum over
 * the spins and points of |c| times the largest |e| of each of its two shells) is below
 * screen: it would move no force component by more.  stats as in dm21_gc_features.
 * Returns nonzero if the scratch could not be allocated or an order is too high.
 */
GC_CLONES
int dm21_gc_ip_force(const int64_t *pairs, ptrdiff_t npairs, const double *prim,
                     const double *mmat, const double *ratio, const int64_t *atoms,
                     const double *omegas, int nomega, const double *coords, ptrdiff_t ng,
                     ptrdiff_t nao, ptrdiff_t nspin, const double *e, const double *c,
                     const int64_t *own, double *force, ptrdiff_t g0, ptrdiff_t g1,
                     const double *bound, double screen, int64_t *stats)
{
    gc_plan plan = {pairs, npairs, prim, mmat, omegas, nomega};
    gc_scratch w;
    int status = scratch_alloc(&plan, &w, 1);
    if (status)
        return status;
    double *emax = screen > 0.0 ? malloc(sizeof(double) * (size_t)nao) : NULL;
    if (screen > 0.0 && emax == NULL) {
        free(w.mem);
        return 1;
    }
    int64_t computed = 0, skipped = 0;
    double *wm = w.acc, *z = w.z;  /* W: nomega x nab x GC_SUB; Z: nab x nh(L + 1) */
    for (ptrdiff_t s0 = g0; s0 < g1; s0 += GC_SUB) {
        ptrdiff_t n = s0 + GC_SUB < g1 ? GC_SUB : g1 - s0;
        const double *cg = coords + 3 * s0;
        double csum = 0.0;  /* the largest over omega of sum_s sum_g |c| */
        if (emax) {
            ao_emax(e, nspin, nao, ng, s0, n, emax);
            for (int om = 0; om < nomega; om++) {
                double sum = 0.0;
                for (ptrdiff_t s = 0; s < nspin; s++)
                    for (ptrdiff_t g = 0; g < n; g++)
                        sum += fabs(c[(om * nspin + s) * ng + s0 + g]);
                csum = fmax(csum, sum);
            }
        }
        for (ptrdiff_t q = 0; q < npairs; q++) {
            const int64_t *pq = pairs + GC_ROW * q;
            ptrdiff_t i0 = pq[0], j0 = pq[1], di = pq[2], dj = pq[3];
            /* sum_g |W_bd| <= csum emax_b emax_d: the pair moves no force by screen */
            if (emax && bound[q] * csum * shell_max(emax, i0, di) * shell_max(emax, j0, dj) < screen) {
                skipped++;
                continue;
            }
            computed++;
            int L = (int)pq[4];
            ptrdiff_t nk = pq[5], k0 = pq[6], m0 = pq[7], nset = pq[8];
            ptrdiff_t nab = di * dj;
            int nh = (L + 1) * (L + 2) * (L + 3) / 6, nhz = (L + 2) * (L + 3) * (L + 4) / 6;
            double *fa = force + 3 * atoms[2 * q], *fbb = force + 3 * atoms[2 * q + 1];
            for (int om = 0; om < nomega; om++)
                for (ptrdiff_t i = 0; i < di; i++)
                    for (ptrdiff_t j = 0; j < dj; j++) {
                        double *restrict wab = wm + ((ptrdiff_t)om * nab + i * dj + j) * GC_SUB;
                        for (ptrdiff_t g = 0; g < n; g++)
                            wab[g] = 0.0;
                        for (ptrdiff_t s = 0; s < nspin; s++) {
                            const double *restrict cs = c + (om * nspin + s) * ng + s0;
                            const double *restrict eb = e + (s * nao + i0 + i) * ng + s0;
                            const double *restrict ed = e + (s * nao + j0 + j) * ng + s0;
                            for (ptrdiff_t g = 0; g < n; g++)
                                wab[g] += cs[g] * eb[g] * ed[g];
                        }
                    }
            for (ptrdiff_t k = 0; k < nk; k++) {
                const double *pk = prim + 4 * (k0 + k);
                const double *mk = mmat + m0 + k * nset * nab * nh;
                double rat = ratio[k0 + k];
                relative_points(pk, cg, n, w.xpc, w.ypc, w.zpc);
                for (int om = 0; om < nomega; om++) {
                    double mu, pref, *r0;
                    operator_params(pk[3], omegas[om], &mu, &pref);
                    hermite_r(L + 1, mu, pref, w.xpc, w.ypc, w.zpc, n, w.f, w.ra, w.rb, &r0);
                    const double *wo = wm + (ptrdiff_t)om * nab * GC_SUB;
                    /* runs of points of one atom (one run without the grid response) */
                    for (ptrdiff_t u0 = 0; u0 < n;) {
                        ptrdiff_t u1 = n;
                        if (own)
                            for (u1 = u0 + 1; u1 < n && own[s0 + u1] == own[s0 + u0]; u1++)
                                ;
                        dot_rows(wo + u0, nab, r0 + u0, nhz, u1 - u0, z);  /* Z over the run */
                        /* two partial sums each: independent chains of FMAs */
                        double pp[2][3] = {{0.0}}, qq[2][3] = {{0.0}};
                        for (ptrdiff_t ab = 0; ab < nab; ab++) {
                            const double *m = mk + ab * nh;
                            const double *zab = z + ab * nhz;
                            for (int h = 0; h < nh; h++) {
                                double mh = m[h];
                                pp[h & 1][0] += mh * zab[herm_up[0][h]];
                                pp[h & 1][1] += mh * zab[herm_up[1][h]];
                                pp[h & 1][2] += mh * zab[herm_up[2][h]];
                            }
                            if (nset == 4) {
                                const double *m1 = mk + (nab + ab) * nh;
                                const double *m2 = m1 + nab * nh, *m3 = m2 + nab * nh;
                                for (int h = 0; h < nh; h++) {
                                    double zh = zab[h];
                                    qq[h & 1][0] += m1[h] * zh;
                                    qq[h & 1][1] += m2[h] * zh;
                                    qq[h & 1][2] += m3[h] * zh;
                                }
                            }
                        }
                        for (int x = 0; x < 3; x++) {
                            double sp = pp[0][x] + pp[1][x];  /* d/dP */
                            if (nset == 1) {
                                fa[x] -= sp;
                            } else {
                                double ta = rat * sp + qq[0][x] + qq[1][x];  /* d/dA */
                                fa[x] -= ta;
                                fbb[x] -= sp - ta;
                            }
                            if (own && own[s0 + u0] >= 0)
                                force[3 * own[s0 + u0] + x] += sp;
                        }
                        u0 = u1;
                    }
                }
            }
        }
    }
    if (stats) {
        stats[0] += computed;
        stats[1] += skipped;
    }
    free(emax);
    free(w.mem);
    return 0;
}
