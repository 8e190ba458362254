/*
 * Fused element-wise steps of the DM21 network in float32 (see network.py).
 *
 * NumPy spends about as long on the network's element-wise passes (bias,
 * layer norm, ELU and their derivatives: some fifteen passes over each
 * layer's activations) as BLAS spends on its matrix products.  These two
 * functions do each layer's element-wise work in one pass per row, while the
 * row is in cache.  Called through ctypes (no Python C API); the GIL is
 * released during the call, so network.py's worker threads run them in
 * parallel.  Built when the package is installed; without a C compiler the
 * NumPy code is used instead.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

/* Built without -fassociative-math (it turns q 2^k + (2^k - 1) into
 * (q 2^k + 2^k) - 1, which loses small results): sums over a row are kept in
 * DM21_LANES partial sums instead, which vectorise as they stand. */
#define DM21_LANES 8

static inline float row_dot(const float *restrict x, const float *restrict y, ptrdiff_t n)
{
    float acc[DM21_LANES] = {0.0f};
    ptrdiff_t j = 0;
    for (; j + DM21_LANES <= n; j += DM21_LANES)
        for (int l = 0; l < DM21_LANES; l++)
            acc[l] += x[j + l] * y[j + l];
    float total = 0.0f;
    for (; j < n; j++)
        total += x[j] * y[j];
    for (int l = 0; l < DM21_LANES; l++)
        total += acc[l];
    return total;
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* AVX2/FMA where the CPU has it, chosen at load time; baseline code otherwise. */
#define DM21_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DM21_CLONES
#endif

#if defined(__GNUC__)
#define DM21_INLINE static inline __attribute__((always_inline))
#else
#define DM21_INLINE static inline
#endif

/* expm1(t) for t <= 0 in float32, without branches so that loops vectorise:
 * t = k ln2 + r with |r| <= ln2 / 2, expm1(t) = 2^k q(r) + (2^k - 1) where
 * q(r) = expm1(r) by its Taylor series to r^7 (relative error < 1e-8).  For
 * k = 0 this is q itself, accurate relative to t however small t is. */
static inline float expm1_neg(float t)
{
    t = fmaxf(t, -87.0f);
    int k = (int)(t * 1.44269504088896341f - 0.5f);  /* nearest integer: t <= 0 */
    float kf = (float)k;
    float r = t - kf * 0.693359375f;                  /* ln2 split in two for accuracy */
    r = r + kf * 2.12194440e-4f;
    float q = r * (1.0f / 5040.0f) + (1.0f / 720.0f);
    q = q * r + (1.0f / 120.0f);
    q = q * r + (1.0f / 24.0f);
    q = q * r + (1.0f / 6.0f);
    q = q * r + 0.5f;
    q = q * r + 1.0f;
    q = q * r;
    union { float f; int i; } scale;
    scale.i = (k + 127) << 23;
    return q * scale.f + (scale.f - 1.0f);
}

/* One row of the forward step after the bias: a_hat = a r in place,
 * y = ELU(a_hat scale + offset) and, if with_d, d = ELU'(...) scale.
 * e = ELU(t) for t <= 0 and 0 above, so ELU(t) = max(t, e) and
 * ELU'(t) = e + 1 for every t. */
DM21_INLINE
void elu_row(float *restrict ai, float *restrict yi, float *restrict di, float r,
             const float *restrict scale, const float *restrict offset, ptrdiff_t width,
             const int with_d)
{
    for (ptrdiff_t j = 0; j < width; j++) {
        float ah = ai[j] * r;
        ai[j] = ah;
        float t = ah * scale[j] + offset[j];
        float e = expm1_neg(fminf(t, 0.0f));
        yi[j] = fmaxf(t, e);
        if (with_d)
            di[j] = (e + 1.0f) * scale[j];
    }
}

/*
 * Forward step of one residual block, in place on a (n x width) row-major:
 * on entry a holds the centred pre-norm activation h W' + b' without b'
 * (bias added here).  On return a holds the normalised activation a_hat,
 * y = ELU(a_hat * scale + offset), rstd[i] = 1 / sqrt(var_i + eps) and, when
 * d is not NULL, d = ELU'(a_hat * scale + offset) * scale.
 */
DM21_CLONES
void dm21_block_forward(float *restrict a, const float *restrict bias, const float *restrict scale,
                        const float *restrict offset, float eps, ptrdiff_t n, ptrdiff_t width,
                        float *restrict y, float *restrict d, float *restrict rstd)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float *restrict ai = a + i * width;
        float *restrict yi = y + i * width;
        for (ptrdiff_t j = 0; j < width; j++)
            ai[j] += bias[j];
        float ss = row_dot(ai, ai, width);
        float r = 1.0f / sqrtf(ss / (float)width + eps);
        rstd[i] = r;
        if (d)  /* two inlined copies, each without a branch inside */
            elu_row(ai, yi, d + i * width, r, scale, offset, width, 1);
        else
            elu_row(ai, yi, NULL, r, scale, offset, width, 0);
    }
}

/*
 * Backward step of one residual block, in place on g (n x width): on entry
 * the gradient with respect to the block's output y, on return the gradient
 * with respect to the centred pre-norm activation:
 * g <- rstd (g d - a_hat mean_j(g d a_hat)).
 */
DM21_CLONES
void dm21_block_backward(float *restrict g, const float *restrict a_hat, const float *restrict d,
                         const float *restrict rstd, ptrdiff_t n, ptrdiff_t width)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float *restrict gi = g + i * width;
        const float *restrict ai = a_hat + i * width;
        const float *restrict di = d + i * width;
        for (ptrdiff_t j = 0; j < width; j++)
            gi[j] *= di[j];
        float m = row_dot(gi, ai, width) / (float)width;
        float r = rstd[i];
        for (ptrdiff_t j = 0; j < width; j++)
            gi[j] = (gi[j] - ai[j] * m) * r;
    }
}

/*
 * Exchange features: F[s, b, g] = sum_d nu_bd(g) E[s, d, g] for the grid
 * points of chunks g0 <= g < g1.  nu is stored as its lower triangle, row b
 * holding nu_b0 .. nu_bb (npair = nao (nao + 1) / 2 rows), chunk by chunk:
 * the chunk of points c0 .. c0 + len - 1 (c0 a multiple of `chunk`, len =
 * min(chunk, ng - c0)) is one row-major (npair x len) matrix at
 * packed + npair * c0, so that each chunk is one sequential stream.  E and F
 * are (nspin x nao x ng); F is overwritten in g0:g1.  Every stored integral is
 * read once and serves nu_bd and nu_db.  One version per storage precision.
 */
#define DM21_CONTRACT(NAME, TYPE)                                                          \
DM21_CLONES                                                                                \
void NAME(const TYPE *restrict packed, const double *restrict e, double *restrict f,       \
          ptrdiff_t nspin, ptrdiff_t nao, ptrdiff_t ng, ptrdiff_t chunk, ptrdiff_t g0,      \
          ptrdiff_t g1)                                                                    \
{                                                                                          \
    ptrdiff_t npair = nao * (nao + 1) / 2;                                                 \
    for (ptrdiff_t c0 = g0; c0 < g1; c0 += chunk) {                                        \
        ptrdiff_t len = c0 + chunk < ng ? chunk : ng - c0;                                 \
        const TYPE *restrict base = packed + npair * c0;                                   \
        for (ptrdiff_t s = 0; s < nspin; s++)                                              \
            for (ptrdiff_t b = 0; b < nao; b++) {                                          \
                double *restrict fb = f + (s * nao + b) * ng + c0;                         \
                for (ptrdiff_t g = 0; g < len; g++)                                        \
                    fb[g] = 0.0;                                                           \
            }                                                                              \
        ptrdiff_t off = 0;                                                                 \
        for (ptrdiff_t b = 0; b < nao; b++) {                                              \
            for (ptrdiff_t d = 0; d <= b; d++) {                                           \
                const TYPE *restrict nu = base + (off + d) * len;                          \
                for (ptrdiff_t s = 0; s < nspin; s++) {                                    \
                    const double *restrict eb = e + (s * nao + b) * ng + c0;               \
                    const double *restrict ed = e + (s * nao + d) * ng + c0;               \
                    double *restrict fb = f + (s * nao + b) * ng + c0;                     \
                    double *restrict fd = f + (s * nao + d) * ng + c0;                     \
                    if (d < b) {                                                           \
                        for (ptrdiff_t g = 0; g < len; g++) {                              \
                            double v = (double)nu[g];                                      \
                            fb[g] += v * ed[g];                                            \
                            fd[g] += v * eb[g];                                            \
                        }                                                                  \
                    } else {                                                               \
                        for (ptrdiff_t g = 0; g < len; g++)                                \
                            fb[g] += (double)nu[g] * eb[g];                                \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
            off += b + 1;                                                                  \
        }                                                                                  \
    }                                                                                      \
}

DM21_CONTRACT(dm21_contract_packed_f32, float)
DM21_CONTRACT(dm21_contract_packed_f64, double)

/*
 * The lower triangle of a symmetric (nao x nao x n) block `full` (grid index
 * fastest, as int1e_grids writes it) for the points col0 .. col0 + n - 1 of
 * a packed array of ng points in the chunked layout above (col0 a multiple
 * of chunk, and n too unless the block ends at ng).
 */
#define DM21_PACK(NAME, TYPE)                                                              \
void NAME(const double *restrict full, TYPE *restrict packed, ptrdiff_t nao, ptrdiff_t n,  \
          ptrdiff_t ng, ptrdiff_t chunk, ptrdiff_t col0)                                   \
{                                                                                          \
    ptrdiff_t npair = nao * (nao + 1) / 2;                                                 \
    for (ptrdiff_t c0 = 0; c0 < n; c0 += chunk) {                                          \
        ptrdiff_t start = col0 + c0;                                                       \
        ptrdiff_t len = start + chunk < ng ? chunk : ng - start;                           \
        TYPE *restrict base = packed + npair * start;                                      \
        ptrdiff_t off = 0;                                                                 \
        for (ptrdiff_t b = 0; b < nao; b++) {                                              \
            for (ptrdiff_t d = 0; d <= b; d++) {                                           \
                const double *restrict src = full + (b * nao + d) * n + c0;                \
                TYPE *restrict dst = base + (off + d) * len;                               \
                for (ptrdiff_t g = 0; g < len; g++)                                        \
                    dst[g] = (TYPE)src[g];                                                 \
            }                                                                              \
            off += b + 1;                                                                  \
        }                                                                                  \
    }                                                                                      \
}

DM21_PACK(dm21_pack_lower_f32, float)
DM21_PACK(dm21_pack_lower_f64, double)

/*
 * The ABI stamp of this library (its sources, _kernels.c, _gridcoulomb.c and
 * _beckegrid.c):
 * kernels.py refuses a library whose stamp is not its own KERNELS_ABI (one built
 * from older sources, or a foreign file), so that no function is ever called with
 * a signature it does not have.  Raise it with every change of the sources:
 * tests/test_kernels.py holds the sources' hash against the stamp.
 */
#define DM21_KERNELS_ABI 4

int dm21_kernels_abi(void)
{
    return DM21_KERNELS_ABI;
}
