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
 * i0, j0 (first AO of each shell), di, dj (AOs), L (the order of the Hermite
 * integrals: l_i + l_j, one more for derivatives), nk (primitive pairs), k0
 * (first primitive pair), m0 (offset of its first M in mmat), nset (M sets
 * per primitive pair: 1 for nu; 3 or 6 for the derivatives, see
 * dm21_gc_ip_features).  prim: 4 doubles per primitive pair: P (bohr), p.
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
 * the Hermite recursion, and acc (nomega x nset di dj x GC_SUB) for one shell pair. */
typedef struct {
    double *xpc, *ypc, *zpc, *f, *ra, *rb, *acc;
    double *mem;
} gc_scratch;

static int scratch_alloc(const gc_plan *plan, gc_scratch *w)
{
    int lmax = 0, dmax = 0;
    for (ptrdiff_t q = 0; q < plan->npairs; q++) {
        const int64_t *pq = plan->pairs + GC_ROW * q;
        lmax = pq[4] > lmax ? (int)pq[4] : lmax;
        dmax = pq[2] * pq[3] * pq[8] > dmax ? (int)(pq[2] * pq[3] * pq[8]) : dmax;
    }
    if (lmax > GC_LMAX)
        return 2;
    ptrdiff_t nhmax = (lmax + 1) * (lmax + 2) * (lmax + 3) / 6;
    w->mem = malloc(sizeof(double) * GC_SUB * (size_t)(3 + (lmax + 5) + 2 * nhmax
                                                       + (ptrdiff_t)plan->nomega * dmax));
    if (w->mem == NULL)
        return 1;
    w->xpc = w->mem, w->ypc = w->xpc + GC_SUB, w->zpc = w->ypc + GC_SUB;
    w->f = w->zpc + GC_SUB;
    w->ra = w->f + (ptrdiff_t)(lmax + 5) * GC_SUB;
    w->rb = w->ra + nhmax * GC_SUB;
    w->acc = w->rb + nhmax * GC_SUB;
    return 0;
}

/* w->acc[om][set][i dj + j][g] = M_set R at the n <= GC_SUB points cg (3
 * doubles each) for shell pair pq, every omega: nu of AO pair (i0 + i, j0 + j)
 * for the plan of nu, its derivatives for the derivative plan. */
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
        double p = pk[3];
        for (ptrdiff_t g = 0; g < n; g++) {
            xpc[g] = pk[0] - cg[3 * g];
            ypc[g] = pk[1] - cg[3 * g + 1];
            zpc[g] = pk[2] - cg[3 * g + 2];
        }
        for (int om = 0; om < plan->nomega; om++) {
            double om2 = plan->omegas[om] * plan->omegas[om];
            double mu = om2 > 0 ? p * om2 / (p + om2) : p;
            double pref = 6.283185307179586477 / p;
            if (om2 > 0)
                pref *= sqrt(mu / p);
            double *r0;
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
    int status = scratch_alloc(&plan, &w);                                                 \
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
    int status = scratch_alloc(plan, w);
    if (status)
        return status;
    for (ptrdiff_t r = 0; r < nrows; r++)
        memset(out + r * ng + g0, 0, sizeof(double) * (size_t)(g1 - g0));
    return 0;
}

/*
 * F[om][s][b][g] = sum_d nu_bd(g) e[s][d][g] at the points g0 <= g < g1 of
 * coords ((ng, 3) bohr), for every omega, without storing nu: each shell
 * pair's integrals for GC_SUB points are contracted while in cache.
 * e: (nspin, nao, ng); f: (nomega, nspin, nao, ng), overwritten in g0:g1.
 * Returns nonzero if the scratch could not be allocated.
 */
GC_CLONES
int dm21_gc_features(const int64_t *pairs, ptrdiff_t npairs, const double *prim,
                     const double *mmat, const double *omegas, int nomega,
                     const double *coords, ptrdiff_t ng, ptrdiff_t nao, ptrdiff_t nspin,
                     const double *e, double *f, ptrdiff_t g0, ptrdiff_t g1)
{
    gc_plan plan = {pairs, npairs, prim, mmat, omegas, nomega};
    gc_scratch w;
    int status = contraction_begin(&plan, &w, f, nomega * nspin * nao, ng, g0, g1);
    if (status)
        return status;
    for (ptrdiff_t s0 = g0; s0 < g1; s0 += GC_SUB) {
        ptrdiff_t n = s0 + GC_SUB < g1 ? GC_SUB : g1 - s0;
        for (ptrdiff_t q = 0; q < npairs; q++) {
            const int64_t *pq = pairs + GC_ROW * q;
            ptrdiff_t i0 = pq[0], j0 = pq[1], di = pq[2], dj = pq[3];
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
    free(w.mem);
    return 0;
}

/*
 * The derivative integrals contracted: G[om][s][x][b][g] = sum_d
 * <d_x chi_b | v_om(|r - r_g|) | chi_d> e[s][d][g] (d_x on the electron
 * coordinate, as libcint's int1e_grids_ip) at the points g0 <= g < g1, from
 * the derivative plan: per primitive pair, sets x = 0..2 differentiate the
 * pair's first shell, and for a pair of two shells sets 3..5 its second.
 * e: (nspin, nao, ng); G: (nomega, nspin, 3, nao, ng), overwritten in g0:g1.
 * Returns nonzero if the scratch could not be allocated.
 */
GC_CLONES
int dm21_gc_ip_features(const int64_t *pairs, ptrdiff_t npairs, const double *prim,
                        const double *mmat, const double *omegas, int nomega,
                        const double *coords, ptrdiff_t ng, ptrdiff_t nao, ptrdiff_t nspin,
                        const double *e, double *gout, ptrdiff_t g0, ptrdiff_t g1)
{
    gc_plan plan = {pairs, npairs, prim, mmat, omegas, nomega};
    gc_scratch w;
    int status = contraction_begin(&plan, &w, gout, nomega * nspin * 3 * nao, ng, g0, g1);
    if (status)
        return status;
    for (ptrdiff_t s0 = g0; s0 < g1; s0 += GC_SUB) {
        ptrdiff_t n = s0 + GC_SUB < g1 ? GC_SUB : g1 - s0;
        for (ptrdiff_t q = 0; q < npairs; q++) {
            const int64_t *pq = pairs + GC_ROW * q;
            ptrdiff_t i0 = pq[0], j0 = pq[1], di = pq[2], dj = pq[3], nset = pq[8];
            ptrdiff_t nab = di * dj;
            pair_block(&plan, pq, coords + 3 * s0, n, &w);
            for (int om = 0; om < nomega; om++)
                for (ptrdiff_t s = 0; s < nspin; s++) {
                    const double *es = e + s * nao * ng + s0;
                    for (ptrdiff_t x = 0; x < 3; x++) {
                        double *gx = gout + ((om * nspin + s) * 3 + x) * nao * ng + s0;
                        const double *ab = w.acc + ((ptrdiff_t)om * nset + x) * nab * GC_SUB;
                        const double *ba = nset == 6 ? ab + 3 * nab * GC_SUB : NULL;
                        for (ptrdiff_t i = 0; i < di; i++)
                            for (ptrdiff_t j = 0; j < dj; j++) {
                                ptrdiff_t b = i0 + i, d = j0 + j;
                                const double *restrict v = ab + (i * dj + j) * GC_SUB;
                                const double *restrict ed = es + d * ng;
                                double *restrict gb = gx + b * ng;
                                for (ptrdiff_t g = 0; g < n; g++)
                                    gb[g] += v[g] * ed[g];
                                if (ba) {
                                    const double *restrict u = ba + (i * dj + j) * GC_SUB;
                                    const double *restrict eb = es + b * ng;
                                    double *restrict gd = gx + d * ng;
                                    for (ptrdiff_t g = 0; g < n; g++)
                                        gd[g] += u[g] * eb[g];
                                }
                            }
                    }
                }
        }
    }
    free(w.mem);
    return 0;
}
