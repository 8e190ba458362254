/*
 * Derivatives of Becke's partition weights with respect to the nuclei: the grid response
 * of the DM21 gradient (see xc_grad.py), atomic units.
 *
 * w_g = q_g P_A(r) / Z(r),  Z = sum_B P_B,  P_B = prod_{C != B} s(nu_BC),
 * mu_BC = (|r - R_B| - |r - R_C|) / |R_B - R_C|,  nu_BC = mu_BC + a_BC (1 - mu_BC^2),
 * s(nu) = (1 - f(f(f(nu)))) / 2,  f(x) = x (3 - x^2) / 2,
 * with q_g the quadrature weight, A the atom the point belongs to and a_BC the
 * atomic-size adjustment (0 without one).  With the point held fixed, for G != A:
 *
 *   dP_B/dR_G = P_B t_BG D_BG (B != G),   dP_G/dR_G = -P_G sum_{B != G} t_GB D_BG,
 *   D_BG = dmu_BG/dR_G = (-(R_G - r) / |R_G - r| + mu_BG (R_B - R_G) / R_BG) / R_BG,
 *   t_BC = (ds/dmu)(mu_BC) / s(mu_BC),
 *   dw_g/dR_G = q_g (dP_A/dR_G / Z - P_A / Z^2 sum_B dP_B/dR_G);
 *
 * the own atom's derivative (its points move with it) is minus the sum of the others',
 * as w does not change when everything moves together.
 *
 * PySCF's VXCbecke_weight_derivative sums the same terms but forms every P_B again for
 * every G: natm^3 switching functions per point.  Here the P_B and t_BC are formed once
 * per point, natm^2 of them; the small-value cut-offs are PySCF's (1/x taken as 0 for
 * x <= 1e-14), so both give the same numbers.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static inline double inv_cut(double x) { return x > 1e-14 ? 1.0 / x : 0.0; }

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* AVX2/FMA where the CPU has it, chosen at load time; baseline code otherwise. */
#define DM21_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DM21_CLONES
#endif

/* dw (natm, 3, n): columns g0 to g1 of the points' weight derivatives.  coords (n, 3)
 * and qw (n,) the points and their quadrature weights, own (n,) their atoms (< 0: a
 * padding point, derivative 0), atm (natm, 3) the nuclei, adjust (natm, natm) a_BC with
 * a zero diagonal.  Returns 0, or -1 if its work space could not be allocated.
 *
 * Per point, the ordered pairs' loops run without branches (so that they vectorise):
 * the diagonal has 1/R_BB = 0, hence mu_BB = 0 and s(0) = 1/2 in every P_B alike (P_A / Z
 * and its derivatives do not change; PySCF's routine has the same factor), and D_BB = 0. */
DM21_CLONES
int dm21_becke_dw(double *restrict dw, const double *restrict coords,
                  const double *restrict qw, const int32_t *restrict own, ptrdiff_t n,
                  ptrdiff_t g0, ptrdiff_t g1, const double *restrict atm,
                  const double *restrict adjust, int natm)
{
    const ptrdiff_t na = natm, nn = na * na;
    double *work = malloc(sizeof(double) * (size_t)(4 * nn + 6 * na));
    if (work == NULL)
        return -1;
    double *inv_r = work;        /* (natm, natm) 1 / R_BC, 0 on the diagonal */
    double *mu = inv_r + nn;     /* (natm, natm) mu_BC at this point */
    double *t = mu + nn;         /* (natm, natm) t_BC at this point */
    double *t_tr = t + nn;       /* (natm, natm) t_CB at [B, C] */
    double *dist = t_tr + nn;    /* (natm,) |r - R_B| */
    double *unit = dist + na;    /* (3, natm) (R_B - r) / |R_B - r| */
    double *p = unit + 3 * na;   /* (natm,) P_B */
    double *s_row = p + na;      /* (natm,) the switching functions of one B */
    for (ptrdiff_t b = 0; b < na; b++)
        for (ptrdiff_t c = 0; c < na; c++) {
            const double dx = atm[3 * b] - atm[3 * c], dy = atm[3 * b + 1] - atm[3 * c + 1],
                         dz = atm[3 * b + 2] - atm[3 * c + 2];
            inv_r[b * na + c] = b == c ? 0.0 : inv_cut(sqrt(dx * dx + dy * dy + dz * dz));
        }
    for (ptrdiff_t g = g0; g < g1; g++) {
        const int ia = own[g];
        if (ia < 0) {
            for (ptrdiff_t k = 0; k < 3 * na; k++)
                dw[k * n + g] = 0.0;
            continue;
        }
        const double *r = coords + 3 * g;
        for (ptrdiff_t b = 0; b < na; b++) {
            const double ux = atm[3 * b] - r[0], uy = atm[3 * b + 1] - r[1],
                         uz = atm[3 * b + 2] - r[2];
            dist[b] = sqrt(ux * ux + uy * uy + uz * uz);
            const double f = inv_cut(dist[b]);
            unit[b] = ux * f;
            unit[na + b] = uy * f;
            unit[2 * na + b] = uz * f;
        }
        for (ptrdiff_t b = 0; b < na; b++) {
            const double *ir = inv_r + b * na, *a = adjust + b * na;
            double *mb = mu + b * na, *tb = t + b * na;
            for (ptrdiff_t c = 0; c < na; c++) {
                const double m = (dist[b] - dist[c]) * ir[c];
                const double nu = m + a[c] * (1.0 - m * m);
                const double f1 = (3.0 - nu * nu) * nu * 0.5;
                const double f2 = (3.0 - f1 * f1) * f1 * 0.5;
                const double f3 = (3.0 - f2 * f2) * f2 * 0.5;
                const double s = 0.5 * (1.0 - f3);
                const double ds_dnu = -0.5 * 1.5 * (1.0 - f2 * f2) * 1.5 * (1.0 - f1 * f1)
                                      * 1.5 * (1.0 - nu * nu);
                mb[c] = m;
                tb[c] = ds_dnu * (1.0 - 2.0 * a[c] * m) * (s > 1e-14 ? 1.0 / s : 0.0);
                s_row[c] = s;
            }
            double prod = 1.0;
            for (ptrdiff_t c = 0; c < na; c++)
                prod *= s_row[c];
            p[b] = prod;
        }
        for (ptrdiff_t b = 0; b < na; b++)
            for (ptrdiff_t c = 0; c < na; c++)
                t_tr[b * na + c] = t[c * na + b];
        double z = 0.0;
        for (ptrdiff_t b = 0; b < na; b++)
            z += p[b];
        const double inv_z = inv_cut(z), pa_z2 = p[ia] * inv_cut(z * z), q = qw[g];
        double own_sum[3] = {0.0, 0.0, 0.0};
        for (ptrdiff_t ig = 0; ig < na; ig++) {
            if (ig == ia)
                continue;
            /* over B, with mu_BG = -mu_GB and R_BG = R_GB read along row G */
            const double *ir = inv_r + ig * na, *mg = mu + ig * na, *t_bg = t_tr + ig * na,
                         *t_gb = t + ig * na;
            const double pg = p[ig];
            double sum_dp[3] = {0.0, 0.0, 0.0};
            for (int x = 0; x < 3; x++) {
                const double *ux = unit + x * na, ugx = ux[ig], rgx = atm[3 * ig + x];
                double acc = 0.0;
                for (ptrdiff_t b = 0; b < na; b++) {
                    const double d = ir[b] * (-ugx - mg[b] * ir[b] * (atm[3 * b + x] - rgx));
                    acc += (p[b] * t_bg[b] - pg * t_gb[b]) * d;
                }
                sum_dp[x] = acc;
            }
            const double ira = ir[ia];
            for (int x = 0; x < 3; x++) {
                const double d_a = ira * (-unit[x * na + ig]
                                          - mg[ia] * ira * (atm[3 * ia + x] - atm[3 * ig + x]));
                const double dpa = p[ia] * t_bg[ia] * d_a;
                const double v = q * (dpa * inv_z - pa_z2 * sum_dp[x]);
                dw[(3 * ig + x) * n + g] = v;
                own_sum[x] += v;
            }
        }
        for (int x = 0; x < 3; x++)
            dw[(3 * ia + x) * n + g] = -own_sum[x];
    }
    free(work);
    return 0;
}
