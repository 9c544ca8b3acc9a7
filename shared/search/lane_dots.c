/* Exact-order float64 dot products of float32 rows: shared.search.dots' lane order, compiled.
 *
 * Pair p is x[rows[p]] . q[qrows[p]]. Every product of two float32 values is exact in float64,
 * so the only roundings are the additions, and their order is fixed: element k goes to lane
 * k % 16, each lane adds its elements in increasing k starting from +0.0, and the 16 lanes are
 * then added one after another, lane 0 first. shared/search/dots.py computes the same order
 * with NumPy; the two agree to the bit (tests/recommendations/test_dots.py), so the web tier
 * (NumPy) and the workers (this) rank the same pairs the same way.
 *
 * A fused multiply-add gives the same bits as a multiply and an add here (the product is
 * exact), so the compiler may contract; nothing may reassociate (no -ffast-math). Built by
 * scripts/build_native.sh; target_clones picks AVX-512 or AVX2 at load time, with the same
 * results (the lanes are the vector type's, not the machine's).
 */
#include <stdint.h>
#include <string.h>

#define LANES 16

typedef float v16f __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

static inline void load_halves(const float *at, v8d *lo, v8d *hi) {
    v16f v;
    memcpy(&v, at, sizeof v);
    v8f a = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
    v8f b = {v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
    *lo = __builtin_convertvector(a, v8d);
    *hi = __builtin_convertvector(b, v8d);
}

/* A query row is float32, or (``wide``) the same values already converted to float64. */
static inline void load_query(const void *q, int64_t at, int wide, v8d *lo, v8d *hi) {
    if (wide) {
        memcpy(lo, (const double *)q + at, sizeof *lo);
        memcpy(hi, (const double *)q + at + 8, sizeof *hi);
    } else {
        load_halves((const float *)q + at, lo, hi);
    }
}

static inline double query_value(const void *q, int64_t at, int wide) {
    return wide ? ((const double *)q)[at] : (double)((const float *)q)[at];
}

/* Lanes 0-7 in s, 8-15 in t: one block of 16 elements of one pair. */
static inline void accumulate(const float *a, const void *b, int64_t k, int wide, v8d *s,
                              v8d *t) {
    v8d xa, xb, ya, yb;
    load_halves(a + k, &xa, &xb);
    load_query(b, k, wide, &ya, &yb);
    *s += xa * ya;
    *t += xb * yb;
}

static inline double finish(const v8d *s, const v8d *t, const float *a, const void *b,
                            int64_t full, int64_t dim, int wide) {
    double lanes[LANES];
    memcpy(lanes, s, sizeof *s);
    memcpy(lanes + 8, t, sizeof *t);
    for (int64_t l = 0; full + l < dim; l++) {
        lanes[l] += (double)a[full + l] * query_value(b, full + l, wide);
    }
    double sum = lanes[0];
    for (int l = 1; l < LANES; l++) {
        sum += lanes[l];
    }
    return sum;
}

static inline const void *query_row(const void *q, int64_t row, int64_t dim, int wide) {
    return wide ? (const void *)((const double *)q + row * dim)
                : (const void *)((const float *)q + row * dim);
}

static inline __attribute__((always_inline)) void pair_dots(
    const float *x, const int64_t *rows, const void *q, const int64_t *qrows, int64_t pairs,
    int64_t dim, double *out, int wide) {
    const int64_t full = dim - dim % LANES;
    int64_t p = 0;
    /* Two pairs at a time: four independent chains keep the adders busy. */
    for (; p + 1 < pairs; p += 2) {
        const float *a0 = x + rows[p] * dim, *a1 = x + rows[p + 1] * dim;
        const void *b0 = query_row(q, qrows[p], dim, wide);
        const void *b1 = query_row(q, qrows[p + 1], dim, wide);
        v8d s0 = {0}, t0 = {0}, s1 = {0}, t1 = {0};
        for (int64_t k = 0; k < full; k += LANES) {
            accumulate(a0, b0, k, wide, &s0, &t0);
            accumulate(a1, b1, k, wide, &s1, &t1);
        }
        out[p] = finish(&s0, &t0, a0, b0, full, dim, wide);
        out[p + 1] = finish(&s1, &t1, a1, b1, full, dim, wide);
    }
    if (p < pairs) {
        const float *a0 = x + rows[p] * dim;
        const void *b0 = query_row(q, qrows[p], dim, wide);
        v8d s0 = {0}, t0 = {0};
        for (int64_t k = 0; k < full; k += LANES) {
            accumulate(a0, b0, k, wide, &s0, &t0);
        }
        out[p] = finish(&s0, &t0, a0, b0, full, dim, wide);
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define CLONES
#endif

CLONES
void lane_pair_dots(const float *x, const int64_t *rows, const float *q, const int64_t *qrows,
                    int64_t pairs, int64_t dim, double *out) {
    pair_dots(x, rows, q, qrows, pairs, dim, out, 0);
}

/* The same dots with the queries already in float64 (each float32 value converted exactly):
 * a query dotted with many rows is converted once instead of once a pair. */
CLONES
void lane_pair_dots_q64(const float *x, const int64_t *rows, const double *q,
                        const int64_t *qrows, int64_t pairs, int64_t dim, double *out) {
    pair_dots(x, rows, q, qrows, pairs, dim, out, 1);
}
